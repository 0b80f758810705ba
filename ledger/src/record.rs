//! The records the ledgers hold: one typed enum variant per fact the
//! framework writes down, grouped in four families — task offloading (MEC),
//! provenance (TOM's PROV records, Table II), VM migration (BASICS'
//! Indication / Confirmation / Arrival / Leave) and federation plumbing
//! (relayed consortium records, consortium membership).
//!
//! A record is only data; whether it may be written given the chain's state
//! is decided by [`crate::rules`]. This module checks what can be checked
//! without state: string lengths ([`Record::check_shape`]) and where a record
//! belongs ([`Record::route`]).

use serde::{Deserialize, Serialize};

use federact_config::{NodeId, Role};

use crate::error::RecordError;
use crate::hash::Hash;
use crate::proof::CrossChainProof;

/// Longest name (entity, activity, cloud, server) a record may carry, in bytes.
pub const NAME_LEN_MAX: usize = 128;
/// Longest free-text reason a record may carry, in bytes.
pub const REASON_LEN_MAX: usize = 512;
/// Most roles a membership record may list.
pub const ROLES_MAX: usize = 4;

/// Whether an operation stays inside one cloud or crosses clouds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Inside one cloud: recorded on that cloud's local chain.
    Local,
    /// Across clouds: recorded on the consortium chain.
    Inter,
}

/// Which chain a record is written to (what the gateway routes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Route {
    /// The local chain of the cloud that produced it.
    Local,
    /// The consortium chain.
    Consortium,
}

/// A server in a cloud: the two ends of a migration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Site {
    /// The cloud's name.
    pub cloud: String,
    /// The server's node name.
    pub server: String,
}

impl Site {
    /// A site from its cloud and server names.
    pub fn new(cloud: impl Into<String>, server: impl Into<String>) -> Self {
        Site {
            cloud: cloud.into(),
            server: server.into(),
        }
    }
}

/// What an offloaded task needs from its executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirements {
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Time by which the result is needed, milliseconds since the epoch.
    pub deadline_ms: u64,
}

/// The two kinds of identified things in TOM's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntityKind {
    /// A device (sensor, edge box, server).
    Device,
    /// A container (a function instance).
    Container,
}

/// Evidence of an entity's identity, recorded when it joins (TOM's
/// `IDENTITY(object, id-proof)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdProof {
    /// Digest of the evidence: the image digest of a container, the
    /// attestation or certificate digest of a device.
    pub digest: Hash,
    /// The node that vouches for the identity (usually the orchestrator).
    pub attested_by: NodeId,
}

