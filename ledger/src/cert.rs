//! Validator sets, vote signing bytes and commit certificates.
//!
//! A [`CommitCertificate`] is nothing but the precommit signatures of a
//! quorum of validators for one block: the bytes a validator signs when it
//! precommits ([`vote_sign_bytes`] with [`VoteKind::Precommit`]) are the bytes
//! the certificate verifies. Anyone with the validator set can check it
//! offline.

use serde::{Deserialize, Serialize};

use federact_config::{ChainSpec, NodeId, Signature};

use crate::hash::Hash;

/// The validators of a chain, in proposer order, and its fault tolerance f.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorSet {
    validators: Vec<NodeId>,
    fault_tolerance: u32,
}

impl ValidatorSet {
    /// A set tolerating `f` faults. Returns `None` when `validators` is empty,
    /// has duplicates, or n < 3f+1.
    pub fn new(validators: Vec<NodeId>, fault_tolerance: u32) -> Option<Self> {
        let n = validators.len();
        if n == 0 || (n as u64) < 3 * fault_tolerance as u64 + 1 || n > u16::MAX as usize {
            return None;
        }
        let mut sorted = validators.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != n {
            return None;
        }
        Some(ValidatorSet {
            validators,
            fault_tolerance,
        })
    }

    /// The set a chain's configuration describes.
    pub fn from_spec(spec: &ChainSpec) -> Self {
        // ChainSpec is checked by the config parser: non-empty, distinct, n >= 3f+1.
        ValidatorSet {
            validators: spec.validators().to_vec(),
            fault_tolerance: spec.fault_tolerance(),
        }
    }

    /// Validators in proposer order.
    pub fn validators(&self) -> &[NodeId] {
        &self.validators
    }
    /// n.
    pub fn len(&self) -> usize {
        self.validators.len()
    }
    /// Always false: a set has at least one validator.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }
    /// f.
    pub fn fault_tolerance(&self) -> u32 {
        self.fault_tolerance
    }
    /// Distinct signatures needed to commit: n - f (2f+1 when n = 3f+1).
    pub fn quorum(&self) -> usize {
        self.validators.len() - self.fault_tolerance as usize
    }
    /// More than f: at least one honest validator among them.
    pub fn one_honest(&self) -> usize {
        self.fault_tolerance as usize + 1
    }
    /// The index of `id`, if it is a validator.
    pub fn index_of(&self, id: &NodeId) -> Option<u16> {
        self.validators
            .iter()
            .position(|v| v == id)
            .map(|i| i as u16)
    }
    /// The validator at `index`.
    pub fn get(&self, index: u16) -> Option<&NodeId> {
        self.validators.get(index as usize)
    }
    /// Round-robin proposer of (height, round), weighted equally.
    pub fn proposer(&self, height: u64, round: u32) -> &NodeId {
        let n = self.validators.len() as u64;
        &self.validators[((height + round as u64) % n) as usize]
    }
}

/// The two vote types of Tendermint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VoteKind {
    /// First voting step.
    Prevote,
    /// Second voting step; a quorum of these for a block is its certificate.
    Precommit,
}

/// The exact bytes a validator signs for a vote: a domain tag, the vote kind,
/// chain id, height, round and the block hash voted for (`None` = nil).
pub fn vote_sign_bytes(
    kind: VoteKind,
    chain_id: &str,
    height: u64,
    round: u32,
    block: Option<&Hash>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 1 + chain_id.len() + 8 + 4 + 33);
    out.extend_from_slice(b"federact/vote/v1");
    out.push(match kind {
        VoteKind::Prevote => 1,
        VoteKind::Precommit => 2,
    });
    out.extend_from_slice(&(chain_id.len() as u32).to_be_bytes());
    out.extend_from_slice(chain_id.as_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&round.to_be_bytes());
    match block {
        Some(h) => {
            out.push(1);
            out.extend_from_slice(h.as_bytes());
        }
        None => out.push(0),
    }
    out
}

/// A quorum of precommit signatures for one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    /// The chain.
    pub chain_id: String,
    /// The block's height.
    pub height: u64,
    /// The round in which the block was decided.
    pub round: u32,
    /// The block id (hash of its header).
    pub block_hash: Hash,
    /// (validator index, precommit signature), ascending by index.
    pub signatures: Vec<(u16, Signature)>,
}

