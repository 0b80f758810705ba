//! Decisions per second of the pure consensus core: n validators in one
//! process, every message delivered at once (zero network delay), signing
//! and signature verification included, timers never needed.
//!
//! `cargo bench -p federact-ledger --bench consensus`

use std::collections::VecDeque;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use federact_config::{NodeId, NodeKey};
use federact_ledger::consensus::{Consensus, ConsensusParams, ConsensusValue, Effect, Message};
use federact_ledger::{Hash, ValidatorSet};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Value {
    height: u64,
    round: u32,
}

impl ConsensusValue for Value {
    fn id(&self) -> Hash {
        Hash::of_parts(&[&self.height.to_be_bytes(), &self.round.to_be_bytes()])
    }
}

fn params() -> ConsensusParams {
    ConsensusParams {
        block_size_txs: 16,
        block_bytes_max: 1 << 20,
        batch_timeout_ms: 0,
        empty_blocks: false,
        propose_ms: 1000,
        prevote_ms: 1000,
        precommit_ms: 1000,
        delta_ms: 500,
        tick_ms: 1000,
        future_rounds_max: 8,
        future_msgs_per_peer: 64,
    }
}

struct Cluster {
    ids: Vec<NodeId>,
    cores: Vec<Consensus<Value>>,
    queue: VecDeque<(usize, usize, Message<Value>)>,
    decided: u64,
    /// Validators that decided and must report their mempool next.
    pending: Vec<usize>,
}

impl Cluster {
    fn new(n: usize) -> Self {
        let keys: Vec<NodeKey> = (0..n)
            .map(|i| NodeKey::from_seed(&[i as u8 + 1; 32]))
            .collect();
        let ids: Vec<NodeId> = keys.iter().map(|k| k.id()).collect();
        let set = ValidatorSet::new(ids.clone(), ((n - 1) / 3) as u32).expect("set");
        let cores = keys
            .into_iter()
            .map(|k| {
                Consensus::new("bench", set.clone(), k, params(), 1, Vec::new(), 0).expect("core")
            })
            .collect();
        let mut c = Cluster {
            ids,
            cores,
            queue: VecDeque::new(),
            decided: 0,
            pending: Vec::new(),
        };
        for i in 0..n {
            c.drain(i);
            c.pending.push(i);
        }
        c
    }

    fn drain(&mut self, i: usize) {
        loop {
            let effects = self.cores[i].poll_effects();
            if effects.is_empty() {
                return;
            }
            for e in effects {
                match e {
                    Effect::Broadcast(m) => {
                        for to in 0..self.cores.len() {
                            if to != i {
                                self.queue.push_back((to, i, m.clone()));
                            }
                        }
                    }
                    Effect::BuildValue { height, round, .. } => {
                        self.cores[i].handle_value_built(0, height, round, Value { height, round })
                    }
                    Effect::ValidateValue { height, value, .. } => {
                        self.cores[i].handle_value_validity(0, height, value.id(), true)
                    }
                    Effect::Decide { .. } => {
                        self.decided += 1;
                        self.pending.push(i);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Runs until every validator decided one more height.
    fn next_height(&mut self) {
        let target = self.decided + self.cores.len() as u64;
        for i in std::mem::take(&mut self.pending) {
            self.cores[i].handle_txs_available(0, 16, 16 * 200);
            self.drain(i);
        }
        while self.decided < target {
            let Some((to, from, m)) = self.queue.pop_front() else {
                panic!("stalled at {} decisions", self.decided);
            };
            let from = self.ids[from];
            self.cores[to].handle_message(0, &from, m);
            self.drain(to);
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("consensus_decisions");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 4, 16] {
        let mut cluster = Cluster::new(n);
        g.bench_function(format!("n{n}"), |b| b.iter(|| cluster.next_height()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
