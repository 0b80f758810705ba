//! The orchestrator actor (one per cloud): knows the cloud's servers from
//! the federation, takes their load reports, places new function instances
//! with a [`PlacementPolicy`], keeps the instance directory and records the
//! life cycle on the cloud's chain with TOM's PROV records.
//!
//! # Provenance
//! - a server's first load report → `ProvIdCreate{Device, server}`; a
//!   server silent for [`SERVER_SILENT`] → `ProvIdDelete{Device}` (its
//!   instances are dropped from the directory and leave too);
//! - a placement → `ProvIdCreate{Container, name/key}` then
//!   `ProvOrch{deployed: name/key, location: server}`;
//! - an idle deactivation → `ProvIdDelete{Container, name/key}`.
//! - a saturated server's task → `OffloadRequested` and `OffloadAccepted`
//!   (the executor commits `OffloadCompleted`): on the cloud's chain when a
//!   server of the cloud accepts, else on the consortium when another
//!   cloud's server does.
//!
//! A placement answers its callers only after both its records committed
//! (the first call of an instance pays two commits; later calls go straight
//! to the server and never touch the ledger). Only joined servers are
//! placement candidates, and a placement whose join is refused fails: the
//! chain rules enforce the same state machine.
//!
//! Snapshots of deactivated instances are kept as files under the
//! orchestrator's data dir (written atomically), so reactivation on any
//! server of the cloud continues from the last state.
//!
//! # Live migration (issue 8)
//! [`MigrateInstance`] (or `OrchestratorRequest::Migrate` over QUIC) moves
//! an active instance to another server of this or another cloud with the
//! BASICS protocol, run by the source server's migration actor under a
//! migration id chosen here. Meanwhile the directory entry is
//! `Migrating`: locators wait, the source server buffers calls. Then:
//! - aborted (rejected image, timeout): the instance stays at the source;
//! - completed, local: `ProvOrch{deployed, location: destination}`, the
//!   destination server adopts the instance from the received image;
//! - completed, inter: the destination cloud's orchestrator records
//!   `ProvIdCreate` + `ProvOrch` on its chain and has its server adopt it;
//!   this cloud records `ProvIdDelete{Container}` and forwards later
//!   locates to that orchestrator (`Abroad`).
//!
//! If the source server cannot be reached (it died mid-migration), the
//! destination is still asked to adopt (its side may have completed);
//! failing that, the instance leaves: its state since its last
//! deactivation is lost with its server.
//!
//! `Drain` migrates every instance of a server away and excludes it from
//! placement; a [`Rebalance`] policy, when set ([`SetRebalance`]), moves
//! hot instances using the servers' heat reports.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{info, warn};

use federact_config::{NodeId, Role};
use federact_federation::{Inbox, Incoming, Responder, Transport};
use federact_ledger::error::ErrorChain;
use federact_ledger::hash::Hash;
use federact_ledger::record::{EntityKind, IdProof, Record, Requirements, Scope};

use crate::client::LedgerClient;
use crate::error::ActorError;
use crate::function::{check_names, entity_name, write_atomic, FunctionError, SNAPSHOT_BYTES_MAX};
use crate::placement::{
    shortlist, Candidate, InstanceHeat, PlacementPolicy, Rebalance, ServerHeat, ServerLoad,
    FUNCTIONS_MAX, HEAT_MAX,
};
use crate::wire::MigrationReport;
use crate::wire::{
    self, OrchestratorOneWay, OrchestratorRequest, OrchestratorResponse, ServerRequest,
    ServerResponse, ORCHESTRATOR_ACTOR, SERVER_ACTOR,
};
use federact_ledger::record::Site;

/// A server that has not reported for this long leaves.
pub const SERVER_SILENT: Duration = Duration::from_secs(5);
/// Most instances in the directory.
pub const DIRECTORY_MAX: usize = 100_000;
/// Most callers waiting for one instance's placement.
pub const WAITERS_MAX: usize = 1024;
const INBOX_CAPACITY: usize = 4096;
/// Most servers asked in turn for one offloaded task.
pub const OFFLOAD_CANDIDATES_MAX: usize = 8;
/// How long the source server may take to run a migration (its protocol
/// and transfer timeouts are below this by default).
pub const MIGRATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often the load-balance policy runs, when set.
pub const REBALANCE_EVERY: Duration = Duration::from_secs(2);

