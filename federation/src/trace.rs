//! W3C trace-context propagation across the transport.
//!
//! The sender's current `tracing` span, if an OpenTelemetry layer
//! (`tracing-opentelemetry`) is installed, has an OpenTelemetry span context;
//! [`TraceContext::current`] formats it as W3C `traceparent` / `tracestate`
//! strings that travel in the envelope. The receiver calls
//! [`TraceContext::set_parent_of`] on its handler span (or
//! [`TraceContext::to_context`]) to continue the same trace.
//!
//! The W3C format is written and parsed here with the OpenTelemetry *API*
//! crate only (`TraceId`/`SpanId` hex forms, `TraceState::header`), so the
//! transport does not depend on `opentelemetry_sdk`'s `TraceContextPropagator`
//! (the alternative not taken: it would pull the SDK into every node that
//! links the transport). With no OpenTelemetry layer installed, `current()`
//! is one subscriber downcast and returns an empty context without
//! allocating.

use std::fmt;
use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A W3C trace context as carried in an envelope. Empty when the sender was
/// not tracing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: String,
    tracestate: String,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("TraceContext(none)")
        } else {
            write!(f, "TraceContext({})", self.traceparent)
        }
    }
}

impl TraceContext {
    /// The context of the current `tracing` span (empty without an
    /// OpenTelemetry layer or outside any span).
    pub fn current() -> Self {
        Self::of_span(&tracing::Span::current())
    }

    /// The context of `span`.
    pub fn of_span(span: &tracing::Span) -> Self {
        if span.is_none() || span.is_disabled() {
            return Self::default();
        }
        Self::of_context(&span.context())
    }

    /// The context of an OpenTelemetry [`opentelemetry::Context`].
    pub fn of_context(cx: &opentelemetry::Context) -> Self {
        if !cx.has_active_span() {
            return Self::default();
        }
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return Self::default();
        }
        TraceContext {
            traceparent: format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            ),
            tracestate: sc.trace_state().header(),
        }
    }

    /// Builds a context from received strings (not validated until used).
    pub fn from_parts(traceparent: &str, tracestate: &str) -> Self {
        TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.to_owned(),
        }
    }

    /// True when no trace was propagated.
    pub fn is_empty(&self) -> bool {
        self.traceparent.is_empty()
    }

    /// The W3C `traceparent` header value ("" when empty).
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The W3C `tracestate` header value ("" when absent).
    pub fn tracestate(&self) -> &str {
        &self.tracestate
    }

    /// True when the sender's span was sampled (the W3C `sampled` flag):
    /// only then do the transport's own request spans exist. A string
    /// check, no parsing of the ids.
    pub fn is_sampled(&self) -> bool {
        let tp = self.traceparent.as_bytes();
        if tp.len() != 55 {
            return false;
        }
        let low = tp[54];
        matches!(low, b'1' | b'3' | b'5' | b'7' | b'9' | b'b' | b'd' | b'f')
    }

    /// Encoded length of both strings.
    pub(crate) fn len(&self) -> usize {
        self.traceparent.len() + self.tracestate.len()
    }

    /// The remote span context, if the `traceparent` is valid W3C.
    pub fn span_context(&self) -> Option<SpanContext> {
        parse_traceparent(&self.traceparent).map(|(trace_id, span_id, flags)| {
            let state = TraceState::from_str(&self.tracestate).unwrap_or_default();
            SpanContext::new(trace_id, span_id, flags, true, state)
        })
    }

    /// An OpenTelemetry context whose parent is the remote span (the empty
    /// context if there is none or it does not parse).
    pub fn to_context(&self) -> opentelemetry::Context {
        match self.span_context() {
            Some(sc) => opentelemetry::Context::new().with_remote_span_context(sc),
            None => opentelemetry::Context::new(),
        }
    }

    /// Makes the remote span the parent of `span`, so the receiver's work
    /// continues the sender's trace. Call it before `span` is entered. A
    /// no-op when empty, invalid, or without an OpenTelemetry layer.
    pub fn set_parent_of(&self, span: &tracing::Span) {
        if let Some(sc) = self.span_context() {
            // Errors mean "no OTel layer" or "span already started": both
            // leave the span as it was, which is the right fallback.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
        }
    }
}

/// Marks `span` failed: OpenTelemetry status `Error` with the error's
/// message and a `WARN` event carrying it (the transport's counterpart of
/// `federact_actors::telemetry::record_error`). A no-op on a disabled span.
pub fn record_error(span: &tracing::Span, err: &(dyn std::error::Error + 'static)) {
    if span.is_disabled() {
        return;
    }
    span.set_status(opentelemetry::trace::Status::error(err.to_string()));
    tracing::event!(parent: span, tracing::Level::WARN, error = err, "failed");
}

/// [`record_error`] for failures that are a message, not an error value.
pub fn record_failure(span: &tracing::Span, message: &str) {
    if span.is_disabled() {
        return;
    }
    span.set_status(opentelemetry::trace::Status::error(message.to_owned()));
    tracing::event!(parent: span, tracing::Level::WARN, error = message, "failed");
}

/// Parses `version-traceid-spanid-flags` per W3C Trace Context level 1.
fn parse_traceparent(s: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let mut parts = s.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let is_hex = |p: &str, n: usize| {
        p.len() == n && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !is_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !is_hex(trace, 32) || !is_hex(span, 16) || !is_hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_refuses_invalid_traceparents() {
        let cases = [
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                true,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                true,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                false,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                false,
            ),
            ("", false),
            ("garbage", false),
        ];
        for (tp, ok) in cases {
            let cx = TraceContext::from_parts(tp, "");
            assert_eq!(cx.span_context().is_some(), ok, "{tp}");
            if ok {
                assert_eq!(cx.is_sampled(), tp.ends_with("-01"), "{tp}");
            }
        }
    }

    #[test]
    fn without_an_otel_layer_current_is_empty() {
        let span = tracing::info_span!("x");
        let _g = span.enter();
        assert!(TraceContext::current().is_empty());
    }

    #[test]
    fn formats_what_it_parses() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = TraceContext::from_parts(tp, "a=1,b=2").to_context();
        let back = TraceContext::of_context(&cx);
        assert_eq!(back.traceparent(), tp);
        assert_eq!(back.tracestate(), "a=1,b=2");
    }
}
