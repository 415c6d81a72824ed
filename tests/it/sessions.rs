//! SPEC §3: session expiry (idle vs absolute) and store capacity, through the real server.

use crate::common;

use common::*;
use serde_json::json;
use std::time::Duration;

fn create(sc: &TestSidecar, customer: &str) -> String {
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        json!({"customer_id": customer}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// Whether a forwarded request with this session still gets its identity.
fn resolves(sc: &TestSidecar, up: &EchoUpstream, id: &str, tag: &str) -> bool {
    let path = format!("/expiry/{tag}");
    assert_eq!(
        sc.proxy("GET", &path, &[("X-Session-Id", id)], b"").status,
        200
    );
    !up.received_at(&path)[0]
        .header_all("X-Session-Id")
        .is_empty()
}

#[test]
fn idle_timeout_is_extended_by_use() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(
        &up,
        "[sessions]\nidle_timeout = \"600ms\"\nabsolute_timeout = \"1h\"\n",
    );
    let used = create(&sc, "idle-used");
    let unused = create(&sc, "idle-unused");
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            resolves(&sc, &up, &used, &format!("use-{i}")),
            "a session in use stays alive"
        );
    }
    assert!(
        !resolves(&sc, &up, &unused, "unused"),
        "an unused session ends after idle_timeout"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !resolves(&sc, &up, &used, "after-idle"),
        "and so does the used one once left alone"
    );
}

#[test]
fn absolute_timeout_ends_even_a_busy_session() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(
        &up,
        "[sessions]\nidle_timeout = \"10m\"\nabsolute_timeout = \"1s\"\n",
    );
    let id = create(&sc, "abs");
    let r = sc.admin(
        "GET",
        &format!("/admin/sessions/{id}"),
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        b"",
    );
    let s = r.json();
    let created = s["created_at"].as_str().unwrap().to_string();
    let expires = s["expires_at"].as_str().unwrap().to_string();
    assert_ne!(created, expires);
    let mut alive_until_end = true;
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(200));
        alive_until_end &= resolves(&sc, &up, &id, &format!("busy-{i}"));
    }
    assert!(alive_until_end);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!resolves(&sc, &up, &id, "past-absolute"));
    // The expiry is accounted as absolute once moka's timer wheel has processed it.
    let mut counted = false;
    for _ in 0..40 {
        if sc.metric("sessions_ended_total", &[("reason", "absolute_expired")]) >= 1.0 {
            counted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(counted, "absolute_expired was never counted");
}

#[test]
fn capacity_evicts_and_counts() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "[sessions]\nmax_sessions = 20\n");
    let first = create(&sc, "cap-first");
    let mut last = String::new();
    for i in 0..60 {
        last = create(&sc, &format!("cap-{i}"));
    }
    let mut evicted = 0.0;
    for _ in 0..40 {
        evicted = sc.metric("sessions_ended_total", &[("reason", "evicted")]);
        if evicted >= 40.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(evicted >= 40.0, "evictions counted: {evicted}");
    assert!(
        resolves(&sc, &up, &last, "cap-last"),
        "the newest session is kept"
    );
    assert!(
        !resolves(&sc, &up, &first, "cap-first"),
        "the oldest was evicted"
    );
}

#[test]
fn per_customer_limit_ends_the_oldest() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "[sessions]\nmax_sessions_per_customer = 2\n");
    let a = create(&sc, "pc");
    std::thread::sleep(Duration::from_millis(5));
    let b = create(&sc, "pc");
    std::thread::sleep(Duration::from_millis(5));
    let c = create(&sc, "pc");
    assert!(!resolves(&sc, &up, &a, "pc-a"));
    assert!(resolves(&sc, &up, &b, "pc-b"));
    assert!(resolves(&sc, &up, &c, "pc-c"));
}
