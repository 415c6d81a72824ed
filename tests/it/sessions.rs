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

const MS: Duration = Duration::from_millis(1);
const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn idle_timeout_is_extended_by_use() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_manual_clock(
        &up,
        "[sessions]\nidle_timeout = \"10m\"\nabsolute_timeout = \"1h\"\n",
    );
    let used = create(&sc, "idle-used");
    let unused = create(&sc, "idle-unused");
    let idle_ended = || sc.metric("sessions_ended_total", &[("reason", "idle_expired")]);
    for i in 0..4 {
        sc.advance(5 * MINUTE);
        assert!(
            resolves(&sc, &up, &used, &format!("use-{i}")),
            "a session in use stays alive"
        );
    }
    assert!(
        !resolves(&sc, &up, &unused, "unused"),
        "an unused session ends after idle_timeout"
    );
    sc.advance(10 * MINUTE - MS);
    assert!(
        resolves(&sc, &up, &used, "idle-last-ms"),
        "live until its idle deadline"
    );
    let before = idle_ended();
    sc.advance(10 * MINUTE);
    assert!(
        !resolves(&sc, &up, &used, "after-idle"),
        "and so does the used one once left alone"
    );
    assert!(
        idle_ended() > before,
        "the housekeeping sweep counts it as idle_expired"
    );
}

#[test]
fn absolute_timeout_ends_even_a_busy_session() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_manual_clock(
        &up,
        "[sessions]\nidle_timeout = \"10m\"\nabsolute_timeout = \"1h\"\n",
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
    // Used every 9 minutes (idle timeout 10): only the absolute deadline ends it.
    for i in 0..6 {
        sc.advance(9 * MINUTE);
        assert!(resolves(&sc, &up, &id, &format!("busy-{i}")));
    }
    sc.advance(6 * MINUTE - MS);
    assert!(
        resolves(&sc, &up, &id, "last-ms"),
        "live until its absolute deadline"
    );
    let absolute_ended = || sc.metric("sessions_ended_total", &[("reason", "absolute_expired")]);
    let before = absolute_ended();
    sc.advance(MS);
    assert!(!resolves(&sc, &up, &id, "past-absolute"));
    // `advance` ran the housekeeping sweep: the expiry is accounted, as absolute.
    assert!(
        absolute_ended() > before,
        "absolute_expired was never counted"
    );
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
    sc.maintain();
    let evicted = sc.metric("sessions_ended_total", &[("reason", "evicted")]);
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
    let sc = TestSidecar::with_manual_clock(&up, "[sessions]\nmax_sessions_per_customer = 2\n");
    // A millisecond apart: the oldest is the first created.
    let a = create(&sc, "pc");
    sc.advance(MS);
    let b = create(&sc, "pc");
    sc.advance(MS);
    let c = create(&sc, "pc");
    assert!(!resolves(&sc, &up, &a, "pc-a"));
    assert!(resolves(&sc, &up, &b, "pc-b"));
    assert!(resolves(&sc, &up, &c, "pc-c"));
}
