//! SPEC §4.4 Voucherify validation sessions: TTL locks enforced by the sidecar in front of a
//! real echo upstream. Metrics live in one process-wide registry, so every test here holds
//! `serial()` to keep the metric deltas it checks its own.

use crate::common;

use common::echo::Received;
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::Duration;

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const LIMITS: &str = r#"
[flavors.voucherify]
enabled = true
base_path = ""
max_ttl = "30d"

[[flavors.voucherify.limits]]
code = "ONE"
quantity = 1

[[flavors.voucherify.limits]]
code = "TWO-A"
quantity = 1

[[flavors.voucherify.limits]]
code = "TWO-B"
quantity = 1

[[flavors.voucherify.limits]]
code = "RUSH"
quantity = 7

[[flavors.voucherify.limits]]
code = "DEAD-1"
quantity = 1

[[flavors.voucherify.limits]]
code = "REQ-1"
quantity = 1

[[routes]]
path_prefix = "/v1/vouchers/DEAD-1/"
upstream = "dead"

[[routes]]
path_prefix = "/v1/vouchers/REQ-1/"
session = "required"
"#;

fn start() -> (EchoUpstream, TestSidecar) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, LIMITS);
    (up, sc)
}

/// `start` with the locks on a manual clock (`TestSidecar::advance`).
fn start_on_manual_clock() -> (EchoUpstream, TestSidecar) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_manual_clock(&up, LIMITS);
    (up, sc)
}

/// X-App-Id/X-App-Token of the `pos` credential.
fn app_creds() -> Vec<(&'static str, String)> {
    vec![
        ("X-App-Id", POS_APP_ID.to_string()),
        ("X-App-Token", POS_TOKEN.to_string()),
    ]
}

fn body(codes: &[&str], session: Option<Value>, marker: &str) -> Value {
    let mut b = json!({
        "redeemables": codes.iter().map(|c| json!({"object": "voucher", "id": c})).collect::<Vec<_>>(),
        "metadata": {"marker": marker},
    });
    if let Some(s) = session {
        b["session"] = s;
    }
    b
}

fn post(
    sc: &TestSidecar,
    path: &str,
    creds: &[(&str, String)],
    extra: &[(&str, &str)],
    body: &Value,
) -> Response {
    let mut h: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.extend_from_slice(extra);
    h.push(("Content-Type", "application/json"));
    sc.proxy("POST", path, &h, body.to_string().as_bytes())
}

/// A LOCK validation of `codes` on `/v1/validations` with the `pos` app credentials.
fn lock(sc: &TestSidecar, codes: &[&str], session: Value, marker: &str) -> Response {
    post(
        sc,
        "/v1/validations",
        &app_creds(),
        &[],
        &body(codes, Some(session), marker),
    )
}

/// The key of a validation that must have succeeded.
fn lock_ok(sc: &TestSidecar, codes: &[&str], session: Value, marker: &str) -> String {
    let r = lock(sc, codes, session, marker);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["session"]["key"]
        .as_str()
        .expect("session.key in the answer")
        .to_string()
}

fn release(sc: &TestSidecar, code: &str, key: &str, creds: &[(&str, String)]) -> Response {
    let h: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sc.proxy(
        "DELETE",
        &format!("/v1/vouchers/{code}/sessions/{key}"),
        &h,
        b"",
    )
}

/// The requests the upstream received whose body carries `marker`.
fn forwarded(up: &EchoUpstream, marker: &str) -> Vec<Received> {
    up.received()
        .into_iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains(marker))
        .collect()
}

fn only(up: &EchoUpstream, marker: &str) -> Received {
    let mut recs = forwarded(up, marker);
    assert_eq!(recs.len(), 1, "{marker} should reach the app exactly once");
    recs.remove(0)
}

fn assert_error(r: &Response, status: u16, key: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let b = r.json();
    assert_eq!(b["code"], status, "{b}");
    assert_eq!(b["key"], key, "{b}");
    assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
    assert!(b["details"].is_string(), "{b}");
    // SPEC §13.7: every error body carries a request id, also sent as X-Request-Id.
    let id = b["request_id"].as_str().expect("request_id").to_string();
    assert!(id.starts_with("v-"), "{b}");
    assert_eq!(r.header("X-Request-Id"), Some(id.as_str()));
    b
}

/// SPEC §13.7: a sold-out validation is answered 200 `valid: false` in the endpoint's shape,
/// naming the refused codes; returns them.
fn sold_out_codes(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["valid"], false, "{b}");
    assert!(
        b.get("echo").is_none() && b.get("method").is_none(),
        "reached the app: {b}"
    );
    let id = r.header("X-Request-Id").expect("X-Request-Id").to_string();
    let check_error = |e: &Value| {
        assert_eq!(
            (e["code"].clone(), e["key"].clone(), e["message"].clone()),
            (
                json!(400),
                json!("quantity_exceeded"),
                json!("Quantity exceeded")
            ),
            "{b}"
        );
        assert_eq!(e["request_id"], id.as_str(), "{b}");
    };
    match b.get("inapplicable_redeemables") {
        Some(items) => {
            assert_eq!(b["redeemables"], json!([]), "{b}");
            assert_eq!(b["tracking_id"], Value::Null, "{b}");
            assert_eq!(
                b["stacking_rules"]["applicable_redeemables_limit"], 5,
                "{b}"
            );
            items
                .as_array()
                .expect("inapplicable_redeemables")
                .iter()
                .map(|i| {
                    assert_eq!(
                        (i["status"].as_str(), i["object"].as_str()),
                        (Some("INAPPLICABLE"), Some("voucher")),
                        "{b}"
                    );
                    check_error(&i["result"]["error"]);
                    i["id"].as_str().unwrap().to_string()
                })
                .collect()
        }
        None => {
            assert_eq!(b["reason"], "quantity exceeded", "{b}");
            check_error(&b["error"]);
            vec![b["code"].as_str().expect("code").to_string()]
        }
    }
}

