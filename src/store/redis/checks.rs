//! What the store checks about the Redis it talks to (SPEC §13.4, issues 18 and 19):
//!
//! * `at_start`: one round of commands before the sidecar serves. Refused credentials
//!   (WRONGPASS, NOAUTH) or a user without a command the store needs (NOPERM) stop the start
//!   with an error naming the user, never the password. An unreachable Redis is logged (one
//!   WARN) and only delays readiness: it may come up after the sidecar.
//! * `check_epoch`: a marker key (`<key_prefix>epoch`, a random value written with `SET NX`
//!   when the store first reaches a Redis without one) tells a Redis that lost its data (a
//!   restart without persistence, a FLUSHALL, a new empty instance) from one that kept it. A
//!   marker that vanished or changed is counted in `store_resets_total` and logged once per
//!   replica; the near cache is dropped with it. A failover to a replica keeps the marker, so
//!   it is not a reset.

use super::scripts::PROBE;
use super::Inner;
use crate::metrics;
use crate::session::{id::new_uuid, now_millis};
use crate::store::StoreError;
use redis::cmd;
use std::time::{Duration, Instant};

/// Redis's words for refused credentials.
pub(super) fn is_auth_failure(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    [
        "wrongpass",
        "noauth",
        "invalid username-password",
        "authentication",
    ]
    .iter()
    .any(|w| e.contains(w))
}

/// Redis's words for a missing ACL permission (a command, a key or a channel), directly or
/// inside a script.
pub(super) fn is_permission_failure(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    e.contains("noperm")
        || e.contains("no permissions")
        || e.contains("user executing the script can't run")
}

fn who(inner: &Inner) -> String {
    match &inner.settings.username {
        Some(u) => format!("user \"{u}\""),
        None => "user \"default\"".to_string(),
    }
}

/// Runs `check` on the store's runtime from a plain thread (the caller may itself be inside
/// another runtime, where blocking is not allowed).
pub(super) fn at_start(
    runtime: &tokio::runtime::Handle,
    inner: &std::sync::Arc<Inner>,
) -> Result<(), String> {
    let (handle, inner) = (runtime.clone(), inner.clone());
    std::thread::spawn(move || handle.block_on(check(&inner)))
        .join()
        .unwrap_or_else(|_| Err("the redis start-up check panicked".into()))
}

async fn check(inner: &Inner) -> Result<(), String> {
    let where_ = inner.settings.describe();
    if inner.settings.sentinel() {
        // The follower task asks the sentinels; give it a moment before the first command.
        let deadline = Instant::now() + inner.settings.timeout * 2 + Duration::from_millis(500);
        while inner.link.master().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let unreachable = |e: &StoreError| {
        log::warn!(
            "redis store: Redis ({where_}) is unreachable at start-up: {e}; /readyz answers \
             503 until it answers"
        );
        Ok(())
    };
    if let Err(e) = inner.link.query(&cmd("PING")).await {
        let StoreError::Unavailable(why) = &e;
        if is_auth_failure(why) {
            return Err(format!(
                "store.redis: Redis ({where_}) refused {}: wrong password or unknown user \
                 (check store.redis.username and the file named by store.redis.password_file)",
                who(inner)
            ));
        }
        if is_permission_failure(why) {
            return Err(permission_error(inner, why));
        }
        return unreachable(&e);
    }
    let probe = inner.keys.probe();
    let mut inv = PROBE.key(format!("{probe}h"));
    inv.key(format!("{probe}z"))
        .arg(now_millis() + 60_000)
        .arg(inner.keys.channel());
    let direct = [
        cmd("ZCOUNT").arg(format!("{probe}z")).arg(0).arg(0).clone(),
        cmd("EXISTS").arg(format!("{probe}h")).clone(),
    ];
    let mut outcome = inner.link.script(&inv).await.map(drop);
    for c in &direct {
        if outcome.is_ok() {
            outcome = inner.link.query(c).await.map(drop);
        }
    }
    if outcome.is_ok() {
        outcome = check_epoch(inner).await;
    }
    if outcome.is_ok() {
        outcome = subscribe_allowed(inner).await;
    }
    match outcome {
        Ok(()) => {
            log::info!(
                "redis store: connected to Redis ({where_}) as {}",
                who(inner)
            );
            Ok(())
        }
        Err(StoreError::Unavailable(why)) if is_permission_failure(&why) => {
            Err(permission_error(inner, &why))
        }
        Err(e) => unreachable(&e),
    }
}

/// The invalidation subscriber needs SUBSCRIBE and the channel: tried once here, so a
/// missing permission is an error at start rather than a silently stale near cache.
async fn subscribe_allowed(inner: &Inner) -> Result<(), StoreError> {
    let client = inner
        .link
        .pubsub_client(0)
        .map_err(StoreError::Unavailable)?;
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(inner.keys.channel()).await
    };
    match tokio::time::timeout(inner.settings.timeout, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
        Err(_) => Err(StoreError::Unavailable("SUBSCRIBE: no answer".into())),
    }
}

fn permission_error(inner: &Inner, why: &str) -> String {
    format!(
        "store.redis: Redis {} lacks a permission the store needs ({why}); it needs the \
         commands PING EVAL EVALSHA SCRIPT HSET HGET HMGET HEXISTS HDEL HGETALL PEXPIREAT DEL \
         EXISTS GET SET ZADD ZSCORE ZCARD ZRANGE ZRANGEBYSCORE ZREMRANGEBYSCORE ZREM ZCOUNT \
         PUBLISH SUBSCRIBE WAIT, the keys ~{}* and the channel &{}invalidate",
        who(inner),
        inner.settings.key_prefix,
        inner.settings.key_prefix
    )
}

/// Compares the marker in Redis with the one this replica last saw (see the module).
pub(super) async fn check_epoch(inner: &Inner) -> Result<(), StoreError> {
    let key = inner.keys.epoch();
    let seen = inner.link.query(cmd("GET").arg(&key)).await?;
    let seen = super::codec::text(&seen);
    let known = inner.epoch.lock().clone();
    match (&known, &seen) {
        (Some(k), Some(s)) if k == s => return Ok(()),
        (None, Some(s)) => {
            *inner.epoch.lock() = Some(s.clone());
            return Ok(());
        }
        (None, None) => {}
        (Some(_), _) => {
            inner.near.clear();
            metrics::store_reset(super::BACKEND);
            log::warn!(
                "redis store: Redis ({}) came back empty (its data marker {key} is {}): every \
                 session made before is gone and its clients must start new ones; near cache \
                 dropped",
                inner.settings.describe(),
                if seen.is_some() {
                    "a new one"
                } else {
                    "missing"
                }
            );
        }
    }
    if seen.is_none() {
        let _ = inner
            .link
            .query(cmd("SET").arg(&key).arg(new_uuid()).arg("NX"))
            .await?;
    }
    let now = inner.link.query(cmd("GET").arg(&key)).await?;
    *inner.epoch.lock() = super::codec::text(&now);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_refusals_are_recognised() {
        assert!(is_auth_failure(
            "WRONGPASS: invalid username-password pair or user is disabled."
        ));
        assert!(is_auth_failure("NOAUTH: Authentication required."));
        assert!(!is_auth_failure("connection refused"));
        assert!(is_permission_failure(
            "NOPERM: User app has no permissions to run the 'hset' command"
        ));
        assert!(is_permission_failure(
            "ResponseError: The user executing the script can't run this command or subcommand"
        ));
        assert!(!is_permission_failure("timed out"));
    }
}
