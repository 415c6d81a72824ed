//! The embedded store (SPEC §7): a sharded session table (`table`), a customer index, an
//! application index and a ledger of Voucherify lock holdings (`index`).
//!
//! Locking discipline: every change of membership (create, update, remove, transfer, lock)
//! takes `indexes` first, then at most one table shard at a time; `ledger` is only ever taken
//! after `indexes`. The expiry sweep removes from the table first and takes `indexes` after, with
//! no shard lock held.
//!
//! Time is the store's `Clock`. Reads check liveness against it; `run_pending_tasks` (the
//! housekeeping, every 250 ms) sweeps out the sessions it has passed, a part of the table each
//! time (all of it on a manual clock, in tests), and accounts for them. Past `max_sessions`, an
//! insertion evicts the least recently used session (sampled: see `table`).

mod index;
mod table;

use self::index::{IdSet, Indexes, LockLedger};
use self::table::{Op, Outcome, Table};
use super::snapshot::{self, Snapshots};
use super::{grace_alias, CreateOutcome, IdentityTransfer, LockOutcome, SessionStore, StoreResult};
use crate::config::StoreSettings;
use crate::metrics;
use crate::session::{Clock, EndReason, LockedTotals, Millis, Session, SessionPatch};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BACKEND: &str = "memory";

/// Uses closer together than this record one `last_access` (at most 1% of the idle timeout, so
/// short test timeouts keep their precision).
const TOUCH_GRANULARITY_MS: u64 = 1000;

pub struct MemoryStore {
    table: Table,
    max_sessions: usize,
    indexes: Mutex<Indexes>,
    ledger: Mutex<LockLedger>,
    snapshots: Snapshots,
    clock: Clock,
}

