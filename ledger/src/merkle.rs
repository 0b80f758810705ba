//! The Merkle tree over a block's transaction ids, with inclusion proofs that
//! verify from the header's `tx_root` alone.
//!
//! The tree is RFC 6962's (Certificate Transparency): leaves are hashed as
//! `sha256(0x00 ‖ tx_id)` and inner nodes as `sha256(0x01 ‖ left ‖ right)`, so
//! a leaf can never pass for an inner node; a level with an odd count is
//! split at the largest power of two below n instead of duplicating the last
//! node, so two different lists never share a root (Bitcoin's
//! CVE-2012-2459). The empty tree's root is `sha256("")`.

use serde::{Deserialize, Serialize};

use crate::hash::Hash;

const LEAF: u8 = 0x00;
const NODE: u8 = 0x01;

/// Deepest path a proof may carry (a tree of up to 2^32 leaves).
pub const PATH_LEN_MAX: usize = 32;

/// The hash of a leaf holding `id`.
pub fn leaf_hash(id: &Hash) -> Hash {
    Hash::of_parts(&[&[LEAF], id.as_bytes()])
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::of_parts(&[&[NODE], left.as_bytes(), right.as_bytes()])
}

/// The root over `ids` in order.
pub fn root(ids: &[Hash]) -> Hash {
    if ids.is_empty() {
        return Hash::of(b"");
    }
    let mut level: Vec<Hash> = ids.iter().map(leaf_hash).collect();
    // Bottom-up with RFC 6962's shape: pairing left to right and carrying an
    // odd last node up unchanged gives the same tree as splitting at the
    // largest power of two below n.
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [l, r] => next.push(node_hash(l, r)),
                [one] => next.push(*one),
                _ => {}
            }
        }
        level = next;
    }
    level.first().copied().unwrap_or(Hash::ZERO)
}

/// A path from one leaf to the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    /// The leaf's position.
    pub index: u32,
    /// Number of leaves in the tree.
    pub leaf_count: u32,
    /// Sibling hashes from the leaf upwards (levels where the node was
    /// carried up unpaired contribute none).
    pub siblings: Vec<Hash>,
}

impl MerkleProof {
    /// The proof for leaf `index` of `ids`; `None` if out of range.
    pub fn build(ids: &[Hash], index: usize) -> Option<MerkleProof> {
        if index >= ids.len() || ids.len() > u32::MAX as usize {
            return None;
        }
        let mut level: Vec<Hash> = ids.iter().map(leaf_hash).collect();
        let mut i = index;
        let mut siblings = Vec::new();
        while level.len() > 1 {
            let sib = i ^ 1;
            if let Some(s) = level.get(sib) {
                siblings.push(*s);
            }
            let mut next = Vec::with_capacity(level.len().div_ceil(2));
            for pair in level.chunks(2) {
                match pair {
                    [l, r] => next.push(node_hash(l, r)),
                    [one] => next.push(*one),
                    _ => {}
                }
            }
            level = next;
            i /= 2;
        }
        Some(MerkleProof {
            index: index as u32,
            leaf_count: ids.len() as u32,
            siblings,
        })
    }

    /// Proofs for every leaf of `ids` at once (one pass per level instead of
    /// one tree per proof).
    pub fn build_all(ids: &[Hash]) -> Vec<MerkleProof> {
        let n = ids.len();
        let mut proofs: Vec<MerkleProof> = (0..n)
            .map(|i| MerkleProof {
                index: i as u32,
                leaf_count: n as u32,
                siblings: Vec::new(),
            })
            .collect();
        let mut level: Vec<Hash> = ids.iter().map(leaf_hash).collect();
        let mut shift = 0u32;
        while level.len() > 1 {
            for p in proofs.iter_mut() {
                let i = (p.index >> shift) as usize;
                if let Some(s) = level.get(i ^ 1) {
                    p.siblings.push(*s);
                }
            }
            let mut next = Vec::with_capacity(level.len().div_ceil(2));
            for pair in level.chunks(2) {
                match pair {
                    [l, r] => next.push(node_hash(l, r)),
                    [one] => next.push(*one),
                    _ => {}
                }
            }
            level = next;
            shift += 1;
        }
        proofs
    }