/// What the orchestrator needs to start.
pub struct OrchestratorSetup {
    /// Its cloud.
    pub cloud: String,
    /// The federation (for the cloud's servers).
    pub federation: federact_config::Federation,
    /// Its transport.
    pub transport: Transport,
    /// Signs and submits its records.
    pub ledger: LedgerClient,
    /// Where snapshots of deactivated instances are kept.
    pub dir: PathBuf,
    /// The placement policy.
    pub policy: Box<dyn PlacementPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joined {
    No,
    Joining,
    Yes,
}

struct Server {
    name: String,
    load: Option<ServerLoad>,
    joined: Joined,
    last_report: Instant,
    /// Drained: no new placements, its instances migrated away.
    draining: bool,
    /// Its last heat report.
    heat: Vec<InstanceHeat>,
    /// When its process started, from its load reports.
    started_ms: Option<u64>,
}

enum Waiter {
    Remote(Responder),
    Local(tokio::sync::oneshot::Sender<OrchestratorResponse>),
    /// A migration's requester, answered when the destination hosts the
    /// instance: `Located` becomes `Migrated(report)`.
    Migration(Box<Waiter>, Option<MigrationReport>),
}

impl Waiter {
    fn answer(self, r: OrchestratorResponse) {
        match self {
            Waiter::Migration(w, report) => w.answer(match (r, report) {
                (OrchestratorResponse::Located(_), Some(rep)) => {
                    OrchestratorResponse::Migrated(rep)
                }
                (OrchestratorResponse::Located(s), None) => {
                    OrchestratorResponse::Failed(FunctionError::Placement {
                        reason: format!(
                            "the source server was lost mid-migration; {} adopted the instance",
                            s.short()
                        ),
                    })
                }
                (other, _) => other,
            }),
            Waiter::Remote(resp) => {
                actix::spawn(async move {
                    let _ = resp.respond(wire::encode(&r)).await;
                });
            }
            Waiter::Local(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

enum Entry {
    Placing(Vec<Waiter>),
    Placed(NodeId),
    Leaving(Vec<Waiter>),
    /// Migrating away from this server; locators wait.
    Migrating(Vec<Waiter>),
    /// Migrated to another cloud: its orchestrator answers locates.
    Abroad(NodeId),
}

/// How a placement gets its instance onto the server.
#[derive(Debug, Clone, Copy)]
enum Hosting {
    /// A new activation (from the kept snapshot, if any).
    Fresh,
    /// The instance a completed migration brought; `join` when it enters
    /// this cloud (inter-cloud move) and must be recorded as joining.
    Adopt { migration_id: Hash, join: bool },
}

/// Counters of an orchestrator, for tests and status.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrchestratorCounters {
    /// Instances placed.
    pub placed: u64,
    /// Instances deactivated.
    pub deactivated: u64,
    /// Placements that failed.
    pub failed: u64,
    /// Messages that did not decode or came from a non-server.
    pub malformed: u64,
    /// Offload requests handled.
    pub offloads: u64,
    /// Instance migrations that completed (the instance moved).
    pub migrated: u64,
    /// Instance migrations that aborted or failed (it stayed, or was lost).
    pub migrations_failed: u64,
    /// Offload candidates that refused or could not be reached (each
    /// followed by the next candidate).
    pub candidates_failed: u64,
    /// Servers joined now (placement and offload candidates).
    pub servers_joined: u64,
}

/// What [`first_acceptor`] saw of candidates that did not accept; shared
/// with the spawned offload work.
type FailedCandidates = std::sync::Arc<std::sync::atomic::AtomicU64>;

/// Places and tracks the function instances of one cloud.
pub struct OrchestratorActor {
    id: NodeId,
    cloud: String,
    transport: Transport,
    ledger: LedgerClient,
    dir: PathBuf,
    policy: Box<dyn PlacementPolicy>,
    servers: BTreeMap<NodeId, Server>,
    /// The other clouds' orchestrators (offload candidates abroad).
    peers: Vec<NodeId>,
    directory: HashMap<(String, String), Entry>,
    /// The placed entries of `directory`, on sled: a restarted
    /// orchestrator routes calls to the instances still running.
    placements: federact_ledger::store::PlacementStore,
    counters: OrchestratorCounters,
    candidates_failed: FailedCandidates,
    inbox: Option<Inbox>,
    federation: federact_config::Federation,
    migration_seq: u64,
    rebalance: Option<Rebalance>,
    rebalancing: bool,
}

/// A `Failed(Placement)` answer with `reason`.
fn refused(reason: &str) -> OrchestratorResponse {
    OrchestratorResponse::Failed(FunctionError::Placement {
        reason: reason.to_string(),
    })
}

fn refused_as_already(e: &ActorError, what: &str) -> bool {
    matches!(e, ActorError::Refused { reason } if reason.contains(what))
}

/// How long an adopting placement (the instance a completed migration
/// brought) keeps submitting its join and placement records. Such an
/// instance has no other home — its source released it — so a slow or
/// briefly unreachable gateway must delay the adoption, not fail it
/// (regression: a join that timed out under load failed the adoption, the
/// image stayed unadopted at the destination and the source cloud placed
/// the instance afresh from older state).
pub const ADOPT_RECORDS_WAIT: Duration = Duration::from_secs(120);

/// How long the source cloud's orchestrator waits for the destination
/// cloud's to adopt: longer than the adopter may take (its records, then
/// its server's wait), so a slow adoption is never taken for a failed one.
const HAND_OVER_WAIT: Duration =
    Duration::from_secs(ADOPT_RECORDS_WAIT.as_secs() + crate::server::ADOPT_WAIT.as_secs() + 60);

/// Submits `record`, retrying failures (timeouts, unreachable gateway or
/// validators, a busy gateway) until `deadline`; a refusal containing
/// `already` counts as done (a retried record that committed the first
/// time, e.g. a join). Returns the last error past the deadline.
async fn submit_until(
    ledger: &LedgerClient,
    record: Record,
    already: Option<&str>,
    deadline: Instant,
) -> Result<(), ActorError> {
    let mut attempt = 1u32;
    loop {
        match ledger.submit(record.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if already.is_some_and(|w| refused_as_already(&e, w)) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => {
                warn!(record = record.kind(), attempt, error = %e, "adoption record not committed; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl OrchestratorActor {
    /// An orchestrator for `setup.cloud`. Opens its placement directory
    /// (`dir/placements`, restoring what it held before a restart) and
    /// registers its transport actor.
    pub fn new(setup: OrchestratorSetup) -> Result<Self, ActorError> {
        let placements =
            federact_ledger::store::PlacementStore::open(&setup.dir.join("placements"))?;
        let mut directory = HashMap::new();
        for (id, server) in placements.all()? {
            if directory.len() < DIRECTORY_MAX {
                directory.insert(id, Entry::Placed(server));
            }
        }
        if !directory.is_empty() {
            info!(cloud = %setup.cloud, instances = directory.len(), "placement directory restored");
        }
        let inbox = setup
            .transport
            .register(ORCHESTRATOR_ACTOR, INBOX_CAPACITY)?;
        let now = Instant::now();
        let servers = setup
            .federation
            .nodes_with_role(&setup.cloud, Role::Server)
            .map(|n| {
                (
                    n.id(),
                    Server {
                        name: n.name().to_string(),
                        load: None,
                        joined: Joined::No,
                        last_report: now,
                        draining: false,
                        heat: Vec::new(),
                        started_ms: None,
                    },
                )
            })
            .collect();
        let fed = &setup.federation;
        let peers = fed
            .clouds()
            .iter()
            .filter(|c| c.name() != setup.cloud)
            .filter_map(|c| fed.orchestrator(c.name()))
            .map(|n| n.id())
            .collect();
        Ok(OrchestratorActor {
            federation: setup.federation.clone(),
            migration_seq: 0,
            rebalance: None,
            rebalancing: false,
            peers,
            id: setup.transport.id(),
            cloud: setup.cloud,
            transport: setup.transport,
            ledger: setup.ledger,
            dir: setup.dir,
            policy: setup.policy,
            servers,
            directory,
            placements,
            counters: OrchestratorCounters::default(),
            candidates_failed: FailedCandidates::default(),
            inbox: Some(inbox),
        })
    }

    fn snapshot_path(&self, entity: &str) -> PathBuf {
        self.dir
            .join("snapshots")
            .join(format!("{}.snap", Hash::of(entity.as_bytes())))
    }

    fn handle_load(&mut self, from: NodeId, mut load: ServerLoad, ctx: &mut Context<Self>) {
        let Some(s) = self.servers.get_mut(&from) else {
            self.counters.malformed += 1;
            return;
        };
        load.functions.truncate(FUNCTIONS_MAX);
        let restarted = s.started_ms.is_some_and(|t| t != load.started_ms);
        s.started_ms = Some(load.started_ms);
        s.load = Some(load);
        s.last_report = Instant::now();
        if restarted {
            // The server restarted before it was silent long enough to
            // leave: its instances died with the old process. They leave
            // now (the next call places them again) instead of being
            // routed to a server that answers `NotHere` for ever.
            let name = s.name.clone();
            let gone: Vec<(String, String)> = self
                .directory
                .iter()
                .filter(|(_, e)| matches!(e, Entry::Placed(x) if *x == from))
                .map(|(k, _)| k.clone())
                .collect();
            warn!(server = %name, instances = gone.len(), "server restarted: its instances leave");
            for id in gone {
                self.leave(id, ctx);
            }
        }
        let Some(s) = self.servers.get_mut(&from) else {
            return;
        };
        if s.joined != Joined::No {
            return;
        }
        s.joined = Joined::Joining;
        let record = Record::ProvIdCreate {
            kind: EntityKind::Device,
            entity: s.name.clone(),
            id_proof: IdProof {
                digest: Hash::of(from.as_bytes()),
                attested_by: self.id,
            },
        };
        let ledger = self.ledger.clone();
        let name = s.name.clone();
        ctx.spawn(
            async move { ledger.submit(record).await }
                .into_actor(self)
                .map(move |r, act, _| {
                    let joined = match r {
                        Ok(_) => true,
                        // Joined before this orchestrator (re)started.
                        Err(e) if refused_as_already(&e, "already joined") => true,
                        Err(e) => {
                            warn!(server = %name, error = %e, "server join not recorded");
                            false
                        }
                    };
                    if let Some(s) = act.servers.get_mut(&from) {
                        s.joined = if joined { Joined::Yes } else { Joined::No };
                    }
                    if joined {
                        info!(server = %name, "server joined");
                    }
                }),
        );
    }

    fn locate(&mut self, name: String, key: String, waiter: Waiter, ctx: &mut Context<Self>) {
        if let Err(e) = check_names(&name, &key) {
            return waiter.answer(OrchestratorResponse::Failed(e));
        }
        let id = (name, key);
        match self.directory.get_mut(&id) {
            Some(Entry::Placed(s)) => return waiter.answer(OrchestratorResponse::Located(*s)),
            Some(Entry::Abroad(peer)) => {
                let (peer, t) = (*peer, self.transport.clone());
                let req = OrchestratorRequest::Locate {
                    name: id.0.clone(),
                    key: id.1.clone(),
                };
                actix::spawn(async move {
                    let r = match t
                        .request(
                            peer,
                            ORCHESTRATOR_ACTOR,
                            wire::encode(&req),
                            Duration::from_secs(30),
                        )
                        .await
                    {
                        Ok(body) => {
                            wire::decode::<OrchestratorResponse>(&body).unwrap_or_else(|e| {
                                OrchestratorResponse::Failed(FunctionError::Transport {
                                    detail: e.to_string(),
                                })
                            })
                        }
                        Err(e) => OrchestratorResponse::Failed(FunctionError::Transport {
                            detail: e.to_string(),
                        }),
                    };
                    waiter.answer(r);
                });
                return;
            }
            Some(Entry::Placing(w)) | Some(Entry::Leaving(w)) | Some(Entry::Migrating(w)) => {
                if w.len() >= WAITERS_MAX {
                    return waiter.answer(OrchestratorResponse::Failed(FunctionError::Busy));
                }
                w.push(waiter);
                return;
            }
            None => {}
        }
        let no_capacity =
            || OrchestratorResponse::Failed(FunctionError::NoCapacity { name: id.0.clone() });
        if self.directory.len() >= DIRECTORY_MAX {
            return waiter.answer(no_capacity());
        }
        let candidates: Vec<Candidate<'_>> = self
            .servers
            .iter()
            .filter(|(_, s)| s.joined == Joined::Yes && !s.draining)
            .filter_map(|(id, s)| s.load.as_ref().map(|load| Candidate { id: *id, load }))
            .collect();
        if !candidates.is_empty() && !candidates.iter().any(|c| c.load.functions.contains(&id.0)) {
            return waiter.answer(OrchestratorResponse::Failed(
                FunctionError::UnknownFunction { name: id.0.clone() },
            ));
        }
        let Some(server) = self.policy.place(&id.0, &candidates) else {
            return waiter.answer(no_capacity());
        };
        // Reserve the slot until the next report.
        let Some(s) = self.servers.get_mut(&server) else {
            return waiter.answer(no_capacity());
        };
        if let Some(l) = s.load.as_mut() {
            l.instances = l.instances.saturating_add(1);
        }
        let location = s.name.clone();
        self.directory
            .insert(id.clone(), Entry::Placing(vec![waiter]));
        self.place(id, server, location, Hosting::Fresh, ctx);
    }

    fn place(
        &mut self,
        id: (String, String),
        server: NodeId,
        location: String,
        hosting: Hosting,
        ctx: &mut Context<Self>,
    ) {
        let entity = entity_name(&id.0, &id.1);
        let join = Record::ProvIdCreate {
            kind: EntityKind::Container,
            entity: entity.clone(),
            id_proof: IdProof {
                digest: Hash::of_parts(&[b"function:", id.0.as_bytes()]),
                attested_by: self.id,
            },
        };
        let orch = Record::ProvOrch {
            deployed: entity.clone(),
            location,
        };
        let path = self.snapshot_path(&entity);
        let ledger = self.ledger.clone();
        let transport = self.transport.clone();
        let (name, key) = id.clone();
        let work = async move {
            let (join_needed, adopting) = match hosting {
                Hosting::Fresh => (true, false),
                Hosting::Adopt { join, .. } => (join, true),
            };
            // A fresh placement fails fast (its caller may ask again); an
            // adoption retries until `ADOPT_RECORDS_WAIT`.
            let deadline = Instant::now()
                + if adopting {
                    ADOPT_RECORDS_WAIT
                } else {
                    Duration::ZERO
                };
            if join_needed {
                if let Err(e) = submit_until(&ledger, join, Some("already joined"), deadline).await
                {
                    return Err((false, format!("join not recorded: {e}")));
                }
            }
            if let Err(e) = submit_until(&ledger, orch, None, deadline).await {
                return Err((true, format!("placement not recorded: {e}")));
            }
            let (req, timeout) = match hosting {
                Hosting::Fresh => (
                    ServerRequest::Host {
                        name,
                        key,
                        snapshot: std::fs::read(&path).ok().filter(|s| !s.is_empty()),
                    },
                    Duration::from_secs(10),
                ),
                Hosting::Adopt { migration_id, .. } => (
                    ServerRequest::Adopt {
                        name,
                        key,
                        migration_id,
                    },
                    crate::server::ADOPT_WAIT + Duration::from_secs(10),
                ),
            };
            let reply = transport
                .request(server, SERVER_ACTOR, wire::encode(&req), timeout)
                .await
                .map_err(|e| (true, format!("server unreachable: {e}")))?;
            match wire::decode::<ServerResponse>(&reply) {
                Ok(ServerResponse::Hosted) => Ok(()),
                Ok(ServerResponse::Failed(e)) => Err((true, e.to_string())),
                Ok(other) => Err((true, format!("unexpected answer {other:?}"))),
                Err(e) => Err((true, e.to_string())),
            }
        };
        // The work runs in a `placement` span (child of the request's, when
        // traced), so its ledger submissions and QUIC requests carry it.
        let span = crate::telemetry::sampled_root(|| {
            tracing::info_span!(
                "placement",
                federact.root = true,
                function = id.0.as_str(),
                key = id.1.as_str(),
                server = %server.short(),
            )
        });
        let work = tracing::Instrument::instrument(work, span.clone());
        ctx.spawn(work.into_actor(self).map(move |r, act, ctx| {
            if let Err((_, reason)) = &r {
                crate::telemetry::record_failure(&span, reason);
            }
            let waiters = match act.directory.remove(&id) {
                Some(Entry::Placing(w)) => w,
                _ => Vec::new(),
            };
            match r {
                Ok(()) => {
                    act.counters.placed += 1;
                    if let Err(e) = act.placements.put(&id.0, &id.1, &server) {
                        warn!(function = %id.0, key = %id.1, error = %ErrorChain(&e), "placement not persisted");
                    }
                    act.directory.insert(id, Entry::Placed(server));
                    for w in waiters {
                        w.answer(OrchestratorResponse::Located(server));
                    }
                }
                Err((joined, reason)) => {
                    act.counters.failed += 1;
                    warn!(function = %id.0, key = %id.1, %reason, "placement failed");
                    if let Some(l) = act.servers.get_mut(&server).and_then(|s| s.load.as_mut()) {
                        l.instances = l.instances.saturating_sub(1);
                    }
                    for w in waiters {
                        w.answer(OrchestratorResponse::Failed(FunctionError::Placement {
                            reason: reason.clone(),
                        }));
                    }
                    if joined {
                        act.leave(id, ctx);
                    }
                }
            }
        }));
    }

    /// Records that an instance left; callers that ask meanwhile wait and
    /// are placed afresh once the leave committed (a join before the leave
    /// would be refused).
    fn leave(&mut self, id: (String, String), ctx: &mut Context<Self>) {
        if let Err(e) = self.placements.remove(&id.0, &id.1) {
            warn!(function = %id.0, key = %id.1, error = %ErrorChain(&e), "placement removal not persisted");
        }
        self.directory
            .insert(id.clone(), Entry::Leaving(Vec::new()));
        let record = Record::ProvIdDelete {
            kind: EntityKind::Container,
            entity: entity_name(&id.0, &id.1),
        };
        let ledger = self.ledger.clone();
        ctx.spawn(
            async move { ledger.submit(record).await }
                .into_actor(self)
                .map(move |r, act, ctx| {
                    if let Err(e) = r {
                        warn!(function = %id.0, key = %id.1, error = %e, "leave not recorded");
                    }
                    let waiters = match act.directory.remove(&id) {
                        Some(Entry::Leaving(w)) => w,
                        _ => Vec::new(),
                    };
                    for w in waiters {
                        act.locate(id.0.clone(), id.1.clone(), w, ctx);
                    }
                }),
        );
    }

    fn deactivated(
        &mut self,
        from: NodeId,
        name: String,
        key: String,
        snapshot: Vec<u8>,
        ctx: &mut Context<Self>,
    ) -> OrchestratorResponse {
        let id = (name, key);
        if !matches!(self.directory.get(&id), Some(Entry::Placed(s)) if *s == from) {
            return OrchestratorResponse::Ack;
        }
        if snapshot.len() > SNAPSHOT_BYTES_MAX {
            self.counters.malformed += 1;
        } else {
            // A small synchronous write in the actor: the snapshot must be
            // durable before the instance is recorded as gone.
            let path = self.snapshot_path(&entity_name(&id.0, &id.1));
            if let Err(e) = write_atomic(&path, &snapshot) {
                warn!(error = %e, path = %path.display(), "snapshot not written");
            }
        }
        if let Some(l) = self.servers.get_mut(&from).and_then(|s| s.load.as_mut()) {
            l.instances = l.instances.saturating_sub(1);
        }
        self.counters.deactivated += 1;
        self.leave(id, ctx);
        OrchestratorResponse::Ack
    }

    /// Servers silent for [`SERVER_SILENT`] leave with their instances.
    fn check_servers(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let silent: Vec<NodeId> = self
            .servers
            .iter()
            .filter(|(_, s)| {
                s.joined == Joined::Yes && now.duration_since(s.last_report) > SERVER_SILENT
            })
            .map(|(id, _)| *id)
            .collect();
        for sid in silent {
            let Some(s) = self.servers.get_mut(&sid) else {
                continue;
            };
            s.joined = Joined::No;
            s.load = None;
            let record = Record::ProvIdDelete {
                kind: EntityKind::Device,
                entity: s.name.clone(),
            };
            warn!(server = %s.name, "server silent: leaves");
            let ledger = self.ledger.clone();
            actix::spawn(async move {
                let _ = ledger.submit(record).await;
            });
            let gone: Vec<(String, String)> = self
                .directory
                .iter()
                .filter(|(_, e)| matches!(e, Entry::Placed(x) if *x == sid))
                .map(|(k, _)| k.clone())
                .collect();
            for id in gone {
                self.leave(id, ctx);
            }
        }
    }

    fn handle_request(
        &mut self,
        from: NodeId,
        req: OrchestratorRequest,
        waiter: Waiter,
        ctx: &mut Context<Self>,
    ) {
        match req {
            OrchestratorRequest::Locate { name, key } => self.locate(name, key, waiter, ctx),
            OrchestratorRequest::Deactivated {
                name,
                key,
                snapshot,
            } => {
                let r = self.deactivated(from, name, key, snapshot, ctx);
                waiter.answer(r);
            }
            OrchestratorRequest::Offload {
                task_id,
                task_digest,
                name,
            } => self.offload(from, task_id, task_digest, name, waiter, ctx),
            OrchestratorRequest::OffloadAbroad { task_id, name } => {
                self.offload_abroad(from, task_id, name, waiter, ctx)
            }
            OrchestratorRequest::Migrate {
                name,
                key,
                destination,
            } => {
                if !self.of_this_cloud(from) {
                    self.counters.malformed += 1;
                    return waiter.answer(refused("migrate from outside the cloud"));
                }
                self.migrate(name, key, Some(destination), false, waiter, ctx)
            }
            OrchestratorRequest::Drain { server } => {
                if !self.of_this_cloud(from) {
                    self.counters.malformed += 1;
                    return waiter.answer(refused("drain from outside the cloud"));
                }
                self.drain(server, waiter, ctx)
            }
            OrchestratorRequest::Adopt {
                name,
                key,
                server,
                migration_id,
            } => self.adopt(from, name, key, server, migration_id, waiter, ctx),
        }
    }

    /// Whether `node` belongs to this cloud (itself included).
    fn of_this_cloud(&self, node: NodeId) -> bool {
        node == self.id
            || self
                .federation
                .node_by_id(&node)
                .is_some_and(|n| n.cloud() == self.cloud)
    }

    /// A server of this cloud by name.
    fn server_named(&self, name: &str) -> Option<NodeId> {
        self.servers
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(id, _)| *id)
    }

    /// A placement-policy choice of another server of this cloud for an
    /// instance of `function` now on `source`.
    fn choose_destination(&self, function: &str, source: NodeId) -> Option<Site> {
        let candidates: Vec<Candidate<'_>> = self
            .servers
            .iter()
            .filter(|(id, s)| **id != source && s.joined == Joined::Yes && !s.draining)
            .filter_map(|(id, s)| s.load.as_ref().map(|load| Candidate { id: *id, load }))
            .collect();
        let chosen = self.policy.place(function, &candidates)?;
        let s = self.servers.get(&chosen)?;
        Some(Site::new(&self.cloud, &s.name))
    }

    /// Starts a live migration of instance (`name`, `key`) to `destination`
    /// (`None`: a server of this cloud chosen by the placement policy). See
    /// the module doc for the steps; `waiter` gets `Migrated(report)` or
    /// `Failed`.
    fn migrate(
        &mut self,
        name: String,
        key: String,
        destination: Option<Site>,
        tamper: bool,
        waiter: Waiter,
        ctx: &mut Context<Self>,
    ) {
        let id = (name, key);
        let source = match self.directory.get(&id) {
            Some(Entry::Placed(s)) if self.servers.contains_key(s) => *s,
            Some(Entry::Placed(_)) | None => {
                return waiter.answer(refused(&format!(
                    "{}/{} is not active in {}",
                    id.0, id.1, self.cloud
                )))
            }
            Some(_) => {
                return waiter.answer(refused(&format!(
                    "{}/{} is being placed, migrated or deactivated",
                    id.0, id.1
                )))
            }
        };
        let Some(destination) = destination.or_else(|| self.choose_destination(&id.0, source))
        else {
            return waiter.answer(OrchestratorResponse::Failed(FunctionError::NoCapacity {
                name: id.0,
            }));
        };
        let Some(dest) = self
            .federation
            .node(&destination.server)
            .filter(|n| n.cloud() == destination.cloud && n.roles().contains(Role::Server))
            .map(|n| n.id())
        else {
            return waiter.answer(refused(&format!(
                "{}/{} is not a server of the federation",
                destination.cloud, destination.server
            )));
        };
        if dest == source {
            return waiter.answer(refused("the destination hosts the instance already"));
        }
        let inter = destination.cloud != self.cloud;
        let peer = if inter {
            match self.federation.orchestrator(&destination.cloud) {
                Some(o) => Some(o.id()),
                None => {
                    return waiter.answer(refused(&format!(
                        "cloud {} has no orchestrator",
                        destination.cloud
                    )))
                }
            }
        } else {
            None
        };
        self.migration_seq += 1;
        let migration_id = Hash::of_parts(&[
            b"instance-migration",
            self.id.as_bytes(),
            &crate::clock::now_micros().to_be_bytes(),
            &self.migration_seq.to_be_bytes(),
        ]);
        info!(function = %id.0, key = %id.1, to = %format!("{}/{}", destination.cloud, destination.server), migration = %migration_id.short(), "instance migration requested");
        self.directory
            .insert(id.clone(), Entry::Migrating(Vec::new()));
        let req = ServerRequest::Migrate {
            name: id.0.clone(),
            key: id.1.clone(),
            destination: destination.clone(),
            migration_id,
            tamper,
        };
        let transport = self.transport.clone();
        let work = async move {
            match transport
                .request(source, SERVER_ACTOR, wire::encode(&req), MIGRATE_TIMEOUT)
                .await
            {
                Ok(body) => match wire::decode::<ServerResponse>(&body) {
                    Ok(ServerResponse::Migrated(report)) => Ok(report),
                    Ok(ServerResponse::Failed(e)) => Err((false, e.to_string())),
                    Ok(ServerResponse::NotHere) => Err((false, "not on its server".to_string())),
                    Ok(other) => Err((false, format!("unexpected answer {other:?}"))),
                    Err(e) => Err((false, e.to_string())),
                },
                // The source may be gone with the instance; ask the destination.
                Err(e) => Err((true, format!("source server unreachable: {e}"))),
            }
        };
        ctx.spawn(work.into_actor(self).map(move |r, act, ctx| {
            let waiters = match act.directory.remove(&id) {
                Some(Entry::Migrating(w)) => w,
                Some(other) => {
                    act.directory.insert(id.clone(), other);
                    Vec::new()
                }
                None => Vec::new(),
            };
            let report = match r {
                Ok(report) if report.completed => Some(report),
                Ok(report) => {
                    // Aborted: the instance runs on at the source.
                    act.counters.migrations_failed += 1;
                    act.stay(id, source, waiters);
                    return waiter.answer(OrchestratorResponse::Migrated(report));
                }
                Err((false, reason)) => {
                    act.counters.migrations_failed += 1;
                    warn!(function = %id.0, key = %id.1, %reason, "instance migration did not start");
                    act.stay(id, source, waiters);
                    return waiter.answer(refused(&reason));
                }
                Err((true, reason)) => {
                    warn!(function = %id.0, key = %id.1, %reason, "asking the destination whether it completed");
                    None
                }
            };
            if let Some(l) = act.servers.get_mut(&source).and_then(|s| s.load.as_mut()) {
                l.instances = l.instances.saturating_sub(1);
            }
            let waiter = Waiter::Migration(Box::new(waiter), report);
            match peer {
                None => {
                    // Local: record the new placement, the destination adopts.
                    if let Some(l) = act.servers.get_mut(&dest).and_then(|s| s.load.as_mut()) {
                        l.instances = l.instances.saturating_add(1);
                    }
                    let mut all = waiters;
                    all.push(waiter);
                    act.directory.insert(id.clone(), Entry::Placing(all));
                    let hosting = Hosting::Adopt {
                        migration_id,
                        join: false,
                    };
                    act.counters.migrated += 1;
                    act.place(id, dest, destination.server, hosting, ctx);
                }
                Some(peer) => act.hand_over(id, peer, dest, migration_id, waiters, waiter, ctx),
            }
        }));
    }

    /// Another cloud's orchestrator moved an instance to this cloud's
    /// `server`: place it there as a joining container adopted from the
    /// migration's image (the server checks the image against the
    /// migration its own side completed).
    #[allow(clippy::too_many_arguments)]
    fn adopt(
        &mut self,
        from: NodeId,
        name: String,
        key: String,
        server: NodeId,
        migration_id: Hash,
        waiter: Waiter,
        ctx: &mut Context<Self>,
    ) {
        if !self.peers.contains(&from) {
            self.counters.malformed += 1;
            return waiter.answer(refused("adopt from a non-orchestrator"));
        }
        if let Err(e) = check_names(&name, &key) {
            return waiter.answer(OrchestratorResponse::Failed(e));
        }
        let Some(location) = self.servers.get(&server).map(|s| s.name.clone()) else {
            return waiter.answer(refused("not a server of this cloud"));
        };
        let id = (name, key);
        match self.directory.get(&id) {
            // An instance this cloud handed abroad may come back.
            None | Some(Entry::Abroad(_)) => {}
            Some(_) => {
                return waiter.answer(refused(&format!(
                    "{}/{} is already active in {}",
                    id.0, id.1, self.cloud
                )))
            }
        }
        if !self.directory.contains_key(&id) && self.directory.len() >= DIRECTORY_MAX {
            return waiter.answer(refused(&format!(
                "{} tracks {DIRECTORY_MAX} instances already",
                self.cloud
            )));
        }
        if let Some(l) = self.servers.get_mut(&server).and_then(|s| s.load.as_mut()) {
            l.instances = l.instances.saturating_add(1);
        }
        self.directory
            .insert(id.clone(), Entry::Placing(vec![waiter]));
        let hosting = Hosting::Adopt {
            migration_id,
            join: true,
        };
        self.place(id, server, location, hosting, ctx);
    }

    /// Migrates every instance of server `name` to others of this cloud,
    /// one at a time, and places nothing more there.
    fn drain(&mut self, name: String, waiter: Waiter, ctx: &mut Context<Self>) {
        let Some(sid) = self.server_named(&name) else {
            return waiter.answer(refused(&format!(
                "{name} is not a server of {}",
                self.cloud
            )));
        };
        if let Some(s) = self.servers.get_mut(&sid) {
            s.draining = true;
        }
        let mut ids: Vec<(String, String)> = self
            .directory
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Placed(s) if *s == sid))
            .map(|(k, _)| k.clone())
            .collect();
        ids.sort();
        info!(server = %name, instances = ids.len(), "draining");
        let addr = ctx.address();
        actix::spawn(async move {
            let (mut moved, mut failed) = (0u32, Vec::new());
            for (n, k) in ids {
                let r = addr
                    .send(MigrateInstance {
                        name: n.clone(),
                        key: k.clone(),
                        destination: None,
                        tamper: false,
                    })
                    .await;
                match r {
                    Ok(Ok(rep)) if rep.completed => moved += 1,
                    Ok(Ok(rep)) => failed.push(format!(
                        "{n}/{k}: {}",
                        rep.reason.unwrap_or_else(|| "aborted".into())
                    )),
                    Ok(Err(e)) => failed.push(format!("{n}/{k}: {e}")),
                    Err(_) => failed.push(format!("{n}/{k}: orchestrator stopped")),
                }
            }
            waiter.answer(OrchestratorResponse::Drained { moved, failed });
        });
    }

    /// One load-balance round: the policy's moves, one at a time.
    fn rebalance_round(&mut self, ctx: &mut Context<Self>) {
        let Some(policy) = self.rebalance else {
            return;
        };
        if self.rebalancing {
            return;
        }
        let views: Vec<ServerHeat<'_>> = self
            .servers
            .iter()
            .filter(|(_, s)| s.joined == Joined::Yes && !s.draining)
            .filter_map(|(id, s)| {
                s.load.as_ref().map(|load| ServerHeat {
                    id: *id,
                    load,
                    instances: &s.heat,
                })
            })
            .collect();
        let moves = policy.plan(&views);
        let moves: Vec<(String, String, Site)> = moves
            .into_iter()
            .filter(|m| matches!(self.directory.get(&(m.name.clone(), m.key.clone())), Some(Entry::Placed(s)) if *s == m.from))
            .filter_map(|m| {
                let to = self.servers.get(&m.to)?;
                Some((m.name, m.key, Site::new(&self.cloud, &to.name)))
            })
            .collect();
        if moves.is_empty() {
            return;
        }
        // Heat reports are stale once instances move: wait for fresh ones.
        for s in self.servers.values_mut() {
            s.heat.clear();
        }
        self.rebalancing = true;
        let addr = ctx.address();
        let work = async move {
            for (name, key, to) in moves {
                info!(function = %name, key = %key, to = %to.server, "rebalancing a hot instance");
                let _ = addr
                    .send(MigrateInstance {
                        name,
                        key,
                        destination: Some(to),
                        tamper: false,
                    })
                    .await;
            }
        };
        ctx.spawn(
            work.into_actor(self)
                .map(|(), act, _| act.rebalancing = false),
        );
    }

    /// The instance stays on `source` (an aborted migration).
    fn stay(&mut self, id: (String, String), source: NodeId, waiters: Vec<Waiter>) {
        self.directory.insert(id, Entry::Placed(source));
        for w in waiters {
            w.answer(OrchestratorResponse::Located(source));
        }
    }

    /// Inter-cloud: the destination cloud's orchestrator adopts the
    /// instance; then it leaves this cloud (`ProvIdDelete`) and later
    /// locates are forwarded there.
    #[allow(clippy::too_many_arguments)]
    fn hand_over(
        &mut self,
        id: (String, String),
        peer: NodeId,
        dest: NodeId,
        migration_id: Hash,
        waiters: Vec<Waiter>,
        waiter: Waiter,
        ctx: &mut Context<Self>,
    ) {
        // Locators wait as during the migration. Adopted or not, the
        // instance leaves this cloud: a restart must not route to the source.
        if let Err(e) = self.placements.remove(&id.0, &id.1) {
            warn!(function = %id.0, key = %id.1, error = %ErrorChain(&e), "placement removal not persisted");
        }
        self.directory.insert(id.clone(), Entry::Migrating(waiters));
        let req = OrchestratorRequest::Adopt {
            name: id.0.clone(),
            key: id.1.clone(),
            server: dest,
            migration_id,
        };
        let (transport, ledger) = (self.transport.clone(), self.ledger.clone());
        let leave = Record::ProvIdDelete {
            kind: EntityKind::Container,
            entity: entity_name(&id.0, &id.1),
        };
        let timeout = HAND_OVER_WAIT;
        let work = async move {
            let adopted = match transport
                .request(peer, ORCHESTRATOR_ACTOR, wire::encode(&req), timeout)
                .await
            {
                Ok(body) => match wire::decode::<OrchestratorResponse>(&body) {
                    Ok(OrchestratorResponse::Located(s)) if s == dest => Ok(()),
                    Ok(OrchestratorResponse::Failed(e)) => Err(e.to_string()),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            // Adopted or not, the instance has left this cloud.
            if let Err(e) = ledger.submit(leave).await {
                warn!(error = %e, "instance leave not recorded");
            }
            adopted
        };
        ctx.spawn(work.into_actor(self).map(move |r, act, ctx| {
            let waiters = match act.directory.remove(&id) {
                Some(Entry::Migrating(w)) => w,
                _ => Vec::new(),
            };
            match r {
                Ok(()) => {
                    act.counters.migrated += 1;
                    act.directory.insert(id, Entry::Abroad(peer));
                    for w in waiters {
                        w.answer(OrchestratorResponse::Located(dest));
                    }
                    waiter.answer(OrchestratorResponse::Located(dest));
                }
                Err(reason) => {
                    // Lost: callers are placed afresh here.
                    act.counters.migrations_failed += 1;
                    warn!(function = %id.0, key = %id.1, %reason, "the destination cloud did not adopt the instance");
                    let fail = FunctionError::Placement {
                        reason: format!("not adopted abroad: {reason}"),
                    };
                    waiter.answer(OrchestratorResponse::Failed(fail));
                    for w in waiters {
                        act.locate(id.0.clone(), id.1.clone(), w, ctx);
                    }
                }
            }
        }));
    }

    /// MEC task sharing, this cloud first: commit `OffloadRequested`, ask
    /// the shortlisted servers (least loaded first) in turn whether they
    /// accept, commit `OffloadAccepted` for the first that does and name
    /// it to the requester. A refusing or unreachable candidate → the next.
    /// If none accepts, the other clouds' orchestrators are asked in turn
    /// under a consortium contract (`Scope::Inter`, its own task id).
    fn offload(
        &mut self,
        from: NodeId,
        task_id: Hash,
        task_digest: Hash,
        name: String,
        waiter: Waiter,
        ctx: &mut Context<Self>,
    ) {
        if !self.servers.contains_key(&from) {
            self.counters.malformed += 1;
            return waiter.answer(OrchestratorResponse::Failed(FunctionError::Placement {
                reason: "offload from a non-server".into(),
            }));
        }
        let candidates: Vec<Candidate<'_>> = self
            .servers
            .iter()
            .filter(|(id, s)| **id != from && s.joined == Joined::Yes)
            .filter_map(|(id, s)| s.load.as_ref().map(|load| Candidate { id: *id, load }))
            .collect();
        let list = shortlist(&name, &candidates, OFFLOAD_CANDIDATES_MAX);
        let abroad = self.peers.clone();
        let failed = self.candidates_failed.clone();
        if list.is_empty() && abroad.is_empty() {
            return waiter.answer(OrchestratorResponse::Failed(FunctionError::NoCapacity {
                name,
            }));
        }
        self.counters.offloads += 1;
        let name_for_span = name.clone();
        let ledger = self.ledger.clone();
        let transport = self.transport.clone();
        let work = async move {
            let request = |task_id, scope| Record::OffloadRequested {
                task_id,
                requester: from,
                task_digest,
                requirements: Requirements {
                    cpu_millis: 0,
                    memory_mb: 0,
                    deadline_ms: crate::clock::now_ms() + 30_000,
                },
                scope,
            };
            let recorded = |what: &'static str| {
                move |e: ActorError| FunctionError::Placement {
                    reason: format!("offload {what} not recorded: {e}"),
                }
            };
            // This cloud first (contract on its chain) ...
            if !list.is_empty() {
                ledger
                    .submit(request(task_id, Scope::Local))
                    .await
                    .map_err(recorded("request"))?;
                if let Some(executor) =
                    first_acceptor(&transport, &list, task_id, &name, &failed).await
                {
                    let accepted = Record::OffloadAccepted {
                        task_id,
                        executor,
                        scope: Scope::Local,
                    };
                    ledger
                        .submit(accepted)
                        .await
                        .map_err(recorded("acceptance"))?;
                    return Ok(OrchestratorResponse::Located(executor));
                }
            }
            // ... then other clouds through their orchestrators, under a
            // consortium contract with its own task id.
            let inter_id = Hash::of_parts(&[task_id.as_bytes(), b"/inter"]);
            let mut requested = false;
            for peer in abroad {
                if !requested {
                    ledger
                        .submit(request(inter_id, Scope::Inter))
                        .await
                        .map_err(recorded("request"))?;
                    requested = true;
                }
                let req = OrchestratorRequest::OffloadAbroad {
                    task_id: inter_id,
                    name: name.clone(),
                };
                let executor = match transport
                    .request(
                        peer,
                        ORCHESTRATOR_ACTOR,
                        wire::encode(&req),
                        Duration::from_secs(5),
                    )
                    .await
                {
                    Ok(reply) => match wire::decode::<OrchestratorResponse>(&reply) {
                        Ok(OrchestratorResponse::Located(e)) => e,
                        _ => continue,
                    },
                    Err(_) => continue,
                };
                let accepted = Record::OffloadAccepted {
                    task_id: inter_id,
                    executor,
                    scope: Scope::Inter,
                };
                ledger
                    .submit(accepted)
                    .await
                    .map_err(recorded("acceptance"))?;
                return Ok(OrchestratorResponse::OffloadedAbroad {
                    executor,
                    task_id: inter_id,
                });
            }
            Err(FunctionError::NoCapacity { name })
        };
        let span = crate::telemetry::sampled_root(|| {
            tracing::info_span!(
                "offload",
                federact.root = true,
                task.id = %task_id,
                requester = %from.short(),
                function = name_for_span.as_str(),
                executor = tracing::field::Empty,
                chain = tracing::field::Empty,
                outcome = tracing::field::Empty,
            )
        });
        let work = tracing::Instrument::instrument(work, span.clone());
        ctx.spawn(work.into_actor(self).map(move |r, _, _| {
            match &r {
                Ok(OrchestratorResponse::Located(e)) => {
                    span.record("executor", tracing::field::display(e.short()));
                    span.record("chain", "local");
                    span.record("outcome", "accepted");
                }
                Ok(OrchestratorResponse::OffloadedAbroad { executor, .. }) => {
                    span.record("executor", tracing::field::display(executor.short()));
                    span.record("chain", "consortium");
                    span.record("outcome", "accepted_abroad");
                }
                Ok(_) => {}
                Err(e) => {
                    span.record("outcome", "failed");
                    crate::telemetry::record_error(&span, e);
                }
            }
            let metrics = crate::metrics::Metrics::global();
            metrics.offload(if r.is_ok() { "accepted" } else { "failed" });
            waiter.answer(r.unwrap_or_else(OrchestratorResponse::Failed))
        }));
    }

    /// Another cloud's orchestrator looks for an executor here: ask this
    /// cloud's servers in turn (no record: the asker commits on the
    /// consortium).
    fn offload_abroad(
        &mut self,
        from: NodeId,
        task_id: Hash,
        name: String,
        waiter: Waiter,
        ctx: &mut Context<Self>,
    ) {
        if !self.peers.contains(&from) {
            self.counters.malformed += 1;
            return waiter.answer(OrchestratorResponse::Failed(FunctionError::Placement {
                reason: "offload abroad from a non-orchestrator".into(),
            }));
        }
        let candidates: Vec<Candidate<'_>> = self
            .servers
            .iter()
            .filter(|(_, s)| s.joined == Joined::Yes)
            .filter_map(|(id, s)| s.load.as_ref().map(|load| Candidate { id: *id, load }))
            .collect();
        let list = shortlist(&name, &candidates, OFFLOAD_CANDIDATES_MAX);
        let transport = self.transport.clone();
        let failed = self.candidates_failed.clone();
        let work = async move {
            match first_acceptor(&transport, &list, task_id, &name, &failed).await {
                Some(e) => OrchestratorResponse::Located(e),
                None => OrchestratorResponse::Failed(FunctionError::NoCapacity { name }),
            }
        };
        let span = crate::telemetry::sampled_root(
            || tracing::info_span!("offload.abroad", federact.root = true, task.id = %task_id, requester = %from.short()),
        );
        let work = tracing::Instrument::instrument(work, span);
        ctx.spawn(work.into_actor(self).map(move |r, _, _| waiter.answer(r)));
    }
}

/// The first server of `list` that accepts task `task_id` (a refusing or
/// unreachable one → the next).
async fn first_acceptor(
    transport: &Transport,
    list: &[NodeId],
    task_id: Hash,
    name: &str,
    failed: &FailedCandidates,
) -> Option<NodeId> {
    for &candidate in list {
        let req = ServerRequest::Accept {
            task_id,
            name: name.to_string(),
        };
        let why = match transport
            .request(
                candidate,
                SERVER_ACTOR,
                wire::encode(&req),
                Duration::from_secs(2),
            )
            .await
        {
            Ok(reply) => match wire::decode::<ServerResponse>(&reply) {
                Ok(ServerResponse::Accepted) => return Some(candidate),
                _ => {
                    crate::metrics::Metrics::global().offload("refused");
                    "refused".to_string()
                }
            },
            Err(e) => {
                crate::metrics::Metrics::global().offload("unreachable");
                format!("unreachable: {e}")
            }
        };
        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // An event on the offload span: the trace shows each candidate tried.
        info!(task = %task_id.short(), candidate = %candidate.short(), why, "offload candidate did not accept; trying the next");
    }
    None
}

impl Actor for OrchestratorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(INBOX_CAPACITY);
        if let Some(inbox) = self.inbox.take() {
            ctx.add_stream(crate::inbox_stream(inbox));
        }
        ctx.run_interval(SERVER_SILENT / 5, |act, ctx| act.check_servers(ctx));
        ctx.run_interval(REBALANCE_EVERY, |act, ctx| act.rebalance_round(ctx));
        info!(cloud = %self.cloud, servers = self.servers.len(), "orchestrator started");
    }
}

impl StreamHandler<Incoming> for OrchestratorActor {
    fn handle(&mut self, item: Incoming, ctx: &mut Context<Self>) {
        match item {
            Incoming::OneWay { from, body, .. } => {
                match wire::decode::<OrchestratorOneWay>(&body) {
                    Ok(OrchestratorOneWay::Load(load)) => self.handle_load(from, load, ctx),
                    Ok(OrchestratorOneWay::Heat(mut heat)) => match self.servers.get_mut(&from) {
                        Some(s) => {
                            heat.truncate(HEAT_MAX);
                            s.heat = heat;
                        }
                        None => self.counters.malformed += 1,
                    },
                    Err(_) => self.counters.malformed += 1,
                }
            }
            Incoming::Request {
                from,
                body,
                responder,
                trace,
                ..
            } => match wire::decode::<OrchestratorRequest>(&body) {
                Ok(req) => {
                    let span = if trace.is_empty() {
                        tracing::Span::none()
                    } else {
                        crate::telemetry::continue_trace(
                            tracing::info_span!(
                                "orchestrator.request",
                                cloud = self.cloud.as_str(),
                                request = match &req {
                                    OrchestratorRequest::Locate { .. } => "locate",
                                    OrchestratorRequest::Deactivated { .. } => "deactivated",
                                    OrchestratorRequest::Offload { .. } => "offload",
                                    OrchestratorRequest::OffloadAbroad { .. } => "offload_abroad",
                                    OrchestratorRequest::Migrate { .. } => "migrate",
                                    OrchestratorRequest::Drain { .. } => "drain",
                                    OrchestratorRequest::Adopt { .. } => "adopt",
                                },
                                peer = %from.short(),
                            ),
                            &trace,
                        )
                    };
                    let _entered = span.enter();
                    self.handle_request(from, req, Waiter::Remote(responder), ctx)
                }
                Err(e) => {
                    self.counters.malformed += 1;
                    let msg = format!("malformed request: {e}");
                    actix::spawn(async move {
                        let _ = responder.fail(&msg).await;
                    });
                }
            },
            Incoming::Transfer { receiver, .. } => receiver.reject(),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A request from this node's own process (no QUIC hop).
#[derive(Message)]
#[rtype(result = "OrchestratorResponse")]
pub struct LocalOrchestratorRequest(pub OrchestratorRequest);

impl Handler<LocalOrchestratorRequest> for OrchestratorActor {
    type Result = ResponseFuture<OrchestratorResponse>;
    fn handle(&mut self, msg: LocalOrchestratorRequest, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.id;
        self.handle_request(me, msg.0, Waiter::Local(tx), ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or(OrchestratorResponse::Failed(FunctionError::Transport {
                    detail: "orchestrator dropped the request".into(),
                }))
        })
    }
}

/// Migrates active instance (`name`, `key`) of this orchestrator's cloud
/// to `destination` (a server of this or another cloud; `None`: one of
/// this cloud chosen by the placement policy), live: calls made meanwhile
/// are buffered and served at the destination (or at the source if the
/// migration aborts). Answers with the source's report when the
/// destination hosts the instance (completed) or the source resumed it
/// (aborted, `completed == false`).
#[derive(Message)]
#[rtype(result = "Result<MigrationReport, FunctionError>")]
pub struct MigrateInstance {
    /// The function.
    pub name: String,
    /// The instance key.
    pub key: String,
    /// The destination server.
    pub destination: Option<Site>,
    /// Test hook: flip one byte of the image in transit.
    pub tamper: bool,
}

impl Handler<MigrateInstance> for OrchestratorActor {
    type Result = ResponseFuture<Result<MigrationReport, FunctionError>>;
    fn handle(&mut self, msg: MigrateInstance, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.migrate(
            msg.name,
            msg.key,
            msg.destination,
            msg.tamper,
            Waiter::Local(tx),
            ctx,
        );
        Box::pin(async move {
            match rx.await {
                Ok(OrchestratorResponse::Migrated(report)) => Ok(report),
                Ok(OrchestratorResponse::Failed(e)) => Err(e),
                Ok(other) => Err(FunctionError::Transport {
                    detail: format!("unexpected answer {other:?}"),
                }),
                Err(_) => Err(FunctionError::Transport {
                    detail: "orchestrator dropped the migration".into(),
                }),
            }
        })
    }
}

/// Sets (or clears) the load-balance policy run every [`REBALANCE_EVERY`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRebalance(pub Option<Rebalance>);

impl Handler<SetRebalance> for OrchestratorActor {
    type Result = ();
    fn handle(&mut self, msg: SetRebalance, _: &mut Context<Self>) {
        self.rebalance = msg.0;
    }
}

/// Where the directory says instance (`0`, `1`) lives, if placed here or
/// (for an instance moved abroad) which orchestrator answers for it.
#[derive(Message)]
#[rtype(result = "Option<NodeId>")]
pub struct Whereabouts(pub String, pub String);

impl Handler<Whereabouts> for OrchestratorActor {
    type Result = Option<NodeId>;
    fn handle(&mut self, msg: Whereabouts, _: &mut Context<Self>) -> Self::Result {
        match self.directory.get(&(msg.0, msg.1))? {
            Entry::Placed(s) | Entry::Abroad(s) => Some(*s),
            _ => None,
        }
    }
}

/// The orchestrator's counters.
#[derive(Message)]
#[rtype(result = "OrchestratorCounters")]
pub struct OrchestratorStatus;

impl Handler<OrchestratorStatus> for OrchestratorActor {
    type Result = MessageResult<OrchestratorStatus>;
    fn handle(&mut self, _: OrchestratorStatus, _: &mut Context<Self>) -> Self::Result {
        let mut c = self.counters;
        c.candidates_failed = self
            .candidates_failed
            .load(std::sync::atomic::Ordering::Relaxed);
        c.servers_joined = self
            .servers
            .values()
            .filter(|s| s.joined == Joined::Yes)
            .count() as u64;
        MessageResult(c)
    }
}

impl Handler<crate::node::Shutdown> for OrchestratorActor {
    type Result = ();
    fn handle(&mut self, _: crate::node::Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Asks `orchestrator` (over QUIC, as `transport`'s node, which must be of
/// the orchestrator's cloud) to drain its server `server`: every instance
/// migrates to another server and nothing more is placed there. Returns
/// the instances moved and `name/key: reason` of those that stayed.
pub async fn drain_server(
    transport: &Transport,
    orchestrator: NodeId,
    server: &str,
    timeout: Duration,
) -> Result<(u32, Vec<String>), FunctionError> {
    let req = OrchestratorRequest::Drain {
        server: server.to_string(),
    };
    let reply = transport
        .request(
            orchestrator,
            ORCHESTRATOR_ACTOR,
            wire::encode(&req),
            timeout,
        )
        .await
        .map_err(|e| FunctionError::Transport {
            detail: e.to_string(),
        })?;
    match wire::decode::<OrchestratorResponse>(&reply) {
        Ok(OrchestratorResponse::Drained { moved, failed }) => Ok((moved, failed)),
        Ok(OrchestratorResponse::Failed(e)) => Err(e),
        Ok(other) => Err(FunctionError::Transport {
            detail: format!("unexpected answer {other:?}"),
        }),
        Err(e) => Err(FunctionError::Transport {
            detail: e.to_string(),
        }),
    }
}

/// Asks `orchestrator` (over QUIC, from a node of its cloud) to migrate
/// instance (`name`, `key`) live to `destination`; see [`MigrateInstance`].
pub async fn migrate_instance(
    transport: &Transport,
    orchestrator: NodeId,
    name: &str,
    key: &str,
    destination: Site,
    timeout: Duration,
) -> Result<MigrationReport, FunctionError> {
    let req = OrchestratorRequest::Migrate {
        name: name.to_string(),
        key: key.to_string(),
        destination,
    };
    let reply = transport
        .request(
            orchestrator,
            ORCHESTRATOR_ACTOR,
            wire::encode(&req),
            timeout,
        )
        .await
        .map_err(|e| FunctionError::Transport {
            detail: e.to_string(),
        })?;
    match wire::decode::<OrchestratorResponse>(&reply) {
        Ok(OrchestratorResponse::Migrated(report)) => Ok(report),
        Ok(OrchestratorResponse::Failed(e)) => Err(e),
        Ok(other) => Err(FunctionError::Transport {
            detail: format!("unexpected answer {other:?}"),
        }),
        Err(e) => Err(FunctionError::Transport {
            detail: e.to_string(),
        }),
    }
}
