//! Offline verification of a chain store from its sled files alone
//! (`federact ledger verify`).
//!
//! [`verify_store`] replays the chain from its genesis: every block's hash
//! link, height, proposer and timestamp, its Merkle root, every transaction's
//! size, author and signature, nonce order and validation rule (through the
//! same [`crate::rules::check_block`] validators use), every commit
//! certificate against the genesis validator set, and every cross-chain
//! proof against the genesis' consortium validator set. It also checks that
//! the stored tip, transaction index and state match the replay. It stops at
//! the first fault and reports the last height that verified.

use std::path::Path;

use serde::Serialize;

use federact_config::Federation;

use crate::block::{Block, Genesis, Tip};
use crate::error::{BlockError, LedgerError};
use crate::rules::{self, ChainState, MemState};
use crate::store::{ChainStore, TxLocation};

/// What went wrong at a height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum Fault {
    /// The stored genesis block is not the one the stored genesis describes.
    #[error("genesis block does not match the stored genesis")]
    GenesisBlock,
    /// The genesis differs from the one the federation file describes.
    #[error("genesis differs from the federation's: {detail}")]
    Federation {
        /// What differs.
        detail: String,
    },
    /// A block below the tip is missing.
    #[error("block {height} missing")]
    MissingBlock {
        /// Height.
        height: u64,
    },
    /// A block's certificate is missing.
    #[error("certificate of block {height} missing")]
    MissingCertificate {
        /// Height.
        height: u64,
    },
    /// A block or certificate does not decode.
    #[error("block {height} unreadable: {detail}")]
    Unreadable {
        /// Height.
        height: u64,
        /// Why.
        detail: String,
    },
    /// A block fails verification.
    #[error("{0}")]
    Block(String),
    /// A transaction's index entry is missing or wrong.
    #[error("tx {index} of block {height} is not indexed at its position")]
    TxIndex {
        /// Height.
        height: u64,
        /// Position.
        index: u32,
    },
    /// The stored tip is not the last verified block.
    #[error("stored tip {stored} differs from the replayed tip {replayed}")]
    Tip {
        /// Stored tip height.
        stored: u64,
        /// Replayed tip height.
        replayed: u64,
    },
    /// A block exists above the tip (a partial commit).
    #[error("block {height} exists above the tip")]
    AboveTip {
        /// Height.
        height: u64,
    },
    /// The stored state differs from the replayed state.
    #[error("stored state differs from the replay at key {key}")]
    State {
        /// The state key (debug form).
        key: String,
    },
}

/// The outcome of [`verify_store`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The chain.
    pub chain_id: String,
    /// The stored tip height.
    pub tip_height: u64,
    /// The highest block that verified (all below it verified too).
    pub verified_height: u64,
    /// Transactions verified.
    pub txs: u64,
    /// The first fault, if any.
    pub fault: Option<Fault>,
}

impl Report {
    /// Whether the whole chain verified.
    pub fn is_ok(&self) -> bool {
        self.fault.is_none()
    }
}

/// Verifies the store in `dir`; see the module docs. Environment failures
/// (the directory is missing, locked by a running node, unreadable) are
/// `Err`; a chain that does not verify is an `Ok` report with a fault.
pub fn verify_store(dir: &Path) -> Result<Report, LedgerError> {
    verify_store_against(dir, None)
}

