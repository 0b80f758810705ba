//! A node's own configuration file: which federation it belongs to, which
//! node of it this process is, and where its key and data live.
//!
//! ```toml
//! federation = "../federation.toml"   # relative to this file
//! node = "c1-gateway"
//! # optional overrides of the federation's entry for this node:
//! # key_file = "../keys/c1-gateway.key"
//! # data_dir = "/var/lib/federact/c1-gateway"
//! # the address this process binds, when peers reach it through another
//! # one (a NAT, a proxy, the fault tests' UDP relay); default: its `listen`
//! # bind = "127.0.0.1:7100"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{ConfigError, ConfigErrorKind, Location};
use crate::federation::{Federation, NodeSpec};
use crate::identity::NodeKey;

/// A checked node configuration: the federation plus this node's place in it.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    federation: Federation,
    name: String,
    key_file: PathBuf,
    data_dir: PathBuf,
    bind: Option<SocketAddr>,
    source: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeConfig {
    federation: Spanned<String>,
    node: Spanned<String>,
    key_file: Option<String>,
    data_dir: Option<String>,
    bind: Option<Spanned<String>>,
}

impl NodeConfig {
    /// Reads a node file and the federation file it names.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            location: None,
            kind: Box::new(ConfigErrorKind::Io(e)),
        })?;
        let err = |span: Option<std::ops::Range<usize>>, kind| ConfigError {
            file: path.to_path_buf(),
            location: span.map(|s| Location::of_offset(&text, s.start)),
            kind: Box::new(kind),
        };
        let raw: RawNodeConfig = toml::from_str(&text)
            .map_err(|e| err(e.span(), ConfigErrorKind::Syntax(e.message().to_string())))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let fed_path = base.join(raw.federation.get_ref());
        let federation = Federation::load(&fed_path)?;
        let Some(spec) = federation.node(raw.node.get_ref()) else {
            return Err(err(
                Some(raw.node.span()),
                ConfigErrorKind::UnknownNode {
                    node: raw.node.get_ref().clone(),
                    federation: fed_path.display().to_string(),
                },
            ));
        };
        let key_file = raw
            .key_file
            .map(|k| base.join(k))
            .unwrap_or_else(|| spec.key_file().to_path_buf());
        let data_dir = raw
            .data_dir
            .map(|d| base.join(d))
            .unwrap_or_else(|| spec.data_dir().to_path_buf());
        let bind = match raw.bind {
            None => None,
            Some(b) => Some(b.get_ref().parse::<SocketAddr>().map_err(|_| {
                err(
                    Some(b.span()),
                    ConfigErrorKind::BadAddress {
                        node: spec.name().to_string(),
                        value: b.get_ref().clone(),
                    },
                )
            })?),
        };
        Ok(NodeConfig {
            name: spec.name().to_string(),
            federation,
            key_file,
            data_dir,
            bind,
            source: path.to_path_buf(),
        })
    }

    /// Builds a node configuration directly from a federation (embedded use).
    pub fn from_federation(federation: Federation, node: &str) -> Result<NodeConfig, ConfigError> {
        let Some(spec) = federation.node(node) else {
            return Err(ConfigError {
                file: federation.source().to_path_buf(),
                location: None,
                kind: Box::new(ConfigErrorKind::UnknownNode {
                    node: node.to_string(),
                    federation: federation.source().display().to_string(),
                }),
            });
        };
        Ok(NodeConfig {
            name: spec.name().to_string(),
            key_file: spec.key_file().to_path_buf(),
            data_dir: spec.data_dir().to_path_buf(),
            bind: None,
            source: federation.source().to_path_buf(),
            federation,
        })
    }

    /// The federation this node belongs to.
    pub fn federation(&self) -> &Federation {
        &self.federation
    }

    /// This node's entry in the federation.
    pub fn spec(&self) -> &NodeSpec {
        // The name was looked up when the config was built.
        self.federation
            .node(&self.name)
            .expect("node config always names a node of its federation")
    }

    /// The key file.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The address this node's QUIC endpoint binds: the node file's `bind`
    /// if given, else its `listen` address in the federation (where peers
    /// dial it).
    pub fn bind_addr(&self) -> SocketAddr {
        self.bind.unwrap_or_else(|| self.spec().listen())
    }

    /// Reads the key file and checks it holds the key the federation declares.
    pub fn load_key(&self) -> Result<NodeKey, ConfigError> {
        let key = NodeKey::read_file(&self.key_file).map_err(|source| ConfigError {
            file: self.source.clone(),
            location: None,
            kind: Box::new(ConfigErrorKind::Key {
                node: self.name.clone(),
                source,
            }),
        })?;
        let expected = self.spec().id();
        if key.id() != expected {
            return Err(ConfigError {
                file: self.source.clone(),
                location: None,
                kind: Box::new(ConfigErrorKind::KeyMismatch {
                    node: self.name.clone(),
                    key_file: self.key_file.display().to_string(),
                    found: key.id().to_string(),
                    expected: expected.to_string(),
                }),
            });
        }
        Ok(key)
    }
}
