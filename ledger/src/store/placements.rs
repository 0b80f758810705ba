//! The placement directory of an orchestrator on sled: which server hosts
//! each function instance, so a restarted orchestrator keeps routing calls
//! to the instances that are still running instead of placing them again.

use std::path::Path;

use federact_config::NodeId;

use super::{corrupt, storage};
use crate::error::LedgerError;

/// One placement: `(function, key)` and the server hosting the instance.
pub type Placement = ((String, String), NodeId);

/// `(function, key)` → server, each write flushed before it returns
/// (placements are rare next to calls: each already waits for two ledger
/// commits).
pub struct PlacementStore {
    db: sled::Db,
}

impl std::fmt::Debug for PlacementStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlacementStore")
    }
}

/// Key: the function name's length (u16, big-endian), the name, the key.
/// Unambiguous for any pair of strings.
fn encode_key(function: &str, key: &str) -> Option<Vec<u8>> {
    let len = u16::try_from(function.len()).ok()?;
    let mut k = Vec::with_capacity(2 + function.len() + key.len());
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(function.as_bytes());
    k.extend_from_slice(key.as_bytes());
    Some(k)
}

fn decode_key(k: &[u8]) -> Option<(String, String)> {
    let (len, rest) = k.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return None;
    }
    let (f, key) = rest.split_at(len);
    Some((
        String::from_utf8(f.to_vec()).ok()?,
        String::from_utf8(key.to_vec()).ok()?,
    ))
}

impl PlacementStore {
    /// Opens (or creates) the placement store in `dir`.
    pub fn open(dir: &Path) -> Result<PlacementStore, LedgerError> {
        Ok(PlacementStore {
            db: sled::open(dir).map_err(storage("opening the placement store"))?,
        })
    }

    /// Records that instance (`function`, `key`) runs on `server`.
    pub fn put(&self, function: &str, key: &str, server: &NodeId) -> Result<(), LedgerError> {
        let k = encode_key(function, key).ok_or_else(|| LedgerError::Corrupt {
            what: "placement",
            key: function.chars().take(64).collect(),
            detail: "function name longer than 65535 bytes".into(),
        })?;
        self.db
            .insert(k, server.as_bytes().as_slice())
            .map_err(storage("writing a placement"))?;
        self.flush()
    }

    /// Forgets instance (`function`, `key`).
    pub fn remove(&self, function: &str, key: &str) -> Result<(), LedgerError> {
        let Some(k) = encode_key(function, key) else {
            return Ok(());
        };
        self.db.remove(k).map_err(storage("removing a placement"))?;
        self.flush()
    }

    /// Every recorded placement. A corrupt entry is an error naming it.
    pub fn all(&self) -> Result<Vec<Placement>, LedgerError> {
        let mut out = Vec::new();
        for item in self.db.iter() {
            let (k, v) = item.map_err(storage("reading the placements"))?;
            let id = decode_key(&k).ok_or_else(|| corrupt("placement", &k, "bad key"))?;
            let bytes = <[u8; 32]>::try_from(v.as_ref())
                .map_err(|_| corrupt("placement", &k, "server id of the wrong length"))?;
            let server = NodeId::from_bytes(&bytes)
                .map_err(|e| corrupt("placement", &k, format!("server id: {e}")))?;
            out.push((id, server));
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), LedgerError> {
        self.db
            .flush()
            .map_err(storage("flushing the placements"))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use federact_config::NodeKey;

    #[test]
    fn placements_survive_reopen_and_removal_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeKey::from_seed(&[1; 32]).id();
        let b = NodeKey::from_seed(&[2; 32]).id();
        {
            let s = PlacementStore::open(dir.path()).unwrap();
            s.put("f", "k1", &a).unwrap();
            s.put("f", "k2", &b).unwrap();
            // "f"+"k1" and "fk"+"1" are different instances.
            s.put("fk", "1", &b).unwrap();
            s.remove("f", "k2").unwrap();
        }
        let s = PlacementStore::open(dir.path()).unwrap();
        let mut all = s.all().unwrap();
        all.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            all,
            vec![
                (("f".to_string(), "k1".to_string()), a),
                (("fk".to_string(), "1".to_string()), b),
            ]
        );
    }

    #[test]
    fn a_corrupt_entry_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(encode_key("f", "k").unwrap(), &[1u8; 3][..])
                .unwrap();
            db.flush().unwrap();
        }
        let s = PlacementStore::open(dir.path()).unwrap();
        assert!(matches!(
            s.all(),
            Err(LedgerError::Corrupt {
                what: "placement",
                ..
            })
        ));
    }
}
