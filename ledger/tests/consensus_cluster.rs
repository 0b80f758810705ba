//! The consensus core through its public API only, as the validator actor
//! drives it: n validators in one process, every message delivered at once,
//! timers fired in time order, one validator restarted from its WAL.

use std::collections::{BTreeMap, VecDeque};

use federact_config::{NodeId, NodeKey};
use federact_ledger::consensus::{
    Consensus, ConsensusParams, ConsensusValue, Effect, Message, Timeout, WalEntry,
};
use federact_ledger::{CommitCertificate, Hash, ValidatorSet};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Value(u64, u32, u16);

impl ConsensusValue for Value {
    fn id(&self) -> Hash {
        Hash::of_parts(&[
            &self.0.to_be_bytes(),
            &self.1.to_be_bytes(),
            &self.2.to_be_bytes(),
        ])
    }
}

fn params() -> ConsensusParams {
    ConsensusParams {
        block_size_txs: 8,
        block_bytes_max: 1 << 20,
        batch_timeout_ms: 10,
        empty_blocks: false,
        propose_ms: 100,
        prevote_ms: 50,
        precommit_ms: 50,
        delta_ms: 20,
        tick_ms: 200,
        future_rounds_max: 8,
        future_msgs_per_peer: 32,
    }
}

fn key(i: usize) -> NodeKey {
    NodeKey::from_seed(&[i as u8 + 11; 32])
}

struct Node {
    core: Option<Consensus<Value>>,
    wal: Vec<WalEntry<Value>>,
    store: Vec<(Value, CommitCertificate)>,
}

struct Cluster {
    set: ValidatorSet,
    ids: Vec<NodeId>,
    nodes: Vec<Node>,
    now: u64,
    messages: VecDeque<(usize, usize, Message<Value>)>,
    timers: BTreeMap<(u64, u64), (usize, Timeout)>,
    seq: u64,
    /// Validators that applied a block and report their mempool next (not
    /// at once: a solo validator would otherwise decide forever in one call).
    mempool_due: Vec<usize>,
}

