//! Checking an offloaded task's result (issue 11, "trustworthy
//! computation"): the requester of an offloaded task does not take the
//! executor's word for its result.
//!
//! The executor commits `OffloadCompleted { result_digest }` and answers
//! with the result and the commit's inclusion proof. The requester
//! ([`check_result`]) verifies the proof against the chain's validator set
//! (a quorum certificate, the Merkle path, the executor's signature on an
//! `OffloadCompleted` of this very task), then that sha256 of the result it
//! received is the committed digest. A mismatch is rejected
//! ([`Rejection::DigestMismatch`]): the requester runs the task itself,
//! answers its caller with its own result and commits `OffloadDisputed`.
//! A result without a valid proof ([`Rejection::Unproven`]) is not taken
//! either: the task is offloaded again under a new contract.
//!
//! That catches an executor whose answer differs from what it committed.
//! One that commits and returns the same wrong result is caught by spot
//! checks ([`OffloadChecks::spot_check`]): the requester re-executes a
//! deterministic fraction of its offloaded tasks (functions are
//! deterministic) and disputes a disagreement the same way.
//!
//! [`OffloadAdversary`] turns an executor into a cheat, for the fault
//! suite's adversary cases only (`federact node --offload-adversary`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use federact_config::NodeId;
use federact_ledger::hash::Hash;
use federact_ledger::proof::CrossChainProof;
use federact_ledger::record::{Record, Scope};

use crate::client::LedgerClient;

/// How a server checks the results of the tasks it offloads, and (for the
/// fault suite) how it cheats on the tasks it runs for others.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OffloadChecks {
    /// The fraction (0 to 1) of offloaded tasks whose verified result the
    /// requester re-executes to compare. Which tasks: those whose task id
    /// hashes below the fraction, so the choice is deterministic and an
    /// executor cannot tell which of its results will be checked.
    pub spot_check: f64,
    /// Makes this server cheat as an executor (fault tests only).
    pub adversary: Option<OffloadAdversary>,
}

/// How an adversarial executor cheats (fault tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffloadAdversary {
    /// Commits the true result's digest, answers a tampered result.
    TamperResult,
    /// Commits a wrong digest, answers the true result.
    WrongDigest,
    /// Commits and answers the same wrong result (only a spot check tells).
    WrongResult,
}

impl OffloadAdversary {
    /// Every mode, for command-line parsing.
    pub const ALL: [OffloadAdversary; 3] = [
        OffloadAdversary::TamperResult,
        OffloadAdversary::WrongDigest,
        OffloadAdversary::WrongResult,
    ];

    /// The mode's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            OffloadAdversary::TamperResult => "tamper-result",
            OffloadAdversary::WrongDigest => "wrong-digest",
            OffloadAdversary::WrongResult => "wrong-result",
        }
    }

    /// The mode named `s` (see [`OffloadAdversary::name`]).
    pub fn parse(s: &str) -> Option<OffloadAdversary> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// What the cheat commits and what it answers, given the true `output`:
    /// `(committed, answered)`.
    pub fn cheat(self, output: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        let mut wrong = output.clone();
        wrong.extend_from_slice(b"~tampered");
        match self {
            OffloadAdversary::TamperResult => (output, wrong),
            OffloadAdversary::WrongDigest => (wrong, output),
            OffloadAdversary::WrongResult => (wrong.clone(), wrong),
        }
    }
}

/// Whether task `task_id` is among the `fraction` of offloaded tasks the
/// requester re-executes. The choice hashes the task id with the
/// requester's `salt`, a secret it drew at start: task ids are public (they
/// are on the ledger), so an executor must not be able to tell from one
/// which of its results will be checked.
pub fn spot_checked(task_id: &Hash, fraction: f64, salt: &[u8; 32]) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    if fraction >= 1.0 {
        return true;
    }
    let keyed = Hash::of_parts(&[salt, task_id.as_bytes()]);
    let mut head = [0u8; 8];
    head.copy_from_slice(&keyed.as_bytes()[..8]);
    (u64::from_be_bytes(head) as f64) < fraction * u64::MAX as f64
}

/// Why a requester refused an offloaded task's result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No proof of a committed `OffloadCompleted` of this task by its
    /// executor came with the result, or the proof does not verify.
    #[error("result without a valid completion proof: {0}")]
    Unproven(String),
    /// The result does not hash to the committed digest.
    #[error("result digest {} differs from the committed {}", .received.short(), .committed.short())]
    DigestMismatch {
        /// The digest the executor committed.
        committed: Hash,
        /// sha256 of the result it returned.
        received: Hash,
    },
}

