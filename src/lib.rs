//! # federact
//!
//! Serverless-style actors across a federation of clouds and edge sites that
//! do not trust each other, with every placement, offload and migration
//! recorded on permissioned ledgers.
//!
//! This facade re-exports the workspace crates:
//! - [`config`]: identities, the federation's configuration, key files;
//! - [`ledger`]: records, blocks, proofs, the chain store and consensus core;
//! - [`federation`]: the QUIC transport;
//! - [`actors`]: the actix actors of the node roles;
//!
//! and holds [`builtin`], the functions every `federact node` hosts.

pub mod builtin;

pub use federact_actors as actors;
pub use federact_config as config;
pub use federact_federation as federation;
pub use federact_ledger as ledger;
