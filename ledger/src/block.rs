//! Blocks, their headers, and the genesis every chain starts from.
//!
//! A block id is the sha256 of its header's canonical encoding; the header
//! commits to the transactions through `tx_root` (see [`crate::merkle`]) and
//! to the previous block through `prev_hash`.
//!
//! The genesis block (height 0) commits to a [`Genesis`] — chain id and kind,
//! the chain's validator set and f, for a local chain the consortium's
//! validator set, who may write, and the limits — through its `tx_root`, so
//! a store describes itself and can be verified from its files alone.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use federact_config::{ChainKind, Federation, NodeId};

use crate::cert::{CertError, CommitCertificate, ValidatorSet};
use crate::codec;
use crate::error::{BlockError, LedgerError, TxError};
use crate::hash::Hash;
use crate::merkle;
use crate::record::NAME_LEN_MAX;
use crate::tx::{self, Transaction, TxId, TxPolicy};

/// Default most transactions per block.
pub const BLOCK_TXS_MAX: u32 = 10_000;
/// Default largest encoded block, in bytes.
pub const BLOCK_BYTES_MAX: u64 = 16 << 20;
/// Most writers a genesis may list.
pub const WRITERS_MAX: usize = 4096;

/// A block's header: what validators sign (through its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// The chain.
    pub chain_id: String,
    /// 0 for genesis, then +1 per block.
    pub height: u64,
    /// Id of the block at `height - 1` ([`Hash::ZERO`] for genesis).
    pub prev_hash: Hash,
    /// Merkle root of the transaction ids (for genesis: the genesis digest).
    pub tx_root: Hash,
    /// The validator that proposed the block.
    pub proposer: NodeId,
    /// The consensus round it was proposed in.
    pub round: u32,
    /// Proposer's clock, milliseconds since the epoch; never decreases.
    pub timestamp_ms: u64,
}

impl BlockHeader {
    /// The block id: sha256 of the header's canonical encoding.
    pub fn id(&self) -> Hash {
        Hash::of(&codec::encode(self))
    }
}

/// A header and its transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The transactions, in order of application.
    pub txs: Vec<Transaction>,
}

impl Block {
    /// A block over `txs` with its `tx_root` computed.
    pub fn new(
        chain_id: &str,
        height: u64,
        prev_hash: Hash,
        proposer: NodeId,
        round: u32,
        timestamp_ms: u64,
        txs: Vec<Transaction>,
    ) -> Block {
        let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
        Block {
            header: BlockHeader {
                chain_id: chain_id.to_string(),
                height,
                prev_hash,
                tx_root: merkle::root(&ids),
                proposer,
                round,
                timestamp_ms,
            },
            txs,
        }
    }

    /// The block id (its header's).
    pub fn id(&self) -> Hash {
        self.header.id()
    }

    /// The transaction ids in order.
    pub fn tx_ids(&self) -> Vec<TxId> {
        self.txs.iter().map(Transaction::id).collect()
    }

