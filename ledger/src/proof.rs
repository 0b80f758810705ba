//! Cross-chain proofs: evidence, checkable by anyone holding the source
//! chain's validator set, that a transaction is committed on that chain.
//!
//! A [`CrossChainProof`] carries the block header, its commit certificate,
//! the transaction's encoding and its Merkle path. The gateway that relays it
//! is not trusted: [`CrossChainProof::verify`] re-derives everything.
//!
//! The transaction travels as bytes, not as a typed [`Transaction`]: records
//! can carry proofs, so a typed field would make the type recursive and let a
//! crafted input nest proofs deep enough to exhaust the decoder's stack. As
//! bytes, decoding a proof never recurses; the inner transaction is decoded
//! (with a size limit) only when the proof is verified, and proofs inside it
//! are not followed — they were checked when the source chain committed it.

use serde::{Deserialize, Serialize};

use crate::block::BlockHeader;
use crate::cert::{CommitCertificate, ValidatorSet};
use crate::codec;
use crate::error::ProofError;
use crate::hash::Hash;
use crate::merkle::MerkleProof;
use crate::tx::{Transaction, TxId, TX_BYTES_MAX};

/// Proof that `tx` is committed in the block `header` on the source chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossChainProof {
    /// The source block's header.
    pub header: BlockHeader,
    /// Its commit certificate.
    pub certificate: CommitCertificate,
    /// The transaction's canonical encoding.
    pub tx: Vec<u8>,
    /// The id the transaction was committed under (the Merkle leaf).
    pub tx_id: TxId,
    /// The path from the leaf to `header.tx_root`.
    pub path: MerkleProof,
}

impl CrossChainProof {
    /// Builds the proofs for the transactions at `indices` of a committed
    /// block (out-of-range indices are skipped), paired with their index.
    pub fn build_many(
        block: &crate::block::Block,
        certificate: &CommitCertificate,
        indices: &[usize],
    ) -> Vec<(usize, CrossChainProof)> {
        if indices.is_empty() {
            return Vec::new();
        }
        // One pass over the tree for all proofs, not one tree per proof.
        let paths = MerkleProof::build_all(&block.tx_ids());
        indices
            .iter()
            .filter_map(|&i| {
                let tx = block.txs.get(i)?;
                let path = paths.get(i)?.clone();
                Some((
                    i,
                    CrossChainProof {
                        header: block.header.clone(),
                        certificate: certificate.clone(),
                        tx: tx.encode(),
                        tx_id: tx.id(),
                        path,
                    },
                ))
            })
            .collect()
    }

    /// Builds the proof for transaction `index` of a committed block.
    /// `None` if `index` is out of range.
    pub fn build(
        block: &crate::block::Block,
        certificate: &CommitCertificate,
        index: usize,
    ) -> Option<CrossChainProof> {
        let tx = block.txs.get(index)?;
        let path = MerkleProof::build(&block.tx_ids(), index)?;
        Some(CrossChainProof {
            header: block.header.clone(),
            certificate: certificate.clone(),
            tx: tx.encode(),
            tx_id: tx.id(),
            path,
        })
    }

    /// Checks the proof against the source chain `chain_id` and its
    /// validators `source`, and returns the proven transaction:
    /// 1. the header is from `chain_id`;
    /// 2. the certificate is a quorum of `source`'s precommits for it;
    /// 3. the carried bytes decode to a transaction whose id is `tx_id`;
    /// 4. `tx_id` is at `path` under the header's `tx_root`;
    /// 5. the transaction's signature verifies.
    pub fn verify(&self, source: &ValidatorSet, chain_id: &str) -> Result<Transaction, ProofError> {
        if self.header.chain_id != chain_id {
            return Err(ProofError::WrongChain {
                expected: chain_id.to_string(),
                got: self.header.chain_id.clone(),
            });
        }
        self.certificate
            .verify(source, chain_id, self.header.height, &self.header.id())
            .map_err(ProofError::Certificate)?;
        self.verify_inclusion()
    }

    /// The block id of the source block.
    pub fn block_id(&self) -> Hash {
        self.header.id()
    }

    /// [`Self::verify`] that skips step 2 for a block whose certificate
    /// `certified` already saw verified (against the same `source`), and
    /// remembers this block once its certificate verifies. Proofs of
    /// transactions of one block share its certificate: a receiver of many
    /// (a migration actor, BASICS' notices) checks its quorum of
    /// signatures once per block instead of once per transaction. Every
    /// other step runs for each proof.
    pub fn verify_cached(
        &self,
        source: &ValidatorSet,
        chain_id: &str,
        certified: &mut CertifiedBlocks,
    ) -> Result<Transaction, ProofError> {
        let id = self.header.id();
        if self.header.chain_id == chain_id && certified.contains(&id) {
            return self.verify_inclusion();
        }
        let tx = self.verify(source, chain_id)?;
        certified.insert(id);
        Ok(tx)
    }

