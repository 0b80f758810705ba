//! The cross-chain relay over loopback QUIC with sled stores: a delivery
//! the local validators lost is submitted again and lands exactly once, and
//! a relayed record with a forged, altered or replayed proof is refused by
//! a validator at admission with its reason.

mod support;
use support::eventually;

use std::path::Path;
use std::time::Duration;

use federact_actors::gateway::{GatewayCounters, GatewayStatus};
use federact_actors::wire::{self, Refusal, ValidatorRequest, ValidatorResponse};
use federact_actors::EmbeddedFederation;
use federact_config::{write_local_federation, Topology};
use federact_ledger::hash::Hash;
use federact_ledger::proof::CrossChainProof;
use federact_ledger::record::{Record, Scope, Site};
use federact_ledger::store::ChainStore;

/// Generous: these cost nothing when things work (a loaded CI box is slow).
const WAIT: Duration = Duration::from_secs(90);

fn topology() -> Topology {
    Topology {
        clouds: 2,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 4,
    }
}

async fn gateway_counters(fed: &EmbeddedFederation, cloud: u32) -> GatewayCounters {
    let Some(gw) = fed
        .node(&format!("c{cloud}-gateway"))
        .and_then(|n| n.gateway())
    else {
        return GatewayCounters::default();
    };
    gw.send(GatewayStatus)
        .await
        .map(|(_, c)| c)
        .unwrap_or_default()
}

fn indication(name: &str) -> Record {
    Record::Indication {
        migration_id: Hash::of(name.as_bytes()),
        vm_id: Hash::of(format!("vm/{name}").as_bytes()),
        source: Site {
            cloud: "cloud-1".into(),
            server: "c1-server-1".into(),
        },
        destination: Site {
            cloud: "cloud-2".into(),
            server: "c2-server-1".into(),
        },
        scope: Scope::Inter,
    }
}

/// How many relayed records on `cloud`'s local chain deliver consortium
/// transaction `source` (read from validator 1's store after shutdown).
fn deliveries(dir: &Path, cloud: u32, source: &Hash) -> usize {
    let store = ChainStore::open(
        &dir.join(format!(
            "data/c{cloud}-validator-1/chains/cloud-{cloud}.local/chain"
        )),
        None,
    )
    .unwrap();
    (1..=store.tip().height)
        .flat_map(|h| store.block(h).unwrap().unwrap().txs)
        .filter(|tx| matches!(tx.record(), Record::Relayed { proof } if proof.tx_id == *source))
        .count()
}

/// Regression (fault suite: an acknowledged `Indication` was not relayed
/// within 120 s): the gateway submitted a delivery nobody waits for, and
/// its local validators lost it (here: the cloud's validator was down, so
/// no validator ever admitted it). The gateway used to keep it pending until
/// its own restart; now its status probe finds no validator holding it and
/// submits it again, and it lands once.
#[actix_rt::test]
async fn n1_delivery_lost_by_the_local_validators_is_submitted_again() {
    let dir = tempfile::tempdir().unwrap();
    write_local_federation(dir.path(), &topology(), false).unwrap();
    let mut fed = EmbeddedFederation::start(dir.path()).await.unwrap();
    let client = fed.node("c1-server-1").unwrap().ledger_client().unwrap();

    fed.stop_node("c2-validator-1").await;
    let receipt = client
        .submit(indication("lost-delivery"))
        .await
        .expect("the indication commits on the consortium");
    assert_eq!(receipt.chain_id, "consortium");
    // Cloud-2's gateway tried to deliver it, and its submission failed.
    let attempted = eventually(WAIT, || async {
        let c = gateway_counters(&fed, 2).await;
        c.relayed >= 1 && c.submit_failures >= 1
    })
    .await;
    assert!(
        attempted,
        "cloud-2's gateway did not try to deliver: {:?}",
        gateway_counters(&fed, 2).await
    );
    assert_eq!(gateway_counters(&fed, 2).await.relays_settled, 0);

    fed.start_node("c2-validator-1").await.unwrap();
    let settled = eventually(WAIT, || async {
        gateway_counters(&fed, 2).await.relays_settled >= 1
    })
    .await;
    let c = gateway_counters(&fed, 2).await;
    assert!(settled, "the lost delivery never settled: {c:?}");
    assert!(c.relays_resubmitted >= 1, "{c:?}");
    // Cloud-1's delivery went its normal way.
    let settled_1 = eventually(WAIT, || async {
        gateway_counters(&fed, 1).await.relays_settled >= 1
    })
    .await;
    assert!(settled_1);
    fed.shutdown().await;
    assert_eq!(deliveries(dir.path(), 2, &receipt.tx_id), 1, "exactly once");
    assert_eq!(deliveries(dir.path(), 1, &receipt.tx_id), 1, "exactly once");
}

