//! SPEC §4.3 / §12 Tessitura: the native `Web/Session` API and the `api/TransferSession`
//! wrapper, through a real sidecar in front of a real echo upstream.

use crate::common;

use base64::Engine;
use common::*;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const API_NS: &str = "http://schemas.datacontract.org/2004/07/SFMOMA.Data.Api";
const ENTITIES_NS: &str = "http://schemas.datacontract.org/2004/07/SFMOMA.Data.Entities.Session";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The flavour with distinctive defaults, plus `extra` keys for `[flavors.tessitura]`.
fn tessitura(extra: &str) -> String {
    format!("\n[flavors.tessitura]\ndefault_mode_of_sale = 3\ndefault_source_id = 9\n{extra}\n")
}

fn start(up: &EchoUpstream, extra: &str) -> TestSidecar {
    TestSidecar::with_upstream(up, &tessitura(extra))
}

/// A key as a path segment (`+ / =` percent-encoded).
fn seg(key: &str) -> String {
    utf8_percent_encode(key, NON_ALPHANUMERIC).to_string()
}

fn assert_key_shape(key: &str) {
    assert_eq!(key.len(), 108, "{key}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("standard base64");
    assert_eq!(raw.len(), 80);
}

fn create_as(sc: &TestSidecar, token: &str, body: &Value) -> String {
    let r = sc.proxy_json("/Web/Session", &[("Authorization", &bearer(token))], body);
    assert_eq!(r.status, 200, "{}", r.text());
    let key = r.json()["SessionKey"]
        .as_str()
        .expect("SessionKey")
        .to_string();
    assert_key_shape(&key);
    key
}

fn create(sc: &TestSidecar) -> String {
    create_as(sc, WEB_TOKEN, &json!({}))
}

fn read_as(sc: &TestSidecar, token: &str, key: &str) -> Response {
    sc.proxy_get(
        &format!("/Web/Session/{}", seg(key)),
        &[("Authorization", &bearer(token))],
    )
}

fn read(sc: &TestSidecar, key: &str) -> Response {
    read_as(sc, WEB_TOKEN, key)
}

fn assert_gone(sc: &TestSidecar, key: &str) {
    let r = read(sc, key);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["ErrorMessages"][0]["Code"], "SessionNotFound");
}

/// `POST /api/TransferSession` with a body of the given type and an optional `Accept`.
fn transfer_raw(
    sc: &TestSidecar,
    content_type: &str,
    accept: Option<&str>,
    body: &str,
) -> Response {
    let token = bearer(WEB_TOKEN);
    let mut h = vec![
        ("Authorization", token.as_str()),
        ("Content-Type", content_type),
    ];
    if let Some(a) = accept {
        h.push(("Accept", a));
    }
    sc.proxy("POST", "/api/TransferSession", &h, body.as_bytes())
}

fn transfer(sc: &TestSidecar, key: &str, reset: Option<bool>) -> Response {
    let mut body = json!({ "SessionKey": key });
    if let Some(r) = reset {
        body["ResetSessionByLogin"] = json!(r);
    }
    transfer_raw(sc, "application/json", None, &body.to_string())
}

fn transfer_ok(sc: &TestSidecar, key: &str, reset: Option<bool>) -> String {
    let r = transfer(sc, key, reset);
    assert_eq!(r.status, 200, "{}", r.text());
    let new = r.json()["Data"]["SessionKey"]
        .as_str()
        .expect("Data.SessionKey")
        .to_string();
    assert_key_shape(&new);
    assert_ne!(new, key);
    new
}

fn xml_request(key: &str, reset: bool) -> String {
    format!(
        "<TransferSessionRequest xmlns:i=\"{XSI_NS}\" xmlns=\"{ENTITIES_NS}\">\
         <ResetSessionByLogin>{reset}</ResetSessionByLogin><SessionKey>{key}</SessionKey></TransferSessionRequest>"
    )
}

fn expected_xml_success(key: &str) -> String {
    format!(
        "<ApiSuccessOfTransferSessionResult5WS87vwN xmlns:i=\"{XSI_NS}\" xmlns=\"{API_NS}\">\
         <Data xmlns:d2p1=\"{ENTITIES_NS}\"><d2p1:SessionKey>{key}</d2p1:SessionKey></Data>\
         </ApiSuccessOfTransferSessionResult5WS87vwN>"
    )
}