fn assert_quantity_exceeded(r: &Response) {
    assert!(!sold_out_codes(r).is_empty());
}

fn validation_is_forwarded_with_generated_key_and_answered_with_session(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let sent = body(&["FREE-1"], Some(json!({"type": "LOCK"})), "gen-1");
    let r = post(&sc, "/v1/validations", &app_creds(), &[], &sent);
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let key = b["session"]["key"].as_str().unwrap().to_string();
    assert!(
        key.starts_with("ssn_")
            && key.len() == 36
            && key[4..].bytes().all(|c| c.is_ascii_alphanumeric()),
        "{key}"
    );
    assert_eq!(
        b["session"],
        json!({"key": key, "type": "LOCK", "ttl": 7, "ttl_unit": "DAYS"})
    );
    assert_eq!(
        b["path"], "/v1/validations",
        "the rest of the answer is the app's"
    );
    let rec = only(&up, "gen-1");
    assert_eq!(rec.header_all("X-Session-Key"), vec![key.clone()]);
    assert_eq!(rec.header_all("X-Session-Type"), vec!["LOCK".to_string()]);
    assert_eq!(rec.header_all("X-Locked-Quantity"), vec!["0".to_string()]);
    assert_eq!(
        rec.body,
        sent.to_string().as_bytes(),
        "the forwarded body is unchanged"
    );
    let other = lock_ok(&sc, &["FREE-1"], json!({"type": "LOCK"}), "gen-2");
    assert_ne!(other, key, "every validation without a key gets a new one");
}

fn same_key_overwrites_and_never_double_counts(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let created = sc.metric("sessions_created_total", &[("flavor", "voucherify")]);
    let active = sc.metric("locks_active", &[]);
    let s = json!({"type": "LOCK", "key": "cart-17"});
    assert_eq!(lock_ok(&sc, &["ONE"], s.clone(), "twice-1"), "cart-17");
    assert_eq!(lock_ok(&sc, &["ONE"], s.clone(), "twice-2"), "cart-17");
    let rec = only(&up, "twice-2");
    assert_eq!(
        rec.header_all("X-Locked-Quantity"),
        vec!["0".to_string()],
        "its own earlier lock is not counted"
    );
    assert_eq!(
        sc.metric("sessions_created_total", &[("flavor", "voucherify")]) - created,
        1.0
    );
    assert_eq!(sc.metric("locks_active", &[]) - active, 1.0);
    assert_quantity_exceeded(&lock(
        &sc,
        &["ONE"],
        json!({"type": "LOCK", "key": "cart-18"}),
        "twice-3",
    ));
    assert!(
        forwarded(&up, "twice-3").is_empty(),
        "a refused validation never reaches the app"
    );
    // Overwriting with other codes frees the ones the key no longer names.
    lock_ok(&sc, &["FREE-2"], s, "twice-4");
    lock_ok(
        &sc,
        &["ONE"],
        json!({"type": "LOCK", "key": "cart-18"}),
        "twice-5",
    );
}

fn every_ttl_unit_is_accepted_and_echoed(proto: Protocol) {
    let _g = serial();
    let (_up, sc) = start();
    let sc = sc.over(proto);
    for unit in [
        "DAYS",
        "HOURS",
        "MINUTES",
        "SECONDS",
        "MILLISECONDS",
        "MICROSECONDS",
        "NANOSECONDS",
    ] {
        let key = format!("unit-{unit}");
        let r = lock(
            &sc,
            &["FREE-3"],
            json!({"type": "LOCK", "key": key, "ttl": 5, "ttl_unit": unit}),
            &key,
        );
        assert_eq!(r.status, 200, "{unit}: {}", r.text());
        assert_eq!(
            r.json()["session"],
            json!({"key": key, "type": "LOCK", "ttl": 5, "ttl_unit": unit}),
            "{unit}"
        );
    }
    let r = lock(
        &sc,
        &["FREE-3"],
        json!({"type": "LOCK", "ttl": 30, "ttl_unit": "DAYS"}),
        "unit-max",
    );
    assert_eq!(r.status, 200, "exactly max_ttl is allowed: {}", r.text());
}

