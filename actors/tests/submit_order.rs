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
async fn n4_two_hundred_concurrent_submits_of_one_client_all_commit() {
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

    // 200 single submissions and 4 batches of 25, all at once.
    let singles = (0..200).map(|i| {
        let c = client.clone();
        async move { c.submit(data(i)).await }
    });
    let batches = (0..4u64).map(|b| {
        let c = client.clone();
        async move {
            c.submit_many((0..25).map(|i| data(1_000 + b * 25 + i)).collect())
                .await
        }
    });
    let (singles, batches) = futures::future::join(
        futures::future::join_all(singles),
        futures::future::join_all(batches),
    )
    .await;
    let mut ids = HashSet::new();
    for (i, r) in singles.into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("submission {i} did not commit: {e}"));
        assert!(ids.insert(r.tx_id));
    }
    for (b, r) in batches.into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("batch {b} failed: {e}"));
        for (i, r) in r.into_iter().enumerate() {
            let r = r.unwrap_or_else(|e| panic!("batch {b} record {i} did not commit: {e}"));
            assert!(ids.insert(r.tx_id));
        }
    }
    assert_eq!(ids.len(), 300);
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
