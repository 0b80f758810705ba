//! The migration actor: one per server node, driving the sans-IO BASICS
//! core ([`federact_ledger::migration::Migration`]) for every migration the
//! server is the source or the destination of.
//!
//! What it does per effect of the core (a flat match in
//! [`MigrationActor::drive`]): submits `Indication` / `Confirmation` /
//! `Leave` / `Arrival` through the cloud's gateway ([`LedgerClient`]);
//! streams the image over a QUIC transfer stream (the source reads the file
//! in chunks, the destination hashes each chunk as it arrives and writes it
//! to `DATA_DIR/migration/incoming`, never holding the image whole); sends
//! the other side notices with inclusion proofs, which the receiver
//! verifies against the chain's validator set before believing them (the
//! peer is not trusted); and arms timers.
//!
//! External VM image files use it directly ([`StartMigration`], or
//! [`migrate_image`] from any member over QUIC). Running function
//! instances use the same path: the hosting server freezes the instance
//! (buffering its calls), writes its snapshot to a file and asks for
//! [`MigrateSnapshot`]; the file is the image. The server resumes or
//! releases the instance on the outcome, and the destination server
//! restores it from the received image (`crate::server`, [`instance_image`]).
//!
//! Limits ([`MigrationLimits`]): concurrent migrations per server, image
//! size, transfer time, protocol time, age of a kept image nobody adopts;
//! each exceeded limit is a [`MigrationError`] or a rejecting confirmation
//! with the reason (or, for a kept image, its removal).
//!
//! # Restarts
//! Each side's unfinished migrations are persisted in a sled store
//! ([`MigrationStore`], `DATA_DIR/migration-state`): the source's before
//! its indication is submitted, the destination's before its confirmation
//! is (the effects wait for the flush). A restarted server asks the chains
//! through its gateway what committed about each (indication,
//! confirmation, `Leave`, `Arrival`, every record proven) and resumes it
//! with [`Migration::resume`], which decides what is left: a source whose
//! announced migration has no confirmation writes the rejection once its
//! deadline passed, an accepted inter-cloud move gets its `Leave` or
//! `Arrival`, a destination discards an image that will never be adopted.
//! A submission refused because the record (or the other side's
//! confirmation) already committed makes the side ask the chains too.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::{info, warn};

use federact_config::{Federation, NodeId, Role};
use federact_federation::{Incoming, Responder, TransferReceiver, Transport};
use federact_ledger::cert::ValidatorSet;
use federact_ledger::error::ErrorChain;
use federact_ledger::hash::{Hash, Hasher};
use federact_ledger::migration::{Committed, Effect, Migration, Notice, Outcome, Progress, Side};
use federact_ledger::proof::{CertifiedBlocks, CrossChainProof};
use federact_ledger::record::{Record, Site};
use federact_ledger::store::{MigrationStore, SavedMigration};

use crate::client::LedgerClient;
use crate::clock::{now_micros, now_ms};
use crate::wire::{
    self, MigrationOneWay, MigrationReport, MigrationRequest, MigrationResponse, Receipt,
    TransferHeader, MIGRATION_ACTOR,
};

/// Transfer chunk size: large enough for throughput, small enough that a
/// migration holds at most a few of them.
const CHUNK_BYTES: usize = 1 << 20;
/// Finished migrations remembered for [`MigrationRequest::Outcome`].
const FINISHED_MAX: usize = 256;
/// Attempts per `Leave` / `Arrival` submission (they must eventually land).
const SUBMIT_ATTEMPTS: u32 = 5;
/// The pause before an unanswered indication is submitted again grows by
/// this much per attempt, up to [`INDICATION_RETRY_MAX`]; the source keeps
/// trying until the chain answers (the indication may have committed).
const INDICATION_RETRY_FIRST: Duration = Duration::from_millis(250);
const INDICATION_RETRY_MAX: Duration = Duration::from_secs(5);
/// The transport inbox capacity of a migration actor.
pub const INBOX_CAPACITY: usize = 256;
/// Blocks whose certificates a migration actor remembers as verified
/// (notices of migrations committed in one block share a certificate).
const CERTIFIED_BLOCKS_MAX: usize = 1024;
/// Waiters for one migration's end ([`MigrationEnded`]).
const END_WAITERS_MAX: usize = 16;
/// How often received images that belong to no running migration are
/// removed (see [`sweep_incoming`]); the shortest pause between scans for
/// kept images past their age ([`expire_images`]).
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Longest pause between two attempts to ask the chains about a migration
/// being resumed after a restart (the gateway may be restarting too).
const RESUME_RETRY_MAX: Duration = Duration::from_secs(8);
/// Notices buffered for migrations whose resumption is still asking the chains.
const HELD_NOTICES_MAX: usize = 256;

/// Bounds on what a server's migration actor takes on.
#[derive(Debug, Clone, Copy)]
pub struct MigrationLimits {
    /// Migrations in flight per server (source and destination together).
    pub concurrent_max: usize,
    /// Largest image accepted, in bytes.
    pub image_bytes_max: u64,
    /// Longest a transfer may take.
    pub transfer_timeout: Duration,
    /// Longest from snapshot to confirmation before the migration is
    /// rejected (the reason then goes on the ledger).
    pub protocol_timeout: Duration,
    /// How long a destination keeps a completed migration's image (in
    /// `images/`) that nobody adopts; then it is removed. Longer than an
    /// adoption may wait for it ([`crate::server::ADOPT_WAIT`]).
    pub kept_image_max_age: Duration,
}

