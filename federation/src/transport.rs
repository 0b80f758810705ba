//! The transport: one quinn endpoint per node, one connection per peer pair,
//! requests, one-way messages and transfers over it.
//!
//! # Connections
//! Connections are made on demand (first message to a peer) and kept; a
//! dial shared by all callers waiting for the same peer retries with
//! exponential backoff and full jitter until `connect_timeout`, and the
//! backoff persists across calls so a dead peer is not hammered.
//!
//! Two nodes may dial each other at the same time. Both ends then hold two
//! connections and resolve them the same way without talking: the one
//! *dialed by the smaller node id* wins. The loser is retired: nobody opens
//! new streams on it, and its acceptor (the smaller node) stops accepting
//! streams on it, lets the ones already accepted finish, and closes it with
//! [`codes::DUPLICATE`]. A stream the dialer opened on it that was not
//! accepted fails with that code and is retried on the winner — it was never
//! processed. A connection from a *restarted* peer (another certificate, see
//! `tls::Identity`) simply supersedes the old one.
//!
//! # Requests
//! One bidirectional QUIC stream per request (the alternative, multiplexing
//! correlation ids over long-lived streams, brings head-of-line blocking and
//! its own flow control; quinn opens streams cheaply, and the benchmark
//! shows stream-per-request meets the targets). A request holds one of
//! `max_in_flight_per_peer` slots; when they are all taken the call waits or
//! fails fast ([`WhenFull`]).
//!
//! A request is retried (at most [`MAX_ATTEMPTS`] times) only when the
//! attempt provably reached no live handler: the stream could not be opened,
//! the connection lost a duplicate tie-break, or a restarted peer answered
//! with a stateless reset. Across a peer crash delivery is therefore
//! at-least-once for a request the crashed instance had already received.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use federact_config::{NodeId, NodeKey, TransportLimits};
use futures::future::{BoxFuture, FutureExt, Shared};
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, Notify, Semaphore};
use tracing::{debug, info, warn, Instrument};

use crate::codes;
use crate::error::{FrameError, RefusalReason, RemoteRefusal, TransportError};
use crate::frame::{self, EnvelopeRef, Kind};
use crate::inbound::{self, Inbox, Incoming};
use crate::membership::Membership;
use crate::metrics::{Metrics, PeerCounters};
use crate::tls::{self, Identity, SharedMembership, ALPN};
use crate::trace::TraceContext;
use crate::transfer::TransferSender;

/// How many times one request or message is attempted (see the module doc
/// for when a retry happens).
pub const MAX_ATTEMPTS: u32 = 3;

/// What to do when a bounded queue is full: the per-peer in-flight slots on
/// the sending side, an actor's inbox on the receiving side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait for room (backpressure propagates to the sender through QUIC
    /// stream credit).
    #[default]
    Wait,
    /// Fail at once: [`TransportError::Backpressure`] for the sender,
    /// [`RemoteRefusal::InboxFull`] for a remote requester.
    FailFast,
}

/// Transport settings: the federation's [`TransportLimits`] plus
/// node-local tuning.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Frame size, stream, in-flight, idle and keep-alive limits.
    pub limits: TransportLimits,
    /// Policy for full queues.
    pub when_full: WhenFull,
    /// How long a dial (with its retries) may take.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Requested UDP socket send/receive buffer size (the OS may cap it).
    pub udp_buffer_bytes: usize,
    /// QUIC per-stream receive window (bounds a transfer's buffered bytes).
    pub stream_window_bytes: u32,
    /// QUIC per-connection receive and send window (bounds the memory one
    /// peer can make us buffer).
    pub connection_window_bytes: u32,
    /// Use UDP generic segmentation offload where available (quinn-udp falls
    /// back to plain sends when the kernel refuses it).
    pub segmentation_offload: bool,
    /// Largest UDP payload MTU discovery may probe for (1452 suits Ethernet
    /// paths; loopback and jumbo-frame networks can go higher).
    pub mtu_upper_bound: u16,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportLimits::default().into()
    }
}

impl From<TransportLimits> for TransportOptions {
    fn from(limits: TransportLimits) -> Self {
        TransportOptions {
            limits,
            when_full: WhenFull::Wait,
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            udp_buffer_bytes: 4 << 20,
            stream_window_bytes: 8 << 20,
            connection_window_bytes: 32 << 20,
            segmentation_offload: true,
            mtu_upper_bound: 1452,
        }
    }
}

/// Marks a `quic.request` span cancelled if dropped before the request
/// completed (emptied on completion).
struct Cancelled<'a>(Option<&'a tracing::Span>);

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        if let Some(span) = self.0.take() {
            span.record("cancelled", true);
        }
    }
}

/// A node's transport endpoint. Cheap to clone; the endpoint closes when
/// [`Transport::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
    _guard: Arc<CloseOnDrop>,
}

struct CloseOnDrop(quinn::Endpoint);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(codes::SHUTDOWN.into(), b"shutdown");
    }
}

pub(crate) struct Inner {
    pub(crate) id: NodeId,
    endpoint: quinn::Endpoint,
    identity: Identity,
    membership: SharedMembership,
    pub(crate) options: TransportOptions,
    quic: Arc<quinn::TransportConfig>,
    pub(crate) metrics: Arc<Metrics>,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    pub(crate) inboxes: RwLock<HashMap<String, (u64, mpsc::Sender<Incoming>)>>,
    next_inbox: AtomicU64,
    closing: AtomicBool,
}

