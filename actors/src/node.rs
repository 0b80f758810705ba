//! A node: one transport endpoint and the actors of the roles its
//! configuration gives it. Used by `federact node` (one node per process),
//! by the embedded demo (many nodes in one process, same code) and by
//! tests.

use actix::prelude::*;
use tracing::info;

use federact_config::{NodeConfig, NodeKey, Role};
use federact_federation::{Membership, Transport, TransportOptions};
use federact_ledger::block::Genesis;
use federact_ledger::mempool::MempoolLimits;

use crate::client::LedgerClient;
use crate::error::ActorError;
use crate::function::{Function, FunctionRegistry};
use crate::gateway::{GatewayActor, GatewaySetup};
use crate::orchestrator::{OrchestratorActor, OrchestratorSetup};
use crate::placement::LeastLoaded;
use crate::server::{Invoker, ServerActor, ServerLimits};
use crate::validator::{ValidatorActor, ValidatorSetup};

/// A running node.
pub struct Node {
    name: String,
    key: NodeKey,
    transport: Transport,
    validators: Vec<(String, Addr<ValidatorActor>)>,
    gateway: Option<Addr<GatewayActor>>,
    gateway_id: Option<federact_config::NodeId>,
    /// Migration (issue 8): the migration actor of a server node.
    migration: Option<Addr<crate::migration::MigrationActor>>,
    server: Option<Addr<ServerActor>>,
    orchestrator: Option<Addr<OrchestratorActor>>,
    orchestrator_id: Option<federact_config::NodeId>,
}

/// What a node runs beyond its configuration: the functions its server
/// hosts and the server's limits. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Functions a server node hosts.
    pub functions: FunctionRegistry,
    /// A server node's limits.
    pub server: ServerLimits,
    /// A server node's migration limits (issue 8).
    pub migration: crate::migration::MigrationLimits,
    /// How a server node checks the results of the tasks it offloads
    /// (issue 11).
    pub offload: crate::offload_check::OffloadChecks,
}

impl NodeOptions {
    /// Registers function `T` under `name`.
    pub fn function<T: Function>(mut self, name: &str) -> Self {
        self.functions.register::<T>(name);
        self
    }

    /// Registers function `T` under `name` as auditable (see
    /// [`FunctionRegistry::register_auditable`]).
    pub fn auditable_function<T: Function>(mut self, name: &str) -> Self {
        self.functions.register_auditable::<T>(name);
        self
    }

    /// Sets the server limits.
    pub fn server_limits(mut self, limits: ServerLimits) -> Self {
        self.server = limits;
        self
    }
}

