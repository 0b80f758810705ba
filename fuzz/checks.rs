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
use federact_ledger::cert::ValidatorSet;
use federact_ledger::codec;
use federact_ledger::proof::CrossChainProof;
use federact_ledger::rules::{self, MemState};
use federact_ledger::tx::{Transaction, TxPolicy, TX_BYTES_MAX};

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