/// [`verify_store`], also checking that the genesis is the one `federation`
/// describes for the chain.
pub fn verify_store_against(
    dir: &Path,
    federation: Option<&Federation>,
) -> Result<Report, LedgerError> {
    std::fs::metadata(dir).map_err(|source| LedgerError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let store = ChainStore::open(dir, None)?;
    verify_open_store(&store, federation)
}

/// [`verify_store_against`] on an already open store.
pub fn verify_open_store(
    store: &ChainStore,
    federation: Option<&Federation>,
) -> Result<Report, LedgerError> {
    let genesis = store.genesis().clone();
    let mut report = Report {
        chain_id: genesis.chain_id.clone(),
        tip_height: store.tip().height,
        verified_height: 0,
        txs: 0,
        fault: None,
    };
    if let Some(fed) = federation {
        match Genesis::from_federation(fed, &genesis.chain_id) {
            Ok(expected) if expected == genesis => {}
            Ok(expected) => {
                report.fault = Some(Fault::Federation {
                    detail: genesis_difference(&expected, &genesis),
                });
                return Ok(report);
            }
            Err(e) => {
                report.fault = Some(Fault::Federation {
                    detail: e.to_string(),
                });
                return Ok(report);
            }
        }
    }
    if store.block(0)?.as_ref() != Some(&genesis.block()) {
        report.fault = Some(Fault::GenesisBlock);
        return Ok(report);
    }
    let mut tip = genesis.tip();
    let mut state = MemState::default();
    let stored_tip = store.tip();
    for height in 1..=stored_tip.height {
        match verify_block(store, &genesis, &tip, &mut state, height)? {
            Ok((next, txs)) => {
                tip = next;
                report.verified_height = height;
                report.txs += txs;
            }
            Err(fault) => {
                report.fault = Some(fault);
                return Ok(report);
            }
        }
    }
    if stored_tip != tip {
        report.fault = Some(Fault::Tip {
            stored: stored_tip.height,
            replayed: tip.height,
        });
        return Ok(report);
    }
    let above = tip.height.saturating_add(1);
    if store.block_bytes(above)?.is_some() {
        report.fault = Some(Fault::AboveTip { height: above });
        return Ok(report);
    }
    for (key, value) in &state.0 {
        if store.state(key)?.as_ref() != Some(value) {
            report.fault = Some(Fault::State {
                key: format!("{key:?}"),
            });
            return Ok(report);
        }
    }
    Ok(report)
}

fn verify_block(
    store: &ChainStore,
    genesis: &Genesis,
    tip: &Tip,
    state: &mut MemState,
    height: u64,
) -> Result<Result<(Tip, u64), Fault>, LedgerError> {
    let block: Block = match store.block(height) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(Err(Fault::MissingBlock { height })),
        Err(LedgerError::Corrupt { detail, .. }) => {
            return Ok(Err(Fault::Unreadable { height, detail }))
        }
        Err(e) => return Err(e),
    };
    let cert = match store.certificate(height) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(Err(Fault::MissingCertificate { height })),
        Err(LedgerError::Corrupt { detail, .. }) => {
            return Ok(Err(Fault::Unreadable { height, detail }))
        }
        Err(e) => return Err(e),
    };
    if block.header.height != height {
        return Ok(Err(Fault::Block(
            BlockError::WrongHeight {
                expected: height,
                got: block.header.height,
            }
            .to_string(),
        )));
    }
    let delta = match rules::check_block(genesis, tip, &*state as &dyn ChainState, &block, &cert) {
        Ok(d) => d,
        Err(e) => return Ok(Err(Fault::Block(e.to_string()))),
    };
    state.apply(delta);
    for (i, tx) in block.txs.iter().enumerate() {
        let index = i as u32;
        if store.tx_location(&tx.id())? != Some(TxLocation { height, index }) {
            return Ok(Err(Fault::TxIndex { height, index }));
        }
    }
    Ok(Ok((
        Tip {
            height,
            id: block.id(),
            timestamp_ms: block.header.timestamp_ms,
        },
        block.txs.len() as u64,
    )))
}