type DialFuture = Shared<BoxFuture<'static, Result<quinn::Connection, DialFailure>>>;

pub(crate) struct Peer {
    pub(crate) id: NodeId,
    slots: Semaphore,
    pub(crate) counters: Arc<PeerCounters>,
    correlation: AtomicU64,
    state: Mutex<PeerState>,
    /// Signalled whenever a connection to the peer is installed.
    installed: Notify,
}

#[derive(Default)]
struct PeerState {
    current: Option<Link>,
    dialing: Option<DialFuture>,
    failures: u32,
    next_dial: Option<tokio::time::Instant>,
}

/// One authenticated connection and how it came to be.
#[derive(Clone)]
struct Link {
    conn: quinn::Connection,
    dialed_by_us: bool,
    cert: CertificateDer<'static>,
    retire: Arc<Notify>,
}

/// Why a dial failed; cloneable so every waiter gets it.
#[derive(Debug, Clone)]
enum DialFailure {
    NotMember,
    WrongPeer {
        addr: SocketAddr,
        found: Option<NodeId>,
    },
    Refused(String),
    Unreachable {
        addr: SocketAddr,
        reason: String,
    },
    Closed,
}

impl DialFailure {
    fn permanent(&self) -> bool {
        !matches!(self, DialFailure::Unreachable { .. })
    }

    fn into_error(self, peer: NodeId) -> TransportError {
        match self {
            DialFailure::NotMember => TransportError::NotMember { peer },
            DialFailure::WrongPeer { addr, found } => {
                TransportError::WrongPeer { peer, addr, found }
            }
            DialFailure::Refused(reason) => TransportError::HandshakeRefused { peer, reason },
            DialFailure::Unreachable { addr, reason } => {
                TransportError::Unreachable { peer, addr, reason }
            }
            DialFailure::Closed => TransportError::Closed,
        }
    }
}

/// Whether a failed attempt may be retried on a fresh connection.
pub(crate) enum Attempt {
    Retry(TransportError),
    /// The connection lost a duplicate tie-break: retry once the winning
    /// connection (dialed by the peer) has arrived.
    Duplicate(TransportError),
    Fatal(TransportError),
}

/// A stream-level failure while reading a frame.
pub(crate) enum ReadFail {
    /// The peer sent a bad frame (we refuse it).
    Frame(FrameError),
    /// The stream was reset or the connection lost.
    Stream(quinn::ReadError),
}

/// Largest piece taken from a stream before the length prefix is known
/// (a packet's worth; bounds what an oversized frame costs).
const FIRST_READ_MAX: usize = 64 * 1024;

/// Reads one frame, refusing an oversized one as soon as its 4-byte prefix
/// has arrived. Returns the payload and any bytes that followed it in the
/// same read (the start of a transfer's data).
///
/// Fast path: a small frame usually arrives as one chunk, which is sliced
/// without copying; otherwise the pieces are gathered into one buffer, and
/// no read after the first asks for more than the frame still needs.
pub(crate) async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: u32,
) -> Result<(Bytes, Bytes), ReadFail> {
    let mut first = Bytes::new();
    let mut gathered = BytesMut::new();
    let mut frame_len: Option<usize> = None;
    loop {
        let have = first.len() + gathered.len();
        let want = match frame_len {
            None if have == 0 => FIRST_READ_MAX,
            None => frame::PREFIX_LEN.saturating_sub(have).max(1),
            Some(n) => n.saturating_sub(have).max(1),
        };
        let chunk = match recv.read_chunk(want, true).await {
            Ok(Some(c)) => c.bytes,
            Ok(None) => return Err(ReadFail::Frame(FrameError::Truncated)),
            Err(e) => return Err(ReadFail::Stream(e)),
        };
        if have == 0 {
            first = chunk;
        } else {
            if !first.is_empty() {
                gathered.extend_from_slice(&first);
                first = Bytes::new();
            }
            gathered.extend_from_slice(&chunk);
        }
        if frame_len.is_none() {
            let view: &[u8] = if first.is_empty() { &gathered } else { &first };
            if let Some(prefix) = view.get(..frame::PREFIX_LEN) {
                let mut p = [0u8; frame::PREFIX_LEN];
                p.copy_from_slice(prefix);
                let len = frame::payload_len(p, max).map_err(ReadFail::Frame)?;
                let total = frame::PREFIX_LEN + len;
                frame_len = Some(total);
                if first.is_empty() {
                    gathered.reserve(total.saturating_sub(gathered.len()));
                }
            }
        }
        if let Some(total) = frame_len {
            if first.len() + gathered.len() >= total {
                let all = if first.is_empty() {
                    std::mem::take(&mut gathered).freeze()
                } else {
                    std::mem::take(&mut first)
                };
                return Ok((all.slice(frame::PREFIX_LEN..total), all.slice(total..)));
            }
        }
    }
}

