//! Following Redis Sentinel (SPEC §13.4): the master is whatever the sentinels name
//! (`SENTINEL get-master-addr-by-name`). A failover is seen two ways, whichever comes first:
//! the `+switch-master` announcement, subscribed to on every sentinel, and a poll of the
//! sentinels (every second, and every `POLL_FAILING` while Redis is failing), which also
//! covers announcements missed while a subscription was down.
//!
//! On a change of master the connection is replaced, the near cache is dropped (the new
//! master may lack the last writes the old one acknowledged to other replicas, and copies
//! must be re-read), `store_failovers_total` counts it and one WARN line says so. Between the
//! old master's death and the switch, forwarded traffic is served from the near cache within
//! `degraded_grace` like any other outage.

use super::link::Switch;
use super::Inner;
use crate::metrics;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_secs(1);
const POLL_FAILING: Duration = Duration::from_millis(200);
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

pub(super) async fn follow(inner: Arc<Inner>) {
    for addr in inner.settings.sentinels.clone() {
        tokio::spawn(listen_forever(inner.clone(), addr));
    }
    let mut said_unknown = false;
    loop {
        match ask(&inner).await {
            Some((host, port)) => {
                said_unknown = false;
                switch(&inner, &host, port, "poll");
            }
            None if !said_unknown && inner.link.master().is_none() => {
                said_unknown = true;
                log::warn!(
                    "redis store: no sentinel of {} names master \"{}\" yet; retrying",
                    inner.settings.sentinels.join(", "),
                    inner.settings.sentinel_master
                );
            }
            None => {}
        }
        let pause = if inner.link.master().is_none() || inner.link.health.failing() {
            POLL_FAILING
        } else {
            POLL
        };
        tokio::time::sleep(pause).await;
    }
}

/// Points the link at `host:port`; a change of master is a failover.
pub(super) fn switch(inner: &Inner, host: &str, port: u16, how: &str) {
    match inner.link.switch_to(host, port) {
        Ok(Switch::Same) => {}
        Ok(Switch::First) => log::info!(
            "redis store: Sentinel master \"{}\" is {host}:{port}",
            inner.settings.sentinel_master
        ),
        Ok(Switch::Moved(old_host, old_port)) => {
            inner.near.clear();
            metrics::store_failover(super::BACKEND);
            log::warn!(
                "redis store: Sentinel failover ({how}): master \"{}\" moved from \
                 {old_host}:{old_port} to {host}:{port}; near cache dropped",
                inner.settings.sentinel_master
            );
        }
        Err(e) => crate::warn_throttled!(
            "redis sentinel",
            "redis store: cannot connect to the master the sentinels name ({host}:{port}): {e}"
        ),
    }
}

/// The master's address according to the first sentinel that answers.
async fn ask(inner: &Inner) -> Option<(String, u16)> {
    for addr in &inner.settings.sentinels {
        if let Some(found) = ask_one(inner, addr).await {
            return Some(found);
        }
    }
    None
}

async fn ask_one(inner: &Inner, addr: &str) -> Option<(String, u16)> {
    let timeout = inner.settings.timeout;
    let client = redis::Client::open(format!("redis://{addr}")).ok()?;
    let work = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let reply: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&inner.settings.sentinel_master)
            .query_async(&mut conn)
            .await
            .ok()?;
        let (host, port) = reply?;
        Some((host, port.parse().ok()?))
    };
    tokio::time::timeout(timeout, work).await.ok().flatten()
}

async fn listen_forever(inner: Arc<Inner>, addr: String) {
    loop {
        if let Err(e) = listen(&inner, &addr).await {
            log::debug!("redis store: sentinel {addr}: {e}");
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

/// `+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>` from one sentinel.
async fn listen(inner: &Inner, addr: &str) -> Result<(), String> {
    let timeout = inner.settings.timeout;
    let client = redis::Client::open(format!("redis://{addr}")).map_err(|e| e.to_string())?;
    let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    pubsub
        .subscribe("+switch-master")
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = pubsub.on_message();
    while let Some(msg) = stream.next().await {
        let payload = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
        if let Some((host, port)) = parse_switch(&payload, &inner.settings.sentinel_master) {
            switch(inner, &host, port, "+switch-master");
        }
    }
    Err("subscription ended".into())
}

fn parse_switch(payload: &str, master: &str) -> Option<(String, u16)> {
    let parts: Vec<&str> = payload.split_whitespace().collect();
    match parts.as_slice() {
        [name, _, _, host, port] if *name == master => Some((host.to_string(), port.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_switch;

    #[test]
    fn switch_master_messages() {
        assert_eq!(
            parse_switch("mymaster 127.0.0.1 6379 127.0.0.1 6380", "mymaster"),
            Some(("127.0.0.1".into(), 6380))
        );
        assert_eq!(
            parse_switch("other 127.0.0.1 6379 127.0.0.1 6380", "mymaster"),
            None
        );
        assert_eq!(parse_switch("mymaster 1 2 3", "mymaster"), None);
    }
}
