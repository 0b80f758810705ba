//! `federact bench ledger`: Caliper's metrics on one cloud's chain.
//!
//! The nodes (the cloud's gateway and its validators) run as separate
//! `federact node` processes over loopback QUIC with durable sled stores
//! (the validators flush every committed block). The driver plays the
//! cloud's servers (their keys are members of the federation), signs a small
//! record per transaction and submits it through the gateway, waiting for
//! the commit receipt; it steps the offered rate (open loop, Caliper's
//! fixed-rate controller) until the chain saturates. After the run the
//! nodes stop and the driver times reads of one validator's store (by
//! transaction id and block height) — there is no remote query API to
//! time yet.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use federact::config::{
    default_chain_params, write_local_federation_with, ChainParams, Federation, NodeConfig,
    Topology,
};
use federact::federation::{Membership, Transport, TransportOptions};
use federact::ledger::store::ChainStore;
use federact_actors::loadgen::{bench_record, submit_at_rate, Latencies, RateStep};
use federact_actors::{EmbeddedFederation, LedgerClient};

use super::procs::{NodeProcs, RoleUse};
use super::report::{f, Axes, Report, Series};
use super::{bar, wait_until, CommonArgs};

/// Arguments of `federact bench ledger`.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Validators of the chain (n = 3f + 1 tolerates f faults).
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Maximum transactions per block (`block_size_txs`).
    #[arg(long, default_value_t = 2000)]
    block: u32,
    /// How long a proposer waits to fill a block (`batch_timeout_ms`).
    #[arg(long, default_value_t = 5)]
    batch_ms: u64,
    /// Seconds per offered rate (default 3 with --quick, else 10).
    #[arg(long)]
    secs: Option<f64>,
    /// Offered rates in tx/s, comma-separated (default: a sweep to 40,000).
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Signing authors (the cloud's servers the driver plays).
    #[arg(long, default_value_t = 8)]
    authors: usize,
    /// Run every node inside this process instead of one process per node.
    #[arg(long)]
    embedded: bool,
    /// Store reads to time after the run (by tx id, then by block height).
    #[arg(long)]
    reads: Option<usize>,
    /// Outstanding submissions beyond which offered load is shed.
    #[arg(long, default_value_t = 100_000)]
    in_flight_max: u64,
    /// How long a submission waits for its commit before counting as failed, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Keep sweeping after the chain saturates.
    #[arg(long)]
    no_stop: bool,
}

/// One offered rate's result.
struct Step {
    step: RateStep,
    usage: BTreeMap<String, RoleUse>,
}

const CHAIN: &str = "cloud-1.local";

/// Longest each kind of read is timed for (proof-building reads of big
/// blocks take milliseconds each).
const READ_BUDGET: Duration = Duration::from_secs(5);

/// Runs the benchmark; returns the summary file.
pub fn run(a: &LedgerArgs) -> anyhow::Result<std::path::PathBuf> {
    if a.validators == 0 || a.authors == 0 {
        bail!("--validators and --authors must be at least 1");
    }
    let secs = a.secs.unwrap_or(if a.common.quick { 3.0 } else { 10.0 });
    if !(secs > 0.0 && secs <= 3600.0) {
        bail!("--secs must be in (0, 3600]");
    }
    let rates = a.rates.clone().unwrap_or_else(|| {
        if a.common.quick {
            vec![1000, 2500, 5000, 10_000, 20_000, 30_000]
        } else {
            vec![
                500, 1000, 2000, 3000, 4000, 5000, 6000, 10_000, 15_000, 20_000, 30_000, 40_000,
            ]
        }
    });
    if rates.is_empty() || rates.contains(&0) {
        bail!("--rates must list positive rates");
    }
    let reads = a
        .reads
        .unwrap_or(if a.common.quick { 2_000 } else { 50_000 });
    let out = a.common.out_dir("ledger");
    let mut report = Report::create(&out, "federact bench ledger")?;
    let work = tempfile::Builder::new()
        .prefix("federact-bench-ledger-")
        .tempdir()
        .context("creating a work directory")?;
    let fed = write_federation(work.path(), a)?;

    let steps = if a.embedded {
        run_embedded(work.path(), a, &rates, secs)?
    } else {
        run_processes(work.path(), &fed, a, &rates, secs)?
    };
    let reads = read_bench(work.path(), reads)?;
    write_report(&mut report, a, secs, &steps, &reads)?;
    report.finish()
}

fn write_federation(dir: &Path, a: &LedgerArgs) -> anyhow::Result<Federation> {
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: a.authors,
        local_validators: a.validators,
        inter_validators: 0,
    };
    // The chain shape is set in federation.toml, as an operator would.
    let params = ChainParams {
        block_size_txs: a.block,
        block_bytes_max: 64 << 20,
        batch_timeout_ms: a.batch_ms,
        ..default_chain_params()
    };
    let w = write_local_federation_with(dir, &topo, &params, false)?;
    Ok(Federation::load(&w.federation_file)?)
}

