//! The embedded store: a moka cache with per-entry expiry, a customer index, an application
//! index and a ledger of Voucherify lock holdings.
//!
//! Locking discipline: `indexes` and `ledger` are plain mutexes that are never held while
//! waiting on anything but moka. moka's eviction listener may run inside any cache call, so it
//! only pushes onto `removals` (its own short-lived lock); `run_pending_tasks()` drains that queue.
//!
//! Time is the store's `Clock`. On the system clock moka expires each entry at its session's
//! `expires_at`; moka's timer runs on real time, so on a manual clock (tests) entries never
//! expire by themselves and `run_pending_tasks` sweeps out those the clock has passed. Reads
//! check liveness against the clock either way.

use super::snapshot::{self, Snapshots};
use super::{grace_alias, CreateOutcome, IdentityTransfer, LockOutcome, SessionStore, StoreResult};
use crate::config::StoreSettings;
use crate::metrics;
use crate::session::{Clock, EndReason, LockedTotals, Millis, Session, SessionPatch};
use async_trait::async_trait;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BACKEND: &str = "memory";

/// Uses closer together than this record one `last_access` (at most 1% of the idle timeout, so
/// short test timeouts keep their precision).
const TOUCH_GRANULARITY_MS: u64 = 1000;

/// Expire each entry at its session's `expires_at`: on the system clock, by moka's timer; on a
/// manual clock, never by moka (its timer runs on real time) but by the sweep in
/// `run_pending_tasks`.
struct SessionExpiry(Clock);

impl SessionExpiry {
    fn lifetime(&self, value: &Session) -> Option<Duration> {
        match &self.0 {
            Clock::System => Some(value.remaining(self.0.now_millis())),
            Clock::Manual(_) => None,
        }
    }
}

impl Expiry<String, Arc<Session>> for SessionExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Session>,
        _now: Instant,
    ) -> Option<Duration> {
        self.lifetime(value)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Session>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.lifetime(value)
    }
}

#[derive(Default)]
struct Indexes {
    by_customer: HashMap<Box<str>, IdSet>,
    by_application: HashMap<Box<str>, IdSet>,
}

/// The session ids under one index key. Most customers have one session, and a one-element
/// hash set costs about 180 bytes more than the id itself: so one id is kept bare.
enum IdSet {
    One(Box<str>),
    Many(HashSet<Box<str>>),
}

impl IdSet {
    fn insert(&mut self, id: &str) {
        match self {
            IdSet::One(only) if &**only == id => {}
            IdSet::One(only) => {
                let first = std::mem::take(only);
                *self = IdSet::Many(HashSet::from([first, id.into()]));
            }
            IdSet::Many(ids) => {
                ids.insert(id.into());
            }
        }
    }