/// Asks an actor to stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for ValidatorActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Shutdown> for GatewayActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Node {
    /// Binds the node's endpoint and starts its actors. Must run inside an
    /// actix `System`.
    pub async fn start(config: &NodeConfig, key: NodeKey) -> Result<Node, ActorError> {
        Node::start_with(config, key, NodeOptions::default()).await
    }

    /// [`Node::start`] with functions and server limits. Must run inside an
    /// actix `System`.
    pub async fn start_with(
        config: &NodeConfig,
        key: NodeKey,
        node_options: NodeOptions,
    ) -> Result<Node, ActorError> {
        let fed = config.federation();
        let spec = config.spec();
        let membership = Membership::from_federation(fed);
        let options = TransportOptions::from(*fed.transport());
        let transport = Transport::bind(&key, membership, options, config.bind_addr()).await?;
        crate::metrics::observe_transport_global(spec.name(), &transport);
        let data = config.data_dir().to_path_buf();
        let mut validators = Vec::new();
        if spec.roles().contains(Role::Validator) {
            for chain in fed
                .chains()
                .iter()
                .filter(|c| c.validators().contains(&spec.id()))
            {
                let genesis = Genesis::from_federation(fed, chain.id())?;
                let actor = ValidatorActor::new(ValidatorSetup {
                    key: key.clone(),
                    chain: chain.clone(),
                    genesis,
                    dir: data.join("chains").join(chain.id()),
                    transport: transport.clone(),
                    mempool: MempoolLimits::default(),
                })?;
                validators.push((chain.id().to_string(), actor.start()));
            }
        }
        let gateway = if spec.roles().contains(Role::Gateway) {
            let actor = GatewayActor::new(GatewaySetup {
                key: key.clone(),
                federation: fed.clone(),
                cloud: spec.cloud().to_string(),
                transport: transport.clone(),
                dir: data.join("gateway"),
            })?;
            Some(actor.start())
        } else {
            None
        };
        let gateway_id = fed.gateway(spec.cloud()).map(|g| g.id());
        let orchestrator_id = fed.orchestrator(spec.cloud()).map(|o| o.id());
        let orchestrator = match (spec.roles().contains(Role::Orchestrator), gateway_id) {
            (true, Some(g)) => {
                let actor = OrchestratorActor::new(OrchestratorSetup {
                    cloud: spec.cloud().to_string(),
                    federation: fed.clone(),
                    transport: transport.clone(),
                    ledger: LedgerClient::new(transport.clone(), key.clone(), g),
                    dir: data.join("orchestrator"),
                    policy: Box::new(LeastLoaded),
                })?;
                Some(actor.start())
            }
            _ => None,
        };
        // One ledger client per server node, shared by its migration and
        // server actors: they sign as the same node, so they must share one
        // nonce sequence (and its submission order), and the federation's
        // validator sets (to check proofs) are built once.
        let server_ledger = match (spec.roles().contains(Role::Server), gateway_id) {
            (true, Some(g)) => {
                Some(LedgerClient::new(transport.clone(), key.clone(), g).with_federation(fed))
            }
            _ => None,
        };
        // ---- Migration (issue 8): every server runs a migration actor. ----
        let migration = match &server_ledger {
            Some(ledger) => {
                let actor =
                    crate::migration::MigrationActor::new(crate::migration::MigrationSetup {
                        federation: fed.clone(),
                        site: federact_ledger::record::Site::new(spec.cloud(), spec.name()),
                        transport: transport.clone(),
                        ledger: ledger.clone(),
                        dir: data.join("migration"),
                        state_dir: data.join("migration-state"),
                        limits: node_options.migration,
                    })?;
                Some(actor.start())
            }
            _ => None,
        };
        // ---- end migration ----
        let mut offload_counters = None;
        let server = if spec.roles().contains(Role::Server) {
            // With the federation's validator sets: the server checks the
            // proofs executors send with offloaded results.
            let actor = ServerActor::new(
                transport.clone(),
                orchestrator_id,
                node_options.functions,
                node_options.server,
            )?
            .with_ledger(server_ledger)
            .with_migration(migration.clone(), data.join("migration"))
            .with_offload_checks(node_options.offload);
            offload_counters = Some(actor.offload_counters());
            Some(actor.start())
        } else {
            None
        };
        // Its refusal and offload counters, for members to read (issue 11).
        crate::stats::serve(&transport, validators.clone(), offload_counters)?;
        info!(node = %spec.name(), id = %spec.id().short(), listen = %spec.listen(), bind = %config.bind_addr(), roles = %spec.roles(), "node started");
        Ok(Node {
            name: spec.name().to_string(),
            key,
            transport,
            validators,
            gateway,
            gateway_id,
            migration,
            server,
            orchestrator,
            orchestrator_id,
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's transport.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The validator actors, by chain id.
    pub fn validators(&self) -> &[(String, Addr<ValidatorActor>)] {
        &self.validators
    }

    /// Chains whose validator actor has stopped by itself: a storage failure
    /// (disk full, I/O error) or a certified block the rules refuse; the
    /// node's log says which. Such a validator does not come back in this
    /// process (its store refuses writes after an I/O error), so the process
    /// should exit and be restarted once the cause is fixed.
    pub fn stopped_validators(&self) -> Vec<String> {
        self.validators
            .iter()
            .filter(|(_, a)| !a.connected())
            .map(|(chain, _)| chain.clone())
            .collect()
    }

    /// The gateway actor, if this node is its cloud's gateway.
    pub fn gateway(&self) -> Option<&Addr<GatewayActor>> {
        self.gateway.as_ref()
    }

    /// A client signing as this node, talking to its cloud's gateway.
    pub fn ledger_client(&self) -> Option<LedgerClient> {
        self.gateway_id
            .map(|g| LedgerClient::new(self.transport.clone(), self.key.clone(), g))
    }

    /// The server actor, if this node is a server.
    pub fn server(&self) -> Option<&Addr<ServerActor>> {
        self.server.as_ref()
    }

    /// The orchestrator actor, if this node is its cloud's orchestrator.
    pub fn orchestrator(&self) -> Option<&Addr<OrchestratorActor>> {
        self.orchestrator.as_ref()
    }

    /// An invoker of function instances through this node's cloud's
    /// orchestrator (`None` if the cloud has none).
    pub fn invoker(&self) -> Option<Invoker> {
        self.orchestrator_id.map(|o| {
            Invoker::new(
                self.transport.clone(),
                o,
                self.server.clone(),
                self.orchestrator.clone(),
            )
        })
    }

    /// The migration actor, if this node is a server (issue 8).
    pub fn migration(&self) -> Option<&Addr<crate::migration::MigrationActor>> {
        self.migration.as_ref()
    }

    /// Checks, one per actor of this node that stops on [`Shutdown`] and
    /// flushes a store when it does, of whether it still runs.
    pub(crate) fn actor_watch(&self) -> Vec<Box<dyn Fn() -> bool + Send>> {
        use crate::embedded::alive;
        let mut out: Vec<Box<dyn Fn() -> bool + Send>> = Vec::new();
        out.extend(self.validators.iter().map(|(_, v)| alive(v.clone())));
        out.extend(self.gateway.clone().map(alive));
        out.extend(self.orchestrator.clone().map(alive));
        // Its unfinished-migration store (sled) must close before a restart.
        out.extend(self.migration.clone().map(alive));
        out
    }

    /// Stops the actors (flushing stores) and closes the endpoint.
    pub async fn shutdown(self) {
        if let Some(s) = &self.server {
            let _ = s.send(Shutdown).await;
        }
        if let Some(m) = &self.migration {
            let _ = m.send(Shutdown).await;
        }
        if let Some(o) = &self.orchestrator {
            let _ = o.send(Shutdown).await;
        }
        for (_, v) in &self.validators {
            let _ = v.send(Shutdown).await;
        }
        if let Some(g) = &self.gateway {
            let _ = g.send(Shutdown).await;
        }
        // close() sends CONNECTION_CLOSE to every peer at once, then waits
        // for the connections to drain; peers that already shut down never
        // answer, and waiting out their idle timeout only delays the exit.
        let drain = std::time::Duration::from_secs(1);
        if tokio::time::timeout(drain, self.transport.close())
            .await
            .is_err()
        {
            info!(node = %self.name, "connections still draining after {drain:?}; leaving them");
        }
        info!(node = %self.name, "node stopped");
    }
}
