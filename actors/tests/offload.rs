//! MEC task offloading over loopback QUIC with real chains: a saturated
//! server offloads tasks through its orchestrator to another server of its
//! cloud (or abroad), each accepted offload's three records commit on the
//! right chain, and tasks that find no free slot anywhere wait for one
//! instead of failing.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use federact_actors::{EmbeddedFederation, Function, FunctionError, NodeOptions, ServerLimits};
use federact_config::{write_local_federation, Topology};
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
    let limits = ServerLimits {
        inflight_max: 2,
        ..ServerLimits::default()
    };
    let options = NodeOptions::default()
        .function::<Square>("square")
        .server_limits(limits);
    let fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .unwrap();
    let invoker = fed.node("c1-server-1").unwrap().invoker().unwrap();
    let executor = fed.federation().node("c1-server-2").unwrap().id();
    // Both servers join (first load reports) before work arrives.
    tokio::time::sleep(Duration::from_millis(1500)).await;

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
    // requester asks again later); every accepted contract completed.
    assert!(
        tasks.values().any(|t| t.1),
        "some tasks were offloaded: {tasks:?}"
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
    let limits = ServerLimits {
        inflight_max: 2,
        ..ServerLimits::default()
    };
    let options = NodeOptions::default()
        .function::<Square>("square")
        .server_limits(limits);
    let fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .unwrap();
    let invoker = fed.node("c1-server-1").unwrap().invoker().unwrap();
    let executor = fed.federation().node("c2-server-1").unwrap().id();
    tokio::time::sleep(Duration::from_millis(1500)).await;

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
    assert!(
        tasks.values().any(|t| t.1),
        "some tasks were offloaded abroad: {tasks:?}"
    );
    assert!(
        tasks
            .values()
            .filter(|t| t.1 || t.2)
            .all(|t| *t == (true, true, true)),
        "{tasks:?}"
    );
}
