//! `SessionService`: every operation on sessions, with the rules of SPEC §3 (expiry policy,
//! isolation by credential, per-customer limits). Flavours, the proxy and the admin API call
//! this; only this calls the store. Time is its store's `Clock` (the system clock in
//! production).

use super::audit::{AuditAction, AuditEvent, AuditSink};
use super::clock::Clock;
use super::id::{new_id_like, new_lock_key};
use super::model::{intern, EndReason, Flavor, Lock, LockedTotals, Session, SessionPatch};
use crate::config::SessionSettings;
use crate::metrics;
use crate::store::{
    CreateOutcome, IdentityTransfer, LockOutcome, SessionStore, StoreError, StoreResult,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often a freshly drawn id may collide with a live one before `open_fresh` gives up
/// (never, in practice: ids are random and long).
const ID_ATTEMPTS: usize = 3;

/// The outcome of `SessionService::open_fresh`.
// `Opened` is the common case and is consumed at once; boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreshOpen {
    /// Stored under a fresh id; this is the session as stored.
    Opened(Session),
    /// The session's application already has its limit of live sessions.
    ApplicationFull,
    /// Every fresh id drawn collided with a live session.
    NoFreeId,
}

/// The outcome of `SessionService::upsert`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upsert {
    /// The caller's session of this flavour had the patch applied.
    Updated(Session),
    /// No session had the id: one was created under it with the patch's values.
    Created(Session),
    /// The id belongs to another flavour's session, or to a session the caller may not see.
    Taken,
    /// No session the caller may see has the id, and creating one was not allowed.
    NotFound,
}

/// The outcome of `SessionService::acquire_lock`.
// `Acquired` is the common case and is consumed at once; boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAcquire {
    /// The lock is held under `held.id`. `replaced` is the lock it overwrote, if any; `others`
    /// holds, per hold of the new lock (same order), what other live locks hold.
    Acquired {
        held: Session,
        replaced: Option<Session>,
        others: Vec<LockedTotals>,
    },
    /// `code` has no quantity left; nothing was changed.
    Refused { code: String },
    /// The key names a live session that is not a lock.
    KeyInUse,
}

/// Who is asking: a credential name (if any was presented and valid) and its admin right.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub name: Option<&'a str>,
    pub admin: bool,
}

impl<'a> Caller<'a> {
    pub const ANONYMOUS: Caller<'static> = Caller {
        name: None,
        admin: false,
    };

    pub fn named(name: &'a str, admin: bool) -> Caller<'a> {
        Caller {
            name: Some(name),
            admin,
        }
    }
}

pub struct SessionService {
    store: Arc<dyn SessionStore>,
    settings: SessionSettings,
    /// The store's clock: sessions are created on the time their store expires them by.
    clock: Clock,
    /// Where the life of each session is written down (SPEC §13.5), if anywhere.
    audit: Option<Arc<dyn AuditSink>>,
}

impl SessionService {
    pub fn new(store: Arc<dyn SessionStore>, settings: SessionSettings) -> SessionService {
        SessionService {
            clock: store.clock(),
            store,
            settings,
            audit: None,
        }
    }

    /// The same service, telling `sink` about every session it creates, moves or ends.
    pub fn with_audit(mut self, sink: Option<Arc<dyn AuditSink>>) -> SessionService {
        self.audit = sink;
        self
    }

    fn audit(&self, action: AuditAction, actor: Option<&str>, s: &Session, new_id: Option<&str>) {
        if let Some(sink) = &self.audit {
            sink.record(&AuditEvent {
                action,
                actor,
                flavor: s.flavor,
                session_id: &s.id,
                new_session_id: new_id,
                customer_id: s.customer_id.as_deref(),
            });
        }
    }

    /// The flavour of the live session with this id, whoever owns it, without recording a
    /// use: for routing a request (Tessitura's unencoded keys), never for answering one.
    pub async fn flavor_of(&self, id: &str) -> StoreResult<Option<Flavor>> {
        Ok(self.store.get(id).await?.map(|s| s.flavor))
    }

