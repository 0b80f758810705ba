//! Node identities: an ed25519 signing key per node ([`NodeKey`]) and its public
//! key ([`NodeId`]), the name every other part of federact knows a node by.
//!
//! Key files are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), readable by
//! OpenSSL, written with mode 0600 and refused when group- or world-readable
//! (the rule ssh applies to private keys). A [`NodeKey`] never prints its
//! secret: `Debug` shows only the public id.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::KeyError;

/// Length in bytes of a [`NodeId`] (an ed25519 public key).
pub const NODE_ID_LEN: usize = 32;
/// Keys kept by [`NodeId::from_bytes_cached`].
pub const KEY_CACHE_MAX: usize = 4096;
/// Length in bytes of a [`Signature`].
pub const SIGNATURE_LEN: usize = 64;

/// The process-wide cache of [`NodeId::from_bytes_cached`].
fn key_cache() -> &'static std::sync::Mutex<std::collections::HashMap<[u8; NODE_ID_LEN], NodeId>> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<[u8; NODE_ID_LEN], NodeId>>,
    > = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A node's identity: its ed25519 public key.
///
/// Shown as base58 (`Display`, 43–44 characters) or as a short 8-character
/// prefix ([`NodeId::short`]) in logs. Parsed from base58 or 64 hex digits.
/// Construction checks that the bytes are a valid curve point, so holding a
/// `NodeId` means signatures can be verified against it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(VerifyingKey);

impl NodeId {
    /// Interprets 32 bytes as a public key; fails if they are not a valid
    /// compressed Edwards point.
    pub fn from_bytes(bytes: &[u8; NODE_ID_LEN]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(NodeId)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// [`NodeId::from_bytes`] through a small process-wide cache: decoding a
    /// block decodes one author key per transaction, and decompressing a
    /// curve point costs about as much as hashing the whole transaction. A
    /// federation has few keys, so the cache stays small; it holds at most
    /// [`KEY_CACHE_MAX`] keys and starts over when full, so keys from a
    /// peer can neither grow it nor crowd the members' keys out for good
    /// (they are back after one miss each).
    pub fn from_bytes_cached(bytes: &[u8; NODE_ID_LEN]) -> Result<Self, KeyError> {
        let cache = key_cache();
        if let Some(id) = cache.lock().ok().and_then(|c| c.get(bytes).copied()) {
            return Ok(id);
        }
        let id = Self::from_bytes(bytes)?;
        if let Ok(mut c) = cache.lock() {
            if c.len() >= KEY_CACHE_MAX {
                c.clear();
            }
            c.insert(*bytes, id);
        }
        Ok(id)
    }

    /// Like [`NodeId::from_bytes`] for a slice of any length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: &[u8; NODE_ID_LEN] = bytes.try_into().map_err(|_| KeyError::InvalidPublicKey)?;
        Self::from_bytes(arr)
    }

    /// The raw 32 public-key bytes.
    pub fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        self.0.as_bytes()
    }

    /// The ed25519-dalek verifying key, for batch verification.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// Checks `signature` over `message` (strict verification: rejects
    /// small-order keys and non-canonical signatures).
    ///
    /// Only `verify_strict`: it checks the same equation as the lenient
    /// `verify` plus the small-order conditions, so whatever it accepts the
    /// lenient check accepts too; running both (as this once did) doubled
    /// the cost of every vote, proposal and certificate check.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0.verify_strict(message, &sig).is_ok()
    }

    /// An 8-character base58 prefix, for logs and tables.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.as_bytes()).into_string())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut bytes = [0u8; NODE_ID_LEN];
        if s.len() == 2 * NODE_ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode_to_slice(s, &mut bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        } else {
            let n = bs58::decode(s)
                .onto(&mut bytes[..])
                .map_err(|_| KeyError::InvalidPublicKey)?;
            if n != NODE_ID_LEN {
                return Err(KeyError::InvalidPublicKey);
            }
        }
        Self::from_bytes(&bytes)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.as_bytes().serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let bytes = <[u8; NODE_ID_LEN]>::deserialize(d)?;
            NodeId::from_bytes_cached(&bytes).map_err(serde::de::Error::custom)
        }
    }
}

