//! A deterministic simulator for the consensus core, after TigerBeetle's
//! VOPR and raft-rs's harness: N validators, one seeded PRNG, a simulated
//! clock (an event queue), a network that delays, drops, duplicates and
//! reorders messages, partitions that heal, crashes and restarts (a restarted
//! validator keeps only what it persisted and its decided blocks), and
//! Byzantine validators (equivocating proposer, double voter, silent,
//! garbage sender, twins).
//!
//! After every event the checkers run: no two honest validators decide
//! different values at one height; every decision carries a certificate that
//! verifies; no honest validator ever signs two different votes or proposals
//! for one (height, round, kind), restarts included. After GST (faults stop,
//! partitions heal, crashed validators restart, the network becomes timely)
//! every honest validator must decide `heights_after_gst` new heights within
//! `liveness_bound_ms` of simulated time.
//!
//! Everything comes from the seed: the same seed replays the same run, on
//! any machine (the PRNG is a self-contained splitmix64, so a dependency
//! upgrade cannot change it).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use federact_config::{NodeId, NodeKey};

use crate::cert::{CommitCertificate, ValidatorSet, VoteKind};
use crate::hash::Hash;

use super::state::Consensus;
use super::types::{
    ConsensusParams, ConsensusValue, Effect, Evidence, Message, Proposal, SignedProposal,
    SignedVote, Status, Vote, WalEntry,
};

/// splitmix64: tiny, fast, and fixed forever (unlike a library's `StdRng`).
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    /// True with probability `permille` / 1000.
    pub fn chance(&mut self, permille: u32) -> bool {
        self.below(1000) < permille as u64
    }
}

/// The value the simulated validators agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestValue {
    /// Height it was built for.
    pub height: u64,
    /// Round it was built in.
    pub round: u32,
    /// Builder's validator index.
    pub proposer: u16,
    /// Makes values of one builder distinct.
    pub salt: u64,
    /// What the application check says (garbage proposals carry `false`).
    pub valid: bool,
}

impl ConsensusValue for TestValue {
    fn id(&self) -> Hash {
        Hash::of_parts(&[
            &self.height.to_be_bytes(),
            &self.round.to_be_bytes(),
            &self.proposer.to_be_bytes(),
            &self.salt.to_be_bytes(),
            &[self.valid as u8],
        ])
    }
}

/// How a simulated validator behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Follows the protocol (may still crash and restart).
    Honest,
    /// Never sends anything.
    Silent,
    /// Sends different proposals to different peers.
    EquivocatingProposer,
    /// Sends two different votes for every vote it casts.
    DoubleVoter,
    /// Adds malformed, mis-signed, misaddressed and far-future messages.
    Garbage,
    /// One of two honest-looking copies of the same key.
    Twin,
}

impl Behaviour {
    fn is_honest(self) -> bool {
        self == Behaviour::Honest
    }
}

/// A fault model: the network, the faults before GST and the Byzantine set.
#[derive(Debug, Clone)]
pub struct FaultModel {
    /// Name (the scenario test's name).
    pub name: &'static str,
    /// Validators.
    pub n: usize,
    /// Fault tolerance f.
    pub f: u32,
    /// Behaviour of validator i (missing = honest). A `Twin` entry adds a
    /// second simulated node with the same key.
    pub byzantine: Vec<(u16, Behaviour)>,
    /// Drop probability before GST (per mille).
    pub drop_permille: u32,
    /// Duplicate probability before GST (per mille).
    pub dup_permille: u32,
    /// Delay range before GST.
    pub delay_ms: (u64, u64),
    /// Delay range after GST.
    pub delay_after_gst_ms: (u64, u64),
    /// Random partitions before GST.
    pub partitions: bool,
    /// Random crashes (with later restart) of honest validators before GST.
    pub crashes: bool,
    /// GST is drawn from this range.
    pub gst_ms: (u64, u64),
    /// New heights every honest validator must decide after GST.
    pub heights_after_gst: u64,
    /// Limit on simulated time from GST to those decisions.
    pub liveness_bound_ms: u64,
    /// Consensus parameters.
    pub params: ConsensusParams,
    /// The mempools stay empty until this time (an idle chain), then hold
    /// a full block from then on.
    pub workload_starts_ms: u64,
}