    /// `memory` or `redis` (trace attributes).
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A fresh session with the configured idle and absolute timeouts.
    pub fn new_session(&self, id: String, flavor: Flavor, owner: Option<&str>) -> Session {
        Session::new(
            id.into(),
            flavor,
            owner.map(intern),
            self.settings.idle_timeout,
            self.settings.absolute_timeout,
            self.clock.now_millis(),
        )
    }

    fn visible(&self, caller: &Caller<'_>, s: &Session) -> bool {
        !self.settings.isolate_by_credential
            || caller.admin
            || s.owner.is_none()
            || s.owner.as_deref() == caller.name
    }

    /// Stores a new session (see `SessionStore::create`), then applies the per-customer limit.
    pub async fn open(
        &self,
        session: Session,
        application_limit: Option<u64>,
    ) -> StoreResult<CreateOutcome> {
        let customer = session.customer_id.clone();
        let id = session.id.clone();
        let audited = self.audit.is_some().then(|| session.clone());
        let outcome = self.store.create(session, application_limit).await?;
        if outcome == CreateOutcome::Created {
            if let Some(s) = &audited {
                self.audit(AuditAction::Created, s.owner.as_deref(), s, None);
            }
            if let Some(c) = customer {
                self.enforce_customer_limit(&c, &id).await?;
            }
        }
        Ok(outcome)
    }

    /// Opens a session under a fresh id from `fresh_id`: `build` turns the id into the session
    /// to store. A collision with a live session draws another id (up to `ID_ATTEMPTS`).
    pub async fn open_fresh(
        &self,
        fresh_id: impl Fn() -> String,
        build: impl Fn(String) -> Session,
        application_limit: Option<u64>,
    ) -> StoreResult<FreshOpen> {
        for _ in 0..ID_ATTEMPTS {
            let session = build(fresh_id());
            let opened = session.clone();
            match self.open(session, application_limit).await? {
                CreateOutcome::Created => return Ok(FreshOpen::Opened(opened)),
                CreateOutcome::ApplicationFull => return Ok(FreshOpen::ApplicationFull),
                CreateOutcome::IdTaken => {}
            }
        }
        log::error!("{ID_ATTEMPTS} fresh session ids collided with live sessions");
        Ok(FreshOpen::NoFreeId)
    }

    /// Applies `patch` to the caller's `flavor` session `id`, or (with `create`) creates a
    /// `flavor` session under that id owned by the caller with the patch's values.
    ///
    /// A concurrent upsert of the same new id may create it between our look and our create;
    /// the second round then updates it (or finds it taken).
    pub async fn upsert(
        &self,
        caller: &Caller<'_>,
        id: &str,
        flavor: Flavor,
        patch: &SessionPatch,
        create: bool,
    ) -> StoreResult<Upsert> {
        for _ in 0..2 {
            match self.peek(caller, id).await? {
                Some(s) if s.flavor == flavor => match self.update(caller, id, patch).await? {
                    Some(updated) => return Ok(Upsert::Updated(updated)),
                    None => continue, // ended meanwhile
                },
                // Another API's session: its id is not free for this one.
                Some(_) => return Ok(Upsert::Taken),
                None => {}
            }
            if !create {
                // Someone else's session and an unknown id look alike here (SPEC §3).
                return Ok(Upsert::NotFound);
            }
            if self.exists(id).await? {
                // Either someone else's session, or one a concurrent upsert by this caller
                // created since our first look: the next round tells them apart.
                continue;
            }
            let mut session = self.new_session(id.to_string(), flavor, caller.name);
            patch.apply(&mut session);
            let created = session.clone();
            if self.open(session, None).await? == CreateOutcome::Created {
                return Ok(Upsert::Created(created));
            }
        }
        Ok(Upsert::Taken)
    }

    /// Whether any live session (of any owner) has this id.
    async fn exists(&self, id: &str) -> StoreResult<bool> {
        match self.store.get(id).await? {
            Some(found) => Ok(self.follow(found).await?.is_some()),
            None => Ok(false),
        }
    }

    /// Ends the oldest sessions of a customer beyond `max_sessions_per_customer` (never `keep`).
    async fn enforce_customer_limit(&self, customer: &str, keep: &str) -> StoreResult<()> {
        let max = self.settings.max_sessions_per_customer;
        if max == 0 {
            return Ok(());
        }
        let sessions = self.store.customer_sessions(customer).await?;
        let excess = sessions.len().saturating_sub(max as usize);
        for s in sessions.iter().filter(|s| &*s.id != keep).take(excess) {
            if let Some(ended) = self.store.remove(&s.id, EndReason::Evicted).await? {
                self.audit(AuditAction::Evicted, None, &ended, None);
            }
        }
        Ok(())
    }