/// One fact on a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// An overloaded server asks for a task to be run elsewhere.
    OffloadRequested {
        /// The task.
        task_id: Hash,
        /// The server that wants it run.
        requester: NodeId,
        /// Digest of the task's input and code.
        task_digest: Hash,
        /// What it needs.
        requirements: Requirements,
        /// Whether requester and executors may be in other clouds.
        scope: Scope,
    },
    /// The contract: `executor` runs the task.
    OffloadAccepted {
        /// The task.
        task_id: Hash,
        /// The server that runs it.
        executor: NodeId,
        /// Must match the request's scope.
        scope: Scope,
    },
    /// The executor finished and produced a result with this digest.
    OffloadCompleted {
        /// The task.
        task_id: Hash,
        /// Digest of the result.
        result_digest: Hash,
        /// Must match the request's scope.
        scope: Scope,
    },
    /// PROV-ID-create: a device or container joins.
    ProvIdCreate {
        /// Device or container.
        kind: EntityKind,
        /// Its name.
        entity: String,
        /// Evidence of its identity.
        id_proof: IdProof,
    },
    /// PROV-ID-delete: a device or container leaves.
    ProvIdDelete {
        /// Device or container.
        kind: EntityKind,
        /// Its name.
        entity: String,
    },
    /// PROV-DATA: data left its generating activity (`used_by: None`) or is
    /// used by an activity (`used_by: Some`), which needs it to have left.
    ProvData {
        /// Digest of the data.
        data_digest: Hash,
        /// The generating entity or activity.
        generated_by: String,
        /// The using activity, if this records a use.
        used_by: Option<String>,
    },
    /// PROV-ORCH: `deployed` was placed at `location`.
    ProvOrch {
        /// What was placed (a container or activity).
        deployed: String,
        /// Where (a server or device).
        location: String,
    },
    /// A migration of `vm_id` from `source` to `destination` is attempted.
    Indication {
        /// The migration.
        migration_id: Hash,
        /// sha256 of the stopped instance's image.
        vm_id: Hash,
        /// Where it leaves from.
        source: Site,
        /// Where it goes.
        destination: Site,
        /// Local iff both sites are in the same cloud.
        scope: Scope,
    },
    /// The destination re-hashed the image: accepted (hash matches) or not.
    Confirmation {
        /// The migration.
        migration_id: Hash,
        /// The vm id of the indication.
        vm_id: Hash,
        /// Whether the destination accepted the image.
        accepted: bool,
        /// The hash the destination computed.
        observed_hash: Hash,
        /// Why it was rejected or aborted.
        reason: Option<String>,
        /// The indication's scope (says which chain this goes to).
        scope: Scope,
    },
    /// On the destination cloud's local chain: the vm arrived.
    Arrival {
        /// The migration.
        migration_id: Hash,
        /// The vm.
        vm_id: Hash,
        /// The consortium's committed, accepting confirmation.
        proof: Box<CrossChainProof>,
    },
    /// On the source cloud's local chain: the vm left (the migration completes).
    Leave {
        /// The migration.
        migration_id: Hash,
        /// The vm.
        vm_id: Hash,
        /// The consortium's committed, accepting confirmation.
        proof: Box<CrossChainProof>,
    },
    /// A gateway delivers a committed consortium record to a local chain.
    Relayed {
        /// Proof that the record is committed on the consortium.
        proof: Box<CrossChainProof>,
    },
    /// A node joins the consortium's membership.
    MemberJoin {
        /// Its key.
        node: NodeId,
        /// Its cloud.
        cloud: String,
        /// Its roles.
        roles: Vec<Role>,
    },
    /// The requester refused a completed offload's result: the executor's
    /// answer does not hash to the committed `OffloadCompleted` digest, or
    /// the requester's own re-execution (a spot check) disagrees with it.
    /// The requester answered its caller with `expected_digest`'s result.
    /// (Appended last: stores written before it stay decodable.)
    OffloadDisputed {
        /// The task.
        task_id: Hash,
        /// sha256 of the result the executor returned.
        received_digest: Hash,
        /// sha256 of the result the requester computed itself.
        expected_digest: Hash,
        /// Must match the request's scope.
        scope: Scope,
    },
}