fn expected_xml_failure(code: &str, description: &str) -> String {
    format!(
        "<ApiFailure xmlns:i=\"{XSI_NS}\" xmlns=\"{API_NS}\"><Data i:nil=\"true\"/><ErrorMessages><ErrorMessage>\
         <Code>{code}</Code><Description>{description}</Description></ErrorMessage></ErrorMessages>\
         <Success>false</Success></ApiFailure>"
    )
}

/// The key inside an XML success answer.
fn xml_key(body: &str) -> String {
    let start =
        body.find("<d2p1:SessionKey>").expect("SessionKey element") + "<d2p1:SessionKey>".len();
    let end = body.find("</d2p1:SessionKey>").expect("SessionKey end");
    body[start..end].to_string()
}

/// Logs `key` in the way the app does: a forwarded login whose answer asserts the customer.
fn login(sc: &TestSidecar, up: &EchoUpstream, key: &str, customer: &str) {
    let before = up.received_at("/api/Login").len();
    let r = sc.proxy(
        "POST",
        "/api/Login",
        &[
            ("X-Session-Id", key),
            ("Content-Type", "application/json"),
            ("X-Echo-Assert-Customer", customer),
        ],
        br#"{"UserName":"u","Password":"p"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("X-Sidecar-Set-Customer-Id").is_none(),
        "assertion header reached the client"
    );
    assert_eq!(
        up.received_at("/api/Login").len(),
        before + 1,
        "login was forwarded to the app"
    );
}

/// The identity headers the app saw on a forwarded request carrying `key`.
fn forwarded_identity(
    sc: &TestSidecar,
    up: &EchoUpstream,
    key: &str,
    path: &str,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let r = sc.proxy("GET", path, &[("X-Session-Id", key)], b"");
    assert_eq!(r.status, 200);
    let rec = up.received_at(path).pop().expect("forwarded");
    (
        rec.header_all("X-Session-Id"),
        rec.header_all("X-Customer-Id"),
        rec.header_all("X-Session-Logged-In"),
    )
}

fn native_create_and_read(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let key = create_as(
        &sc,
        WEB_TOKEN,
        &json!({"BusinessUnitId": 1, "IpAddress": "203.0.113.9", "Organization": "IMPRESARIO", "PromotionCode": 77}),
    );
    let r = read(&sc, &key);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        r.json(),
        json!({
            "SessionKey": key, "IsLoggedIn": false, "ModeOfSaleId": 3, "OriginalModeOfSaleId": 3, "SourceId": 77,
            "LoginInfo": {"ConstituentId": null, "OriginalConstituentId": null, "UserId": null, "Status": null,
                          "FailedAttempts": 0, "LockedDate": null, "ElectronicAddress": null}
        })
    );
    // Without a PromotionCode the source is the default; an empty body is fine.
    let r = sc.proxy(
        "POST",
        "/Web/Session",
        &[("Authorization", &bearer(WEB_TOKEN))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let plain = r.json()["SessionKey"].as_str().unwrap().to_string();
    assert_eq!(read(&sc, &plain).json()["SourceId"], 9);
    assert!(
        up.received().is_empty(),
        "session endpoints are never forwarded"
    );
}

fn keys_with_plus_slash_equals_are_decoded_from_paths(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        let key = create(&sc);
        let special: Vec<char> = "+/=".chars().filter(|c| key.contains(*c)).collect();
        if special.iter().any(|c| !seen.contains(c)) {
            let r = read(&sc, &key);
            assert_eq!(r.status, 200, "{key}: {}", r.text());
            assert_eq!(r.json()["SessionKey"], key.as_str());
            seen.extend(special);
        }
        if seen.len() == 3 {
            return;
        }
    }
    panic!("60 keys never held all of + / = (saw {seen:?})");
}

