//! Verified migration of VM image files (BASICS §III-B) over loopback QUIC
//! with real chains: a local move (Indication + Confirmation on the
//! cloud's chain), an inter-cloud move (Indication + Confirmation on the
//! consortium, Leave and Arrival with cross-chain proofs on the two local
//! chains), a tampered image rejected on the ledger, and the vm's history
//! assembled from the stores.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use federact_actors::migration::{
    HaltAt, HaltStep, MigrationEnded, MigrationError, MigrationOutcome, MigrationProgress,
    StartMigration,
};
use federact_actors::wire::MigrationReport;
use federact_actors::EmbeddedFederation;
use federact_config::{write_local_federation, Topology};
use federact_ledger::hash::Hash;
use federact_ledger::record::{Record, Site};
use federact_ledger::store::ChainStore;

const TOPO: Topology = Topology {
    clouds: 2,
    servers_per_cloud: 2,
    local_validators: 1,
    inter_validators: 1,
};

/// Writes a `len`-byte image with a seed-dependent pattern; returns it and its sha256.
fn image(dir: &Path, name: &str, len: usize, seed: u8) -> (PathBuf, Hash) {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let mut hasher = federact_ledger::hash::Hasher::new();
    let block: Vec<u8> = (0..65_536u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        f.write_all(&block[..n]).unwrap();
        hasher.update(&block[..n]);
        left -= n;
    }
    (path, hasher.finish())
}

async fn start() -> (tempfile::TempDir, EmbeddedFederation) {
    let dir = tempfile::tempdir().unwrap();
    write_local_federation(dir.path(), &TOPO, false).unwrap();
    let fed = EmbeddedFederation::start(dir.path()).await.unwrap();
    (dir, fed)
}

async fn migrate(
    fed: &EmbeddedFederation,
    from: &str,
    image: &Path,
    to: Site,
    tamper: bool,
) -> MigrationReport {
    let actor = fed
        .node(from)
        .unwrap()
        .migration()
        .expect("servers run a migration actor")
        .clone();
    actor
        .send(StartMigration {
            image: image.to_path_buf(),
            destination: to,
            tamper,
        })
        .await
        .unwrap()
        .expect("migration ran")
}

