//! `federact demo`: a whole federation in one process — every node over
//! real loopback QUIC with real sled stores — and a scenario that exercises
//! every capability, then a summary read back from the chain stores.
//!
//! Phases: start the nodes; call stateful function instances (placed by
//! the orchestrators, provenance on the local chains); saturate servers so
//! tasks offload inside a cloud and across clouds; migrate a VM image
//! inside a cloud and then across clouds (BASICS protocol, cross-chain
//! proofs); a tampered migration rejected; a validator killed while its
//! chain keeps committing, then restarted and caught up. After the nodes
//! stop, every validator's store is verified and compared with the other
//! validators of its chain.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use federact::actors::migration::{hash_file, migration_outcome, request_migration};
use federact::actors::wire::{self, MigrationReport};
use federact::actors::{EmbeddedFederation, Invoker, NodeOptions, ServerLimits};
use federact::config::{write_local_federation, Federation, NodeConfig, NodeSpec, Role, Topology};
use federact::ledger::hash::Hash;
use federact::ledger::record::{Record, Scope, Site};
use federact::ledger::store::ChainStore;
use federact::ledger::verify::verify_open_store;

use super::up::{wait_committed, Procs};

/// Calls a server runs at once in the demo: small, so bursts of tasks
/// saturate servers and offload.
const INFLIGHT_MAX: u32 = 4;

/// Arguments of `federact demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the federation (keys, configs, chain stores) in DIR for
    /// `federact ledger ...` afterwards (DIR must not hold a federation).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// The federation's shape.
    #[arg(long, value_enum, default_value_t = Shape::Small)]
    topology: Shape,
    /// Size of the migrated VM image, in MiB.
    #[arg(long, default_value_t = 8)]
    image_mib: u64,
    /// Run each node as its own OS process (`federact node`) instead of
    /// all in this process; the scenario is the same.
    #[arg(long)]
    processes: bool,
}

/// The demo federation's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// 3 clouds, each with a gateway, an orchestrator, 2 servers and 4
    /// local validators; 4 inter validators run the consortium (28 nodes).
    Small,
    /// BASICS Table I: 4 clouds × 4 local validators, 12 inter validators,
    /// plus a gateway, an orchestrator and 2 servers per cloud (44 nodes).
    Table1,
}

impl Shape {
    fn topology(self) -> Topology {
        match self {
            Shape::Small => Topology {
                clouds: 3,
                servers_per_cloud: 2,
                local_validators: 4,
                inter_validators: 4,
            },
            Shape::Table1 => Topology::default(),
        }
    }
}