fn invalid_sessions_are_400_and_not_forwarded(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let cases = [
        json!({"type": "LOCK", "ttl_unit": "WEEKS"}),
        json!({"type": "LOCK", "ttl": 0}),
        json!({"type": "LOCK", "ttl": -3, "ttl_unit": "HOURS"}),
        json!({"type": "LOCK", "ttl": "5"}),
        json!({"type": "LOCK", "ttl": 31, "ttl_unit": "DAYS"}),
        json!({"type": "LOCK", "ttl": 2_592_001, "ttl_unit": "SECONDS"}),
        json!({"type": "LOCK", "key": "bad key!"}),
        json!({"type": "LOCK", "key": "k".repeat(257)}),
        json!({"type": "LOCK", "key": 5}),
        json!({"type": "HOLD"}),
        json!("LOCK"),
    ];
    for (i, session) in cases.into_iter().enumerate() {
        let marker = format!("invalid-{i}");
        let r = lock(&sc, &["FREE-4"], session.clone(), &marker);
        assert_error(&r, 400, "invalid_payload");
        assert!(
            forwarded(&up, &marker).is_empty(),
            "{session} was forwarded"
        );
    }
    let h = [
        ("X-App-Id", POS_APP_ID),
        ("X-App-Token", POS_TOKEN),
        ("Content-Type", "application/json"),
    ];
    let r = sc.proxy(
        "POST",
        "/v1/validations",
        &h,
        b"{\"session\": {\"type\": \"LOCK\"}, \"marker\": \"broken-json\"",
    );
    assert_error(&r, 400, "invalid_payload");
    let r = post(
        &sc,
        "/v1/validations",
        &app_creds(),
        &[],
        &json!({"session": {"type": "LOCK"}, "redeemables": "ONE", "m": "wrong-type"}),
    );
    assert_error(&r, 400, "invalid_payload");
    let r = post(
        &sc,
        "/v1/validations",
        &app_creds(),
        &[],
        &body(&["A,B=1"], Some(json!({"type": "LOCK"})), "comma-code"),
    );
    assert_error(&r, 400, "invalid_payload");
    assert!(
        up.received_at("/v1/validations").is_empty(),
        "no invalid validation reached the app"
    );
}

fn exactly_quantity_of_fifty_concurrent_validations_win(proto: Protocol) {
    let _g = serial();
    let (_up, sc) = start();
    let sc = sc.over(proto);
    let rejected = sc.metric("lock_rejections_total", &[("reason", "quantity_exceeded")]);
    let port = sc.ports.proxy;
    let n = 50;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let b = body(
                    &["RUSH"],
                    Some(json!({"type": "LOCK", "key": format!("rush-{i}")})),
                    &format!("rush-{i}"),
                );
                let h = [
                    ("X-App-Id", POS_APP_ID),
                    ("X-App-Token", POS_TOKEN),
                    ("Content-Type", "application/json"),
                ];
                let mut conn = AnyConn::open(proto, port);
                barrier.wait();
                conn.send("POST", "/v1/validations", &h, b.to_string().as_bytes())
            })
        })
        .collect();
    let results: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let won = results
        .iter()
        .filter(|r| r.status == 200 && r.json()["session"]["key"].is_string())
        .count();
    let refused = results
        .iter()
        .filter(|r| r.status == 200 && r.json()["valid"] == false)
        .count();
    assert_eq!(
        (won, refused),
        (7, 43),
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        sc.metric("lock_rejections_total", &[("reason", "quantity_exceeded")]) - rejected,
        43.0
    );
}

fn app_errors_roll_the_lock_back(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    for status in ["400", "503"] {
        let key = format!("rb-{status}");
        let b = body(&["ONE"], Some(json!({"type": "LOCK", "key": key})), &key);
        let r = post(
            &sc,
            "/v1/validations",
            &app_creds(),
            &[("X-Echo-Status", status)],
            &b,
        );
        assert_eq!(
            r.status.to_string(),
            status,
            "the app's status passes through"
        );
        assert!(
            r.json().get("session").is_none(),
            "no session is added to a failed answer"
        );
        only(&up, &key);
        assert_eq!(
            release(&sc, "ONE", &key, &app_creds()).status,
            404,
            "the lock of a {status} is gone"
        );
    }
    // The unit is free again.
    let key = lock_ok(&sc, &["ONE"], json!({"type": "LOCK"}), "rb-after");
    assert_eq!(release(&sc, "ONE", &key, &app_creds()).status, 204);
}

fn failed_overwrite_restores_the_replaced_lock(proto: Protocol) {
    let _g = serial();
    let (_up, sc) = start();
    let sc = sc.over(proto);
    lock_ok(
        &sc,
        &["ONE"],
        json!({"type": "LOCK", "key": "keep-me", "ttl": 1, "ttl_unit": "HOURS"}),
        "restore-1",
    );
    let b = body(
        &["FREE-5"],
        Some(json!({"type": "LOCK", "key": "keep-me"})),
        "restore-2",
    );
    let r = post(
        &sc,
        "/v1/validations",
        &app_creds(),
        &[("X-Echo-Status", "422")],
        &b,
    );
    assert_eq!(r.status, 422);
    assert_quantity_exceeded(&lock(
        &sc,
        &["ONE"],
        json!({"type": "LOCK", "key": "other"}),
        "restore-3",
    ));
    let lock = sc.state.store();
    let restored = tokio_block(lock.get("keep-me"))
        .unwrap()
        .expect("the earlier lock is back");
    let holds = &restored.lock().unwrap().holds;
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].code, "ONE");
}

fn unreachable_app_rolls_the_lock_back(proto: Protocol) {
    let _g = serial();
    let (_up, sc) = start();
    let sc = sc.over(proto);
    let path = "/v1/vouchers/DEAD-1/validate";
    let b = json!({"session": {"type": "LOCK", "key": "dead-lock"}});
    let r = post(&sc, path, &app_creds(), &[], &b);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        release(&sc, "DEAD-1", "dead-lock", &app_creds()).status,
        404
    );
    let r = post(
        &sc,
        path,
        &app_creds(),
        &[],
        &json!({"session": {"type": "LOCK", "key": "dead-2"}}),
    );
    assert_eq!(
        r.status,
        502,
        "the unit was freed, so the second attempt is not refused: {}",
        r.text()
    );
}

