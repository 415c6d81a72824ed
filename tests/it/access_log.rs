//! The access log and audit events (SPEC §13.5): one JSON (or combined) line per request with
//! every field, audit lines for each step of a session's life, sampling, and reopening the
//! file on SIGUSR1 without losing a line.

use crate::common;

use common::process::SidecarProcess;
use common::*;
use serde_json::{json, Value};
use session_sidecar::session::id::tag;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

fn lines(sc: &TestSidecar, at_least: usize) -> Vec<Value> {
    sc.access_log_lines(at_least)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The request line whose path is `path`.
fn line_for<'a>(all: &'a [Value], path: &str) -> &'a Value {
    all.iter()
        .find(|l| l["kind"] != "audit" && l["path"] == path)
        .unwrap_or_else(|| panic!("no line for {path} in {all:#?}"))
}

fn admin_session(sc: &TestSidecar, body: Value) -> String {
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &bearer(ADMIN_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

#[test]
fn every_kind_of_request_gets_a_json_line_with_every_field() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "\n[flavors.knowledge_center]\n");
    let sid = admin_session(&sc, json!({"customer_id": "cust-log"}));
    let web = bearer(WEB_TOKEN);

    // Forwarded, on a route, with a session and a credential; the query never shows.
    let r = sc.proxy(
        "POST",
        &format!("/account/orders?sessionId={sid}&secret=1"),
        &[("X-Session-Id", &sid), ("Authorization", &web)],
        b"0123456789",
    );
    assert_eq!(r.status, 200);
    // A session endpoint.
    let kc = sc.proxy(
        "PUT",
        "/gks-server/v1/sessions/new",
        &[("Authorization", &web)],
        b"",
    );
    assert_eq!(kc.status, 200, "{}", kc.text());
    // Refused: no session on a required route.
    assert_eq!(sc.proxy("GET", "/account/none", &[], b"").status, 401);
    // The upstream is down.
    assert_eq!(sc.proxy("GET", "/dead/x", &[], b"").status, 502);

    // Two audit lines (two sessions created) and four request lines; a request's line is
    // written after its answer, so wait until the last one is there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut all = lines(&sc, 6);
    while !all.iter().any(|l| l["path"] == "/dead/x") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        all = lines(&sc, 6);
    }
    let fwd = line_for(&all, "/account/orders");
    let keys: Vec<&str> = fwd
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "ts",
        "method",
        "path",
        "status",
        "kind",
        "route",
        "flavor",
        "duration_ms",
        "upstream_ms",
        "bytes_in",
        "bytes_out",
        "client_ip",
        "session",
        "credential",
        "trace_id",
        "protocol",
    ] {
        assert!(keys.contains(&k), "{k} missing from {fwd}");
    }
    assert_eq!(fwd["method"], "POST");
    assert_eq!(fwd["status"], 200);
    assert_eq!(fwd["kind"], "forward");
    assert_eq!(fwd["route"], "/account/");
    assert_eq!(fwd["flavor"], Value::Null);
    assert_eq!(fwd["session"], tag(&sid));
    assert_eq!(fwd["credential"], "web");
    assert_eq!(fwd["client_ip"], "127.0.0.1");
    assert_eq!(fwd["protocol"], "HTTP/1.1");
    assert_eq!(fwd["bytes_in"], 10);
    assert!(fwd["bytes_out"].as_u64().unwrap() > 0);
    assert!(fwd["duration_ms"].as_f64().unwrap() >= fwd["upstream_ms"].as_f64().unwrap());
    let ts = fwd["ts"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && &ts[19..20] == ".",
        "RFC 3339 with ms: {ts}"
    );

    let kc_line = line_for(&all, "/gks-server/v1/sessions/new");
    assert_eq!(kc_line["kind"], "session_api");
    assert_eq!(kc_line["flavor"], "knowledge_center");
    assert_eq!(kc_line["credential"], "web");
    assert_eq!(
        kc_line["upstream_ms"],
        Value::Null,
        "answered, not forwarded"
    );

    let refused = line_for(&all, "/account/none");
    assert_eq!(
        (refused["kind"].as_str(), refused["status"].as_u64()),
        (Some("rejected"), Some(401))
    );
    let dead = line_for(&all, "/dead/x");
    assert_eq!(dead["status"], 502);
    assert_eq!(dead["route"], "/dead/");

    let text = sc.access_log_lines(0).join("\n");
    assert!(!text.contains(&sid) && !text.contains("secret=1") && !text.contains(WEB_TOKEN));
}

#[test]
fn combined_format_and_sampling() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(
        &up,
        "\n[access_log]\npath = \"access.log\"\nformat = \"combined\"\nsample_ratio = 0.0\n",
    );
    for i in 0..5 {
        assert_eq!(sc.proxy("GET", &format!("/ok/{i}"), &[], b"").status, 200);
    }
    assert_eq!(sc.proxy("GET", "/account/x?q=1", &[], b"").status, 401);
    let got = sc.access_log_lines(1);
    // Successes are sampled away at 0.0; the error is always logged.
    assert_eq!(got.len(), 1, "{got:?}");
    let l = &got[0];
    // $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$referer" "$ua"
    let (head, rest) = l.split_once(" - - [").expect(l);
    assert_eq!(head, "127.0.0.1");
    let (time, rest) = rest.split_once("] \"").expect(l);
    assert_eq!(time.len(), "04/Dec/2026:10:00:00 +0000".len(), "{time}");
    assert!(
        time.ends_with(" +0000") && time.as_bytes()[2] == b'/',
        "{time}"
    );
    let (request_line, rest) = rest.split_once("\" ").expect(l);
    assert_eq!(request_line, "GET /account/x HTTP/1.1");
    let fields: Vec<&str> = rest.splitn(3, ' ').collect();
    assert_eq!(fields[0], "401");
    assert!(fields[1].parse::<u64>().unwrap() > 0);
    assert_eq!(fields[2], "\"-\" \"-\"");
}

