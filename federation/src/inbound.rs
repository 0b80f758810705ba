//! The receiving side: typed incoming items, per-actor inboxes, responders.
//!
//! Each stream a peer opens is read by its own task: one frame is read
//! (the length checked first), decoded with the peer's authenticated id, and
//! routed by actor address to that actor's bounded [`Inbox`]. A bad frame
//! stops that stream with a specific code ([`crate::codes`]) and is counted;
//! the connection and every other stream carry on. When an inbox is full
//! the task waits (so QUIC stream credit pushes back on the sender) or, in
//! fail-fast mode, refuses the stream with [`crate::codes::INBOX_FULL`].

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use federact_config::NodeId;
use tokio::sync::mpsc;
use tracing::warn;

use crate::codes;
use crate::error::{FrameError, TransportError};
use crate::frame::{self, EnvelopeRef, Kind};
use crate::trace::TraceContext;
use crate::transfer::TransferReceiver;
use crate::transport::{read_frame, Inner, Peer, ReadFail, WhenFull};

/// Something a peer sent to a local actor.
#[derive(Debug)]
pub enum Incoming {
    /// A request; answer it through `responder`.
    Request {
        /// The authenticated sender.
        from: NodeId,
        /// The target actor (this inbox's name).
        actor: String,
        /// The request payload.
        body: Bytes,
        /// The sender's trace context.
        trace: TraceContext,
        /// Sends the response (dropping it answers with
        /// [`crate::RemoteRefusal::NoResponse`]).
        responder: Responder,
    },
    /// A one-way message.
    OneWay {
        /// The authenticated sender.
        from: NodeId,
        /// The target actor.
        actor: String,
        /// The payload.
        body: Bytes,
        /// The sender's trace context.
        trace: TraceContext,
    },
    /// A bulk transfer: `header` says what it is, `receiver` yields the data.
    Transfer {
        /// The authenticated sender.
        from: NodeId,
        /// The target actor.
        actor: String,
        /// The transfer's header.
        header: Bytes,
        /// The sender's trace context.
        trace: TraceContext,
        /// Reads the data as it arrives.
        receiver: TransferReceiver,
    },
}

impl Incoming {
    /// The target actor.
    pub fn actor(&self) -> &str {
        match self {
            Incoming::Request { actor, .. }
            | Incoming::OneWay { actor, .. }
            | Incoming::Transfer { actor, .. } => actor,
        }
    }

    /// The authenticated sender.
    pub fn from(&self) -> NodeId {
        match self {
            Incoming::Request { from, .. }
            | Incoming::OneWay { from, .. }
            | Incoming::Transfer { from, .. } => *from,
        }
    }

    /// The sender's trace context.
    pub fn trace(&self) -> &TraceContext {
        match self {
            Incoming::Request { trace, .. }
            | Incoming::OneWay { trace, .. }
            | Incoming::Transfer { trace, .. } => trace,
        }
    }

    /// Refuses the item towards its sender with a stream code.
    fn refuse(self, code: u32) {
        match self {
            Incoming::Request { mut responder, .. } => responder.reset(code),
            Incoming::OneWay { .. } => {}
            Incoming::Transfer { receiver, .. } => receiver.refuse(code),
        }
    }
}

/// An actor's bounded inbox (see [`crate::Transport::register`]). Dropping
/// it unregisters the actor.
pub struct Inbox {
    actor: String,
    token: u64,
    rx: mpsc::Receiver<Incoming>,
    inner: Weak<Inner>,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("actor", &self.actor)
            .field("len", &self.rx.len())
            .finish()
    }
}

impl Inbox {
    pub(crate) fn new(
        actor: String,
        token: u64,
        rx: mpsc::Receiver<Incoming>,
        inner: Weak<Inner>,
    ) -> Self {
        Inbox {
            actor,
            token,
            rx,
            inner,
        }
    }

    /// The actor this inbox serves.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The next item; `None` once the transport is gone.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Option<Incoming> {
        self.rx.try_recv().ok()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The inbox's bound.
    pub fn capacity(&self) -> usize {
        self.rx.max_capacity()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut inboxes = inner.inboxes.write().unwrap_or_else(|p| p.into_inner());
            if inboxes
                .get(&self.actor)
                .is_some_and(|(t, _)| *t == self.token)
            {
                inboxes.remove(&self.actor);
            }
        }
    }
}