/// Gateway and validators as processes; the driver on a 2-thread runtime.
fn run_processes(
    dir: &Path,
    fed: &Federation,
    a: &LedgerArgs,
    rates: &[u64],
    secs: f64,
) -> anyhow::Result<Vec<Step>> {
    let mut nodes = vec![("c1-gateway".to_string(), "gateway".to_string())];
    for v in 1..=a.validators {
        nodes.push((format!("c1-validator-{v}"), "validator".to_string()));
    }
    let mut procs = NodeProcs::spawn(dir, &nodes)?;
    let gateway = fed
        .gateway("cloud-1")
        .context("the federation has no gateway in cloud-1")?
        .id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let (mut clients, mut transports) = (Vec::new(), Vec::new());
        for i in 1..=a.authors {
            let cfg = NodeConfig::load(&dir.join("nodes").join(format!("c1-server-{i}.toml")))?;
            let key = cfg.load_key()?;
            let transport = Transport::bind(
                &key,
                Membership::from_federation(fed),
                TransportOptions::from(*fed.transport()),
                "127.0.0.1:0".parse()?,
            )
            .await
            .context("binding the driver's endpoint")?;
            transports.push(transport.clone());
            clients.push(
                LedgerClient::new(transport, key, gateway)
                    .with_timeout(Duration::from_secs(a.timeout_s.max(1))),
            );
        }
        let r = drive(&clients, &mut procs, a, rates, secs).await;
        for t in &transports {
            t.close().await;
        }
        r
    });
    procs.terminate(Duration::from_secs(20));
    result
}

/// Every node in this process (one thread: the actix System's).
fn run_embedded(dir: &Path, a: &LedgerArgs, rates: &[u64], secs: f64) -> anyhow::Result<Vec<Step>> {
    let mut procs = NodeProcs::spawn(dir, &[])?;
    let system = actix::System::new();
    system.block_on(async {
        let fed = EmbeddedFederation::start(dir).await?;
        let clients: Vec<LedgerClient> = (1..=a.authors)
            .filter_map(|i| {
                fed.node(&format!("c1-server-{i}"))
                    .and_then(|n| n.ledger_client())
            })
            .map(|c| c.with_timeout(Duration::from_secs(a.timeout_s.max(1))))
            .collect();
        let r = drive(&clients, &mut procs, a, rates, secs).await;
        fed.shutdown().await;
        r
    })
}

async fn drive(
    clients: &[LedgerClient],
    procs: &mut NodeProcs,
    a: &LedgerArgs,
    rates: &[u64],
    secs: f64,
) -> anyhow::Result<Vec<Step>> {
    // Ready when one record commits (nodes start, connect, elect).
    let probe = clients[0].clone().with_timeout(Duration::from_secs(3));
    let mut k = u64::MAX;
    let ready = wait_until(Duration::from_secs(60), || {
        k -= 1;
        let (probe, n) = (probe.clone(), k);
        async move { probe.submit(bench_record(n)).await.is_ok() }
    })
    .await;
    procs.check_alive()?;
    if !ready {
        bail!("the chain committed nothing within 60 s of starting");
    }
    let seq = AtomicU64::new(0);
    let warm = submit_at_rate(
        clients,
        200,
        Duration::from_secs(1),
        a.in_flight_max,
        &seq,
        |_| {},
    )
    .await;
    if warm.completed == 0 {
        bail!(
            "warm-up committed nothing: {}",
            warm.first_error.unwrap_or_default()
        );
    }
    let mut steps = Vec::new();
    let mut saturated_in_a_row = 0;
    for &rate in rates {
        let total = (rate as f64 * secs).round() as u64;
        let pb = bar(total, format!("ledger {rate} tx/s"));
        let mark = procs.cpu_mark();
        let step = submit_at_rate(
            clients,
            rate,
            Duration::from_secs_f64(secs),
            a.in_flight_max,
            &seq,
            |n| pb.set_position(n),
        )
        .await;
        let usage = procs.usage_since(&mark);
        pb.finish_and_clear();
        procs.check_alive()?;
        eprintln!(
            "offered {rate:>6}/s: committed {:>8.0} tx/s, p50 {:>8.1} ms, p99 {:>8.1} ms, failed {}, shed {}",
            step.completed_per_s(),
            step.latencies.quantile_ms(0.5),
            step.latencies.quantile_ms(0.99),
            step.failed,
            step.shed
        );
        let saturated = step.completed_per_s() < 0.8 * rate as f64
            || step.shed > 0
            || step.failed > step.started / 100;
        steps.push(Step { step, usage });
        saturated_in_a_row = if saturated { saturated_in_a_row + 1 } else { 0 };
        if saturated_in_a_row >= 2 && !a.no_stop {
            break;
        }
    }
    Ok(steps)
}