impl Transport {
    /// Binds a UDP socket at `addr` (use port 0 to let the OS choose) and
    /// starts the endpoint. Must be called inside a tokio runtime.
    pub async fn bind(
        key: &NodeKey,
        membership: Membership,
        options: impl Into<TransportOptions>,
        addr: SocketAddr,
    ) -> Result<Transport, TransportError> {
        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|source| TransportError::Io { addr, source })?;
        Self::bind_socket(key, membership, options, socket).await
    }

    /// Starts the endpoint on an already bound socket.
    pub async fn bind_socket(
        key: &NodeKey,
        membership: Membership,
        options: impl Into<TransportOptions>,
        socket: std::net::UdpSocket,
    ) -> Result<Transport, TransportError> {
        let options = options.into();
        let addr = socket.local_addr().map_err(|source| TransportError::Io {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        tune_socket(&socket, options.udp_buffer_bytes);
        let identity = Identity::new(key)?;
        let membership: SharedMembership = Arc::new(RwLock::new(Arc::new(membership)));
        let quic = Arc::new(quic_config(&options)?);
        let server = tls::server_config(&identity, membership.clone(), quic.clone())?;
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(tls::ResetKey::new(key)));
        endpoint_config.cid_generator(|| Box::new(tls::RandomCids));
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| TransportError::Io { addr, source })?;
        let inner = Arc::new(Inner {
            id: key.id(),
            endpoint: endpoint.clone(),
            identity,
            membership,
            options,
            quic,
            metrics: Arc::new(Metrics::default()),
            peers: Mutex::new(HashMap::new()),
            inboxes: RwLock::new(HashMap::new()),
            next_inbox: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        tokio::spawn(accept_loop(inner.clone()));
        info!(node = %key.id().short(), %addr, "transport listening");
        Ok(Transport {
            inner,
            _guard: Arc::new(CloseOnDrop(endpoint)),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.inner
            .endpoint
            .local_addr()
            .map_err(|source| TransportError::Io {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
    }

    /// The transport's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The transport's counters as a shared handle, for readers that
    /// outlive a borrow (e.g. OpenTelemetry observable instruments, which
    /// should hold it weakly so the transport can go away).
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    /// The current membership.
    pub fn membership(&self) -> Arc<Membership> {
        tls::current(&self.inner.membership)
    }

    /// Replaces the membership. New handshakes are checked against it at
    /// once; connections to nodes no longer in it are closed.
    pub fn update_membership(&self, membership: Membership) {
        let removed: Vec<Arc<Peer>> = {
            let mut peers = self.inner.lock_peers();
            let gone: Vec<NodeId> = peers
                .keys()
                .filter(|id| !membership.contains(id))
                .copied()
                .collect();
            *self
                .inner
                .membership
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Arc::new(membership);
            gone.iter().filter_map(|id| peers.remove(id)).collect()
        };
        for peer in removed {
            if let Some(link) = peer.lock().current.take() {
                link.conn
                    .close(codes::NOT_MEMBER.into(), b"no longer a member");
            }
        }
    }

    /// Registers actor `actor` on this node: messages addressed to it are
    /// delivered to the returned inbox, which holds at most `capacity` items
    /// (then [`WhenFull`] applies). Dropping the inbox unregisters the actor.
    pub fn register(&self, actor: &str, capacity: usize) -> Result<Inbox, TransportError> {
        if actor.is_empty() || actor.len() > frame::MAX_ACTOR_LEN {
            return Err(TransportError::InvalidActor {
                actor: actor.to_owned(),
            });
        }
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let token = self.inner.next_inbox.fetch_add(1, Relaxed);
        let mut inboxes = self
            .inner
            .inboxes
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if inboxes.contains_key(actor) {
            return Err(TransportError::AlreadyRegistered {
                actor: actor.to_owned(),
            });
        }
        inboxes.insert(actor.to_owned(), (token, tx));
        Ok(Inbox::new(
            actor.to_owned(),
            token,
            rx,
            Arc::downgrade(&self.inner),
        ))
    }

    /// Sends `body` to `actor` at `peer` without waiting for an answer.
    /// Returns once the message is handed to QUIC (not when it is
    /// processed). Waits for a connection (up to `connect_timeout`) and for
    /// a free in-flight slot (or fails fast, see [`WhenFull`]).
    pub async fn send(&self, peer: NodeId, actor: &str, body: Bytes) -> Result<(), TransportError> {
        let trace = TraceContext::current();
        self.inner.send(peer, actor, &body, &trace).await
    }

    /// Sends a request to `actor` at `peer` and waits for its response, at
    /// most `timeout` (connecting included).
    pub async fn request(
        &self,
        peer: NodeId,
        actor: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let trace = TraceContext::current();
        if !trace.is_sampled() {
            // The common case (no exporter, or an unsampled operation):
            // no span, nothing beyond the context lookup done before.
            return self.request_in(peer, actor, body, timeout, &trace).await;
        }
        let span = tracing::info_span!(
            "quic.request",
            otel.kind = "client",
            peer = %peer.short(),
            actor,
            bytes.out = body.len(),
            "bytes.in" = tracing::field::Empty,
            cancelled = tracing::field::Empty,
        );
        // The receiver's `quic.serve` span becomes a child of this one.
        let trace = TraceContext::of_span(&span);
        // A caller that drops this future (a timeout of its own, a race
        // between peers) leaves the span marked `cancelled = true`.
        let mut pending = Cancelled(Some(&span));
        let result = self
            .request_in(peer, actor, body, timeout, &trace)
            .instrument(span.clone())
            .await;
        pending.0 = None;
        match &result {
            Ok(answer) => {
                span.record("bytes.in", answer.len());
            }
            Err(e) => crate::trace::record_error(&span, e),
        }
        result
    }

    async fn request_in(
        &self,
        peer: NodeId,
        actor: &str,
        body: Bytes,
        timeout: Duration,
        trace: &TraceContext,
    ) -> Result<Bytes, TransportError> {
        let sent = std::sync::atomic::AtomicBool::new(false);
        let request = self.inner.request(peer, actor, &body, trace, &sent);
        match tokio::time::timeout(timeout, request).await {
            Ok(r) => r,
            Err(_) => {
                self.inner.metrics.requests_failed.fetch_add(1, Relaxed);
                Err(TransportError::Timeout {
                    peer,
                    actor: actor.to_owned(),
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    sent: sent.load(Relaxed),
                })
            }
        }
    }

    /// Opens a bulk transfer to `actor` at `peer` on its own QUIC stream:
    /// `header` (at most one frame) tells the receiver what follows; the
    /// returned sender writes the data with QUIC flow control (a slow
    /// receiver slows the writer; neither side holds the whole transfer).
    pub async fn open_transfer(
        &self,
        peer: NodeId,
        actor: &str,
        header: Bytes,
    ) -> Result<TransferSender, TransportError> {
        let trace = TraceContext::current();
        self.inner.open_transfer(peer, actor, &header, &trace).await
    }

    /// Whether a live connection to `peer` exists right now.
    pub fn is_connected(&self, peer: &NodeId) -> bool {
        self.inner
            .lock_peers()
            .get(peer)
            .and_then(|p| {
                p.lock()
                    .current
                    .as_ref()
                    .map(|l| l.conn.close_reason().is_none())
            })
            .unwrap_or(false)
    }

    /// Closes every connection (peers see [`codes::SHUTDOWN`]) and waits
    /// until they are gone; the socket is released when the last clone of
    /// this transport is dropped.
    pub async fn close(&self) {
        self.inner.closing.store(true, Relaxed);
        self.inner
            .endpoint
            .close(codes::SHUTDOWN.into(), b"shutdown");
        self.inner.endpoint.wait_idle().await;
    }
}

fn tune_socket(socket: &std::net::UdpSocket, bytes: usize) {
    // Best effort: Linux caps at net.core.{r,w}mem_max without
    // CAP_NET_ADMIN; a smaller buffer only costs throughput.
    match quinn::udp::UdpSocketState::new(socket.into()) {
        Ok(state) => {
            if let Err(e) = state.set_recv_buffer_size(socket.into(), bytes) {
                debug!(error = %e, "cannot enlarge UDP receive buffer");
            }
            if let Err(e) = state.set_send_buffer_size(socket.into(), bytes) {
                debug!(error = %e, "cannot enlarge UDP send buffer");
            }
        }
        Err(e) => debug!(error = %e, "cannot inspect UDP socket"),
    }
}

fn quic_config(options: &TransportOptions) -> Result<quinn::TransportConfig, TransportError> {
    let limits = &options.limits;
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.max_concurrent_streams.into());
    t.max_concurrent_uni_streams(limits.max_concurrent_streams.into());
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms))
        .map_err(|_| TransportError::Tls("idle timeout out of range".into()))?;
    t.max_idle_timeout(Some(idle));
    if limits.keep_alive_ms > 0 {
        t.keep_alive_interval(Some(Duration::from_millis(limits.keep_alive_ms)));
    }
    t.stream_receive_window(options.stream_window_bytes.into());
    t.receive_window(options.connection_window_bytes.into());
    t.send_window(u64::from(options.connection_window_bytes));
    t.enable_segmentation_offload(options.segmentation_offload);
    // No unreliable datagrams in this protocol: do not buffer any.
    t.datagram_receive_buffer_size(None);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(options.mtu_upper_bound);
    t.mtu_discovery_config(Some(mtu));
    Ok(t)
}

/// The peer certificate of an established connection.
fn peer_cert(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?
        .into_iter()
        .next()
}

fn alpn_ok(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .is_some_and(|p| p == ALPN)
}

async fn accept_loop(inner: Arc<Inner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        tokio::spawn(accept_one(inner.clone(), incoming));
    }
}

/// Completes one inbound handshake. Nothing is read from the peer before
/// `incoming.await` returns, i.e. before our verifier accepted its
/// certificate (DEPENDENCIES.md gotcha 4).
async fn accept_one(inner: Arc<Inner>, incoming: quinn::Incoming) {
    let addr = incoming.remote_address();
    let refuse = |reason: RefusalReason, detail: &dyn std::fmt::Display| {
        inner.metrics.handshake_refused(reason);
        warn!(%addr, ?reason, %detail, "handshake refused");
    };
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            refuse(tls::refusal_reason(&e), &e);
            return;
        }
    };
    if !alpn_ok(&conn) {
        refuse(RefusalReason::AlpnMismatch, &"no federact/1 ALPN");
        conn.close(codes::NOT_MEMBER.into(), b"alpn");
        return;
    }
    let Some(cert) = peer_cert(&conn) else {
        refuse(RefusalReason::NoClientCertificate, &"no certificate");
        conn.close(codes::NOT_MEMBER.into(), b"no certificate");
        return;
    };
    let id = match tls::node_id_of(&cert) {
        Ok(id) => id,
        Err(reason) => {
            refuse(reason, &"unreadable certificate");
            conn.close(codes::NOT_MEMBER.into(), b"bad certificate");
            return;
        }
    };
    let Some(peer) = inner.peer(id) else {
        refuse(RefusalReason::UnknownKey, &id);
        conn.close(codes::NOT_MEMBER.into(), b"not a member");
        return;
    };
    debug!(peer = %id.short(), %addr, "accepted connection");
    inner.install(&peer, conn, cert, false);
}

