//! Consensus-round spans: one `consensus.round` span per (height, round) a
//! validator goes through, with the round's outcome, and a
//! `consensus.commit` child around storing the block it decided.
//!
//! The validator reports what it sees — its own votes (the WAL entries it
//! persists), the proposal's validity, the timers that fire, decisions —
//! and calls [`RoundTracer::observe`] after driving the core; the tracer
//! notices a new (height, round) there, ends the previous round's span with
//! its outcome and opens the next. The core (`federact_ledger::consensus`)
//! stays untouched: the outcome is read from those observations.
//!
//! Each round is a trace root sampled with the node's root ratio
//! ([`crate::telemetry::sample_new_root`]), independent of whatever span is
//! current. An unsampled round holds a disabled span and every report on
//! it returns after one branch: no allocation per vote or per message,
//! sampled or not (the span and its fields are built once per round).
//!
//! Outcomes (attribute `outcome`), first match wins:
//! - `committed`: this validator's round decided the block;
//! - `fetched`: the height was decided from a certified block fetched from
//!   a peer (the validator was behind);
//! - `timeout-propose`: no (valid) proposal in time, prevoted nil;
//! - `invalid-proposal`: the proposal was refused by the ledger's rules;
//! - `timeout-prevote`: no prevote quorum in time, precommitted nil;
//! - `nil-polka`: a quorum prevoted nil, precommitted nil;
//! - `timeout-precommit`: precommitted a block, no precommit quorum;
//! - `round-skip`: moved on to a higher round on seeing f+1 validators
//!   there, before voting in this one;
//! - `stopped`: the validator stopped during the round.

use federact_ledger::block::Block;
use federact_ledger::cert::{CommitCertificate, VoteKind};
use federact_ledger::consensus::{Consensus, Step, Timeout, TimeoutKind, WalEntry};

/// This validator's vote of one kind in the current round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnVote {
    None,
    Nil,
    Value,
}

impl OwnVote {
    fn label(self) -> &'static str {
        match self {
            OwnVote::None => "none",
            OwnVote::Nil => "nil",
            OwnVote::Value => "value",
        }
    }
}

/// What the current round has seen so far.
struct Round {
    height: u64,
    round: u32,
    span: tracing::Span,
    prevote: OwnVote,
    precommit: OwnVote,
    proposal_invalid: bool,
    timeout_propose: bool,
    timeout_prevote: bool,
    decided: Option<&'static str>,
}

impl Round {
    fn outcome(&self) -> &'static str {
        if let Some(d) = self.decided {
            return d;
        }
        match (self.prevote, self.precommit) {
            (OwnVote::Nil, _) if self.timeout_propose => "timeout-propose",
            (OwnVote::Nil, _) if self.proposal_invalid => "invalid-proposal",
            (_, OwnVote::Nil) if self.timeout_prevote => "timeout-prevote",
            (_, OwnVote::Nil) => "nil-polka",
            (_, OwnVote::Value) => "timeout-precommit",
            _ => "round-skip",
        }
    }

    fn end(&self, outcome: &'static str) {
        self.span.record("outcome", outcome);
        self.span.record("prevote", self.prevote.label());
        self.span.record("precommit", self.precommit.label());
    }
}

/// Follows one validator's rounds; see the module documentation.
pub(crate) struct RoundTracer {
    current: Option<Round>,
    /// `Stats::fetched` when last looked at: a decision that raised it came
    /// from a fetched block.
    fetched_seen: u64,
}

impl RoundTracer {
    /// A tracer that has seen no round yet.
    pub(crate) fn new() -> RoundTracer {
        RoundTracer {
            current: None,
            fetched_seen: 0,
        }
    }

    /// The live round, if it is traced and is (`height`, `round`).
    fn live(&mut self, height: u64, round: u32) -> Option<&mut Round> {
        self.current
            .as_mut()
            .filter(|r| r.height == height && r.round == round && !r.span.is_disabled())
    }

