//! The ledger as the consensus application: a [`Block`] is the value the
//! Tendermint core agrees on, and this module builds proposals from a
//! mempool and checks them against chain state — pure functions the
//! validator actor calls for the core's `BuildValue` / `ValidateValue`
//! effects, so no protocol decision lives in the actor.

use federact_config::NodeId;

use crate::block::{Block, Genesis, Tip};
use crate::consensus::ConsensusValue;
use crate::error::RuleError;
use crate::hash::Hash;
use crate::mempool::Mempool;
use crate::rules::{apply_tx, keys_read, ChainState, Overlay, RuleContext, StateKey};
use crate::tx::{Transaction, TxId};

impl ConsensusValue for Block {
    fn id(&self) -> Hash {
        Block::id(self)
    }
}

/// A proposal built from the mempool, and the transactions the rules refused
/// while building it (to be dropped from the mempool with their reason).
#[derive(Debug)]
pub struct Built {
    /// The proposed block.
    pub block: Block,
    /// Transactions left out because the rules refuse them on this state.
    pub refused: Vec<(TxId, RuleError)>,
}

/// Where a proposal goes.
#[derive(Debug, Clone, Copy)]
pub struct ProposalSlot<'a> {
    /// The chain's genesis.
    pub genesis: &'a Genesis,
    /// The last committed block.
    pub tip: &'a Tip,
    /// Round of the proposal.
    pub round: u32,
    /// The proposer.
    pub proposer: NodeId,
    /// Its clock, ms since the epoch (kept above the tip's timestamp).
    pub now_ms: u64,
}

/// The state keys the candidate transactions read: what a store must
/// prefetch for [`build_block`] to see the state it needs.
pub fn keys_for(txs: &[Transaction]) -> Vec<StateKey> {
    let mut keys: Vec<StateKey> = txs.iter().flat_map(keys_read).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Builds the next block from up to `max_txs` / `max_bytes` of the mempool's
/// transactions: each candidate is applied to one overlay over `state` in
/// order, and those the rules refuse are left out and reported.
pub fn build_block(
    slot: ProposalSlot<'_>,
    candidates: Vec<Transaction>,
    state: &dyn ChainState,
) -> Built {
    let height = slot.tip.height + 1;
    let ctx = RuleContext {
        genesis: slot.genesis,
        height,
    };
    let mut overlay = Overlay::new(state);
    let mut txs = Vec::with_capacity(candidates.len());
    let mut refused = Vec::new();
    for tx in candidates {
        match apply_tx(&mut overlay, &ctx, &tx) {
            Ok(()) => txs.push(tx),
            Err(e) => refused.push((tx.id(), e)),
        }
    }
    // Timestamps never go backwards, whatever the proposer's clock says.
    let timestamp_ms = slot.now_ms.max(slot.tip.timestamp_ms + 1);
    let block = Block::new(
        &slot.genesis.chain_id,
        height,
        slot.tip.id,
        slot.proposer,
        slot.round,
        timestamp_ms,
        txs,
    );
    Built { block, refused }
}

/// Takes the candidates for a proposal out of `mempool` (leaving them there
/// until commit).
pub fn candidates(mempool: &Mempool, max_txs: u32, max_bytes: u64) -> Vec<Transaction> {
    mempool.select(
        max_txs as usize,
        usize::try_from(max_bytes).unwrap_or(usize::MAX),
    )
}