/// Runs the demo; fails (non-zero exit) if any check fails.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let topo = args.topology.topology();
    let (_tmp, dir) = match &args.keep {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("federact-demo-")
                .tempdir()
                .context("creating a temporary directory")?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    write_local_federation(&dir, &topo, false)
        .with_context(|| format!("writing the demo federation into {}", dir.display()))?;
    let federation = Federation::load(&dir.join("federation.toml"))?;
    let running = federation
        .nodes()
        .iter()
        .filter(|n| n.roles().runs_actors())
        .count();
    println!(
        "federact demo: {} clouds, {} nodes {} over loopback QUIC, {} chains on sled in {}\n",
        federation.clouds().len(),
        running,
        if args.processes {
            "as separate processes"
        } else {
            "in this process"
        },
        federation.chains().len(),
        dir.display()
    );
    let mut report = Report::default();
    let scenario = if args.processes {
        in_processes(&dir, &federation, args, &mut report)
    } else {
        actix::System::new().block_on(in_process(&dir, &federation, args, &mut report))
    };
    if let Err(e) = &scenario {
        report.check("scenario ran to the end", false, format!("{e:#}"));
    }
    let stores = phase("verify every chain store", || {
        check_stores(&dir, &federation, &mut report)
    });
    if let Err(e) = &stores {
        report.check("chain stores readable", false, format!("{e:#}"));
    }
    report.print(&federation, started.elapsed());
    if args.keep.is_some() {
        println!(
            "\nThe federation is kept in {d}. Try:\n  federact ledger verify {d}/data/c1-validator-1/chains/cloud-1.local/chain\n  federact ledger show {d}/data/c1-validator-1/chains/cloud-1.local/chain",
            d = dir.display()
        );
        if let Some(vm) = report.vm {
            println!(
                "  federact ledger history --vm {vm} {d}/data/c1-validator-1/chains/cloud-1.local/chain {d}/data/c2-validator-1/chains/cloud-2.local/chain {d}/data/c1-inter-1/chains/consortium/chain",
                d = dir.display()
            );
        }
    }
    let failed = report.checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// What the demo measured and checked.
#[derive(Default)]
struct Report {
    checks: Vec<Check>,
    lines: Vec<(String, String)>,
    chains: Vec<ChainSummary>,
    vm: Option<Hash>,
    history: Vec<String>,
}

struct Check {
    name: String,
    ok: bool,
    detail: String,
}

struct ChainSummary {
    chain: String,
    validators: usize,
    height: u64,
    txs: u64,
    kinds: BTreeMap<String, u64>,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        });
    }

    fn line(&mut self, what: &str, value: impl Into<String>) {
        self.lines.push((what.to_string(), value.into()));
    }

    fn print(&self, federation: &Federation, elapsed: Duration) {
        println!("\n== what the chains recorded ==");
        println!(
            "{:<16} {:>10} {:>7} {:>6}  records by kind",
            "chain", "validators", "height", "txs"
        );
        for c in &self.chains {
            let kinds: Vec<String> = c.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!(
                "{:<16} {:>10} {:>7} {:>6}  {}",
                c.chain,
                c.validators,
                c.height,
                c.txs,
                kinds.join(", ")
            );
        }
        println!("\n== measured ==");
        for (what, value) in &self.lines {
            println!("{what:<34} {value}");
        }
        if let Some(vm) = &self.vm {
            println!(
                "\n== history of vm {} (every hop, from the chains) ==",
                vm.short()
            );
            for h in &self.history {
                println!("{h}");
            }
        }
        println!("\n== checks ==");
        for c in &self.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            println!("{mark} {:<46} {}", c.name, c.detail);
        }
        let failed = self.checks.iter().filter(|c| !c.ok).count();
        println!(
            "\ndemo {} in {:.1} s: {} clouds, {} checks, {} failed",
            if failed == 0 { "passed" } else { "FAILED" },
            elapsed.as_secs_f64(),
            federation.clouds().len(),
            self.checks.len(),
            failed
        );
    }
}

/// Runs `f` under a spinner named `name`; prints its outcome on stdout.
fn phase<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let bar = spinner(name);
    let t = Instant::now();
    let out = f();
    finish(bar, name, t, out.as_ref().err().map(|e| format!("{e:#}")));
    out
}

