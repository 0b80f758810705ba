//! Live-chain benchmark: one local chain of 4 validators on this machine,
//! over loopback QUIC with durable sled (flush per block), driven through
//! the cloud's gateway at increasing offered load until saturation.
//!
//! For each offered rate it reports committed transactions per second and
//! submit → commit latency (p50, p99), and the CPU time this process (the
//! whole embedded federation: validators, gateway, clients) spent per
//! committed transaction — the robust figure on a shared machine. Run:
//!
//! ```text
//! cargo bench -p federact-actors --bench chain -- [--validators 4] [--block 2000] [--batch-ms 5] [--secs 4] [--rates 1000,5000,10000,20000] [--client-batch 1]
//! ```
//!
//! With `--client-batch N` (N > 1) each author sends the records it has to
//! send in one 2 ms tick as `submit_many` requests of up to N records
//! (`GatewayRequest::SubmitMany`) instead of one request per record; the
//! latency of each record is still measured from when it was sent.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use federact_actors::{EmbeddedFederation, LedgerClient};
use federact_config::Topology;
use federact_ledger::hash::Hash;
use federact_ledger::record::Record;

struct Args {
    validators: usize,
    block: u32,
    batch_ms: u64,
    secs: u64,
    rates: Vec<u64>,
    authors: usize,
    client_batch: usize,
}

