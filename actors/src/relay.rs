//! The cross-chain relay as a pure state machine: given the consortium's
//! committed blocks in order, it decides which transactions concern one
//! cloud and must be delivered to that cloud's local chain.
//!
//! A record concerns a cloud when it names it: an `Indication` whose source
//! or destination is in the cloud, an offload request or contract whose
//! requester or executor is one of its nodes, a `MemberJoin` of the cloud.
//! A `Confirmation` or `OffloadCompleted` names only its migration or task;
//! the relay remembers (bounded) which clouds the earlier records involved.
//! The gateway carries out the deliveries; the local chain's validators
//! verify each proof and deliver each consortium transaction at most once,
//! and the cursor (the last consortium height fully delivered) is persisted
//! by the gateway, so delivery is exactly once across restarts.

use std::collections::{HashMap, VecDeque};

use federact_config::{Federation, NodeId};
use federact_ledger::block::Block;
use federact_ledger::hash::Hash;
use federact_ledger::record::Record;

/// Migrations and tasks remembered at most (oldest forgotten first).
const REMEMBERED_MAX: usize = 100_000;

/// Which clouds each in-flight migration or task involves.
pub struct RelayCore {
    cloud: String,
    node_cloud: HashMap<NodeId, String>,
    involved: HashMap<Hash, Vec<String>>,
    order: VecDeque<Hash>,
    next_height: u64,
}

impl RelayCore {
    /// A relay for `cloud`, starting at consortium height `next_height`.
    pub fn new(federation: &Federation, cloud: &str, next_height: u64) -> Self {
        RelayCore {
            cloud: cloud.to_string(),
            node_cloud: federation
                .nodes()
                .iter()
                .map(|n| (n.id(), n.cloud().to_string()))
                .collect(),
            involved: HashMap::new(),
            order: VecDeque::new(),
            next_height: next_height.max(1),
        }
    }

    /// The next consortium height this relay expects.
    pub fn next_height(&self) -> u64 {
        self.next_height
    }

    fn remember(&mut self, id: Hash, clouds: Vec<String>) {
        if self.involved.len() >= REMEMBERED_MAX {
            if let Some(old) = self.order.pop_front() {
                self.involved.remove(&old);
            }
        }
        if self.involved.insert(id, clouds).is_none() {
            self.order.push_back(id);
        }
    }

    fn cloud_of(&self, node: &NodeId) -> Option<String> {
        self.node_cloud.get(node).cloned()
    }