impl Peer {
    fn lock(&self) -> std::sync::MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Holds one in-flight slot of a peer.
struct Slot<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    counters: &'a PeerCounters,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Relaxed);
    }
}

fn retry_or_fatal(peer: NodeId, e: quinn::ConnectionError, closing: bool) -> Attempt {
    use quinn::ConnectionError as C;
    let lost = |e: &C| TransportError::ConnectionLost {
        peer,
        reason: e.to_string(),
    };
    match &e {
        _ if closing => Attempt::Fatal(TransportError::Closed),
        C::ApplicationClosed(c)
            if c.error_code == codes::DUPLICATE.into()
                || c.error_code == codes::SUPERSEDED.into() =>
        {
            Attempt::Duplicate(lost(&e))
        }
        C::Reset | C::LocallyClosed => Attempt::Retry(lost(&e)),
        C::ConnectionClosed(c) if (0x100..0x200).contains(&u64::from(c.error_code)) => {
            Attempt::Fatal(TransportError::HandshakeRefused {
                peer,
                reason: e.to_string(),
            })
        }
        C::ApplicationClosed(c) if c.error_code == codes::NOT_MEMBER.into() => {
            Attempt::Fatal(TransportError::HandshakeRefused {
                peer,
                reason: e.to_string(),
            })
        }
        _ => Attempt::Fatal(lost(&e)),
    }
}

