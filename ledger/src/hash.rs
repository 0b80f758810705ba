//! The 32-byte sha256 digest used for block ids, transaction ids, Merkle
//! nodes and vm ids.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A sha256 digest. Displays as lowercase hex.
///
/// Serializes as 32 raw bytes in binary formats (the canonical encoding) and
/// as 64 hex digits in human-readable ones (JSON output of the CLI).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            // Exactly what `#[derive(Serialize)]` produced before.
            s.serialize_newtype_struct("Hash", &self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Hash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
        } else {
            #[derive(Deserialize)]
            #[serde(rename = "Hash")]
            struct Raw([u8; 32]);
            Raw::deserialize(d).map(|r| Hash(r.0))
        }
    }
}

impl Hash {
    /// The all-zero hash (the `prev_hash` of a genesis block).
    pub const ZERO: Hash = Hash([0; 32]);

    /// sha256 of `data`.
    pub fn of(data: &[u8]) -> Hash {
        Hash(Sha256::digest(data).into())
    }

    /// sha256 over several parts, as if concatenated.
    pub fn of_parts(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).ok()?;
        Some(Hash(out))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

/// An incremental sha256 hasher (for images hashed while they stream).
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Hasher(Sha256::new())
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The digest of everything fed.
    pub fn finish(self) -> Hash {
        Hash(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input_matches_the_standard_vector() {
        assert_eq!(
            Hash::of(b"").to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parts_hash_like_their_concatenation() {
        assert_eq!(Hash::of_parts(&[b"ab", b"c"]), Hash::of(b"abc"));
        let mut h = Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), Hash::of(b"abc"));
    }

    #[test]
    fn binary_encoding_is_32_raw_bytes_and_json_is_hex() {
        let h = Hash::of(b"x");
        let bytes = crate::codec::encode(&h);
        assert_eq!(bytes, h.0.to_vec());
        assert_eq!(crate::codec::decode::<Hash>(&bytes, 32).unwrap(), h);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{h}\""));
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), h);
    }

    #[test]
    fn hex_round_trips() {
        let h = Hash::of(b"x");
        assert_eq!(Hash::from_hex(&h.to_string()), Some(h));
        assert_eq!(Hash::from_hex("zz"), None);
    }
}
