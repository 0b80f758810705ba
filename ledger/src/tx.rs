//! Signed transactions: a [`Record`] with its author, nonce, timestamp and
//! optional OpenTelemetry trace id, signed with the author's ed25519 key.
//!
//! The signed bytes are the canonical encoding of every field but the
//! signature, and the transaction id ([`TxId`]) is their sha256. Since bincode
//! encodes a struct as its fields in order, the full encoding is exactly the
//! signed bytes followed by the signature, so both are computed from one
//! encoding, which a transaction caches: verifying, hashing into a Merkle
//! tree and indexing a block encodes each transaction once.
//!
//! Stateless checks live here ([`Transaction::verify`], [`verify_batch`]);
//! nonce order and the state machines are in [`crate::rules`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use federact_config::{NodeId, NodeKey, Signature};

use crate::codec;
use crate::error::TxError;
use crate::hash::Hash;
use crate::record::Record;

/// A transaction id: sha256 of the transaction's signed bytes.
pub type TxId = Hash;

/// Default largest encoded transaction, in bytes.
pub const TX_BYTES_MAX: usize = 64 * 1024;

/// A signed record.
///
/// Fields are private so the cached encoding can never go stale; build one
/// with [`Transaction::sign`] (or [`Transaction::from_parts`] for a signature
/// made elsewhere) and read it through the accessors.
///
/// Cloning is cheap (one reference count): a transaction is immutable once
/// made and its parts live behind an `Arc`, so the blocks, proposals, votes'
/// values and mempool entries that hold it share one copy — and one cached
/// encoding and id. The consensus core clones a proposed block several
/// times per height (WAL entry, broadcast, lock, decision); a deep copy of
/// every record there was the validator's largest allocation cost.
#[derive(Clone)]
pub struct Transaction(Arc<TxBody>);

/// The parts of a [`Transaction`]; encodes exactly like it.
#[derive(Serialize, Deserialize)]
struct TxBody {
    record: Record,
    author: NodeId,
    nonce: u64,
    timestamp_ms: u64,
    trace_id: Option<[u8; 16]>,
    signature: Signature,
    #[serde(skip)]
    cache: OnceLock<Cached>,
}

#[derive(Clone)]
struct Cached {
    id: TxId,
    signed: Vec<u8>,
}

/// The signed part of a transaction: encodes exactly like a [`Transaction`]
/// without its signature.
#[derive(Serialize)]
struct Unsigned<'a> {
    record: &'a Record,
    author: &'a NodeId,
    nonce: u64,
    timestamp_ms: u64,
    trace_id: &'a Option<[u8; 16]>,
}

impl TxBody {
    fn cached(&self) -> &Cached {
        self.cache.get_or_init(|| {
            let signed = codec::encode(&Unsigned {
                record: &self.record,
                author: &self.author,
                nonce: self.nonce,
                timestamp_ms: self.timestamp_ms,
                trace_id: &self.trace_id,
            });
            Cached {
                id: Hash::of(&signed),
                signed,
            }
        })
    }
}

impl Transaction {
    /// Signs `record` as `key`'s author with `nonce` (strictly increasing per
    /// author and chain, starting at 1).
    pub fn sign(
        record: Record,
        key: &NodeKey,
        nonce: u64,
        timestamp_ms: u64,
        trace_id: Option<[u8; 16]>,
    ) -> Transaction {
        let mut body = TxBody {
            record,
            author: key.id(),
            nonce,
            timestamp_ms,
            trace_id,
            signature: Signature([0; 64]),
            cache: OnceLock::new(),
        };
        // The cached encoding leaves the signature out, so it stays valid.
        body.signature = key.sign(&body.cached().signed);
        Transaction(Arc::new(body))
    }

    /// Assembles a transaction from its parts without checking the signature.
    pub fn from_parts(
        record: Record,
        author: NodeId,
        nonce: u64,
        timestamp_ms: u64,
        trace_id: Option<[u8; 16]>,
        signature: Signature,
    ) -> Transaction {
        Transaction(Arc::new(TxBody {
            record,
            author,
            nonce,
            timestamp_ms,
            trace_id,
            signature,
            cache: OnceLock::new(),
        }))
    }