impl Inner {
    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Arc<Peer>>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of member `id` (None for non-members: the map is bounded by
    /// the membership).
    pub(crate) fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        // The map only holds members: `update_membership` swaps the
        // membership and removes the others under this lock, and a new
        // entry is checked against the membership under it too (lock order:
        // peers, then membership).
        let mut peers = self.lock_peers();
        if let Some(p) = peers.get(&id) {
            return Some(p.clone());
        }
        if !tls::current(&self.membership).contains(&id) {
            return None;
        }
        Some(
            peers
                .entry(id)
                .or_insert_with(|| {
                    Arc::new(Peer {
                        id,
                        slots: Semaphore::new(
                            self.options.limits.max_in_flight_per_peer.max(1) as usize
                        ),
                        counters: self.metrics.peer(id),
                        correlation: AtomicU64::new(0),
                        state: Mutex::new(PeerState::default()),
                        installed: Notify::new(),
                    })
                })
                .clone(),
        )
    }

    fn member_peer(&self, id: NodeId) -> Result<Arc<Peer>, TransportError> {
        if self.closing.load(Relaxed) {
            return Err(TransportError::Closed);
        }
        self.peer(id).ok_or(TransportError::NotMember { peer: id })
    }

    async fn slot<'a>(&self, peer: &'a Peer) -> Result<Slot<'a>, TransportError> {
        let permit = match self.options.when_full {
            WhenFull::Wait => peer
                .slots
                .acquire()
                .await
                .map_err(|_| TransportError::Closed)?,
            WhenFull::FailFast => match peer.slots.try_acquire() {
                Ok(p) => p,
                Err(_) => {
                    self.metrics.requests_backpressured.fetch_add(1, Relaxed);
                    return Err(TransportError::Backpressure {
                        peer: peer.id,
                        in_flight: self.options.limits.max_in_flight_per_peer,
                    });
                }
            },
        };
        peer.counters.in_flight.fetch_add(1, Relaxed);
        Ok(Slot {
            _permit: permit,
            counters: &peer.counters,
        })
    }

    fn encode(
        &self,
        actor: &str,
        correlation: u64,
        kind: Kind,
        trace: &TraceContext,
        body: &[u8],
    ) -> Result<Bytes, TransportError> {
        let max = self.options.limits.max_frame_bytes;
        frame::encode(
            &EnvelopeRef {
                from: &self.id,
                to: actor,
                correlation,
                kind,
                trace,
                body,
            },
            max,
        )
        .map(Bytes::from)
        .map_err(|e| match e {
            FrameError::TooLarge { len, max } => TransportError::TooLarge {
                actor: actor.to_owned(),
                len: usize::try_from(len).unwrap_or(usize::MAX),
                max,
            },
            _ => TransportError::InvalidActor {
                actor: actor.to_owned(),
            },
        })
    }

    /// Sends a request and reads its answer, retrying on a fresh
    /// connection where that is safe; sets `sent` once a copy of the
    /// request was handed to QUIC.
    async fn request(
        self: &Arc<Self>,
        peer: NodeId,
        actor: &str,
        body: &[u8],
        trace: &TraceContext,
        sent: &std::sync::atomic::AtomicBool,
    ) -> Result<Bytes, TransportError> {
        let peer = self.member_peer(peer)?;
        let _slot = self.slot(&peer).await?;
        let correlation = peer.correlation.fetch_add(1, Relaxed);
        let frame = self.encode(actor, correlation, Kind::Request, trace, body)?;
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let result = match self.connection(&peer).await {
                Ok(conn) => {
                    self.request_once(&peer, &conn, actor, correlation, &frame, sent)
                        .await
                }
                Err(e) => Err(Attempt::Fatal(e)),
            };
            match result {
                Ok(body) => {
                    self.metrics.request_latency.record(started.elapsed());
                    self.metrics.requests_ok.fetch_add(1, Relaxed);
                    return Ok(body);
                }
                Err(Attempt::Retry(e)) if attempt < MAX_ATTEMPTS => {
                    debug!(peer = %peer.id.short(), error = %e, "retrying request");
                    attempt += 1;
                }
                Err(Attempt::Duplicate(e)) if attempt < MAX_ATTEMPTS => {
                    debug!(peer = %peer.id.short(), error = %e, "retrying request on the winner");
                    self.await_winner(&peer).await;
                    attempt += 1;
                }
                Err(Attempt::Retry(e)) | Err(Attempt::Duplicate(e)) | Err(Attempt::Fatal(e)) => {
                    self.metrics.requests_failed.fetch_add(1, Relaxed);
                    return Err(e);
                }
            }
        }
    }

    async fn request_once(
        &self,
        peer: &Peer,
        conn: &quinn::Connection,
        actor: &str,
        correlation: u64,
        frame: &Bytes,
        sent: &std::sync::atomic::AtomicBool,
    ) -> Result<Bytes, Attempt> {
        let closing = self.closing.load(Relaxed);
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| retry_or_fatal(peer.id, e, closing))?;
        // From the first byte written the peer may see the request.
        sent.store(true, Relaxed);
        self.write_frame(peer, &mut send, actor, frame).await?;
        let _ = send.finish();
        let payload = match read_frame(&mut recv, self.options.limits.max_frame_bytes).await {
            Ok((p, _)) => p,
            Err(ReadFail::Frame(e)) => {
                self.metrics.frame_refused(e.kind());
                let _ = recv.stop(e.code().into());
                return Err(Attempt::Fatal(TransportError::Frame {
                    peer: peer.id,
                    source: e,
                }));
            }
            Err(ReadFail::Stream(e)) => return Err(self.stream_failure(peer.id, actor, e)),
        };
        peer.counters
            .bytes_in
            .fetch_add((frame::PREFIX_LEN + payload.len()) as u64, Relaxed);
        let env = frame::decode_payload(payload, &peer.id).map_err(|e| {
            self.metrics.frame_refused(e.kind());
            Attempt::Fatal(TransportError::Frame {
                peer: peer.id,
                source: e,
            })
        })?;
        if env.correlation != correlation {
            self.metrics
                .frame_refused(crate::error::FrameErrorKind::Malformed);
            return Err(Attempt::Fatal(TransportError::Frame {
                peer: peer.id,
                source: FrameError::Malformed("response for another request"),
            }));
        }
        match env.kind {
            Kind::Response => Ok(env.body),
            Kind::Error => Err(Attempt::Fatal(TransportError::Remote {
                peer: peer.id,
                actor: actor.to_owned(),
                message: String::from_utf8_lossy(&env.body).into_owned(),
            })),
            _ => {
                self.metrics
                    .frame_refused(crate::error::FrameErrorKind::UnexpectedKind);
                Err(Attempt::Fatal(TransportError::Frame {
                    peer: peer.id,
                    source: FrameError::UnexpectedKind,
                }))
            }
        }
    }

    pub(crate) async fn write_frame(
        &self,
        peer: &Peer,
        send: &mut quinn::SendStream,
        actor: &str,
        frame: &Bytes,
    ) -> Result<(), Attempt> {
        let closing = self.closing.load(Relaxed);
        send.write_chunk(frame.clone()).await.map_err(|e| match e {
            quinn::WriteError::Stopped(code) => Attempt::Fatal(TransportError::Refused {
                peer: peer.id,
                actor: actor.to_owned(),
                reason: RemoteRefusal::from_code(code.into_inner()),
            }),
            quinn::WriteError::ConnectionLost(e) => retry_or_fatal(peer.id, e, closing),
            other => Attempt::Fatal(TransportError::ConnectionLost {
                peer: peer.id,
                reason: other.to_string(),
            }),
        })?;
        peer.counters
            .bytes_out
            .fetch_add(frame.len() as u64, Relaxed);
        Ok(())
    }

    fn stream_failure(&self, peer: NodeId, actor: &str, e: quinn::ReadError) -> Attempt {
        match e {
            quinn::ReadError::Reset(code) => Attempt::Fatal(TransportError::Refused {
                peer,
                actor: actor.to_owned(),
                reason: RemoteRefusal::from_code(code.into_inner()),
            }),
            quinn::ReadError::ConnectionLost(e) => {
                retry_or_fatal(peer, e, self.closing.load(Relaxed))
            }
            other => Attempt::Fatal(TransportError::ConnectionLost {
                peer,
                reason: other.to_string(),
            }),
        }
    }

    async fn send(
        self: &Arc<Self>,
        peer: NodeId,
        actor: &str,
        body: &[u8],
        trace: &TraceContext,
    ) -> Result<(), TransportError> {
        let peer = self.member_peer(peer)?;
        let _slot = self.slot(&peer).await?;
        let correlation = peer.correlation.fetch_add(1, Relaxed);
        let frame = self.encode(actor, correlation, Kind::OneWay, trace, body)?;
        self.open_uni_with(&peer, actor, &frame, true)
            .await
            .map(|_| ())
    }

    /// Opens a unidirectional stream and writes its first frame, retrying
    /// like a request.
    async fn open_uni_with(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        actor: &str,
        frame: &Bytes,
        finish: bool,
    ) -> Result<quinn::SendStream, TransportError> {
        let mut attempt = 1;
        loop {
            let result = async {
                let conn = self.connection(peer).await.map_err(Attempt::Fatal)?;
                let closing = self.closing.load(Relaxed);
                let mut send = conn
                    .open_uni()
                    .await
                    .map_err(|e| retry_or_fatal(peer.id, e, closing))?;
                self.write_frame(peer, &mut send, actor, frame).await?;
                Ok(send)
            }
            .await;
            match result {
                Ok(mut send) => {
                    if finish {
                        let _ = send.finish();
                    }
                    return Ok(send);
                }
                Err(Attempt::Retry(_)) if attempt < MAX_ATTEMPTS => attempt += 1,
                Err(Attempt::Duplicate(_)) if attempt < MAX_ATTEMPTS => {
                    self.await_winner(peer).await;
                    attempt += 1;
                }
                Err(Attempt::Retry(e)) | Err(Attempt::Duplicate(e)) | Err(Attempt::Fatal(e)) => {
                    return Err(e)
                }
            }
        }
    }

    async fn open_transfer(
        self: &Arc<Self>,
        peer: NodeId,
        actor: &str,
        header: &[u8],
        trace: &TraceContext,
    ) -> Result<TransferSender, TransportError> {
        let peer = self.member_peer(peer)?;
        let correlation = peer.correlation.fetch_add(1, Relaxed);
        let frame = self.encode(actor, correlation, Kind::Stream, trace, header)?;
        let send = self.open_uni_with(&peer, actor, &frame, false).await?;
        Ok(TransferSender::new(
            send,
            peer.id,
            actor.to_owned(),
            peer.counters.clone(),
        ))
    }

    /// After our connection lost a duplicate tie-break, the peer's winning
    /// connection is on its way (the peer finished its handshake before we
    /// did ours): wait a few round trips for it rather than dialing a new
    /// loser.
    async fn await_winner(&self, peer: &Peer) {
        let notified = peer.installed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let rtt = match &peer.lock().current {
            Some(l) if l.conn.close_reason().is_none() => return,
            Some(l) => l.conn.rtt(),
            None => Duration::ZERO,
        };
        let wait = self.options.backoff_min + rtt * 4;
        let _ = tokio::time::timeout(wait, notified).await;
    }

    /// A live connection to `peer`, dialing if there is none. Concurrent
    /// callers share one dial.
    async fn connection(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
    ) -> Result<quinn::Connection, TransportError> {
        let dial = {
            let mut st = peer.lock();
            if let Some(link) = &st.current {
                if link.conn.close_reason().is_none() {
                    return Ok(link.conn.clone());
                }
                st.current = None;
            }
            match &st.dialing {
                Some(d) => d.clone(),
                None => {
                    let task = tokio::spawn(dial_loop(self.clone(), peer.clone()));
                    let d = async move { task.await.unwrap_or(Err(DialFailure::Closed)) }
                        .boxed()
                        .shared();
                    st.dialing = Some(d.clone());
                    d
                }
            }
        };
        dial.await.map_err(|f| f.into_error(peer.id))
    }

    /// Makes `conn` the peer's connection unless an equivalent one wins the
    /// tie-break (see the module doc), and starts serving it. Returns the
    /// connection to use.
    fn install(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        conn: quinn::Connection,
        cert: CertificateDer<'static>,
        dialed_by_us: bool,
    ) -> quinn::Connection {
        self.metrics.connections_opened.fetch_add(1, Relaxed);
        let link = Link {
            conn,
            dialed_by_us,
            cert,
            retire: Arc::new(Notify::new()),
        };
        let dialer = |l: &Link| if l.dialed_by_us { self.id } else { peer.id };
        let winner = {
            let mut st = peer.lock();
            match st.current.take() {
                Some(old) if old.conn.close_reason().is_none() => {
                    if old.cert != link.cert {
                        // The peer restarted: its old instance is gone.
                        old.conn.close(codes::SUPERSEDED.into(), b"peer restarted");
                        st.current = Some(link.clone());
                    } else if dialer(&old) != dialer(&link) && dialer(&old) < dialer(&link) {
                        self.metrics.connections_duplicate.fetch_add(1, Relaxed);
                        link.retire.notify_one();
                        st.current = Some(old);
                    } else {
                        self.metrics.connections_duplicate.fetch_add(1, Relaxed);
                        old.retire.notify_one();
                        st.current = Some(link.clone());
                    }
                }
                _ => st.current = Some(link.clone()),
            }
            st.current
                .as_ref()
                .map(|l| l.conn.clone())
                .unwrap_or_else(|| link.conn.clone())
        };
        peer.installed.notify_waiters();
        tokio::spawn(serve(self.clone(), peer.clone(), link));
        winner
    }
}

