//! SPEC §8: the admin listener — health, readiness, metrics, and the session admin API.

use crate::common;

use common::*;
use serde_json::json;
use std::time::Duration;

fn admin_auth() -> String {
    bearer(ADMIN_TOKEN)
}

fn create(sc: &TestSidecar, body: serde_json::Value) -> Response {
    sc.admin(
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &admin_auth()),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

#[test]
fn health_readiness_and_metrics() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    assert_eq!(sc.admin("GET", "/healthz", &[], b"").status, 200);
    assert_eq!(sc.admin("GET", "/readyz", &[], b"").status, 200);
    let m = sc.admin("GET", "/metrics", &[], b"");
    assert_eq!(m.status, 200);
    assert!(m.header("Content-Type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for family in [
        "sessions_active",
        "sessions_created_total",
        "sessions_ended_total",
        "session_lookups_total",
        "auth_failures_total",
        "request_duration_seconds",
        "upstream_errors_total",
        "locks_active",
        "lock_rejections_total",
        "config_reload_success",
        "build_info",
    ] {
        assert!(
            text.contains(&format!("session_sidecar_{family}")),
            "{family} missing from /metrics"
        );
    }
    assert_eq!(metric_value(&text, "config_reload_success", &[]), 1.0);
    assert_eq!(
        metric_value(
            &text,
            "build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(sc.admin("GET", "/nothing-here", &[], b"").status, 404);
}

#[test]
fn create_get_list_and_revoke() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    let r = create(
        &sc,
        json!({"customer_id": "cust-a", "agent_id": "ag", "logged_in": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let s = r.json();
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["flavor"], "admin");
    assert_eq!(s["owner"], "admin");
    assert_eq!(s["customer_id"], "cust-a");
    assert_eq!(s["logged_in"], true);
    assert!(s["expires_at"].as_str().unwrap().ends_with('Z'));
    let id2 = create(&sc, json!({"customer_id": "cust-a"})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = create(&sc, json!({"customer_id": "cust-b"})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = sc.admin(
        "GET",
        &format!("/admin/sessions/{id}"),
        &[("Authorization", &admin_auth())],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["agent_id"], "ag");

    let r = sc.admin(
        "GET",
        "/admin/customers/cust-a/sessions",
        &[("Authorization", &admin_auth())],
        b"",
    );
    assert_eq!(r.status, 200);
    let mut ids: Vec<String> = r.json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want = vec![id.clone(), id2.clone()];
    want.sort();
    assert_eq!(ids, want);

    let r = sc.admin(
        "DELETE",
        "/admin/customers/cust-a/sessions",
        &[("Authorization", &admin_auth())],
        b"",
    );
    assert_eq!(r.json(), json!({"revoked": 2}));
    let r = sc.admin(
        "DELETE",
        "/admin/customers/cust-a/sessions",
        &[("Authorization", &admin_auth())],
        b"",
    );
    assert_eq!(r.json(), json!({"revoked": 0}));
    // Revoked sessions no longer resolve; others are untouched.
    sc.proxy("GET", "/after-revoke", &[("X-Session-Id", &id)], b"");
    assert!(up.received_at("/after-revoke")[0]
        .header_all("X-Session-Id")
        .is_empty());

    assert_eq!(
        sc.admin(
            "DELETE",
            &format!("/admin/sessions/{other}"),
            &[("Authorization", &admin_auth())],
            b""
        )
        .status,
        204
    );
    assert_eq!(
        sc.admin(
            "DELETE",
            &format!("/admin/sessions/{other}"),
            &[("Authorization", &admin_auth())],
            b""
        )
        .status,
        404
    );
    assert_eq!(
        sc.admin(
            "GET",
            &format!("/admin/sessions/{other}"),
            &[("Authorization", &admin_auth())],
            b""
        )
        .status,
        404
    );
}

#[test]
fn admin_credential_required() {
    let up = EchoUpstream::start();
    // Ten refusals from one address: as many as the default failure limit allows, and the
    // 403 round would then be refused with 429 (tested below).
    let sc = TestSidecar::with_server_keys(&up, "admin_auth_failures_per_minute = 0", "");
    let id = create(&sc, json!({"customer_id": "c-guard"})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let web = bearer(WEB_TOKEN);
    for (auth, status) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some(web.as_str()), 403),
    ] {
        let h: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        for (m, p) in [
            ("GET", format!("/admin/sessions/{id}")),
            ("DELETE", format!("/admin/sessions/{id}")),
            ("GET", "/admin/customers/c-guard/sessions".to_string()),
            ("DELETE", "/admin/customers/c-guard/sessions".to_string()),
            ("POST", "/admin/sessions".to_string()),
        ] {
            let r = sc.admin(m, &p, &h, b"{}");
            assert_eq!(r.status, status, "{m} {p} with {auth:?}");
            assert!(!r.text().contains(&id));
        }
    }
    let r = sc.admin(
        "GET",
        &format!("/admin/sessions/{id}"),
        &[("Authorization", &admin_auth())],
        b"",
    );
    assert_eq!(r.status, 200, "nothing was revoked by refused calls");
}

#[test]
fn bad_input_is_refused_and_nothing_is_stored() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    for body in [
        "{\"customer_id\": ".to_string(),
        json!({"customer_id": "c-bad", "logged_in": "yes"}).to_string(),
        json!({"customer_id": "c-bad", "visit_id": "v\r\nX-Evil: 1"}).to_string(),
        json!({"customer_id": 42}).to_string(),
        json!({"customer_id": "c-bad", "surprise": 1}).to_string(),
        json!({"customer_id": "c bad"}).to_string(),
        "[1,2]".to_string(),
    ] {
        let r = sc.admin(
            "POST",
            "/admin/sessions",
            &[("Authorization", &admin_auth())],
            body.as_bytes(),
        );
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_request");
    }
    let big = format!("{{\"customer_id\": \"{}\"}}", "a".repeat(70 * 1024));
    assert_eq!(
        sc.admin(
            "POST",
            "/admin/sessions",
            &[("Authorization", &admin_auth())],
            big.as_bytes()
        )
        .status,
        413
    );
    let r = sc.admin(
        "GET",
        "/admin/customers/c-bad/sessions",
        &[("Authorization", &admin_auth())],
        b"",
    );
    assert_eq!(r.json()["sessions"], json!([]));
    assert_eq!(
        sc.admin(
            "PUT",
            "/admin/sessions",
            &[("Authorization", &admin_auth())],
            b""
        )
        .status,
        405
    );
}

#[test]
fn metrics_move_with_traffic() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    let before = |n: &str, l: &[(&str, &str)]| sc.metric(n, l);
    let created0 = before("sessions_created_total", &[("flavor", "admin")]);
    let active0 = before("sessions_active", &[("flavor", "admin")]);
    let hit0 = before("session_lookups_total", &[("result", "hit")]);
    let miss0 = before("session_lookups_total", &[("result", "miss")]);
    let fwd0 = before("requests_total", &[("kind", "forward")]);
    let rej0 = before("requests_total", &[("kind", "rejected")]);
    let up0 = before("upstream_errors_total", &[]);
    let revoked0 = before("sessions_ended_total", &[("reason", "revoked")]);
    let missing0 = before("auth_failures_total", &[("reason", "missing")]);

    let id = create(&sc, json!({})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    sc.proxy("GET", "/m/1", &[("X-Session-Id", &id)], b"");
    sc.proxy(
        "GET",
        "/m/2",
        &[("X-Session-Id", "0b8f5c1e-1d2a-4c3b-9e8f-000000000001")],
        b"",
    );
    sc.proxy("GET", "/account/m", &[], b"");
    sc.proxy("GET", "/secure/m", &[], b"");
    sc.proxy("GET", "/dead/m", &[], b"");
    sc.admin(
        "DELETE",
        &format!("/admin/sessions/{id}"),
        &[("Authorization", &admin_auth())],
        b"",
    );

    // Other tests in this binary run in parallel and share the registry: assert at-least deltas
    // for shared families, exact ones where only this test acts.
    assert!(sc.metric("sessions_created_total", &[("flavor", "admin")]) >= created0 + 1.0);
    assert!(sc.metric("sessions_ended_total", &[("reason", "revoked")]) >= revoked0 + 1.0);
    assert!(sc.metric("session_lookups_total", &[("result", "hit")]) >= hit0 + 1.0);
    assert!(sc.metric("session_lookups_total", &[("result", "miss")]) >= miss0 + 1.0);
    assert!(sc.metric("requests_total", &[("kind", "forward")]) >= fwd0 + 3.0);
    assert!(sc.metric("requests_total", &[("kind", "rejected")]) >= rej0 + 2.0);
    assert!(sc.metric("requests_total", &[("kind", "forward"), ("status", "502")]) >= 1.0);
    assert!(sc.metric("upstream_errors_total", &[]) >= up0 + 1.0);
    assert!(sc.metric("auth_failures_total", &[("reason", "missing")]) >= missing0 + 1.0);
    let _ = active0;
    let text = sc.admin("GET", "/metrics", &[], b"").text();
    assert!(!text.contains(&id), "a session id leaked into /metrics");
}

// ---------------------------------------------------------------------------------------------
// Brute force (issue 16): failed admin authentications limited per client IP

/// Two client addresses on Linux loopback.
const CLIENT_A: [u8; 4] = [127, 0, 0, 1];
const CLIENT_B: [u8; 4] = [127, 0, 0, 2];

/// The failure limit of the tests below. One failure comes back every 60/N = 5 s: the checks between two refills have that much
/// slack on a loaded machine, and the wait for one refill stays short.
const FAILURES_PER_MINUTE: usize = 12;

/// A GET to the admin listener from `from`, with `Authorization: auth` if given.
fn admin_from(
    sc: &TestSidecar,
    from: [u8; 4],
    path: &str,
    auth: Option<&str>,
    extra: &[(&str, &str)],
) -> Response {
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    sc.admin_from(from, "GET", path, &headers, b"")
}

/// Retry-After of a 429 in whole seconds, checked against the limit's design: one failure
/// comes back every 60/N seconds, so the wait is never longer than that, and never 0.
fn retry_after(r: &Response) -> u64 {
    let secs: u64 = r
        .header("Retry-After")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in whole seconds");
    let per_failure = (60 / FAILURES_PER_MINUTE) as u64;
    assert!((1..=per_failure).contains(&secs), "Retry-After {secs}");
    secs
}

#[test]
fn repeated_admin_auth_failures_are_refused_per_client_ip() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_server_keys(
        &up,
        &format!("admin_auth_failures_per_minute = {FAILURES_PER_MINUTE}"),
        "",
    );
    let list = "/admin/customers/c-bf/sessions";
    let admin = bearer(ADMIN_TOKEN);
    let web = bearer(WEB_TOKEN);
    // N failures (missing and invalid credentials alike) are answered 401. A valid non-admin
    // credential (403) is not guessing and does not count: it stays 403 throughout.
    for i in 0..FAILURES_PER_MINUTE {
        assert_eq!(admin_from(&sc, CLIENT_A, list, Some(&web), &[]).status, 403);
        let auth = (i % 2 == 1).then_some("Bearer wrong-guess");
        let r = admin_from(&sc, CLIENT_A, list, auth, &[]);
        assert_eq!(r.status, 401, "failure {} of {FAILURES_PER_MINUTE}", i + 1);
    }
    // The next attempt is refused without its credential being evaluated: the right token
    // too, so a correct guess confirms nothing.
    for auth in [
        Some(admin.as_str()),
        Some("Bearer wrong-guess"),
        Some(&web),
        None,
    ] {
        let r = admin_from(&sc, CLIENT_A, list, auth, &[]);
        assert_eq!(r.status, 429, "{auth:?}: {}", r.text());
        assert_eq!(r.json()["error"], "rate_limited");
        assert!(r.json()["message"].is_string());
        retry_after(&r);
    }
    for path in ["/admin/sessions", "/admin/sessions/x", "/admin/nothing"] {
        let r = admin_from(&sc, CLIENT_A, path, Some(&admin), &[]);
        assert_eq!(
            r.status, 429,
            "every route behind the admin credential: {path}"
        );
    }
    // The admin listener reads the TCP peer, never a forwarding header.
    let r = admin_from(
        &sc,
        CLIENT_A,
        list,
        Some(&admin),
        &[("X-Forwarded-For", "127.0.0.2"), ("X-Real-IP", "127.0.0.2")],
    );
    assert_eq!(r.status, 429);
    // What needs no credential is served as before.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            admin_from(&sc, CLIENT_A, path, None, &[]).status,
            200,
            "{path}"
        );
    }
    // Another address is not affected: its right token works, its wrong one is a plain 401.
    assert_eq!(
        admin_from(&sc, CLIENT_B, list, Some(&admin), &[]).status,
        200
    );
    assert_eq!(
        admin_from(&sc, CLIENT_B, list, Some("Bearer wrong-guess"), &[]).status,
        401
    );

    // Retry-After is the time until the bucket holds one more attempt: after it, the right
    // token works again from the refused address.
    let wait = retry_after(&admin_from(&sc, CLIENT_A, list, Some(&admin), &[]));
    std::thread::sleep(Duration::from_secs(wait) + Duration::from_millis(100));
    let r = admin_from(&sc, CLIENT_A, list, Some(&admin), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    // The success did not wipe the earlier failures: one more and the address is refused.
    assert_eq!(
        admin_from(&sc, CLIENT_A, list, Some("Bearer wrong-guess"), &[]).status,
        401
    );
    let r = admin_from(&sc, CLIENT_A, list, Some(&admin), &[]);
    assert_eq!(r.status, 429);
    retry_after(&r);
}

#[test]
fn admin_auth_failure_limit_zero_is_off() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_server_keys(&up, "admin_auth_failures_per_minute = 0", "");
    for _ in 0..50 {
        let r = admin_from(
            &sc,
            CLIENT_A,
            "/admin/sessions/x",
            Some("Bearer wrong"),
            &[],
        );
        assert_eq!(r.status, 401);
    }
    let admin = bearer(ADMIN_TOKEN);
    assert_eq!(
        admin_from(&sc, CLIENT_A, "/admin/sessions/x", Some(&admin), &[]).status,
        404
    );
}

#[test]
fn admin_auth_failure_limit_defaults_to_twenty_a_minute() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    for _ in 0..20 {
        let r = admin_from(
            &sc,
            CLIENT_A,
            "/admin/sessions/x",
            Some("Bearer wrong"),
            &[],
        );
        assert_eq!(r.status, 401);
    }
    let admin = bearer(ADMIN_TOKEN);
    let r = admin_from(&sc, CLIENT_A, "/admin/sessions/x", Some(&admin), &[]);
    assert_eq!(r.status, 429);
    let secs: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!(
        (1..=3).contains(&secs),
        "one failure back every 3 s: {secs}"
    );
}

