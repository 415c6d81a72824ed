//! SPEC §4.1 SpreadsheetWEB dedicated sessions: every case of the answer table, byte-exact
//! bodies and headers, isolation, application limits, concurrency, oversize bodies, and the
//! forwarded calls that find the session through their JSON body.

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Barrier};

const BASE: &str = "/Api/Applications";
const NIL: &str = "00000000-0000-0000-0000-000000000000";
const TOKEN_MSG: &str =
    "The requested resource is restricted and your request did not provide a valid token.";
const APP_MSG: &str = "The requested application is invalid.";
const SESSION_MSG: &str = "The requested session is invalid.";
const LIMIT_MSG: &str = "The application has reached its dedicated session limit.";
const CLOSE_OK: &str = r#"{"Success":true,"InvalidToken":false,"Messages":[]}"#;

/// A second application, with room for two sessions; only `other` (all apps) may use it.
const SMALL_APP: &str = "5ma11app000000000000000000000000";

fn flavor_config(extra: &str) -> String {
    format!(
        "[flavors.spreadsheetweb]\nenabled = true\n\n[[applications]]\nkey = \"{SMALL_APP}\"\nmax_sessions = 2\n{extra}"
    )
}

fn start(up: &EchoUpstream) -> TestSidecar {
    TestSidecar::with_upstream(up, &flavor_config(""))
}

fn call(sc: &TestSidecar, endpoint: &str, token: Option<&str>, body: &[u8]) -> Response {
    let auth = token.map(bearer);
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    sc.proxy("POST", &format!("{BASE}/{endpoint}"), &headers, body)
}

fn open(sc: &TestSidecar, token: Option<&str>, app: &str) -> Response {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    sc.proxy_json(
        &format!("{BASE}/OpenDedicatedSession"),
        &headers,
        &json!({ "ApplicationKey": app }),
    )
}

fn close(sc: &TestSidecar, token: Option<&str>, app: &str, sid: &str) -> Response {
    let body = json!({ "SessionId": sid, "ApplicationKey": app }).to_string();
    call(sc, "CloseDedicatedSession", token, body.as_bytes())
}

/// HTTP 200, `application/json; charset=utf-8`, `no-cache, no-store`: on every answer.
fn assert_swb_headers(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json; charset=utf-8"),
        "{what}"
    );
    assert_eq!(
        r.header("Cache-Control"),
        Some("no-cache, no-store"),
        "{what}"
    );
}

fn open_ok(sc: &TestSidecar, token: &str, app: &str) -> String {
    let r = open(sc, Some(token), app);
    assert_swb_headers(&r, "open");
    let sid = r.json()["SessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no SessionId: {}", r.text()))
        .to_string();
    assert_eq!(
        r.text(),
        format!(r#"{{"SessionId":"{sid}","Success":true,"Messages":[]}}"#)
    );
    sid
}

fn open_failure_text(invalid_token: bool, message: &str) -> String {
    json_text(
        &json!({"SessionId": NIL, "Success": false, "InvalidToken": invalid_token, "Messages": [message]}),
    )
}

fn close_failure_text(invalid_token: bool, message: &str) -> String {
    json_text(&json!({"Success": false, "InvalidToken": invalid_token, "Messages": [message]}))
}

