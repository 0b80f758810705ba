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
    /// When the reporting server process started (ms since the epoch): a
    /// new value means it restarted and hosts none of its earlier
    /// instances any more.
    pub started_ms: u64,
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

/// Most instances a heat report lists.
pub const HEAT_MAX: usize = 64;

/// How many calls one instance took since its server's previous report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceHeat {
    /// The function.
    pub name: String,
    /// The instance key.
    pub key: String,
    /// Calls since the previous report.
    pub calls: u32,
}

/// A server as the load-balance policy sees it.
#[derive(Debug, Clone)]
pub struct ServerHeat<'a> {
    /// Its id.
    pub id: NodeId,
    /// Its last load report.
    pub load: &'a ServerLoad,
    /// Its hosted instances' heat (last report).
    pub instances: &'a [InstanceHeat],
}

/// One instance to migrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The function.
    pub name: String,
    /// The instance key.
    pub key: String,
    /// Where it is.
    pub from: NodeId,
    /// Where it goes.
    pub to: NodeId,
}

/// Load balancing by migration: while the hottest server takes more than
/// `ratio_permille`/1000 times the calls of the coolest one with room (and
/// at least `calls_min`), move the hottest of its instances whose move
/// narrows the gap (the coolest server must host the function). Pure:
/// driven by the servers' heat reports, tested with tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebalance {
    /// Imbalance that triggers a move: hottest > coolest × this / 1000.
    pub ratio_permille: u32,
    /// A server below this many calls per report is never "hot".
    pub calls_min: u32,
    /// Most moves per round.
    pub moves_max: usize,
}

impl Default for Rebalance {
    fn default() -> Self {
        Rebalance {
            ratio_permille: 2000,
            calls_min: 20,
            moves_max: 1,
        }
    }
}

impl Rebalance {
    /// The moves of one round (at most `moves_max`), given the servers'
    /// reports. Deterministic: ties go to the lowest id, then name and key.
    pub fn plan(&self, servers: &[ServerHeat<'_>]) -> Vec<Move> {
        struct S<'a> {
            id: NodeId,
            total: u64,
            room: u32,
            functions: &'a [String],
            instances: Vec<&'a InstanceHeat>,
        }
        let mut s: Vec<S<'_>> = servers
            .iter()
            .map(|h| S {
                id: h.id,
                total: h.instances.iter().map(|i| u64::from(i.calls)).sum(),
                room: h.load.instances_max.saturating_sub(h.load.instances),
                functions: &h.load.functions,
                instances: h.instances.iter().collect(),
            })
            .collect();
        let mut moves = Vec::new();
        while moves.len() < self.moves_max {
            let Some(hi) = (0..s.len()).max_by_key(|&i| (s[i].total, std::cmp::Reverse(s[i].id)))
            else {
                break;
            };
            let Some(lo) = (0..s.len())
                .filter(|&i| i != hi && s[i].room > 0)
                .min_by_key(|&i| (s[i].total, s[i].id))
            else {
                break;
            };
            let (hot, cool) = (s[hi].total, s[lo].total);
            if hot < u64::from(self.calls_min)
                || hot * 1000 <= cool * u64::from(self.ratio_permille)
            {
                break;
            }
            // The hottest instance whose move narrows the gap.
            let pick = s[hi]
                .instances
                .iter()
                .enumerate()
                .filter(|(_, i)| {
                    let c = u64::from(i.calls);
                    c > 0 && cool + c < hot && s[lo].functions.contains(&i.name)
                })
                .max_by(|(_, a), (_, b)| {
                    a.calls
                        .cmp(&b.calls)
                        .then_with(|| b.name.cmp(&a.name))
                        .then_with(|| b.key.cmp(&a.key))
                })
                .map(|(n, _)| n);
            let Some(n) = pick else { break };
            let inst = s[hi].instances.remove(n);
            let c = u64::from(inst.calls);
            s[hi].total -= c;
            s[lo].total += c;
            s[lo].room -= 1;
            moves.push(Move {
                name: inst.name.clone(),
                key: inst.key.clone(),
                from: s[hi].id,
                to: s[lo].id,
            });
        }
        moves
    }
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
            started_ms: 0,
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

