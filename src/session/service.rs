//! `SessionService`: every operation on sessions, with the rules of SPEC §3 (expiry policy,
//! isolation by credential, per-customer limits). Flavours, the proxy and the admin API call
//! this; only this calls the store.

use super::model::{EndReason, Flavor, Session, SessionPatch};
use crate::config::SessionSettings;
use crate::store::{
    CreateOutcome, IdentityTransfer, LockOutcome, SessionStore, StoreError, StoreResult,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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
}

impl SessionService {
    pub fn new(store: Arc<dyn SessionStore>, settings: SessionSettings) -> SessionService {
        SessionService { store, settings }
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// A fresh session with the configured idle and absolute timeouts.
    pub fn new_session(&self, id: String, flavor: Flavor, owner: Option<&str>) -> Session {
        Session::new(
            id,
            flavor,
            owner.map(str::to_string),
            self.settings.idle_timeout,
            self.settings.absolute_timeout,
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
        let outcome = self.store.create(session, application_limit).await?;
        if outcome == CreateOutcome::Created {
            if let Some(c) = customer {
                self.enforce_customer_limit(&c, &id).await?;
            }
        }
        Ok(outcome)
    }

    /// Ends the oldest sessions of a customer beyond `max_sessions_per_customer` (never `keep`).
    async fn enforce_customer_limit(&self, customer: &str, keep: &str) -> StoreResult<()> {
        let max = self.settings.max_sessions_per_customer;
        if max == 0 {
            return Ok(());
        }
        let sessions = self.store.customer_sessions(customer).await?;
        let excess = sessions.len().saturating_sub(max as usize);
        for s in sessions.iter().filter(|s| s.id != keep).take(excess) {
            self.store.remove(&s.id, EndReason::Evicted).await?;
        }
        Ok(())
    }

    /// Follows a transferred key in its grace period to the session it moved to.
    async fn follow(&self, s: Session) -> StoreResult<Option<Session>> {
        match &s.moved_to {
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
            Some(found) => match &found.moved_to {
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
        let updated = self.store.update(id, patch).await?;
        if let Some(u) = &updated {
            if let (Some(c), Some(Some(_))) = (&u.customer_id, &patch.customer_id) {
                self.enforce_customer_limit(c, &u.id).await?;
            }
        }
        Ok(updated)
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
        if s.moved_to.is_some() || !self.visible(caller, &s) {
            return Ok(None);
        }
        self.store.remove(id, reason).await
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
        if old.moved_to.is_some() || !self.visible(caller, &old) {
            return Ok(None);
        }
        let new = make_new(&old);
        let new_copy = new.clone();
        Ok(self
            .store
            .transfer(old_id, new, grace)
            .await?
            .map(|_| new_copy))
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
                Some(s) if s.moved_to.is_none() && self.visible(caller, &s) => {}
                _ => return Ok(unknown),
            }
        }
        self.store.transfer_identity(old_id, target_id, grace).await
    }

    /// Acquires (or overwrites) a lock session; see `SessionStore::acquire_lock`.
    pub async fn lock(
        &self,
        session: Session,
        limits: &HashMap<String, u64>,
    ) -> StoreResult<LockOutcome> {
        self.store.acquire_lock(session, limits).await
    }

    /// Live sessions of a customer, oldest first.
    pub async fn customer_sessions(&self, customer_id: &str) -> StoreResult<Vec<Session>> {
        self.store.customer_sessions(customer_id).await
    }

    /// Revokes every live session of a customer; returns how many ended.
    pub async fn revoke_customer(&self, customer_id: &str) -> StoreResult<usize> {
        let mut n = 0;
        for s in self.store.customer_sessions(customer_id).await? {
            if self
                .store
                .remove(&s.id, EndReason::Revoked)
                .await?
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}
