//! Per-author submission order at the gateway, as a pure state machine.
//!
//! A chain refuses a transaction whose nonce is not above its author's last
//! committed nonce, and nonces may skip values (they are microseconds), so
//! a validator cannot tell a gap from a transaction still on its way: if an
//! author's later transaction commits first, the earlier one is refused as
//! stale. CometBFT avoids this with first-in-first-out all the way: clients
//! send in sequence order over one ordered connection, the mempool is FIFO
//! and gossips it in order (it never holds a transaction back waiting for a
//! gap to fill; that is Ethereum's "queued" pool, which needs consecutive
//! nonces). Our hops are unordered (each request is its own QUIC stream),
//! so order is restored where it is lost, like TCP's sequence numbers do
//! over IP:
//! - client → gateway: a client names, with each submission, the nonce of
//!   its previous submission still in flight (`after`). The gateway passes a
//!   submission on once a submission of that author with a nonce at least
//!   `after` arrived; until then it holds it (bounded in count and time:
//!   a predecessor lost on the way releases it after [`HOLD_MS`]).
//! - gateway → validator: one submit request in flight per validator (see
//!   the gateway's lanes), so each validator admits in the gateway's order.
//!
//! Pure: the gateway feeds arrivals and the time, and submits what comes
//! out, in order.

use std::collections::{BTreeMap, HashMap, VecDeque};

use federact_config::NodeId;

/// How long a submission waits for its predecessor, at most (ms).
pub const HOLD_MS: u64 = 2_000;
/// Submissions held at once, at most (beyond it they pass unordered).
pub const HELD_MAX: usize = 65_536;
/// Authors whose last arrival is remembered, at most (oldest forgotten).
pub const AUTHORS_MAX: usize = 65_536;

/// A held submission.
struct Held<G> {
    since_ms: u64,
    /// Highest nonce of the author in the group.
    last_nonce: u64,
    group: G,
}

/// Restores each author's submission order (see the module doc). `G` is
/// what the caller submits: a transaction with its waiter, or a group.
pub struct ArrivalOrder<G> {
    /// Highest nonce passed on per author.
    seen: HashMap<NodeId, u64>,
    seen_order: VecDeque<NodeId>,
    /// Held submissions by (author, the nonce they wait for).
    held: BTreeMap<(NodeId, u64), Vec<Held<G>>>,
    held_count: usize,
    /// Submissions that passed unordered: held too long or beyond the bound.
    released_unordered: u64,
}

impl<G> Default for ArrivalOrder<G> {
    fn default() -> Self {
        ArrivalOrder {
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            held: BTreeMap::new(),
            held_count: 0,
            released_unordered: 0,
        }
    }
}

impl<G> ArrivalOrder<G> {
    /// A submission of `author` arrived whose highest nonce is `last_nonce`,
    /// sent after the author's submission with nonce `after` (if that one
    /// was still in flight). Returns what to submit now, in order: nothing
    /// if it must wait, else it and every held one it unblocked.
    pub fn handle_arrival(
        &mut self,
        author: NodeId,
        after: Option<u64>,
        last_nonce: u64,
        group: G,
        now_ms: u64,
    ) -> Vec<G> {
        let ready = match after {
            None => true,
            Some(a) => self.seen.get(&author).is_some_and(|s| *s >= a),
        };
        if !ready {
            if self.held_count < HELD_MAX {
                self.held
                    .entry((author, after.unwrap_or(0)))
                    .or_default()
                    .push(Held {
                        since_ms: now_ms,
                        last_nonce,
                        group,
                    });
                self.held_count += 1;
                return Vec::new();
            }
            self.released_unordered += 1;
        }
        let mut out = vec![group];
        self.passed(author, last_nonce);
        self.release(author, &mut out);
        out
    }

    /// Submissions held longer than [`HOLD_MS`] (their predecessor was lost
    /// on the way, or will come too late), with what they unblock, in order.
    pub fn poll_expired(&mut self, now_ms: u64) -> Vec<G> {
        let expired: Vec<(NodeId, u64)> = self
            .held
            .iter()
            .filter(|(_, hs)| {
                hs.iter()
                    .any(|h| now_ms.saturating_sub(h.since_ms) >= HOLD_MS)
            })
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for key in expired {
            let Some(hs) = self.held.remove(&key) else {
                continue; // released by an earlier one
            };
            self.held_count -= hs.len();
            for h in hs {
                self.released_unordered += 1;
                self.passed(key.0, h.last_nonce);
                out.push(h.group);
            }
            self.release(key.0, &mut out);
        }
        out
    }

