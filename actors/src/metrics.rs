//! The federation's metrics, as OpenTelemetry instruments behind small typed
//! methods.
//!
//! A [`Metrics`] handle is cheap to clone (one `Arc`) and is either *enabled*
//! (instruments from a real meter) or *disabled* (every method is a single
//! branch: no attribute is built, nothing allocates). [`Metrics::global`]
//! returns an enabled handle only when [`crate::telemetry::init`] installed a
//! meter provider, so nodes without an OTLP endpoint pay nothing; an
//! embedded node takes its handle from
//! [`crate::telemetry::TelemetryPipeline::metrics`] instead.
//!
//! Attribute values that name a *kind* (rejection reason, offload outcome,
//! migration scope, refusal reason) are `&'static str`: the set of series is
//! fixed by the code, so a peer cannot grow it (STYLE.md "Limits"). Chain
//! names come from the federation file and are bounded by it.
//!
//! | instrument | kind | unit | attributes |
//! |---|---|---|---|
//! | `federact.tx.submitted` | counter | `{tx}` | `chain` |
//! | `federact.tx.committed` | counter | `{tx}` | `chain` |
//! | `federact.tx.rejected` | counter | `{tx}` | `chain`, `reason` |
//! | `federact.block.height` | gauge | `{block}` | `chain` |
//! | `federact.commit.latency` | histogram | `ms` | `chain` |
//! | `federact.migration.delay` | histogram | `ms` | `scope` |
//! | `federact.offloads` | counter | `{offload}` | `outcome` |
//! | `federact.relay.lag` | gauge | `{block}` | `source`, `destination` |
//! | `federact.quic.connections` | observable up-down counter | `{connection}` | `federact.node` |
//! | `federact.quic.refusals` | observable counter | `{refusal}` | `federact.node`, `stage`, `reason` |
//! | `federact.quic.requests` | observable counter | `{request}` | `federact.node`, `outcome` |
//! | `federact.quic.bytes` | observable counter | `By` | `federact.node`, `direction` |
//!
//! The `federact.quic.*` instruments read the transport's own atomic
//! counters (`federact_federation::metrics::Metrics`) when the reader
//! collects ([`observe_transport`]): the transport's hot path is unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use federact_federation::error::{FrameErrorKind, RefusalReason};
use federact_federation::metrics::Metrics as TransportMetrics;
use federact_federation::Transport;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use opentelemetry::{InstrumentationScope, KeyValue};

/// Set by [`crate::telemetry::init`] once it has installed a global meter
/// provider; read by [`Metrics::global`].
static GLOBAL_METER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Records that a real global meter provider is installed (or removed).
pub(crate) fn set_global_meter_installed(installed: bool) {
    GLOBAL_METER_INSTALLED.store(installed, Ordering::Release);
}

/// Histogram bucket bounds for latencies in milliseconds: from sub-10 ms
/// local commits to multi-second inter-cloud migrations.
const LATENCY_BOUNDS_MS: [f64; 16] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1_000.0, 2_500.0, 5_000.0,
    10_000.0, 30_000.0,
];

/// The instrumentation scope every federact instrument belongs to.
pub const METER_NAME: &str = "federact";

/// Handle to the federation's instruments; disabled handles cost a branch.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Option<Arc<Instruments>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

struct Instruments {
    tx_submitted: Counter<u64>,
    tx_committed: Counter<u64>,
    tx_rejected: Counter<u64>,
    block_height: Gauge<u64>,
    commit_latency: Histogram<f64>,
    migration_delay: Histogram<f64>,
    offloads: Counter<u64>,
    relay_lag: Gauge<u64>,
}

impl Metrics {
    /// Instruments created from `meter`.
    pub fn new(meter: &Meter) -> Metrics {
        let inner = Instruments {
            tx_submitted: meter
                .u64_counter("federact.tx.submitted")
                .with_description("Transactions submitted to a chain")
                .with_unit("{tx}")
                .build(),
            tx_committed: meter
                .u64_counter("federact.tx.committed")
                .with_description("Transactions committed in a block")
                .with_unit("{tx}")
                .build(),
            tx_rejected: meter
                .u64_counter("federact.tx.rejected")
                .with_description("Transactions or inputs rejected, by reason")
                .with_unit("{tx}")
                .build(),
            block_height: meter
                .u64_gauge("federact.block.height")
                .with_description("Height of the last committed block")
                .with_unit("{block}")
                .build(),
            commit_latency: meter
                .f64_histogram("federact.commit.latency")
                .with_description("Time from transaction submission to its commit")
                .with_unit("ms")
                .with_boundaries(LATENCY_BOUNDS_MS.to_vec())
                .build(),
            migration_delay: meter
                .f64_histogram("federact.migration.delay")
                .with_description("Time from migration start to completion, by scope")
                .with_unit("ms")
                .with_boundaries(LATENCY_BOUNDS_MS.to_vec())
                .build(),
            offloads: meter
                .u64_counter("federact.offloads")
                .with_description("Offload requests, by outcome")
                .with_unit("{offload}")
                .build(),
            relay_lag: meter
                .u64_gauge("federact.relay.lag")
                .with_description("Blocks of the source chain not yet delivered to the destination")
                .with_unit("{block}")
                .build(),
        };
        Metrics {
            inner: Some(Arc::new(inner)),
        }
    }