    /// Follows a transferred key in its grace period to the session it moved to.
    async fn follow(&self, s: Session) -> StoreResult<Option<Session>> {
        match s.moved_to() {
            None => Ok(Some(s)),
            Some(target) => self.store.get(target).await,
        }
    }

    /// The session as `caller` may see it, recording a use. Hidden sessions are `None`.
    pub async fn get(&self, caller: &Caller<'_>, id: &str) -> StoreResult<Option<Arc<Session>>> {
        let Some(found) = self.store.get(id).await? else {
            return Ok(None);
        };
        let Some(s) = self.follow(found).await? else {
            return Ok(None);
        };
        if !self.visible(caller, &s) {
            return Ok(None);
        }
        self.store.touch(&s.id).await
    }

    /// The session as `caller` may see it, without recording a use.
    pub async fn peek(&self, caller: &Caller<'_>, id: &str) -> StoreResult<Option<Session>> {
        let Some(found) = self.store.get(id).await? else {
            return Ok(None);
        };
        Ok(self
            .follow(found)
            .await?
            .filter(|s| self.visible(caller, s)))
    }

    /// Resolves a forwarded request's session id, recording a use: the id alone is the
    /// capability (SPEC §12). `None` when no live session has that id.
    pub async fn resolve(&self, id: &str) -> StoreResult<Option<Arc<Session>>> {
        match self.store.touch(id).await? {
            // A transferred key in its grace period resolves to the session it moved to.
            Some(found) => match found.moved_to() {
                Some(target) => self.store.touch(target).await,
                None => Ok(Some(found)),
            },
            None => Ok(None),
        }
    }

    /// Changes a session's identity if `caller` may see it.
    pub async fn update(
        &self,
        caller: &Caller<'_>,
        id: &str,
        patch: &SessionPatch,
    ) -> StoreResult<Option<Session>> {
        let Some(s) = self.peek(caller, id).await? else {
            return Ok(None);
        };
        let updated = self.store.update(&s.id, patch).await?;
        if let Some(u) = &updated {
            if let (Some(c), Some(Some(_))) = (&u.customer_id, &patch.customer_id) {
                self.enforce_customer_limit(c, &u.id).await?;
            }
        }
        Ok(updated)
    }

    /// Changes a session found by a forwarded request (identity assertion): no isolation.
    pub async fn update_resolved(
        &self,
        id: &str,
        patch: &SessionPatch,
    ) -> StoreResult<Option<Session>> {
        let mut updated = self.store.update(id, patch).await?;
        // Rotated (or transferred) since the request resolved it: the change belongs to the
        // session the id moved to, not to the alias it left behind.
        if let Some(target) = updated
            .as_ref()
            .and_then(|s| s.moved_to().map(str::to_string))
        {
            updated = self.store.update(&target, patch).await?;
        }
        if let Some(u) = &updated {
            if let (Some(c), Some(Some(_))) = (&u.customer_id, &patch.customer_id) {
                self.enforce_customer_limit(c, &u.id).await?;
            }
        }
        Ok(updated)
    }

    /// Gives the live session `id` a new id of the same kind (SPEC §13.2: rotation at login)
    /// with the same identity and deadlines; `id` resolves to it for `rotation_grace`, then
    /// ends (reason `rotated`). Returns the session's id from now on: the new one, or the one
    /// a concurrent rotation (another request, another replica) already gave it, so every
    /// racer tells its client the same id. `None` when `id` is not a live session, or is a
    /// Voucherify lock (its key is the redemption's handle and the quantity ledger's).
    pub async fn rotate(&self, id: &str) -> StoreResult<Option<String>> {
        let Some(old) = self.store.get(id).await? else {
            return Ok(None);
        };
        if old.lock().is_some() {
            return Ok(None);
        }
        if let Some(current) = old.moved_to() {
            return Ok(Some(current.to_string()));
        }
        let mut new = old;
        new.id = new_id_like(new.flavor).into();
        let new_id = new.id.clone();
        let grace = self.settings.rotation_grace;
        if let Some(old) = self
            .store
            .transfer(id, new, grace, EndReason::Rotated)
            .await?
        {
            metrics::session_rotated();
            self.audit(AuditAction::Rotated, None, &old, Some(&new_id));
            return Ok(Some(new_id.to_string()));
        }
        // Lost to a concurrent rotation: follow it.
        Ok(self
            .store
            .get(id)
            .await?
            .and_then(|s| s.moved_to().map(str::to_string)))
    }

