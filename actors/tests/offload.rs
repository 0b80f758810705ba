//! MEC task offloading over loopback QUIC with real chains: a saturated
//! server offloads tasks through its orchestrator to another server of its
//! cloud (or abroad), each accepted offload's three records commit on the
//! right chain, and tasks that find no free slot anywhere wait for one
//! instead of failing. A cheating executor (tampered result, wrong
//! committed digest, or a consistent wrong result under spot checks) is
//! caught: the caller still gets the correct result, the rejection is
//! counted and disputed on the ledger.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use federact_actors::offload_check::{OffloadAdversary, OffloadChecks, OffloadCounts};
use federact_actors::stats;
use federact_actors::{EmbeddedFederation, Function, FunctionError, NodeOptions, ServerLimits};
use federact_config::{write_local_federation, NodeId, Topology};
use federact_ledger::hash::Hash;
use federact_ledger::record::{Record, Scope};
use federact_ledger::store::ChainStore;

/// Squares its payload (a decimal number).
#[derive(Default)]
struct Square;

impl Function for Square {
    fn call(&mut self, _key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        let n: u64 = std::str::from_utf8(&payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| FunctionError::failed("not a number"))?;
        Ok(Bytes::from((n * n).to_string()))
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(_: &[u8]) -> Result<Self, FunctionError> {
        Ok(Square)
    }
}

/// Node options for a federation in which server `full` has no call slot
/// of its own (every task it gets must be offloaded: saturation that does
/// not depend on how fast the tasks arrive) and every other server has two.
fn saturated(full: &'static str) -> impl Fn(&str) -> NodeOptions + Send + Sync + 'static {
    move |name| {
        let limits = ServerLimits {
            inflight_max: if name == full { 0 } else { 2 },
            report_every: Duration::from_millis(100),
            ..ServerLimits::default()
        };
        NodeOptions::default()
            .function::<Square>("square")
            .server_limits(limits)
    }
}

#[actix_rt::test]
async fn c1s2_saturated_server_offloads_to_its_neighbour_with_three_records() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 2,
        local_validators: 1,
        inter_validators: 0,
    };
    write_local_federation(dir.path(), &topo, false).unwrap();
    let fed = EmbeddedFederation::start_each(dir.path(), saturated("c1-server-1"))
        .await
        .unwrap();
    let invoker = fed.node("c1-server-1").unwrap().invoker().unwrap();
    let executor = fed.federation().node("c1-server-2").unwrap().id();

    let tasks = (1..=12u64).map(|i| {
        let inv = invoker.clone();
        async move { (i, inv.task("square", i.to_string()).await) }
    });
    for (i, r) in futures::future::join_all(tasks).await {
        assert_eq!(r.unwrap(), Bytes::from((i * i).to_string()), "task {i}");
    }
    fed.shutdown().await;

    let store = ChainStore::open(
        &dir.path()
            .join("data/c1-validator-1/chains/cloud-1.local/chain"),
        None,
    )
    .unwrap();
    let recs: Vec<Record> = (1..=store.tip().height)
        .flat_map(|h| store.block(h).unwrap().unwrap().txs)
        .map(|tx| tx.record().clone())
        .collect();
    let mut tasks: HashMap<Hash, (bool, bool, bool)> = HashMap::new();
    for r in &recs {
        match r {
            Record::OffloadRequested {
                task_id,
                scope: Scope::Local,
                ..
            } => tasks.entry(*task_id).or_default().0 = true,
            Record::OffloadAccepted {
                task_id,
                executor: e,
                scope: Scope::Local,
            } => {
                assert_eq!(*e, executor);
                tasks.entry(*task_id).or_default().1 = true
            }
            Record::OffloadCompleted {
                task_id,
                scope: Scope::Local,
                ..
            } => tasks.entry(*task_id).or_default().2 = true,
            _ => {}
        }
    }
    // A request no server had room for stays a bare OffloadRequested (the
    // requester asks again later); every task ran under one accepted
    // contract, and every accepted contract completed.
    assert_eq!(
        tasks.values().filter(|t| t.1).count(),
        12,
        "every task was offloaded: {tasks:?}"
    );
    assert!(
        tasks
            .values()
            .filter(|t| t.1 || t.2)
            .all(|t| *t == (true, true, true)),
        "{tasks:?}"
    );
}