fn genesis_difference(expected: &Genesis, got: &Genesis) -> String {
    if expected.kind != got.kind {
        "chain kind".into()
    } else if expected.validators != got.validators {
        "validator set".into()
    } else if expected.consortium != got.consortium {
        "consortium validator set".into()
    } else if expected.writers != got.writers {
        "writers".into()
    } else if expected.limits != got.limits {
        "limits".into()
    } else {
        "cloud".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::tests::{certify, genesis, next_block};
    use crate::tx::tests::{key, orch};
    use crate::tx::Transaction;
    use federact_config::ChainKind;

    fn build(dir: &Path, blocks: u64) -> Genesis {
        let g = genesis("c", ChainKind::Local, None);
        let mut s = ChainStore::open(dir, Some(&g)).unwrap();
        let mut nonce = 0;
        for _ in 0..blocks {
            let txs = (0..5)
                .map(|i| {
                    nonce += 1;
                    Transaction::sign(orch(&format!("c{i}")), &key(1), nonce, 0, None)
                })
                .collect();
            let b = next_block(&g, &s.tip(), txs);
            s.commit(&b, &certify(&b.header, 0)).unwrap().unwrap();
        }
        g
    }

    #[test]
    fn a_good_store_verifies_to_its_tip() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 4);
        let r = verify_store(dir.path()).unwrap();
        assert_eq!(r.fault, None);
        assert_eq!((r.tip_height, r.verified_height, r.txs), (4, 4, 20));
        assert!(verify_store(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn genesis_is_checked_against_the_federation() {
        use federact_config::init::{local_chain_id, CONSORTIUM_CHAIN_ID};
        use federact_config::{write_local_federation, Topology};
        let dir = tempfile::tempdir().unwrap();
        let topo = Topology {
            clouds: 2,
            servers_per_cloud: 1,
            local_validators: 1,
            inter_validators: 1,
        };
        let written = write_local_federation(&dir.path().join("fed"), &topo, false).unwrap();
        let fed = Federation::load(&written.federation_file).unwrap();
        let store_dir = dir.path().join("chain");
        let g = Genesis::from_federation(&fed, &local_chain_id(1)).unwrap();
        drop(ChainStore::open(&store_dir, Some(&g)).unwrap());
        let r = verify_store_against(&store_dir, Some(&fed)).unwrap();
        assert!(r.is_ok(), "{r:?}");
        // A store whose genesis names other validators than the federation.
        let mut forged = Genesis::from_federation(&fed, CONSORTIUM_CHAIN_ID).unwrap();
        forged.chain_id = local_chain_id(0);
        let other_dir = dir.path().join("forged");
        drop(ChainStore::open(&other_dir, Some(&forged)).unwrap());
        let r = verify_store_against(&other_dir, Some(&fed)).unwrap();
        assert!(matches!(r.fault, Some(Fault::Federation { .. })), "{r:?}");
    }

    /// Rewrites the raw sled value at `key` (test-only tampering).
    fn tamper(dir: &Path, key: &[u8], f: impl FnOnce(&mut Vec<u8>)) {
        let db = sled::open(dir).unwrap();
        let mut v = db.get(key).unwrap().unwrap().to_vec();
        f(&mut v);
        db.insert(key, v).unwrap();
        db.flush().unwrap();
    }

    fn at(prefix: u8, h: u64) -> Vec<u8> {
        let mut k = vec![prefix];
        k.extend_from_slice(&h.to_be_bytes());
        k
    }

    #[test]
    fn tampering_is_reported_at_its_height() {
        // A flipped byte in a stored signature.
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 3);
        let block = {
            let s = ChainStore::open(dir.path(), None).unwrap();
            s.block(2).unwrap().unwrap()
        };
        let mut txs = block.txs.clone();
        let t = &txs[0];
        let mut sig = *t.signature();
        sig.0[3] ^= 1;
        txs[0] = Transaction::from_parts(t.record().clone(), *t.author(), t.nonce(), 0, None, sig);
        let forged = Block { txs, ..block };
        tamper(dir.path(), &at(b'b', 2), |v| *v = forged.encode());
        let r = verify_store(dir.path()).unwrap();
        assert_eq!(r.verified_height, 1);
        assert!(
            matches!(&r.fault, Some(Fault::Block(m)) if m.contains("bad signature")),
            "{r:?}"
        );

        // A rewritten record (tx_root no longer matches).
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 3);
        let block = {
            let s = ChainStore::open(dir.path(), None).unwrap();
            s.block(3).unwrap().unwrap()
        };
        let mut txs = block.txs.clone();
        txs[1] = Transaction::sign(orch("evil"), &key(1), txs[1].nonce(), 0, None);
        let forged = Block { txs, ..block };
        tamper(dir.path(), &at(b'b', 3), |v| *v = forged.encode());
        let r = verify_store(dir.path()).unwrap();
        assert_eq!(r.verified_height, 2);
        assert!(matches!(&r.fault, Some(Fault::Block(m)) if m.contains("tx_root")));

        // A certificate with a signature removed.
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 2);
        let cert = {
            let s = ChainStore::open(dir.path(), None).unwrap();
            s.certificate(1).unwrap().unwrap()
        };
        let mut weak = cert;
        weak.signatures.pop();
        tamper(dir.path(), &at(b'c', 1), |v| {
            *v = crate::codec::encode(&weak)
        });
        let r = verify_store(dir.path()).unwrap();
        assert_eq!(r.verified_height, 0);
        assert!(matches!(&r.fault, Some(Fault::Block(m)) if m.contains("certificate")));

        // Garbage bytes.
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), 2);
        tamper(dir.path(), &at(b'b', 2), |v| v.truncate(10));
        let r = verify_store(dir.path()).unwrap();
        assert!(matches!(r.fault, Some(Fault::Unreadable { height: 2, .. })));
    }
}