    /// The canonical encoding, assembled from each transaction's cached
    /// encoding (identical to `codec::encode(self)`, without re-encoding the
    /// records).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = codec::encode(&self.header);
        out.reserve(self.encoded_len().saturating_sub(out.len()));
        out.extend_from_slice(&codec::encode(&(self.txs.len() as u64)));
        for tx in &self.txs {
            tx.encode_into(&mut out);
        }
        out
    }

    /// Decodes an untrusted encoding of at most `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Block, codec::DecodeError> {
        codec::decode(bytes, max)
    }

    /// Encoded length without encoding: the header plus each transaction's
    /// cached encoding plus the length prefix.
    pub fn encoded_len(&self) -> usize {
        codec::encode(&self.header).len()
            + varint_len(self.txs.len() as u64)
            + self.txs.iter().map(Transaction::encoded_len).sum::<usize>()
    }

    /// Stateless checks of the body against the header and `limits`:
    /// transaction count and size, `tx_root`, and every transaction's
    /// size, shape, author and signature (batch-verified).
    pub fn check_body(&self, limits: &Limits, policy: &TxPolicy) -> Result<(), BlockError> {
        self.check_body_with(limits, policy, &|_| false)
    }

    /// [`Self::check_body`], skipping the signatures of transactions for
    /// which `already_verified` returns true — e.g. the exact transaction
    /// (same id and signature) this node verified (batch or strict) when it entered
    /// its mempool. The verdict is the same as verifying everything: a
    /// strictly valid signature adds nothing to the batch equation.
    pub fn check_body_with(
        &self,
        limits: &Limits,
        policy: &TxPolicy,
        already_verified: &dyn Fn(&Transaction) -> bool,
    ) -> Result<(), BlockError> {
        self.check_body_unsigned(limits, policy)?;
        let (index_map, todo): (Vec<usize>, Vec<&Transaction>) = self
            .txs
            .iter()
            .enumerate()
            .filter(|(_, t)| !already_verified(t))
            .unzip();
        tx::verify_signatures_batch(&todo).map_err(|(sub, source): (usize, TxError)| {
            let index = index_map.get(sub).copied().unwrap_or(sub);
            BlockError::Tx {
                height: self.header.height,
                index,
                tx_id: self.txs.get(index).map(Transaction::id).unwrap_or_default(),
                source: Box::new(source),
            }
        })
    }

    /// [`Self::check_body`] without verifying signatures: for a body whose
    /// signatures this node already verified.
    pub fn check_body_unsigned(
        &self,
        limits: &Limits,
        policy: &TxPolicy,
    ) -> Result<(), BlockError> {
        let height = self.header.height;
        if self.txs.len() > limits.block_txs_max as usize {
            return Err(BlockError::TooManyTxs {
                height,
                count: self.txs.len(),
                max: limits.block_txs_max as usize,
            });
        }
        let len = self.encoded_len();
        if len as u64 > limits.block_bytes_max {
            return Err(BlockError::TooLarge {
                height,
                len,
                max: limits.block_bytes_max as usize,
            });
        }
        let ids = self.tx_ids();
        let root = merkle::root(&ids);
        if root != self.header.tx_root {
            return Err(BlockError::TxRootMismatch {
                height,
                expected: root,
                got: self.header.tx_root,
            });
        }
        for (index, tx) in self.txs.iter().enumerate() {
            tx.verify_static(policy).map_err(|source| BlockError::Tx {
                height,
                index,
                tx_id: ids.get(index).copied().unwrap_or_default(),
                source: Box::new(source),
            })?;
        }
        Ok(())
    }
}

fn varint_len(v: u64) -> usize {
    match v {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// The most recent committed block, as the store and rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    /// Its height.
    pub height: u64,
    /// Its id.
    pub id: Hash,
    /// Its timestamp.
    pub timestamp_ms: u64,
}

/// Checks that `header` extends `tip` on `genesis`' chain, was proposed by
/// the round-robin proposer of its height and round, and that `cert`
/// certifies it with the chain's validators.
pub fn check_header(
    genesis: &Genesis,
    tip: &Tip,
    header: &BlockHeader,
    cert: &CommitCertificate,
) -> Result<(), BlockError> {
    check_link(genesis, tip, header)?;
    cert.verify(
        &genesis.validators,
        &genesis.chain_id,
        header.height,
        &header.id(),
    )
    .map_err(|source: CertError| BlockError::Certificate {
        height: header.height,
        source,
    })
}

/// [`check_header`] without the certificate: what a validator checks of a
/// proposal before voting for it.
pub fn check_link(genesis: &Genesis, tip: &Tip, header: &BlockHeader) -> Result<(), BlockError> {
    let height = header.height;
    if header.chain_id != genesis.chain_id {
        return Err(BlockError::WrongChain {
            expected: genesis.chain_id.clone(),
            got: header.chain_id.clone(),
        });
    }
    if height != tip.height.saturating_add(1) {
        return Err(BlockError::WrongHeight {
            expected: tip.height.saturating_add(1),
            got: height,
        });
    }
    if header.prev_hash != tip.id {
        return Err(BlockError::BrokenLink {
            height,
            expected: tip.id,
            got: header.prev_hash,
        });
    }
    let expected = genesis.validators.proposer(height, header.round);
    if &header.proposer != expected {
        return Err(BlockError::WrongProposer {
            height,
            round: header.round,
            expected: Box::new(*expected),
            got: Box::new(header.proposer),
        });
    }
    if header.timestamp_ms < tip.timestamp_ms {
        return Err(BlockError::TimeWentBack {
            height,
            prev: tip.timestamp_ms,
            got: header.timestamp_ms,
        });
    }
    Ok(())
}

/// Size limits of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest encoded transaction.
    pub tx_bytes_max: u32,
    /// Most transactions per block.
    pub block_txs_max: u32,
    /// Largest encoded block.
    pub block_bytes_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tx_bytes_max: tx::TX_BYTES_MAX as u32,
            block_txs_max: BLOCK_TXS_MAX,
            block_bytes_max: BLOCK_BYTES_MAX,
        }
    }
}

