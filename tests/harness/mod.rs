//! Fault harness for multi-process federations: starts `federact node`
//! processes from a `federact init` federation, each behind a user-space UDP
//! relay (`federact::federation::netem`) so the network can be impaired and
//! partitioned; drives a steady ledger workload through the gateways;
//! injects process faults (kill -9, restart, SIGSTOP/SIGCONT) and network
//! faults; and checks the invariants on every store:
//!
//! - all validators of a chain hold identical blocks (live, then offline
//!   with `federact ledger verify` on each store);
//! - every acknowledged submission is committed exactly once, and nothing
//!   submitted is committed twice;
//! - every acknowledged inter-cloud `Indication` is relayed exactly once to
//!   the local chain of each cloud it names.
//!
//! With [`ClusterOptions::apps`], servers and orchestrators run as processes
//! too, [`apps`] drives invocations, offloads and migrations and checks
//! their own invariants, and [`images`] moves VM image files (qcow2) with
//! `federact migrate` and checks what each server kept.
//!
//! Waits are bounded polls on observable progress (acknowledgements, tips),
//! never sleeps tuned to pass. A failure names the seed it ran with.

#![allow(dead_code)]

pub mod apps;
pub mod images;
pub mod rng;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use federact::actors::wire::{self, ValidatorRequest, ValidatorResponse};
use federact::actors::{Invoker, LedgerClient};
use federact::config::{
    free_udp_ports, write_local_federation, Federation, NodeConfig, NodeKey, Role, Topology,
};
use federact::federation::netem::{Relay, RelayHandle, RelayOptions};
use federact::federation::{Membership, Transport};
use federact::ledger::block::Block;
use federact::ledger::hash::Hash;
use federact::ledger::record::{Record, Scope, Site};
use federact::ledger::store::ChainStore;
use federact::ledger::tx::TxId;

/// The `federact` binary under test.
pub fn federact() -> Command {
    Command::new(env!("CARGO_BIN_EXE_federact"))
}

/// How long any single wait of the harness may take before it fails.
pub const WAIT_MAX: Duration = Duration::from_secs(120);

/// The small federation of the quick suite: two clouds, four local
/// validators each (f = 1) and four consortium validators (f = 1).
pub fn small_topology() -> Topology {
    Topology {
        clouds: 2,
        servers_per_cloud: 1,
        local_validators: 4,
        inter_validators: 4,
    }
}

/// One node process and the relay in front of it.
pub struct NodeProc {
    /// Its cloud.
    pub cloud: String,
    /// The address the process binds (peers reach it through the relay).
    pub bind: SocketAddr,
    /// The relay at the node's federation address.
    pub relay: Relay,
    child: Option<Child>,
    paused: bool,
}

/// A test-side member (the cloud's first server, not started as a process)
/// that submits through its cloud's gateway.
pub struct Client {
    /// Its node name.
    pub name: String,
    /// Its cloud.
    pub cloud: String,
    /// Its transport (bound at its federation address).
    pub transport: Transport,
    /// A ledger client to its cloud's gateway.
    pub ledger: LedgerClient,
    /// An invoker through its cloud's orchestrator.
    pub invoker: Invoker,
    /// Its key.
    pub key: NodeKey,
}

/// The node configuration of the operator identity of client `client`'s
/// cloud (`cN-operator`, written in application mode) that tools run as
/// processes use.
pub fn operator_config(cluster: &Cluster, client: usize) -> PathBuf {
    let name = cluster.clients[client].name.trim_end_matches("-client");
    cluster
        .dir
        .path()
        .join("nodes")
        .join(format!("{name}-operator.toml"))
}

/// A running federation of node processes.
pub struct Cluster {
    /// The directory `init` wrote (keys, node files, data, logs).
    pub dir: tempfile::TempDir,
    /// The federation.
    pub fed: Federation,
    /// Node processes by name.
    pub nodes: BTreeMap<String, NodeProc>,
    /// Test-side clients, one per cloud.
    pub clients: Vec<Client>,
    /// The run's seed.
    pub seed: u64,
    /// A validator whose data directory is a small tmpfs (for the disk-full
    /// fault), when this process may mount one (root).
    pub small_disk: Option<String>,
    /// Extra `federact node` arguments per node name.
    pub node_args: HashMap<String, Vec<String>>,
}

