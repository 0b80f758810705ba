//! Where a new function instance goes: a pure policy over the servers'
//! last load reports (no I/O, no clock), so it is tested with tables and
//! swapped without touching the orchestrator actor.

use federact_config::NodeId;
use serde::{Deserialize, Serialize};

/// A server's load as it last reported it (plus the orchestrator's own
/// reservations for placements still being recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLoad {
    /// Instances hosted.
    pub instances: u32,
    /// Most instances it hosts.
    pub instances_max: u32,
    /// Calls in flight (queued or running).
    pub inflight: u32,
    /// Most calls in flight.
    pub inflight_max: u32,
    /// Estimated memory held by instance state, bytes.
    pub memory_bytes: u64,
    /// The functions it can host (at most [`FUNCTIONS_MAX`]).
    pub functions: Vec<String>,
}

/// Most function names a load report lists.
pub const FUNCTIONS_MAX: usize = 256;

impl ServerLoad {
    /// Whether another instance fits.
    pub fn has_room(&self) -> bool {
        self.instances < self.instances_max
    }

    /// Whether another call fits.
    pub fn has_call_room(&self) -> bool {
        self.inflight < self.inflight_max
    }

    /// Fraction of the tighter of the two limits in use, in thousandths.
    pub fn load_permille(&self) -> u32 {
        let frac = |used: u32, max: u32| {
            if max == 0 {
                1000
            } else {
                (u64::from(used) * 1000 / u64::from(max)) as u32
            }
        };
        frac(self.instances, self.instances_max).max(frac(self.inflight, self.inflight_max))
    }
}

/// A candidate server for a placement.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Its id.
    pub id: NodeId,
    /// Its load.
    pub load: &'a ServerLoad,
}

/// Chooses a server for a new instance of `function`.
pub trait PlacementPolicy: Send + 'static {
    /// The chosen server, or `None` when no candidate fits.
    fn place(&self, function: &str, candidates: &[Candidate<'_>]) -> Option<NodeId>;
}

/// The least-loaded server that hosts the function and has room; ties go
/// to the lowest id (deterministic).
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastLoaded;

impl PlacementPolicy for LeastLoaded {
    fn place(&self, function: &str, candidates: &[Candidate<'_>]) -> Option<NodeId> {
        candidates
            .iter()
            .filter(|c| c.load.has_room() && c.load.functions.iter().any(|f| f == function))
            .min_by_key(|c| (c.load.load_permille(), c.load.instances, c.id))
            .map(|c| c.id)
    }
}

/// Servers that could take an offloaded call of `function`, least loaded
/// first (the offload shortlist).
pub fn shortlist(function: &str, candidates: &[Candidate<'_>], limit: usize) -> Vec<NodeId> {
    let mut c: Vec<&Candidate<'_>> = candidates
        .iter()
        .filter(|c| c.load.has_call_room() && c.load.functions.iter().any(|f| f == function))
        .collect();
    c.sort_by_key(|c| (c.load.load_permille(), c.id));
    c.into_iter().take(limit).map(|c| c.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use federact_config::NodeKey;

    fn id(i: u8) -> NodeId {
        NodeKey::from_seed(&[i; 32]).id()
    }
    fn load(instances: u32, inflight: u32, f: &str) -> ServerLoad {
        ServerLoad {
            instances,
            instances_max: 4,
            inflight,
            inflight_max: 4,
            memory_bytes: 0,
            functions: vec![f.to_string()],
        }
    }

    #[test]
    fn least_loaded_table() {
        struct Case {
            desc: &'static str,
            loads: Vec<ServerLoad>,
            expected: Option<usize>,
        }
        let cases = [
            Case {
                desc: "empty",
                loads: vec![],
                expected: None,
            },
            Case {
                desc: "lighter wins",
                loads: vec![load(2, 0, "f"), load(1, 0, "f")],
                expected: Some(1),
            },
            Case {
                desc: "full skipped",
                loads: vec![load(4, 0, "f"), load(3, 3, "f")],
                expected: Some(1),
            },
            Case {
                desc: "all full",
                loads: vec![load(4, 0, "f"), load(4, 0, "f")],
                expected: None,
            },
            Case {
                desc: "must host the function",
                loads: vec![load(0, 0, "g"), load(3, 0, "f")],
                expected: Some(1),
            },
            Case {
                desc: "busy counts",
                loads: vec![load(1, 4, "f"), load(2, 0, "f")],
                expected: Some(1),
            },
        ];
        for c in cases {
            let ids: Vec<NodeId> = (0..c.loads.len()).map(|i| id(i as u8 + 1)).collect();
            let cands: Vec<Candidate<'_>> = c
                .loads
                .iter()
                .zip(&ids)
                .map(|(l, i)| Candidate { id: *i, load: l })
                .collect();
            assert_eq!(
                LeastLoaded.place("f", &cands),
                c.expected.map(|i| ids[i]),
                "{}",
                c.desc
            );
        }
    }

    #[test]
    fn shortlist_orders_by_load_and_skips_busy() {
        let loads = [
            load(0, 4, "f"),
            load(0, 2, "f"),
            load(0, 1, "f"),
            load(0, 0, "g"),
        ];
        let ids: Vec<NodeId> = (1..=4).map(id).collect();
        let cands: Vec<Candidate<'_>> = loads
            .iter()
            .zip(&ids)
            .map(|(l, i)| Candidate { id: *i, load: l })
            .collect();
        assert_eq!(shortlist("f", &cands, 8), vec![ids[2], ids[1]]);
        assert_eq!(shortlist("f", &cands, 1), vec![ids[2]]);
    }
}
