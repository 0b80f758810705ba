//! Tracing, OpenTelemetry export and the exporter's life cycle.
//!
//! A node calls [`init`] once with a [`TelemetryConfig`] built by
//! [`TelemetryConfig::from_node_config`] and keeps the returned [`TelemetryGuard`]
//! until its actix `System` has stopped; then it calls
//! [`TelemetryGuard::shutdown`] (or drops the guard).
//!
//! - Always: a `fmt` subscriber to stderr, filtered by `RUST_LOG` (default
//!   [`DEFAULT_LOG_FILTER`]).
//! - Only with an OTLP endpoint (config `[telemetry] otlp_endpoint` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`): a `tracing-opentelemetry` layer feeding a
//!   batch span exporter, an OTLP metrics exporter on a periodic reader, the
//!   global meter provider (for [`Metrics::global`]) and the global W3C
//!   `TraceContextPropagator`. Without an endpoint none of these exist: no
//!   thread, no queue, no per-span work beyond `tracing`'s own.
//!
//! # Why the exporter has its own runtime
//! The tonic (gRPC) client is bound to the tokio runtime current when it is
//! built. Built on the actix runtime, shutting the provider down from that
//! runtime's thread blocks the very runtime that must drive the last export:
//! a 5 s stall and lost spans (DEPENDENCIES.md item 8). So the gRPC channel
//! lives on a one-thread runtime owned by the pipeline; the SDK's batch span
//! processor and periodic metric reader run on their own threads; shutdown
//! runs both providers' shutdowns in parallel threads under one deadline
//! ([`TelemetryConfig::shutdown_timeout`]) and gives up on whatever is left
//! when it passes, so a dead backend costs at most that deadline.
//!
//! # Bounded queues
//! Ended spans wait in a queue of [`TelemetryConfig::max_queue_size`]; when
//! it is full (backend slow or down) new spans are dropped and counted
//! ([`TelemetryStats::spans_dropped`], also exported as
//! `federact.telemetry.spans_dropped`). Nothing grows without bound.
//!
//! # One process, many nodes
//! An OpenTelemetry resource (and so `service.name`) belongs to a provider,
//! and a process has one global `tracing` subscriber. Multi-process mode
//! (one node per process, the deployment shape) gives every node its own
//! resource: `service.name` = node name. Embedded mode (the demo's ~30 nodes
//! in one process) builds one [`TelemetryPipeline`] for the process, named
//! after the process, and handler spans carry the node in the
//! [`NODE_ATTRIBUTE`] (`federact.node`) attribute. The alternative not taken,
//! one provider per node routed by a custom layer, would duplicate every
//! exporter thread and connection thirty times. See ADR 0003.
//!
//! # Carrying a trace
//! Across an actix mailbox, send the span with the message ([`Traced`]) and
//! open the handler span with `parent: &msg.span`. Across QUIC, the envelope
//! carries a `federact_federation::trace::TraceContext`; the receiver calls
//! `cx.set_parent_of(&span)` on its handler span before entering it. A
//! failed operation calls [`record_error`] on its span.
//!
//! # Key types
//! - [`TelemetryConfig`]: resource, endpoint, protocol, sampling, bounds;
//!   [`TelemetryConfig::from_node_config`] (one node per process) or
//!   [`TelemetryConfig::for_embedded`] (many nodes per process).
//! - [`init`] → [`TelemetryGuard`]: the process-wide installation.
//! - [`TelemetryPipeline`]: the same exporters without global state, with a
//!   `tracing` layer to compose (tests, hosts with their own subscriber).
//! - [`Metrics`] (in [`crate::metrics`]): the federation's instruments.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::metrics::{self, Metrics};

/// Log filter used when `RUST_LOG` is unset: `info`, with the exporter's own
/// crates quietened (a dead backend would otherwise log every batch).
pub const DEFAULT_LOG_FILTER: &str = "info,opentelemetry_sdk=error,opentelemetry_otlp=error,\
                                      opentelemetry=error,h2=warn,hyper=warn,tonic=warn,tower=warn";

/// Span attribute naming the node a span belongs to (embedded mode, where
/// all nodes share one `service.name`).
pub const NODE_ATTRIBUTE: &str = "federact.node";

/// Resource attribute: the node's cloud.
pub const CLOUD_ATTRIBUTE: &str = "federact.cloud";

/// Resource attribute: the node's roles, comma-separated.
pub const ROLES_ATTRIBUTE: &str = "federact.roles";

/// Crates whose spans and events never reach the OpenTelemetry layer: the
/// exporter's own transport, which would otherwise trace its own exports.
const EXPORTER_TARGETS: [&str; 8] = [
    "h2",
    "hyper",
    "tonic",
    "tower",
    "reqwest",
    "opentelemetry",
    "tracing_opentelemetry",
    "rustls",
];

