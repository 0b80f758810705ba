//! A validator's pool of transactions waiting for a block: bounded in count,
//! bytes and per author, deduplicated by transaction id, and handing out
//! transactions in per-author nonce order.
//!
//! Pure: the validator actor inserts what clients submit (after checking
//! signatures), asks for a batch when its consensus core wants a block, and
//! removes what a committed block contained. Authors are served round-robin,
//! so one busy author cannot starve the rest (the alternative, global
//! arrival order, lets a flood from one client delay everyone's records).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use federact_config::NodeId;

use crate::tx::{Transaction, TxId};

/// The pool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolLimits {
    /// Transactions held at most.
    pub max_txs: usize,
    /// Encoded bytes held at most.
    pub max_bytes: usize,
    /// Transactions of one author held at most.
    pub max_per_author: usize,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        MempoolLimits {
            max_txs: 100_000,
            max_bytes: 256 << 20,
            max_per_author: 50_000,
        }
    }
}

/// Why a transaction was not admitted (an expected outcome, counted by the
/// caller, not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MempoolReject {
    /// The same transaction is already waiting.
    #[error("transaction already in the mempool")]
    Duplicate,
    /// Its nonce is not above the author's last committed nonce.
    #[error("nonce {nonce} is not above the author's last committed nonce {last}")]
    StaleNonce {
        /// The transaction's nonce.
        nonce: u64,
        /// The author's last committed nonce.
        last: u64,
    },
    /// Another waiting transaction of the same author has this nonce.
    #[error("another pending transaction of this author has nonce {nonce}")]
    NonceTaken {
        /// The nonce.
        nonce: u64,
    },
    /// The pool is at its count or byte bound.
    #[error("mempool full")]
    Full,
    /// The author is at its bound.
    #[error("too many pending transactions from this author")]
    AuthorFull,
}

#[derive(Default)]
struct AuthorQueue {
    by_nonce: BTreeMap<u64, TxId>,
}

/// The pool.
pub struct Mempool {
    limits: MempoolLimits,
    txs: HashMap<TxId, Transaction>,
    authors: HashMap<NodeId, AuthorQueue>,
    /// Authors with waiting transactions, in service order.
    ready: VecDeque<NodeId>,
    bytes: usize,
}

impl Mempool {
    /// An empty pool with `limits`.
    pub fn new(limits: MempoolLimits) -> Self {
        Mempool {
            limits,
            txs: HashMap::new(),
            authors: HashMap::new(),
            ready: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Number of waiting transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Encoded bytes of the waiting transactions.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `id` waits here.
    pub fn contains(&self, id: &TxId) -> bool {
        self.txs.contains_key(id)
    }

    /// The waiting transaction with this id.
    pub fn get(&self, id: &TxId) -> Option<&Transaction> {
        self.txs.get(id)
    }

    /// Admits `tx` whose author's last committed nonce is `last_nonce`.
    /// Signatures and size are the caller's to check first.
    pub fn insert(&mut self, tx: Transaction, last_nonce: u64) -> Result<(), MempoolReject> {
        let id = tx.id();
        if self.txs.contains_key(&id) {
            return Err(MempoolReject::Duplicate);
        }
        if tx.nonce() <= last_nonce {
            return Err(MempoolReject::StaleNonce {
                nonce: tx.nonce(),
                last: last_nonce,
            });
        }
        let len = tx.encoded_len();
        if self.txs.len() >= self.limits.max_txs || self.bytes + len > self.limits.max_bytes {
            return Err(MempoolReject::Full);
        }
        let author = *tx.author();
        let queue = self.authors.entry(author).or_default();
        if queue.by_nonce.len() >= self.limits.max_per_author {
            return Err(MempoolReject::AuthorFull);
        }
        if queue.by_nonce.contains_key(&tx.nonce()) {
            return Err(MempoolReject::NonceTaken { nonce: tx.nonce() });
        }
        if queue.by_nonce.is_empty() {
            self.ready.push_back(author);
        }
        queue.by_nonce.insert(tx.nonce(), id);
        self.bytes += len;
        self.txs.insert(id, tx);
        Ok(())
    }

    /// Up to `max_txs` transactions totalling at most `max_bytes`, lowest
    /// nonce first per author, authors taken round-robin. Leaves them in the
    /// pool: they leave when a block containing them commits.
    pub fn select(&self, max_txs: usize, max_bytes: usize) -> Vec<Transaction> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut cursors: Vec<std::collections::btree_map::Values<'_, u64, TxId>> = self
            .ready
            .iter()
            .filter_map(|a| self.authors.get(a).map(|q| q.by_nonce.values()))
            .collect();
        let mut exhausted = 0;
        while out.len() < max_txs && exhausted < cursors.len() {
            exhausted = 0;
            for cursor in cursors.iter_mut() {
                if out.len() >= max_txs {
                    break;
                }
                match cursor.next().and_then(|id| self.txs.get(id)) {
                    Some(tx) => {
                        let len = tx.encoded_len();
                        if bytes + len > max_bytes {
                            return out;
                        }
                        bytes += len;
                        out.push(tx.clone());
                    }
                    None => exhausted += 1,
                }
            }
        }
        out
    }

    /// Removes the transactions of a committed block, and every waiting
    /// transaction their commit made stale (same author, nonce not above).
    pub fn remove_committed<'a>(&mut self, committed: impl IntoIterator<Item = &'a Transaction>) {
        let mut touched: HashMap<NodeId, u64> = HashMap::new();
        for tx in committed {
            let last = touched.entry(*tx.author()).or_insert(0);
            *last = (*last).max(tx.nonce());
        }
        let mut emptied = HashSet::new();
        for (author, last) in touched {
            let Some(queue) = self.authors.get_mut(&author) else {
                continue;
            };
            let keep = queue.by_nonce.split_off(&(last.saturating_add(1)));
            let gone = std::mem::replace(&mut queue.by_nonce, keep);
            for id in gone.values() {
                if let Some(tx) = self.txs.remove(id) {
                    self.bytes -= tx.encoded_len();
                }
            }
            if queue.by_nonce.is_empty() {
                self.authors.remove(&author);
                emptied.insert(author);
            }
        }
        if !emptied.is_empty() {
            self.ready.retain(|a| !emptied.contains(a));
        }
    }

