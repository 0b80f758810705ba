//! The vocabulary of the consensus core: the value trait, signed messages,
//! timeouts, effects, write-ahead entries, parameters and counters.

use std::fmt;

use serde::{Deserialize, Serialize};

use federact_config::{ChainParams, NodeId, Signature};

use crate::cert::{vote_sign_bytes, CommitCertificate, VoteKind};
use crate::hash::Hash;

/// What the validators agree on, one per height (the ledger's `Block`).
///
/// The core never looks inside a value: it signs and counts its [`id`](Self::id),
/// asks the driver whether it is valid ([`Effect::ValidateValue`]) and hands it
/// back in [`Effect::Decide`]. `id` must commit to the whole value (a block's
/// id is the hash of its header, which commits to the transactions through
/// `tx_root`; the driver checks `tx_root` against the transactions before it
/// hands a received block to the core).
pub trait ConsensusValue: Clone + Eq + fmt::Debug {
    /// The value's identifier: what votes and certificates sign.
    fn id(&self) -> Hash;
}

/// A proposal for (height, round), sent by that round's proposer (L19).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal<V> {
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// The round in which the proposer saw a quorum of prevotes for `value`
    /// (the paper's `validRound`); `None` is the paper's -1.
    pub valid_round: Option<u32>,
    /// The proposed value.
    pub value: V,
    /// Index of the proposer in the validator set.
    pub proposer: u16,
}

/// The exact bytes a proposer signs: a domain tag, chain id, height, round,
/// valid round and the value's id (not the whole value: the id commits to it).
pub fn proposal_sign_bytes(
    chain_id: &str,
    height: u64,
    round: u32,
    valid_round: Option<u32>,
    value_id: &Hash,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + 4 + chain_id.len() + 8 + 4 + 5 + 32);
    out.extend_from_slice(b"federact/proposal/v1");
    out.extend_from_slice(&(chain_id.len() as u32).to_be_bytes());
    out.extend_from_slice(chain_id.as_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&round.to_be_bytes());
    match valid_round {
        Some(vr) => {
            out.push(1);
            out.extend_from_slice(&vr.to_be_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(value_id.as_bytes());
    out
}

impl<V: ConsensusValue> Proposal<V> {
    /// The bytes the proposer signs for this proposal.
    pub fn sign_bytes(&self, chain_id: &str) -> Vec<u8> {
        proposal_sign_bytes(
            chain_id,
            self.height,
            self.round,
            self.valid_round,
            &self.value.id(),
        )
    }
}

/// A proposal with its proposer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProposal<V> {
    /// The proposal.
    pub proposal: Proposal<V>,
    /// Signature over [`Proposal::sign_bytes`].
    pub signature: Signature,
}

/// A prevote or precommit (L22–L44). `value: None` is a vote for nil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vote {
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// The value id voted for, or nil.
    pub value: Option<Hash>,
    /// Index of the voter in the validator set.
    pub validator: u16,
}

impl Vote {
    /// The bytes the voter signs ([`vote_sign_bytes`]): a precommit's
    /// signature is directly usable in a [`CommitCertificate`].
    pub fn sign_bytes(&self, chain_id: &str) -> Vec<u8> {
        vote_sign_bytes(
            self.kind,
            chain_id,
            self.height,
            self.round,
            self.value.as_ref(),
        )
    }
}

/// A vote with its voter's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVote {
    /// The vote.
    pub vote: Vote,
    /// Signature over [`Vote::sign_bytes`].
    pub signature: Signature,
}

/// "I am working on `height`" (everything below it is decided here). Lets a
/// lagging validator learn that it is behind and fetch certified blocks.
/// Unsigned: it is only a hint, and a lie costs one block request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The sender's current height.
    pub height: u64,
}

/// A consensus message between validators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<V> {
    /// A signed proposal.
    Proposal(SignedProposal<V>),
    /// A signed vote (the sender's own, or a forwarded proof-of-lock prevote).
    Vote(SignedVote),
    /// The sender's height.
    Status(Status),
}

/// A step of a round (the paper's `step_p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Step {
    /// Waiting for the proposal.
    Propose,
    /// Prevoted; waiting for prevotes.
    Prevote,
    /// Precommitted; waiting for precommits.
    Precommit,
}

/// Which timer a [`Timeout`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeoutKind {
    /// `timeoutPropose` (L57).
    Propose,
    /// `timeoutPrevote` (L61).
    Prevote,
    /// `timeoutPrecommit` (L65).
    Precommit,
    /// The proposer has some transactions but fewer than a full block, and
    /// stops waiting for more at this point.
    Batch,
    /// Periodic retransmission of this validator's own messages and status
    /// (the gossip the paper assumes), and retry of block requests.
    Tick,
}