/// How [`Cluster::start_with`] starts a federation.
pub struct ClusterOptions {
    /// Its topology.
    pub topo: Topology,
    /// Run servers and orchestrators as processes too (the application
    /// workloads of [`apps`]), with the `cN-client` identities as clients.
    pub apps: bool,
    /// Extra `federact node` arguments per node name (e.g.
    /// `--inflight-max 0` for a server saturated by configuration).
    pub node_args: HashMap<String, Vec<String>>,
}

/// A free loopback UDP port for a node process to bind later, outside the
/// kernel's ephemeral range (see [`free_udp_ports`]; a killed node rebinds
/// it on restart, which a port the OS hands out for `:0` may not allow).
fn free_udp_port() -> SocketAddr {
    free_udp_ports(1).expect("a free loopback port")[0]
}

impl Cluster {
    /// Writes a federation for `topo`, puts a relay in front of every
    /// validator and gateway, starts them as processes and waits (bounded)
    /// until every chain answers.
    pub async fn start(topo: &Topology, seed: u64) -> Cluster {
        Cluster::start_with(
            ClusterOptions {
                topo: *topo,
                apps: false,
                node_args: HashMap::new(),
            },
            seed,
        )
        .await
    }

    /// [`Cluster::start`] with `options`: with `apps`, every node that runs
    /// actors (servers and orchestrators too) is a process behind a relay,
    /// and the clients are the `cN-client` identities.
    pub async fn start_with(options: ClusterOptions, seed: u64) -> Cluster {
        let topo = &options.topo;
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_local_federation(dir.path(), topo, false).expect("init");
        if options.apps {
            // A killed server or orchestrator is noticed by its peers within
            // seconds (the idle timeout), not the default half minute.
            let f = &written.federation_file;
            let text = std::fs::read_to_string(f).expect("federation file");
            let mut text = text.replacen(
                "[transport]\n",
                "[transport]\nidle_timeout_ms = 5000\nkeep_alive_ms = 1000\n",
                1,
            );
            // One more operator identity per cloud (`cN-operator`) for the
            // tools the test runs as processes (`federact migrate`): the
            // transport keeps one connection per member, so a tool sharing
            // the test client's identity would displace its connections.
            for cloud in 1..=topo.clouds {
                let name = format!("c{cloud}-operator");
                let key = NodeKey::generate();
                key.write_file(&dir.path().join(format!("keys/{name}.key")), false)
                    .expect("operator key");
                text.push_str(&format!(
                    "\n[[nodes]]\nname = \"{name}\"\ncloud = \"cloud-{cloud}\"\nroles = [\"client\"]\nlisten = \"{}\"\npublic_key = \"{}\"\nkey_file = \"keys/{name}.key\"\ndata_dir = \"data/{name}\"\n",
                    free_udp_port(),
                    key.id()
                ));
                std::fs::write(
                    dir.path().join("nodes").join(format!("{name}.toml")),
                    format!("federation = \"../federation.toml\"\nnode = \"{name}\"\n"),
                )
                .expect("operator node file");
            }
            std::fs::write(f, text).expect("write federation file");
        }
        let fed = Federation::load(&written.federation_file).expect("load federation");
        let mut nodes = BTreeMap::new();
        for (i, n) in fed.nodes().iter().enumerate() {
            let roles = n.roles();
            let started = if options.apps {
                roles.runs_actors()
            } else {
                roles.contains(Role::Validator) || roles.contains(Role::Gateway)
            };
            if !started {
                continue;
            }
            let bind = free_udp_port();
            let file = dir.path().join("nodes").join(format!("{}.toml", n.name()));
            let text = std::fs::read_to_string(&file).expect("node file");
            std::fs::write(&file, format!("{text}bind = \"{bind}\"\n")).expect("write node file");
            let relay = Relay::start(
                n.listen(),
                bind,
                RelayOptions {
                    seed: seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                    ..RelayOptions::default()
                },
            )
            .await
            .expect("start relay");
            nodes.insert(
                n.name().to_string(),
                NodeProc {
                    cloud: n.cloud().to_string(),
                    bind,
                    relay,
                    child: None,
                    paused: false,
                },
            );
        }
        let mut clients = Vec::new();
        for cloud in fed.clouds() {
            let role = if options.apps {
                Role::Client
            } else {
                Role::Server
            };
            let name = fed
                .nodes_with_role(cloud.name(), role)
                .next()
                .expect("a client identity per cloud")
                .name()
                .to_string();
            let cfg = NodeConfig::load(&dir.path().join("nodes").join(format!("{name}.toml")))
                .expect("client node file");
            let key = cfg.load_key().expect("client key");
            let transport = Transport::bind(
                &key,
                Membership::from_federation(&fed),
                *fed.transport(),
                cfg.spec().listen(),
            )
            .await
            .expect("client transport");
            let gateway = fed.gateway(cloud.name()).expect("gateway").id();
            let ledger = LedgerClient::new(transport.clone(), key.clone(), gateway)
                .with_timeout(Duration::from_secs(10));
            let orchestrator = fed.orchestrator(cloud.name()).expect("orchestrator").id();
            let invoker = Invoker::new(transport.clone(), orchestrator, None, None)
                .with_timeout(Duration::from_secs(30));
            clients.push(Client {
                name,
                cloud: cloud.name().to_string(),
                transport,
                ledger,
                invoker,
                key,
            });
        }
        let mut cluster = Cluster {
            dir,
            fed,
            nodes,
            clients,
            seed,
            small_disk: None,
            node_args: options.node_args,
        };
        if !options.apps {
            cluster.small_disk = cluster.mount_small_disk();
        }
        let names: Vec<String> = cluster.nodes.keys().cloned().collect();
        for n in &names {
            cluster.spawn(n);
        }
        cluster.wait_all_tips_answer().await;
        cluster
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts node `name`'s process (again).
    pub fn spawn(&mut self, name: &str) {
        let cfg = self.dir.path().join("nodes").join(format!("{name}.toml"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .expect("log file");
        let child = federact()
            .args(["node", "--config"])
            .arg(&cfg)
            .args(self.node_args.get(name).into_iter().flatten())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn federact node");
        let node = self.nodes.get_mut(name).expect("known node");
        assert!(node.child.is_none(), "{name} is already running");
        node.child = Some(child);
        node.paused = false;
    }

    /// `kill -9` of node `name` (and reaps it).
    pub fn kill9(&mut self, name: &str) {
        let node = self.nodes.get_mut(name).expect("known node");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    fn signal(&mut self, name: &str, sig: i32) {
        let node = self.nodes.get_mut(name).expect("known node");
        let child = node.child.as_ref().expect("running node");
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({name}, {sig})");
        node.paused = sig == libc::SIGSTOP;
    }

    /// SIGSTOP of node `name`.
    pub fn pause(&mut self, name: &str) {
        self.signal(name, libc::SIGSTOP);
    }

    /// SIGCONT of node `name`.
    pub fn resume(&mut self, name: &str) {
        self.signal(name, libc::SIGCONT);
    }

    /// Resident memory of node `name`'s process in KiB (Linux `/proc`).
    pub fn rss_kib(&self, name: &str) -> Option<u64> {
        let pid = self.nodes.get(name)?.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Mounts a 64 MiB tmpfs as the data directory of the first cloud's
    /// third local validator. Needs root; `None` (and a note) otherwise.
    fn mount_small_disk(&self) -> Option<String> {
        let cloud = self.clients.first()?.cloud.clone();
        let name = self
            .fed
            .local_chain(&cloud)?
            .validator_names()
            .get(2)?
            .clone();
        let dir = self.dir.path().join("data").join(&name);
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("fault harness: cannot mount a tmpfs (not root?): disk-full fault skipped");
            return None;
        }
        Some(name)
    }

    /// Fills the small disk until the file system refuses (ENOSPC).
    pub fn fill_small_disk(&self) -> Option<u64> {
        use std::io::Write;
        let name = self.small_disk.as_ref()?;
        let path = self.dir.path().join("data").join(name).join("filler");
        let mut f = std::fs::File::create(&path).ok()?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        while let Ok(n) = f.write(&chunk) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        Some(written)
    }

    /// Frees the small disk again.
    pub fn free_small_disk(&self) {
        if let Some(name) = &self.small_disk {
            let _ = std::fs::remove_file(self.dir.path().join("data").join(name).join("filler"));
        }
    }

    /// Whether node `name`'s process is running (not exited).
    pub fn is_running(&mut self, name: &str) -> bool {
        let Some(node) = self.nodes.get_mut(name) else {
            return false;
        };
        match node.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                node.child = None;
                false
            }
            None => false,
        }
    }

    /// The log of node `name` so far.
    pub fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Names of the node processes of `cloud`.
    pub fn cloud_nodes(&self, cloud: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.cloud == cloud)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The name of `cloud`'s gateway.
    pub fn gateway_of(&self, cloud: &str) -> String {
        self.fed.gateway(cloud).expect("gateway").name().to_string()
    }

    /// The name of `cloud`'s orchestrator.
    pub fn orchestrator_of(&self, cloud: &str) -> String {
        self.fed
            .orchestrator(cloud)
            .expect("orchestrator")
            .name()
            .to_string()
    }

    /// The relay handle of node `name`.
    pub fn relay(&self, name: &str) -> RelayHandle {
        self.nodes[name].relay.handle()
    }

    /// Cuts `cloud` off from every other cloud, both ways: its nodes' relays
    /// drop what other clouds' nodes (and clients) send, and other nodes'
    /// relays drop what its nodes send. Traffic inside the cloud flows.
    pub fn partition_cloud(&self, cloud: &str, cut: bool) {
        let (inside, outside): (Vec<_>, Vec<_>) =
            self.nodes.values().partition(|n| n.cloud == cloud);
        let client_addr = |c: &Client| {
            self.fed
                .node(&c.name)
                .map(|n| n.listen())
                .expect("client node")
        };
        let inside_addrs: Vec<SocketAddr> = inside
            .iter()
            .map(|n| n.bind)
            .chain(
                self.clients
                    .iter()
                    .filter(|c| c.cloud == cloud)
                    .map(client_addr),
            )
            .collect();
        let outside_addrs: Vec<SocketAddr> = outside
            .iter()
            .map(|n| n.bind)
            .chain(
                self.clients
                    .iter()
                    .filter(|c| c.cloud != cloud)
                    .map(client_addr),
            )
            .collect();
        for (relays, addrs) in [(&inside, &outside_addrs), (&outside, &inside_addrs)] {
            for n in relays.iter() {
                let h = n.relay.handle();
                for a in addrs.iter() {
                    if cut {
                        h.block(*a);
                    } else {
                        h.unblock(*a);
                    }
                }
            }
        }
    }

    /// The tip of validator `name` for `chain`, if it answers.
    pub async fn tip(&self, name: &str, chain: &str) -> Option<u64> {
        let id = self.fed.node(name)?.id();
        let body = wire::encode(&ValidatorRequest::Tip);
        let reply = self.clients[0]
            .transport
            .request(
                id,
                &wire::validator_actor(chain),
                body,
                Duration::from_secs(3),
            )
            .await
            .ok()?;
        match wire::decode::<ValidatorResponse>(&reply).ok()? {
            ValidatorResponse::Tip(h) => Some(h),
            _ => None,
        }
    }

    /// The committed block at `height` of `chain` held by validator `name`.
    pub async fn block(&self, name: &str, chain: &str, height: u64) -> Option<Block> {
        let id = self.fed.node(name)?.id();
        let body = wire::encode(&ValidatorRequest::FetchBlock { height });
        let reply = self.clients[0]
            .transport
            .request(
                id,
                &wire::validator_actor(chain),
                body,
                Duration::from_secs(5),
            )
            .await
            .ok()?;
        match wire::decode::<ValidatorResponse>(&reply).ok()? {
            ValidatorResponse::Block(Some(b)) => Some(b.block),
            _ => None,
        }
    }

    /// The counters of node `name` (refusals, validators', offload
    /// checks), read over the network as any member may, if it answers.
    pub async fn stats(&self, name: &str) -> Option<federact::actors::stats::NodeStats> {
        let id = self.fed.node(name)?.id();
        federact::actors::stats::query(&self.clients[0].transport, id, Duration::from_secs(5))
            .await
            .ok()
    }

    /// The sum over the validators of `chain` (those that answer) of
    /// `field` of their counters for it.
    pub async fn chain_counter(
        &self,
        chain: &str,
        field: impl Fn(&federact::actors::stats::ChainCounts) -> u64,
    ) -> u64 {
        let Some(spec) = self.fed.chains().iter().find(|c| c.id() == chain) else {
            return 0;
        };
        let mut sum = 0;
        for v in spec.validator_names() {
            if let Some(s) = self.stats(v).await {
                sum += s.chain(chain).map(&field).unwrap_or(0);
            }
        }
        sum
    }

    /// Tips of every validator of every chain (`None` for no answer).
    pub async fn tips(&self) -> BTreeMap<(String, String), Option<u64>> {
        let mut out = BTreeMap::new();
        for chain in self.fed.chains() {
            for v in chain.validator_names() {
                let t = if self.nodes[v].child.is_some() && !self.nodes[v].paused {
                    self.tip(v, chain.id()).await
                } else {
                    None
                };
                out.insert((chain.id().to_string(), v.clone()), t);
            }
        }
        out
    }

    async fn wait_all_tips_answer(&self) {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let tips = self.tips().await;
            if tips.values().all(|t| t.is_some()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "seed {}: validators not answering within {WAIT_MAX:?}: {tips:?}",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) until every validator of every chain answers with the
    /// same tip, at least `floor[chain]`. Returns the tips.
    pub async fn wait_converged(&self, floor: &HashMap<String, u64>) -> HashMap<String, u64> {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let tips = self.tips().await;
            let mut by_chain: HashMap<String, Vec<Option<u64>>> = HashMap::new();
            for ((c, _), t) in &tips {
                by_chain.entry(c.clone()).or_default().push(*t);
            }
            let converged: Option<HashMap<String, u64>> = by_chain
                .iter()
                .map(|(c, ts)| {
                    let first = ts.first().copied().flatten()?;
                    let same = ts.iter().all(|t| *t == Some(first));
                    let high = first >= floor.get(c).copied().unwrap_or(0);
                    (same && high).then(|| (c.clone(), first))
                })
                .collect();
            if let Some(c) = converged {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "seed {}: chains did not converge within {WAIT_MAX:?}: {tips:?} (floor {floor:?})",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The highest tip any validator of each chain reports now.
    pub async fn max_tips(&self) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::new();
        for ((c, _), t) in self.tips().await {
            let e = out.entry(c).or_default();
            *e = (*e).max(t.unwrap_or(0));
        }
        out
    }

    /// SIGTERMs every node process and waits for each to exit cleanly.
    pub fn terminate(&mut self) {
        for (name, n) in self.nodes.iter_mut() {
            if let Some(child) = &n.child {
                if n.paused {
                    // SAFETY: as in `signal`.
                    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
                }
                // SAFETY: as in `signal`.
                let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                assert_eq!(rc, 0, "SIGTERM {name}");
            }
        }
        for (name, n) in self.nodes.iter_mut() {
            if let Some(mut child) = n.child.take() {
                let status = child.wait().expect("wait");
                assert!(status.success(), "node {name} exited with {status}");
            }
        }
    }

    /// The store directory of validator `name` for `chain`.
    pub fn store_dir(&self, name: &str, chain: &str) -> PathBuf {
        self.dir
            .path()
            .join("data")
            .join(name)
            .join("chains")
            .join(chain)
            .join("chain")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(name) = &self.small_disk {
            let _ = Command::new("umount")
                .arg(self.dir.path().join("data").join(name))
                .status();
        }
        if std::thread::panicking() {
            // Keep the logs of a failed run for diagnosis.
            let kept = self.dir.path().to_path_buf();
            eprintln!("fault harness: logs kept in {}", kept.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("tempdir"),
            ));
        }
    }
}

/// What happened to one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting for an answer.
    Pending,
    /// Committed on `chain` at `height` (acknowledged with a receipt).
    Acked {
        /// The chain.
        chain: String,
        /// The height.
        height: u64,
    },
    /// No receipt (timeout, refusal, connection lost): may or may not commit,
    /// but never twice.
    Failed(String),
}

/// One submission of the workload.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The transaction id.
    pub tx_id: TxId,
    /// The submitting client's cloud.
    pub cloud: String,
    /// For an inter-cloud `Indication`: the clouds it names.
    pub names_clouds: Vec<String>,
    /// When it was submitted.
    pub at: Instant,
    /// Its outcome.
    pub outcome: Outcome,
}

/// The workload's log, shared with the checker.
#[derive(Default)]
pub struct Log {
    /// Every submission, in order per client.
    pub attempts: Vec<Attempt>,
}

impl Log {
    /// Acknowledged submissions from `cloud`'s client submitted after `since`.
    pub fn acked_since(&self, cloud: &str, since: Instant) -> usize {
        self.attempts
            .iter()
            .filter(|a| {
                a.cloud == cloud && a.at >= since && matches!(a.outcome, Outcome::Acked { .. })
            })
            .count()
    }
}

/// A steady bounded workload: each client submits one record at a time
/// through its gateway and waits for the receipt; every fourth is an
/// inter-cloud `Indication` (consortium, then relayed), the rest `ProvData`
/// on the cloud's chain.
pub struct Workload {
    /// The shared log.
    pub log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Most submissions per client per run (the loop is bounded).
pub const SUBMISSIONS_MAX: usize = 5_000;

impl Workload {
    /// Starts one submitting task per client.
    pub fn start(cluster: &Cluster) -> Workload {
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let clouds: Vec<String> = cluster.clients.iter().map(|c| c.cloud.clone()).collect();
        let servers: HashMap<String, String> = cluster
            .clients
            .iter()
            .map(|c| (c.cloud.clone(), c.name.clone()))
            .collect();
        let mut tasks = Vec::new();
        for (ci, c) in cluster.clients.iter().enumerate() {
            let ledger = c.ledger.clone();
            let cloud = c.cloud.clone();
            let me = c.name.clone();
            let other = clouds[(ci + 1) % clouds.len()].clone();
            let other_server = servers[&other].clone();
            let log = log.clone();
            let stop = stop.clone();
            let seed = cluster.seed;
            tasks.push(tokio::spawn(async move {
                for i in 0..SUBMISSIONS_MAX {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let tag = format!("{seed}/{cloud}/{i}");
                    let inter = i % 4 == 3 && other != cloud;
                    let record = if inter {
                        Record::Indication {
                            migration_id: Hash::of(format!("m/{tag}").as_bytes()),
                            vm_id: Hash::of(format!("vm/{tag}").as_bytes()),
                            source: Site {
                                cloud: cloud.clone(),
                                server: me.clone(),
                            },
                            destination: Site {
                                cloud: other.clone(),
                                server: other_server.clone(),
                            },
                            scope: Scope::Inter,
                        }
                    } else {
                        Record::ProvData {
                            data_digest: Hash::of(format!("d/{tag}").as_bytes()),
                            generated_by: me.clone(),
                            used_by: None,
                        }
                    };
                    let tx = ledger.sign(record);
                    let idx = {
                        let mut l = log.lock().expect("log");
                        l.attempts.push(Attempt {
                            tx_id: tx.id(),
                            cloud: cloud.clone(),
                            names_clouds: if inter {
                                vec![cloud.clone(), other.clone()]
                            } else {
                                Vec::new()
                            },
                            at: Instant::now(),
                            outcome: Outcome::Pending,
                        });
                        l.attempts.len() - 1
                    };
                    let outcome = match ledger.submit_tx(tx, true).await {
                        Ok(r) if r.height >= 1 => Outcome::Acked {
                            chain: r.chain_id,
                            height: r.height,
                        },
                        Ok(r) => Outcome::Failed(format!("receipt without height: {r:?}")),
                        Err(e) => Outcome::Failed(e.to_string()),
                    };
                    let failed = matches!(outcome, Outcome::Failed(_));
                    log.lock().expect("log").attempts[idx].outcome = outcome;
                    if failed {
                        // Pace retries while the gateway is away, so a fault
                        // does not turn the loop into a busy loop.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
        }
        Workload { log, stop, tasks }
    }

    /// Waits (bounded) until every client in `clouds` has `n` acknowledged
    /// submissions made after `since`.
    pub async fn wait_acked(
        &self,
        clouds: &[&str],
        since: Instant,
        n: usize,
        seed: u64,
        what: &str,
    ) {
        wait_for(seed, what, || {
            let counts: Vec<usize> = {
                let l = self.log.lock().expect("log");
                clouds.iter().map(|c| l.acked_since(c, since)).collect()
            };
            (!counts.iter().all(|&c| c >= n))
                .then(|| format!("only {counts:?} acknowledged of {n} per cloud {clouds:?}"))
        })
        .await
    }

    /// Stops the clients after their current submission.
    pub async fn stop(self) -> Log {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        Arc::try_unwrap(self.log)
            .map(|m| m.into_inner().expect("log"))
            .unwrap_or_default()
    }
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Submissions made.
    pub submitted: usize,
    /// Submissions acknowledged.
    pub acked: usize,
    /// Invariant violations, described.
    pub violations: Vec<String>,
    /// Acknowledged submissions missing from their chain (data lost).
    pub lost: usize,
}

/// Checks every invariant on the running cluster (live, over the network)
/// and then, after SIGTERM, on every store offline. The cluster is
/// terminated on return.
pub async fn check_invariants(cluster: &mut Cluster, log: &Log) -> Findings {
    let mut f = Findings {
        submitted: log.attempts.len(),
        acked: log
            .attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Acked { .. }))
            .count(),
        ..Findings::default()
    };
    let mut floor: HashMap<String, u64> = HashMap::new();
    for a in &log.attempts {
        if let Outcome::Acked { chain, height } = &a.outcome {
            let e = floor.entry(chain.clone()).or_default();
            *e = (*e).max(*height);
        }
    }
    // Relayed deliveries are asynchronous: wait (bounded) until every
    // acknowledged Indication is delivered to the clouds it names, with the
    // chains converged.
    let deadline = Instant::now() + WAIT_MAX;
    let (tips, chains) = loop {
        let tips = cluster.wait_converged(&floor).await;
        let chains = fetch_chains(cluster, &tips, &mut f).await;
        let missing = missing_relays(cluster, log, &chains);
        if missing.is_empty() {
            break (tips, chains);
        }
        if Instant::now() > deadline {
            f.violations.push(format!(
                "{} acknowledged Indications not relayed within {WAIT_MAX:?}: {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ));
            break (tips, chains);
        }
        // Later deliveries raise the tips above the floor.
        for (c, t) in &tips {
            floor.insert(c.clone(), *t);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Exactly once: count every transaction id per chain.
    let mut count: HashMap<TxId, Vec<(String, u64)>> = HashMap::new();
    let mut relayed: HashMap<(String, TxId), usize> = HashMap::new();
    for (chain, blocks) in &chains {
        for b in blocks {
            for tx in &b.txs {
                count
                    .entry(tx.id())
                    .or_default()
                    .push((chain.clone(), b.header.height));
                if let Record::Relayed { proof } = tx.record() {
                    *relayed.entry((chain.clone(), proof.tx_id)).or_default() += 1;
                }
            }
        }
    }
    for (id, places) in &count {
        if places.len() > 1 {
            f.violations.push(format!(
                "tx {id} committed {} times: {places:?}",
                places.len()
            ));
        }
    }
    for ((chain, id), n) in &relayed {
        if *n > 1 {
            f.violations
                .push(format!("consortium tx {id} relayed {n} times to {chain}"));
        }
    }
    for a in &log.attempts {
        if let Outcome::Acked { chain, height } = &a.outcome {
            match count.get(&a.tx_id) {
                Some(places) if places.iter().any(|(c, h)| c == chain && h == height) => {}
                other => {
                    f.lost += 1;
                    f.violations.push(format!(
                        "acknowledged tx {} ({chain} at {height}) found at {other:?}",
                        a.tx_id
                    ));
                }
            }
        }
    }

    // Offline: every store verifies and holds the blocks the live check saw.
    cluster.terminate();
    for chain in cluster.fed.chains().to_vec() {
        let live: Vec<Hash> = chains
            .get(chain.id())
            .map(|bs| bs.iter().map(|b| b.id()).collect())
            .unwrap_or_default();
        for v in chain.validator_names() {
            let store_dir = cluster.store_dir(v, chain.id());
            let out = federact()
                .args(["ledger", "verify"])
                .arg(&store_dir)
                .output()
                .expect("run ledger verify");
            if !out.status.success() {
                f.violations.push(format!(
                    "ledger verify {v}/{}: {}{}",
                    chain.id(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
                continue;
            }
            let store = match ChainStore::open(&store_dir, None) {
                Ok(s) => s,
                Err(e) => {
                    f.violations.push(format!("open {v}/{}: {e}", chain.id()));
                    continue;
                }
            };
            let tip = store.tip().height;
            let want = tips.get(chain.id()).copied().unwrap_or(0);
            if tip < want {
                f.violations.push(format!(
                    "{v}/{} store tip {tip} below the converged tip {want}",
                    chain.id()
                ));
            }
            for h in 1..=tip.min(live.len() as u64) {
                let id = store.block(h).ok().flatten().map(|b| b.id());
                if id != Some(live[h as usize - 1]) {
                    f.violations.push(format!(
                        "{v}/{} block {h} differs from the other validators'",
                        chain.id()
                    ));
                    break;
                }
            }
        }
    }
    f
}

/// Fetches every chain's blocks up to the converged tip from each validator
/// and records a violation where two validators differ. Returns one copy.
async fn fetch_chains(
    cluster: &Cluster,
    tips: &HashMap<String, u64>,
    f: &mut Findings,
) -> HashMap<String, Vec<Block>> {
    let mut out = HashMap::new();
    for chain in cluster.fed.chains() {
        let tip = tips.get(chain.id()).copied().unwrap_or(0);
        let mut reference: Option<Vec<Block>> = None;
        for v in chain.validator_names() {
            let mut blocks = Vec::new();
            for h in 1..=tip {
                match cluster.block(v, chain.id(), h).await {
                    Some(b) => blocks.push(b),
                    None => {
                        f.violations
                            .push(format!("{v}/{}: block {h} unavailable", chain.id()));
                        break;
                    }
                }
            }
            match &reference {
                None => reference = Some(blocks),
                Some(r) => {
                    let n = r.len().min(blocks.len());
                    if let Some(h) = (0..n).find(|&i| r[i].id() != blocks[i].id()) {
                        let msg = format!(
                            "{v}/{}: block {} differs from {}'s",
                            chain.id(),
                            h + 1,
                            chain.validator_names()[0]
                        );
                        if !f.violations.contains(&msg) {
                            f.violations.push(msg);
                        }
                    }
                }
            }
        }
        out.insert(chain.id().to_string(), reference.unwrap_or_default());
    }
    out
}

/// Acknowledged consortium Indications not yet relayed to a cloud they name.
fn missing_relays(
    cluster: &Cluster,
    log: &Log,
    chains: &HashMap<String, Vec<Block>>,
) -> Vec<(TxId, String)> {
    let mut delivered: HashMap<String, std::collections::HashSet<TxId>> = HashMap::new();
    for (chain, blocks) in chains {
        for b in blocks {
            for tx in &b.txs {
                if let Record::Relayed { proof } = tx.record() {
                    delivered
                        .entry(chain.clone())
                        .or_default()
                        .insert(proof.tx_id);
                }
            }
        }
    }
    let mut missing = Vec::new();
    for a in &log.attempts {
        if !matches!(&a.outcome, Outcome::Acked { chain, .. } if chain == "consortium") {
            continue;
        }
        for cloud in &a.names_clouds {
            let Some(local) = cluster.fed.local_chain(cloud) else {
                continue;
            };
            if !delivered
                .get(local.id())
                .is_some_and(|s| s.contains(&a.tx_id))
            {
                missing.push((a.tx_id, local.id().to_string()));
            }
        }
    }
    missing
}

/// Polls the async `check` every 100 ms until it returns `None` (done);
/// fails the test, naming the seed, `what` and the last status, if that
/// takes longer than [`WAIT_MAX`]. For conditions read over the network
/// (counters, records).
pub async fn wait_until<F, Fut>(seed: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let Some(status) = check().await else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {what}: {status} within {WAIT_MAX:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `pending` every 50 ms until it returns `None` (done); fails the
/// test, naming the seed, `what` and the last status `pending` described,
/// if that takes longer than [`WAIT_MAX`].
pub async fn wait_for(seed: u64, what: &str, mut pending: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let Some(status) = pending() else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {what}: {status} within {WAIT_MAX:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many of `times` are at or after `since`.
pub fn count_since(times: &[Instant], since: Instant) -> usize {
    times.iter().filter(|t| **t >= since).count()
}

/// Recovery times of one fault kind, in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Recoveries(pub Vec<u128>);

impl Recoveries {
    /// The `q` quantile (0..=1), nearest rank.
    pub fn quantile(&self, q: f64) -> u128 {
        let mut v = self.0.clone();
        v.sort_unstable();
        if v.is_empty() {
            return 0;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }
}

/// Prints the table the issue asks for.
pub fn print_table(rows: &BTreeMap<&'static str, (usize, usize, Recoveries, usize)>) {
    eprintln!("fault | runs | invariant violations | recovery time p50/p99 (ms) | data lost");
    for (fault, (runs, violations, rec, lost)) in rows {
        eprintln!(
            "{fault} | {runs} | {violations} | {}/{} | {lost}",
            rec.quantile(0.5),
            rec.quantile(0.99)
        );
    }
}