    /// Instruments on the global meter if [`crate::telemetry::init`]
    /// installed an exporting meter provider, a disabled handle otherwise.
    pub fn global() -> Metrics {
        if GLOBAL_METER_INSTALLED.load(Ordering::Acquire) {
            Metrics::new(&opentelemetry::global::meter_with_scope(scope()))
        } else {
            Metrics::disabled()
        }
    }

    /// A handle whose methods do nothing.
    pub fn disabled() -> Metrics {
        Metrics { inner: None }
    }

    /// Whether recordings go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// `n` transactions submitted to `chain`.
    pub fn tx_submitted(&self, chain: &str, n: u64) {
        if let Some(i) = &self.inner {
            i.tx_submitted.add(n, &[chain_kv(chain)]);
        }
    }

    /// `n` transactions committed on `chain`.
    pub fn tx_committed(&self, chain: &str, n: u64) {
        if let Some(i) = &self.inner {
            i.tx_committed.add(n, &[chain_kv(chain)]);
        }
    }

    /// One transaction (or input) refused by `chain` for `reason`
    /// (e.g. `"bad_signature"`, `"duplicate"`, `"mempool_full"`).
    pub fn tx_rejected(&self, chain: &str, reason: &'static str) {
        if let Some(i) = &self.inner {
            i.tx_rejected
                .add(1, &[chain_kv(chain), KeyValue::new("reason", reason)]);
        }
    }

    /// `chain` committed the block at `height`.
    pub fn block_height(&self, chain: &str, height: u64) {
        if let Some(i) = &self.inner {
            i.block_height.record(height, &[chain_kv(chain)]);
        }
    }

    /// A transaction on `chain` took `ms` milliseconds from submit to commit.
    pub fn commit_latency(&self, chain: &str, ms: f64) {
        if let Some(i) = &self.inner {
            i.commit_latency.record(ms, &[chain_kv(chain)]);
        }
    }

    /// A migration of `scope` (e.g. `"intra_cloud"`, `"inter_cloud"`) took
    /// `ms` milliseconds to complete.
    pub fn migration_delay(&self, scope: &'static str, ms: f64) {
        if let Some(i) = &self.inner {
            i.migration_delay
                .record(ms, &[KeyValue::new("scope", scope)]);
        }
    }

    /// An offload ended with `outcome` (e.g. `"accepted"`, `"refused"`,
    /// `"completed"`, `"failed"`).
    pub fn offload(&self, outcome: &'static str) {
        if let Some(i) = &self.inner {
            i.offloads.add(1, &[KeyValue::new("outcome", outcome)]);
        }
    }

    /// The relay from `source` to `destination` is `blocks` blocks behind.
    pub fn relay_lag(&self, source: &str, destination: &str, blocks: u64) {
        if let Some(i) = &self.inner {
            i.relay_lag.record(
                blocks,
                &[
                    KeyValue::new("source", source.to_owned()),
                    KeyValue::new("destination", destination.to_owned()),
                ],
            );
        }
    }
}

/// The label of a handshake refusal reason.
fn handshake_reason(r: RefusalReason) -> &'static str {
    match r {
        RefusalReason::UnknownKey => "unknown_peer",
        RefusalReason::NoClientCertificate => "no_client_certificate",
        RefusalReason::AlpnMismatch => "alpn_mismatch",
        RefusalReason::BadCertificate => "bad_certificate",
        RefusalReason::WrongPeer => "wrong_peer",
        RefusalReason::Other => "handshake_failed",
    }
}

/// The label of a frame refusal reason.
fn frame_reason(r: FrameErrorKind) -> &'static str {
    match r {
        FrameErrorKind::TooLarge => "oversized_frame",
        FrameErrorKind::Truncated => "truncated_frame",
        FrameErrorKind::Malformed => "malformed_frame",
        FrameErrorKind::ForgedSender => "forged_sender",
        FrameErrorKind::UnexpectedKind => "unexpected_frame_kind",
    }
}

