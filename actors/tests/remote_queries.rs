//! Remote ledger queries over loopback QUIC: a `LedgerClient` asks its
//! gateway for what `federact ledger` reads from store files (tips, blocks,
//! transactions, VM histories across the local chain and the consortium,
//! provenance), and checks every answer against the chain's validator set.
//! A lying gateway — a process holding the gateway's key that alters what
//! the validators answered — is caught on every kind of answer.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use federact_actors::wire::{
    self, GatewayRequest, GatewayResponse, LedgerAnswer, ValidatorRequest, ValidatorResponse,
};
use federact_actors::{ActorError, EmbeddedFederation};
use federact_config::{write_local_federation, Topology};
use federact_federation::{Incoming, Membership, Transport, TransportOptions};
use federact_ledger::hash::Hash;
use federact_ledger::record::{Record, Scope, Site};

fn init(dir: &Path, topo: Topology) {
    write_local_federation(dir, &topo, false).unwrap();
}

fn data(n: u64) -> Record {
    Record::ProvData {
        data_digest: Hash::of(&n.to_be_bytes()),
        generated_by: format!("test-{n}"),
        used_by: None,
    }
}

fn indication(migration: &[u8], vm: Hash, to: Site, scope: Scope) -> Record {
    Record::Indication {
        migration_id: Hash::of(migration),
        vm_id: vm,
        source: Site::new("cloud-1", "c1-server-1"),
        destination: to,
        scope,
    }
}

#[actix_rt::test]
async fn remote_queries_return_checked_blocks_transactions_histories_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    init(
        dir.path(),
        Topology {
            clouds: 2,
            servers_per_cloud: 2,
            local_validators: 1,
            inter_validators: 4,
        },
    );
    let fed = EmbeddedFederation::start(dir.path()).await.unwrap();
    let client = fed
        .node("c1-server-1")
        .unwrap()
        .ledger_client()
        .unwrap()
        .with_federation(fed.federation());
    let local = "cloud-1.local";
    assert_eq!(
        client.chains().unwrap(),
        vec![local.to_string(), "consortium".to_string()]
    );

    let r1 = client.submit(data(1)).await.expect("provenance commits");
    client.submit(data(2)).await.expect("provenance commits");
    let vm = Hash::of(b"vm-remote");
    let hop_local = client
        .submit(indication(
            b"m-local",
            vm,
            Site::new("cloud-1", "c1-server-2"),
            Scope::Local,
        ))
        .await
        .expect("local indication commits");
    assert_eq!(hop_local.chain_id, local);
    let hop_inter = client
        .submit(indication(
            b"m-inter",
            vm,
            Site::new("cloud-2", "c2-server-1"),
            Scope::Inter,
        ))
        .await
        .expect("inter indication commits");
    assert_eq!(hop_inter.chain_id, "consortium");

    // Many records in one request: each gets its own receipt with a proof
    // (or its refusal), in order.
    let batch = client
        .submit_many(vec![data(10), data(11), data(12)])
        .await
        .expect("the gateway answers the batch");
    assert_eq!(batch.len(), 3);
    let set =
        federact_ledger::cert::ValidatorSet::from_spec(fed.federation().chain(local).unwrap());
    for r in &batch {
        let r = r.as_ref().expect("committed");
        let proof = r.proof.as_ref().expect("with a proof");
        assert_eq!(proof.verify(&set, local).unwrap().id(), r.tx_id);
    }
    let replay = client.sign(data(13));
    client.submit_tx(replay.clone(), true).await.unwrap();
    assert!(matches!(
        client.submit_tx(replay, true).await,
        Err(ActorError::Refused { .. })
    ));

    // Tip and block: certified, and the block holds the receipt's tx.
    let tip = client
        .tip(local)
        .await
        .unwrap()
        .expect("local chain has blocks");
    assert!(tip.block.header.height >= r1.height);
    let block = client
        .block(local, r1.height)
        .await
        .unwrap()
        .expect("committed block");
    assert_eq!(block.block.header.height, r1.height);
    assert!(block.block.tx_ids().contains(&r1.tx_id));
    assert!(client.block(local, 1_000_000).await.unwrap().is_none());

    // Transaction by id, with where it is and a proof.
    let t = client.transaction(&r1.tx_id).await.unwrap().expect("found");
    assert_eq!(t.location.height, r1.height);
    assert_eq!(t.tx.id(), r1.tx_id);
    assert_eq!(t.proof.header.chain_id, local);
    let t2 = client
        .transaction(&hop_inter.tx_id)
        .await
        .unwrap()
        .expect("found on the consortium");
    assert_eq!(t2.proof.header.chain_id, "consortium");
    assert!(client
        .transaction(&Hash::of(b"never submitted"))
        .await
        .unwrap()
        .is_none());

    // The vm's history spans both chains.
    let history = client.vm_history(&vm).await.unwrap();
    assert!(!history.truncated);
    let mut seen: Vec<(String, Hash)> = history
        .records
        .iter()
        .map(|r| (r.chain_id.clone(), r.tx_id))
        .collect();
    seen.sort();
    let mut want = vec![
        (local.to_string(), hop_local.tx_id),
        ("consortium".to_string(), hop_inter.tx_id),
    ];
    want.sort();
    assert_eq!(seen, want);

    // Provenance of one entity: exactly its record.
    let prov = client.provenance("test-1").await.unwrap();
    assert_eq!(prov.records.len(), 1);
    assert_eq!(prov.records[0].tx_id, r1.tx_id);
    assert_eq!(prov.records[0].height, r1.height);
    assert!(client
        .provenance("nobody")
        .await
        .unwrap()
        .records
        .is_empty());

    // An oversized entity is refused with the limit, not scanned.
    let long = "x".repeat(wire::ENTITY_BYTES_MAX + 1);
    assert!(matches!(
        client.provenance(&long).await,
        Err(ActorError::Refused { reason }) if reason.contains("exceeds")
    ));
    // A chain the gateway does not follow is a configuration error.
    assert!(matches!(
        client.block("cloud-2.local", 1).await,
        Err(ActorError::Config { .. })
    ));
    fed.shutdown().await;
}