/// Answers one request. Use [`Responder::respond`] or [`Responder::fail`];
/// dropping it unanswered resets the stream with
/// [`crate::codes::NO_RESPONSE`] so the requester does not wait for its
/// timeout.
pub struct Responder {
    send: Option<quinn::SendStream>,
    // Shared state rather than copies: a `NodeId` is 192 bytes and every
    // request carries a responder through a channel.
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    actor: String,
    correlation: u64,
    /// The server-side `quic.serve` span (disabled unless the request came
    /// with a sampled trace context); ends when the responder does.
    span: tracing::Span,
    _drain: mpsc::Sender<()>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("peer", &self.peer.id)
            .field("actor", &self.actor)
            .field("correlation", &self.correlation)
            .finish()
    }
}

impl Responder {
    /// The requester.
    pub fn peer(&self) -> NodeId {
        self.peer.id
    }

    /// Sends the response.
    pub async fn respond(mut self, body: Bytes) -> Result<(), TransportError> {
        self.reply(Kind::Response, &body).await
    }

    /// Answers with an error message (the requester gets
    /// [`TransportError::Remote`]).
    pub async fn fail(mut self, message: &str) -> Result<(), TransportError> {
        self.reply(Kind::Error, message.as_bytes()).await
    }

    async fn reply(&mut self, kind: Kind, body: &[u8]) -> Result<(), TransportError> {
        let Some(mut send) = self.send.take() else {
            return Ok(());
        };
        let trace = TraceContext::current();
        let max_frame = self.inner.options.limits.max_frame_bytes;
        let frame = frame::encode(
            &EnvelopeRef {
                from: &self.inner.id,
                to: &self.actor,
                correlation: self.correlation,
                kind,
                trace: &trace,
                body,
            },
            max_frame,
        );
        let frame = match frame {
            Ok(f) => Bytes::from(f),
            Err(e) => {
                let _ = send.reset(e.code().into());
                let e = TransportError::TooLarge {
                    actor: self.actor.clone(),
                    len: body.len(),
                    max: max_frame,
                };
                crate::trace::record_error(&self.span, &e);
                return Err(e);
            }
        };
        let len = frame.len() as u64;
        if let Err(e) = send.write_chunk(frame).await {
            let e = TransportError::ConnectionLost {
                peer: self.peer.id,
                reason: e.to_string(),
            };
            crate::trace::record_error(&self.span, &e);
            return Err(e);
        }
        let _ = send.finish();
        self.peer.counters.bytes_out.fetch_add(len, Relaxed);
        if !self.span.is_disabled() {
            self.span.record("bytes.out", body.len());
            if kind == Kind::Error {
                crate::trace::record_failure(&self.span, &String::from_utf8_lossy(body));
            }
        }
        Ok(())
    }