#[actix_rt::test]
async fn c2s1_saturated_cloud_offloads_abroad_on_the_consortium() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 2,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 1,
    };
    write_local_federation(dir.path(), &topo, false).unwrap();
    let fed = EmbeddedFederation::start_each(dir.path(), saturated("c1-server-1"))
        .await
        .unwrap();
    let invoker = fed.node("c1-server-1").unwrap().invoker().unwrap();
    let executor = fed.federation().node("c2-server-1").unwrap().id();

    let tasks = (1..=8u64).map(|i| {
        let inv = invoker.clone();
        async move { (i, inv.task("square", i.to_string()).await) }
    });
    for (i, r) in futures::future::join_all(tasks).await {
        assert_eq!(r.unwrap(), Bytes::from((i * i).to_string()), "task {i}");
    }
    fed.shutdown().await;

    let store = ChainStore::open(
        &dir.path().join("data/c1-inter-1/chains/consortium/chain"),
        None,
    )
    .unwrap();
    let mut tasks: HashMap<Hash, (bool, bool, bool)> = HashMap::new();
    for tx in (1..=store.tip().height).flat_map(|h| store.block(h).unwrap().unwrap().txs) {
        match tx.record() {
            Record::OffloadRequested {
                task_id,
                scope: Scope::Inter,
                ..
            } => tasks.entry(*task_id).or_default().0 = true,
            Record::OffloadAccepted {
                task_id,
                executor: e,
                scope: Scope::Inter,
            } => {
                assert_eq!(*e, executor);
                tasks.entry(*task_id).or_default().1 = true
            }
            Record::OffloadCompleted {
                task_id,
                scope: Scope::Inter,
                ..
            } => tasks.entry(*task_id).or_default().2 = true,
            _ => {}
        }
    }
    assert_eq!(
        tasks.values().filter(|t| t.1).count(),
        8,
        "every task was offloaded abroad: {tasks:?}"
    );
    assert!(
        tasks
            .values()
            .filter(|t| t.1 || t.2)
            .all(|t| *t == (true, true, true)),
        "{tasks:?}"
    );
}

/// A candidate that crashed after its last load report is still on the
/// orchestrator's shortlist: asking it fails, the orchestrator counts that
/// and asks the next candidate, and every contract on the ledger names the
/// server that actually ran the task.
#[actix_rt::test]
async fn c1s3_crashed_candidate_is_skipped_and_the_next_one_runs_the_task() {
    use federact_actors::orchestrator::OrchestratorStatus;
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 3,
        local_validators: 1,
        inter_validators: 0,
    };
    write_local_federation(dir.path(), &topo, false).unwrap();
    let mut fed = EmbeddedFederation::start_each(dir.path(), saturated("c1-server-1"))
        .await
        .unwrap();
    let orchestrator = fed
        .node("c1-orchestrator")
        .unwrap()
        .orchestrator()
        .unwrap()
        .clone();
    // Bounded wait for the three servers to join.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while orchestrator
        .send(OrchestratorStatus)
        .await
        .unwrap()
        .servers_joined
        < 3
    {
        assert!(std::time::Instant::now() < deadline, "servers join");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Idle candidates tie on load and are asked in id order: crash the
    // first one, so the first offload is sure to try it.
    let id = |n: &str| fed.federation().node(n).unwrap().id();
    let (crashed, survivor) = if id("c1-server-2") < id("c1-server-3") {
        ("c1-server-2", "c1-server-3")
    } else {
        ("c1-server-3", "c1-server-2")
    };
    let survivor_id = id(survivor);
    fed.stop_node(crashed).await;

    let invoker = fed.node("c1-server-1").unwrap().invoker().unwrap();
    let tasks = (1..=6u64).map(|i| {
        let inv = invoker.clone();
        async move { (i, inv.task("square", i.to_string()).await) }
    });
    for (i, r) in futures::future::join_all(tasks).await {
        assert_eq!(r.unwrap(), Bytes::from((i * i).to_string()), "task {i}");
    }
    let counters = orchestrator.send(OrchestratorStatus).await.unwrap();
    assert!(counters.offloads >= 1, "{counters:?}");
    assert!(
        counters.candidates_failed >= 1,
        "the crashed candidate was tried: {counters:?}"
    );
    fed.shutdown().await;

    let store = ChainStore::open(
        &dir.path()
            .join("data/c1-validator-1/chains/cloud-1.local/chain"),
        None,
    )
    .unwrap();
    let mut accepted = 0;
    let mut completed = std::collections::HashSet::new();
    let mut contracts = Vec::new();
    for tx in (1..=store.tip().height).flat_map(|h| store.block(h).unwrap().unwrap().txs) {
        match tx.record() {
            Record::OffloadAccepted {
                task_id, executor, ..
            } => {
                accepted += 1;
                assert_eq!(*executor, survivor_id, "contracts name the survivor");
                contracts.push(*task_id);
            }
            Record::OffloadCompleted { task_id, .. } => {
                completed.insert(*task_id);
            }
            _ => {}
        }
    }
    assert_eq!(accepted, 6, "every task ran under a contract");
    assert!(
        contracts.iter().all(|t| completed.contains(t)),
        "every contract completed"
    );
}

