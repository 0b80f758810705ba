//! Live chains over loopback QUIC with sled stores: validators commit what a
//! gateway submits, a restarted validator catches up, and the consortium's
//! records are relayed to the right local chains with proofs the local
//! validators check.

mod support;
use support::eventually;

use std::path::Path;
use std::time::Duration;

use federact_actors::validator::Counters;
use federact_actors::{ActorError, EmbeddedFederation};
use federact_config::{write_local_federation, Topology};
use federact_ledger::cert::ValidatorSet;
use federact_ledger::hash::Hash;
use federact_ledger::record::{Record, Scope, Site};
use federact_ledger::store::ChainStore;

fn init(dir: &Path, topo: Topology) {
    write_local_federation(dir, &topo, false).unwrap();
}

fn data(n: u64) -> Record {
    Record::ProvData {
        data_digest: Hash::of(&n.to_be_bytes()),
        generated_by: format!("test-{n}"),
        used_by: None,
    }
}

async fn height_of(fed: &EmbeddedFederation, node: &str, chain: &str) -> u64 {
    let Some(n) = fed.node(node) else { return 0 };
    for (c, addr) in n.validators() {
        if c == chain {
            return addr.send(Counters).await.map(|(h, _)| h).unwrap_or(0);
        }
    }
    0
}

/// Every validator store of `chain` holds the same blocks; returns the common height.
fn same_blocks(dir: &Path, validators: &[String], chain: &str) -> u64 {
    let stores: Vec<ChainStore> = validators
        .iter()
        .map(|v| {
            ChainStore::open(
                &dir.join("data")
                    .join(v)
                    .join("chains")
                    .join(chain)
                    .join("chain"),
                None,
            )
            .unwrap()
        })
        .collect();
    let min = stores.iter().map(|s| s.tip().height).min().unwrap();
    for h in 1..=min {
        let ids: Vec<Hash> = stores
            .iter()
            .map(|s| s.block(h).unwrap().unwrap().id())
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] == w[1]),
            "validators disagree at height {h}"
        );
    }
    min
}

#[actix_rt::test]
async fn four_validators_commit_what_the_gateway_submits_and_a_restarted_one_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    init(
        dir.path(),
        Topology {
            clouds: 1,
            servers_per_cloud: 1,
            local_validators: 4,
            inter_validators: 0,
        },
    );
    let mut fed = EmbeddedFederation::start(dir.path()).await.unwrap();
    let chain = "cloud-1.local".to_string();
    let set = ValidatorSet::from_spec(fed.federation().chain(&chain).unwrap());
    let client = fed.node("c1-server-1").unwrap().ledger_client().unwrap();

    // 40 records submitted concurrently: each commits once with a proof.
    let calls = (0..40).map(|i| {
        let c = client.clone();
        async move { c.submit(data(i)).await }
    });
    let receipts = futures::future::join_all(calls).await;
    for r in &receipts {
        let r = r.as_ref().expect("committed");
        assert!(r.height >= 1);
        let proof = r.proof.as_ref().expect("receipt carries a proof");
        let tx = proof
            .verify(&set, &chain)
            .expect("proof verifies against the validators");
        assert_eq!(tx.id(), r.tx_id);
    }

    // A replayed transaction is refused with its reason.
    let tx = client.sign(data(1000));
    client.submit_tx(tx.clone(), true).await.unwrap();
    let replay = client.submit_tx(tx, true).await;
    assert!(
        matches!(replay, Err(ActorError::Refused { .. })),
        "{replay:?}"
    );

    // Kill one validator; the other three (a quorum) keep committing.
    fed.stop_node("c1-validator-4").await;
    let before = height_of(&fed, "c1-validator-1", &chain).await;
    for i in 100..110 {
        client
            .submit(data(i))
            .await
            .expect("commits with 3 of 4 validators");
    }
    let after = height_of(&fed, "c1-validator-1", &chain).await;
    assert!(after > before);

    // Restart it: it catches up by fetching certified blocks.
    fed.start_node("c1-validator-4").await.unwrap();
    client.submit(data(200)).await.unwrap();
    let target = height_of(&fed, "c1-validator-1", &chain).await;
    let caught_up = eventually(Duration::from_secs(20), || {
        let fed = &fed;
        let chain = chain.clone();
        async move { height_of(fed, "c1-validator-4", &chain).await >= target }
    })
    .await;
    assert!(caught_up, "restarted validator caught up to {target}");

    fed.shutdown().await;
    let validators: Vec<String> = (1..=4).map(|i| format!("c1-validator-{i}")).collect();
    assert!(same_blocks(dir.path(), &validators, &chain) >= target);
    for v in &validators {
        let store = dir
            .path()
            .join("data")
            .join(v)
            .join("chains")
            .join(&chain)
            .join("chain");
        let report = federact_ledger::verify::verify_store(&store).unwrap();
        assert!(report.fault.is_none(), "{v}: {:?}", report.fault);
    }
}

