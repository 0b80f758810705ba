//! `federact up DIR`: every node of a federation written by `federact
//! init` as its own OS process, until ctrl-c; and `federact status DIR`:
//! what a running federation's chains and nodes look like, asked over QUIC
//! with the federation's client identities.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;

use federact::actors::{ActorError, LedgerClient};
use federact::config::{Federation, NodeConfig, NodeSpec, Role};
use federact::federation::Transport;
use federact::ledger::record::Record;

/// Arguments of `federact up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The federation directory (written by `federact init`).
    dir: PathBuf,
    /// Longest wait for every node to listen and every chain to commit.
    #[arg(long, default_value_t = 90)]
    ready_timeout_s: u64,
    /// Log filter for the nodes (RUST_LOG syntax).
    #[arg(long, default_value = "info")]
    log: String,
}

/// Arguments of `federact status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The federation directory (written by `federact init`).
    dir: PathBuf,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 5)]
    timeout_s: u64,
    /// Also print each node's refusal counters (handshakes, frames,
    /// unknown actors, undecodable messages, refused transactions,
    /// equivocation evidence) and offload checks (results rejected,
    /// disputes), read from the node over the network.
    #[arg(long)]
    counters: bool,
}

/// A started node process.
pub(crate) struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// The log's length when this process started (restarts append).
    log_from: usize,
    exited: bool,
}

/// The node processes of one federation directory.
pub(crate) struct Procs {
    exe: PathBuf,
    dir: PathBuf,
    log_filter: String,
    /// Extra arguments for every `federact node`.
    node_args: Vec<String>,
    procs: Vec<Proc>,
}

impl Procs {
    /// No process yet; `node_args` go to every `federact node`.
    pub(crate) fn new(
        dir: &Path,
        log_filter: &str,
        node_args: Vec<String>,
    ) -> anyhow::Result<Procs> {
        let exe = std::env::current_exe().context("locating the federact binary")?;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        Ok(Procs {
            exe,
            dir: dir.to_path_buf(),
            log_filter: log_filter.to_string(),
            node_args,
            procs: Vec::new(),
        })
    }