impl Record {
    /// The record's variant name, for errors, logs and tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::OffloadRequested { .. } => "OffloadRequested",
            Record::OffloadAccepted { .. } => "OffloadAccepted",
            Record::OffloadCompleted { .. } => "OffloadCompleted",
            Record::ProvIdCreate { .. } => "ProvIdCreate",
            Record::ProvIdDelete { .. } => "ProvIdDelete",
            Record::ProvData { .. } => "ProvData",
            Record::ProvOrch { .. } => "ProvOrch",
            Record::Indication { .. } => "Indication",
            Record::Confirmation { .. } => "Confirmation",
            Record::Arrival { .. } => "Arrival",
            Record::Leave { .. } => "Leave",
            Record::Relayed { .. } => "Relayed",
            Record::MemberJoin { .. } => "MemberJoin",
            Record::OffloadDisputed { .. } => "OffloadDisputed",
        }
    }

    /// Which chain the record is written to: inter-cloud migrations,
    /// cross-cloud offload contracts and membership go to the consortium;
    /// provenance, local migrations, `Arrival` / `Leave` and relayed
    /// records go to the local chain.
    pub fn route(&self) -> Route {
        let by_scope = |s: &Scope| match s {
            Scope::Local => Route::Local,
            Scope::Inter => Route::Consortium,
        };
        match self {
            Record::OffloadRequested { scope, .. }
            | Record::OffloadAccepted { scope, .. }
            | Record::OffloadCompleted { scope, .. }
            | Record::OffloadDisputed { scope, .. }
            | Record::Indication { scope, .. }
            | Record::Confirmation { scope, .. } => by_scope(scope),
            Record::MemberJoin { .. } => Route::Consortium,
            Record::ProvIdCreate { .. }
            | Record::ProvIdDelete { .. }
            | Record::ProvData { .. }
            | Record::ProvOrch { .. }
            | Record::Arrival { .. }
            | Record::Leave { .. }
            | Record::Relayed { .. } => Route::Local,
        }
    }

    /// The vm this record concerns, for migration records.
    pub fn vm_id(&self) -> Option<&Hash> {
        match self {
            Record::Indication { vm_id, .. }
            | Record::Confirmation { vm_id, .. }
            | Record::Arrival { vm_id, .. }
            | Record::Leave { vm_id, .. } => Some(vm_id),
            _ => None,
        }
    }

    /// The migration this record concerns, for migration records.
    pub fn migration_id(&self) -> Option<&Hash> {
        match self {
            Record::Indication { migration_id, .. }
            | Record::Confirmation { migration_id, .. }
            | Record::Arrival { migration_id, .. }
            | Record::Leave { migration_id, .. } => Some(migration_id),
            _ => None,
        }
    }

    /// The offloaded task this record concerns, for offload records.
    pub fn task_id(&self) -> Option<&Hash> {
        match self {
            Record::OffloadRequested { task_id, .. }
            | Record::OffloadAccepted { task_id, .. }
            | Record::OffloadCompleted { task_id, .. }
            | Record::OffloadDisputed { task_id, .. } => Some(task_id),
            _ => None,
        }
    }

    /// The provenance entities this record mentions (names, and data digests
    /// in hex), for the provenance index. Empty for non-provenance records.
    pub fn prov_entities(&self) -> Vec<String> {
        match self {
            Record::ProvIdCreate { entity, .. } | Record::ProvIdDelete { entity, .. } => {
                vec![entity.clone()]
            }
            Record::ProvData {
                data_digest,
                generated_by,
                used_by,
            } => {
                let mut v = vec![data_digest.to_string(), generated_by.clone()];
                if let Some(u) = used_by {
                    if u != generated_by {
                        v.push(u.clone());
                    }
                }
                v
            }
            Record::ProvOrch { deployed, location } => {
                if deployed == location {
                    vec![deployed.clone()]
                } else {
                    vec![deployed.clone(), location.clone()]
                }
            }
            _ => Vec::new(),
        }
    }

    /// The cross-chain proof a record carries, if any.
    pub fn proof(&self) -> Option<&CrossChainProof> {
        match self {
            Record::Arrival { proof, .. }
            | Record::Leave { proof, .. }
            | Record::Relayed { proof } => Some(proof),
            _ => None,
        }
    }

    /// Checks what needs no chain state: names are non-empty, at most
    /// [`NAME_LEN_MAX`] bytes and free of control characters; reasons at most
    /// [`REASON_LEN_MAX`]; a migration's scope matches its sites; membership
    /// lists at most [`ROLES_MAX`] distinct roles.
    pub fn check_shape(&self) -> Result<(), RecordError> {
        match self {
            Record::ProvIdCreate { entity, .. } | Record::ProvIdDelete { entity, .. } => {
                check_name("entity", entity)
            }
            Record::ProvData {
                generated_by,
                used_by,
                ..
            } => {
                check_name("generated_by", generated_by)?;
                match used_by {
                    Some(u) => check_name("used_by", u),
                    None => Ok(()),
                }
            }
            Record::ProvOrch { deployed, location } => {
                check_name("deployed", deployed)?;
                check_name("location", location)
            }
            Record::Indication {
                source,
                destination,
                scope,
                ..
            } => {
                check_name("source.cloud", &source.cloud)?;
                check_name("source.server", &source.server)?;
                check_name("destination.cloud", &destination.cloud)?;
                check_name("destination.server", &destination.server)?;
                let same_cloud = source.cloud == destination.cloud;
                let expected = if same_cloud {
                    Scope::Local
                } else {
                    Scope::Inter
                };
                if *scope != expected {
                    return Err(RecordError::ScopeMismatch {
                        scope: *scope,
                        source_cloud: source.cloud.clone(),
                        destination_cloud: destination.cloud.clone(),
                    });
                }
                if source == destination {
                    return Err(RecordError::SameSite);
                }
                Ok(())
            }
            Record::Confirmation { reason, .. } => match reason {
                Some(r) if r.len() > REASON_LEN_MAX => Err(RecordError::TooLong {
                    field: "reason",
                    len: r.len(),
                    max: REASON_LEN_MAX,
                }),
                _ => Ok(()),
            },
            Record::MemberJoin { cloud, roles, .. } => {
                check_name("cloud", cloud)?;
                if roles.len() > ROLES_MAX {
                    return Err(RecordError::TooManyRoles { len: roles.len() });
                }
                let mut sorted = roles.clone();
                sorted.sort();
                sorted.dedup();
                if sorted.len() != roles.len() {
                    return Err(RecordError::TooManyRoles { len: roles.len() });
                }
                Ok(())
            }
            Record::OffloadRequested { .. }
            | Record::OffloadAccepted { .. }
            | Record::OffloadCompleted { .. }
            | Record::OffloadDisputed { .. }
            | Record::Arrival { .. }
            | Record::Leave { .. }
            | Record::Relayed { .. } => Ok(()),
        }
    }
}