/// Everything that can go wrong setting telemetry up or tearing it down.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP protocol is neither `grpc` nor `http/protobuf`.
    #[error(
        "unsupported OTLP protocol {value:?} (from {origin}): use \"grpc\" or \"http/protobuf\""
    )]
    UnsupportedProtocol {
        /// The value given.
        value: String,
        /// Where it came from (config field or environment variable).
        origin: &'static str,
    },
    /// `OTEL_TRACES_SAMPLER` names a sampler we do not support.
    #[error(
        "unsupported sampler {value:?} in OTEL_TRACES_SAMPLER: use always_on, always_off, \
         traceidratio, parentbased_traceidratio, parentbased_always_on or parentbased_always_off"
    )]
    UnsupportedSampler {
        /// The value given.
        value: String,
    },
    /// A sampling ratio is not a number in `0.0..=1.0`.
    #[error("invalid sampling ratio {value:?} (from {origin}): expected a number from 0.0 to 1.0")]
    InvalidSamplingRatio {
        /// The value given.
        value: String,
        /// Where it came from.
        origin: &'static str,
    },
    /// The log filter does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    LogFilter {
        /// The filter given.
        filter: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP endpoint is not a usable URL.
    #[error("invalid OTLP endpoint {endpoint:?}: expected http://host:port or https://host:port")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP {signal} exporter for {endpoint}: {source}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The endpoint.
        endpoint: String,
        /// The exporter's error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The exporter's runtime thread could not be started.
    #[error("cannot start the telemetry exporter runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Another global `tracing` subscriber (or `log` logger) is installed.
    #[error("a global tracing subscriber is already installed: {0}")]
    SubscriberAlreadySet(String),
    /// A provider's shutdown reported a failure (typically: the final export
    /// did not reach the backend).
    #[error("telemetry {signal} shutdown: {source}")]
    Shutdown {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's error.
        #[source]
        source: OTelSdkError,
    },
    /// Shutdown did not finish within its deadline; what was left is lost.
    #[error("telemetry shutdown gave up after {budget_ms} ms (backend unreachable?)")]
    ShutdownTimedOut {
        /// The deadline, in milliseconds.
        budget_ms: u64,
    },
}

/// OTLP wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP over gRPC (default port 4317).
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (default port 4318).
    HttpProtobuf,
}

impl Protocol {
    /// Parses `grpc` or `http/protobuf` (case-insensitive).
    pub fn parse(value: &str, origin: &'static str) -> Result<Protocol, TelemetryError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            _ => Err(TelemetryError::UnsupportedProtocol {
                value: value.to_owned(),
                origin,
            }),
        }
    }
}

/// Which traces are recorded and exported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// A fraction of traces by trace id, ignoring the parent's decision.
    TraceIdRatio(f64),
    /// Follow the parent's decision (local or propagated over QUIC); roots
    /// are sampled by trace id at this ratio. The default: one migration is
    /// sampled, or not, as a whole across all the nodes it touches.
    ParentBasedRatio(f64),
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling::ParentBasedRatio(1.0)
    }
}

impl Sampling {
    /// The SDK sampler. With parent-based sampling, federact's own root
    /// spans are decided *before* they exist, by [`sampled_root`] (so an
    /// unsampled invocation creates no span at all: an unsampled span still
    /// costs the OpenTelemetry layer its bookkeeping, measured at 80-90% of
    /// a local call's throughput at ratio 0.01); the SDK keeps the roots
    /// marked [`ROOT_FIELD`] and samples any other root (an embedding
    /// application's own spans) by trace id at the same ratio.
    fn sampler(self) -> Sampler {
        match self {
            Sampling::AlwaysOn => Sampler::AlwaysOn,
            Sampling::AlwaysOff => Sampler::AlwaysOff,
            Sampling::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            Sampling::ParentBasedRatio(r) => {
                Sampler::ParentBased(Box::new(GatedRoots { ratio: r }))
            }
        }
    }

    /// The probability [`sampled_root`] lets a root span be created (kept
    /// by the pipeline's layer, see [`PipelineFilter`]).
    fn root_ratio(self) -> f64 {
        match self {
            Sampling::AlwaysOn | Sampling::TraceIdRatio(_) => 1.0,
            Sampling::AlwaysOff => 0.0,
            Sampling::ParentBasedRatio(r) => r.clamp(0.0, 1.0),
        }
    }

    /// Parses `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`. The ratio
    /// defaults to 1.0 when the argument is absent.
    pub fn from_env_values(sampler: &str, arg: Option<&str>) -> Result<Sampling, TelemetryError> {
        let ratio = || match arg.map(str::trim).filter(|a| !a.is_empty()) {
            None => Ok(1.0),
            Some(a) => parse_ratio(a, "OTEL_TRACES_SAMPLER_ARG"),
        };
        match sampler.trim().to_ascii_lowercase().as_str() {
            "always_on" => Ok(Sampling::AlwaysOn),
            "always_off" => Ok(Sampling::AlwaysOff),
            "traceidratio" => Ok(Sampling::TraceIdRatio(ratio()?)),
            "parentbased_traceidratio" => Ok(Sampling::ParentBasedRatio(ratio()?)),
            "parentbased_always_on" => Ok(Sampling::ParentBasedRatio(1.0)),
            "parentbased_always_off" => Ok(Sampling::ParentBasedRatio(0.0)),
            _ => Err(TelemetryError::UnsupportedSampler {
                value: sampler.to_owned(),
            }),
        }
    }
}

fn parse_ratio(value: &str, origin: &'static str) -> Result<f64, TelemetryError> {
    match value.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(TelemetryError::InvalidSamplingRatio {
            value: value.to_owned(),
            origin,
        }),
    }
}

