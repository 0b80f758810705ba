//! The wall clock actors hand to the pure cores: milliseconds since the Unix
//! epoch, never going backwards within a process (the cores need monotone
//! time; block timestamps want wall time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static LAST: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the Unix epoch, monotone non-decreasing.
pub fn now_ms() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let prev = LAST.fetch_max(wall, Ordering::Relaxed);
    prev.max(wall)
}

/// Microseconds since the Unix epoch: a nonce base that survives restarts
/// without persisted state (a restarted author starts above its old nonces).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_never_goes_backwards() {
        let mut last = 0;
        for _ in 0..1000 {
            let t = super::now_ms();
            assert!(t >= last);
            last = t;
        }
    }
}
