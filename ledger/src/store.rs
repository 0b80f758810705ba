//! The chain store on sled: committed blocks, their certificates and every
//! index the framework queries. The only module of the crate that touches
//! sled (or the disk).
//!
//! # Layout
//! One sled tree, keys prefixed by a byte per table, so that a committed
//! block is a single `apply_batch` — atomic across all tables. (The
//! alternative, one sled tree per table under a multi-tree transaction, is
//! also atomic but slower and retries on conflict; a batch cannot conflict.)
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `m` | `genesis`, `tip` | [`Genesis`], [`Tip`] |
//! | `b` | height (BE u64) | [`Block`] |
//! | `c` | height | [`CommitCertificate`] |
//! | `t` | tx id | [`TxLocation`] |
//! | `v` | vm id ‖ height ‖ index | empty (VM history) |
//! | `p` | sha256(entity) ‖ height ‖ index | empty (provenance) |
//! | `s` | [`StateKey`] | [`StateValue`] (nonces, offload contracts, …) |
//!
//! # Durability contract
//! [`ChainStore::commit`] returns after the block's batch is applied and,
//! with the default [`StoreOptions`], flushed to disk. With
//! `flush_every_blocks = n > 1` a crash may lose up to `n - 1` of the last
//! committed blocks (they are re-fetched from peers), but never leaves a
//! partial block: reopening yields the last block whose batch reached disk.
//! Errors are [`LedgerError`]s; an invalid block is not an error but a
//! [`BlockError`] value inside `Ok`.
//!
//! The VM-history and provenance indexes are keys only: a scan reads the
//! records from their blocks (each block once). They used to hold a copy
//! of each [`IndexedRecord`], one or two per transaction: the largest part
//! of a block's batch, and sled copies a leaf's values on every insert into
//! it (stores written that way read the same: values are ignored).

mod cursor;
mod migrations;
mod placements;
mod wal;
pub use cursor::CursorStore;
pub use migrations::{MigrationStore, SavedMigration};
pub use placements::PlacementStore;
pub use wal::VoteWal;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use federact_config::NodeId;

use crate::block::{Block, Genesis, Tip};
use crate::cert::CommitCertificate;
use crate::codec;
use crate::error::{BlockError, LedgerError};
use crate::hash::Hash;
use crate::proof::CrossChainProof;
use crate::record::Record;
use crate::rules::{self, ChainState, MemState, OffloadContract, StateDelta, StateKey, StateValue};
use crate::tx::{Transaction, TxId};

const META_GENESIS: &[u8] = b"mgenesis";
const META_TIP: &[u8] = b"mtip";
const BLOCK: u8 = b'b';
const CERT: u8 = b'c';
const TX: u8 = b't';
const VM: u8 = b'v';
const PROV: u8 = b'p';
const STATE: u8 = b's';

/// Retries (20 ms apart) of opening a store whose lock is still held.
const OPEN_RETRIES: u32 = 100;

/// Largest value the store decodes (a block plus slack).
const META_BYTES_MAX: usize = 4 << 20;

/// How the store trades durability for throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Flush to disk every this many committed blocks (1 = every block, the
    /// default; 0 is treated as 1).
    pub flush_every_blocks: u32,
    /// sled's page cache size in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            flush_every_blocks: 1,
            cache_bytes: 64 << 20,
        }
    }
}

/// Where a committed transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLocation {
    /// Block height.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
}

/// A committed record with where and when it was committed: an entry of the
/// VM-history and provenance indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedRecord {
    /// The chain.
    pub chain_id: String,
    /// Block height.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
    /// The transaction id.
    pub tx_id: TxId,
    /// The block's timestamp.
    pub block_timestamp_ms: u64,
    /// The transaction's author.
    pub author: NodeId,
    /// The OpenTelemetry trace id of the operation that wrote it.
    pub trace_id: Option<[u8; 16]>,
    /// The record.
    pub record: Record,
}

/// A committed transaction with everything needed to prove it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedTx {
    /// The transaction.
    pub tx: Transaction,
    /// Where it is.
    pub location: TxLocation,
    /// The proof a gateway relays (header, certificate, tx, Merkle path).
    pub proof: CrossChainProof,
}

