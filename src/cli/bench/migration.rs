//! `federact bench migration`: the BASICS experiments on this system —
//! migration delay vs migration rate for local and inter-cloud migrations
//! at block sizes 4 and 16 and the stability limit (the highest rate whose
//! delay stays bounded over the run) (`--experiment rate`, the default);
//! migration delay and block-commit delay vs the number of local
//! validators (`validators`, BASICS Fig. 5); migration delay and number of
//! blocks vs the number of clouds, local and inter migrations at 4:1
//! (`clouds`, BASICS Fig. 9). Every step also reports the blocks each kind
//! of chain committed during it and the inter-block delay (BASICS Fig. 6(b)
//! and 8), read afterwards from the validators' stores.
//!
//! Each migration is a real BASICS image migration: a fresh image file is
//! hashed at the source, `Indication` commits on the cloud's chain (local)
//! or the consortium (inter), the image streams over QUIC, the destination
//! re-hashes it and `Confirmation` commits; an inter-cloud move then
//! commits `Leave` and `Arrival` on the two local chains with cross-chain
//! proofs. The delay is from the request at the source server's migration
//! actor to the last record committed (its answer). Every node runs in this
//! process (an embedded federation over loopback QUIC with durable sled
//! stores): 44 node processes would not fit beside each other on a small
//! machine any better than one process does.
//!
//! Migrations start open-loop at a fixed rate, round-robin over the source
//! servers. A rate is *bounded* when every migration started completed, no
//! offered migration was shed, and the median delay of migrations started
//! in the last third of the step is at most twice that of the first third
//! and at most twice the lowest rate's median, plus 50 ms each (the delay
//! neither grows during the step nor leaves the unloaded level; with short
//! steps the first test alone misses a queue that built up in the first
//! third). The stability limit is the highest rate of the ascending sweep
//! below the first unbounded one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::Addr;
use anyhow::{bail, Context};
use clap::Args;
use federact::config::{default_chain_params, write_local_federation_with, ChainParams, Topology};
use federact::ledger::record::Site;
use federact_actors::loadgen::{open_loop_drain, Latencies, RateStep};
use federact_actors::migration::{MigrationActor, MigrationLimits, StartMigration};
use federact_actors::{EmbeddedFederation, NodeOptions};

use super::report::{f, Axes, Report, Series};
use super::{bar, CommonArgs};

/// Arguments of `federact bench migration`.
#[derive(Debug, Args)]
pub struct MigrationArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Clouds (BASICS Table I: 4; default 2 with --quick).
    #[arg(long)]
    clouds: Option<usize>,
    /// Local validators per cloud (Table I: 4).
    #[arg(long, default_value_t = 4)]
    local_validators: usize,
    /// Inter validators running the consortium (Table I: 12; default 4 with --quick).
    #[arg(long)]
    inter_validators: Option<usize>,
    /// Servers per cloud (sources and destinations of migrations).
    #[arg(long, default_value_t = 2)]
    servers_per_cloud: usize,
    /// Block sizes (`block_size_txs`) to run, comma-separated (BASICS: 4 and 16).
    #[arg(long, value_delimiter = ',', default_value = "4,16")]
    block_sizes: Vec<u32>,
    /// Migration rates per second, ascending, comma-separated.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Seconds per rate (default 2 with --quick, else 10).
    #[arg(long)]
    secs: Option<f64>,
    /// Scopes to run: `local`, `inter` or both.
    #[arg(long, value_delimiter = ',', default_value = "local,inter")]
    scopes: Vec<String>,
    /// Image size in KiB.
    #[arg(long, default_value_t = 4)]
    image_kib: usize,
    /// Emulated one-way inter-cloud delay in ms (0 or 50).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Seconds to wait for a step's migrations after the last start before
    /// abandoning them (default secs + 2 with --quick, else 3 × secs + 10).
    #[arg(long)]
    drain_secs: Option<f64>,
    /// Keep sweeping rates after the first unbounded one.
    #[arg(long)]
    no_stop: bool,
    /// Which BASICS experiment to run.
    #[arg(long, value_enum, default_value_t = Experiment::Rate)]
    experiment: Experiment,
    /// `validators`: local validator counts to compare, comma-separated
    /// (default 4,8,16,32; with --quick 1,4,7).
    #[arg(long, value_delimiter = ',')]
    validator_counts: Option<Vec<usize>>,
    /// `clouds`: cloud counts to compare, comma-separated (default
    /// 4,8,12,16,20; with --quick 2,4).
    #[arg(long, value_delimiter = ',')]
    cloud_counts: Option<Vec<usize>>,
    /// `validators` and `clouds`: local migrations per second per cloud
    /// (inter-cloud ones run at a quarter of it, BASICS' 4:1).
    #[arg(long, default_value_t = 8)]
    rate: u64,
}

/// The BASICS experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Experiment {
    /// Migration delay vs rate, local and inter, per block size; stability limit.
    Rate,
    /// Local migration delay and block-commit delay vs local validators (one cloud).
    Validators,
    /// Local and inter migration delay and blocks vs number of clouds.
    Clouds,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scope {
    Local,
    Inter,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Inter => "inter",
        }
    }
}

