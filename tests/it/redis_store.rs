//! What only the Redis store has: expiry inside Redis, the near cache and its pub/sub
//! invalidation across replicas, spreading over a cluster, and degraded mode while Redis is
//! down. Real `redis-server` processes on free ports.

use crate::common;

use common::redis_server::{raw_command, RedisCluster, RedisServer};
use common::store_contract::session;
use session_sidecar::config::RedisSettings;
use session_sidecar::session::id::new_uuid;
use session_sidecar::session::{EndReason, SessionPatch};
use session_sidecar::store::redis::RedisStore;
use session_sidecar::store::{CreateOutcome, SessionStore, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIN: Duration = Duration::from_secs(60);

fn settings(
    urls: Vec<String>,
    cluster: bool,
    prefix: &str,
    near_cache_ttl: Duration,
    degraded_grace: Duration,
) -> RedisSettings {
    RedisSettings {
        urls,
        cluster,
        key_prefix: prefix.to_string(),
        near_cache_ttl,
        degraded_grace,
        timeout: Duration::from_millis(500),
        ..RedisSettings::default()
    }
}

fn store(s: &RedisSettings) -> Arc<RedisStore> {
    Arc::new(RedisStore::start(s, 10_000).unwrap())
}

/// A store on one Redis server, near cache 1 s, degraded grace one minute.
fn standalone_store(redis: &RedisServer, prefix: &str) -> Arc<RedisStore> {
    store(&settings(
        vec![redis.url()],
        false,
        prefix,
        Duration::from_secs(1),
        MIN,
    ))
}

fn prefix() -> String {
    format!("t:{}:", new_uuid())
}

/// Polls `check` until it holds or `within` passes; returns whether it held.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn integer_reply(reply: Option<String>) -> i64 {
    let r = reply.expect("redis answered");
    r.trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("not an integer reply: {r:?}"))
}

/// The number in a bulk-string reply such as `$13\r\n1700000000000\r\n` (ZSCORE).
fn score_reply(reply: Option<String>) -> u64 {
    let r = reply.expect("redis answered");
    r.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a score: {r:?}"))
}

fn unavailable<T>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Unavailable(_)))
}

