//! The Redis store (SPEC §7): sessions shared by every replica, standalone or Redis Cluster.
//!
//! * **Runtime.** `build_server` is synchronous and runs before pingora starts its runtimes,
//!   and each pingora service has its own runtime. The store therefore owns one small tokio
//!   runtime of its own: the connection, its reconnections, the pub/sub subscriber and the
//!   maintenance loop all live there, independent of which service calls the store and of the
//!   order in which pingora stops its services. Each store call runs as a task on that runtime,
//!   so it completes even when its caller stops waiting; a create that is one script
//!   (`creates_in_one_command`) is atomic on its own and runs in the caller's task instead.
//! * **Atomicity.** Each change to one session is one Lua script on the session's hash (see
//!   `scripts.rs`); locks are one script over the `{locks}` slot. Indexes live in other slots,
//!   so they are maintained by separate commands, in an order that keeps them a superset of
//!   the truth, and every reader checks what it finds. Creation is the exception where all
//!   keys are on one server (standalone, Sentinel): one script writes the session and its
//!   index entries (`CREATE_INDEXED`), one command per create.
//! * **Metrics.** Expiry happens inside Redis, so `sessions_active` and `locks_active` are
//!   set from the expiry indexes (the global count, the same on every replica), created and
//!   explicitly ended sessions are counted by the replica that made the change, and
//!   expirations are counted by the replica whose sweep takes them out of the expiry index
//!   (exactly one). See `background.rs` and docs/redis.md.
//! * **Near cache and degraded mode.** See `near_cache.rs`: fresh copies answer `get`; while
//!   Redis is unreachable, `get` and `touch` fall back to any live copy for `degraded_grace`
//!   after Redis last answered (the outage's start, not the copy's age). Everything else
//!   answers `StoreError::Unavailable`.
//! * **Production (SPEC §13.4).** TLS and the ACL user are applied in `link.rs`; Sentinel is
//!   followed by `sentinel.rs`; `checks.rs` probes Redis at start (a wrong password or a
//!   missing permission stops the start with a clear error) and notices a Redis that came
//!   back empty; `wait_for_replicas` makes creates and rotations wait for replicas.

mod background;
mod checks;
pub mod codec;
mod index;
mod link;
mod near_cache;
mod scripts;
mod sentinel;

use super::{CreateOutcome, LockOutcome, SessionStore, StoreError, StoreResult};
use crate::config::RedisSettings;
use crate::metrics;
use crate::session::{now_millis, EndReason, Flavor, LockedTotals, Session, SessionPatch};
use async_trait::async_trait;
use codec::{expiry_member, from_reply, int, is_indexed, strings, Keys};
use futures_util::future::join_all;
use link::Link;
use near_cache::NearCache;
use redis::{cmd, Value};
use scripts::*;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const BACKEND: &str = "redis";

/// Everything the store's tasks share.
struct Inner {
    link: Link,
    keys: Keys,
    near: NearCache,
    settings: RedisSettings,
    /// Names this replica in invalidation messages, so it ignores its own.
    origin: String,
    /// The marker value this replica last saw in Redis (see `checks::check_epoch`).
    epoch: parking_lot::Mutex<Option<String>>,
}