    /// Steps 3–5 of [`Self::verify`].
    fn verify_inclusion(&self) -> Result<Transaction, ProofError> {
        let tx: Transaction =
            codec::decode(&self.tx, TX_BYTES_MAX).map_err(ProofError::MalformedTx)?;
        let computed = tx.id();
        if computed != self.tx_id {
            return Err(ProofError::AlteredRecord {
                claimed: self.tx_id,
                computed,
            });
        }
        if !self.path.verify(&self.tx_id, &self.header.tx_root) {
            return Err(ProofError::BadMerklePath {
                index: self.path.index,
                leaf_count: self.path.leaf_count,
            });
        }
        tx.verify_signature().map_err(ProofError::BadTx)?;
        Ok(tx)
    }
}

/// Ids of blocks whose commit certificates were verified, the most recent
/// `capacity` of them ([`CrossChainProof::verify_cached`]). A block id
/// hashes the whole header (chain id and height included), so an entry
/// vouches for exactly one block. Bounded: the oldest id is forgotten first.
#[derive(Debug, Clone)]
pub struct CertifiedBlocks {
    ids: std::collections::HashSet<Hash>,
    order: std::collections::VecDeque<Hash>,
    capacity: usize,
}

impl CertifiedBlocks {
    /// An empty cache remembering at most `capacity` (at least 1) blocks.
    pub fn new(capacity: usize) -> Self {
        CertifiedBlocks {
            ids: std::collections::HashSet::new(),
            order: std::collections::VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether block `id`'s certificate was verified.
    pub fn contains(&self, id: &Hash) -> bool {
        self.ids.contains(id)
    }

    /// Remembers block `id` as certified, forgetting the oldest beyond capacity.
    pub fn insert(&mut self, id: Hash) {
        if !self.ids.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    /// Blocks remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no block is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::block::tests::{certify, genesis, next_block, validators};
    use crate::block::Block;
    use crate::cert::CertError;
    use crate::record::tests::arb_plain_record;
    use crate::record::{Record, Scope};
    use crate::tx::tests::{key, orch};
    use federact_config::ChainKind;
    use proptest::prelude::*;

    /// A committed consortium block "cons" at height 1 with `records`, and
    /// its certificate.
    pub(crate) fn committed(records: Vec<Record>) -> (Block, CommitCertificate) {
        let g = genesis("cons", ChainKind::Consortium, None);
        let txs = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| Transaction::sign(r, &key(9), i as u64 + 1, 1, None))
            .collect();
        let b = next_block(&g, &g.tip(), txs);
        let c = certify(&b.header, 0);
        (b, c)
    }

    pub(crate) fn set() -> ValidatorSet {
        ValidatorSet::new(validators().iter().map(|k| k.id()).collect(), 1).unwrap()
    }

    fn confirmation() -> Record {
        Record::Confirmation {
            migration_id: Hash::of(b"m"),
            vm_id: Hash::of(b"vm"),
            accepted: true,
            observed_hash: Hash::of(b"vm"),
            reason: None,
            scope: Scope::Inter,
        }
    }

    #[test]
    fn valid_proof_returns_the_committed_transaction() {
        let (b, c) = committed(vec![orch("a"), confirmation(), orch("b")]);
        let p = CrossChainProof::build(&b, &c, 1).unwrap();
        let tx = p.verify(&set(), "cons").unwrap();
        assert_eq!(tx.record(), &confirmation());
        assert!(CrossChainProof::build(&b, &c, 3).is_none());
    }

    #[test]
    fn cached_verification_checks_each_certificate_once_and_every_inclusion() {
        let (b, c) = committed(vec![orch("a"), confirmation(), orch("b")]);
        let mut seen = CertifiedBlocks::new(2);
        // A certificate from strangers is not remembered.
        let strangers = ValidatorSet::new(vec![key(50).id()], 0).unwrap();
        let p0 = CrossChainProof::build(&b, &c, 0).unwrap();
        assert!(p0.verify_cached(&strangers, "cons", &mut seen).is_err());
        assert!(seen.is_empty());
        assert_eq!(
            p0.verify_cached(&set(), "cons", &mut seen)
                .unwrap()
                .record(),
            &orch("a")
        );
        assert!(seen.contains(&b.header.id()));
        // Another proof of the same block: its certificate is not checked
        // again (a stripped one passes), but its inclusion still is.
        let mut p1 = CrossChainProof::build(&b, &c, 1).unwrap();
        p1.certificate.signatures.clear();
        assert_eq!(
            p1.verify_cached(&set(), "cons", &mut seen)
                .unwrap()
                .record(),
            &confirmation()
        );
        assert!(p1.verify(&set(), "cons").is_err());
        let mut forged = p1.clone();
        forged.path = MerkleProof::build(&b.tx_ids(), 2).unwrap();
        assert!(matches!(
            forged.verify_cached(&set(), "cons", &mut seen),
            Err(ProofError::BadMerklePath { .. })
        ));
        // A header altered after certification is another block: its
        // (absent) certificate is checked.
        let mut altered = p1.clone();
        altered.header.timestamp_ms += 1;
        assert!(matches!(
            altered.verify_cached(&set(), "cons", &mut seen),
            Err(ProofError::Certificate(_))
        ));
        assert!(matches!(
            p1.verify_cached(&set(), "other", &mut seen),
            Err(ProofError::WrongChain { .. })
        ));
        // Bounded: the oldest block is forgotten first.
        seen.insert(Hash::of(b"x"));
        seen.insert(Hash::of(b"y"));
        assert_eq!(seen.len(), 2);
        assert!(!seen.contains(&b.header.id()));
    }

    #[test]
    fn each_forgery_gets_its_own_error() {
        let (b, c) = committed(vec![orch("a"), confirmation(), orch("b")]);
        let p = CrossChainProof::build(&b, &c, 1).unwrap();

        assert!(matches!(
            p.verify(&set(), "other"),
            Err(ProofError::WrongChain { .. })
        ));

        // Certificate from other validators.
        let strangers = ValidatorSet::new(vec![key(50).id()], 0).unwrap();
        assert!(matches!(
            p.verify(&strangers, "cons"),
            Err(ProofError::Certificate(CertError::BadSignature { .. }))
        ));
        let mut q = p.clone();
        q.certificate.signatures.truncate(2);
        assert!(matches!(
            q.verify(&set(), "cons"),
            Err(ProofError::Certificate(CertError::NoQuorum { .. }))
        ));
        // Header altered after certification.
        let mut q = p.clone();
        q.header.timestamp_ms += 1;
        assert!(matches!(
            q.verify(&set(), "cons"),
            Err(ProofError::Certificate(CertError::Mismatch { .. }))
        ));

        // Record altered: the carried bytes no longer hash to the leaf.
        let altered = Transaction::sign(
            Record::Confirmation {
                migration_id: Hash::of(b"m"),
                vm_id: Hash::of(b"vm"),
                accepted: true,
                observed_hash: Hash::of(b"evil"),
                reason: None,
                scope: Scope::Inter,
            },
            &key(9),
            2,
            1,
            None,
        );
        let mut q = p.clone();
        q.tx = altered.encode();
        assert!(matches!(
            q.verify(&set(), "cons"),
            Err(ProofError::AlteredRecord { .. })
        ));
        // ...and claiming its id instead breaks the Merkle path.
        q.tx_id = altered.id();
        assert!(matches!(
            q.verify(&set(), "cons"),
            Err(ProofError::BadMerklePath { .. })
        ));

        // Path for another leaf.
        let mut q = p.clone();
        q.path = MerkleProof::build(&b.tx_ids(), 0).unwrap();
        assert!(matches!(
            q.verify(&set(), "cons"),
            Err(ProofError::BadMerklePath { index: 0, .. })
        ));

        // Garbage bytes.
        let mut q = p.clone();
        q.tx = vec![1, 2, 3];
        assert!(matches!(
            q.verify(&set(), "cons"),
            Err(ProofError::MalformedTx(_))
        ));

        // Signature swapped (id unchanged: the id covers the signed bytes).
        let t = &b.txs[1];
        let mut sig = *t.signature();
        sig.0[1] ^= 1;
        let resigned = Transaction::from_parts(
            t.record().clone(),
            *t.author(),
            t.nonce(),
            t.timestamp_ms(),
            t.trace_id(),
            sig,
        );
        let mut q = p;
        q.tx = resigned.encode();
        assert!(matches!(
            q.verify(&set(), "cons"),
            Err(ProofError::BadTx(_))
        ));
    }

    proptest! {
        #[test]
        fn proofs_round_trip(records in proptest::collection::vec(arb_plain_record(), 1..6), pick in any::<usize>()) {
            let n = records.len();
            let (b, c) = committed(records);
            let p = CrossChainProof::build(&b, &c, pick % n).unwrap();
            let back: CrossChainProof = codec::decode(&codec::encode(&p), 1 << 20).unwrap();
            prop_assert_eq!(&back, &p);
            back.verify(&set(), "cons").unwrap();
            // Records carrying proofs round-trip too.
            let m = Hash::of(b"m");
            let vm = Hash::of(b"vm");
            for r in [
                Record::Arrival { migration_id: m, vm_id: vm, proof: Box::new(p.clone()) },
                Record::Leave { migration_id: m, vm_id: vm, proof: Box::new(p.clone()) },
                Record::Relayed { proof: Box::new(p) },
            ] {
                let back: Record = codec::decode(&codec::encode(&r), 1 << 20).unwrap();
                prop_assert_eq!(back, r);
            }
        }
    }
}
