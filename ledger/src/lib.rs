//! # federact-ledger
//!
//! The ledger every cloud and the consortium keep: signed records,
//! hash-chained blocks with commit certificates, Merkle inclusion proofs,
//! validation rules, the sled chain store, the Tendermint consensus core and
//! cross-chain proofs.
//!
//! Everything here is pure (no clocks, sockets, threads, actix or tokio)
//! except the `store` module, the only place sled appears.
//!
//! # Layout
//! - [`hash`]: sha256 digests.
//! - [`codec`]: the canonical bincode encoding, with size-limited decoding.
//! - [`cert`]: validator sets, vote signing bytes, commit certificates.
//! - [`record`]: the typed records (offloading, provenance, migration,
//!   relay, membership) and where each is routed ([`record::Record::route`]).
//! - [`tx`]: signed transactions with a cached encoding and id; single and
//!   batch signature verification.
//! - [`merkle`]: RFC 6962 Merkle roots and inclusion proofs over tx ids.
//! - [`block`]: blocks, headers, the genesis a chain describes itself with,
//!   and header/body checks.
//! - [`migration`]: the BASICS migration protocol as a sans-IO state
//!   machine (one per migration and side).
//! - [`proof`]: cross-chain proofs (header, certificate, tx, Merkle path).
//! - [`rules`]: the deterministic validation rules over a small state model
//!   ([`rules::check_proposal`], [`rules::check_block`], [`rules::apply_tx`]).
//! - [`store`]: the sled chain store (the only I/O): atomic commit per
//!   block, queries, durability contract.
//! - [`verify`]: offline re-verification of a store (`federact ledger verify`).
//! - [`consensus`]: the Tendermint state machine the validator actor drives
//!   (sans-IO, generic over the value agreed on, [`consensus::ConsensusValue`]);
//!   its deterministic simulator is behind the `sim` feature.
//! - [`error`]: [`error::LedgerError`] (environment) and the verdict types.
//!
//! # What the actors call
//! - validator: [`store::ChainStore::check_proposal`] before voting,
//!   [`store::ChainStore::commit_prechecked`] (or `commit`) once a
//!   certificate exists;
//! - gateway: [`record::Record::route`] to pick the chain,
//!   [`store::ChainStore::tx`] for the [`proof::CrossChainProof`] to relay;
//! - everyone: the queries on [`store::ChainStore`] (`vm_history`,
//!   `provenance`, `offload`, `last_nonce`, `block`).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]
#![warn(missing_docs)]

pub mod block;
pub mod cert;
pub mod chain;
pub mod codec;
pub mod consensus;
pub mod error;
pub mod hash;
pub mod mempool;
pub mod merkle;
pub mod migration;
pub mod proof;
pub mod record;
pub mod rules;
pub mod store;
pub mod tx;
pub mod verify;

pub use cert::{CertError, CommitCertificate, ValidatorSet, VoteKind};
pub use hash::Hash;
