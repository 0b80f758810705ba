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
//!
//! # Persistence contract (raft-rs style)
//! - [`Effect::Persist`] precedes the broadcast of what it records; the
//!   driver makes it durable before carrying out any later effect.
//! - On restart the driver calls [`Consensus::new`] with the first height
//!   not in its store and the WAL entries it kept for that height. The core
//!   resumes at the WAL's highest round and step, keeps the lock its last
//!   non-nil precommit recorded, re-sends what it signed, and never signs a
//!   second proposal or vote for a (height, round, kind) it signed before.
//! - After storing a decided block the driver may drop WAL entries of that
//!   height and below ([`WalEntry::height`]).
//!
//! # The value, and who validates transactions
//! The ledger's `Block` implements [`ConsensusValue`] (`id` = header hash).
//! The driver builds blocks ([`Effect::BuildValue`], from its mempool, up to
//! the size limits given), judges proposed blocks ([`Effect::ValidateValue`]:
//! header links, `tx_root`, signatures and the ledger rules on the state
//! after the previous height), and applies decided ones. The core only
//! counts signed votes on ids; a fetched block is applied because its
//! certificate verifies, not because the core re-validated it.
//!
//! # Bounds
//! Per height: at most 2 proposals per round, per validator and round one
//! vote per kind plus 3 conflicting ones, rounds stored only up to
//! `future_rounds_max` ahead, `future_msgs_per_peer` messages buffered per
//! peer for the next height; farther heights and rounds are dropped,
//! counted in [`Stats`], and noted (per validator, not per message) as
//! catch-up and round-skip hints.

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
