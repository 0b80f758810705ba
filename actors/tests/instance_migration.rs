//! Live migration of running, stateful function instances (BASICS over
//! loopback QUIC with real chains): local and inter-cloud moves keep the
//! instance's state and lose no call made during the move (concurrent
//! callers, every call counted); a tampered image is rejected on the
//! ledger and the instance keeps running at the source; a destination or
//! source killed mid-transfer leaves verifiable ledgers and exactly one
//! running instance.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use federact_actors::migration::MigrationLimits;
use federact_actors::orchestrator::{MigrateInstance, Whereabouts};
use federact_actors::server::Load;
use federact_actors::wire::MigrationReport;
use federact_actors::{EmbeddedFederation, Function, FunctionError, Invoker, NodeOptions};
use federact_config::{write_local_federation, NodeId, Topology};
use federact_ledger::record::{EntityKind, Record, Site};
use federact_ledger::store::ChainStore;

const TOPO: Topology = Topology {
    clouds: 2,
    servers_per_cloud: 2,
    local_validators: 1,
    inter_validators: 1,
};

/// A counter whose state can carry `ballast` bytes (a large snapshot, so a
/// transfer lasts long enough to be interrupted).
#[derive(Default)]
struct Counter {
    count: u64,
    ballast: Vec<u8>,
}

impl Function for Counter {
    fn call(&mut self, _key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        if let Some(mib) = payload.strip_prefix(b"ballast ") {
            let mib: usize = std::str::from_utf8(mib)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| FunctionError::failed("bad ballast size"))?;
            self.ballast = (0..mib << 20).map(|i| (i % 251) as u8).collect();
        }
        self.count += 1;
        Ok(Bytes::from(self.count.to_string()))
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut s = self.count.to_be_bytes().to_vec();
        s.extend_from_slice(&self.ballast);
        s
    }
    fn restore(bytes: &[u8]) -> Result<Self, FunctionError> {
        let (count, ballast) =
            bytes
                .split_first_chunk::<8>()
                .ok_or_else(|| FunctionError::Restore {
                    detail: format!("{} bytes", bytes.len()),
                })?;
        Ok(Counter {
            count: u64::from_be_bytes(*count),
            ballast: ballast.to_vec(),
        })
    }
}

async fn start(limits: MigrationLimits) -> (tempfile::TempDir, EmbeddedFederation) {
    let dir = tempfile::tempdir().unwrap();
    write_local_federation(dir.path(), &TOPO, false).unwrap();
    let mut options = NodeOptions::default().function::<Counter>("counter");
    options.migration = limits;
    let fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .unwrap();
    (dir, fed)
}

/// An invoker on a non-server node of `cloud` (calls go over QUIC).
fn invoker(fed: &EmbeddedFederation, cloud: u32) -> Invoker {
    fed.node(&format!("c{cloud}-gateway"))
        .unwrap()
        .invoker()
        .unwrap()
}

fn name_of(fed: &EmbeddedFederation, id: NodeId) -> String {
    fed.federation()
        .node_by_id(&id)
        .map(|n| n.name().to_string())
        .unwrap_or_default()
}

async fn whereabouts(fed: &EmbeddedFederation, cloud: u32) -> Option<String> {
    let orch = fed
        .node(&format!("c{cloud}-orchestrator"))
        .unwrap()
        .orchestrator()
        .unwrap()
        .clone();
    let at = orch
        .send(Whereabouts("counter".into(), "k".into()))
        .await
        .unwrap();
    at.map(|id| name_of(fed, id))
}

/// Instances hosted by each running server of cloud `cloud`.
async fn hosted(fed: &EmbeddedFederation, cloud: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for s in 1..=TOPO.servers_per_cloud {
        let name = format!("c{cloud}-server-{s}");
        if let Some(node) = fed.node(&name) {
            let load = node.server().unwrap().send(Load).await.unwrap();
            out.push((name, load.instances));
        }
    }
    out
}