    /// Decodes an untrusted encoding, refusing more than `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Transaction, TxError> {
        if bytes.len() > max {
            return Err(TxError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        codec::decode(bytes, max).map_err(TxError::Malformed)
    }

    /// The canonical encoding (signed bytes followed by the signature).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.signed_bytes());
        // serde bytes in bincode: a varint length (64 fits one byte), then the bytes.
        out.push(64);
        out.extend_from_slice(&self.0.signature.0);
    }

    fn cached(&self) -> &Cached {
        self.0.cached()
    }

    /// The bytes the author signs: the encoding of all fields but the signature.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.cached().signed
    }

    /// The transaction id: sha256 of [`Transaction::signed_bytes`].
    pub fn id(&self) -> TxId {
        self.cached().id
    }

    /// Length of the canonical encoding: signed bytes plus the 65-byte
    /// length-prefixed signature.
    pub fn encoded_len(&self) -> usize {
        self.signed_bytes().len() + 65
    }

    /// The record.
    pub fn record(&self) -> &Record {
        &self.0.record
    }
    /// The author's key.
    pub fn author(&self) -> &NodeId {
        &self.0.author
    }
    /// The author's nonce.
    pub fn nonce(&self) -> u64 {
        self.0.nonce
    }
    /// When the author made it, milliseconds since the epoch (author's clock).
    pub fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms
    }
    /// The OpenTelemetry trace id of the operation that produced it.
    pub fn trace_id(&self) -> Option<[u8; 16]> {
        self.0.trace_id
    }
    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.0.signature
    }

    /// Only the signature, checked strictly (single verification).
    ///
    /// Calls ed25519-dalek's `verify_strict` directly rather than
    /// `NodeId::verify`, which also runs the lenient check: anything the
    /// strict check accepts the lenient one accepts too, so that second
    /// verification would only halve the rate.
    pub fn verify_signature(&self) -> Result<(), TxError> {
        let sig = ed25519_dalek::Signature::from_bytes(&self.0.signature.0);
        if self
            .0
            .author
            .verifying_key()
            .verify_strict(self.signed_bytes(), &sig)
            .is_ok()
        {
            Ok(())
        } else {
            Err(TxError::BadSignature {
                tx_id: self.id(),
                author: Box::new(self.0.author),
            })
        }
    }

    /// Everything but the signature: size, record shape, author allowed.
    pub fn verify_static(&self, policy: &TxPolicy) -> Result<(), TxError> {
        let len = self.encoded_len();
        if len > policy.tx_bytes_max {
            return Err(TxError::TooLarge {
                len,
                max: policy.tx_bytes_max,
            });
        }
        if self.0.author.verifying_key().is_weak() {
            return Err(TxError::WeakAuthorKey {
                author: Box::new(self.0.author),
            });
        }
        if let Some(writers) = &policy.writers {
            if !writers.contains(&self.0.author) {
                return Err(TxError::UnknownAuthor {
                    author: Box::new(self.0.author),
                });
            }
        }
        self.0.record.check_shape()?;
        Ok(())
    }

    /// Full stateless verification of one transaction: [`Self::verify_static`]
    /// then the signature. Nonces need chain state: see
    /// [`crate::rules::apply_tx`].
    pub fn verify(&self, policy: &TxPolicy) -> Result<(), TxError> {
        self.verify_static(policy)?;
        self.verify_signature()
    }
}

impl Serialize for Transaction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Transaction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TxBody::deserialize(d).map(|body| Transaction(Arc::new(body)))
    }
}

impl PartialEq for Transaction {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || self.0.record == other.0.record
                && self.0.author == other.0.author
                && self.0.nonce == other.0.nonce
                && self.0.timestamp_ms == other.0.timestamp_ms
                && self.0.trace_id == other.0.trace_id
                && self.0.signature == other.0.signature
    }
}

impl Eq for Transaction {}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("id", &self.id())
            .field("record", &self.0.record)
            .field("author", &self.0.author)
            .field("nonce", &self.0.nonce)
            .field("timestamp_ms", &self.0.timestamp_ms)
            .finish_non_exhaustive()
    }
}