fn lock_of_a_request_refused_after_inspection_is_rolled_back(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    // The route demands a session the request does not carry (a generated key is not in the
    // body), so the proxy refuses it after the lock was taken: the lock must not stay.
    let path = "/v1/vouchers/REQ-1/validate";
    for attempt in ["first", "second"] {
        let r = post(
            &sc,
            path,
            &app_creds(),
            &[],
            &json!({"session": {"type": "LOCK"}, "m": attempt}),
        );
        assert_eq!(r.status, 401, "{attempt}: {}", r.text());
        assert_eq!(r.json()["error"], "session_required", "{attempt}");
        // The rollback runs once the request is gone; give it a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while tokio_block(
            sc.state
                .store()
                .locked_by_others(&["REQ-1".to_string()], ""),
        )
        .unwrap()[0]
            .quantity
            > 0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{attempt}: the lock outlived its request"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(up.received_at(path).is_empty());
}

fn session_is_added_only_when_the_answer_lacks_one(proto: Protocol) {
    let _g = serial();
    let (_up, sc) = start();
    let sc = sc.over(proto);
    let s = json!({"type": "LOCK", "key": "inj-1"});
    let app = r#"{"valid":true,"session":{"key":"app-says","type":"LOCK"}}"#;
    let r = post(
        &sc,
        "/v1/validations",
        &app_creds(),
        &[("X-Echo-Body", app)],
        &body(&["FREE-6"], Some(s.clone()), "inj-a"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), app, "an answer with its own session is untouched");
    let r = post(
        &sc,
        "/v1/validations",
        &app_creds(),
        &[("X-Echo-Body", "not json")],
        &body(&["FREE-6"], Some(s.clone()), "inj-b"),
    );
    assert_eq!(r.text(), "not json", "a non-JSON answer is untouched");
    let r = post(
        &sc,
        "/v1/validations",
        &app_creds(),
        &[("X-Echo-Body", r#"{"valid":true}"#)],
        &body(&["FREE-6"], Some(s), "inj-c"),
    );
    assert_eq!(
        r.text(),
        r#"{"valid":true,"session":{"key":"inj-1","type":"LOCK","ttl":7,"ttl_unit":"DAYS"}}"#
    );
}

fn redemption_forwards_lock_headers_and_releases_on_success(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let redeemed = sc.metric("sessions_ended_total", &[("reason", "redeemed")]);
    lock_ok(
        &sc,
        &["ONE"],
        json!({"type": "LOCK", "key": "red-1"}),
        "red-lock",
    );
    let redeem = body(
        &["ONE"],
        Some(json!({"type": "LOCK", "key": "red-1"})),
        "red-fail",
    );
    let r = post(
        &sc,
        "/v1/redemptions",
        &app_creds(),
        &[("X-Echo-Status", "400")],
        &redeem,
    );
    assert_eq!(r.status, 400);
    assert_quantity_exceeded(&lock(
        &sc,
        &["ONE"],
        json!({"type": "LOCK"}),
        "red-still-held",
    ));

    let redeem = body(
        &["ONE"],
        Some(json!({"type": "LOCK", "key": "red-1"})),
        "red-ok",
    );
    let r = post(
        &sc,
        "/client/v1/redemptions",
        &app_creds(),
        &[("X-Session-Key", "spoofed")],
        &redeem,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json().get("session").is_none(),
        "redemption answers are not rewritten"
    );
    let rec = only(&up, "red-ok");
    assert_eq!(rec.header_all("X-Session-Key"), vec!["red-1".to_string()]);
    assert_eq!(rec.header_all("X-Session-Type"), vec!["LOCK".to_string()]);
    assert_eq!(rec.header_all("X-Locked-Quantity"), vec!["0".to_string()]);
    assert_eq!(
        sc.metric("sessions_ended_total", &[("reason", "redeemed")]) - redeemed,
        1.0
    );
    assert_eq!(
        release(&sc, "ONE", "red-1", &app_creds()).status,
        404,
        "the redeemed lock is gone"
    );
    lock_ok(&sc, &["ONE"], json!({"type": "LOCK"}), "red-after");
}

fn release_endpoint_answers_204_then_404_and_is_never_forwarded(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let released = sc.metric("sessions_ended_total", &[("reason", "released")]);
    let active = sc.metric("locks_active", &[]);
    let key = lock_ok(
        &sc,
        &["ONE"],
        json!({"type": "LOCK", "key": "rel+k/1="}),
        "rel-1",
    );
    assert_eq!(sc.metric("locks_active", &[]) - active, 1.0);
    let encoded = "rel%2Bk%2F1%3D";
    let r = release(&sc, "ONE", encoded, &[]);
    assert_error(&r, 401, "unauthorized");
    let r = release(
        &sc,
        "ONE",
        encoded,
        &[("Authorization", bearer(OTHER_TOKEN))],
    );
    assert_eq!(
        r.status, 404,
        "another credential's lock does not exist for it"
    );
    let r = release(&sc, "OTHER-CODE", encoded, &app_creds());
    assert_eq!(
        r.status, 404,
        "a lock is released through one of its own codes"
    );
    let r = sc.proxy(
        "GET",
        &format!("/v1/vouchers/ONE/sessions/{encoded}"),
        &[("X-App-Id", POS_APP_ID), ("X-App-Token", POS_TOKEN)],
        b"",
    );
    assert_error(&r, 405, "method_not_allowed");
    let r = release(&sc, "ONE", encoded, &app_creds());
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(sc.metric("locks_active", &[]) - active, 0.0);
    assert_eq!(
        sc.metric("sessions_ended_total", &[("reason", "released")]) - released,
        1.0
    );
    let r = release(&sc, "ONE", encoded, &app_creds());
    assert_eq!(r.status, 404);
    // §4.4's exact body; the request id only in X-Request-Id.
    assert!(r
        .header("X-Request-Id")
        .is_some_and(|id| id.starts_with("v-")));
    assert_eq!(
        r.json(),
        json!({"code": 404, "key": "not_found", "message": "Resource not found", "details": format!("Cannot find session with key {key}")})
    );
    assert!(
        up.received_at("/v1/vouchers/").is_empty(),
        "releases are answered by the sidecar"
    );
    // An admin may release anyone's lock.
    lock_ok(
        &sc,
        &["ONE"],
        json!({"type": "LOCK", "key": "rel-2"}),
        "rel-2",
    );
    assert_eq!(
        release(
            &sc,
            "ONE",
            "rel-2",
            &[("Authorization", bearer(ADMIN_TOKEN))]
        )
        .status,
        204
    );
}

fn expiry_frees_capacity(proto: Protocol) {
    let _g = serial();
    let (_up, sc) = start_on_manual_clock();
    let sc = sc.over(proto);
    lock_ok(
        &sc,
        &["ONE"],
        json!({"type": "LOCK", "ttl": 300, "ttl_unit": "MILLISECONDS"}),
        "exp-ms",
    );
    sc.advance(Duration::from_millis(299));
    assert_quantity_exceeded(&lock(&sc, &["ONE"], json!({"type": "LOCK"}), "exp-early"));
    sc.advance(Duration::from_millis(1));
    lock_ok(
        &sc,
        &["ONE"],
        json!({"type": "LOCK", "key": "exp-s", "ttl": 1, "ttl_unit": "SECONDS"}),
        "exp-late",
    );
    sc.advance(Duration::from_millis(999));
    assert_quantity_exceeded(&lock(&sc, &["ONE"], json!({"type": "LOCK"}), "exp-early-2"));
    sc.advance(Duration::from_millis(1));
    lock_ok(&sc, &["ONE"], json!({"type": "LOCK"}), "exp-late-2");
    assert_eq!(
        release(&sc, "ONE", "exp-s", &app_creds()).status,
        404,
        "an expired lock cannot be released"
    );
}

fn multi_code_validation_is_all_or_nothing(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    lock_ok(&sc, &["TWO-A"], json!({"type": "LOCK"}), "multi-1");
    assert_quantity_exceeded(&lock(
        &sc,
        &["TWO-B", "TWO-A"],
        json!({"type": "LOCK"}),
        "multi-2",
    ));
    assert!(forwarded(&up, "multi-2").is_empty());
    // TWO-B was not taken by the refused request.
    lock_ok(&sc, &["TWO-B"], json!({"type": "LOCK"}), "multi-3");
}

fn locked_headers_for_one_and_several_codes(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let gift = |code: &str, credits: i64, points: i64| json!({"object": "voucher", "id": code, "gift": {"credits": credits}, "reward": {"points": points}});
    let first = json!({"redeemables": [gift("G-1", 500, 40)], "session": {"type": "LOCK", "key": "lh-1"}, "m": "lh-a"});
    assert_eq!(
        post(&sc, "/v1/validations", &app_creds(), &[], &first).status,
        200
    );
    let rec = only(&up, "lh-a");
    assert_eq!(rec.header_all("X-Locked-Quantity"), vec!["0".to_string()]);
    assert_eq!(rec.header_all("X-Locked-Credits"), vec!["0".to_string()]);

    let spoof = [
        ("X-Locked-Quantity", "99"),
        ("x-locked-credits", "99"),
        ("X-Session-Type", "NONE"),
    ];
    let second = json!({"redeemables": [gift("G-1", 100, 5)], "session": {"type": "LOCK", "key": "lh-2"}, "m": "lh-b"});
    assert_eq!(
        post(&sc, "/v1/validations", &app_creds(), &spoof, &second).status,
        200
    );
    let rec = only(&up, "lh-b");
    assert_eq!(rec.header_all("X-Locked-Quantity"), vec!["1".to_string()]);
    assert_eq!(rec.header_all("X-Locked-Credits"), vec!["500".to_string()]);
    assert_eq!(rec.header_all("X-Locked-Points"), vec!["40".to_string()]);
    assert_eq!(rec.header_all("X-Session-Type"), vec!["LOCK".to_string()]);

    let both = json!({"redeemables": [gift("G-2", 1, 1), gift("G-1", 7, 0)], "session": {"type": "LOCK", "key": "lh-3"}, "m": "lh-c"});
    assert_eq!(
        post(&sc, "/v1/validations", &app_creds(), &[], &both).status,
        200
    );
    let rec = only(&up, "lh-c");
    assert_eq!(
        rec.header_all("X-Locked-Quantity"),
        vec!["G-2=0, G-1=2".to_string()],
        "in request order"
    );
    assert_eq!(
        rec.header_all("X-Locked-Credits"),
        vec!["G-2=0, G-1=600".to_string()]
    );
    assert_eq!(
        rec.header_all("X-Locked-Points"),
        vec!["G-2=0, G-1=45".to_string()]
    );
}

fn plain_validations_are_forwarded_without_lock_headers(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let spoof = [
        ("X-Session-Key", "spoofed"),
        ("X-Locked-Quantity", "5"),
        ("X-Session-Type", "LOCK"),
    ];
    let r = post(
        &sc,
        "/v1/validations",
        &app_creds(),
        &spoof,
        &body(&["ONE"], None, "plain-1"),
    );
    assert_eq!(r.status, 200);
    assert!(r.json().get("session").is_none());
    let rec = only(&up, "plain-1");
    for name in [
        "X-Session-Key",
        "X-Session-Type",
        "X-Locked-Quantity",
        "X-Locked-Credits",
        "X-Locked-Points",
    ] {
        assert!(rec.header_all(name).is_empty(), "{name} reached the app");
    }
    // Not counted: the code's only unit is still free.
    lock_ok(&sc, &["ONE"], json!({"type": "LOCK"}), "plain-2");
}

fn credentials_are_required_on_validations_redemptions_and_releases(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let s = || Some(json!({"type": "LOCK"}));
    let client = vec![
        ("X-Client-Application-Id", POS_APP_ID.to_string()),
        ("X-Client-Token", POS_TOKEN.to_string()),
    ];
    let web = vec![("Authorization", bearer(WEB_TOKEN))];
    for (i, creds) in [app_creds(), client, web].into_iter().enumerate() {
        let marker = format!("cred-ok-{i}");
        let r = post(
            &sc,
            "/client/v1/validations",
            &creds,
            &[],
            &body(&["FREE-7"], s(), &marker),
        );
        assert_eq!(r.status, 200, "{:?}: {}", creds[0].0, r.text());
        only(&up, &marker);
    }
    let missing = sc.metric("auth_failures_total", &[("reason", "missing")]);
    let invalid = sc.metric("auth_failures_total", &[("reason", "invalid")]);
    let bad: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![
            ("X-App-Id", POS_APP_ID.to_string()),
            ("X-App-Token", "wrong".to_string()),
        ],
        vec![
            ("X-App-Id", "nobody".to_string()),
            ("X-App-Token", POS_TOKEN.to_string()),
        ],
        vec![("X-App-Id", POS_APP_ID.to_string())],
        vec![("Authorization", bearer("not-a-token"))],
    ];
    for (i, creds) in bad.iter().enumerate() {
        for path in ["/v1/validations", "/v1/redemptions"] {
            let marker = format!("cred-bad-{i}-{path}");
            let r = post(
                &sc,
                path,
                creds,
                &[],
                &body(&["FREE-7"], if i % 2 == 0 { s() } else { None }, &marker),
            );
            let b = assert_error(&r, 401, "unauthorized");
            assert_eq!(b["message"], "Unauthorized");
            assert!(forwarded(&up, &marker).is_empty(), "{marker} was forwarded");
        }
    }
    assert_eq!(
        sc.metric("auth_failures_total", &[("reason", "missing")]) - missing,
        2.0
    );
    assert_eq!(
        sc.metric("auth_failures_total", &[("reason", "invalid")]) - invalid,
        8.0
    );
}

fn unreadable_bodies_are_refused_in_voucherify_shape(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let big = json!({"session": {"type": "LOCK"}, "pad": "x".repeat(70 * 1024), "m": "too-big"});
    let r = post(&sc, "/v1/validations", &app_creds(), &[], &big);
    assert_error(&r, 413, "payload_too_large");
    let h = [
        ("X-App-Id", POS_APP_ID),
        ("X-App-Token", POS_TOKEN),
        ("Content-Type", "application/json"),
    ];
    if proto.is_h2() {
        // h2 has no chunked coding: a body without content-length is read to the end of its
        // stream, and one over the cap is refused like one that announced its size.
        let r = common::h2c::H2Conn::open(sc.ports.proxy).send_unsized(
            "POST",
            "/v1/validations",
            &h,
            &[big.to_string().as_bytes()],
        );
        assert_error(&r, 413, "payload_too_large");
    } else {
        let mut h = h.to_vec();
        h.push(("Transfer-Encoding", "chunked"));
        let r = sc.proxy("POST", "/v1/validations", &h, b"2\r\n{}\r\n0\r\n\r\n");
        assert_error(&r, 411, "length_required");
    }
    let r = sc.proxy(
        "DELETE",
        "/v1/vouchers/ONE/sessions/k",
        &[
            ("X-App-Id", POS_APP_ID),
            ("X-App-Token", POS_TOKEN),
            ("Content-Length", "70000"),
        ],
        &vec![b'x'; 70000],
    );
    assert_error(&r, 413, "payload_too_large");
    assert!(up.received_at("/v1/").is_empty());
}

fn other_methods_and_sessionless_redemptions_still_need_credentials(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    assert_error(&sc.proxy_get("/v1/validations", &[]), 401, "unauthorized");
    let r = sc.proxy_get(
        "/v1/validations?m=get-ok",
        &[("X-App-Id", POS_APP_ID), ("X-App-Token", POS_TOKEN)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let plain = json!({"redeemables": [{"object": "voucher", "id": "ONE"}], "m": "redeem-plain"});
    assert_error(
        &sc.proxy_json("/v1/redemptions", &[], &plain),
        401,
        "unauthorized",
    );
    let r = sc.proxy_json(
        "/v1/redemptions",
        &[("Authorization", &bearer(WEB_TOKEN))],
        &plain,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = only(&up, "redeem-plain");
    assert!(rec.header_all("X-Session-Key").is_empty());
    assert_eq!(up.received_at("/v1/validations").len(), 1);
    // Browsers' CORS preflights for the client API carry no credentials: they reach the app.
    let r = sc.proxy(
        "OPTIONS",
        "/client/v1/validations",
        &[
            ("Origin", "https://shop.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.received_at("/client/v1/validations").len(), 1);
}

/// Runs a store future to completion from a plain test thread.
fn tokio_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// X-Client-Application-Id/X-Client-Token of the `pos` credential (the client-side API's).
fn client_creds(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-Client-Application-Id", POS_APP_ID.to_string()),
        ("X-Client-Token", token.to_string()),
    ]
}

fn send(
    sc: &TestSidecar,
    method: &str,
    path: &str,
    creds: &[(&str, String)],
    body: &[u8],
) -> Response {
    let mut h: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if !body.is_empty() {
        h.push(("Content-Type", "application/json"));
    }
    sc.proxy(method, path, &h, body)
}

/// SPEC §13.7, the hole the JS SDK found: every request under `/v1/` and `/client/v1/` is
/// credential-checked, whatever the endpoint; a bad credential never reaches the app.
fn unknown_endpoints_under_the_api_never_forward_bad_credentials(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let active = sc.metric("locks_active", &[]);
    let wrong = client_creds("wrong-token");
    let cases = [
        (
            "GET",
            "/client/v1/validate?code=ONE&session_type=LOCK&session_key=hole-1",
        ),
        ("GET", "/client/v1/validate?code=ONE"),
        ("POST", "/client/v1/redeem?code=ONE"),
        ("GET", "/v1/vouchers/ONE"),
        ("POST", "/v1/some/future/endpoint"),
        ("DELETE", "/v1/customers/c1"),
        ("PUT", "/client/v1/customers/c1/consents"),
        ("GET", "/v1"),
    ];
    for (method, path) in cases {
        for creds in [
            wrong.clone(),
            Vec::new(),
            vec![("Authorization", "Bearer nope".to_string())],
        ] {
            let r = send(&sc, method, path, &creds, b"");
            assert_error(&r, 401, "unauthorized");
        }
    }
    assert!(up.received_at("/v1").is_empty(), "nothing reached the app");
    assert!(
        up.received_at("/client/v1").is_empty(),
        "nothing reached the app"
    );
    assert_eq!((sc.metric("locks_active", &[]) - active), 0.0);
    // Good credentials pass, and paths outside the API are not the flavour's.
    let r = send(
        &sc,
        "GET",
        "/v1/vouchers/ONE",
        &client_creds(POS_TOKEN),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(send(&sc, "GET", "/v2/vouchers/ONE", &[], b"").status, 200);
    assert_eq!(send(&sc, "GET", "/v1x/vouchers", &[], b"").status, 200);
}

/// SPEC §13.7: the JS SDK's legacy `client.validate()` locks like a validation (headers,
/// all-or-nothing, rollback, sold-out answer in the single voucher shape) and `client.redeem()`
/// releases the lock.
fn legacy_client_side_validate_and_redeem(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let active = sc.metric("locks_active", &[]);
    let creds = client_creds(POS_TOKEN);
    let path = "/client/v1/validate?code=ONE&session_type=LOCK&session_key=legacy%2B1%2F%3D&session_ttl=1.5&session_ttl_unit=minutes";
    let r = send(&sc, "GET", path, &creds, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["session"],
        json!({"key": "legacy+1/=", "type": "LOCK", "ttl": 90000, "ttl_unit": "MILLISECONDS"})
    );
    let rec = up
        .received_at("/client/v1/validate")
        .pop()
        .expect("forwarded");
    assert_eq!(rec.header("X-Session-Key").as_deref(), Some("legacy+1/="));
    assert_eq!(rec.header("X-Session-Type").as_deref(), Some("LOCK"));
    assert_eq!(rec.header("X-Locked-Quantity").as_deref(), Some("0"));
    assert_eq!((sc.metric("locks_active", &[]) - active), 1.0);

    // Sold out: a different session is refused without forwarding, single voucher shape.
    let before = up.received_at("/client/v1/validate").len();
    let r = send(
        &sc,
        "GET",
        "/client/v1/validate?code=ONE&session_type=LOCK&session_key=legacy-2",
        &creds,
        b"",
    );
    assert_eq!(sold_out_codes(&r), vec!["ONE".to_string()]);
    assert_eq!(up.received_at("/client/v1/validate").len(), before);

    // Without session_type nothing is locked (but it is still forwarded).
    let r = send(&sc, "GET", "/client/v1/validate?code=ONE", &creds, b"");
    assert_eq!(r.status, 200);
    assert!(up
        .received_at("/client/v1/validate")
        .pop()
        .unwrap()
        .header("X-Session-Key")
        .is_none());
    let r = send(
        &sc,
        "GET",
        "/client/v1/validate?code=ONE&session_type=LOCK&session_ttl=0",
        &creds,
        b"",
    );
    assert_error(&r, 400, "invalid_payload");

    // A failing redemption keeps the lock; a successful one releases it.
    let mut failing = creds.clone();
    failing.push(("X-Echo-Status", "400".to_string()));
    let redeem_body = br#"{"session":{"key":"legacy+1/="},"customer":{"source_id":"c1"}}"#;
    let r = send(
        &sc,
        "POST",
        "/client/v1/redeem?code=ONE",
        &failing,
        redeem_body,
    );
    assert_eq!(r.status, 400);
    assert_eq!((sc.metric("locks_active", &[]) - active), 1.0);
    let r = send(
        &sc,
        "POST",
        "/client/v1/redeem?code=ONE",
        &creds,
        redeem_body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = up.received_at("/client/v1/redeem").pop().unwrap();
    assert_eq!(rec.header("X-Session-Key").as_deref(), Some("legacy+1/="));
    assert_eq!((sc.metric("locks_active", &[]) - active), 0.0);

    // The query's session_key names the session when the body has none; app failure rolls
    // a new legacy lock back.
    let key = "legacy-3";
    let r = send(
        &sc,
        "GET",
        &format!("/client/v1/validate?code=ONE&session_type=LOCK&session_key={key}"),
        &failing,
        b"",
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        (sc.metric("locks_active", &[]) - active),
        0.0,
        "rolled back"
    );
    let r = send(
        &sc,
        "GET",
        &format!("/client/v1/validate?code=ONE&session_type=LOCK&session_key={key}"),
        &creds,
        b"",
    );
    assert_eq!(r.status, 200);
    let r = send(
        &sc,
        "POST",
        &format!("/client/v1/redeem?code=ONE&session_key={key}"),
        &creds,
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!((sc.metric("locks_active", &[]) - active), 0.0);
}

/// SPEC §13.7: a stacked sold-out answer lists every refused code; the single voucher path
/// answers in its own shape; both are counted in lock_rejections_total.
fn sold_out_answers_list_every_refused_code(proto: Protocol) {
    let _g = serial();
    let (up, sc) = start();
    let sc = sc.over(proto);
    let rejected = sc.metric("lock_rejections_total", &[("reason", "quantity_exceeded")]);
    lock_ok(
        &sc,
        &["TWO-A", "TWO-B"],
        json!({"type": "LOCK"}),
        "both-held",
    );
    let r = lock(
        &sc,
        &["RUSH", "TWO-A", "TWO-B"],
        json!({"type": "LOCK"}),
        "both-refused",
    );
    assert_eq!(
        sold_out_codes(&r),
        vec!["TWO-A".to_string(), "TWO-B".to_string()]
    );
    assert!(forwarded(&up, "both-refused").is_empty());
    let r = post(
        &sc,
        "/client/v1/validations",
        &client_creds(POS_TOKEN),
        &[],
        &body(&["TWO-B"], Some(json!({"type": "LOCK"})), "client-refused"),
    );
    assert_eq!(sold_out_codes(&r), vec!["TWO-B".to_string()]);
    let r = post(
        &sc,
        "/v1/vouchers/TWO-A/validate",
        &app_creds(),
        &[],
        &json!({"session": {"type": "LOCK"}, "m": "path-refused"}),
    );
    assert_eq!(sold_out_codes(&r), vec!["TWO-A".to_string()]);
    assert!(r.json().get("inapplicable_redeemables").is_none());
    assert!(forwarded(&up, "-refused").is_empty());
    assert_eq!(
        sc.metric("lock_rejections_total", &[("reason", "quantity_exceeded")]) - rejected,
        3.0
    );
}

/// SPEC §13.7: fractional ttls (rounded to the millisecond) and any-case units.
fn fractional_ttls_and_lower_case_units(proto: Protocol) {
    let _g = serial();
    let (_up, sc) = start_on_manual_clock();
    let sc = sc.over(proto);
    let active = sc.metric("locks_active", &[]);
    let r = lock(
        &sc,
        &["RUSH"],
        json!({"type": "LOCK", "ttl": 0.75, "ttl_unit": "seconds"}),
        "frac",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["session"]["ttl"], 750);
    assert_eq!(r.json()["session"]["ttl_unit"], "MILLISECONDS");
    let r = lock(
        &sc,
        &["RUSH"],
        json!({"type": "LOCK", "ttl": 2, "ttl_unit": "Hours"}),
        "lower",
    );
    assert_eq!(r.json()["session"]["ttl_unit"], "HOURS");
    let r = lock(
        &sc,
        &["RUSH"],
        json!({"type": "LOCK", "ttl": 0.0004, "ttl_unit": "SECONDS"}),
        "zero",
    );
    assert_error(&r, 400, "invalid_payload");
    // The 0.75 s lock expires by itself, at 750 ms and not before.
    sc.advance(Duration::from_millis(749));
    assert_eq!((sc.metric("locks_active", &[]) - active), 2.0);
    sc.advance(Duration::from_millis(1));
    assert_eq!((sc.metric("locks_active", &[]) - active), 1.0);
}

both_protocols!(
    validation_is_forwarded_with_generated_key_and_answered_with_session,
    same_key_overwrites_and_never_double_counts,
    every_ttl_unit_is_accepted_and_echoed,
    invalid_sessions_are_400_and_not_forwarded,
    exactly_quantity_of_fifty_concurrent_validations_win,
    app_errors_roll_the_lock_back,
    failed_overwrite_restores_the_replaced_lock,
    unreachable_app_rolls_the_lock_back,
    lock_of_a_request_refused_after_inspection_is_rolled_back,
    session_is_added_only_when_the_answer_lacks_one,
    redemption_forwards_lock_headers_and_releases_on_success,
    release_endpoint_answers_204_then_404_and_is_never_forwarded,
    expiry_frees_capacity,
    multi_code_validation_is_all_or_nothing,
    locked_headers_for_one_and_several_codes,
    plain_validations_are_forwarded_without_lock_headers,
    credentials_are_required_on_validations_redemptions_and_releases,
    unreadable_bodies_are_refused_in_voucherify_shape,
    other_methods_and_sessionless_redemptions_still_need_credentials,
    unknown_endpoints_under_the_api_never_forward_bad_credentials,
    legacy_client_side_validate_and_redeem,
    sold_out_answers_list_every_refused_code,
    fractional_ttls_and_lower_case_units,
);