#[tokio::test]
async fn sessions_expire_inside_redis_at_their_deadline() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = standalone_store(&redis, &p);
    let s = session(&*st, Duration::from_secs(30), MIN);
    st.create(s.clone(), None).await.unwrap();
    let key = format!("{p}s:{{{}}}", s.id);
    assert_eq!(
        integer_reply(raw_command(redis.port, &format!("PEXPIRETIME {key}"))),
        s.expires_at as i64
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = st.touch(&s.id).await.unwrap().unwrap();
    assert!(t.expires_at > s.expires_at);
    assert_eq!(
        integer_reply(raw_command(redis.port, &format!("PEXPIRETIME {key}"))),
        t.expires_at as i64,
        "touch re-arms the expiry"
    );
    // A session that expires is gone from Redis itself, not just hidden.
    let short = session(&*st, Duration::from_millis(100), MIN);
    st.create(short.clone(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        integer_reply(raw_command(
            redis.port,
            &format!("EXISTS {p}s:{{{}}}", short.id)
        )),
        0
    );
    assert_eq!(
        st.session_count().await.unwrap(),
        1,
        "len counts live sessions only"
    );
}

/// A customer index entry belongs to the session that holds the id: its score is that
/// session's absolute deadline (what index cleanup matches on). A create replaces an entry an
/// ended session left under the same id, and a refused duplicate leaves the live one's alone.
#[tokio::test]
async fn customer_index_entries_carry_the_live_sessions_deadline() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = standalone_store(&redis, &p);
    let customer = format!("cust-{}", new_uuid());
    let index = format!("{p}c:{{{customer}}}");
    let score = |id: &str| score_reply(raw_command(redis.port, &format!("ZSCORE {index} {id}")));

    let mut s = session(&*st, MIN, MIN);
    s.customer_id = Some(customer.as_str().into());
    // Left by an ended session under the same id, not yet swept.
    raw_command(redis.port, &format!("ZADD {index} 1 {}", s.id));
    assert_eq!(
        st.create(s.clone(), None).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(score(&s.id), s.absolute_deadline, "the new session's entry");

    let mut twin = s.clone();
    twin.absolute_deadline += 5_000;
    assert_eq!(st.create(twin, None).await.unwrap(), CreateOutcome::IdTaken);
    assert_eq!(
        score(&s.id),
        s.absolute_deadline,
        "the live session's entry, unchanged"
    );
}

/// A create whose caller stops waiting (its client hung up) writes the session with all its
/// index entries, or nothing: never a session without its entries, nor entries (an
/// application slot, a customer entry) without a session. The creates are dropped after 0 to
/// 4 polls, 1 ms apart, so some are cut before anything was sent and others mid-flight.
#[tokio::test]
async fn an_abandoned_create_writes_everything_or_nothing() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = standalone_store(&redis, &p);
    // The connection is up before the creates start.
    st.ping().await.unwrap();
    let app = format!("app-{}", new_uuid());
    let mut sessions = Vec::new();
    for i in 0..100 {
        let mut s = session(&*st, MIN, MIN);
        s.customer_id = Some(format!("cust-{}", new_uuid()).into());
        s.application_key = Some(app.as_str().into());
        let mut create = st.create(s.clone(), None);
        for _ in 0..i % 5 {
            let polled =
                std::future::poll_fn(|cx| std::task::Poll::Ready(create.as_mut().poll(cx))).await;
            if polled.is_ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(create);
        sessions.push(s);
    }
    let present = |cmd: String| {
        let r = raw_command(redis.port, &cmd).expect("redis answered");
        !(r.starts_with("$-1") || r.starts_with(":0") || r.starts_with('_'))
    };
    let count = |key: String| integer_reply(raw_command(redis.port, &format!("ZCARD {key}")));
    // (session, customer entry, application entry) per create; the expiry and application
    // indexes hold as many entries as there are sessions.
    let state = || {
        let each: Vec<(bool, bool, bool)> = sessions
            .iter()
            .map(|s| {
                let customer = s.customer_id.as_deref().unwrap_or_default();
                (
                    present(format!("EXISTS {p}s:{{{}}}", s.id)),
                    present(format!("ZSCORE {p}c:{{{customer}}} {}", s.id)),
                    present(format!("ZSCORE {p}a:{{{app}}} {}", s.id)),
                )
            })
            .collect();
        let written = each.iter().filter(|e| e.0).count() as i64;
        let whole = each.iter().all(|&(s, c, a)| s == c && s == a)
            && count(format!("{p}x:{{knowledge_center}}")) == written
            && count(format!("{p}a:{{{app}}}")) == written;
        (whole, written)
    };
    // Commands already sent may still be on their way: wait for a consistent picture, which a
    // half-written create would never give.
    let whole = eventually(Duration::from_secs(5), || async { state().0 }).await;
    let (_, written) = state();
    assert!(
        whole,
        "a create was half-written ({written} sessions written)"
    );
    // Creates never polled sent nothing: the test saw both outcomes.
    assert!(written > 0 && written < 100, "{written} of 100 written");
}

#[tokio::test]
async fn changes_on_one_replica_drop_the_copy_on_another() {
    let redis = RedisServer::start();
    // A near-cache TTL far longer than the test: only the invalidation can make A notice.
    let s = settings(
        vec![redis.url()],
        false,
        &prefix(),
        Duration::from_secs(60),
        MIN,
    );
    let (a, b) = (store(&s), store(&s));
    let mut sess = session(&*a, MIN, MIN);
    sess.agent_id = Some("agent-1".into());
    a.create(sess.clone(), None).await.unwrap();
    // Let both subscribers come up before the changes are announced.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.get(&sess.id).await.unwrap().is_some(), "A holds a copy");

    b.update(
        &sess.id,
        &SessionPatch {
            agent_id: Some("agent-2".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .unwrap();
    let saw_update = eventually(Duration::from_secs(2), || async {
        a.get(&sess.id)
            .await
            .unwrap()
            .and_then(|s| s.agent_id)
            .as_deref()
            == Some("agent-2")
    })
    .await;
    assert!(
        saw_update,
        "A still serves the old copy after B changed the session"
    );

    b.remove(&sess.id, EndReason::Revoked)
        .await
        .unwrap()
        .unwrap();
    let saw_removal = eventually(Duration::from_secs(2), || async {
        a.get(&sess.id).await.unwrap().is_none()
    })
    .await;
    assert!(saw_removal, "A still serves a session B revoked");
}

#[tokio::test]
async fn resubscribing_clears_the_near_cache() {
    let redis = RedisServer::start();
    let p = prefix();
    let a = store(&settings(
        vec![redis.url()],
        false,
        &p,
        Duration::from_secs(60),
        MIN,
    ));
    let mut sess = session(&*a, MIN, MIN);
    sess.agent_id = Some("before".into());
    a.create(sess.clone(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.get(&sess.id).await.unwrap().unwrap().agent_id.as_deref(),
        Some("before")
    );
    // A change that is never announced: the cached copy keeps answering.
    raw_command(redis.port, &format!("HSET {p}s:{{{}}} ag after", sess.id)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        a.get(&sess.id).await.unwrap().unwrap().agent_id.as_deref(),
        Some("before"),
        "served from the near cache"
    );
    // Dropping the subscriber's connection means announcements may have been missed.
    raw_command(redis.port, "CLIENT KILL TYPE pubsub").unwrap();
    let refreshed = eventually(Duration::from_secs(3), || async {
        a.get(&sess.id).await.unwrap().unwrap().agent_id.as_deref() == Some("after")
    })
    .await;
    assert!(refreshed, "the near cache survived a resubscription");
}

#[tokio::test]
async fn cluster_spreads_sessions_over_every_master() {
    let cluster = RedisCluster::start(3);
    let st = store(&settings(
        cluster.urls(),
        true,
        &prefix(),
        Duration::from_secs(1),
        MIN,
    ));
    for _ in 0..30 {
        assert_eq!(
            st.create(session(&*st, MIN, MIN), None).await.unwrap(),
            CreateOutcome::Created
        );
    }
    for node in &cluster.nodes {
        let keys = integer_reply(raw_command(node.port, "DBSIZE"));
        assert!(keys > 0, "master {} holds no keys", node.port);
    }
    assert_eq!(st.session_count().await.unwrap(), 30);
}

#[tokio::test]
async fn degraded_mode_serves_cached_sessions_for_the_grace_then_recovers() {
    let mut redis = RedisServer::start();
    let s = settings(
        vec![redis.url()],
        false,
        &prefix(),
        Duration::from_millis(200),
        Duration::from_millis(1500),
    );
    let st = store(&s);
    // Created through another replica: this one never saw it.
    let other = store(&s);
    let cached = session(&*st, MIN, MIN);
    let uncached = session(&*st, MIN, MIN);
    st.create(cached.clone(), None).await.unwrap();
    other.create(uncached.clone(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    st.touch(&cached.id).await.unwrap().unwrap();

    redis.kill();
    assert!(unavailable(st.ping().await));
    assert_eq!(
        st.touch(&cached.id).await.unwrap().map(|s| s.id.clone()),
        Some(cached.id.clone()),
        "served from the near cache"
    );
    assert_eq!(
        st.get(&cached.id).await.unwrap().map(|s| s.id),
        Some(cached.id.clone())
    );
    assert!(
        unavailable(st.touch(&uncached.id).await),
        "no copy: the store cannot answer"
    );
    assert!(unavailable(st.create(session(&*st, MIN, MIN), None).await));
    assert!(unavailable(st.remove(&cached.id, EndReason::Closed).await));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        unavailable(st.touch(&cached.id).await),
        "degraded_grace is over"
    );

    redis.restart();
    let back = eventually(Duration::from_secs(5), || async { st.ping().await.is_ok() }).await;
    assert!(back, "the store did not reconnect by itself");
    let fresh = session(&*st, MIN, MIN);
    assert_eq!(
        st.create(fresh.clone(), None).await.unwrap(),
        CreateOutcome::Created
    );
    assert!(st.touch(&fresh.id).await.unwrap().is_some());
    // The restarted Redis kept nothing, and the store does not pretend otherwise.
    assert_eq!(st.touch(&cached.id).await.unwrap(), None);
}
