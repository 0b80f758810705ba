//! Errors of the config crate: key files ([`KeyError`]) and federation
//! configuration ([`ConfigError`], which carries file, line and column).

use std::fmt;
use std::path::PathBuf;

/// A key file or public key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The bytes are not a valid ed25519 public key (base58 or 64 hex digits
    /// of a point on the curve).
    #[error("not a valid ed25519 public key (expected base58 or 64 hex digits)")]
    InvalidPublicKey,
    /// The PEM text is not a PKCS#8 ed25519 private key.
    #[error("not a PKCS#8 ed25519 private key")]
    Malformed,
    /// The key file exists but is not a PKCS#8 ed25519 private key.
    #[error(
        "{0}: not a PKCS#8 ed25519 private key (make a new one with `federact keygen --out FILE`)"
    )]
    MalformedFile(PathBuf),
    /// The key file is readable by group or others.
    #[error(
        "{path}: key file has mode {mode:o}; it must be readable by its owner only (chmod 600)"
    )]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Refused to overwrite an existing key file.
    #[error("{0}: already exists; refusing to overwrite a key (pass --force to replace it)")]
    AlreadyExists(PathBuf),
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A position in a configuration file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl Location {
    /// Converts a byte offset into `source` to a line and column.
    pub fn of_offset(source: &str, offset: usize) -> Self {
        let offset = offset.min(source.len());
        let before = source.get(..offset).unwrap_or(source);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before
            .get(line_start..)
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        Location { line, column }
    }
}