/// The consortium as a local chain knows it: to verify cross-chain proofs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsortiumRef {
    /// The consortium chain id.
    pub chain_id: String,
    /// Its validators.
    pub validators: ValidatorSet,
}

/// What a chain is, fixed at its creation and committed by its genesis block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// The chain id.
    pub chain_id: String,
    /// Local or consortium.
    pub kind: ChainKind,
    /// The owning cloud of a local chain.
    pub cloud: Option<String>,
    /// The chain's validators and f.
    pub validators: ValidatorSet,
    /// For a local chain: the consortium, whose proofs it accepts.
    pub consortium: Option<ConsortiumRef>,
    /// Who may author transactions (sorted, distinct); empty admits anyone.
    pub writers: Vec<NodeId>,
    /// Size limits.
    pub limits: Limits,
}

impl Genesis {
    /// The genesis of `chain_id` as `federation` describes it. Writers are
    /// the nodes of the chain's cloud (a local chain) or all members (the
    /// consortium); limits come from the chain's parameters.
    pub fn from_federation(
        federation: &Federation,
        chain_id: &str,
    ) -> Result<Genesis, LedgerError> {
        let invalid = |detail: String| LedgerError::InvalidGenesis {
            chain_id: chain_id.to_string(),
            detail,
        };
        let spec = federation
            .chain(chain_id)
            .ok_or_else(|| invalid("no such chain in the federation".into()))?;
        let consortium = match spec.kind() {
            ChainKind::Local => federation.consortium().map(|c| ConsortiumRef {
                chain_id: c.id().to_string(),
                validators: ValidatorSet::from_spec(c),
            }),
            ChainKind::Consortium => None,
        };
        let mut writers: Vec<NodeId> = federation
            .nodes()
            .iter()
            .filter(|n| spec.cloud().is_none_or(|c| n.cloud() == c))
            .map(|n| n.id())
            .collect();
        writers.sort();
        writers.dedup();
        let params = spec.params();
        let limits = Limits {
            tx_bytes_max: tx::TX_BYTES_MAX as u32,
            block_txs_max: params.block_size_txs.max(1),
            block_bytes_max: params.block_bytes_max.max(1),
        };
        let genesis = Genesis {
            chain_id: chain_id.to_string(),
            kind: spec.kind(),
            cloud: spec.cloud().map(str::to_string),
            validators: ValidatorSet::from_spec(spec),
            consortium,
            writers,
            limits,
        };
        genesis.check().map_err(invalid)?;
        Ok(genesis)
    }

