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

/// The chain's only validator gets a submission and never answers (it is
/// stalled, or its answer is lost). It may have admitted the transaction,
/// so the gateway must not answer "refused": a submitter that takes a
/// refusal at its word can give up on a transaction that commits later (a
/// migration's indication: the instance would run at both ends). The
/// submitter waits instead, and its own timeout says only that no answer
/// came. Before, the gateway refused it as "no validator reachable" once
/// its request to the validator timed out.
#[actix_rt::test]
async fn a_submission_sent_to_a_silent_validator_is_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 0,
    };
    write_local_federation(dir.path(), &topo, false).unwrap();
    let mut fed = EmbeddedFederation::start(dir.path()).await.unwrap();
    let validator = "c1-validator-1";
    let config = fed.node_config(validator).unwrap();
    let key = config.load_key().unwrap();
    let chain = fed
        .federation()
        .local_chain("cloud-1")
        .unwrap()
        .id()
        .to_string();
    let membership = federact_federation::Membership::from_federation(fed.federation());
    fed.stop_node(validator).await;
    // A stand-in with the validator's key and address that reads requests
    // and never answers them.
    let start = Instant::now();
    let silent = loop {
        match federact_federation::Transport::bind(
            &key,
            membership.clone(),
            federact_federation::TransportOptions::default(),
            config.bind_addr(),
        )
        .await
        {
            Ok(t) => break t,
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                eprintln!("binding the stand-in: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("stand-in not bound: {e}"),
        }
    };
    let mut inbox = silent
        .register(&federact_actors::wire::validator_actor(&chain), 1024)
        .unwrap();
    let (first_tx, got_submit) = tokio::sync::oneshot::channel();
    let holder = actix_rt::spawn(async move {
        let mut first = Some(first_tx);
        let mut held = Vec::new();
        while let Some(m) = inbox.recv().await {
            // Held, never answered (a dropped request would tell the
            // gateway "no response": an answer of sorts).
            held.push(m);
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
        }
    });
    let client = fed
        .node("c1-server-1")
        .unwrap()
        .ledger_client()
        .unwrap()
        .with_timeout(Duration::from_secs(12));
    let record = federact_actors::loadgen::bench_record(7);
    let t = Instant::now();
    let answer = client.submit(record).await;
    assert!(
        got_submit.await.is_ok(),
        "the stand-in validator got no request"
    );
    match answer {
        Err(ActorError::Refused { reason }) => {
            panic!("refused after {:?}: {reason}", t.elapsed())
        }
        Err(_) => {}
        Ok(r) => panic!("committed with no validator answering: {r:?}"),
    }
    // The gateway's request to the validator timed out (5 s) well before
    // the submitter gave up (12 s).
    assert!(t.elapsed() >= Duration::from_secs(11), "{:?}", t.elapsed());
    holder.abort();
    silent.close().await;
    fed.shutdown().await;
}
