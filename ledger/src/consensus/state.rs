//! The Tendermint state machine (Buchman, Kwon, Milosevic, "The latest gossip
//! on BFT consensus", arXiv:1807.04938, Algorithm 1). Comments `// L22` name
//! the line of Algorithm 1 a branch implements.
//!
//! Shape borrowed from Malachite's `core-state-machine` and quinn-proto: every
//! input is a `handle_*` call with the current time; the core appends
//! [`Effect`]s that the driver drains with [`Consensus::poll_effects`] and
//! carries out in order. After each input the "upon" rules of Algorithm 1 are
//! re-evaluated until none fires.
//!
//! Additions the paper leaves to its gossip layer, and why:
//! - A periodic [`TimeoutKind::Tick`] rebroadcasts this validator's own
//!   proposal and votes of the current (and previous) round and its
//!   [`Status`]: messages lost before GST are otherwise never delivered, and
//!   Algorithm 1 assumes they eventually are.
//! - A proposal that re-proposes `validValue` (L16) is followed by the
//!   proposer's stored prevotes for it from `validRound` (Tendermint's
//!   "proof of lock"), so that receivers can satisfy L28.
//! - Catch-up: a validator that learns (from [`Status`], votes or a precommit
//!   quorum for a value it never received) that a height was decided fetches
//!   the block and its [`CommitCertificate`] and applies it after verifying.
//! - L55 counts, per validator, the highest round it was seen in; f+1
//!   validators seen at rounds >= R mean an honest one reached R. Round
//!   changes never affect safety, only liveness.
//!
//! Batching and idle chains: the proposer asks the driver to build a block as
//! soon as the mempool holds a full block, or `batch_timeout_ms` after it
//! first saw any transaction. With `empty_blocks` off and an empty mempool
//! the proposer waits, and — so that an idle chain does not spin through
//! rounds — no validator starts `timeoutPropose` in round 0 until it knows
//! there is work: its own mempool is non-empty, or another validator sent a
//! message for this round (which it only does after timing out or seeing a
//! proposal). Rounds > 0 always run timers. `timeoutPropose` includes the
//! batch wait so a batching proposer is not mistaken for a faulty one.

use std::collections::{BTreeMap, HashMap};

use federact_config::{NodeId, NodeKey};

use crate::cert::{CommitCertificate, ValidatorSet, VoteKind};
use crate::hash::Hash;

use super::types::{
    ConsensusParams, ConsensusValue, Effect, Evidence, Message, Proposal, Rejection,
    SignedProposal, SignedVote, Stats, Status, Step, Timeout, TimeoutKind, Vote, WalEntry,
};

/// Proposals kept per round: the first, and one conflicting one (evidence).
const PROPOSALS_PER_ROUND_MAX: usize = 2;
/// Conflicting votes kept per validator, kind and round.
const EXTRA_VOTES_MAX: usize = 3;
/// Upper bound on rule evaluations per input (each firing changes state
/// monotonically, so this is never reached; it guards against a bug
/// turning into a hang).
const RULE_ITERATIONS_MAX: usize = 10_000;

