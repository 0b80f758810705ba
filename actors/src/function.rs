//! Serverless functions: the [`Function`] trait users implement, the
//! [`FunctionRegistry`] a node is started with, and the per-instance actor
//! that runs one instance's calls one at a time, in order.
//!
//! Instances are virtual (Orleans/Dapr style): a caller names a function
//! and an instance key and never creates or finds the instance; the
//! orchestrator places it on first call and the hosting server deactivates
//! it when idle, keeping its [`Function::snapshot`] so the next activation
//! continues from it ([`Function::restore`]).
//!
//! # Snapshot / restore (also the migration interface)
//! [`Snapshot`] asks a running [`InstanceActor`] for its state after every
//! call queued before it; [`FunctionRegistry::activate`] builds an instance
//! from such bytes. Moving an instance = `Snapshot`, stop, ship the bytes,
//! `activate(name, Some(bytes))` on the destination.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Longest function name.
pub const FUNCTION_NAME_MAX: usize = 32;
/// Longest instance key.
pub const INSTANCE_KEY_MAX: usize = 64;
/// Largest snapshot a server ships to its orchestrator.
pub const SNAPSHOT_BYTES_MAX: usize = 4 << 20;

/// A serverless function: one value per instance key, called one call at a
/// time. `Default` is the state of a never-activated instance.
pub trait Function: Default + Send + 'static {
    /// Handles one call to instance `key`.
    fn call(&mut self, key: &str, payload: Bytes) -> Result<Bytes, FunctionError>;
    /// The instance's state, to persist on deactivation (or to migrate).
    fn snapshot(&self) -> Vec<u8>;
    /// Rebuilds an instance from [`Function::snapshot`]'s bytes.
    fn restore(bytes: &[u8]) -> Result<Self, FunctionError>;
}

/// What a function call, or the runtime around it, can fail with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum FunctionError {
    /// The function itself returned an error.
    #[error("function failed: {message}")]
    Failed {
        /// Its message.
        message: String,
    },
    /// A snapshot did not restore.
    #[error("snapshot does not restore: {detail}")]
    Restore {
        /// Why.
        detail: String,
    },
    /// No function of that name is registered where it was asked for.
    #[error("no function `{name}`")]
    UnknownFunction {
        /// The name.
        name: String,
    },
    /// A function name or instance key is empty, too long or has control
    /// characters.
    #[error("invalid {field}: {detail}")]
    InvalidName {
        /// `name` or `key`.
        field: String,
        /// Why.
        detail: String,
    },
    /// No server of the cloud has room for a new instance.
    #[error("no server has capacity for `{name}`")]
    NoCapacity {
        /// The function.
        name: String,
    },
    /// The hosting server is at its in-flight limit.
    #[error("server busy")]
    Busy,
    /// The call did not finish in time.
    #[error("timed out after {timeout_ms} ms")]
    Timeout {
        /// The limit.
        timeout_ms: u64,
    },
    /// The placement could not be recorded or the instance not hosted.
    #[error("placement failed: {reason}")]
    Placement {
        /// Why.
        reason: String,
    },
    /// The transport failed, or a peer answered with something unexpected.
    #[error("transport: {detail}")]
    Transport {
        /// What happened.
        detail: String,
    },
    /// An auditable function ran, but the provenance of its input or
    /// output could not be committed; the output is withheld (an auditable
    /// function never hands out an output the ledger does not name).
    #[error("provenance not recorded: {reason}")]
    Audit {
        /// Why.
        reason: String,
    },
    /// An offloaded task's result was refused: its executor's answer does
    /// not match the completion it committed (or has no valid proof of
    /// one), or a spot check disagreed, and the task could not be run
    /// again (see [`crate::offload_check`]).
    #[error("offloaded result rejected: {reason}")]
    ResultRejected {
        /// Why.
        reason: String,
    },
}

impl FunctionError {
    /// A [`FunctionError::Failed`] with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        FunctionError::Failed {
            message: message.into(),
        }
    }
}

/// Checks a function name and an instance key: non-empty, bounded, no
/// control characters and no `/` in the name (the ledger entity is
/// `name/key`).
pub fn check_names(name: &str, key: &str) -> Result<(), FunctionError> {
    let check = |field: &'static str, s: &str, max: usize| {
        let bad = |detail: String| {
            Err(FunctionError::InvalidName {
                field: field.to_string(),
                detail,
            })
        };
        if s.is_empty() {
            return bad("empty".into());
        }
        if s.len() > max {
            return bad(format!("{} bytes, at most {max}", s.len()));
        }
        if s.chars().any(char::is_control) {
            return bad("control character".into());
        }
        Ok(())
    };
    check("name", name, FUNCTION_NAME_MAX)?;
    check("key", key, INSTANCE_KEY_MAX)?;
    if name.contains('/') {
        return Err(FunctionError::InvalidName {
            field: "name".into(),
            detail: "contains `/`".into(),
        });
    }
    Ok(())
}

/// The ledger entity name of an instance (`name/key`, a PROV container).
pub fn entity_name(name: &str, key: &str) -> String {
    format!("{name}/{key}")
}

/// An instance behind a trait object, so one actor type runs every function.
pub trait DynFunction: Send + 'static {
    /// See [`Function::call`].
    fn call(&mut self, key: &str, payload: Bytes) -> Result<Bytes, FunctionError>;
    /// See [`Function::snapshot`].
    fn snapshot(&self) -> Vec<u8>;
}