/// Parameters the scenarios use: short timeouts, a full mempool.
pub fn sim_params() -> ConsensusParams {
    ConsensusParams {
        block_size_txs: 16,
        block_bytes_max: 1 << 20,
        batch_timeout_ms: 20,
        empty_blocks: false,
        propose_ms: 150,
        prevote_ms: 80,
        precommit_ms: 80,
        delta_ms: 40,
        tick_ms: 120,
        future_rounds_max: 8,
        future_msgs_per_peer: 32,
    }
}

impl FaultModel {
    /// n validators tolerating f, a timely network, no faults.
    pub fn base(name: &'static str, n: usize, f: u32) -> Self {
        FaultModel {
            name,
            n,
            f,
            byzantine: Vec::new(),
            drop_permille: 0,
            dup_permille: 0,
            delay_ms: (1, 20),
            delay_after_gst_ms: (1, 20),
            partitions: false,
            crashes: false,
            gst_ms: (100, 350),
            heights_after_gst: 3,
            liveness_bound_ms: 30_000,
            params: sim_params(),
            workload_starts_ms: 0,
        }
    }
}

/// What goes over the simulated wire.
#[derive(Debug, Clone)]
enum Wire {
    Consensus(Message<TestValue>),
    BlockRequest(u64),
    BlockResponse(Box<(TestValue, CommitCertificate)>),
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        wire: Wire,
    },
    Timer {
        node: usize,
        incarnation: u64,
        timeout: super::types::Timeout,
    },
    Crash(usize),
    Restart(usize),
    Partition(Vec<u8>),
    Heal,
    Gst,
    /// The driver reports its mempool after applying a block.
    Mempool(usize, u64),
}

struct SimNode {
    validator: u16,
    behaviour: Behaviour,
    core: Option<Consensus<TestValue>>,
    incarnation: u64,
    wal: Vec<WalEntry<TestValue>>,
    store: Vec<(TestValue, CommitCertificate)>,
    evidence: u64,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFailure {
    /// The model.
    pub model: &'static str,
    /// The seed that reproduces it.
    pub seed: u64,
    /// What went wrong.
    pub reason: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model {} failed with seed {}: {}\nreproduce: SEED={} cargo test -p federact-ledger {}",
            self.model, self.seed, self.reason, self.seed, self.model
        )
    }
}

/// The outcome of one successful run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Lowest height decided by every honest validator.
    pub heights: u64,
    /// Simulated ms from GST until every honest validator had decided
    /// `heights_after_gst` more heights.
    pub liveness_after_gst_ms: u64,
    /// Evidence reported by honest validators.
    pub evidence: u64,
    /// Messages rejected by honest cores (all reasons).
    pub rejected: u64,
    /// Heights decided from fetched blocks by honest validators.
    pub fetched: u64,
    /// Events processed.
    pub events: u64,
    /// Votes signed by honest validators while every mempool was empty.
    pub votes_while_idle: u64,
}

const START_HEIGHT: u64 = 1;
const CHAIN: &str = "sim";

/// One simulation run.
pub struct Sim {
    model: FaultModel,
    seed: u64,
    rng: SimRng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    set: ValidatorSet,
    keys: Vec<NodeKey>,
    ids: Vec<NodeId>,
    nodes: Vec<SimNode>,
    groups: Vec<u8>,
    after_gst: bool,
    gst: u64,
    target: u64,
    /// Honest decisions: height -> value id.
    committed: HashMap<u64, Hash>,
    /// Honest signatures: (validator, height, round, kind) -> value.
    signed: HashMap<(u16, u64, u32, u8), Option<Hash>>,
    failure: Option<String>,
    events: u64,
    votes_while_idle: u64,
    /// The double voter's second vote for each vote (signed once).
    alt_votes: HashMap<Vote, SignedVote>,
    /// Certificates and evidence already checked (by encoding hash): every
    /// validator decides the same certificate, checking it once is enough.
    checked: std::collections::HashSet<Hash>,
}

