//! A user-space network emulator: a UDP relay that sits in front of a node's
//! QUIC port and impairs the datagrams it forwards.
//!
//! Fault tests need delay, jitter, loss, duplication and partitions between
//! real node processes, and kernel `netem`/`tc` needs root and a dedicated
//! interface. A [`Relay`] needs neither: it binds a front address (the one
//! peers dial, the node's `listen` in the federation file), and forwards
//! each client's datagrams to the node's real address through a private
//! upstream socket per client address, like a UDP NAT; replies travel back
//! the same way. A node behind a relay binds another address (the node
//! file's `bind`, see `federact_config::NodeConfig::bind_addr`).
//!
//! The decision of what to do with a datagram is pure and seeded
//! ([`Impairment`]): the same seed and the same sequence of datagrams give
//! the same drops, copies and delays, so a failing run reproduces from its
//! seed. The relay task only does the I/O. Settings change at run time
//! through a cloneable [`RelayHandle`].
//!
//! Partitions: a connection between two nodes runs over one relay only (the
//! one in front of the node that was dialled), so isolating a node takes two
//! steps: [`RelayHandle::partition`] on its own relay cuts the connections it
//! accepted, and [`RelayHandle::block`] of its bind address on the other
//! nodes' relays cuts the ones it dialled.
//!
//! Limits: at most [`RelayOptions::sessions_max`] client sessions (the one
//! idle longest is evicted to make room) and at most
//! [`RelayOptions::in_flight_max`] delayed datagrams; excess is dropped and
//! counted in [`RelayStats`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest UDP payload the relay forwards (the largest IPv4 datagram).
const DATAGRAM_MAX: usize = 65_535;
/// Most bytes of delayed datagrams held at once.
const IN_FLIGHT_BYTES_MAX: usize = 64 << 20;

/// Which way a datagram travels through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client (the dialling peer) to the node behind the relay.
    ToNode,
    /// From the node behind the relay back to a client.
    FromNode,
}

/// The impairments applied to forwarded datagrams. The default forwards
/// everything at once.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Added one-way delay, each direction.
    pub delay: Duration,
    /// Each datagram's delay is `delay` plus a uniform amount in
    /// `[-jitter, +jitter]` (never below zero); jitter reorders datagrams.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a datagram is dropped (values outside are
    /// clamped; NaN counts as 0).
    pub loss: f64,
    /// Probability in `[0, 1]` that a forwarded datagram is sent twice (the
    /// copy gets its own delay).
    pub duplicate: f64,
    /// Drop everything travelling towards the node.
    pub partition_to_node: bool,
    /// Drop everything travelling from the node.
    pub partition_from_node: bool,
}

/// What to do with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Drop it.
    Drop(DropReason),
    /// Send one copy per entry, each after the given delay.
    Forward(Vec<Duration>),
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The direction is partitioned.
    Partition,
    /// The client address is blocked.
    Blocked,
    /// Random loss.
    Loss,
}

/// The pure, seeded decision core of the relay: settings plus an RNG.
#[derive(Debug)]
pub struct Impairment {
    faults: Faults,
    blocked: HashSet<SocketAddr>,
    rng: StdRng,
}

fn probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

impl Impairment {
    /// An impairment that forwards everything, with the given RNG seed.
    pub fn new(seed: u64) -> Impairment {
        Impairment {
            faults: Faults::default(),
            blocked: HashSet::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The current settings.
    pub fn faults(&self) -> Faults {
        self.faults
    }

    /// Replaces the settings.
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = Faults {
            loss: probability(faults.loss),
            duplicate: probability(faults.duplicate),
            ..faults
        };
    }

    /// Drops every datagram from or to `client` until [`Impairment::unblock`].
    pub fn block(&mut self, client: SocketAddr) {
        self.blocked.insert(client);
    }

    /// Lifts a [`Impairment::block`].
    pub fn unblock(&mut self, client: SocketAddr) {
        self.blocked.remove(&client);
    }

    /// Decides the fate of one datagram between `client` and the node.
    pub fn handle_datagram(&mut self, direction: Direction, client: SocketAddr) -> Verdict {
        let f = self.faults;
        let partitioned = match direction {
            Direction::ToNode => f.partition_to_node,
            Direction::FromNode => f.partition_from_node,
        };
        if partitioned {
            return Verdict::Drop(DropReason::Partition);
        }
        if self.blocked.contains(&client) {
            return Verdict::Drop(DropReason::Blocked);
        }
        if f.loss > 0.0 && self.rng.random::<f64>() < f.loss {
            return Verdict::Drop(DropReason::Loss);
        }
        let copies = if f.duplicate > 0.0 && self.rng.random::<f64>() < f.duplicate {
            2
        } else {
            1
        };
        let delays = (0..copies).map(|_| self.delay()).collect();
        Verdict::Forward(delays)
    }

    fn delay(&mut self) -> Duration {
        let f = self.faults;
        if f.jitter.is_zero() {
            return f.delay;
        }
        let jitter = f.jitter.as_secs_f64();
        let offset = self.rng.random_range(-jitter..=jitter);
        Duration::from_secs_f64((f.delay.as_secs_f64() + offset).max(0.0))
    }
}

/// Bounds on the relay's state.
#[derive(Debug, Clone, Copy)]
pub struct RelayOptions {
    /// Seed of the impairment RNG.
    pub seed: u64,
    /// Most client sessions (upstream sockets) kept at once.
    pub sessions_max: usize,
    /// Most delayed datagrams waiting to be sent at once.
    pub in_flight_max: usize,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            seed: 0,
            sessions_max: 256,
            in_flight_max: 16_384,
        }
    }
}