impl Default for MigrationLimits {
    fn default() -> Self {
        MigrationLimits {
            concurrent_max: 16,
            image_bytes_max: 16 << 30,
            transfer_timeout: Duration::from_secs(600),
            protocol_timeout: Duration::from_secs(900),
            kept_image_max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a migration could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    /// The server already runs its maximum of migrations.
    #[error("too many concurrent migrations on {server} (max {max})")]
    TooManyMigrations {
        /// This server.
        server: String,
        /// The limit.
        max: usize,
    },
    /// The image exceeds the size limit.
    #[error("image of {bytes} bytes exceeds the maximum of {max}")]
    ImageTooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The destination is not a server of the federation, or is this one.
    #[error("bad destination {cloud}/{server}: {detail}")]
    BadDestination {
        /// Its cloud.
        cloud: String,
        /// Its server.
        server: String,
        /// What is wrong.
        detail: String,
    },
    /// The image file could not be read.
    #[error("image {path}: {detail}")]
    Image {
        /// The file.
        path: String,
        /// The I/O error.
        detail: String,
    },
    /// The request did not reach the source server or its answer did not decode.
    #[error("migration request failed: {detail}")]
    Request {
        /// What failed.
        detail: String,
    },
    /// The source server refused the request.
    #[error("migration refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
}

/// What it takes to start a server's migration actor.
pub struct MigrationSetup {
    /// The federation.
    pub federation: Federation,
    /// This server.
    pub site: Site,
    /// The node's transport.
    pub transport: Transport,
    /// Signs and submits through the cloud's gateway.
    pub ledger: LedgerClient,
    /// Where received images go (`DATA_DIR/migration`).
    pub dir: PathBuf,
    /// Where the unfinished migrations are persisted (a sled store,
    /// `DATA_DIR/migration-state`), so a restarted server resumes them.
    pub state_dir: PathBuf,
    /// Limits.
    pub limits: MigrationLimits,
}

/// Who waits for a source migration's outcome.
enum Waiter {
    Remote(Responder),
    Local(oneshot::Sender<Result<MigrationReport, MigrationError>>),
}

impl Waiter {
    fn answer(self, result: Result<MigrationReport, MigrationError>) {
        match self {
            Waiter::Remote(r) => {
                let body = wire::encode(&match result {
                    Ok(rep) => MigrationResponse::Done(rep),
                    Err(e) => MigrationResponse::Failed(e.to_string()),
                });
                actix::spawn(async move {
                    let _ = r.respond(body).await;
                });
            }
            Waiter::Local(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// One migration in flight on this server.
struct Running {
    core: Migration<Box<CrossChainProof>>,
    peer: NodeId,
    image: PathBuf,
    tamper: bool,
    bytes: u64,
    started: Instant,
    waiter: Option<Waiter>,
    records: Vec<(String, String, u64)>,
    transfer: Option<tokio::task::JoinHandle<()>>,
    /// The `migration` span of this side: open for the whole migration,
    /// parent of each protocol step's span (snapshot, submits, transfer,
    /// notices), ended when the migration completes or aborts.
    span: tracing::Span,
    /// What the store holds for it (`None`: nothing persisted yet).
    persisted: Option<Progress>,
    /// Destination: the vm id the transfer header announced.
    announced_vm_id: Option<Hash>,
    /// Resumed after a restart of this server.
    resumed: bool,
    /// Stopped at a fault-injection point ([`HaltAt`]): nothing more is
    /// persisted or carried out for it, as if the process had died there.
    halted: bool,
    /// Its progress is being flushed; its effects wait ([`Durable`]).
    flushing: bool,
}

impl Running {
    /// A migration that starts now: nothing sent, received, committed or
    /// persisted yet.
    fn new(
        core: Migration<Box<CrossChainProof>>,
        peer: NodeId,
        image: PathBuf,
        span: tracing::Span,
    ) -> Self {
        Running {
            core,
            peer,
            image,
            tamper: false,
            bytes: 0,
            started: Instant::now(),
            waiter: None,
            records: Vec::new(),
            transfer: None,
            span,
            persisted: None,
            announced_vm_id: None,
            resumed: false,
            halted: false,
            flushing: false,
        }
    }
}

/// The `migration` span of one side of a migration.
fn migration_span(
    id: Hash,
    side: &'static str,
    source: &Site,
    destination: &Site,
) -> tracing::Span {
    tracing::info_span!(
        "migration",
        federact.root = true,
        migration.id = %id,
        migration.side = side,
        migration.scope = scope_of(source, destination),
        source = %format_args!("{}/{}", source.cloud, source.server),
        destination = %format_args!("{}/{}", destination.cloud, destination.server),
        vm.id = tracing::field::Empty,
        bytes = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

/// The metric and span name of a migration's scope.
fn scope_of(source: &Site, destination: &Site) -> &'static str {
    if source.cloud == destination.cloud {
        "intra_cloud"
    } else {
        "inter_cloud"
    }
}

/// A server's migration actor.
pub struct MigrationActor {
    federation: Federation,
    site: Site,
    transport: Transport,
    ledger: LedgerClient,
    dir: PathBuf,
    limits: MigrationLimits,
    /// Validator sets of the chains whose proofs this server accepts.
    sets: HashMap<String, ValidatorSet>,
    running: HashMap<Hash, Running>,
    finished: VecDeque<MigrationReport>,
    inbox: Option<federact_federation::Inbox>,
    counter: u64,
    /// This cloud's gateway (it forwards committed indications, step 4).
    gateway: Option<NodeId>,
    /// Fault injection ([`SilenceIndicationNotices`]).
    silence_indication_notices: bool,
    /// Blocks whose commit certificates this actor verified.
    certified: CertifiedBlocks,
    /// Who waits for a running migration to end ([`MigrationEnded`]).
    end_waiters: HashMap<Hash, Vec<oneshot::Sender<MigrationReport>>>,
    /// The unfinished migrations, on sled.
    store: MigrationStore,
    /// Migrations read from the store at start whose resumption is still
    /// asking the chains what committed.
    resuming: HashMap<Hash, SavedMigration>,
    /// Notices that arrived for a migration in `resuming`: handled once it runs.
    held_notices: Vec<(NodeId, Hash, Notice<Box<CrossChainProof>>)>,
    /// Fault injection ([`HaltAfter`]).
    halt_after: Option<HaltAfter>,
    /// Migrations whose progress was written after the flush in flight
    /// started (group commit: one flush at a time covers all of them).
    unflushed: Vec<Hash>,
    /// Migrations the flush in flight makes durable (`None`: none runs).
    flushing: Option<Vec<Hash>>,
}

impl MigrationActor {
    /// Whether member `from` may order this server to migrate one of its
    /// image files: only its own cloud's operators (client identities) and
    /// orchestrator may. An image path names a file on this server's disk;
    /// a member of another cloud must not be able to make the server send
    /// its files anywhere.
    fn may_order_migrations(&self, from: &NodeId) -> Result<(), String> {
        let Some(node) = self.federation.node_by_id(from) else {
            return Err(format!("{} is not a member", from.short()));
        };
        let roles = node.roles();
        if node.cloud() != self.site.cloud {
            return Err(format!(
                "not authorised: {} belongs to {}, this server to {}",
                node.name(),
                node.cloud(),
                self.site.cloud
            ));
        }
        if !(roles.contains(federact_config::Role::Client)
            || roles.contains(federact_config::Role::Orchestrator))
        {
            return Err(format!(
                "not authorised: {} is neither an operator (client) nor the orchestrator of {}",
                node.name(),
                self.site.cloud
            ));
        }
        Ok(())
    }

    /// Registers the actor's transport address and prepares it.
    pub fn new(setup: MigrationSetup) -> Result<MigrationActor, crate::ActorError> {
        let inbox = setup.transport.register(MIGRATION_ACTOR, INBOX_CAPACITY)?;
        let mut sets = HashMap::new();
        for chain in [
            setup.federation.local_chain(&setup.site.cloud),
            setup.federation.consortium(),
        ]
        .into_iter()
        .flatten()
        {
            sets.insert(chain.id().to_string(), ValidatorSet::from_spec(chain));
        }
        let gateway = setup.federation.gateway(&setup.site.cloud).map(|g| g.id());
        let store = MigrationStore::open(&setup.state_dir)?;
        let resuming: HashMap<Hash, SavedMigration> = store
            .all()?
            .into_iter()
            .map(|s| (s.progress.migration_id, s))
            .collect();
        // Nothing runs yet: a received image left in `incoming` belongs to
        // a migration a crash or kill interrupted. Only a wholly received
        // one of a migration still to resume may be of use (its resumption
        // decides); a transfer cannot resume.
        sweep_incoming(&setup.dir.join("incoming"), |id| {
            resuming.get(id).is_some_and(|s| {
                matches!(
                    s.progress.received,
                    federact_ledger::migration::ReceivedImage::Done { .. }
                )
            })
        });
        Ok(MigrationActor {
            federation: setup.federation,
            site: setup.site,
            transport: setup.transport,
            ledger: setup.ledger,
            dir: setup.dir,
            limits: setup.limits,
            sets,
            running: HashMap::new(),
            finished: VecDeque::new(),
            inbox: Some(inbox),
            counter: 0,
            gateway,
            silence_indication_notices: false,
            certified: CertifiedBlocks::new(CERTIFIED_BLOCKS_MAX),
            end_waiters: HashMap::new(),
            store,
            resuming,
            held_notices: Vec::new(),
            halt_after: None,
            unflushed: Vec::new(),
            flushing: None,
        })
    }

    /// The report of migration `id`, if it ended here recently.
    fn finished_report(&self, id: &Hash) -> Option<MigrationReport> {
        self.finished
            .iter()
            .rev()
            .find(|r| r.migration_id == *id)
            .cloned()
    }

    /// The node id of a server site, if it is a server of the federation.
    fn server_id(&self, site: &Site) -> Option<NodeId> {
        self.federation
            .node(&site.server)
            .filter(|n| n.cloud() == site.cloud && n.roles().contains(Role::Server))
            .map(|n| n.id())
    }

    fn full(&self) -> Option<MigrationError> {
        (self.running.len() + self.resuming.len() >= self.limits.concurrent_max).then(|| {
            MigrationError::TooManyMigrations {
                server: self.site.server.clone(),
                max: self.limits.concurrent_max,
            }
        })
    }

    /// Source: starts migrating the file `image` to `destination`.
    fn start(
        &mut self,
        image: PathBuf,
        destination: Site,
        tamper: bool,
        waiter: Waiter,
        chosen_id: Option<Hash>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(e) = self.full() {
            warn!(error = %e, "migration refused");
            return waiter.answer(Err(e));
        }
        let bad = |detail: &str| MigrationError::BadDestination {
            cloud: destination.cloud.clone(),
            server: destination.server.clone(),
            detail: detail.to_string(),
        };
        if destination == self.site {
            return waiter.answer(Err(bad("it is the source")));
        }
        let Some(peer) = self.server_id(&destination) else {
            return waiter.answer(Err(bad("not a server of the federation")));
        };
        self.counter += 1;
        let migration_id = chosen_id.unwrap_or_else(|| {
            Hash::of_parts(&[
                self.site.cloud.as_bytes(),
                self.site.server.as_bytes(),
                &now_micros().to_be_bytes(),
                &self.counter.to_be_bytes(),
            ])
        });
        if self.running.contains_key(&migration_id)
            || self.resuming.contains_key(&migration_id)
            || self.finished.iter().any(|r| r.migration_id == migration_id)
        {
            return waiter.answer(Err(MigrationError::Refused {
                reason: format!("migration id {} already used", migration_id.short()),
            }));
        }
        let timeout_ms =
            u64::try_from(self.limits.protocol_timeout.as_millis()).unwrap_or(u64::MAX);
        let span = crate::telemetry::sampled_root(|| {
            migration_span(migration_id, "source", &self.site, &destination)
        });
        let core = Migration::source(migration_id, self.site.clone(), destination, timeout_ms);
        info!(parent: &span, migration = %migration_id.short(), image = %image.display(), "migration requested");
        let snapshot_span = crate::telemetry::child_of(
            &span,
            || tracing::info_span!(parent: &span, "migration.snapshot"),
        );
        self.running.insert(
            migration_id,
            Running {
                tamper,
                waiter: Some(waiter),
                ..Running::new(core, peer, image.clone(), span)
            },
        );
        // "Snapshot": hash the image file (vm_id = sha256), streaming.
        let max = self.limits.image_bytes_max;
        let addr = ctx.address();
        actix::spawn(tracing::Instrument::instrument(
            async move {
                let result = hash_file(&image, max).await;
                if let Err(e) = &result {
                    crate::telemetry::record_error(&tracing::Span::current(), e);
                }
                addr.do_send(SnapshotDone {
                    migration_id,
                    result,
                });
            },
            snapshot_span,
        ));
    }

    /// Carries out the core's effects for `id` (the flat match: one arm,
    /// one piece of I/O).
    fn drive(&mut self, id: Hash, ctx: &mut Context<Self>) {
        if self.running.get(&id).is_none_or(|r| r.halted || r.flushing) {
            return;
        }
        // Persisted before any effect of the step is carried out: the
        // effects wait in the core's queue until the write is on disk
        // (sled's flush runs on its own threads; concurrent migrations'
        // writes share one flush).
        if self.persist(id) {
            if let Some(run) = self.running.get_mut(&id) {
                run.flushing = true;
            }
            self.unflushed.push(id);
            self.start_flush(ctx);
            return;
        }
        if self.halt_here(id) {
            return;
        }
        loop {
            let Some(run) = self.running.get_mut(&id) else {
                return;
            };
            let Some(effect) = run.core.poll_effect() else {
                return;
            };
            match effect {
                Effect::Submit(record) => self.submit(id, *record, 1, ctx),
                Effect::SubmitLeave {
                    migration_id,
                    vm_id,
                    proof,
                } => self.submit(
                    id,
                    Record::Leave {
                        migration_id,
                        vm_id,
                        proof,
                    },
                    1,
                    ctx,
                ),
                Effect::SubmitArrival {
                    migration_id,
                    vm_id,
                    proof,
                } => self.submit(
                    id,
                    Record::Arrival {
                        migration_id,
                        vm_id,
                        proof,
                    },
                    1,
                    ctx,
                ),
                Effect::StartTransfer => {
                    let Some(vm_id) = run.core.vm_id() else {
                        continue;
                    };
                    let header = TransferHeader {
                        migration_id: id,
                        vm_id,
                        source: self.site.clone(),
                        destination: run.core.destination_site().clone(),
                        bytes: run.bytes,
                    };
                    let (transport, peer, image, tamper) = (
                        self.transport.clone(),
                        run.peer,
                        run.image.clone(),
                        run.tamper,
                    );
                    let limit = self.limits.transfer_timeout;
                    let addr = ctx.address();
                    let span = crate::telemetry::child_of(&run.span, || {
                        tracing::info_span!(
                            parent: &run.span,
                            "migration.transfer",
                            direction = "send",
                            bytes = run.bytes,
                            peer = %peer.short(),
                        )
                    });
                    run.transfer = Some(actix::spawn(tracing::Instrument::instrument(
                        async move {
                            let result = match tokio::time::timeout(
                                limit,
                                send_file(&transport, peer, header, &image, tamper),
                            )
                            .await
                            {
                                Ok(r) => r,
                                Err(_) => {
                                    Err(format!("transfer timed out after {} s", limit.as_secs()))
                                }
                            };
                            if let Err(e) = &result {
                                crate::telemetry::record_failure(&tracing::Span::current(), e);
                            }
                            addr.do_send(TransferDone {
                                migration_id: id,
                                result,
                            });
                        },
                        span,
                    )));
                }
                Effect::Notify(Notice::IndicationCommitted { .. })
                    if self.silence_indication_notices =>
                {
                    warn!(migration = %id.short(), "indication notice withheld (fault injection)");
                }
                Effect::Notify(notice) => {
                    let span = crate::telemetry::child_of(&run.span, || {
                        tracing::info_span!(
                            parent: &run.span,
                            "migration.notify",
                            notice = match &notice {
                                Notice::IndicationCommitted { .. } => "IndicationCommitted",
                                Notice::ConfirmationCommitted { .. } => "ConfirmationCommitted",
                            },
                            peer = %run.peer.short(),
                        )
                    });
                    let body = wire::encode(&MigrationOneWay::Notice {
                        migration_id: id,
                        notice,
                    });
                    let (transport, peer) = (self.transport.clone(), run.peer);
                    actix::spawn(tracing::Instrument::instrument(
                        async move {
                            if let Err(e) = transport.send(peer, MIGRATION_ACTOR, body).await {
                                crate::telemetry::record_error(&tracing::Span::current(), &e);
                                warn!(error = %e, "migration notice not sent");
                            }
                        },
                        span,
                    ));
                }
                Effect::ScheduleTimeout { at_ms } => {
                    let after = Duration::from_millis(at_ms.saturating_sub(now_ms()));
                    ctx.run_later(after, move |act, ctx| {
                        if let Some(r) = act.running.get_mut(&id) {
                            r.core.handle_timeout(now_ms().max(at_ms));
                        }
                        act.drive(id, ctx);
                    });
                }
                Effect::ResumeAtDestination => {
                    // The image is kept under its vm id: the hash the ledger names.
                    if let Some(vm_id) = run.core.vm_id() {
                        let target = self.dir.join("images").join(vm_id.to_string());
                        let moved = std::fs::create_dir_all(self.dir.join("images"))
                            .and_then(|()| std::fs::rename(&run.image, &target))
                            // Its age counts from now ([`expire_images`]).
                            .and_then(|()| {
                                std::fs::File::options()
                                    .write(true)
                                    .open(&target)?
                                    .set_modified(std::time::SystemTime::now())
                            });
                        match moved {
                            Ok(()) => run.image = target,
                            // Moved before a restart that came before the
                            // store forgot the migration.
                            Err(_) if run.resumed && target.exists() => run.image = target,
                            Err(e) => warn!(error = %e, "received image not kept"),
                        }
                    }
                    info!(parent: &run.span, migration = %id.short(), "image resumed at the destination");
                }
                Effect::ReleaseAtSource => {
                    // An external image file stays where the operator put it;
                    // an instance's provider would drop its copy here.
                    info!(parent: &run.span, migration = %id.short(), "migration completed at the source");
                }
                Effect::ResumeAtSource => {
                    info!(parent: &run.span, migration = %id.short(), "image stays at the source");
                }
                Effect::DiscardImage => {
                    if let Some(t) = run.transfer.take() {
                        t.abort();
                    }
                    if let Err(e) = std::fs::remove_file(&run.image) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            warn!(error = %e, "received image not removed");
                        }
                    }
                }
                Effect::Complete(outcome) => {
                    self.complete(id, outcome);
                    return;
                }
            }
        }
    }

    fn complete(&mut self, id: Hash, outcome: Outcome) {
        let Some(mut run) = self.running.remove(&id) else {
            return;
        };
        if let Some(t) = run.transfer.take() {
            t.abort();
        }
        if run.persisted.is_some() {
            if let Err(e) = self.store.remove(run.core.side(), &id) {
                warn!(migration = %id.short(), error = %ErrorChain(&e), "ended migration not removed from the store");
            }
        }
        // A resumed instance migration's snapshot: the server that wrote it
        // and would have removed it did not survive the restart.
        if run.resumed
            && run.core.side() == Side::Source
            && run.image.starts_with(self.dir.join("outgoing"))
        {
            if let Err(e) = std::fs::remove_file(&run.image) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(error = %e, "outgoing snapshot not removed");
                }
            }
        }
        let span = std::mem::replace(&mut run.span, tracing::Span::none());
        let side = run.core.side();
        let destination = run.core.destination_site().clone();
        let (completed, reason) = match outcome {
            Outcome::Completed => (true, None),
            Outcome::Aborted(r) => (false, Some(r)),
        };
        let report = MigrationReport {
            migration_id: id,
            vm_id: run.core.vm_id().unwrap_or_default(),
            completed,
            reason,
            bytes: run.bytes,
            elapsed_ms: u64::try_from(run.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            records: run.records,
        };
        info!(parent: &span, migration = %id.short(), side = ?side, completed, reason = ?report.reason, elapsed_ms = report.elapsed_ms, "migration ended");
        if !span.is_disabled() {
            span.record("vm.id", tracing::field::display(report.vm_id));
            span.record("bytes", report.bytes);
            span.record("outcome", if completed { "completed" } else { "aborted" });
            if let Some(r) = &report.reason {
                crate::telemetry::record_failure(&span, r);
            }
        }
        if completed && side == Side::Source {
            let scope = scope_of(&self.site, &destination);
            crate::metrics::Metrics::global().migration_delay(scope, report.elapsed_ms as f64);
        }
        if let Some(w) = run.waiter.take() {
            w.answer(Ok(report.clone()));
        }
        for w in self.end_waiters.remove(&id).unwrap_or_default() {
            let _ = w.send(report.clone());
        }
        if self.finished.len() >= FINISHED_MAX {
            self.finished.pop_front();
        }
        self.finished.push_back(report);
    }

    /// Submits `record` for migration `id` through the gateway; `attempt`
    /// counts from 1 (the core's first submission).
    fn submit(&mut self, id: Hash, record: Record, attempt: u32, ctx: &mut Context<Self>) {
        let client = self.ledger.clone();
        let addr = ctx.address();
        // The step's span: the transaction carries its trace id, so the
        // committed record names this migration's trace.
        let span = match self.running.get(&id) {
            Some(run) => crate::telemetry::child_of(&run.span, || {
                tracing::info_span!(
                    parent: &run.span,
                    "migration.submit",
                    record = record.kind(),
                    attempt,
                )
            }),
            None => tracing::Span::none(),
        };
        actix::spawn(tracing::Instrument::instrument(
            async move {
                let tx = client.sign(record.clone());
                let tx_id = tx.id();
                let mut result = client.submit_tx(tx, true).await.map_err(|e| e.to_string());
                if result.is_err() {
                    // It may have committed with its answer lost (a gateway
                    // killed after the commit: the retried request then
                    // finds its nonce used and is refused). Ask the chain,
                    // or the source aborts a migration the ledger announced.
                    if let Ok(Some(c)) = client.transaction(&tx_id).await {
                        result = Ok(Receipt {
                            chain_id: c.proof.header.chain_id.clone(),
                            tx_id,
                            height: c.location.height,
                            proof: Some(Box::new(c.proof)),
                        });
                    }
                }
                if let Err(e) = &result {
                    crate::telemetry::record_failure(&tracing::Span::current(), e);
                }
                addr.do_send(Submitted {
                    migration_id: id,
                    record,
                    result,
                    attempt,
                });
            },
            span,
        ));
    }

    /// Verifies a peer's proof and returns the proven record (a block's
    /// certificate is checked once: later proofs of the same block only
    /// have their inclusion and signature checked).
    fn verified(&mut self, proof: &CrossChainProof) -> Option<Record> {
        let chain = proof.header.chain_id.as_str();
        let set = self.sets.get(chain)?;
        match proof.verify_cached(set, chain, &mut self.certified) {
            Ok(tx) => Some(tx.record().clone()),
            Err(e) => {
                warn!(error = %e, "migration notice with a bad proof ignored");
                None
            }
        }
    }

    /// Destination: a migration to this server, from its first sign (the
    /// transfer header or the indication notice).
    fn destination(
        &mut self,
        id: Hash,
        source: Site,
        destination: Site,
        from: NodeId,
        via_gateway: bool,
    ) -> Result<(), String> {
        let from_gateway = via_gateway && Some(from) == self.gateway;
        if let Some(r) = self.running.get(&id) {
            return if r.core.side() == Side::Destination && (r.peer == from || from_gateway) {
                Ok(())
            } else {
                Err("migration id already in use".into())
            };
        }
        if self.finished.iter().any(|r| r.migration_id == id) {
            return Err("migration already ended".into());
        }
        if self.resuming.contains_key(&id) {
            return Err("migration being resumed after a restart".into());
        }
        if destination != self.site {
            return Err(format!(
                "not the destination {}/{}",
                destination.cloud, destination.server
            ));
        }
        let Some(peer) = self.server_id(&source) else {
            return Err("the source is not a server of the federation".into());
        };
        if peer != from && !from_gateway {
            return Err("the sender is not the source server".into());
        }
        if let Some(e) = self.full() {
            return Err(e.to_string());
        }
        let timeout_ms =
            u64::try_from(self.limits.protocol_timeout.as_millis()).unwrap_or(u64::MAX);
        // Child of the current span: the inbound message's, which continues
        // the source's trace.
        let span = crate::telemetry::sampled_root(|| {
            migration_span(id, "destination", &source, &destination)
        });
        let core = Migration::destination(id, source, destination, now_ms(), timeout_ms);
        let image = self.dir.join("incoming").join(format!("{id}.part"));
        self.running
            .insert(id, Running::new(core, peer, image, span));
        Ok(())
    }

    fn on_transfer(
        &mut self,
        from: NodeId,
        header: &[u8],
        receiver: TransferReceiver,
        ctx: &mut Context<Self>,
    ) {
        let header: TransferHeader = match wire::decode(header) {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "malformed transfer header");
                return receiver.reject();
            }
        };
        if header.bytes > self.limits.image_bytes_max {
            warn!(
                bytes = header.bytes,
                max = self.limits.image_bytes_max,
                "image too large; transfer rejected"
            );
            return receiver.reject();
        }
        let id = header.migration_id;
        if let Err(reason) = self.destination(
            id,
            header.source.clone(),
            header.destination.clone(),
            from,
            false,
        ) {
            warn!(migration = %id.short(), reason, "transfer rejected");
            return receiver.reject();
        }
        let Some(run) = self.running.get_mut(&id) else {
            return;
        };
        if run.transfer.is_some() || run.resumed {
            return receiver.reject();
        }
        run.announced_vm_id = Some(header.vm_id);
        let (path, max, limit, addr) = (
            run.image.clone(),
            self.limits.image_bytes_max,
            self.limits.transfer_timeout,
            ctx.address(),
        );
        let span = crate::telemetry::child_of(&run.span, || {
            tracing::info_span!(
                parent: &run.span,
                "migration.transfer",
                direction = "receive",
                bytes = header.bytes,
                peer = %from.short(),
            )
        });
        run.transfer = Some(actix::spawn(tracing::Instrument::instrument(
            async move {
                let result =
                    match tokio::time::timeout(limit, receive_file(receiver, &path, max)).await {
                        Ok(r) => r,
                        Err(_) => Err(format!("transfer timed out after {} s", limit.as_secs())),
                    };
                if let Err(e) = &result {
                    crate::telemetry::record_failure(&tracing::Span::current(), e);
                }
                addr.do_send(Received {
                    migration_id: id,
                    result,
                });
            },
            span,
        )));
        self.drive(id, ctx);
    }

    fn on_notice(
        &mut self,
        from: NodeId,
        id: Hash,
        notice: Notice<Box<CrossChainProof>>,
        ctx: &mut Context<Self>,
    ) {
        if self.resuming.contains_key(&id) {
            if self.held_notices.len() < HELD_NOTICES_MAX {
                self.held_notices.push((from, id, notice));
            }
            return;
        }
        match notice {
            Notice::IndicationCommitted {
                height,
                vm_id,
                proof,
            } => {
                // Both the source and the gateway tell: a second notice of
                // an indication already recorded changes nothing, so it is
                // not worth verifying.
                if self
                    .running
                    .get(&id)
                    .is_some_and(|r| r.records.iter().any(|(k, _, _)| k == "Indication"))
                {
                    return;
                }
                let Some(Record::Indication {
                    migration_id,
                    vm_id: v,
                    source,
                    destination,
                    ..
                }) = self.verified(&proof)
                else {
                    return;
                };
                if migration_id != id || v != vm_id {
                    warn!(migration = %id.short(), "indication notice does not match its proof");
                    return;
                }
                // Our gateway forwards committed indications too (step 4);
                // one too old to finish in time is ignored.
                let age_ms = now_ms().saturating_sub(proof.header.timestamp_ms);
                let timeout_ms =
                    u64::try_from(self.limits.protocol_timeout.as_millis()).unwrap_or(u64::MAX);
                if Some(from) == self.gateway && age_ms > timeout_ms {
                    return;
                }
                if let Err(reason) = self.destination(id, source, destination, from, true) {
                    warn!(migration = %id.short(), reason, "indication notice ignored");
                    return;
                }
                let chain = proof.header.chain_id.clone();
                if let Some(r) = self.running.get_mut(&id) {
                    // Both the source and the gateway tell: record it once.
                    if r.records.iter().any(|(k, _, _)| k == "Indication") {
                        return;
                    }
                    r.records.push(("Indication".into(), chain, height));
                    r.core.handle_indication_committed(height, vm_id, proof);
                }
            }
            Notice::ConfirmationCommitted {
                accepted,
                reason,
                proof,
            } => {
                let Some(Record::Confirmation {
                    migration_id,
                    accepted: a,
                    ..
                }) = self.verified(&proof)
                else {
                    return;
                };
                let Some(r) = self.running.get_mut(&id) else {
                    return;
                };
                if migration_id != id || a != accepted || r.peer != from {
                    warn!(migration = %id.short(), "confirmation notice does not match");
                    return;
                }
                r.records.push((
                    "Confirmation".into(),
                    proof.header.chain_id.clone(),
                    proof.header.height,
                ));
                r.core
                    .handle_confirmation_committed(accepted, reason, proof);
            }
        }
        self.drive(id, ctx);
    }
}

/// Surviving restarts: the unfinished migrations persisted in the store
/// are resumed from what the chains hold (the decision is the core's,
/// [`Migration::resume`]; here is only the I/O).
impl MigrationActor {
    /// Persists `id`'s progress where a restart needs it; returns whether
    /// it wrote (the effects then wait for the flush, [`Durable`]).
    ///
    /// Two writes per migration, not one per step: the chains hold the
    /// rest, and [`Migration::resume`] re-derives it from them.
    /// - the source, once, before its indication is submitted: a restarted
    ///   source must end every migration it may have announced;
    /// - the destination, once, before its confirmation is submitted: a
    ///   restarted destination must write the `Arrival` its accepting
    ///   confirmation calls for, and keep or discard the image. (Before
    ///   that, a destination that dies leaves nothing to finish: the
    ///   source writes the outcome, and the image is swept at restart.)
    fn persist(&mut self, id: Hash) -> bool {
        let Some(run) = self.running.get_mut(&id) else {
            return false;
        };
        if run.persisted.is_some() {
            return false;
        }
        let Some(progress) = run.core.progress() else {
            return false;
        };
        if progress.side == Side::Destination && progress.confirmation.is_none() {
            return false;
        }
        let saved = SavedMigration {
            progress,
            image: run.image.clone(),
            bytes: run.bytes,
            announced_vm_id: run.announced_vm_id,
        };
        match self.store.put_unflushed(&saved) {
            Ok(()) => {
                run.persisted = Some(saved.progress);
                true
            }
            // Carried on: the migration still runs, only a restart would
            // lose it (as before the store existed).
            Err(e) => {
                warn!(migration = %id.short(), error = %ErrorChain(&e), "migration progress not persisted");
                false
            }
        }
    }

    /// Starts a flush of the written progress unless one runs (on the
    /// blocking pool, not the actor's thread); [`Durable`] releases the
    /// migrations it covered.
    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing.is_some() || self.unflushed.is_empty() {
            return;
        }
        self.flushing = Some(std::mem::take(&mut self.unflushed));
        let flush = self.store.flusher();
        let addr = ctx.address();
        actix::spawn(async move {
            let result = match tokio::task::spawn_blocking(flush).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            addr.do_send(Durable { result });
        });
    }

    /// Fault injection: whether `id` just reached the [`HaltAt`] point (it
    /// is then frozen there, its progress persisted).
    fn halt_here(&mut self, id: Hash) -> bool {
        let Some(halt) = &self.halt_after else {
            return false;
        };
        let Some(run) = self.running.get_mut(&id) else {
            return false;
        };
        // Where the core stands now (what was persisted may be older: the
        // chains hold the rest, as after a real crash).
        let Some(p) = run.core.progress() else {
            return false;
        };
        let hit = match halt.step {
            HaltStep::Indicated => p.side == Side::Source && p.indication.is_some(),
            HaltStep::Ending => p.ending,
        };
        if !hit {
            return false;
        }
        run.halted = true;
        if let Some(t) = run.transfer.take() {
            t.abort();
        }
        warn!(migration = %id.short(), step = ?halt.step, "migration halted (fault injection)");
        if let Some(halt) = self.halt_after.take() {
            let _ = halt.tx.send(id);
        }
        true
    }

    /// Asks the chains what committed about each migration read from the
    /// store, then resumes it ([`Resumed`]); retried while the gateway
    /// cannot answer.
    fn resume_all(&mut self, ctx: &mut Context<Self>) {
        let ids: Vec<Hash> = self.resuming.keys().copied().collect();
        for id in ids {
            self.ask_chains(id, None, Duration::from_millis(250), ctx);
        }
    }

    /// Asks the chains about migration `id` (being resumed, or running
    /// and `recheck`ing after a refused submission).
    fn ask_chains(
        &mut self,
        id: Hash,
        recheck: Option<String>,
        pause: Duration,
        ctx: &mut Context<Self>,
    ) {
        let vm_id = match (self.resuming.get(&id), self.running.get(&id)) {
            (Some(s), _) => s.progress.vm_id.or(s.announced_vm_id),
            (None, Some(r)) => r.core.vm_id().or(r.announced_vm_id),
            (None, None) => return,
        };
        let client = self.ledger.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            let result = match vm_id {
                Some(vm_id) => committed(&client, id, vm_id).await,
                // Nothing can have committed without a vm id known to us.
                None => Ok(Committed::default()),
            };
            addr.do_send(ChainsAnswered {
                migration_id: id,
                result,
                recheck,
                pause,
            });
        });
    }

    /// Resumes migration `id` from the store given what committed.
    fn resume(
        &mut self,
        id: Hash,
        committed: Committed<Box<CrossChainProof>>,
        ctx: &mut Context<Self>,
    ) {
        let Some(saved) = self.resuming.remove(&id) else {
            return;
        };
        let p = saved.progress.clone();
        let (side_name, other) = match p.side {
            Side::Source => ("source", &p.destination),
            Side::Destination => ("destination", &p.source),
        };
        let Some(peer) = self.server_id(other) else {
            warn!(migration = %id.short(), "resumed migration names no server; forgotten");
            let _ = self.store.remove(p.side, &id);
            // Its held notices go with it (they would keep a slot of the
            // shared bound for good).
            self.held_notices.retain(|(_, m, _)| *m != id);
            return;
        };
        let records = committed_records(&committed);
        let span = crate::telemetry::sampled_root(|| {
            migration_span(id, side_name, &p.source, &p.destination)
        });
        info!(parent: &span, migration = %id.short(), side = side_name,
            indication = committed.indication.is_some(),
            confirmation = ?committed.confirmation.as_ref().map(|c| c.0),
            "resuming a migration after a restart");
        let core = Migration::resume(p, committed, now_ms());
        self.running.insert(
            id,
            Running {
                bytes: saved.bytes,
                records,
                persisted: Some(saved.progress),
                announced_vm_id: saved.announced_vm_id,
                resumed: true,
                ..Running::new(core, peer, saved.image, span)
            },
        );
        self.drive(id, ctx);
        // Notices that arrived meanwhile.
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_notices)
            .into_iter()
            .partition(|(_, m, _)| *m == id);
        self.held_notices = rest;
        for (from, id, notice) in mine {
            self.on_notice(from, id, notice, ctx);
        }
    }

    /// A running migration learns what the chains hold after one of its
    /// submissions was refused: the other side's confirmation won, or a
    /// resumed side's record had committed before the restart.
    fn rechecked(
        &mut self,
        id: Hash,
        committed: Committed<Box<CrossChainProof>>,
        refusal: String,
        ctx: &mut Context<Self>,
    ) {
        let Some(run) = self.running.get_mut(&id) else {
            return;
        };
        for record in committed_records(&committed) {
            if !run.records.iter().any(|(kind, _, _)| *kind == record.0) {
                run.records.push(record);
            }
        }
        run.core.handle_chains_answered(committed, &refusal);
        self.drive(id, ctx);
    }
}