    /// Drops one waiting transaction (e.g. the rules refused it when a block
    /// was built).
    pub fn remove(&mut self, id: &TxId) -> Option<Transaction> {
        let tx = self.txs.remove(id)?;
        self.bytes -= tx.encoded_len();
        let author = *tx.author();
        if let Some(queue) = self.authors.get_mut(&author) {
            queue.by_nonce.remove(&tx.nonce());
            if queue.by_nonce.is_empty() {
                self.authors.remove(&author);
                self.ready.retain(|a| a != &author);
            }
        }
        Some(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;
    use crate::record::Record;
    use federact_config::NodeKey;

    fn record(n: u64) -> Record {
        Record::ProvData {
            data_digest: Hash::of(&n.to_be_bytes()),
            generated_by: "test".into(),
            used_by: None,
        }
    }

    fn tx(key: &NodeKey, nonce: u64) -> Transaction {
        Transaction::sign(record(nonce), key, nonce, 1_000 + nonce, None)
    }

    #[test]
    fn duplicates_stale_and_taken_nonces_are_refused() {
        let k = NodeKey::from_seed(&[1; 32]);
        let mut pool = Mempool::new(MempoolLimits::default());
        pool.insert(tx(&k, 5), 0).unwrap();
        assert_eq!(pool.insert(tx(&k, 5), 0), Err(MempoolReject::Duplicate));
        assert_eq!(
            pool.insert(tx(&k, 3), 4),
            Err(MempoolReject::StaleNonce { nonce: 3, last: 4 })
        );
        let mut other = tx(&k, 5);
        // Same author and nonce, different record: a different transaction.
        other = Transaction::sign(record(99), &k, other.nonce(), 7, None);
        assert_eq!(
            pool.insert(other, 0),
            Err(MempoolReject::NonceTaken { nonce: 5 })
        );
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn bounds_hold() {
        let k = NodeKey::from_seed(&[1; 32]);
        let limits = MempoolLimits {
            max_txs: 3,
            max_bytes: usize::MAX,
            max_per_author: 2,
        };
        let mut pool = Mempool::new(limits);
        pool.insert(tx(&k, 1), 0).unwrap();
        pool.insert(tx(&k, 2), 0).unwrap();
        assert_eq!(pool.insert(tx(&k, 3), 0), Err(MempoolReject::AuthorFull));
        let k2 = NodeKey::from_seed(&[2; 32]);
        pool.insert(tx(&k2, 1), 0).unwrap();
        assert_eq!(pool.insert(tx(&k2, 2), 0), Err(MempoolReject::Full));
        let one = tx(&k, 1).encoded_len();
        let mut small = Mempool::new(MempoolLimits {
            max_txs: 10,
            max_bytes: one,
            max_per_author: 10,
        });
        small.insert(tx(&k, 1), 0).unwrap();
        assert_eq!(small.insert(tx(&k, 2), 0), Err(MempoolReject::Full));
    }

    #[test]
    fn select_serves_authors_round_robin_in_nonce_order() {
        let a = NodeKey::from_seed(&[1; 32]);
        let b = NodeKey::from_seed(&[2; 32]);
        let mut pool = Mempool::new(MempoolLimits::default());
        for n in [3, 1, 2] {
            pool.insert(tx(&a, n), 0).unwrap();
        }
        pool.insert(tx(&b, 10), 0).unwrap();
        let picked: Vec<_> = pool
            .select(10, usize::MAX)
            .iter()
            .map(|t| (t.author() == &a.id(), t.nonce()))
            .collect();
        assert_eq!(picked, vec![(true, 1), (false, 10), (true, 2), (true, 3)]);
        assert_eq!(pool.select(2, usize::MAX).len(), 2);
        let one = tx(&a, 1).encoded_len();
        assert_eq!(pool.select(10, one).len(), 1);
        assert_eq!(pool.len(), 4, "select does not remove");
    }

    #[test]
    fn committing_removes_the_block_and_everything_it_made_stale() {
        let a = NodeKey::from_seed(&[1; 32]);
        let mut pool = Mempool::new(MempoolLimits::default());
        for n in 1..=5 {
            pool.insert(tx(&a, n), 0).unwrap();
        }
        // A block committed nonce 3 (say, submitted through another validator).
        pool.remove_committed([&tx(&a, 3)]);
        let left: Vec<_> = pool
            .select(10, usize::MAX)
            .iter()
            .map(|t| t.nonce())
            .collect();
        assert_eq!(left, vec![4, 5]);
        assert_eq!(pool.bytes(), 2 * tx(&a, 4).encoded_len());
        assert!(pool.remove(&tx(&a, 4).id()).is_some());
        pool.remove_committed([&tx(&a, 5)]);
        assert!(pool.is_empty());
        assert_eq!(pool.bytes(), 0);
        assert!(pool.select(10, usize::MAX).is_empty());
    }
}