/// Counters of a relay, per direction where it matters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams received from clients.
    pub received_to_node: u64,
    /// Datagrams received from the node.
    pub received_from_node: u64,
    /// Datagrams sent to the node (copies included).
    pub sent_to_node: u64,
    /// Datagrams sent to clients (copies included).
    pub sent_from_node: u64,
    /// Dropped because a direction was partitioned.
    pub dropped_partition: u64,
    /// Dropped because the client was blocked.
    pub dropped_blocked: u64,
    /// Dropped by random loss.
    pub dropped_loss: u64,
    /// Dropped because too many datagrams were already delayed.
    pub dropped_overload: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Client sessions opened.
    pub sessions_opened: u64,
    /// Client sessions evicted to stay under the limit.
    pub sessions_evicted: u64,
}

#[derive(Default)]
struct Counters {
    received_to_node: AtomicU64,
    received_from_node: AtomicU64,
    sent_to_node: AtomicU64,
    sent_from_node: AtomicU64,
    dropped_partition: AtomicU64,
    dropped_blocked: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_overload: AtomicU64,
    duplicated: AtomicU64,
    sessions_opened: AtomicU64,
    sessions_evicted: AtomicU64,
}

struct Shared {
    impairment: Mutex<Impairment>,
    counters: Counters,
    in_flight: AtomicUsize,
    /// Bytes held by the delayed datagrams of `in_flight`.
    in_flight_bytes: AtomicUsize,
    options: RelayOptions,
}

impl Shared {
    // A poisoned lock only means a relay task panicked mid-decision; the
    // settings are still consistent (each update is one assignment).
    fn impairment(&self) -> MutexGuard<'_, Impairment> {
        self.impairment.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Changes a running relay's impairments and reads its counters. Cheap to
/// clone; all clones control the same relay.
#[derive(Clone)]
pub struct RelayHandle {
    shared: Arc<Shared>,
}

impl RelayHandle {
    /// The current settings.
    pub fn faults(&self) -> Faults {
        self.shared.impairment().faults()
    }

    /// Replaces all settings at once.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.impairment().set_faults(faults);
    }

    fn update(&self, f: impl FnOnce(&mut Faults)) {
        let mut imp = self.shared.impairment();
        let mut faults = imp.faults();
        f(&mut faults);
        imp.set_faults(faults);
    }