fn check_name(field: &'static str, s: &str) -> Result<(), RecordError> {
    if s.is_empty() {
        return Err(RecordError::Empty { field });
    }
    if s.len() > NAME_LEN_MAX {
        return Err(RecordError::TooLong {
            field,
            len: s.len(),
            max: NAME_LEN_MAX,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(RecordError::ControlCharacter { field });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec;
    use federact_config::NodeKey;
    use proptest::prelude::*;

    pub(crate) fn arb_hash() -> impl Strategy<Value = Hash> {
        any::<[u8; 32]>().prop_map(Hash)
    }

    pub(crate) fn arb_node() -> impl Strategy<Value = NodeId> {
        any::<[u8; 32]>().prop_map(|s| NodeKey::from_seed(&s).id())
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z0-9.-]{1,24}"
    }

    fn arb_scope() -> impl Strategy<Value = Scope> {
        prop_oneof![Just(Scope::Local), Just(Scope::Inter)]
    }

    fn arb_kind() -> impl Strategy<Value = EntityKind> {
        prop_oneof![Just(EntityKind::Device), Just(EntityKind::Container)]
    }

    fn arb_site() -> impl Strategy<Value = Site> {
        (arb_name(), arb_name()).prop_map(|(c, s)| Site::new(c, s))
    }

    /// Any record without a cross-chain proof (proofs have their own
    /// strategy in `proof.rs`).
    pub(crate) fn arb_plain_record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (
                arb_hash(),
                arb_node(),
                arb_hash(),
                any::<(u32, u32, u64)>(),
                arb_scope()
            )
                .prop_map(|(task_id, requester, task_digest, r, scope)| {
                    Record::OffloadRequested {
                        task_id,
                        requester,
                        task_digest,
                        requirements: Requirements {
                            cpu_millis: r.0,
                            memory_mb: r.1,
                            deadline_ms: r.2,
                        },
                        scope,
                    }
                }),
            (arb_hash(), arb_node(), arb_scope()).prop_map(|(task_id, executor, scope)| {
                Record::OffloadAccepted {
                    task_id,
                    executor,
                    scope,
                }
            }),
            (arb_hash(), arb_hash(), arb_scope()).prop_map(|(task_id, result_digest, scope)| {
                Record::OffloadCompleted {
                    task_id,
                    result_digest,
                    scope,
                }
            }),
            (arb_hash(), arb_hash(), arb_hash(), arb_scope()).prop_map(
                |(task_id, received_digest, expected_digest, scope)| Record::OffloadDisputed {
                    task_id,
                    received_digest,
                    expected_digest,
                    scope,
                }
            ),
            (arb_kind(), arb_name(), arb_hash(), arb_node()).prop_map(|(kind, entity, d, a)| {
                Record::ProvIdCreate {
                    kind,
                    entity,
                    id_proof: IdProof {
                        digest: d,
                        attested_by: a,
                    },
                }
            }),
            (arb_kind(), arb_name())
                .prop_map(|(kind, entity)| Record::ProvIdDelete { kind, entity }),
            (arb_hash(), arb_name(), proptest::option::of(arb_name())).prop_map(
                |(data_digest, generated_by, used_by)| Record::ProvData {
                    data_digest,
                    generated_by,
                    used_by
                }
            ),
            (arb_name(), arb_name())
                .prop_map(|(deployed, location)| Record::ProvOrch { deployed, location }),
            (arb_hash(), arb_hash(), arb_site(), arb_site(), arb_scope()).prop_map(
                |(migration_id, vm_id, source, destination, scope)| Record::Indication {
                    migration_id,
                    vm_id,
                    source,
                    destination,
                    scope
                }
            ),
            (
                arb_hash(),
                arb_hash(),
                any::<bool>(),
                arb_hash(),
                proptest::option::of(".{0,40}"),
                arb_scope()
            )
                .prop_map(
                    |(migration_id, vm_id, accepted, observed_hash, reason, scope)| {
                        Record::Confirmation {
                            migration_id,
                            vm_id,
                            accepted,
                            observed_hash,
                            reason,
                            scope,
                        }
                    }
                ),
            (
                arb_node(),
                arb_name(),
                proptest::collection::vec(
                    prop_oneof![
                        Just(Role::Server),
                        Just(Role::Gateway),
                        Just(Role::Validator)
                    ],
                    0..3
                )
            )
                .prop_map(|(node, cloud, roles)| Record::MemberJoin {
                    node,
                    cloud,
                    roles
                }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip_through_the_codec(r in arb_plain_record()) {
            let bytes = codec::encode(&r);
            let back: Record = codec::decode(&bytes, 1 << 16).unwrap();
            prop_assert_eq!(back, r);
        }
    }

    fn site(c: &str, s: &str) -> Site {
        Site::new(c, s)
    }

    fn indication(src: Site, dst: Site, scope: Scope) -> Record {
        Record::Indication {
            migration_id: Hash::of(b"m"),
            vm_id: Hash::of(b"vm"),
            source: src,
            destination: dst,
            scope,
        }
    }

    #[test]
    fn routes_follow_scope_and_family() {
        assert_eq!(
            indication(site("a", "s1"), site("b", "s2"), Scope::Inter).route(),
            Route::Consortium
        );
        assert_eq!(
            indication(site("a", "s1"), site("a", "s2"), Scope::Local).route(),
            Route::Local
        );
        let member = Record::MemberJoin {
            node: NodeKey::from_seed(&[1; 32]).id(),
            cloud: "a".into(),
            roles: vec![Role::Gateway],
        };
        assert_eq!(member.route(), Route::Consortium);
        let orch = Record::ProvOrch {
            deployed: "c1".into(),
            location: "s1".into(),
        };
        assert_eq!(orch.route(), Route::Local);
        let offload = Record::OffloadAccepted {
            task_id: Hash::of(b"t"),
            executor: NodeKey::from_seed(&[2; 32]).id(),
            scope: Scope::Inter,
        };
        assert_eq!(offload.route(), Route::Consortium);
    }

    #[test]
    fn shape_checks_catch_bad_names_and_scopes() {
        assert_eq!(
            indication(site("a", "s1"), site("b", "s2"), Scope::Local).check_shape(),
            Err(RecordError::ScopeMismatch {
                scope: Scope::Local,
                source_cloud: "a".into(),
                destination_cloud: "b".into()
            })
        );
        assert_eq!(
            indication(site("a", "s1"), site("a", "s1"), Scope::Local).check_shape(),
            Err(RecordError::SameSite)
        );
        let long = Record::ProvIdDelete {
            kind: EntityKind::Device,
            entity: "x".repeat(NAME_LEN_MAX + 1),
        };
        assert!(matches!(
            long.check_shape(),
            Err(RecordError::TooLong {
                field: "entity",
                ..
            })
        ));
        let empty = Record::ProvOrch {
            deployed: String::new(),
            location: "s".into(),
        };
        assert_eq!(
            empty.check_shape(),
            Err(RecordError::Empty { field: "deployed" })
        );
        let ctl = Record::ProvOrch {
            deployed: "a\nb".into(),
            location: "s".into(),
        };
        assert_eq!(
            ctl.check_shape(),
            Err(RecordError::ControlCharacter { field: "deployed" })
        );
        let reason = Record::Confirmation {
            migration_id: Hash::ZERO,
            vm_id: Hash::ZERO,
            accepted: false,
            observed_hash: Hash::ZERO,
            reason: Some("r".repeat(REASON_LEN_MAX + 1)),
            scope: Scope::Local,
        };
        assert!(matches!(
            reason.check_shape(),
            Err(RecordError::TooLong {
                field: "reason",
                ..
            })
        ));
        let dup_roles = Record::MemberJoin {
            node: NodeKey::from_seed(&[1; 32]).id(),
            cloud: "a".into(),
            roles: vec![Role::Gateway, Role::Gateway],
        };
        assert!(dup_roles.check_shape().is_err());
        indication(site("a", "s1"), site("b", "s2"), Scope::Inter)
            .check_shape()
            .unwrap();
    }

    #[test]
    fn prov_entities_name_everything_a_record_mentions() {
        let r = Record::ProvData {
            data_digest: Hash::of(b"d"),
            generated_by: "sensor".into(),
            used_by: Some("analyser".into()),
        };
        assert_eq!(
            r.prov_entities(),
            vec![
                Hash::of(b"d").to_string(),
                "sensor".to_string(),
                "analyser".to_string()
            ]
        );
    }
}