    /// Checks a genesis read from disk or built by hand: names bounded,
    /// validator sets well-formed (n ≥ 3f+1, distinct), writers sorted and
    /// distinct, a consortium only for a local chain.
    pub fn check(&self) -> Result<(), String> {
        if self.chain_id.is_empty() || self.chain_id.len() > NAME_LEN_MAX {
            return Err(format!("chain id must be 1 to {NAME_LEN_MAX} bytes"));
        }
        let set_ok = |s: &ValidatorSet| {
            ValidatorSet::new(s.validators().to_vec(), s.fault_tolerance()).is_some()
        };
        if !set_ok(&self.validators) {
            return Err("validator set is empty, has duplicates or n < 3f+1".into());
        }
        if let Some(c) = &self.consortium {
            if self.kind != ChainKind::Local {
                return Err("only a local chain names a consortium".into());
            }
            if !set_ok(&c.validators) || c.chain_id.is_empty() || c.chain_id.len() > NAME_LEN_MAX {
                return Err("consortium validator set or id invalid".into());
            }
        }
        if self.writers.len() > WRITERS_MAX || !self.writers.windows(2).all(|w| w[0] < w[1]) {
            return Err("writers must be sorted, distinct and at most 4096".into());
        }
        if self.limits.tx_bytes_max == 0 || self.limits.block_txs_max == 0 {
            return Err("limits must be positive".into());
        }
        Ok(())
    }

    /// The digest the genesis block's `tx_root` carries.
    pub fn digest(&self) -> Hash {
        Hash::of_parts(&[b"federact/genesis/v1", &codec::encode(self)])
    }

    /// The genesis block: height 0, no transactions, `tx_root` = digest.
    pub fn block(&self) -> Block {
        let proposer = *self.validators.proposer(0, 0);
        Block {
            header: BlockHeader {
                chain_id: self.chain_id.clone(),
                height: 0,
                prev_hash: Hash::ZERO,
                tx_root: self.digest(),
                proposer,
                round: 0,
                timestamp_ms: 0,
            },
            txs: Vec::new(),
        }
    }

    /// The tip of a chain holding only its genesis block.
    pub fn tip(&self) -> Tip {
        Tip {
            height: 0,
            id: self.block().id(),
            timestamp_ms: 0,
        }
    }