/// Registers the `federact.quic.*` observable instruments of `transport` on
/// `meter`, labelled `federact.node = node`. The callbacks hold the
/// transport's counters weakly: once the transport is gone they report
/// nothing. Nothing runs on the transport's paths; the counters are read
/// when the metric reader collects.
///
/// Refusals carry `stage` (`handshake`, `frame`, `inbound`) and `reason`:
/// `unknown_peer`, `no_client_certificate`, `alpn_mismatch`,
/// `bad_certificate`, `wrong_peer`, `handshake_failed`; `oversized_frame`,
/// `truncated_frame`, `malformed_frame`, `forged_sender`,
/// `unexpected_frame_kind`; `unknown_actor`, `inbox_full`.
pub fn observe_transport(meter: &Meter, node: &str, transport: &Transport) {
    let counters: Weak<TransportMetrics> = Arc::downgrade(&transport.shared_metrics());
    let node = KeyValue::new("federact.node", node.to_owned());

    let (c, n) = (counters.clone(), node.clone());
    meter
        .i64_observable_up_down_counter("federact.quic.connections")
        .with_description("Open QUIC connections (authenticated, duplicates excluded)")
        .with_unit("{connection}")
        .with_callback(move |obs| {
            if let Some(m) = c.upgrade() {
                let open = m
                    .connections_opened
                    .load(Ordering::Relaxed)
                    .saturating_sub(m.connections_closed.load(Ordering::Relaxed));
                obs.observe(
                    i64::try_from(open).unwrap_or(i64::MAX),
                    std::slice::from_ref(&n),
                );
            }
        })
        .build();

    let (c, n) = (counters.clone(), node.clone());
    meter
        .u64_observable_counter("federact.quic.refusals")
        .with_description("QUIC handshakes, frames and inbound messages refused, by reason")
        .with_unit("{refusal}")
        .with_callback(move |obs| {
            let Some(m) = c.upgrade() else { return };
            let snap = m.snapshot();
            let emit = |stage: &'static str, reason: &'static str, v: u64| {
                obs.observe(
                    v,
                    &[
                        n.clone(),
                        KeyValue::new("stage", stage),
                        KeyValue::new("reason", reason),
                    ],
                );
            };
            for r in RefusalReason::ALL {
                emit("handshake", handshake_reason(r), snap.refused(r));
            }
            for r in federact_federation::error::FrameError::ALL {
                emit("frame", frame_reason(r), snap.frames(r));
            }
            emit("inbound", "unknown_actor", snap.inbound_unknown_actor);
            emit("inbound", "inbox_full", snap.inbound_inbox_full);
        })
        .build();

    let (c, n) = (counters.clone(), node.clone());
    meter
        .u64_observable_counter("federact.quic.requests")
        .with_description("QUIC requests sent, by outcome")
        .with_unit("{request}")
        .with_callback(move |obs| {
            let Some(m) = c.upgrade() else { return };
            for (outcome, v) in [
                ("ok", m.requests_ok.load(Ordering::Relaxed)),
                ("failed", m.requests_failed.load(Ordering::Relaxed)),
                (
                    "backpressured",
                    m.requests_backpressured.load(Ordering::Relaxed),
                ),
            ] {
                obs.observe(v, &[n.clone(), KeyValue::new("outcome", outcome)]);
            }
        })
        .build();

    let (c, n) = (counters, node);
    meter
        .u64_observable_counter("federact.quic.bytes")
        .with_description("Application bytes over QUIC, all peers, by direction")
        .with_unit("By")
        .with_callback(move |obs| {
            let Some(m) = c.upgrade() else { return };
            let snap = m.snapshot();
            let (bytes_in, bytes_out) = snap
                .peers
                .values()
                .fold((0u64, 0u64), |(i, o), p| (i + p.bytes_in, o + p.bytes_out));
            obs.observe(bytes_in, &[n.clone(), KeyValue::new("direction", "in")]);
            obs.observe(bytes_out, &[n.clone(), KeyValue::new("direction", "out")]);
        })
        .build();
}

/// [`observe_transport`] on the global meter, when
/// [`crate::telemetry::init`] installed an exporting one (else nothing).
pub fn observe_transport_global(node: &str, transport: &Transport) {
    if GLOBAL_METER_INSTALLED.load(Ordering::Acquire) {
        observe_transport(
            &opentelemetry::global::meter_with_scope(scope()),
            node,
            transport,
        );
    }
}

/// The instrumentation scope of federact's instruments.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(METER_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn chain_kv(chain: &str) -> KeyValue {
    KeyValue::new("chain", chain.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_handle_records_nothing_and_does_not_panic() {
        let m = Metrics::disabled();
        assert!(!m.is_enabled());
        m.tx_submitted("a.local", 1);
        m.tx_rejected("a.local", "duplicate");
        m.commit_latency("a.local", 3.0);
    }

    #[test]
    fn global_is_disabled_until_telemetry_installs_a_meter() {
        // No test in this binary calls `telemetry::init`.
        assert!(!Metrics::global().is_enabled());
    }

    #[test]
    fn handle_on_a_noop_meter_is_enabled_and_harmless() {
        let m = Metrics::new(&opentelemetry::global::meter("test"));
        assert!(m.is_enabled());
        m.block_height("a.local", 7);
        m.migration_delay("inter_cloud", 120.0);
        m.relay_lag("a.local", "consortium", 2);
    }
}