/// Submits one relayed record straight to cloud-1's validator, as a gateway
/// would, and returns the validator's admission answer.
async fn submit_relayed(fed: &EmbeddedFederation, proof: CrossChainProof) -> Result<(), Refusal> {
    let node = fed.node("c1-server-1").unwrap();
    let client = node.ledger_client().unwrap();
    let tx = client.sign(Record::Relayed {
        proof: Box::new(proof),
    });
    let validator = fed.federation().node("c1-validator-1").unwrap().id();
    let body = wire::encode(&ValidatorRequest::Submit(vec![tx]));
    let reply = client
        .transport()
        .request(
            validator,
            &wire::validator_actor("cloud-1.local"),
            body,
            Duration::from_secs(30),
        )
        .await
        .expect("the validator answers");
    match wire::decode::<ValidatorResponse>(&reply).expect("decodes") {
        ValidatorResponse::Submitted(mut r) if r.len() == 1 => r.remove(0),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// A relayed record is checked at admission, against the consortium's
/// validator set from the configuration: a forged certificate, a wrong
/// Merkle path, an altered record and a replay of a delivered one are each
/// refused at once with their reason (they used to be admitted and dropped
/// when a block was built, the submitter learning why seconds later).
#[actix_rt::test]
async fn forged_altered_and_replayed_relays_are_refused_at_admission() {
    let dir = tempfile::tempdir().unwrap();
    write_local_federation(dir.path(), &topology(), false).unwrap();
    let fed = EmbeddedFederation::start(dir.path()).await.unwrap();
    let client = fed.node("c1-server-1").unwrap().ledger_client().unwrap();
    let receipt = client
        .submit(indication("forged-relays"))
        .await
        .expect("the indication commits on the consortium");
    let proof = *receipt.proof.clone().expect("a receipt carries its proof");

    let mut forged_cert = proof.clone();
    forged_cert.certificate.signatures.truncate(1);
    let mut wrong_path = proof.clone();
    wrong_path.path.siblings.push(Hash::of(b"not a sibling"));
    let mut altered = proof.clone();
    if let Some(b) = altered.tx.last_mut() {
        *b ^= 0xff;
    }
    for (what, p, expect) in [
        ("forged certificate", forged_cert, "certificate"),
        ("wrong Merkle path", wrong_path, "Merkle path"),
        ("altered record", altered, "proof invalid"),
    ] {
        let r = submit_relayed(&fed, p).await;
        match r {
            Err(Refusal::Other(why)) => {
                assert!(why.contains("relayed record refused"), "{what}: {why}");
                assert!(why.contains(expect), "{what}: {why}");
            }
            Err(other) => panic!("{what}: refused as {other:?}"),
            Ok(()) => panic!("{what}: admitted"),
        }
    }

    // The gateway delivers the genuine record; once it committed, the same
    // proof again is a replay.
    let settled = eventually(WAIT, || async {
        gateway_counters(&fed, 1).await.relays_settled >= 1
    })
    .await;
    assert!(settled, "{:?}", gateway_counters(&fed, 1).await);
    let source = proof.tx_id;
    match submit_relayed(&fed, proof).await {
        Err(Refusal::AlreadyDelivered { source: s }) => assert_eq!(s, source),
        Err(other) => panic!("a replayed relay was refused as {other:?}"),
        Ok(()) => panic!("a replayed relay was admitted"),
    }
    fed.shutdown().await;
    assert_eq!(deliveries(dir.path(), 1, &receipt.tx_id), 1);
}