/// What the chains this server's gateway follows hold about migration
/// `id` of `vm_id`: each record proven (the client checks every proof
/// against the chain's validator set).
async fn committed(
    client: &LedgerClient,
    id: Hash,
    vm_id: Hash,
) -> Result<Committed<Box<CrossChainProof>>, String> {
    let history = client.vm_history(&vm_id).await.map_err(|e| e.to_string())?;
    if history.truncated {
        warn!(migration = %id.short(), vm = %vm_id.short(), "vm history truncated; resuming from what it shows");
    }
    let mut out = Committed::default();
    for r in history.records {
        match &r.record {
            Record::Indication { migration_id, .. }
                if *migration_id == id && out.indication.is_none() =>
            {
                let proof = proof_of(client, &r.tx_id).await?;
                out.indication = Some((r.height, vm_id, proof));
            }
            Record::Confirmation {
                migration_id,
                accepted,
                reason,
                ..
            } if *migration_id == id && out.confirmation.is_none() => {
                let proof = proof_of(client, &r.tx_id).await?;
                out.confirmation = Some((*accepted, reason.clone(), proof));
            }
            Record::Leave { migration_id, .. } if *migration_id == id => out.leave = true,
            Record::Arrival { migration_id, .. } if *migration_id == id => out.arrival = true,
            _ => {}
        }
    }
    Ok(out)
}

