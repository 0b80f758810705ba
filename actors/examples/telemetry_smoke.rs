//! Sends one trace (a request span and a handler span across an actix
//! mailbox) and one metric to an OTLP endpoint, then shuts telemetry down.
//! A quick check that a dashboard from `examples/dashboards/` receives data:
//!
//! ```sh
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 OTEL_METRICS_EXPORTER=none \
//!     cargo run -p federact-actors --example telemetry_smoke
//! ```
//!
//! Then look for the service `telemetry-smoke` in the UI.

use std::error::Error;
use std::time::Instant;

use actix::prelude::*;
use federact_actors::metrics::Metrics;
use federact_actors::telemetry::{self, TelemetryConfig, Traced};
use tracing::Instrument;

#[derive(Message)]
#[rtype(result = "u64")]
struct Square(u64);

struct Worker;

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Traced<Square>> for Worker {
    type Result = u64;

    fn handle(&mut self, msg: Traced<Square>, _: &mut Context<Self>) -> u64 {
        let span = tracing::info_span!(parent: &msg.span, "worker.square", input = msg.msg.0);
        let _entered = span.enter();
        tracing::info!("squaring");
        msg.msg.0 * msg.msg.0
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut cfg = TelemetryConfig::new("telemetry-smoke");
    cfg.cloud = "local".into();
    cfg.roles = "server".into();
    let cfg = cfg.with_env(|k| std::env::var(k).ok())?;
    let guard = telemetry::init(&cfg)?;
    if !guard.is_exporting() {
        tracing::warn!("no OTLP endpoint: set OTEL_EXPORTER_OTLP_ENDPOINT to export");
    }
    System::new().block_on(async {
        let worker = Worker.start();
        let request = tracing::info_span!("smoke.request", federact.node = "smoke");
        let result = async { worker.send(Traced::new(Square(12))).await }
            .instrument(request)
            .await;
        tracing::info!(?result, "done");
        Metrics::global().tx_committed("smoke.local", 1);
    });
    let started = Instant::now();
    let shutdown = guard.shutdown();
    eprintln!(
        "telemetry shut down in {} ms: {shutdown:?}",
        started.elapsed().as_millis()
    );
    Ok(())
}