    /// Learns from the consortium block at the next height and returns the
    /// indices of its transactions to deliver to this cloud. A block at any
    /// other height is ignored (returns `None`): the caller feeds blocks in
    /// order.
    pub fn handle_block(&mut self, block: &Block) -> Option<Vec<usize>> {
        if block.header.height != self.next_height {
            return None;
        }
        self.next_height += 1;
        let mut deliver = Vec::new();
        for (i, tx) in block.txs.iter().enumerate() {
            let clouds: Vec<String> = match tx.record() {
                Record::Indication {
                    migration_id,
                    source,
                    destination,
                    ..
                } => {
                    let clouds = vec![source.cloud.clone(), destination.cloud.clone()];
                    self.remember(*migration_id, clouds.clone());
                    clouds
                }
                Record::Confirmation { migration_id, .. } => {
                    self.involved.get(migration_id).cloned().unwrap_or_default()
                }
                Record::OffloadRequested {
                    task_id, requester, ..
                } => {
                    let clouds: Vec<String> = self.cloud_of(requester).into_iter().collect();
                    self.remember(*task_id, clouds.clone());
                    clouds
                }
                Record::OffloadAccepted {
                    task_id, executor, ..
                } => {
                    let mut clouds = self.involved.get(task_id).cloned().unwrap_or_default();
                    clouds.extend(self.cloud_of(executor));
                    self.remember(*task_id, clouds.clone());
                    clouds
                }
                Record::OffloadCompleted { task_id, .. }
                | Record::OffloadDisputed { task_id, .. } => {
                    self.involved.get(task_id).cloned().unwrap_or_default()
                }
                Record::MemberJoin { cloud, .. } => vec![cloud.clone()],
                _ => Vec::new(),
            };
            if clouds.iter().any(|c| c == &self.cloud) {
                deliver.push(i);
            }
        }
        Some(deliver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use federact_config::{write_local_federation, NodeKey, Topology};
    use federact_ledger::record::{Scope, Site};
    use federact_ledger::tx::Transaction;

    fn federation() -> (tempfile::TempDir, Federation) {
        let dir = tempfile::tempdir().unwrap();
        let topo = Topology {
            clouds: 3,
            servers_per_cloud: 1,
            local_validators: 1,
            inter_validators: 3,
        };
        let w = write_local_federation(dir.path(), &topo, false).unwrap();
        let f = Federation::load(&w.federation_file).unwrap();
        (dir, f)
    }

    fn block(height: u64, records: Vec<Record>) -> Block {
        let k = NodeKey::from_seed(&[9; 32]);
        let txs = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| Transaction::sign(r, &k, i as u64 + 1, 1, None))
            .collect();
        Block::new("consortium", height, Hash::ZERO, k.id(), 0, 1, txs)
    }

    fn site(cloud: &str) -> Site {
        Site {
            cloud: cloud.into(),
            server: format!("{cloud}-server"),
        }
    }

    #[test]
    fn a_migration_is_delivered_to_both_clouds_and_no_other() {
        let (_d, fed) = federation();
        let m = Hash::of(b"m");
        let ind = Record::Indication {
            migration_id: m,
            vm_id: Hash::of(b"vm"),
            source: site("cloud-1"),
            destination: site("cloud-2"),
            scope: Scope::Inter,
        };
        let conf = Record::Confirmation {
            migration_id: m,
            vm_id: Hash::of(b"vm"),
            accepted: true,
            observed_hash: Hash::of(b"vm"),
            reason: None,
            scope: Scope::Inter,
        };
        for (cloud, expect) in [("cloud-1", true), ("cloud-2", true), ("cloud-3", false)] {
            let mut r = RelayCore::new(&fed, cloud, 1);
            let got1 = r.handle_block(&block(1, vec![ind.clone()])).unwrap();
            let got2 = r.handle_block(&block(2, vec![conf.clone()])).unwrap();
            assert_eq!(!got1.is_empty(), expect, "{cloud}");
            assert_eq!(
                !got2.is_empty(),
                expect,
                "{cloud}: confirmation follows its indication"
            );
        }
    }

    #[test]
    fn blocks_out_of_order_are_ignored() {
        let (_d, fed) = federation();
        let mut r = RelayCore::new(&fed, "cloud-1", 1);
        assert!(r.handle_block(&block(2, vec![])).is_none());
        assert!(r.handle_block(&block(1, vec![])).is_some());
        assert!(
            r.handle_block(&block(1, vec![])).is_none(),
            "a height is handled once"
        );
        assert_eq!(r.next_height(), 2);
    }

    #[test]
    fn offload_contract_concerns_requester_and_executor_clouds() {
        let (_d, fed) = federation();
        let requester = fed.node("c1-server-1").unwrap().id();
        let executor = fed.node("c3-server-1").unwrap().id();
        let t = Hash::of(b"task");
        let req = Record::OffloadRequested {
            task_id: t,
            requester,
            task_digest: Hash::of(b"in"),
            requirements: federact_ledger::record::Requirements {
                cpu_millis: 100,
                memory_mb: 64,
                deadline_ms: 0,
            },
            scope: Scope::Inter,
        };
        let acc = Record::OffloadAccepted {
            task_id: t,
            executor,
            scope: Scope::Inter,
        };
        let done = Record::OffloadCompleted {
            task_id: t,
            result_digest: Hash::of(b"out"),
            scope: Scope::Inter,
        };
        let mut c3 = RelayCore::new(&fed, "cloud-3", 1);
        assert!(c3
            .handle_block(&block(1, vec![req.clone()]))
            .unwrap()
            .is_empty());
        assert_eq!(
            c3.handle_block(&block(2, vec![acc.clone(), done.clone()]))
                .unwrap(),
            vec![0, 1]
        );
        let mut c2 = RelayCore::new(&fed, "cloud-2", 1);
        assert!(c2
            .handle_block(&block(1, vec![req, acc, done]))
            .unwrap()
            .is_empty());
    }
}