fn key_seed(i: usize) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    s[31] = 0x5a;
    s
}

impl Sim {
    /// Sets up a run of `model` from `seed`.
    pub fn new(model: FaultModel, seed: u64) -> Self {
        let keys: Vec<NodeKey> = (0..model.n)
            .map(|i| NodeKey::from_seed(&key_seed(i)))
            .collect();
        let ids: Vec<NodeId> = keys.iter().map(|k| k.id()).collect();
        let set = ValidatorSet::new(ids.clone(), model.f).expect("sim: n >= 3f+1");
        let behaviour = |i: usize| {
            model
                .byzantine
                .iter()
                .find(|(v, _)| *v as usize == i)
                .map_or(Behaviour::Honest, |(_, b)| *b)
        };
        let mut nodes: Vec<SimNode> = (0..model.n)
            .map(|i| SimNode {
                validator: i as u16,
                behaviour: behaviour(i),
                core: None,
                incarnation: 0,
                wal: Vec::new(),
                store: Vec::new(),
                evidence: 0,
            })
            .collect();
        for (v, b) in &model.byzantine {
            if *b == Behaviour::Twin {
                nodes.push(SimNode {
                    validator: *v,
                    behaviour: Behaviour::Twin,
                    core: None,
                    incarnation: 0,
                    wal: Vec::new(),
                    store: Vec::new(),
                    evidence: 0,
                });
            }
        }
        let groups = vec![0; nodes.len()];
        Sim {
            rng: SimRng::new(seed),
            seed,
            model,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            set,
            keys,
            ids,
            nodes,
            groups,
            after_gst: false,
            gst: 0,
            target: u64::MAX,
            committed: HashMap::new(),
            signed: HashMap::new(),
            failure: None,
            events: 0,
            votes_while_idle: 0,
            alt_votes: HashMap::new(),
            checked: std::collections::HashSet::new(),
        }
    }

