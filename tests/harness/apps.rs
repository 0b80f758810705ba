//! Application workloads for the fault harness and their checkers:
//!
//! - [`Counters`]: invocations of `counter` instances (one caller per
//!   cloud, one call at a time); checked exact — the final total lies
//!   between the acknowledged increments and those plus the unanswered
//!   ones (nothing acknowledged lost, nothing doubled), and every answer
//!   is above the one before;
//! - [`Offloads`]: stateless `square` tasks handed to a server saturated by
//!   configuration (`--inflight-max 0`), so every one is offloaded through
//!   the cloud's orchestrator; checked on the ledger — every answered task
//!   has a contract whose `OffloadCompleted` digest is the answer's, every
//!   accepted contract completed or its task was recorded as failed (the
//!   caller got an error, or a later contract for it completed), and no
//!   contract is accepted or completed twice; an answer from a disputed
//!   contract (a cheating executor's result refused, `OffloadDisputed`)
//!   is the requester's recomputed result;
//! - migrations of `counter` instances ([`migrate`], [`stalled_migration`]);
//!   checked on the ledger ([`check_migrations`]) — every `Indication` ends
//!   with exactly one `Confirmation`; an accepted inter-cloud one with
//!   exactly one `Leave` on the source cloud's chain and one `Arrival` on
//!   the destination's, anything else with neither; and each requester's
//!   report agrees with the ledger.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use federact::actors::wire::{
    self, MigrationReport, OrchestratorRequest, OrchestratorResponse, ORCHESTRATOR_ACTOR,
};
use federact::config::NodeId;
use federact::ledger::hash::Hash;
use federact::ledger::record::{Record, Scope, Site};
use federact::ledger::store::ChainStore;

use super::{count_since, wait_for, Cluster, WAIT_MAX};

/// What one caller saw of one counter instance.
#[derive(Debug, Default, Clone)]
pub struct KeyLog {
    /// Increments answered with a total.
    pub acked: u64,
    /// Increments that got an error (may or may not have counted).
    pub unknown: u64,
    /// The last total answered.
    pub last_total: Option<i64>,
}

/// What the counter callers saw.
#[derive(Debug, Default)]
pub struct CounterLog {
    /// Per instance key.
    pub keys: BTreeMap<String, KeyLog>,
    /// Answers that were not above the previous one (doubling or loss
    /// seen live), by key.
    pub regressions: Vec<(String, String)>,
    /// When each acknowledgement came.
    pub acked_at: Vec<Instant>,
}