/// Why a certificate does not prove its block committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The certificate names a different chain, height or block than expected.
    #[error("certificate is for another {field} than the block it is attached to")]
    Mismatch {
        /// Which of `chain_id`, `height`, `block_hash` differs.
        field: &'static str,
    },
    /// A signer index is not in the validator set.
    #[error("signer index {index} is not a validator (set has {n})")]
    UnknownSigner {
        /// The index.
        index: u16,
        /// Set size.
        n: usize,
    },
    /// A validator signed twice, or indices are not ascending.
    #[error("signer index {index} repeated or out of order")]
    DuplicateSigner {
        /// The index.
        index: u16,
    },
    /// A signature does not verify.
    #[error("bad signature from validator {index} ({validator})")]
    BadSignature {
        /// The index.
        index: u16,
        /// The validator's id (boxed: a `NodeId` is 192 bytes and would make
        /// every `Result<_, CertError>` that large).
        validator: Box<NodeId>,
    },
    /// Fewer than a quorum of valid, distinct signatures.
    #[error("{have} signatures, quorum is {need}")]
    NoQuorum {
        /// Distinct valid signatures.
        have: usize,
        /// Needed.
        need: usize,
    },
}

impl CommitCertificate {
    /// Checks that the certificate is for (`chain_id`, `height`, `block_hash`)
    /// and carries a quorum of distinct, valid precommit signatures of `set`.
    pub fn verify(
        &self,
        set: &ValidatorSet,
        chain_id: &str,
        height: u64,
        block_hash: &Hash,
    ) -> Result<(), CertError> {
        self.check_target(chain_id, height, block_hash)?;
        self.verify_signatures(set)
    }

    /// [`Self::verify`] without the signature checks: the target, signers
    /// in `set` in strictly increasing order, and a quorum of them. For a
    /// certificate whose signatures were each verified already (the
    /// consensus core assembles its certificates from verified votes).
    pub fn verify_shape(
        &self,
        set: &ValidatorSet,
        chain_id: &str,
        height: u64,
        block_hash: &Hash,
    ) -> Result<(), CertError> {
        self.check_target(chain_id, height, block_hash)?;
        self.check_signers(set, None)
    }

    fn check_target(
        &self,
        chain_id: &str,
        height: u64,
        block_hash: &Hash,
    ) -> Result<(), CertError> {
        let field = if self.chain_id != chain_id {
            "chain_id"
        } else if self.height != height {
            "height"
        } else if &self.block_hash != block_hash {
            "block_hash"
        } else {
            ""
        };
        if !field.is_empty() {
            return Err(CertError::Mismatch { field });
        }
        Ok(())
    }

    /// Checks only the signatures against `set` (for the certificate's own
    /// chain, height and block).
    pub fn verify_signatures(&self, set: &ValidatorSet) -> Result<(), CertError> {
        let msg = vote_sign_bytes(
            VoteKind::Precommit,
            &self.chain_id,
            self.height,
            self.round,
            Some(&self.block_hash),
        );
        self.check_signers(set, Some(&msg))
    }