    pub(crate) fn reset(&mut self, code: u32) {
        if let Some(mut send) = self.send.take() {
            let _ = send.reset(code.into());
            if !self.span.is_disabled() {
                let reason = crate::error::RemoteRefusal::from_code(code.into());
                crate::trace::record_failure(&self.span, &format!("refused: {reason:?}"));
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.reset(codes::NO_RESPONSE);
    }
}

/// Counts, logs and refuses a bad frame on one stream.
fn refuse_frame(
    inner: &Inner,
    peer: &Peer,
    e: FrameError,
    send: Option<&mut quinn::SendStream>,
    recv: &mut quinn::RecvStream,
) {
    inner.metrics.frame_refused(e.kind());
    warn!(peer = %peer.id.short(), error = %e, "frame refused");
    let code = e.code().into();
    let _ = recv.stop(code);
    if let Some(send) = send {
        let _ = send.reset(code);
    }
}

async fn read_envelope(
    inner: &Inner,
    peer: &Peer,
    send: Option<&mut quinn::SendStream>,
    recv: &mut quinn::RecvStream,
) -> Option<(frame::Envelope, Bytes)> {
    let (payload, rest) = match read_frame(recv, inner.options.limits.max_frame_bytes).await {
        Ok(p) => p,
        Err(ReadFail::Frame(e)) => {
            refuse_frame(inner, peer, e, send, recv);
            return None;
        }
        // The peer reset its stream or the connection went away: nothing to
        // answer.
        Err(ReadFail::Stream(_)) => return None,
    };
    peer.counters
        .bytes_in
        .fetch_add((frame::PREFIX_LEN + payload.len()) as u64, Relaxed);
    match frame::decode_payload(payload, &peer.id) {
        Ok(env) => Some((env, rest)),
        Err(e) => {
            refuse_frame(inner, peer, e, send, recv);
            None
        }
    }
}

/// Serves one bidirectional stream: a request.
pub(crate) async fn handle_bi(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    drain: mpsc::Sender<()>,
) {
    // A request stream carries one frame; anything after it is ignored.
    let Some((env, _)) = read_envelope(&inner, &peer, Some(&mut send), &mut recv).await else {
        return;
    };
    if env.kind != Kind::Request {
        refuse_frame(
            &inner,
            &peer,
            FrameError::UnexpectedKind,
            Some(&mut send),
            &mut recv,
        );
        return;
    }
    // A sampled sender gets a server-side span, child of its
    // `quic.request`; the handler continues the trace from this span. An
    // unsampled or untraced request costs one string check.
    let (span, trace) = if env.trace.is_sampled() {
        serve_span(&peer, &env)
    } else {
        (tracing::Span::none(), env.trace)
    };
    let responder = Responder {
        send: Some(send),
        inner: inner.clone(),
        peer: peer.clone(),
        actor: env.to.clone(),
        correlation: env.correlation,
        span,
        _drain: drain,
    };
    deliver(
        &inner,
        Incoming::Request {
            from: env.from,
            actor: env.to,
            body: env.body,
            trace,
            responder,
        },
    )
    .await;
}

/// The `quic.serve` span of a sampled request, parented on the envelope's
/// context, and the context its handler continues from.
fn serve_span(peer: &Peer, env: &frame::Envelope) -> (tracing::Span, TraceContext) {
    let span = tracing::info_span!(
        parent: None,
        "quic.serve",
        otel.kind = "server",
        peer = %peer.id.short(),
        actor = env.to.as_str(),
        "bytes.in" = env.body.len(),
        bytes.out = tracing::field::Empty,
    );
    env.trace.set_parent_of(&span);
    let own = TraceContext::of_span(&span);
    if own.is_empty() {
        // No OpenTelemetry layer here: pass the sender's context on as is.
        return (span, env.trace.clone());
    }
    (span, own)
}

/// Serves one unidirectional stream: a one-way message or a transfer.
pub(crate) async fn handle_uni(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    mut recv: quinn::RecvStream,
    drain: mpsc::Sender<()>,
) {
    let Some((env, rest)) = read_envelope(&inner, &peer, None, &mut recv).await else {
        return;
    };
    let item = match env.kind {
        Kind::OneWay => Incoming::OneWay {
            from: env.from,
            actor: env.to,
            body: env.body,
            trace: env.trace,
        },
        Kind::Stream => Incoming::Transfer {
            from: env.from,
            actor: env.to,
            header: env.body,
            trace: env.trace,
            receiver: TransferReceiver::new(recv, rest, peer.clone(), drain),
        },
        _ => {
            refuse_frame(&inner, &peer, FrameError::UnexpectedKind, None, &mut recv);
            return;
        }
    };
    deliver(&inner, item).await;
}

/// Routes an item to its actor's inbox.
async fn deliver(inner: &Inner, item: Incoming) {
    let tx = inner
        .inboxes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(item.actor())
        .map(|(_, tx)| tx.clone());
    let Some(tx) = tx else {
        inner.metrics.inbound_unknown_actor.fetch_add(1, Relaxed);
        warn!(peer = %item.from().short(), actor = item.actor(), "message for unknown actor");
        item.refuse(codes::UNKNOWN_ACTOR);
        return;
    };
    let result = match inner.options.when_full {
        WhenFull::Wait => tx.send(item).await.map_err(|e| (e.0, codes::UNKNOWN_ACTOR)),
        WhenFull::FailFast => tx.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(item) => {
                inner.metrics.inbound_inbox_full.fetch_add(1, Relaxed);
                (item, codes::INBOX_FULL)
            }
            mpsc::error::TrySendError::Closed(item) => (item, codes::UNKNOWN_ACTOR),
        }),
    };
    match result {
        Ok(()) => {
            inner.metrics.inbound_delivered.fetch_add(1, Relaxed);
        }
        Err((item, code)) => item.refuse(code),
    }
}
