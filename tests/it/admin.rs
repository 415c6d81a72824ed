//! SPEC §8: the admin listener — health, readiness, metrics, and the session admin API.

use crate::common;

use common::*;
use serde_json::json;

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
    let sc = TestSidecar::with_upstream(&up, "");
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