/// How the lying gateway alters answers.
const HONEST: u8 = 0;
const SWAP_TX_IN_BLOCK: u8 = 1;
const FOREIGN_CERTIFICATE: u8 = 2;
const OTHER_TX_PROOF: u8 = 3;
const ALTERED_TX_BYTES: u8 = 4;
const UNRELATED_RECORD: u8 = 5;

#[actix_rt::test]
async fn a_lying_gateway_is_caught_on_every_kind_of_answer() {
    let dir = tempfile::tempdir().unwrap();
    init(
        dir.path(),
        Topology {
            clouds: 1,
            servers_per_cloud: 1,
            local_validators: 1,
            inter_validators: 0,
        },
    );
    let mut fed = EmbeddedFederation::start(dir.path()).await.unwrap();
    let chain = "cloud-1.local";
    let client = fed
        .node("c1-server-1")
        .unwrap()
        .ledger_client()
        .unwrap()
        .with_federation(fed.federation())
        .with_timeout(Duration::from_secs(10));
    let a = client.submit(data(1)).await.unwrap();
    let b = client.submit(data(2)).await.unwrap();
    assert_ne!(a.height, b.height, "two blocks");

    // Replace the gateway by a liar holding its key and address.
    fed.stop_node("c1-gateway").await;
    let federation = fed.federation().clone();
    let gw = federation.node("c1-gateway").unwrap();
    let key = fed.node_config("c1-gateway").unwrap().load_key().unwrap();
    let validator = federation.node("c1-validator-1").unwrap().id();
    let liar = Transport::bind(
        &key,
        Membership::from_federation(&federation),
        TransportOptions::from(*federation.transport()),
        gw.listen(),
    )
    .await
    .expect("the gateway's address is free again");
    let mode = Arc::new(AtomicU8::new(HONEST));
    let mut inbox = liar.register(wire::GATEWAY_ACTOR, 64).unwrap();
    let (t, m, other_height) = (liar.clone(), mode.clone(), a.height);
    actix_rt::spawn(async move {
        let actor = wire::validator_actor("cloud-1.local");
        let ask = |query| {
            let t = t.clone();
            let actor = actor.clone();
            async move {
                let body = wire::encode(&ValidatorRequest::Query(query));
                let reply = t
                    .request(validator, &actor, body, Duration::from_secs(5))
                    .await
                    .unwrap();
                match wire::decode::<ValidatorResponse>(&reply).unwrap() {
                    ValidatorResponse::Answer(a) => a,
                    other => panic!("{other:?}"),
                }
            }
        };
        while let Some(item) = inbox.recv().await {
            let Incoming::Request {
                body, responder, ..
            } = item
            else {
                continue;
            };
            let Ok(GatewayRequest::Query { query, .. }) = wire::decode::<GatewayRequest>(&body)
            else {
                continue;
            };
            let mut answer = ask(query).await;
            let other = match ask(federact_actors::wire::LedgerQuery::Block {
                height: other_height,
            })
            .await
            {
                LedgerAnswer::Block(Some(b)) => b,
                _ => panic!("block {other_height} exists"),
            };
            match (m.load(Ordering::SeqCst), &mut answer) {
                (SWAP_TX_IN_BLOCK, LedgerAnswer::Block(Some(blk))) => {
                    blk.block.txs[0] = other.block.txs[0].clone();
                }
                (FOREIGN_CERTIFICATE, LedgerAnswer::Block(Some(blk))) => {
                    blk.certificate = other.certificate.clone();
                }
                (OTHER_TX_PROOF, LedgerAnswer::Tx(Some(p))) => {
                    let ids = other.block.tx_ids();
                    **p = federact_ledger::proof::CrossChainProof::build(
                        &other.block,
                        &other.certificate,
                        0,
                    )
                    .unwrap();
                    assert_eq!(p.tx_id, ids[0]);
                }
                (ALTERED_TX_BYTES, LedgerAnswer::Tx(Some(p))) => {
                    let last = p.tx.len() - 1;
                    p.tx[last] ^= 1;
                }
                (UNRELATED_RECORD, LedgerAnswer::Records { proofs, .. }) => {
                    proofs.push(
                        federact_ledger::proof::CrossChainProof::build(
                            &other.block,
                            &other.certificate,
                            0,
                        )
                        .unwrap(),
                    );
                }
                _ => {}
            }
            let _ = responder
                .respond(wire::encode(&GatewayResponse::Answer(answer)))
                .await;
        }
    });

    // Honest relaying passes.
    let honest = client.block(chain, b.height).await.expect("honest answer");
    assert!(honest.is_some());

    let unverified = |r: Result<(), ActorError>, what: &str| match r {
        Err(ActorError::Unverified {
            chain: c, detail, ..
        }) => {
            assert_eq!(c, chain);
            detail
        }
        other => panic!("{what}: expected Unverified, got {other:?}"),
    };
    mode.store(SWAP_TX_IN_BLOCK, Ordering::SeqCst);
    let d = unverified(
        client.block(chain, b.height).await.map(|_| ()),
        "swapped tx",
    );
    assert!(d.contains("do not match the header"), "{d}");

    mode.store(FOREIGN_CERTIFICATE, Ordering::SeqCst);
    unverified(
        client.block(chain, b.height).await.map(|_| ()),
        "foreign certificate",
    );

    mode.store(OTHER_TX_PROOF, Ordering::SeqCst);
    let d = unverified(
        client.transaction(&b.tx_id).await.map(|_| ()),
        "other tx's proof",
    );
    assert!(d.contains("asked for tx"), "{d}");

    mode.store(ALTERED_TX_BYTES, Ordering::SeqCst);
    unverified(
        client.transaction(&b.tx_id).await.map(|_| ()),
        "altered tx bytes",
    );

    mode.store(UNRELATED_RECORD, Ordering::SeqCst);
    let d = unverified(
        client.provenance("test-2").await.map(|_| ()),
        "unrelated record",
    );
    assert!(d.contains("does not match the query"), "{d}");

    liar.close().await;
    fed.shutdown().await;
}
