//! The redis store's two background tasks, both on the store's own runtime:
//!
//! * `subscribe` listens for near-cache invalidations from other replicas. Whenever it
//!   (re)subscribes it clears the near cache: announcements sent while it was not listening
//!   are lost, so no copy made before can be trusted.
//! * `maintain` accounts for sessions that expired inside Redis and keeps the gauges right.
//!   Each expiry index is swept `EXPIRY_MARGIN` after its entries' deadlines (touch updates
//!   an entry one round trip after the session, so a fresh entry is never mistaken for an
//!   expired one); the sweep script takes entries out atomically, so exactly one replica
//!   counts each expiry. `sessions_active{flavor}` and `locks_active` are then set from the
//!   indexes: the global number, the same on every replica. While Redis is failing it
//!   also probes it, so readiness and degraded mode end as soon as Redis is back. It also
//!   checks the data marker (`checks::check_epoch`: did Redis come back empty?) and logs
//!   once when an outage outlasts `degraded_grace`.

use super::codec::{parse_expiry_member, strings};
use super::scripts::{SWEEP, ZREM_IF_SCORE};
use super::Inner;
use crate::metrics;
use crate::session::{now_millis, EndReason, Flavor};
use futures_util::StreamExt;
use redis::cmd;
use std::sync::Arc;
use std::time::Duration;

const MAINTAIN_EVERY: Duration = Duration::from_millis(500);
const EXPIRY_MARGIN_MS: u64 = 1000;
const SWEEP_BATCH: usize = 200;
const SUBSCRIBER_PING_EVERY: Duration = Duration::from_secs(5);
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(200);

pub(super) async fn subscribe(inner: Arc<Inner>) {
    let channel = inner.keys.channel();
    let mut seed = 0usize;
    loop {
        seed = seed.wrapping_add(1);
        match listen(&inner, seed, &channel).await {
            Ok(()) => log::warn!("redis store: invalidation subscription ended; resubscribing"),
            Err(e) if super::checks::is_permission_failure(&e) => crate::warn_throttled!(
                "redis permissions",
                "redis store: cannot subscribe to invalidations: {e}"
            ),
            Err(e) => log::debug!("redis store: cannot subscribe to invalidations: {e}"),
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

/// Subscribes through one node (the `seed`-th URL, or the Sentinel master) and applies
/// invalidations until the connection ends or the master changes.
async fn listen(inner: &Inner, seed: usize, channel: &str) -> Result<(), String> {
    let timeout = inner.settings.timeout;
    let client = inner.link.pubsub_client(seed)?;
    let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut sink, mut stream) = pubsub.split();
    tokio::time::timeout(timeout, sink.subscribe(channel))
        .await
        .map_err(|_| "subscribe timed out".to_string())?
        .map_err(|e| e.to_string())?;
    inner.near.clear();
    log::info!("redis store: subscribed to near-cache invalidations");
    let mut ping = tokio::time::interval(SUBSCRIBER_PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = inner.link.switched.notified() => return Err("the master changed".into()),
            msg = stream.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let payload = String::from_utf8_lossy(msg.get_payload_bytes());
                if let Some((origin, id)) = payload.split_once('\n') {
                    if origin != inner.origin {
                        inner.near.invalidate(id);
                    }
                }
            }
            _ = ping.tick() => {
                // A silent network partition never ends the stream: notice it here.
                match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    _ => return Err("subscriber connection stopped answering".into()),
                }
            }
        }
    }
}

pub(super) async fn maintain(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(MAINTAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        inner.link.health.note_grace(inner.settings.degraded_grace);
        if inner.link.health.failing() {
            // Any answer ends degraded mode; nothing else is worth trying until then.
            let _ = inner.link.query(&cmd("PING")).await;
            continue;
        }
        if super::checks::check_epoch(&inner).await.is_err() {
            continue;
        }
        if sweep(&inner).await.is_ok() {
            let _ = refresh_gauges(&inner).await;
        }
    }
}

/// Accounts for every session whose expiry-index entry is past its deadline.
async fn sweep(inner: &Inner) -> Result<(), ()> {
    let cutoff = now_millis().saturating_sub(EXPIRY_MARGIN_MS);
    for flavor in Flavor::ALL {
        let key = inner.keys.expiry(flavor);
        loop {
            let taken = take_expired(inner, &key, cutoff).await?;
            for (member, score) in &taken {
                let Some(m) = parse_expiry_member(member) else {
                    continue;
                };
                let reason = if *score >= m.absolute_deadline {
                    EndReason::AbsoluteExpired
                } else {
                    EndReason::IdleExpired
                };
                metrics::session_end_counted(reason);
                // The session is gone: its other index entries go too (unless renewed).
                for index in [
                    m.customer_id.map(|c| inner.keys.customer(c)),
                    m.application_key.map(|a| inner.keys.application(a)),
                ]
                .into_iter()
                .flatten()
                {
                    let _ = inner
                        .link
                        .script(ZREM_IF_SCORE.key(index).arg(m.id).arg(m.absolute_deadline))
                        .await;
                }
            }
            if taken.len() < SWEEP_BATCH {
                break;
            }
        }
    }
    // Locks have a fixed lifetime: their expiry is always absolute. Their holdings are
    // pruned by the next lock script that reads them.
    let key = inner.keys.lock_expiry();
    loop {
        let taken = take_expired(inner, &key, cutoff).await?;
        for _ in &taken {
            metrics::session_end_counted(EndReason::AbsoluteExpired);
        }
        if taken.len() < SWEEP_BATCH {
            break;
        }
    }
    Ok(())
}

async fn take_expired(inner: &Inner, key: &str, cutoff: u64) -> Result<Vec<(String, u64)>, ()> {
    let reply = inner
        .link
        .script(SWEEP.key(key).arg(cutoff).arg(SWEEP_BATCH))
        .await
        .map_err(drop)?;
    Ok(strings(&reply)
        .unwrap_or_default()
        .chunks_exact(2)
        .filter_map(|p| Some((p[0].clone(), p[1].parse::<f64>().ok()? as u64)))
        .collect())
}

async fn refresh_gauges(inner: &Inner) -> Result<(), ()> {
    let now = now_millis();
    let count = |key: String| async move {
        let v = inner
            .link
            .query(cmd("ZCOUNT").arg(key).arg(now).arg("+inf"))
            .await
            .map_err(drop)?;
        Ok::<i64, ()>(super::codec::int(&v).unwrap_or(0))
    };
    let locks = count(inner.keys.lock_expiry()).await?;
    metrics::set_locks_active(locks);
    for flavor in Flavor::ALL {
        let mut n = count(inner.keys.expiry(flavor)).await?;
        if flavor == Flavor::Voucherify {
            n += locks;
        }
        metrics::set_sessions_active(flavor, n);
    }
    Ok(())
}
