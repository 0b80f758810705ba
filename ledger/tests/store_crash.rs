//! Crash test of the chain store, in the style of sled's own crash tests:
//! the test re-executes its own binary as a child that commits blocks in a
//! loop, SIGKILLs it after a random short delay, reopens the store and checks
//! that it is at a full block — never a partial one — that every block the
//! child reported as committed (flushed) survived, and that the whole chain
//! still verifies offline.
//!
//! A failure prints the seed; `FEDERACT_CRASH_SEED=<seed>` reproduces the
//! delays.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use federact_config::{ChainKind, NodeKey};
use federact_ledger::block::{Block, Genesis, Limits};
use federact_ledger::cert::{vote_sign_bytes, CommitCertificate, ValidatorSet, VoteKind};
use federact_ledger::hash::Hash;
use federact_ledger::record::{EntityKind, IdProof, Record};
use federact_ledger::store::{ChainStore, StoreOptions};
use federact_ledger::tx::Transaction;
use federact_ledger::verify::verify_store;

const CHILD_ENV: &str = "FEDERACT_CRASH_CHILD_DIR";
const ROUNDS: u64 = 24;
const TXS_PER_BLOCK: u64 = 64;

fn validators() -> Vec<NodeKey> {
    (1..=4u8).map(|i| NodeKey::from_seed(&[i; 32])).collect()
}

fn author() -> NodeKey {
    NodeKey::from_seed(&[42; 32])
}

fn genesis() -> Genesis {
    Genesis {
        chain_id: "crash".into(),
        kind: ChainKind::Local,
        cloud: Some("cloud-1".into()),
        validators: ValidatorSet::new(validators().iter().map(|k| k.id()).collect(), 1)
            .expect("valid set"),
        consortium: None,
        writers: Vec::new(),
        limits: Limits::default(),
    }
}

fn certify(block: &Block, keys: &[NodeKey]) -> CommitCertificate {
    let id = block.id();
    let h = &block.header;
    let msg = vote_sign_bytes(
        VoteKind::Precommit,
        &h.chain_id,
        h.height,
        h.round,
        Some(&id),
    );
    CommitCertificate {
        chain_id: h.chain_id.clone(),
        height: h.height,
        round: h.round,
        block_hash: id,
        signatures: (0..3u16)
            .map(|i| (i, keys[i as usize].sign(&msg)))
            .collect(),
    }
}

/// Child: commit blocks forever (each joins and later removes entities, so
/// every block writes blocks, certificates, tx index, provenance index and
/// state), printing each height once `commit` returned (= flushed).
fn run_child(dir: &Path) {
    let g = genesis();
    let keys = validators();
    let me = author();
    let mut store = ChainStore::open_with(dir, Some(&g), StoreOptions::default()).expect("open");
    let mut nonce = store.last_nonce(&me.id()).expect("nonce");
    loop {
        let tip = store.tip();
        let h = tip.height + 1;
        let txs = (0..TXS_PER_BLOCK)
            .map(|i| {
                nonce += 1;
                let entity = format!("e{h}-{i}");
                let record = if i % 2 == 0 {
                    Record::ProvIdCreate {
                        kind: EntityKind::Container,
                        entity,
                        id_proof: IdProof {
                            digest: Hash::of(&h.to_be_bytes()),
                            attested_by: me.id(),
                        },
                    }
                } else {
                    Record::ProvOrch {
                        deployed: entity,
                        location: "server-1".into(),
                    }
                };
                Transaction::sign(record, &me, nonce, h, None)
            })
            .collect();
        let proposer = *g.validators.proposer(h, 0);
        let block = Block::new(&g.chain_id, h, tip.id, proposer, 0, h, txs);
        let cert = certify(&block, &keys);
        let done = store
            .commit(&block, &cert)
            .expect("store error")
            .expect("valid block");
        println!("committed {}", done.tip.height);
    }
}

#[test]
fn crash_child() {
    // Only does something when re-executed by `reopen_after_kill_*`.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        run_child(Path::new(&dir));
    }
}

/// xorshift64: enough randomness for delays, reproducible from the seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn reopen_after_kill_yields_the_last_full_block() {
    let seed = std::env::var("FEDERACT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("seed {seed}");
    let mut rng = seed;
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut last_reported = 0u64;
    let mut kills_mid_run = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(h) = line.strip_prefix("committed ") {
                    if let Ok(h) = h.trim().parse::<u64>() {
                        let _ = tx.send(h);
                    }
                }
            }
        });
        // Wait for the child to make progress, then kill it at a random
        // moment within the next few commits.
        let first = rx.recv_timeout(Duration::from_secs(60));
        assert!(first.is_ok(), "seed {seed}: child made no progress");
        let delay = 1 + next(&mut rng) % 120;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().expect("SIGKILL child");
        let _ = child.wait();
        let _ = reader.join();
        let reported: Vec<u64> = rx.try_iter().collect();
        let max_reported = reported
            .iter()
            .copied()
            .chain(first.ok())
            .max()
            .unwrap_or(0);
        if max_reported > last_reported + 1 {
            kills_mid_run += 1;
        }
        last_reported = last_reported.max(max_reported);

        let store = ChainStore::open(dir.path(), None)
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: reopen failed: {e}"));
        let tip = store.tip();
        assert!(
            tip.height >= last_reported,
            "seed {seed} round {round}: tip {} lost a flushed block (reported {last_reported})",
            tip.height
        );
        assert!(
            tip.height <= last_reported + 1,
            "seed {seed} round {round}: tip {} ahead of what the child could have committed",
            tip.height
        );
        let block = store
            .block(tip.height)
            .expect("read tip")
            .expect("tip block");
        assert_eq!(block.id(), tip.id, "seed {seed}: tip block mismatch");
        assert_eq!(block.txs.len() as u64, TXS_PER_BLOCK);
        assert!(store.certificate(tip.height).expect("cert").is_some());
        assert!(store.block(tip.height + 1).expect("read").is_none());
        last_reported = tip.height;
        drop(store);

        let report = verify_store(dir.path()).expect("verify");
        assert!(
            report.is_ok(),
            "seed {seed} round {round}: {:?}",
            report.fault
        );
        assert_eq!(report.verified_height, tip.height);
    }
    assert!(last_reported >= ROUNDS, "seed {seed}: too little progress");
    println!("final height {last_reported}, {kills_mid_run} kills after several commits");
}
