//! Every node of a federation in one process: the same actors over the
//! same loopback QUIC and sled stores as separate processes would use (one
//! code path), for the demo, examples and tests.
//!
//! Each node runs on its own actix [`Arbiter`] (a thread with its own event
//! loop): its actors, its QUIC endpoint and the tasks they spawn stay on
//! that thread, as they would in a process of their own. Sharing one thread
//! between every node serialised the whole federation on one core.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::{Addr, Arbiter};
use federact_config::{Federation, NodeConfig};

use crate::error::ActorError;
use crate::node::{Node, NodeOptions};

/// A federation whose nodes all run in this process.
pub struct EmbeddedFederation {
    federation: Federation,
    node_files: BTreeMap<String, PathBuf>,
    nodes: BTreeMap<String, Node>,
    arbiters: BTreeMap<String, Arbiter>,
    options: OptionsFor,
}

/// Which [`NodeOptions`] a node (by name) starts with.
type OptionsFor = Arc<dyn Fn(&str) -> NodeOptions + Send + Sync>;

/// How long a stopping node's actors get to finish (flush their stores)
/// before its thread is stopped.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
        EmbeddedFederation::start_each(dir, move |_| options.clone()).await
    }

    /// [`EmbeddedFederation::start`] with the options `options_for(name)`
    /// for node `name` (say, one server with other limits than the rest);
    /// a restarted node gets its options again.
    pub async fn start_each(
        dir: &Path,
        options_for: impl Fn(&str) -> NodeOptions + Send + Sync + 'static,
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
            arbiters: BTreeMap::new(),
            options: Arc::new(options_for),
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
        let options = (self.options)(name);
        let arbiter = Arbiter::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = arbiter.spawn(async move {
            let _ = tx.send(Node::start_with(&cfg, key, options).await);
        });
        let started = match rx.await {
            Ok(r) if spawned => r,
            _ => Err(ActorError::Stopped {
                actor: "embedded node thread",
            }),
        };
        match started {
            Ok(node) => {
                self.nodes.insert(name.to_string(), node);
                self.arbiters.insert(name.to_string(), arbiter);
                Ok(())
            }
            Err(e) => {
                stop_arbiter(arbiter).await;
                Err(e)
            }
        }
    }

    /// Runs `f` once on every running node's thread and returns when each
    /// has run it: e.g. to install a thread-local `tracing` dispatcher on
    /// the node threads (a benchmark comparing subscribers in one process).
    pub async fn on_each_node_thread(&self, f: impl Fn() + Send + Sync + 'static) {
        let f = Arc::new(f);
        let mut done = Vec::new();
        for arbiter in self.arbiters.values() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let f = f.clone();
            if arbiter.spawn_fn(move || {
                f();
                let _ = tx.send(());
            }) {
                done.push(rx);
            }
        }
        for rx in done {
            let _ = rx.await;
        }
    }

    /// Stops node `name` (its actors flush their stores; its endpoint
    /// closes; its thread ends, releasing the stores' files).
    pub async fn stop_node(&mut self, name: &str) {
        let node = self.nodes.remove(name);
        let arbiter = self.arbiters.remove(name);
        stop(node, arbiter).await;
    }

    /// Stops every node, all at once: each flushes its stores and closes
    /// its endpoint (the connection drains overlap instead of adding up).
    pub async fn shutdown(mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        let mut arbiters = std::mem::take(&mut self.arbiters);
        let stops: Vec<_> = nodes
            .into_iter()
            .map(|(name, node)| stop(Some(node), arbiters.remove(&name)))
            .collect();
        futures::future::join_all(stops).await;
        for (_, arbiter) in arbiters {
            stop_arbiter(arbiter).await;
        }
    }
}

/// Stops a node and then its thread.
async fn stop(node: Option<Node>, arbiter: Option<Arbiter>) {
    if let Some(node) = node {
        let actors = node.actor_watch();
        node.shutdown().await;
        // Shutdown asked the actors to stop; give them the time to run
        // their `stopped` hooks (store flushes) before the thread goes.
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while actors.iter().any(|alive| alive()) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    if let Some(arbiter) = arbiter {
        stop_arbiter(arbiter).await;
    }
}

/// Stops a node's thread and waits until it ended (its actors and stores
/// are dropped then).
async fn stop_arbiter(arbiter: Arbiter) {
    arbiter.stop();
    let _ = tokio::task::spawn_blocking(move || arbiter.join()).await;
}

/// Whether an actor is still running.
pub(crate) fn alive<A: actix::Actor>(addr: Addr<A>) -> Box<dyn Fn() -> bool + Send> {
    Box::new(move || addr.connected())
}