/// Every record of `chain` in validator `validator`'s store under `dir`.
fn chain_records(dir: &std::path::Path, validator: &str, chain: &str) -> Vec<(NodeId, Record)> {
    let store = ChainStore::open(
        &dir.join(format!("data/{validator}/chains/{chain}/chain")),
        None,
    )
    .unwrap();
    (1..=store.tip().height)
        .flat_map(|h| store.block(h).unwrap().unwrap().txs)
        .map(|tx| (*tx.author(), tx.record().clone()))
        .collect()
}

/// Runs `TASKS` tasks on `c1-server-1` (saturated, so each is offloaded
/// to `c1-server-2`, the only other server) with `c1-server-2` cheating
/// as `cheat` and `c1-server-1` spot-checking `spot` of its results.
/// Checks every caller got the correct square, and returns both servers'
/// offload counters (read remotely through the stats actor) and the
/// local chain's records.
async fn offload_to(
    cheat: Option<OffloadAdversary>,
    spot: f64,
) -> (OffloadCounts, OffloadCounts, Vec<(NodeId, Record)>, NodeId) {
    const TASKS: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 2,
        local_validators: 1,
        inter_validators: 0,
    };
    write_local_federation(dir.path(), &topo, false).unwrap();
    let base = saturated("c1-server-1");
    let fed = EmbeddedFederation::start_each(dir.path(), move |name| {
        let mut o = base(name);
        o.offload = OffloadChecks {
            spot_check: if name == "c1-server-1" { spot } else { 0.0 },
            adversary: if name == "c1-server-2" { cheat } else { None },
        };
        o
    })
    .await
    .unwrap();
    let invoker = fed.node("c1-server-1").unwrap().invoker().unwrap();
    // One at a time: each task's offload, check and dispute are its own.
    for i in 1..=TASKS {
        let n = 1000 + i;
        let r = invoker.task("square", n.to_string()).await;
        assert_eq!(
            r.unwrap(),
            Bytes::from((n * n).to_string()),
            "task {n} with executor {cheat:?}"
        );
    }
    let id = |n: &str| fed.federation().node(n).unwrap().id();
    let (requester, executor) = (id("c1-server-1"), id("c1-server-2"));
    // Read each server's counters as another member would.
    let asker = fed.node("c1-validator-1").unwrap().transport().clone();
    let stats = |node| {
        let t = asker.clone();
        async move {
            stats::query(&t, node, Duration::from_secs(10))
                .await
                .unwrap()
                .offloads
                .expect("a server reports offload counters")
        }
    };
    let (req, exe) = (stats(requester).await, stats(executor).await);
    fed.shutdown().await;
    let recs = chain_records(dir.path(), "c1-validator-1", "cloud-1.local");
    assert_eq!(req.verified + req.digest_mismatches, TASKS, "{req:?}");
    (req, exe, recs, requester)
}