fn args() -> Args {
    let mut a = Args {
        validators: 4,
        block: 2000,
        batch_ms: 5,
        secs: 4,
        rates: vec![1000, 2500, 5000, 10_000, 20_000, 40_000],
        authors: 8,
        client_batch: 1,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--validators" => a.validators = next.parse().unwrap_or(a.validators),
            "--block" => a.block = next.parse().unwrap_or(a.block),
            "--batch-ms" => a.batch_ms = next.parse().unwrap_or(a.batch_ms),
            "--secs" => a.secs = next.parse().unwrap_or(a.secs),
            "--authors" => a.authors = next.parse().unwrap_or(a.authors),
            "--client-batch" => {
                a.client_batch = next.parse().unwrap_or(a.client_batch).clamp(1, 1024)
            }
            "--rates" => a.rates = next.split(',').filter_map(|x| x.parse().ok()).collect(),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn write_federation(dir: &Path, a: &Args) {
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: a.authors,
        local_validators: a.validators,
        inter_validators: 0,
    };
    let params = federact_config::ChainParams {
        block_size_txs: a.block,
        block_bytes_max: 64 << 20,
        batch_timeout_ms: a.batch_ms,
        ..federact_config::default_chain_params()
    };
    federact_config::write_local_federation_with(dir, &topo, &params, false).expect("init");
}

/// User + system CPU time of this process so far, in milliseconds.
fn cpu_ms() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(u.ru_utime) + ms(u.ru_stime)
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn record(n: u64) -> Record {
    Record::ProvData {
        data_digest: Hash::of(&n.to_be_bytes()),
        generated_by: "bench".into(),
        used_by: None,
    }
}

async fn step(
    clients: &[LedgerClient],
    rate: u64,
    secs: u64,
    batch: usize,
    seq: &AtomicU64,
) -> (u64, u64, f64, f64, u64) {
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let max_in_flight = 200_000u64;
    let start = Instant::now();
    let total = rate * secs;
    let tick = Duration::from_millis(2);
    let per_tick = (rate as f64 * tick.as_secs_f64()).max(1.0);
    let mut owed = 0.0f64;
    let mut sent = 0u64;
    let mut handles = Vec::new();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent < total {
        interval.tick().await;
        owed += per_tick;
        if batch > 1 {
            let mut due = Vec::new();
            while owed >= 1.0 && sent + (due.len() as u64) < total {
                owed -= 1.0;
                if in_flight.load(Ordering::Relaxed) + (due.len() as u64) < max_in_flight {
                    due.push(seq.fetch_add(1, Ordering::Relaxed));
                }
            }
            sent += due.len() as u64;
            let mut per_client: Vec<Vec<u64>> = vec![Vec::new(); clients.len()];
            for n in due {
                per_client[(n as usize) % clients.len()].push(n);
            }
            for (ci, ns) in per_client.into_iter().enumerate() {
                for chunk in ns.chunks(batch) {
                    let client = clients[ci].clone();
                    let records: Vec<Record> = chunk.iter().map(|&n| record(n)).collect();
                    let k = records.len() as u64;
                    let (lat, refused, in_flight) =
                        (latencies.clone(), refused.clone(), in_flight.clone());
                    in_flight.fetch_add(k, Ordering::Relaxed);
                    handles.push(tokio::spawn(async move {
                        let t = Instant::now();
                        let r = client.submit_many(records).await;
                        in_flight.fetch_sub(k, Ordering::Relaxed);
                        let us = t.elapsed().as_micros() as u64;
                        match r {
                            Ok(all) => {
                                let ok = all.iter().filter(|a| a.is_ok()).count();
                                refused.fetch_add(k - ok as u64, Ordering::Relaxed);
                                if let Ok(mut l) = lat.lock() {
                                    l.extend(std::iter::repeat_n(us, ok));
                                }
                            }
                            Err(_) => {
                                refused.fetch_add(k, Ordering::Relaxed);
                            }
                        }
                    }));
                }
            }
            continue;
        }
        while owed >= 1.0 && sent < total {
            owed -= 1.0;
            if in_flight.load(Ordering::Relaxed) >= max_in_flight {
                continue; // the system is saturated: drop offered load rather than queue without bound
            }
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let client = clients[(n as usize) % clients.len()].clone();
            let (lat, refused, in_flight) = (latencies.clone(), refused.clone(), in_flight.clone());
            in_flight.fetch_add(1, Ordering::Relaxed);
            handles.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = client.submit(record(n)).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok(_) => lat
                        .lock()
                        .map(|mut l| l.push(t.elapsed().as_micros() as u64))
                        .unwrap_or(()),
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
            sent += 1;
        }
    }
    for h in handles {
        let _ = h.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let committed = l.len() as u64;
    (
        sent,
        committed,
        committed as f64 / elapsed,
        quantile(&l, 0.5),
        refused.load(Ordering::Relaxed),
    )
        .into_with_p99(quantile(&l, 0.99))
}

trait WithP99 {
    fn into_with_p99(self, p99: f64) -> (u64, u64, f64, f64, u64);
}

impl WithP99 for (u64, u64, f64, f64, u64) {
    fn into_with_p99(self, p99: f64) -> (u64, u64, f64, f64, u64) {
        P99.with(|c| c.set(p99));
        self
    }
}

thread_local! {
    static P99: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

fn main() {
    let a = args();
    if std::env::args().any(|x| x == "--bench" || x == "--list")
        && std::env::args().any(|x| x == "--list")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    write_federation(dir.path(), &a);
    println!(
        "# live chain: {} validators, block_size_txs {}, batch {} ms, durable sled, loopback QUIC, {} s per step, {} authors, client batch {}",
        a.validators, a.block, a.batch_ms, a.secs, a.authors, a.client_batch
    );
    println!(
        "{:>10} {:>10} {:>10} {:>12} {:>10} {:>10} {:>8} {:>10}",
        "offered/s",
        "submitted",
        "committed",
        "commit tx/s",
        "p50 ms",
        "p99 ms",
        "refused",
        "cpu ms/tx"
    );
    let system = actix::System::new();
    system.block_on(async move {
        let fed = EmbeddedFederation::start(dir.path()).await.expect("federation");
        let clients: Vec<LedgerClient> = (1..=a.authors)
            .filter_map(|i| fed.node(&format!("c1-server-{i}")).and_then(|n| n.ledger_client()))
            .collect();
        let seq = AtomicU64::new(0);
        // Warm up connections.
        let _ = step(&clients, 200, 1, a.client_batch, &seq).await;
        for &rate in &a.rates {
            let cpu0 = cpu_ms();
            let (sent, committed, tps, p50, refused) = step(&clients, rate, a.secs, a.client_batch, &seq).await;
            let cpu_per_tx = (cpu_ms() - cpu0) / committed.max(1) as f64;
            let p99 = P99.with(|c| c.get());
            println!("{rate:>10} {sent:>10} {committed:>10} {tps:>12.0} {p50:>10.1} {p99:>10.1} {refused:>8} {cpu_per_tx:>10.3}");
        }
        fed.shutdown().await;
    });
}