/// A steady invocation workload: one caller on `cloud`'s client increments
/// its `counter` instances in turn by one, one call at a time.
pub struct Counters {
    /// The shared log.
    pub log: Arc<Mutex<CounterLog>>,
    /// The client (index into `Cluster::clients`) that calls.
    pub client: usize,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Counters {
    /// Starts calling instances `keys` from client `client`.
    pub fn start(cluster: &Cluster, client: usize, keys: &[&str]) -> Counters {
        let log = Arc::new(Mutex::new(CounterLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let invoker = cluster.clients[client].invoker.clone();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let (l, s) = (log.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut i = 0usize;
            while !s.load(Ordering::Relaxed) {
                let key = &keys[i % keys.len()];
                i += 1;
                let r = invoker.invoke("counter", key, &b"1"[..]).await;
                let failed = {
                    let mut log = l.lock().expect("log");
                    let total = r.map_err(|e| e.to_string()).and_then(|out| {
                        std::str::from_utf8(&out)
                            .ok()
                            .and_then(|t| t.parse::<i64>().ok())
                            .ok_or_else(|| format!("answer {out:?} is not a total"))
                    });
                    let k = log.keys.entry(key.clone()).or_default();
                    match total {
                        Ok(total) => {
                            k.acked += 1;
                            let prev = k.last_total.replace(total);
                            if prev.is_some_and(|p| total <= p) {
                                let msg = format!("counter/{key}: total {total} after {prev:?}");
                                log.regressions.push((key.clone(), msg));
                            }
                            log.acked_at.push(Instant::now());
                            false
                        }
                        Err(_) => {
                            k.unknown += 1;
                            true
                        }
                    }
                };
                if failed {
                    // Pace calls while the instance is away.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Counters {
            log,
            client,
            stop,
            task,
        }
    }

    /// Waits (bounded) for `n` acknowledged increments after `since`.
    pub async fn wait_acked(&self, since: Instant, n: usize, seed: u64, what: &str) {
        let log = &self.log;
        wait_for(seed, what, || {
            let got = count_since(&log.lock().expect("log").acked_at, since);
            (got < n).then(|| format!("{got} of {n} counter increments acknowledged"))
        })
        .await
    }

    /// Stops the caller after its current call.
    pub async fn stop(self) -> (usize, CounterLog) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let log = Arc::try_unwrap(self.log)
            .map(|m| m.into_inner().expect("log"))
            .unwrap_or_default();
        (self.client, log)
    }

    /// The keys called so far.
    pub fn keys(&self) -> Vec<String> {
        self.log.lock().expect("log").keys.keys().cloned().collect()
    }
}

/// Reads the total of `counter/key` (an increment by 0) through client
/// `client`, retrying (bounded) while the instance is unreachable.
pub async fn read_counter(cluster: &Cluster, client: usize, key: &str) -> Result<i64, String> {
    add_counter(cluster, client, key, 0).await
}

/// Adds `delta` to `counter/key` through client `client`; retries (bounded)
/// only answers that prove the call did not run (no capacity, not found).
pub async fn add_counter(
    cluster: &Cluster,
    client: usize,
    key: &str,
    delta: i64,
) -> Result<i64, String> {
    let deadline = Instant::now() + WAIT_MAX;
    let invoker = &cluster.clients[client].invoker;
    loop {
        let r = invoker
            .invoke("counter", key, delta.to_string().into_bytes())
            .await;
        match r {
            Ok(out) => {
                return std::str::from_utf8(&out)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| format!("counter/{key}: answer {out:?}"))
            }
            // A read may be retried whatever failed; an increment only
            // when the error proves it did not run.
            Err(e)
                if delta == 0
                    || matches!(e, federact::actors::FunctionError::NoCapacity { .. }) =>
            {
                if Instant::now() > deadline {
                    return Err(format!("counter/{key}: {e} (for {WAIT_MAX:?})"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("counter/{key}: {e}")),
        }
    }
}

/// Checks the counters after the workload stopped: each final total lies
/// within what the caller saw. Instances in `lost` were hosted by a server
/// killed with them (their in-memory state since the last deactivation is
/// lost with the process, by design): for them only "nothing doubled" is
/// checked. Returns the violations.
pub async fn check_counters(
    cluster: &Cluster,
    client: usize,
    log: &CounterLog,
    lost: &HashSet<String>,
) -> Vec<String> {
    let mut v: Vec<String> = log
        .regressions
        .iter()
        .filter(|(k, _)| !lost.contains(k))
        .map(|(_, m)| m.clone())
        .collect();
    for (key, k) in &log.keys {
        let total = match read_counter(cluster, client, key).await {
            Ok(t) => t,
            Err(e) => {
                v.push(format!(
                    "counter/{key} does not answer after the faults: {e}"
                ));
                continue;
            }
        };
        let (lo, hi) = (k.acked as i64, (k.acked + k.unknown) as i64);
        if total > hi {
            v.push(format!(
                "counter/{key}: total {total} above the {hi} increments made (doubled)"
            ));
        }
        if !lost.contains(key) && (total < lo || k.last_total.is_some_and(|t| total < t)) {
            v.push(format!(
                "counter/{key}: total {total} below the {lo} acknowledged increments (last answer {:?}): lost",
                k.last_total
            ));
        }
    }
    v
}

/// What the offload callers saw.
#[derive(Debug, Default)]
pub struct OffloadLog {
    /// Answered tasks: (payload, answer).
    pub acked: Vec<(u64, String)>,
    /// Tasks that got an error: (payload, error).
    pub failed: Vec<(u64, String)>,
    /// Wrong answers.
    pub wrong: Vec<String>,
    /// When each answer came.
    pub acked_at: Vec<Instant>,
}

/// A steady offload workload: `workers` callers on a client each hand one
/// `square` task at a time to a saturated server.
pub struct Offloads {
    /// The shared log.
    pub log: Arc<Mutex<OffloadLog>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Offloads {
    /// Starts `workers` callers on client `client` sending tasks to `server`.
    pub fn start(cluster: &Cluster, client: usize, server: &str, workers: u64) -> Offloads {
        let log = Arc::new(Mutex::new(OffloadLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let server = cluster.fed.node(server).expect("server").id();
        let tasks = (0..workers)
            .map(|w| {
                let invoker = cluster.clients[client].invoker.clone();
                let (l, s) = (log.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !s.load(Ordering::Relaxed) {
                        i += 1;
                        let n = (w + 1) * 1_000_000 + i;
                        let r = invoker.task_at(server, "square", n.to_string()).await;
                        let failed = {
                            let mut log = l.lock().expect("log");
                            match r {
                                Ok(out) => {
                                    let out = String::from_utf8_lossy(&out).to_string();
                                    if out != (n * n).to_string() {
                                        log.wrong.push(format!("square {n} answered {out}"));
                                    }
                                    log.acked.push((n, out));
                                    log.acked_at.push(Instant::now());
                                    false
                                }
                                Err(e) => {
                                    log.failed.push((n, e.to_string()));
                                    true
                                }
                            }
                        };
                        if failed {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                })
            })
            .collect();
        Offloads { log, stop, tasks }
    }

    /// Waits (bounded) for `n` answered tasks after `since`.
    pub async fn wait_acked(&self, since: Instant, n: usize, seed: u64, what: &str) {
        let log = &self.log;
        wait_for(seed, what, || {
            let got = count_since(&log.lock().expect("log").acked_at, since);
            (got < n).then(|| format!("{got} of {n} offloaded tasks answered"))
        })
        .await
    }

    /// Stops the callers after their current task.
    pub async fn stop(self) -> OffloadLog {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        Arc::try_unwrap(self.log)
            .map(|m| m.into_inner().expect("log"))
            .unwrap_or_default()
    }
}

/// The task digest a server gives `square(n)` (name, `/`, payload).
fn square_digest(n: u64) -> Hash {
    Hash::of_parts(&[b"square", b"/", n.to_string().as_bytes()])
}

/// Checks the offload contracts on `records` (every chain's records)
/// against what the callers saw. Returns the violations.
pub fn check_offloads(records: &HashMap<String, Vec<Record>>, log: &OffloadLog) -> Vec<String> {
    let mut v = log.wrong.clone();
    let mut requested: HashMap<Hash, Hash> = HashMap::new();
    let mut accepted: HashMap<Hash, usize> = HashMap::new();
    let mut completed: HashMap<Hash, Vec<Hash>> = HashMap::new();
    let mut disputed: HashMap<Hash, Hash> = HashMap::new();
    for recs in records.values() {
        for r in recs {
            match r {
                Record::OffloadRequested {
                    task_id,
                    task_digest,
                    ..
                } if requested.insert(*task_id, *task_digest).is_some() => {
                    v.push(format!("offload {task_id} requested twice"));
                }
                Record::OffloadAccepted { task_id, .. } => {
                    *accepted.entry(*task_id).or_default() += 1
                }
                Record::OffloadCompleted {
                    task_id,
                    result_digest,
                    ..
                } => completed.entry(*task_id).or_default().push(*result_digest),
                Record::OffloadDisputed {
                    task_id,
                    expected_digest,
                    ..
                } if disputed.insert(*task_id, *expected_digest).is_some() => {
                    v.push(format!("offload {task_id} disputed twice"));
                }
                _ => {}
            }
        }
    }
    for (id, n) in &accepted {
        if *n > 1 {
            v.push(format!("offload {id} accepted {n} times"));
        }
        if !requested.contains_key(id) {
            v.push(format!("offload {id} accepted without a request"));
        }
    }
    for (id, d) in &completed {
        if d.len() > 1 {
            v.push(format!("offload {id} completed {} times", d.len()));
        }
        if !accepted.contains_key(id) {
            v.push(format!("offload {id} completed without a contract"));
        }
    }
    // Per task digest: its contracts and whether one completed.
    let mut by_digest: HashMap<Hash, Vec<Hash>> = HashMap::new();
    for (id, d) in &requested {
        by_digest.entry(*d).or_default().push(*id);
    }
    for id in disputed.keys() {
        if !completed.contains_key(id) {
            v.push(format!("offload {id} disputed without a completion"));
        }
    }
    // An answer is what a completed contract committed, or (its executor's
    // result disputed) what the requester recomputed.
    for (n, out) in &log.acked {
        let want = Hash::of(out.as_bytes());
        let ok = by_digest.get(&square_digest(*n)).is_some_and(|ids| {
            ids.iter().any(|id| match disputed.get(id) {
                Some(expected) => *expected == want,
                None => completed.get(id).is_some_and(|ds| ds.contains(&want)),
            })
        });
        if !ok {
            v.push(format!(
                "answered task square({n}) has no completed contract with its result digest (nor a dispute recomputing it)"
            ));
        }
    }
    let failed: HashSet<Hash> = log.failed.iter().map(|(n, _)| square_digest(*n)).collect();
    for (id, d) in &requested {
        if !accepted.contains_key(id) || completed.contains_key(id) {
            continue;
        }
        let retried = by_digest[d]
            .iter()
            .any(|other| other != id && completed.contains_key(other));
        if !retried && !failed.contains(d) {
            v.push(format!(
                "offload {id} accepted, neither completed nor its task recorded as failed"
            ));
        }
    }
    v
}

/// Where `counter/key` lives now (placing it if it does not), asked of
/// client `client`'s orchestrator.
pub async fn locate(cluster: &Cluster, client: usize, key: &str) -> Option<NodeId> {
    let c = &cluster.clients[client];
    let orch = cluster.fed.orchestrator(&c.cloud)?.id();
    let req = OrchestratorRequest::Locate {
        name: "counter".into(),
        key: key.into(),
    };
    let reply = c
        .transport
        .request(
            orch,
            ORCHESTRATOR_ACTOR,
            wire::encode(&req),
            Duration::from_secs(10),
        )
        .await
        .ok()?;
    match wire::decode::<OrchestratorResponse>(&reply).ok()? {
        OrchestratorResponse::Located(s) => Some(s),
        _ => None,
    }
}

/// The node name of `id`.
pub fn name_of(cluster: &Cluster, id: NodeId) -> String {
    cluster
        .fed
        .node_by_id(&id)
        .map(|n| n.name().to_string())
        .unwrap_or_else(|| id.to_string())
}

/// The server of `cloud` other than `server`.
pub fn other_server(cluster: &Cluster, cloud: &str, server: &str) -> String {
    cluster
        .fed
        .nodes_with_role(cloud, federact::config::Role::Server)
        .map(|n| n.name().to_string())
        .find(|n| n != server)
        .expect("a second server")
}

/// A migration the test asked for, with what the requester was told.
#[derive(Debug)]
pub struct Requested {
    /// The instance key.
    pub key: String,
    /// The answer: a report, or the error.
    pub answer: Result<MigrationReport, String>,
}

/// Starts migrating `counter/key` (of client `client`'s cloud) to `to`
/// through the orchestrator, as the client (the client API).
pub fn migrate(
    cluster: &Cluster,
    client: usize,
    key: &str,
    to: Site,
) -> tokio::task::JoinHandle<Result<MigrationReport, String>> {
    let c = &cluster.clients[client];
    let orch = cluster
        .fed
        .orchestrator(&c.cloud)
        .expect("orchestrator")
        .id();
    let t = c.transport.clone();
    let key = key.to_string();
    tokio::spawn(async move {
        federact::actors::orchestrator::migrate_instance(
            &t,
            orch,
            "counter",
            &key,
            to,
            Duration::from_secs(180),
        )
        .await
        .map_err(|e| e.to_string())
    })
}

/// Reads a chain's committed records from one validator as they come.
pub struct ChainReader {
    chain: String,
    validator: String,
    next: u64,
    /// Records read so far, with their heights.
    pub records: Vec<(u64, Record)>,
}

impl ChainReader {
    /// A reader of `chain` through its first validator.
    pub fn new(cluster: &Cluster, chain: &str) -> ChainReader {
        let spec = cluster
            .fed
            .chains()
            .iter()
            .find(|c| c.id() == chain)
            .expect("chain");
        ChainReader {
            chain: chain.to_string(),
            validator: spec.validator_names()[0].clone(),
            next: 1,
            records: Vec::new(),
        }
    }

    /// Reads the blocks committed since the last poll.
    pub async fn poll(&mut self, cluster: &Cluster) {
        let Some(tip) = cluster.tip(&self.validator, &self.chain).await else {
            return;
        };
        while self.next <= tip {
            let Some(b) = cluster.block(&self.validator, &self.chain, self.next).await else {
                return;
            };
            for tx in &b.txs {
                self.records.push((self.next, tx.record().clone()));
            }
            self.next += 1;
        }
    }
}

/// The chain an instance migration from `source` to `destination`
/// announces itself on.
pub fn indication_chain(cluster: &Cluster, source: &str, destination: &str) -> String {
    if source == destination {
        cluster
            .fed
            .local_chain(source)
            .expect("chain")
            .id()
            .to_string()
    } else {
        cluster
            .fed
            .consortium()
            .expect("consortium")
            .id()
            .to_string()
    }
}

/// Waits (bounded) until an `Indication` from server `source` to
/// `destination` not in `seen` is committed on `chain`; returns its
/// migration id.
pub async fn wait_indication(
    cluster: &Cluster,
    chain: &str,
    source: &str,
    destination: &str,
    seen: &HashSet<Hash>,
) -> Hash {
    let mut reader = ChainReader::new(cluster, chain);
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        reader.poll(cluster).await;
        let found = reader.records.iter().find_map(|(_, r)| match r {
            Record::Indication {
                migration_id,
                source: s,
                destination: d,
                ..
            } if s.server == source && d.server == destination && !seen.contains(migration_id) => {
                Some(*migration_id)
            }
            _ => None,
        });
        if let Some(id) = found {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "seed {}: no Indication {source} -> {destination} on {chain} within {WAIT_MAX:?}",
            cluster.seed
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every migration id with an `Indication` in `records`.
pub fn indications(records: &HashMap<String, Vec<Record>>) -> HashSet<Hash> {
    records
        .values()
        .flatten()
        .filter_map(|r| match r {
            Record::Indication { migration_id, .. } => Some(*migration_id),
            _ => None,
        })
        .collect()
}

/// Every chain's records, read live from each chain's first validator.
pub async fn live_records(cluster: &Cluster) -> HashMap<String, Vec<Record>> {
    let mut out = HashMap::new();
    for chain in cluster.fed.chains() {
        let mut r = ChainReader::new(cluster, chain.id());
        r.poll(cluster).await;
        out.insert(
            chain.id().to_string(),
            r.records.into_iter().map(|(_, r)| r).collect(),
        );
    }
    out
}

/// Every chain's records, read offline from each chain's first
/// validator's store (after the cluster terminated).
pub fn store_records(cluster: &Cluster) -> HashMap<String, Vec<Record>> {
    let mut out = HashMap::new();
    for chain in cluster.fed.chains() {
        let v = &chain.validator_names()[0];
        let store = ChainStore::open(&cluster.store_dir(v, chain.id()), None).expect("open store");
        let mut recs = Vec::new();
        for h in 1..=store.tip().height {
            if let Ok(Some(b)) = store.block(h) {
                recs.extend(b.txs.iter().map(|tx| tx.record().clone()));
            }
        }
        out.insert(chain.id().to_string(), recs);
    }
    out
}

/// The migration outcome on the ledger: `None` while it has no
/// confirmation; `Some(Err)` for a record set that breaks the protocol.
fn outcome(
    cluster: &Cluster,
    records: &HashMap<String, Vec<Record>>,
    id: Hash,
) -> Option<Result<bool, String>> {
    let mut indication = None;
    let mut confirmations = Vec::new();
    let mut leaves = Vec::new();
    let mut arrivals = Vec::new();
    for (chain, recs) in records {
        for r in recs {
            match r {
                Record::Indication {
                    migration_id,
                    source,
                    destination,
                    scope,
                    ..
                } if *migration_id == id => {
                    indication = Some((chain.clone(), source.clone(), destination.clone(), *scope))
                }
                Record::Confirmation {
                    migration_id,
                    accepted,
                    ..
                } if *migration_id == id => confirmations.push((chain.clone(), *accepted)),
                Record::Leave { migration_id, .. } if *migration_id == id => {
                    leaves.push(chain.clone())
                }
                Record::Arrival { migration_id, .. } if *migration_id == id => {
                    arrivals.push(chain.clone())
                }
                _ => {}
            }
        }
    }
    let Some((chain, source, destination, scope)) = indication else {
        return Some(Err(format!(
            "migration {id}: records without an Indication"
        )));
    };
    let accepted = match confirmations.as_slice() {
        [] => return None,
        [(c, a)] if *c == chain => *a,
        more => {
            return Some(Err(format!(
                "migration {id}: {} confirmations {more:?} (Indication on {chain})",
                more.len()
            )))
        }
    };
    let local = |cloud: &str| {
        cluster
            .fed
            .local_chain(cloud)
            .map(|c| c.id().to_string())
            .unwrap_or_default()
    };
    let (want_leave, want_arrival) = if accepted && scope == Scope::Inter {
        (vec![local(&source.cloud)], vec![local(&destination.cloud)])
    } else {
        (Vec::new(), Vec::new())
    };
    if leaves == want_leave && arrivals == want_arrival {
        return Some(Ok(accepted));
    }
    // Leave and Arrival follow an accepting confirmation: not yet, as long
    // as what is there is where it belongs.
    let partial = |got: &Vec<String>, want: &Vec<String>| {
        got.len() <= 1 && got.iter().all(|c| want.contains(c))
    };
    if accepted
        && scope == Scope::Inter
        && partial(&leaves, &want_leave)
        && partial(&arrivals, &want_arrival)
    {
        return None;
    }
    Some(Err(format!(
        "migration {id} ({scope:?}, accepted {accepted}): Leave on {leaves:?} (want {want_leave:?}), Arrival on {arrivals:?} (want {want_arrival:?})"
    )))
}

/// Waits (bounded) until every migration announced on the ledger has its
/// outcome, then checks each (see the module doc) and each requester's
/// answer against it. Returns the violations and the outcomes by id.
pub async fn check_migrations(
    cluster: &Cluster,
    requested: &[Requested],
) -> (Vec<String>, HashMap<Hash, bool>) {
    let deadline = Instant::now() + WAIT_MAX;
    let (records, pending) = loop {
        let records = live_records(cluster).await;
        let pending: Vec<Hash> = indications(&records)
            .into_iter()
            .filter(|id| outcome(cluster, &records, *id).is_none())
            .collect();
        if pending.is_empty() || Instant::now() > deadline {
            break (records, pending);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut v: Vec<String> = pending
        .iter()
        .map(|id| format!("migration {id}: no outcome on the ledger within {WAIT_MAX:?}"))
        .collect();
    let mut outcomes = HashMap::new();
    let mut ids: HashSet<Hash> = indications(&records);
    for recs in records.values() {
        for r in recs {
            if let Some(id) = r.migration_id() {
                ids.insert(*id);
            }
        }
    }
    for id in ids {
        match outcome(cluster, &records, id) {
            Some(Ok(a)) => {
                outcomes.insert(id, a);
            }
            Some(Err(e)) => v.push(e),
            None => {}
        }
    }
    for r in requested {
        if let Ok(rep) = &r.answer {
            match outcomes.get(&rep.migration_id) {
                Some(a) if *a == rep.completed => {}
                None if !rep.completed => {} // aborted before anything was announced
                other => v.push(format!(
                    "counter/{}: requester told completed={} but the ledger says {other:?}",
                    r.key, rep.completed
                )),
            }
        }
    }
    (v, outcomes)
}