/// Dials `peer` until it answers, the dial turns out hopeless, or
/// `connect_timeout` passes; backoff doubles per failure (with full jitter)
/// and persists in the peer state for the next caller.
async fn dial_loop(inner: Arc<Inner>, peer: Arc<Peer>) -> Result<quinn::Connection, DialFailure> {
    let deadline = tokio::time::Instant::now() + inner.options.connect_timeout;
    let result = loop {
        if inner.closing.load(Relaxed) {
            break Err(DialFailure::Closed);
        }
        let next = peer.lock().next_dial;
        if let Some(at) = next {
            if at > deadline {
                break Err(DialFailure::Unreachable {
                    addr: member_addr(&inner, peer.id)
                        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                    reason: "backing off after failed dials".into(),
                });
            }
            tokio::time::sleep_until(at).await;
        }
        let Some(addr) = member_addr(&inner, peer.id) else {
            break Err(DialFailure::NotMember);
        };
        let attempt = tokio::time::timeout_at(deadline, dial_once(&inner, peer.id, addr));
        let outcome = attempt.await.unwrap_or_else(|_| {
            Err(DialFailure::Unreachable {
                addr,
                reason: "no handshake before the connect timeout".into(),
            })
        });
        match outcome {
            Ok((conn, cert)) => {
                {
                    let mut st = peer.lock();
                    st.failures = 0;
                    st.next_dial = None;
                }
                break Ok(inner.install(&peer, conn, cert, true));
            }
            Err(f) => {
                inner.metrics.dials_failed.fetch_add(1, Relaxed);
                if f.permanent() {
                    break Err(f);
                }
                let delay = {
                    let mut st = peer.lock();
                    st.failures = st.failures.saturating_add(1);
                    let delay = backoff(&inner.options, st.failures);
                    st.next_dial = Some(tokio::time::Instant::now() + delay);
                    delay
                };
                debug!(peer = %peer.id.short(), %addr, ?delay, failure = ?f, "dial failed");
                if tokio::time::Instant::now() + delay >= deadline {
                    break Err(f);
                }
            }
        }
    };
    peer.lock().dialing = None;
    result
}

