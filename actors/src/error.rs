//! Errors of the actors crate.

use federact_config::NodeId;

/// Why an actor or node could not start or carry out a request.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The chain store or WAL failed.
    #[error(transparent)]
    Ledger(#[from] federact_ledger::error::LedgerError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] federact_federation::TransportError),
    /// The configuration is unusable for this node.
    #[error(transparent)]
    ConfigFile(#[from] federact_config::ConfigError),
    /// A setting does not fit what the node was asked to do.
    #[error("configuration: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// This node is listed as a validator of a chain whose set lacks its key.
    #[error("node {node} is not a validator of chain `{chain}`")]
    NotAValidator {
        /// The chain.
        chain: String,
        /// The node's id.
        node: NodeId,
    },
    /// A peer answered with bytes that do not decode.
    #[error("malformed answer from {peer}: {detail}")]
    Malformed {
        /// The peer.
        peer: NodeId,
        /// The decode error.
        detail: String,
    },
    /// The gateway refused a transaction.
    #[error("refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// An answer about a chain failed its check against the chain's
    /// validator set (forged or altered by the gateway or a validator).
    #[error("answer about chain `{chain}` via {peer} failed verification: {detail}")]
    Unverified {
        /// The chain asked about.
        chain: String,
        /// The gateway the answer came through.
        peer: NodeId,
        /// What did not check.
        detail: String,
    },
    /// The actor is gone (node shutting down).
    #[error("the {actor} actor is not running")]
    Stopped {
        /// Which actor.
        actor: &'static str,
    },
}
