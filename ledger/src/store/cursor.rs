//! Small durable counters on sled: delivery cursors of relays and other
//! positions a node must not lose across restarts.

use std::path::Path;

use super::storage;
use crate::error::LedgerError;

/// Named `u64` cursors, each write flushed before it returns.
pub struct CursorStore {
    db: sled::Db,
}

impl std::fmt::Debug for CursorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorStore")
    }
}

impl CursorStore {
    /// Opens (or creates) the cursor store in `dir`.
    pub fn open(dir: &Path) -> Result<CursorStore, LedgerError> {
        Ok(CursorStore {
            db: sled::open(dir).map_err(storage("opening the cursor store"))?,
        })
    }

    /// The cursor `name`, 0 if never set.
    pub fn get(&self, name: &str) -> Result<u64, LedgerError> {
        let v = self.db.get(name).map_err(storage("reading a cursor"))?;
        match v {
            None => Ok(0),
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| LedgerError::Corrupt {
                    what: "cursor",
                    key: name.to_string(),
                    detail: format!("{} bytes, expected 8", bytes.len()),
                }),
        }
    }

    /// Sets cursor `name` to `value` durably.
    pub fn set(&self, name: &str, value: u64) -> Result<(), LedgerError> {
        self.db
            .insert(name, &value.to_be_bytes())
            .map_err(storage("writing a cursor"))?;
        self.db
            .flush()
            .map_err(storage("flushing a cursor"))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = CursorStore::open(dir.path()).unwrap();
            assert_eq!(c.get("x").unwrap(), 0);
            c.set("x", 42).unwrap();
        }
        let c = CursorStore::open(dir.path()).unwrap();
        assert_eq!(c.get("x").unwrap(), 42);
    }
}