    /// Sets the one-way delay and its jitter.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        self.update(|f| {
            f.delay = delay;
            f.jitter = jitter;
        });
    }

    /// Sets the loss probability.
    pub fn set_loss(&self, loss: f64) {
        self.update(|f| f.loss = loss);
    }

    /// Sets the duplication probability.
    pub fn set_duplicate(&self, duplicate: f64) {
        self.update(|f| f.duplicate = duplicate);
    }

    /// Cuts both directions.
    pub fn partition(&self) {
        self.partition_direction(Direction::ToNode, true);
        self.partition_direction(Direction::FromNode, true);
    }

    /// Cuts (`true`) or restores one direction.
    pub fn partition_direction(&self, direction: Direction, cut: bool) {
        self.update(|f| match direction {
            Direction::ToNode => f.partition_to_node = cut,
            Direction::FromNode => f.partition_from_node = cut,
        });
    }

    /// Restores both directions (other impairments stay).
    pub fn heal(&self) {
        self.partition_direction(Direction::ToNode, false);
        self.partition_direction(Direction::FromNode, false);
    }

    /// Drops everything from or to the client at `addr` (a dialling node's
    /// bind address).
    pub fn block(&self, addr: SocketAddr) {
        self.shared.impairment().block(addr);
    }

    /// Lifts [`RelayHandle::block`].
    pub fn unblock(&self, addr: SocketAddr) {
        self.shared.impairment().unblock(addr);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RelayStats {
        let c = &self.shared.counters;
        RelayStats {
            received_to_node: c.received_to_node.load(Relaxed),
            received_from_node: c.received_from_node.load(Relaxed),
            sent_to_node: c.sent_to_node.load(Relaxed),
            sent_from_node: c.sent_from_node.load(Relaxed),
            dropped_partition: c.dropped_partition.load(Relaxed),
            dropped_blocked: c.dropped_blocked.load(Relaxed),
            dropped_loss: c.dropped_loss.load(Relaxed),
            dropped_overload: c.dropped_overload.load(Relaxed),
            duplicated: c.duplicated.load(Relaxed),
            sessions_opened: c.sessions_opened.load(Relaxed),
            sessions_evicted: c.sessions_evicted.load(Relaxed),
        }
    }
}

/// A running relay. Dropping it stops forwarding (its tasks are aborted).
pub struct Relay {
    front: SocketAddr,
    upstream: SocketAddr,
    handle: RelayHandle,
    task: JoinHandle<()>,
}

impl Relay {
    /// Binds `front` (port 0 picks one) and forwards to `upstream`.
    pub async fn start(
        front: SocketAddr,
        upstream: SocketAddr,
        options: RelayOptions,
    ) -> io::Result<Relay> {
        let socket = Arc::new(UdpSocket::bind(front).await?);
        let front = socket.local_addr()?;
        let shared = Arc::new(Shared {
            impairment: Mutex::new(Impairment::new(options.seed)),
            counters: Counters::default(),
            in_flight: AtomicUsize::new(0),
            in_flight_bytes: AtomicUsize::new(0),
            options,
        });
        let task = tokio::spawn(run_front(socket, upstream, shared.clone()));
        Ok(Relay {
            front,
            upstream,
            handle: RelayHandle { shared },
            task,
        })
    }

    /// The address clients dial.
    pub fn front_addr(&self) -> SocketAddr {
        self.front
    }

    /// The address datagrams are forwarded to.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
    }

    /// A control handle.
    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Session {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    last_used: Instant,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Accepts client datagrams on the front socket and forwards them upstream
/// through the client's session.
async fn run_front(front: Arc<UdpSocket>, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; DATAGRAM_MAX];
    let unspecified: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let local_ip = if upstream.ip().is_loopback() {
        SocketAddr::new(upstream.ip(), 0)
    } else {
        unspecified
    };
    loop {
        let (n, client) = match front.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors (a client went away) surface here on some
            // platforms; they concern one datagram, not the socket.
            Err(_) => continue,
        };
        shared.counters.received_to_node.fetch_add(1, Relaxed);
        let now = Instant::now();
        if !sessions.contains_key(&client) {
            if sessions.len() >= shared.options.sessions_max {
                let oldest = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(a, _)| *a);
                if let Some(a) = oldest {
                    sessions.remove(&a);
                    shared.counters.sessions_evicted.fetch_add(1, Relaxed);
                }
            }
            let socket = match UdpSocket::bind(local_ip).await {
                Ok(s) => Arc::new(s),
                Err(_) => continue,
            };
            if socket.connect(upstream).await.is_err() {
                continue;
            }
            let reader = tokio::spawn(run_session(
                socket.clone(),
                front.clone(),
                client,
                shared.clone(),
            ));
            shared.counters.sessions_opened.fetch_add(1, Relaxed);
            sessions.insert(
                client,
                Session {
                    socket,
                    reader,
                    last_used: now,
                },
            );
        }
        let Some(session) = sessions.get_mut(&client) else {
            continue;
        };
        session.last_used = now;
        let verdict = shared
            .impairment()
            .handle_datagram(Direction::ToNode, client);
        let to = session.socket.clone();
        forward(
            verdict,
            &buf[..n],
            &shared,
            Direction::ToNode,
            move |data| {
                let to = to.clone();
                async move { to.send(&data).await.map(|_| ()) }
            },
        )
        .await;
    }
}

