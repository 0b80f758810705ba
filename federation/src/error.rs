//! The crate's one error type, [`TransportError`], and the reason enums that
//! [`crate::metrics`] counts refusals by.
//!
//! Expected outcomes a caller reacts to (an unknown actor at the peer, a full
//! queue, a timeout) are variants with the peer and actor they concern;
//! environment failures (socket, TLS setup) carry their source.

use std::net::SocketAddr;

use federact_config::NodeId;

/// Why a frame was refused. Each reason is counted in
/// [`crate::metrics::Metrics`] and, when the frame came from a peer, closes
/// that one stream with [`FrameError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announced more than the configured maximum; the
    /// payload was not read.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: u64,
        /// Configured maximum (`TransportLimits::max_frame_bytes`).
        max: u32,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The payload is not a valid bincode envelope (or has trailing bytes,
    /// an unknown kind, or an over-long field).
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// The envelope's `from` differs from the peer's TLS identity.
    #[error("envelope claims another sender than the authenticated peer")]
    ForgedSender,
    /// A frame of a kind that is not allowed on this stream (e.g. a
    /// response on a new stream).
    #[error("unexpected frame kind on this stream")]
    UnexpectedKind,
}

impl FrameError {
    /// All reasons, in counter order.
    pub const ALL: [FrameErrorKind; 5] = [
        FrameErrorKind::TooLarge,
        FrameErrorKind::Truncated,
        FrameErrorKind::Malformed,
        FrameErrorKind::ForgedSender,
        FrameErrorKind::UnexpectedKind,
    ];

    /// The field-less kind of this error, for counters.
    pub fn kind(&self) -> FrameErrorKind {
        match self {
            FrameError::TooLarge { .. } => FrameErrorKind::TooLarge,
            FrameError::Truncated => FrameErrorKind::Truncated,
            FrameError::Malformed(_) => FrameErrorKind::Malformed,
            FrameError::ForgedSender => FrameErrorKind::ForgedSender,
            FrameError::UnexpectedKind => FrameErrorKind::UnexpectedKind,
        }
    }

    /// The QUIC application error code a stream is stopped/reset with.
    pub fn code(&self) -> u32 {
        match self {
            FrameError::TooLarge { .. } => crate::codes::FRAME_TOO_LARGE,
            FrameError::Truncated | FrameError::Malformed(_) | FrameError::UnexpectedKind => {
                crate::codes::FRAME_MALFORMED
            }
            FrameError::ForgedSender => crate::codes::FORGED_SENDER,
        }
    }
}

/// Field-less [`FrameError`] reasons (counter index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameErrorKind {
    /// See [`FrameError::TooLarge`].
    TooLarge = 0,
    /// See [`FrameError::Truncated`].
    Truncated = 1,
    /// See [`FrameError::Malformed`].
    Malformed = 2,
    /// See [`FrameError::ForgedSender`].
    ForgedSender = 3,
    /// See [`FrameError::UnexpectedKind`].
    UnexpectedKind = 4,
}

/// Why a TLS handshake (or the membership check right after it) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The peer's certificate key is not a member of the federation.
    UnknownKey = 0,
    /// The peer presented no client certificate.
    NoClientCertificate = 1,
    /// The peer did not offer ALPN `federact/1`.
    AlpnMismatch = 2,
    /// The certificate could not be parsed or is not an ed25519 key.
    BadCertificate = 3,
    /// We dialed one node and a different (member) key answered.
    WrongPeer = 4,
    /// Any other handshake failure (timeouts, protocol errors).
    Other = 5,
}

impl RefusalReason {
    /// All reasons, in counter order.
    pub const ALL: [RefusalReason; 6] = [
        RefusalReason::UnknownKey,
        RefusalReason::NoClientCertificate,
        RefusalReason::AlpnMismatch,
        RefusalReason::BadCertificate,
        RefusalReason::WrongPeer,
        RefusalReason::Other,
    ];
}

/// Why a peer stopped or reset a stream, decoded from its application code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteRefusal {
    /// Our frame was over the peer's maximum.
    FrameTooLarge,
    /// Our frame did not decode at the peer.
    FrameMalformed,
    /// Our envelope's `from` was not our identity.
    ForgedSender,
    /// No actor of that name is registered at the peer.
    UnknownActor,
    /// The actor's inbox was full and the peer fails fast.
    InboxFull,
    /// The actor dropped the request without answering.
    NoResponse,
    /// The receiver of a transfer rejected it.
    TransferRejected,
    /// The peer is shutting down.
    Shutdown,
    /// An unknown code.
    Other(u64),
}

impl RemoteRefusal {
    /// Decodes a QUIC application error code.
    pub fn from_code(code: u64) -> Self {
        use crate::codes::*;
        match u32::try_from(code).unwrap_or(u32::MAX) {
            FRAME_TOO_LARGE => RemoteRefusal::FrameTooLarge,
            FRAME_MALFORMED => RemoteRefusal::FrameMalformed,
            FORGED_SENDER => RemoteRefusal::ForgedSender,
            UNKNOWN_ACTOR => RemoteRefusal::UnknownActor,
            INBOX_FULL => RemoteRefusal::InboxFull,
            NO_RESPONSE => RemoteRefusal::NoResponse,
            TRANSFER_REJECTED => RemoteRefusal::TransferRejected,
            SHUTDOWN => RemoteRefusal::Shutdown,
            _ => RemoteRefusal::Other(code),
        }
    }
}

