//! Bulk transfers (VM images, snapshots) on their own QUIC stream.
//!
//! The sender writes chunks; QUIC flow control (the per-stream and
//! per-connection receive windows in [`crate::TransportOptions`]) makes
//! `write` wait while the receiver is behind, so neither side ever holds
//! more than a window of the transfer. Hashing is the caller's business and
//! happens chunk by chunk as data passes (the migration protocol hashes the
//! image on both ends).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use federact_config::NodeId;
use tokio::sync::mpsc;

use crate::codes;
use crate::error::{RemoteRefusal, TransportError};
use crate::metrics::PeerCounters;
use crate::transport::Peer;

/// Pieces taken from quinn per read.
const READ_BATCH: usize = 32;

/// Writes a transfer's data (see [`crate::Transport::open_transfer`]).
pub struct TransferSender {
    send: quinn::SendStream,
    peer: NodeId,
    actor: String,
    counters: Arc<PeerCounters>,
    sent: u64,
}

impl fmt::Debug for TransferSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferSender")
            .field("peer", &self.peer)
            .field("actor", &self.actor)
            .field("sent", &self.sent)
            .finish()
    }
}

impl TransferSender {
    pub(crate) fn new(
        send: quinn::SendStream,
        peer: NodeId,
        actor: String,
        counters: Arc<PeerCounters>,
    ) -> Self {
        TransferSender {
            send,
            peer,
            actor,
            counters,
            sent: 0,
        }
    }

    fn error(&self, e: quinn::WriteError) -> TransportError {
        match e {
            quinn::WriteError::Stopped(code) => TransportError::Refused {
                peer: self.peer,
                actor: self.actor.clone(),
                reason: RemoteRefusal::from_code(code.into_inner()),
            },
            other => TransportError::ConnectionLost {
                peer: self.peer,
                reason: other.to_string(),
            },
        }
    }

    /// Writes `data`, waiting while the receiver's window is full.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), TransportError> {
        if let Err(e) = self.send.write_all(data).await {
            return Err(self.error(e));
        }
        self.sent += data.len() as u64;
        self.counters
            .bytes_out
            .fetch_add(data.len() as u64, Relaxed);
        Ok(())
    }

    /// Writes `chunk` without copying it.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), TransportError> {
        let len = chunk.len() as u64;
        if let Err(e) = self.send.write_chunk(chunk).await {
            return Err(self.error(e));
        }
        self.sent += len;
        self.counters.bytes_out.fetch_add(len, Relaxed);
        Ok(())
    }

    /// Bytes written so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Ends the transfer and waits until the receiver has acknowledged every
    /// byte (received, not necessarily processed). Returns the byte count,
    /// or [`TransportError::Refused`] if the receiver rejected the transfer.
    pub async fn finish(mut self) -> Result<u64, TransportError> {
        let refused = |code: quinn::VarInt, s: &Self| TransportError::Refused {
            peer: s.peer,
            actor: s.actor.clone(),
            reason: RemoteRefusal::from_code(code.into_inner()),
        };
        if self.send.finish().is_err() {
            return Err(TransportError::ConnectionLost {
                peer: self.peer,
                reason: "stream already closed".into(),
            });
        }
        match self.send.stopped().await {
            Ok(None) => Ok(self.sent),
            Ok(Some(code)) => Err(refused(code, &self)),
            Err(e) => Err(TransportError::ConnectionLost {
                peer: self.peer,
                reason: e.to_string(),
            }),
        }
    }
}

/// Reads a transfer's data as it arrives (see [`crate::Incoming::Transfer`]).
pub struct TransferReceiver {
    recv: quinn::RecvStream,
    /// Received pieces not yet handed out: the data that arrived with the
    /// header frame, then up to [`READ_BATCH`] pieces per read (one lock of
    /// the connection per batch instead of per ~1.2 KB packet).
    queue: VecDeque<Bytes>,
    peer: Arc<Peer>,
    received: u64,
    _drain: mpsc::Sender<()>,
}

impl fmt::Debug for TransferReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferReceiver")
            .field("peer", &self.peer.id)
            .field("received", &self.received)
            .finish()
    }
}

impl TransferReceiver {
    pub(crate) fn new(
        recv: quinn::RecvStream,
        early: Bytes,
        peer: Arc<Peer>,
        drain: mpsc::Sender<()>,
    ) -> Self {
        TransferReceiver {
            recv,
            queue: if early.is_empty() {
                VecDeque::new()
            } else {
                VecDeque::from([early])
            },
            peer,
            received: 0,
            _drain: drain,
        }
    }

    /// The next chunk (at most `max` bytes), or `None` at the end of the
    /// transfer.
    pub async fn chunk(&mut self, max: usize) -> Result<Option<Bytes>, TransportError> {
        while self.queue.is_empty() {
            let mut bufs: [Bytes; READ_BATCH] = Default::default();
            match self.recv.read_chunks(&mut bufs).await {
                Ok(Some(n)) => self
                    .queue
                    .extend(bufs.into_iter().take(n).filter(|b| !b.is_empty())),
                Ok(None) => return Ok(None),
                Err(quinn::ReadError::Reset(code)) => {
                    return Err(TransportError::Refused {
                        peer: self.peer.id,
                        actor: String::new(),
                        reason: RemoteRefusal::from_code(code.into_inner()),
                    })
                }
                Err(e) => {
                    return Err(TransportError::ConnectionLost {
                        peer: self.peer.id,
                        reason: e.to_string(),
                    })
                }
            }
        }
        let Some(front) = self.queue.front_mut() else {
            return Ok(None);
        };
        let c = if front.len() <= max.max(1) {
            self.queue.pop_front().unwrap_or_default()
        } else {
            front.split_to(max.max(1))
        };
        let n = c.len() as u64;
        self.received += n;
        self.peer.counters.bytes_in.fetch_add(n, Relaxed);
        Ok(Some(c))
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The sender.
    pub fn peer(&self) -> NodeId {
        self.peer.id
    }

    /// Rejects the transfer: the sender's next write or `finish` fails with
    /// [`RemoteRefusal::TransferRejected`].
    pub fn reject(self) {
        self.refuse(codes::TRANSFER_REJECTED);
    }

    pub(crate) fn refuse(mut self, code: u32) {
        let _ = self.recv.stop(code.into());
    }
}