/// A session that left the store: metrics, unless it was only a grace alias.
fn ended(s: &Session, reason: EndReason) {
    if s.moved_to().is_none() {
        metrics::session_ended(s, reason);
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new(max_sessions: u64) -> MemoryStore {
        MemoryStore::with_clock(max_sessions, Clock::system())
    }

    /// An empty store whose sessions expire by `clock`.
    pub fn with_clock(max_sessions: u64, clock: Clock) -> MemoryStore {
        MemoryStore {
            table: Table::new(),
            max_sessions: usize::try_from(max_sessions).unwrap_or(usize::MAX),
            indexes: Mutex::default(),
            ledger: Mutex::default(),
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

    /// Sweeps out sessions the clock has passed and accounts for them: metrics, indexes and
    /// lock ledger. Call periodically; cheap when nothing expired.
    pub fn run_pending_tasks(&self) {
        let now = self.clock.now_millis();
        let passed = self.table.sweep(now, self.clock.is_manual());
        if passed.is_empty() {
            return;
        }
        let mut idx = self.indexes.lock();
        let mut ledger = self.ledger.lock();
        for s in passed {
            self.forget_locked(&mut idx, &mut ledger, &s);
            ended(&s, s.expiry_reason());
        }
    }

    /// Drops a session that left the table from the indexes and ledger. A session created
    /// under the same id since (the sweep takes `indexes` after the table) keeps its entries.
    fn forget_locked(&self, idx: &mut Indexes, ledger: &mut LockLedger, gone: &Session) {
        idx.forget(gone);
        ledger.forget(gone);
        if let Some(current) = self.table.get(&gone.id) {
            idx.add(&current);
            ledger.record(&current);
        }
    }

    /// Evicts least recently used sessions until the table is within `max_sessions`.
    fn evict_locked(&self, idx: &mut Indexes) {
        while self.table.len() > self.max_sessions {
            let Some(victim) = self.table.eviction_candidate() else {
                return;
            };
            let outcome = self.table.compute(&victim.id, |cur| match cur {
                Some(s) if Arc::ptr_eq(s, &victim) => Op::Remove,
                _ => Op::Nop,
            });
            if let Outcome::Removed(s) = outcome {
                idx.forget(&s);
                self.ledger.lock().forget(&s);
                let now = self.clock.now_millis();
                ended(
                    &s,
                    if s.is_live(now) {
                        EndReason::Evicted
                    } else {
                        s.expiry_reason()
                    },
                );
            }
        }
    }

    /// A value replaced in the table that had already expired ended by expiry: account for it
    /// as the sweep would have.
    fn replaced_expired_locked(&self, idx: &mut Indexes, old: &Session) {
        idx.forget(old);
        self.ledger.lock().forget(old);
        ended(old, old.expiry_reason());
    }

    fn live(&self, id: &str, now: Millis) -> Option<Arc<Session>> {
        self.table.get(id).filter(|s| s.is_live(now))
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
        let outcome = self.table.compute(id, |cur| match cur {
            Some(s) if s.is_live(now) && wanted(s) => Op::Remove,
            _ => Op::Nop,
        });
        match outcome {
            Outcome::Removed(s) => {
                idx.forget(&s);
                self.ledger.lock().forget(&s);
                ended(&s, reason);
                Some(Session::clone(&s))
            }
            _ => None,
        }
    }

    /// Inserts a new session under the index lock, if its id is free.
    fn insert_new_locked(&self, idx: &mut Indexes, session: Session) -> bool {
        let now = self.clock.now_millis();
        let value = Arc::new(session);
        let outcome = self.table.compute(&value.id, |cur| match cur {
            Some(s) if s.is_live(now) => Op::Nop,
            _ => Op::Put(value.clone()),
        });
        match outcome {
            Outcome::Inserted | Outcome::Replaced(_) => {
                if let Outcome::Replaced(old) = outcome {
                    self.replaced_expired_locked(idx, &old);
                }
                idx.add(&value);
                if value.moved_to().is_none() {
                    metrics::session_started(&value);
                }
                self.evict_locked(idx);
                true
            }
            _ => false,
        }
    }

    /// Applies `patch` to a live session and records a use, under the index lock.
    fn update_locked(&self, idx: &mut Indexes, id: &str, patch: &SessionPatch) -> Option<Session> {
        let now = self.clock.now_millis();
        let mut new = None;
        let outcome = self.table.compute(id, |cur| match cur {
            Some(old) if old.is_live(now) => {
                let mut s = Session::clone(old);
                patch.apply(&mut s);
                s.touch(now);
                let s = Arc::new(s);
                new = Some(s.clone());
                Op::Put(s)
            }
            _ => Op::Nop,
        });
        match (outcome, new) {
            (Outcome::Replaced(old), Some(new)) => {
                idx.forget(&old);
                idx.add(&new);
                Some(Session::clone(&new))
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

    /// Sweeps out and accounts for expired sessions (metrics, indexes); snapshots on schedule.
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
                if self.count_live(idx.by_application.get(&**app), self.clock.now_millis()) >= limit
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
            // (off by at most that much), sparing a copy and a table write per request.
            if let Some(s) = self.table.get(id) {
                let granularity = TOUCH_GRANULARITY_MS.min(s.idle_ms / 100);
                if s.is_live(now)
                    && (s.idle_ms == 0 || now.saturating_sub(s.last_access) < granularity)
                {
                    return Some(s);
                }
            }
            let mut touched = None;
            let outcome = self.table.compute(id, |cur| match cur {
                // Fixed lifetime: nothing to extend.
                Some(s) if s.is_live(now) && s.idle_ms > 0 => {
                    let mut s = Session::clone(s);
                    s.touch(now);
                    let s = Arc::new(s);
                    touched = Some(s.clone());
                    Op::Put(s)
                }
                _ => Op::Nop,
            });
            match outcome {
                Outcome::Replaced(_) => touched,
                Outcome::Unchanged(Some(s)) if s.is_live(now) => Some(s),
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
                .filter_map(|id| self.live(id, now))
                .filter(|s| s.moved_to().is_none() && s.customer_id.as_deref() == Some(customer_id))
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
            let old =
                self.remove_locked_if(&mut idx, old_id, reason, |s| s.moved_to().is_none())?;
            let new_id = new.id.clone();
            let owner = new.owner.clone();
            self.insert_new_locked(&mut idx, new);
            if !grace.is_zero() {
                let now = self.clock.now_millis();
                let mut alias =
                    Session::with_fixed_ttl_at(old_id.into(), old.flavor, owner, grace, now);
                alias.set_moved_to(Some((*new_id).into()));
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
            let Some(old) = self.live(old_id, now).filter(|s| s.moved_to().is_none()) else {
                return IdentityTransfer::OldUnknown;
            };
            if self
                .live(target_id, now)
                .filter(|s| s.moved_to().is_none())
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
            let Some(lock) = session.lock() else {
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
            let outcome = self.table.compute(&value.id, |_| Op::Put(value.clone()));
            let mut replaced = None;
            match outcome {
                Outcome::Replaced(old) if old.is_live(now) => {
                    ledger.forget(&old);
                    idx.forget(&old);
                    if old.lock().is_none() {
                        // A non-lock session under this key is replaced by a lock: account for
                        // both.
                        metrics::session_ended(&old, EndReason::Released);
                        metrics::session_started(&value);
                    }
                    replaced = Some(Session::clone(&old));
                }
                Outcome::Replaced(old) => {
                    ledger.forget(&old);
                    idx.forget(&old);
                    ended(&old, old.expiry_reason());
                    metrics::session_started(&value);
                }
                _ => metrics::session_started(&value),
            }
            ledger.record(&value);
            idx.add(&value);
            drop(ledger);
            self.evict_locked(&mut idx);
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
        let mut out = Vec::with_capacity(self.table.len());
        self.table.for_each(|s| {
            if s.is_live(now) {
                out.push(Session::clone(s));
            }
        });
        Ok(out)
    }

    async fn restore(&self, sessions: Vec<Session>) -> StoreResult<usize> {
        let now = self.clock.now_millis();
        let mut idx = self.indexes.lock();
        let mut restored = 0;
        for s in sessions.into_iter().filter(|s| s.is_live(now)) {
            let value = Arc::new(s);
            let outcome = self.table.compute(&value.id, |cur| match cur {
                Some(s) if s.is_live(now) => Op::Nop,
                _ => Op::Put(value.clone()),
            });
            match outcome {
                Outcome::Unchanged(_) | Outcome::Removed(_) => continue,
                Outcome::Replaced(old) => self.replaced_expired_locked(&mut idx, &old),
                Outcome::Inserted => {}
            }
            idx.add(&value);
            self.ledger.lock().record(&value);
            if value.moved_to().is_none() {
                metrics::session_restored(&value);
            }
            restored += 1;
        }
        self.evict_locked(&mut idx);
        Ok(restored)
    }

    async fn session_count(&self) -> StoreResult<u64> {
        Ok(self.table.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    //! Memory-only behaviour (index cleanup on expiry, LRU capacity). What every
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
        s.customer_id = customer.map(Into::into);
        s.application_key = app.map(Into::into);
        s
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