    fn heat(list: &[(&str, u32)]) -> Vec<InstanceHeat> {
        list.iter()
            .map(|(k, c)| InstanceHeat {
                name: "f".into(),
                key: k.to_string(),
                calls: *c,
            })
            .collect()
    }

    #[test]
    fn rebalance_table() {
        struct Case {
            desc: &'static str,
            policy: Rebalance,
            servers: Vec<(ServerLoad, Vec<InstanceHeat>)>,
            /// (key, from index, to index)
            expected: Vec<(&'static str, usize, usize)>,
        }
        let one = Rebalance {
            ratio_permille: 2000,
            calls_min: 10,
            moves_max: 1,
        };
        let cases = [
            Case {
                desc: "balanced: nothing moves",
                policy: one,
                servers: vec![
                    (load(2, 0, "f"), heat(&[("a", 30), ("b", 20)])),
                    (load(2, 0, "f"), heat(&[("c", 40)])),
                ],
                expected: vec![],
            },
            Case {
                desc: "hot server gives its hottest instance that narrows the gap",
                policy: one,
                servers: vec![
                    (load(3, 0, "f"), heat(&[("a", 100), ("b", 40), ("c", 5)])),
                    (load(1, 0, "f"), heat(&[("d", 10)])),
                ],
                // gap 135: a (100) narrows it to 65.
                expected: vec![("a", 0, 1)],
            },
            Case {
                desc: "an instance hotter than the gap stays (it would only swap roles)",
                policy: one,
                servers: vec![
                    (load(2, 0, "f"), heat(&[("a", 100), ("b", 10)])),
                    (load(1, 0, "f"), heat(&[("d", 15)])),
                ],
                expected: vec![("b", 0, 1)],
            },
            Case {
                desc: "below calls_min nothing is hot",
                policy: one,
                servers: vec![
                    (load(2, 0, "f"), heat(&[("a", 6), ("b", 3)])),
                    (load(0, 0, "f"), heat(&[])),
                ],
                expected: vec![],
            },
            Case {
                desc: "a full or foreign server is no target",
                policy: one,
                servers: vec![
                    (load(2, 0, "f"), heat(&[("a", 60), ("b", 50)])),
                    (load(4, 0, "f"), heat(&[])),
                    (load(0, 0, "g"), heat(&[])),
                ],
                expected: vec![],
            },
            Case {
                desc: "several moves spread the heat",
                policy: Rebalance {
                    moves_max: 4,
                    ..one
                },
                servers: vec![
                    (
                        load(4, 0, "f"),
                        heat(&[("a", 40), ("b", 40), ("c", 40), ("d", 40)]),
                    ),
                    (load(0, 0, "f"), heat(&[])),
                    (load(0, 0, "f"), heat(&[])),
                ],
                expected: vec![("a", 0, 1), ("b", 0, 2)],
            },
        ];
        for c in cases {
            let ids: Vec<NodeId> = (0..c.servers.len()).map(|i| id(i as u8 + 1)).collect();
            let views: Vec<ServerHeat<'_>> = c
                .servers
                .iter()
                .zip(&ids)
                .map(|((l, h), i)| ServerHeat {
                    id: *i,
                    load: l,
                    instances: h,
                })
                .collect();
            let got: Vec<(String, NodeId, NodeId)> = c
                .policy
                .plan(&views)
                .into_iter()
                .map(|m| (m.key, m.from, m.to))
                .collect();
            let want: Vec<(String, NodeId, NodeId)> = c
                .expected
                .iter()
                .map(|(k, f, t)| (k.to_string(), ids[*f], ids[*t]))
                .collect();
            assert_eq!(got, want, "{}", c.desc);
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