#[test]
fn a_reload_keeps_admin_auth_failures_unless_the_limit_changes() {
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let config = |per_minute: usize, extra: &str| {
        config_with_server(
            &ports,
            &format!("admin_auth_failures_per_minute = {per_minute}"),
            extra,
        )
    };
    let sc = TestSidecar::start(ports, &config(FAILURES_PER_MINUTE, ""));
    let reload = |text: &str| {
        std::fs::write(sc.config_path(), text).unwrap();
        assert!(session_sidecar::background::reload::Reloader::new(sc.state.clone()).reload());
    };
    let admin = bearer(ADMIN_TOKEN);
    let path = "/admin/sessions/x";
    for _ in 0..FAILURES_PER_MINUTE {
        assert_eq!(admin_from(&sc, CLIENT_A, path, None, &[]).status, 401);
    }
    assert_eq!(
        admin_from(&sc, CLIENT_A, path, Some(&admin), &[]).status,
        429
    );
    // A reload that changes something else does not forgive the address.
    let extra = format!(
        "[[credentials]]\nname = \"late\"\ntoken_sha256 = \"{}\"\n",
        sha256_hex("late-token")
    );
    reload(&config(FAILURES_PER_MINUTE, &extra));
    assert_eq!(
        admin_from(&sc, CLIENT_A, path, Some(&admin), &[]).status,
        429
    );
    // A new limit starts its counts afresh.
    reload(&config(FAILURES_PER_MINUTE + 1, &extra));
    assert_eq!(
        admin_from(&sc, CLIENT_A, path, Some(&admin), &[]).status,
        404
    );
}