pub struct RedisStore {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The subscriber and the maintenance loop, stopped by `shutdown`.
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Why the redis store could not start (before any contact with Redis).
#[derive(Debug)]
pub enum StartError {
    /// The store's own runtime could not be built.
    Runtime(std::io::Error),
    /// The settings do not describe a usable connection.
    Settings(String),
    /// Redis answered and refused us: wrong password, unknown user, missing permission.
    Refused(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Runtime(e) => write!(f, "cannot start the redis store's runtime: {e}"),
            StartError::Settings(e) | StartError::Refused(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StartError {}

impl RedisStore {
    /// Starts the store's runtime, prepares the connection, starts the subscriber and
    /// maintenance tasks (and the Sentinel follower), then asks Redis once (bounded by
    /// `timeout`): refused credentials or permissions fail the start; an unreachable Redis
    /// is logged and only delays readiness.
    pub fn start(
        settings: &RedisSettings,
        near_cache_capacity: u64,
    ) -> Result<RedisStore, StartError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("redis-store")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let link = {
            let _entered = runtime.enter();
            Link::open(settings).map_err(StartError::Settings)?
        };
        let inner = Arc::new(Inner {
            link,
            keys: Keys::new(&settings.key_prefix),
            near: NearCache::new(near_cache_capacity, settings.near_cache_ttl),
            settings: settings.clone(),
            origin: crate::session::id::new_uuid(),
            epoch: parking_lot::Mutex::new(None),
        });
        let mut tasks = Vec::new();
        if settings.sentinel() {
            tasks.push(runtime.spawn(sentinel::follow(inner.clone())));
        }
        checks::at_start(runtime.handle(), &inner).map_err(StartError::Refused)?;
        tasks.push(runtime.spawn(background::subscribe(inner.clone())));
        tasks.push(runtime.spawn(background::maintain(inner.clone())));
        Ok(RedisStore {
            inner,
            runtime: Some(runtime),
            tasks: parking_lot::Mutex::new(tasks),
        })
    }

    /// Whether a create is one command (`CREATE_INDEXED`): not across Cluster slots, and no
    /// `WAIT` whose failure must be undone.
    fn creates_in_one_command(&self) -> bool {
        !self.inner.settings.cluster && self.inner.settings.wait_for_replicas == 0
    }

    /// Runs `op` on the store's runtime and times it.
    async fn exec<T: Send + 'static>(
        &self,
        name: &'static str,
        op: impl FnOnce(Arc<Inner>) -> std::pin::Pin<Box<dyn Future<Output = StoreResult<T>> + Send>>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Unavailable(
                "the redis store is shut down".into(),
            ));
        };
        let result = match runtime.spawn(op(self.inner.clone())).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Unavailable(format!(
                "redis store task failed: {e}"
            ))),
        };
        metrics::store_operation(BACKEND, name, start.elapsed().as_secs_f64());
        result
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // May run inside another runtime (a pingora service dropping the last reference):
        // only `shutdown_background` is allowed there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Inner {
    fn invalidation(&self, id: &str) -> String {
        format!("{}\n{id}", self.origin)
    }

    // ---- reading ------------------------------------------------------------------------

    /// The live session or lock with this id, from Redis.
    async fn fetch(&self, id: &str) -> StoreResult<Option<Session>> {
        let now = now_millis();
        let v = self
            .link
            .query(cmd("HGETALL").arg(self.keys.session(id)))
            .await?;
        if let Some(s) = from_reply(id, &v) {
            return Ok(s.is_live(now).then_some(s));
        }
        let v = self
            .link
            .query(cmd("HGETALL").arg(self.keys.lock(id)))
            .await?;
        Ok(from_reply(id, &v).filter(|s| s.is_live(now)))
    }

    /// Degraded mode: a live near-cache copy while Redis was reached within `degraded_grace`.
    fn fallback(&self, id: &str, err: StoreError) -> StoreResult<Option<Session>> {
        if self
            .link
            .health
            .reached_within(self.settings.degraded_grace)
        {
            if let Some(s) = self.near.any(id) {
                return Ok(Some(s));
            }
        }
        Err(err)
    }

    fn unavailable() -> StoreError {
        StoreError::Unavailable("redis: not answering".into())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        if let Some(s) = self.near.fresh(id) {
            return Ok(Some(s));
        }
        if self.link.health.failing() {
            return self.fallback(id, Self::unavailable());
        }
        match self.fetch(id).await {
            Ok(found) => {
                match &found {
                    Some(s) => self.near.put(s),
                    None => self.near.invalidate(id),
                }
                Ok(found)
            }
            Err(e) => self.fallback(id, e),
        }
    }

    async fn touch(&self, id: &str) -> StoreResult<Option<Session>> {
        if self.link.health.failing() {
            return self.fallback(id, Self::unavailable());
        }
        let mut touched = TOUCH.key(self.keys.session(id));
        touched.arg(now_millis());
        let v = match self.link.script(&touched).await {
            Ok(v) => v,
            Err(e) => return self.fallback(id, e),
        };
        let Some(s) = from_reply(id, &v) else {
            // Not a session: maybe a lock (fixed lifetime, nothing to extend).
            let found = match self
                .link
                .query(cmd("HGETALL").arg(self.keys.lock(id)))
                .await
            {
                Ok(v) => from_reply(id, &v).filter(|s| s.is_live(now_millis())),
                Err(e) => return self.fallback(id, e),
            };
            match &found {
                Some(s) => self.near.put(s),
                None => self.near.invalidate(id),
            }
            return Ok(found);
        };
        self.near.put(&s);
        if s.idle_ms > 0 && is_indexed(&s) {
            // XX: never re-add an entry a concurrent removal just took out.
            let mut c = cmd("ZADD");
            c.arg(self.keys.expiry(s.flavor))
                .arg("XX")
                .arg("GT")
                .arg(s.expires_at)
                .arg(expiry_member(&s));
            if let Err(e) = self.link.query(&c).await {
                log::warn!(
                    "redis store: expiry index not updated for {}: {e}",
                    crate::session::id::redact(id)
                );
            }
        }
        Ok(Some(s))
    }

    // ---- changing -----------------------------------------------------------------------

    /// Stores a new session unless its id is live; says whether it did. With
    /// `wait_for_replicas`, a write the replicas did not acknowledge is taken back and the
    /// call fails: the caller answers 503 and nothing was created.
    async fn write_new(&self, s: &Session) -> StoreResult<bool> {
        let mut inv = CREATE.key(self.keys.session(&s.id));
        inv.arg(now_millis())
            .arg(s.expires_at)
            .arg(codec::to_fields(s));
        let (reply, waited) = self
            .link
            .script_replicated(&inv, |v| int(v) == Some(1))
            .await?;
        if let Err(e) = waited {
            let _ = self.take(&s.id, None).await;
            return Err(e);
        }
        Ok(int(&reply) == Some(1))
    }

    /// Creates a session with its index entries: one script where every key is on one
    /// server, separate commands across Cluster slots (`create_spread`).
    async fn create(
        &self,
        session: Session,
        application_limit: Option<u64>,
    ) -> StoreResult<CreateOutcome> {
        if self.settings.cluster {
            return self.create_spread(session, application_limit).await;
        }
        let s = &session;
        let indexed = is_indexed(s) && s.lock().is_none();
        let mut inv = CREATE_INDEXED.key(self.keys.session(&s.id));
        let mut kinds = String::with_capacity(3);
        if indexed {
            inv.key(self.keys.expiry(s.flavor));
            kinds.push('x');
            if let Some(c) = &s.customer_id {
                inv.key(self.keys.customer(c));
                kinds.push('c');
            }
        }
        if let Some(a) = &s.application_key {
            inv.key(self.keys.application(a));
            kinds.push('a');
        }
        let limit = application_limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        inv.arg(now_millis())
            .arg(s.expires_at)
            .arg(s.absolute_deadline)
            .arg(&*s.id)
            .arg(kinds)
            .arg(if indexed {
                expiry_member(s)
            } else {
                String::new()
            })
            .arg(limit)
            .arg(codec::to_fields(s));
        let (reply, waited) = self
            .link
            .script_replicated(&inv, |v| int(v) == Some(1))
            .await?;
        if let Err(e) = waited {
            // Not acknowledged by the replicas: taken back, index entries too.
            let _ = self.take(&s.id, None).await;
            if indexed {
                self.unindex(s).await;
            } else if s.application_key.is_some() {
                self.release_reservation(s).await;
            }
            return Err(e);
        }
        match int(&reply) {
            Some(1) => {}
            Some(2) => return Ok(CreateOutcome::ApplicationFull),
            _ => return Ok(CreateOutcome::IdTaken),
        }
        if is_indexed(s) {
            metrics::session_created(s.flavor);
        }
        self.near.keep(session);
        Ok(CreateOutcome::Created)
    }

    /// `create` on Redis Cluster, where the session and its index entries are in different
    /// slots: the application is reserved first, then the session and its entries go out
    /// together (one round trip, not two) and the entries are settled once the write's answer
    /// is known.
    async fn create_spread(
        &self,
        session: Session,
        application_limit: Option<u64>,
    ) -> StoreResult<CreateOutcome> {
        let mut reserved = false;
        if let Some(app) = &session.application_key {
            let limit = application_limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
            let reply = self
                .link
                .script(
                    APP_RESERVE
                        .key(self.keys.application(app))
                        .arg(now_millis())
                        .arg(&*session.id)
                        .arg(session.absolute_deadline)
                        .arg(limit),
                )
                .await?;
            match int(&reply) {
                Some(0) => return Ok(CreateOutcome::ApplicationFull),
                Some(1) => reserved = true,
                _ => {}
            }
        }
        let (written, entries) =
            tokio::join!(self.write_new(&session), self.index_new(&session, reserved));
        let created = matches!(written, Ok(true));
        self.settle_new_entries(&session, entries, created).await;
        if !created {
            if reserved {
                self.release_reservation(&session).await;
            }
            return written.map(|_| CreateOutcome::IdTaken);
        }
        self.near.put(&session);
        if is_indexed(&session) {
            metrics::session_created(session.flavor);
        }
        Ok(CreateOutcome::Created)
    }

    async fn update(&self, id: &str, patch: &SessionPatch) -> StoreResult<Option<Session>> {
        let (set, del) = patch_fields(patch);
        for key in [self.keys.session(id), self.keys.lock(id)] {
            let mut inv = UPDATE.key(key);
            inv.arg(now_millis())
                .arg(self.keys.channel())
                .arg(self.invalidation(id))
                .arg(set.len())
                .arg(&set)
                .arg(&del);
            let reply = self.link.script(&inv).await?;
            let Value::Array(parts) = &reply else {
                continue;
            };
            let (Some(before), Some(after)) = (
                parts.first().and_then(|v| from_reply(id, v)),
                parts.get(1).and_then(|v| from_reply(id, v)),
            ) else {
                continue;
            };
            self.near.put(&after);
            if is_indexed(&after) && after.lock().is_none() {
                self.reindex(&before, &after).await;
            }
            return Ok(Some(after));
        }
        Ok(None)
    }

    /// Ends a live session (or, with `alias`, replaces it by that grace alias).
    async fn take(&self, id: &str, alias: Option<&Session>) -> StoreResult<Option<Session>> {
        let mut inv = REMOVE.key(self.keys.session(id));
        inv.arg(now_millis())
            .arg(self.keys.channel())
            .arg(self.invalidation(id));
        if let Some(a) = alias {
            inv.arg(a.expires_at).arg(codec::to_fields(a));
        }
        let reply = self.link.script(&inv).await?;
        self.near.invalidate(id);
        Ok(from_reply(id, &reply))
    }

    async fn take_lock(&self, id: &str) -> StoreResult<Option<Session>> {
        let reply = self
            .link
            .script(
                REMOVE_LOCK
                    .key(self.keys.lock(id))
                    .key(self.keys.lock_expiry())
                    .arg(now_millis())
                    .arg(id)
                    .arg(self.keys.channel())
                    .arg(self.invalidation(id))
                    .arg(self.keys.hold_prefix()),
            )
            .await?;
        self.near.invalidate(id);
        Ok(from_reply(id, &reply))
    }

    async fn remove(&self, id: &str, reason: EndReason) -> StoreResult<Option<Session>> {
        let ended = match self.take(id, None).await? {
            Some(s) => {
                self.unindex(&s).await;
                Some(s)
            }
            None => self.take_lock(id).await?,
        };
        if let Some(s) = &ended {
            if is_indexed(s) {
                metrics::session_end_counted(reason);
            }
        }
        Ok(ended)
    }

    async fn customer_sessions(&self, customer_id: &str) -> StoreResult<Vec<Session>> {
        let now = now_millis();
        let key = self.keys.customer(customer_id);
        let reply = self.link.script(INDEX_MEMBERS.key(&key).arg(now)).await?;
        let flat = strings(&reply).unwrap_or_default();
        let members: Vec<(String, u64)> = flat
            .chunks_exact(2)
            .filter_map(|p| Some((p[0].clone(), p[1].parse::<f64>().ok()? as u64)))
            .collect();
        let fetched = join_all(members.iter().map(|(id, _)| self.fetch(id))).await;
        let mut out = Vec::with_capacity(members.len());
        let mut stale = Vec::new();
        for ((id, score), found) in members.iter().zip(fetched) {
            match found? {
                Some(s)
                    if s.moved_to().is_none() && s.customer_id.as_deref() == Some(customer_id) =>
                {
                    out.push(s)
                }
                // Gone, or now another customer's: drop the entry unless it was renewed meanwhile.
                _ => stale.push(self.zrem_if_score(key.clone(), id, *score)),
            }
        }
        let _ = join_all(stale).await;
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    async fn transfer(
        &self,
        old_id: &str,
        new: Session,
        grace: Duration,
        reason: EndReason,
    ) -> StoreResult<Option<Session>> {
        // The new session is written first: the old key never points at nothing.
        // With wait_for_replicas the new session is acknowledged by the replicas before the
        // old one is touched, so a refused rotation changes nothing.
        let written = self.write_new(&new).await?;
        let alias = (!grace.is_zero()).then(|| {
            // Redis expires keys on its own wall clock: the alias is on system time too.
            let mut a = Session::with_fixed_ttl_at(
                old_id.into(),
                new.flavor,
                new.owner.clone(),
                grace,
                now_millis(),
            );
            a.set_moved_to(Some((*new.id).into()));
            a
        });
        let old = match self.take(old_id, alias.as_ref()).await {
            Ok(Some(old)) => old,
            other => {
                // Lost the race (or failed): undo the new session.
                if written {
                    let _ = self.take(&new.id, None).await;
                }
                return other;
            }
        };
        if written {
            tokio::join!(self.unindex(&old), self.index(&new, false));
            self.near.put(&new);
            if is_indexed(&new) {
                metrics::session_created(new.flavor);
            }
        } else {
            self.unindex(&old).await;
        }
        if is_indexed(&old) {
            metrics::session_end_counted(reason);
        }
        Ok(Some(old))
    }

    async fn acquire_lock(
        &self,
        session: Session,
        limits: &HashMap<String, u64>,
        count: bool,
    ) -> StoreResult<LockOutcome> {
        let Some(lock) = session.lock() else {
            return Ok(LockOutcome::Refused {
                code: String::new(),
            });
        };
        let hold_prefix = self.keys.hold_prefix();
        let mut inv = ACQUIRE_LOCK.key(self.keys.lock(&session.id));
        inv.key(self.keys.lock_expiry());
        for h in &lock.holds {
            inv.key(format!("{hold_prefix}{}", h.code));
        }
        inv.arg(now_millis())
            .arg(&*session.id)
            .arg(self.keys.channel())
            .arg(self.invalidation(&session.id))
            .arg(&hold_prefix)
            .arg(lock.holds.len());
        for h in &lock.holds {
            let limit = limits
                .get(&h.code)
                .map_or(-1, |&l| i64::try_from(l).unwrap_or(i64::MAX));
            inv.arg(&h.code)
                .arg(h.quantity)
                .arg(h.credits)
                .arg(h.points)
                .arg(limit);
        }
        inv.arg(session.expires_at).arg(codec::to_fields(&session));
        let acquired = |v: &Value| match v {
            Value::Array(parts) => parts.first().and_then(int) == Some(1),
            _ => false,
        };
        let (reply, waited) = if count {
            self.link.script_replicated(&inv, acquired).await?
        } else {
            (self.link.script(&inv).await?, Ok(()))
        };
        let parts = match &reply {
            Value::Array(parts) => parts,
            _ => {
                return Err(StoreError::Unavailable(
                    "redis: unexpected lock reply".into(),
                ))
            }
        };
        if let Err(e) = waited {
            // Not acknowledged: a new lock is given back; a renewed one is left as it is.
            if parts
                .get(1)
                .and_then(|v| from_reply(&session.id, v))
                .is_none()
            {
                let _ = self.take_lock(&session.id).await;
            }
            return Err(e);
        }
        if parts.first().and_then(int) != Some(1) {
            let code = parts.get(1).and_then(codec::text).unwrap_or_default();
            return Ok(LockOutcome::Refused { code });
        }
        let replaced = parts.get(1).and_then(|v| from_reply(&session.id, v));
        let others = parts.get(2).map(totals).unwrap_or_default();
        self.near.put(&session);
        if replaced.is_none() && count {
            metrics::session_created(session.flavor);
        }
        Ok(LockOutcome::Acquired { replaced, others })
    }

    async fn locked_by_others(
        &self,
        codes: &[String],
        key: &str,
    ) -> StoreResult<Vec<LockedTotals>> {
        if codes.is_empty() {
            return Ok(Vec::new());
        }
        let prefix = self.keys.hold_prefix();
        let mut inv = LOCKED_BY_OTHERS.prepare_invoke();
        for c in codes {
            inv.key(format!("{prefix}{c}"));
        }
        inv.arg(now_millis()).arg(key);
        Ok(totals(&self.link.script(&inv).await?))
    }

    /// Ids of live sessions in one expiry index (members `ad\nid\n…`).
    async fn live_ids(&self, key: &str, member_is_id: bool) -> StoreResult<Vec<String>> {
        let reply = self
            .link
            .query(cmd("ZRANGEBYSCORE").arg(key).arg(now_millis()).arg("+inf"))
            .await?;
        Ok(strings(&reply)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                if member_is_id {
                    Some(m)
                } else {
                    codec::parse_expiry_member(&m).map(|e| e.id.to_string())
                }
            })
            .collect())
    }

    async fn all_sessions(&self) -> StoreResult<Vec<Session>> {
        let mut ids = Vec::new();
        for f in Flavor::ALL {
            ids.extend(self.live_ids(&self.keys.expiry(f), false).await?);
        }
        ids.extend(self.live_ids(&self.keys.lock_expiry(), true).await?);
        let mut out = Vec::with_capacity(ids.len());
        for found in join_all(ids.iter().map(|id| self.fetch(id))).await {
            out.extend(found?);
        }
        Ok(out)
    }

    async fn restore(&self, sessions: Vec<Session>) -> StoreResult<usize> {
        let now = now_millis();
        let mut restored = 0;
        for s in sessions.into_iter().filter(|s| s.is_live(now)) {
            if s.lock().is_some() {
                if let LockOutcome::Acquired { replaced: None, .. } =
                    self.acquire_lock_quietly(s).await?
                {
                    restored += 1;
                }
            } else if self.write_new(&s).await? {
                self.index(&s, false).await;
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// `acquire_lock` without limits or metrics (restoring).
    async fn acquire_lock_quietly(&self, s: Session) -> StoreResult<LockOutcome> {
        if self
            .link
            .query(cmd("EXISTS").arg(self.keys.lock(&s.id)))
            .await
            .ok()
            .and_then(|v| int(&v))
            == Some(1)
        {
            return Ok(LockOutcome::Refused {
                code: String::new(),
            });
        }
        self.acquire_lock(s, &HashMap::new(), false).await
    }

    async fn len(&self) -> StoreResult<u64> {
        let now = now_millis();
        let mut keys: Vec<String> = Flavor::ALL.iter().map(|f| self.keys.expiry(*f)).collect();
        keys.push(self.keys.lock_expiry());
        let mut total = 0u64;
        for k in keys {
            let v = self
                .link
                .query(cmd("ZCOUNT").arg(k).arg(now).arg("+inf"))
                .await?;
            total += int(&v).unwrap_or(0).max(0) as u64;
        }
        Ok(total)
    }
}

/// `{{q, c, p}, …}` from a lock script.
fn totals(v: &Value) -> Vec<LockedTotals> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .map(|t| match t {
            Value::Array(n) => LockedTotals {
                quantity: n.first().and_then(int).unwrap_or(0).max(0) as u64,
                credits: n.get(1).and_then(int).unwrap_or(0),
                points: n.get(2).and_then(int).unwrap_or(0),
            },
            _ => LockedTotals::default(),
        })
        .collect()
}

/// A patch as hash fields to set (`field, value, …`) and fields to delete.
fn patch_fields(p: &SessionPatch) -> (Vec<String>, Vec<String>) {
    let mut set = Vec::new();
    let mut del = Vec::new();
    let mut put = |k: &str, v: String| {
        set.push(k.to_string());
        set.push(v);
    };
    match &p.customer_id {
        Some(Some(c)) => put("c", c.clone()),
        Some(None) => del.push("c".to_string()),
        None => {}
    }
    for (k, v) in [
        ("ag", &p.agent_id),
        ("v", &p.visit_id),
        ("gv", &p.global_visit_id),
        ("t", &p.tenant_id),
    ] {
        if let Some(v) = v {
            put(k, v.clone());
        }
    }
    if let Some(li) = p.logged_in {
        put("li", if li { "1" } else { "0" }.to_string());
    }
    if let Some(v) = p.mode_of_sale_id {
        put("ms", v.to_string());
    }
    if let Some(v) = p.source_id {
        put("src", v.to_string());
    }
    (set, del)
}

/// A store call awaited in the caller's task, polled with the store's runtime as the current
/// one: what it starts (redis-rs reconnections, timers) belongs to the store's runtime, not to
/// the pingora service that happens to await it.
struct OnStoreRuntime<'a, F> {
    handle: &'a tokio::runtime::Handle,
    fut: std::pin::Pin<&'a mut F>,
}

