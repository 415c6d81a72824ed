//! Where sessions live. `SessionStore` is written for an async, shared backend: every call
//! may go over the network, and every multi-step change (create under a limit, transfer,
//! lock acquisition) is one atomic call so replicas can never interleave halfway.

pub mod memory;
pub mod redis;
pub mod snapshot;

use crate::session::{EndReason, LockedTotals, Session, SessionPatch};
use async_trait::async_trait;
use std::collections::HashMap;
use std::time::Duration;

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

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// `memory` or `redis`: the `backend` metric label.
    fn backend(&self) -> &'static str;

    /// Whether the store answers (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Adds `session` unless a live session has its id. With `application_limit`, refuses
    /// when the session's application already has that many live sessions.
    async fn create(&self, session: Session, application_limit: Option<u64>) -> StoreResult<CreateOutcome>;

    /// The live session with this id, without recording a use.
    async fn get(&self, id: &str) -> StoreResult<Option<Session>>;

    /// The live session with this id after recording a use now (extends its idle deadline).
    async fn touch(&self, id: &str) -> StoreResult<Option<Session>>;

    /// Applies `patch` to the live session and records a use; `None` if there is none.
    async fn update(&self, id: &str, patch: &SessionPatch) -> StoreResult<Option<Session>>;

    /// Ends the session; returns it if it was live. Of concurrent removals exactly one wins.
    async fn remove(&self, id: &str, reason: EndReason) -> StoreResult<Option<Session>>;

    /// Live sessions whose `customer_id` is this customer.
    async fn customer_sessions(&self, customer_id: &str) -> StoreResult<Vec<Session>>;

    /// Ends `old_id` (reason `transferred`) and adds `new` in one step. With a non-zero `grace`,
    /// `old_id` keeps resolving to `new` for that long. Returns the old session if it was
    /// live; otherwise nothing changes. Of concurrent transfers of one id exactly one wins.
    async fn transfer(&self, old_id: &str, new: Session, grace: Duration) -> StoreResult<Option<Session>>;

    /// Stores a lock session (replacing a lock with the same key) if every code it holds has
    /// quantity left under `limits` (code -> quantity; codes not listed are unlimited).
    /// All-or-nothing and atomic against concurrent acquisitions.
    async fn acquire_lock(&self, session: Session, limits: &HashMap<String, u64>) -> StoreResult<LockOutcome>;

    /// What live locks other than `key` hold on each of `codes`.
    async fn locked_by_others(&self, codes: &[String], key: &str) -> StoreResult<Vec<LockedTotals>>;

    /// Every live session (snapshots).
    async fn all_sessions(&self) -> StoreResult<Vec<Session>>;

    /// Puts back sessions from a snapshot: live ones only, without counting them as created.
    async fn restore(&self, sessions: Vec<Session>) -> StoreResult<usize>;

    /// Number of live sessions (approximate for caches that expire lazily).
    async fn len(&self) -> StoreResult<u64>;
}
