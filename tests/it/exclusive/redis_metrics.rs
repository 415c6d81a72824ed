//! Metrics of the Redis store, alone in this binary because metrics are process-wide:
//! created/ended counters, expiries found inside Redis counted exactly once across replicas,
//! gauges set from Redis, operation durations and errors.

use crate::common;

use common::metric_value;
use common::redis_server::{raw_command, RedisServer};
use common::store_contract::{lock, session};
use session_sidecar::config::RedisSettings;
use session_sidecar::metrics;
use session_sidecar::session::id::new_uuid;
use session_sidecar::session::EndReason;
use session_sidecar::store::redis::RedisStore;
use session_sidecar::store::SessionStore;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const MIN: Duration = Duration::from_secs(60);

fn value(name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&String::from_utf8_lossy(&metrics::render()), name, labels)
}

async fn eventually(within: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test]
async fn redis_store_metrics() {
    metrics::init();
    let mut redis = RedisServer::start();
    let prefix = format!("m:{}:", new_uuid());
    let settings = RedisSettings {
        urls: vec![redis.url()],
        cluster: false,
        key_prefix: prefix.clone(),
        near_cache_ttl: Duration::from_secs(1),
        degraded_grace: Duration::from_secs(5),
        timeout: Duration::from_millis(500),
        ..RedisSettings::default()
    };
    // Two replicas: both sweep, each expiry must still count once.
    let a = RedisStore::start(&settings, 1000).unwrap();
    let b = RedisStore::start(&settings, 1000).unwrap();
    let kc = [("flavor", "knowledge_center")];
    let created = value("sessions_created_total", &kc);
    let created_locks = value("sessions_created_total", &[("flavor", "voucherify")]);
    let ended = |r: &str| value("sessions_ended_total", &[("reason", r)]);
    let (idle0, absolute0, closed0) = (
        ended("idle_expired"),
        ended("absolute_expired"),
        ended("closed"),
    );

    let mut idle = session(&a, Duration::from_millis(300), MIN);
    idle.customer_id = Some("metrics-cust".into());
    let absolute = session(&a, MIN, Duration::from_millis(400));
    let closed = session(&a, MIN, MIN);
    a.create(idle.clone(), None).await.unwrap();
    b.create(absolute.clone(), None).await.unwrap();
    a.create(closed.clone(), None).await.unwrap();
    let short_lock = lock(
        &a,
        &format!("ssn_{}", new_uuid()),
        &[("M", 1, 0, 0)],
        Duration::from_millis(300),
    );
    let long_lock = lock(&a, &format!("ssn_{}", new_uuid()), &[("M", 1, 0, 0)], MIN);
    a.acquire_lock(short_lock, &HashMap::new()).await.unwrap();
    b.acquire_lock(long_lock, &HashMap::new()).await.unwrap();
    assert_eq!(value("sessions_created_total", &kc) - created, 3.0);
    assert_eq!(
        value("sessions_created_total", &[("flavor", "voucherify")]) - created_locks,
        2.0
    );

    // Expiries inside Redis are found by the sweeps and counted once, with their reason.
    let settled = eventually(Duration::from_secs(4), || {
        ended("idle_expired") - idle0 == 1.0 && ended("absolute_expired") - absolute0 == 2.0
    })
    .await;
    assert!(
        settled,
        "expiries: idle {} absolute {}",
        ended("idle_expired") - idle0,
        ended("absolute_expired") - absolute0
    );
    // The gauges are Redis's own count: the expired sessions are not in it.
    let gauges = || (value("sessions_active", &kc), value("locks_active", &[]));
    assert!(
        eventually(Duration::from_secs(2), || gauges() == (1.0, 1.0)).await,
        "gauges {:?}",
        gauges()
    );
    assert_eq!(value("sessions_active", &[("flavor", "voucherify")]), 1.0);

    b.remove(&closed.id, EndReason::Closed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended("closed") - closed0, 1.0);
    assert!(
        eventually(Duration::from_secs(2), || gauges() == (0.0, 1.0)).await,
        "gauges {:?}",
        gauges()
    );

    // Let both replicas sweep again: nothing is counted twice.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(ended("idle_expired") - idle0, 1.0);
    assert_eq!(ended("absolute_expired") - absolute0, 2.0);
    // The expired session's customer index entry went with it.
    let members = raw_command(redis.port, &format!("ZCARD {prefix}c:{{metrics-cust}}")).unwrap();
    assert_eq!(members.trim(), ":0");

    let timed = value(
        "store_operation_duration_seconds_count",
        &[("backend", "redis"), ("op", "create")],
    );
    assert!(timed >= 3.0, "create durations recorded: {timed}");

    let errors = value("store_errors_total", &[("backend", "redis")]);
    redis.kill();
    assert!(a.ping().await.is_err());
    assert!(value("store_errors_total", &[("backend", "redis")]) > errors);
}