/// The key given to [`Consensus::new`] is not in the validator set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {0} is not a validator of this chain")]
pub struct NotAValidator(pub Box<NodeId>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validity {
    Pending,
    Valid,
    Invalid,
}

/// One validator's votes of one kind in one round: the first, and a few
/// conflicting ones. Like the paper (which counts every message received) a
/// quorum for a value may count an equivocator's vote for it: otherwise a
/// Byzantine validator could hide a proof of lock from some honest
/// validators forever by showing them another vote first (Tendermint Core's
/// `SetPeerMaj23` solves the same problem). Safety is unaffected: a quorum
/// still holds a majority of the honest validators. Memory stays bounded:
/// at most [`EXTRA_VOTES_MAX`] conflicting votes, and when full, a vote for
/// nil or for a proposed value replaces one for a value nobody proposed.
#[derive(Debug, Clone, Default)]
struct Slot {
    first: Option<SignedVote>,
    extra: Vec<SignedVote>,
    reported: bool,
}

impl Slot {
    fn iter(&self) -> impl Iterator<Item = &SignedVote> {
        self.first.iter().chain(self.extra.iter())
    }
    fn voted_for(&self, value: Option<&Hash>) -> Option<&SignedVote> {
        self.iter().find(|v| v.vote.value.as_ref() == value)
    }
}

/// What one round of the current height has received.
#[derive(Debug)]
struct RoundState<V> {
    /// (value id, proposal): ids cached, a block id is a hash.
    proposals: Vec<(Hash, SignedProposal<V>)>,
    prevotes: Vec<Slot>,
    precommits: Vec<Slot>,
    /// L34 has scheduled `timeoutPrevote`.
    prevote_timer: bool,
    /// L47 has scheduled `timeoutPrecommit`.
    precommit_timer: bool,
    /// L36 has fired.
    l36_done: bool,
    /// The proposal from the proposer has been reported as conflicting.
    proposal_equivocated: bool,
}

impl<V> RoundState<V> {
    fn new(n: usize) -> Self {
        RoundState {
            proposals: Vec::new(),
            prevotes: vec![Slot::default(); n],
            precommits: vec![Slot::default(); n],
            prevote_timer: false,
            precommit_timer: false,
            l36_done: false,
            proposal_equivocated: false,
        }
    }

    fn votes(&self, kind: VoteKind) -> &[Slot] {
        match kind {
            VoteKind::Prevote => &self.prevotes,
            VoteKind::Precommit => &self.precommits,
        }
    }

    fn votes_mut(&mut self, kind: VoteKind) -> &mut Vec<Slot> {
        match kind {
            VoteKind::Prevote => &mut self.prevotes,
            VoteKind::Precommit => &mut self.precommits,
        }
    }

    /// Votes of `kind` for exactly `value` (`None` = nil).
    fn count(&self, kind: VoteKind, value: Option<&Hash>) -> usize {
        self.votes(kind)
            .iter()
            .filter(|s| s.voted_for(value).is_some())
            .count()
    }

    /// Votes of `kind` for anything.
    fn count_any(&self, kind: VoteKind) -> usize {
        self.votes(kind)
            .iter()
            .filter(|s| s.first.is_some())
            .count()
    }
}

fn kind_index(kind: VoteKind) -> usize {
    match kind {
        VoteKind::Prevote => 0,
        VoteKind::Precommit => 1,
    }
}

/// One validator's Tendermint state machine for one chain.
///
/// Drive it with the `handle_*` methods (each takes the current time in ms
/// from the driver's clock), then drain [`poll_effects`](Self::poll_effects)
/// and carry the effects out in order. The persistence contract is raft-rs's:
/// an [`Effect::Persist`] must be durable before any later effect of the
/// same batch is carried out (the sends after it carry what it records).
#[derive(Debug)]
pub struct Consensus<V> {
    chain_id: String,
    set: ValidatorSet,
    key: NodeKey,
    me: u16,
    params: ConsensusParams,

    // Algorithm 1 state.
    height: u64,
    round: u32,
    step: Step,
    locked: Option<(u32, V)>,
    valid: Option<(u32, V)>,

    // Per-height message state.
    rounds: BTreeMap<u32, RoundState<V>>,
    validity: HashMap<Hash, Validity>,
    own_votes: HashMap<(u32, VoteKind), SignedVote>,
    own_proposals: BTreeMap<u32, SignedProposal<V>>,
    /// Highest round each validator was seen in at this height (L55).
    seen_round: Vec<Option<u32>>,

    // Proposer and batching.
    awaiting_value: bool,
    build_requested: bool,
    batch_started_ms: Option<u64>,
    propose_timer_deferred: bool,
    txs_count: u64,
    txs_bytes: u64,

    // Next-height buffer, catch-up.
    future: Vec<(u16, Message<V>)>,
    future_per_peer: Vec<usize>,
    peer_heights: Vec<u64>,
    catch_up: Option<(u64, u64)>,
    catch_up_next: usize,

    effects: Vec<Effect<V>>,
    stats: Stats,
}

impl<V: ConsensusValue> Consensus<V> {
    /// A validator for `chain_id` starting at `height` (the first height not
    /// yet in its store). `wal` is what it persisted before a restart (entries
    /// for other heights are ignored); pass an empty `Vec` on first start.
    /// The first effects (timers, maybe a build request) are ready at once.
    pub fn new(
        chain_id: impl Into<String>,
        set: ValidatorSet,
        key: NodeKey,
        params: ConsensusParams,
        height: u64,
        wal: Vec<WalEntry<V>>,
        now_ms: u64,
    ) -> Result<Self, NotAValidator> {
        let me = set
            .index_of(&key.id())
            .ok_or_else(|| NotAValidator(Box::new(key.id())))?;
        let n = set.len();
        let mut c = Consensus {
            chain_id: chain_id.into(),
            set,
            key,
            me,
            params,
            height,
            round: 0,
            step: Step::Propose,
            locked: None,
            valid: None,
            rounds: BTreeMap::new(),
            validity: HashMap::new(),
            own_votes: HashMap::new(),
            own_proposals: BTreeMap::new(),
            seen_round: vec![None; n],
            awaiting_value: false,
            build_requested: false,
            batch_started_ms: None,
            propose_timer_deferred: false,
            txs_count: 0,
            txs_bytes: 0,
            future: Vec::new(),
            future_per_peer: vec![0; n],
            peer_heights: vec![0; n],
            catch_up: None,
            catch_up_next: 0,
            effects: Vec::new(),
            stats: Stats::default(),
        };
        let start_round = c.restore(wal);
        c.schedule(
            Timeout {
                height,
                round: 0,
                kind: TimeoutKind::Tick,
            },
            now_ms.saturating_add(c.params.tick_ms),
        );
        c.start_round(start_round, now_ms);
        // Resume at the step the WAL shows, so no rule re-fires for a step
        // already taken (the signing guard would stop a second signature
        // anyway, but not the state change that goes with it).
        if c.own_votes
            .contains_key(&(start_round, VoteKind::Precommit))
        {
            c.step = Step::Precommit;
        } else if c.own_votes.contains_key(&(start_round, VoteKind::Prevote)) {
            c.step = Step::Prevote;
        }
        c.process(now_ms);
        Ok(c)
    }

    /// Loads own messages of the current height; returns the round to resume.
    fn restore(&mut self, wal: Vec<WalEntry<V>>) -> u32 {
        let mut round = 0;
        for entry in wal {
            if entry.height() != self.height {
                continue;
            }
            match entry {
                WalEntry::Proposal(sp) => {
                    let r = sp.proposal.round;
                    round = round.max(r);
                    let id = sp.proposal.value.id();
                    self.validity.insert(id, Validity::Valid);
                    let n = self.set.len();
                    let rs = self.rounds.entry(r).or_insert_with(|| RoundState::new(n));
                    if rs.proposals.is_empty() {
                        rs.proposals.push((id, sp.clone()));
                    }
                    self.own_proposals.insert(r, sp);
                }
                WalEntry::Vote { vote, locked_value } => {
                    let v = vote.vote;
                    if v.validator != self.me {
                        continue;
                    }
                    round = round.max(v.round);
                    let n = self.set.len();
                    let rs = self
                        .rounds
                        .entry(v.round)
                        .or_insert_with(|| RoundState::new(n));
                    if let Some(slot) = rs.votes_mut(v.kind).get_mut(self.me as usize) {
                        slot.first = Some(vote);
                    }
                    self.own_votes.insert((v.round, v.kind), vote);
                    // L38: the lock is the value of the highest-round
                    // non-nil precommit.
                    if let (VoteKind::Precommit, Some(id), Some(value)) =
                        (v.kind, v.value, locked_value)
                    {
                        if value.id() == id
                            && self.locked.as_ref().is_none_or(|(lr, _)| *lr < v.round)
                        {
                            self.validity.insert(id, Validity::Valid);
                            self.locked = Some((v.round, value.clone()));
                            self.valid = Some((v.round, value));
                        }
                    }
                }
            }
        }
        if let Some(s) = self.seen_round.get_mut(self.me as usize) {
            *s = Some(round);
        }
        round
    }

    // ----- accessors -------------------------------------------------------

    /// The height being decided.
    pub fn height(&self) -> u64 {
        self.height
    }
    /// The current round.
    pub fn round(&self) -> u32 {
        self.round
    }
    /// The current step.
    pub fn step(&self) -> Step {
        self.step
    }
    /// (lockedRound, lockedValue id), if locked.
    pub fn locked(&self) -> Option<(u32, Hash)> {
        self.locked.as_ref().map(|(r, v)| (*r, v.id()))
    }
    /// (validRound, validValue id), if any.
    pub fn valid(&self) -> Option<(u32, Hash)> {
        self.valid.as_ref().map(|(r, v)| (*r, v.id()))
    }
    /// This validator's index in the set.
    pub fn index(&self) -> u16 {
        self.me
    }
    /// The validator set.
    pub fn validator_set(&self) -> &ValidatorSet {
        &self.set
    }
    /// The chain id.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }
    /// Counters of accepted and rejected inputs.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A one-line-per-round description of the current height's state, for
    /// logs and simulator failure reports.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "h={} r={} step={:?} locked={:?} valid={:?} awaiting={} build_req={} deferred={} txs={} peers={:?} seen={:?}",
            self.height,
            self.round,
            self.step,
            self.locked().map(|(r, h)| (r, h.short())),
            self.valid().map(|(r, h)| (r, h.short())),
            self.awaiting_value,
            self.build_requested,
            self.propose_timer_deferred,
            self.txs_count,
            self.peer_heights,
            self.seen_round,
        );
        let short = |s: &Slot| {
            let one = |v: &SignedVote| v.vote.value.map_or("nil".to_string(), |h| h.short());
            let all: Vec<String> = s.iter().map(one).collect();
            if all.is_empty() {
                "-".to_string()
            } else {
                all.join("|")
            }
        };
        for (r, rs) in &self.rounds {
            let props: Vec<String> = rs
                .proposals
                .iter()
                .map(|(id, p)| {
                    format!(
                        "{}/{:?}/{:?}",
                        id.short(),
                        p.proposal.valid_round,
                        self.validity.get(id)
                    )
                })
                .collect();
            let pv: Vec<String> = rs.prevotes.iter().map(short).collect();
            let pc: Vec<String> = rs.precommits.iter().map(short).collect();
            out.push_str(&format!(
                "\n  r{r}: proposals {props:?} prevotes {pv:?} precommits {pc:?}"
            ));
        }
        out
    }

    /// Drains the effects produced so far, in the order they must be done.
    pub fn poll_effects(&mut self) -> Vec<Effect<V>> {
        std::mem::take(&mut self.effects)
    }

    // ----- inputs ----------------------------------------------------------

    /// A message from validator `from` (authenticated by the transport).
    pub fn handle_message(&mut self, now_ms: u64, from: &NodeId, msg: Message<V>) {
        let Some(from) = self.set.index_of(from) else {
            self.stats.count(Rejection::NotValidator);
            return;
        };
        self.on_message(now_ms, from, msg);
        self.process(now_ms);
    }

    /// A timer scheduled with [`Effect::ScheduleTimeout`] fired.
    pub fn handle_timeout(&mut self, now_ms: u64, timeout: Timeout) {
        if timeout.height != self.height {
            return;
        }
        let current = timeout.round == self.round;
        match timeout.kind {
            TimeoutKind::Propose if current && self.step == Step::Propose => {
                // L57
                self.cast_vote(VoteKind::Prevote, None, None);
                self.step = Step::Prevote;
            }
            TimeoutKind::Prevote if current && self.step == Step::Prevote => {
                // L61
                self.cast_vote(VoteKind::Precommit, None, None);
                self.step = Step::Precommit;
            }
            TimeoutKind::Precommit if current => {
                // L65
                self.start_round(self.round.saturating_add(1), now_ms);
            }
            TimeoutKind::Batch if current => self.maybe_build(now_ms),
            TimeoutKind::Tick => self.on_tick(now_ms),
            _ => {}
        }
        self.process(now_ms);
    }

    /// The mempool now holds `count` transactions of `bytes` encoded bytes.
    /// Call after every change that matters and after carrying out a Decide.
    pub fn handle_txs_available(&mut self, now_ms: u64, count: u64, bytes: u64) {
        self.txs_count = count;
        self.txs_bytes = bytes;
        if count > 0 && self.propose_timer_deferred {
            self.start_propose_timer(now_ms);
        }
        self.maybe_build(now_ms);
        self.process(now_ms);
    }

    /// The driver built the value asked for by [`Effect::BuildValue`].
    pub fn handle_value_built(&mut self, now_ms: u64, height: u64, round: u32, value: V) {
        if height != self.height || round != self.round || !self.build_requested {
            self.stats.count(Rejection::Unexpected);
            return;
        }
        self.build_requested = false;
        self.awaiting_value = false;
        self.propose(value, None); // L19
        self.process(now_ms);
    }

    /// The application's verdict on a value asked for by
    /// [`Effect::ValidateValue`] (the paper's `valid(v)`).
    pub fn handle_value_validity(&mut self, now_ms: u64, height: u64, value_id: Hash, valid: bool) {
        if height != self.height {
            self.stats.count(Rejection::Unexpected);
            return;
        }
        match self.validity.get_mut(&value_id) {
            Some(v @ Validity::Pending) => {
                *v = if valid {
                    Validity::Valid
                } else {
                    Validity::Invalid
                };
            }
            _ => self.stats.count(Rejection::Unexpected),
        }
        self.process(now_ms);
    }

    /// A decided value and its certificate fetched from a peer (catch-up).
    /// Applied only for the current height and only if the certificate
    /// verifies against this chain's validator set.
    pub fn handle_block_fetched(&mut self, now_ms: u64, value: V, certificate: CommitCertificate) {
        if certificate.height < self.height {
            self.stats.count(Rejection::StaleHeight);
            return;
        }
        if certificate.height > self.height {
            self.stats.count(Rejection::Unexpected);
            return;
        }
        let id = value.id();
        if certificate
            .verify(&self.set, &self.chain_id, self.height, &id)
            .is_err()
        {
            self.stats.count(Rejection::BadCertificate);
            return;
        }
        self.stats.fetched += 1;
        self.decide(value, certificate, now_ms);
        self.maybe_catch_up(now_ms, false);
        self.process(now_ms);
    }

    // ----- message intake --------------------------------------------------

    fn on_message(&mut self, now_ms: u64, from: u16, msg: Message<V>) {
        match msg {
            Message::Status(Status { height }) => {
                self.note_peer_height(from, height);
                if height > self.height.saturating_add(1) {
                    self.maybe_catch_up(now_ms, false);
                } else if height < self.height {
                    // Tell a laggard where we are so it fetches blocks (at
                    // most one reply per status it sends, i.e. per its tick).
                    if let Some(peer) = self.set.get(from).copied() {
                        self.effects.push(Effect::SendTo(
                            peer,
                            Message::Status(Status {
                                height: self.height,
                            }),
                        ));
                    }
                }
            }
            Message::Vote(sv) => {
                let h = sv.vote.height;
                if self.admit_height(now_ms, from, h, Message::Vote(sv)) {
                    self.on_vote(sv);
                }
            }
            Message::Proposal(sp) => {
                let h = sp.proposal.height;
                // Move only the small part into the buffer check; the value is
                // handed over whole either way.
                if h == self.height {
                    self.on_proposal(sp);
                } else {
                    self.admit_height(now_ms, from, h, Message::Proposal(sp));
                }
            }
        }
    }

    fn note_peer_height(&mut self, from: u16, height: u64) {
        if let Some(h) = self.peer_heights.get_mut(from as usize) {
            *h = (*h).max(height);
        }
    }

    /// True if `h` is the current height; otherwise buffers (next height),
    /// or counts and drops it.
    fn admit_height(&mut self, now_ms: u64, from: u16, h: u64, msg: Message<V>) -> bool {
        if h == self.height {
            return true;
        }
        if h < self.height {
            self.stats.count(Rejection::StaleHeight);
            return false;
        }
        self.note_peer_height(from, h);
        if h == self.height.saturating_add(1) {
            let used = self
                .future_per_peer
                .get(from as usize)
                .copied()
                .unwrap_or(0);
            if used >= self.params.future_msgs_per_peer {
                self.stats.count(Rejection::BufferFull);
            } else {
                if let Some(u) = self.future_per_peer.get_mut(from as usize) {
                    *u += 1;
                }
                self.future.push((from, msg));
            }
        } else {
            self.stats.count(Rejection::FarFutureHeight);
            self.maybe_catch_up(now_ms, false);
        }
        false
    }

    fn round_state(&mut self, round: u32) -> &mut RoundState<V> {
        let n = self.set.len();
        self.rounds
            .entry(round)
            .or_insert_with(|| RoundState::new(n))
    }

    fn note_round(&mut self, validator: u16, round: u32) {
        if let Some(s) = self.seen_round.get_mut(validator as usize) {
            *s = Some(s.map_or(round, |r| r.max(round)));
        }
    }

    fn on_vote(&mut self, sv: SignedVote) {
        let v = sv.vote;
        let Some(voter) = self.set.get(v.validator).copied() else {
            self.stats.count(Rejection::NotValidator);
            return;
        };
        if v.validator == self.me {
            self.stats.count(Rejection::OwnEcho);
            return;
        }
        let far = v.round > self.round.saturating_add(self.params.future_rounds_max);
        // Cheap duplicate check before the signature check.
        if !far {
            if let Some(rs) = self.rounds.get(&v.round) {
                if let Some(slot) = rs.votes(v.kind).get(v.validator as usize) {
                    if slot
                        .iter()
                        .any(|e| e.vote == v && e.signature == sv.signature)
                    {
                        self.stats.count(Rejection::Duplicate);
                        return;
                    }
                }
            }
        }
        if !voter.verify(&v.sign_bytes(&self.chain_id), &sv.signature) {
            self.stats.count(Rejection::BadSignature);
            return;
        }
        self.note_round(v.validator, v.round);
        if far {
            self.stats.count(Rejection::FarFutureRound);
            return;
        }
        let relevant =
            |c: &Self, value: Option<Hash>| value.is_none_or(|id| c.validity.contains_key(&id));
        let rs = self.round_state(v.round);
        let Some(slot) = rs.votes_mut(v.kind).get_mut(v.validator as usize) else {
            return;
        };
        let Some(first) = slot.first else {
            slot.first = Some(sv);
            self.stats.votes_accepted += 1;
            return;
        };
        if slot.iter().any(|e| e.vote == v) {
            self.stats.count(Rejection::Duplicate);
            return;
        }
        let report = !slot.reported;
        slot.reported = true;
        let stored = if slot.extra.len() < EXTRA_VOTES_MAX {
            slot.extra.push(sv);
            true
        } else {
            false
        };
        if !stored && relevant(self, v.value) {
            // Replace a vote for a value nobody proposed.
            let junk: Vec<usize> = self
                .rounds
                .get(&v.round)
                .and_then(|rs| rs.votes(v.kind).get(v.validator as usize))
                .map(|slot| {
                    slot.extra
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| !relevant(self, e.vote.value))
                        .map(|(i, _)| i)
                        .collect()
                })
                .unwrap_or_default();
            if let (Some(&i), Some(slot)) = (
                junk.first(),
                self.rounds
                    .get_mut(&v.round)
                    .and_then(|rs| rs.votes_mut(v.kind).get_mut(v.validator as usize)),
            ) {
                if let Some(e) = slot.extra.get_mut(i) {
                    *e = sv;
                }
            }
        }
        if report {
            self.stats.evidence += 1;
            self.effects
                .push(Effect::Evidence(Evidence::ConflictingVotes {
                    first: Box::new(first),
                    second: Box::new(sv),
                }));
        } else {
            self.stats.count(Rejection::Equivocation);
        }
    }

    fn on_proposal(&mut self, sp: SignedProposal<V>) {
        let p = &sp.proposal;
        if p.proposer == self.me {
            self.stats.count(Rejection::OwnEcho);
            return;
        }
        let Some(proposer) = self.set.get(p.proposer).copied() else {
            self.stats.count(Rejection::NotValidator);
            return;
        };
        if self.set.proposer(p.height, p.round) != &proposer {
            self.stats.count(Rejection::WrongProposer);
            return;
        }
        if p.valid_round.is_some_and(|vr| vr >= p.round) {
            self.stats.count(Rejection::Malformed);
            return;
        }
        let far = p.round > self.round.saturating_add(self.params.future_rounds_max);
        if !far {
            if let Some(rs) = self.rounds.get(&p.round) {
                if rs.proposals.iter().any(|(_, q)| q == &sp) {
                    self.stats.count(Rejection::Duplicate);
                    return;
                }
            }
        }
        let id = p.value.id();
        let bytes = super::types::proposal_sign_bytes(
            &self.chain_id,
            p.height,
            p.round,
            p.valid_round,
            &id,
        );
        if !proposer.verify(&bytes, &sp.signature) {
            self.stats.count(Rejection::BadSignature);
            return;
        }
        self.note_round(p.proposer, p.round);
        if far {
            self.stats.count(Rejection::FarFutureRound);
            return;
        }
        let round = p.round;
        let rs = self.round_state(round);
        if let Some((_, first)) = rs.proposals.first().cloned() {
            if rs.proposals.len() >= PROPOSALS_PER_ROUND_MAX || rs.proposal_equivocated {
                self.stats.count(Rejection::Equivocation);
                return;
            }
            rs.proposal_equivocated = true;
            rs.proposals.push((id, sp.clone()));
            self.stats.evidence += 1;
            self.effects
                .push(Effect::Evidence(Evidence::ConflictingProposals {
                    first: Box::new(first),
                    second: Box::new(sp.clone()),
                }));
        } else {
            rs.proposals.push((id, sp.clone()));
        }
        self.stats.proposals_accepted += 1;
        if let std::collections::hash_map::Entry::Vacant(e) = self.validity.entry(id) {
            e.insert(Validity::Pending);
            self.effects.push(Effect::ValidateValue {
                height: self.height,
                round,
                value: sp.proposal.value,
            });
        }
    }

    // ----- Algorithm 1 ------------------------------------------------------

    fn schedule(&mut self, timeout: Timeout, at_ms: u64) {
        self.effects
            .push(Effect::ScheduleTimeout { timeout, at_ms });
    }

    fn timeout(&self, kind: TimeoutKind) -> Timeout {
        Timeout {
            height: self.height,
            round: self.round,
            kind,
        }
    }

    fn is_proposer(&self, round: u32) -> bool {
        self.set.proposer(self.height, round) == &self.key.id()
    }

    /// L11 StartRound(round).
    fn start_round(&mut self, round: u32, now_ms: u64) {
        self.round = round; // L12
        self.step = Step::Propose; // L13
        self.awaiting_value = false;
        self.build_requested = false;
        self.batch_started_ms = None;
        self.propose_timer_deferred = false;
        self.note_round(self.me, round);
        self.round_state(round);
        if self.is_proposer(round) {
            // L14
            if let Some(sp) = self.own_proposals.get(&round).cloned() {
                // Restored from the WAL: send what was signed, never re-sign.
                self.broadcast_proposal(&sp);
            } else if let Some((vr, v)) = self.valid.clone() {
                self.propose(v, Some(vr)); // L15-L16, L19
            } else {
                self.awaiting_value = true; // L18 getValue(): asked of the driver
                self.maybe_build(now_ms);
            }
        }
        // L21 (the proposer runs it too: if it cannot build, it prevotes nil
        // like everyone else instead of holding the round up).
        if self.params.empty_blocks || round > 0 || self.txs_count > 0 {
            self.start_propose_timer(now_ms);
        } else {
            self.propose_timer_deferred = true;
        }
    }

    fn start_propose_timer(&mut self, now_ms: u64) {
        self.propose_timer_deferred = false;
        let at = now_ms.saturating_add(self.params.propose_timeout_ms(self.round));
        self.schedule(self.timeout(TimeoutKind::Propose), at);
    }

    /// Batching: ask for a block when full, or after the batch wait.
    fn maybe_build(&mut self, now_ms: u64) {
        if !self.awaiting_value || self.build_requested {
            return;
        }
        let p = &self.params;
        let full = self.txs_count >= p.block_size_txs as u64 || self.txs_bytes >= p.block_bytes_max;
        let some = self.txs_count > 0 || p.empty_blocks;
        let waited = self
            .batch_started_ms
            .is_some_and(|t| now_ms >= t.saturating_add(p.batch_timeout_ms));
        if full || (some && (waited || p.batch_timeout_ms == 0)) {
            self.build_requested = true;
            self.effects.push(Effect::BuildValue {
                height: self.height,
                round: self.round,
                max_txs: self.params.block_size_txs,
                max_bytes: self.params.block_bytes_max,
            });
        } else if some && self.batch_started_ms.is_none() {
            self.batch_started_ms = Some(now_ms);
            let at = now_ms.saturating_add(self.params.batch_timeout_ms);
            self.schedule(self.timeout(TimeoutKind::Batch), at);
        }
    }

    /// L19: sign, persist, broadcast and record our own proposal.
    fn propose(&mut self, value: V, valid_round: Option<u32>) {
        if self.own_proposals.contains_key(&self.round) {
            return; // never sign two proposals for one round
        }
        let proposal = Proposal {
            height: self.height,
            round: self.round,
            valid_round,
            value,
            proposer: self.me,
        };
        let signature = self.key.sign(&proposal.sign_bytes(&self.chain_id));
        let sp = SignedProposal {
            proposal,
            signature,
        };
        self.effects
            .push(Effect::Persist(WalEntry::Proposal(sp.clone())));
        self.broadcast_proposal(&sp);
        self.validity
            .insert(sp.proposal.value.id(), Validity::Valid);
        let round = self.round;
        self.own_proposals.insert(round, sp.clone());
        let id = sp.proposal.value.id();
        self.round_state(round).proposals.insert(0, (id, sp));
    }

    /// Sends a proposal and, for a re-proposal, its proof of lock.
    fn broadcast_proposal(&mut self, sp: &SignedProposal<V>) {
        self.effects
            .push(Effect::Broadcast(Message::Proposal(sp.clone())));
        if let Some(vr) = sp.proposal.valid_round {
            let id = sp.proposal.value.id();
            let pol: Vec<SignedVote> = self
                .rounds
                .get(&vr)
                .map(|rs| {
                    rs.prevotes
                        .iter()
                        .filter_map(|s| s.voted_for(Some(&id)))
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            for v in pol {
                self.effects.push(Effect::Broadcast(Message::Vote(v)));
            }
        }
    }

    /// Signs, persists, broadcasts and records our vote in the current
    /// round, unless one of that kind was already signed (e.g. before a
    /// restart): never two votes of one kind for one (height, round).
    fn cast_vote(&mut self, kind: VoteKind, value: Option<Hash>, locked_value: Option<V>) {
        let round = self.round;
        if self.own_votes.contains_key(&(round, kind)) {
            return;
        }
        let vote = Vote {
            kind,
            height: self.height,
            round,
            value,
            validator: self.me,
        };
        let sv = SignedVote {
            vote,
            signature: self.key.sign(&vote.sign_bytes(&self.chain_id)),
        };
        self.effects.push(Effect::Persist(WalEntry::Vote {
            vote: sv,
            locked_value,
        }));
        self.effects.push(Effect::Broadcast(Message::Vote(sv)));
        self.own_votes.insert((round, kind), sv);
        let me = self.me as usize;
        if let Some(slot) = self.round_state(round).votes_mut(kind).get_mut(me) {
            slot.first = Some(sv);
        }
    }

    fn validity_of(&self, id: &Hash) -> Option<bool> {
        match self.validity.get(id) {
            Some(Validity::Valid) => Some(true),
            Some(Validity::Invalid) => Some(false),
            _ => None,
        }
    }

    /// Re-evaluates the upon rules until none fires.
    fn process(&mut self, now_ms: u64) {
        for _ in 0..RULE_ITERATIONS_MAX {
            if !self.fire_one_rule(now_ms) {
                return;
            }
        }
    }

    /// Fires at most one rule; true if one fired.
    fn fire_one_rule(&mut self, now_ms: u64) -> bool {
        let quorum = self.set.quorum();
        let round = self.round;

        // L49: a proposal and a precommit quorum for it, in any round.
        let mut decision = None;
        for (r, rs) in &self.rounds {
            for (id, sp) in &rs.proposals {
                let id = *id;
                if rs.count(VoteKind::Precommit, Some(&id)) >= quorum
                    && self.validity_of(&id) == Some(true)
                {
                    decision = Some((*r, sp.proposal.value.clone(), id));
                    break;
                }
            }
            if decision.is_some() {
                break;
            }
        }
        if let Some((r, value, id)) = decision {
            let signatures = self
                .rounds
                .get(&r)
                .map(|rs| {
                    rs.precommits
                        .iter()
                        .filter_map(|s| s.voted_for(Some(&id)))
                        .map(|v| (v.vote.validator, v.signature))
                        .collect()
                })
                .unwrap_or_default();
            let certificate = CommitCertificate {
                chain_id: self.chain_id.clone(),
                height: self.height,
                round: r,
                block_hash: id,
                signatures,
            };
            self.stats.decided += 1;
            self.decide(value, certificate, now_ms); // L51-L54
            return true;
        }

        // L55: f+1 validators seen in rounds above ours.
        let mut ahead: Vec<u32> = self
            .seen_round
            .iter()
            .flatten()
            .copied()
            .filter(|r| *r > round)
            .collect();
        if ahead.len() >= self.set.one_honest() {
            ahead.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(target) = ahead.get(self.set.one_honest() - 1).copied() {
                self.start_round(target, now_ms); // L56
                return true;
            }
        }

        let Some(rs) = self.rounds.get(&round) else {
            return false;
        };

        // Deferred timeoutPropose: another validator is active in this round.
        if self.propose_timer_deferred
            && (rs
                .proposals
                .iter()
                .any(|(_, p)| p.proposal.proposer != self.me)
                || (0..self.set.len()).any(|i| {
                    i != self.me as usize
                        && (rs.prevotes.get(i).is_some_and(|s| s.first.is_some())
                            || rs.precommits.get(i).is_some_and(|s| s.first.is_some()))
                }))
        {
            self.start_propose_timer(now_ms);
            return true;
        }

        if self.step == Step::Propose {
            let mut prevote: Option<Option<Hash>> = None;
            for (id, sp) in &rs.proposals {
                let p = &sp.proposal;
                let id = *id;
                let Some(valid) = self.validity_of(&id) else {
                    continue; // valid(v) not known yet
                };
                let vote_for = match p.valid_round {
                    // L22: a fresh proposal.
                    None => valid && self.locked.as_ref().is_none_or(|(_, lv)| lv.id() == id),
                    // L28: a re-proposal backed by a prevote quorum in vr.
                    Some(vr) => {
                        let pol = self
                            .rounds
                            .get(&vr)
                            .is_some_and(|vrs| vrs.count(VoteKind::Prevote, Some(&id)) >= quorum);
                        if !pol {
                            continue;
                        }
                        valid
                            && self
                                .locked
                                .as_ref()
                                .is_none_or(|(lr, lv)| *lr <= vr || lv.id() == id)
                    }
                };
                prevote = Some(vote_for.then_some(id));
                break;
            }
            if let Some(value) = prevote {
                // L24 / L26 (L30 / L32)
                self.cast_vote(VoteKind::Prevote, value, None);
                self.step = Step::Prevote; // L27 / L33
                return true;
            }
        }

        let Some(rs) = self.rounds.get(&round) else {
            return false;
        };
        // L36: a proposal with a prevote quorum, step >= prevote, first time.
        if self.step >= Step::Prevote && !rs.l36_done {
            let hit = rs.proposals.iter().find_map(|(id, sp)| {
                let id = *id;
                (rs.count(VoteKind::Prevote, Some(&id)) >= quorum
                    && self.validity_of(&id) == Some(true))
                .then(|| (id, sp.proposal.value.clone()))
            });
            if let Some((id, value)) = hit {
                if let Some(rs) = self.rounds.get_mut(&round) {
                    rs.l36_done = true;
                }
                if self.step == Step::Prevote {
                    self.locked = Some((round, value.clone())); // L38-L39
                    self.cast_vote(VoteKind::Precommit, Some(id), Some(value.clone())); // L40
                    self.step = Step::Precommit; // L41
                }
                self.valid = Some((round, value)); // L42-L43
                return true;
            }
        }

        let Some(rs) = self.rounds.get(&round) else {
            return false;
        };

        // L44: a nil prevote quorum.
        if self.step == Step::Prevote && rs.count(VoteKind::Prevote, None) >= quorum {
            self.cast_vote(VoteKind::Precommit, None, None); // L45
            self.step = Step::Precommit; // L46
            return true;
        }

        // L34: any prevote quorum, first time.
        if self.step == Step::Prevote
            && !rs.prevote_timer
            && rs.count_any(VoteKind::Prevote) >= quorum
        {
            if let Some(rs) = self.rounds.get_mut(&round) {
                rs.prevote_timer = true;
            }
            let at = now_ms.saturating_add(self.params.prevote_timeout_ms(round));
            self.schedule(self.timeout(TimeoutKind::Prevote), at); // L35
            return true;
        }

        // L47: any precommit quorum, first time.
        if !rs.precommit_timer && rs.count_any(VoteKind::Precommit) >= quorum {
            if let Some(rs) = self.rounds.get_mut(&round) {
                rs.precommit_timer = true;
            }
            let at = now_ms.saturating_add(self.params.precommit_timeout_ms(round));
            self.schedule(self.timeout(TimeoutKind::Precommit), at); // L48
            return true;
        }
        false
    }

    /// L49-L54: output the decision and start the next height.
    fn decide(&mut self, value: V, certificate: CommitCertificate, now_ms: u64) {
        self.effects.push(Effect::Decide { value, certificate });
        self.height = self.height.saturating_add(1); // L52
                                                     // L53: reset per-height state.
        self.locked = None;
        self.valid = None;
        self.rounds.clear();
        self.validity.clear();
        self.own_votes.clear();
        self.own_proposals.clear();
        self.seen_round.iter_mut().for_each(|s| *s = None);
        // The mempool changes with the decided block; the driver reports it.
        self.txs_count = 0;
        self.txs_bytes = 0;
        self.catch_up = None;
        self.schedule(
            self.timeout_at_height(TimeoutKind::Tick),
            now_ms.saturating_add(self.params.tick_ms),
        );
        self.start_round(0, now_ms); // L54
                                     // Replay what arrived early for this height.
        let future = std::mem::take(&mut self.future);
        self.future_per_peer.iter_mut().for_each(|u| *u = 0);
        for (from, msg) in future {
            self.on_message(now_ms, from, msg);
        }
    }

    fn timeout_at_height(&self, kind: TimeoutKind) -> Timeout {
        Timeout {
            height: self.height,
            round: 0,
            kind,
        }
    }

    /// Retransmission, status and catch-up retry.
    fn on_tick(&mut self, now_ms: u64) {
        self.effects.push(Effect::Broadcast(Message::Status(Status {
            height: self.height,
        })));
        if let Some(sp) = self.own_proposals.get(&self.round).cloned() {
            self.broadcast_proposal(&sp);
        }
        let from_round = self.round.saturating_sub(1);
        let mut own: Vec<SignedVote> = self
            .own_votes
            .iter()
            .filter(|((r, _), _)| *r >= from_round)
            .map(|(_, v)| *v)
            .collect();
        own.sort_by_key(|v| (v.vote.round, kind_index(v.vote.kind)));
        for v in own {
            self.effects.push(Effect::Broadcast(Message::Vote(v)));
        }
        self.maybe_catch_up(now_ms, true);
        self.schedule(
            self.timeout_at_height(TimeoutKind::Tick),
            now_ms.saturating_add(self.params.tick_ms),
        );
    }

    /// Asks a peer for the current height's block if some peer is known to
    /// be past it, or a precommit quorum exists for a value never received.
    fn maybe_catch_up(&mut self, now_ms: u64, on_tick: bool) {
        if let Some((h, at)) = self.catch_up {
            if h == self.height && now_ms < at.saturating_add(self.params.tick_ms) {
                return;
            }
        }
        let mut candidates: Vec<u16> = self
            .peer_heights
            .iter()
            .enumerate()
            .filter(|(i, h)| *i != self.me as usize && **h > self.height)
            .map(|(i, _)| i as u16)
            .collect();
        if candidates.is_empty() && on_tick {
            candidates = self.precommit_quorum_without_value();
        }
        if candidates.is_empty() {
            return;
        }
        let pick = candidates[self.catch_up_next % candidates.len()];
        self.catch_up_next = self.catch_up_next.wrapping_add(1);
        if let Some(peer) = self.set.get(pick).copied() {
            self.catch_up = Some((self.height, now_ms));
            self.effects.push(Effect::RequestBlock {
                peer,
                height: self.height,
            });
        }
    }

    /// Signers of a precommit quorum for a value with no proposal here.
    fn precommit_quorum_without_value(&self) -> Vec<u16> {
        let quorum = self.set.quorum();
        for rs in self.rounds.values() {
            let mut ids: Vec<Hash> = rs
                .precommits
                .iter()
                .flat_map(|s| s.iter())
                .filter_map(|v| v.vote.value)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                if rs.count(VoteKind::Precommit, Some(&id)) >= quorum
                    && !rs.proposals.iter().any(|(pid, _)| *pid == id)
                {
                    return rs
                        .precommits
                        .iter()
                        .filter_map(|s| s.voted_for(Some(&id)))
                        .filter(|v| v.vote.validator != self.me)
                        .map(|v| v.vote.validator)
                        .collect();
                }
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    //! Table-driven tests of each step of Algorithm 1 (Malachite's driver
    //! tests): a case is a description, the inputs, and the effects the last
    //! input must produce, rendered as short strings.

    use super::*;
    use crate::consensus::types::proposal_sign_bytes;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Tv(u64);

    impl ConsensusValue for Tv {
        fn id(&self) -> Hash {
            Hash::of(&self.0.to_be_bytes())
        }
    }

    const CHAIN: &str = "t";

    fn params() -> ConsensusParams {
        ConsensusParams {
            block_size_txs: 4,
            block_bytes_max: 1 << 20,
            batch_timeout_ms: 20,
            empty_blocks: false,
            propose_ms: 100,
            prevote_ms: 50,
            precommit_ms: 50,
            delta_ms: 10,
            tick_ms: 1000,
            future_rounds_max: 8,
            future_msgs_per_peer: 4,
        }
    }

    fn key(i: u16) -> NodeKey {
        NodeKey::from_seed(&[i as u8 + 1; 32])
    }

    /// An input to the core under test (height 1 unless stated).
    #[derive(Debug, Clone)]
    enum In {
        /// Proposal(from, round, value, valid_round).
        P(u16, u32, u64, Option<u32>),
        /// Prevote(from, round, value or nil).
        Pv(u16, u32, Option<u64>),
        /// Precommit(from, round, value or nil).
        Pc(u16, u32, Option<u64>),
        /// A timeout of the current height.
        T(u32, TimeoutKind),
        /// The mempool holds this many transactions.
        Txs(u64),
        /// The driver built a value.
        Built(u32, u64),
        /// The driver's validity verdict.
        Valid(u64, bool),
        /// Advance the clock to this time.
        At(u64),
        /// A raw message from a validator.
        Raw(u16, Message<Tv>),
    }
    use In::*;

    struct H {
        n: u16,
        set: ValidatorSet,
        c: Consensus<Tv>,
        now: u64,
        /// Everything the core asked to persist.
        wal: Vec<WalEntry<Tv>>,
    }

    impl H {
        fn new(n: u16, me: u16, f: u32, p: ConsensusParams, wal: Vec<WalEntry<Tv>>) -> Self {
            let set = ValidatorSet::new((0..n).map(|i| key(i).id()).collect(), f).unwrap();
            let c = Consensus::new(CHAIN, set.clone(), key(me), p, 1, wal, 0).unwrap();
            H {
                n,
                set,
                c,
                now: 0,
                wal: Vec::new(),
            }
        }
        fn n4(me: u16) -> Self {
            H::new(4, me, 1, params(), Vec::new())
        }

        fn vote(kind: VoteKind, from: u16, h: u64, r: u32, v: Option<u64>) -> SignedVote {
            let vote = Vote {
                kind,
                height: h,
                round: r,
                value: v.map(|x| Tv(x).id()),
                validator: from,
            };
            SignedVote {
                vote,
                signature: key(from).sign(&vote.sign_bytes(CHAIN)),
            }
        }

        fn proposal(from: u16, h: u64, r: u32, v: u64, vr: Option<u32>) -> SignedProposal<Tv> {
            let p = Proposal {
                height: h,
                round: r,
                valid_round: vr,
                value: Tv(v),
                proposer: from,
            };
            let signature = key(from).sign(&p.sign_bytes(CHAIN));
            SignedProposal {
                proposal: p,
                signature,
            }
        }

        fn input(&mut self, i: In) -> Vec<String> {
            let now = self.now;
            let from = |v: u16| key(v).id();
            match i {
                P(f, r, v, vr) => {
                    let m = Message::Proposal(H::proposal(f, 1, r, v, vr));
                    self.c.handle_message(now, &from(f), m)
                }
                Pv(f, r, v) => self.c.handle_message(
                    now,
                    &from(f),
                    Message::Vote(H::vote(VoteKind::Prevote, f, 1, r, v)),
                ),
                Pc(f, r, v) => self.c.handle_message(
                    now,
                    &from(f),
                    Message::Vote(H::vote(VoteKind::Precommit, f, 1, r, v)),
                ),
                T(r, kind) => self.c.handle_timeout(
                    now,
                    Timeout {
                        height: self.c.height(),
                        round: r,
                        kind,
                    },
                ),
                Txs(k) => self.c.handle_txs_available(now, k, k * 100),
                Built(r, v) => self.c.handle_value_built(now, self.c.height(), r, Tv(v)),
                Valid(v, ok) => self
                    .c
                    .handle_value_validity(now, self.c.height(), Tv(v).id(), ok),
                At(t) => self.now = t,
                Raw(f, m) => self.c.handle_message(now, &from(f), m),
            }
            let effects = self.c.poll_effects();
            for e in &effects {
                if let Effect::Persist(entry) = e {
                    self.wal.push(entry.clone());
                }
            }
            effects.iter().map(|e| self.show(e)).collect()
        }

        fn run(&mut self, inputs: &[In]) -> Vec<String> {
            let mut last = Vec::new();
            for i in inputs {
                last = self.input(i.clone());
            }
            last
        }

        fn name(&self, id: &Hash) -> String {
            (0..100u64)
                .find(|x| &Tv(*x).id() == id)
                .map_or("?".into(), |x| format!("v{x}"))
        }

        fn vname(&self, v: &Option<Hash>) -> String {
            v.as_ref().map_or("nil".into(), |h| self.name(h))
        }

        fn show(&self, e: &Effect<Tv>) -> String {
            let kind = |k: VoteKind| match k {
                VoteKind::Prevote => "prevote",
                VoteKind::Precommit => "precommit",
            };
            let vr = |v: Option<u32>| v.map_or("-".into(), |r| r.to_string());
            let msg = |m: &Message<Tv>| match m {
                Message::Proposal(sp) => format!(
                    "proposal r{} v{} vr{}",
                    sp.proposal.round,
                    sp.proposal.value.0,
                    vr(sp.proposal.valid_round)
                ),
                Message::Vote(sv) => format!(
                    "{} r{} {} by {}",
                    kind(sv.vote.kind),
                    sv.vote.round,
                    self.vname(&sv.vote.value),
                    sv.vote.validator
                ),
                Message::Status(s) => format!("status h{}", s.height),
            };
            match e {
                Effect::Persist(WalEntry::Proposal(sp)) => format!(
                    "persist proposal r{} v{}",
                    sp.proposal.round, sp.proposal.value.0
                ),
                Effect::Persist(WalEntry::Vote { vote, locked_value }) => format!(
                    "persist {} r{} {}{}",
                    kind(vote.vote.kind),
                    vote.vote.round,
                    self.vname(&vote.vote.value),
                    if locked_value.is_some() {
                        " locked"
                    } else {
                        ""
                    }
                ),
                Effect::Broadcast(m) => format!("broadcast {}", msg(m)),
                Effect::SendTo(p, m) => format!(
                    "send {} to {}",
                    msg(m),
                    self.set.index_of(p).map_or(99, |i| i)
                ),
                Effect::ScheduleTimeout { timeout, at_ms } => format!(
                    "timer {:?} h{} r{} at {}",
                    timeout.kind, timeout.height, timeout.round, at_ms
                ),
                Effect::BuildValue { height, round, .. } => format!("build h{height} r{round}"),
                Effect::ValidateValue { value, .. } => format!("validate v{}", value.0),
                Effect::RequestBlock { peer, height } => format!(
                    "request h{height} from {}",
                    self.set.index_of(peer).map_or(99, |i| i)
                ),
                Effect::Decide { value, certificate } => format!(
                    "decide h{} v{} r{} sigs {}",
                    certificate.height,
                    value.0,
                    certificate.round,
                    certificate.signatures.len()
                ),
                Effect::Evidence(Evidence::ConflictingVotes { first, .. }) => {
                    format!("evidence votes by {}", first.vote.validator)
                }
                Effect::Evidence(Evidence::ConflictingProposals { first, .. }) => {
                    format!("evidence proposals by {}", first.proposal.proposer)
                }
            }
        }
    }

    struct Case {
        desc: &'static str,
        me: u16,
        inputs: Vec<In>,
        expected: Vec<&'static str>,
    }

    /// Validator 0 of 4 (f = 1) at height 1: proposer of round r is
    /// validator (1 + r) % 4, so 0 proposes round 3 only.
    fn cases() -> Vec<Case> {
        use TimeoutKind::*;
        // Locks validator 0 on v1 in round 0 (L36).
        let lock_v1 = || {
            vec![
                Txs(4),
                P(1, 0, 1, None),
                Valid(1, true),
                Pv(1, 0, Some(1)),
                Pv(2, 0, Some(1)),
            ]
        };
        let with = |mut a: Vec<In>, b: Vec<In>| {
            a.extend(b);
            a
        };
        vec![
            Case {
                desc: "L11/L21 idle chain: no timeoutPropose until transactions exist",
                me: 0,
                inputs: vec![At(5)],
                expected: vec![],
            },
            Case {
                desc: "L21 transactions known: timeoutPropose(0) = propose + batch",
                me: 0,
                inputs: vec![At(5), Txs(1)],
                expected: vec!["timer Propose h1 r0 at 125"],
            },
            Case {
                desc: "L21 a peer's message for this round also starts timeoutPropose",
                me: 0,
                inputs: vec![Pv(2, 0, None)],
                expected: vec!["timer Propose h1 r0 at 120"],
            },
            Case {
                desc: "L18 proposer with a full block asks the driver to build",
                me: 1,
                inputs: vec![Txs(4)],
                expected: vec!["timer Propose h1 r0 at 120", "build h1 r0"],
            },
            Case {
                desc: "batching: a partial block waits batch_timeout",
                me: 1,
                inputs: vec![Txs(2)],
                expected: vec!["timer Propose h1 r0 at 120", "timer Batch h1 r0 at 20"],
            },
            Case {
                desc: "batching: the batch timer builds what there is",
                me: 1,
                inputs: vec![Txs(2), At(20), T(0, Batch)],
                expected: vec!["build h1 r0"],
            },
            Case {
                desc: "L19 built value: persist, then broadcast proposal; L22 own prevote",
                me: 1,
                inputs: vec![Txs(4), Built(0, 7)],
                expected: vec![
                    "persist proposal r0 v7",
                    "broadcast proposal r0 v7 vr-",
                    "persist prevote r0 v7",
                    "broadcast prevote r0 v7 by 1",
                ],
            },
            Case {
                desc: "L22 a proposal is validated by the application first",
                me: 0,
                inputs: vec![Txs(4), P(1, 0, 1, None)],
                expected: vec!["validate v1"],
            },
            Case {
                desc: "L24 valid proposal, not locked: prevote it",
                me: 0,
                inputs: vec![Txs(4), P(1, 0, 1, None), Valid(1, true)],
                expected: vec!["persist prevote r0 v1", "broadcast prevote r0 v1 by 0"],
            },
            Case {
                desc: "L26 invalid proposal: prevote nil",
                me: 0,
                inputs: vec![Txs(4), P(1, 0, 1, None), Valid(1, false)],
                expected: vec!["persist prevote r0 nil", "broadcast prevote r0 nil by 0"],
            },
            Case {
                desc: "L36-L43 proposal + 2f+1 prevotes: lock, precommit (value persisted)",
                me: 0,
                inputs: lock_v1(),
                expected: vec![
                    "persist precommit r0 v1 locked",
                    "broadcast precommit r0 v1 by 0",
                ],
            },
            Case {
                desc: "L34 2f+1 prevotes for anything: schedule timeoutPrevote",
                me: 0,
                inputs: vec![
                    Txs(4),
                    T(0, Propose),
                    Pv(1, 0, Some(9)),
                    At(7),
                    Pv(2, 0, None),
                ],
                expected: vec!["timer Prevote h1 r0 at 57"],
            },
            Case {
                desc: "L44 2f+1 nil prevotes: precommit nil",
                me: 0,
                inputs: vec![Txs(4), T(0, Propose), Pv(1, 0, None), Pv(2, 0, None)],
                expected: vec![
                    "persist precommit r0 nil",
                    "broadcast precommit r0 nil by 0",
                ],
            },
            Case {
                desc: "L47 2f+1 precommits for anything: schedule timeoutPrecommit",
                me: 0,
                inputs: vec![
                    Txs(4),
                    T(0, Propose),
                    Pv(1, 0, None),
                    Pv(2, 0, None),
                    Pc(1, 0, Some(9)),
                    Pc(3, 0, None),
                ],
                expected: vec!["timer Precommit h1 r0 at 50"],
            },
            Case {
                desc: "L49 proposal + 2f+1 precommits: decide with a certificate, start h2",
                me: 0,
                inputs: with(lock_v1(), vec![Pc(1, 0, Some(1)), Pc(2, 0, Some(1))]),
                expected: vec!["decide h1 v1 r0 sigs 3", "timer Tick h2 r0 at 1000"],
            },
            Case {
                desc: "L49 decides in any round, even from the propose step",
                me: 0,
                inputs: vec![
                    P(1, 0, 1, None),
                    Pc(1, 0, Some(1)),
                    Pc(2, 0, Some(1)),
                    Pc(3, 0, Some(1)),
                    Valid(1, true),
                ],
                expected: vec!["decide h1 v1 r0 sigs 3", "timer Tick h2 r0 at 1000"],
            },
            Case {
                desc: "L55 f+1 messages of a higher round: skip to it",
                me: 0,
                inputs: vec![Pv(2, 2, None), Pc(3, 2, None)],
                expected: vec!["timer Propose h1 r2 at 140"],
            },
            Case {
                desc: "L55 f messages are not enough",
                me: 0,
                inputs: vec![Txs(4), Pv(2, 2, None), Pc(2, 2, None)],
                expected: vec![],
            },
            Case {
                desc: "L57 timeoutPropose: prevote nil",
                me: 0,
                inputs: vec![Txs(4), T(0, Propose)],
                expected: vec!["persist prevote r0 nil", "broadcast prevote r0 nil by 0"],
            },
            Case {
                desc: "L61 timeoutPrevote: precommit nil",
                me: 0,
                inputs: vec![Txs(4), T(0, Propose), T(0, Prevote)],
                expected: vec![
                    "persist precommit r0 nil",
                    "broadcast precommit r0 nil by 0",
                ],
            },
            Case {
                desc: "L65 timeoutPrecommit: next round, timeoutPropose(1) grows by delta",
                me: 0,
                inputs: vec![Txs(4), At(300), T(0, Precommit)],
                expected: vec!["timer Propose h1 r1 at 430"],
            },
            Case {
                desc: "stale timeouts are ignored",
                me: 0,
                inputs: vec![Txs(4), T(0, Precommit), T(0, Propose), T(0, Precommit)],
                expected: vec![],
            },
            Case {
                desc: "L22 locked on another value: prevote nil",
                me: 0,
                inputs: with(
                    lock_v1(),
                    vec![T(0, Precommit), P(2, 1, 2, None), Valid(2, true)],
                ),
                expected: vec!["persist prevote r1 nil", "broadcast prevote r1 nil by 0"],
            },
            Case {
                desc: "L22 locked on the proposed value: prevote it",
                me: 0,
                inputs: with(lock_v1(), vec![T(0, Precommit), P(2, 1, 1, Some(0))]),
                expected: vec!["persist prevote r1 v1", "broadcast prevote r1 v1 by 0"],
            },
            Case {
                desc: "L28 re-proposal with a proof of lock: prevote (not locked)",
                me: 0,
                inputs: vec![
                    Pv(2, 1, None),
                    Pv(3, 1, None),
                    Pv(1, 0, Some(1)),
                    Pv(2, 0, Some(1)),
                    Pv(3, 0, Some(1)),
                    P(2, 1, 1, Some(0)),
                    Valid(1, true),
                ],
                expected: vec![
                    "persist prevote r1 v1",
                    "broadcast prevote r1 v1 by 0",
                    "timer Prevote h1 r1 at 60",
                ],
            },
            Case {
                desc: "L28 re-proposal without a proof of lock: wait",
                me: 0,
                inputs: vec![
                    Pv(2, 1, None),
                    Pv(3, 1, None),
                    Pv(1, 0, Some(1)),
                    P(2, 1, 1, Some(0)),
                    Valid(1, true),
                ],
                expected: vec![],
            },
            Case {
                desc: "L16 proposer re-proposes validValue with its proof of lock",
                me: 3,
                inputs: vec![
                    Txs(4),
                    P(1, 0, 1, None),
                    Valid(1, true),
                    Pv(1, 0, Some(1)),
                    Pv(2, 0, Some(1)),
                    T(0, Precommit),
                    Pv(0, 1, None),
                    Pv(1, 1, None),
                    T(1, Precommit),
                ],
                expected: vec![
                    "persist proposal r2 v1",
                    "broadcast proposal r2 v1 vr0",
                    "broadcast prevote r0 v1 by 1",
                    "broadcast prevote r0 v1 by 2",
                    "broadcast prevote r0 v1 by 3",
                    "timer Propose h1 r2 at 140",
                    "persist prevote r2 v1",
                    "broadcast prevote r2 v1 by 3",
                ],
            },
            Case {
                desc: "equivocating voter: evidence with both votes, both counted",
                me: 0,
                inputs: vec![Txs(4), Pv(2, 0, Some(1)), Pv(2, 0, Some(2))],
                expected: vec!["evidence votes by 2"],
            },
            Case {
                desc: "equivocating proposer: evidence with both proposals",
                me: 0,
                inputs: vec![Txs(4), P(1, 0, 1, None), Valid(1, false), P(1, 0, 2, None)],
                expected: vec!["evidence proposals by 1", "validate v2"],
            },
            Case {
                desc: "status from a peer two heights ahead: fetch the block",
                me: 0,
                inputs: vec![Raw(2, Message::Status(Status { height: 3 }))],
                expected: vec!["request h1 from 2"],
            },
            Case {
                desc: "status from a peer behind: tell it our height",
                me: 0,
                inputs: vec![
                    P(1, 0, 1, None),
                    Valid(1, true),
                    Pc(1, 0, Some(1)),
                    Pc(2, 0, Some(1)),
                    Pc(3, 0, Some(1)),
                    Raw(2, Message::Status(Status { height: 1 })),
                ],
                expected: vec!["send status h2 to 2"],
            },
            Case {
                desc: "tick: status, own votes again, and catch-up from a peer ahead",
                me: 0,
                inputs: vec![
                    Txs(4),
                    T(0, Propose),
                    Raw(3, Message::Status(Status { height: 2 })),
                    At(1000),
                    T(0, Tick),
                ],
                expected: vec![
                    "broadcast status h1",
                    "broadcast prevote r0 nil by 0",
                    "request h1 from 3",
                    "timer Tick h1 r0 at 2000",
                ],
            },
            Case {
                desc: "tick: a precommit quorum for a value never received is fetched",
                me: 0,
                inputs: vec![
                    Pc(1, 0, Some(5)),
                    Pc(2, 0, Some(5)),
                    Pc(3, 0, Some(5)),
                    At(1000),
                    T(0, Tick),
                ],
                expected: vec![
                    "broadcast status h1",
                    "request h1 from 1",
                    "timer Tick h1 r0 at 2000",
                ],
            },
        ]
    }

    #[test]
    fn algorithm_1_step_by_step() {
        for case in cases() {
            let mut h = H::n4(case.me);
            h.c.poll_effects();
            let got = h.run(&case.inputs);
            assert_eq!(got, case.expected, "case: {}", case.desc);
        }
    }

    /// (description, message from validator 1, counter that must move).
    #[test]
    fn rejections_are_counted_by_reason() {
        let good = H::vote(VoteKind::Prevote, 2, 1, 0, Some(1));
        let mut bad_sig = good;
        bad_sig.signature.0[0] ^= 1;
        let mut not_validator = good;
        not_validator.vote.validator = 9;
        let mut wrong_chain = good;
        wrong_chain.signature = key(2).sign(&vote_bytes_other_chain(&good.vote));
        type Counter = fn(&Stats) -> u64;
        let cases: Vec<(&str, Message<Tv>, Counter)> = vec![
            ("bad signature", Message::Vote(bad_sig), |s| s.bad_signature),
            (
                "signed for another chain",
                Message::Vote(wrong_chain),
                |s| s.bad_signature,
            ),
            (
                "voter index outside the set",
                Message::Vote(not_validator),
                |s| s.not_validator,
            ),
            (
                "height far in the future",
                Message::Vote(H::vote(VoteKind::Prevote, 2, 9, 0, None)),
                |s| s.far_future_height,
            ),
            (
                "round far in the future",
                Message::Vote(H::vote(VoteKind::Prevote, 2, 1, 500, None)),
                |s| s.far_future_round,
            ),
            (
                "proposal from a validator that is not the proposer",
                Message::Proposal(H::proposal(2, 1, 0, 1, None)),
                |s| s.wrong_proposer,
            ),
            (
                "valid round not below round",
                Message::Proposal(H::proposal(1, 1, 0, 1, Some(0))),
                |s| s.malformed,
            ),
            (
                "own vote echoed back",
                Message::Vote(H::vote(VoteKind::Prevote, 0, 1, 0, None)),
                |s| s.own_echo,
            ),
        ];
        for (desc, msg, counter) in cases {
            let mut h = H::n4(0);
            h.c.handle_message(0, &key(1).id(), msg);
            assert_eq!(counter(h.c.stats()), 1, "case: {desc}");
            assert_eq!(
                h.c.stats().votes_accepted + h.c.stats().proposals_accepted,
                0,
                "{desc}"
            );
        }

        let mut h = H::n4(0);
        h.c.handle_message(0, &key(1).id(), Message::Vote(good));
        h.c.handle_message(0, &key(1).id(), Message::Vote(good));
        assert_eq!((h.c.stats().votes_accepted, h.c.stats().duplicate), (1, 1));

        // A sender outside the set.
        h.c.handle_message(0, &key(7).id(), Message::Vote(good));
        assert_eq!(h.c.stats().not_validator, 1);

        // Next-height messages are buffered per peer, up to the bound.
        for r in 0..6 {
            let m = Message::Vote(H::vote(VoteKind::Prevote, 2, 2, r, None));
            h.c.handle_message(0, &key(2).id(), m);
        }
        assert_eq!(h.c.stats().buffer_full, 2);
        // Stale height after deciding.
        h.run(&[
            P(1, 0, 1, None),
            Valid(1, true),
            Pc(1, 0, Some(1)),
            Pc(2, 0, Some(1)),
            Pc(3, 0, Some(1)),
        ]);
        assert_eq!(h.c.height(), 2);
        h.input(Pv(3, 0, None));
        assert_eq!(h.c.stats().stale_height, 1);
    }

    fn vote_bytes_other_chain(v: &Vote) -> Vec<u8> {
        v.sign_bytes("another-chain")
    }

    #[test]
    fn decided_certificate_verifies_and_buffered_next_height_messages_replay() {
        let mut h = H::n4(0);
        // Validator 2 is already at height 2 and prevotes there.
        let early = H::vote(VoteKind::Prevote, 2, 2, 0, None);
        h.c.handle_message(0, &key(2).id(), Message::Vote(early));
        h.run(&[Txs(4)]);
        let out = h.run(&[
            P(1, 0, 1, None),
            Valid(1, true),
            Pc(1, 0, Some(1)),
            Pc(2, 0, Some(1)),
            Pc(3, 0, Some(1)),
        ]);
        assert!(
            out.contains(&"decide h1 v1 r0 sigs 3".to_string()),
            "{out:?}"
        );
        assert_eq!(h.c.height(), 2);
        // The buffered prevote of height 2 was replayed into round 0.
        assert_eq!(h.c.stats().votes_accepted, 4);
        // And the certificate checks out offline.
        let mut h = H::n4(0);
        h.run(&[
            P(1, 0, 1, None),
            Valid(1, true),
            Pc(1, 0, Some(1)),
            Pc(2, 0, Some(1)),
        ]);
        h.c.handle_message(
            0,
            &key(3).id(),
            Message::Vote(H::vote(VoteKind::Precommit, 3, 1, 0, Some(1))),
        );
        let cert =
            h.c.poll_effects()
                .into_iter()
                .find_map(|e| match e {
                    Effect::Decide { certificate, .. } => Some(certificate),
                    _ => None,
                })
                .unwrap();
        cert.verify(&h.set, CHAIN, 1, &Tv(1).id()).unwrap();
        assert_eq!(h.n, 4);
    }

    #[test]
    fn n1_solo_commits_immediately() {
        let mut h = H::new(1, 0, 0, params(), Vec::new());
        assert!(h
            .c
            .poll_effects()
            .iter()
            .all(|e| !matches!(e, Effect::BuildValue { .. })));
        let out = h.run(&[Txs(4)]);
        assert_eq!(out.last().map(String::as_str), Some("build h1 r0"));
        let out = h.run(&[Built(0, 3)]);
        assert!(
            out.contains(&"decide h1 v3 r0 sigs 1".to_string()),
            "{out:?}"
        );
        assert_eq!(h.c.height(), 2);
        // The next height waits for the driver's mempool report.
        let out = h.run(&[Txs(4)]);
        assert!(out.contains(&"build h2 r0".to_string()), "{out:?}");
    }

    #[test]
    fn empty_blocks_when_configured() {
        let p = ConsensusParams {
            empty_blocks: true,
            ..params()
        };
        let mut h = H::new(4, 1, 1, p, Vec::new());
        let effects: Vec<String> = h.c.poll_effects().iter().map(|e| h.show(e)).collect();
        assert!(
            effects.contains(&"timer Batch h1 r0 at 20".to_string()),
            "{effects:?}"
        );
        assert!(
            effects.contains(&"timer Propose h1 r0 at 120".to_string()),
            "{effects:?}"
        );
        assert_eq!(
            h.run(&[At(20), T(0, TimeoutKind::Batch)]),
            vec!["build h1 r0"]
        );
    }

    #[test]
    fn restart_from_wal_never_signs_twice() {
        // Validator 0 prevoted v1 and precommitted (locked) v1 in round 0.
        let mut h = H::n4(0);
        h.run(&[
            Txs(4),
            P(1, 0, 1, None),
            Valid(1, true),
            Pv(1, 0, Some(1)),
            Pv(2, 0, Some(1)),
        ]);
        let wal = h.wal.clone();
        assert_eq!(wal.len(), 2);
        // Restart: the lock and the step come back; no rule signs again.
        let mut r = H::new(4, 0, 1, params(), wal);
        assert_eq!(r.c.locked(), Some((0, Tv(1).id())));
        assert_eq!(r.c.step(), Step::Precommit);
        let start: Vec<String> = r.c.poll_effects().iter().map(|e| r.show(e)).collect();
        assert!(start.iter().all(|s| !s.starts_with("persist")), "{start:?}");
        // A conflicting proposal for round 0 (equivocation) cannot make it re-vote.
        let out = r.run(&[
            P(1, 0, 2, None),
            Valid(2, true),
            Pv(1, 0, Some(2)),
            Pv(2, 0, Some(2)),
            Pv(3, 0, Some(2)),
        ]);
        assert!(out.iter().all(|s| !s.starts_with("persist")), "{out:?}");
        // Its tick re-sends the votes it signed before the crash.
        let out = r.run(&[At(1000), T(0, TimeoutKind::Tick)]);
        assert!(
            out.contains(&"broadcast prevote r0 v1 by 0".to_string()),
            "{out:?}"
        );
        assert!(
            out.contains(&"broadcast precommit r0 v1 by 0".to_string()),
            "{out:?}"
        );
        // In round 1 it is still locked on v1.
        let out = r.run(&[
            T(0, TimeoutKind::Precommit),
            P(2, 1, 3, None),
            Valid(3, true),
        ]);
        assert!(
            out.contains(&"persist prevote r1 nil".to_string()),
            "{out:?}"
        );
    }

    #[test]
    fn fetched_blocks_apply_only_with_a_valid_certificate() {
        let value = Tv(4);
        let id = value.id();
        let sig = |i: u16| {
            let bytes = crate::cert::vote_sign_bytes(VoteKind::Precommit, CHAIN, 1, 2, Some(&id));
            (i, key(i).sign(&bytes))
        };
        let cert = CommitCertificate {
            chain_id: CHAIN.into(),
            height: 1,
            round: 2,
            block_hash: id,
            signatures: vec![sig(1), sig(2), sig(3)],
        };
        let mut h = H::n4(0);
        let mut short = cert.clone();
        short.signatures.pop();
        h.c.handle_block_fetched(0, value.clone(), short);
        assert_eq!(h.c.stats().bad_certificate, 1);
        h.c.handle_block_fetched(0, Tv(5), cert.clone());
        assert_eq!(h.c.stats().bad_certificate, 2);
        let mut later = cert.clone();
        later.height = 2;
        h.c.handle_block_fetched(0, value.clone(), later);
        assert_eq!(h.c.stats().unexpected, 1);
        assert_eq!(h.c.height(), 1);
        h.c.poll_effects();
        h.c.handle_block_fetched(0, value.clone(), cert.clone());
        assert_eq!(h.c.height(), 2);
        let out: Vec<String> = h.c.poll_effects().iter().map(|e| h.show(e)).collect();
        assert_eq!(
            out.first().map(String::as_str),
            Some("decide h1 v4 r2 sigs 3")
        );
        h.c.handle_block_fetched(0, value, cert);
        assert_eq!(h.c.stats().stale_height, 1);
        let _ = proposal_sign_bytes(CHAIN, 1, 0, None, &id);
    }
}