/// What a successful commit produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The new tip.
    pub tip: Tip,
    /// Number of transactions in the block.
    pub txs: usize,
    /// Whether the block was flushed to disk before returning.
    pub flushed: bool,
}

/// A chain's store.
pub struct ChainStore {
    db: sled::Db,
    dir: PathBuf,
    genesis: Genesis,
    tip: Tip,
    options: StoreOptions,
    unflushed: u32,
}

impl std::fmt::Debug for ChainStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainStore")
            .field("dir", &self.dir)
            .field("chain_id", &self.genesis.chain_id)
            .field("tip", &self.tip)
            .finish_non_exhaustive()
    }
}

fn storage(context: impl Into<String>) -> impl FnOnce(sled::Error) -> LedgerError {
    let context = context.into();
    move |e| LedgerError::Storage {
        context,
        source: Box::new(e),
    }
}

fn corrupt(what: &'static str, key: &[u8], detail: impl ToString) -> LedgerError {
    LedgerError::Corrupt {
        what,
        key: hex::encode(key),
        detail: detail.to_string(),
    }
}

fn key_at(prefix: u8, height: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&height.to_be_bytes());
    k
}

fn key_hash(prefix: u8, h: &Hash) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = prefix;
    k[1..].copy_from_slice(h.as_bytes());
    k
}

fn key_indexed(prefix: u8, h: &Hash, height: u64, index: u32) -> [u8; 45] {
    let mut k = [0u8; 45];
    k[..33].copy_from_slice(&key_hash(prefix, h));
    k[33..41].copy_from_slice(&height.to_be_bytes());
    k[41..].copy_from_slice(&index.to_be_bytes());
    k
}

fn key_state(key: &StateKey) -> Vec<u8> {
    let mut k = vec![STATE];
    k.extend_from_slice(&codec::encode(key));
    k
}

fn entity_key(entity: &str) -> Hash {
    Hash::of(entity.as_bytes())
}

impl ChainStore {
    /// Opens the store in `dir` with default options; see [`Self::open_with`].
    pub fn open(dir: &Path, genesis: Option<&Genesis>) -> Result<ChainStore, LedgerError> {
        Self::open_with(dir, genesis, StoreOptions::default())
    }

