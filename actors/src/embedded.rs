//! Every node of a federation in one process: the same actors over the
//! same loopback QUIC and sled stores as separate processes would use (one
//! code path), for the demo, examples and tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use federact_config::{Federation, NodeConfig};

use crate::error::ActorError;
use crate::node::{Node, NodeOptions};

/// A federation whose nodes all run in this process.
pub struct EmbeddedFederation {
    federation: Federation,
    node_files: BTreeMap<String, PathBuf>,
    nodes: BTreeMap<String, Node>,
    options: NodeOptions,
}

impl EmbeddedFederation {
    /// Starts every node of the federation written by `federact init` in
    /// `dir` (`dir/federation.toml`, `dir/nodes/NAME.toml`). Must run inside
    /// an actix `System`.
    pub async fn start(dir: &Path) -> Result<EmbeddedFederation, ActorError> {
        EmbeddedFederation::start_with(dir, NodeOptions::default()).await
    }

    /// [`EmbeddedFederation::start`] with `options` (functions, server
    /// limits) for every node.
    pub async fn start_with(
        dir: &Path,
        options: NodeOptions,
    ) -> Result<EmbeddedFederation, ActorError> {
        let federation = Federation::load(&dir.join("federation.toml"))?;
        let node_files: BTreeMap<String, PathBuf> = federation
            .nodes()
            .iter()
            .map(|n| {
                (
                    n.name().to_string(),
                    dir.join("nodes").join(format!("{}.toml", n.name())),
                )
            })
            .collect();
        let mut fed = EmbeddedFederation {
            federation,
            node_files,
            nodes: BTreeMap::new(),
            options,
        };
        // Client identities (tools) run no actors: nothing to start.
        let names: Vec<String> = fed
            .federation
            .nodes()
            .iter()
            .filter(|n| n.roles().runs_actors())
            .map(|n| n.name().to_string())
            .collect();
        for name in names {
            fed.start_node(&name).await?;
        }
        Ok(fed)
    }

    /// The federation's configuration.
    pub fn federation(&self) -> &Federation {
        &self.federation
    }

    /// A running node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Names of the running nodes.
    pub fn running(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// The configuration of node `name`.
    pub fn node_config(&self, name: &str) -> Result<NodeConfig, ActorError> {
        let file = self
            .node_files
            .get(name)
            .ok_or_else(|| ActorError::Config {
                detail: format!("no node `{name}` in the federation"),
            })?;
        Ok(NodeConfig::load(file)?)
    }

    /// Starts (or restarts) node `name` from its configuration and stores.
    pub async fn start_node(&mut self, name: &str) -> Result<(), ActorError> {
        if self.nodes.contains_key(name) {
            return Ok(());
        }
        let cfg = self.node_config(name)?;
        let key = cfg.load_key()?;
        let node = Node::start_with(&cfg, key, self.options.clone()).await?;
        self.nodes.insert(name.to_string(), node);
        Ok(())
    }

    /// Stops node `name` (its actors flush their stores; its endpoint closes).
    pub async fn stop_node(&mut self, name: &str) {
        if let Some(node) = self.nodes.remove(name) {
            node.shutdown().await;
        }
    }

    /// Stops every node, all at once: each flushes its stores and closes
    /// its endpoint (the connection drains overlap instead of adding up).
    pub async fn shutdown(mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        futures::future::join_all(nodes.into_values().map(Node::shutdown)).await;
    }
}