/// Compact JSON in the order the fields are listed (serde_json's `preserve_order` is off, so
/// the order is rebuilt by hand for the two shapes used here).
fn json_text(v: &Value) -> String {
    let order = ["SessionId", "Success", "InvalidToken", "Messages"];
    let parts: Vec<String> = order
        .iter()
        .filter_map(|k| v.get(*k).map(|x| format!("\"{k}\":{x}")))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.bytes()
            .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn open_and_close_are_answered_exactly_and_never_forwarded(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let sid = open_ok(&sc, WEB_TOKEN, APP_KEY);
    assert!(is_uuid_v4(&sid), "{sid}");
    let r = close(&sc, Some(WEB_TOKEN), APP_KEY, &sid);
    assert_swb_headers(&r, "close");
    assert_eq!(r.text(), CLOSE_OK);
    assert!(
        up.received().is_empty(),
        "session endpoints must not reach the app"
    );
}

fn token_missing_invalid_or_wrong_scheme(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let sid = open_ok(&sc, WEB_TOKEN, APP_KEY);
    let body_open = json!({ "ApplicationKey": APP_KEY }).to_string();
    let body_close = json!({ "ApplicationKey": APP_KEY, "SessionId": sid }).to_string();
    let basic = format!("Basic {WEB_TOKEN}");
    let bad = bearer("not-a-configured-token");
    for auth in [None, Some(bad.as_str()), Some(basic.as_str())] {
        let mut headers = vec![("Content-Type", "application/json")];
        headers.extend(auth.map(|a| ("Authorization", a)));
        let r = sc.proxy(
            "POST",
            &format!("{BASE}/OpenDedicatedSession"),
            &headers,
            body_open.as_bytes(),
        );
        assert_swb_headers(&r, "open without a valid token");
        assert_eq!(r.text(), open_failure_text(true, TOKEN_MSG), "{auth:?}");
        let r = sc.proxy(
            "POST",
            &format!("{BASE}/CloseDedicatedSession"),
            &headers,
            body_close.as_bytes(),
        );
        assert_swb_headers(&r, "close without a valid token");
        assert_eq!(r.text(), close_failure_text(true, TOKEN_MSG), "{auth:?}");
    }
    // The token is checked before the body: a broken body without a token is a token failure.
    let r = call(&sc, "OpenDedicatedSession", None, b"{");
    assert_eq!(r.text(), open_failure_text(true, TOKEN_MSG));
    // The refused closes changed nothing.
    assert_eq!(close(&sc, Some(WEB_TOKEN), APP_KEY, &sid).text(), CLOSE_OK);
}

fn application_unknown_or_not_allowed(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let unknown = "ffffffffffffffffffffffffffffffff";
    let cases = [
        (WEB_TOKEN, unknown, "unknown application"),
        (NOAPP_TOKEN, APP_KEY, "credential with no applications"),
        (
            WEB_TOKEN,
            SMALL_APP,
            "configured application outside the credential's list",
        ),
    ];
    for (token, app, what) in cases {
        let r = open(&sc, Some(token), app);
        assert_swb_headers(&r, what);
        assert_eq!(r.text(), open_failure_text(false, APP_MSG), "{what}");
    }
    let sid = open_ok(&sc, WEB_TOKEN, APP_KEY);
    for (token, app, what) in cases {
        let r = close(&sc, Some(token), app, &sid);
        assert_swb_headers(&r, what);
        assert_eq!(
            r.text(),
            close_failure_text(false, APP_MSG),
            "close: {what}"
        );
    }
    assert_eq!(
        close(&sc, Some(WEB_TOKEN), APP_KEY, &sid).text(),
        CLOSE_OK,
        "still open after the refusals"
    );
    // The wildcard credential may use any configured application.
    let other = open_ok(&sc, OTHER_TOKEN, SMALL_APP);
    assert_eq!(
        close(&sc, Some(OTHER_TOKEN), SMALL_APP, &other).text(),
        CLOSE_OK
    );
}

fn session_unknown_closed_or_of_another_application(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let invalid = close_failure_text(false, SESSION_MSG);
    for sid in [
        "7d1e2c58-0a8b-4c1e-9f3a-0123456789ab",
        "not a session id",
        "a\u{e9}b",
        &"x".repeat(300),
    ] {
        let r = close(&sc, Some(WEB_TOKEN), APP_KEY, sid);
        assert_swb_headers(&r, "unknown session");
        assert_eq!(r.text(), invalid, "{sid:?}");
    }
    // Closed: the second close fails.
    let sid = open_ok(&sc, WEB_TOKEN, APP_KEY);
    assert_eq!(close(&sc, Some(WEB_TOKEN), APP_KEY, &sid).text(), CLOSE_OK);
    assert_eq!(
        close(&sc, Some(WEB_TOKEN), APP_KEY, &sid).text(),
        invalid,
        "closed twice"
    );
    // Another application's session is not this application's to close.
    let small = open_ok(&sc, OTHER_TOKEN, SMALL_APP);
    assert_eq!(
        close(&sc, Some(OTHER_TOKEN), APP_KEY, &small).text(),
        invalid,
        "wrong application"
    );
    assert_eq!(
        close(&sc, Some(OTHER_TOKEN), SMALL_APP, &small).text(),
        CLOSE_OK,
        "right application"
    );
}

fn expired_session_is_invalid(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc =
        TestSidecar::with_manual_clock(&up, &flavor_config("[sessions]\nidle_timeout = \"10m\"\n"))
            .over(proto);
    let (sid, other) = (
        open_ok(&sc, WEB_TOKEN, APP_KEY),
        open_ok(&sc, WEB_TOKEN, APP_KEY),
    );
    let idle = std::time::Duration::from_secs(600);
    sc.advance(idle - std::time::Duration::from_millis(1));
    assert_eq!(
        close(&sc, Some(WEB_TOKEN), APP_KEY, &other).text(),
        CLOSE_OK,
        "live just before its idle deadline"
    );
    sc.advance(std::time::Duration::from_millis(1));
    assert_eq!(
        close(&sc, Some(WEB_TOKEN), APP_KEY, &sid).text(),
        close_failure_text(false, SESSION_MSG)
    );
}

fn isolation_by_credential_and_admin_override(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let sid = open_ok(&sc, WEB_TOKEN, APP_KEY);
    let r = close(&sc, Some(OTHER_TOKEN), APP_KEY, &sid);
    assert_eq!(
        r.text(),
        close_failure_text(false, SESSION_MSG),
        "another credential sees no session"
    );
    assert_eq!(
        close(&sc, Some(WEB_TOKEN), APP_KEY, &sid).text(),
        CLOSE_OK,
        "the owner still can"
    );
    let sid = open_ok(&sc, WEB_TOKEN, APP_KEY);
    assert_eq!(
        close(&sc, Some(ADMIN_TOKEN), APP_KEY, &sid).text(),
        CLOSE_OK,
        "an admin may close any session"
    );
    // The session remembers its owner and application.
    let sid = open_ok(&sc, WEB_TOKEN, APP_KEY);
    let r = sc.admin(
        "GET",
        &format!("/admin/sessions/{sid}"),
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        b"",
    );
    let s = r.json();
    assert_eq!(
        (
            s["flavor"].as_str(),
            s["owner"].as_str(),
            s["application_key"].as_str()
        ),
        (Some("spreadsheetweb"), Some("web"), Some(APP_KEY))
    );
}

fn application_session_limit(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let a = open_ok(&sc, OTHER_TOKEN, SMALL_APP);
    let _b = open_ok(&sc, OTHER_TOKEN, SMALL_APP);
    let r = open(&sc, Some(OTHER_TOKEN), SMALL_APP);
    assert_swb_headers(&r, "open over the limit");
    assert_eq!(r.text(), open_failure_text(false, LIMIT_MSG));
    // Other applications are not affected, and closing makes room again.
    open_ok(&sc, OTHER_TOKEN, APP_KEY);
    assert_eq!(
        close(&sc, Some(OTHER_TOKEN), SMALL_APP, &a).text(),
        CLOSE_OK
    );
    open_ok(&sc, OTHER_TOKEN, SMALL_APP);
}

fn malformed_bodies_get_a_message(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let cases: [(&str, &str, &str); 10] = [
        ("OpenDedicatedSession", "", "empty"),
        (
            "OpenDedicatedSession",
            "{\"ApplicationKey\": ",
            "not valid JSON",
        ),
        ("OpenDedicatedSession", "[\"x\"]", "must be a JSON object"),
        (
            "OpenDedicatedSession",
            "{\"Application\": \"x\"}",
            "ApplicationKey is required.",
        ),
        (
            "OpenDedicatedSession",
            "{\"ApplicationKey\": 12345}",
            "ApplicationKey must be a string.",
        ),
        (
            "OpenDedicatedSession",
            "{\"ApplicationKey\": null}",
            "ApplicationKey is required.",
        ),
        (
            "CloseDedicatedSession",
            "{\"ApplicationKey\": \"x\"}",
            "SessionId is required.",
        ),
        (
            "CloseDedicatedSession",
            "{\"ApplicationKey\": \"x\", \"SessionId\": 42}",
            "SessionId must be a string.",
        ),
        (
            "CloseDedicatedSession",
            "{\"SessionId\": \"x\"}",
            "ApplicationKey is required.",
        ),
        ("CloseDedicatedSession", "nul", "not valid JSON"),
    ];
    for (endpoint, body, want) in cases {
        let r = call(&sc, endpoint, Some(WEB_TOKEN), body.as_bytes());
        assert_swb_headers(&r, body);
        let v = r.json();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let expected = if endpoint.starts_with("Open") { 4 } else { 3 };
        assert_eq!(keys.len(), expected, "{body}: {}", r.text());
        assert_eq!(v["Success"], false);
        assert_eq!(v["InvalidToken"], false);
        let message = v["Messages"][0].as_str().unwrap();
        assert!(message.contains(want), "{body}: {message}");
        if endpoint.starts_with("Open") {
            assert_eq!(v["SessionId"], NIL);
        }
    }
    assert!(up.received().is_empty());
}

fn other_methods_and_spellings(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let auth = bearer(WEB_TOKEN);
    let r = sc.proxy_get(
        &format!("{BASE}/OpenDedicatedSession"),
        &[("Authorization", &auth)],
    );
    assert_swb_headers(&r, "GET open");
    assert_eq!(
        r.text(),
        open_failure_text(
            false,
            "The requested resource does not support http method 'GET'."
        )
    );
    let r = sc.proxy(
        "DELETE",
        &format!("{BASE}/CloseDedicatedSession"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(
        r.text(),
        close_failure_text(
            false,
            "The requested resource does not support http method 'DELETE'."
        )
    );
    // Routing and field names are case-insensitive, as in the original ASP.NET service.
    let r = sc.proxy(
        "POST",
        &format!("{BASE}/opendedicatedsession/"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        json!({ "applicationKey": APP_KEY }).to_string().as_bytes(),
    );
    assert_eq!(r.json()["Success"], true, "{}", r.text());
    assert!(up.received().is_empty());
}

fn oversize_bodies_keep_the_200_shape(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let big = json!({ "ApplicationKey": APP_KEY, "Padding": "p".repeat(70 * 1024) }).to_string();
    let r = call(&sc, "OpenDedicatedSession", Some(WEB_TOKEN), big.as_bytes());
    assert_swb_headers(&r, "oversize open");
    assert_eq!(
        r.text(),
        open_failure_text(false, "The request body is too large.")
    );
    let r = call(
        &sc,
        "CloseDedicatedSession",
        Some(WEB_TOKEN),
        big.as_bytes(),
    );
    assert_swb_headers(&r, "oversize close");
    assert_eq!(
        r.text(),
        close_failure_text(false, "The request body is too large.")
    );
    assert!(up.received().is_empty());
}

fn concurrent_opens_give_distinct_ids(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = Arc::new(start(&up).over(proto));
    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (sc, barrier) = (sc.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                open_ok(&sc, WEB_TOKEN, APP_KEY)
            })
        })
        .collect();
    let ids: HashSet<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(ids.len(), n);
    assert!(ids.iter().all(|id| is_uuid_v4(id)));
}

fn concurrent_closes_succeed_once(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = Arc::new(start(&up).over(proto));
    let sid = open_ok(&sc, WEB_TOKEN, APP_KEY);
    let n = 10;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (sc, barrier, sid) = (sc.clone(), barrier.clone(), sid.clone());
            std::thread::spawn(move || {
                barrier.wait();
                close(&sc, Some(WEB_TOKEN), APP_KEY, &sid).text()
            })
        })
        .collect();
    let answers: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        answers.iter().filter(|a| a.as_str() == CLOSE_OK).count(),
        1,
        "{answers:?}"
    );
    let invalid = close_failure_text(false, SESSION_MSG);
    assert_eq!(
        answers.iter().filter(|a| **a == invalid).count(),
        n - 1,
        "{answers:?}"
    );
}