    /// Opens the store in `dir`. A new directory needs `genesis` and is
    /// initialised with the genesis block; an existing store is checked
    /// against `genesis` if given (same digest) and resumes at its last
    /// committed block.
    pub fn open_with(
        dir: &Path,
        genesis: Option<&Genesis>,
        options: StoreOptions,
    ) -> Result<ChainStore, LedgerError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes);
        // sled's background flusher keeps a just-dropped store's file lock
        // for a moment; a reopen right after a drop retries briefly instead
        // of failing (the lock of a live store in another process still
        // fails after the retries).
        let mut attempt = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && attempt < OPEN_RETRIES =>
                {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(storage(format!("opening {}", dir.display()))(e)),
            }
        };
        let stored = db
            .get(META_GENESIS)
            .map_err(storage("reading the genesis"))?;
        let (genesis, tip) = match stored {
            Some(bytes) => {
                let stored: Genesis = codec::decode(&bytes, META_BYTES_MAX)
                    .map_err(|e| corrupt("genesis", META_GENESIS, e))?;
                stored
                    .check()
                    .map_err(|e| corrupt("genesis", META_GENESIS, e))?;
                if let Some(given) = genesis {
                    if given.digest() != stored.digest() {
                        return Err(LedgerError::GenesisMismatch {
                            dir: dir.to_path_buf(),
                            stored: format!("{} ({})", stored.chain_id, stored.digest().short()),
                            given: format!("{} ({})", given.chain_id, given.digest().short()),
                        });
                    }
                }
                let tip_bytes = db
                    .get(META_TIP)
                    .map_err(storage("reading the tip"))?
                    .ok_or_else(|| corrupt("tip", META_TIP, "genesis without tip"))?;
                let tip: Tip =
                    codec::decode(&tip_bytes, 1024).map_err(|e| corrupt("tip", META_TIP, e))?;
                (stored, tip)
            }
            None => {
                let genesis = genesis.ok_or_else(|| LedgerError::NoGenesis {
                    dir: dir.to_path_buf(),
                })?;
                genesis
                    .check()
                    .map_err(|detail| LedgerError::InvalidGenesis {
                        chain_id: genesis.chain_id.clone(),
                        detail,
                    })?;
                let tip = genesis.tip();
                let mut batch = sled::Batch::default();
                batch.insert(&key_at(BLOCK, 0)[..], genesis.block().encode());
                batch.insert(META_GENESIS, codec::encode(genesis));
                batch.insert(META_TIP, codec::encode(&tip));
                db.apply_batch(batch)
                    .map_err(storage("writing the genesis block"))?;
                db.flush().map_err(storage("flushing the genesis block"))?;
                (genesis.clone(), tip)
            }
        };
        Ok(ChainStore {
            db,
            dir: dir.to_path_buf(),
            genesis,
            tip,
            options,
            unflushed: 0,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The chain's genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The last committed block.
    pub fn tip(&self) -> Tip {
        self.tip
    }

    /// Reads the state the transactions of `block` need (for the rules),
    /// from disk, into an in-memory snapshot.
    pub fn prefetch(&self, block: &Block) -> Result<MemState, LedgerError> {
        let keys: BTreeSet<StateKey> = block.txs.iter().flat_map(rules::keys_read).collect();
        let mut snapshot = MemState::default();
        for key in keys {
            if let Some(v) = self.state(&key)? {
                snapshot.0.insert(key, v);
            }
        }
        Ok(snapshot)
    }

    /// Checks a proposal for the next height (link, body, signatures,
    /// rules) without committing it: what a validator does before voting.
    pub fn check_proposal(&self, block: &Block) -> Result<Result<(), BlockError>, LedgerError> {
        self.check_proposal_with(block, &|_| false)
    }

    /// [`Self::check_proposal`], skipping the signatures of transactions
    /// `already_verified` vouches for (the exact transactions — same id and
    /// signature — this node verified on mempool admission); see
    /// [`Block::check_body_with`].
    pub fn check_proposal_with(
        &self,
        block: &Block,
        already_verified: &dyn Fn(&Transaction) -> bool,
    ) -> Result<Result<(), BlockError>, LedgerError> {
        let snapshot = self.prefetch(block)?;
        Ok(
            rules::check_proposal_with(
                &self.genesis,
                &self.tip,
                &snapshot,
                block,
                already_verified,
            )
            .map(|_| ()),
        )
    }

    /// Checks `block` and `cert` against the tip, the genesis validators and
    /// the rules, then writes the block, its certificate, every index and the
    /// state changes in one atomic batch (flushed per [`StoreOptions`]).
    /// An invalid block is returned as `Ok(Err(..))` and changes nothing.
    pub fn commit(
        &mut self,
        block: &Block,
        cert: &CommitCertificate,
    ) -> Result<Result<Committed, BlockError>, LedgerError> {
        self.commit_inner(block, cert, true)
    }

    /// [`Self::commit`] without re-verifying transaction signatures, for a
    /// block whose body this node already checked with
    /// [`Self::check_proposal`] (signature verification dominates commit
    /// time; a validator should not pay it twice). Header, certificate,
    /// `tx_root`, limits and rules are still checked.
    pub fn commit_prechecked(
        &mut self,
        block: &Block,
        cert: &CommitCertificate,
    ) -> Result<Result<Committed, BlockError>, LedgerError> {
        self.commit_inner(block, cert, false)
    }

    /// [`Self::commit_prechecked`] for a decision of this node's own
    /// consensus core: the certificate was assembled from votes the core
    /// verified one by one on receipt (or, for a fetched block, verified
    /// whole by the core), so its signatures are not checked again. Its
    /// shape is: the validators, their count and the block id it certifies.
    pub fn commit_decided(
        &mut self,
        block: &Block,
        cert: &CommitCertificate,
    ) -> Result<Result<Committed, BlockError>, LedgerError> {
        if let Err(e) = crate::block::check_link(&self.genesis, &self.tip, &block.header) {
            return Ok(Err(e));
        }
        if let Err(source) = cert.verify_shape(
            &self.genesis.validators,
            &self.genesis.chain_id,
            block.header.height,
            &block.header.id(),
        ) {
            return Ok(Err(BlockError::Certificate {
                height: block.header.height,
                source,
            }));
        }
        self.commit_body(block, cert, false)
    }

    fn commit_inner(
        &mut self,
        block: &Block,
        cert: &CommitCertificate,
        verify_signatures: bool,
    ) -> Result<Result<Committed, BlockError>, LedgerError> {
        if let Err(e) = crate::block::check_header(&self.genesis, &self.tip, &block.header, cert) {
            return Ok(Err(e));
        }
        self.commit_body(block, cert, verify_signatures)
    }

    /// The body checks, rules and write of a commit whose header and
    /// certificate were checked.
    fn commit_body(
        &mut self,
        block: &Block,
        cert: &CommitCertificate,
        verify_signatures: bool,
    ) -> Result<Result<Committed, BlockError>, LedgerError> {
        let body = if verify_signatures {
            block.check_body(&self.genesis.limits, &self.genesis.tx_policy())
        } else {
            block.check_body_unsigned(&self.genesis.limits, &self.genesis.tx_policy())
        };
        if let Err(e) = body {
            return Ok(Err(e));
        }
        let snapshot = self.prefetch(block)?;
        let delta = match rules::apply_block(&self.genesis, &snapshot, block) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let tip = self.write_block(block, cert, &delta)?;
        self.unflushed += 1;
        let flushed = self.unflushed >= self.options.flush_every_blocks.max(1);
        if flushed {
            self.flush()?;
        }
        Ok(Ok(Committed {
            tip,
            txs: block.txs.len(),
            flushed,
        }))
    }

    fn write_block(
        &mut self,
        block: &Block,
        cert: &CommitCertificate,
        delta: &StateDelta,
    ) -> Result<Tip, LedgerError> {
        let h = block.header.height;
        let mut batch = sled::Batch::default();
        batch.insert(&key_at(BLOCK, h)[..], block.encode());
        batch.insert(&key_at(CERT, h)[..], codec::encode(cert));
        for (i, tx) in block.txs.iter().enumerate() {
            let index = i as u32;
            let id = tx.id();
            batch.insert(
                &key_hash(TX, &id)[..],
                codec::encode(&TxLocation { height: h, index }),
            );
            let record = tx.record();
            if let Some(vm) = record.vm_id() {
                batch.insert(&key_indexed(VM, vm, h, index)[..], &[][..]);
            }
            for e in record.prov_entities() {
                batch.insert(&key_indexed(PROV, &entity_key(&e), h, index)[..], &[][..]);
            }
        }
        for (k, v) in delta {
            match v {
                Some(v) => batch.insert(key_state(k), codec::encode(v)),
                None => batch.remove(key_state(k)),
            }
        }
        let tip = Tip {
            height: h,
            id: block.id(),
            timestamp_ms: block.header.timestamp_ms,
        };
        batch.insert(META_TIP, codec::encode(&tip));
        self.db
            .apply_batch(batch)
            .map_err(storage(format!("writing block {h}")))?;
        self.tip = tip;
        Ok(tip)
    }

    /// Forces everything committed so far to disk.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        self.db
            .flush()
            .map_err(storage(format!("flushing at height {}", self.tip.height)))?;
        self.unflushed = 0;
        Ok(())
    }

    fn get(&self, key: &[u8], what: &'static str) -> Result<Option<sled::IVec>, LedgerError> {
        self.db
            .get(key)
            .map_err(storage(format!("reading {what} {}", hex::encode(key))))
    }

    /// The state value under `key`.
    pub fn state(&self, key: &StateKey) -> Result<Option<StateValue>, LedgerError> {
        let k = key_state(key);
        match self.get(&k, "state")? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes, META_BYTES_MAX)
                .map(Some)
                .map_err(|e| corrupt("state", &k, e)),
        }
    }

    /// The block at `height`, if committed.
    pub fn block(&self, height: u64) -> Result<Option<Block>, LedgerError> {
        let k = key_at(BLOCK, height);
        match self.get(&k, "block")? {
            None => Ok(None),
            Some(bytes) => Block::decode(&bytes, self.block_bytes_limit())
                .map(Some)
                .map_err(|e| corrupt("block", &k, e)),
        }
    }

    /// The raw encoding of the block at `height` (for serving catch-up).
    pub fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self
            .get(&key_at(BLOCK, height), "block")?
            .map(|v| v.to_vec()))
    }

    fn block_bytes_limit(&self) -> usize {
        usize::try_from(self.genesis.limits.block_bytes_max)
            .unwrap_or(usize::MAX)
            .saturating_add(META_BYTES_MAX)
    }

    /// The certificate of the block at `height` (none for genesis).
    pub fn certificate(&self, height: u64) -> Result<Option<CommitCertificate>, LedgerError> {
        let k = key_at(CERT, height);
        match self.get(&k, "certificate")? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes, META_BYTES_MAX)
                .map(Some)
                .map_err(|e| corrupt("certificate", &k, e)),
        }
    }

    /// Where transaction `id` is committed.
    pub fn tx_location(&self, id: &TxId) -> Result<Option<TxLocation>, LedgerError> {
        let k = key_hash(TX, id);
        match self.get(&k, "tx index")? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes, 64)
                .map(Some)
                .map_err(|e| corrupt("tx index", &k, e)),
        }
    }

    /// Transaction `id` with its location and inclusion proof.
    pub fn tx(&self, id: &TxId) -> Result<Option<CommittedTx>, LedgerError> {
        let Some(location) = self.tx_location(id)? else {
            return Ok(None);
        };
        let missing = |what: &'static str| {
            corrupt(
                what,
                &key_at(BLOCK, location.height),
                format!("indexed tx {id} has no {what}"),
            )
        };
        let block = self
            .block(location.height)?
            .ok_or_else(|| missing("block"))?;
        let cert = self
            .certificate(location.height)?
            .ok_or_else(|| missing("certificate"))?;
        let index = location.index as usize;
        let tx = block.txs.get(index).cloned().ok_or_else(|| missing("tx"))?;
        let proof = CrossChainProof::build(&block, &cert, index).ok_or_else(|| missing("tx"))?;
        Ok(Some(CommittedTx {
            tx,
            location,
            proof,
        }))
    }

    /// The records an index lists under `prefix` (keys `prefix ‖ height ‖
    /// index`), read from their blocks, each block once.
    fn scan(&self, prefix: &[u8], what: &'static str) -> Result<Vec<IndexedRecord>, LedgerError> {
        let mut out = Vec::new();
        let mut block: Option<Block> = None;
        for item in self.db.scan_prefix(prefix) {
            let (k, _) = item.map_err(storage(format!("scanning {what}")))?;
            let (height, index) = match k.get(prefix.len()..) {
                Some(rest) if rest.len() == 12 => {
                    let mut h = [0u8; 8];
                    let mut i = [0u8; 4];
                    h.copy_from_slice(&rest[..8]);
                    i.copy_from_slice(&rest[8..]);
                    (u64::from_be_bytes(h), u32::from_be_bytes(i))
                }
                _ => return Err(corrupt(what, &k, "index key of the wrong length")),
            };
            if block.as_ref().is_none_or(|b| b.header.height != height) {
                block = Some(
                    self.block(height)?
                        .ok_or_else(|| corrupt(what, &k, "indexed block missing"))?,
                );
            }
            let Some(b) = block.as_ref() else { continue };
            let tx = b
                .txs
                .get(index as usize)
                .ok_or_else(|| corrupt(what, &k, "indexed transaction missing"))?;
            out.push(IndexedRecord {
                chain_id: b.header.chain_id.clone(),
                height,
                index,
                tx_id: tx.id(),
                block_timestamp_ms: b.header.timestamp_ms,
                author: *tx.author(),
                trace_id: tx.trace_id(),
                record: tx.record().clone(),
            });
        }
        Ok(out)
    }

    /// Every migration record of `vm_id` on this chain, in commit order.
    pub fn vm_history(&self, vm_id: &Hash) -> Result<Vec<IndexedRecord>, LedgerError> {
        self.scan(&key_hash(VM, vm_id), "vm history")
    }

    /// Every provenance record mentioning `entity` (a name, or a data digest
    /// in hex), in commit order.
    pub fn provenance(&self, entity: &str) -> Result<Vec<IndexedRecord>, LedgerError> {
        self.scan(&key_hash(PROV, &entity_key(entity)), "provenance")
    }

    /// The offload contract of `task_id`.
    pub fn offload(&self, task_id: &Hash) -> Result<Option<OffloadContract>, LedgerError> {
        match self.state(&StateKey::Offload(*task_id))? {
            Some(StateValue::Offload(c)) => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    /// The last committed nonce of `author` (0 if none).
    pub fn last_nonce(&self, author: &NodeId) -> Result<u64, LedgerError> {
        match self.state(&StateKey::Nonce(*author))? {
            Some(StateValue::Nonce(n)) => Ok(n),
            _ => Ok(0),
        }
    }
}

/// The store reads through to disk; an I/O error reads as "absent", so use
/// [`ChainStore::prefetch`] (which reports errors) to feed the rules.
impl ChainState for ChainStore {
    fn get(&self, key: &StateKey) -> Option<StateValue> {
        self.state(key).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::tests::{certify, genesis, next_block};
    use crate::block::ConsortiumRef;
    use crate::proof::tests::set;
    use crate::record::{EntityKind, IdProof, Scope, Site};
    use crate::tx::tests::key;
    use federact_config::ChainKind;

    fn local_genesis() -> Genesis {
        genesis(
            "local",
            ChainKind::Local,
            Some(ConsortiumRef {
                chain_id: "cons".into(),
                validators: set(),
            }),
        )
    }

    fn join(e: &str) -> Record {
        Record::ProvIdCreate {
            kind: EntityKind::Container,
            entity: e.into(),
            id_proof: IdProof {
                digest: Hash::of(e.as_bytes()),
                attested_by: key(1).id(),
            },
        }
    }

    fn commit(s: &mut ChainStore, records: Vec<Record>) -> Result<Committed, BlockError> {
        let author = key(1);
        let mut nonce = s.last_nonce(&author.id()).unwrap();
        let txs = records
            .into_iter()
            .map(|r| {
                nonce += 1;
                Transaction::sign(r, &author, nonce, 5, Some([1; 16]))
            })
            .collect();
        let b = next_block(s.genesis(), &s.tip(), txs);
        let c = certify(&b.header, 0);
        s.commit(&b, &c).unwrap()
    }

    #[test]
    fn open_commit_query_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let g = local_genesis();
        assert!(matches!(
            ChainStore::open(dir.path(), None),
            Err(LedgerError::NoGenesis { .. })
        ));
        let mut s = ChainStore::open(dir.path(), Some(&g)).unwrap();
        assert_eq!(s.tip(), g.tip());
        assert_eq!(s.block(0).unwrap().unwrap(), g.block());
        let ind = Record::Indication {
            migration_id: Hash::of(b"m"),
            vm_id: Hash::of(b"vm"),
            source: Site::new("cloud-1", "s1"),
            destination: Site::new("cloud-1", "s2"),
            scope: Scope::Local,
        };
        commit(&mut s, vec![join("c1"), ind]).unwrap();
        let conf = Record::Confirmation {
            migration_id: Hash::of(b"m"),
            vm_id: Hash::of(b"vm"),
            accepted: true,
            observed_hash: Hash::of(b"vm"),
            reason: None,
            scope: Scope::Local,
        };
        let done = commit(&mut s, vec![conf]).unwrap();
        assert_eq!(done.tip.height, 2);
        assert!(done.flushed);
        // A rule violation is a value and changes nothing.
        let err = commit(&mut s, vec![join("c1")]).unwrap_err();
        assert!(matches!(err, BlockError::Rule { .. }), "{err}");
        assert_eq!(s.tip().height, 2);

        let hist = s.vm_history(&Hash::of(b"vm")).unwrap();
        assert_eq!(
            hist.iter()
                .map(|r| (r.height, r.record.kind()))
                .collect::<Vec<_>>(),
            vec![(1, "Indication"), (2, "Confirmation")]
        );
        let prov = s.provenance("c1").unwrap();
        assert_eq!(prov.len(), 1);
        assert_eq!(prov[0].trace_id, Some([1; 16]));
        assert_eq!(s.last_nonce(&key(1).id()).unwrap(), 3);

        let b1 = s.block(1).unwrap().unwrap();
        let found = s.tx(&b1.txs[1].id()).unwrap().unwrap();
        assert_eq!(
            found.location,
            TxLocation {
                height: 1,
                index: 1
            }
        );
        found.proof.verify(&set(), "local").unwrap();
        assert!(s.tx(&Hash::ZERO).unwrap().is_none());
        let tip = s.tip();
        drop(s);

        let s = ChainStore::open(dir.path(), None).unwrap();
        assert_eq!(s.tip(), tip);
        assert_eq!(s.genesis(), &g);
        drop(s);
        let other = genesis("other", ChainKind::Local, None);
        assert!(matches!(
            ChainStore::open(dir.path(), Some(&other)),
            Err(LedgerError::GenesisMismatch { .. })
        ));
    }

    #[test]
    fn indexes_read_records_from_their_blocks_whatever_the_stored_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ChainStore::open(dir.path(), Some(&local_genesis())).unwrap();
        commit(&mut s, vec![join("c1"), join("c2")]).unwrap();
        commit(&mut s, vec![join("c3")]).unwrap();
        let before = s.provenance("c2").unwrap();
        assert_eq!(before.len(), 1);
        let b1 = s.block(1).unwrap().unwrap();
        assert_eq!(
            (before[0].height, before[0].index, before[0].tx_id),
            (1, 1, b1.txs[1].id())
        );
        assert_eq!(before[0].record, *b1.txs[1].record());
        assert_eq!(before[0].block_timestamp_ms, b1.header.timestamp_ms);
        // Stores written before indexes were keys only hold a copy of the
        // record as the value: it is not read.
        let k = key_indexed(PROV, &entity_key("c2"), 1, 1);
        assert!(s.db.get(k).unwrap().is_some());
        s.db.insert(k, &b"an old-format value"[..]).unwrap();
        assert_eq!(s.provenance("c2").unwrap(), before);
        // An index entry whose block is missing is corruption, not a panic.
        s.db.insert(key_indexed(PROV, &entity_key("c2"), 9, 0), &[][..])
            .unwrap();
        assert!(matches!(
            s.provenance("c2"),
            Err(LedgerError::Corrupt { .. })
        ));
    }

    #[test]
    fn offload_contract_and_bad_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ChainStore::open_with(
            dir.path(),
            Some(&local_genesis()),
            StoreOptions {
                flush_every_blocks: 3,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let t = Hash::of(b"t");
        let r = commit(
            &mut s,
            vec![
                Record::OffloadRequested {
                    task_id: t,
                    requester: key(2).id(),
                    task_digest: Hash::ZERO,
                    requirements: crate::record::Requirements {
                        cpu_millis: 1,
                        memory_mb: 1,
                        deadline_ms: 1,
                    },
                    scope: Scope::Local,
                },
                Record::OffloadAccepted {
                    task_id: t,
                    executor: key(3).id(),
                    scope: Scope::Local,
                },
            ],
        )
        .unwrap();
        assert!(!r.flushed);
        let c = s.offload(&t).unwrap().unwrap();
        assert_eq!(c.executor, Some(key(3).id()));
        assert_eq!(c.accepted_at, Some(1));

        // Wrong height, bad certificate, bad signature: all values.
        let g = s.genesis().clone();
        let b = next_block(&g, &s.tip(), vec![]);
        let mut skip = b.clone();
        skip.header.height = 5;
        assert!(matches!(
            s.commit(&skip, &certify(&skip.header, 0)).unwrap(),
            Err(BlockError::WrongHeight { .. })
        ));
        let mut weak = certify(&b.header, 0);
        weak.signatures.pop();
        assert!(matches!(
            s.commit(&b, &weak).unwrap(),
            Err(BlockError::Certificate { .. })
        ));
        let tx = Transaction::sign(join("x"), &key(1), 9, 0, None);
        let mut sig = *tx.signature();
        sig.0[0] ^= 1;
        let forged = Transaction::from_parts(tx.record().clone(), key(1).id(), 9, 0, None, sig);
        let fb = next_block(&g, &s.tip(), vec![forged]);
        let fc = certify(&fb.header, 0);
        assert!(matches!(
            s.commit(&fb, &fc).unwrap(),
            Err(BlockError::Tx { .. })
        ));
        // The pre-checked path skips signatures but not the rules.
        assert!(s.check_proposal(&fb).unwrap().is_err());
        s.commit_prechecked(&b, &certify(&b.header, 0))
            .unwrap()
            .unwrap();
        assert_eq!(s.tip().height, 2);
    }
}