struct Step {
    block: u32,
    scope: Scope,
    /// The compared quantity of `validators`/`clouds` runs (0 for `rate`).
    x: usize,
    /// Wall clock (ms since the epoch) the step ran between.
    window_ms: (u64, u64),
    /// Blocks committed during the step, read from the stores afterwards.
    blocks: BlockStats,
    /// `validators`: submit → commit of one transaction on the idle chain (ms).
    commit_p50_ms: Option<f64>,
    step: RateStep,
    /// CPU seconds the process (every node and the driver) used in the step.
    cpu_s: f64,
    early_p50_ms: f64,
    late_p50_ms: f64,
    bounded: bool,
}

/// Runs the benchmark; returns the summary file.
pub fn run(a: &MigrationArgs) -> anyhow::Result<PathBuf> {
    let quick = a.common.quick;
    let topo = Topology {
        clouds: a.clouds.unwrap_or(if quick { 2 } else { 4 }),
        servers_per_cloud: a.servers_per_cloud,
        local_validators: a.local_validators,
        inter_validators: a.inter_validators.unwrap_or(if quick { 4 } else { 12 }),
    };
    let secs = a.secs.unwrap_or(if quick { 2.0 } else { 10.0 });
    if !(secs > 0.0 && secs <= 3600.0) {
        bail!("--secs must be in (0, 3600]");
    }
    let drain_s = a
        .drain_secs
        .unwrap_or(if quick { secs + 2.0 } else { 3.0 * secs + 10.0 });
    if !(drain_s > 0.0 && drain_s <= 3600.0) {
        bail!("--drain-secs must be in (0, 3600]");
    }
    let drain = Duration::from_secs_f64(drain_s);
    let rates = a.rates.clone().unwrap_or_else(|| {
        if quick {
            vec![32, 128, 512]
        } else {
            vec![16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        }
    });
    let scopes: Vec<Scope> = a
        .scopes
        .iter()
        .map(|s| match s.as_str() {
            "local" => Ok(Scope::Local),
            "inter" => Ok(Scope::Inter),
            other => bail!("--scopes {other}: expected local or inter"),
        })
        .collect::<anyhow::Result<_>>()?;
    if a.delay_ms > 10_000 {
        bail!("--delay-ms {}: at most 10000", a.delay_ms);
    }
    if topo.servers_per_cloud < 2 && scopes.contains(&Scope::Local) {
        bail!("local migrations need --servers-per-cloud of at least 2");
    }
    if topo.clouds < 2 && scopes.contains(&Scope::Inter) {
        bail!("inter-cloud migrations need --clouds of at least 2");
    }
    if rates.is_empty() || rates.contains(&0) || a.block_sizes.is_empty() {
        bail!("--rates and --block-sizes must be positive");
    }
    let out = a.common.out_dir("migration");
    let mut report = Report::create(&out, "federact bench migration")?;
    let work = tempfile::Builder::new()
        .prefix("federact-bench-migration-")
        .tempdir()?;
    let mut steps = Vec::new();
    // A fresh federation per run: migrations abandoned by an overloaded
    // step would otherwise still load the next one.
    let mut runs: Vec<(Topology, u32, usize, Load)> = Vec::new();
    match a.experiment {
        Experiment::Rate => {
            for &block in &a.block_sizes {
                for &scope in &scopes {
                    runs.push((topo, block, 0, Load::Sweep(scope)));
                }
            }
        }
        Experiment::Validators => {
            let counts = a.validator_counts.clone().unwrap_or_else(|| {
                if quick {
                    vec![1, 4, 7]
                } else {
                    vec![4, 8, 16, 32]
                }
            });
            if counts.is_empty() || counts.iter().any(|&n| n == 0 || n > 256) {
                bail!("--validator-counts must be from 1 to 256");
            }
            for n in counts {
                let t = Topology {
                    clouds: 1,
                    local_validators: n,
                    inter_validators: 0,
                    ..topo
                };
                runs.push((
                    t,
                    a.block_sizes[0],
                    n,
                    Load::Fixed(vec![(Scope::Local, a.rate)]),
                ));
            }
        }
        Experiment::Clouds => {
            let counts = a.cloud_counts.clone().unwrap_or_else(|| {
                if quick {
                    vec![2, 4]
                } else {
                    vec![4, 8, 12, 16, 20]
                }
            });
            if counts.is_empty() || counts.iter().any(|&n| !(2..=64).contains(&n)) {
                bail!("--cloud-counts must be from 2 to 64");
            }
            let inter = (a.rate / 4).max(1);
            for c in counts {
                let t = Topology { clouds: c, ..topo };
                let load = vec![
                    (Scope::Local, a.rate * c as u64),
                    (Scope::Inter, inter * c as u64),
                ];
                runs.push((t, a.block_sizes[0], c, Load::Fixed(load)));
            }
        }
    }
    if a.experiment != Experiment::Rate && (a.rate == 0 || a.rate > 100_000) {
        bail!("--rate must be from 1 to 100000");
    }
    for (i, (topo, block, x, load)) in runs.into_iter().enumerate() {
        let dir = work.path().join(format!("run-{i}"));
        write_federation(&dir, &topo, block)?;
        let system = actix::System::new();
        let mut s = system.block_on(run_federation(
            &dir,
            &topo,
            (block, drain),
            &load,
            &rates,
            secs,
            a,
        ))?;
        for step in &mut s {
            step.x = x;
            step.blocks = block_stats(&dir, &topo, step.window_ms);
        }
        steps.append(&mut s);
        // The stores of this run are not needed any more.
        let _ = std::fs::remove_dir_all(&dir);
    }
    match a.experiment {
        Experiment::Rate => write_report(&mut report, a, &topo, secs, &steps)?,
        Experiment::Validators | Experiment::Clouds => {
            write_compare_report(&mut report, a, &topo, secs, &steps)?
        }
    }
    report.finish()
}

/// The load of one federation's run.
enum Load {
    /// Ascending `--rates` of one scope, until the first unbounded one.
    Sweep(Scope),
    /// These (scope, total rate) loads at once, one step each.
    Fixed(Vec<(Scope, u64)>),
}

fn write_federation(dir: &Path, topo: &Topology, block: u32) -> anyhow::Result<()> {
    let params = ChainParams {
        block_size_txs: block,
        ..default_chain_params()
    };
    write_local_federation_with(dir, topo, &params, false)?;
    Ok(())
}

struct Servers {
    /// (site, migration actor) per cloud, per server.
    by_cloud: Vec<Vec<(Site, Addr<MigrationActor>)>>,
}

impl Servers {
    /// Source and destination of migration `n`.
    fn pair(&self, n: u64, scope: Scope) -> (&Addr<MigrationActor>, Site) {
        let clouds = self.by_cloud.len() as u64;
        let c = (n % clouds) as usize;
        let servers = self.by_cloud[c].len() as u64;
        let s = ((n / clouds) % servers) as usize;
        let (dc, ds) = match scope {
            Scope::Local => (c, (s + 1) % servers as usize),
            Scope::Inter => (
                (c + 1) % clouds as usize,
                s % self.by_cloud[(c + 1) % clouds as usize].len(),
            ),
        };
        (&self.by_cloud[c][s].1, self.by_cloud[dc][ds].0.clone())
    }
}

/// Starts the federation in `dir`, warms it up (one migration of each
/// scope completes) and runs `load` on it; the steps it measured.
async fn run_federation(
    dir: &Path,
    topo: &Topology,
    (block, drain): (u32, Duration),
    load: &Load,
    rates: &[u64],
    secs: f64,
    a: &MigrationArgs,
) -> anyhow::Result<Vec<Step>> {
    let options = NodeOptions {
        migration: MigrationLimits {
            // The bench measures the protocol's capacity, not the
            // per-server admission limit (a deployment's choice).
            concurrent_max: 1 << 16,
            protocol_timeout: Duration::from_secs(60),
            transfer_timeout: Duration::from_secs(60),
            ..MigrationLimits::default()
        },
        ..NodeOptions::default()
    };
    let relays = if a.delay_ms > 0 {
        Some(start_relays(dir, a.delay_ms).await?)
    } else {
        None
    };
    let fed = EmbeddedFederation::start_with(dir, options).await?;
    let scopes: Vec<Scope> = match load {
        Load::Sweep(scope) => vec![*scope],
        Load::Fixed(loads) => loads.iter().map(|(s, _)| *s).collect(),
    };
    let result = async {
        let mut by_cloud = Vec::new();
        for c in 1..=topo.clouds {
            let mut v = Vec::new();
            for s in 1..=topo.servers_per_cloud {
                let name = format!("c{c}-server-{s}");
                let addr = fed
                    .node(&name)
                    .and_then(|n| n.migration())
                    .with_context(|| format!("{name} runs no migration actor"))?
                    .clone();
                v.push((Site::new(format!("cloud-{c}"), &name), addr));
            }
            by_cloud.push(v);
        }
        let run = Run {
            servers: Servers { by_cloud },
            images: dir.join("images"),
            seq: AtomicU64::new(0),
            block,
            drain,
            secs,
            image_kib: a.image_kib,
        };
        std::fs::create_dir_all(&run.images)?;
        for &scope in &scopes {
            if let Some(r) = &relays {
                r.set_scope(scope);
            }
            run.warm_up(scope).await?;
        }
        let mut steps = Vec::new();
        match load {
            Load::Sweep(scope) => {
                let mut baseline: Option<f64> = None;
                for &rate in rates {
                    let step = run.step(*scope, rate, &mut baseline).await?;
                    let stop = !step.bounded && !a.no_stop;
                    steps.push(step);
                    if stop {
                        break;
                    }
                }
            }
            Load::Fixed(loads) => {
                // Mixed scopes share the servers' relays: with a delay they
                // carry it for local transfers too (an overestimate).
                if let (Some(r), true) = (&relays, scopes.contains(&Scope::Inter)) {
                    r.set_scope(Scope::Inter);
                }
                let runs = loads.iter().map(|&(scope, rate)| {
                    let run = &run;
                    async move { run.step(scope, rate, &mut None).await }
                });
                for step in futures::future::join_all(runs).await {
                    steps.push(step?);
                }
                if a.experiment == Experiment::Validators {
                    let p50 = commit_delay(&fed).await?;
                    for s in &mut steps {
                        s.commit_p50_ms = Some(p50);
                    }
                }
            }
        }
        Ok(steps)
    }
    .await;
    fed.shutdown().await;
    drop(relays);
    result
}

/// Submit → commit of one transaction at a time on cloud 1's idle chain
/// (20 in a row): the block-commit delay as a client sees it.
async fn commit_delay(fed: &EmbeddedFederation) -> anyhow::Result<f64> {
    let client = fed
        .node("c1-server-1")
        .and_then(|n| n.ledger_client())
        .context("c1-server-1 has no gateway")?;
    let mut lat = Vec::new();
    for n in 0..20u64 {
        let t = std::time::Instant::now();
        client
            .submit(federact_actors::loadgen::bench_record(u64::MAX - n))
            .await
            .context("commit-delay probe")?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    Ok(Latencies::from_micros(lat).quantile_ms(0.5))
}

/// What the steps of one federation share.
struct Run {
    servers: Servers,
    images: PathBuf,
    /// Migration numbers (image names, source/destination choice).
    seq: AtomicU64,
    block: u32,
    drain: Duration,
    secs: f64,
    image_kib: usize,
}

impl Run {
    /// One migration of `scope` must complete (chains elected, connections up).
    async fn warm_up(&self, scope: Scope) -> anyhow::Result<()> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let img = write_image(&self.images, n, self.image_kib)?;
        let (src, to) = self.servers.pair(n, scope);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let r = src
                .send(StartMigration {
                    image: img.clone(),
                    destination: to.clone(),
                    tamper: false,
                })
                .await;
            match r {
                Ok(Ok(rep)) if rep.completed => return Ok(()),
                other if tokio::time::Instant::now() >= deadline => {
                    bail!(
                        "warm-up {} migration did not complete within 60 s: {other:?}",
                        scope.name()
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Migrations of `scope` started open-loop at `rate` for the step's
    /// seconds; `baseline` is the unloaded median (set by the first step).
    async fn step(
        &self,
        scope: Scope,
        rate: u64,
        baseline: &mut Option<f64>,
    ) -> anyhow::Result<Step> {
        let (block, secs) = (self.block, self.secs);
        let total = (rate as f64 * secs).round() as u64;
        // Images are written before the clock starts; numbers are taken
        // from the shared sequence, so concurrent steps never share one.
        let first = self.seq.fetch_add(total, Ordering::Relaxed);
        for n in first..first + total {
            write_image(&self.images, n, self.image_kib)?;
        }
        let next = AtomicU64::new(first);
        let pb = bar(total, format!("block {block} {} {rate}/s", scope.name()));
        let cpu0 = super::procs::own_cpu_s();
        let t0 = epoch_ms();
        let images = &self.images;
        let servers = &self.servers;
        let step = open_loop_drain(
            rate,
            Duration::from_secs_f64(secs),
            (rate * 3).max(256),
            Some(self.drain),
            &next,
            |n| {
                let (src, to) = servers.pair(n, scope);
                let (src, image) = (src.clone(), image_path(images, n));
                async move {
                    match src
                        .send(StartMigration {
                            image,
                            destination: to,
                            tamper: false,
                        })
                        .await
                    {
                        Ok(Ok(r)) if r.completed => Ok(()),
                        Ok(Ok(r)) => Err(format!("aborted: {}", r.reason.unwrap_or_default())),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
            |n| pb.set_position(n),
        )
        .await;
        let t1 = epoch_ms();
        let cpu_s = super::procs::own_cpu_s() - cpu0;
        pb.finish_and_clear();
        for n in first..first + total {
            let _ = std::fs::remove_file(image_path(images, n));
        }
        let (early, late) = trend(&step, secs);
        let base = *baseline.get_or_insert(step.latencies.quantile_ms(0.5));
        let bounded = step.failed == 0
            && step.shed == 0
            && step.unfinished == 0
            && step.completed == step.started
            && late <= 2.0 * early + 50.0
            && late <= 2.0 * base + 50.0;
        eprintln!(
            "block {block:>2} {:<5} {rate:>5}/s: {:>6.0} done/s, p50 {:>8.1} ms, p99 {:>8.1} ms, early/late p50 {early:.1}/{late:.1} ms, failed {}, shed {}, unfinished {}{}",
            scope.name(),
            step.completed_per_s(),
            step.latencies.quantile_ms(0.5),
            step.latencies.quantile_ms(0.99),
            step.failed,
            step.shed,
            step.unfinished,
            if bounded { "" } else { "  (unbounded)" }
        );
        Ok(Step {
            block,
            scope,
            x: 0,
            window_ms: (t0, t1),
            blocks: BlockStats::default(),
            commit_p50_ms: None,
            step,
            cpu_s,
            early_p50_ms: early,
            late_p50_ms: late,
            bounded,
        })
    }
}

/// Wall-clock milliseconds since the epoch (block timestamps' clock).
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Blocks committed during a step, per kind of chain.
#[derive(Debug, Clone, Copy, Default)]
struct BlockStats {
    /// Blocks of all clouds' local chains.
    local: u64,
    /// Mean time between consecutive blocks of one local chain (ms).
    local_gap_ms: Option<f64>,
    /// Blocks of the consortium chain.
    consortium: u64,
    /// Mean time between consecutive consortium blocks (ms).
    consortium_gap_ms: Option<f64>,
}

/// Reads the blocks proposed within `window` from the first validator's
/// store of each chain (the run's nodes have stopped).
fn block_stats(dir: &Path, topo: &Topology, (from, to): (u64, u64)) -> BlockStats {
    let times = |node: &str, chain: &str| -> Vec<u64> {
        let path = dir
            .join("data")
            .join(node)
            .join("chains")
            .join(chain)
            .join("chain");
        let Ok(store) = federact::ledger::store::ChainStore::open(&path, None) else {
            return Vec::new();
        };
        (1..=store.tip().height)
            .filter_map(|h| store.block(h).ok().flatten())
            .map(|b| b.header.timestamp_ms)
            .filter(|t| (from..=to).contains(t))
            .collect()
    };
    let gap =
        |t: &[u64]| (t.len() >= 2).then(|| (t[t.len() - 1] - t[0]) as f64 / (t.len() - 1) as f64);
    let mut stats = BlockStats::default();
    let mut gaps = Vec::new();
    for c in 1..=topo.clouds {
        let t = times(&format!("c{c}-validator-1"), &format!("cloud-{c}.local"));
        stats.local += t.len() as u64;
        gaps.extend(gap(&t));
    }
    if !gaps.is_empty() {
        stats.local_gap_ms = Some(gaps.iter().sum::<f64>() / gaps.len() as f64);
    }
    if topo.inter_validators > 0 && topo.clouds > 1 {
        let t = times("c1-inter-1", "consortium");
        stats.consortium = t.len() as u64;
        stats.consortium_gap_ms = gap(&t);
    }
    stats
}

/// UDP relays in front of the servers and the inter validators, adding the
/// emulated one-way inter-cloud delay.
///
/// A relay delays every datagram to and from its node, whoever the peer
/// is, so the delay is placed where inter-cloud traffic goes: on the inter
/// validators (the consortium's consensus runs between clouds) always, and
/// on the servers (image transfer and protocol notices between source and
/// destination) only while inter-cloud migrations run. Consortium traffic
/// between two inter validators of the same cloud, and between a gateway
/// and its own cloud's inter validators, is delayed too: an overestimate
/// of the inter-cloud delay, never an underestimate.
struct Relays {
    delay: Duration,
    servers: Vec<federact::federation::netem::Relay>,
    _inter: Vec<federact::federation::netem::Relay>,
}

impl Relays {
    fn set_scope(&self, scope: Scope) {
        let d = match scope {
            Scope::Local => Duration::ZERO,
            Scope::Inter => self.delay,
        };
        for r in &self.servers {
            r.handle().set_delay(d, Duration::ZERO);
        }
    }
}

async fn start_relays(dir: &Path, delay_ms: u64) -> anyhow::Result<Relays> {
    use federact::federation::netem::{Relay, RelayOptions};
    let fed = federact::config::Federation::load(&dir.join("federation.toml"))?;
    let delay = Duration::from_millis(delay_ms);
    let (mut servers, mut inter) = (Vec::new(), Vec::new());
    for (i, n) in fed.nodes().iter().enumerate() {
        let is_server = n.name().contains("-server-");
        if !is_server && !n.name().contains("-inter-") {
            continue;
        }
        // The node binds a fresh port; peers keep dialling its `listen`
        // address, where the relay now sits.
        let bind = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let file = dir.join("nodes").join(format!("{}.toml", n.name()));
        let mut text = std::fs::read_to_string(&file)?;
        text.push_str(&format!("bind = \"{bind}\"\n"));
        std::fs::write(&file, text)?;
        let relay = Relay::start(
            n.listen(),
            bind,
            RelayOptions {
                seed: i as u64,
                sessions_max: 1024,
                in_flight_max: 1 << 20,
            },
        )
        .await
        .with_context(|| format!("starting the relay in front of {}", n.name()))?;
        relay.handle().set_delay(delay, Duration::ZERO);
        if is_server {
            servers.push(relay);
        } else {
            inter.push(relay);
        }
    }
    Ok(Relays {
        delay,
        servers,
        _inter: inter,
    })
}

/// What a migration costs in CPU beyond the idle federation, from two
/// steps of one sweep (CPU seconds per second against completed
/// migrations per second, over each step's whole window).
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuCost {
    /// CPU ms each further migration per second adds.
    marginal_ms: f64,
    /// Cores the federation uses with no migrations (the line's intercept).
    idle_cores: f64,
}

impl CpuCost {
    fn between(lo: &Step, hi: &Step) -> Option<CpuCost> {
        let point = |s: &Step| {
            let secs = s.window_ms.1.saturating_sub(s.window_ms.0) as f64 / 1000.0;
            (secs > 0.0).then(|| (s.step.completed as f64 / secs, s.cpu_s / secs))
        };
        let ((x0, y0), (x1, y1)) = (point(lo)?, point(hi)?);
        if x1 - x0 < 1.0 {
            return None;
        }
        let slope = (y1 - y0) / (x1 - x0);
        (slope > 0.0).then(|| CpuCost {
            marginal_ms: slope * 1000.0,
            idle_cores: (y0 - slope * x0).max(0.0),
        })
    }

    /// Migrations per second that `cores` would carry at this cost.
    fn bound_per_s(&self, cores: f64) -> f64 {
        (cores - self.idle_cores).max(0.0) * 1000.0 / self.marginal_ms
    }
}

/// CPU milliseconds per completed migration (all nodes and the driver).
fn cpu_ms_per_migration(s: &Step) -> f64 {
    if s.step.completed == 0 {
        return 0.0;
    }
    s.cpu_s * 1000.0 / s.step.completed as f64
}

fn image_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("vm-{n}.img"))
}

/// A `kib`-KiB image whose content (hence vm id) is unique to `n`.
fn write_image(dir: &Path, n: u64, kib: usize) -> anyhow::Result<PathBuf> {
    let path = image_path(dir, n);
    let mut file = std::fs::File::create(&path)?;
    let mut block = vec![0u8; 1024];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    block[..8].copy_from_slice(&n.to_be_bytes());
    for _ in 0..kib.max(1) {
        file.write_all(&block)?;
    }
    Ok(path)
}

/// Median delay of migrations started in the first and the last third of the step.
fn trend(step: &RateStep, secs: f64) -> (f64, f64) {
    let third = secs * 1000.0 / 3.0;
    let pick = |lo: f64, hi: f64| {
        Latencies::from_micros(
            step.timeline_ms
                .iter()
                .filter(|(t, _)| *t >= lo && *t < hi)
                .map(|(_, d)| (d * 1000.0) as u64)
                .collect(),
        )
        .quantile_ms(0.5)
    };
    (pick(0.0, third), pick(2.0 * third, f64::MAX))
}

fn write_report(
    r: &mut Report,
    a: &MigrationArgs,
    topo: &Topology,
    secs: f64,
    steps: &[Step],
) -> anyhow::Result<()> {
    r.text(&format!(
        "Federation: {} clouds, {} servers and {} local validators per cloud, {} inter validators (consortium), batch_timeout_ms 20, durable sled, loopback QUIC; every node in this process (embedded). Emulated one-way inter-cloud delay: {} ms (user-space UDP relays in front of the inter validators, and of the servers during inter-cloud runs; 0 = no relays). Images of {} KiB, each unique. {secs} s per rate; migrations start open-loop, round-robin over the source servers.\n",
        topo.clouds, topo.servers_per_cloud, topo.local_validators, topo.inter_validators, a.delay_ms, a.image_kib
    ));
    r.text("Delay = request at the source server's migration actor → last record committed (local: Confirmation; inter: Leave). Unfinished = still running when the step's drain limit passed (abandoned). Bounded = all started migrations completed, none shed, and the median delay of the migrations started in the last third of the step ≤ 2 × that of the first third + 50 ms and ≤ 2 × the lowest rate's median + 50 ms.\n");
    r.text("## Stability limit (highest bounded rate)\n");
    let mut lim_rows = Vec::new();
    let mut cpu_lines = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut pairs: Vec<(u32, Scope)> = steps.iter().map(|s| (s.block, s.scope)).collect();
    pairs.dedup();
    for (block, scope) in &pairs {
        let of: Vec<&Step> = steps
            .iter()
            .filter(|s| s.block == *block && s.scope == *scope)
            .collect();
        // The highest step of the ascending sweep below the first unbounded one.
        let top = of.iter().take_while(|s| s.bounded).last();
        let limit = top.map(|s| s.step.offered_per_s);
        let tested_all = of.iter().all(|s| s.bounded);
        let low = of.first().map(|s| s.step.latencies.quantile_ms(0.5));
        lim_rows.push(vec![
            block.to_string(),
            scope.name().to_string(),
            match (limit, tested_all) {
                (Some(l), true) => format!("≥ {l} (highest tested)"),
                (Some(l), false) => l.to_string(),
                (None, _) => format!("< {}", of.first().map_or(0, |s| s.step.offered_per_s)),
            },
            low.map_or("-".into(), |x| f(x, 1)),
        ]);
        if let (Some(lo), Some(hi)) = (of.first(), top) {
            if let Some(c) = CpuCost::between(lo, hi) {
                cpu_lines.push(format!(
                    "CPU per {} migration, block size {block} (all nodes and the driver): {} ms at {}/s; marginal {} ms (slope of CPU time against completed migrations from {}/s to {}/s, which leaves out the idle federation's own {} % of a core): {cores} cores would bound the rate near {}/s.\n",
                    scope.name(),
                    f(cpu_ms_per_migration(hi), 2),
                    hi.step.offered_per_s,
                    f(c.marginal_ms, 2),
                    lo.step.offered_per_s,
                    hi.step.offered_per_s,
                    f(c.idle_cores * 100.0, 0),
                    f(c.bound_per_s(cores), 0),
                ));
            }
        }
    }
    let lh = [
        "block size",
        "scope",
        "stability limit (migrations/s)",
        "p50 delay at the lowest rate (ms)",
    ];
    r.table(&lh, &lim_rows);
    r.csv("stability.csv", &lh, &lim_rows)?;
    for line in &cpu_lines {
        r.text(line);
    }
    r.text(&format!(
        "Goals (issue 12): local stability limit ≥ 2,560/s (10× BASICS' 128–256/s in simulation); inter-cloud p50 at low rate ≤ 3 × one-way delay + 20 ms = {} ms here.\n",
        3 * a.delay_ms + 20
    ));
    r.text("## Delay vs rate\n");
    let header = [
        "block size",
        "scope",
        "rate/s",
        "started",
        "completed",
        "failed",
        "shed",
        "unfinished",
        "completed/s",
        "avg ms",
        "p50 ms",
        "p99 ms",
        "max ms",
        "first-third p50 ms",
        "last-third p50 ms",
        "bounded",
        "CPU % (of one core)",
        "CPU ms per migration",
    ]
    .into_iter()
    .chain(BLOCK_COLUMNS)
    .collect::<Vec<_>>();
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let st = &s.step;
            let mut row = vec![
                s.block.to_string(),
                s.scope.name().to_string(),
                st.offered_per_s.to_string(),
                st.started.to_string(),
                st.completed.to_string(),
                st.failed.to_string(),
                st.shed.to_string(),
                st.unfinished.to_string(),
                f(st.completed_per_s(), 0),
                f(st.latencies.mean_ms(), 1),
                f(st.latencies.quantile_ms(0.5), 1),
                f(st.latencies.quantile_ms(0.99), 1),
                f(st.latencies.max_ms(), 1),
                f(s.early_p50_ms, 1),
                f(s.late_p50_ms, 1),
                s.bounded.to_string(),
                f(s.cpu_s / st.elapsed_s.max(1e-9) * 100.0, 0),
                f(cpu_ms_per_migration(s), 2),
            ];
            row.extend(block_cells(&s.blocks));
            row
        })
        .collect();
    r.text("Blocks = blocks whose proposal time falls in the step (all clouds' local chains summed; the consortium); inter-block = mean time between consecutive blocks of one chain during the step (BASICS Fig. 6(b), 8).\n");
    r.table(&header, &rows);
    r.csv("delay_vs_rate.csv", &header, &rows)?;
    if let Some(e) = steps.iter().find_map(|s| s.step.first_error.clone()) {
        r.text(&format!("First failure seen: `{e}`\n"));
    }
    let raw: Vec<Vec<String>> = steps
        .iter()
        .flat_map(|s| {
            s.step.timeline_ms.iter().map(move |(t, d)| {
                vec![
                    s.block.to_string(),
                    s.scope.name().to_string(),
                    s.step.offered_per_s.to_string(),
                    f(*t, 3),
                    f(*d, 3),
                ]
            })
        })
        .collect();
    r.csv(
        "migrations.csv",
        &["block_size", "scope", "rate", "start_ms", "delay_ms"],
        &raw,
    )?;
    let series: Vec<Series> = pairs
        .iter()
        .map(|(block, scope)| Series {
            name: format!("{} block {block} (p50)", scope.name()),
            points: steps
                .iter()
                .filter(|s| s.block == *block && s.scope == *scope)
                .map(|s| {
                    (
                        s.step.offered_per_s as f64,
                        s.step.latencies.quantile_ms(0.5).max(0.01),
                    )
                })
                .collect(),
        })
        .collect();
    r.plot(
        "delay_vs_rate.svg",
        "Migration delay vs migration rate",
        "migrations/s",
        "p50 delay ms (log)",
        &series,
        Axes::LogXY,
    )?;
    let gaps: Vec<Series> = pairs
        .iter()
        .map(|(block, scope)| Series {
            name: format!("{} block {block}", scope.name()),
            points: steps
                .iter()
                .filter(|s| s.block == *block && s.scope == *scope)
                .filter_map(|s| {
                    let g = match scope {
                        Scope::Local => s.blocks.local_gap_ms,
                        Scope::Inter => s.blocks.consortium_gap_ms,
                    };
                    g.map(|g| (s.step.offered_per_s as f64, g.max(0.01)))
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !gaps.is_empty() {
        r.plot(
            "interblock_vs_rate.svg",
            "Inter-block delay of the chain the migrations commit on",
            "migrations/s",
            "mean inter-block delay ms (log)",
            &gaps,
            Axes::LogXY,
        )?;
    }
    Ok(())
}

/// Report columns of a step's block statistics ([`block_cells`]).
const BLOCK_COLUMNS: [&str; 4] = [
    "local blocks",
    "local inter-block ms",
    "consortium blocks",
    "consortium inter-block ms",
];

/// Report cells of a step's block statistics.
fn block_cells(b: &BlockStats) -> Vec<String> {
    let ms = |g: Option<f64>| g.map_or("-".into(), |g| f(g, 1));
    vec![
        b.local.to_string(),
        ms(b.local_gap_ms),
        b.consortium.to_string(),
        ms(b.consortium_gap_ms),
    ]
}

/// The report of `--experiment validators|clouds`: one row per (compared
/// value, scope), delay and blocks vs the compared value.
fn write_compare_report(
    r: &mut Report,
    a: &MigrationArgs,
    topo: &Topology,
    secs: f64,
    steps: &[Step],
) -> anyhow::Result<()> {
    let block = a.block_sizes[0];
    let (what, x_label) = match a.experiment {
        Experiment::Validators => {
            r.text(&format!(
                "BASICS Fig. 5: local migration delay vs the number of local validators. One cloud with {} servers; local migrations at {}/s for {secs} s per validator count; block size {block}, batch_timeout_ms 20, durable sled, loopback QUIC, every node in this process. Commit delay = submit → commit of one transaction at a time on the idle chain after the step (p50 of 20).\n",
                topo.servers_per_cloud, a.rate
            ));
            ("validators", "local validators")
        }
        _ => {
            r.text(&format!(
                "BASICS Fig. 9: migration delay and number of blocks vs the number of clouds. Each cloud: {} servers, {} local validators; {} inter validators run the consortium; each cloud starts {} local and {} inter-cloud migrations per second (BASICS' 4:1) for {secs} s, all at once; block size {block}, durable sled, loopback QUIC, emulated one-way inter-cloud delay {} ms; every node in this process.\n",
                topo.servers_per_cloud,
                topo.local_validators,
                topo.inter_validators,
                a.rate,
                (a.rate / 4).max(1),
                a.delay_ms
            ));
            ("clouds", "clouds")
        }
    };
    r.text("Delay = request at the source server's migration actor → last record committed (local: Confirmation; inter: Leave). Blocks = blocks proposed during the step (local: all clouds' chains summed); inter-block = mean time between consecutive blocks of one chain.\n");
    let header = [
        what,
        "scope",
        "rate/s (total)",
        "started",
        "completed",
        "failed",
        "unfinished",
        "p50 ms",
        "p99 ms",
        "max ms",
        "commit delay p50 ms",
    ]
    .into_iter()
    .chain(BLOCK_COLUMNS)
    .collect::<Vec<_>>();
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let st = &s.step;
            let mut row = vec![
                s.x.to_string(),
                s.scope.name().to_string(),
                st.offered_per_s.to_string(),
                st.started.to_string(),
                st.completed.to_string(),
                st.failed.to_string(),
                st.unfinished.to_string(),
                f(st.latencies.quantile_ms(0.5), 1),
                f(st.latencies.quantile_ms(0.99), 1),
                f(st.latencies.max_ms(), 1),
                s.commit_p50_ms.map_or("-".into(), |x| f(x, 1)),
            ];
            row.extend(block_cells(&s.blocks));
            row
        })
        .collect();
    r.table(&header, &rows);
    let csv = format!("delay_vs_{what}.csv");
    r.csv(&csv, &header, &rows)?;
    if let Some(e) = steps.iter().find_map(|s| s.step.first_error.clone()) {
        r.text(&format!("First failure seen: `{e}`\n"));
    }
    let mut series = Vec::new();
    for scope in [Scope::Local, Scope::Inter] {
        let points: Vec<(f64, f64)> = steps
            .iter()
            .filter(|s| s.scope == scope && s.step.completed > 0)
            .map(|s| (s.x as f64, s.step.latencies.quantile_ms(0.5).max(0.01)))
            .collect();
        if !points.is_empty() {
            series.push(Series {
                name: format!("{} migration p50", scope.name()),
                points,
            });
        }
    }
    let commit: Vec<(f64, f64)> = steps
        .iter()
        .filter(|s| s.scope == Scope::Local)
        .filter_map(|s| s.commit_p50_ms.map(|c| (s.x as f64, c.max(0.01))))
        .collect();
    if !commit.is_empty() {
        series.push(Series {
            name: "commit delay p50".into(),
            points: commit,
        });
    }
    r.plot(
        &format!("delay_vs_{what}.svg"),
        &format!("Delay vs {x_label}"),
        x_label,
        "p50 delay ms (log)",
        &series,
        Axes::LogY,
    )?;
    if a.experiment == Experiment::Clouds {
        let pick = |local: bool| -> Vec<(f64, f64)> {
            steps
                .iter()
                .filter(|s| s.scope == Scope::Local)
                .map(|s| {
                    let b = if local {
                        s.blocks.local
                    } else {
                        s.blocks.consortium
                    };
                    (s.x as f64, b as f64)
                })
                .collect()
        };
        r.plot(
            "blocks_vs_clouds.svg",
            "Blocks committed during the step vs clouds",
            "clouds",
            "blocks",
            &[
                Series {
                    name: "local chains (sum)".into(),
                    points: pick(true),
                },
                Series {
                    name: "consortium".into(),
                    points: pick(false),
                },
            ],
            Axes::Linear,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(completed_per_s: u64, cores: f64) -> Step {
        Step {
            block: 16,
            scope: Scope::Local,
            x: 0,
            window_ms: (1_000, 11_000),
            blocks: BlockStats::default(),
            commit_p50_ms: None,
            step: RateStep {
                offered_per_s: completed_per_s,
                completed: completed_per_s * 10,
                ..RateStep::default()
            },
            cpu_s: cores * 10.0,
            early_p50_ms: 0.0,
            late_p50_ms: 0.0,
            bounded: true,
        }
    }

    #[test]
    fn marginal_cpu_cost_leaves_out_the_idle_federation() {
        // 0.15 cores idle, 10 ms per migration: 1/s uses 0.16 cores,
        // 128/s 1.43 cores. Per migration at 1/s it looks like 160 ms.
        let c = CpuCost::between(&step(1, 0.16), &step(128, 1.43)).unwrap();
        assert!((c.marginal_ms - 10.0).abs() < 1e-9, "{c:?}");
        assert!((c.idle_cores - 0.15).abs() < 1e-9, "{c:?}");
        assert!((c.bound_per_s(2.0) - 185.0).abs() < 1e-6, "{c:?}");
        assert!((cpu_ms_per_migration(&step(1, 0.16)) - 160.0).abs() < 1e-9);
    }

    #[test]
    fn no_marginal_cost_from_one_rate_or_a_falling_line() {
        assert_eq!(CpuCost::between(&step(8, 0.5), &step(8, 0.6)), None);
        assert_eq!(CpuCost::between(&step(8, 0.5), &step(64, 0.4)), None);
    }
}
