//! The Redis store's indexes (see docs/redis.md): per flavour an expiry index (members
//! `expires_at`-scored, read by the sweep and the counts), per customer and per application a
//! set of session ids scored by absolute deadline. They live in other slots than the sessions,
//! so they are kept by separate commands, in an order that keeps each a superset of the
//! truth; every reader checks what it finds.

use super::codec::{expiry_member, int, is_indexed};
use super::scripts::ZREM_IF_SCORE;
use super::Inner;
use crate::session::Session;
use crate::store::StoreResult;
use futures_util::future::join_all;
use redis::{cmd, Value};

/// Index entries `create` added alongside a new session: `None` where it added none, else
/// whether the entry was added (`Ok(false)`: `NX` found one there).
#[derive(Default)]
pub(super) struct NewEntries {
    expiry: Option<bool>,
    customer: Option<StoreResult<bool>>,
    application: Option<StoreResult<bool>>,
}

impl NewEntries {
    fn failed(&self) -> bool {
        self.expiry == Some(false)
            || matches!(self.customer, Some(Err(_)))
            || matches!(self.application, Some(Err(_)))
    }
}

fn zadd_nx(key: &str, score: u64, member: &str) -> redis::Cmd {
    let mut c = cmd("ZADD");
    c.arg(key).arg("NX").arg(score).arg(member);
    c
}

pub(super) fn zadd(key: &str, score: u64, member: &str) -> redis::Cmd {
    let mut c = cmd("ZADD");
    c.arg(key).arg(score).arg(member);
    c
}

impl Inner {
    /// Adds a stored session to the customer, application and expiry indexes.
    pub(super) async fn index(&self, s: &Session, skip_application: bool) {
        if !is_indexed(s) || s.lock().is_some() {
            return;
        }
        let mut cmds = vec![zadd(
            &self.keys.expiry(s.flavor),
            s.expires_at,
            &expiry_member(s),
        )];
        if let Some(c) = &s.customer_id {
            cmds.push(zadd(&self.keys.customer(c), s.absolute_deadline, &s.id));
        }
        if let (Some(a), false) = (&s.application_key, skip_application) {
            cmds.push(zadd(&self.keys.application(a), s.absolute_deadline, &s.id));
        }
        for r in join_all(cmds.iter().map(|c| self.link.query(c))).await {
            if let Err(e) = r {
                log::warn!(
                    "redis store: index not updated for {}: {e}",
                    crate::session::id::redact(&s.id)
                );
            }
        }
    }

    /// The index entries of a session being created, sent together with its write (see
    /// `create`). Customer and application entries are added only where the id has none
    /// (`NX`): an entry that is there already may belong to a live session under the same id,
    /// which a refused create must not change. Says which were added.
    pub(super) async fn index_new(&self, s: &Session, skip_application: bool) -> NewEntries {
        if !is_indexed(s) || s.lock().is_some() {
            return NewEntries::default();
        }
        let expiry = zadd(&self.keys.expiry(s.flavor), s.expires_at, &expiry_member(s));
        let by_customer = s
            .customer_id
            .as_ref()
            .map(|c| zadd_nx(&self.keys.customer(c), s.absolute_deadline, &s.id));
        let by_application = match (&s.application_key, skip_application) {
            (Some(a), false) => Some(zadd_nx(
                &self.keys.application(a),
                s.absolute_deadline,
                &s.id,
            )),
            _ => None,
        };
        let added = |cmd: Option<redis::Cmd>| async move {
            match cmd {
                Some(c) => Some(self.link.query(&c).await.map(|v| int(&v) == Some(1))),
                None => None,
            }
        };
        let (expiry, customer, application) = tokio::join!(
            self.link.query(&expiry),
            added(by_customer),
            added(by_application)
        );
        NewEntries {
            expiry: Some(expiry.is_ok()),
            customer,
            application,
        }
    }