/// Checks an offloaded task's `output` against `proof` (see the module
/// doc): the proof verifies against `verifier`'s validator sets, proves an
/// `OffloadCompleted` of `task_id` with `scope` signed by `executor`, and
/// its digest is sha256 of `output`. Returns the committed digest.
pub fn check_result(
    verifier: &LedgerClient,
    executor: &NodeId,
    task_id: &Hash,
    scope: Scope,
    output: &[u8],
    proof: Option<&CrossChainProof>,
) -> Result<Hash, Rejection> {
    let proof = proof.ok_or_else(|| Rejection::Unproven("no proof".into()))?;
    let tx = verifier
        .verify_proof(proof)
        .map_err(|e| Rejection::Unproven(e.to_string()))?;
    if tx.author() != executor {
        return Err(Rejection::Unproven(format!(
            "completion signed by {}, not the executor {}",
            tx.author().short(),
            executor.short()
        )));
    }
    let committed = match tx.record() {
        Record::OffloadCompleted {
            task_id: t,
            result_digest,
            scope: s,
        } if t == task_id && *s == scope => *result_digest,
        other => {
            return Err(Rejection::Unproven(format!(
                "proof of a {} that is not this task's completion",
                other.kind()
            )))
        }
    };
    let received = Hash::of(output);
    if received != committed {
        return Err(Rejection::DigestMismatch {
            committed,
            received,
        });
    }
    Ok(committed)
}

/// What a server's offload checks counted (process lifetime); read
/// remotely with [`crate::stats`].
#[derive(Debug, Default)]
pub struct OffloadCounters {
    /// Offloaded results whose proof and digest checked out.
    pub verified: AtomicU64,
    /// Results refused for a digest differing from the committed one.
    pub digest_mismatches: AtomicU64,
    /// Results refused for a missing or invalid completion proof.
    pub unproven: AtomicU64,
    /// Verified results re-executed by a spot check.
    pub spot_checks: AtomicU64,
    /// Spot checks that disagreed with the executor.
    pub spot_mismatches: AtomicU64,
    /// `OffloadDisputed` records committed.
    pub disputes_recorded: AtomicU64,
    /// Results run again here after a rejection (the caller got these).
    pub reexecuted: AtomicU64,
    /// As an adversarial executor: wrong results or digests served.
    pub cheats_served: AtomicU64,
}

/// A copy of [`OffloadCounters`] at one moment (on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffloadCounts {
    /// See [`OffloadCounters::verified`].
    pub verified: u64,
    /// See [`OffloadCounters::digest_mismatches`].
    pub digest_mismatches: u64,
    /// See [`OffloadCounters::unproven`].
    pub unproven: u64,
    /// See [`OffloadCounters::spot_checks`].
    pub spot_checks: u64,
    /// See [`OffloadCounters::spot_mismatches`].
    pub spot_mismatches: u64,
    /// See [`OffloadCounters::disputes_recorded`].
    pub disputes_recorded: u64,
    /// See [`OffloadCounters::reexecuted`].
    pub reexecuted: u64,
    /// See [`OffloadCounters::cheats_served`].
    pub cheats_served: u64,
}

impl OffloadCounts {
    /// Results refused as wrong (digest mismatches and failed spot checks).
    pub fn rejected(&self) -> u64 {
        self.digest_mismatches + self.spot_mismatches
    }
}

impl OffloadCounters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> OffloadCounts {
        OffloadCounts {
            verified: self.verified.load(Relaxed),
            digest_mismatches: self.digest_mismatches.load(Relaxed),
            unproven: self.unproven.load(Relaxed),
            spot_checks: self.spot_checks.load(Relaxed),
            spot_mismatches: self.spot_mismatches.load(Relaxed),
            disputes_recorded: self.disputes_recorded.load(Relaxed),
            reexecuted: self.reexecuted.load(Relaxed),
            cheats_served: self.cheats_served.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_check_fraction_selects_about_that_share_keyed_by_the_requesters_secret() {
        let ids: Vec<Hash> = (0..4000u32).map(|i| Hash::of(&i.to_be_bytes())).collect();
        let chosen = |f: f64, salt: &[u8; 32]| -> Vec<bool> {
            ids.iter().map(|id| spot_checked(id, f, salt)).collect()
        };
        let count = |v: &[bool]| v.iter().filter(|c| **c).count();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(count(&chosen(0.0, &a)), 0);
        assert_eq!(count(&chosen(1.0, &a)), ids.len());
        let quarter = chosen(0.25, &a);
        assert!(
            (800..1200).contains(&count(&quarter)),
            "{} of 4000 at 0.25",
            count(&quarter)
        );
        // The same requester always chooses a task the same way; another
        // requester's secret chooses other tasks.
        assert_eq!(chosen(0.25, &a), quarter);
        assert_ne!(chosen(0.25, &b), quarter);
    }

    #[test]
    fn each_cheat_commits_or_answers_something_wrong() {
        let out = b"144".to_vec();
        for m in OffloadAdversary::ALL {
            assert_eq!(OffloadAdversary::parse(m.name()), Some(m));
            let (committed, answered) = m.cheat(out.clone());
            assert!(committed != out || answered != out, "{m:?}");
            // Only the consistent lie passes the digest check.
            assert_eq!(
                committed == answered,
                m == OffloadAdversary::WrongResult,
                "{m:?}"
            );
        }
        assert_eq!(OffloadAdversary::parse("honest"), None);
    }
}
