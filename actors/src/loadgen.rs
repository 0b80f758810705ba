//! Load generation shared by the cargo benches (`actors/benches`) and
//! `federact bench`: an open-loop driver that starts operations at a fixed
//! rate (Caliper's fixed-rate controller) and a closed-loop driver that
//! keeps a fixed number of callers busy, both recording each operation's
//! latency.
//!
//! These are drivers, not protocol cores: they read the clock and spawn
//! tasks. Open loop is the default for ledger and migration load because a
//! closed loop slows down with the system under test and hides queueing
//! (coordinated omission); the closed loop measures the best-case latency
//! of calls one caller makes back to back.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use federact_ledger::hash::Hash;
use federact_ledger::record::Record;

use crate::client::LedgerClient;

/// Operation latencies in microseconds, sorted.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    sorted_us: Vec<u64>,
}

impl Latencies {
    /// Sorts `us` (microseconds).
    pub fn from_micros(mut us: Vec<u64>) -> Latencies {
        us.sort_unstable();
        Latencies { sorted_us: us }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.sorted_us.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.sorted_us.is_empty()
    }

    /// The `q` quantile (0.0..=1.0, nearest rank) in milliseconds; 0 without samples.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.sorted_us.is_empty() {
            return 0.0;
        }
        let q = q.clamp(0.0, 1.0);
        let i = ((self.sorted_us.len() - 1) as f64 * q).round() as usize;
        self.sorted_us[i.min(self.sorted_us.len() - 1)] as f64 / 1000.0
    }

    /// Mean in milliseconds; 0 without samples.
    pub fn mean_ms(&self) -> f64 {
        if self.sorted_us.is_empty() {
            return 0.0;
        }
        let sum: u128 = self.sorted_us.iter().map(|&x| x as u128).sum();
        sum as f64 / self.sorted_us.len() as f64 / 1000.0
    }

    /// Largest sample in milliseconds; 0 without samples.
    pub fn max_ms(&self) -> f64 {
        self.sorted_us.last().map_or(0.0, |&x| x as f64 / 1000.0)
    }
}

/// What one open-loop step measured.
#[derive(Debug, Clone, Default)]
pub struct RateStep {
    /// The rate operations were started at, per second.
    pub offered_per_s: u64,
    /// Operations started.
    pub started: u64,
    /// Operations that succeeded.
    pub completed: u64,
    /// Operations that failed (refused, timed out).
    pub failed: u64,
    /// Operations not started because `in_flight_max` were outstanding
    /// (the system was saturated; offered load is shed rather than queued
    /// without bound).
    pub shed: u64,
    /// Operations still running when the drain limit passed (abandoned:
    /// their tasks were aborted, so their outcome is unknown).
    pub unfinished: u64,
    /// Seconds from the first start to the last completion.
    pub elapsed_s: f64,
    /// Latency of each successful operation.
    pub latencies: Latencies,
    /// Each successful operation's start offset and latency, in ms, in
    /// start order (to see whether latency grows over the step).
    pub timeline_ms: Vec<(f64, f64)>,
    /// The first failure's message.
    pub first_error: Option<String>,
}

impl RateStep {
    /// Successful operations per second over the step.
    pub fn completed_per_s(&self) -> f64 {
        if self.elapsed_s <= 0.0 {
            return 0.0;
        }
        self.completed as f64 / self.elapsed_s
    }
}

#[derive(Default)]
struct Shared {
    latencies_us: Vec<u64>,
    timeline_ms: Vec<(f64, f64)>,
    failed: u64,
    first_error: Option<String>,
}

/// Starts `op(n)` at `rate` per second for `duration` (`n` counts up from
/// `seq`), at most `in_flight_max` outstanding, and waits for all started
/// operations to finish. `progress` is called with the number started so
/// far, about every 100 ms. Operations run as tokio tasks on the current
/// runtime.
pub async fn open_loop<F, Fut, P>(
    rate: u64,
    duration: Duration,
    in_flight_max: u64,
    seq: &AtomicU64,
    op: F,
    progress: P,
) -> RateStep
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
    P: Fn(u64),
{
    open_loop_drain(rate, duration, in_flight_max, None, seq, op, progress).await
}