/// The records `committed` holds as a [`MigrationReport`] lists them
/// (kind, chain, height).
fn committed_records(c: &Committed<Box<CrossChainProof>>) -> Vec<(String, String, u64)> {
    let mut records = Vec::new();
    if let Some((height, _, proof)) = &c.indication {
        records.push(("Indication".into(), proof.header.chain_id.clone(), *height));
    }
    if let Some((_, _, proof)) = &c.confirmation {
        records.push((
            "Confirmation".into(),
            proof.header.chain_id.clone(),
            proof.header.height,
        ));
    }
    records
}

/// The inclusion proof of committed transaction `tx_id`.
async fn proof_of(
    client: &LedgerClient,
    tx_id: &federact_ledger::tx::TxId,
) -> Result<Box<CrossChainProof>, String> {
    match client.transaction(tx_id).await {
        Ok(Some(c)) => Ok(Box::new(c.proof)),
        Ok(None) => Err(format!(
            "transaction {} listed but not found",
            tx_id.short()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes the kept images (files in `images`) older than `max_age` at
/// `now`: images of completed migrations that nobody adopted. Returns how
/// many it removed; a directory that cannot be read is left alone.
fn expire_images(images: &Path, max_age: Duration, now: std::time::SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(images) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        // Only files named by a vm id: this server wrote them.
        let name = entry.file_name();
        if name.to_str().and_then(Hash::from_hex).is_none() {
            continue;
        }
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if now.duration_since(modified).unwrap_or_default() < max_age {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(error = %e, file = %entry.path().display(), "expired image not removed")
            }
        }
    }
    if removed > 0 {
        info!(
            removed,
            max_age_s = max_age.as_secs(),
            "unadopted received images expired"
        );
    }
    removed
}

/// Removes the received images (`ID.part`) in `incoming` whose migration
/// `keep` does not name: those of migrations that ended while their
/// transfer was being written (an aborted transfer task can still create
/// its file after the discard) or that a crash interrupted. Returns how
/// many it removed; a directory that cannot be read is left alone.
fn sweep_incoming(incoming: &Path, keep: impl Fn(&Hash) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(incoming) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".part")) else {
            continue;
        };
        if Hash::from_hex(id).is_some_and(|id| keep(&id)) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(error = %e, file = %entry.path().display(), "stale received image not removed")
            }
        }
    }
    if removed > 0 {
        info!(removed, "stale received images removed");
    }
    removed
}