fn forwarded_calls_find_the_session_in_their_body(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let sid = open_ok(&sc, WEB_TOKEN, APP_KEY);
    let body = format!(
        "{{\n  \"SessionId\" : \"{sid}\", \"ApplicationKey\":\"{APP_KEY}\", \"Inputs\": [1.50]\n}}"
    );
    let auth = bearer(WEB_TOKEN);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let r = sc.proxy(
        "POST",
        &format!("{BASE}/GetResult"),
        &headers,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "GetResult is forwarded");
    let rec = up
        .received_at(&format!("{BASE}/GetResult"))
        .pop()
        .expect("forwarded");
    assert_eq!(rec.header_all("X-Session-Id"), vec![sid.clone()]);
    assert_eq!(
        rec.header_all("X-Application-Key"),
        vec![APP_KEY.to_string()]
    );
    assert_eq!(rec.header_all("X-Auth-Subject"), vec!["web".to_string()]);
    assert_eq!(rec.body, body.as_bytes(), "forwarded unchanged");
    // Once closed, the same call carries no identity.
    assert_eq!(close(&sc, Some(WEB_TOKEN), APP_KEY, &sid).text(), CLOSE_OK);
    sc.proxy(
        "POST",
        &format!("{BASE}/GetResult"),
        &headers,
        body.as_bytes(),
    );
    let rec = up
        .received_at(&format!("{BASE}/GetResult"))
        .pop()
        .expect("forwarded");
    assert!(rec.header_all("X-Session-Id").is_empty());
    assert!(rec.header_all("X-Application-Key").is_empty());
}