impl<F: Future> Future for OnStoreRuntime<'_, F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let _entered = self.handle.enter();
        self.fut.as_mut().poll(cx)
    }
}

macro_rules! on_runtime {
    ($self:ident, $name:literal, |$inner:ident| $body:expr) => {
        $self
            .exec($name, move |$inner| Box::pin(async move { $body }))
            .await
    };
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ping(&self) -> StoreResult<()> {
        on_runtime!(self, "ping", |inner| inner
            .link
            .query(&cmd("PING"))
            .await
            .map(drop))
    }

    /// Unsubscribes from invalidations and stops the expiry sweep; calls still work.
    fn shutdown(&self, _settings: &crate::config::StoreSettings) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }

    async fn create(
        &self,
        session: Session,
        application_limit: Option<u64>,
    ) -> StoreResult<CreateOutcome> {
        if !self.creates_in_one_command() {
            return on_runtime!(self, "create", |inner| inner
                .create(session, application_limit)
                .await);
        }
        // One script writes the session and its index entries, so a caller that stops
        // waiting cannot leave half a create behind: it needs no task of its own. It still
        // runs in the store's runtime context (see `OnStoreRuntime`).
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Unavailable(
                "the redis store is shut down".into(),
            ));
        };
        let start = Instant::now();
        let create = std::pin::pin!(self.inner.create(session, application_limit));
        let result = OnStoreRuntime {
            handle: runtime.handle(),
            fut: create,
        }
        .await;
        metrics::store_operation(BACKEND, "create", start.elapsed().as_secs_f64());
        result
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        let id = id.to_string();
        on_runtime!(self, "get", |inner| inner.get(&id).await)
    }

    async fn touch(&self, id: &str) -> StoreResult<Option<Arc<Session>>> {
        let id = id.to_string();
        on_runtime!(self, "touch", |inner| inner
            .touch(&id)
            .await
            .map(|s| s.map(Arc::new)))
    }

    async fn update(&self, id: &str, patch: &SessionPatch) -> StoreResult<Option<Session>> {
        let (id, patch) = (id.to_string(), patch.clone());
        on_runtime!(self, "update", |inner| inner.update(&id, &patch).await)
    }

    async fn remove(&self, id: &str, reason: EndReason) -> StoreResult<Option<Session>> {
        let id = id.to_string();
        on_runtime!(self, "remove", |inner| inner.remove(&id, reason).await)
    }

    async fn customer_sessions(&self, customer_id: &str) -> StoreResult<Vec<Session>> {
        let customer = customer_id.to_string();
        on_runtime!(self, "customer_sessions", |inner| inner
            .customer_sessions(&customer)
            .await)
    }

    async fn transfer(
        &self,
        old_id: &str,
        new: Session,
        grace: Duration,
        reason: EndReason,
    ) -> StoreResult<Option<Session>> {
        let old_id = old_id.to_string();
        on_runtime!(self, "transfer", |inner| inner
            .transfer(&old_id, new, grace, reason)
            .await)
    }

    async fn acquire_lock(
        &self,
        session: Session,
        limits: &HashMap<String, u64>,
    ) -> StoreResult<LockOutcome> {
        let limits = limits.clone();
        on_runtime!(self, "acquire_lock", |inner| inner
            .acquire_lock(session, &limits, true)
            .await)
    }

    async fn locked_by_others(
        &self,
        codes: &[String],
        key: &str,
    ) -> StoreResult<Vec<LockedTotals>> {
        let (codes, key) = (codes.to_vec(), key.to_string());
        on_runtime!(self, "locked_by_others", |inner| inner
            .locked_by_others(&codes, &key)
            .await)
    }

    async fn all_sessions(&self) -> StoreResult<Vec<Session>> {
        on_runtime!(self, "all_sessions", |inner| inner.all_sessions().await)
    }

    async fn restore(&self, sessions: Vec<Session>) -> StoreResult<usize> {
        on_runtime!(self, "restore", |inner| inner.restore(sessions).await)
    }

    async fn session_count(&self) -> StoreResult<u64> {
        on_runtime!(self, "session_count", |inner| inner.len().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_become_field_changes() {
        let p = SessionPatch {
            customer_id: Some(None),
            agent_id: Some("a".into()),
            logged_in: Some(true),
            mode_of_sale_id: Some(-2),
            ..Default::default()
        };
        let (set, del) = patch_fields(&p);
        assert_eq!(set, ["ag", "a", "li", "1", "ms", "-2"]);
        assert_eq!(del, ["c"]);
        let (set, del) = patch_fields(&SessionPatch {
            customer_id: Some(Some("c1".into())),
            ..Default::default()
        });
        assert_eq!(
            (set, del),
            (vec!["c".to_string(), "c1".to_string()], vec![])
        );
        assert_eq!(patch_fields(&SessionPatch::default()), (vec![], vec![]));
    }

    #[test]
    fn lock_totals_from_replies() {
        let v = Value::Array(vec![
            Value::Array(vec![Value::Int(3), Value::Int(-5), Value::Int(7)]),
            Value::Nil,
        ]);
        assert_eq!(
            totals(&v),
            vec![
                LockedTotals {
                    quantity: 3,
                    credits: -5,
                    points: 7
                },
                LockedTotals::default()
            ]
        );
        assert!(totals(&Value::Nil).is_empty());
    }
}
