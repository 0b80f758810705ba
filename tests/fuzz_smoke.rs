//! The fuzz targets on stable Rust, on every CI run: CI has no nightly
//! toolchain for `cargo fuzz`, so this test feeds each target's check
//! (`fuzz/checks.rs`, the same function the libFuzzer target calls) with
//!
//! - valid seeds built here from the real encoders (each must decode, so
//!   the mutations start from inputs that reach deep into the decoders),
//! - every file of the target's `cargo fuzz` corpus and crash artifacts
//!   (`fuzz/corpus/TARGET`, `fuzz/artifacts/TARGET`) when present, and
//! - a few thousand seeded mutations of the seeds (bit flips, boundary
//!   values, truncations, insertions, deletions, duplications, splices)
//!   and random buffers.
//!
//! A panic names the target, the seed and the input's index (or file).
//! `FEDERACT_FUZZ_SMOKE_INPUTS` sets the number of generated inputs per
//! target (default 10 000), `FEDERACT_FUZZ_SMOKE_SEED` the seed.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

use federact_config::{write_local_federation, NodeKey, Topology};
use federact_federation::frame::{self, EnvelopeRef, Kind};
use federact_federation::TraceContext;
use federact_ledger::block::Block;
use federact_ledger::codec;
use federact_ledger::hash::Hash;
use federact_ledger::record::{Record, Scope, Site};
use federact_ledger::tx::Transaction;

#[path = "harness/rng.rs"]
#[allow(dead_code)]
mod rng;

use rng::SplitMix as Rng;

const INTERESTING: [u8; 6] = [0, 1, 0x7f, 0x80, 0xfe, 0xff];

/// One mutation of `input` (never longer than 1 MiB).
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let len = input.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 => input.truncate(rng.below(len + 1)),
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
        }
        4 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(16)).min(len);
            input.drain(a..b);
        }
        5 if len > 0 && len < 1 << 19 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            let part = input[a..b].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, part);
        }
        6 => {
            let other = &seeds[rng.below(seeds.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        _ if len >= 8 => {
            // A length or count field set to a boundary value.
            let at = rng.below(len - 7);
            let v: u64 = match rng.below(4) {
                0 => u64::MAX,
                1 => u64::from(u32::MAX),
                2 => 1 << 31,
                _ => rng.below(1 << 20) as u64,
            };
            let width = if rng.below(2) == 0 { 4 } else { 8 };
            input[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
        }
        _ => input.push(rng.next() as u8),
    }
}

/// Runs `check` on the seeds (each must be accepted), the target's corpus
/// and artifacts, and `FEDERACT_FUZZ_SMOKE_INPUTS` generated inputs.
fn smoke(target: &str, seeds: Vec<Vec<u8>>, check: fn(&[u8]) -> bool) {
    for (i, s) in seeds.iter().enumerate() {
        assert!(check(s), "{target}: seed {i} does not decode");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if let Ok(data) = std::fs::read(&path) {
                let r = std::panic::catch_unwind(|| check(&data));
                assert!(r.is_ok(), "{target}: {} panics", path.display());
                files += 1;
            }
        }
    }
    let inputs: usize = std::env::var("FEDERACT_FUZZ_SMOKE_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("FEDERACT_FUZZ_SMOKE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let mut rng = Rng(seed ^ Hash::of(target.as_bytes()).as_bytes()[0] as u64);
    let mut accepted = 0usize;
    for i in 0..inputs {
        let input = if rng.below(8) == 0 {
            let n = rng.below(512);
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut input, &seeds);
            }
            input
        };
        let r = std::panic::catch_unwind(|| check(&input));
        match r {
            Ok(true) => accepted += 1,
            Ok(false) => {}
            Err(_) => panic!(
                "{target}: generated input {i} (seed {seed}) panics: {:02x?}",
                &input[..input.len().min(256)]
            ),
        }
    }
    eprintln!(
        "{target}: {} seeds, {files} corpus/artifact files, {inputs} generated inputs ({accepted} decoded), no panic",
        seeds.len()
    );
}