/// Callers hammering instance `counter/k` until told to stop; each keeps
/// the outputs it got (every call must succeed).
struct Callers {
    stop: Rc<RefCell<bool>>,
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<u64>, FunctionError>>>,
}

impl Callers {
    fn start(inv: &Invoker, n: usize) -> Callers {
        let stop = Rc::new(RefCell::new(false));
        let tasks = (0..n)
            .map(|_| {
                let (inv, stop) = (inv.clone(), stop.clone());
                actix::spawn(async move {
                    let mut got = Vec::new();
                    while !*stop.borrow() {
                        let out = inv.invoke("counter", "k", Bytes::new()).await?;
                        got.push(std::str::from_utf8(&out).unwrap().parse().unwrap());
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Ok(got)
                })
            })
            .collect();
        Callers { stop, tasks }
    }

    /// Stops the callers; every output they got, sorted.
    async fn finish(self) -> Vec<u64> {
        *self.stop.borrow_mut() = true;
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(
                t.await
                    .unwrap()
                    .expect("a call made during the move failed"),
            );
        }
        all.sort_unstable();
        all
    }
}

/// Asks cloud-1's orchestrator to migrate counter/k to `to`; the returned
/// future answers when the migration ended.
fn send_migrate(
    fed: &EmbeddedFederation,
    to: Site,
    tamper: bool,
) -> impl std::future::Future<
    Output = Result<Result<MigrationReport, FunctionError>, actix::MailboxError>,
> + 'static {
    let orch = fed
        .node("c1-orchestrator")
        .unwrap()
        .orchestrator()
        .unwrap()
        .clone();
    orch.send(MigrateInstance {
        name: "counter".into(),
        key: "k".into(),
        destination: Some(to),
        tamper,
    })
}

async fn migrate(
    fed: &EmbeddedFederation,
    to: Site,
    tamper: bool,
) -> Result<MigrationReport, FunctionError> {
    tokio::time::timeout(Duration::from_secs(60), send_migrate(fed, to, tamper))
        .await
        .expect("migration answered in time")
        .unwrap()
}

/// The other server of cloud-1.
fn other(server: &str) -> &'static str {
    if server == "c1-server-1" {
        "c1-server-2"
    } else {
        "c1-server-1"
    }
}

fn chain_dir(dir: &Path, node: &str, chain: &str) -> PathBuf {
    dir.join("data")
        .join(node)
        .join("chains")
        .join(chain)
        .join("chain")
}

fn records(dir: &Path, node: &str, chain: &str) -> Vec<Record> {
    let store = ChainStore::open(&chain_dir(dir, node, chain), None).unwrap();
    (1..=store.tip().height)
        .flat_map(|h| store.block(h).unwrap().unwrap().txs)
        .map(|tx| tx.record().clone())
        .collect()
}

fn verify(dir: &Path, node: &str, chain: &str) {
    let report = federact_ledger::verify::verify_store(&chain_dir(dir, node, chain)).unwrap();
    assert!(report.fault.is_none(), "{node}/{chain}: {:?}", report.fault);
}

/// Every output 1..=n exactly once: no call lost, none run twice.
fn assert_gapless(outputs: &[u64], first: u64) {
    let want: Vec<u64> = (first..first + outputs.len() as u64).collect();
    assert_eq!(outputs, want.as_slice(), "outputs are not gapless");
}

/// Places the instance with one call; returns its server.
async fn place(fed: &EmbeddedFederation, inv: &Invoker) -> String {
    let out = inv.invoke("counter", "k", Bytes::new()).await.unwrap();
    assert_eq!(out, Bytes::from("1"));
    whereabouts(fed, 1).await.expect("placed")
}

