//! SPEC §13.3 HTTP/2 with real clients: curl with prior knowledge (h2c) on a plaintext
//! listener and by ALPN over TLS, h2load under a bounded load, and the h2-only cases the
//! parametrised tests (`both_protocols!` in the feature modules) cannot express: a request body
//! without content-length, header limits measured on an h2 head, the h2 idle timeout, the
//! access log's `protocol`. Upstream traffic stays HTTP/1.1 throughout.

use crate::common;
use crate::forwarding::admin_session;
use crate::tls::{curl, Pki, TlsSidecar};

use common::h2c::H2Conn;
use common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

/// Every request line the echo upstream read ends in HTTP/1.1: pingora turned the h2 streams
/// into HTTP/1.1 requests.
fn assert_upstream_spoke_h1(up: &EchoUpstream) {
    let lines = up.request_lines();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(line.ends_with(" HTTP/1.1"), "upstream saw {line:?}");
    }
}

#[test]
fn curl_with_prior_knowledge_speaks_h2c_to_the_plaintext_listener() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    let sid = admin_session(&sc, "cust-h2c");
    let url = format!("http://127.0.0.1:{}/h2c/x?a=1", sc.ports.proxy);
    let r = curl(&[
        "--http2-prior-knowledge",
        "-H",
        &format!("X-Session-Id: {sid}"),
        "-H",
        "X-Customer-Id: spoofed",
        &url,
    ]);
    assert!(r.ok && r.status == 200, "{r:?}");
    assert_eq!(r.version, "2", "{r:?}");
    assert_eq!(r.json()["headers"]["x-customer-id"], json!(["cust-h2c"]));
    // Plain curl on the same port still gets HTTP/1.1.
    let r = curl(&[&format!("http://127.0.0.1:{}/h1/x", sc.ports.proxy)]);
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"), "{r:?}");
    assert_upstream_spoke_h1(&up);
}

