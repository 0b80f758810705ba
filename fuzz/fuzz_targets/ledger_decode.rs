//! Fuzzes the ledger's decoders with arbitrary bytes: transactions, blocks,
//! cross-chain proofs and genesis records must decode or fail with an error,
//! never panic, and whatever decodes must survive verification, the rules and
//! an encode/decode round trip without panicking.

#![no_main]

use federact_config::{ChainKind, NodeKey};
use federact_ledger::block::{Block, Genesis, Limits};
use federact_ledger::cert::ValidatorSet;
use federact_ledger::codec;
use federact_ledger::proof::CrossChainProof;
use federact_ledger::rules::{self, MemState};
use federact_ledger::tx::{Transaction, TxPolicy, TX_BYTES_MAX};
use libfuzzer_sys::fuzz_target;

fn genesis() -> Genesis {
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

fuzz_target!(|data: &[u8]| {
    let g = genesis();
    if let Ok(tx) = Transaction::decode(data, TX_BYTES_MAX) {
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
        let _ = block.id();
        let _ = block.check_body(&Limits::default(), &TxPolicy::default());
        let _ = rules::check_proposal(&g, &g.tip(), &MemState::default(), &block);
        let again = Block::decode(&block.encode(), 1 << 21).expect("re-decodes");
        assert_eq!(again.id(), block.id());
    }
    if let Ok(proof) = codec::decode::<CrossChainProof>(data, 1 << 20) {
        let _ = proof.verify(&g.validators, "cons");
    }
    if let Ok(genesis) = codec::decode::<Genesis>(data, 1 << 16) {
        let _ = genesis.check();
    }
});