    /// Ends a session `caller` may see. Of concurrent closes exactly one gets `Some`.
    pub async fn close(
        &self,
        caller: &Caller<'_>,
        id: &str,
        reason: EndReason,
    ) -> StoreResult<Option<Session>> {
        let Some(s) = self.store.get(id).await? else {
            return Ok(None);
        };
        if s.moved_to().is_some() || !self.visible(caller, &s) {
            return Ok(None);
        }
        let ended = self.store.remove(id, reason).await?;
        if let Some(s) = &ended {
            let action = match reason {
                EndReason::Revoked => AuditAction::Revoked,
                EndReason::Released | EndReason::Redeemed => AuditAction::Released,
                _ => AuditAction::Closed,
            };
            self.audit(action, caller.name, s, None);
        }
        Ok(ended)
    }

    /// Moves `old_id`'s identity onto a new session built by `make_new` from the old one.
    /// Returns the new session, or `None` if `old_id` is unknown to `caller`.
    pub async fn transfer(
        &self,
        caller: &Caller<'_>,
        old_id: &str,
        grace: Duration,
        make_new: impl FnOnce(&Session) -> Session,
    ) -> StoreResult<Option<Session>> {
        let Some(old) = self.store.get(old_id).await? else {
            return Ok(None);
        };
        if old.moved_to().is_some() || !self.visible(caller, &old) {
            return Ok(None);
        }
        let new = make_new(&old);
        let new_copy = new.clone();
        let ended = self
            .store
            .transfer(old_id, new, grace, EndReason::Transferred)
            .await?;
        if let Some(old) = &ended {
            self.audit(
                AuditAction::Transferred,
                caller.name,
                old,
                Some(&new_copy.id),
            );
        }
        Ok(ended.map(|_| new_copy))
    }

    /// Moves `old_id`'s identity onto the existing session `target_id` and ends `old_id`
    /// (see `SessionStore::transfer_identity`). Sessions hidden from `caller` are unknown.
    pub async fn transfer_identity(
        &self,
        caller: &Caller<'_>,
        old_id: &str,
        target_id: &str,
        grace: Duration,
    ) -> StoreResult<IdentityTransfer> {
        for (id, unknown) in [
            (old_id, IdentityTransfer::OldUnknown),
            (target_id, IdentityTransfer::TargetUnknown),
        ] {
            match self.store.get(id).await? {
                Some(s) if s.moved_to().is_none() && self.visible(caller, &s) => {}
                _ => return Ok(unknown),
            }
        }
        let old = match &self.audit {
            Some(_) => self.store.get(old_id).await?,
            None => None,
        };
        let outcome = self
            .store
            .transfer_identity(old_id, target_id, grace)
            .await?;
        if let (IdentityTransfer::Moved, Some(old)) = (&outcome, &old) {
            self.audit(AuditAction::Transferred, caller.name, old, Some(target_id));
        }
        Ok(outcome)
    }