    /// After `index_new`: for a session that was stored, replaces entries `NX` found (left by
    /// an ended session under the same id); for one that was not, takes back what was added.
    pub(super) async fn settle_new_entries(&self, s: &Session, entries: NewEntries, stored: bool) {
        let mut failed = entries.failed();
        let fix = |key: Option<String>, added: Option<StoreResult<bool>>| async move {
            match (key, added) {
                (Some(key), Some(Ok(false))) if stored => self
                    .link
                    .query(&zadd(&key, s.absolute_deadline, &s.id))
                    .await
                    .is_ok(),
                (Some(key), Some(Ok(true))) if !stored => self
                    .zrem_if_score(key, &s.id, s.absolute_deadline)
                    .await
                    .is_ok(),
                _ => true,
            }
        };
        let expiry = async {
            if stored || entries.expiry.is_none() {
                return true;
            }
            let mut zrem = cmd("ZREM");
            zrem.arg(self.keys.expiry(s.flavor)).arg(expiry_member(s));
            self.link.query(&zrem).await.is_ok()
        };
        let (e, c, a) = tokio::join!(
            expiry,
            fix(
                s.customer_id.as_ref().map(|c| self.keys.customer(c)),
                entries.customer
            ),
            fix(
                s.application_key.as_ref().map(|a| self.keys.application(a)),
                entries.application
            )
        );
        failed |= !(e && c && a);
        if failed && stored {
            log::warn!(
                "redis store: index not updated for {}",
                crate::session::id::redact(&s.id)
            );
        } else if failed {
            // No session was created (issue 19): only entries added for it may be left over,
            // and the index sweep or their readers drop them.
            log::debug!(
                "redis store: a create that stored nothing left index entries for {}",
                crate::session::id::redact(&s.id)
            );
        }
    }

    /// Gives back the application slot `create` reserved for a session that was not stored.
    /// Best effort: a failure leaves an entry the index sweep drops at its deadline.
    pub(super) async fn release_reservation(&self, session: &Session) {
        let app = session.application_key.as_deref().unwrap_or_default();
        let _ = self
            .zrem_if_score(
                self.keys.application(app),
                &session.id,
                session.absolute_deadline,
            )
            .await;
    }

    pub(super) async fn zrem_if_score(
        &self,
        key: String,
        member: &str,
        score: u64,
    ) -> StoreResult<Value> {
        self.link
            .script(ZREM_IF_SCORE.key(key).arg(member).arg(score))
            .await
    }

    /// Takes an ended session out of the indexes; entries of a newer session under the same
    /// id (another absolute deadline) stay.
    pub(super) async fn unindex(&self, s: &Session) {
        if !is_indexed(s) || s.lock().is_some() {
            return;
        }
        let mut zrem = cmd("ZREM");
        zrem.arg(self.keys.expiry(s.flavor)).arg(expiry_member(s));
        let expiry = self.link.query(&zrem);
        let customer = async {
            match &s.customer_id {
                Some(c) => self
                    .zrem_if_score(self.keys.customer(c), &s.id, s.absolute_deadline)
                    .await
                    .map(drop),
                None => Ok(()),
            }
        };
        let app = async {
            match &s.application_key {
                Some(a) => self
                    .zrem_if_score(self.keys.application(a), &s.id, s.absolute_deadline)
                    .await
                    .map(drop),
                None => Ok(()),
            }
        };
        let (e, c, a) = tokio::join!(expiry, customer, app);
        if e.is_err() || c.is_err() || a.is_err() {
            log::warn!(
                "redis store: index cleanup failed for {}",
                crate::session::id::redact(&s.id)
            );
        }
    }

    /// Moves index entries after an update (customer changed, expiry extended).
    pub(super) async fn reindex(&self, before: &Session, after: &Session) {
        if before.customer_id != after.customer_id {
            // Add to the new customer first, so the session is always findable.
            if let Some(c) = &after.customer_id {
                let _ = self
                    .link
                    .query(&zadd(
                        &self.keys.customer(c),
                        after.absolute_deadline,
                        &after.id,
                    ))
                    .await;
            }
            if let Some(c) = &before.customer_id {
                let _ = self
                    .zrem_if_score(self.keys.customer(c), &before.id, before.absolute_deadline)
                    .await;
            }
        }
        let key = self.keys.expiry(after.flavor);
        let (old, new) = (expiry_member(before), expiry_member(after));
        if old != new {
            let _ = self.link.query(&zadd(&key, after.expires_at, &new)).await;
            let _ = self.link.query(cmd("ZREM").arg(&key).arg(&old)).await;
        } else {
            let mut c = cmd("ZADD");
            c.arg(&key)
                .arg("XX")
                .arg("GT")
                .arg(after.expires_at)
                .arg(&new);
            let _ = self.link.query(&c).await;
        }
    }
}
