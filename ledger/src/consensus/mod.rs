//! Tendermint consensus (Buchman, Kwon, Milosevic, "The latest gossip on BFT
//! consensus", arXiv:1807.04938), as a pure state machine, plus a
//! deterministic simulator to test it.
//!
//! This module does not send, store, time or validate anything itself: the
//! validator actor (the driver) feeds it inputs with the current time and
//! carries out the [`Effect`]s it returns, in order. It is generic over the
//! value agreed on ([`ConsensusValue`]); the ledger plugs in its `Block`.
//!
//! # Layout
//! - [`types`]: the value trait, signed messages, timeouts, effects,
//!   write-ahead entries, parameters, counters.
//! - [`state`]: [`Consensus`], the state machine of Algorithm 1 with
//!   batching, retransmission, catch-up and WAL restore.
//! - `sim` (tests, or feature `sim`): a seeded network/clock simulator with
//!   crashes, partitions and Byzantine validators, and its checkers.
//!
//! # Driving it
//! ```text
//! loop {
//!     input  -> consensus.handle_*(now_ms, ..)
//!     for effect in consensus.poll_effects() {
//!         Persist(e)          => wal.append(e)?.fsync()?   // before anything after it
//!         Broadcast(m)        => send m to every other validator
//!         SendTo(p, m)        => send m to p
//!         ScheduleTimeout{..} => timer; on expiry handle_timeout
//!         BuildValue{..}      => fill a block from the mempool; handle_value_built
//!         ValidateValue{..}   => check with ledger rules; handle_value_validity
//!         RequestBlock{..}    => ask the peer; on reply handle_block_fetched
//!         Decide{value, cert} => store atomically, apply, truncate the WAL,
//!                                handle_txs_available(mempool size)
//!         Evidence(e)         => record / report
//!     }
//! }
//! ```
//! Peers' block requests are answered by the driver from its store; the
//! core does not keep decided blocks.

pub mod state;
pub mod types;

#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use state::{Consensus, NotAValidator};
pub use types::{
    proposal_sign_bytes, ConsensusParams, ConsensusValue, Effect, Evidence, Message, Proposal,
    Rejection, SignedProposal, SignedVote, Stats, Status, Step, Timeout, TimeoutKind, Vote,
    WalEntry,
};

#[cfg(test)]
mod scenarios;