/// Everything [`init`] needs; build it with [`TelemetryConfig::from_node_config`]
/// (config + environment) or [`TelemetryConfig::new`] and the setters.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// `service.name`: the node name (or the process name in embedded mode).
    pub service_name: String,
    /// `service.instance.id`: the node id (its public key, base58).
    pub instance_id: String,
    /// `federact.cloud`.
    pub cloud: String,
    /// `federact.roles`, comma-separated.
    pub roles: String,
    /// `service.version`.
    pub service_version: String,
    /// OTLP endpoint; `None` means no export at all. For gRPC the collector
    /// address (`http://host:4317`); for HTTP the base URL (`/v1/traces` and
    /// `/v1/metrics` are appended).
    pub endpoint: Option<String>,
    /// OTLP protocol.
    pub protocol: Protocol,
    /// Trace sampling.
    pub sampling: Sampling,
    /// `tracing` filter directives for the stderr log and the spans exported.
    pub log_filter: String,
    /// Bound on one export attempt, retries included.
    pub export_timeout: Duration,
    /// Bound on [`TelemetryGuard::shutdown`] as a whole.
    pub shutdown_timeout: Duration,
    /// Ended spans waiting for export; more are dropped and counted.
    pub max_queue_size: usize,
    /// Delay between span batch exports.
    pub batch_delay: Duration,
    /// Interval between metric exports.
    pub metrics_interval: Duration,
    /// Whether metrics are exported along with traces (`false` for
    /// trace-only backends such as Jaeger or Phoenix; set by
    /// `OTEL_METRICS_EXPORTER=none`).
    pub export_metrics: bool,
}

impl TelemetryConfig {
    /// Defaults for a service called `service_name`: no endpoint (no
    /// export), gRPC, parent-based sampling at 1.0, `info` logs.
    pub fn new(service_name: impl Into<String>) -> TelemetryConfig {
        TelemetryConfig {
            service_name: service_name.into(),
            instance_id: String::new(),
            cloud: String::new(),
            roles: String::new(),
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            endpoint: None,
            protocol: Protocol::Grpc,
            sampling: Sampling::default(),
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            export_timeout: Duration::from_millis(1_000),
            shutdown_timeout: Duration::from_millis(800),
            max_queue_size: 2_048,
            batch_delay: Duration::from_millis(1_000),
            metrics_interval: Duration::from_secs(15),
            export_metrics: true,
        }
    }

    /// What a node process uses: its entry in the federation and the
    /// `[telemetry]` section ([`Self::from_spec`]), then the standard
    /// environment variables on top ([`Self::with_env`]).
    pub fn from_node_config(node: &federact_config::NodeConfig) -> Result<Self, TelemetryError> {
        Self::from_spec(node.spec(), node.federation().telemetry())?
            .with_env(|k| std::env::var(k).ok())
    }

    /// From a node's entry and a `[telemetry]` section (no environment).
    pub fn from_spec(
        spec: &federact_config::NodeSpec,
        telemetry: &federact_config::Telemetry,
    ) -> Result<Self, TelemetryError> {
        let mut cfg = TelemetryConfig::new(spec.name());
        cfg.instance_id = spec.id().to_string();
        cfg.cloud = spec.cloud().to_owned();
        cfg.roles = spec.roles().to_string();
        cfg.apply_section(telemetry)?;
        Ok(cfg)
    }

    /// For a process hosting many nodes (embedded mode, the demo): one
    /// resource named `service_name`, settings from the federation's
    /// `[telemetry]` section (no environment; chain [`Self::with_env`]).
    /// Nodes are told apart by the [`NODE_ATTRIBUTE`] on their spans.
    pub fn for_embedded(
        service_name: impl Into<String>,
        telemetry: &federact_config::Telemetry,
    ) -> Result<Self, TelemetryError> {
        let mut cfg = TelemetryConfig::new(service_name);
        cfg.apply_section(telemetry)?;
        Ok(cfg)
    }