/// sha256 and size of a file, read in chunks; refuses files over `max`.
pub async fn hash_file(path: &Path, max: u64) -> Result<(Hash, u64), MigrationError> {
    let io = |e: std::io::Error| MigrationError::Image {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    if len > max {
        return Err(MigrationError::ImageTooLarge { bytes: len, max });
    }
    let mut hasher = Hasher::new();
    // No bigger than the file (plus one byte to see its end in one read):
    // a zeroed megabyte per small image cost more than hashing it.
    let mut buf = vec![0u8; chunk_for(len)];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            return Err(MigrationError::ImageTooLarge { bytes: total, max });
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok((hasher.finish(), total))
}

/// The read buffer for a file of `len` bytes: [`CHUNK_BYTES`] at most,
/// one byte more than the file below it (the extra byte lets one read
/// see the end, and a file that grew since is still read in full).
fn chunk_for(len: u64) -> usize {
    usize::try_from(len.saturating_add(1))
        .unwrap_or(CHUNK_BYTES)
        .clamp(1, CHUNK_BYTES)
}

/// Streams `image` to `peer`; with `tamper`, flips the first byte in transit.
async fn send_file(
    transport: &Transport,
    peer: NodeId,
    header: TransferHeader,
    image: &Path,
    tamper: bool,
) -> Result<u64, String> {
    let mut file = tokio::fs::File::open(image)
        .await
        .map_err(|e| e.to_string())?;
    let chunk = chunk_for(header.bytes);
    let mut sender = transport
        .open_transfer(peer, MIGRATION_ACTOR, wire::encode(&header))
        .await
        .map_err(|e| e.to_string())?;
    let mut first = true;
    loop {
        let mut buf = BytesMut::zeroed(chunk);
        let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if first && tamper {
            if let Some(b) = buf.first_mut() {
                *b ^= 0x01;
            }
        }
        first = false;
        sender
            .write_chunk(buf.freeze())
            .await
            .map_err(|e| e.to_string())?;
    }
    sender.finish().await.map_err(|e| e.to_string())
}

/// Receives an image into `path`, hashing as it arrives; at most `max` bytes.
async fn receive_file(
    mut receiver: TransferReceiver,
    path: &Path,
    max: u64,
) -> Result<(Hash, u64), String> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| e.to_string())?;
    let mut hasher = Hasher::new();
    let mut total = 0u64;
    loop {
        let chunk: Option<Bytes> = receiver
            .chunk(CHUNK_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let Some(chunk) = chunk else { break };
        total += chunk.len() as u64;
        if total > max {
            receiver.reject();
            return Err(format!("image exceeds the maximum of {max} bytes"));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    file.flush().await.map_err(|e| e.to_string())?;
    file.sync_all().await.map_err(|e| e.to_string())?;
    Ok((hasher.finish(), total))
}

impl Actor for MigrationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        if let Some(inbox) = self.inbox.take() {
            ctx.add_stream(crate::inbox_stream(inbox));
        }
        ctx.run_interval(SWEEP_EVERY, |act, _| {
            sweep_incoming(&act.dir.join("incoming"), |id| {
                act.running.contains_key(id) || act.resuming.contains_key(id)
            });
        });
        // Kept images live for hours: a scan of the directory every 1/24th
        // of their age (within [`SWEEP_EVERY`] and an hour) is enough.
        let expire_every =
            (self.limits.kept_image_max_age / 24).clamp(SWEEP_EVERY, Duration::from_secs(3600));
        ctx.run_interval(expire_every, |act, _| {
            expire_images(
                &act.dir.join("images"),
                act.limits.kept_image_max_age,
                std::time::SystemTime::now(),
            );
        });
        if !self.resuming.is_empty() {
            info!(
                migrations = self.resuming.len(),
                "resuming unfinished migrations"
            );
            self.resume_all(ctx);
        }
        info!(server = %self.site.server, "migration actor started");
    }
}