/// A flavour over TLS + h2 (ALPN) with curl: a Voucherify lock taken, the code then sold out.
#[test]
fn curl_over_tls_gets_h2_by_alpn_and_voucherify_locks_work() {
    let up = EchoUpstream::start();
    let pki = Pki::new("h2");
    let t = TlsSidecar::with_default_cert_and(&up, &pki, VOUCHERIFY);
    let validate = |key: &str| {
        let body = json!({
            "redeemables": [{"object": "voucher", "id": "ONE"}],
            "session": {"type": "LOCK", "key": key},
        });
        curl(&[
            "--http2",
            "--cacert",
            pki.ca(),
            "--resolve",
            &t.resolve("localhost"),
            "-H",
            &format!("X-App-Id: {POS_APP_ID}"),
            "-H",
            &format!("X-App-Token: {POS_TOKEN}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
            &t.url("/v1/validations"),
        ])
    };
    let r = validate("tls-h2-1");
    assert!(r.ok && r.status == 200, "{r:?}");
    assert_eq!(r.version, "2", "h2 chosen by ALPN: {r:?}");
    assert_eq!(r.json()["session"]["key"], "tls-h2-1");
    let r = validate("tls-h2-2");
    assert_eq!((r.status, r.version.as_str()), (200, "2"), "{r:?}");
    assert_eq!(r.json()["valid"], false, "sold out: {r:?}");
    assert_eq!(up.received_at("/v1/validations").len(), 1);
    assert_upstream_spoke_h1(&up);
    let line = access_line(&t.sc, "/v1/validations");
    assert_eq!(line["protocol"], "HTTP/2", "{line}");
}

/// The access-log line of the request to `path`.
fn access_line(sc: &TestSidecar, path: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let found = sc
            .access_log_lines(1)
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["path"] == path);
        if let Some(v) = found {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access-log line for {path}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn access_log_protocol_names_the_client_protocol() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    for proto in [Protocol::H1, Protocol::H2c] {
        let path = format!("/log/{proto:?}");
        assert_eq!(
            proto.request(sc.ports.proxy, "GET", &path, &[], b"").status,
            200
        );
        // An answer of the sidecar's own (401) is logged the same way.
        let refused = format!("/secure/{proto:?}");
        assert_eq!(
            proto
                .request(sc.ports.proxy, "GET", &refused, &[], b"")
                .status,
            401
        );
        for p in [path, refused] {
            let line = access_line(&sc, &p);
            assert_eq!(line["protocol"], proto.log_name(), "{line}");
        }
    }
}

const VOUCHERIFY: &str = r#"
[flavors.voucherify]
enabled = true
base_path = ""

[[flavors.voucherify.limits]]
code = "ONE"
quantity = 1
"#;

fn pos_headers() -> [(&'static str, &'static str); 3] {
    [
        ("X-App-Id", POS_APP_ID),
        ("X-App-Token", POS_TOKEN),
        ("Content-Type", "application/json"),
    ]
}

/// h2 needs no content-length: a validation sent as DATA frames without one must take its lock
/// like any other (it was once treated as bodiless, and the lock skipped).
#[test]
fn voucherify_lock_from_an_h2_body_without_content_length() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, VOUCHERIFY);
    let mut conn = H2Conn::open(sc.ports.proxy);
    let validation = |key: &str, marker: &str| {
        json!({
            "redeemables": [{"object": "voucher", "id": "ONE"}],
            "session": {"type": "LOCK", "key": key},
            "metadata": {"marker": marker},
        })
        .to_string()
    };
    let first = validation("h2-lock-1", "first");
    let (a, b) = first.as_bytes().split_at(first.len() / 2);
    let r = conn.send_unsized("POST", "/v1/validations", &pos_headers(), &[a, b]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["session"]["key"], "h2-lock-1");
    let got = up.received_at("/v1/validations");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].body,
        first.as_bytes(),
        "the body reached the app whole"
    );
    assert_eq!(got[0].header("X-Session-Key").as_deref(), Some("h2-lock-1"));
    assert_eq!(got[0].header("X-Session-Type").as_deref(), Some("LOCK"));

    // The one unit of ONE is locked: another session's validation is sold out, not forwarded.
    let second = validation("h2-lock-2", "second");
    let r = conn.send_unsized(
        "POST",
        "/v1/validations",
        &pos_headers(),
        &[second.as_bytes()],
    );
    // SPEC §13.7: sold out is 200 `valid: false`, naming the code.
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["valid"], false, "{b}");
    assert_eq!(b["inapplicable_redeemables"][0]["id"], "ONE", "{b}");
    assert_eq!(
        b["inapplicable_redeemables"][0]["result"]["error"]["key"], "quantity_exceeded",
        "{b}"
    );
    assert_eq!(up.received_at("/v1/validations").len(), 1);

    // Released, the code is free again.
    let r = conn.send(
        "DELETE",
        "/v1/vouchers/ONE/sessions/h2-lock-1",
        &pos_headers()[..2],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let r = conn.send_unsized(
        "POST",
        "/v1/validations",
        &pos_headers(),
        &[second.as_bytes()],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_upstream_spoke_h1(&up);
}

/// The JSON body locator reads an h2 body without content-length too; one past what it reads
/// (48 KiB) is forwarded whole, unlocated.
#[test]
fn json_body_locator_over_h2_without_content_length() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    let sid = admin_session(&sc, "cust-body");
    let mut conn = H2Conn::open(sc.ports.proxy);
    let json = [("content-type", "application/json")];
    let small = json!({ "SessionId": sid }).to_string();
    let r = conn.send_unsized("POST", "/body/small", &json, &[small.as_bytes()]);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = &up.received_at("/body/small")[0];
    assert_eq!(got.header("X-Customer-Id").as_deref(), Some("cust-body"));
    assert_eq!(got.body, small.as_bytes());

    let big = json!({ "SessionId": sid, "pad": "p".repeat(100 * 1024) }).to_string();
    let frames: Vec<&[u8]> = big.as_bytes().chunks(10_000).collect();
    let r = conn.send_unsized("POST", "/body/big", &json, &frames);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = &up.received_at("/body/big")[0];
    assert_eq!(got.body.len(), big.len(), "forwarded whole");
    assert_eq!(got.body, big.as_bytes());
    assert!(
        got.header("X-Customer-Id").is_none(),
        "past 48 KiB: not located"
    );
    assert_upstream_spoke_h1(&up);
}