    /// Acquires a Voucherify lock for `lock.holds` under `limits` (code -> quantity), lasting
    /// `ttl`. With `key`, a live lock under that key is overwritten (it keeps the owner who
    /// created it, so they may still release it); without, a fresh lock key names a new one.
    pub async fn acquire_lock(
        &self,
        key: Option<&str>,
        owner: &str,
        lock: Lock,
        ttl: Duration,
        limits: &HashMap<String, u64>,
    ) -> StoreResult<LockAcquire> {
        let flavor = Flavor::Voucherify;
        let (key, owner) = match key {
            None => (new_lock_key().into(), intern(owner)),
            Some(key) => match self.store.get(key).await? {
                Some(s) if s.flavor == flavor && s.lock().is_some() => {
                    (key.into(), s.owner.clone().unwrap_or_else(|| intern(owner)))
                }
                Some(_) => return Ok(LockAcquire::KeyInUse),
                None => (key.into(), intern(owner)),
            },
        };
        let now = self.clock.now_millis();
        let mut session: Session = Session::with_fixed_ttl_at(key, flavor, Some(owner), ttl, now);
        session.set_lock(Some(lock));
        let held = session.clone();
        Ok(match self.store.acquire_lock(session, limits).await? {
            LockOutcome::Acquired { replaced, others } => {
                if replaced.is_none() {
                    self.audit(AuditAction::Created, held.owner.as_deref(), &held, None);
                }
                LockAcquire::Acquired {
                    held,
                    replaced,
                    others,
                }
            }
            LockOutcome::Refused { code } => LockAcquire::Refused { code },
        })
    }

    /// Undoes `acquire_lock` (the flavour's guard calls it when the app refuses the request,
    /// or on drop if the request never got an answer): removes the lock `held`, or puts back
    /// the live lock it `replaced`
    /// (if its units are still free; otherwise the key ends). A lock a concurrent acquisition
    /// has overwritten since is not ours to undo and stays.
    pub async fn roll_back_lock(
        &self,
        held: &Session,
        replaced: Option<Session>,
        limits: &HashMap<String, u64>,
    ) -> StoreResult<()> {
        match self.store.get(&held.id).await? {
            Some(current)
                if current.created_at == held.created_at && current.lock() == held.lock() => {}
            _ => return Ok(()),
        }
        if let Some(old) = replaced.filter(|s| s.is_live(self.clock.now_millis())) {
            if let LockOutcome::Acquired { .. } = self.store.acquire_lock(old, limits).await? {
                return Ok(());
            }
        }
        if let Some(ended) = self.store.remove(&held.id, EndReason::Released).await? {
            self.audit(AuditAction::Released, None, &ended, None);
        }
        Ok(())
    }

    /// Ends the lock `key` after a successful redemption used it (the key is the capability,
    /// as for any forwarded request). Whether a lock ended.
    pub async fn release_redeemed(&self, key: &str) -> StoreResult<bool> {
        match self.store.get(key).await? {
            Some(s) if s.flavor == Flavor::Voucherify && s.lock().is_some() => {
                let ended = self.store.remove(key, EndReason::Redeemed).await?;
                if let Some(s) = &ended {
                    self.audit(AuditAction::Released, None, s, None);
                }
                Ok(ended.is_some())
            }
            _ => Ok(false),
        }
    }

    /// What live locks other than `key` hold on each of `codes`.
    pub async fn locked_by_others(
        &self,
        codes: &[String],
        key: &str,
    ) -> StoreResult<Vec<LockedTotals>> {
        self.store.locked_by_others(codes, key).await
    }

    /// Live sessions of a customer, oldest first.
    pub async fn customer_sessions(&self, customer_id: &str) -> StoreResult<Vec<Session>> {
        self.store.customer_sessions(customer_id).await
    }

    /// Revokes every live session of a customer (at `actor`'s request); returns how many ended.
    pub async fn revoke_customer(&self, actor: &str, customer_id: &str) -> StoreResult<usize> {
        let mut n = 0;
        for s in self.store.customer_sessions(customer_id).await? {
            if let Some(ended) = self.store.remove(&s.id, EndReason::Revoked).await? {
                self.audit(AuditAction::Revoked, Some(actor), &ended, None);
                n += 1;
            }
        }
        Ok(n)
    }

    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{CodeHold, TtlUnit};
    use crate::store::memory::MemoryStore;

    fn service(isolate: bool) -> SessionService {
        let settings = SessionSettings {
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: Duration::from_secs(600),
            max_sessions: 1000,
            max_sessions_per_customer: 0,
            isolate_by_credential: isolate,
            rotate_on_login: crate::config::RotateOnLogin::Cookie,
            rotation_grace: Duration::from_secs(10),
        };
        SessionService::new(Arc::new(MemoryStore::new(1000)), settings)
    }