impl StreamHandler<Incoming> for MigrationActor {
    fn handle(&mut self, item: Incoming, ctx: &mut Context<Self>) {
        // A traced sender's message is handled in a span continuing its
        // trace: a destination's `migration` span opens as its child.
        let span = if item.trace().is_empty() {
            tracing::Span::none()
        } else {
            crate::telemetry::continue_trace(
                tracing::info_span!(
                    "migration.inbound",
                    kind = match &item {
                        Incoming::Request { .. } => "request",
                        Incoming::OneWay { .. } => "notice",
                        Incoming::Transfer { .. } => "transfer",
                    },
                    peer = %item.from().short(),
                ),
                item.trace(),
            )
        };
        let _entered = span.enter();
        match item {
            Incoming::Request {
                from,
                body,
                responder,
                ..
            } => match wire::decode::<MigrationRequest>(&body) {
                Ok(MigrationRequest::MigrateImage {
                    image,
                    destination,
                    tamper,
                }) => match self.may_order_migrations(&from) {
                    Ok(()) => self.start(
                        PathBuf::from(image),
                        destination,
                        tamper,
                        Waiter::Remote(responder),
                        None,
                        ctx,
                    ),
                    Err(reason) => {
                        warn!(peer = %from.short(), %reason, "image migration refused");
                        let body = wire::encode(&MigrationResponse::Failed(reason));
                        actix::spawn(async move {
                            let _ = responder.respond(body).await;
                        });
                    }
                },
                Ok(MigrationRequest::Outcome { migration_id }) => {
                    let answer = match self.finished_report(&migration_id) {
                        Some(r) => MigrationResponse::Done(r),
                        None => MigrationResponse::Unknown,
                    };
                    let body = wire::encode(&answer);
                    actix::spawn(async move {
                        let _ = responder.respond(body).await;
                    });
                }
                Err(e) => {
                    let msg = format!("malformed request: {e}");
                    actix::spawn(async move {
                        let _ = responder.fail(&msg).await;
                    });
                }
            },
            Incoming::OneWay { from, body, .. } => match wire::decode::<MigrationOneWay>(&body) {
                Ok(MigrationOneWay::Notice {
                    migration_id,
                    notice,
                }) => self.on_notice(from, migration_id, notice, ctx),
                Err(e) => warn!(error = %e, "malformed migration message"),
            },
            Incoming::Transfer {
                from,
                header,
                receiver,
                ..
            } => self.on_transfer(from, &header, receiver, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Starts migrating an image file on this server (the source) to
/// `destination`; answers when the migration completes or aborts.
#[derive(Message)]
#[rtype(result = "Result<MigrationReport, MigrationError>")]
pub struct StartMigration {
    /// The image file on this server.
    pub image: PathBuf,
    /// The destination server.
    pub destination: Site,
    /// Test hook: flip one byte of the image in transit.
    pub tamper: bool,
}

impl Handler<StartMigration> for MigrationActor {
    type Result = ResponseFuture<Result<MigrationReport, MigrationError>>;
    fn handle(&mut self, msg: StartMigration, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.start(
            msg.image,
            msg.destination,
            msg.tamper,
            Waiter::Local(tx),
            None,
            ctx,
        );
        Box::pin(async move {
            rx.await.unwrap_or(Err(MigrationError::Request {
                detail: "migration actor stopped".into(),
            }))
        })
    }
}

/// The recently finished migration `migration_id` on this server, if any.
#[derive(Message)]
#[rtype(result = "Option<MigrationReport>")]
pub struct MigrationOutcome(pub Hash);

impl Handler<MigrationOutcome> for MigrationActor {
    type Result = Option<MigrationReport>;
    fn handle(&mut self, msg: MigrationOutcome, _: &mut Context<Self>) -> Self::Result {
        self.finished_report(&msg.0)
    }
}

/// Starts migrating a function instance's snapshot file (written by its
/// server, [`instance_image`]) under a migration id chosen by the
/// orchestrator, so the orchestrator can ask the destination about the
/// migration even if this server dies meanwhile. Answers like
/// [`StartMigration`].
#[derive(Message)]
#[rtype(result = "Result<MigrationReport, MigrationError>")]
pub struct MigrateSnapshot {
    /// The migration id (refused if already used on this server).
    pub migration_id: Hash,
    /// The snapshot file.
    pub image: PathBuf,
    /// The destination server.
    pub destination: Site,
    /// Test hook: flip one byte of the image in transit.
    pub tamper: bool,
}

impl Handler<MigrateSnapshot> for MigrationActor {
    type Result = ResponseFuture<Result<MigrationReport, MigrationError>>;
    fn handle(&mut self, msg: MigrateSnapshot, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.start(
            msg.image,
            msg.destination,
            msg.tamper,
            Waiter::Local(tx),
            Some(msg.migration_id),
            ctx,
        );
        Box::pin(async move {
            rx.await.unwrap_or(Err(MigrationError::Request {
                detail: "migration actor stopped".into(),
            }))
        })
    }
}

/// Whether migration `0` is running on this server (`Some(None)`), ended
/// (`Some(Some(report))`) or unknown here (`None`).
#[derive(Message)]
#[rtype(result = "Option<Option<MigrationReport>>")]
pub struct MigrationProgress(pub Hash);

impl Handler<MigrationProgress> for MigrationActor {
    type Result = Option<Option<MigrationReport>>;
    fn handle(&mut self, msg: MigrationProgress, _: &mut Context<Self>) -> Self::Result {
        if self.running.contains_key(&msg.0) || self.resuming.contains_key(&msg.0) {
            return Some(None);
        }
        self.finished_report(&msg.0).map(Some)
    }
}

/// How migration `0` ended on this server, waiting while it runs:
/// `Some(report)` once it ended (at once if it already had), `None` if
/// this server does not know it or too many already wait for it.
#[derive(Message)]
#[rtype(result = "Option<MigrationReport>")]
pub struct MigrationEnded(pub Hash);

impl Handler<MigrationEnded> for MigrationActor {
    type Result = ResponseFuture<Option<MigrationReport>>;
    fn handle(&mut self, msg: MigrationEnded, _: &mut Context<Self>) -> Self::Result {
        let id = msg.0;
        if !self.running.contains_key(&id) && !self.resuming.contains_key(&id) {
            let done = self.finished_report(&id);
            return Box::pin(async move { done });
        }
        let waiters = self.end_waiters.entry(id).or_default();
        waiters.retain(|w| !w.is_closed());
        if waiters.len() >= END_WAITERS_MAX {
            return Box::pin(async { None });
        }
        let (tx, rx) = oneshot::channel();
        waiters.push(tx);
        Box::pin(async move { rx.await.ok() })
    }
}

/// Fault injection for tests and drills: when set, this server (as a
/// source) does not send the destination the committed indication's
/// notice, as if it died right after the indication committed; the
/// destination must learn of it from its gateway following the chain.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SilenceIndicationNotices(pub bool);

impl Handler<SilenceIndicationNotices> for MigrationActor {
    type Result = ();
    fn handle(&mut self, msg: SilenceIndicationNotices, _: &mut Context<Self>) {
        self.silence_indication_notices = msg.0;
    }
}

/// A fault-injection point ([`HaltAt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltStep {
    /// Source: its indication committed (persisted with it).
    Indicated,
    /// The accepting confirmation committed and `Leave` / `Arrival` is
    /// about to be submitted (persisted as such).
    Ending,
}

/// An armed [`HaltAt`].
struct HaltAfter {
    step: HaltStep,
    tx: oneshot::Sender<Hash>,
}

/// Fault injection for tests and drills: the next migration on this server
/// that reaches `0` is frozen there right after its progress is persisted
/// (nothing more is carried out for it, as if the server died at that
/// instant); the receiver gets its id. Stop and restart the node to see it
/// resumed.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<Hash>")]
pub struct HaltAt(pub HaltStep);

impl Handler<HaltAt> for MigrationActor {
    type Result = MessageResult<HaltAt>;
    fn handle(&mut self, msg: HaltAt, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.halt_after = Some(HaltAfter { step: msg.0, tx });
        MessageResult(rx)
    }
}

/// A migration's progress reached the disk (or could not).
#[derive(Message)]
#[rtype(result = "()")]
struct Durable {
    result: Result<(), String>,
}

impl Handler<Durable> for MigrationActor {
    type Result = ();
    fn handle(&mut self, msg: Durable, ctx: &mut Context<Self>) {
        if let Err(e) = msg.result {
            // Carried on, as for a failed write.
            warn!(error = %e, "migration progress not flushed");
        }
        for id in self.flushing.take().unwrap_or_default() {
            if let Some(run) = self.running.get_mut(&id) {
                run.flushing = false;
                self.drive(id, ctx);
            }
        }
        self.start_flush(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct ChainsAnswered {
    migration_id: Hash,
    result: Result<Committed<Box<CrossChainProof>>, String>,
    /// `Some(refusal)`: a running migration rechecks; `None`: resumption.
    recheck: Option<String>,
    /// The pause before asking again if the chains did not answer.
    pause: Duration,
}

impl Handler<ChainsAnswered> for MigrationActor {
    type Result = ();
    fn handle(&mut self, msg: ChainsAnswered, ctx: &mut Context<Self>) {
        let id = msg.migration_id;
        match (msg.result, msg.recheck) {
            (Ok(c), None) => self.resume(id, c, ctx),
            (Ok(c), Some(refusal)) => self.rechecked(id, c, refusal, ctx),
            (Err(e), recheck) => {
                warn!(migration = %id.short(), error = %e, "chains not asked; retrying");
                let pause = msg.pause.max(Duration::from_millis(250));
                ctx.run_later(pause, move |act, ctx| {
                    act.ask_chains(id, recheck, (pause * 2).min(RESUME_RETRY_MAX), ctx)
                });
            }
        }
    }
}

/// Where a completed incoming migration's image is kept on this server.
#[derive(Message)]
#[rtype(result = "PathBuf")]
pub struct ImagePath(pub Hash);

impl Handler<ImagePath> for MigrationActor {
    type Result = MessageResult<ImagePath>;
    fn handle(&mut self, msg: ImagePath, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.dir.join("images").join(msg.0.to_string()))
    }
}

impl Handler<crate::node::Shutdown> for MigrationActor {
    type Result = ();
    fn handle(&mut self, _: crate::node::Shutdown, ctx: &mut Context<Self>) {
        for run in self.running.values_mut() {
            if let Some(t) = run.transfer.take() {
                t.abort();
            }
            // A partly received image is of no use to anyone: a transfer
            // cannot resume after a restart. A whole one is kept for the
            // resumed migration.
            let whole = run.core.progress().is_some_and(|p| {
                !matches!(
                    p.received,
                    federact_ledger::migration::ReceivedImage::Pending
                )
            });
            if run.core.side() == Side::Destination
                && !whole
                && run.image.extension().is_some_and(|e| e == "part")
            {
                let _ = std::fs::remove_file(&run.image);
            }
        }
        ctx.stop();
    }
}

/// The file format of a function instance's image: a magic line, the
/// function name and instance key (length-prefixed), then the state bytes
/// [`crate::Function::snapshot`] returned. The migration protocol hashes
/// and verifies the whole file; the destination checks the names before it
/// restores.
pub mod instance_image {
    use std::path::Path;

    const MAGIC: &[u8; 20] = b"federact-instance/1\n";

    /// Writes the image of instance (`name`, `key`) with `state` to `path`
    /// (fsynced).
    pub fn write(path: &Path, name: &str, key: &str, state: &[u8]) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(MAGIC.len() + 8 + name.len() + key.len() + state.len());
        bytes.extend_from_slice(MAGIC);
        for part in [name.as_bytes(), key.as_bytes()] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(part);
        }
        bytes.extend_from_slice(state);
        crate::function::write_atomic(path, &bytes)
    }

    /// Splits an image into (name, key, state); `Err` says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<(String, String, &[u8]), String> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not an instance image")?;
        let mut rest = rest;
        let mut parts = Vec::with_capacity(2);
        for field in ["name", "key"] {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| format!("truncated before the {field}"))?;
            let len = u32::from_be_bytes(*len) as usize;
            if len > tail.len() || len > 1024 {
                return Err(format!("bad {field} length {len}"));
            }
            let (part, tail) = tail.split_at(len);
            let part = std::str::from_utf8(part).map_err(|_| format!("{field} is not UTF-8"))?;
            parts.push(part.to_string());
            rest = tail;
        }
        let key = parts.pop().unwrap_or_default();
        let name = parts.pop().unwrap_or_default();
        Ok((name, key, rest))
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct SnapshotDone {
    migration_id: Hash,
    result: Result<(Hash, u64), MigrationError>,
}

impl Handler<SnapshotDone> for MigrationActor {
    type Result = ();
    fn handle(&mut self, msg: SnapshotDone, ctx: &mut Context<Self>) {
        let id = msg.migration_id;
        let Some(run) = self.running.get_mut(&id) else {
            return;
        };
        match msg.result {
            Ok((vm_id, bytes)) => {
                run.bytes = bytes;
                run.core.handle_snapshot_taken(vm_id, now_ms());
            }
            Err(e) => {
                // A start failure, not a protocol outcome: answer with the error.
                if let Some(w) = run.waiter.take() {
                    w.answer(Err(e.clone()));
                }
                run.core.handle_snapshot_failed(&e.to_string());
            }
        }
        self.drive(id, ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct TransferDone {
    migration_id: Hash,
    result: Result<u64, String>,
}

impl Handler<TransferDone> for MigrationActor {
    type Result = ();
    fn handle(&mut self, msg: TransferDone, ctx: &mut Context<Self>) {
        let id = msg.migration_id;
        let Some(run) = self.running.get_mut(&id) else {
            return;
        };
        run.transfer = None;
        match (msg.result, run.core.vm_id()) {
            (Ok(bytes), Some(vm_id)) => run.core.handle_transfer_finished(vm_id, bytes),
            (Ok(_), None) => run.core.handle_transfer_failed("no vm id"),
            (Err(e), _) => {
                warn!(migration = %id.short(), error = %e, "image transfer failed");
                run.core.handle_transfer_failed(&e)
            }
        }
        self.drive(id, ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Received {
    migration_id: Hash,
    result: Result<(Hash, u64), String>,
}

impl Handler<Received> for MigrationActor {
    type Result = ();
    fn handle(&mut self, msg: Received, ctx: &mut Context<Self>) {
        let id = msg.migration_id;
        let Some(run) = self.running.get_mut(&id) else {
            return;
        };
        run.transfer = None;
        match msg.result {
            Ok((observed, bytes)) => {
                run.bytes = bytes;
                run.core.handle_transfer_finished(observed, bytes);
            }
            Err(e) => {
                warn!(migration = %id.short(), error = %e, "image reception failed");
                run.core.handle_transfer_failed(&e);
            }
        }
        self.drive(id, ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Submitted {
    migration_id: Hash,
    record: Record,
    result: Result<Receipt, String>,
    attempt: u32,
}

impl Handler<Submitted> for MigrationActor {
    type Result = ();
    fn handle(&mut self, msg: Submitted, ctx: &mut Context<Self>) {
        let id = msg.migration_id;
        let Some(run) = self.running.get_mut(&id) else {
            return;
        };
        let kind = msg.record.kind();
        let receipt = match msg.result {
            Ok(Receipt {
                proof: Some(proof),
                chain_id,
                height,
                ..
            }) => {
                run.records.push((kind.to_string(), chain_id, height));
                Ok(proof)
            }
            Ok(_) => Err("receipt without a proof".to_string()),
            Err(e) => Err(e),
        };
        match (msg.record, receipt) {
            (Record::Indication { vm_id, .. }, Ok(proof)) => {
                let height = proof.header.height;
                run.core.handle_indication_committed(height, vm_id, proof)
            }
            // A resubmitted indication (or a resumed source's) may have
            // been refused as a duplicate of one that committed (the chain
            // keeps one per migration): ask the chains.
            (Record::Indication { .. }, Err(e))
                if is_refusal(&e) && (run.resumed || msg.attempt > 1) =>
            {
                warn!(migration = %id.short(), error = %e, "resubmitted indication refused; asking the chains");
                return self.ask_chains(id, Some(e), Duration::ZERO, ctx);
            }
            (Record::Indication { .. }, Err(e)) if is_refusal(&e) => {
                run.core.handle_indication_refused(&e)
            }
            // No answer: it may still commit, so the source submits it
            // again rather than abort (the core decides; see
            // `handle_indication_unknown`).
            (record @ Record::Indication { .. }, Err(e)) => {
                if run.core.handle_indication_unknown() {
                    let attempt = msg.attempt + 1;
                    let pause = (INDICATION_RETRY_FIRST * attempt).min(INDICATION_RETRY_MAX);
                    warn!(migration = %id.short(), error = %e, attempt, "indication's fate unknown; submitting it again");
                    ctx.run_later(pause, move |act, ctx| {
                        if act.running.contains_key(&id) {
                            act.submit(id, record, attempt, ctx)
                        }
                    });
                }
            }
            (
                Record::Confirmation {
                    accepted, reason, ..
                },
                Ok(proof),
            ) => run
                .core
                .handle_confirmation_committed(accepted, reason, proof),
            (Record::Leave { .. }, Ok(_)) => run.core.handle_leave_committed(),
            (Record::Arrival { .. }, Ok(_)) => run.core.handle_arrival_committed(),
            // A refused confirmation lost to the other side's (its notice
            // decides); other failures (gateway unreachable) are retried.
            (
                record @ (Record::Confirmation { .. }
                | Record::Leave { .. }
                | Record::Arrival { .. }),
                Err(e),
            ) => {
                warn!(migration = %id.short(), record = kind, error = %e, attempt = msg.attempt, "submission failed");
                if is_refusal(&e) {
                    // The other side's confirmation won, or the record
                    // committed before a restart: the chains say which.
                    return self.ask_chains(id, Some(e), Duration::ZERO, ctx);
                }
                if msg.attempt < SUBMIT_ATTEMPTS {
                    let attempt = msg.attempt + 1;
                    ctx.run_later(Duration::from_millis(500), move |act, ctx| {
                        act.submit(id, record, attempt, ctx)
                    });
                }
            }
            (other, _) => warn!(record = other.kind(), "unexpected migration submission"),
        }
        self.drive(id, ctx);
    }
}

/// Whether a submission's error is the gateway's refusal (an answer)
/// rather than no answer at all (unreachable, timed out).
fn is_refusal(error: &str) -> bool {
    error.starts_with("refused")
}

/// Migrates the image file `image` (a path on the source server's disk)
/// from server `source` to `destination`, asking the source's migration
/// actor over QUIC (`federact migrate`). Waits up to `timeout`.
pub async fn migrate_image(
    transport: &Transport,
    source: NodeId,
    image: &str,
    destination: Site,
    timeout: Duration,
) -> Result<MigrationReport, MigrationError> {
    request_migration(transport, source, image, destination, false, timeout).await
}

/// [`migrate_image`] with the test hook `tamper`: the source flips one
/// byte of the image in transit, so the destination must reject it (the
/// demo and fault tests show the rejection on the ledger).
pub async fn request_migration(
    transport: &Transport,
    source: NodeId,
    image: &str,
    destination: Site,
    tamper: bool,
    timeout: Duration,
) -> Result<MigrationReport, MigrationError> {
    let body = wire::encode(&MigrationRequest::MigrateImage {
        image: image.to_string(),
        destination,
        tamper,
    });
    let reply = transport
        .request(source, MIGRATION_ACTOR, body, timeout)
        .await
        .map_err(|e| MigrationError::Request {
            detail: e.to_string(),
        })?;
    match wire::decode::<MigrationResponse>(&reply) {
        Ok(MigrationResponse::Done(r)) => Ok(r),
        Ok(MigrationResponse::Failed(reason)) => Err(MigrationError::Refused { reason }),
        Ok(MigrationResponse::Unknown) => Err(MigrationError::Request {
            detail: "unexpected answer".into(),
        }),
        Err(e) => Err(MigrationError::Request {
            detail: e.to_string(),
        }),
    }
}

/// How migration `migration_id` ended on `server` (source or
/// destination), if it ended there recently; `None` while it runs.
pub async fn migration_outcome(
    transport: &Transport,
    server: NodeId,
    migration_id: Hash,
    timeout: Duration,
) -> Result<Option<MigrationReport>, MigrationError> {
    let body = wire::encode(&MigrationRequest::Outcome { migration_id });
    let reply = transport
        .request(server, MIGRATION_ACTOR, body, timeout)
        .await
        .map_err(|e| MigrationError::Request {
            detail: e.to_string(),
        })?;
    match wire::decode::<MigrationResponse>(&reply) {
        Ok(MigrationResponse::Done(r)) => Ok(Some(r)),
        Ok(MigrationResponse::Unknown) => Ok(None),
        Ok(MigrationResponse::Failed(reason)) => Err(MigrationError::Refused { reason }),
        Err(e) => Err(MigrationError::Request {
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn image_hash_is_sha256_and_size_limit_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let data: Vec<u8> = (0..(3 * CHUNK_BYTES + 17)).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (h, n) = hash_file(&path, u64::MAX).await.unwrap();
        assert_eq!((h, n), (Hash::of(&data), data.len() as u64));
        let max = 1000;
        assert_eq!(
            hash_file(&path, max).await,
            Err(MigrationError::ImageTooLarge {
                bytes: data.len() as u64,
                max
            })
        );
        let missing = hash_file(&dir.path().join("nope"), max).await;
        assert!(
            matches!(missing, Err(MigrationError::Image { .. })),
            "{missing:?}"
        );
    }

    #[test]
    fn instance_image_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        instance_image::write(&path, "counter", "user-1", b"state").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            instance_image::parse(&bytes).unwrap(),
            (
                "counter".to_string(),
                "user-1".to_string(),
                b"state".as_slice()
            )
        );
        assert!(instance_image::parse(b"qcow2...").is_err());
        let truncated = &bytes[..22];
        assert!(instance_image::parse(truncated).is_err());
        let mut long = bytes[..20].to_vec();
        long.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(instance_image::parse(&long).is_err());
    }

    #[test]
    fn kept_images_nobody_adopts_expire_after_their_age_and_other_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path();
        let old = images.join(Hash::of(b"old").to_string());
        let fresh = images.join(Hash::of(b"fresh").to_string());
        let foreign = images.join("operator-notes.txt");
        for f in [&old, &fresh, &foreign] {
            std::fs::write(f, b"image").unwrap();
        }
        let now = std::time::SystemTime::now();
        let hour = Duration::from_secs(3600);
        for f in [&old, &foreign] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(now - 2 * hour)
                .unwrap();
        }
        assert_eq!(expire_images(images, hour, now), 1);
        assert!(!old.exists(), "an image past its age is removed");
        assert!(fresh.exists(), "a younger image stays");
        assert!(foreign.exists(), "a file this server did not write stays");
        // Once older than the age, the younger one goes too.
        assert_eq!(expire_images(images, hour, now + 2 * hour), 1);
        assert!(!fresh.exists());
        assert_eq!(expire_images(&images.join("missing"), hour, now), 0);
    }

    #[test]
    fn limit_errors_say_what_was_exceeded() {
        let e = MigrationError::TooManyMigrations {
            server: "c1-server-1".into(),
            max: 16,
        };
        assert_eq!(
            e.to_string(),
            "too many concurrent migrations on c1-server-1 (max 16)"
        );
        let e = MigrationError::ImageTooLarge { bytes: 20, max: 10 };
        assert_eq!(e.to_string(), "image of 20 bytes exceeds the maximum of 10");
    }
}