    fn push(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn fail(&mut self, reason: String) {
        if self.failure.is_none() {
            self.failure = Some(reason);
        }
    }

    /// Runs to the liveness target or the first failure.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        let (lo, hi) = self.model.gst_ms;
        self.gst = self.rng.range(lo, hi);
        self.schedule_faults();
        let gst = self.gst;
        self.push(gst, Event::Gst);
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        let deadline = gst.saturating_add(self.model.liveness_bound_ms);
        let mut done_at = None;
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            if at > deadline {
                break;
            }
            self.now = at;
            self.events += 1;
            self.handle_event(ev);
            if let Some(reason) = self.failure.take() {
                return Err(SimFailure {
                    model: self.model.name,
                    seed: self.seed,
                    reason,
                });
            }
            if self.after_gst && self.min_honest_height() >= self.target {
                done_at = Some(self.now);
                break;
            }
        }
        let Some(done) = done_at else {
            let mut states = String::new();
            for (i, n) in self.nodes.iter().enumerate() {
                let state = n.core.as_ref().map_or("down".to_string(), |c| c.describe());
                states.push_str(&format!(
                    "\nnode {i} ({:?}, v{}): {state}",
                    n.behaviour, n.validator
                ));
            }
            return Err(SimFailure {
                model: self.model.name,
                seed: self.seed,
                reason: format!(
                    "liveness: honest validators at heights {:?}, target {} not reached {} ms after GST at {} ms{states}",
                    self.honest_heights(),
                    self.target,
                    self.model.liveness_bound_ms,
                    self.gst
                ),
            });
        };
        let mut report = SimReport {
            heights: self.min_honest_height(),
            liveness_after_gst_ms: done - self.gst,
            events: self.events,
            votes_while_idle: self.votes_while_idle,
            ..SimReport::default()
        };
        for node in self.nodes.iter().filter(|n| n.behaviour.is_honest()) {
            report.evidence += node.evidence;
            if let Some(c) = &node.core {
                report.rejected += c.stats().rejected();
                report.fetched += c.stats().fetched;
            }
        }
        Ok(report)
    }

    fn honest_heights(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.behaviour.is_honest())
            .map(|n| n.store.len() as u64)
            .collect()
    }

    fn min_honest_height(&self) -> u64 {
        self.honest_heights().into_iter().min().unwrap_or(0)
    }

    fn schedule_faults(&mut self) {
        let gst = self.gst;
        let honest: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].behaviour.is_honest())
            .collect();
        if self.model.crashes {
            for _ in 0..self.rng.range(1, 3) {
                let node = honest[self.rng.below(honest.len() as u64) as usize];
                let at = self.rng.below(gst);
                let back = at + self.rng.range(1, 400);
                self.push(at, Event::Crash(node));
                if back < gst {
                    self.push(back, Event::Restart(node));
                }
            }
        }
        if self.model.partitions {
            let mut t = self.rng.below(gst / 2 + 1);
            while t < gst {
                let groups: Vec<u8> = (0..self.nodes.len())
                    .map(|_| self.rng.below(2) as u8)
                    .collect();
                self.push(t, Event::Partition(groups));
                let heal = t + self.rng.range(50, 400);
                if heal < gst {
                    self.push(heal, Event::Heal);
                }
                t = heal + self.rng.range(10, 300);
            }
        }
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.behaviour == Behaviour::Silent || node.core.is_some() {
            return;
        }
        node.incarnation += 1;
        let height = START_HEIGHT + node.store.len() as u64;
        let key = NodeKey::from_seed(&key_seed(node.validator as usize));
        match Consensus::new(
            CHAIN,
            self.set.clone(),
            key,
            self.model.params,
            height,
            node.wal.clone(),
            self.now,
        ) {
            Ok(core) => node.core = Some(core),
            Err(e) => {
                let reason = format!("node {i} cannot start: {e}");
                self.fail(reason);
                return;
            }
        }
        self.drive(i);
        self.report_mempool(i);
    }

    /// The workload: the mempool always holds a full block.
    fn report_mempool(&mut self, i: usize) {
        let now = self.now;
        let txs = if now < self.model.workload_starts_ms {
            let (at, inc) = (self.model.workload_starts_ms, self.nodes[i].incarnation);
            self.push(at, Event::Mempool(i, inc));
            0
        } else {
            self.model.params.block_size_txs as u64
        };
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.handle_txs_available(now, txs, txs * 200);
        }
        self.drive(i);
    }

    fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::Deliver { to, from, wire } => self.deliver(to, from, wire),
            Event::Timer {
                node,
                incarnation,
                timeout,
            } => {
                let now = self.now;
                let n = &mut self.nodes[node];
                if n.incarnation == incarnation {
                    if let Some(core) = n.core.as_mut() {
                        core.handle_timeout(now, timeout);
                        self.drive(node);
                    }
                }
            }
            Event::Crash(i) => {
                if !self.after_gst {
                    self.nodes[i].core = None;
                    self.nodes[i].incarnation += 1;
                }
            }
            Event::Restart(i) => self.start_node(i),
            Event::Partition(g) => {
                if !self.after_gst {
                    self.groups = g;
                }
            }
            Event::Mempool(i, incarnation) => {
                if self.nodes[i].incarnation == incarnation {
                    self.report_mempool(i);
                }
            }
            Event::Heal => self.groups.iter_mut().for_each(|g| *g = 0),
            Event::Gst => {
                self.after_gst = true;
                self.groups.iter_mut().for_each(|g| *g = 0);
                let max = self
                    .nodes
                    .iter()
                    .filter(|n| n.behaviour.is_honest())
                    .map(|n| n.store.len() as u64)
                    .max()
                    .unwrap_or(0);
                self.target = max + self.model.heights_after_gst;
                for i in 0..self.nodes.len() {
                    self.start_node(i);
                }
            }
        }
    }

    fn deliver(&mut self, to: usize, from: usize, wire: Wire) {
        let now = self.now;
        let from_id = self.ids[self.nodes[from].validator as usize];
        match wire {
            Wire::Consensus(msg) => {
                if let Some(core) = self.nodes[to].core.as_mut() {
                    core.handle_message(now, &from_id, msg);
                    self.drive(to);
                }
            }
            Wire::BlockRequest(h) => {
                if self.nodes[to].core.is_none() {
                    return;
                }
                let idx = h.checked_sub(START_HEIGHT).map(|i| i as usize);
                if let Some(entry) = idx.and_then(|i| self.nodes[to].store.get(i)).cloned() {
                    self.send(to, from, Wire::BlockResponse(Box::new(entry)));
                }
            }
            Wire::BlockResponse(b) => {
                let (value, cert) = *b;
                if let Some(core) = self.nodes[to].core.as_mut() {
                    core.handle_block_fetched(now, value, cert);
                    self.drive(to);
                }
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, wire: Wire) {
        if self.groups[from] != self.groups[to] {
            return;
        }
        let (drop, dup, (lo, hi)) = if self.after_gst {
            (0, 0, self.model.delay_after_gst_ms)
        } else {
            (
                self.model.drop_permille,
                self.model.dup_permille,
                self.model.delay_ms,
            )
        };
        if self.rng.chance(drop) {
            return;
        }
        if self.rng.chance(dup) {
            let at = self.now + self.rng.range(lo, hi);
            self.push(
                at,
                Event::Deliver {
                    to,
                    from,
                    wire: wire.clone(),
                },
            );
        }
        let at = self.now + self.rng.range(lo, hi);
        self.push(at, Event::Deliver { to, from, wire });
    }

    /// Sim nodes holding validator `v`'s key, other than `except`.
    fn nodes_of(&self, v: u16, except: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| *i != except && self.nodes[*i].validator == v)
            .collect()
    }

    fn broadcast(&mut self, from: usize, wire: Wire) {
        for to in 0..self.nodes.len() {
            if to != from {
                self.send(from, to, wire.clone());
            }
        }
    }

    /// Carries out node i's effects until its core has none left.
    fn drive(&mut self, i: usize) {
        loop {
            let effects = match self.nodes[i].core.as_mut() {
                Some(core) => core.poll_effects(),
                None => return,
            };
            if effects.is_empty() {
                return;
            }
            for e in effects {
                self.apply(i, e);
            }
        }
    }

    fn apply(&mut self, i: usize, effect: Effect<TestValue>) {
        let now = self.now;
        let behaviour = self.nodes[i].behaviour;
        let validator = self.nodes[i].validator;
        match effect {
            Effect::Persist(entry) => {
                if behaviour.is_honest() {
                    self.check_signing(&entry);
                    if now < self.model.workload_starts_ms {
                        self.votes_while_idle += 1;
                    }
                }
                self.nodes[i].wal.push(entry);
            }
            Effect::Broadcast(msg) => self.byzantine_broadcast(i, msg),
            Effect::SendTo(peer, msg) => {
                if let Some(v) = self.set.index_of(&peer) {
                    for to in self.nodes_of(v, i) {
                        self.send(i, to, Wire::Consensus(msg.clone()));
                    }
                }
            }
            Effect::ScheduleTimeout { timeout, at_ms } => {
                let incarnation = self.nodes[i].incarnation;
                self.push(
                    at_ms.max(now),
                    Event::Timer {
                        node: i,
                        incarnation,
                        timeout,
                    },
                );
            }
            Effect::BuildValue { height, round, .. } => {
                let value = TestValue {
                    height,
                    round,
                    proposer: validator,
                    salt: self.rng.next_u64(),
                    valid: true,
                };
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_value_built(now, height, round, value);
                }
            }
            Effect::ValidateValue { height, value, .. } => {
                let ok = value.valid && value.height == height;
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_value_validity(now, height, value.id(), ok);
                }
            }
            Effect::RequestBlock { peer, height } => {
                if let Some(v) = self.set.index_of(&peer) {
                    for to in self.nodes_of(v, i) {
                        self.send(i, to, Wire::BlockRequest(height));
                    }
                }
            }
            Effect::Decide { value, certificate } => self.on_decide(i, value, certificate),
            Effect::Evidence(ev) => {
                self.check_evidence(&ev);
                self.nodes[i].evidence += 1;
            }
        }
    }

    fn on_decide(&mut self, i: usize, value: TestValue, cert: CommitCertificate) {
        let node = &self.nodes[i];
        let expected = START_HEIGHT + node.store.len() as u64;
        if cert.height != expected {
            self.fail(format!(
                "node {i} decided height {} but its next height is {expected}",
                cert.height
            ));
            return;
        }
        let id = value.id();
        let key = Hash::of(&crate::codec::encode(&cert));
        if cert.chain_id != CHAIN || cert.height != expected || cert.block_hash != id {
            self.fail(format!(
                "node {i} decided a certificate for something else: {cert:?}"
            ));
            return;
        }
        if !self.checked.contains(&key) {
            if let Err(e) = cert.verify(&self.set, CHAIN, cert.height, &id) {
                self.fail(format!(
                    "node {i} decided height {} with a bad certificate: {e}",
                    cert.height
                ));
                return;
            }
            self.checked.insert(key);
        }
        if node.behaviour.is_honest() {
            match self.committed.get(&cert.height) {
                Some(other) if *other != id => {
                    let reason = format!(
                        "SAFETY: node {i} decided {} at height {}, another honest node decided {}",
                        id.short(),
                        cert.height,
                        other.short()
                    );
                    self.fail(reason);
                    return;
                }
                Some(_) => {}
                None => {
                    self.committed.insert(cert.height, id);
                }
            }
        }
        let node = &mut self.nodes[i];
        node.wal.retain(|e| e.height() > cert.height);
        node.store.push((value, cert));
        let incarnation = node.incarnation;
        self.push(self.now + 1, Event::Mempool(i, incarnation));
    }

    /// An honest validator never signs two different messages for one slot.
    fn check_signing(&mut self, entry: &WalEntry<TestValue>) {
        let (v, h, r, k, value) = match entry {
            WalEntry::Proposal(sp) => {
                let p = &sp.proposal;
                (p.proposer, p.height, p.round, 0u8, Some(p.value.id()))
            }
            WalEntry::Vote { vote, .. } => {
                let v = vote.vote;
                let k = match v.kind {
                    VoteKind::Prevote => 1,
                    VoteKind::Precommit => 2,
                };
                (v.validator, v.height, v.round, k, v.value)
            }
        };
        match self.signed.get(&(v, h, r, k)) {
            Some(prev) if *prev != value => {
                self.fail(format!(
                    "SAFETY: honest validator {v} signed two different messages (kind {k}) at height {h} round {r}"
                ));
            }
            Some(_) => {}
            None => {
                self.signed.insert((v, h, r, k), value);
            }
        }
    }

    fn check_evidence(&mut self, ev: &Evidence<TestValue>) {
        let key = match ev {
            Evidence::ConflictingVotes { first, second } => {
                Hash::of(&crate::codec::encode(&(first, second)))
            }
            Evidence::ConflictingProposals { first, second } => {
                Hash::of(&crate::codec::encode(&(first, second)))
            }
        };
        if !self.checked.insert(key) {
            return;
        }
        let ok = match ev {
            Evidence::ConflictingVotes { first, second } => {
                let (a, b) = (first.vote, second.vote);
                a.validator == b.validator
                    && a.height == b.height
                    && a.round == b.round
                    && a.kind == b.kind
                    && a.value != b.value
                    && self.verify_vote(first.as_ref())
                    && self.verify_vote(second.as_ref())
            }
            Evidence::ConflictingProposals { first, second } => {
                first.proposal.proposer == second.proposal.proposer
                    && first.proposal.height == second.proposal.height
                    && first.proposal.round == second.proposal.round
                    && first != second
            }
        };
        let culprit = match ev {
            Evidence::ConflictingVotes { first, .. } => first.vote.validator,
            Evidence::ConflictingProposals { first, .. } => first.proposal.proposer,
        };
        let culprit_honest = self
            .nodes
            .iter()
            .filter(|n| n.validator == culprit)
            .all(|n| n.behaviour.is_honest());
        if !ok || culprit_honest {
            self.fail(format!(
                "bogus evidence against validator {culprit}: {ev:?}"
            ));
        }
    }

    fn verify_vote(&self, sv: &SignedVote) -> bool {
        self.set
            .get(sv.vote.validator)
            .is_some_and(|id| id.verify(&sv.vote.sign_bytes(CHAIN), &sv.signature))
    }

    fn sign_vote(&self, vote: Vote) -> SignedVote {
        SignedVote {
            vote,
            signature: self.keys[vote.validator as usize].sign(&vote.sign_bytes(CHAIN)),
        }
    }

    fn sign_proposal(&self, proposal: Proposal<TestValue>) -> SignedProposal<TestValue> {
        let signature = self.keys[proposal.proposer as usize].sign(&proposal.sign_bytes(CHAIN));
        SignedProposal {
            proposal,
            signature,
        }
    }

    /// Sends node i's broadcast, twisted by its behaviour.
    fn byzantine_broadcast(&mut self, i: usize, msg: Message<TestValue>) {
        let behaviour = self.nodes[i].behaviour;
        match (behaviour, msg) {
            (Behaviour::EquivocatingProposer, Message::Proposal(sp)) => {
                let mut other = sp.proposal.clone();
                other.value.salt = other.value.salt.wrapping_add(1);
                let alt = self.sign_proposal(other);
                let split = self.rng.below(self.nodes.len() as u64) as usize;
                for to in 0..self.nodes.len() {
                    if to == i {
                        continue;
                    }
                    let m = if to < split { &alt } else { &sp };
                    self.send(i, to, Wire::Consensus(Message::Proposal(m.clone())));
                    if self.rng.chance(300) {
                        let m = if to < split { &sp } else { &alt };
                        self.send(i, to, Wire::Consensus(Message::Proposal(m.clone())));
                    }
                }
            }
            (Behaviour::DoubleVoter, Message::Vote(sv))
                if sv.vote.validator == self.nodes[i].validator =>
            {
                let alt = match self.alt_votes.get(&sv.vote) {
                    Some(a) => *a,
                    None => {
                        let mut other = sv.vote;
                        other.value = match other.value {
                            Some(_) if self.rng.chance(500) => None,
                            _ => Some(Hash::of(&self.rng.next_u64().to_be_bytes())),
                        };
                        let a = self.sign_vote(other);
                        self.alt_votes.insert(sv.vote, a);
                        a
                    }
                };
                for to in 0..self.nodes.len() {
                    if to == i {
                        continue;
                    }
                    let (a, b) = if self.rng.chance(500) {
                        (sv, alt)
                    } else {
                        (alt, sv)
                    };
                    self.send(i, to, Wire::Consensus(Message::Vote(a)));
                    self.send(i, to, Wire::Consensus(Message::Vote(b)));
                }
            }
            (Behaviour::Garbage, msg) => {
                self.broadcast(i, Wire::Consensus(msg.clone()));
                if self.rng.chance(300) {
                    let junk = self.garbage(i, &msg);
                    self.broadcast(i, Wire::Consensus(junk));
                }
            }
            (_, msg) => self.broadcast(i, Wire::Consensus(msg)),
        }
    }

    fn garbage(&mut self, i: usize, msg: &Message<TestValue>) -> Message<TestValue> {
        let v = self.nodes[i].validator;
        let (height, round) = match msg {
            Message::Proposal(sp) => (sp.proposal.height, sp.proposal.round),
            Message::Vote(sv) => (sv.vote.height, sv.vote.round),
            Message::Status(s) => (s.height, 0),
        };
        let vote = Vote {
            kind: if self.rng.chance(500) {
                VoteKind::Prevote
            } else {
                VoteKind::Precommit
            },
            height,
            round,
            value: Some(Hash::of(&self.rng.next_u64().to_be_bytes())),
            validator: v,
        };
        match self.rng.below(7) {
            0 => {
                // Bad signature.
                let mut sv = self.sign_vote(vote);
                sv.signature.0[5] ^= 0x40;
                Message::Vote(sv)
            }
            1 => {
                // Claims another validator's slot with its own signature.
                let mut sv = self.sign_vote(vote);
                sv.vote.validator = (v + 1) % self.model.n as u16;
                Message::Vote(sv)
            }
            2 => {
                // Not a validator index at all.
                let mut sv = self.sign_vote(vote);
                sv.vote.validator = u16::MAX;
                Message::Vote(sv)
            }
            3 => Message::Vote(self.sign_vote(Vote {
                height: height + 1000,
                ..vote
            })),
            4 => Message::Vote(self.sign_vote(Vote {
                round: round + 10_000,
                ..vote
            })),
            5 => {
                // An invalid value, properly signed (it may even be our turn).
                let p = Proposal {
                    height,
                    round,
                    valid_round: None,
                    value: TestValue {
                        height,
                        round,
                        proposer: v,
                        salt: self.rng.next_u64(),
                        valid: false,
                    },
                    proposer: v,
                };
                Message::Proposal(self.sign_proposal(p))
            }
            _ => Message::Status(Status {
                height: height + self.rng.range(0, 3),
            }),
        }
    }
}