    /// Submissions held now.
    pub fn held(&self) -> usize {
        self.held_count
    }

    /// Submissions passed on without their predecessor (held longer than
    /// [`HOLD_MS`], or arriving while [`HELD_MAX`] were held).
    pub fn released_unordered(&self) -> u64 {
        self.released_unordered
    }

    fn passed(&mut self, author: NodeId, nonce: u64) {
        match self.seen.get_mut(&author) {
            Some(s) => *s = (*s).max(nonce),
            None => {
                if self.seen.len() >= AUTHORS_MAX {
                    if let Some(old) = self.seen_order.pop_front() {
                        self.seen.remove(&old);
                    }
                }
                self.seen.insert(author, nonce);
                self.seen_order.push_back(author);
            }
        }
    }

    /// Moves the held submissions of `author` that its arrivals unblocked
    /// to `out`, lowest first.
    fn release(&mut self, author: NodeId, out: &mut Vec<G>) {
        loop {
            let Some(seen) = self.seen.get(&author).copied() else {
                return;
            };
            let next = self
                .held
                .range((author, 0)..=(author, u64::MAX))
                .next()
                .map(|(k, _)| *k);
            let Some(key) = next.filter(|(_, after)| *after <= seen) else {
                return;
            };
            let Some(hs) = self.held.remove(&key) else {
                return;
            };
            self.held_count -= hs.len();
            for h in hs {
                self.passed(author, h.last_nonce);
                out.push(h.group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use federact_config::NodeKey;

    fn author(seed: u8) -> NodeId {
        NodeKey::from_seed(&[seed; 32]).id()
    }

    #[test]
    fn arrivals_in_order_pass_at_once() {
        let a = author(1);
        let mut o = ArrivalOrder::default();
        assert_eq!(o.handle_arrival(a, None, 10, "t10", 0), vec!["t10"]);
        assert_eq!(o.handle_arrival(a, Some(10), 11, "t11", 0), vec!["t11"]);
        assert_eq!(o.held(), 0);
    }

    #[test]
    fn a_submission_ahead_of_its_predecessor_waits_for_it() {
        let (a, b) = (author(1), author(2));
        let mut o = ArrivalOrder::default();
        // Nonces 10, 11, 12 sent in that order arrive as 12, 11, 10; another
        // author is not held up meanwhile.
        assert!(o.handle_arrival(a, Some(11), 12, "t12", 0).is_empty());
        assert!(o.handle_arrival(a, Some(10), 11, "t11", 1).is_empty());
        assert_eq!(
            o.handle_arrival(b, Some(99), 100, "b", 1),
            Vec::<&str>::new()
        );
        assert_eq!(o.handle_arrival(b, None, 99, "b99", 1), vec!["b99", "b"]);
        assert_eq!(
            o.handle_arrival(a, None, 10, "t10", 2),
            vec!["t10", "t11", "t12"]
        );
        assert_eq!(o.held(), 0);
        assert_eq!(o.released_unordered(), 0);
    }

    #[test]
    fn a_lost_predecessor_releases_its_successors_after_the_hold() {
        let a = author(1);
        let mut o = ArrivalOrder::default();
        assert!(o.handle_arrival(a, Some(10), 11, "t11", 100).is_empty());
        assert!(o.handle_arrival(a, Some(11), 12, "t12", 150).is_empty());
        assert!(o.poll_expired(100 + HOLD_MS - 1).is_empty());
        assert_eq!(o.poll_expired(100 + HOLD_MS), vec!["t11", "t12"]);
        assert_eq!(o.held(), 0);
        assert_eq!(o.released_unordered(), 1);
        // The late predecessor passes (the chain will judge it).
        assert_eq!(o.handle_arrival(a, None, 10, "t10", 5_000), vec!["t10"]);
    }

    #[test]
    fn the_hold_is_bounded() {
        let a = author(1);
        let mut o = ArrivalOrder::default();
        for n in 0..HELD_MAX as u64 {
            assert!(o.handle_arrival(a, Some(n + 1_000_000), n, n, 0).is_empty());
        }
        assert_eq!(o.handle_arrival(a, Some(u64::MAX), 7, 7, 0).len(), 1);
        assert_eq!(o.released_unordered(), 1);
    }
}
