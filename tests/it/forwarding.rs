//! SPEC §6 forwarding: routes, locators, identity headers, assertion, upstream failures.

use crate::common;

use common::*;
use serde_json::json;

/// A session created through the admin API, with full identity.
pub(crate) fn admin_session(sc: &TestSidecar, customer: &str) -> String {
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[("Authorization", &bearer(ADMIN_TOKEN)), ("Content-Type", "application/json")],
        json!({"customer_id": customer, "agent_id": "agent-1", "visit_id": "visit-1", "global_visit_id": "gv-1"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

fn request_reaches_app_unchanged(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    let body = "{ \"b\" :\"x y\",\n \"a\":[1,2.50] }";
    let r = sc.proxy(
        "POST",
        "/plain/x?a=1&b=two%20words",
        &[("Content-Type", "application/json"), ("X-Conf", "yes")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    let rec = &up.received_at("/plain/x")[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.query, "a=1&b=two%20words");
    assert_eq!(rec.body, body.as_bytes());
    assert_eq!(rec.header("X-Conf").as_deref(), Some("yes"));
}

fn every_locator_finds_the_session(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    let sid = admin_session(&sc, "cust-loc");
    let cookie = format!("theme=dark; session_id={sid}; lang=en");
    let body = json!({"order": 1, "session": {"key": sid}}).to_string();
    let flat = json!({"SessionId": sid}).to_string();
    // (what, path, headers, body)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, String);
    let cases: Vec<Case> = vec![
        (
            "header",
            "/loc/header".into(),
            vec![("X-Session-Id", sid.as_str())],
            String::new(),
        ),
        (
            "cookie",
            "/loc/cookie".into(),
            vec![("Cookie", cookie.as_str())],
            String::new(),
        ),
        (
            "query",
            format!("/loc/query?x=1&sessionId={sid}"),
            vec![],
            String::new(),
        ),
        ("path", format!("/p/{sid}"), vec![], String::new()),
        (
            "path prefix",
            format!("/Web/Session/{sid}/Expiration"),
            vec![],
            String::new(),
        ),
        (
            "json nested",
            "/loc/json-nested".into(),
            vec![("Content-Type", "application/json")],
            body,
        ),
        (
            "json flat",
            "/loc/json-flat".into(),
            vec![("Content-Type", "application/json")],
            flat,
        ),
    ];
    for (what, path, headers, body) in cases {
        let r = sc.proxy(
            if body.is_empty() { "GET" } else { "POST" },
            &path,
            &headers,
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{what}");
        let rec = up.received().into_iter().last().unwrap();
        assert_eq!(rec.header_all("X-Session-Id"), vec![sid.clone()], "{what}");
        assert_eq!(
            rec.header_all("X-Customer-Id"),
            vec!["cust-loc".to_string()],
            "{what}"
        );
        assert_eq!(
            rec.header_all("X-Agent-Id"),
            vec!["agent-1".to_string()],
            "{what}"
        );
        assert_eq!(
            rec.header_all("X-Visit-Id"),
            vec!["visit-1".to_string()],
            "{what}"
        );
        assert_eq!(
            rec.header_all("X-Global-Visit-Id"),
            vec!["gv-1".to_string()],
            "{what}"
        );
        assert_eq!(
            rec.header_all("X-Session-Logged-In"),
            vec!["false".to_string()],
            "{what}"
        );
        assert_eq!(
            rec.body,
            body.as_bytes(),
            "{what}: body forwarded unchanged"
        );
    }
}

fn spoofed_identity_headers_are_stripped(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    let sid = admin_session(&sc, "real-cust");
    let spoof = [
        ("X-Customer-Id", "evil-1"),
        ("x-customer-id", "evil-2"),
        ("X-CUSTOMER-ID", "evil-3"),
        ("x-Agent-ID", "evil-4"),
        ("X-Auth-Subject", "evil-5"),
        ("X-Session-Signature", "evil-6"),
        ("X-Application-Key", "evil-7"),
        ("Connection", "keep-alive, X-Customer-Id, x-session-id"),
    ];
    // HTTP/2 has no Connection header (RFC 9113 §8.2.2): the h2 case sends the rest.
    let spoof: Vec<(&str, &str)> = spoof
        .into_iter()
        .filter(|(k, _)| !(proto.is_h2() && *k == "Connection"))
        .collect();
    // Without a session nothing of the client's identity survives.
    let r = sc.proxy("GET", "/spoof/none", &spoof, b"");
    assert_eq!(r.status, 200);
    let rec = &up.received_at("/spoof/none")[0];
    for h in [
        "X-Customer-Id",
        "X-Agent-Id",
        "X-Auth-Subject",
        "X-Session-Signature",
        "X-Application-Key",
        "X-Session-Id",
    ] {
        assert!(
            rec.header_all(h).is_empty(),
            "{h} reached the app: {:?}",
            rec.header_all(h)
        );
    }
    // With a session the values are exactly the session's.
    let mut h: Vec<(&str, &str)> = spoof.to_vec();
    let cookie = format!("session_id={sid}");
    h.push(("Cookie", &cookie));
    sc.proxy("GET", "/spoof/with", &h, b"");
    let rec = &up.received_at("/spoof/with")[0];
    assert_eq!(
        rec.header_all("X-Customer-Id"),
        vec!["real-cust".to_string()]
    );
    assert_eq!(rec.header_all("X-Agent-Id"), vec!["agent-1".to_string()]);
    assert!(rec.header_all("X-Auth-Subject").is_empty());
    assert!(rec.header_all("X-Application-Key").is_empty());
}

fn spoofed_session_id_naming_nothing_is_dropped(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    sc.proxy(
        "GET",
        "/spoof/sid",
        &[("x-SESSION-id", "spoof-1"), ("X-Session-Id", "spoof-2")],
        b"",
    );
    let rec = &up.received_at("/spoof/sid")[0];
    assert!(rec.header_all("X-Session-Id").is_empty());
}

fn required_route_rejects_without_forwarding_and_keeps_alive(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    let mut conn = sc.proxy_conn();
    let r = conn.send("GET", "/account/a", &[], b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "session_required");
    assert!(!conn.closed());
    let r = conn.send(
        "GET",
        "/account/b",
        &[("X-Session-Id", "0b8f5c1e-1d2a-4c3b-9e8f-000000000000")],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "session_expired");
    let r = conn.send("GET", "/free/c", &[], b"");
    assert_eq!(r.status, 200, "same connection still usable");
    assert!(
        up.received_at("/account/").is_empty(),
        "rejected requests must not be forwarded"
    );
    let sid = admin_session(&sc, "c-req");
    let r = conn.send("GET", "/account/d", &[("X-Session-Id", &sid)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(up.received_at("/account/d").len(), 1);
}

fn route_methods_filter(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    assert_eq!(sc.proxy("GET", "/post-only/x", &[], b"").status, 200);
    assert_eq!(
        sc.proxy(
            "POST",
            "/post-only/y",
            &[("Content-Type", "application/json")],
            b"{}"
        )
        .status,
        401
    );
    assert!(up.received_at("/post-only/y").is_empty());
}

fn identity_assertion_sets_and_clears_customer(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        b"{}",
    );
    let sid = r.json()["id"].as_str().unwrap().to_string();
    let r = sc.proxy(
        "POST",
        "/api/Login",
        &[
            ("X-Session-Id", &sid),
            ("X-Echo-Assert-Customer", "cust-42"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("X-Sidecar-Set-Customer-Id").is_none(),
        "assertion header leaked to the client"
    );
    sc.proxy("GET", "/after-login", &[("X-Session-Id", &sid)], b"");
    let rec = &up.received_at("/after-login")[0];
    assert_eq!(rec.header_all("X-Customer-Id"), vec!["cust-42".to_string()]);
    assert_eq!(
        rec.header_all("X-Session-Logged-In"),
        vec!["true".to_string()]
    );
    sc.proxy(
        "POST",
        "/api/Logout",
        &[("X-Session-Id", &sid), ("X-Echo-Assert-Customer", "")],
        b"",
    );
    sc.proxy("GET", "/after-logout", &[("X-Session-Id", &sid)], b"");
    let rec = &up.received_at("/after-logout")[0];
    assert!(rec.header_all("X-Customer-Id").is_empty());
    assert_eq!(
        rec.header_all("X-Session-Logged-In"),
        vec!["false".to_string()]
    );
    // Without a session the header is still removed.
    let r = sc.proxy("GET", "/nobody", &[("X-Echo-Assert-Customer", "x")], b"");
    assert!(r.header("X-Sidecar-Set-Customer-Id").is_none());
}

fn token_route_requires_and_names_credential(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    for h in [
        vec![],
        vec![("Authorization", "Bearer nope")],
        vec![("Authorization", "Basic abc")],
    ] {
        let r = sc.proxy("GET", "/secure/x", &h, b"");
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"], "unauthorized");
    }
    assert!(up.received_at("/secure/x").is_empty());
    let auth = bearer(OTHER_TOKEN);
    let r = sc.proxy(
        "GET",
        "/secure/y",
        &[("Authorization", &auth), ("X-Auth-Subject", "evil")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        up.received_at("/secure/y")[0].header_all("X-Auth-Subject"),
        vec!["other".to_string()]
    );
    // On auth = "none" routes a valid credential is named too, an invalid one ignored.
    sc.proxy("GET", "/open/a", &[("Authorization", &auth)], b"");
    assert_eq!(
        up.received_at("/open/a")[0].header_all("X-Auth-Subject"),
        vec!["other".to_string()]
    );
    assert_eq!(
        sc.proxy("GET", "/open/b", &[("Authorization", "Bearer nope")], b"")
            .status,
        200
    );
    assert!(up.received_at("/open/b")[0]
        .header_all("X-Auth-Subject")
        .is_empty());
}

fn upstream_down_is_502_and_slow_is_504(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    let r = sc.proxy("GET", "/dead/x", &[], b"");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "bad_gateway");
    let r = sc.proxy("GET", "/slow/x", &[("X-Echo-Sleep", "2.5")], b"");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "gateway_timeout");
}

fn signature_header_when_signing_key_is_set(proto: Protocol) {
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("signing.key");
    std::fs::write(&key_path, format!("{}\n", "k".repeat(32))).unwrap();
    let toml = base_config(&ports, "").replace(
        "[store]",
        &format!("[identity_headers]\nsignature = \"X-Session-Signature\"\nsigning_key_file = \"{}\"\n\n[store]", key_path.display()),
    );
    let sc = TestSidecar::start(ports, &toml).over(proto);
    let sid = admin_session(&sc, "signed-cust");
    sc.proxy(
        "GET",
        "/signed",
        &[("X-Session-Id", &sid), ("X-Session-Signature", "forged")],
        b"",
    );
    let sig = up.received_at("/signed")[0].header_all("X-Session-Signature");
    assert_eq!(sig.len(), 1);
    let parts: Vec<&str> = sig[0].split(',').collect();
    assert_eq!(parts[0], "v1");
    let t: u64 = parts[1].strip_prefix("t=").unwrap().parse().unwrap();
    let s = parts[2].strip_prefix("s=").unwrap();
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice("k".repeat(32).as_bytes()).unwrap();
    mac.update(format!("{t}\n{sid}\nsigned-cust").as_bytes());
    assert_eq!(s, hex::encode(mac.finalize().into_bytes()));
}

fn forward_rate_limit_per_session(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc =
        TestSidecar::with_upstream(&up, "[rate_limits]\nforward_per_session = 1\n").over(proto);
    let busy = admin_session(&sc, "rl-busy");
    let calm = admin_session(&sc, "rl-calm");
    let mut conn = sc.proxy_conn();
    let statuses: Vec<u16> = (0..20)
        .map(|i| {
            conn.send(
                "GET",
                &format!("/rl/busy/{i}"),
                &[("X-Session-Id", &busy)],
                b"",
            )
            .status
        })
        .collect();
    let limited: Vec<&u16> = statuses.iter().filter(|s| **s == 429).collect();
    assert!(!limited.is_empty() && limited.len() < 20, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
    assert_eq!(
        up.received_at("/rl/busy/").len(),
        20 - limited.len(),
        "refused requests are not forwarded"
    );
    let r = conn.send("GET", "/rl/busy/again", &[("X-Session-Id", &busy)], b"");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "rate_limited");
    assert!(r.header("Retry-After").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(!conn.closed(), "a 429 keeps the connection");
    assert_eq!(
        sc.proxy("GET", "/rl/calm", &[("X-Session-Id", &calm)], b"")
            .status,
        200,
        "other sessions pass"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        conn.send("GET", "/rl/busy/later", &[("X-Session-Id", &busy)], b"")
            .status,
        200,
        "the bucket refills"
    );
}

fn upstream_stopped_and_restarted(proto: Protocol) {
    let up = EchoUpstream::start();
    let port = up.port;
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    assert_eq!(sc.proxy("GET", "/restart/1", &[], b"").status, 200);
    drop(up);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let r = sc.proxy("GET", "/restart/2", &[], b"");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "bad_gateway");
    let up = EchoUpstream::start_on(port);
    let r = sc.proxy("GET", "/restart/3", &[], b"");
    assert_eq!(r.status, 200, "service resumes when the upstream is back");
    assert_eq!(up.received_at("/restart/3").len(), 1);
}

both_protocols!(
    request_reaches_app_unchanged,
    every_locator_finds_the_session,
    spoofed_identity_headers_are_stripped,
    spoofed_session_id_naming_nothing_is_dropped,
    required_route_rejects_without_forwarding_and_keeps_alive,
    route_methods_filter,
    identity_assertion_sets_and_clears_customer,
    token_route_requires_and_names_credential,
    upstream_down_is_502_and_slow_is_504,
    signature_header_when_signing_key_is_set,
    forward_rate_limit_per_session,
    upstream_stopped_and_restarted,
);