    /// The stateless transaction policy of this chain.
    pub fn tx_policy(&self) -> TxPolicy {
        TxPolicy {
            tx_bytes_max: self.limits.tx_bytes_max as usize,
            writers: if self.writers.is_empty() {
                None
            } else {
                Some(self.writers.iter().copied().collect::<BTreeSet<_>>())
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cert::{vote_sign_bytes, VoteKind};
    use crate::record::tests::arb_plain_record;
    use crate::tx::tests::{key, orch};
    use federact_config::NodeKey;
    use proptest::prelude::*;

    /// Four validators (seeds 101..=104), f = 1, and a genesis for chain "c".
    pub(crate) fn validators() -> Vec<NodeKey> {
        (101..=104).map(|i| NodeKey::from_seed(&[i; 32])).collect()
    }

    pub(crate) fn genesis(
        chain: &str,
        kind: ChainKind,
        consortium: Option<ConsortiumRef>,
    ) -> Genesis {
        let ids = validators().iter().map(|k| k.id()).collect();
        Genesis {
            chain_id: chain.into(),
            kind,
            cloud: (kind == ChainKind::Local).then(|| "cloud-1".to_string()),
            validators: ValidatorSet::new(ids, 1).unwrap(),
            consortium,
            writers: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// A certificate from validators 0, 1, 2.
    pub(crate) fn certify(header: &BlockHeader, round: u32) -> CommitCertificate {
        let id = header.id();
        let msg = vote_sign_bytes(
            VoteKind::Precommit,
            &header.chain_id,
            header.height,
            round,
            Some(&id),
        );
        let vals = validators();
        CommitCertificate {
            chain_id: header.chain_id.clone(),
            height: header.height,
            round,
            block_hash: id,
            signatures: (0..3u16)
                .map(|i| (i, vals[i as usize].sign(&msg)))
                .collect(),
        }
    }

    /// The next block after `tip` with `txs`, proposed correctly in round 0.
    pub(crate) fn next_block(g: &Genesis, tip: &Tip, txs: Vec<Transaction>) -> Block {
        let h = tip.height + 1;
        Block::new(
            &g.chain_id,
            h,
            tip.id,
            *g.validators.proposer(h, 0),
            0,
            tip.timestamp_ms + 1,
            txs,
        )
    }

    proptest! {
        #[test]
        fn blocks_round_trip(records in proptest::collection::vec(arb_plain_record(), 0..8)) {
            let g = genesis("c", ChainKind::Local, None);
            let txs = records
                .into_iter()
                .enumerate()
                .map(|(i, r)| Transaction::sign(r, &key(1), i as u64 + 1, 5, None))
                .collect();
            let b = next_block(&g, &g.tip(), txs);
            let bytes = b.encode();
            prop_assert_eq!(&bytes, &codec::encode(&b));
            prop_assert_eq!(bytes.len(), b.encoded_len());
            let back = Block::decode(&bytes, 1 << 20).unwrap();
            prop_assert_eq!(back.id(), b.id());
            prop_assert_eq!(&back, &b);
            let hb: BlockHeader = codec::decode(&codec::encode(&b.header), 1024).unwrap();
            prop_assert_eq!(hb, b.header);
        }
    }

    #[test]
    fn genesis_from_a_federation_names_validators_consortium_and_writers() {
        use federact_config::init::{local_chain_id, CONSORTIUM_CHAIN_ID};
        use federact_config::{write_local_federation, Topology};
        let dir = tempfile::tempdir().unwrap();
        let topo = Topology {
            clouds: 2,
            servers_per_cloud: 1,
            local_validators: 4,
            inter_validators: 4,
        };
        let written = write_local_federation(dir.path(), &topo, false).unwrap();
        let fed = Federation::load(&written.federation_file).unwrap();
        let cons = Genesis::from_federation(&fed, CONSORTIUM_CHAIN_ID).unwrap();
        assert_eq!(cons.kind, ChainKind::Consortium);
        assert_eq!(cons.consortium, None);
        assert_eq!(cons.validators.len(), 4);
        assert_eq!(cons.writers.len(), fed.nodes().len());
        let local = Genesis::from_federation(&fed, &local_chain_id(0)).unwrap();
        assert_eq!(local.kind, ChainKind::Local);
        assert_eq!(local.cloud.as_deref(), Some("cloud-1"));
        assert_eq!(local.validators.fault_tolerance(), 1);
        let c = local.consortium.as_ref().unwrap();
        assert_eq!(c.chain_id, CONSORTIUM_CHAIN_ID);
        assert_eq!(c.validators, cons.validators);
        assert!(local
            .writers
            .iter()
            .all(|w| fed.node_by_id(w).unwrap().cloud() == "cloud-1"));
        local.check().unwrap();
        assert_eq!(
            local.tx_policy().writers.unwrap().len(),
            local.writers.len()
        );
        assert!(matches!(
            Genesis::from_federation(&fed, "nope"),
            Err(LedgerError::InvalidGenesis { .. })
        ));
    }

    #[test]
    fn genesis_round_trips_and_commits_to_its_content() {
        let g = genesis("c", ChainKind::Local, None);
        g.check().unwrap();
        let back: Genesis = codec::decode(&codec::encode(&g), 1 << 16).unwrap();
        assert_eq!(back, g);
        let mut other = g.clone();
        other.limits.block_txs_max = 5;
        assert_ne!(other.block().id(), g.block().id());
        let mut bad = g.clone();
        bad.writers = vec![key(2).id(), key(1).id()];
        bad.writers.sort();
        bad.writers.reverse();
        assert!(bad.check().is_err());
        let mut bad = g;
        bad.kind = ChainKind::Consortium;
        bad.consortium = Some(ConsortiumRef {
            chain_id: "x".into(),
            validators: bad.validators.clone(),
        });
        assert!(bad.check().is_err());
    }

    #[test]
    fn header_checks_name_each_fault() {
        let g = genesis("c", ChainKind::Local, None);
        let tip = g.tip();
        let b = next_block(&g, &tip, vec![]);
        let cert = certify(&b.header, 0);
        check_header(&g, &tip, &b.header, &cert).unwrap();

        let mut h = b.header.clone();
        h.chain_id = "d".into();
        assert!(matches!(
            check_header(&g, &tip, &h, &cert),
            Err(BlockError::WrongChain { .. })
        ));
        let mut h = b.header.clone();
        h.height = 2;
        assert!(matches!(
            check_header(&g, &tip, &h, &cert),
            Err(BlockError::WrongHeight {
                expected: 1,
                got: 2
            })
        ));
        let mut h = b.header.clone();
        h.prev_hash = Hash::ZERO;
        assert!(matches!(
            check_header(&g, &tip, &h, &cert),
            Err(BlockError::BrokenLink { .. })
        ));
        let mut h = b.header.clone();
        h.proposer = validators()[3].id();
        assert!(matches!(
            check_header(&g, &tip, &h, &cert),
            Err(BlockError::WrongProposer { .. })
        ));
        let later = Tip {
            timestamp_ms: 100,
            ..tip
        };
        assert!(matches!(
            check_header(&g, &later, &b.header, &cert),
            Err(BlockError::TimeWentBack { .. })
        ));
        // A certificate for another block.
        let other = next_block(
            &g,
            &tip,
            vec![Transaction::sign(orch("x"), &key(1), 1, 0, None)],
        );
        assert!(matches!(
            check_header(&g, &tip, &b.header, &certify(&other.header, 0)),
            Err(BlockError::Certificate {
                source: CertError::Mismatch { .. },
                ..
            })
        ));
        let mut weak = cert.clone();
        weak.signatures.truncate(2);
        assert!(matches!(
            check_header(&g, &tip, &b.header, &weak),
            Err(BlockError::Certificate {
                source: CertError::NoQuorum { .. },
                ..
            })
        ));
    }

    #[test]
    fn body_checks_name_each_fault() {
        let g = genesis("c", ChainKind::Local, None);
        let txs: Vec<_> = (1..=3)
            .map(|n| Transaction::sign(orch("x"), &key(1), n, 0, None))
            .collect();
        let b = next_block(&g, &g.tip(), txs);
        b.check_body(&g.limits, &g.tx_policy()).unwrap();
        let mut b2 = b.clone();
        b2.txs.swap(0, 1);
        assert!(matches!(
            b2.check_body(&g.limits, &g.tx_policy()),
            Err(BlockError::TxRootMismatch { .. })
        ));
        let limits = Limits {
            block_txs_max: 2,
            ..g.limits
        };
        assert!(matches!(
            b.check_body(&limits, &g.tx_policy()),
            Err(BlockError::TooManyTxs {
                count: 3,
                max: 2,
                ..
            })
        ));
        let limits = Limits {
            block_bytes_max: 100,
            ..g.limits
        };
        assert!(matches!(
            b.check_body(&limits, &g.tx_policy()),
            Err(BlockError::TooLarge { .. })
        ));
        let t = &b.txs[1];
        let mut sig = *t.signature();
        sig.0[5] ^= 1;
        let mut b3 = b.clone();
        b3.txs[1] =
            Transaction::from_parts(t.record().clone(), *t.author(), t.nonce(), 0, None, sig);
        b3.header.tx_root = merkle::root(&b3.tx_ids());
        // Skipping verified txs keeps indices of the others; skipping the
        // forged one (never do this) hides it.
        assert!(matches!(
            b3.check_body_with(&g.limits, &g.tx_policy(), &|t| t.nonce() == 1),
            Err(BlockError::Tx { index: 1, .. })
        ));
        b3.check_body_with(&g.limits, &g.tx_policy(), &|t| t.nonce() == 2)
            .unwrap();
        assert!(matches!(
            b3.check_body(&g.limits, &g.tx_policy()),
            Err(BlockError::Tx {
                index: 1,
                source,
                ..
            }) if matches!(*source, TxError::BadSignature { .. })
        ));
    }
}
