//! BASICS' inter-cloud migration across three chain stores — the consortium
//! and the source and destination clouds' local chains — with the relay's
//! cross-chain proofs, and a tampered image rejected. Also checks that the
//! merged VM history and offline verification see every hop.
//!
//! Set `FEDERACT_KEEP_STORES=<dir>` to keep the stores (for trying
//! `federact ledger show/history/verify` on them).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use federact_config::{ChainKind, NodeKey};
use federact_ledger::block::{Block, ConsortiumRef, Genesis, Limits};
use federact_ledger::cert::{vote_sign_bytes, CommitCertificate, ValidatorSet, VoteKind};
use federact_ledger::error::{BlockError, RuleError};
use federact_ledger::hash::Hash;
use federact_ledger::proof::CrossChainProof;
use federact_ledger::record::{EntityKind, IdProof, Record, Route, Scope, Site};
use federact_ledger::store::ChainStore;
use federact_ledger::tx::Transaction;
use federact_ledger::verify::verify_store;

fn keys(seed: u8, n: u8) -> Vec<NodeKey> {
    (0..n)
        .map(|i| NodeKey::from_seed(&[seed + i; 32]))
        .collect()
}

fn set(keys: &[NodeKey]) -> ValidatorSet {
    let f = (keys.len() as u32 - 1) / 3;
    ValidatorSet::new(keys.iter().map(|k| k.id()).collect(), f).expect("set")
}

/// One clock for all chains, so block times order hops across chains.
static CLOCK_MS: AtomicU64 = AtomicU64::new(1_000);

/// A chain: its store and validator keys.
struct Chain {
    store: ChainStore,
    validators: Vec<NodeKey>,
}

impl Chain {
    fn open(dir: &Path, genesis: Genesis, validators: Vec<NodeKey>) -> Chain {
        Chain {
            store: ChainStore::open(dir, Some(&genesis)).expect("open"),
            validators,
        }
    }

    /// Signs `records` by `author`, builds, certifies and commits the block.
    fn commit(
        &mut self,
        author: &NodeKey,
        records: Vec<Record>,
    ) -> Result<(Block, CommitCertificate), BlockError> {
        let now = CLOCK_MS.fetch_add(100, Ordering::SeqCst);
        let mut nonce = self.store.last_nonce(&author.id()).expect("nonce");
        let txs = records
            .into_iter()
            .map(|r| {
                nonce += 1;
                Transaction::sign(r, author, nonce, now, Some([7; 16]))
            })
            .collect();
        let tip = self.store.tip();
        let g = self.store.genesis();
        let h = tip.height + 1;
        let block = Block::new(
            &g.chain_id,
            h,
            tip.id,
            *g.validators.proposer(h, 0),
            0,
            now,
            txs,
        );
        let id = block.id();
        let msg = vote_sign_bytes(VoteKind::Precommit, &g.chain_id, h, 0, Some(&id));
        let quorum = g.validators.quorum();
        let cert = CommitCertificate {
            chain_id: g.chain_id.clone(),
            height: h,
            round: 0,
            block_hash: id,
            signatures: (0..quorum)
                .map(|i| (i as u16, self.validators[i].sign(&msg)))
                .collect(),
        };
        self.store.commit(&block, &cert).expect("store")?;
        Ok((block, cert))
    }
}

fn genesis(
    chain_id: &str,
    kind: ChainKind,
    cloud: Option<&str>,
    validators: &[NodeKey],
    consortium: Option<&[NodeKey]>,
) -> Genesis {
    Genesis {
        chain_id: chain_id.into(),
        kind,
        cloud: cloud.map(str::to_string),
        validators: set(validators),
        consortium: consortium.map(|c| ConsortiumRef {
            chain_id: "consortium".into(),
            validators: set(c),
        }),
        writers: Vec::new(),
        limits: Limits::default(),
    }
}

