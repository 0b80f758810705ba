//! Live-chain benchmark: one local chain of 4 validators on this machine,
//! over loopback QUIC with durable sled (flush per block), driven through
//! the cloud's gateway at increasing offered load until saturation.
//!
//! The driver is `federact_actors::loadgen` (shared with `federact bench
//! ledger`, which also runs the nodes as separate processes). For each
//! offered rate it reports committed transactions per second and
//! submit → commit latency (p50, p99). Run:
//!
//! ```text
//! cargo bench -p federact-actors --bench chain -- [--validators 4] [--block 2000] [--batch-ms 5] [--secs 4] [--rates 1000,5000,10000,20000]
//! ```

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use federact_actors::loadgen::submit_at_rate;
use federact_actors::{EmbeddedFederation, LedgerClient};
use federact_config::{write_local_federation, Topology};

/// Outstanding submissions beyond which offered load is shed.
const IN_FLIGHT_MAX: u64 = 200_000;

struct Args {
    validators: usize,
    block: u32,
    batch_ms: u64,
    secs: u64,
    rates: Vec<u64>,
    authors: usize,
}

fn args() -> Args {
    let mut a = Args {
        validators: 4,
        block: 2000,
        batch_ms: 5,
        secs: 4,
        rates: vec![1000, 2500, 5000, 10_000, 20_000, 40_000],
        authors: 8,
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
    let w = write_local_federation(dir, &topo, false).expect("init");
    let text = std::fs::read_to_string(&w.federation_file).expect("read");
    let text = text
        .replace(
            "block_size_txs = 16",
            &format!("block_size_txs = {}\nblock_bytes_max = 67108864", a.block),
        )
        .replace(
            "batch_timeout_ms = 20",
            &format!("batch_timeout_ms = {}", a.batch_ms),
        );
    std::fs::write(&w.federation_file, text).expect("write");
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
        "# live chain: {} validators, block_size_txs {}, batch {} ms, durable sled, loopback QUIC, {} s per step, {} authors",
        a.validators, a.block, a.batch_ms, a.secs, a.authors
    );
    println!(
        "{:>10} {:>10} {:>10} {:>12} {:>10} {:>10} {:>8}",
        "offered/s", "submitted", "committed", "commit tx/s", "p50 ms", "p99 ms", "refused"
    );
    let system = actix::System::new();
    system.block_on(async move {
        let fed = EmbeddedFederation::start(dir.path())
            .await
            .expect("federation");
        let clients: Vec<LedgerClient> = (1..=a.authors)
            .filter_map(|i| {
                fed.node(&format!("c1-server-{i}"))
                    .and_then(|n| n.ledger_client())
            })
            .collect();
        let seq = AtomicU64::new(0);
        // Warm up connections.
        let _ = submit_at_rate(
            &clients,
            200,
            Duration::from_secs(1),
            IN_FLIGHT_MAX,
            &seq,
            |_| {},
        )
        .await;
        for &rate in &a.rates {
            let s = submit_at_rate(
                &clients,
                rate,
                Duration::from_secs(a.secs),
                IN_FLIGHT_MAX,
                &seq,
                |_| {},
            )
            .await;
            println!(
                "{rate:>10} {:>10} {:>10} {:>12.0} {:>10.1} {:>10.1} {:>8}",
                s.started,
                s.completed,
                s.completed_per_s(),
                s.latencies.quantile_ms(0.5),
                s.latencies.quantile_ms(0.99),
                s.failed
            );
        }
        fed.shutdown().await;
    });
}