/// The disputes in `recs`, checked to be the requester's, with the
/// caller's correct result as the recomputed digest and a received one
/// that differs from it or from the committed one.
fn disputes(recs: &[(NodeId, Record)], requester: NodeId) -> usize {
    let completed: HashMap<Hash, Hash> = recs
        .iter()
        .filter_map(|(_, r)| match r {
            Record::OffloadCompleted {
                task_id,
                result_digest,
                ..
            } => Some((*task_id, *result_digest)),
            _ => None,
        })
        .collect();
    let squares: Vec<Hash> = (1001..=1004u64)
        .map(|n| Hash::of((n * n).to_string().as_bytes()))
        .collect();
    let mut n = 0;
    for (author, r) in recs {
        if let Record::OffloadDisputed {
            task_id,
            received_digest,
            expected_digest,
            ..
        } = r
        {
            assert_eq!(*author, requester, "a dispute by its requester");
            assert!(squares.contains(expected_digest), "recomputed: the square");
            let committed = completed[task_id];
            assert!(
                *received_digest != *expected_digest || committed != *received_digest,
                "a dispute names a discrepancy"
            );
            n += 1;
        }
    }
    n
}

#[actix_rt::test]
async fn offload_tampered_result_is_rejected_counted_disputed_and_run_again() {
    let (req, exe, recs, requester) = offload_to(Some(OffloadAdversary::TamperResult), 0.0).await;
    assert_eq!(exe.cheats_served, 4, "{exe:?}");
    // Every tampered result refused (its digest is not the committed one),
    // run again by the requester and disputed on the ledger.
    assert_eq!(req.digest_mismatches, 4, "{req:?}");
    assert_eq!((req.reexecuted, req.disputes_recorded), (4, 4), "{req:?}");
    assert_eq!(disputes(&recs, requester), 4);
}

#[actix_rt::test]
async fn offload_wrong_committed_digest_is_rejected_counted_and_disputed() {
    let (req, exe, recs, requester) = offload_to(Some(OffloadAdversary::WrongDigest), 0.0).await;
    assert_eq!(exe.cheats_served, 4, "{exe:?}");
    assert_eq!(req.digest_mismatches, 4, "{req:?}");
    assert_eq!(req.disputes_recorded, 4, "{req:?}");
    assert_eq!(disputes(&recs, requester), 4);
}

#[actix_rt::test]
async fn offload_consistent_wrong_result_is_caught_by_a_spot_check() {
    // Committed and answered alike: the digest check passes; only the
    // requester's own execution tells.
    let (req, exe, recs, requester) = offload_to(Some(OffloadAdversary::WrongResult), 1.0).await;
    assert_eq!(exe.cheats_served, 4, "{exe:?}");
    assert_eq!((req.verified, req.digest_mismatches), (4, 0), "{req:?}");
    assert_eq!((req.spot_checks, req.spot_mismatches), (4, 4), "{req:?}");
    assert_eq!(req.disputes_recorded, 4, "{req:?}");
    assert_eq!(disputes(&recs, requester), 4);
}

#[actix_rt::test]
async fn offload_honest_results_verify_and_spot_checks_agree() {
    let (req, exe, recs, requester) = offload_to(None, 1.0).await;
    assert_eq!(exe.cheats_served, 0);
    assert_eq!(req.verified, 4, "{req:?}");
    assert_eq!((req.spot_checks, req.spot_mismatches), (4, 0), "{req:?}");
    assert_eq!((req.reexecuted, req.disputes_recorded), (0, 0), "{req:?}");
    assert_eq!(disputes(&recs, requester), 0);
}