/// A timer the driver runs for the core; when it fires, the driver calls
/// [`Consensus::handle_timeout`](super::Consensus::handle_timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timeout {
    /// Height it belongs to (stale timeouts are ignored).
    pub height: u64,
    /// Round it belongs to.
    pub round: u32,
    /// Which timer.
    pub kind: TimeoutKind,
}

/// A record the driver must make durable before carrying out any effect that
/// follows it. On restart, the entries for the height being decided are
/// handed back to [`Consensus::new`](super::Consensus::new) so the validator
/// never signs two different messages for one (height, round, kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalEntry<V> {
    /// This validator's own proposal.
    Proposal(SignedProposal<V>),
    /// This validator's own vote. For a precommit of a value, `locked_value`
    /// carries the value it locked on (L38), so a restart keeps the lock.
    Vote {
        /// The signed vote.
        vote: SignedVote,
        /// The value locked with a non-nil precommit.
        locked_value: Option<V>,
    },
}

impl<V> WalEntry<V> {
    /// The height the entry belongs to; the driver may drop entries below
    /// the next height once a block is stored.
    pub fn height(&self) -> u64 {
        match self {
            WalEntry::Proposal(p) => p.proposal.height,
            WalEntry::Vote { vote, .. } => vote.vote.height,
        }
    }
}

/// Proof that a validator signed two conflicting messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence<V> {
    /// Two different votes of one kind for one (height, round).
    ConflictingVotes {
        /// The vote seen first.
        first: Box<SignedVote>,
        /// The conflicting vote.
        second: Box<SignedVote>,
    },
    /// Two different proposals for one (height, round).
    ConflictingProposals {
        /// The proposal seen first.
        first: Box<SignedProposal<V>>,
        /// The conflicting proposal.
        second: Box<SignedProposal<V>>,
    },
}

/// Something the driver must do. Effects are returned in order; the driver
/// carries them out in that order (see [`Effect::Persist`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<V> {
    /// Make this entry durable (fsync) BEFORE carrying out any later effect
    /// of the same batch: the sends that follow contain what it records.
    Persist(WalEntry<V>),
    /// Send to every other validator.
    Broadcast(Message<V>),
    /// Send to one validator.
    SendTo(NodeId, Message<V>),
    /// Call `handle_timeout(timeout)` once the clock reaches `at_ms`.
    ScheduleTimeout {
        /// The timer.
        timeout: Timeout,
        /// Absolute time (the driver's clock, ms).
        at_ms: u64,
    },
    /// This validator proposes: fill a value from the mempool (at most
    /// `max_txs` transactions and `max_bytes` bytes of them) and call
    /// `handle_value_built(height, round, value)`.
    BuildValue {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
        /// Transaction limit.
        max_txs: u32,
        /// Byte limit.
        max_bytes: u64,
    },
    /// Check the value against the application (the ledger's rules on the
    /// state after height - 1) and call `handle_value_validity`.
    ValidateValue {
        /// Height.
        height: u64,
        /// Round of the proposal that carried it.
        round: u32,
        /// The value.
        value: V,
    },
    /// Ask `peer` for the decided value and certificate at `height`; answer
    /// with `handle_block_fetched`. Retried by the core on later ticks.
    RequestBlock {
        /// Whom to ask.
        peer: NodeId,
        /// Which height.
        height: u64,
    },
    /// `value` is decided at `certificate.height`: store both (atomically),
    /// apply, then report the mempool with `handle_txs_available`.
    Decide {
        /// The decided value.
        value: V,
        /// A quorum of precommits for it.
        certificate: CommitCertificate,
    },
    /// A validator equivocated.
    Evidence(Evidence<V>),
}

/// Parameters of the core, built from the chain's [`ChainParams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsensusParams {
    /// Transactions that make a full block (propose at once).
    pub block_size_txs: u32,
    /// Bytes that make a full block.
    pub block_bytes_max: u64,
    /// How long a proposer with a partial block waits for more.
    pub batch_timeout_ms: u64,
    /// Whether to propose blocks with no transactions. If so, an idle
    /// proposer proposes an empty block `batch_timeout_ms` after its round
    /// starts: that is the block interval of an idle chain (0 means back to
    /// back, paced only by the driver's timers).
    pub empty_blocks: bool,
    /// `timeoutPropose` base (the batch wait is added to it).
    pub propose_ms: u64,
    /// `timeoutPrevote` base.
    pub prevote_ms: u64,
    /// `timeoutPrecommit` base.
    pub precommit_ms: u64,
    /// Added per round to each timeout.
    pub delta_ms: u64,
    /// Retransmission / status period.
    pub tick_ms: u64,
    /// Rounds ahead of ours whose votes are stored; beyond that only the
    /// sender's round is noted (for L55).
    pub future_rounds_max: u32,
    /// Messages buffered per peer for the next height.
    pub future_msgs_per_peer: usize,
}