/// [`open_loop`] that waits at most `drain_max` after the last start;
/// operations still running then are abandoned and counted in
/// [`RateStep::unfinished`] (so an overloaded step ends in bounded time).
pub async fn open_loop_drain<F, Fut, P>(
    rate: u64,
    duration: Duration,
    in_flight_max: u64,
    drain_max: Option<Duration>,
    seq: &AtomicU64,
    op: F,
    progress: P,
) -> RateStep
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
    P: Fn(u64),
{
    let shared = Arc::new(Mutex::new(Shared::default()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let tick = Duration::from_millis(2);
    let per_tick = rate as f64 * tick.as_secs_f64();
    let mut owed = 0.0f64;
    let (mut started, mut shed) = (0u64, 0u64);
    let mut handles = Vec::with_capacity(total.min(1 << 20) as usize);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut last_progress = start;
    while started + shed < total {
        interval.tick().await;
        owed += per_tick;
        while owed >= 1.0 && started + shed < total {
            owed -= 1.0;
            if in_flight.load(Ordering::Relaxed) >= in_flight_max {
                shed += 1;
                continue;
            }
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let fut = op(n);
            let (shared, in_flight) = (shared.clone(), in_flight.clone());
            in_flight.fetch_add(1, Ordering::Relaxed);
            handles.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = fut.await;
                let lat = t.elapsed();
                in_flight.fetch_sub(1, Ordering::Relaxed);
                if let Ok(mut s) = shared.lock() {
                    match r {
                        Ok(()) => {
                            s.latencies_us.push(lat.as_micros() as u64);
                            s.timeline_ms.push((
                                t.duration_since(start).as_secs_f64() * 1000.0,
                                lat.as_secs_f64() * 1000.0,
                            ));
                        }
                        Err(e) => {
                            s.failed += 1;
                            s.first_error.get_or_insert(e);
                        }
                    }
                }
            }));
            started += 1;
        }
        if last_progress.elapsed() >= Duration::from_millis(100) {
            progress(started);
            last_progress = Instant::now();
        }
    }
    progress(started);
    let deadline = drain_max.map(|d| tokio::time::Instant::now() + d);
    let mut unfinished = 0u64;
    for mut h in handles {
        match deadline {
            None => {
                let _ = h.await;
            }
            Some(at) => {
                if tokio::time::timeout_at(at, &mut h).await.is_err() {
                    h.abort();
                    unfinished += 1;
                }
            }
        }
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let s = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
    let mut timeline_ms = s.timeline_ms;
    timeline_ms.sort_by(|a, b| a.0.total_cmp(&b.0));
    RateStep {
        offered_per_s: rate,
        started,
        completed: s.latencies_us.len() as u64,
        failed: s.failed,
        shed,
        unfinished,
        elapsed_s,
        latencies: Latencies::from_micros(s.latencies_us),
        timeline_ms,
        first_error: s.first_error,
    }
}