/// Summary of many seeds of one model.
#[derive(Debug, Clone, Default)]
pub struct SeedSummary {
    /// Seeds run.
    pub seeds: u64,
    /// Worst liveness after GST, and its seed.
    pub worst_liveness_ms: (u64, u64),
    /// Mean liveness after GST.
    pub mean_liveness_ms: u64,
    /// Evidence reported by honest validators, all seeds.
    pub evidence: u64,
    /// Rejected inputs at honest validators, all seeds.
    pub rejected: u64,
    /// Heights applied from fetched blocks, all seeds.
    pub fetched: u64,
    /// Lowest decided height over all seeds.
    pub min_heights: u64,
    /// Honest votes signed while all mempools were empty, all seeds.
    pub votes_while_idle: u64,
}

/// Seeds to run: `SEED=s` runs exactly s; otherwise `SIM_SEEDS` (default
/// `default_count`) seeds from `SIM_SEED_BASE` (default 0).
pub fn seeds_from_env(default_count: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_count);
    let base: u64 = std::env::var("SIM_SEED_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (base..base + count).collect()
}

/// Runs `model` for each seed; returns the first failure.
pub fn run_seeds(model: &FaultModel, seeds: &[u64]) -> Result<SeedSummary, SimFailure> {
    let mut s = SeedSummary {
        min_heights: u64::MAX,
        ..SeedSummary::default()
    };
    let mut total = 0u64;
    for &seed in seeds {
        let r = Sim::new(model.clone(), seed).run()?;
        s.seeds += 1;
        total += r.liveness_after_gst_ms;
        if r.liveness_after_gst_ms >= s.worst_liveness_ms.0 {
            s.worst_liveness_ms = (r.liveness_after_gst_ms, seed);
        }
        s.evidence += r.evidence;
        s.rejected += r.rejected;
        s.fetched += r.fetched;
        s.votes_while_idle += r.votes_while_idle;
        s.min_heights = s.min_heights.min(r.heights);
    }
    s.mean_liveness_ms = total.checked_div(s.seeds).unwrap_or(0);
    Ok(s)
}
