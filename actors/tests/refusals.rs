//! A transaction that passes admission but breaks the chain's rules when a
//! proposer tries to include it (here: a second consortium membership of
//! the same node) comes back to its submitter as a refusal with the rule's
//! reason, not as a timeout.

use std::time::{Duration, Instant};

use federact_actors::{ActorError, EmbeddedFederation};
use federact_config::{write_local_federation, Role, Topology};
use federact_ledger::record::Record;

#[actix_rt::test]
async fn rule_refusal_at_block_building_reaches_the_submitter() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 2,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 4,
    };
    write_local_federation(dir.path(), &topo, false).unwrap();
    let fed = EmbeddedFederation::start(dir.path()).await.unwrap();
    let client = fed
        .node("c1-server-1")
        .unwrap()
        .ledger_client()
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    let node = fed.federation().node("c1-client").unwrap().id();
    let join = Record::MemberJoin {
        node,
        cloud: "cloud-1".into(),
        roles: vec![Role::Client],
    };
    client
        .submit(join.clone())
        .await
        .expect("first join commits");
    let t = Instant::now();
    let again = client.submit(join).await;
    match again {
        Err(ActorError::Refused { reason }) => {
            assert!(reason.contains("already a member"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(20));
    fed.shutdown().await;
}