/// Read timings of one validator's store.
struct Reads {
    wanted: usize,
    blocks: u64,
    txs: u64,
    location: (Latencies, f64),
    by_id: (Latencies, f64),
    by_height: (Latencies, f64),
}

fn read_bench(dir: &Path, n: usize) -> anyhow::Result<Reads> {
    let path = dir
        .join("data")
        .join("c1-validator-1")
        .join("chains")
        .join(CHAIN)
        .join("chain");
    let store = ChainStore::open(&path, None)
        .with_context(|| format!("opening {} after the run", path.display()))?;
    let height = store.tip().height;
    let mut ids = Vec::new();
    for h in 1..=height {
        if let Some(b) = store.block(h)? {
            ids.extend(b.tx_ids());
        }
    }
    let txs = ids.len() as u64;
    let pick = |len: usize, i: usize| (i.wrapping_mul(2_654_435_761)) % len.max(1);
    let location = timed_reads(n, !ids.is_empty(), |i| {
        let id = &ids[pick(ids.len(), i)];
        if store.tx_location(id)?.is_none() {
            bail!("transaction {id:?} of a committed block is not in the store's index");
        }
        Ok(())
    })?;
    let by_id = timed_reads(n, !ids.is_empty(), |i| {
        let id = &ids[pick(ids.len(), i)];
        if store.tx(id)?.is_none() {
            bail!("transaction {id:?} of a committed block is not in the store's index");
        }
        Ok(())
    })?;
    let by_height = timed_reads(n, height > 0, |i| {
        store.block(1 + pick(height as usize, i) as u64)?;
        Ok(())
    })?;
    Ok(Reads {
        wanted: n,
        blocks: height,
        txs,
        location,
        by_id,
        by_height,
    })
}