#[test]
fn inter_cloud_migration_across_three_chains() {
    let keep = std::env::var("FEDERACT_KEEP_STORES").ok();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = keep
        .as_deref()
        .map(Path::new)
        .unwrap_or(tmp.path())
        .to_path_buf();
    let cons_keys = keys(10, 4);
    let a_keys = keys(20, 4);
    let b_keys = keys(30, 1);
    let mut cons = Chain::open(
        &root.join("consortium"),
        genesis("consortium", ChainKind::Consortium, None, &cons_keys, None),
        cons_keys.clone(),
    );
    let mut a = Chain::open(
        &root.join("cloud-a"),
        genesis(
            "cloud-a.local",
            ChainKind::Local,
            Some("cloud-a"),
            &a_keys,
            Some(&cons_keys),
        ),
        a_keys.clone(),
    );
    let mut b = Chain::open(
        &root.join("cloud-b"),
        genesis(
            "cloud-b.local",
            ChainKind::Local,
            Some("cloud-b"),
            &b_keys,
            Some(&cons_keys),
        ),
        b_keys.clone(),
    );
    let gw_a = NodeKey::from_seed(&[1; 32]);
    let gw_b = NodeKey::from_seed(&[2; 32]);
    let orch_a = NodeKey::from_seed(&[3; 32]);

    // The instance runs in cloud A first (TOM provenance).
    a.commit(
        &orch_a,
        vec![
            Record::ProvIdCreate {
                kind: EntityKind::Container,
                entity: "thumbnail-1".into(),
                id_proof: IdProof {
                    digest: Hash::of(b"image-v1"),
                    attested_by: orch_a.id(),
                },
            },
            Record::ProvOrch {
                deployed: "thumbnail-1".into(),
                location: "cloud-a/server-1".into(),
            },
        ],
    )
    .expect("placement");

    // Migration 1: the image arrives intact.
    let vm = Hash::of(b"snapshot of thumbnail-1");
    let m1 = Hash::of(b"migration-1");
    let indication = Record::Indication {
        migration_id: m1,
        vm_id: vm,
        source: Site::new("cloud-a", "server-1"),
        destination: Site::new("cloud-b", "server-3"),
        scope: Scope::Inter,
    };
    assert_eq!(indication.route(), Route::Consortium);
    cons.commit(&gw_a, vec![indication]).expect("indication");
    let (block, cert) = cons
        .commit(
            &gw_b,
            vec![Record::Confirmation {
                migration_id: m1,
                vm_id: vm,
                accepted: true,
                observed_hash: vm,
                reason: None,
                scope: Scope::Inter,
            }],
        )
        .expect("confirmation");
    // The gateways relay the committed confirmation to both local chains.
    let proof = CrossChainProof::build(&block, &cert, 0).expect("proof");
    let from_store = cons
        .store
        .tx(&block.txs[0].id())
        .expect("read")
        .expect("indexed");
    assert_eq!(from_store.proof, proof);
    a.commit(
        &gw_a,
        vec![Record::Leave {
            migration_id: m1,
            vm_id: vm,
            proof: Box::new(proof.clone()),
        }],
    )
    .expect("leave");
    b.commit(
        &gw_b,
        vec![Record::Arrival {
            migration_id: m1,
            vm_id: vm,
            proof: Box::new(proof.clone()),
        }],
    )
    .expect("arrival");

    // A relay cannot deliver the Leave twice, nor a tampered proof.
    let again = a.commit(
        &gw_a,
        vec![Record::Leave {
            migration_id: m1,
            vm_id: vm,
            proof: Box::new(proof.clone()),
        }],
    );
    assert!(matches!(again, Err(BlockError::Rule { source, .. })
        if matches!(*source, RuleError::MigrationAlreadyRecorded { .. })));
    let mut forged = proof.clone();
    forged.certificate.signatures.truncate(1);
    let m9 = Hash::of(b"migration-9");
    let bad = b.commit(
        &gw_b,
        vec![Record::Arrival {
            migration_id: m9,
            vm_id: vm,
            proof: Box::new(forged),
        }],
    );
    assert!(matches!(bad, Err(BlockError::Rule { source, .. })
        if matches!(*source, RuleError::Proof(_))));

    // Migration 2: tampered in transit, rejected; no Arrival is possible.
    let m2 = Hash::of(b"migration-2");
    cons.commit(
        &gw_b,
        vec![Record::Indication {
            migration_id: m2,
            vm_id: vm,
            source: Site::new("cloud-b", "server-3"),
            destination: Site::new("cloud-a", "server-2"),
            scope: Scope::Inter,
        }],
    )
    .expect("indication 2");
    let (block2, cert2) = cons
        .commit(
            &gw_a,
            vec![Record::Confirmation {
                migration_id: m2,
                vm_id: vm,
                accepted: false,
                observed_hash: Hash::of(b"tampered"),
                reason: Some("image hash does not match vm id".into()),
                scope: Scope::Inter,
            }],
        )
        .expect("rejection");
    let rejection = CrossChainProof::build(&block2, &cert2, 0).expect("proof");
    let refused = a.commit(
        &gw_a,
        vec![Record::Arrival {
            migration_id: m2,
            vm_id: vm,
            proof: Box::new(rejection),
        }],
    );
    assert!(matches!(refused, Err(BlockError::Rule { source, .. })
        if matches!(*source, RuleError::ProofNotAccepted { .. })));

    // The merged history shows every hop in order.
    let mut hops: Vec<_> = [&cons, &a, &b]
        .iter()
        .flat_map(|c| c.store.vm_history(&vm).expect("history"))
        .collect();
    hops.sort_by_key(|e| (e.block_timestamp_ms, e.chain_id.clone(), e.height));
    let kinds: Vec<_> = hops
        .iter()
        .map(|e| (e.chain_id.as_str(), e.record.kind()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("consortium", "Indication"),
            ("consortium", "Confirmation"),
            ("cloud-a.local", "Leave"),
            ("cloud-b.local", "Arrival"),
            ("consortium", "Indication"),
            ("consortium", "Confirmation"),
        ]
    );
    let prov = a.store.provenance("thumbnail-1").expect("provenance");
    assert_eq!(prov.len(), 2);

    let dirs = ["consortium", "cloud-a", "cloud-b"];
    drop((cons, a, b));
    for d in dirs {
        let report = verify_store(&root.join(d)).expect("verify");
        assert!(report.is_ok(), "{d}: {:?}", report.fault);
        assert_eq!(report.verified_height, report.tip_height);
    }
}
