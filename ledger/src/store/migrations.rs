//! The unfinished migrations of a server on sled, one tree per side
//! (`source`, `destination`): what each side persisted of its migration
//! ([`SavedMigration`]) before acting on a step, so a restarted server can
//! resume it ([`crate::migration::Migration::resume`]) instead of leaving
//! the migration neither completed nor aborted.
//!
//! A write ([`MigrationStore::put_unflushed`]) is durable when a
//! [`MigrationStore::flusher`] run after it returns (the driver acts on
//! the step only then). Removal is not flushed: a removal lost in a crash only
//! makes the restarted server resume a migration whose outcome is already
//! on the ledger, which it then finishes again (idempotently).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{corrupt, storage};
use crate::error::LedgerError;
use crate::hash::Hash;
use crate::migration::{Progress, Side};

/// The largest record decoded from the store (a progress record and a path).
const RECORD_BYTES_MAX: usize = 64 << 10;

/// One side's unfinished migration, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMigration {
    /// The protocol core's progress.
    pub progress: Progress,
    /// The image this side sends (source) or receives (destination).
    pub image: PathBuf,
    /// The image's size in bytes, once known.
    pub bytes: u64,
    /// Destination: the vm id the transfer header announced (the core
    /// learns the vm id from the indication; a restarted destination needs
    /// one to ask the chains about the migration before that).
    pub announced_vm_id: Option<Hash>,
}

/// A server's unfinished migrations.
pub struct MigrationStore {
    db: sled::Db,
    source: sled::Tree,
    destination: sled::Tree,
}

impl std::fmt::Debug for MigrationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MigrationStore")
    }
}

impl MigrationStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<MigrationStore, LedgerError> {
        let db = sled::open(dir).map_err(storage("opening the migration store"))?;
        let source = db
            .open_tree("source")
            .map_err(storage("opening the source migrations"))?;
        let destination = db
            .open_tree("destination")
            .map_err(storage("opening the destination migrations"))?;
        Ok(MigrationStore {
            db,
            source,
            destination,
        })
    }

    fn tree(&self, side: Side) -> &sled::Tree {
        match side {
            Side::Source => &self.source,
            Side::Destination => &self.destination,
        }
    }

    /// Records `saved` (replacing what its side had for its migration)
    /// without waiting for the disk: durable once a following
    /// [`MigrationStore::flusher`] returns.
    pub fn put_unflushed(&self, saved: &SavedMigration) -> Result<(), LedgerError> {
        let p = &saved.progress;
        self.tree(p.side)
            .insert(p.migration_id.as_bytes(), crate::codec::encode(saved))
            .map_err(storage("writing a migration"))
            .map(|_| ())
    }

    /// A flush of every write so far, to run off the caller's thread
    /// (e.g. on a blocking pool): its writes are durable when it returns.
    pub fn flusher(&self) -> impl FnOnce() -> Result<(), LedgerError> + Send + 'static {
        let db = self.db.clone();
        move || {
            db.flush()
                .map_err(storage("flushing the migrations"))
                .map(|_| ())
        }
    }

    /// Forgets `side`'s migration `id` (not flushed; see the module doc).
    pub fn remove(&self, side: Side, id: &Hash) -> Result<(), LedgerError> {
        self.tree(side)
            .remove(id.as_bytes())
            .map_err(storage("removing a migration"))
            .map(|_| ())
    }

    /// Every unfinished migration of both sides. A record that does not
    /// decode (or names another key) is an error naming it.
    pub fn all(&self) -> Result<Vec<SavedMigration>, LedgerError> {
        let mut out = Vec::new();
        for (side, tree) in [
            (Side::Source, &self.source),
            (Side::Destination, &self.destination),
        ] {
            for item in tree.iter() {
                let (k, v) = item.map_err(storage("reading the migrations"))?;
                let saved: SavedMigration = crate::codec::decode(&v, RECORD_BYTES_MAX)
                    .map_err(|e| corrupt("migration", &k, e))?;
                if saved.progress.side != side
                    || saved.progress.migration_id.as_bytes().as_slice() != k.as_ref()
                {
                    return Err(corrupt("migration", &k, "record under the wrong key"));
                }
                out.push(saved);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::ReceivedImage;
    use crate::record::Site;

    fn saved(id: &str, side: Side) -> SavedMigration {
        SavedMigration {
            progress: Progress {
                migration_id: Hash::of(id.as_bytes()),
                side,
                source: Site::new("c1", "a"),
                destination: Site::new("c2", "b"),
                vm_id: Some(Hash::of(b"vm")),
                timeout_ms: 1000,
                deadline_ms: 2000,
                indication: Some(3),
                received: ReceivedImage::Pending,
                confirmation: None,
                ending: false,
            },
            image: PathBuf::from("/images/x"),
            bytes: 7,
            announced_vm_id: None,
        }
    }

    #[test]
    fn unfinished_migrations_survive_reopen_per_side_and_removal_sticks() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = MigrationStore::open(dir.path()).unwrap();
            s.put_unflushed(&saved("m1", Side::Source)).unwrap();
            // The same migration on both sides (a server migrating to itself
            // is refused, but the trees must not mix).
            s.put_unflushed(&saved("m1", Side::Destination)).unwrap();
            s.put_unflushed(&saved("m2", Side::Source)).unwrap();
            let mut later = saved("m2", Side::Source);
            later.progress.confirmation = Some(false);
            s.put_unflushed(&later).unwrap();
            s.flusher()().unwrap();
            s.remove(Side::Destination, &Hash::of(b"m1")).unwrap();
            s.flusher()().unwrap();
        }
        let s = MigrationStore::open(dir.path()).unwrap();
        let mut all = s.all().unwrap();
        all.sort_by_key(|m| m.progress.migration_id);
        let mut expected = vec![saved("m1", Side::Source), saved("m2", Side::Source)];
        expected[1].progress.confirmation = Some(false);
        expected.sort_by_key(|m| m.progress.migration_id);
        assert_eq!(all, expected);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("source")
                .unwrap()
                .insert(Hash::of(b"m").as_bytes(), &[1u8, 2, 3][..])
                .unwrap();
            db.flush().unwrap();
        }
        let s = MigrationStore::open(dir.path()).unwrap();
        assert!(matches!(
            s.all(),
            Err(LedgerError::Corrupt {
                what: "migration",
                ..
            })
        ));
    }
}
