//! The checks behind each fuzz target, shared by the `cargo fuzz` targets
//! (`fuzz_targets/*.rs`, nightly + libFuzzer) and the stable replay test
//! (`tests/fuzz_smoke.rs` of the workspace), so every CI run feeds the same
//! decoders seeds, corpus files and mutated inputs.
//!
//! Each check panics on a broken property (a decoder that panics, an
//! envelope or block that does not survive a round trip) and returns
//! whether the input decoded to something.

#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;

use federact_config::{ChainKind, Federation, NodeId, NodeKey};
use federact_federation::frame::{self, EnvelopeRef};
use federact_ledger::block::{Block, Genesis, Limits};
use federact_ledger::cert::{vote_sign_bytes, CommitCertificate, ValidatorSet};
use federact_ledger::codec;
use federact_ledger::hash::Hash;
use federact_ledger::proof::CrossChainProof;
use federact_ledger::record::{Record, Scope, Site};
use federact_ledger::rules::{self, MemState};
use federact_ledger::tx::{Transaction, TxPolicy, TX_BYTES_MAX};
use federact_ledger::VoteKind;

/// Largest frame the frame check accepts.
pub const FRAME_MAX: u32 = 1 << 16;

/// The peer every fuzzed frame claims to come from.
pub fn frame_peer() -> &'static NodeId {
    static PEER: OnceLock<NodeId> = OnceLock::new();
    PEER.get_or_init(|| NodeKey::from_seed(&[1; 32]).id())
}

/// Any byte stream decodes to envelopes, a partial frame, or a specific
/// `FrameError`; every envelope that decodes survives encode/decode.
pub fn frame_decode(data: &[u8]) -> bool {
    let peer = frame_peer();
    let mut rest = data;
    let mut decoded = false;
    while let Ok(Some((env, used))) = frame::decode(rest, FRAME_MAX, peer) {
        decoded = true;
        assert!(used > frame::PREFIX_LEN && used <= rest.len());
        assert_eq!(env.from, *peer);
        let again = frame::encode(
            &EnvelopeRef {
                from: &env.from,
                to: &env.to,
                correlation: env.correlation,
                kind: env.kind,
                trace: &env.trace,
                body: &env.body,
            },
            FRAME_MAX,
        )
        .expect("a decoded envelope re-encodes within the limit");
        let (back, n) = frame::decode(&again, FRAME_MAX, peer)
            .expect("re-encoded envelope decodes")
            .expect("re-encoded envelope is whole");
        assert_eq!(n, again.len());
        assert_eq!(back, env);
        rest = &rest[used..];
    }
    decoded
}

/// The genesis the ledger check validates against: one validator (the
/// key of seed `[1; 32]`), with a consortium of the same key.
pub fn ledger_genesis() -> Genesis {
    let set = ValidatorSet::new(vec![NodeKey::from_seed(&[1; 32]).id()], 0).expect("one validator");
    Genesis {
        chain_id: "fuzz".into(),
        kind: ChainKind::Local,
        cloud: Some("cloud-1".into()),
        validators: set.clone(),
        consortium: Some(federact_ledger::block::ConsortiumRef {
            chain_id: "cons".into(),
            validators: set,
        }),
        writers: Vec::new(),
        limits: Limits::default(),
    }
}

/// Transactions, blocks, cross-chain proofs and genesis records decode or
/// fail with an error; whatever decodes goes through verification and the
/// rules without panicking and survives a round trip.
pub fn ledger_decode(data: &[u8]) -> bool {
    let g = ledger_genesis();
    let mut decoded = false;
    if let Ok(tx) = Transaction::decode(data, TX_BYTES_MAX) {
        decoded = true;
        let _ = tx.verify(&TxPolicy::default());
        let again = Transaction::decode(&tx.encode(), TX_BYTES_MAX).expect("re-decodes");
        assert_eq!(again.id(), tx.id());
        // The rules must not panic on any decodable transaction.
        let block = Block::new(
            "fuzz",
            1,
            g.tip().id,
            *g.validators.proposer(1, 0),
            0,
            0,
            vec![tx],
        );
        let _ = rules::apply_block(&g, &MemState::default(), &block);
    }
    if let Ok(block) = Block::decode(data, 1 << 20) {
        decoded = true;
        let _ = block.id();
        let _ = block.check_body(&Limits::default(), &TxPolicy::default());
        let _ = rules::check_proposal(&g, &g.tip(), &MemState::default(), &block);
        let again = Block::decode(&block.encode(), 1 << 21).expect("re-decodes");
        assert_eq!(again.id(), block.id());
    }
    if let Ok(proof) = codec::decode::<CrossChainProof>(data, 1 << 20) {
        decoded = true;
        let _ = proof.verify(&g.validators, "cons");
    }
    if let Ok(genesis) = codec::decode::<Genesis>(data, 1 << 16) {
        decoded = true;
        let _ = genesis.check();
    }
    decoded
}