fn spinner(name: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(name.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn finish(bar: ProgressBar, name: &str, t: Instant, error: Option<String>) {
    bar.finish_and_clear();
    match error {
        None => println!("✔ {name:<44} {:>6.2} s", t.elapsed().as_secs_f64()),
        Some(e) => println!("✘ {name:<44} {:>6.2} s  {e}", t.elapsed().as_secs_f64()),
    }
    let _ = std::io::stdout().flush();
}

/// Runs an async phase under a spinner.
async fn aphase<T, F>(name: &str, f: F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let bar = spinner(name);
    let t = Instant::now();
    let out = f.await;
    finish(bar, name, t, out.as_ref().err().map(|e| format!("{e:#}")));
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// "N calls, p50 … p99 … max …" of sorted latencies.
fn latencies(sorted: &[Duration]) -> String {
    format!(
        "{} calls, p50 {} p99 {} max {}",
        sorted.len(),
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99)),
        ms(percentile(sorted, 1.0))
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn first_server(federation: &Federation, cloud: &str, k: usize) -> anyhow::Result<String> {
    federation
        .nodes_with_role(cloud, Role::Server)
        .nth(k)
        .map(|n| n.name().to_string())
        .with_context(|| format!("cloud {cloud} has no server #{}", k + 1))
}

fn cloud_names(federation: &Federation) -> anyhow::Result<Vec<String>> {
    let clouds: Vec<String> = federation
        .clouds()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    if clouds.len() < 2 {
        bail!("the demo needs at least two clouds");
    }
    Ok(clouds)
}

/// Every node in this process (one actix system), driven over QUIC.
async fn in_process(
    dir: &Path,
    federation: &Federation,
    args: &DemoArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let clouds = cloud_names(federation)?;
    let options = federact::builtin::register(NodeOptions::default()).server_limits(ServerLimits {
        inflight_max: INFLIGHT_MAX,
        ..ServerLimits::default()
    });
    let fed = aphase("start the nodes", async {
        EmbeddedFederation::start_with(dir, options)
            .await
            .context("starting the federation")
    })
    .await?;
    let mut nodes = Nodes::InProcess(Box::new(fed));
    let result = drive(&mut nodes, federation, &clouds, dir, args, report).await;
    aphase("stop the nodes (stores flush)", async {
        nodes.shutdown().await;
        Ok(())
    })
    .await?;
    result
}

/// Every node as its own `federact node` process, driven over QUIC.
fn in_processes(
    dir: &Path,
    federation: &Federation,
    args: &DemoArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let clouds = cloud_names(federation)?;
    let procs = phase("start the node processes", || {
        let mut p = Procs::new(
            dir,
            "warn",
            vec!["--inflight-max".into(), INFLIGHT_MAX.to_string()],
        )?;
        p.spawn_all(federation, false)?;
        p.wait_listening(Duration::from_secs(90))?;
        Ok(p)
    })?;
    let mut nodes = Nodes::Processes(procs);
    phase("every chain commits a block", || {
        wait_committed(dir, federation, Duration::from_secs(90))
    })?;
    let result = actix::System::new()
        .block_on(async { drive(&mut nodes, federation, &clouds, dir, args, report).await });
    phase("stop the node processes (stores flush)", || {
        actix::System::new().block_on(nodes.shutdown());
        Ok(())
    })?;
    result
}

async fn drive(
    nodes: &mut Nodes,
    federation: &Federation,
    clouds: &[String],
    dir: &Path,
    args: &DemoArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let driver = Driver::connect(dir, federation).await?;
    let result = phases(&driver, nodes, federation, clouds, dir, args, report).await;
    driver.close().await;
    result
}

/// Where the nodes run: in this process, or one OS process each.
enum Nodes {
    InProcess(Box<EmbeddedFederation>),
    Processes(Procs),
}

impl Nodes {
    /// Takes node `name` down: a stop in this process, `kill -9` of its
    /// process otherwise.
    async fn take_down(&mut self, name: &str) {
        match self {
            Nodes::InProcess(fed) => fed.stop_node(name).await,
            Nodes::Processes(p) => p.kill(name),
        }
    }

    /// Starts node `name` again from its stores.
    async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        match self {
            Nodes::InProcess(fed) => fed.start_node(name).await.context("restarting"),
            Nodes::Processes(p) => {
                p.spawn(name)?;
                p.wait_listening(Duration::from_secs(30))
            }
        }
    }

    async fn shutdown(self) {
        match self {
            Nodes::InProcess(fed) => fed.shutdown().await,
            Nodes::Processes(mut p) => p.stop_all(),
        }
    }
}

/// Drives the federation over QUIC as each cloud's client identity (the
/// same requests in both modes).
struct Driver {
    federation: Federation,
    invokers: BTreeMap<String, Invoker>,
}

impl Driver {
    async fn connect(dir: &Path, federation: &Federation) -> anyhow::Result<Driver> {
        let mut invokers = BTreeMap::new();
        for cloud in federation.clouds() {
            let me = federation
                .nodes_with_role(cloud.name(), Role::Client)
                .next()
                .with_context(|| format!("cloud {} has no client identity", cloud.name()))?;
            let cfg = NodeConfig::load(&dir.join("nodes").join(format!("{}.toml", me.name())))?;
            let key = cfg.load_key()?;
            let inv = Invoker::connect(&cfg, key)
                .await
                .with_context(|| format!("connecting as {}", me.name()))?
                .with_timeout(Duration::from_secs(20));
            invokers.insert(cloud.name().to_string(), inv);
        }
        Ok(Driver {
            federation: federation.clone(),
            invokers,
        })
    }

    fn inv(&self, cloud: &str) -> anyhow::Result<&Invoker> {
        self.invokers
            .get(cloud)
            .with_context(|| format!("no client for cloud {cloud}"))
    }

    fn node(&self, name: &str) -> anyhow::Result<&NodeSpec> {
        self.federation
            .node(name)
            .with_context(|| format!("no node {name}"))
    }

    /// The invoker of `node`'s cloud.
    fn inv_of(&self, node: &str) -> anyhow::Result<&Invoker> {
        self.inv(self.node(node)?.cloud())
    }

    /// The tip height validator `node` has committed on `chain`.
    async fn tip(&self, node: &str, chain: &str) -> anyhow::Result<u64> {
        let reply = self
            .inv_of(node)?
            .transport()
            .request(
                self.node(node)?.id(),
                &wire::validator_actor(chain),
                wire::encode(&wire::ValidatorRequest::Tip),
                Duration::from_secs(5),
            )
            .await
            .with_context(|| format!("asking {node} for its tip"))?;
        match wire::decode::<wire::ValidatorResponse>(&reply)? {
            wire::ValidatorResponse::Tip(h) => Ok(h),
            other => bail!("{node} answered {other:?} to a tip request"),
        }
    }

    async fn migrate(
        &self,
        from: &str,
        image: &Path,
        to: Site,
        tamper: bool,
    ) -> anyhow::Result<MigrationReport> {
        let image = image.to_str().context("image path is not UTF-8")?;
        Ok(request_migration(
            self.inv_of(from)?.transport(),
            self.node(from)?.id(),
            image,
            to,
            tamper,
            Duration::from_secs(120),
        )
        .await?)
    }

    /// Waits (bounded) until `node`'s side of `migration_id` ended (the
    /// destination's Arrival may commit after the source's Leave).
    async fn outcome(&self, node: &str, migration_id: Hash) -> anyhow::Result<MigrationReport> {
        let (t, id) = (self.inv_of(node)?.transport(), self.node(node)?.id());
        let start = Instant::now();
        loop {
            if let Some(rep) =
                migration_outcome(t, id, migration_id, Duration::from_secs(5)).await?
            {
                return Ok(rep);
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "{node} did not finish migration {} in 30 s",
                    migration_id.short()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn close(&self) {
        for inv in self.invokers.values() {
            inv.close().await;
        }
    }
}

async fn phases(
    driver: &Driver,
    nodes: &mut Nodes,
    federation: &Federation,
    clouds: &[String],
    dir: &Path,
    args: &DemoArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (c1, c2) = (&clouds[0], &clouds[1]);
    let c1s1 = first_server(federation, c1, 0)?;
    let c1s2 = first_server(federation, c1, 1)?;
    let c2s1 = first_server(federation, c2, 0)?;
    let c2s2 = first_server(federation, c2, 1).unwrap_or_else(|_| c2s1.clone());
    let c3s1 = clouds
        .get(2)
        .map(|c| first_server(federation, c, 0))
        .transpose()?;

    // 1. Stateful instances, placed by the orchestrators.
    let (first, warm, instances) = aphase("invoke counters (placement on the ledger)", async {
        let mut first = Vec::new();
        let mut warm = Vec::new();
        let mut instances = 0;
        for cloud in [c1, c2] {
            let inv = driver.inv(cloud)?;
            let keys: Vec<String> = (1..=4).map(|i| format!("{cloud}-account-{i}")).collect();
            for round in 1..=5i64 {
                for key in &keys {
                    let t = Instant::now();
                    let out = inv
                        .invoke("counter", key, round.to_string())
                        .await
                        .with_context(|| format!("counter/{key}"))?;
                    let expected = round * (round + 1) / 2;
                    if out.as_ref() != expected.to_string().as_bytes() {
                        bail!(
                            "counter/{key} answered {} after round {round}, expected {expected}",
                            String::from_utf8_lossy(&out)
                        );
                    }
                    if round == 1 {
                        first.push(t.elapsed());
                        instances += 1;
                    } else {
                        warm.push(t.elapsed());
                    }
                }
            }
        }
        first.sort();
        warm.sort();
        Ok((first, warm, instances))
    })
    .await?;
    report.check(
        "counters keep their state across calls",
        true,
        format!("{instances} instances × 5 calls, totals exact"),
    );
    report.line("invoke, first call (placed+recorded)", latencies(&first));
    report.line("invoke, warm call", latencies(&warm));

    // 2. Offloading. Servers run 4 calls at once. `hashchain` tasks are
    // CPU work (a task that returns at once would leave its slot before the
    // next one arrives): 8 on one server, its neighbour takes the overflow;
    // 10 on each server of cloud 1 keep the whole cloud at its limit, so
    // its orchestrator finds executors abroad (which have 16 free slots).
    const ROUNDS: u64 = 20_000;
    let chain_answer = federact::builtin::hash_chain(ROUNDS);
    let hashchain = |_: u64| (ROUNDS.to_string(), chain_answer.clone());
    let local = aphase(
        "offload tasks inside a cloud",
        burst(
            driver,
            std::slice::from_ref(&c1s1),
            8,
            "hashchain",
            hashchain,
        ),
    )
    .await?;
    let abroad = aphase(
        "offload tasks across clouds",
        burst(
            driver,
            &[c1s1.clone(), c1s2.clone()],
            10,
            "hashchain",
            hashchain,
        ),
    )
    .await?;
    report.line("task, burst on one server", latencies(&local));
    report.line("task, burst on a whole cloud", latencies(&abroad));

    // 3. Migrations of one VM image: inside cloud 1, then to cloud 2 (and 3).
    let images = dir.join("images");
    std::fs::create_dir_all(&images).context("creating the image directory")?;
    let (image, vm) = write_image(&images.join("vm.img"), args.image_mib << 20, 7)?;
    report.vm = Some(vm);
    let mut hops = vec![(c1s1.clone(), c1.clone(), c1s2.clone())];
    hops.push((c1s2.clone(), c2.clone(), c2s1.clone()));
    if let (Some(c3), Some(s)) = (clouds.get(2), &c3s1) {
        hops.push((c2s1.clone(), c3.clone(), s.clone()));
    }
    let mut at = image.clone();
    for (k, (from, cloud, to)) in hops.iter().enumerate() {
        let scope = if driver.node(from)?.cloud() == cloud.as_str() {
            "inside"
        } else {
            "across clouds"
        };
        let name = format!("migrate vm {} {from} → {to} ({scope})", vm.short());
        let rep = aphase(
            &name,
            driver.migrate(from, &at, Site::new(cloud.clone(), to.clone()), false),
        )
        .await?;
        if !rep.completed {
            bail!("migration {k} aborted: {}", rep.reason.unwrap_or_default());
        }
        let dest = driver.outcome(to, rep.migration_id).await?;
        if !dest.completed {
            bail!(
                "{to} aborted migration {k}: {}",
                dest.reason.unwrap_or_default()
            );
        }
        report.line(
            &format!("migration {from} → {to}"),
            format!(
                "{} MiB, {} ms request → last record committed",
                rep.bytes >> 20,
                rep.elapsed_ms
            ),
        );
        // The destination keeps the image under its vm id: the next hop
        // starts from there.
        at = dir
            .join("data")
            .join(to)
            .join("migration/images")
            .join(vm.to_string());
        report.check(
            &format!("hop {}: image at {to} hashes to the vm id", k + 1),
            at.is_file() && hash_file(&at, u64::MAX).await?.0 == vm,
            at.display().to_string(),
        );
    }

    // 4. A tampered transfer: rejected on the ledger, image stays.
    let (bad, bad_vm) = write_image(&images.join("tampered.img"), 2 << 20, 9)?;
    let rep = aphase(
        &format!("migrate a tampered image {c1s1} → {c2s2}"),
        driver.migrate(&c1s1, &bad, Site::new(c2.clone(), c2s2.clone()), true),
    )
    .await?;
    report.check(
        "tampered migration rejected",
        !rep.completed,
        format!(
            "vm {}: {}",
            bad_vm.short(),
            rep.reason.clone().unwrap_or_else(|| "completed?!".into())
        ),
    );
    report.check(
        "rejected image stays at the source",
        bad.is_file(),
        bad.display().to_string(),
    );

    // 5. A validator dies; its chain keeps committing; it comes back.
    let chain2 = federation
        .local_chain(c2)
        .map(|c| c.id().to_string())
        .context("cloud 2 has no local chain")?;
    let victims: Vec<String> = federation
        .chain(&chain2)
        .map(|c| validator_names(federation, c.validators()))
        .unwrap_or_default();
    let (victim, witness) = match (victims.last(), victims.first()) {
        (Some(v), Some(w)) if victims.len() >= 4 => (v.clone(), w.clone()),
        _ => bail!("chain {chain2} needs 4 validators to lose one"),
    };
    let before = aphase(
        &format!("kill {victim}; {chain2} keeps committing"),
        async {
            let before = driver.tip(&witness, &chain2).await?;
            nodes.take_down(&victim).await;
            let inv = driver.inv(c2)?;
            for i in 1..=4 {
                inv.invoke("counter", &format!("after-kill-{i}"), "1")
                    .await
                    .context("invoking while a validator is down")?;
            }
            let after = driver.tip(&witness, &chain2).await?;
            if after <= before {
                bail!("{chain2} did not advance while {victim} was down ({before} → {after})");
            }
            Ok((before, after))
        },
    )
    .await?;
    report.check(
        &format!("{chain2} commits with 3 of 4 validators"),
        true,
        format!("height {} → {}", before.0, before.1),
    );
    let caught = aphase(&format!("restart {victim}; it catches up"), async {
        let t = Instant::now();
        nodes.restart(&victim).await?;
        let target = driver.tip(&witness, &chain2).await?;
        loop {
            let h = driver.tip(&victim, &chain2).await.unwrap_or(0);
            if h >= target {
                return Ok((h, t.elapsed()));
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("{victim} at height {h}, chain at {target} after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    report.check(
        &format!("{victim} caught up after restart"),
        true,
        format!("height {} in {}", caught.0, ms(caught.1)),
    );
    Ok(())
}

fn validator_names(federation: &Federation, ids: &[federact::config::NodeId]) -> Vec<String> {
    ids.iter()
        .filter_map(|id| federation.node_by_id(id).map(|n| n.name().to_string()))
        .collect()
}

/// Hands `per` concurrent tasks of `function` to each of `servers` (each
/// server runs what it has room for and offloads the rest); `task(i)`
/// gives the i-th payload and its expected answer. Returns the sorted
/// latencies.
async fn burst(
    driver: &Driver,
    servers: &[String],
    per: u64,
    function: &str,
    task: impl Fn(u64) -> (String, String),
) -> anyhow::Result<Vec<Duration>> {
    let mut calls = Vec::new();
    for s in servers {
        let inv = driver.inv_of(s)?;
        let server = driver.node(s)?.id();
        for i in 1..=per {
            let (payload, expected) = task(i);
            calls.push(async move {
                let t = Instant::now();
                let r = inv.task_at(server, function, payload).await;
                (i, r, expected, t.elapsed())
            });
        }
    }
    let mut lat = Vec::new();
    for (i, r, expected, d) in futures::future::join_all(calls).await {
        let out = r.with_context(|| format!("task {function} #{i}"))?;
        if out.as_ref() != expected.as_bytes() {
            bail!(
                "task {function} #{i} answered {}, expected {expected}",
                String::from_utf8_lossy(&out)
            );
        }
        lat.push(d);
    }
    lat.sort();
    Ok(lat)
}

/// Writes a `len`-byte pseudo-random image; returns its path and sha256.
fn write_image(path: &Path, len: u64, seed: u64) -> anyhow::Result<(PathBuf, Hash)> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut hasher = federact::ledger::hash::Hasher::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut block = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            // xorshift64: cheap bytes that do not compress.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        hasher.update(&block[..n]);
        left -= n as u64;
    }
    f.flush()?;
    Ok((path.to_path_buf(), hasher.finish()))
}

/// Verifies every validator's store of every chain, checks that the
/// validators of a chain hold identical blocks, and summarises each chain.
fn check_stores(dir: &Path, federation: &Federation, report: &mut Report) -> anyhow::Result<()> {
    let mut verified = 0;
    let mut faulty = Vec::new();
    let mut by_chain: Vec<(String, Vec<ChainStore>)> = Vec::new();
    for chain in federation.chains() {
        let mut stores = Vec::new();
        for v in validator_names(federation, chain.validators()) {
            let path = dir
                .join("data")
                .join(&v)
                .join("chains")
                .join(chain.id())
                .join("chain");
            let store = ChainStore::open(&path, None)
                .with_context(|| format!("opening {}", path.display()))?;
            let rep = verify_open_store(&store, Some(federation))
                .with_context(|| format!("verifying {}", path.display()))?;
            match rep.fault {
                None => verified += 1,
                Some(f) => faulty.push(format!("{}: {f}", path.display())),
            }
            stores.push(store);
        }
        by_chain.push((chain.id().to_string(), stores));
    }
    report.check(
        "ledger verify passes on every store",
        faulty.is_empty(),
        if faulty.is_empty() {
            format!("{verified} stores")
        } else {
            faulty.join("; ")
        },
    );
    let mut diverged = Vec::new();
    let mut offload_scopes: HashMap<&'static str, u64> = HashMap::new();
    let mut rejected = 0;
    for (chain, stores) in &by_chain {
        // Every validator holds the same blocks up to the lowest tip.
        let low = stores.iter().map(|s| s.tip().height).min().unwrap_or(0);
        for h in 1..=low {
            let ids: Vec<_> = stores
                .iter()
                .map(|s| s.block(h).ok().flatten().map(|b| b.id()))
                .collect();
            if ids.windows(2).any(|w| w[0] != w[1]) {
                diverged.push(format!("{chain}@{h}"));
                break;
            }
        }
        let Some(best) = stores.iter().max_by_key(|s| s.tip().height) else {
            continue;
        };
        let mut kinds = BTreeMap::new();
        let mut txs = 0;
        for h in 1..=best.tip().height {
            let Some(block) = best.block(h)? else {
                continue;
            };
            for tx in &block.txs {
                txs += 1;
                let r = tx.record();
                *kinds.entry(r.kind().to_string()).or_insert(0) += 1;
                match r {
                    Record::OffloadCompleted { scope, .. } => {
                        let s = match scope {
                            Scope::Local => "local",
                            Scope::Inter => "inter",
                        };
                        *offload_scopes.entry(s).or_insert(0) += 1;
                    }
                    Record::Confirmation {
                        accepted: false, ..
                    } => rejected += 1,
                    _ => {}
                }
            }
        }
        report.chains.push(ChainSummary {
            chain: chain.clone(),
            validators: stores.len(),
            height: best.tip().height,
            txs,
            kinds,
        });
    }
    report.check(
        "validators of each chain hold identical blocks",
        diverged.is_empty(),
        if diverged.is_empty() {
            format!("{} chains", by_chain.len())
        } else {
            format!("diverged at {}", diverged.join(", "))
        },
    );
    let local = offload_scopes.get("local").copied().unwrap_or(0);
    let inter = offload_scopes.get("inter").copied().unwrap_or(0);
    report.check(
        "offloads completed inside a cloud (local chain)",
        local > 0,
        format!("{local} OffloadCompleted"),
    );
    report.check(
        "offloads completed across clouds (consortium)",
        inter > 0,
        format!("{inter} OffloadCompleted"),
    );
    report.check(
        "tampered image rejected on the ledger",
        rejected > 0,
        format!("{rejected} Confirmation(accepted = false)"),
    );
    if let Some(vm) = report.vm {
        let all: Vec<ChainStore> = by_chain
            .into_iter()
            .filter_map(|(_, mut s)| {
                if s.is_empty() {
                    None
                } else {
                    Some(s.remove(0))
                }
            })
            .collect();
        let entries = super::ledger::merged_history(&all, &vm)?;
        let chains: std::collections::BTreeSet<&str> =
            entries.iter().map(|e| e.chain_id.as_str()).collect();
        report.history = entries
            .iter()
            .map(|e| {
                format!(
                    "  {:<14} h{:<5} tx {}  {:<12} {}",
                    e.chain_id,
                    e.height,
                    e.tx_id.short(),
                    e.record.kind(),
                    super::ledger::detail(&e.record)
                )
            })
            .collect();
        report.check(
            "vm history spans local and consortium chains",
            chains.len() >= 3,
            format!("{} records on {} chains", entries.len(), chains.len()),
        );
    }
    Ok(())
}