/// The sizes of SPEC §13.1 hold for an h2 head (measured as the HTTP/1.1 head it stands for);
/// a refusal ends its stream only, and the connection serves the next request.
#[test]
fn h2_header_limits_answer_431_and_the_connection_serves_on() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_server_keys(&up, "max_header_size = \"2KiB\"\nmax_headers = 10", "");
    let mut conn = H2Conn::open(sc.ports.proxy);
    let big = "b".repeat(3 * 1024);
    let r = conn.send("GET", "/limits/big", &[("x-big", big.as_str())], b"");
    assert_eq!(r.status, 431, "{}", r.text());
    assert_eq!(r.json()["error"], "header_too_large");
    // Many small fields: each a little, together past the size.
    let names: Vec<String> = (0..8).map(|i| format!("x-field-{i}")).collect();
    let value = "v".repeat(300);
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    let r = conn.send("GET", "/limits/sum", &many, b"");
    assert_eq!(r.status, 431, "{}", r.text());
    // Ten fields with `:authority` as Host: one too many.
    let ten: Vec<(&str, &str)> = names
        .iter()
        .chain(&names[..2])
        .map(|n| (n.as_str(), "v"))
        .collect();
    let r = conn.send("GET", "/limits/count", &ten, b"");
    assert_eq!(r.status, 431, "{}", r.text());
    let r = conn.send("GET", "/limits/ok", &ten[..9], b"");
    assert_eq!(r.status, 200, "the connection still serves: {}", r.text());
    // Past pingora's own h2 ceiling (SETTINGS_MAX_HEADER_LIST_SIZE 64 KiB) h2 refuses the
    // list itself; the next client is served.
    let huge = "h".repeat(70 * 1024);
    let refused =
        H2Conn::open(sc.ports.proxy).try_send("GET", "/limits/huge", &[("x-huge", &huge)], &[]);
    let refused = refused.expect("h2 answers, not resets");
    assert_eq!(refused.status, 431);
    assert!(
        refused.body.is_empty(),
        "h2 itself answered, before the sidecar saw the request: {}",
        refused.text()
    );
    let r = H2Conn::open(sc.ports.proxy).send("GET", "/limits/ok", &[], b"");
    assert_eq!(r.status, 200);
    assert!(up
        .received_at("/limits/")
        .iter()
        .all(|r| r.path == "/limits/ok"));
}

/// pingora's h2 idle timeout follows `server.keepalive_timeout`.
#[test]
fn h2_connections_close_after_keepalive_timeout_idle() {
    let up = EchoUpstream::start();
    let short = TestSidecar::with_server_keys(&up, "keepalive_timeout = \"1s\"", "");
    let mut conn = H2Conn::open(short.ports.proxy);
    assert_eq!(conn.send("GET", "/idle/a", &[], b"").status, 200);
    assert!(
        conn.closed_within(Duration::from_secs(5)),
        "an idle h2 connection outlived keepalive_timeout"
    );
    let default = TestSidecar::with_upstream(&up, "");
    let mut conn = H2Conn::open(default.ports.proxy);
    assert_eq!(conn.send("GET", "/idle/b", &[], b"").status, 200);
    assert!(
        !conn.closed_within(Duration::from_secs(3)),
        "closed long before the default 60 s"
    );
    assert_eq!(conn.send("GET", "/idle/c", &[], b"").status, 200);
}

/// h2load (nghttp2) multiplexes streams over a few h2c connections: a bounded load, every
/// request answered 2xx, every one forwarded once.
#[test]
fn h2load_bounded_load_has_no_failed_requests() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    let sid = admin_session(&sc, "cust-load");
    let n = 2000;
    let out = Command::new("h2load")
        .args(["-n", &n.to_string(), "-c", "4", "-m", "10", "-H"])
        .arg(format!("x-session-id: {sid}"))
        .arg(format!("http://127.0.0.1:{}/load/x", sc.ports.proxy))
        .output()
        .expect("h2load is installed (make test installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "requests: {n} total, {n} started, {n} done, {n} succeeded, 0 failed, 0 errored, 0 timeout"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("status codes: {n} 2xx")), "{text}");
    let rate = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .unwrap_or_default();
    eprintln!("h2load through the sidecar (debug build): {rate}");
    let got = up.received_at("/load/x");
    assert_eq!(got.len(), n);
    assert!(got
        .iter()
        .all(|r| r.header("X-Customer-Id").as_deref() == Some("cust-load")));
    assert_upstream_spoke_h1(&up);
}