#[actix_rt::test]
async fn consortium_records_are_relayed_to_the_clouds_they_concern() {
    let dir = tempfile::tempdir().unwrap();
    init(
        dir.path(),
        Topology {
            clouds: 3,
            servers_per_cloud: 1,
            local_validators: 1,
            inter_validators: 4,
        },
    );
    let fed = EmbeddedFederation::start(dir.path()).await.unwrap();
    let client = fed.node("c1-server-1").unwrap().ledger_client().unwrap();
    let ind = Record::Indication {
        migration_id: Hash::of(b"m1"),
        vm_id: Hash::of(b"vm1"),
        source: Site {
            cloud: "cloud-1".into(),
            server: "c1-server-1".into(),
        },
        destination: Site {
            cloud: "cloud-2".into(),
            server: "c2-server-1".into(),
        },
        scope: Scope::Inter,
    };
    let receipt = client
        .submit(ind)
        .await
        .expect("indication commits on the consortium");
    assert_eq!(receipt.chain_id, "consortium");

    // It reaches cloud-1 and cloud-2's local chains as a relayed record, not cloud-3's.
    let relayed_on = |cloud: &'static str| {
        let fed = &fed;
        async move {
            let gw = fed
                .node(&format!("c{}-gateway", &cloud[6..]))
                .unwrap()
                .gateway()
                .unwrap()
                .clone();
            let (heights, counters) = gw
                .send(federact_actors::gateway::GatewayStatus)
                .await
                .unwrap();
            (heights, counters.relayed)
        }
    };
    let delivered = eventually(Duration::from_secs(20), || async {
        relayed_on("cloud-1").await.1 >= 1 && relayed_on("cloud-2").await.1 >= 1
    })
    .await;
    assert!(delivered);
    // Let the relayed transactions commit (the gateways settle them when
    // their local chain commits them), then check the stores.
    let settled = |cloud: u32| {
        let fed = &fed;
        async move {
            let gw = fed
                .node(&format!("c{cloud}-gateway"))
                .unwrap()
                .gateway()
                .unwrap()
                .clone();
            gw.send(federact_actors::gateway::GatewayStatus)
                .await
                .map(|(_, c)| c.relays_settled)
                .unwrap_or(0)
        }
    };
    let committed = eventually(Duration::from_secs(20), || async {
        settled(1).await >= 1 && settled(2).await >= 1
    })
    .await;
    assert!(committed);
    assert_eq!(relayed_on("cloud-3").await.1, 0);
    fed.shutdown().await;

    let find_relayed = |cloud: u32| -> usize {
        let store = ChainStore::open(
            &dir.path().join(format!(
                "data/c{cloud}-validator-1/chains/cloud-{cloud}.local/chain"
            )),
            None,
        )
        .unwrap();
        (1..=store.tip().height)
            .flat_map(|h| store.block(h).unwrap().unwrap().txs)
            .filter(|tx| matches!(tx.record(), Record::Relayed { proof } if proof.tx_id == receipt.tx_id))
            .count()
    };
    assert_eq!(find_relayed(1), 1, "delivered exactly once to cloud-1");
    assert_eq!(find_relayed(2), 1, "delivered exactly once to cloud-2");
    assert_eq!(find_relayed(3), 0);
}