/// Submits one small record per operation (a `ProvData` with a digest of
/// `n`) through `clients` in turn, waiting for each commit: the ledger
/// load of `federact bench ledger` and `cargo bench --bench chain`.
pub async fn submit_at_rate<P: Fn(u64)>(
    clients: &[LedgerClient],
    rate: u64,
    duration: Duration,
    in_flight_max: u64,
    seq: &AtomicU64,
    progress: P,
) -> RateStep {
    open_loop(
        rate,
        duration,
        in_flight_max,
        seq,
        |n| {
            let client = clients[(n as usize) % clients.len().max(1)].clone();
            async move {
                client
                    .submit(bench_record(n))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
        progress,
    )
    .await
}

/// The record load generators submit: small, distinct per `n`.
pub fn bench_record(n: u64) -> Record {
    Record::ProvData {
        data_digest: Hash::of(&n.to_be_bytes()),
        generated_by: "bench".into(),
        used_by: None,
    }
}

/// What a closed-loop run measured.
#[derive(Debug, Clone, Default)]
pub struct ClosedRun {
    /// Concurrent callers.
    pub concurrency: usize,
    /// Calls made.
    pub calls: u64,
    /// Wall time of the run.
    pub elapsed_s: f64,
    /// Latency of each call.
    pub latencies: Latencies,
}

impl ClosedRun {
    /// Calls per second.
    pub fn calls_per_s(&self) -> f64 {
        if self.elapsed_s <= 0.0 {
            return 0.0;
        }
        self.calls as f64 / self.elapsed_s
    }
}

/// Runs `concurrency` callers, each making `calls_per_caller` calls of `f`
/// back to back, on the current task (no spawning, so `f` need not be
/// `Send`); records each call's latency.
pub async fn closed_loop<F, Fut>(concurrency: usize, calls_per_caller: usize, f: F) -> ClosedRun
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let concurrency = concurrency.max(1);
    let start = Instant::now();
    let callers = (0..concurrency).map(|_| {
        let f = &f;
        async move {
            let mut lat = Vec::with_capacity(calls_per_caller);
            for _ in 0..calls_per_caller {
                let t = Instant::now();
                f().await;
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }
    });
    let all: Vec<u64> = futures::future::join_all(callers)
        .await
        .into_iter()
        .flatten()
        .collect();
    ClosedRun {
        concurrency,
        calls: all.len() as u64,
        elapsed_s: start.elapsed().as_secs_f64(),
        latencies: Latencies::from_micros(all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_in_ms_and_ordered() {
        let l = Latencies::from_micros((1..=100).rev().map(|x| x * 1000).collect());
        assert_eq!(l.quantile_ms(0.0), 1.0);
        assert_eq!(l.quantile_ms(0.5), 51.0);
        assert_eq!(l.quantile_ms(0.99), 99.0);
        assert_eq!(l.max_ms(), 100.0);
        assert_eq!(l.mean_ms(), 50.5);
        assert_eq!(Latencies::default().quantile_ms(0.5), 0.0);
    }

    #[actix_rt::test]
    async fn open_loop_starts_the_offered_operations_and_counts_failures() {
        let seq = AtomicU64::new(0);
        let step = open_loop(
            500,
            Duration::from_millis(200),
            1000,
            &seq,
            |n| async move {
                if n % 10 == 0 {
                    Err(format!("op {n} failed"))
                } else {
                    Ok(())
                }
            },
            |_| {},
        )
        .await;
        assert_eq!(step.started, 100);
        assert_eq!((step.completed, step.failed, step.shed), (90, 10, 0));
        assert_eq!(step.first_error.as_deref(), Some("op 0 failed"));
        assert_eq!(step.latencies.len(), 90);
        assert_eq!(seq.load(Ordering::Relaxed), 100);
    }

    #[actix_rt::test]
    async fn open_loop_sheds_load_beyond_the_in_flight_bound() {
        let seq = AtomicU64::new(0);
        // Operations never finish, so exactly `in_flight_max` start
        // whatever the scheduling; the drain limit then abandons them.
        let step = open_loop_drain(
            1000,
            Duration::from_millis(100),
            5,
            Some(Duration::from_millis(10)),
            &seq,
            |_| std::future::pending::<Result<(), String>>(),
            |_| {},
        )
        .await;
        assert_eq!(step.started, 5);
        assert_eq!(step.shed, 95);
        assert_eq!((step.completed, step.unfinished), (0, 5));
    }

    #[actix_rt::test]
    async fn open_loop_abandons_operations_running_past_the_drain_limit() {
        let seq = AtomicU64::new(0);
        let step = open_loop_drain(
            100,
            Duration::from_millis(100),
            1000,
            Some(Duration::from_millis(50)),
            &seq,
            |n| async move {
                if n == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(())
            },
            |_| {},
        )
        .await;
        assert_eq!(step.started, 10);
        assert_eq!((step.completed, step.unfinished), (9, 1));
    }

    #[actix_rt::test]
    async fn closed_loop_makes_every_call() {
        let run = closed_loop(4, 25, || async {}).await;
        assert_eq!((run.concurrency, run.calls), (4, 100));
        assert!(run.calls_per_s() > 0.0);
    }
}