#[actix_rt::test]
async fn local_instance_migration_keeps_state_and_loses_no_call_made_during_the_move() {
    let (dir, fed) = start(MigrationLimits::default()).await;
    let inv = invoker(&fed, 1);
    let source = place(&fed, &inv).await;
    let dest = other(&source);
    let callers = Callers::start(&inv, 4);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = migrate(&fed, Site::new("cloud-1", dest), false)
        .await
        .unwrap();
    assert!(report.completed, "{report:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outputs = callers.finish().await;
    assert!(outputs.len() > 10, "callers made {} calls", outputs.len());
    assert_gapless(&outputs, 2);
    // The state moved: the next call continues the count, at the destination.
    let next = inv.invoke("counter", "k", Bytes::new()).await.unwrap();
    assert_eq!(next, Bytes::from((outputs.len() as u64 + 2).to_string()));
    assert_eq!(whereabouts(&fed, 1).await.as_deref(), Some(dest));
    let hosts = hosted(&fed, 1).await;
    assert!(hosts.contains(&(dest.to_string(), 1)), "{hosts:?}");
    assert!(hosts.contains(&(source.clone(), 0)), "{hosts:?}");
    // Nothing is left on disk: the snapshot was sent, the image adopted.
    for server in [source.as_str(), dest] {
        let left = migration_files(dir.path(), server);
        assert!(left.is_empty(), "{server} kept {left:?}");
    }
    eprintln!(
        "local instance migration: {} ms, {} calls during the run",
        report.elapsed_ms,
        outputs.len()
    );
    fed.shutdown().await;

    let recs = records(dir.path(), "c1-validator-1", "cloud-1.local");
    let ind = recs.iter().any(|r| matches!(r, Record::Indication { migration_id, vm_id, .. } if *migration_id == report.migration_id && *vm_id == report.vm_id));
    let conf = recs.iter().any(|r| matches!(r, Record::Confirmation { migration_id, accepted: true, .. } if *migration_id == report.migration_id));
    assert!(ind && conf, "indication {ind}, confirmation {conf}");
    let orch: Vec<&str> = recs
        .iter()
        .filter_map(|r| match r {
            Record::ProvOrch { deployed, location } if deployed == "counter/k" => {
                Some(location.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(orch, vec![source.as_str(), dest]);
    verify(dir.path(), "c1-validator-1", "cloud-1.local");
}

#[actix_rt::test]
async fn inter_cloud_instance_migration_hands_the_instance_to_the_other_cloud() {
    let (dir, fed) = start(MigrationLimits::default()).await;
    let inv = invoker(&fed, 1);
    let source = place(&fed, &inv).await;
    let callers = Callers::start(&inv, 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = migrate(&fed, Site::new("cloud-2", "c2-server-1"), false)
        .await
        .unwrap();
    assert!(report.completed, "{report:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outputs = callers.finish().await;
    assert!(outputs.len() > 10, "callers made {} calls", outputs.len());
    assert_gapless(&outputs, 2);
    // Cloud-1 forwards to cloud-2's orchestrator, which knows the server;
    // callers of both clouds reach the one instance.
    assert_eq!(
        whereabouts(&fed, 1).await.as_deref(),
        Some("c2-orchestrator")
    );
    assert_eq!(whereabouts(&fed, 2).await.as_deref(), Some("c2-server-1"));
    let n = outputs.len() as u64 + 2;
    let next = inv.invoke("counter", "k", Bytes::new()).await.unwrap();
    assert_eq!(next, Bytes::from(n.to_string()));
    let next = invoker(&fed, 2)
        .invoke("counter", "k", Bytes::new())
        .await
        .unwrap();
    assert_eq!(next, Bytes::from((n + 1).to_string()));
    assert!(hosted(&fed, 1).await.iter().all(|(_, n)| *n == 0));
    assert!(hosted(&fed, 2)
        .await
        .contains(&("c2-server-1".to_string(), 1)));
    eprintln!(
        "inter-cloud instance migration: {} ms, records {:?}",
        report.elapsed_ms, report.records
    );
    fed.shutdown().await;

    let c1 = records(dir.path(), "c1-validator-1", "cloud-1.local");
    assert!(c1.iter().any(
        |r| matches!(r, Record::Leave { migration_id, .. } if *migration_id == report.migration_id)
    ));
    assert!(c1.iter().any(|r| matches!(r, Record::ProvIdDelete { kind: EntityKind::Container, entity } if entity == "counter/k")));
    assert!(c1
        .iter()
        .any(|r| matches!(r, Record::ProvOrch { location, .. } if *location == source)));
    let c2 = records(dir.path(), "c2-validator-1", "cloud-2.local");
    assert!(c2.iter().any(|r| matches!(r, Record::Arrival { migration_id, .. } if *migration_id == report.migration_id)));
    assert!(c2.iter().any(|r| matches!(r, Record::ProvIdCreate { kind: EntityKind::Container, entity, .. } if entity == "counter/k")));
    assert!(c2.iter().any(|r| matches!(r, Record::ProvOrch { deployed, location } if deployed == "counter/k" && location == "c2-server-1")));
    let inter = records(dir.path(), "c1-inter-1", "consortium");
    assert!(inter.iter().any(|r| matches!(r, Record::Confirmation { migration_id, accepted: true, .. } if *migration_id == report.migration_id)));
    for (node, chain) in [
        ("c1-validator-1", "cloud-1.local"),
        ("c2-validator-1", "cloud-2.local"),
        ("c1-inter-1", "consortium"),
    ] {
        verify(dir.path(), node, chain);
    }
}

#[actix_rt::test]
async fn tampered_instance_image_is_rejected_and_the_instance_keeps_running_at_the_source() {
    let (dir, fed) = start(MigrationLimits::default()).await;
    let inv = invoker(&fed, 1);
    let source = place(&fed, &inv).await;
    let callers = Callers::start(&inv, 2);
    let report = migrate(&fed, Site::new("cloud-1", other(&source)), true)
        .await
        .unwrap();
    assert!(!report.completed, "{report:?}");
    let reason = report.reason.clone().unwrap_or_default();
    assert!(reason.contains("does not match"), "{reason}");
    let outputs = callers.finish().await;
    assert_gapless(&outputs, 2);
    assert_eq!(whereabouts(&fed, 1).await.as_deref(), Some(source.as_str()));
    let next = inv.invoke("counter", "k", Bytes::new()).await.unwrap();
    assert_eq!(next, Bytes::from((outputs.len() as u64 + 2).to_string()));
    let hosts = hosted(&fed, 1).await;
    assert!(hosts.contains(&(source.clone(), 1)), "{hosts:?}");
    assert!(
        hosts.contains(&(other(&source).to_string(), 0)),
        "{hosts:?}"
    );
    fed.shutdown().await;
    let recs = records(dir.path(), "c1-validator-1", "cloud-1.local");
    assert!(recs.iter().any(|r| matches!(r, Record::Confirmation { migration_id, accepted: false, .. } if *migration_id == report.migration_id)));
    verify(dir.path(), "c1-validator-1", "cloud-1.local");
}

/// The files under `server`'s migration directory (snapshots sent,
/// images received or kept).
fn migration_files(dir: &Path, server: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("data").join(server).join("migration"), &mut out);
    out
}

/// Waits until `server`'s incoming image file has data (the transfer streams).
async fn wait_streaming(dir: &Path, server: &str) {
    let incoming = dir
        .join("data")
        .join(server)
        .join("migration")
        .join("incoming");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let streaming = std::fs::read_dir(&incoming)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false));
        if streaming {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no transfer to {server} started");
}

/// Restarts a stopped node; its old endpoint's UDP port is free once the
/// last task holding it ended, so retry (bounded) while it is in use.
async fn restart(fed: &mut EmbeddedFederation, node: &str) {
    let start = Instant::now();
    loop {
        match fed.start_node(node).await {
            Ok(()) => return,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                eprintln!("restarting {node}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{node} did not restart: {e}"),
        }
    }
}

fn kill_limits() -> MigrationLimits {
    MigrationLimits {
        protocol_timeout: Duration::from_secs(5),
        ..MigrationLimits::default()
    }
}

/// Makes the instance's state large (so its transfer can be interrupted).
async fn grow(inv: &Invoker) {
    let out = inv
        .invoke("counter", "k", Bytes::from_static(b"ballast 48"))
        .await
        .unwrap();
    assert_eq!(out, Bytes::from("2"));
}

#[actix_rt::test]
async fn destination_killed_mid_transfer_leaves_the_instance_running_at_the_source() {
    let (dir, mut fed) = start(kill_limits()).await;
    let inv = invoker(&fed, 1);
    let source = place(&fed, &inv).await;
    grow(&inv).await;
    let dest = other(&source);
    let pending = send_migrate(&fed, Site::new("cloud-1", dest), false);
    wait_streaming(dir.path(), dest).await;
    fed.stop_node(dest).await;
    // The stopped destination discarded its partly received image.
    let left = migration_files(dir.path(), dest);
    assert!(left.is_empty(), "{dest} kept {left:?}");
    let report = tokio::time::timeout(Duration::from_secs(60), pending)
        .await
        .expect("migration ended in time")
        .unwrap()
        .unwrap();
    assert!(!report.completed, "{report:?}");
    // The instance runs on at the source with its state.
    let next = inv.invoke("counter", "k", Bytes::new()).await.unwrap();
    assert_eq!(next, Bytes::from("3"));
    assert_eq!(whereabouts(&fed, 1).await.as_deref(), Some(source.as_str()));
    // What a crash (no orderly stop) leaves: a partly received image. The
    // restarted server removes it; files it did not write stay.
    let incoming = dir
        .path()
        .join("data")
        .join(dest)
        .join("migration/incoming");
    let stale = incoming.join(format!("{}.part", report.migration_id));
    std::fs::write(&stale, b"half an image").unwrap();
    let foreign = incoming.join("operator-notes.txt");
    std::fs::write(&foreign, b"keep me").unwrap();
    restart(&mut fed, dest).await;
    assert!(!stale.exists(), "stale received image kept after a restart");
    assert!(
        foreign.exists(),
        "a file the server did not write was removed"
    );
    let hosts = hosted(&fed, 1).await;
    let total: u32 = hosts.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 1, "exactly one running instance: {hosts:?}");
    assert!(hosts.contains(&(source.clone(), 1)), "{hosts:?}");
    fed.shutdown().await;
    let recs = records(dir.path(), "c1-validator-1", "cloud-1.local");
    assert!(recs.iter().any(|r| matches!(r, Record::Confirmation { migration_id, accepted: false, .. } if *migration_id == report.migration_id)));
    verify(dir.path(), "c1-validator-1", "cloud-1.local");
}

#[actix_rt::test]
async fn source_killed_mid_transfer_leaves_consistent_ledgers_and_one_instance() {
    let (dir, mut fed) = start(kill_limits()).await;
    let inv = invoker(&fed, 1);
    let source = place(&fed, &inv).await;
    grow(&inv).await;
    let dest = other(&source);
    let pending = send_migrate(&fed, Site::new("cloud-1", dest), false);
    wait_streaming(dir.path(), dest).await;
    fed.stop_node(&source).await;
    let answer = tokio::time::timeout(Duration::from_secs(60), pending)
        .await
        .expect("migration ended in time")
        .unwrap();
    // The source died with the instance mid-transfer: the destination did
    // not complete, so the instance left (its in-memory state is lost).
    assert!(answer.is_err(), "{answer:?}");
    restart(&mut fed, &source).await;
    // The next call places it again; exactly one server runs it.
    let out = inv.invoke("counter", "k", Bytes::new()).await.unwrap();
    assert_eq!(out, Bytes::from("1"));
    let hosts = hosted(&fed, 1).await;
    let total: u32 = hosts.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 1, "exactly one running instance: {hosts:?}");
    fed.shutdown().await;
    let recs = records(dir.path(), "c1-validator-1", "cloud-1.local");
    assert!(recs
        .iter()
        .any(|r| matches!(r, Record::ProvIdDelete { kind: EntityKind::Container, entity } if entity == "counter/k")));
    verify(dir.path(), "c1-validator-1", "cloud-1.local");
}

async fn where_is(fed: &EmbeddedFederation, key: &str) -> Option<String> {
    let orch = fed
        .node("c1-orchestrator")
        .unwrap()
        .orchestrator()
        .unwrap()
        .clone();
    let at = orch
        .send(Whereabouts("counter".into(), key.into()))
        .await
        .unwrap();
    at.map(|id| name_of(fed, id))
}

#[actix_rt::test]
async fn drain_migrates_every_instance_away_and_places_nothing_more_there() {
    let (_dir, fed) = start(MigrationLimits::default()).await;
    let inv = invoker(&fed, 1);
    let keys = ["a", "b", "c", "d"];
    for (i, k) in keys.iter().enumerate() {
        // Instance i has counted i + 1 calls.
        for _ in 0..=i {
            inv.invoke("counter", k, Bytes::new()).await.unwrap();
        }
    }
    let drained = where_is(&fed, "a").await.unwrap();
    let before = hosted(&fed, 1).await;
    let on_drained = before.iter().find(|(s, _)| *s == drained).unwrap().1;
    assert!(on_drained >= 1, "{before:?}");
    // Over QUIC, as a node of the cloud (what `federact drain` does).
    let gateway = fed.node("c1-gateway").unwrap();
    let orch_id = fed.federation().orchestrator("cloud-1").unwrap().id();
    let (moved, failed) = federact_actors::orchestrator::drain_server(
        gateway.transport(),
        orch_id,
        &drained,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!((moved, failed.len()), (on_drained, 0), "{failed:?}");
    let hosts = hosted(&fed, 1).await;
    assert!(hosts.contains(&(drained.clone(), 0)), "{hosts:?}");
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(where_is(&fed, k).await.as_deref(), Some(other(&drained)));
        let out = inv.invoke("counter", k, Bytes::new()).await.unwrap();
        assert_eq!(out, Bytes::from((i + 2).to_string()), "state of {k}");
    }
    // New instances avoid the drained server.
    inv.invoke("counter", "e", Bytes::new()).await.unwrap();
    assert_eq!(where_is(&fed, "e").await.as_deref(), Some(other(&drained)));
    // A drain from another cloud is refused.
    let foreign = fed.node("c2-gateway").unwrap();
    let refused = federact_actors::orchestrator::drain_server(
        foreign.transport(),
        orch_id,
        other(&drained),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        matches!(refused, Err(FunctionError::Placement { .. })),
        "{refused:?}"
    );
    fed.shutdown().await;
}

#[actix_rt::test]
async fn rebalance_policy_migrates_a_hot_instance_off_a_hot_server() {
    let (_dir, fed) = start(MigrationLimits::default()).await;
    let inv = invoker(&fed, 1);
    let keys = ["a", "b", "c"];
    for k in keys {
        inv.invoke("counter", k, Bytes::new()).await.unwrap();
    }
    // Two servers, three instances: one server hosts two; make both hot.
    let mut at = Vec::new();
    for k in keys {
        at.push((k, where_is(&fed, k).await.unwrap()));
    }
    let hot_server = if at.iter().filter(|(_, s)| *s == at[0].1).count() >= 2 {
        at[0].1.clone()
    } else {
        at[1].1.clone()
    };
    let hot: Vec<&str> = at
        .iter()
        .filter(|(_, s)| *s == hot_server)
        .map(|(k, _)| *k)
        .collect();
    assert!(hot.len() >= 2, "{at:?}");
    let stop = Rc::new(RefCell::new(false));
    let tasks: Vec<_> = hot
        .iter()
        .map(|k| {
            let (inv, stop, k) = (inv.clone(), stop.clone(), k.to_string());
            actix::spawn(async move {
                let mut n = 1u64;
                while !*stop.borrow() {
                    let out = inv.invoke("counter", &k, Bytes::new()).await?;
                    n += 1;
                    assert_eq!(out, Bytes::from(n.to_string()), "state of {k}");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok::<u64, FunctionError>(n)
            })
        })
        .collect();
    let orch = fed
        .node("c1-orchestrator")
        .unwrap()
        .orchestrator()
        .unwrap()
        .clone();
    orch.send(federact_actors::orchestrator::SetRebalance(Some(
        federact_actors::placement::Rebalance::default(),
    )))
    .await
    .unwrap();
    let start = Instant::now();
    let mut moved = None;
    while start.elapsed() < Duration::from_secs(30) && moved.is_none() {
        for k in &hot {
            if where_is(&fed, k).await.as_deref() == Some(other(&hot_server)) {
                moved = Some(k.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    orch.send(federact_actors::orchestrator::SetRebalance(None))
        .await
        .unwrap();
    *stop.borrow_mut() = true;
    for t in tasks {
        let n = t.await.unwrap().expect("a call failed during rebalancing");
        assert!(n > 1);
    }
    assert!(moved.is_some(), "no hot instance left {hot_server}");
    // One hot instance moved, the other stayed: the heat is split.
    let still: usize = {
        let mut c = 0;
        for k in &hot {
            if where_is(&fed, k).await.as_deref() == Some(hot_server.as_str()) {
                c += 1;
            }
        }
        c
    };
    assert_eq!(still, hot.len() - 1);
    fed.shutdown().await;
}

/// A migrating instance buffers calls up to a quarter of its server's call
/// slots; later calls are refused as busy at once (a long migration must
/// not take every slot of the server), and the buffered ones run, in order,
/// when the migration aborts.
#[actix_rt::test]
async fn calls_beyond_a_frozen_instances_buffer_are_refused_busy_and_the_buffered_run_after() {
    let dir = tempfile::tempdir().unwrap();
    write_local_federation(dir.path(), &TOPO, false).unwrap();
    let mut options = NodeOptions::default()
        .function::<Counter>("counter")
        .server_limits(federact_actors::ServerLimits {
            inflight_max: 8,
            ..federact_actors::ServerLimits::default()
        });
    options.migration = kill_limits();
    let mut fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .unwrap();
    let inv = invoker(&fed, 1);
    let source = place(&fed, &inv).await;
    let dest = other(&source);
    // The destination is down: the migration holds the instance frozen
    // until its protocol timeout.
    fed.stop_node(dest).await;
    let pending = send_migrate(&fed, Site::new("cloud-1", dest), false);
    let outgoing = dir
        .path()
        .join("data")
        .join(&source)
        .join("migration")
        .join("outgoing");
    let start = Instant::now();
    while std::fs::read_dir(&outgoing)
        .into_iter()
        .flatten()
        .flatten()
        .next()
        .is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no snapshot taken"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let calls = (0..5).map(|_| inv.invoke("counter", "k", Bytes::new()));
    let (results, report) = futures::join!(futures::future::join_all(calls), pending);
    assert!(!report.unwrap().unwrap().completed);
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(FunctionError::Busy)))
        .count();
    let mut counts: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(busy, 3, "{results:?}");
    assert_eq!(counts, vec![2, 3], "the buffered calls ran after the abort");
    fed.shutdown().await;
}

/// Regression (fault suite, "kill -9 of a migration's destination server"):
/// a server killed and restarted before its orchestrator noticed it was
/// silent kept its directory entries, so callers were routed for ever to a
/// server that answered `NotHere`. The restarted server's first load report
/// carries a new start time; its old instances leave and the next call
/// places the instance again (its in-memory state went with the process).
#[actix_rt::test]
async fn server_restarted_before_it_was_silent_gets_its_instances_placed_again() {
    let (_dir, mut fed) = start(MigrationLimits::default()).await;
    let inv = invoker(&fed, 1);
    let server = place(&fed, &inv).await;
    let out = inv.invoke("counter", "k", Bytes::new()).await.unwrap();
    assert_eq!(out, Bytes::from("2"));
    fed.stop_node(&server).await;
    restart(&mut fed, &server).await;
    let out = inv.invoke("counter", "k", Bytes::new()).await.unwrap();
    assert_eq!(out, Bytes::from("1"), "placed anew after the restart");
    let hosts = hosted(&fed, 1).await;
    let total: u32 = hosts.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 1, "exactly one running instance: {hosts:?}");
    fed.shutdown().await;
}