/// Waits until the destination's side of `id` ended; returns its report.
async fn destination_outcome(fed: &EmbeddedFederation, node: &str, id: Hash) -> MigrationReport {
    let actor = fed.node(node).unwrap().migration().unwrap().clone();
    let never = Hash::of(b"a migration nobody started");
    assert_eq!(actor.send(MigrationProgress(never)).await.unwrap(), None);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        // Unknown until the notice or the transfer arrives, then running
        // (`Some(None)`), then ended with its report.
        if let Some(Some(r)) = actor.send(MigrationProgress(id)).await.unwrap() {
            assert_eq!(
                actor.send(MigrationOutcome(id)).await.unwrap(),
                Some(r.clone())
            );
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("destination side of {id} did not end");
}

fn store(dir: &Path, node: &str, chain: &str) -> ChainStore {
    ChainStore::open(
        &dir.join("data")
            .join(node)
            .join("chains")
            .join(chain)
            .join("chain"),
        None,
    )
    .unwrap()
}

fn kinds(store: &ChainStore, vm: &Hash) -> Vec<(&'static str, Option<bool>)> {
    store
        .vm_history(vm)
        .unwrap()
        .iter()
        .map(|r| {
            let rec = &r.record;
            let accepted = match rec {
                Record::Confirmation { accepted, .. } => Some(*accepted),
                _ => None,
            };
            (rec.kind(), accepted)
        })
        .collect()
}

#[actix_rt::test]
async fn local_image_migration_is_indicated_and_confirmed_on_the_cloud_chain() {
    let (dir, fed) = start().await;
    let (img, vm) = image(dir.path(), "vm.qcow2", 3 << 20, 1);
    let report = migrate(
        &fed,
        "c1-server-1",
        &img,
        Site::new("cloud-1", "c1-server-2"),
        false,
    )
    .await;
    assert!(report.completed, "{report:?}");
    assert_eq!(report.vm_id, vm);
    assert_eq!(report.bytes, 3 << 20);
    eprintln!(
        "local migration delay: {} ms, records {:?}",
        report.elapsed_ms, report.records
    );
    let dst = destination_outcome(&fed, "c1-server-2", report.migration_id).await;
    assert!(dst.completed, "{dst:?}");
    // The destination keeps the image under its vm id.
    let kept = dir
        .path()
        .join("data/c1-server-2/migration/images")
        .join(vm.to_string());
    assert_eq!(std::fs::metadata(&kept).unwrap().len(), 3 << 20);
    fed.shutdown().await;
    let local = store(dir.path(), "c1-validator-1", "cloud-1.local");
    assert_eq!(
        kinds(&local, &vm),
        vec![("Indication", None), ("Confirmation", Some(true))]
    );
}

#[actix_rt::test]
async fn inter_cloud_image_migration_leaves_and_arrives_with_proofs() {
    let (dir, fed) = start().await;
    let (img, vm) = image(dir.path(), "vm.img", 2 << 20, 2);
    let report = migrate(
        &fed,
        "c1-server-1",
        &img,
        Site::new("cloud-2", "c2-server-1"),
        false,
    )
    .await;
    assert!(report.completed, "{report:?}");
    eprintln!(
        "inter migration delay: {} ms, records {:?}",
        report.elapsed_ms, report.records
    );
    let recorded: Vec<&str> = report.records.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(recorded, vec!["Indication", "Confirmation", "Leave"]);
    let dst = destination_outcome(&fed, "c2-server-1", report.migration_id).await;
    assert!(dst.completed, "{dst:?}");
    let dst_recorded: Vec<&str> = dst.records.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(dst_recorded, vec!["Indication", "Confirmation", "Arrival"]);
    fed.shutdown().await;

    // The vm's history across the three chains (the validators checked
    // the proofs in Leave / Arrival when they committed them).
    let consortium = store(dir.path(), "c1-inter-1", "consortium");
    let c1 = store(dir.path(), "c1-validator-1", "cloud-1.local");
    let c2 = store(dir.path(), "c2-validator-1", "cloud-2.local");
    assert_eq!(
        kinds(&consortium, &vm),
        vec![("Indication", None), ("Confirmation", Some(true))]
    );
    assert_eq!(kinds(&c1, &vm), vec![("Leave", None)]);
    assert_eq!(kinds(&c2, &vm), vec![("Arrival", None)]);
    // And the proofs re-verify offline against the consortium's validators.
    let set = federact_ledger::cert::ValidatorSet::from_spec(
        fed_chain(dir.path(), "consortium").as_ref().unwrap(),
    );
    for s in [&c1, &c2] {
        for r in s.vm_history(&vm).unwrap() {
            let proof = r.record.proof().expect("Leave / Arrival carry a proof");
            proof
                .verify(&set, "consortium")
                .expect("the proof verifies");
        }
    }
}

fn fed_chain(dir: &Path, chain: &str) -> Option<federact_config::ChainSpec> {
    let fed = federact_config::Federation::load(&dir.join("federation.toml")).unwrap();
    fed.chain(chain).cloned()
}

#[actix_rt::test]
async fn tampered_image_is_rejected_on_the_ledger_and_stays_at_the_source() {
    let (dir, fed) = start().await;
    let (img, vm) = image(dir.path(), "vm.raw", 1 << 20, 3);
    let report = migrate(
        &fed,
        "c1-server-1",
        &img,
        Site::new("cloud-2", "c2-server-2"),
        true,
    )
    .await;
    assert!(!report.completed, "{report:?}");
    assert!(
        report
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("does not match"),
        "{report:?}"
    );
    let dst = destination_outcome(&fed, "c2-server-2", report.migration_id).await;
    assert!(!dst.completed);
    // The source still has its image; the destination discarded its copy.
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 1 << 20);
    let incoming = dir.path().join("data/c2-server-2/migration");
    let leftovers: Vec<_> = walk(&incoming);
    assert!(
        leftovers.is_empty(),
        "received image not discarded: {leftovers:?}"
    );
    fed.shutdown().await;
    let consortium = store(dir.path(), "c1-inter-1", "consortium");
    assert_eq!(
        kinds(&consortium, &vm),
        vec![("Indication", None), ("Confirmation", Some(false))]
    );
    let c1 = store(dir.path(), "c1-validator-1", "cloud-1.local");
    assert!(
        kinds(&c1, &vm).is_empty(),
        "no Leave for a rejected migration"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb / 1024)
}