impl From<&ChainParams> for ConsensusParams {
    fn from(p: &ChainParams) -> Self {
        ConsensusParams {
            block_size_txs: p.block_size_txs,
            block_bytes_max: p.block_bytes_max,
            batch_timeout_ms: p.batch_timeout_ms,
            empty_blocks: p.empty_blocks,
            propose_ms: p.timeouts.propose_ms,
            prevote_ms: p.timeouts.prevote_ms,
            precommit_ms: p.timeouts.precommit_ms,
            delta_ms: p.timeouts.delta_ms,
            tick_ms: p.timeouts.propose_ms.max(1),
            future_rounds_max: 16,
            future_msgs_per_peer: 32,
        }
    }
}

impl ConsensusParams {
    /// `timeoutPropose(r)`: base + r * delta, plus the proposer's batch wait.
    pub fn propose_timeout_ms(&self, round: u32) -> u64 {
        self.propose_ms
            .saturating_add(self.batch_timeout_ms)
            .saturating_add(self.delta_ms.saturating_mul(round as u64))
    }
    /// `timeoutPrevote(r)`.
    pub fn prevote_timeout_ms(&self, round: u32) -> u64 {
        self.prevote_ms
            .saturating_add(self.delta_ms.saturating_mul(round as u64))
    }
    /// `timeoutPrecommit(r)`.
    pub fn precommit_timeout_ms(&self, round: u32) -> u64 {
        self.precommit_ms
            .saturating_add(self.delta_ms.saturating_mul(round as u64))
    }
}

/// Why an input was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Signed by (or sent by) someone outside the validator set.
    NotValidator,
    /// Signature does not verify.
    BadSignature,
    /// Already have exactly this message.
    Duplicate,
    /// A proposal not from the round's proposer.
    WrongProposer,
    /// Structurally invalid (e.g. valid round not below round).
    Malformed,
    /// For a height already decided here.
    StaleHeight,
    /// For a height more than one ahead (noted as a catch-up hint).
    FarFutureHeight,
    /// For a round too far ahead to store (noted for L55).
    FarFutureRound,
    /// The next-height buffer for this peer is full.
    BufferFull,
    /// A second conflicting message beyond the one kept as evidence.
    Equivocation,
    /// A fetched block whose certificate does not verify.
    BadCertificate,
    /// A built or fetched value that arrived when no longer wanted.
    Unexpected,
    /// This validator's own message echoed back.
    OwnEcho,
}

/// Counters of what the core accepted and rejected, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Proposals accepted into the round state.
    pub proposals_accepted: u64,
    /// Votes accepted into the round state.
    pub votes_accepted: u64,
    /// Heights decided by this validator's own rounds.
    pub decided: u64,
    /// Heights decided from fetched, certified blocks.
    pub fetched: u64,
    /// Evidence reported.
    pub evidence: u64,
    /// Rejected: not a validator.
    pub not_validator: u64,
    /// Rejected: bad signature.
    pub bad_signature: u64,
    /// Rejected: duplicate.
    pub duplicate: u64,
    /// Rejected: proposal from a non-proposer.
    pub wrong_proposer: u64,
    /// Rejected: malformed.
    pub malformed: u64,
    /// Rejected: stale height.
    pub stale_height: u64,
    /// Rejected: far-future height.
    pub far_future_height: u64,
    /// Rejected: far-future round.
    pub far_future_round: u64,
    /// Rejected: next-height buffer full.
    pub buffer_full: u64,
    /// Rejected: further equivocation.
    pub equivocation: u64,
    /// Rejected: bad certificate.
    pub bad_certificate: u64,
    /// Rejected: unexpected.
    pub unexpected: u64,
    /// Ignored: own message echoed back.
    pub own_echo: u64,
}

impl Stats {
    /// Counts one rejection.
    pub fn count(&mut self, r: Rejection) {
        let c = match r {
            Rejection::NotValidator => &mut self.not_validator,
            Rejection::BadSignature => &mut self.bad_signature,
            Rejection::Duplicate => &mut self.duplicate,
            Rejection::WrongProposer => &mut self.wrong_proposer,
            Rejection::Malformed => &mut self.malformed,
            Rejection::StaleHeight => &mut self.stale_height,
            Rejection::FarFutureHeight => &mut self.far_future_height,
            Rejection::FarFutureRound => &mut self.far_future_round,
            Rejection::BufferFull => &mut self.buffer_full,
            Rejection::Equivocation => &mut self.equivocation,
            Rejection::BadCertificate => &mut self.bad_certificate,
            Rejection::Unexpected => &mut self.unexpected,
            Rejection::OwnEcho => &mut self.own_echo,
        };
        *c += 1;
    }

    /// All rejections (own echoes and duplicates included).
    pub fn rejected(&self) -> u64 {
        self.not_validator
            + self.bad_signature
            + self.duplicate
            + self.wrong_proposer
            + self.malformed
            + self.stale_height
            + self.far_future_height
            + self.far_future_round
            + self.buffer_full
            + self.equivocation
            + self.bad_certificate
            + self.unexpected
            + self.own_echo
    }
}
