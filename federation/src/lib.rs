//! # federact-federation
//!
//! The QUIC transport between federact nodes: one quinn endpoint per node,
//! mutual TLS with certificates made from node ed25519 keys and checked
//! against the federation membership, framed envelopes, request/response,
//! one-way messages, bulk transfers and W3C trace-context propagation.
//!
//! This crate knows nothing of actix or the ledger.
//!
//! ```no_run
//! # async fn demo(key: federact_config::NodeKey, federation: federact_config::Federation,
//! #               peer: federact_config::NodeId) -> Result<(), federact_federation::TransportError> {
//! use federact_federation::{Incoming, Membership, Transport};
//! use std::time::Duration;
//!
//! let me = federation.node_by_id(&key.id()).map(|n| n.listen()).unwrap_or(([0, 0, 0, 0], 0).into());
//! let transport = Transport::bind(&key, Membership::from_federation(&federation),
//!                                 *federation.transport(), me).await?;
//! let mut inbox = transport.register("echo", 1024)?;
//! tokio::spawn(async move {
//!     while let Some(Incoming::Request { body, responder, .. }) = inbox.recv().await {
//!         let _ = responder.respond(body).await;
//!     }
//! });
//! let answer = transport.request(peer, "echo", "hi".into(), Duration::from_secs(1)).await?;
//! # Ok(()) }
//! ```
//!
//! What it does not do: it does not retry a request that may have been
//! processed (see [`transport`] for the exact retry rule), order messages
//! across streams, or persist anything. Identity is the node key; there is
//! no CA and no certificate expiry — removing a node from the
//! [`Membership`] revokes it.
//!
//! # Layout
//! - [`transport`]: [`Transport`] — endpoint, connection per peer pair
//!   (dial, backoff, duplicate tie-break), `request` / `send` /
//!   `open_transfer`, [`TransportOptions`].
//! - [`inbound`]: [`Incoming`], per-actor [`Inbox`], [`Responder`]; routing
//!   of inbound streams.
//! - [`transfer`]: [`TransferSender`] / [`TransferReceiver`] for bulk data.
//! - [`frame`]: the codec — [`Envelope`], length-prefixed bincode framing,
//!   pure and fuzzed.
//! - [`tls`]: certificates from node keys, the allow-list verifiers.
//! - [`membership`]: [`Membership`], who may connect and where they listen.
//! - [`trace`]: [`TraceContext`], W3C trace-context propagation.
//! - [`metrics`]: [`Metrics`] counters and the latency histogram.
//! - [`netem`]: [`netem::Relay`], a user-space UDP relay that delays,
//!   drops, duplicates and partitions datagrams, for fault tests.
//! - [`codes`]: QUIC application error codes.
//! - [`error`]: [`TransportError`] and the refusal reasons.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]
#![warn(missing_docs)]
// `NodeId` (federact-config) is 192 bytes: it caches the decompressed curve
// point so signatures verify without re-decoding. Errors name the peer they
// concern, so they are large; boxing them would cost an allocation per error
// and a less direct API for a lint about stack size.
#![allow(clippy::result_large_err)]

pub mod codes;
pub mod error;
pub mod frame;
pub mod inbound;
pub mod membership;
pub mod metrics;
pub mod netem;
pub mod tls;
pub mod trace;
pub mod transfer;
pub mod transport;

pub use error::{FrameError, FrameErrorKind, RefusalReason, RemoteRefusal, TransportError};
pub use frame::{Envelope, Kind};
pub use inbound::{Inbox, Incoming, Responder};
pub use membership::{Member, Membership};
pub use metrics::{Metrics, MetricsSnapshot};
pub use tls::ALPN;
pub use trace::TraceContext;
pub use transfer::{TransferReceiver, TransferSender};
pub use transport::{Transport, TransportOptions, WhenFull};
