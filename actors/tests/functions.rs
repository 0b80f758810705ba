//! Serverless functions over loopback QUIC with real chains: the first call
//! places an instance (ProvIdCreate + ProvOrch committed on the cloud's
//! chain), calls to one instance run in order, an idle instance
//! deactivates (ProvIdDelete) and its state survives reactivation.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use federact_actors::orchestrator::{OrchestratorStatus, Whereabouts};
use federact_actors::{EmbeddedFederation, Function, FunctionError, NodeOptions, ServerLimits};
use federact_config::{write_local_federation, Topology};
use federact_ledger::record::{EntityKind, Record};
use federact_ledger::store::ChainStore;

/// Adds the payload (a decimal number) to a running total.
#[derive(Default)]
struct Adder(u64);

impl Function for Adder {
    fn call(&mut self, _key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        let n: u64 = std::str::from_utf8(&payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| FunctionError::failed("not a number"))?;
        self.0 += n;
        Ok(Bytes::from(self.0.to_string()))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn restore(bytes: &[u8]) -> Result<Self, FunctionError> {
        let a: [u8; 8] = bytes.try_into().map_err(|_| FunctionError::Restore {
            detail: format!("{} bytes", bytes.len()),
        })?;
        Ok(Adder(u64::from_be_bytes(a)))
    }
}

fn records(dir: &Path, validator: &str, chain: &str) -> Vec<Record> {
    let store = ChainStore::open(
        &dir.join("data")
            .join(validator)
            .join("chains")
            .join(chain)
            .join("chain"),
        None,
    )
    .unwrap();
    (1..=store.tip().height)
        .flat_map(|h| store.block(h).unwrap().unwrap().txs)
        .map(|tx| tx.record().clone())
        .collect()
}

#[actix_rt::test]
async fn c1s2_first_call_places_idle_deactivates_and_state_survives() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 2,
        local_validators: 1,
        inter_validators: 0,
    };
    write_local_federation(dir.path(), &topo, false).unwrap();
    let limits = ServerLimits {
        idle: Duration::from_millis(600),
        ..ServerLimits::default()
    };
    let options = NodeOptions::default()
        .function::<Adder>("adder")
        .server_limits(limits);
    let fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .unwrap();
    let invoker = fed.node("c1-server-1").unwrap().invoker().unwrap();

    // First call activates; calls to one instance apply in order.
    assert_eq!(
        invoker.invoke("adder", "a", "5").await.unwrap(),
        Bytes::from("5")
    );
    let calls = (0..20).map(|_| invoker.invoke("adder", "a", "1"));
    let outs: Vec<u64> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| std::str::from_utf8(&r.unwrap()).unwrap().parse().unwrap())
        .collect();
    let mut sorted = outs.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (6..=25).collect::<Vec<u64>>(),
        "each call applied once"
    );
    // Another instance has its own state; a function error is typed.
    assert_eq!(
        invoker.invoke("adder", "b", "7").await.unwrap(),
        Bytes::from("7")
    );
    assert!(matches!(
        invoker.invoke("adder", "a", "x").await,
        Err(FunctionError::Failed { .. })
    ));
    assert!(matches!(
        invoker.invoke("nope", "a", "1").await,
        Err(FunctionError::UnknownFunction { .. })
    ));
    assert!(matches!(
        invoker.invoke("a/b", "a", "1").await,
        Err(FunctionError::InvalidName { .. })
    ));

    // Idle: deactivated (both instances), then reactivated with its state
    // (from another node too).
    let orchestrator = fed
        .node("c1-orchestrator")
        .unwrap()
        .orchestrator()
        .unwrap()
        .clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let idled = orchestrator
            .send(OrchestratorStatus)
            .await
            .unwrap()
            .deactivated
            >= 2;
        let gone = orchestrator
            .send(Whereabouts("adder".into(), "a".into()))
            .await
            .unwrap()
            .is_none();
        if idled && gone {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a and b idle out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = fed.node("c1-server-2").unwrap().invoker().unwrap();
    assert_eq!(
        other.invoke("adder", "a", "100").await.unwrap(),
        Bytes::from("125")
    );

    fed.shutdown().await;
    let recs = records(dir.path(), "c1-validator-1", "cloud-1.local");
    let count = |f: &dyn Fn(&Record) -> bool| recs.iter().filter(|r| f(r)).count();
    let joins_a = count(
        &|r| matches!(r, Record::ProvIdCreate { kind: EntityKind::Container, entity, .. } if entity == "adder/a"),
    );
    let leaves_a = count(
        &|r| matches!(r, Record::ProvIdDelete { kind: EntityKind::Container, entity } if entity == "adder/a"),
    );
    let placed_a =
        count(&|r| matches!(r, Record::ProvOrch { deployed, .. } if deployed == "adder/a"));
    let servers = count(&|r| {
        matches!(
            r,
            Record::ProvIdCreate {
                kind: EntityKind::Device,
                ..
            }
        )
    });
    // At least the first activation and the reactivation after idling (a
    // slow commit of `b`'s placement may idle `a` once more in between).
    assert!(
        joins_a >= 2,
        "joined on first call and on reactivation: {joins_a}"
    );
    assert_eq!(placed_a, joins_a, "each join has its placement");
    // Joins and leaves alternate, starting with a join (the last activation
    // may idle out while the federation stops).
    let life: Vec<bool> = recs
        .iter()
        .filter_map(|r| match r {
            Record::ProvIdCreate { entity, .. } if entity == "adder/a" => Some(true),
            Record::ProvIdDelete { entity, .. } if entity == "adder/a" => Some(false),
            _ => None,
        })
        .collect();
    assert!(
        life.iter()
            .enumerate()
            .all(|(i, join)| *join == (i % 2 == 0)),
        "each idle deactivation recorded between two activations: {life:?}"
    );
    assert!(
        leaves_a + 1 >= joins_a,
        "{leaves_a} leaves, {joins_a} joins"
    );
    assert_eq!(servers, 2, "both servers joined");
    // The join precedes the placement on the chain.
    let first_join = recs
        .iter()
        .position(|r| matches!(r, Record::ProvIdCreate { entity, .. } if entity == "adder/a"));
    let first_orch = recs
        .iter()
        .position(|r| matches!(r, Record::ProvOrch { deployed, .. } if deployed == "adder/a"));
    assert!(first_join < first_orch);
}