/// Federation files load or fail with a located error; whatever loads has
/// a consistent view of its nodes and chains.
pub fn config_parse(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    match Federation::parse(text, Path::new("fuzz/federation.toml")) {
        Ok(fed) => {
            for chain in fed.chains() {
                assert_eq!(chain.validators().len(), chain.validator_names().len());
                assert!(chain.quorum() <= chain.validators().len());
            }
            for node in fed.nodes() {
                assert!(fed.node(node.name()).is_some());
            }
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

/// A genuine committed consortium block (chain "cons", four validators,
/// f = 1, certified by three of them), its validator set and the encodings
/// of a cross-chain proof for each of its transactions: what the proof
/// check mutates.
pub struct ProofFixture {
    /// The block.
    pub block: Block,
    /// Its validators.
    pub set: ValidatorSet,
    /// The encoded proof of each transaction, by index.
    pub proofs: Vec<Vec<u8>>,
}

/// The fixture of [`proof_verify`], built once.
pub fn proof_fixture() -> &'static ProofFixture {
    static FIXTURE: OnceLock<ProofFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let vals: Vec<NodeKey> = (0..4u8)
            .map(|i| NodeKey::from_seed(&[i + 40; 32]))
            .collect();
        let set = ValidatorSet::new(vals.iter().map(|k| k.id()).collect(), 1).expect("set");
        let author = NodeKey::from_seed(&[7; 32]);
        let site = |c: &str, s: &str| Site::new(c, s);
        let m = Hash::of(b"m");
        let records = vec![
            Record::Indication {
                migration_id: m,
                vm_id: Hash::of(b"vm"),
                source: site("cloud-1", "c1-server-1"),
                destination: site("cloud-2", "c2-server-1"),
                scope: Scope::Inter,
            },
            Record::Confirmation {
                migration_id: m,
                vm_id: Hash::of(b"vm"),
                accepted: true,
                observed_hash: Hash::of(b"vm"),
                reason: None,
                scope: Scope::Inter,
            },
            Record::ProvData {
                data_digest: Hash::of(b"d"),
                generated_by: "c1-server-1".into(),
                used_by: None,
            },
        ];
        let txs: Vec<Transaction> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| Transaction::sign(r, &author, i as u64 + 1, 1_700_000_000_000, None))
            .collect();
        let block = Block::new(
            "cons",
            7,
            Hash::of(b"parent"),
            *set.proposer(7, 0),
            0,
            1_700_000_000_000,
            txs,
        );
        let id = block.header.id();
        let msg = vote_sign_bytes(VoteKind::Precommit, "cons", 7, 0, Some(&id));
        let certificate = CommitCertificate {
            chain_id: "cons".into(),
            height: 7,
            round: 0,
            block_hash: id,
            signatures: (0..3u16)
                .map(|i| (i, vals[i as usize].sign(&msg)))
                .collect(),
        };
        let proofs = (0..block.txs.len())
            .map(|i| {
                let p = CrossChainProof::build(&block, &certificate, i).expect("in range");
                assert!(p.verify(&set, "cons").is_ok(), "genuine proof {i} verifies");
                codec::encode(&p)
            })
            .collect();
        ProofFixture { block, set, proofs }
    })
}

/// Cross-chain proof verification is sound under arbitrary alteration:
/// the input is an edit of a genuine proof's encoding (byte 0 picks the
/// proof, bytes 1..3 an offset, the rest overwrites from there; or, read
/// whole, a proof of its own). Whatever decodes is verified against the
/// genuine validator set without panicking, and a proof that verifies
/// must prove a transaction of the genuine block, under its header: no
/// edit forges a commitment without the validators' keys. Returns whether
/// an edited proof decoded.
pub fn proof_verify(data: &[u8]) -> bool {
    let fx = proof_fixture();
    let genuine = fx.block.header.id();
    let ids: Vec<_> = fx.block.txs.iter().map(Transaction::id).collect();
    let check = |p: &CrossChainProof| {
        if let Ok(tx) = p.verify(&fx.set, "cons") {
            assert_eq!(p.header.id(), genuine, "a forged header verified");
            assert!(ids.contains(&tx.id()), "a forged transaction verified");
            assert_eq!(tx.id(), p.tx_id);
        }
        let _ = p.verify(&fx.set, &p.header.chain_id);
        let _ = p.block_id();
    };
    if let Ok(p) = codec::decode::<CrossChainProof>(data, 1 << 20) {
        check(&p);
    }
    let Some((&pick, rest)) = data.split_first() else {
        return false;
    };
    let mut enc = fx.proofs[pick as usize % fx.proofs.len()].clone();
    let (at, patch) = match rest {
        [a, b, patch @ ..] => (
            u16::from_le_bytes([*a, *b]) as usize % (enc.len() + 1),
            patch,
        ),
        _ => (0, &[][..]),
    };
    // The patch overwrites from `at`, extending the encoding if longer; a
    // high bit in `pick` truncates after the patch instead.
    let end = at + patch.len();
    if enc.len() < end {
        enc.resize(end, 0);
    }
    enc[at..end].copy_from_slice(patch);
    if pick & 0x80 != 0 {
        enc.truncate(end);
    }
    match codec::decode::<CrossChainProof>(&enc, 1 << 20) {
        Ok(p) => {
            check(&p);
            true
        }
        Err(_) => false,
    }
}