    fn lock(code: &str, quantity: u64) -> Lock {
        Lock {
            holds: vec![CodeHold {
                code: code.into(),
                quantity,
                credits: 0,
                points: 0,
            }],
            ttl: 1,
            ttl_unit: TtlUnit::Hours,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    async fn acquire(s: &SessionService, key: Option<&str>, owner: &str, q: u64) -> LockAcquire {
        let limits = HashMap::from([("CODE".to_string(), 3)]);
        s.acquire_lock(key, owner, lock("CODE", q), HOUR, &limits)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn rotation_keeps_locks_and_an_assertion_on_a_rotated_id_reaches_the_new_session() {
        let s = service(true);
        // A Voucherify lock's key is the redemption's handle: it never rotates.
        let LockAcquire::Acquired { held, .. } = acquire(&s, None, "pos", 1).await else {
            panic!("lock refused");
        };
        assert_eq!(s.rotate(&held.id).await.unwrap(), None);
        assert!(s.resolve(&held.id).await.unwrap().is_some());

        let old = s.new_session("old".into(), Flavor::KnowledgeCenter, Some("web"));
        s.open(old, None).await.unwrap();
        let new = s.rotate("old").await.unwrap().expect("rotated");
        assert_ne!(new, "old");
        // A login answered for a request that still resolved the old id lands on the new one.
        let login = SessionPatch {
            customer_id: Some(Some("cust".into())),
            logged_in: Some(true),
            ..Default::default()
        };
        let updated = s.update_resolved("old", &login).await.unwrap().unwrap();
        assert_eq!(*updated.id, new);
        assert_eq!(
            s.resolve(&new)
                .await
                .unwrap()
                .unwrap()
                .customer_id
                .as_deref(),
            Some("cust")
        );
        // The alias left behind keeps resolving to the session, and does not rotate again.
        assert_eq!(
            s.rotate("old").await.unwrap().as_deref(),
            Some(new.as_str())
        );
    }

    #[tokio::test]
    async fn open_fresh_retries_a_taken_id() {
        let s = service(true);
        s.open(s.new_session("taken".into(), Flavor::Admin, None), None)
            .await
            .unwrap();
        let ids = std::sync::Mutex::new(vec!["free", "taken"]);
        let fresh = || ids.lock().unwrap().pop().unwrap_or("none").to_string();
        let build = |id| s.new_session(id, Flavor::Admin, Some("web"));
        match s.open_fresh(fresh, build, None).await.unwrap() {
            FreshOpen::Opened(opened) => assert_eq!(&*opened.id, "free"),
            other => panic!("{other:?}"),
        }
        let always_taken = || "taken".to_string();
        assert_eq!(
            s.open_fresh(always_taken, build, None).await.unwrap(),
            FreshOpen::NoFreeId
        );
    }

    #[tokio::test]
    async fn open_fresh_refuses_a_full_application() {
        let s = service(true);
        let build = |id| {
            let mut session = s.new_session(id, Flavor::Spreadsheetweb, Some("web"));
            session.application_key = Some("app".into());
            session
        };
        let fresh = crate::session::id::new_uuid;
        assert!(matches!(
            s.open_fresh(fresh, build, Some(1)).await.unwrap(),
            FreshOpen::Opened(_)
        ));
        assert_eq!(
            s.open_fresh(fresh, build, Some(1)).await.unwrap(),
            FreshOpen::ApplicationFull
        );
    }

    #[tokio::test]
    async fn upsert_updates_creates_and_refuses() {
        let s = service(true);
        let (web, other) = (Caller::named("web", false), Caller::named("other", false));
        let kc = Flavor::KnowledgeCenter;
        let patch = SessionPatch {
            agent_id: Some("a1".into()),
            ..SessionPatch::default()
        };
        assert_eq!(
            s.upsert(&web, "id-1", kc, &patch, false).await.unwrap(),
            Upsert::NotFound
        );
        let Upsert::Created(created) = s.upsert(&web, "id-1", kc, &patch, true).await.unwrap()
        else {
            panic!("not created");
        };
        assert_eq!(
            (created.owner.as_deref(), created.agent_id.as_deref()),
            (Some("web"), Some("a1"))
        );
        let visit = SessionPatch {
            visit_id: Some("v1".into()),
            ..SessionPatch::default()
        };
        let Upsert::Updated(updated) = s.upsert(&web, "id-1", kc, &visit, true).await.unwrap()
        else {
            panic!("not updated");
        };
        assert_eq!(
            (updated.agent_id.as_deref(), updated.visit_id.as_deref()),
            (Some("a1"), Some("v1"))
        );
        // Another owner's session: hidden, and its id is not free.
        assert_eq!(
            s.upsert(&other, "id-1", kc, &visit, true).await.unwrap(),
            Upsert::Taken
        );
        assert_eq!(
            s.upsert(&other, "id-1", kc, &visit, false).await.unwrap(),
            Upsert::NotFound
        );
        // Another flavour's session.
        s.open(
            s.new_session("tess".into(), Flavor::Tessitura, Some("web")),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            s.upsert(&web, "tess", kc, &visit, true).await.unwrap(),
            Upsert::Taken
        );
    }

    #[tokio::test]
    async fn locks_overwrite_keep_their_owner_and_roll_back() {
        let s = service(true);
        let LockAcquire::Acquired {
            held: first,
            replaced: None,
            ..
        } = acquire(&s, None, "web", 2).await
        else {
            panic!("first lock");
        };
        assert!(first.id.starts_with("ssn_"));
        // Overwriting keeps the creator and reports what it replaced.
        let LockAcquire::Acquired {
            held: second,
            replaced: Some(replaced),
            ..
        } = acquire(&s, Some(&first.id), "other", 1).await
        else {
            panic!("overwrite");
        };
        assert_eq!(second.owner.as_deref(), Some("web"));
        assert_eq!(replaced.lock(), first.lock());
        // Rolling the overwrite back puts the first lock back.
        let limits = HashMap::from([("CODE".to_string(), 3)]);
        s.roll_back_lock(&second, Some(replaced), &limits)
            .await
            .unwrap();
        let restored = s.store.get(&first.id).await.unwrap().expect("restored");
        assert_eq!(restored.lock(), first.lock());
        // Rolling back a lock without a predecessor ends it.
        s.roll_back_lock(&restored, None, &limits).await.unwrap();
        assert_eq!(s.store.get(&first.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn roll_back_leaves_a_lock_overwritten_since() {
        let s = service(true);
        let limits = HashMap::from([("CODE".to_string(), 3)]);
        let LockAcquire::Acquired { held: ours, .. } = acquire(&s, Some("k1"), "web", 1).await
        else {
            panic!("lock");
        };
        let LockAcquire::Acquired { held: theirs, .. } = acquire(&s, Some("k1"), "web", 2).await
        else {
            panic!("overwrite");
        };
        s.roll_back_lock(&ours, None, &limits).await.unwrap();
        let current = s.store.get("k1").await.unwrap().expect("still there");
        assert_eq!(current.lock(), theirs.lock());
    }

    #[tokio::test]
    async fn lock_refusals_and_key_conflicts() {
        let s = service(true);
        assert!(matches!(
            acquire(&s, Some("k1"), "web", 3).await,
            LockAcquire::Acquired { .. }
        ));
        assert_eq!(
            acquire(&s, Some("k2"), "web", 1).await,
            LockAcquire::Refused {
                code: "CODE".into()
            }
        );
        s.open(s.new_session("plain".into(), Flavor::Admin, None), None)
            .await
            .unwrap();
        assert_eq!(
            acquire(&s, Some("plain"), "web", 1).await,
            LockAcquire::KeyInUse
        );
        let others = s
            .locked_by_others(&["CODE".to_string()], "k2")
            .await
            .unwrap();
        assert_eq!(others[0].quantity, 3);
        let own = s.locked_by_others(&["CODE".to_string()], "k1").await;
        assert_eq!(
            own.unwrap()[0].quantity,
            0,
            "a lock's own units are not others'"
        );
    }

    #[tokio::test]
    async fn redeeming_releases_only_locks() {
        let s = service(true);
        acquire(&s, Some("k1"), "web", 1).await;
        s.open(s.new_session("plain".into(), Flavor::Admin, None), None)
            .await
            .unwrap();
        assert!(!s.release_redeemed("plain").await.unwrap());
        assert!(s.store.get("plain").await.unwrap().is_some());
        assert!(s.release_redeemed("k1").await.unwrap());
        assert!(!s.release_redeemed("k1").await.unwrap());
        assert_eq!(s.store.get("k1").await.unwrap(), None);
    }
}
