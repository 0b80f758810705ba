//! Trace context crosses the transport: with an OpenTelemetry layer
//! installed, the receiver's handler span continues the sender's trace.
//! (Its own test binary: it installs a global subscriber.)

mod common;

use bytes::Bytes;
use common::*;
use federact_federation::{Incoming, TransportOptions};
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiving_span_has_the_senders_trace_id() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let tracer = provider.tracer("federation-test");
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .unwrap();

    let c = cluster(2, TransportOptions::default()).await;
    let mut inbox = c.nodes[1].register("traced", 16).unwrap();
    tokio::spawn(async move {
        while let Some(item) = inbox.recv().await {
            let Incoming::Request {
                trace, responder, ..
            } = item
            else {
                continue;
            };
            let span = tracing::info_span!("handle");
            trace.set_parent_of(&span);
            let id = span.context().span().span_context().trace_id();
            responder
                .respond(Bytes::from(id.to_string()))
                .instrument(span)
                .await
                .unwrap();
        }
    });

    let span = tracing::info_span!("migrate");
    let sender_trace = span.context().span().span_context().trace_id();
    assert_ne!(sender_trace, TraceId::INVALID);
    let out = c.nodes[0]
        .request(c.id(1), "traced", Bytes::new(), TIMEOUT)
        .instrument(span)
        .await
        .unwrap();
    assert_eq!(std::str::from_utf8(&out).unwrap(), sender_trace.to_string());

    // Outside any span nothing is propagated.
    let untraced = c.nodes[0]
        .request(c.id(1), "traced", Bytes::new(), TIMEOUT)
        .await
        .unwrap();
    assert_ne!(
        std::str::from_utf8(&untraced).unwrap(),
        sender_trace.to_string()
    );
}
