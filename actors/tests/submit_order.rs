//! Concurrent submissions of one author over loopback QUIC: each is its own
//! request (its own QUIC stream), so they reach the gateway, and the
//! gateway's batches reach the validators, in any order; a later nonce
//! committing first used to make the earlier ones stale. The client names
//! each submission's predecessor and the gateway restores the order, so
//! all of them commit.

use std::collections::HashSet;

use federact_actors::gateway::GatewayStatus;
use federact_actors::EmbeddedFederation;
use federact_config::{write_local_federation, Topology};
use federact_ledger::hash::Hash;
use federact_ledger::record::Record;

fn data(n: u64) -> Record {
    Record::ProvData {
        data_digest: Hash::of(&n.to_be_bytes()),
        generated_by: format!("order-{n}"),
        used_by: None,
    }
}

#[actix_rt::test]
async fn n4_two_hundred_concurrent_callers_of_one_client_all_commit() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 1,
        local_validators: 4,
        inter_validators: 0,
    };
    write_local_federation(dir.path(), &topo, false).unwrap();
    let fed = EmbeddedFederation::start(dir.path()).await.unwrap();
    let client = fed.node("c1-server-1").unwrap().ledger_client().unwrap();

    // 200 callers at once, each submitting 3 records one after the other
    // (so submissions keep arriving while blocks commit), and 4 batches
    // of 25 alongside.
    let singles = (0..200u64).map(|i| {
        let c = client.clone();
        async move {
            let mut out = Vec::new();
            for j in 0..3 {
                out.push(c.submit(data(i * 3 + j)).await);
            }
            out
        }
    });
    let batches = (0..4u64).map(|b| {
        let c = client.clone();
        async move {
            c.submit_many((0..25).map(|i| data(10_000 + b * 25 + i)).collect())
                .await
        }
    });
    let (singles, batches) = futures::future::join(
        futures::future::join_all(singles),
        futures::future::join_all(batches),
    )
    .await;
    let mut ids = HashSet::new();
    let mut refused = Vec::new();
    for (i, r) in singles.into_iter().flatten().enumerate() {
        match r {
            Ok(r) => assert!(ids.insert(r.tx_id)),
            Err(e) => refused.push(format!("submission {i}: {e}")),
        }
    }
    for (b, r) in batches.into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("batch {b} failed: {e}"));
        for (i, r) in r.into_iter().enumerate() {
            match r {
                Ok(r) => assert!(ids.insert(r.tx_id)),
                Err(e) => refused.push(format!("batch {b} record {i}: {e}")),
            }
        }
    }
    assert!(
        refused.is_empty(),
        "{} of 700 refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    assert_eq!(ids.len(), 700);
    let (_, counters) = fed
        .node("c1-gateway")
        .unwrap()
        .gateway()
        .unwrap()
        .send(GatewayStatus)
        .await
        .unwrap();
    assert_eq!(counters.refused, 0, "{counters:?}");
    fed.shutdown().await;
}