    /// Removes `id`; true when the set is now empty.
    fn remove(&mut self, id: &str) -> bool {
        match self {
            IdSet::One(only) => &**only == id,
            IdSet::Many(ids) => {
                ids.remove(id);
                ids.is_empty()
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            IdSet::One(only) => (Some(&**only), None),
            IdSet::Many(ids) => (None, Some(ids.iter().map(|id| &**id))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl Indexes {
    fn add(&mut self, s: &Session) {
        fn add_id(map: &mut HashMap<Box<str>, IdSet>, key: &Option<String>, id: &str) {
            if let Some(k) = key {
                match map.get_mut(k.as_str()) {
                    Some(ids) => ids.insert(id),
                    None => {
                        map.insert(k.as_str().into(), IdSet::One(id.into()));
                    }
                }
            }
        }
        add_id(&mut self.by_customer, &s.customer_id, &s.id);
        add_id(&mut self.by_application, &s.application_key, &s.id);
    }

    fn forget(&mut self, s: &Session) {
        fn drop_id(map: &mut HashMap<Box<str>, IdSet>, key: &Option<String>, id: &str) {
            if let Some(k) = key {
                if let Some(ids) = map.get_mut(k.as_str()) {
                    if ids.remove(id) {
                        map.remove(k.as_str());
                    }
                }
            }
        }
        drop_id(&mut self.by_customer, &s.customer_id, &s.id);
        drop_id(&mut self.by_application, &s.application_key, &s.id);
    }
}

/// What one lock session holds of one code, until when.
#[derive(Clone)]
struct Holding {
    quantity: u64,
    credits: i64,
    points: i64,
    expires_at: Millis,
}

#[derive(Default)]
struct LockLedger {
    /// code -> lock key -> holding
    codes: HashMap<String, HashMap<String, Holding>>,
}

impl LockLedger {
    fn others(&self, code: &str, key: &str, now: Millis) -> LockedTotals {
        let mut t = LockedTotals::default();
        if let Some(holders) = self.codes.get(code) {
            for (k, h) in holders {
                if k != key && h.expires_at > now {
                    t.quantity += h.quantity;
                    t.credits += h.credits;
                    t.points += h.points;
                }
            }
        }
        t
    }

    fn forget(&mut self, s: &Session) {
        if let Some(lock) = &s.lock {
            for hold in &lock.holds {
                if let Some(holders) = self.codes.get_mut(&hold.code) {
                    holders.remove(&s.id);
                    if holders.is_empty() {
                        self.codes.remove(&hold.code);
                    }
                }
            }
        }
    }

    fn record(&mut self, s: &Session) {
        if let Some(lock) = &s.lock {
            for hold in &lock.holds {
                self.codes.entry(hold.code.clone()).or_default().insert(
                    s.id.clone(),
                    Holding {
                        quantity: hold.quantity,
                        credits: hold.credits,
                        points: hold.points,
                        expires_at: s.expires_at,
                    },
                );
            }
        }
    }
}

type RemovalQueue = Arc<Mutex<Vec<(Arc<Session>, RemovalCause)>>>;

pub struct MemoryStore {
    cache: Cache<String, Arc<Session>>,
    indexes: Mutex<Indexes>,
    ledger: Mutex<LockLedger>,
    removals: RemovalQueue,
    snapshots: Snapshots,
    clock: Clock,
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new(max_sessions: u64) -> MemoryStore {
        MemoryStore::with_clock(max_sessions, Clock::system())
    }

    /// An empty store whose sessions expire by `clock`.
    pub fn with_clock(max_sessions: u64, clock: Clock) -> MemoryStore {
        let removals: RemovalQueue = Arc::default();
        let queue = removals.clone();
        let listener_clock = clock.clone();
        let cache = Cache::builder()
            .max_capacity(max_sessions)
            // TinyLFU (moka's default) may refuse to admit a brand-new entry when full, which
            // would drop a session the moment it is created; LRU evicts the least recently used.
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(SessionExpiry(clock.clone()))
            .eviction_listener(move |_key, value: Arc<Session>, cause| match cause {
                RemovalCause::Expired | RemovalCause::Size => queue.lock().push((value, cause)),
                // A replaced value that had already expired ended by expiry (see `run_pending_tasks`).
                RemovalCause::Replaced if !value.is_live(listener_clock.now_millis()) => {
                    queue.lock().push((value, RemovalCause::Expired))
                }
                _ => {}
            })
            .build();
        MemoryStore {
            cache,
            indexes: Mutex::default(),
            ledger: Mutex::default(),
            removals,
            snapshots: Snapshots::new(None, None),
            clock,
        }
    }

    /// The store `[store]` describes: the snapshot file's sessions restored, snapshots
    /// scheduled (see `Snapshots`), restoring a predecessor's until `takeover_until`; its
    /// sessions expire by `clock`.
    pub fn open(
        settings: &StoreSettings,
        max_sessions: u64,
        takeover_until: Option<Instant>,
        clock: Clock,
    ) -> MemoryStore {
        let mut store = MemoryStore::with_clock(max_sessions, clock);
        if let Some(path) = &settings.snapshot_file {
            snapshot::load_into(path, &store);
        }
        store.snapshots = Snapshots::new(takeover_until, settings.snapshot_file.as_deref());
        store
    }

    /// Runs moka's pending expirations and evictions, then accounts for them: metrics, indexes
    /// and lock ledger. Call periodically; cheap when nothing happened.
    pub fn run_pending_tasks(&self) {
        if self.clock.is_manual() {
            self.expire_by_manual_clock();
        }
        self.cache.run_pending_tasks();
        let drained: Vec<_> = std::mem::take(&mut *self.removals.lock());
        if drained.is_empty() {
            return;
        }
        let mut idx = self.indexes.lock();
        let mut ledger = self.ledger.lock();
        for (s, cause) in drained {
            // A session replaced under the same id must keep its index entries.
            let replaced = self.cache.contains_key(&s.id);
            if !replaced {
                idx.forget(&s);
                ledger.forget(&s);
            }
            if s.moved_to.is_none() {
                let reason = match cause {
                    RemovalCause::Size => EndReason::Evicted,
                    _ => s.expiry_reason(),
                };
                metrics::session_ended(&s, reason);
            }
        }
    }

    /// What moka's timer does on the system clock: removes the sessions the (manual) clock has
    /// passed and queues them as expired. Walks every entry, which only tests can afford.
    fn expire_by_manual_clock(&self) {
        let now = self.clock.now_millis();
        let passed: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(_, s)| !s.is_live(now))
            .map(|(id, _)| id)
            .collect();
        for id in passed {
            let result =
                self.cache
                    .entry_by_ref(id.as_str())
                    .and_compute_with(|entry| match entry {
                        Some(e) if !e.value().is_live(now) => Op::Remove,
                        _ => Op::Nop,
                    });
            if let CompResult::Removed(e) = result {
                self.removals
                    .lock()
                    .push((e.into_value(), RemovalCause::Expired));
            }
        }
    }

    fn live(&self, id: &str, now: Millis) -> Option<Arc<Session>> {
        self.cache.get(id).filter(|s| s.is_live(now))
    }

    fn timed<T>(&self, op: &'static str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        metrics::store_operation(BACKEND, op, start.elapsed().as_secs_f64());
        out
    }

    /// Removes a live session under the index lock; the caller decides the reason.
    fn remove_locked(&self, idx: &mut Indexes, id: &str, reason: EndReason) -> Option<Session> {
        self.remove_locked_if(idx, id, reason, |_| true)
    }

    /// Removes a live session that satisfies `wanted`, atomically with the check.
    fn remove_locked_if(
        &self,
        idx: &mut Indexes,
        id: &str,
        reason: EndReason,
        wanted: impl FnOnce(&Session) -> bool,
    ) -> Option<Session> {
        let now = self.clock.now_millis();
        let result = self
            .cache
            .entry_by_ref(id)
            .and_compute_with(|entry| match entry {
                Some(e) if e.value().is_live(now) && wanted(e.value()) => Op::Remove,
                _ => Op::Nop,
            });
        match result {
            CompResult::Removed(e) => {
                let s = Session::clone(e.value());
                idx.forget(&s);
                self.ledger.lock().forget(&s);
                if s.moved_to.is_none() {
                    metrics::session_ended(&s, reason);
                }
                Some(s)
            }
            _ => None,
        }
    }

    /// Inserts a new session under the index lock, if its id is free.
    fn insert_new_locked(&self, idx: &mut Indexes, session: Session) -> bool {
        let now = self.clock.now_millis();
        let id = session.id.clone();
        let value = Arc::new(session);
        let result = self.cache.entry(id).and_compute_with(|entry| match entry {
            Some(e) if e.value().is_live(now) => Op::Nop,
            _ => Op::Put(value.clone()),
        });
        match result {
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) => {
                idx.add(&value);
                if value.moved_to.is_none() {
                    metrics::session_started(&value);
                }
                true
            }
            _ => false,
        }
    }

    /// Applies `patch` to a live session and records a use, under the index lock.
    fn update_locked(&self, idx: &mut Indexes, id: &str, patch: &SessionPatch) -> Option<Session> {
        let now = self.clock.now_millis();
        let mut before = None;
        let result = self
            .cache
            .entry_by_ref(id)
            .and_compute_with(|entry| match entry {
                Some(e) if e.value().is_live(now) => {
                    before = Some(e.value().clone());
                    let mut s = Session::clone(e.value());
                    patch.apply(&mut s);
                    s.touch(now);
                    Op::Put(Arc::new(s))
                }
                _ => Op::Nop,
            });
        match (result, before) {
            (CompResult::ReplacedWith(e), Some(old)) => {
                idx.forget(&old);
                idx.add(e.value());
                Some(Session::clone(e.value()))
            }
            _ => None,
        }
    }

    fn count_live(&self, ids: Option<&IdSet>, now: Millis) -> u64 {
        ids.map_or(0, |ids| {
            ids.iter().filter(|id| self.live(id, now).is_some()).count() as u64
        })
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Lets moka account for expirations (metrics, indexes); snapshots on schedule.
    fn maintain(&self, settings: &StoreSettings) {
        self.run_pending_tasks();
        self.snapshots.tick(self, settings);
    }

    /// Shutdown began: in-flight requests may still change sessions, and the final snapshot
    /// comes with `shutdown`; this one covers a process killed before then.
    fn flush(&self, settings: &StoreSettings) {
        self.run_pending_tasks();
        self.snapshots.save(self, settings);
    }

    /// The server has drained: the final snapshot, so a graceful restart loses nothing.
    fn shutdown(&self, settings: &StoreSettings) {
        self.flush(settings);
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn create(
        &self,
        session: Session,
        application_limit: Option<u64>,
    ) -> StoreResult<CreateOutcome> {
        Ok(self.timed("create", || {
            let mut idx = self.indexes.lock();
            if let (Some(limit), Some(app)) = (application_limit, &session.application_key) {
                if self.count_live(
                    idx.by_application.get(app.as_str()),
                    self.clock.now_millis(),
                ) >= limit
                {
                    return CreateOutcome::ApplicationFull;
                }
            }
            if self.insert_new_locked(&mut idx, session) {
                CreateOutcome::Created
            } else {
                CreateOutcome::IdTaken
            }
        }))
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        Ok(self.timed("get", || {
            self.live(id, self.clock.now_millis())
                .map(|s| Session::clone(&s))
        }))
    }

    async fn touch(&self, id: &str) -> StoreResult<Option<Arc<Session>>> {
        Ok(self.timed("touch", || {
            let now = self.clock.now_millis();
            // Hot path: a session used again within the touch granularity keeps its deadline
            // (off by at most that much), sparing a copy and a cache write per request.
            if let Some(s) = self.cache.get(id) {
                let granularity = TOUCH_GRANULARITY_MS.min(s.idle_ms / 100);
                if s.is_live(now)
                    && (s.idle_ms == 0 || now.saturating_sub(s.last_access) < granularity)
                {
                    return Some(s);
                }
            }
            let result = self
                .cache
                .entry_by_ref(id)
                .and_compute_with(|entry| match entry {
                    Some(e) if e.value().is_live(now) => {
                        if e.value().idle_ms == 0 {
                            return Op::Nop; // fixed lifetime: nothing to extend
                        }
                        let mut s = Session::clone(e.value());
                        s.touch(now);
                        Op::Put(Arc::new(s))
                    }
                    _ => Op::Nop,
                });
            match result {
                CompResult::ReplacedWith(e) => Some(e.into_value()),
                CompResult::Unchanged(e) if e.value().is_live(now) => Some(e.into_value()),
                _ => None,
            }
        }))
    }

    async fn update(&self, id: &str, patch: &SessionPatch) -> StoreResult<Option<Session>> {
        Ok(self.timed("update", || {
            let mut idx = self.indexes.lock();
            self.update_locked(&mut idx, id, patch)
        }))
    }

    async fn remove(&self, id: &str, reason: EndReason) -> StoreResult<Option<Session>> {
        Ok(self.timed("remove", || {
            let mut idx = self.indexes.lock();
            self.remove_locked(&mut idx, id, reason)
        }))
    }

    async fn customer_sessions(&self, customer_id: &str) -> StoreResult<Vec<Session>> {
        Ok(self.timed("customer_sessions", || {
            let now = self.clock.now_millis();
            let idx = self.indexes.lock();
            let mut out: Vec<Session> = idx
                .by_customer
                .get(customer_id)
                .into_iter()
                .flat_map(IdSet::iter)
                .filter_map(|id| self.live(id, now))
                .filter(|s| s.moved_to.is_none() && s.customer_id.as_deref() == Some(customer_id))
                .map(|s| Session::clone(&s))
                .collect();
            out.sort_by_key(|s| s.created_at);
            out
        }))
    }

    async fn transfer(
        &self,
        old_id: &str,
        new: Session,
        grace: Duration,
        reason: EndReason,
    ) -> StoreResult<Option<Session>> {
        Ok(self.timed("transfer", || {
            let mut idx = self.indexes.lock();
            // A key in its grace period is an alias, not a session: it cannot move again.
            let old = self.remove_locked_if(&mut idx, old_id, reason, |s| s.moved_to.is_none())?;
            let new_id = new.id.clone();
            let owner = new.owner.clone();
            self.insert_new_locked(&mut idx, new);
            if !grace.is_zero() {
                let now = self.clock.now_millis();
                let mut alias =
                    Session::with_fixed_ttl_at(old_id.to_string(), old.flavor, owner, grace, now);
                alias.moved_to = Some(new_id);
                self.insert_new_locked(&mut idx, alias);
            }
            Some(old)
        }))
    }

    async fn transfer_identity(
        &self,
        old_id: &str,
        target_id: &str,
        grace: Duration,
    ) -> StoreResult<IdentityTransfer> {
        Ok(self.timed("transfer_identity", || {
            let now = self.clock.now_millis();
            // Every change of identity or membership takes the index lock: holding it, the two
            // checks below stay true until both sessions are changed.
            let mut idx = self.indexes.lock();
            let Some(old) = self.live(old_id, now).filter(|s| s.moved_to.is_none()) else {
                return IdentityTransfer::OldUnknown;
            };
            if self
                .live(target_id, now)
                .filter(|s| s.moved_to.is_none())
                .is_none()
            {
                return IdentityTransfer::TargetUnknown;
            }
            if self
                .update_locked(&mut idx, target_id, &SessionPatch::identity_of(&old))
                .is_none()
            {
                return IdentityTransfer::TargetUnknown;
            }
            // `old` can only have expired in the last instant; it has ended either way.
            self.remove_locked(&mut idx, old_id, EndReason::Transferred);
            if !grace.is_zero() {
                self.insert_new_locked(&mut idx, grace_alias(old_id, &old, target_id, grace, now));
            }
            IdentityTransfer::Moved
        }))
    }

    async fn acquire_lock(
        &self,
        session: Session,
        limits: &HashMap<String, u64>,
    ) -> StoreResult<LockOutcome> {
        Ok(self.timed("acquire_lock", || {
            let now = self.clock.now_millis();
            let Some(lock) = &session.lock else {
                return LockOutcome::Refused {
                    code: String::new(),
                };
            };
            let mut idx = self.indexes.lock();
            let mut ledger = self.ledger.lock();
            let mut others = Vec::with_capacity(lock.holds.len());
            // Quantity asked per code (a code may be named more than once).
            let mut asked: HashMap<&str, u64> = HashMap::new();
            for hold in &lock.holds {
                *asked.entry(hold.code.as_str()).or_default() += hold.quantity;
            }
            for hold in &lock.holds {
                let held = ledger.others(&hold.code, &session.id, now);
                if let Some(&limit) = limits.get(&hold.code) {
                    if held.quantity + asked[hold.code.as_str()] > limit {
                        return LockOutcome::Refused {
                            code: hold.code.clone(),
                        };
                    }
                }
                others.push(held);
            }
            // Replace an earlier lock under the same key: its holdings go, the new ones count.
            let value = Arc::new(session);
            let mut replaced = None;
            let result = self
                .cache
                .entry(value.id.clone())
                .and_compute_with(|entry| {
                    if let Some(e) = entry.filter(|e| e.value().is_live(now)) {
                        replaced = Some(Session::clone(e.value()));
                    }
                    Op::Put(value.clone())
                });
            if let Some(old) = &replaced {
                ledger.forget(old);
                idx.forget(old);
                if old.lock.is_none() {
                    // A non-lock session under this key is replaced by a lock: account for both.
                    metrics::session_ended(old, EndReason::Released);
                    metrics::session_started(&value);
                }
            } else if matches!(
                result,
                CompResult::Inserted(_) | CompResult::ReplacedWith(_)
            ) {
                metrics::session_started(&value);
            }
            ledger.record(&value);
            idx.add(&value);
            LockOutcome::Acquired { replaced, others }
        }))
    }

    async fn locked_by_others(
        &self,
        codes: &[String],
        key: &str,
    ) -> StoreResult<Vec<LockedTotals>> {
        let now = self.clock.now_millis();
        let ledger = self.ledger.lock();
        Ok(codes.iter().map(|c| ledger.others(c, key, now)).collect())
    }

    async fn all_sessions(&self) -> StoreResult<Vec<Session>> {
        let now = self.clock.now_millis();
        Ok(self
            .cache
            .iter()
            .filter(|(_, s)| s.is_live(now))
            .map(|(_, s)| Session::clone(&s))
            .collect())
    }

    async fn restore(&self, sessions: Vec<Session>) -> StoreResult<usize> {
        let now = self.clock.now_millis();
        let mut idx = self.indexes.lock();
        let mut ledger = self.ledger.lock();
        let mut restored = 0;
        for s in sessions.into_iter().filter(|s| s.is_live(now)) {
            if self.cache.contains_key(&s.id) {
                continue;
            }
            idx.add(&s);
            ledger.record(&s);
            if s.moved_to.is_none() {
                metrics::session_restored(&s);
            }
            self.cache.insert(s.id.clone(), Arc::new(s));
            restored += 1;
        }
        Ok(restored)
    }

    async fn session_count(&self) -> StoreResult<u64> {
        Ok(self.cache.entry_count())
    }
}

#[cfg(test)]
mod tests {
    //! Memory-only behaviour (id sets, index cleanup on expiry, LRU capacity). What every
    //! backend must do is the contract suite, tests/it/store_contract.rs.

    use super::*;
    use crate::session::Flavor;

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn session(id: &str, customer: Option<&str>, app: Option<&str>) -> Session {
        let mut s = Session::new(
            id.into(),
            Flavor::Admin,
            Some("owner".into()),
            Duration::from_secs(60),
            Duration::from_secs(600),
            crate::session::now_millis(),
        );
        s.customer_id = customer.map(str::to_string);
        s.application_key = app.map(str::to_string);
        s
    }

    #[test]
    fn id_sets_grow_from_one_and_empty_out() {
        let mut ids = IdSet::One("a".into());
        ids.insert("a");
        assert!(matches!(ids, IdSet::One(_)), "a repeat is not a second id");
        assert!(!ids.remove("b"), "removing a stranger leaves it");
        ids.insert("b");
        ids.insert("c");
        let mut all: Vec<&str> = ids.iter().collect();
        all.sort_unstable();
        assert_eq!(all, ["a", "b", "c"]);
        assert!(!ids.remove("a"));
        assert!(!ids.remove("b"));
        assert!(ids.remove("c"), "empty once the last id is gone");
        assert!(IdSet::One("x".into()).remove("x"));
    }

    #[test]
    fn touch_extends_and_expired_sessions_vanish() {
        let clock = Clock::manual();
        let store = MemoryStore::with_clock(100, clock.clone());
        let ms = Duration::from_millis;
        block(async {
            let mut s = Session::new(
                "t".into(),
                Flavor::Admin,
                None,
                Duration::from_secs(150),
                Duration::from_secs(6000),
                clock.now_millis(),
            );
            s.customer_id = Some("c".into());
            store.create(s, None).await.unwrap();
            for _ in 0..4 {
                clock.advance(ms(80_000));
                assert!(
                    store.touch("t").await.unwrap().is_some(),
                    "use keeps it alive"
                );
            }
            clock.advance(ms(149_999));
            store.run_pending_tasks();
            assert!(
                store.get("t").await.unwrap().is_some(),
                "live until the end"
            );
            assert!(!store.indexes.lock().by_customer.is_empty());
            clock.advance(ms(1));
            assert!(store.touch("t").await.unwrap().is_none(), "idle too long");
            assert!(
                store.customer_sessions("c").await.unwrap().is_empty(),
                "reads never see it"
            );
            store.run_pending_tasks();
            assert!(
                store.indexes.lock().by_customer.is_empty(),
                "index entry dropped with the session"
            );
            assert_eq!(store.session_count().await.unwrap(), 0, "swept out");
        });
    }

    #[test]
    fn capacity_evicts_least_recently_used() {
        let store = MemoryStore::new(10);
        block(async {
            for i in 0..30 {
                store
                    .create(session(&format!("s{i}"), None, None), None)
                    .await
                    .unwrap();
                store.run_pending_tasks();
            }
            store.run_pending_tasks();
            assert!(store.session_count().await.unwrap() <= 10);
            assert!(
                store.get("s29").await.unwrap().is_some(),
                "the newest session is kept"
            );
            assert!(
                store.get("s0").await.unwrap().is_none(),
                "the oldest one was evicted"
            );
        });
    }
}
