//! A node's refusal and offload counters, readable by any member over the
//! transport (actor [`STATS_ACTOR`]): what the fault suite's checkers read
//! to prove every forged or unauthenticated input was not only refused but
//! counted, and what an operator reads when the OpenTelemetry pipeline is
//! off (the counters are kept either way).
//!
//! [`NodeStats`] holds the transport's refusals (TLS handshakes by reason,
//! frames by reason, messages to unknown actors or full inboxes), each
//! validator's counters (undecodable messages, refused transactions,
//! equivocation evidence) and a server's offload checks
//! ([`crate::offload_check`]). Only members reach the actor (the transport
//! authenticates them); the answer is counts, nothing else.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use serde::{Deserialize, Serialize};
use tracing::debug;

use federact_config::NodeId;
use federact_federation::error::{FrameError, RefusalReason};
use federact_federation::{Incoming, Transport};

use crate::error::ActorError;
use crate::offload_check::{OffloadCounters, OffloadCounts};
use crate::validator::{Counters, ValidatorActor, ValidatorCounters};
use crate::wire;

/// The transport address of a node's counters.
pub const STATS_ACTOR: &str = "stats";

/// What the stats actor answers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum StatsRequest {
    /// Every counter.
    Get,
}

/// The transport's refusals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportCounts {
    /// Refused TLS handshakes by reason (`UnknownKey`, ...).
    pub handshakes_refused: Vec<(String, u64)>,
    /// Refused frames by reason (`TooLarge`, `Truncated`, `Malformed`, ...).
    pub frames_refused: Vec<(String, u64)>,
    /// Messages to an actor this node does not have.
    pub inbound_unknown_actor: u64,
    /// Messages refused because an inbox was full.
    pub inbound_inbox_full: u64,
    /// Messages delivered to an actor.
    pub inbound_delivered: u64,
}

impl TransportCounts {
    /// Every refused handshake.
    pub fn handshakes(&self) -> u64 {
        self.handshakes_refused.iter().map(|(_, n)| n).sum()
    }

    /// Every refused frame.
    pub fn frames(&self) -> u64 {
        self.frames_refused.iter().map(|(_, n)| n).sum()
    }
}

/// One validator's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCounts {
    /// The chain.
    pub chain: String,
    /// The validator's tip.
    pub height: u64,
    /// What it refused (undecodable messages; transactions with a bad
    /// signature, a replayed nonce, a forged relayed record, ...) and did.
    pub counters: ValidatorCounters,
}

/// A node's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The transport's refusals.
    pub transport: TransportCounts,
    /// Per validator actor of the node.
    pub validators: Vec<ChainCounts>,
    /// A server's offload checks.
    pub offloads: Option<OffloadCounts>,
}

impl NodeStats {
    /// The counters of the validator of `chain`, if the node runs one.
    pub fn chain(&self, chain: &str) -> Option<&ChainCounts> {
        self.validators.iter().find(|c| c.chain == chain)
    }
}

/// Serves [`NodeStats`] at [`STATS_ACTOR`] on `transport` until the
/// transport closes. Must run inside an actix `System`.
pub fn serve(
    transport: &Transport,
    validators: Vec<(String, Addr<ValidatorActor>)>,
    offloads: Option<Arc<OffloadCounters>>,
) -> Result<(), ActorError> {
    let mut inbox = transport.register(STATS_ACTOR, 64)?;
    let t = transport.clone();
    actix::spawn(async move {
        while let Some(item) = inbox.recv().await {
            match item {
                Incoming::Request {
                    body, responder, ..
                } => {
                    if wire::decode::<StatsRequest>(&body).is_err() {
                        let _ = responder.fail("malformed stats request").await;
                        continue;
                    }
                    let stats = collect(&t, &validators, offloads.as_deref()).await;
                    if let Err(e) = responder.respond(wire::encode(&stats)).await {
                        debug!(error = %e, "stats answer not sent");
                    }
                }
                Incoming::OneWay { .. } => {}
                Incoming::Transfer { receiver, .. } => receiver.reject(),
            }
        }
    });
    Ok(())
}

async fn collect(
    transport: &Transport,
    validators: &[(String, Addr<ValidatorActor>)],
    offloads: Option<&OffloadCounters>,
) -> NodeStats {
    let m = transport.metrics().snapshot();
    let transport = TransportCounts {
        handshakes_refused: RefusalReason::ALL
            .iter()
            .map(|r| (format!("{r:?}"), m.refused(*r)))
            .collect(),
        frames_refused: FrameError::ALL
            .iter()
            .map(|r| (format!("{r:?}"), m.frames(*r)))
            .collect(),
        inbound_unknown_actor: m.inbound_unknown_actor,
        inbound_inbox_full: m.inbound_inbox_full,
        inbound_delivered: m.inbound_delivered,
    };
    let mut chains = Vec::with_capacity(validators.len());
    for (chain, addr) in validators {
        // A stopped validator (e.g. its disk filled up) answers nothing.
        if let Ok((height, counters)) = addr.send(Counters).await {
            chains.push(ChainCounts {
                chain: chain.clone(),
                height,
                counters,
            });
        }
    }
    NodeStats {
        transport,
        validators: chains,
        offloads: offloads.map(OffloadCounters::snapshot),
    }
}

/// Asks node `node` for its counters over `transport`.
pub async fn query(
    transport: &Transport,
    node: NodeId,
    timeout: Duration,
) -> Result<NodeStats, ActorError> {
    let reply = transport
        .request(node, STATS_ACTOR, wire::encode(&StatsRequest::Get), timeout)
        .await?;
    wire::decode::<NodeStats>(&reply).map_err(|e| ActorError::Malformed {
        peer: node,
        detail: e.to_string(),
    })
}