    fn apply_section(
        &mut self,
        telemetry: &federact_config::Telemetry,
    ) -> Result<(), TelemetryError> {
        self.endpoint = telemetry
            .otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned);
        if let Some(p) = &telemetry.otlp_protocol {
            self.protocol = Protocol::parse(p, "telemetry.otlp_protocol")?;
        }
        if let Some(r) = telemetry.sampling_ratio {
            self.sampling = Sampling::ParentBasedRatio(parse_ratio(
                &r.to_string(),
                "telemetry.sampling_ratio",
            )?);
        }
        Ok(())
    }

    /// Applies the standard variables, which take precedence over the
    /// config: `OTEL_SDK_DISABLED` (`true` turns export off),
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` (+ `_ARG`),
    /// `OTEL_METRICS_EXPORTER` (`none` turns metric export off) and
    /// `RUST_LOG`.
    /// Empty values count as unset, as the OpenTelemetry spec says. `lookup`
    /// is `std::env::var` in production and a map in tests.
    pub fn with_env(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TelemetryError> {
        let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if let Some(e) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.endpoint = Some(e.trim().to_owned());
        }
        if let Some(p) = var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            self.protocol = Protocol::parse(&p, "OTEL_EXPORTER_OTLP_PROTOCOL")?;
        }
        if let Some(n) = var("OTEL_SERVICE_NAME") {
            self.service_name = n;
        }
        if let Some(s) = var("OTEL_TRACES_SAMPLER") {
            let arg = var("OTEL_TRACES_SAMPLER_ARG");
            self.sampling = Sampling::from_env_values(&s, arg.as_deref())?;
        }
        if let Some(f) = var("RUST_LOG") {
            self.log_filter = f;
        }
        if let Some(m) = var("OTEL_METRICS_EXPORTER") {
            self.export_metrics = !m.trim().eq_ignore_ascii_case("none");
        }
        // Standard intervals in milliseconds; an unparsable value is ignored
        // (the SDKs of other languages do the same) rather than failing
        // the node.
        let millis = |k: &str| {
            var(k)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
        };
        if let Some(d) = millis("OTEL_METRIC_EXPORT_INTERVAL") {
            self.metrics_interval = d;
        }
        if let Some(d) = millis("OTEL_BSP_SCHEDULE_DELAY") {
            self.batch_delay = d;
        }
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            self.endpoint = None;
        }
        Ok(self)
    }

    /// Sets the OTLP endpoint (builder style).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Whether this configuration exports anything.
    pub fn exports(&self) -> bool {
        self.endpoint.is_some()
    }

    fn resource(&self) -> Resource {
        let mut attrs = vec![KeyValue::new(
            "service.version",
            self.service_version.clone(),
        )];
        if !self.instance_id.is_empty() {
            attrs.push(KeyValue::new(
                "service.instance.id",
                self.instance_id.clone(),
            ));
        }
        if !self.cloud.is_empty() {
            attrs.push(KeyValue::new(CLOUD_ATTRIBUTE, self.cloud.clone()));
        }
        if !self.roles.is_empty() {
            attrs.push(KeyValue::new(ROLES_ATTRIBUTE, self.roles.clone()));
        }
        // `builder()` adds the SDK attributes and `OTEL_RESOURCE_ATTRIBUTES`;
        // ours come after and win.
        Resource::builder()
            .with_attributes(attrs)
            .with_service_name(self.service_name.clone())
            .build()
    }
}

/// Export counters since the pipeline started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TelemetryStats {
    /// Spans dropped because the export queue was full.
    pub spans_dropped: u64,
    /// Spans the backend acknowledged.
    pub spans_exported: u64,
    /// Spans lost to failed exports (backend down, timeout, refusal).
    pub spans_failed: u64,
}

#[derive(Debug, Default)]
struct ExportCounters {
    /// Spans handed to the batch processor and not yet through an export.
    queued: AtomicUsize,
    dropped: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
}

impl ExportCounters {
    fn stats(&self) -> TelemetryStats {
        TelemetryStats {
            spans_dropped: self.dropped.load(Ordering::Relaxed),
            spans_exported: self.exported.load(Ordering::Relaxed),
            spans_failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// The SDK's batch processor drops on a full queue but only logs the count.
/// This wrapper keeps its own count of spans between `on_end` and the end of
/// their export and refuses (counting) beyond `cap`, so the inner queue of
/// the same size never overflows and every drop is counted here.
#[derive(Debug)]
struct BoundedProcessor {
    inner: BatchSpanProcessor,
    counters: Arc<ExportCounters>,
    cap: usize,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.counters.queued.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.counters.queued.fetch_sub(1, Ordering::AcqRel);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts what the wrapped exporter did with each batch (see
/// [`BoundedProcessor`]).
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    counters: Arc<ExportCounters>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.counters.queued.fetch_sub(n, Ordering::AcqRel);
        let counter = if result.is_ok() {
            &self.counters.exported
        } else {
            &self.counters.failed
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A one-thread tokio runtime that owns the gRPC channels. The runtime is
/// created, driven and dropped on its own thread, so no caller (actix or
/// not) ever blocks on it or drops it from an async context.
#[derive(Debug)]
struct ExporterRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ExporterRuntime {
    fn start() -> Result<ExporterRuntime, TelemetryError> {
        let (handle_tx, handle_rx) = mpsc::sync_channel(1);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        thread::Builder::new()
            .name("federact-otel".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                // Runs the channels' tasks until stopped (or the pipeline is
                // dropped, which drops the sender).
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(TelemetryError::Runtime)?;
        let handle = handle_rx
            .recv()
            .map_err(|_| {
                TelemetryError::Runtime(std::io::Error::other("runtime thread exited early"))
            })?
            .map_err(TelemetryError::Runtime)?;
        Ok(ExporterRuntime {
            handle,
            stop: Some(stop),
        })
    }
}

impl Drop for ExporterRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The exporting half of telemetry, without any global state: providers,
/// the exporter runtime and the export counters. [`init`] builds one and
/// installs it globally; embedded deployments (many nodes per process, or
/// tests) build one with [`TelemetryPipeline::build`] and compose
/// [`TelemetryPipeline::layer`] into their own subscriber.
#[derive(Debug)]
pub struct TelemetryPipeline {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    counters: Arc<ExportCounters>,
    root_threshold: u64,
    shutdown_timeout: Duration,
    shut_down: bool,
    // Declared last: dropped after the providers.
    runtime: Option<ExporterRuntime>,
}

impl TelemetryPipeline {
    /// Builds the exporters for `cfg`; `Ok(None)` when `cfg` has no endpoint.
    /// Installs nothing globally.
    pub fn build(cfg: &TelemetryConfig) -> Result<Option<TelemetryPipeline>, TelemetryError> {
        let Some(endpoint) = cfg.endpoint.as_deref() else {
            return Ok(None);
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(TelemetryError::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
            });
        }
        let runtime = match cfg.protocol {
            Protocol::Grpc => Some(ExporterRuntime::start()?),
            // The blocking reqwest client runs its own thread.
            Protocol::HttpProtobuf => None,
        };
        let (span_exporter, metric_exporter) = {
            // tonic's lazy channel spawns its worker on the current runtime.
            let _enter = runtime.as_ref().map(|r| r.handle.enter());
            build_exporters(cfg, endpoint)?
        };

        let counters = Arc::new(ExportCounters::default());
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue_size)
            .with_max_export_batch_size(cfg.max_queue_size.clamp(1, 512))
            .with_scheduled_delay(cfg.batch_delay)
            .build();
        let processor = BoundedProcessor {
            inner: BatchSpanProcessor::builder(CountingExporter {
                inner: span_exporter,
                counters: counters.clone(),
            })
            .with_batch_config(batch)
            .build(),
            counters: counters.clone(),
            cap: cfg.max_queue_size,
        };
        let resource = cfg.resource();
        let tracer_provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(cfg.sampling.sampler())
            .with_resource(resource.clone())
            .build();
        let mut meters = SdkMeterProvider::builder().with_resource(resource);
        if let Some(exporter) = metric_exporter {
            meters = meters.with_reader(
                PeriodicReader::builder(exporter)
                    .with_interval(cfg.metrics_interval)
                    .build(),
            );
        }
        let meter_provider = meters.build();

        let observed = counters.clone();
        // Kept alive by the meter provider; reports the drop count.
        let _dropped = opentelemetry::metrics::MeterProvider::meter_with_scope(
            &meter_provider,
            metrics::scope(),
        )
        .u64_observable_counter("federact.telemetry.spans_dropped")
        .with_description("Spans dropped because the export queue was full")
        .with_unit("{span}")
        .with_callback(move |obs| obs.observe(observed.dropped.load(Ordering::Relaxed), &[]))
        .build();

        Ok(Some(TelemetryPipeline {
            tracer_provider,
            meter_provider,
            counters,
            root_threshold: root_threshold(cfg.sampling.root_ratio()),
            shutdown_timeout: cfg.shutdown_timeout,
            shut_down: false,
            runtime,
        }))
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans for this
    /// pipeline (the exporter's own crates filtered out). Compose it into a
    /// subscriber after a level filter. It also carries the pipeline's root
    /// sampling ratio: [`sampled_root`] under a subscriber with this layer
    /// samples at this pipeline's ratio.
    ///
    /// Spans carry their level, target and code location, not the thread
    /// (`thread.id`/`thread.name`: an allocation per span, and an actix
    /// thread name says nothing) nor busy/idle times (two clock reads per
    /// poll of an instrumented future).
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.tracer_provider.tracer("federact");
        let filter = PipelineFilter {
            quiet: Targets::new()
                .with_default(LevelFilter::TRACE)
                .with_targets(EXPORTER_TARGETS.map(|t| (t, LevelFilter::OFF))),
            root_threshold: self.root_threshold,
        };
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter)
    }

    /// The tracer provider (to build other tracers or flush).
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// The meter provider.
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.meter_provider
    }

    /// federact's instruments on this pipeline's meter provider.
    pub fn metrics(&self) -> Metrics {
        Metrics::new(&opentelemetry::metrics::MeterProvider::meter_with_scope(
            &self.meter_provider,
            metrics::scope(),
        ))
    }

    /// Export counters so far.
    pub fn stats(&self) -> TelemetryStats {
        self.counters.stats()
    }

    /// Flushes and shuts both providers down in parallel, waiting at most
    /// [`TelemetryConfig::shutdown_timeout`] in total; then stops the
    /// exporter runtime. Blocks the calling thread for at most that long:
    /// call it after the actix `System` has stopped (or from
    /// `spawn_blocking`), never from inside a handler.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shutdown_in_place()
    }

    fn shutdown_in_place(&mut self) -> Result<(), TelemetryError> {
        if std::mem::replace(&mut self.shut_down, true) {
            return Ok(());
        }
        let budget = self.shutdown_timeout;
        let deadline = Instant::now() + budget;
        let (tx, rx) = mpsc::channel::<(&'static str, OTelSdkResult)>();
        let tracers = self.tracer_provider.clone();
        let meters = self.meter_provider.clone();
        let jobs: [(&'static str, ShutdownJob); 2] = [
            (
                "traces",
                Box::new(move || tracers.shutdown_with_timeout(budget)),
            ),
            (
                "metrics",
                Box::new(move || meters.shutdown_with_timeout(budget)),
            ),
        ];
        for (signal, job) in jobs {
            let job_tx = tx.clone();
            let run = move || {
                let _ = job_tx.send((signal, job()));
            };
            // Each shutdown blocks on its processor's thread; run them side by
            // side so a dead backend costs one export timeout, not two.
            let spawned = thread::Builder::new()
                .name(format!("federact-otel-{signal}-shutdown"))
                .spawn(run);
            if let Err(e) = spawned {
                // Cannot spawn: report it; the providers shut down on drop.
                let _ = tx.send((signal, Err(OTelSdkError::InternalFailure(e.to_string()))));
            }
        }
        drop(tx);
        let mut first_err = None;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((_, Ok(()))) | Ok((_, Err(OTelSdkError::AlreadyShutdown))) => {}
                Ok((signal, Err(source))) => {
                    first_err.get_or_insert(TelemetryError::Shutdown { signal, source });
                }
                Err(_) => {
                    first_err = Some(TelemetryError::ShutdownTimedOut {
                        budget_ms: budget.as_millis() as u64,
                    });
                    break;
                }
            }
        }
        // Stops the gRPC channels' runtime; a straggling export thread then
        // fails fast instead of holding the process.
        self.runtime = None;
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for TelemetryPipeline {
    /// Same bounded shutdown as [`TelemetryPipeline::shutdown`] (the SDK's
    /// own drop would wait up to 5 s per provider).
    fn drop(&mut self) {
        if let Err(e) = self.shutdown_in_place() {
            eprintln!("federact: {e}");
        }
    }
}

/// One provider's shutdown, run on its own thread.
type ShutdownJob = Box<dyn FnOnce() -> OTelSdkResult + Send>;

/// Builds the span and metric exporters for `endpoint` (inside the exporter
/// runtime's context for gRPC).
fn build_exporters(
    cfg: &TelemetryConfig,
    endpoint: &str,
) -> Result<
    (
        opentelemetry_otlp::SpanExporter,
        Option<opentelemetry_otlp::MetricExporter>,
    ),
    TelemetryError,
> {
    let err = |signal: &'static str, endpoint: &str| {
        let endpoint = endpoint.to_owned();
        move |source| TelemetryError::Exporter {
            signal,
            endpoint,
            source,
        }
    };
    // Retries stay inside `export_timeout` (the exporter's deadline bounds
    // them); a short first delay lets a restarting collector catch the batch.
    let retry = opentelemetry_otlp::RetryPolicy::recommended()
        .with_initial_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(200));
    match cfg.protocol {
        Protocol::Grpc => {
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(cfg.export_timeout)
                .with_retry_policy(retry.clone())
                .build()
                .map_err(err("traces", endpoint))?;
            let metrics = cfg
                .export_metrics
                .then(|| {
                    opentelemetry_otlp::MetricExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint)
                        .with_timeout(cfg.export_timeout)
                        .with_retry_policy(retry)
                        .build()
                })
                .transpose()
                .map_err(err("metrics", endpoint))?;
            Ok((spans, metrics))
        }
        Protocol::HttpProtobuf => {
            use opentelemetry_otlp::WithHttpConfig;
            let base = endpoint.trim_end_matches('/');
            let traces = format!("{base}/v1/traces");
            let metrics_url = format!("{base}/v1/metrics");
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(traces.clone())
                .with_timeout(cfg.export_timeout)
                .with_retry_policy(retry.clone())
                .build()
                .map_err(err("traces", &traces))?;
            let metrics = cfg
                .export_metrics
                .then(|| {
                    opentelemetry_otlp::MetricExporter::builder()
                        .with_http()
                        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                        .with_endpoint(metrics_url.clone())
                        .with_timeout(cfg.export_timeout)
                        .with_retry_policy(retry)
                        .build()
                })
                .transpose()
                .map_err(err("metrics", &metrics_url))?;
            Ok((spans, metrics))
        }
    }
}

/// Keeps telemetry alive; [`TelemetryGuard::shutdown`] (or drop) flushes
/// and stops the exporters within [`TelemetryConfig::shutdown_timeout`].
#[derive(Debug)]
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    pipeline: Option<TelemetryPipeline>,
}

impl TelemetryGuard {
    /// Whether an exporter is installed (an endpoint was configured).
    pub fn is_exporting(&self) -> bool {
        self.pipeline.is_some()
    }

    /// Export counters so far (all zero when not exporting).
    pub fn stats(&self) -> TelemetryStats {
        self.pipeline
            .as_ref()
            .map(TelemetryPipeline::stats)
            .unwrap_or_default()
    }

    /// The exporting meter provider, if any: e.g. to `force_flush` the
    /// observable instruments (`federact.quic.*`) before the transports
    /// they read are dropped. `force_flush` blocks until the export is
    /// done: call it off the actix thread (`spawn_blocking`).
    pub fn meter_provider(&self) -> Option<&SdkMeterProvider> {
        self.pipeline
            .as_ref()
            .map(TelemetryPipeline::meter_provider)
    }

    /// federact's instruments (disabled when not exporting).
    pub fn metrics(&self) -> Metrics {
        self.pipeline
            .as_ref()
            .map_or_else(Metrics::disabled, TelemetryPipeline::metrics)
    }

    /// Flushes and shuts the exporters down; see
    /// [`TelemetryPipeline::shutdown`] for the time bound and where to call
    /// it. Spans ended afterwards are discarded.
    ///
    /// An `Err` means telemetry was lost (typically: the backend is down or
    /// slow), not that the node failed: log it and exit normally, since a
    /// node must shut down cleanly with its backend stopped (issue 10).
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shutdown_in_place()
    }

    fn shutdown_in_place(&mut self) -> Result<(), TelemetryError> {
        match self.pipeline.take() {
            Some(mut p) => {
                metrics::set_global_meter_installed(false);
                p.shutdown_in_place()
                // `p` drops here, already shut down.
            }
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown_in_place() {
            // The subscriber may already be gone; stderr is all that is left.
            eprintln!("federact: {e}");
        }
    }
}

/// Installs the process-wide telemetry for one node: the global `tracing`
/// subscriber (stderr `fmt` + filter, plus the OpenTelemetry layer when
/// exporting), the global meter and tracer providers and the W3C
/// propagator. Call once per process, before the actix `System` starts.
pub fn init(cfg: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter =
        EnvFilter::try_new(&cfg.log_filter).map_err(|source| TelemetryError::LogFilter {
            filter: cfg.log_filter.clone(),
            source,
        })?;
    let pipeline = TelemetryPipeline::build(cfg)?;
    // Per-layer filters: `RUST_LOG` decides what is *logged*, not what is
    // *traced*. A node started with `RUST_LOG=warn` still exports its
    // `info` spans; with no exporter, `info` spans have no interested layer
    // and cost one callsite check.
    let otel_layer = pipeline
        .as_ref()
        .map(|p| p.layer().with_filter(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .with(otel_layer)
        .try_init()
        .map_err(|e| TelemetryError::SubscriberAlreadySet(e.to_string()))?;
    if let Some(p) = &pipeline {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(p.tracer_provider.clone());
        opentelemetry::global::set_meter_provider(p.meter_provider.clone());
        metrics::set_global_meter_installed(true);
    }
    Ok(TelemetryGuard { pipeline })
}

/// Marks `span` as failed: OpenTelemetry status `Error` with the error's
/// message, and a `WARN` event on the span carrying the error (exported as
/// an exception event with its source chain). Call it where an operation's
/// error is decided, e.g. `record_error(&span, &e)` before returning `Err(e)`.
pub fn record_error(span: &tracing::Span, err: &(dyn std::error::Error + 'static)) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.set_status(opentelemetry::trace::Status::error(err.to_string()));
    tracing::event!(parent: span, tracing::Level::WARN, error = err, "failed");
}

/// The span field that marks a root span whose sampling [`sampled_root`]
/// already decided: `tracing::info_span!("invoke", federact.root = true, ..)`.
pub const ROOT_FIELD: &str = "federact.root";

/// Root sampler of parent-based sampling: keeps roots marked
/// [`ROOT_FIELD`] (decided by [`sampled_root`]), samples others by trace id.
#[derive(Debug, Clone)]
struct GatedRoots {
    ratio: f64,
}

impl opentelemetry_sdk::trace::ShouldSample for GatedRoots {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        if attributes.iter().any(|kv| kv.key.as_str() == ROOT_FIELD) {
            return opentelemetry_sdk::trace::SamplingResult {
                decision: opentelemetry_sdk::trace::SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        Sampler::TraceIdRatioBased(self.ratio).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}

/// A root sampling ratio as a threshold out of `u64::MAX`.
fn root_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio.max(0.0) * u64::MAX as f64) as u64
    }
}

/// The per-layer filter of [`TelemetryPipeline::layer`]: hides the
/// exporter's own crates (whose spans would trace their own exports),
/// exactly as its [`Targets`] say, and carries the pipeline's root sampling
/// threshold. [`sample_root`] finds it by downcasting the current
/// dispatcher, so each subscriber samples roots at its own pipeline's
/// ratio: no process-wide state, and two pipelines in one process (tests,
/// benchmarks) do not change each other's sampling.
#[derive(Debug, Clone)]
struct PipelineFilter {
    quiet: Targets,
    root_threshold: u64,
}

impl PipelineFilter {
    fn sample(&self) -> bool {
        self.root_threshold == u64::MAX || rand::random::<u64>() < self.root_threshold
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for PipelineFilter {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        tracing_subscriber::layer::Filter::<S>::enabled(&self.quiet, meta, cx)
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing_subscriber::layer::Filter::<S>::callsite_enabled(&self.quiet, meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        tracing_subscriber::layer::Filter::<S>::max_level_hint(&self.quiet)
    }
}

/// The root decision of the current dispatcher's pipeline (`true` when
/// the dispatcher has none: nothing is exported, and `fmt` logs see every
/// span as before).
fn pipeline_samples_root(dispatch: &tracing::Dispatch) -> bool {
    dispatch
        .downcast_ref::<PipelineFilter>()
        .is_none_or(PipelineFilter::sample)
}

/// Whether a new trace may start here: `true` inside a span (the parent
/// decided) and otherwise with the root ratio of the current subscriber's
/// pipeline (parent-based sampling; 1.0 without a pipeline). One
/// thread-local lookup, one subscriber downcast and, below 1.0, one random
/// draw: no span, no allocation.
pub fn sample_root() -> bool {
    tracing::dispatcher::get_default(|d| {
        d.current_span().id().is_some() || pipeline_samples_root(d)
    })
}

/// Whether a new, independent trace starts here, whatever span is current:
/// the root ratio of the current subscriber's pipeline (1.0 without one).
/// For operations that are never part of the caller's trace, like
/// consensus rounds.
pub fn sample_new_root() -> bool {
    tracing::dispatcher::get_default(pipeline_samples_root)
}

/// `make()` if a trace may start here ([`sample_root`]), else a disabled
/// span; `make` must give the span the [`ROOT_FIELD`] field (`federact.root
/// = true`) so the SDK does not sample it a second time. Used at federact's
/// root call sites (invocations, tasks,
/// migrations, placements, offloads, relay deliveries, ledger submits), so
/// an unsampled operation creates no span anywhere: its QUIC messages carry
/// no context and the receivers open none either.
pub fn sampled_root(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if sample_root() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// `make()` when `parent` is a live span, else a disabled span (a child
/// of an unsampled operation must not become a root of its own).
pub fn child_of(parent: &tracing::Span, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if parent.is_disabled() {
        tracing::Span::none()
    } else {
        make()
    }
}

/// A span continuing the trace of a message received over QUIC: `span`
/// gets the envelope's W3C context as its parent (when the sender was
/// tracing and `span` is enabled). Returns `span` for chaining.
pub fn continue_trace(
    span: tracing::Span,
    cx: &federact_federation::trace::TraceContext,
) -> tracing::Span {
    if !cx.is_empty() && !span.is_disabled() {
        cx.set_parent_of(&span);
    }
    span
}

/// Marks `span` as failed with a plain message (for outcomes carried as
/// values rather than `std::error::Error`s, e.g. a refusal reason).
pub fn record_failure(span: &tracing::Span, message: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if span.is_disabled() {
        return;
    }
    span.set_status(opentelemetry::trace::Status::error(message.to_owned()));
    tracing::event!(parent: span, tracing::Level::WARN, error = message, "failed");
}

/// An actix [`ActorFuture`](actix::ActorFuture) polled inside a span: the
/// span is entered on every poll, so what the future does (requests over
/// QUIC, ledger submissions) carries the span's trace context. Build with
/// [`in_span`]. (`tracing::Instrument` covers plain futures; actor futures
/// need this because they are polled with the actor and its context.)
pub struct InSpan<F> {
    inner: std::pin::Pin<Box<F>>,
    span: tracing::Span,
}

/// Wraps an actor future so it runs inside `span` (see [`InSpan`]).
pub fn in_span<F>(inner: F, span: tracing::Span) -> InSpan<F> {
    InSpan {
        inner: Box::pin(inner),
        span,
    }
}

impl<A, F> actix::ActorFuture<A> for InSpan<F>
where
    A: actix::Actor,
    F: actix::ActorFuture<A>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        srv: &mut A,
        ctx: &mut A::Context,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        this.inner.as_mut().poll(srv, ctx, task)
    }
}

