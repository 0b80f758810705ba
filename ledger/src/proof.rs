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

    /// The block id of the source block.
    pub fn block_id(&self) -> Hash {
        self.header.id()
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
