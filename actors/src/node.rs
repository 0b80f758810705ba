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
use crate::gateway::{GatewayActor, GatewaySetup};
use crate::validator::{ValidatorActor, ValidatorSetup};

/// A running node.
pub struct Node {
    name: String,
    key: NodeKey,
    transport: Transport,
    validators: Vec<(String, Addr<ValidatorActor>)>,
    gateway: Option<Addr<GatewayActor>>,
    gateway_id: Option<federact_config::NodeId>,
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
        let fed = config.federation();
        let spec = config.spec();
        let membership = Membership::from_federation(fed);
        let options = TransportOptions::from(*fed.transport());
        let transport = Transport::bind(&key, membership, options, spec.listen()).await?;
        let data = config.data_dir().to_path_buf();
        let mut validators = Vec::new();
        if spec.roles().contains(Role::Validator) {
            for chain in fed.chains().iter().filter(|c| c.validators().contains(&spec.id())) {
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
        info!(node = %spec.name(), id = %spec.id().short(), listen = %spec.listen(), roles = %spec.roles(), "node started");
        Ok(Node {
            name: spec.name().to_string(),
            key,
            transport,
            validators,
            gateway,
            gateway_id,
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

    /// The gateway actor, if this node is its cloud's gateway.
    pub fn gateway(&self) -> Option<&Addr<GatewayActor>> {
        self.gateway.as_ref()
    }

    /// A client signing as this node, talking to its cloud's gateway.
    pub fn ledger_client(&self) -> Option<LedgerClient> {
        self.gateway_id
            .map(|g| LedgerClient::new(self.transport.clone(), self.key.clone(), g))
    }

    /// Stops the actors (flushing stores) and closes the endpoint.
    pub async fn shutdown(self) {
        for (_, v) in &self.validators {
            let _ = v.send(Shutdown).await;
        }
        if let Some(g) = &self.gateway {
            let _ = g.send(Shutdown).await;
        }
        self.transport.close().await;
        info!(node = %self.name, "node stopped");
    }
}