fn base_path_is_configurable(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc =
        TestSidecar::with_upstream(&up, "[flavors.spreadsheetweb]\nbase_path = \"/swb/api/\"\n")
            .over(proto);
    let auth = bearer(WEB_TOKEN);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = json!({ "ApplicationKey": APP_KEY }).to_string();
    let r = sc.proxy(
        "POST",
        "/swb/api/OpenDedicatedSession",
        &headers,
        body.as_bytes(),
    );
    assert_eq!(r.json()["Success"], true, "{}", r.text());
    let r = sc.proxy(
        "POST",
        &format!("{BASE}/OpenDedicatedSession"),
        &headers,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        up.received_at(&format!("{BASE}/OpenDedicatedSession"))
            .len(),
        1,
        "outside the base path: forwarded"
    );
}

fn disabled_flavour_is_forwarded(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc =
        TestSidecar::with_upstream(&up, "[flavors.spreadsheetweb]\nenabled = false\n").over(proto);
    let r = open(&sc, Some(WEB_TOKEN), APP_KEY);
    assert_eq!(r.status, 200);
    assert_eq!(
        up.received_at(&format!("{BASE}/OpenDedicatedSession"))
            .len(),
        1
    );
}

both_protocols!(
    open_and_close_are_answered_exactly_and_never_forwarded,
    token_missing_invalid_or_wrong_scheme,
    application_unknown_or_not_allowed,
    session_unknown_closed_or_of_another_application,
    expired_session_is_invalid,
    isolation_by_credential_and_admin_override,
    application_session_limit,
    malformed_bodies_get_a_message,
    other_methods_and_spellings,
    oversize_bodies_keep_the_200_shape,
    concurrent_opens_give_distinct_ids,
    concurrent_closes_succeed_once,
    forwarded_calls_find_the_session_in_their_body,
    base_path_is_configurable,
    disabled_flavour_is_forwarded,
);