/// Everything that can go wrong in the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The node id is not in the membership.
    #[error("{peer:?} is not a member of the federation")]
    NotMember {
        /// The node asked for.
        peer: NodeId,
    },
    /// Dialing the peer failed (after retries with backoff).
    #[error("cannot connect to {peer:?} at {addr}: {reason}")]
    Unreachable {
        /// The node dialed.
        peer: NodeId,
        /// Its address from the membership.
        addr: SocketAddr,
        /// The last dial error.
        reason: String,
    },
    /// The node at the peer's address presented another key.
    #[error("{addr} answered with key {found:?}, not {peer:?}")]
    WrongPeer {
        /// The node we meant to reach.
        peer: NodeId,
        /// The address dialed.
        addr: SocketAddr,
        /// The key that answered (None if not even a valid ed25519 key).
        found: Option<NodeId>,
    },
    /// The peer refused our handshake (we are not a member there, or it
    /// does not speak `federact/1`). Per TLS 1.3 this shows only at the first
    /// read.
    #[error("{peer:?} refused our handshake: {reason}")]
    HandshakeRefused {
        /// The peer.
        peer: NodeId,
        /// The peer's close reason.
        reason: String,
    },
    /// The connection to the peer was lost while the operation was under way.
    #[error("connection to {peer:?} lost: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: NodeId,
        /// quinn's reason.
        reason: String,
    },
    /// The peer refused the stream (bad frame, unknown actor, full inbox...).
    #[error("{peer:?} refused the message to actor {actor:?}: {reason:?}")]
    Refused {
        /// The peer.
        peer: NodeId,
        /// The target actor.
        actor: String,
        /// The peer's reason.
        reason: RemoteRefusal,
    },
    /// The remote actor answered with an error.
    #[error("actor {actor:?} at {peer:?} failed: {message}")]
    Remote {
        /// The peer.
        peer: NodeId,
        /// The actor.
        actor: String,
        /// The actor's error message.
        message: String,
    },
    /// The peer sent us a frame we refuse.
    #[error("bad frame from {peer:?}: {source}")]
    Frame {
        /// The peer.
        peer: NodeId,
        /// What was wrong.
        #[source]
        source: FrameError,
    },
    /// Our own message is over the frame limit; nothing was sent.
    #[error("message to actor {actor:?} is {len} bytes, over the frame maximum of {max}")]
    TooLarge {
        /// The actor.
        actor: String,
        /// Encoded length.
        len: usize,
        /// Configured maximum.
        max: u32,
    },
    /// The per-peer in-flight limit is reached and the transport fails fast.
    #[error("{in_flight} requests already in flight to {peer:?}")]
    Backpressure {
        /// The peer.
        peer: NodeId,
        /// The limit that was reached.
        in_flight: u32,
    },
    /// The operation did not complete in time.
    #[error("timed out after {timeout_ms} ms talking to actor {actor:?} at {peer:?}")]
    Timeout {
        /// The peer.
        peer: NodeId,
        /// The actor.
        actor: String,
        /// The timeout.
        timeout_ms: u64,
        /// Whether the request had been handed to QUIC before the time ran
        /// out: the peer may then have processed it, and only its answer
        /// is missing (otherwise the time went on connecting or waiting
        /// for an in-flight slot, and the peer never saw it).
        sent: bool,
    },
    /// An actor of that name is already registered on this node.
    #[error("actor {actor:?} is already registered")]
    AlreadyRegistered {
        /// The actor.
        actor: String,
    },
    /// The actor name is empty or too long for an envelope.
    #[error("invalid actor name {actor:?}")]
    InvalidActor {
        /// The actor.
        actor: String,
    },
    /// The transport is shut down.
    #[error("transport is closed")]
    Closed,
    /// Certificate generation or TLS configuration failed.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Binding or configuring the UDP socket failed.
    #[error("socket {addr}: {source}")]
    Io {
        /// The address involved.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl TransportError {
    /// Whether a failed request may still have reached the peer's actor:
    /// it went out and only a usable answer is missing, so the peer may
    /// have acted on it. A lost connection, a peer shutting down and a
    /// refusal code we do not know count as reached (they may come after
    /// the request went out); so does any error an actor could only see
    /// after reading the request. Errors raised before anything was sent
    /// (dialing, membership, local limits) do not.
    pub fn may_have_reached(&self) -> bool {
        match self {
            TransportError::Timeout { sent, .. } => *sent,
            TransportError::Refused { reason, .. } => match reason {
                RemoteRefusal::NoResponse | RemoteRefusal::Shutdown | RemoteRefusal::Other(_) => {
                    true
                }
                RemoteRefusal::FrameTooLarge
                | RemoteRefusal::FrameMalformed
                | RemoteRefusal::ForgedSender
                | RemoteRefusal::UnknownActor
                | RemoteRefusal::InboxFull
                | RemoteRefusal::TransferRejected => false,
            },
            TransportError::ConnectionLost { .. }
            | TransportError::Remote { .. }
            | TransportError::Frame { .. } => true,
            TransportError::NotMember { .. }
            | TransportError::Unreachable { .. }
            | TransportError::WrongPeer { .. }
            | TransportError::HandshakeRefused { .. }
            | TransportError::TooLarge { .. }
            | TransportError::Backpressure { .. }
            | TransportError::AlreadyRegistered { .. }
            | TransportError::InvalidActor { .. }
            | TransportError::Closed
            | TransportError::Tls(_)
            | TransportError::Io { .. } => false,
        }
    }
}
