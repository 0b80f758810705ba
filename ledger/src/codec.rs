//! The canonical wire and storage encoding: bincode 2 (standard config,
//! varint integers) over serde, behind this one module so the codec can be
//! swapped (RUSTSEC-2025-0141 marks bincode unmaintained).
//!
//! Every decode of untrusted bytes goes through [`decode`] with an explicit
//! size limit, and fails — never panics — on malformed or trailing input.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is larger than the caller's limit.
    #[error("encoding of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// Bytes remain after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` canonically.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Encoding into a Vec only fails for types serde cannot represent
    // (e.g. maps with non-string keys in some formats); ours never do.
    bincode::serde::encode_to_vec(value, config()).unwrap_or_default()
}

/// Decodes a `T` from exactly `bytes`, refusing inputs over `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    // The bincode limit also bounds allocations claimed by length prefixes.
    let cfg = config().with_limit::<{ 64 << 20 }>();
    let (value, used): (T, usize) = bincode::serde::decode_from_slice(bytes, cfg)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes_are_refused() {
        let v = (7u64, String::from("x"), vec![1u8, 2, 3]);
        let mut bytes = encode(&v);
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes, 1024).unwrap(), v);
        bytes.push(0);
        assert_eq!(
            decode::<(u64, String, Vec<u8>)>(&bytes, 1024),
            Err(DecodeError::Trailing(1))
        );
    }

    #[test]
    fn oversized_and_malformed_inputs_are_errors() {
        let bytes = encode(&vec![0u8; 100]);
        assert!(matches!(
            decode::<Vec<u8>>(&bytes, 10),
            Err(DecodeError::TooLarge { .. })
        ));
        // A length prefix claiming far more data than present.
        assert!(matches!(
            decode::<Vec<u8>>(&[0xfc, 0xff, 0xff, 0xff, 0x7f], 10),
            Err(DecodeError::Malformed(_))
        ));
    }
}