    /// Ends the previous round and opens the next when the core's (height,
    /// round) changed. Call after every drive of the core.
    pub(crate) fn observe(&mut self, chain: &str, core: &Consensus<Block>) {
        let (height, round) = (core.height(), core.round());
        if let Some(r) = &self.current {
            if r.height == height && r.round == round {
                return;
            }
            if !r.span.is_disabled() {
                r.end(r.outcome());
            }
        }
        self.fetched_seen = core.stats().fetched;
        let span = if crate::telemetry::sample_new_root() {
            let set = core.validator_set();
            let proposer = set.proposer(height, round);
            let me = set.get(core.index());
            let validator = me.map(|m| m.short()).unwrap_or_default();
            tracing::info_span!(
                parent: None,
                "consensus.round",
                federact.root = true,
                chain,
                validator = validator.as_str(),
                height,
                round,
                proposer = %proposer.short(),
                proposer.is_self = me == Some(proposer),
                outcome = tracing::field::Empty,
                prevote = tracing::field::Empty,
                precommit = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        self.current = Some(Round {
            height,
            round,
            span,
            prevote: OwnVote::None,
            precommit: OwnVote::None,
            proposal_invalid: false,
            timeout_propose: false,
            timeout_prevote: false,
            decided: None,
        });
    }

    /// This validator persisted `entry` (its own proposal or vote).
    pub(crate) fn own_entry(&mut self, entry: &WalEntry<Block>) {
        let WalEntry::Vote { vote, .. } = entry else {
            return;
        };
        let v = vote.vote;
        if let Some(r) = self.live(v.height, v.round) {
            let own = if v.value.is_some() {
                OwnVote::Value
            } else {
                OwnVote::Nil
            };
            match v.kind {
                VoteKind::Prevote => r.prevote = own,
                VoteKind::Precommit => r.precommit = own,
            }
        }
    }

    /// The proposal of (`height`, `round`) was checked: `valid` or not.
    pub(crate) fn proposal_checked(&mut self, height: u64, round: u32, valid: bool) {
        if let Some(r) = self.live(height, round) {
            r.proposal_invalid |= !valid;
        }
    }

    /// `timeout` is about to be handed to the core, which is at `step`: a
    /// propose or prevote timeout counts only where the core acts on it.
    pub(crate) fn timeout_fired(&mut self, timeout: &Timeout, step: Step) {
        if let Some(r) = self.live(timeout.height, timeout.round) {
            match (timeout.kind, step) {
                (TimeoutKind::Propose, Step::Propose) => r.timeout_propose = true,
                (TimeoutKind::Prevote, Step::Prevote) => r.timeout_prevote = true,
                _ => {}
            }
        }
    }

    /// The core decided `cert`'s block: the child span to enter while it is
    /// stored (disabled when the round is not traced).
    pub(crate) fn decided(
        &mut self,
        cert: &CommitCertificate,
        txs: usize,
        core: &Consensus<Block>,
    ) -> tracing::Span {
        let fetched = core.stats().fetched > self.fetched_seen;
        self.fetched_seen = core.stats().fetched;
        // The core may already be at the next height: the decision belongs
        // to the round being traced when its height matches.
        let Some(r) = self
            .current
            .as_mut()
            .filter(|r| r.height == cert.height && !r.span.is_disabled())
        else {
            return tracing::Span::none();
        };
        r.decided = Some(if fetched { "fetched" } else { "committed" });
        tracing::info_span!(
            parent: &r.span,
            "consensus.commit",
            height = cert.height,
            round = cert.round,
            block.id = %cert.block_hash,
            txs,
        )
    }

    /// The validator stops: ends the open round as `stopped`.
    pub(crate) fn stop(&mut self) {
        if let Some(r) = self.current.take() {
            if !r.span.is_disabled() {
                r.end(r.decided.unwrap_or("stopped"));
            }
        }
    }
}

impl Default for RoundTracer {
    fn default() -> Self {
        RoundTracer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(prevote: OwnVote, precommit: OwnVote) -> Round {
        Round {
            height: 1,
            round: 0,
            span: tracing::Span::none(),
            prevote,
            precommit,
            proposal_invalid: false,
            timeout_propose: false,
            timeout_prevote: false,
            decided: None,
        }
    }

    #[test]
    fn outcomes_from_what_the_round_saw() {
        use OwnVote::*;
        let mut r = round(Nil, Nil);
        r.timeout_propose = true;
        assert_eq!(r.outcome(), "timeout-propose");
        let mut r = round(Nil, Nil);
        r.proposal_invalid = true;
        assert_eq!(r.outcome(), "invalid-proposal");
        let mut r = round(Value, Nil);
        r.timeout_prevote = true;
        assert_eq!(r.outcome(), "timeout-prevote");
        assert_eq!(round(Value, Nil).outcome(), "nil-polka");
        assert_eq!(round(Nil, Nil).outcome(), "nil-polka");
        assert_eq!(round(Value, Value).outcome(), "timeout-precommit");
        assert_eq!(round(None, None).outcome(), "round-skip");
        let mut r = round(Value, Value);
        r.decided = Some("committed");
        assert_eq!(r.outcome(), "committed");
    }
}