/// What stateless verification enforces for a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxPolicy {
    /// Largest encoded transaction.
    pub tx_bytes_max: usize,
    /// Who may author transactions; `None` admits any key.
    pub writers: Option<BTreeSet<NodeId>>,
}

impl Default for TxPolicy {
    fn default() -> Self {
        TxPolicy {
            tx_bytes_max: TX_BYTES_MAX,
            writers: None,
        }
    }
}

/// Verifies many transactions' signatures at once with ed25519 batch
/// verification (about twice as fast as one by one), after the stateless
/// checks of each ([`Transaction::verify_static`]). On failure, finds and names the first bad transaction
/// (by single strict verification) and returns its index.
///
/// Batch verification is deterministic here (its randomness is derived from
/// the inputs), so every validator reaches the same verdict for a block.
pub fn verify_batch(txs: &[Transaction], policy: &TxPolicy) -> Result<(), (usize, TxError)> {
    for (i, tx) in txs.iter().enumerate() {
        tx.verify_static(policy).map_err(|e| (i, e))?;
    }
    let refs: Vec<&Transaction> = txs.iter().collect();
    verify_signatures_batch(&refs)
}

/// Only the signatures of `txs`, batch-verified; on failure the index (in
/// `txs`) of the first bad one. See [`verify_batch`].
pub fn verify_signatures_batch(txs: &[&Transaction]) -> Result<(), (usize, TxError)> {
    if txs.is_empty() {
        return Ok(());
    }
    let messages: Vec<&[u8]> = txs.iter().map(|t| t.signed_bytes()).collect();
    let signatures: Vec<ed25519_dalek::Signature> = txs
        .iter()
        .map(|t| ed25519_dalek::Signature::from_bytes(&t.0.signature.0))
        .collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> =
        txs.iter().map(|t| *t.0.author.verifying_key()).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return Ok(());
    }
    for (i, tx) in txs.iter().enumerate() {
        tx.verify_signature().map_err(|e| (i, e))?;
    }
    // The batch equation failed yet every signature verifies alone: can only
    // happen with crafted small-order components. Reject the first tx.
    match txs.first() {
        Some(tx) => Err((
            0,
            TxError::BadSignature {
                tx_id: tx.id(),
                author: Box::new(tx.0.author),
            },
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::tests::arb_plain_record;
    use crate::record::{EntityKind, IdProof};
    use proptest::prelude::*;

    pub(crate) fn key(i: u8) -> NodeKey {
        NodeKey::from_seed(&[i; 32])
    }

    pub(crate) fn orch(entity: &str) -> Record {
        Record::ProvOrch {
            deployed: entity.into(),
            location: "server-1".into(),
        }
    }

    proptest! {
        #[test]
        fn transactions_round_trip_and_keep_their_id(
            r in arb_plain_record(),
            seed in any::<[u8; 32]>(),
            nonce in any::<u64>(),
            ts in any::<u64>(),
            trace in proptest::option::of(any::<[u8; 16]>()),
        ) {
            let tx = Transaction::sign(r, &NodeKey::from_seed(&seed), nonce, ts, trace);
            let bytes = tx.encode();
            prop_assert_eq!(bytes.len(), tx.encoded_len());
            prop_assert_eq!(&bytes, &codec::encode(&tx));
            let back = Transaction::decode(&bytes, 1 << 20).unwrap();
            prop_assert_eq!(back.id(), tx.id());
            back.verify_signature().unwrap();
            prop_assert_eq!(back, tx);
        }
    }

    #[test]
    fn signature_covers_every_field_including_trace_id() {
        let k = key(1);
        let tx = Transaction::sign(orch("c1"), &k, 1, 10, Some([7; 16]));
        tx.verify(&TxPolicy::default()).unwrap();
        let parts = |record: Record, nonce, ts, trace| {
            Transaction::from_parts(record, k.id(), nonce, ts, trace, *tx.signature())
        };
        for altered in [
            parts(orch("c2"), 1, 10, Some([7; 16])),
            parts(orch("c1"), 2, 10, Some([7; 16])),
            parts(orch("c1"), 1, 11, Some([7; 16])),
            parts(orch("c1"), 1, 10, None),
        ] {
            assert_ne!(altered.id(), tx.id());
            assert!(matches!(
                altered.verify_signature(),
                Err(TxError::BadSignature { .. })
            ));
        }
    }

    #[test]
    fn wrong_author_and_bad_signature_are_rejected() {
        let tx = Transaction::sign(orch("c1"), &key(1), 1, 10, None);
        // Claimed author differs from the signer.
        let forged = Transaction::from_parts(orch("c1"), key(2).id(), 1, 10, None, *tx.signature());
        assert_eq!(
            forged.verify(&TxPolicy::default()),
            Err(TxError::BadSignature {
                tx_id: forged.id(),
                author: Box::new(key(2).id())
            })
        );
        let mut sig = *tx.signature();
        sig.0[10] ^= 1;
        let bad = Transaction::from_parts(orch("c1"), key(1).id(), 1, 10, None, sig);
        assert!(matches!(
            bad.verify(&TxPolicy::default()),
            Err(TxError::BadSignature { .. })
        ));
        // Author not among the chain's writers.
        let policy = TxPolicy {
            writers: Some([key(3).id()].into_iter().collect()),
            ..TxPolicy::default()
        };
        assert_eq!(
            tx.verify(&policy),
            Err(TxError::UnknownAuthor {
                author: Box::new(key(1).id())
            })
        );
    }

    #[test]
    fn weak_author_keys_are_rejected() {
        // The identity point: a small-order key any signature could verify
        // against under the lenient equation.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = NodeId::from_bytes(&identity).unwrap();
        let tx = Transaction::from_parts(orch("c1"), weak, 1, 0, None, Signature([0; 64]));
        assert_eq!(
            tx.verify(&TxPolicy::default()),
            Err(TxError::WeakAuthorKey {
                author: Box::new(weak)
            })
        );
    }

    #[test]
    fn oversized_and_malformed_encodings_are_rejected() {
        let tx = Transaction::sign(
            Record::ProvIdCreate {
                kind: EntityKind::Container,
                entity: "c".repeat(100),
                id_proof: IdProof {
                    digest: Hash::ZERO,
                    attested_by: key(1).id(),
                },
            },
            &key(1),
            1,
            0,
            None,
        );
        let bytes = tx.encode();
        assert!(matches!(
            Transaction::decode(&bytes, 50),
            Err(TxError::TooLarge { max: 50, .. })
        ));
        let policy = TxPolicy {
            tx_bytes_max: 50,
            writers: None,
        };
        assert!(matches!(
            tx.verify(&policy),
            Err(TxError::TooLarge { max: 50, .. })
        ));
        assert!(matches!(
            Transaction::decode(&bytes[..bytes.len() - 1], 1 << 16),
            Err(TxError::Malformed(_))
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Transaction::decode(&long, 1 << 16),
            Err(TxError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_record_fails_verification() {
        let tx = Transaction::sign(orch(""), &key(1), 1, 0, None);
        assert!(matches!(
            tx.verify(&TxPolicy::default()),
            Err(TxError::Record(_))
        ));
    }

    #[test]
    fn batch_verification_accepts_good_and_names_the_bad() {
        let mut txs: Vec<_> = (0..20)
            .map(|i| Transaction::sign(orch(&format!("c{i}")), &key(i as u8 % 4), i + 1, 0, None))
            .collect();
        verify_batch(&txs, &TxPolicy::default()).unwrap();
        verify_batch(&[], &TxPolicy::default()).unwrap();
        let t = &txs[13];
        let mut sig = *t.signature();
        sig.0[0] ^= 1;
        txs[13] = Transaction::from_parts(
            t.record().clone(),
            *t.author(),
            t.nonce(),
            t.timestamp_ms(),
            None,
            sig,
        );
        let (i, e) = verify_batch(&txs, &TxPolicy::default()).unwrap_err();
        assert_eq!(i, 13);
        assert!(matches!(e, TxError::BadSignature { .. }));
    }
}