#[test]
fn frame_decoder_survives_seeds_corpus_and_mutations() {
    let peer = *checks::frame_peer();
    let trace = TraceContext::default();
    let mut seeds = Vec::new();
    for (i, kind) in [
        Kind::Request,
        Kind::Response,
        Kind::OneWay,
        Kind::Stream,
        Kind::Error,
    ]
    .into_iter()
    .enumerate()
    {
        let body: Vec<u8> = (0..i * 37).map(|b| b as u8).collect();
        let f = frame::encode(
            &EnvelopeRef {
                from: &peer,
                to: "validator/cloud-1.local",
                correlation: i as u64 * 7919,
                kind,
                trace: &trace,
                body: &body,
            },
            checks::FRAME_MAX,
        )
        .expect("encode");
        seeds.push(f);
    }
    // Two frames back to back.
    let two = [seeds[0].clone(), seeds[1].clone()].concat();
    seeds.push(two);
    smoke("frame_decode", seeds, checks::frame_decode);
}

fn sample_records() -> Vec<Record> {
    let site = |c: &str, s: &str| Site::new(c, s);
    vec![
        Record::ProvData {
            data_digest: Hash::of(b"d"),
            generated_by: "c1-server-1".into(),
            used_by: None,
        },
        Record::Indication {
            migration_id: Hash::of(b"m"),
            vm_id: Hash::of(b"vm"),
            source: site("cloud-1", "c1-server-1"),
            destination: site("cloud-2", "c2-server-1"),
            scope: Scope::Inter,
        },
        Record::Confirmation {
            migration_id: Hash::of(b"m"),
            vm_id: Hash::of(b"vm"),
            accepted: false,
            observed_hash: Hash::of(b"other"),
            reason: Some("image hash does not match".into()),
            scope: Scope::Local,
        },
        Record::OffloadCompleted {
            task_id: Hash::of(b"t"),
            result_digest: Hash::of(b"r"),
            scope: Scope::Local,
        },
        Record::OffloadDisputed {
            task_id: Hash::of(b"t"),
            received_digest: Hash::of(b"tampered"),
            expected_digest: Hash::of(b"r"),
            scope: Scope::Inter,
        },
    ]
}

#[test]
fn ledger_decoders_survive_seeds_corpus_and_mutations() {
    let key = NodeKey::from_seed(&[1; 32]);
    let g = checks::ledger_genesis();
    let txs: Vec<Transaction> = sample_records()
        .into_iter()
        .enumerate()
        .map(|(i, r)| Transaction::sign(r, &key, i as u64 + 1, 1_700_000_000_000, None))
        .collect();
    let mut seeds: Vec<Vec<u8>> = txs.iter().map(Transaction::encode).collect();
    let block = Block::new(
        "fuzz",
        1,
        g.tip().id,
        *g.validators.proposer(1, 0),
        0,
        1_700_000_000_000,
        txs,
    );
    seeds.push(block.encode());
    seeds.push(codec::encode(&g));
    smoke("ledger_decode", seeds, checks::ledger_decode);
}

#[test]
fn config_parser_survives_seeds_corpus_and_mutations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topo = Topology {
        clouds: 2,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 1,
    };
    let written = write_local_federation(dir.path(), &topo, false).expect("init");
    let text = std::fs::read_to_string(&written.federation_file).expect("federation file");
    // Line-level variants too: byte mutations of TOML mostly break UTF-8
    // or the syntax; dropped and repeated lines reach the semantic checks.
    let lines: Vec<&str> = text.lines().collect();
    let mut seeds = vec![text.clone().into_bytes()];
    let mut variants = Vec::new();
    for i in (0..lines.len()).step_by(3) {
        let mut dropped = lines.clone();
        dropped.remove(i);
        variants.push(dropped.join("\n").into_bytes());
        let mut doubled = lines.clone();
        doubled.insert(i, lines[i]);
        variants.push(doubled.join("\n").into_bytes());
    }
    for v in &variants {
        let r = std::panic::catch_unwind(|| checks::config_parse(v));
        assert!(r.is_ok(), "config_parse panics on a line variant");
    }
    seeds.push(
        text.replace("sampling_ratio = 1.0", "sampling_ratio = 0.5")
            .into_bytes(),
    );
    smoke("config_parse", seeds, checks::config_parse);
}

#[test]
fn proof_verification_survives_edits_and_forges_nothing() {
    // Each genuine proof unedited (pick, offset 0, no patch), whole and
    // truncated at its end: each decodes and verifies.
    let n = checks::proof_fixture().proofs.len() as u8;
    let mut seeds: Vec<Vec<u8>> = (0..n).map(|i| vec![i, 0, 0]).collect();
    for (i, p) in checks::proof_fixture().proofs.iter().enumerate() {
        // Rewrites the whole encoding with itself.
        let mut whole = vec![i as u8 | 0x80, 0, 0];
        whole.extend_from_slice(p);
        seeds.push(whole);
    }
    smoke("proof_verify", seeds, checks::proof_verify);
}