    /// Starts node `name` (appending to its log); returns its pid.
    pub(crate) fn spawn(&mut self, name: &str) -> anyhow::Result<u32> {
        let cfg = self.dir.join("nodes").join(format!("{name}.toml"));
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let log_from = out
            .metadata()
            .map(|m| usize::try_from(m.len()).unwrap_or(usize::MAX))
            .unwrap_or(0);
        let err = out.try_clone()?;
        let mut command = Command::new(&self.exe);
        // A node dies with its parent (SIGTERM: it flushes and closes),
        // whatever ends the parent — ctrl-c before the federation is
        // ready, or SIGKILL.
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: prctl(2) only, which is async-signal-safe, between
            // fork and exec.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .arg("node")
            .arg("--config")
            .arg(&cfg)
            .args(&self.node_args)
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.procs.retain(|p| p.name != name);
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
            log_from,
            exited: false,
        });
        Ok(pid)
    }

    /// Starts every node of `fed` that runs actors, printing a table.
    pub(crate) fn spawn_all(&mut self, fed: &Federation, print: bool) -> anyhow::Result<()> {
        if print {
            println!(
                "{:<20} {:>7}  {:<22} {:<24} LOG",
                "NODE", "PID", "LISTEN", "ROLES"
            );
        }
        for n in fed.nodes().iter().filter(|n| n.roles().runs_actors()) {
            let pid = match self.spawn(n.name()) {
                Ok(pid) => pid,
                Err(e) => {
                    self.stop_all();
                    return Err(e);
                }
            };
            if print {
                println!(
                    "{:<20} {:>7}  {:<22} {:<24} {}",
                    n.name(),
                    pid,
                    n.listen().to_string(),
                    n.roles().to_string(),
                    self.dir
                        .join("logs")
                        .join(format!("{}.log", n.name()))
                        .display()
                );
            }
        }
        Ok(())
    }

    /// Number of node processes started.
    pub(crate) fn len(&self) -> usize {
        self.procs.len()
    }

    /// SIGKILL to node `name` (a crash: nothing flushes), then reaps it.
    pub(crate) fn kill(&mut self, name: &str) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.name == name) {
            let _ = p.child.kill();
            let _ = p.child.wait();
            p.exited = true;
        }
    }

    /// Waits (bounded) until every running node logs that it listens;
    /// fails with the log's tail of a node that exits meanwhile.
    pub(crate) fn wait_listening(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut listening = vec![false; self.procs.len()];
        while listening.iter().any(|l| !l) {
            for (i, p) in self.procs.iter_mut().enumerate() {
                if listening[i] || p.exited {
                    listening[i] = true;
                    continue;
                }
                if let Ok(Some(status)) = p.child.try_wait() {
                    p.exited = true;
                    bail!(
                        "node {} exited ({status}) while starting:\n{}",
                        p.name,
                        tail(&p.log, 10)
                    );
                }
                listening[i] = logged_since(&p.log, p.log_from, " listening on ");
            }
            if Instant::now() > deadline {
                let late: Vec<&str> = self
                    .procs
                    .iter()
                    .zip(&listening)
                    .filter(|(_, l)| !**l)
                    .map(|(p, _)| p.name.as_str())
                    .collect();
                bail!("not listening after {timeout:?}: {}", late.join(", "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Prints nodes that exited on their own since the last look.
    fn report_exits(&mut self) {
        for p in self.procs.iter_mut().filter(|p| !p.exited) {
            if let Ok(Some(status)) = p.child.try_wait() {
                p.exited = true;
                println!(
                    "node {} exited ({status}); log: {}",
                    p.name,
                    p.log.display()
                );
            }
        }
    }

    /// The pid of node `name`'s process.
    pub(crate) fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .iter()
            .find(|p| p.name == name && !p.exited)
            .map(|p| p.child.id())
    }

    /// Fails if a node process has exited on its own (name and status).
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in self.procs.iter_mut().filter(|p| !p.exited) {
            if let Some(status) = p.child.try_wait()? {
                p.exited = true;
                bail!(
                    "node {} exited early: {status}; log: {}",
                    p.name,
                    p.log.display()
                );
            }
        }
        Ok(())
    }

    /// SIGTERM to every running node, then waits; SIGKILL after 10 s.
    pub(crate) fn stop_all(&mut self) {
        self.stop_within(Duration::from_secs(10));
    }

    /// SIGTERM to every running node (they flush their stores), then waits
    /// up to `grace` before killing what is left.
    pub(crate) fn stop_within(&mut self, grace: Duration) {
        for p in self.procs.iter_mut() {
            if let Ok(None) = p.child.try_wait() {
                if let Ok(pid) = i32::try_from(p.child.id()) {
                    // SAFETY: kill(2) with a pid we spawned and have not reaped.
                    unsafe {
                        libc::kill(pid, libc::SIGTERM);
                    }
                }
            }
        }
        let deadline = Instant::now() + grace;
        for p in self.procs.iter_mut() {
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("{} did not stop in {grace:?}: killing it", p.name);
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Starts every node, waits until the federation is live, then waits for
/// ctrl-c / SIGTERM and stops every node with SIGTERM (SIGKILL after 10 s).
pub fn run_up(args: &UpArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    let fed = Federation::load(&dir.join("federation.toml"))?;
    let mut procs = Procs::new(dir, &args.log, Vec::new())?;
    procs.spawn_all(&fed, true)?;
    let timeout = Duration::from_secs(args.ready_timeout_s);
    let ready = procs.wait_listening(timeout).and_then(|()| {
        println!("\nevery node listens; waiting for every chain to commit ...");
        wait_committed(dir, &fed, timeout)
    });
    match ready {
        Ok(heights) => {
            let shown: Vec<String> = heights.iter().map(|(c, h)| format!("{c} at {h}")).collect();
            println!(
                "\nfederation up: {} node processes; every chain has committed ({}).\nstatus: federact status {}   stop: ctrl-c",
                procs.len(),
                shown.join(", "),
                dir.display()
            );
        }
        Err(e) => {
            procs.stop_all();
            return Err(e.context("the federation did not come up"));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let signal = super::node::wait_for_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = tick.tick() => procs.report_exits(),
            }
        }
    });
    println!("stopping {} nodes ...", procs.len());
    procs.stop_all();
    println!("stopped; stores are in {}", dir.join("data").display());
    Ok(())
}

/// Waits until every chain has committed a block: local chains commit
/// their servers' joins; the consortium commits the membership of each
/// cloud's client identity, which is submitted here. Returns the heights.
pub(crate) fn wait_committed(
    dir: &Path,
    fed: &Federation,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let deadline = Instant::now() + timeout;
    let system = actix::System::new();
    system.block_on(async {
        let clients = Clients::connect(dir, fed).await?;
        let result = async {
            // A consortium that already has blocks (an earlier `up`) is
            // live: nothing to record.
            let consortium_empty = match fed.consortium() {
                Some(c) => clients.heights().await.get(c.id()).copied().unwrap_or(0) == 0,
                None => false,
            };
            if consortium_empty {
                for (cloud, client, id) in &clients.by_cloud {
                    let join = Record::MemberJoin {
                        node: *id,
                        cloud: cloud.clone(),
                        roles: vec![Role::Client],
                    };
                    loop {
                        match client.submit(join.clone()).await {
                            Ok(_) => break,
                            Err(ActorError::Refused { reason }) if reason.contains("already") => {
                                break
                            }
                            Err(e) if Instant::now() > deadline => {
                                bail!("the consortium did not record {cloud}'s client: {e}")
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                }
            }
            loop {
                let heights = clients.heights().await;
                let missing: Vec<String> = fed
                    .chains()
                    .iter()
                    .map(|c| c.id().to_string())
                    .filter(|c| heights.get(c).copied().unwrap_or(0) == 0)
                    .collect();
                if missing.is_empty() {
                    return Ok(heights);
                }
                if Instant::now() > deadline {
                    bail!("no block yet on {}", missing.join(", "));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        .await;
        clients.close().await;
        result
    })
}

/// Whether `needle` was logged in `path` after byte `from` (what an
/// earlier run of the node appended is not read again).
fn logged_since(path: &Path, from: usize, needle: &str) -> bool {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(from as u64))?;
            f.read_to_string(&mut text)
        })
        .is_ok_and(|_| text.contains(needle))
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One ledger client per cloud, each signing as the cloud's client
/// identity (`cN-client`, written by `federact init`).
struct Clients {
    transports: Vec<Transport>,
    by_cloud: Vec<(String, LedgerClient, federact::config::NodeId)>,
}

impl Clients {
    async fn connect(dir: &Path, fed: &Federation) -> anyhow::Result<Clients> {
        let mut transports = Vec::new();
        let mut by_cloud = Vec::new();
        for cloud in fed.clouds() {
            let Some(me) = client_of(fed, cloud.name()) else {
                bail!(
                    "cloud {} has no node with role `client` for tools (add one, or re-run `federact init`)",
                    cloud.name()
                );
            };
            let cfg = NodeConfig::load(&dir.join("nodes").join(format!("{}.toml", me.name())))?;
            let key = cfg.load_key()?;
            let client = LedgerClient::connect(&cfg, key)
                .await
                .with_context(|| format!("connecting as {}", me.name()))?
                .with_timeout(Duration::from_secs(10));
            transports.push(client.transport().clone());
            by_cloud.push((cloud.name().to_string(), client, me.id()));
        }
        Ok(Clients {
            transports,
            by_cloud,
        })
    }

    /// The highest height each chain's gateways report.
    async fn heights(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (_, client, _) in &self.by_cloud {
            if let Ok(status) = client.status().await {
                for (chain, h) in status {
                    let e = out.entry(chain).or_insert(0);
                    *e = (*e).max(h);
                }
            }
        }
        out
    }

    async fn close(&self) {
        for t in &self.transports {
            t.close().await;
        }
    }
}

fn client_of<'a>(fed: &'a Federation, cloud: &'a str) -> Option<&'a NodeSpec> {
    fed.nodes_with_role(cloud, Role::Client).next()
}

/// Prints chain heights per cloud (from its gateway) and which nodes
/// answer, asked as each cloud's client identity.
pub fn run_status(args: &StatusArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    let fed = Federation::load(&dir.join("federation.toml"))?;
    let timeout = Duration::from_secs(args.timeout_s);
    let system = actix::System::new();
    system.block_on(async {
        let clients = Clients::connect(dir, &fed).await?;
        println!("{:<12} {:<22} {:>7}", "CLOUD", "CHAIN", "HEIGHT");
        for (cloud, client, _) in &clients.by_cloud {
            match client.clone().with_timeout(timeout).status().await {
                Ok(status) => {
                    for (chain, h) in status {
                        println!("{cloud:<12} {chain:<22} {h:>7}");
                    }
                }
                Err(e) => println!("{cloud:<12} {:<22} {:>7}  gateway: {e}", "-", "-"),
            }
        }
        // Which nodes answer: a request to an actor no node registers is
        // refused at once by a live node (proving a TLS session with it)
        // and times out for a dead one.
        let probe = &clients.transports[0];
        println!("\n{:<20} {:<12} {:<24} STATE", "NODE", "CLOUD", "ROLES");
        let mut up = 0;
        let nodes: Vec<&NodeSpec> = fed
            .nodes()
            .iter()
            .filter(|n| n.roles().runs_actors())
            .collect();
        let answers = futures::future::join_all(nodes.iter().map(|n| {
            probe.request(
                n.id(),
                "federact-status-probe",
                federact::actors::Bytes::new(),
                timeout,
            )
        }))
        .await;
        for (n, answer) in nodes.iter().zip(answers) {
            let state = match answer {
                Ok(_) => "up".to_string(),
                Err(e) if is_refusal(&e) => "up".to_string(),
                Err(federact::federation::TransportError::Timeout { .. }) => {
                    "no answer".to_string()
                }
                Err(_) => "unreachable".to_string(),
            };
            if state == "up" {
                up += 1;
            }
            println!(
                "{:<20} {:<12} {:<24} {state}",
                n.name(),
                n.cloud(),
                n.roles().to_string()
            );
        }
        println!("\n{up} of {} nodes up", nodes.len());
        if args.counters {
            print_counters(probe, &nodes, timeout).await;
        }
        clients.close().await;
        anyhow::Ok(())
    })
}

/// Prints every node's counters (`federact::actors::stats`), one line each.
async fn print_counters(probe: &Transport, nodes: &[&NodeSpec], timeout: Duration) {
    println!(
        "\n{:<20} {:>9} {:>7} {:>8} {:>9} {:>10} {:>8} {:>9} {:>8}",
        "NODE",
        "HANDSHAKE",
        "FRAME",
        "NO-ACTOR",
        "MALFORMED",
        "TX-REFUSED",
        "EVIDENCE",
        "REJECTED",
        "DISPUTED"
    );
    let answers = futures::future::join_all(
        nodes
            .iter()
            .map(|n| federact::actors::stats::query(probe, n.id(), timeout)),
    )
    .await;
    for (n, answer) in nodes.iter().zip(answers) {
        let s = match answer {
            Ok(s) => s,
            Err(e) => {
                println!("{:<20} {e}", n.name());
                continue;
            }
        };
        let chains = |f: fn(&federact::actors::stats::ChainCounts) -> u64| -> u64 {
            s.validators.iter().map(f).sum()
        };
        let offloads = |f: fn(&federact::actors::offload_check::OffloadCounts) -> u64| {
            s.offloads
                .as_ref()
                .map(|o| f(o).to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<20} {:>9} {:>7} {:>8} {:>9} {:>10} {:>8} {:>9} {:>8}",
            n.name(),
            s.transport.handshakes(),
            s.transport.frames(),
            s.transport.inbound_unknown_actor,
            chains(|c| c.counters.malformed),
            chains(|c| c.counters.tx_refused),
            chains(|c| c.counters.evidence),
            offloads(|o| o.rejected() + o.unproven),
            offloads(|o| o.disputes_recorded),
        );
    }
}

/// Whether a transport error is a live peer's refusal (as opposed to no
/// answer at all).
fn is_refusal(e: &federact::federation::TransportError) -> bool {
    use federact::federation::TransportError as E;
    matches!(e, E::Refused { .. } | E::Remote { .. })
}