/// A large image (`MIGRATION_BIG_MIB`, default 256 MiB) migrates across
/// clouds; prints the throughput and the peak RSS before and after.
#[actix_rt::test]
#[ignore = "large file; run explicitly to measure"]
async fn big_image_migrates_with_flat_memory() {
    let mib: usize = std::env::var("MIGRATION_BIG_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let (dir, fed) = start().await;
    let (img, vm) = image(dir.path(), "big.img", mib << 20, 4);
    let before = peak_rss_mib();
    let started = Instant::now();
    let report = migrate(
        &fed,
        "c1-server-1",
        &img,
        Site::new("cloud-2", "c2-server-1"),
        false,
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    assert!(report.completed, "{report:?}");
    assert_eq!(report.vm_id, vm);
    let after = peak_rss_mib();
    eprintln!(
        "{mib} MiB inter migration: {:.2} s, {:.0} MiB/s (hash at source + transfer + hash at destination), peak RSS {before} -> {after} MiB",
        secs,
        mib as f64 / secs
    );
    fed.shutdown().await;
}

#[actix_rt::test]
async fn destination_down_times_out_with_the_reason_on_the_ledger_and_the_image_stays() {
    let dir = tempfile::tempdir().unwrap();
    write_local_federation(dir.path(), &TOPO, false).unwrap();
    let options = federact_actors::node::NodeOptions {
        migration: federact_actors::migration::MigrationLimits {
            protocol_timeout: Duration::from_secs(3),
            transfer_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .unwrap();
    fed.stop_node("c1-server-2").await;
    let (img, vm) = image(dir.path(), "vm.img", 1 << 20, 5);
    let report = migrate(
        &fed,
        "c1-server-1",
        &img,
        Site::new("cloud-1", "c1-server-2"),
        false,
    )
    .await;
    assert!(!report.completed, "{report:?}");
    assert!(
        report.reason.as_deref().unwrap_or("").contains("timed out"),
        "{report:?}"
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 1 << 20);
    fed.shutdown().await;
    let local = store(dir.path(), "c1-validator-1", "cloud-1.local");
    let history = local.vm_history(&vm).unwrap();
    let reasons: Vec<Option<String>> = history
        .iter()
        .map(|r| match &r.record {
            Record::Confirmation {
                accepted: false,
                reason,
                ..
            } => reason.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds(&local, &vm),
        vec![("Indication", None), ("Confirmation", Some(false))]
    );
    assert!(
        reasons[1].as_deref().unwrap_or("").contains("timed out"),
        "{reasons:?}"
    );
}

/// The source's gateway is down when the indication is submitted: the
/// submission ends without an answer (the transport gives up connecting
/// after its 10 s). Such an indication may still commit, so the source
/// must not abort: it submits it again until the chain answers, and the
/// migration completes once the gateway is back, with one indication and
/// one confirmation on the ledger.
#[actix_rt::test]
async fn indication_unanswered_while_the_gateway_is_down_is_submitted_again_and_the_migration_completes(
) {
    let (dir, mut fed) = start().await;
    let (img, vm) = image(dir.path(), "vm.img", 256 << 10, 9);
    fed.stop_node("c1-gateway").await;
    let started = Instant::now();
    let run = start_migration(
        &fed,
        "c1-server-1",
        &img,
        Site::new("cloud-1", "c1-server-2"),
    );
    // Past the transport's connect timeout: the first submission failed.
    tokio::time::sleep(Duration::from_secs(11)).await;
    restart(&mut fed, "c1-gateway").await;
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the migration ended")
        .unwrap()
        .expect("the actor answered")
        .expect("the migration ran");
    assert!(report.completed, "{report:?}");
    assert!(started.elapsed() > Duration::from_secs(10));
    let dst = ended(&fed, "c1-server-2", report.migration_id).await;
    assert!(dst.completed, "{dst:?}");
    fed.shutdown().await;
    let local = store(dir.path(), "c1-validator-1", "cloud-1.local");
    assert_eq!(
        kinds(&local, &vm),
        vec![("Indication", None), ("Confirmation", Some(true))]
    );
}

#[actix_rt::test]
async fn concurrent_migrations_over_the_limit_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_local_federation(dir.path(), &TOPO, false).unwrap();
    let options = federact_actors::node::NodeOptions {
        migration: federact_actors::migration::MigrationLimits {
            concurrent_max: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .unwrap();
    let actor = fed
        .node("c1-server-1")
        .unwrap()
        .migration()
        .unwrap()
        .clone();
    let targets = [
        ("cloud-1", "c1-server-2"),
        ("cloud-2", "c2-server-1"),
        ("cloud-2", "c2-server-2"),
    ];
    let calls = targets.iter().enumerate().map(|(i, (c, s))| {
        let (img, _) = image(dir.path(), &format!("vm{i}.img"), 1 << 20, 10 + i as u8);
        actor.send(StartMigration {
            image: img,
            destination: Site::new(*c, *s),
            tamper: false,
        })
    });
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{results:?}");
    assert!(
        matches!(refused[0], MigrationError::TooManyMigrations { max: 2, .. }),
        "{refused:?}"
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| matches!(r, Ok(rep) if rep.completed))
            .count(),
        2,
        "{results:?}"
    );
    fed.shutdown().await;
}

/// BASICS step 4: the destination learns the committed indication from its
/// gateway following the chain, not only from the source's notice.
#[actix_rt::test]
async fn destination_learns_the_indication_from_its_gateway_when_the_source_stays_silent() {
    let (dir, fed) = start().await;
    for (to, tag) in [
        (Site::new("cloud-1", "c1-server-2"), "local"),
        (Site::new("cloud-2", "c2-server-1"), "inter"),
    ] {
        let source = fed
            .node("c1-server-1")
            .unwrap()
            .migration()
            .unwrap()
            .clone();
        source
            .send(federact_actors::migration::SilenceIndicationNotices(true))
            .await
            .unwrap();
        let (img, vm) = image(dir.path(), &format!("{tag}.img"), 1 << 20, 7);
        let report = tokio::time::timeout(
            Duration::from_secs(30),
            migrate(&fed, "c1-server-1", &img, to.clone(), false),
        )
        .await
        .expect("the destination learned the indication and confirmed");
        assert!(report.completed, "{tag}: {report:?}");
        assert_eq!(report.vm_id, vm);
        let dst = destination_outcome(&fed, &to.server, report.migration_id).await;
        assert!(dst.completed, "{tag}: {dst:?}");
    }
    fed.shutdown().await;
}

/// Only a cloud's operators (client identities) and orchestrator may order
/// its servers to migrate an image file over QUIC: a server of another
/// cloud, and a gateway of the same cloud, are refused with the reason,
/// and nothing is indicated on the ledger.
#[actix_rt::test]
async fn image_migration_ordered_by_a_member_without_the_right_is_refused() {
    use federact_actors::migration::migrate_image;
    let (dir, fed) = start().await;
    let (img, _) = image(dir.path(), "secret.img", 4096, 9);
    let source = fed.federation().node("c1-server-1").unwrap().id();
    for asker in ["c2-server-1", "c1-gateway"] {
        let transport = fed.node(asker).unwrap().transport();
        let r = migrate_image(
            transport,
            source,
            img.to_str().unwrap(),
            Site::new("cloud-2", "c2-server-1"),
            Duration::from_secs(30),
        )
        .await;
        match r {
            Err(MigrationError::Refused { reason }) => {
                assert!(reason.contains("not authorised"), "{asker}: {reason}")
            }
            other => panic!("{asker}: expected a refusal, got {other:?}"),
        }
    }
    fed.shutdown().await;
    for (node, chain) in [
        ("c1-validator-1", "cloud-1.local"),
        ("c1-inter-1", "consortium"),
    ] {
        let store = store(dir.path(), node, chain);
        let indications = (1..=store.tip().height)
            .flat_map(|h| store.block(h).unwrap().unwrap().txs)
            .filter(|tx| matches!(tx.record(), Record::Indication { .. }))
            .count();
        assert_eq!(indications, 0, "{chain}");
    }
}

/// Restarts a stopped node; its old endpoint's UDP port (and its stores'
/// locks) are free once the last task holding them ended, so retry
/// (bounded) while they are in use.
async fn restart(fed: &mut EmbeddedFederation, node: &str) {
    let start = Instant::now();
    loop {
        match fed.start_node(node).await {
            Ok(()) => return,
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                eprintln!("restarting {node}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{node} did not restart: {e}"),
        }
    }
}

/// How migration `id` ended on `node`, waiting (bounded) while it runs or
/// is being resumed.
async fn ended(fed: &EmbeddedFederation, node: &str, id: Hash) -> MigrationReport {
    let actor = fed.node(node).unwrap().migration().unwrap().clone();
    tokio::time::timeout(Duration::from_secs(120), actor.send(MigrationEnded(id)))
        .await
        .unwrap_or_else(|_| panic!("{node}: migration {id} did not end"))
        .unwrap()
        .unwrap_or_else(|| panic!("{node} does not know migration {id}"))
}

/// Arms `at` on `node`'s migration actor; the receiver gets the id of the
/// migration frozen there.
async fn halt_at(
    fed: &EmbeddedFederation,
    node: &str,
    at: HaltStep,
) -> tokio::sync::oneshot::Receiver<Hash> {
    let actor = fed.node(node).unwrap().migration().unwrap().clone();
    actor.send(HaltAt(at)).await.unwrap()
}

/// Starts migrating `image` from `from` without waiting for it.
fn start_migration(
    fed: &EmbeddedFederation,
    from: &str,
    image: &Path,
    to: Site,
) -> tokio::task::JoinHandle<Option<Result<MigrationReport, MigrationError>>> {
    let actor = fed.node(from).unwrap().migration().unwrap().clone();
    let msg = StartMigration {
        image: image.to_path_buf(),
        destination: to,
        tamper: false,
    };
    tokio::task::spawn_local(async move { actor.send(msg).await.ok() })
}

/// Issue 11's gap (a): the source dies right after its indication
/// committed while the destination is down (longer than the gateway
/// retries its notice). Before the store, nobody ever wrote the outcome;
/// now the restarted source resumes the migration, writes the rejection
/// with the reason once its deadline passed, and keeps the image.
#[actix_rt::test]
async fn source_restarted_after_its_indication_committed_with_the_destination_down_aborts_with_the_reason_on_the_ledger(
) {
    let dir = tempfile::tempdir().unwrap();
    write_local_federation(dir.path(), &TOPO, false).unwrap();
    let options = federact_actors::node::NodeOptions {
        migration: federact_actors::migration::MigrationLimits {
            protocol_timeout: Duration::from_secs(3),
            transfer_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .unwrap();
    fed.stop_node("c1-server-2").await;
    let (img, vm) = image(dir.path(), "vm.img", 1 << 20, 21);
    let halted = halt_at(&fed, "c1-server-1", HaltStep::Indicated).await;
    let pending = start_migration(
        &fed,
        "c1-server-1",
        &img,
        Site::new("cloud-1", "c1-server-2"),
    );
    let id = tokio::time::timeout(Duration::from_secs(60), halted)
        .await
        .expect("the indication committed")
        .unwrap();
    // The source dies with the migration between its indication and any
    // confirmation; whoever asked hears that the actor stopped.
    fed.stop_node("c1-server-1").await;
    let asked = pending.await.unwrap();
    assert!(
        !matches!(asked, Some(Ok(_))),
        "no outcome before the restart: {asked:?}"
    );
    restart(&mut fed, "c1-server-1").await;
    let report = ended(&fed, "c1-server-1", id).await;
    assert!(!report.completed, "{report:?}");
    assert!(
        report.reason.as_deref().unwrap_or("").contains("timed out"),
        "{report:?}"
    );
    assert_eq!(report.vm_id, vm);
    // The image stays at the source, untouched.
    assert_eq!(std::fs::read(&img).map(|b| Hash::of(&b)).ok(), Some(vm));
    fed.shutdown().await;
    let local = store(dir.path(), "c1-validator-1", "cloud-1.local");
    assert_eq!(
        kinds(&local, &vm),
        vec![("Indication", None), ("Confirmation", Some(false))]
    );
    let reason = local
        .vm_history(&vm)
        .unwrap()
        .iter()
        .find_map(|r| match &r.record {
            Record::Confirmation {
                migration_id,
                reason,
                ..
            } if *migration_id == id => reason.clone(),
            _ => None,
        });
    assert!(
        reason.as_deref().unwrap_or("").contains("timed out"),
        "{reason:?}"
    );
    // Nothing is left to resume: the store forgot the migration.
    let saved = federact_ledger::store::MigrationStore::open(
        &dir.path().join("data/c1-server-1/migration-state"),
    )
    .unwrap()
    .all()
    .unwrap();
    assert!(saved.is_empty(), "{saved:?}");
}

/// Issue 11's gap (b): the destination of an inter-cloud move dies after
/// its accepting confirmation committed on the consortium and before it
/// wrote `Arrival`. The restarted destination resumes it: `Arrival` is
/// written with the confirmation's proof, the image is kept under its vm
/// id, and the source (told again) writes `Leave`.
#[actix_rt::test]
async fn destination_restarted_after_its_accepting_confirmation_writes_the_arrival() {
    let (dir, mut fed) = start().await;
    let (img, vm) = image(dir.path(), "vm.img", 2 << 20, 22);
    let halted = halt_at(&fed, "c2-server-1", HaltStep::Ending).await;
    let pending = start_migration(
        &fed,
        "c1-server-1",
        &img,
        Site::new("cloud-2", "c2-server-1"),
    );
    let id = tokio::time::timeout(Duration::from_secs(60), halted)
        .await
        .expect("the accepting confirmation committed")
        .unwrap();
    fed.stop_node("c2-server-1").await;
    restart(&mut fed, "c2-server-1").await;
    let dst = ended(&fed, "c2-server-1", id).await;
    assert!(dst.completed, "{dst:?}");
    assert_eq!(dst.vm_id, vm);
    let kept = dir
        .path()
        .join("data/c2-server-1/migration/images")
        .join(vm.to_string());
    assert_eq!(std::fs::read(&kept).map(|b| Hash::of(&b)).ok(), Some(vm));
    let src = tokio::time::timeout(Duration::from_secs(120), pending)
        .await
        .expect("the source ended")
        .unwrap();
    match src {
        Some(Ok(r)) => assert!(r.completed, "{r:?}"),
        other => panic!("source: {other:?}"),
    }
    fed.shutdown().await;
    let c2 = store(dir.path(), "c2-validator-1", "cloud-2.local");
    let c1 = store(dir.path(), "c1-validator-1", "cloud-1.local");
    let cons = store(dir.path(), "c1-inter-1", "consortium");
    assert_eq!(kinds(&c2, &vm), vec![("Arrival", None)]);
    assert_eq!(kinds(&c1, &vm), vec![("Leave", None)]);
    assert_eq!(
        kinds(&cons, &vm),
        vec![("Indication", None), ("Confirmation", Some(true))]
    );
}
