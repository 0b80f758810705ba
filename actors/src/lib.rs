//! # federact-actors
//!
//! The actix actors of the four node roles, driving the pure cores of
//! `federact-ledger` (consensus, chain rules, mempool) over the QUIC
//! transport of `federact-federation`. Actors are thin: each handler turns a
//! message into a core input, drains the core's outputs, and does the I/O.
//!
//! # Layout
//! - [`node`]: a node — its transport endpoint and the actors of its roles.
//! - [`embedded`]: every node of a federation in one process.
//! - [`validator`]: one per (node, chain): mempool, Tendermint core, store.
//! - [`gateway`]: one per cloud: routes transactions, follows chains, relays.
//! - [`relay`]: the pure relay core (which consortium records concern a cloud).
//! - [`order`]: the pure per-author submission order a gateway restores.
//! - [`migration`]: the migration actor of every server (BASICS image and
//!   instance moves, driving `federact_ledger::migration`).
//! - [`client`]: sign, submit and wait for receipts through a gateway.
//! - [`loadgen`]: open- and closed-loop load drivers for benchmarks.
//! - [`function`]: the serverless [`function::Function`] trait, registry and instance actor.
//! - [`server`]: hosts instances, enforces capacity, reports load; [`server::Invoker`] calls instances.
//! - [`orchestrator`]: one per cloud: places instances, keeps the directory, records PROV.
//! - [`placement`]: the pure placement policy and offload shortlist.
//! - [`wire`]: the messages actors exchange over QUIC.
//! - [`telemetry`]: tracing and OpenTelemetry export; [`metrics`]: its instruments.
//! - [`clock`]: monotone wall-clock milliseconds for the cores.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]
#![warn(missing_docs)]
// A `NodeId` keeps its decompressed curve point (192 bytes) so signatures
// verify without decompressing it again; errors and messages naming a peer
// are therefore large. Boxing them all would cost an allocation per message
// on the hot path to save stack bytes on rare error paths.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

pub mod client;
pub mod clock;
pub mod embedded;
pub mod error;
pub mod function;
pub mod gateway;
pub mod loadgen;
pub mod metrics;
pub mod migration;
pub mod node;
pub mod offload_check;
pub mod orchestrator;
pub mod order;
pub mod placement;
pub mod relay;
mod round_trace;
pub mod server;
pub mod stats;
pub mod telemetry;
pub mod validator;
pub mod wire;

/// The byte buffer function payloads and results use.
pub use bytes::Bytes;
pub use client::{LedgerClient, RecordSet};
pub use embedded::EmbeddedFederation;
pub use error::ActorError;
pub use function::{Function, FunctionError, FunctionRegistry};
pub use node::{Node, NodeOptions};
pub use server::{Invoker, ServerLimits};

use federact_federation::{Inbox, Incoming};

/// Turns a transport inbox into a stream an actor consumes with
/// `ctx.add_stream`: items are handled one at a time in the actor's
/// context, and a full actor leaves them in the bounded inbox
/// (backpressure, not an unbounded mailbox).
pub fn inbox_stream(inbox: Inbox) -> impl futures::Stream<Item = Incoming> {
    futures::stream::unfold(inbox, |mut inbox| async move {
        inbox.recv().await.map(|item| (item, inbox))
    })
}

/// The OpenTelemetry trace id of the current span, to stamp into a
/// transaction (so a ledger record links to the trace that produced it).
pub fn trace_id_now() -> Option<[u8; 16]> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_bytes())
}