#[test]
fn audit_events_tell_a_sessions_life() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(
        &up,
        "\n[flavors.tessitura]\n[flavors.voucherify]\n[sessions]\nmax_sessions_per_customer = 1\n",
    );
    let admin = bearer(ADMIN_TOKEN);
    // created (admin) → evicted (customer limit) by a second one → revoked (admin).
    let first = admin_session(&sc, json!({"customer_id": "cust-a"}));
    let second = admin_session(&sc, json!({"customer_id": "cust-a"}));
    let r = sc.admin(
        "DELETE",
        &format!("/admin/sessions/{second}"),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(r.status, 204);
    // created (Tessitura) → transferred.
    let r = post_json(
        sc.ports.proxy,
        "/Web/Session",
        &[("Authorization", &bearer(WEB_TOKEN))],
        &json!({}),
    );
    let key = r.json()["SessionKey"].as_str().unwrap().to_string();
    let r = post_json(
        sc.ports.proxy,
        "/api/TransferSession",
        &[("Authorization", &bearer(WEB_TOKEN))],
        &json!({"SessionKey": key}),
    );
    let new_key = r.json()["Data"]["SessionKey"].as_str().unwrap().to_string();
    // A Voucherify lock: created → released.
    let lock = "ssn_audit0123456789abcdefABCDEFGHIJ";
    let pos = [("X-App-Id", POS_APP_ID), ("X-App-Token", POS_TOKEN)];
    let r = request(
        sc.ports.proxy,
        "POST",
        "/v1/validations",
        &[pos[0], pos[1], ("Content-Type", "application/json")],
        json!({"redeemables": [{"object": "voucher", "id": "AUDIT"}], "session": {"type": "LOCK", "key": lock}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        sc.ports.proxy,
        "DELETE",
        &format!("/v1/vouchers/AUDIT/sessions/{lock}"),
        &pos,
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());

    let expected = [
        ("created", &first, Some("admin"), None),
        ("evicted", &first, None, None),
        ("created", &second, Some("admin"), None),
        ("revoked", &second, Some("admin"), None),
        ("created", &key, Some("web"), None),
        ("transferred", &key, Some("web"), Some(&new_key)),
    ];
    // Lines are written by the log's own thread: wait for the last event (the release).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut all = lines(&sc, 0);
    while !all.iter().any(|l| l["event"] == "released") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        all = lines(&sc, 0);
    }
    let audit: Vec<&Value> = all.iter().filter(|l| l["kind"] == "audit").collect();
    for (event, id, actor, new) in expected {
        let found = audit
            .iter()
            .find(|l| l["event"] == event && l["session"] == tag(id))
            .unwrap_or_else(|| panic!("no {event} event for {}… in {audit:#?}", &id[..8]));
        assert_eq!(found["actor"].as_str(), actor, "{event}");
        assert_eq!(
            found["new_session"].as_str().map(str::to_string),
            new.map(|n| tag(n))
        );
        assert!(found["ts"].is_string() && found["flavor"].is_string());
    }
    for event in ["created", "released"] {
        assert!(
            audit.iter().any(|l| l["event"] == event
                && l["session"] == tag(lock)
                && l["flavor"] == "voucherify"),
            "no {event} event for the lock"
        );
    }
    let customers: Vec<&Value> = audit
        .iter()
        .filter(|l| l["session"] == tag(&first))
        .map(|l| &l["customer"])
        .collect();
    assert!(
        customers.iter().all(|c| **c == json!(tag("cust-a"))),
        "{customers:?}"
    );
    let text = sc.access_log_lines(0).join("\n");
    for secret in [
        first.as_str(),
        second.as_str(),
        key.as_str(),
        new_key.as_str(),
        lock,
        "cust-a",
    ] {
        assert!(!text.contains(secret), "an id in the audit lines");
    }
}

#[test]
fn sigusr1_reopens_the_file_and_no_line_is_lost() {
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let extra = format!("\n[access_log]\npath = \"{}\"\n", path.display());
    let sidecar = SidecarProcess::start_fresh(ports, &extra, &[]);
    sidecar.wait_ready();

    // A small steady load while the file is moved away and reopened.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut conn = Conn::open(ports.proxy);
            while !stop.load(Ordering::SeqCst) {
                let r = conn.send("GET", "/rotate/x", &[], b"");
                assert_eq!(r.status, 200);
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let wait_for = |n: usize| {
        while sent.load(Ordering::SeqCst) < n {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    wait_for(50);
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    sidecar.signal("USR1");
    let after = sent.load(Ordering::SeqCst);
    wait_for(after + 50);
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let total = sent.load(Ordering::SeqCst);

    let count = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("/rotate/x"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while count(&rotated) + count(&path) < total && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (old, new) = (count(&rotated), count(&path));
    println!("{total} requests: {old} lines in the moved file, {new} in the reopened one");
    assert_eq!(old + new, total, "every request has exactly one line");
    assert!(old >= 50 && new >= 1, "both files got lines: {old} + {new}");
    drop(sidecar);
}