/// A configuration file that does not describe a valid federation.
///
/// Displays as `FILE:LINE:COLUMN: what is wrong; what to change`.
#[derive(Debug)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// What is wrong (boxed: errors are rare, `Result`s are everywhere).
    pub kind: Box<ConfigErrorKind>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(l) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                l.line,
                l.column,
                self.kind
            ),
            None => write!(f, "{}: {}", self.file.display(), self.kind),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.kind.as_ref() {
            ConfigErrorKind::Io(e) => Some(e),
            ConfigErrorKind::Key { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What is wrong with a configuration. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    #[error("cannot read file: {0}")]
    Io(#[source] std::io::Error),
    /// TOML syntax or a field of the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// Two clouds share a name.
    #[error("duplicate cloud name `{name}` (first defined on line {first_line}); give every cloud a unique name")]
    DuplicateCloud {
        /// The repeated name.
        name: String,
        /// Line of the first definition.
        first_line: usize,
    },
    /// Two nodes share a name.
    #[error("duplicate node name `{name}` (first defined on line {first_line}); give every node a unique name")]
    DuplicateNodeName {
        /// The repeated name.
        name: String,
        /// Line of the first definition.
        first_line: usize,
    },
    /// Two nodes share a public key.
    #[error("node `{node}` has the same public_key as node `{other}`; every node needs its own key (`federact keygen --out FILE`)")]
    DuplicateKey {
        /// The node with the repeated key.
        node: String,
        /// The node that has it first.
        other: String,
    },
    /// A node names a cloud that is not declared.
    #[error("node `{node}` names unknown cloud `{cloud}`; declare it with [[clouds]] name = \"{cloud}\" or use one of: {known}")]
    UnknownCloud {
        /// The node.
        node: String,
        /// The cloud it names.
        cloud: String,
        /// The declared clouds.
        known: String,
    },
    /// A listen address does not parse.
    #[error("node `{node}`: `{value}` is not a socket address; write it as IP:PORT, e.g. \"127.0.0.1:7000\"")]
    BadAddress {
        /// The node.
        node: String,
        /// The text given.
        value: String,
    },
    /// Two nodes listen on the same address.
    #[error("node `{node}` listens on {addr}, which node `{other}` already uses; give each node its own port")]
    AddressCollision {
        /// The node.
        node: String,
        /// The other node.
        other: String,
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// A public key does not parse.
    #[error("node `{node}`: public_key is not an ed25519 public key; copy the id printed by `federact keygen`")]
    BadPublicKey {
        /// The node.
        node: String,
    },
    /// A node that must sign (every role does, to speak QUIC and, for
    /// validators, to vote) has no key.
    #[error("node `{node}` has role {role} but no public_key; run `federact keygen --out keys/{node}.key` and set public_key to the id it prints")]
    MissingKey {
        /// The node.
        node: String,
        /// The role that needs the key.
        role: String,
    },
    /// A node has no roles.
    #[error("node `{node}` has no roles; give it at least one of server, orchestrator, gateway, validator")]
    NoRoles {
        /// The node.
        node: String,
    },
    /// Two chains share an id.
    #[error("duplicate chain id `{id}`; give every chain a unique id")]
    DuplicateChain {
        /// The repeated id.
        id: String,
    },
    /// A local chain without a cloud, or naming an unknown one, or a
    /// consortium chain naming a cloud.
    #[error("chain `{chain}`: {problem}")]
    ChainCloud {
        /// The chain.
        chain: String,
        /// What is wrong and what to change.
        problem: String,
    },
    /// A chain without validators.
    #[error("chain `{chain}` has no validators; list at least one node with role validator in `validators`")]
    NoValidators {
        /// The chain.
        chain: String,
    },
    /// A chain lists a validator that is not a node.
    #[error("chain `{chain}` lists validator `{node}`, which is not a declared node")]
    UnknownValidator {
        /// The chain.
        chain: String,
        /// The name given.
        node: String,
    },
    /// A chain lists a validator twice.
    #[error("chain `{chain}` lists validator `{node}` twice; each validator votes once")]
    DuplicateValidator {
        /// The chain.
        chain: String,
        /// The repeated validator.
        node: String,
    },
    /// A chain's validator lacks the validator role.
    #[error("chain `{chain}` lists `{node}` as a validator, but the node lacks the validator role; add \"validator\" to its roles")]
    ValidatorWithoutRole {
        /// The chain.
        chain: String,
        /// The node.
        node: String,
    },
    /// A local chain's validator belongs to another cloud.
    #[error("local chain `{chain}` of cloud `{cloud}` lists validator `{node}` of cloud `{node_cloud}`; a local chain is run by its own cloud's validators")]
    ForeignValidator {
        /// The chain.
        chain: String,
        /// The chain's cloud.
        cloud: String,
        /// The node.
        node: String,
        /// The node's cloud.
        node_cloud: String,
    },
    /// n < 3f + 1.
    #[error("chain `{chain}` has {n} validators but fault_tolerance = {f} needs at least {needed} (n >= 3f+1); add validators or lower fault_tolerance")]
    TooFewValidators {
        /// The chain.
        chain: String,
        /// Validators listed.
        n: usize,
        /// Configured f.
        f: u32,
        /// 3f + 1.
        needed: u64,
    },
    /// A cloud has no local chain or several.
    #[error("cloud `{cloud}` has {count} local chains; every cloud needs exactly one [[chains]] with kind = \"local\" and cloud = \"{cloud}\"")]
    LocalChainCount {
        /// The cloud.
        cloud: String,
        /// How many it has.
        count: usize,
    },
    /// The consortium chain is missing (with several clouds) or repeated.
    #[error("{0}")]
    Consortium(String),
    /// A cloud lacks its gateway or orchestrator, or has several.
    #[error("cloud `{cloud}` has {count} nodes with role {role}; it needs exactly one")]
    RoleCount {
        /// The cloud.
        cloud: String,
        /// The role.
        role: String,
        /// How many nodes have it.
        count: usize,
    },
    /// A node with the validator role validates no chain.
    #[error("node `{node}` has role validator but no chain lists it; add it to a chain's validators or drop the role")]
    IdleValidator {
        /// The node.
        node: String,
    },
    /// A numeric setting is out of range.
    #[error("{field} = {value} is out of range; {expected}")]
    OutOfRange {
        /// The setting.
        field: String,
        /// The value given.
        value: String,
        /// The allowed range.
        expected: String,
    },
    /// A node config names a node the federation does not declare.
    #[error("node `{node}` is not declared in {federation}")]
    UnknownNode {
        /// The name given.
        node: String,
        /// The federation file.
        federation: String,
    },
    /// The node's key file does not hold the key the federation declares.
    #[error("key file {key_file} holds key {found}, but the federation declares {expected} for node `{node}`")]
    KeyMismatch {
        /// The node.
        node: String,
        /// The key file.
        key_file: String,
        /// The key's id.
        found: String,
        /// The declared id.
        expected: String,
    },
    /// The node's key file could not be read.
    #[error("node `{node}`: {source}")]
    Key {
        /// The node.
        node: String,
        /// The key error.
        #[source]
        source: KeyError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_line_and_column() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(Location::of_offset(src, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of_offset(src, 6), Location { line: 2, column: 1 });
        assert_eq!(Location::of_offset(src, 8), Location { line: 2, column: 3 });
        assert_eq!(
            Location::of_offset(src, 999),
            Location { line: 3, column: 1 }
        );
    }
}

/// `federact init` could not write the federation.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The requested shape is not a valid federation.
    #[error("invalid topology: {0}")]
    Topology(String),
    /// A federation already exists there.
    #[error("{0} already exists; pass --force to overwrite it (its keys are replaced too)")]
    Exists(PathBuf),
    /// A key could not be written.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
