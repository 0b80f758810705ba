//! Transport counters: plain atomics, read with [`Metrics::snapshot`].
//!
//! OpenTelemetry export is a later layer that reads snapshots; nothing here
//! allocates on the hot path except the first contact with a peer.
//! Latency goes into a log-bucket histogram (8 sub-buckets per power of two
//! of microseconds, so quantiles are within ~12%).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use federact_config::NodeId;

use crate::error::{FrameErrorKind, RefusalReason};

const SUB_BUCKETS: usize = 8;
const SUB_BITS: u32 = 3;
const BUCKETS: usize = 64 * SUB_BUCKETS;

/// A lock-free latency histogram over microseconds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB_BUCKETS as u64 {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros();
    let sub = (us >> (msb - SUB_BITS)) as usize & (SUB_BUCKETS - 1);
    ((msb - SUB_BITS + 1) as usize) * SUB_BUCKETS + sub
}

fn bucket_floor(b: usize) -> u64 {
    if b < SUB_BUCKETS {
        return b as u64;
    }
    let exp = (b / SUB_BUCKETS) as u32 - 1 + SUB_BITS;
    let sub = (b % SUB_BUCKETS) as u64;
    (1u64 << exp) | (sub << (exp - SUB_BITS))
}

impl Histogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(b) = self.buckets.get(bucket_of(us)) {
            b.fetch_add(1, Relaxed);
        }
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}

/// Counts of a [`Histogram`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    buckets: Vec<u64>,
}

impl HistogramSnapshot {
    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The lower bound of the bucket holding quantile `q` (0.0..=1.0), or
    /// zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(bucket_floor(i));
            }
        }
        Duration::MAX
    }
}

/// Per-peer byte and message counters.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Application bytes received from the peer (frames and transfer chunks).
    pub bytes_in: AtomicU64,
    /// Application bytes sent to the peer.
    pub bytes_out: AtomicU64,
    /// Requests in flight to the peer right now.
    pub in_flight: AtomicU64,
}

/// All transport counters of one node.
#[derive(Default)]
pub struct Metrics {
    /// Connections established (dialed or accepted, after authentication).
    pub connections_opened: AtomicU64,
    /// Connections that ended.
    pub connections_closed: AtomicU64,
    /// Duplicate connections closed by the tie-break.
    pub connections_duplicate: AtomicU64,
    /// Dial attempts that failed.
    pub dials_failed: AtomicU64,
    handshakes_refused: [AtomicU64; RefusalReason::ALL.len()],
    frames_refused: [AtomicU64; 5],
    /// Requests sent that got a response.
    pub requests_ok: AtomicU64,
    /// Requests sent that failed (any error).
    pub requests_failed: AtomicU64,
    /// Requests refused locally because the in-flight limit was reached.
    pub requests_backpressured: AtomicU64,
    /// Requests, one-ways and transfers delivered to a local inbox.
    pub inbound_delivered: AtomicU64,
    /// Inbound messages for an actor that is not registered.
    pub inbound_unknown_actor: AtomicU64,
    /// Inbound messages refused because an inbox was full (fail-fast mode).
    pub inbound_inbox_full: AtomicU64,
    /// Round-trip latency of successful requests.
    pub request_latency: Histogram,
    peers: Mutex<HashMap<NodeId, Arc<PeerCounters>>>,
}