/// A message together with the span it was sent from, so the handler can
/// continue the sender's trace (a handler runs on the actor's task, where
/// the sender's span is not current: DEPENDENCIES.md item 7).
///
/// ```ignore
/// addr.send(Traced::new(Invoke { .. })).await?;
/// // in the actor:
/// fn handle(&mut self, msg: Traced<Invoke>, _: &mut Context<Self>) -> Self::Result {
///     let span = tracing::info_span!(parent: &msg.span, "invoke", federact.node = %self.name);
///     let _entered = span.enter();
///     // ...
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Traced<M> {
    /// The message.
    pub msg: M,
    /// The sender's span (disabled when the sender was not tracing).
    pub span: tracing::Span,
}

impl<M> Traced<M> {
    /// Wraps `msg` with the current span.
    pub fn new(msg: M) -> Traced<M> {
        Traced {
            msg,
            span: tracing::Span::current(),
        }
    }

    /// Wraps `msg` with `span`.
    pub fn with_span(msg: M, span: tracing::Span) -> Traced<M> {
        Traced { msg, span }
    }
}

impl<M> actix::Message for Traced<M>
where
    M: actix::Message,
    M::Result: 'static,
{
    type Result = M::Result;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn samplers_from_env_values() {
        let cases: [(&str, Option<&str>, Option<Sampling>); 9] = [
            ("always_on", None, Some(Sampling::AlwaysOn)),
            ("always_off", None, Some(Sampling::AlwaysOff)),
            (
                "traceidratio",
                Some("0.25"),
                Some(Sampling::TraceIdRatio(0.25)),
            ),
            ("traceidratio", None, Some(Sampling::TraceIdRatio(1.0))),
            (
                "parentbased_traceidratio",
                Some("0.01"),
                Some(Sampling::ParentBasedRatio(0.01)),
            ),
            (
                "PARENTBASED_ALWAYS_ON",
                None,
                Some(Sampling::ParentBasedRatio(1.0)),
            ),
            ("traceidratio", Some("1.5"), None),
            ("traceidratio", Some("x"), None),
            ("jaeger_remote", None, None),
        ];
        for (s, arg, want) in cases {
            assert_eq!(Sampling::from_env_values(s, arg).ok(), want, "{s} {arg:?}");
        }
    }

    #[test]
    fn protocols() {
        assert_eq!(Protocol::parse("grpc", "t").ok(), Some(Protocol::Grpc));
        assert_eq!(
            Protocol::parse("HTTP/protobuf", "t").ok(),
            Some(Protocol::HttpProtobuf)
        );
        assert!(matches!(
            Protocol::parse("http/json", "t"),
            Err(TelemetryError::UnsupportedProtocol { .. })
        ));
    }

    #[test]
    fn empty_env_values_count_as_unset_and_sdk_disabled_wins() {
        let cfg = TelemetryConfig::new("n")
            .with_endpoint("http://127.0.0.1:4317")
            .with_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
                ("OTEL_SERVICE_NAME", " "),
            ]))
            .unwrap();
        assert_eq!(cfg.endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(cfg.service_name, "n");
        let cfg = cfg.with_env(env(&[("OTEL_SDK_DISABLED", "TRUE")])).unwrap();
        assert!(!cfg.exports());
    }

    #[test]
    fn no_endpoint_builds_no_pipeline() {
        assert!(TelemetryPipeline::build(&TelemetryConfig::new("n"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn endpoint_without_scheme_is_refused() {
        let cfg = TelemetryConfig::new("n").with_endpoint("127.0.0.1:4317");
        assert!(matches!(
            TelemetryPipeline::build(&cfg),
            Err(TelemetryError::InvalidEndpoint { .. })
        ));
    }
}