/// Runs `read(i)` for i in 0..n (none if `!any`), at most [`READ_BUDGET`]
/// long; returns the latencies of the reads and their rate per second.
fn timed_reads(
    n: usize,
    any: bool,
    mut read: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<(Latencies, f64)> {
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    if any {
        for i in 0..n {
            if start.elapsed() > READ_BUDGET {
                break;
            }
            let t = Instant::now();
            read(i)?;
            lat.push(t.elapsed().as_micros() as u64);
        }
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    Ok((Latencies::from_micros(lat), rate))
}

fn write_report(
    r: &mut Report,
    a: &LedgerArgs,
    secs: f64,
    steps: &[Step],
    reads: &Reads,
) -> anyhow::Result<()> {
    let mode = if a.embedded {
        "embedded: every node in this process (one actix thread)"
    } else {
        "one OS process per node (gateway + validators), driver in this process"
    };
    r.text(&format!(
        "Chain: 1 cloud, {} validators, block_size_txs {}, batch_timeout_ms {}, durable sled (flush per committed block), loopback QUIC with mutual TLS. Nodes: {mode}. Driver: {} signing authors, open-loop fixed rate, {secs} s per rate, submit → commit receipt (with inclusion proof) per transaction.\n",
        a.validators, a.block, a.batch_ms, a.authors
    ));
    let best = steps
        .iter()
        .map(|s| s.step.completed_per_s())
        .fold(0.0, f64::max);
    r.text(&format!(
        "**Peak committed throughput: {} tx/s** (goal in issue 12: ≥ 20,000 tx/s with 4 validators, durable).\n",
        f(best, 0)
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if let Some(low) = steps.iter().find(|s| s.step.completed > 0) {
        let ms = cpu_ms_per_tx(low);
        if ms > 0.0 {
            r.text(&format!(
                "CPU cost at the lowest rate: {} ms of CPU per committed transaction over all processes (driver included), so {cores} fully available cores would bound throughput near {} tx/s. Other work on this machine competes for the cores (see the load average above).\n",
                f(ms, 3),
                f(cores * 1000.0 / ms, 0)
            ));
        }
    }
    let roles: Vec<String> = {
        let mut v: Vec<String> = steps.iter().flat_map(|s| s.usage.keys().cloned()).collect();
        v.sort();
        v.dedup();
        v
    };
    let mut header: Vec<String> = [
        "offered tx/s",
        "submitted",
        "committed",
        "failed",
        "shed",
        "committed tx/s",
        "avg ms",
        "p50 ms",
        "p99 ms",
        "max ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for role in &roles {
        header.push(format!("CPU % {role} (per process)"));
    }
    header.push("CPU ms per committed tx (all processes)".into());
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let st = &s.step;
            let mut row = vec![
                st.offered_per_s.to_string(),
                st.started.to_string(),
                st.completed.to_string(),
                st.failed.to_string(),
                st.shed.to_string(),
                f(st.completed_per_s(), 0),
                f(st.latencies.mean_ms(), 1),
                f(st.latencies.quantile_ms(0.5), 1),
                f(st.latencies.quantile_ms(0.99), 1),
                f(st.latencies.max_ms(), 1),
            ];
            for role in &roles {
                row.push(
                    s.usage
                        .get(role)
                        .map_or("-".into(), |u| f(u.cpu_pct_avg, 0)),
                );
            }
            row.push(f(cpu_ms_per_tx(s), 3));
            row
        })
        .collect();
    let h: Vec<&str> = header.iter().map(String::as_str).collect();
    r.text("## Transactions\n");
    r.table(&h, &rows);
    r.csv("ledger.csv", &h, &rows)?;
    if let Some(e) = steps.iter().find_map(|s| s.step.first_error.clone()) {
        r.text(&format!("First failure seen: `{e}`\n"));
    }

    r.text("## Resources per node role (whole run)\n");
    let mut peak: BTreeMap<String, RoleUse> = BTreeMap::new();
    for s in steps {
        for (role, u) in &s.usage {
            let p = peak.entry(role.clone()).or_default();
            p.processes = u.processes;
            p.cpu_pct_avg = p.cpu_pct_avg.max(u.cpu_pct_avg);
            p.cpu_pct_sum = p.cpu_pct_sum.max(u.cpu_pct_sum);
            p.peak_rss_mib = p.peak_rss_mib.max(u.peak_rss_mib);
        }
    }
    let rrows: Vec<Vec<String>> = peak
        .iter()
        .map(|(role, u)| {
            vec![
                role.clone(),
                u.processes.to_string(),
                f(u.cpu_pct_avg, 0),
                f(u.cpu_pct_sum, 0),
                f(u.peak_rss_mib, 1),
            ]
        })
        .collect();
    let rh = [
        "role",
        "processes",
        "max CPU % per process (of one core)",
        "max CPU % all processes",
        "peak RSS MiB (largest process)",
    ];
    r.table(&rh, &rrows);
    r.csv("resources.csv", &rh, &rrows)?;

    r.text(&format!(
        "## Reads\n\nOne validator's store opened after the run ({} blocks, {} transactions), single thread, up to {} lookups or {} s per query:\n",
        reads.blocks, reads.txs, reads.wanted, READ_BUDGET.as_secs()
    ));
    let read_rows = vec![
        read_row("transaction location by id (index only)", &reads.location),
        read_row(
            "transaction by id with inclusion proof (decodes its block)",
            &reads.by_id,
        ),
        read_row("block by height", &reads.by_height),
    ];
    let readh = ["query", "reads/s", "avg µs", "p50 µs", "p99 µs"];
    r.table(&readh, &read_rows);
    r.csv("reads.csv", &readh, &read_rows)?;

    let pts = |g: &dyn Fn(&RateStep) -> f64| -> Vec<(f64, f64)> {
        steps
            .iter()
            .map(|s| (s.step.offered_per_s as f64, g(&s.step)))
            .collect()
    };
    r.plot(
        "throughput.svg",
        "Committed vs offered transactions",
        "offered tx/s",
        "tx/s",
        &[
            Series {
                name: "committed tx/s".into(),
                points: pts(&|s| s.completed_per_s()),
            },
            Series {
                name: "offered tx/s".into(),
                points: pts(&|s| s.offered_per_s as f64),
            },
        ],
        Axes::Linear,
    )?;
    r.plot(
        "latency.svg",
        "Submit → commit latency vs offered rate",
        "offered tx/s",
        "latency ms (log)",
        &[
            Series {
                name: "p50".into(),
                points: pts(&|s| s.latencies.quantile_ms(0.5).max(0.01)),
            },
            Series {
                name: "p99".into(),
                points: pts(&|s| s.latencies.quantile_ms(0.99).max(0.01)),
            },
            Series {
                name: "avg".into(),
                points: pts(&|s| s.latencies.mean_ms().max(0.01)),
            },
        ],
        Axes::LogY,
    )?;
    Ok(())
}

/// CPU milliseconds per committed transaction over every process.
fn cpu_ms_per_tx(s: &Step) -> f64 {
    let cpu_s: f64 = s.usage.values().map(|u| u.cpu_s).sum();
    if s.step.completed == 0 {
        return 0.0;
    }
    cpu_s * 1000.0 / s.step.completed as f64
}

fn read_row(name: &str, (l, rate): &(Latencies, f64)) -> Vec<String> {
    vec![
        name.to_string(),
        f(*rate, 0),
        f(l.mean_ms() * 1000.0, 1),
        f(l.quantile_ms(0.5) * 1000.0, 1),
        f(l.quantile_ms(0.99) * 1000.0, 1),
    ]
}