/// Reads the node's replies on one client's upstream socket and sends them
/// back to the client through the front socket.
async fn run_session(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        let n = match upstream.recv(&mut buf).await {
            Ok(n) => n,
            Err(_) => continue,
        };
        shared.counters.received_from_node.fetch_add(1, Relaxed);
        let verdict = shared
            .impairment()
            .handle_datagram(Direction::FromNode, client);
        let front = front.clone();
        forward(
            verdict,
            &buf[..n],
            &shared,
            Direction::FromNode,
            move |data| {
                let front = front.clone();
                async move { front.send_to(&data, client).await.map(|_| ()) }
            },
        )
        .await;
    }
}

/// Carries out a verdict: counts drops, sends undelayed copies at once and
/// hands delayed ones to a timer task (bounded by `in_flight_max` and
/// [`IN_FLIGHT_BYTES_MAX`]).
async fn forward<F, Fut>(
    verdict: Verdict,
    data: &[u8],
    shared: &Arc<Shared>,
    direction: Direction,
    send: F,
) where
    F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = io::Result<()>> + Send,
{
    let c = &shared.counters;
    let delays = match verdict {
        Verdict::Drop(DropReason::Partition) => {
            c.dropped_partition.fetch_add(1, Relaxed);
            return;
        }
        Verdict::Drop(DropReason::Blocked) => {
            c.dropped_blocked.fetch_add(1, Relaxed);
            return;
        }
        Verdict::Drop(DropReason::Loss) => {
            c.dropped_loss.fetch_add(1, Relaxed);
            return;
        }
        Verdict::Forward(delays) => delays,
    };
    c.duplicated
        .fetch_add(delays.len().saturating_sub(1) as u64, Relaxed);
    let sent = match direction {
        Direction::ToNode => &c.sent_to_node,
        Direction::FromNode => &c.sent_from_node,
    };
    let send = Arc::new(send);
    for delay in delays {
        if delay.is_zero() {
            if send(data.to_vec()).await.is_ok() {
                sent.fetch_add(1, Relaxed);
            }
            continue;
        }
        // Bounded by count and by bytes: a peer sending 64 KiB datagrams
        // must not make the relay hold `in_flight_max` of them.
        let bytes = data.len();
        let count_full = shared.in_flight.fetch_add(1, Relaxed) >= shared.options.in_flight_max;
        let bytes_full =
            shared.in_flight_bytes.fetch_add(bytes, Relaxed) + bytes > IN_FLIGHT_BYTES_MAX;
        if count_full || bytes_full {
            shared.in_flight.fetch_sub(1, Relaxed);
            shared.in_flight_bytes.fetch_sub(bytes, Relaxed);
            c.dropped_overload.fetch_add(1, Relaxed);
            continue;
        }
        let shared = shared.clone();
        let send = send.clone();
        let data = data.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let ok = send(data).await.is_ok();
            let c = &shared.counters;
            if ok {
                match direction {
                    Direction::ToNode => c.sent_to_node.fetch_add(1, Relaxed),
                    Direction::FromNode => c.sent_from_node.fetch_add(1, Relaxed),
                };
            }
            shared.in_flight.fetch_sub(1, Relaxed);
            shared.in_flight_bytes.fetch_sub(bytes, Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        "127.0.0.1:4000".parse().unwrap()
    }

    #[test]
    fn default_impairment_forwards_each_datagram_once_without_delay() {
        let mut imp = Impairment::new(1);
        for dir in [Direction::ToNode, Direction::FromNode] {
            assert_eq!(
                imp.handle_datagram(dir, client()),
                Verdict::Forward(vec![Duration::ZERO])
            );
        }
    }

    #[test]
    fn impairment_table() {
        struct Case {
            desc: &'static str,
            faults: Faults,
            direction: Direction,
            expected: Verdict,
        }
        let cases = [
            Case {
                desc: "partition towards the node drops inbound",
                faults: Faults {
                    partition_to_node: true,
                    ..Faults::default()
                },
                direction: Direction::ToNode,
                expected: Verdict::Drop(DropReason::Partition),
            },
            Case {
                desc: "partition towards the node lets replies out",
                faults: Faults {
                    partition_to_node: true,
                    ..Faults::default()
                },
                direction: Direction::FromNode,
                expected: Verdict::Forward(vec![Duration::ZERO]),
            },
            Case {
                desc: "certain loss drops",
                faults: Faults {
                    loss: 1.0,
                    ..Faults::default()
                },
                direction: Direction::ToNode,
                expected: Verdict::Drop(DropReason::Loss),
            },
            Case {
                desc: "loss above one is clamped to certain loss",
                faults: Faults {
                    loss: 7.0,
                    ..Faults::default()
                },
                direction: Direction::FromNode,
                expected: Verdict::Drop(DropReason::Loss),
            },
            Case {
                desc: "NaN loss counts as none",
                faults: Faults {
                    loss: f64::NAN,
                    ..Faults::default()
                },
                direction: Direction::ToNode,
                expected: Verdict::Forward(vec![Duration::ZERO]),
            },
            Case {
                desc: "certain duplication sends two delayed copies",
                faults: Faults {
                    duplicate: 1.0,
                    delay: Duration::from_millis(5),
                    ..Faults::default()
                },
                direction: Direction::ToNode,
                expected: Verdict::Forward(vec![Duration::from_millis(5); 2]),
            },
        ];
        for case in cases {
            let mut imp = Impairment::new(7);
            imp.set_faults(case.faults);
            assert_eq!(
                imp.handle_datagram(case.direction, client()),
                case.expected,
                "{}",
                case.desc
            );
        }
    }

    #[test]
    fn blocked_client_is_dropped_both_ways_and_others_pass() {
        let mut imp = Impairment::new(3);
        imp.block(client());
        let other: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        assert_eq!(
            imp.handle_datagram(Direction::ToNode, client()),
            Verdict::Drop(DropReason::Blocked)
        );
        assert_eq!(
            imp.handle_datagram(Direction::FromNode, client()),
            Verdict::Drop(DropReason::Blocked)
        );
        assert!(matches!(
            imp.handle_datagram(Direction::ToNode, other),
            Verdict::Forward(_)
        ));
        imp.unblock(client());
        assert!(matches!(
            imp.handle_datagram(Direction::ToNode, client()),
            Verdict::Forward(_)
        ));
    }

    #[test]
    fn same_seed_gives_same_verdicts_and_jitter_stays_in_range() {
        let faults = Faults {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            loss: 0.3,
            duplicate: 0.2,
            ..Faults::default()
        };
        let run = |seed| {
            let mut imp = Impairment::new(seed);
            imp.set_faults(faults);
            (0..500)
                .map(|_| imp.handle_datagram(Direction::ToNode, client()))
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        let drops = a.iter().filter(|v| matches!(v, Verdict::Drop(_))).count();
        assert!((100..200).contains(&drops), "loss 0.3 of 500 gave {drops}");
        for v in &a {
            if let Verdict::Forward(delays) = v {
                for d in delays {
                    assert!(
                        (Duration::from_millis(10)..=Duration::from_millis(30)).contains(d),
                        "{d:?}"
                    );
                }
            }
        }
    }

    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        (addr, task)
    }

    /// A relay with default options in front of a fresh echo server.
    async fn relay_to_echo() -> (Relay, JoinHandle<()>) {
        let (server, task) = echo_server().await;
        let relay = Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            server,
            RelayOptions::default(),
        )
        .await
        .unwrap();
        (relay, task)
    }

    async fn client_socket(relay: &Relay) -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.connect(relay.front_addr()).await.unwrap();
        s
    }

    async fn recv_within(s: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(wait, s.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// Sends `msg` until an echo comes back, within a bounded deadline.
    async fn roundtrip(s: &UdpSocket, msg: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            s.send(msg).await.unwrap();
            if let Some(r) = recv_within(s, Duration::from_millis(200)).await {
                return r;
            }
        }
        panic!("no echo through the relay within 5 s");
    }

    #[tokio::test]
    async fn relay_forwards_both_ways_with_a_session_per_client() {
        let (relay, _t) = relay_to_echo().await;
        let a = client_socket(&relay).await;
        let b = client_socket(&relay).await;
        assert_eq!(roundtrip(&a, b"from a").await, b"from a");
        assert_eq!(roundtrip(&b, b"from b").await, b"from b");
        let stats = relay.handle().stats();
        assert_eq!(stats.sessions_opened, 2);
        assert!(stats.sent_to_node >= 2 && stats.sent_from_node >= 2);
    }

    #[tokio::test]
    async fn relay_partition_drops_and_heal_restores() {
        let (relay, _t) = relay_to_echo().await;
        let h = relay.handle();
        let a = client_socket(&relay).await;
        assert_eq!(roundtrip(&a, b"before").await, b"before");
        h.partition();
        a.send(b"cut").await.unwrap();
        assert_eq!(recv_within(&a, Duration::from_millis(300)).await, None);
        assert!(h.stats().dropped_partition >= 1);
        // One-way cut: requests reach the node, replies do not.
        h.heal();
        h.partition_direction(Direction::FromNode, true);
        let before = h.stats().sent_to_node;
        a.send(b"one way").await.unwrap();
        assert_eq!(recv_within(&a, Duration::from_millis(300)).await, None);
        assert!(h.stats().sent_to_node > before);
        h.heal();
        assert_eq!(roundtrip(&a, b"after").await, b"after");
    }

    #[tokio::test]
    async fn relay_blocks_one_client_and_serves_the_other() {
        let (relay, _t) = relay_to_echo().await;
        let h = relay.handle();
        let a = client_socket(&relay).await;
        let b = client_socket(&relay).await;
        h.block(a.local_addr().unwrap());
        a.send(b"blocked").await.unwrap();
        assert_eq!(recv_within(&a, Duration::from_millis(300)).await, None);
        assert_eq!(roundtrip(&b, b"free").await, b"free");
        h.unblock(a.local_addr().unwrap());
        assert_eq!(roundtrip(&a, b"unblocked").await, b"unblocked");
    }

    #[tokio::test]
    async fn relay_delays_and_duplicates_datagrams() {
        let (relay, _t) = relay_to_echo().await;
        let h = relay.handle();
        let a = client_socket(&relay).await;
        assert_eq!(roundtrip(&a, b"warm").await, b"warm");
        h.set_delay(Duration::from_millis(100), Duration::ZERO);
        let start = Instant::now();
        a.send(b"slow").await.unwrap();
        let got = recv_within(&a, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"slow"[..]));
        // 100 ms each way.
        assert!(start.elapsed() >= Duration::from_millis(200));
        h.set_delay(Duration::ZERO, Duration::ZERO);
        h.set_duplicate(1.0);
        a.send(b"twice").await.unwrap();
        // Duplicated on the way in (the echo server answers twice) and each
        // answer duplicated on the way out: four copies.
        let mut copies = 0;
        while let Some(got) = recv_within(&a, Duration::from_millis(500)).await {
            assert_eq!(got, b"twice");
            copies += 1;
        }
        assert_eq!(copies, 4);
        assert!(h.stats().duplicated >= 3);
    }

    #[tokio::test]
    async fn relay_loss_drops_about_the_configured_fraction() {
        let (server, _t) = echo_server().await;
        let relay = Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            server,
            RelayOptions {
                seed: 9,
                ..RelayOptions::default()
            },
        )
        .await
        .unwrap();
        let h = relay.handle();
        let a = client_socket(&relay).await;
        assert_eq!(roundtrip(&a, b"warm").await, b"warm");
        h.set_faults(Faults {
            loss: 0.5,
            partition_from_node: true,
            ..Faults::default()
        });
        let before = h.stats();
        // Batches small enough for the kernel's socket buffer; bounded poll
        // until each batch has been decided.
        for batch in 1..=8u64 {
            for _ in 0..50 {
                a.send(b"x").await.unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while h.stats().received_to_node - before.received_to_node < batch * 50
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let s = h.stats();
        assert_eq!(s.received_to_node - before.received_to_node, 400);
        let lost = s.dropped_loss - before.dropped_loss;
        assert!((140..260).contains(&lost), "loss 0.5 of 400 dropped {lost}");
        assert_eq!(s.sent_to_node - before.sent_to_node + lost, 400);
    }

    #[tokio::test]
    async fn relay_evicts_the_idlest_session_at_the_limit() {
        let (server, _t) = echo_server().await;
        let relay = Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            server,
            RelayOptions {
                sessions_max: 2,
                ..RelayOptions::default()
            },
        )
        .await
        .unwrap();
        let mut clients = Vec::new();
        for i in 0..4u8 {
            let c = client_socket(&relay).await;
            assert_eq!(roundtrip(&c, &[i]).await, vec![i]);
            clients.push(c);
        }
        let s = relay.handle().stats();
        assert_eq!(s.sessions_opened, 4);
        assert_eq!(s.sessions_evicted, 2);
        // An evicted client gets a new session on its next datagram.
        assert_eq!(roundtrip(&clients[0], b"back").await, b"back");
    }
}