    /// Signers known, in strictly increasing order, a quorum; with `msg`,
    /// each signature over it valid.
    fn check_signers(&self, set: &ValidatorSet, msg: Option<&[u8]>) -> Result<(), CertError> {
        let mut last: Option<u16> = None;
        for (index, sig) in &self.signatures {
            if last.is_some_and(|l| *index <= l) {
                return Err(CertError::DuplicateSigner { index: *index });
            }
            last = Some(*index);
            let Some(validator) = set.get(*index) else {
                return Err(CertError::UnknownSigner {
                    index: *index,
                    n: set.len(),
                });
            };
            if msg.is_some_and(|m| !validator.verify(m, sig)) {
                return Err(CertError::BadSignature {
                    index: *index,
                    validator: Box::new(*validator),
                });
            }
        }
        if self.signatures.len() < set.quorum() {
            return Err(CertError::NoQuorum {
                have: self.signatures.len(),
                need: set.quorum(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use federact_config::NodeKey;

    fn keys(n: u8) -> Vec<NodeKey> {
        (0..n).map(|i| NodeKey::from_seed(&[i + 1; 32])).collect()
    }

    fn cert(keys: &[NodeKey], signers: &[u16], block: Hash) -> CommitCertificate {
        let msg = vote_sign_bytes(VoteKind::Precommit, "c", 5, 1, Some(&block));
        CommitCertificate {
            chain_id: "c".into(),
            height: 5,
            round: 1,
            block_hash: block,
            signatures: signers
                .iter()
                .map(|&i| (i, keys[i as usize].sign(&msg)))
                .collect(),
        }
    }

    #[test]
    fn quorum_of_valid_precommits_verifies() {
        let ks = keys(4);
        let set = ValidatorSet::new(ks.iter().map(|k| k.id()).collect(), 1).unwrap();
        let b = Hash::of(b"block");
        assert_eq!(set.quorum(), 3);
        cert(&ks, &[0, 1, 3], b).verify(&set, "c", 5, &b).unwrap();
    }

    /// Structural failures: both `verify` and `verify_shape` must report
    /// each of them with the same specific error.
    fn structural_failures(
        ks: &[NodeKey],
        b: Hash,
    ) -> Vec<(CommitCertificate, u64, Hash, CertError)> {
        let mut unknown = cert(ks, &[0, 1, 2], b);
        unknown.signatures.push((9, unknown.signatures[0].1));
        vec![
            (
                cert(ks, &[0, 1], b),
                5,
                b,
                CertError::NoQuorum { have: 2, need: 3 },
            ),
            (
                cert(ks, &[0, 0, 1], b),
                5,
                b,
                CertError::DuplicateSigner { index: 0 },
            ),
            (
                cert(ks, &[0, 1, 2], b),
                6,
                b,
                CertError::Mismatch { field: "height" },
            ),
            (
                cert(ks, &[0, 1, 2], b),
                5,
                Hash::of(b"other"),
                CertError::Mismatch {
                    field: "block_hash",
                },
            ),
            (unknown, 5, b, CertError::UnknownSigner { index: 9, n: 4 }),
        ]
    }

    #[test]
    fn structural_failures_are_specific_in_both_checks() {
        let ks = keys(4);
        let set = ValidatorSet::new(ks.iter().map(|k| k.id()).collect(), 1).unwrap();
        for (c, height, block, want) in structural_failures(&ks, Hash::of(b"block")) {
            assert_eq!(c.verify_shape(&set, "c", height, &block), Err(want.clone()));
            assert_eq!(c.verify(&set, "c", height, &block), Err(want));
        }
    }

    #[test]
    fn shape_check_skips_only_the_signatures() {
        let ks = keys(4);
        let set = ValidatorSet::new(ks.iter().map(|k| k.id()).collect(), 1).unwrap();
        let b = Hash::of(b"block");
        let mut forged = cert(&ks, &[0, 1, 2], b);
        forged.signatures[1].1 .0[0] ^= 1;
        forged.verify_shape(&set, "c", 5, &b).unwrap();
        assert!(matches!(
            forged.verify(&set, "c", 5, &b),
            Err(CertError::BadSignature { index: 1, .. })
        ));
        // Signatures over another block do not transfer.
        let mut c = cert(&ks, &[0, 1, 2], Hash::of(b"other"));
        c.block_hash = b;
        c.verify_shape(&set, "c", 5, &b).unwrap();
        assert!(matches!(
            c.verify(&set, "c", 5, &b),
            Err(CertError::BadSignature { .. })
        ));
    }

    #[test]
    fn validator_set_rejects_bad_shapes_and_rotates_proposers() {
        let ks = keys(4);
        let ids: Vec<_> = ks.iter().map(|k| k.id()).collect();
        assert!(ValidatorSet::new(vec![], 0).is_none());
        assert!(ValidatorSet::new(ids.clone(), 2).is_none());
        assert!(ValidatorSet::new(vec![ids[0], ids[0]], 0).is_none());
        let set = ValidatorSet::new(ids.clone(), 1).unwrap();
        assert_eq!(set.proposer(0, 0), &ids[0]);
        assert_eq!(set.proposer(1, 0), &ids[1]);
        assert_eq!(set.proposer(1, 3), &ids[0]);
    }
}