    /// The root this proof leads to from leaf `id`; `None` if the proof's
    /// shape is impossible (index out of range, wrong number of siblings).
    pub fn root_for(&self, id: &Hash) -> Option<Hash> {
        if self.index >= self.leaf_count || self.siblings.len() > PATH_LEN_MAX {
            return None;
        }
        let mut hash = leaf_hash(id);
        let mut i = self.index as u64;
        let mut width = self.leaf_count as u64;
        let mut sibs = self.siblings.iter();
        while width > 1 {
            let sib = i ^ 1;
            if sib < width {
                let s = sibs.next()?;
                hash = if i & 1 == 0 {
                    node_hash(&hash, s)
                } else {
                    node_hash(s, &hash)
                };
            }
            i /= 2;
            width = width.div_ceil(2);
        }
        if sibs.next().is_some() {
            return None;
        }
        Some(hash)
    }

    /// Whether leaf `id` is at `index` in the tree with root `root`.
    pub fn verify(&self, id: &Hash, root: &Hash) -> bool {
        self.root_for(id).as_ref() == Some(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<Hash> {
        (0..n).map(|i| Hash::of(&i.to_be_bytes())).collect()
    }

    /// RFC 6962's recursive definition, as an independent reference.
    fn rfc_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Hash::of(b""),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = (n - 1).next_power_of_two().max(1);
                let k = if k >= n { k / 2 } else { k };
                node_hash(&rfc_root(&leaves[..k]), &rfc_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn matches_the_rfc_6962_definition() {
        for n in 0..40 {
            assert_eq!(root(&ids(n)), rfc_root(&ids(n)), "n = {n}");
        }
    }

    #[test]
    fn every_leaf_proves_for_every_size() {
        for n in 1..70 {
            let ids = ids(n);
            let r = root(&ids);
            let all = MerkleProof::build_all(&ids);
            for i in 0..n {
                let p = MerkleProof::build(&ids, i).unwrap();
                assert_eq!(p, all[i]);
                assert!(p.verify(&ids[i], &r), "n {n} i {i}");
                // Not for another leaf or position.
                assert!(!p.verify(&ids[(i + 1) % n], &r) || n == 1);
            }
        }
        assert!(MerkleProof::build(&ids(3), 3).is_none());
    }

    #[test]
    fn odd_counts_do_not_collide_with_duplicated_lists() {
        // CVE-2012-2459: [a, b, c] and [a, b, c, c] must differ.
        let a = ids(3);
        let mut b = a.clone();
        b.push(a[2]);
        assert_ne!(root(&a), root(&b));
        // A leaf hash cannot pose as an inner node (domain separation).
        let two = ids(2);
        let inner = node_hash(&leaf_hash(&two[0]), &leaf_hash(&two[1]));
        assert_ne!(root(&[inner]), root(&two));
    }

    #[test]
    fn tampered_proofs_fail() {
        let ids = ids(9);
        let r = root(&ids);
        let p = MerkleProof::build(&ids, 4).unwrap();
        let mut q = p.clone();
        q.index = 5;
        assert!(!q.verify(&ids[4], &r));
        let mut q = p.clone();
        q.siblings[0] = Hash::ZERO;
        assert!(!q.verify(&ids[4], &r));
        let mut q = p.clone();
        q.siblings.push(Hash::ZERO);
        assert!(!q.verify(&ids[4], &r));
        let mut q = p.clone();
        q.leaf_count = 4;
        assert!(!q.verify(&ids[4], &r));
        let mut q = p;
        q.index = 100;
        assert_eq!(q.root_for(&ids[4]), None);
    }

    proptest! {
        #[test]
        fn proofs_round_trip_and_verify(n in 1usize..200, pick in any::<usize>()) {
            let ids = ids(n);
            let i = pick % n;
            let p = MerkleProof::build(&ids, i).unwrap();
            let back: MerkleProof = codec::decode(&codec::encode(&p), 4096).unwrap();
            prop_assert_eq!(&back, &p);
            prop_assert!(back.verify(&ids[i], &root(&ids)));
        }
    }
}