fn member_addr(inner: &Inner, id: NodeId) -> Option<SocketAddr> {
    tls::current(&inner.membership).get(&id).map(|m| m.addr)
}

/// Exponential backoff with full jitter: uniform in [d/2, d] where
/// d = min(max, min * 2^(failures-1)).
pub(crate) fn backoff(options: &TransportOptions, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let d = options
        .backoff_min
        .saturating_mul(1u32 << exp)
        .min(options.backoff_max);
    let jitter: f64 = rand::random();
    d.mul_f64(0.5 + 0.5 * jitter)
}

async fn dial_once(
    inner: &Inner,
    expected: NodeId,
    addr: SocketAddr,
) -> Result<(quinn::Connection, CertificateDer<'static>), DialFailure> {
    let unreachable = |reason: String| DialFailure::Unreachable { addr, reason };
    let (config, verifier) = tls::client_config(
        &inner.identity,
        expected,
        inner.membership.clone(),
        inner.quic.clone(),
    )
    .map_err(|e| unreachable(e.to_string()))?;
    let connecting = inner
        .endpoint
        .connect_with(config, addr, "federact")
        .map_err(|e| unreachable(e.to_string()))?;
    let conn = match connecting.await {
        Ok(conn) => conn,
        Err(e) => {
            let found = verifier
                .found
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            return Err(match (&e, found) {
                (quinn::ConnectionError::TransportError(_), Some(found))
                    if found != Ok(expected) =>
                {
                    let reason = match found {
                        Ok(_) => RefusalReason::WrongPeer,
                        Err(r) => r,
                    };
                    inner.metrics.handshake_refused(reason);
                    warn!(%addr, peer = %expected.short(), ?found, "refused: another key answered");
                    DialFailure::WrongPeer {
                        addr,
                        found: found.ok(),
                    }
                }
                (quinn::ConnectionError::ConnectionClosed(c), _)
                    if (0x100..0x200).contains(&u64::from(c.error_code)) =>
                {
                    DialFailure::Refused(e.to_string())
                }
                (quinn::ConnectionError::ApplicationClosed(c), _)
                    if c.error_code == codes::NOT_MEMBER.into() =>
                {
                    DialFailure::Refused(e.to_string())
                }
                _ => unreachable(e.to_string()),
            });
        }
    };
    let cert = peer_cert(&conn).ok_or_else(|| unreachable("no server certificate".into()))?;
    Ok((conn, cert))
}