impl Metrics {
    /// Counts a refused handshake.
    pub fn handshake_refused(&self, reason: RefusalReason) {
        if let Some(c) = self.handshakes_refused.get(reason as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Counts a refused frame.
    pub fn frame_refused(&self, reason: FrameErrorKind) {
        if let Some(c) = self.frames_refused.get(reason as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The counters of `peer` (members only: the map is bounded by the
    /// membership).
    pub fn peer(&self, peer: NodeId) -> Arc<PeerCounters> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.entry(peer).or_default().clone()
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        MetricsSnapshot {
            connections_opened: self.connections_opened.load(Relaxed),
            connections_closed: self.connections_closed.load(Relaxed),
            connections_duplicate: self.connections_duplicate.load(Relaxed),
            dials_failed: self.dials_failed.load(Relaxed),
            handshakes_refused: RefusalReason::ALL
                .iter()
                .map(|r| (*r, self.handshakes_refused[*r as usize].load(Relaxed)))
                .collect(),
            frames_refused: crate::error::FrameError::ALL
                .iter()
                .map(|r| (*r, self.frames_refused[*r as usize].load(Relaxed)))
                .collect(),
            requests_ok: self.requests_ok.load(Relaxed),
            requests_failed: self.requests_failed.load(Relaxed),
            requests_backpressured: self.requests_backpressured.load(Relaxed),
            inbound_delivered: self.inbound_delivered.load(Relaxed),
            inbound_unknown_actor: self.inbound_unknown_actor.load(Relaxed),
            inbound_inbox_full: self.inbound_inbox_full.load(Relaxed),
            request_latency: self.request_latency.snapshot(),
            peers: peers
                .iter()
                .map(|(id, c)| {
                    (
                        *id,
                        PeerSnapshot {
                            bytes_in: c.bytes_in.load(Relaxed),
                            bytes_out: c.bytes_out.load(Relaxed),
                            in_flight: c.in_flight.load(Relaxed),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Per-peer counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerSnapshot {
    /// Application bytes received.
    pub bytes_in: u64,
    /// Application bytes sent.
    pub bytes_out: u64,
    /// Requests in flight.
    pub in_flight: u64,
}

/// A copy of [`Metrics`].
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// See [`Metrics::connections_opened`].
    pub connections_opened: u64,
    /// See [`Metrics::connections_closed`].
    pub connections_closed: u64,
    /// See [`Metrics::connections_duplicate`].
    pub connections_duplicate: u64,
    /// See [`Metrics::dials_failed`].
    pub dials_failed: u64,
    /// Refused handshakes by reason.
    pub handshakes_refused: HashMap<RefusalReason, u64>,
    /// Refused frames by reason.
    pub frames_refused: HashMap<FrameErrorKind, u64>,
    /// See [`Metrics::requests_ok`].
    pub requests_ok: u64,
    /// See [`Metrics::requests_failed`].
    pub requests_failed: u64,
    /// See [`Metrics::requests_backpressured`].
    pub requests_backpressured: u64,
    /// See [`Metrics::inbound_delivered`].
    pub inbound_delivered: u64,
    /// See [`Metrics::inbound_unknown_actor`].
    pub inbound_unknown_actor: u64,
    /// See [`Metrics::inbound_inbox_full`].
    pub inbound_inbox_full: u64,
    /// Request round-trip latency.
    pub request_latency: HistogramSnapshot,
    /// Per-peer counters.
    pub peers: HashMap<NodeId, PeerSnapshot>,
}

impl MetricsSnapshot {
    /// Refused handshakes for one reason.
    pub fn refused(&self, reason: RefusalReason) -> u64 {
        self.handshakes_refused.get(&reason).copied().unwrap_or(0)
    }

    /// Refused frames for one reason.
    pub fn frames(&self, reason: FrameErrorKind) -> u64 {
        self.frames_refused.get(&reason).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_quantiles_close() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1000,
            65_535,
            1 << 40,
            u64::MAX,
        ] {
            let b = bucket_of(us);
            assert!(b >= last && b < BUCKETS, "{us}");
            assert!(bucket_floor(b) <= us, "{us}");
            last = b;
        }
        let h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 1000);
        let p50 = s.quantile(0.5).as_micros() as f64;
        let p99 = s.quantile(0.99).as_micros() as f64;
        assert!((440.0..=500.0).contains(&p50), "{p50}");
        assert!((870.0..=990.0).contains(&p99), "{p99}");
    }
}
