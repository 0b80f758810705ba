//! Ledger throughput: transaction verification (single, batch, and the raw
//! ed25519 rate for comparison), committing 1,000-transaction blocks to sled
//! with a durable flush per block, and Merkle proofs.
//!
//! `cargo bench -p federact-ledger --bench ledger -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey};

use federact_config::{ChainKind, NodeKey};
use federact_ledger::block::{Block, Genesis, Limits};
use federact_ledger::cert::{vote_sign_bytes, CommitCertificate, ValidatorSet, VoteKind};
use federact_ledger::hash::Hash;
use federact_ledger::merkle::{self, MerkleProof};
use federact_ledger::record::{EntityKind, IdProof, Record};
use federact_ledger::store::{ChainStore, StoreOptions};
use federact_ledger::tx::{self, Transaction, TxPolicy};

const BLOCK_TXS: usize = 1000;

fn authors() -> Vec<NodeKey> {
    (0..16u8)
        .map(|i| NodeKey::from_seed(&[i + 100; 32]))
        .collect()
}

fn record(i: u64) -> Record {
    Record::ProvIdCreate {
        kind: EntityKind::Container,
        entity: format!("fn-instance-{i}"),
        id_proof: IdProof {
            digest: Hash::of(&i.to_be_bytes()),
            attested_by: NodeKey::from_seed(&[7; 32]).id(),
        },
    }
}

/// `n` signed transactions from 16 authors for block `first_nonce` (nonces
/// increase from block to block), as they arrive from the network (decoded,
/// so no cached encoding).
fn fresh_txs(n: usize, first_nonce: u64) -> Vec<Transaction> {
    let keys = authors();
    (0..n)
        .map(|i| {
            let k = &keys[i % keys.len()];
            // 63 txs per author per block: nonces of block r are r*100+0..62.
            let nonce = first_nonce * 100 + (i / keys.len()) as u64;
            let t = Transaction::sign(record(first_nonce * 10_000 + i as u64), k, nonce, 0, None);
            Transaction::decode(&t.encode(), tx::TX_BYTES_MAX).expect("decodes")
        })
        .collect()
}

fn bench_verify(c: &mut Criterion) {
    let policy = TxPolicy::default();
    let txs = fresh_txs(BLOCK_TXS, 1);
    let mut g = c.benchmark_group("verify");

    g.throughput(Throughput::Elements(1));
    let one = txs[0].clone();
    let _ = one.id();
    g.bench_function("tx_single", |b| {
        b.iter(|| black_box(&one).verify(&policy).expect("valid"))
    });

    g.throughput(Throughput::Elements(BLOCK_TXS as u64));
    let cached: Vec<Transaction> = txs.clone();
    cached.iter().for_each(|t| {
        let _ = t.id();
    });
    g.bench_function("tx_batch_1000", |b| {
        b.iter(|| tx::verify_batch(black_box(&cached), &policy).expect("valid"))
    });
    g.bench_function("tx_batch_1000_from_bytes", |b| {
        let bytes: Vec<Vec<u8>> = txs.iter().map(Transaction::encode).collect();
        b.iter(|| {
            let decoded: Vec<Transaction> = bytes
                .iter()
                .map(|b| Transaction::decode(b, tx::TX_BYTES_MAX).expect("decodes"))
                .collect();
            tx::verify_batch(&decoded, &policy).expect("valid")
        })
    });

    g.throughput(Throughput::Elements(1));
    let sk = SigningKey::from_bytes(&[9; 32]);
    let vk = sk.verifying_key();
    let msg = txs[0].signed_bytes().to_vec();
    let sig = sk.sign(&msg);
    g.bench_function("ed25519_raw_verify", |b| {
        b.iter(|| vk.verify_strict(black_box(&msg), &sig).expect("valid"))
    });
    g.finish();
}

fn validators() -> Vec<NodeKey> {
    (1..=4u8).map(|i| NodeKey::from_seed(&[i; 32])).collect()
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

fn bench_commit(c: &mut Criterion) {
    let keys = validators();
    let genesis = Genesis {
        chain_id: "bench".into(),
        kind: ChainKind::Local,
        cloud: Some("cloud-1".into()),
        validators: ValidatorSet::new(keys.iter().map(|k| k.id()).collect(), 1).expect("set"),
        consortium: None,
        writers: Vec::new(),
        limits: Limits::default(),
    };
    let mut g = c.benchmark_group("commit");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BLOCK_TXS as u64));
    for (name, prechecked) in [
        ("block_1000_txs_durable", false),
        ("block_1000_txs_durable_prechecked", true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = ChainStore::open_with(dir.path(), Some(&genesis), StoreOptions::default())
            .expect("open");
        let mut round = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let tip = store.tip();
                    let h = tip.height + 1;
                    let txs = fresh_txs(BLOCK_TXS, round);
                    let proposer = *genesis.validators.proposer(h, 0);
                    let block = Block::new(&genesis.chain_id, h, tip.id, proposer, 0, h, txs);
                    // As received from the proposer: decoded, no caches.
                    let block = Block::decode(&block.encode(), 64 << 20).expect("decodes");
                    let cert = certify(&block, &keys);
                    let start = Instant::now();
                    let done = if prechecked {
                        store.commit_prechecked(&block, &cert)
                    } else {
                        store.commit(&block, &cert)
                    };
                    done.expect("store").expect("valid block");
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn bench_merkle(c: &mut Criterion) {
    let ids: Vec<Hash> = (0..BLOCK_TXS as u64)
        .map(|i| Hash::of(&i.to_be_bytes()))
        .collect();
    let root = merkle::root(&ids);
    let proof = MerkleProof::build(&ids, 377).expect("in range");
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(BLOCK_TXS as u64));
    g.bench_function("root_1000", |b| b.iter(|| merkle::root(black_box(&ids))));
    g.bench_function("prove_all_1000", |b| {
        b.iter(|| MerkleProof::build_all(black_box(&ids)))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("prove_one_of_1000", |b| {
        b.iter(|| MerkleProof::build(black_box(&ids), 377))
    });
    g.bench_function("verify_one_of_1000", |b| {
        b.iter(|| assert!(black_box(&proof).verify(&ids[377], &root)))
    });
    g.finish();

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(BLOCK_TXS as u64));
    g.bench_function("decode_block_1000_and_hash_txs", |b| {
        let block = Block::new(
            "bench",
            1,
            Hash::ZERO,
            validators()[0].id(),
            0,
            0,
            fresh_txs(BLOCK_TXS, 1),
        );
        let bytes = block.encode();
        b.iter_batched(
            || bytes.clone(),
            |bytes| Block::decode(&bytes, 64 << 20).expect("decodes").tx_ids(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_verify, bench_commit, bench_merkle);
criterion_main!(benches);
