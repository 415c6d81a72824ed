//! Where sessions live. `SessionStore` is written for an async, shared backend: every call
//! may go over the network, and every multi-step change (create under a limit, transfer,
//! lock acquisition) is one atomic call so replicas can never interleave halfway.
//!
//! A store owns its lifecycle: `open` builds the configured backend from its settings, and
//! `maintain` / `flush` / `shutdown` (snapshots for memory, the subscriber for Redis) are
//! trait methods, so nothing above this module knows which backend runs. Adding a backend
//! touches only `store/` and `config` (its settings and `StoreBackend` variant); the contract
//! suite (`tests/it/common/store_contract.rs`) runs on every backend.
//!
//! Each store has a `Clock` that decides when its sessions expire; `SessionService` creates
//! sessions on that same clock. The memory store takes one (manual in tests); Redis expires
//! keys on its own wall clock, so the Redis store always runs on the system clock.

pub mod memory;
pub mod redis;
pub mod snapshot;

use crate::config::{Config, StoreBackend, StoreSettings};
use crate::session::{Clock, EndReason, LockedTotals, Millis, Session, SessionPatch};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// pingora's old process serves this long after handing over its sockets (`CLOSE_TIMEOUT`).
const UPGRADE_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the configured store could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Redis(redis::StartError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Redis(e) => write!(f, "redis store: {e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Opens the backend `config.store` names: the one place outside `store/` and `config` that
/// knows which backends exist. `upgrade`: this process takes over from a running one, whose
/// last snapshots the memory store restores while it winds down. `clock`: the memory store's
/// time (the system clock in production); the Redis store ignores it.
pub fn open(
    config: &Config,
    upgrade: bool,
    clock: Clock,
) -> Result<Arc<dyn SessionStore>, OpenError> {
    let max_sessions = config.sessions.max_sessions;
    Ok(match config.store.backend {
        StoreBackend::Memory => {
            let takeover_until = upgrade.then(|| {
                Instant::now()
                    + UPGRADE_CLOSE_TIMEOUT
                    + config.server.grace_period
                    + Duration::from_secs(10)
            });
            Arc::new(memory::MemoryStore::open(
                &config.store,
                max_sessions,
                takeover_until,
                clock,
            ))
        }
        // The redis store runs its connection on a runtime of its own (see `store::redis`), so
        // it can be built before pingora's runtimes exist; Redis is first contacted when the
        // store is first used (readiness checks it), and a Redis that is down at start only
        // delays readiness.
        StoreBackend::Redis => Arc::new(
            redis::RedisStore::start(&config.store.redis, max_sessions)
                .map_err(OpenError::Redis)?,
        ),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time.
    Unavailable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "session store unavailable: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// A live session already has this id; nothing was changed.
    IdTaken,
    /// The session's application already has `application_limit` live sessions.
    ApplicationFull,
}

// `Acquired` is the common case and is consumed at once; boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// The lock is held. `replaced` is the earlier lock under the same key, if any;
    /// `others` holds, per hold of the new lock (same order), what other live locks hold.
    Acquired {
        replaced: Option<Session>,
        others: Vec<LockedTotals>,
    },
    /// `code` has no quantity left; nothing was changed.
    Refused { code: String },
}

/// The outcome of `SessionStore::transfer_identity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityTransfer {
    /// The target now carries the identity; the old session has ended.
    Moved,
    /// The old id is not a live session (or only a transferred key in its grace period).
    OldUnknown,
    /// The target id is not a live session (or only a transferred key in its grace period).
    TargetUnknown,
}

/// The entry a transferred-away key leaves for `grace` from `now`: it resolves to `target_id`.
pub fn grace_alias(
    old_id: &str,
    old: &Session,
    target_id: &str,
    grace: Duration,
    now: Millis,
) -> Session {
    let mut alias =
        Session::with_fixed_ttl_at(old_id.into(), old.flavor, old.owner.clone(), grace, now);
    alias.set_moved_to(Some(target_id.into()));
    alias
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// `memory` or `redis`: the `backend` metric label.
    fn backend(&self) -> &'static str;

    /// The time this store's sessions expire by.
    fn clock(&self) -> Clock {
        Clock::system()
    }

    /// Whether the store answers (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Periodic upkeep, every 250 ms from the housekeeping service (on a runtime of its own,
    /// so it may block), with the store settings of the current generation.
    fn maintain(&self, _settings: &StoreSettings) {}

    /// Shutdown began: make what is stored durable now.
    fn flush(&self, _settings: &StoreSettings) {}

    /// The server has stopped: last writes, then stop any background work.
    fn shutdown(&self, _settings: &StoreSettings) {}

    /// Adds `session` unless a live session has its id. With `application_limit`, refuses
    /// when the session's application already has that many live sessions.
    async fn create(
        &self,
        session: Session,
        application_limit: Option<u64>,
    ) -> StoreResult<CreateOutcome>;

    /// The live session with this id, without recording a use.
    async fn get(&self, id: &str) -> StoreResult<Option<Session>>;

    /// The live session with this id after recording a use now (extends its idle deadline).
    /// Shared rather than copied: every forwarded request calls this.
    async fn touch(&self, id: &str) -> StoreResult<Option<Arc<Session>>>;

    /// Applies `patch` to the live session and records a use; `None` if there is none.
    async fn update(&self, id: &str, patch: &SessionPatch) -> StoreResult<Option<Session>>;

    /// Ends the session; returns it if it was live. Of concurrent removals exactly one wins.
    async fn remove(&self, id: &str, reason: EndReason) -> StoreResult<Option<Session>>;

    /// Live sessions whose `customer_id` is this customer.
    async fn customer_sessions(&self, customer_id: &str) -> StoreResult<Vec<Session>>;

    /// Ends `old_id` (with `reason`: `transferred`, or `rotated` at login) and adds `new` in
    /// one step. With a non-zero `grace`, `old_id` keeps resolving to `new` for that long.
    /// Returns the old session if it was live and not itself a grace alias; otherwise nothing
    /// changes. Of concurrent transfers of one id exactly one wins.
    async fn transfer(
        &self,
        old_id: &str,
        new: Session,
        grace: Duration,
        reason: EndReason,
    ) -> StoreResult<Option<Session>>;

    /// Gives the existing session `target_id` the identity of `old_id`
    /// (`SessionPatch::identity_of`) and ends `old_id` (reason `transferred`); with a non-zero
    /// `grace`, `old_id` resolves to `target_id` for that long. Nothing changes unless both
    /// are live. Of concurrent transfers of one id exactly one wins.
    ///
    /// This default works step by step (exactly one remover of `old_id` wins, but a target
    /// that ends in between loses the identity); backends override it with one atomic step.
    async fn transfer_identity(
        &self,
        old_id: &str,
        target_id: &str,
        grace: Duration,
    ) -> StoreResult<IdentityTransfer> {
        if !matches!(self.get(target_id).await?, Some(t) if t.moved_to().is_none()) {
            return Ok(IdentityTransfer::TargetUnknown);
        }
        if !matches!(self.get(old_id).await?, Some(o) if o.moved_to().is_none()) {
            return Ok(IdentityTransfer::OldUnknown);
        }
        let Some(old) = self.remove(old_id, EndReason::Transferred).await? else {
            return Ok(IdentityTransfer::OldUnknown);
        };
        if self
            .update(target_id, &SessionPatch::identity_of(&old))
            .await?
            .is_none()
        {
            return Ok(IdentityTransfer::TargetUnknown);
        }
        if !grace.is_zero() {
            let now = self.clock().now_millis();
            self.create(grace_alias(old_id, &old, target_id, grace, now), None)
                .await?;
        }
        Ok(IdentityTransfer::Moved)
    }

    /// Stores a lock session (replacing a lock with the same key) if every code it holds has
    /// quantity left under `limits` (code -> quantity; codes not listed are unlimited).
    /// All-or-nothing and atomic against concurrent acquisitions.
    async fn acquire_lock(
        &self,
        session: Session,
        limits: &HashMap<String, u64>,
    ) -> StoreResult<LockOutcome>;

    /// What live locks other than `key` hold on each of `codes`.
    async fn locked_by_others(&self, codes: &[String], key: &str)
        -> StoreResult<Vec<LockedTotals>>;

    /// Every live session (snapshots).
    async fn all_sessions(&self) -> StoreResult<Vec<Session>>;

    /// Puts back sessions from a snapshot: live ones only, without counting them as created.
    async fn restore(&self, sessions: Vec<Session>) -> StoreResult<usize>;

    /// Number of live sessions (approximate for caches that expire lazily).
    async fn session_count(&self) -> StoreResult<u64>;
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryStore;
    use super::*;
    use crate::session::Flavor;

    /// The memory store with the trait's default `transfer_identity`.
    struct StepByStep(MemoryStore);

    #[async_trait]
    impl SessionStore for StepByStep {
        fn backend(&self) -> &'static str {
            "step-by-step"
        }
        fn clock(&self) -> Clock {
            self.0.clock()
        }
        async fn ping(&self) -> StoreResult<()> {
            self.0.ping().await
        }
        async fn create(&self, s: Session, limit: Option<u64>) -> StoreResult<CreateOutcome> {
            self.0.create(s, limit).await
        }
        async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
            self.0.get(id).await
        }
        async fn touch(&self, id: &str) -> StoreResult<Option<Arc<Session>>> {
            self.0.touch(id).await
        }
        async fn update(&self, id: &str, patch: &SessionPatch) -> StoreResult<Option<Session>> {
            self.0.update(id, patch).await
        }
        async fn remove(&self, id: &str, reason: EndReason) -> StoreResult<Option<Session>> {
            self.0.remove(id, reason).await
        }
        async fn customer_sessions(&self, customer_id: &str) -> StoreResult<Vec<Session>> {
            self.0.customer_sessions(customer_id).await
        }
        async fn transfer(
            &self,
            old_id: &str,
            new: Session,
            grace: Duration,
            reason: EndReason,
        ) -> StoreResult<Option<Session>> {
            self.0.transfer(old_id, new, grace, reason).await
        }
        async fn acquire_lock(
            &self,
            s: Session,
            limits: &HashMap<String, u64>,
        ) -> StoreResult<LockOutcome> {
            self.0.acquire_lock(s, limits).await
        }
        async fn locked_by_others(
            &self,
            codes: &[String],
            key: &str,
        ) -> StoreResult<Vec<LockedTotals>> {
            self.0.locked_by_others(codes, key).await
        }
        async fn all_sessions(&self) -> StoreResult<Vec<Session>> {
            self.0.all_sessions().await
        }
        async fn restore(&self, sessions: Vec<Session>) -> StoreResult<usize> {
            self.0.restore(sessions).await
        }
        async fn session_count(&self) -> StoreResult<u64> {
            self.0.session_count().await
        }
    }

    fn session(id: &str) -> Session {
        Session::new(
            id.into(),
            Flavor::Tessitura,
            Some("web".into()),
            Duration::from_secs(60),
            Duration::from_secs(600),
            crate::session::now_millis(),
        )
    }

    async fn check_transfer_identity(store: &dyn SessionStore) {
        let mut old = session("old");
        old.customer_id = Some("c1".into());
        old.logged_in = true;
        store.create(old, None).await.unwrap();
        store.create(session("target"), None).await.unwrap();

        let r = store
            .transfer_identity("old", "nobody", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(r, IdentityTransfer::TargetUnknown, "{}", store.backend());
        assert!(
            store.get("old").await.unwrap().is_some(),
            "nothing changes for an unknown target"
        );
        let r = store
            .transfer_identity("nobody", "target", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(r, IdentityTransfer::OldUnknown);

        let r = store
            .transfer_identity("old", "target", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(r, IdentityTransfer::Moved, "{}", store.backend());
        let target = store.get("target").await.unwrap().unwrap();
        assert_eq!(
            (target.customer_id.as_deref(), target.logged_in),
            (Some("c1"), true)
        );
        assert_eq!(
            store.customer_sessions("c1").await.unwrap().len(),
            1,
            "only the target is c1's"
        );
        let alias = store.get("old").await.unwrap().expect("grace alias");
        assert_eq!(alias.moved_to(), Some("target"));
        // A key in its grace period cannot be transferred again.
        store.create(session("third"), None).await.unwrap();
        let r = store
            .transfer_identity("old", "third", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(r, IdentityTransfer::OldUnknown);
        let r = store
            .transfer_identity("third", "old", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(r, IdentityTransfer::TargetUnknown);
    }

    #[tokio::test]
    async fn transfer_identity_atomic_and_default() {
        check_transfer_identity(&MemoryStore::new(100)).await;
        check_transfer_identity(&StepByStep(MemoryStore::new(100))).await;
    }
}
