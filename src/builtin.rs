//! Functions every `federact node` hosts, so a federation started from the
//! command line (`federact up`) can be exercised with `federact invoke`
//! without writing a service, and the demo's scenario runs on them:
//!
//! - `echo`: answers its payload;
//! - `counter`: a stateful instance that adds its payload (a decimal
//!   integer, empty = 0) to its total and answers the new total — the state
//!   survives deactivation and migration;
//! - `square`: answers the square of its payload (a decimal `u64`), used as
//!   a stateless task (the offloading workload);
//! - `hashchain`: CPU work — answers the hex sha256 hash chain of the
//!   length its payload gives (a decimal, at most [`HASHCHAIN_MAX`]),
//!   starting from the hash of the empty string: a task that keeps a
//!   server busy, so bursts of them saturate servers and offload.

use crate::actors::Bytes;
use crate::ledger::hash::Hash;

use crate::actors::{Function, FunctionError, NodeOptions};

/// Answers its payload.
#[derive(Debug, Default)]
pub struct Echo;

impl Function for Echo {
    fn call(&mut self, _key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        Ok(payload)
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(_: &[u8]) -> Result<Self, FunctionError> {
        Ok(Echo)
    }
}

/// Adds its payload to a running total.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    total: i64,
}

impl Counter {
    /// The running total.
    pub fn total(&self) -> i64 {
        self.total
    }
}

fn decimal<T: std::str::FromStr>(payload: &[u8], what: &str) -> Result<T, FunctionError> {
    std::str::from_utf8(payload)
        .ok()
        .map(str::trim)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FunctionError::failed(format!("payload is not {what}")))
}

impl Function for Counter {
    fn call(&mut self, _key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        let delta: i64 = if payload.iter().all(u8::is_ascii_whitespace) {
            0
        } else {
            decimal(&payload, "a decimal integer")?
        };
        self.total = self
            .total
            .checked_add(delta)
            .ok_or_else(|| FunctionError::failed("counter overflow"))?;
        Ok(Bytes::from(self.total.to_string()))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.total.to_le_bytes().to_vec()
    }
    fn restore(bytes: &[u8]) -> Result<Self, FunctionError> {
        let raw: [u8; 8] = bytes.try_into().map_err(|_| FunctionError::Restore {
            detail: format!("counter snapshot is {} bytes, expected 8", bytes.len()),
        })?;
        Ok(Counter {
            total: i64::from_le_bytes(raw),
        })
    }
}

/// Squares its payload.
#[derive(Debug, Default)]
pub struct Square;

impl Function for Square {
    fn call(&mut self, _key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        let n: u64 = decimal(&payload, "a decimal u64")?;
        let sq = n
            .checked_mul(n)
            .ok_or_else(|| FunctionError::failed("square overflows u64"))?;
        Ok(Bytes::from(sq.to_string()))
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(_: &[u8]) -> Result<Self, FunctionError> {
        Ok(Square)
    }
}

/// Longest hash chain `hashchain` computes (about a second of CPU).
pub const HASHCHAIN_MAX: u64 = 2_000_000;

/// Computes a sha256 hash chain: CPU work of a chosen length.
#[derive(Debug, Default)]
pub struct HashChain;

/// The answer of `hashchain` for `rounds`: sha256 applied `rounds` times to
/// the hash of the empty string, in hex.
pub fn hash_chain(rounds: u64) -> String {
    let mut h = Hash::of(b"");
    for _ in 0..rounds {
        h = Hash::of(h.as_bytes());
    }
    h.to_string()
}

impl Function for HashChain {
    fn call(&mut self, _key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        let rounds: u64 = decimal(&payload, "a decimal u64")?;
        if rounds > HASHCHAIN_MAX {
            return Err(FunctionError::failed(format!(
                "hash chain of {rounds} exceeds the maximum of {HASHCHAIN_MAX}"
            )));
        }
        Ok(Bytes::from(hash_chain(rounds)))
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(_: &[u8]) -> Result<Self, FunctionError> {
        Ok(HashChain)
    }
}

/// `options` with the built-in functions registered.
pub fn register(options: NodeOptions) -> NodeOptions {
    options
        .function::<Echo>("echo")
        .function::<Counter>("counter")
        .function::<Square>("square")
        .function::<HashChain>("hashchain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_adds_and_its_snapshot_restores_the_total() {
        let mut c = Counter::default();
        assert_eq!(c.call("k", Bytes::from("5")).unwrap(), Bytes::from("5"));
        assert_eq!(c.call("k", Bytes::from("-2")).unwrap(), Bytes::from("3"));
        assert_eq!(c.call("k", Bytes::new()).unwrap(), Bytes::from("3"));
        let back = Counter::restore(&c.snapshot()).unwrap();
        assert_eq!(back.total(), 3);
    }

    #[test]
    fn bad_payloads_and_snapshots_are_typed_errors() {
        let mut c = Counter::default();
        assert!(matches!(
            c.call("k", Bytes::from("x")),
            Err(FunctionError::Failed { .. })
        ));
        assert!(matches!(
            Counter::restore(&[1, 2, 3]),
            Err(FunctionError::Restore { .. })
        ));
        let mut s = Square;
        assert_eq!(s.call("t", Bytes::from("12")).unwrap(), Bytes::from("144"));
        assert!(s.call("t", Bytes::from(u64::MAX.to_string())).is_err());
        assert!(s.call("t", Bytes::from("-1")).is_err());
        let mut h = HashChain;
        assert!(h
            .call("t", Bytes::from((HASHCHAIN_MAX + 1).to_string()))
            .is_err());
    }

    #[test]
    fn hashchain_applies_sha256_the_given_number_of_times() {
        let empty = Hash::of(b"");
        assert_eq!(hash_chain(0), empty.to_string());
        assert_eq!(
            hash_chain(2),
            Hash::of(Hash::of(empty.as_bytes()).as_bytes()).to_string()
        );
        let mut h = HashChain;
        assert_eq!(
            h.call("t", Bytes::from("3")).unwrap(),
            Bytes::from(hash_chain(3))
        );
    }
}