fn bad_native_requests_are_4xx_in_shape(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let token = bearer(WEB_TOKEN);
    let check = |method: &str,
                 path: &str,
                 content_type: Option<&str>,
                 body: &[u8],
                 status: u16,
                 code: &str| {
        let mut headers = vec![("Authorization", token.as_str())];
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        let r = sc.proxy(method, path, &headers, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        let b = r.json();
        assert_eq!(b["ErrorMessages"][0]["Code"], code, "{method} {path}");
        assert!(b["ErrorMessages"][0]["Description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
        if status == 405 {
            assert!(r.header("Allow").is_some(), "{method} {path}: Allow header");
        }
    };
    let json = Some("application/json");
    check("POST", "/Web/Session", json, b"{", 400, "InvalidRequest");
    check(
        "POST",
        "/Web/Session",
        json,
        br#"{"PromotionCode":"x"}"#,
        400,
        "InvalidRequest",
    );
    check(
        "POST",
        "/Web/Session",
        Some("text/plain"),
        b"{}",
        415,
        "UnsupportedMediaType",
    );
    check(
        "GET",
        "/Web/Session/a%0D%0Ab",
        None,
        b"",
        400,
        "InvalidSessionKey",
    );
    check(
        "GET",
        "/Web/Session/%FF",
        None,
        b"",
        400,
        "InvalidSessionKey",
    );
    let long = format!("/Web/Session/{}", seg(&"k".repeat(300)));
    check("GET", &long, None, b"", 400, "InvalidSessionKey");
    check(
        "GET",
        "/Web/Session/unknown-key",
        None,
        b"",
        404,
        "SessionNotFound",
    );
    check(
        "DELETE",
        "/Web/Session/unknown-key",
        None,
        b"",
        405,
        "MethodNotAllowed",
    );
    check("GET", "/Web/Session", None, b"", 405, "MethodNotAllowed");
    check(
        "GET",
        "/Web/Session/k/Transfer",
        None,
        b"",
        405,
        "MethodNotAllowed",
    );
    assert!(up.received().is_empty());
}

fn transfer_json_moves_the_session_and_kills_the_old_key(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let old = create(&sc);
    let r = transfer(&sc, &old, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    let new = r.json()["Data"]["SessionKey"].as_str().unwrap().to_string();
    assert_eq!(
        r.text(),
        format!(r#"{{"Success":true,"Data":{{"SessionKey":"{new}"}}}}"#)
    );
    assert_eq!(read(&sc, &new).json()["SessionKey"], new.as_str());
    assert_gone(&sc, &old);
    // The old key is unknown to forwarded requests too.
    let (sid, _, _) = forwarded_identity(&sc, &up, &old, "/app/after-transfer");
    assert!(sid.is_empty(), "old key still resolves: {sid:?}");
    assert!(up.received_at("/api/TransferSession").is_empty());
}

fn transfer_in_every_encoding(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    // JSON answers, one request encoding each.
    type BodyFor = fn(&str) -> String;
    let encodings: [(&str, BodyFor); 5] = [
        ("application/json", |k: &str| {
            json!({"SessionKey": k, "ResetSessionByLogin": false}).to_string()
        }),
        ("text/json", |k: &str| json!({"SessionKey": k}).to_string()),
        ("application/xml", |k: &str| xml_request(k, false)),
        ("text/xml; charset=utf-8", |k: &str| xml_request(k, true)),
        ("application/x-www-form-urlencoded", |k: &str| {
            format!("SessionKey={}&ResetSessionByLogin=false", seg(k))
        }),
    ];
    for (ct, body) in encodings {
        let old = create(&sc);
        let r = transfer_raw(&sc, ct, None, &body(&old));
        assert_eq!(r.status, 200, "{ct}: {}", r.text());
        let new = r.json()["Data"]["SessionKey"].as_str().unwrap().to_string();
        assert_eq!(read(&sc, &new).status, 200, "{ct}");
        assert_gone(&sc, &old);
    }
    // XML answers, compared byte for byte.
    for (ct, accept, answer_type) in [
        (
            "application/xml",
            "application/xml",
            "application/xml; charset=utf-8",
        ),
        ("text/xml", "text/xml", "text/xml; charset=utf-8"),
        (
            "application/json",
            "application/xml, application/json;q=0.5",
            "application/xml; charset=utf-8",
        ),
    ] {
        let old = create(&sc);
        let body = if ct == "application/json" {
            json!({"SessionKey": old}).to_string()
        } else {
            xml_request(&old, false)
        };
        let r = transfer_raw(&sc, ct, Some(accept), &body);
        assert_eq!(r.status, 200, "{ct}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some(answer_type));
        let new = xml_key(&r.text());
        assert_key_shape(&new);
        assert_eq!(r.text(), expected_xml_success(&new));
        assert_eq!(read(&sc, &new).status, 200);
        assert_gone(&sc, &old);
    }
    // XML in without asking for XML: JSON out.
    let old = create(&sc);
    let r = transfer_raw(
        &sc,
        "application/xml",
        Some("*/*"),
        &xml_request(&old, false),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Success"], true);
}

fn transfer_failures_in_both_encodings(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let unknown = base64::engine::general_purpose::STANDARD.encode([7u8; 80]);
    let description = "The session key is unknown or has expired.";
    let r = transfer(&sc, &unknown, None);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.text(),
        format!(
            r#"{{"Success":false,"Data":null,"ErrorMessages":[{{"Code":"SessionNotFound","Description":"{description}"}}]}}"#
        )
    );
    let r = transfer_raw(
        &sc,
        "application/xml",
        Some("application/xml"),
        &xml_request(&unknown, false),
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/xml; charset=utf-8")
    );
    assert_eq!(
        r.text(),
        expected_xml_failure("SessionNotFound", description)
    );

    let bad: Vec<(&str, &str, u16, &str)> = vec![
        (
            "application/json",
            r#"{"SessionKey": "#,
            400,
            "InvalidRequest",
        ),
        (
            "application/json",
            r#"{"ResetSessionByLogin": true}"#,
            400,
            "InvalidRequest",
        ),
        (
            "application/json",
            r#"{"SessionKey": "has space"}"#,
            400,
            "InvalidSessionKey",
        ),
        ("application/json", "", 400, "InvalidRequest"),
        (
            "application/xml",
            "<TransferSessionRequest><SessionKey>abc</Sess",
            400,
            "InvalidRequest",
        ),
        (
            "application/x-www-form-urlencoded",
            "ResetSessionByLogin=true",
            400,
            "InvalidRequest",
        ),
        ("text/plain", "SessionKey=abc", 415, "UnsupportedMediaType"),
    ];
    for (ct, body, status, code) in bad {
        let r = transfer_raw(&sc, ct, None, body);
        assert_eq!(r.status, status, "{ct} {body:?}: {}", r.text());
        let b = r.json();
        assert_eq!(b["Success"], false);
        assert_eq!(b["Data"], Value::Null);
        assert_eq!(b["ErrorMessages"][0]["Code"], code, "{ct} {body:?}");
        let xml = transfer_raw(&sc, ct, Some("text/xml"), body);
        assert_eq!(xml.status, status);
        assert!(xml.text().starts_with("<ApiFailure "), "{}", xml.text());
    }
    let r = sc.proxy(
        "GET",
        "/api/TransferSession",
        &[("Authorization", &bearer(WEB_TOKEN))],
        b"",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("POST"));
    assert!(up.received().is_empty());
}

fn xml_bombs_entities_and_doctypes_are_refused(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let key = create(&sc);
    let laughs = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\
         <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\
         <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>\
         <TransferSessionRequest xmlns=\"{ENTITIES_NS}\"><SessionKey>&lol3;</SessionKey></TransferSessionRequest>"
    );
    let external = format!(
        "<!DOCTYPE r [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\
         <TransferSessionRequest xmlns=\"{ENTITIES_NS}\"><SessionKey>&xxe;</SessionKey></TransferSessionRequest>"
    );
    let dtd_only = format!(
        "<!DOCTYPE TransferSessionRequest SYSTEM \"http://127.0.0.1:1/x.dtd\">{}",
        xml_request(&key, false)
    );
    let undefined = format!("<TransferSessionRequest xmlns=\"{ENTITIES_NS}\"><SessionKey>&xxe;</SessionKey></TransferSessionRequest>");
    let deep = format!(
        "<TransferSessionRequest xmlns=\"{ENTITIES_NS}\"><SessionKey>{key}</SessionKey>{}{}</TransferSessionRequest>",
        "<a>".repeat(5000),
        "</a>".repeat(5000)
    );
    for (what, doc) in [
        ("billion laughs", laughs),
        ("external entity", external),
        ("DOCTYPE", dtd_only),
        ("undefined entity", undefined),
        ("deep nesting", deep),
    ] {
        let r = transfer_raw(&sc, "application/xml", Some("application/xml"), &doc);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(r.text().starts_with("<ApiFailure "), "{what}: {}", r.text());
        assert!(r.text().contains("<Code>InvalidRequest</Code>"), "{what}");
    }
    // Over server.max_body (64 KiB): 413 before any parsing.
    let huge = format!(
        "<TransferSessionRequest xmlns=\"{ENTITIES_NS}\"><SessionKey>{key}</SessionKey><!--{}--></TransferSessionRequest>",
        "x".repeat(70 * 1024)
    );
    let r = transfer_raw(&sc, "application/xml", None, &huge);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["ErrorMessages"][0]["Code"], "RequestTooLarge");
    // Nothing happened to the session.
    assert_eq!(read(&sc, &key).status, 200);
}

fn reset_by_login_versus_copy(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    for (reset, expect_source, expect_mos) in
        [(Some(true), 9, 3), (Some(false), 77, 3), (None, 77, 3)]
    {
        let old = create_as(&sc, WEB_TOKEN, &json!({"PromotionCode": 77}));
        assert_eq!(read(&sc, &old).json()["SourceId"], 77);
        let new = transfer_ok(&sc, &old, reset);
        let n = read(&sc, &new).json();
        assert_eq!(n["SourceId"], expect_source, "reset {reset:?}");
        assert_eq!(n["ModeOfSaleId"], expect_mos, "reset {reset:?}");
        assert_eq!(n["OriginalModeOfSaleId"], 3, "reset {reset:?}");
    }
}

fn login_in_the_app_then_transfer_keeps_the_customer(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let old = create(&sc);
    login(&sc, &up, &old, "cust-42");
    let before = read(&sc, &old).json();
    assert_eq!(before["IsLoggedIn"], true);
    assert_eq!(before["LoginInfo"]["ConstituentId"], "cust-42");
    let new = transfer_ok(&sc, &old, Some(true));
    let after = read(&sc, &new).json();
    assert_eq!(after["IsLoggedIn"], true);
    assert_eq!(after["LoginInfo"]["ConstituentId"], "cust-42");
    // The app sees the transferred identity on the new key.
    let (sid, customer, logged_in) = forwarded_identity(&sc, &up, &new, "/app/cart");
    assert_eq!(sid, vec![new.clone()]);
    assert_eq!(customer, vec!["cust-42".to_string()]);
    assert_eq!(logged_in, vec!["true".to_string()]);
    // Sub-resources of a session key are the app's, located by the path template.
    let r = sc.proxy(
        "GET",
        &format!("/Web/Session/{}/Expiration", seg(&new)),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    let rec = up
        .received_at("/Web/Session/")
        .pop()
        .expect("Expiration was forwarded");
    assert_eq!(rec.header_all("X-Customer-Id"), vec!["cust-42".to_string()]);
    let r = sc.proxy(
        "POST",
        "/Web/Session/BusinessFacing",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.received_at("/Web/Session/BusinessFacing").len(), 1);
}

fn unknown_and_expired_keys_are_404(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_manual_clock(
        &up,
        &format!("{}\n[sessions]\nidle_timeout = \"10m\"\n", tessitura("")),
    )
    .over(proto);
    let (idle, ms) = (Duration::from_secs(600), Duration::from_millis(1));
    let key = create(&sc);
    sc.advance(idle - ms);
    assert_eq!(
        read(&sc, &key).status,
        200,
        "live just before its idle deadline"
    );
    sc.advance(ms);
    let target = create(&sc);
    // The key's last use was one idle timeout ago; the target's, one millisecond less.
    sc.advance(idle - ms);
    assert_gone(&sc, &key);
    let r = transfer(&sc, &key, None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["ErrorMessages"][0]["Code"], "SessionNotFound");
    let r = sc.proxy_json(
        &format!("/Web/Session/{}/Transfer", seg(&key)),
        &[("Authorization", &bearer(WEB_TOKEN))],
        &json!({"NewSessionKey": target}),
    );
    assert_eq!(r.status, 404);
}

fn grace_off_ends_the_old_key_at_once(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "transfer_grace = \"0s\"").over(proto);
    let old = create(&sc);
    let new = transfer_ok(&sc, &old, None);
    assert_gone(&sc, &old);
    let (sid, _, _) = forwarded_identity(&sc, &up, &old, "/app/grace-off");
    assert!(sid.is_empty());
    assert_eq!(
        transfer(&sc, &old, None).status,
        404,
        "a dead key cannot be transferred again"
    );
    assert_eq!(read(&sc, &new).status, 200);
}

fn grace_on_keeps_the_old_key_resolving_to_the_new_session(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_manual_clock(&up, &tessitura("transfer_grace = \"1m\"")).over(proto);
    let old = create(&sc);
    login(&sc, &up, &old, "cust-grace");
    let new = transfer_ok(&sc, &old, None);
    // During the grace the old key reads (and forwards) as the new session.
    let r = read(&sc, &old);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["SessionKey"], new.as_str());
    let (sid, customer, _) = forwarded_identity(&sc, &up, &old, "/app/grace-on");
    assert_eq!(sid, vec![new.clone()]);
    assert_eq!(customer, vec!["cust-grace".to_string()]);
    // It cannot be transferred a second time.
    assert_eq!(transfer(&sc, &old, None).status, 404);
    sc.advance(Duration::from_secs(60) - Duration::from_millis(1));
    let r = read(&sc, &old);
    assert_eq!(r.status, 200, "the grace's last millisecond: {}", r.text());
    assert_eq!(r.json()["SessionKey"], new.as_str());
    sc.advance(Duration::from_millis(1));
    assert_gone(&sc, &old);
    assert_eq!(
        read(&sc, &new).status,
        200,
        "the new session outlives the grace"
    );
}

fn concurrent_transfers_of_one_key_have_one_winner(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = Arc::new(start(&up, "").over(proto));
    for _round in 0..3 {
        let old = create(&sc);
        let n = 12;
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (sc, barrier, old) = (sc.clone(), barrier.clone(), old.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    transfer(&sc, &old, None)
                })
            })
            .collect();
        let answers: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<&Response> = answers.iter().filter(|r| r.status == 200).collect();
        assert_eq!(
            winners.len(),
            1,
            "statuses {:?}",
            answers.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        assert!(answers.iter().all(|r| r.status == 200 || r.status == 404));
        let new = winners[0].json()["Data"]["SessionKey"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(read(&sc, &new).status, 200);
        assert_gone(&sc, &old);
    }
}

fn native_transfer(sc: &TestSidecar, old: &str, target: &str) -> Response {
    sc.proxy_json(
        &format!("/Web/Session/{}/Transfer", seg(old)),
        &[("Authorization", &bearer(WEB_TOKEN))],
        &json!({ "NewSessionKey": target }),
    )
}

fn native_transfer_moves_identity_onto_an_existing_session(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let old = create(&sc);
    login(&sc, &up, &old, "cust-native");
    let target = create_as(&sc, WEB_TOKEN, &json!({"PromotionCode": 55}));
    let r = native_transfer(&sc, &old, &target);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.is_empty());
    let t = read(&sc, &target).json();
    assert_eq!(t["IsLoggedIn"], true);
    assert_eq!(t["LoginInfo"]["ConstituentId"], "cust-native");
    assert_eq!(t["SourceId"], 55, "the target keeps its own source");
    assert_gone(&sc, &old);
    assert!(up.received_at("/Web/Session").is_empty());

    // Unknown target: 404, and the source is untouched.
    let other = create(&sc);
    let r = native_transfer(&sc, &other, "unknown-target-key");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["ErrorMessages"][0]["Code"], "SessionNotFound");
    assert_eq!(read(&sc, &other).status, 200);
    // Unknown source, a key onto itself, a bad body.
    assert_eq!(
        native_transfer(&sc, "unknown-source-key", &other).status,
        404
    );
    assert_eq!(native_transfer(&sc, &other, &other).status, 400);
    let r = sc.proxy(
        "POST",
        &format!("/Web/Session/{}/Transfer", seg(&other)),
        &[
            ("Authorization", &bearer(WEB_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        b"{\"NewSessionKey\": 5}",
    );
    assert_eq!(r.status, 400);
    assert_eq!(read(&sc, &other).status, 200);
}

fn concurrent_native_transfers_of_one_key_have_one_winner(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = Arc::new(start(&up, "").over(proto));
    let old = create(&sc);
    login(&sc, &up, &old, "cust-race");
    let n = 8;
    let targets: Vec<String> = (0..n).map(|_| create(&sc)).collect();
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = targets
        .iter()
        .map(|t| {
            let (sc, barrier, old, t) = (sc.clone(), barrier.clone(), old.clone(), t.clone());
            std::thread::spawn(move || {
                barrier.wait();
                native_transfer(&sc, &old, &t).status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 404),
        "{statuses:?}"
    );
    let logged_in: Vec<&String> = targets
        .iter()
        .filter(|t| read(&sc, t).json()["IsLoggedIn"] == true)
        .collect();
    assert_eq!(logged_in.len(), 1, "exactly one target got the identity");
    assert_gone(&sc, &old);
}

fn credentials_and_isolation(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let key = create(&sc);
    // No or a bad credential: 401 in each API's shape.
    for headers in [vec![], vec![("Authorization", "Bearer wrong-token")]] {
        let r = sc.proxy("GET", &format!("/Web/Session/{}", seg(&key)), &headers, b"");
        assert_eq!(r.status, 401);
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
        assert_eq!(r.json()["ErrorMessages"][0]["Code"], "Unauthorized");
        let mut h = headers.clone();
        h.push(("Content-Type", "application/json"));
        let r = sc.proxy(
            "POST",
            "/api/TransferSession",
            &h,
            json!({"SessionKey": key}).to_string().as_bytes(),
        );
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["Success"], false);
        let r = sc.proxy("POST", "/Web/Session", &headers, b"");
        assert_eq!(r.status, 401);
    }
    // Another credential does not see the session; an admin does.
    assert_eq!(read_as(&sc, OTHER_TOKEN, &key).status, 404);
    let other = bearer(OTHER_TOKEN);
    let r = sc.proxy(
        "POST",
        "/api/TransferSession",
        &[
            ("Authorization", other.as_str()),
            ("Content-Type", "application/json"),
        ],
        json!({"SessionKey": key}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 404);
    assert_eq!(read_as(&sc, ADMIN_TOKEN, &key).status, 200);
    // The transferred session keeps its owner.
    let new = transfer_ok(&sc, &key, None);
    assert_eq!(read_as(&sc, OTHER_TOKEN, &new).status, 404);
    assert_eq!(read(&sc, &new).status, 200);
}

fn auth_none_opens_the_endpoints_and_admin_sessions_are_usable(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "auth = \"none\"").over(proto);
    let r = sc.proxy("POST", "/Web/Session", &[], b"");
    assert_eq!(r.status, 200);
    let key = r.json()["SessionKey"].as_str().unwrap().to_string();
    assert_eq!(
        sc.proxy("GET", &format!("/Web/Session/{}", seg(&key)), &[], b"")
            .status,
        200
    );
    let r = sc.proxy(
        "POST",
        "/api/TransferSession",
        &[("Content-Type", "application/json")],
        json!({"SessionKey": key}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    // A session made by the admin API is usable here (by an admin: it owns it).
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &bearer(ADMIN_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        br#"{"customer_id":"c-admin","logged_in":true}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let admin_id = r.json()["id"].as_str().unwrap().to_string();
    let r = read_as(&sc, ADMIN_TOKEN, &admin_id);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["LoginInfo"]["ConstituentId"], "c-admin");
    assert_eq!(r.json()["ModeOfSaleId"], 3);
}

fn base_path_moves_the_endpoints(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "base_path = \"/tess\"").over(proto);
    let r = sc.proxy(
        "POST",
        "/tess/Web/Session",
        &[("Authorization", &bearer(WEB_TOKEN))],
        b"",
    );
    assert_eq!(r.status, 200);
    let key = r.json()["SessionKey"].as_str().unwrap().to_string();
    let r = sc.proxy(
        "GET",
        &format!("/tess/Web/Session/{}", seg(&key)),
        &[("Authorization", &bearer(WEB_TOKEN))],
        b"",
    );
    assert_eq!(r.status, 200);
    // Outside the base path the same paths are the app's.
    let r = sc.proxy(
        "POST",
        "/Web/Session",
        &[("Authorization", &bearer(WEB_TOKEN))],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.received_at("/Web/Session").len(), 1);
}

/// A key holding a `/` (generated keys are random: some have none).
fn key_with_slash(sc: &TestSidecar) -> String {
    for _ in 0..60 {
        let key = create(sc);
        if key.contains('/') {
            return key;
        }
    }
    panic!("60 keys without a '/'");
}

/// A key whose first character is `/` (1 in 64 keys) sent unencoded puts `//` in the path; it
/// resolves like any other (SPEC §13.7).
fn unencoded_key_with_leading_slash_resolves(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let auth = bearer(WEB_TOKEN);
    // (63/64)^2000 < 1e-13: the search cannot come back empty by chance.
    let key = (0..2000)
        .map(|_| create(&sc))
        .find(|k| k.starts_with('/'))
        .expect("a key starting with '/' among 2000");
    let r = sc.proxy_get(&format!("/Web/Session/{key}"), &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["SessionKey"], key.as_str());
    let target = create(&sc);
    let r = sc.proxy(
        "POST",
        &format!("/Web/Session/{key}/Transfer"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        format!("{{'NewSessionKey': '{target}'}}").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_gone(&sc, &key);
    assert!(
        up.received_at("/Web/Session").is_empty(),
        "nothing forwarded"
    );
}

/// SPEC §13.7: a key sent unencoded (`/` as is) still resolves, for reads, native transfers
/// and forwarded sub-resources; nothing of it reaches the app as an unknown path.
fn unencoded_keys_resolve_before_forwarding(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let auth = bearer(WEB_TOKEN);
    let key = key_with_slash(&sc);
    let r = sc.proxy_get(&format!("/Web/Session/{key}"), &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["SessionKey"], key.as_str());
    // Without credentials the endpoint refuses, as with an encoded key.
    let r = sc.proxy_get(&format!("/Web/Session/{key}"), &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        up.received_at("/Web/Session").is_empty(),
        "nothing forwarded"
    );

    // A forwarded login under the unencoded key binds the customer to that session.
    let path = format!("/Web/Session/{key}/Login");
    let r = sc.proxy(
        "POST",
        &path,
        &[
            ("Content-Type", "application/json"),
            ("X-Echo-Assert-Customer", "cust-7"),
        ],
        br#"{"UserName":"u","Password":"p","LoginTypeId":1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = up
        .received_at("/Web/Session/")
        .pop()
        .expect("login forwarded");
    assert_eq!(rec.header_all("X-Session-Id"), vec![key.clone()]);
    let r = read(&sc, &key);
    assert_eq!(r.json()["LoginInfo"]["ConstituentId"], "cust-7");

    // Native transfer with both keys as sent by a client that does not encode.
    let target = create(&sc);
    let r = sc.proxy(
        "POST",
        &format!("/Web/Session/{key}/Transfer"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        format!("{{'NewSessionKey': '{target}'}}").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.is_empty());
    assert_gone(&sc, &key);
    assert_eq!(read(&sc, &target).json()["IsLoggedIn"], true);
    // The dead key, unencoded: the endpoint's 404, not the app's answer.
    let forwarded = up.received().len();
    let r = sc.proxy_get(&format!("/Web/Session/{key}"), &[("Authorization", &auth)]);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["ErrorMessages"][0]["Code"], "SessionNotFound");
    assert_eq!(up.received().len(), forwarded);

    // An unknown key with slashes, and other sub-resources, are the app's.
    let r = sc.proxy_get("/Web/Session/no/such=key", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(up.received_at("/Web/Session/no/such").len(), 1);
    assert_eq!(
        sc.proxy(
            "GET",
            &format!("/Web/Session/{target}/Expiration"),
            &[],
            b""
        )
        .status,
        200
    );
    let rec = up.received_at("/Web/Session/").pop().expect("forwarded");
    assert!(rec.path.ends_with("/Expiration"));
    assert_eq!(rec.header_all("X-Session-Id"), vec![target.clone()]);
}

/// SPEC §13.7: Tessitura's JSON bodies may use single quotes (Json.NET leniency).
fn single_quoted_json_bodies_are_read(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up, "").over(proto);
    let auth = bearer(WEB_TOKEN);
    let r = sc.proxy(
        "POST",
        "/Web/Session",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        b"{'PromotionCode': 42, 'Organization': 'IMPRESARIO'}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let key = r.json()["SessionKey"].as_str().unwrap().to_string();
    assert_eq!(read(&sc, &key).json()["SourceId"], 42);
    let r = transfer_raw(
        &sc,
        "application/json",
        None,
        &format!("{{'SessionKey': '{key}', \"ResetSessionByLogin\": true}}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let new = r.json()["Data"]["SessionKey"].as_str().unwrap().to_string();
    assert_eq!(read(&sc, &new).json()["SourceId"], 9);
    for bad in [
        "{'SessionKey': 'x}",
        "{'SessionKey': True}",
        "{SessionKey: 'x'}",
    ] {
        let r = transfer_raw(&sc, "application/json", None, bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["ErrorMessages"][0]["Code"], "InvalidRequest");
    }
}

both_protocols!(
    native_create_and_read,
    keys_with_plus_slash_equals_are_decoded_from_paths,
    bad_native_requests_are_4xx_in_shape,
    transfer_json_moves_the_session_and_kills_the_old_key,
    transfer_in_every_encoding,
    transfer_failures_in_both_encodings,
    xml_bombs_entities_and_doctypes_are_refused,
    reset_by_login_versus_copy,
    login_in_the_app_then_transfer_keeps_the_customer,
    unknown_and_expired_keys_are_404,
    grace_off_ends_the_old_key_at_once,
    grace_on_keeps_the_old_key_resolving_to_the_new_session,
    concurrent_transfers_of_one_key_have_one_winner,
    native_transfer_moves_identity_onto_an_existing_session,
    concurrent_native_transfers_of_one_key_have_one_winner,
    credentials_and_isolation,
    auth_none_opens_the_endpoints_and_admin_sessions_are_usable,
    base_path_moves_the_endpoints,
    unencoded_key_with_leading_slash_resolves,
    unencoded_keys_resolve_before_forwarding,
    single_quoted_json_bodies_are_read,
);