/// Echoes its payload (for provenance digests that are easy to predict).
#[derive(Default)]
struct Echo;

impl Function for Echo {
    fn call(&mut self, _key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        Ok(payload)
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(_: &[u8]) -> Result<Self, FunctionError> {
        Ok(Echo)
    }
}

#[actix_rt::test]
async fn auditable_function_commits_input_and_output_digests_before_answering() {
    use federact_ledger::hash::Hash;
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 0,
    };
    write_local_federation(dir.path(), &topo, false).unwrap();
    let options = NodeOptions::default()
        .auditable_function::<Adder>("audited")
        .function::<Echo>("plain");
    let fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .unwrap();
    let node = fed.node("c1-server-1").unwrap();
    let caller = node.transport().id();
    let invoker = node.invoker().unwrap();

    assert_eq!(
        invoker.invoke("audited", "k", "5").await.unwrap(),
        Bytes::from("5")
    );
    // The same input again: a distinct call, recorded on its own.
    assert_eq!(
        invoker.invoke("audited", "k", "5").await.unwrap(),
        Bytes::from("10")
    );
    assert_eq!(
        invoker.invoke("plain", "k", "zzz").await.unwrap(),
        Bytes::from("zzz")
    );
    fed.shutdown().await;

    let recs = records(dir.path(), "c1-validator-1", "cloud-1.local");
    let data: Vec<(Hash, String, Option<String>)> = recs
        .iter()
        .filter_map(|r| match r {
            Record::ProvData {
                data_digest,
                generated_by,
                used_by,
            } => Some((*data_digest, generated_by.clone(), used_by.clone())),
            _ => None,
        })
        .collect();
    // Three records per audited call, none for `plain`: the input left
    // the caller, the call used it, the call produced the output; digests
    // salted with the call's id (named in the records).
    let me = caller.to_string();
    assert_eq!(data.len(), 6, "{data:#?}");
    for (call, (payload, output)) in data.chunks(3).zip([("5", "5"), ("5", "10")]) {
        let activity = call[1].2.clone().expect("a use");
        let id = activity
            .strip_prefix("audited/k#")
            .expect("the call's activity");
        let id = Hash::from_hex(id).expect("a hash");
        let input = Hash::of_parts(&[id.as_bytes(), b"in", payload.as_bytes()]);
        assert_eq!(call[0], (input, me.clone(), None));
        assert_eq!(call[1], (input, me.clone(), Some(activity.clone())));
        assert_eq!(
            call[2],
            (
                Hash::of_parts(&[id.as_bytes(), b"out", output.as_bytes()]),
                activity.clone(),
                None
            )
        );
    }
}

#[actix_rt::test]
async fn restarted_orchestrator_keeps_its_placements() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 2,
        local_validators: 1,
        inter_validators: 0,
    };
    write_local_federation(dir.path(), &topo, false).unwrap();
    let options = NodeOptions::default().function::<Adder>("adder");
    let mut fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .unwrap();
    let first = fed.node("c1-server-1").unwrap().invoker().unwrap();
    assert_eq!(
        first.invoke("adder", "a", "5").await.unwrap(),
        Bytes::from("5")
    );

    fed.stop_node("c1-orchestrator").await;
    // The old actor releases its stores as it stops: retry the start
    // (bounded) until the directory opens.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Err(e) = fed.start_node("c1-orchestrator").await {
        assert!(std::time::Instant::now() < deadline, "restart: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A caller with no cached location asks the restarted orchestrator:
    // the instance is where it was, with its state, and nothing is placed
    // again.
    let fresh = fed.node("c1-server-2").unwrap().invoker().unwrap();
    assert_eq!(
        fresh.invoke("adder", "a", "1").await.unwrap(),
        Bytes::from("6")
    );
    let counters = fed
        .node("c1-orchestrator")
        .unwrap()
        .orchestrator()
        .unwrap()
        .send(OrchestratorStatus)
        .await
        .unwrap();
    assert_eq!(counters.placed, 0, "no new placement after the restart");
    fed.shutdown().await;

    let recs = records(dir.path(), "c1-validator-1", "cloud-1.local");
    let placements = recs
        .iter()
        .filter(|r| matches!(r, Record::ProvOrch { deployed, .. } if deployed == "adder/a"))
        .count();
    assert_eq!(placements, 1, "one ProvOrch for adder/a");
}