impl Cluster {
    fn new(n: usize) -> Self {
        let ids: Vec<NodeId> = (0..n).map(|i| key(i).id()).collect();
        let set = ValidatorSet::new(ids.clone(), ((n - 1) / 3) as u32).unwrap();
        let mut c = Cluster {
            set,
            ids,
            nodes: Vec::new(),
            now: 0,
            messages: VecDeque::new(),
            timers: BTreeMap::new(),
            seq: 0,
            mempool_due: Vec::new(),
        };
        for _ in 0..n {
            c.nodes.push(Node {
                core: None,
                wal: Vec::new(),
                store: Vec::new(),
            });
        }
        for i in 0..n {
            c.start(i);
        }
        c
    }

    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let height = node.store.len() as u64 + 1;
        let core = Consensus::new(
            "cluster",
            self.set.clone(),
            key(i),
            params(),
            height,
            node.wal.clone(),
            self.now,
        )
        .unwrap();
        node.core = Some(core);
        self.drain(i);
        self.mempool(i);
    }

    fn mempool(&mut self, i: usize) {
        let now = self.now;
        if let Some(c) = self.nodes[i].core.as_mut() {
            c.handle_txs_available(now, 8, 800);
        }
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        loop {
            let Some(core) = self.nodes[i].core.as_mut() else {
                return;
            };
            let effects = core.poll_effects();
            if effects.is_empty() {
                return;
            }
            let mut decided = false;
            for e in effects {
                let now = self.now;
                match e {
                    Effect::Persist(entry) => self.nodes[i].wal.push(entry),
                    Effect::Broadcast(m) => {
                        for to in 0..self.nodes.len() {
                            if to != i {
                                self.messages.push_back((to, i, m.clone()));
                            }
                        }
                    }
                    Effect::SendTo(peer, m) => {
                        if let Some(to) = self.ids.iter().position(|id| *id == peer) {
                            self.messages.push_back((to, i, m));
                        }
                    }
                    Effect::ScheduleTimeout { timeout, at_ms } => {
                        self.seq += 1;
                        self.timers.insert((at_ms, self.seq), (i, timeout));
                    }
                    Effect::BuildValue { height, round, .. } => {
                        let v = Value(height, round, i as u16);
                        let core = self.nodes[i].core.as_mut().unwrap();
                        core.handle_value_built(now, height, round, v);
                    }
                    Effect::ValidateValue { height, value, .. } => {
                        let ok = value.0 == height;
                        let core = self.nodes[i].core.as_mut().unwrap();
                        core.handle_value_validity(now, height, value.id(), ok);
                    }
                    Effect::RequestBlock { peer, height } => {
                        let from = self.ids.iter().position(|id| *id == peer).unwrap();
                        let b = self.nodes[from].store.get(height as usize - 1).cloned();
                        if let Some((v, cert)) = b {
                            let core = self.nodes[i].core.as_mut().unwrap();
                            core.handle_block_fetched(now, v, cert);
                        }
                    }
                    Effect::Decide { value, certificate } => {
                        certificate
                            .verify(&self.set, "cluster", certificate.height, &value.id())
                            .unwrap();
                        let node = &mut self.nodes[i];
                        assert_eq!(certificate.height, node.store.len() as u64 + 1);
                        node.wal.retain(|e| e.height() > certificate.height);
                        node.store.push((value, certificate));
                        decided = true;
                    }
                    Effect::Evidence(e) => panic!("no equivocation here: {e:?}"),
                }
            }
            if decided {
                // Applying the block changed the mempool.
                self.mempool_due.push(i);
            }
        }
    }

    /// Delivers messages and fires timers until every running validator
    /// has `heights` blocks (or simulated time runs out).
    fn run_until(&mut self, heights: usize, deadline_ms: u64) {
        loop {
            if self
                .nodes
                .iter()
                .filter(|n| n.core.is_some())
                .all(|n| n.store.len() >= heights)
            {
                return;
            }
            if let Some(i) = self.mempool_due.pop() {
                self.mempool(i);
                continue;
            }
            if let Some((to, from, m)) = self.messages.pop_front() {
                let now = self.now;
                let from = self.ids[from];
                if let Some(c) = self.nodes[to].core.as_mut() {
                    c.handle_message(now, &from, m);
                    self.drain(to);
                }
                continue;
            }
            let Some(((at, _), (i, t))) = self.timers.pop_first() else {
                panic!("nothing left to do");
            };
            assert!(at <= deadline_ms, "no progress by {deadline_ms} ms");
            self.now = self.now.max(at);
            let now = self.now;
            if let Some(c) = self.nodes[i].core.as_mut() {
                c.handle_timeout(now, t);
                self.drain(i);
            }
        }
    }

    fn assert_agreement(&self) {
        let longest = self.nodes.iter().map(|n| n.store.len()).max().unwrap();
        for h in 0..longest {
            let ids: Vec<Hash> = self
                .nodes
                .iter()
                .filter_map(|n| n.store.get(h).map(|(v, _)| v.id()))
                .collect();
            assert!(ids.windows(2).all(|w| w[0] == w[1]), "height {}", h + 1);
        }
    }
}

#[test]
fn clusters_of_1_4_7_decide_the_same_certified_blocks() {
    for n in [1, 4, 7] {
        let mut c = Cluster::new(n);
        c.run_until(10, 60_000);
        c.assert_agreement();
    }
}

#[test]
fn a_validator_restarted_from_its_wal_catches_up() {
    let mut c = Cluster::new(4);
    c.run_until(3, 60_000);
    // Crash validator 2 (pending messages to it are lost) and go on without it.
    c.nodes[2].core = None;
    c.messages.retain(|(to, _, _)| *to != 2);
    c.run_until(6, 60_000);
    assert_eq!(c.nodes[2].store.len(), 3);
    c.start(2);
    c.run_until(8, 120_000);
    c.assert_agreement();
    assert!(c.nodes[2].core.as_ref().unwrap().stats().fetched >= 2);
}
