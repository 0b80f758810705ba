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

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]
#![warn(missing_docs)]

pub mod block;
pub mod cert;
pub mod codec;
pub mod consensus;
pub mod error;
pub mod hash;
pub mod merkle;
pub mod proof;
pub mod record;
pub mod rules;
pub mod store;
pub mod tx;
pub mod verify;

pub use cert::{CertError, CommitCertificate, ValidatorSet, VoteKind};
pub use hash::Hash;