/// Serves one connection: accepts the peer's streams until the connection
/// ends or is retired, then forgets it.
async fn serve(inner: Arc<Inner>, peer: Arc<Peer>, link: Link) {
    let conn = link.conn.clone();
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    let mut retired = false;
    loop {
        tokio::select! {
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    tokio::spawn(inbound::handle_bi(inner.clone(), peer.clone(), send, recv, drain_tx.clone()));
                }
                Err(_) => break,
            },
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    tokio::spawn(inbound::handle_uni(inner.clone(), peer.clone(), recv, drain_tx.clone()));
                }
                Err(_) => break,
            },
            _ = link.retire.notified(), if !retired => {
                retired = true;
                if !link.dialed_by_us {
                    // We accepted the losing duplicate: stop accepting, let
                    // what was accepted finish (bounded by the idle timeout),
                    // then close. Unaccepted streams fail with DUPLICATE and
                    // are retried by the peer on the winner.
                    drop(drain_tx);
                    let idle = Duration::from_millis(inner.options.limits.idle_timeout_ms);
                    let _ = tokio::time::timeout(idle, drain_rx.recv()).await;
                    conn.close(codes::DUPLICATE.into(), b"duplicate connection");
                    break;
                }
            }
        }
    }
    let reason = conn.closed().await;
    inner.metrics.connections_closed.fetch_add(1, Relaxed);
    debug!(peer = %peer.id.short(), %reason, "connection closed");
    let mut st = peer.lock();
    if st
        .current
        .as_ref()
        .is_some_and(|l| l.conn.stable_id() == conn.stable_id())
    {
        st.current = None;
    }
}
