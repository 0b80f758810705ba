//! # federact-config
//!
//! The federation's vocabulary, shared by every other federact crate:
//! node identities ([`NodeId`] = an ed25519 public key, [`NodeKey`] = its
//! signing key and key file), clouds, roles, listen addresses, chains and their
//! validator sets, transport limits and telemetry settings.
//!
//! A federation is loaded from TOML by [`Federation::load`] into types that
//! cannot hold an invalid federation: every cross-reference is checked and
//! every problem is a [`ConfigError`] with file, line, column and what to
//! change. This crate does no networking and holds no state beyond files.
//!
//! # Layout
//! - [`identity`]: `NodeId`, `NodeKey`, `Signature`, key files (mode 0600).
//! - [`federation`]: the typed federation model and its parser.
//! - [`node`]: a node's own config file (which federation, which node).
//! - [`init`]: writing a ready-to-run local federation (`federact init`).
//! - [`error`]: `KeyError`, `ConfigError`, `InitError`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]
#![warn(missing_docs)]

pub mod error;
pub mod federation;
pub mod identity;
pub mod init;
pub mod node;

pub use error::{ConfigError, ConfigErrorKind, InitError, KeyError, Location};
pub use federation::{
    ChainKind, ChainParams, ChainSpec, Cloud, ConsensusTimeouts, Federation, NodeSpec, Role, Roles,
    Telemetry, TransportLimits,
};
pub use identity::{NodeId, NodeKey, Signature};
pub use init::{
    default_chain_params, free_udp_ports, write_local_federation, write_local_federation_with,
    Topology,
};
pub use node::NodeConfig;