/// An ed25519 signature made by a [`NodeKey`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl Signature {
    /// The raw 64 signature bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..6]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes or 128 hex digits")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let arr: [u8; SIGNATURE_LEN] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature(arr))
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Signature, E> {
                self.visit_bytes(v)
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Signature, E> {
                self.visit_bytes(&v)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Signature, E> {
                let mut arr = [0u8; SIGNATURE_LEN];
                hex::decode_to_slice(v, &mut arr).map_err(E::custom)?;
                Ok(Signature(arr))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

/// A node's ed25519 signing key. Never printed; `Debug` shows the public id.
/// Cloning copies the secret in memory (one per chain the node validates).
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
    id: NodeId,
}

impl NodeKey {
    /// Generates a fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Self::from_seed(&seed)
    }

    /// Builds a key from a 32-byte seed. Deterministic seeds are for tests and
    /// simulations only.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let id = NodeId(signing.verifying_key());
        NodeKey { signing, id }
    }

    /// This key's public identity.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }

    /// The key as PKCS#8 DER (for rcgen / rustls certificates).
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        // Encoding a valid in-memory ed25519 key cannot fail.
        self.signing
            .to_pkcs8_der()
            .map(|doc| doc.as_bytes().to_vec())
            .unwrap_or_default()
    }

    /// The underlying ed25519-dalek key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Parses a PKCS#8 PEM document.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyError::Malformed)?;
        let id = NodeId(signing.verifying_key());
        Ok(NodeKey { signing, id })
    }

    fn to_pem(&self) -> Result<String, KeyError> {
        self.signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|_| KeyError::Malformed)
    }

    /// Writes the key to `path` as PKCS#8 PEM with mode 0600. Refuses to
    /// overwrite an existing file unless `overwrite` is set.
    pub fn write_file(&self, path: &Path, overwrite: bool) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true);
        if overwrite {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::AlreadyExists(path.to_path_buf())
            } else {
                io(e)
            }
        })?;
        // `mode` applies only on creation; tighten an overwritten file too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        file.write_all(self.to_pem()?.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Reads a key file, refusing one that others can read.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(KeyError::TooOpen {
                    path: path.to_path_buf(),
                    mode: mode & 0o777,
                });
            }
        }
        let pem = std::fs::read_to_string(path).map_err(io)?;
        Self::from_pem(&pem).map_err(|_| KeyError::MalformedFile(PathBuf::from(path)))
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({}, secret redacted)", self.id.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_cache_stays_bounded_and_takes_members_back_after_a_flood_of_junk_keys() {
        let member = NodeKey::generate().id();
        let bytes = *member.as_bytes();
        assert_eq!(NodeId::from_bytes_cached(&bytes).unwrap(), member);
        for _ in 0..KEY_CACHE_MAX + 10 {
            let junk = NodeKey::generate().id();
            NodeId::from_bytes_cached(junk.as_bytes()).unwrap();
            assert!(key_cache().lock().unwrap().len() <= KEY_CACHE_MAX);
        }
        assert_eq!(NodeId::from_bytes_cached(&bytes).unwrap(), member);
        assert!(key_cache().lock().unwrap().contains_key(&bytes));
    }

    #[test]
    fn node_id_round_trips_through_base58_and_hex() {
        let key = NodeKey::generate();
        let id = key.id();
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert_eq!(hex::encode(id.as_bytes()).parse::<NodeId>().unwrap(), id);
        assert_eq!(id.short().len(), 8);
    }

    #[test]
    fn node_id_rejects_garbage() {
        assert!("not-a-key".parse::<NodeId>().is_err());
        assert!("11111111".parse::<NodeId>().is_err());
        assert!(NodeId::from_slice(&[1, 2, 3]).is_err());
    }

    #[test]
    fn signature_verifies_only_for_its_message_and_key() {
        let key = NodeKey::from_seed(&[7; 32]);
        let other = NodeKey::from_seed(&[8; 32]);
        let sig = key.sign(b"hello");
        assert!(key.id().verify(b"hello", &sig));
        assert!(!key.id().verify(b"hellp", &sig));
        assert!(!other.id().verify(b"hello", &sig));
        let mut bad = sig;
        bad.0[3] ^= 1;
        assert!(!key.id().verify(b"hello", &bad));
    }

    #[test]
    fn key_file_is_written_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/node.key");
        let key = NodeKey::generate();
        key.write_file(&path, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = NodeKey::read_file(&path).unwrap();
        assert_eq!(back.id(), key.id());
        assert!(matches!(
            key.write_file(&path, false),
            Err(KeyError::AlreadyExists(_))
        ));
        key.write_file(&path, true).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        NodeKey::generate().write_file(&path, false).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            NodeKey::read_file(&path),
            Err(KeyError::TooOpen { mode: 0o644, .. })
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = NodeKey::from_seed(&[42; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&hex::encode([42u8; 32])));
        let pem = key.to_pem().unwrap();
        assert!(!shown.contains(pem.lines().nth(1).unwrap()));
    }

    #[test]
    fn malformed_key_file_is_a_specific_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "junk").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(
            NodeKey::read_file(&path),
            Err(KeyError::MalformedFile(_))
        ));
    }
}