impl<T: Function> DynFunction for T {
    fn call(&mut self, key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        Function::call(self, key, payload)
    }
    fn snapshot(&self) -> Vec<u8> {
        Function::snapshot(self)
    }
}

type Factory =
    Arc<dyn Fn(Option<&[u8]>) -> Result<Box<dyn DynFunction>, FunctionError> + Send + Sync>;

/// The functions a node can host, by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct FunctionRegistry {
    factories: BTreeMap<String, Factory>,
    /// Functions whose calls record `ProvData` digests of their input and
    /// output on the cloud's chain ([`FunctionRegistry::register_auditable`]).
    auditable: std::collections::BTreeSet<String>,
}

impl FunctionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `T` under `name` (replacing an earlier registration).
    pub fn register<T: Function>(&mut self, name: &str) -> &mut Self {
        let f: Factory = Arc::new(|snapshot| match snapshot {
            None => Ok(Box::new(T::default()) as Box<dyn DynFunction>),
            Some(b) => Ok(Box::new(T::restore(b)?) as Box<dyn DynFunction>),
        });
        self.factories.insert(name.to_string(), f);
        self.auditable.remove(name);
        self
    }

    /// Registers `T` under `name` as *auditable*: every call to one of its
    /// instances commits, on the cloud's local chain and before the output
    /// is returned, `ProvData` records of the input (produced by the
    /// caller, then used by the call) and of the output (produced by the
    /// call). The call is the activity `name/key#CALL` (a fresh hash per
    /// call) and digests are `sha256(CALL ‖ "in"|"out" ‖ bytes)`. Costs three ledger
    /// commits per call.
    pub fn register_auditable<T: Function>(&mut self, name: &str) -> &mut Self {
        self.register::<T>(name);
        self.auditable.insert(name.to_string());
        self
    }

    /// Whether calls to `name` record provenance.
    pub fn is_auditable(&self, name: &str) -> bool {
        self.auditable.contains(name)
    }

    /// Builder form of [`FunctionRegistry::register`].
    pub fn with<T: Function>(mut self, name: &str) -> Self {
        self.register::<T>(name);
        self
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// The registered names.
    pub fn names(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// A new instance of `name`, fresh or restored from `snapshot`.
    pub fn activate(
        &self,
        name: &str,
        snapshot: Option<&[u8]>,
    ) -> Result<Box<dyn DynFunction>, FunctionError> {
        let f = self
            .factories
            .get(name)
            .ok_or_else(|| FunctionError::UnknownFunction {
                name: name.to_string(),
            })?;
        f(snapshot)
    }
}

impl std::fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

/// One running instance: an actix actor, so its calls are handled one at a
/// time in arrival order while other instances run concurrently.
pub struct InstanceActor {
    key: String,
    function: Box<dyn DynFunction>,
}

impl InstanceActor {
    /// An actor running `function` as instance `key`.
    pub fn new(key: String, function: Box<dyn DynFunction>) -> Self {
        InstanceActor { key, function }
    }
}

impl Actor for InstanceActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        // Bounded: the server also caps in-flight calls.
        ctx.set_mailbox_capacity(1024);
    }
}

/// One call to an instance.
#[derive(Message)]
#[rtype(result = "Result<Bytes, FunctionError>")]
pub struct Call(pub Bytes);

impl Handler<Call> for InstanceActor {
    type Result = Result<Bytes, FunctionError>;
    fn handle(&mut self, msg: Call, _: &mut Context<Self>) -> Self::Result {
        self.function.call(&self.key, msg.0)
    }
}

/// Asks an instance for its state (after every call queued before this).
#[derive(Message)]
#[rtype(result = "Vec<u8>")]
pub struct Snapshot;

impl Handler<Snapshot> for InstanceActor {
    type Result = MessageResult<Snapshot>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.function.snapshot())
    }
}

/// Stops an instance.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deactivate;

impl Handler<Deactivate> for InstanceActor {
    type Result = ();
    fn handle(&mut self, _: Deactivate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsynced, then renamed over `path` (a crash leaves the old or
/// the new snapshot, never half of one).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counter(u64);
    impl Function for Counter {
        fn call(&mut self, _: &str, _: Bytes) -> Result<Bytes, FunctionError> {
            self.0 += 1;
            Ok(Bytes::from(self.0.to_string()))
        }
        fn snapshot(&self) -> Vec<u8> {
            self.0.to_be_bytes().to_vec()
        }
        fn restore(b: &[u8]) -> Result<Self, FunctionError> {
            let a: [u8; 8] = b.try_into().map_err(|_| FunctionError::Restore {
                detail: "len".into(),
            })?;
            Ok(Counter(u64::from_be_bytes(a)))
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_names("f", "k").is_ok());
        assert!(check_names("", "k").is_err());
        assert!(check_names("a/b", "k").is_err());
        assert!(check_names("f", &"k".repeat(65)).is_err());
        assert!(check_names("f", "a\nb").is_err());
    }

    #[test]
    fn registry_restores_snapshots() {
        let r = FunctionRegistry::new().with::<Counter>("c");
        let mut f = r.activate("c", None).unwrap();
        f.call("k", Bytes::new()).unwrap();
        let snap = f.snapshot();
        let mut g = r.activate("c", Some(&snap)).unwrap();
        assert_eq!(g.call("k", Bytes::new()).unwrap(), Bytes::from("2"));
        assert!(matches!(
            r.activate("x", None),
            Err(FunctionError::UnknownFunction { .. })
        ));
        assert!(r.activate("c", Some(b"bad")).is_err());
    }
}
