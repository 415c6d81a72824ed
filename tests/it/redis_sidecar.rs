//! Several sidecars (replicas) on one Redis, and a sidecar whose Redis dies and comes back.
//! Sessions are made with the admin API, so these tests need no flavour.

use crate::common;

use common::redis_server::RedisServer;
use common::*;
use serde_json::json;
use session_sidecar::session::id::new_uuid;
use std::time::{Duration, Instant};

/// A sidecar in front of `up` on the Redis store at `redis_url`, under key prefix `prefix`.
fn redis_sidecar(
    up: &EchoUpstream,
    redis_url: &str,
    prefix: &str,
    redis_extra: &str,
) -> TestSidecar {
    let ports = Ports::new(up.port);
    let extra = format!(
        "\n[store.redis]\nurls = [\"{redis_url}\"]\nkey_prefix = \"{prefix}\"\n{redis_extra}\n"
    );
    let toml = base_config(&ports, &extra).replace(
        "[store]\nsnapshot_file = \"\"",
        "[store]\nbackend = \"redis\"\nsnapshot_file = \"\"",
    );
    assert!(toml.contains("backend = \"redis\""));
    TestSidecar::start(ports, &toml)
}

fn admin_session(sc: &TestSidecar, customer: &str) -> String {
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &bearer(ADMIN_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        json!({"customer_id": customer}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// Forwards a request carrying `sid` and returns (status, customer header the app saw).
fn forward(sc: &TestSidecar, up: &EchoUpstream, sid: &str) -> (u16, Option<String>) {
    let path = format!("/replica/{}", new_uuid());
    let r = sc.proxy("GET", &path, &[("X-Session-Id", sid)], b"");
    let seen = up
        .received_at(&path)
        .first()
        .and_then(|rec| rec.header("X-Customer-Id"));
    (r.status, seen)
}

fn admin_get(sc: &TestSidecar, sid: &str) -> u16 {
    sc.admin(
        "GET",
        &format!("/admin/sessions/{sid}"),
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        b"",
    )
    .status
}

#[test]
fn a_session_opened_on_one_replica_is_used_and_revoked_on_another() {
    let redis = RedisServer::start();
    let up = EchoUpstream::start();
    let prefix = format!("two:{}:", new_uuid());
    // A near-cache TTL longer than the test: only pub/sub invalidation can make A notice.
    let a = redis_sidecar(&up, &redis.url(), &prefix, "near_cache_ttl = \"30s\"");
    let b = redis_sidecar(&up, &redis.url(), &prefix, "near_cache_ttl = \"30s\"");
    let sid = admin_session(&a, "cust-two");

    assert_eq!(
        forward(&b, &up, &sid),
        (200, Some("cust-two".to_string())),
        "B resolves A's session"
    );
    assert_eq!(admin_get(&a, &sid), 200, "A reads (and caches) it");

    let r = b.admin(
        "DELETE",
        &format!("/admin/sessions/{sid}"),
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        forward(&a, &up, &sid),
        (200, None),
        "A forwards without the revoked identity"
    );
    assert!(
        eventually(Duration::from_secs(2), || admin_get(&a, &sid) == 404),
        "A still knows the revoked session"
    );
    assert_eq!(forward(&b, &up, &sid), (200, None));
}

#[test]
fn three_replicas_share_sessions_and_customer_revocation() {
    let redis = RedisServer::start();
    let up = EchoUpstream::start();
    let prefix = format!("three:{}:", new_uuid());
    let replicas: Vec<TestSidecar> = (0..3)
        .map(|_| redis_sidecar(&up, &redis.url(), &prefix, ""))
        .collect();
    let customer = format!("cust-{}", new_uuid());
    let first = admin_session(&replicas[0], &customer);
    let second = admin_session(&replicas[1], &customer);
    for sc in &replicas {
        assert_eq!(forward(sc, &up, &first), (200, Some(customer.clone())));
        assert_eq!(forward(sc, &up, &second), (200, Some(customer.clone())));
    }
    let auth = bearer(ADMIN_TOKEN);
    let listed = replicas[2].admin(
        "GET",
        &format!("/admin/customers/{customer}/sessions"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["sessions"], json!([first, second]));

    let revoked = replicas[2].admin(
        "DELETE",
        &format!("/admin/customers/{customer}/sessions"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(revoked.json(), json!({"revoked": 2}));
    for sc in &replicas {
        assert_eq!(forward(sc, &up, &first), (200, None));
        assert!(eventually(Duration::from_secs(1), || admin_get(
            sc, &second
        ) == 404));
    }
}

#[test]
fn redis_dying_mid_load_degrades_then_recovers_without_a_restart() {
    let mut redis = RedisServer::start();
    let up = EchoUpstream::start();
    let prefix = format!("kill:{}:", new_uuid());
    let sc = redis_sidecar(
        &up,
        &redis.url(),
        &prefix,
        "near_cache_ttl = \"1s\"\ndegraded_grace = \"3s\"\ntimeout = \"300ms\"",
    );
    let sid = admin_session(&sc, "cust-kill");
    assert_eq!(
        forward(&sc, &up, &sid),
        (200, Some("cust-kill".to_string()))
    );
    let errors_before = sc.metric("store_errors_total", &[("backend", "redis")]);

    // Load: forwarded requests with the session, all through the outage.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, port, sid) = (stop.clone(), sc.ports.proxy, sid.clone());
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(
                    request(port, "GET", "/replica/load", &[("X-Session-Id", &sid)], b"").status,
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            statuses
        })
    };
    std::thread::sleep(Duration::from_millis(200));

    redis.kill();
    let killed_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(2), || sc
            .admin("GET", "/readyz", &[], b"")
            .status
            == 503),
        "readiness stays 200"
    );
    assert_eq!(
        forward(&sc, &up, &sid),
        (200, Some("cust-kill".to_string())),
        "served from the near cache"
    );
    // A session this replica holds no copy of cannot be checked: not forwarded as anonymous.
    let r = sc.proxy(
        "GET",
        "/replica/unseen",
        &[("X-Session-Id", "no-such-session-anywhere")],
        b"",
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "store_unavailable");
    assert!(up.received_at("/replica/unseen").is_empty());
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        b"{}",
    );
    assert_eq!(r.status, 503, "nothing can be created without Redis");
    assert!(sc.metric("store_errors_total", &[("backend", "redis")]) > errors_before);

    // After degraded_grace the cached copy is no longer trusted.
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(killed_at.elapsed()) + Duration::from_millis(300),
    );
    assert_eq!(forward(&sc, &up, &sid).0, 503);

    redis.restart();
    assert!(
        eventually(Duration::from_secs(5), || sc
            .admin("GET", "/readyz", &[], b"")
            .status
            == 200),
        "no recovery"
    );
    let fresh = admin_session(&sc, "cust-fresh");
    assert_eq!(
        forward(&sc, &up, &fresh),
        (200, Some("cust-fresh".to_string()))
    );
    // The restarted Redis kept nothing (no persistence): the old session is simply unknown.
    assert_eq!(forward(&sc, &up, &sid), (200, None));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.join().unwrap();
    assert!(statuses.len() > 20, "the load ran");
    let odd: Vec<&u16> = statuses
        .iter()
        .filter(|s| **s != 200 && **s != 503)
        .collect();
    assert!(
        odd.is_empty(),
        "only 200 (served) or 503 (store unavailable) during the outage: {odd:?}"
    );
    assert!(statuses.contains(&503) && statuses.last() == Some(&200));
}
