//! The write-ahead log of a validator's own proposals and votes.
//!
//! The consensus core emits `Persist` effects before it sends what they
//! record; the validator appends them here and fsyncs before any later
//! effect. After a restart the entries of the current height go back into
//! the core, so it never signs two different values for one height and
//! round. A separate sled database from the chain store: the WAL is written
//! several times per height and pruned at every commit, the chain store
//! once per block.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::storage;
use crate::codec;
use crate::consensus::WalEntry;
use crate::error::LedgerError;

/// Largest WAL entry read back (a proposal carries a whole block).
const ENTRY_BYTES_MAX: usize = 32 << 20;

/// A validator's vote WAL on sled.
pub struct VoteWal {
    db: sled::Db,
    next: u64,
}

impl std::fmt::Debug for VoteWal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoteWal").field("next", &self.next).finish()
    }
}

fn key(height: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&height.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl VoteWal {
    /// Opens (or creates) the WAL in `dir`.
    pub fn open(dir: &Path) -> Result<VoteWal, LedgerError> {
        let db = sled::open(dir).map_err(storage("vote WAL"))?;
        let next = match db.last().map_err(storage("vote WAL"))? {
            Some((k, _)) => k
                .get(8..16)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(|b| u64::from_be_bytes(b) + 1)
                .unwrap_or(0),
            None => 0,
        };
        Ok(VoteWal { db, next })
    }

    /// Appends `entry` and makes it durable before returning.
    pub fn append<V: Serialize>(&mut self, entry: &WalEntry<V>) -> Result<(), LedgerError> {
        let k = key(entry.height(), self.next);
        self.next += 1;
        self.db
            .insert(k, codec::encode(entry))
            .map_err(storage("vote WAL"))?;
        self.db.flush().map_err(storage("vote WAL"))?;
        Ok(())
    }

    /// The entries recorded for heights `>= height`, in append order. An
    /// entry that does not decode is an error: the WAL is our own writing.
    pub fn entries<V: DeserializeOwned>(
        &self,
        height: u64,
    ) -> Result<Vec<WalEntry<V>>, LedgerError> {
        let mut out = Vec::new();
        for item in self.db.range(key(height, 0)..) {
            let (_, v) = item.map_err(storage("vote WAL"))?;
            let entry = codec::decode(&v, ENTRY_BYTES_MAX).map_err(|e| LedgerError::Corrupt {
                what: "vote WAL entry",
                key: String::new(),
                detail: e.to_string(),
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// Drops entries of heights below `height` (committed ones).
    pub fn prune_below(&mut self, height: u64) -> Result<(), LedgerError> {
        let mut batch = sled::Batch::default();
        for item in self.db.range(..key(height, 0)) {
            let (k, _) = item.map_err(storage("vote WAL"))?;
            batch.remove(k);
        }
        self.db.apply_batch(batch).map_err(storage("vote WAL"))
    }
}
