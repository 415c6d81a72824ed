//! Issue 18 fault drills against a real `redis-server`, and issue 19's store log lines:
//!
//! * Redis restarted empty (no persistence): the sidecar notices (`store_resets_total` and one
//!   WARN line), and the outage's start and end are each logged once, not once per request;
//! * Redis unreachable at start-up: logged at once; a create that fails then does not claim
//!   an index was "not updated" for a session that never existed; Redis coming up ends it;
//! * Redis stalled (SIGSTOP) longer than `timeout`: forwarded traffic is served from the near
//!   cache for `degraded_grace` counted from the outage's start (not from each copy's age),
//!   session endpoints answer 503 in each flavour's shape, and SIGCONT recovers without a
//!   restart.

use crate::common;

use common::process::SidecarProcess;
use common::redis_server::{redis_store_config, RedisServer};
use common::*;
use serde_json::json;
use session_sidecar::session::id::new_uuid;
use std::time::{Duration, Instant};

fn admin_create(admin_port: u16, customer: &str) -> Response {
    request(
        admin_port,
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &bearer(ADMIN_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        json!({"customer_id": customer}).to_string().as_bytes(),
    )
}

fn binary_on(
    redis_url: &str,
    up: &EchoUpstream,
    more: &str,
) -> (SidecarProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new(up.port);
    let keys = format!(
        "urls = [\"{redis_url}\"]\nkey_prefix = \"faults:{}:\"\ntimeout = \"300ms\"\n{more}",
        new_uuid()
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, redis_store_config(&ports, &keys, "")).unwrap();
    let p = SidecarProcess::spawn(
        &["--config".as_ref(), config.as_os_str()],
        ports,
        dir.path().join("sidecar.log"),
    );
    (p, dir)
}

fn metric(p: &SidecarProcess, name: &str) -> f64 {
    let text = get(p.ports.admin, "/metrics", &[]).text();
    metric_value(&text, name, &[("backend", "redis")])
}

#[test]
fn redis_restarted_empty_is_noticed_in_a_metric_and_one_log_line() {
    let mut redis = RedisServer::start();
    let up = EchoUpstream::start();
    let (p, _dir) = binary_on(&redis.url(), &up, "degraded_grace = \"10s\"\n");
    p.wait_ready();
    assert_eq!(metric(&p, "store_resets_total"), 0.0);
    let r = admin_create(p.ports.admin, "cust-before");
    assert_eq!(r.status, 201);
    let sid = r.json()["id"].as_str().unwrap().to_string();

    redis.kill();
    // Requests during the outage: their failures must not each get a log line.
    for i in 0..60 {
        let _ = request(
            p.ports.proxy,
            "GET",
            &format!("/x/{i}"),
            &[("X-Session-Id", "unknown-id")],
            b"",
        );
        let _ = admin_create(p.ports.admin, "cust-during");
    }
    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || metric(&p, "store_resets_total")
            == 1.0),
        "the empty Redis was not noticed: {}",
        p.log_text()
    );
    assert!(eventually(Duration::from_secs(5), || get(
        p.ports.admin,
        "/readyz",
        &[]
    )
    .status
        == 200));
    // What the operator loses: the session made before is unknown now.
    let r = request(
        p.ports.proxy,
        "GET",
        "/after",
        &[("X-Session-Id", &sid)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(up.received_at("/after")[0]
        .header("X-Customer-Id")
        .is_none());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(metric(&p, "store_resets_total"), 1.0, "counted once");

    let log = p.stop();
    let count = |s: &str| log.matches(s).count();
    assert_eq!(count("came back empty"), 1, "{log}");
    assert_eq!(count("Redis stopped answering"), 1, "{log}");
    assert_eq!(count("Redis answers again"), 1, "{log}");
    let warns = log.lines().filter(|l| l.contains("WARN")).count();
    assert!(
        warns < 15,
        "{warns} WARN lines for one outage of 120 failed requests:\n{log}"
    );
}

#[test]
fn redis_unreachable_at_start_is_logged_and_a_failed_create_claims_no_index() {
    let port = free_port();
    let up = EchoUpstream::start();
    let (p, _dir) = binary_on(&format!("redis://127.0.0.1:{port}"), &up, "");
    assert!(
        eventually(Duration::from_secs(10), || p
            .log_text()
            .contains("unreachable at start-up")),
        "{}",
        p.log_text()
    );
    assert!(eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", p.ports.admin)).is_ok()
    }));
    assert_eq!(get(p.ports.admin, "/readyz", &[]).status, 503);
    let r = admin_create(p.ports.admin, "cust-down");
    assert_eq!(r.status, 503, "{}", r.text());
    let _redis = RedisServer::start_with(port, Vec::new());
    p.wait_ready();
    assert_eq!(admin_create(p.ports.admin, "cust-up").status, 201);
    let log = p.stop();
    assert!(!log.contains("index not updated"), "{log}");
    assert!(log.contains("Redis answers"), "{log}");
}

const FLAVORS: &str = r#"
[flavors.knowledge_center]
enabled = true

[flavors.spreadsheetweb]
enabled = true

[flavors.tessitura]
enabled = true

[flavors.voucherify]
enabled = true
base_path = ""
"#;

#[test]
fn a_stalled_redis_serves_forwards_from_copies_for_the_grace_from_the_outage_start() {
    let redis = RedisServer::start();
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let keys = format!(
        "urls = [\"{}\"]\nkey_prefix = \"stall:{}:\"\ntimeout = \"300ms\"\n\
         near_cache_ttl = \"200ms\"\ndegraded_grace = \"3s\"\n",
        redis.url(),
        new_uuid()
    );
    let sc = TestSidecar::start(ports, &redis_store_config(&ports, &keys, FLAVORS));
    let r = admin_create(ports.admin, "cust-stall");
    assert_eq!(r.status, 201);
    let sid = r.json()["id"].as_str().unwrap().to_string();
    let forward = |tag: &str| {
        let path = format!("/stall/{tag}/{}", new_uuid());
        let status = sc
            .proxy("GET", &path, &[("X-Session-Id", &sid)], b"")
            .status;
        let who = up
            .received_at(&path)
            .first()
            .and_then(|r| r.header("X-Customer-Id"));
        (status, who)
    };
    // The copy is made now; the outage starts 2 s later: a per-copy grace of 3 s would end
    // 1 s into the outage, the grace from the outage's start lasts 3 s.
    assert_eq!(forward("copy"), (200, Some("cust-stall".into())));
    std::thread::sleep(Duration::from_secs(2));
    redis.signal("STOP");
    let stalled = Instant::now();
    let resume = scopeguard(&redis);

    // Session endpoints: 503 in each flavour's shape.
    let kc = sc.proxy(
        "GET",
        "/gks-server/v1/sessions/some-session",
        &[("Authorization", &bearer(WEB_TOKEN))],
        b"",
    );
    assert_eq!(kc.status, 503, "{}", kc.text());
    assert_eq!(kc.json()["code"], 503);
    let swb = post_json(
        ports.proxy,
        "/Api/Applications/OpenDedicatedSession",
        &[("Authorization", &bearer(WEB_TOKEN))],
        &json!({"ApplicationKey": APP_KEY}),
    );
    assert_eq!(swb.status, 200, "SpreadsheetWEB answers 200 always");
    assert!(
        swb.text().contains("temporarily unavailable"),
        "{}",
        swb.text()
    );
    let tess = sc.proxy(
        "POST",
        "/Web/Session",
        &[("Authorization", &bearer(WEB_TOKEN))],
        b"",
    );
    assert_eq!(tess.status, 503, "{}", tess.text());
    let vf = sc.proxy(
        "POST",
        "/v1/validations",
        &[
            ("X-App-Id", POS_APP_ID),
            ("X-App-Token", POS_TOKEN),
            ("Content-Type", "application/json"),
        ],
        json!({"redeemables": [{"object": "voucher", "id": "CODE1"}], "session": {"type": "LOCK"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(vf.status, 503, "{}", vf.text());
    assert_eq!(vf.json()["key"], "service_unavailable", "{}", vf.text());
    assert_eq!(sc.admin("GET", "/readyz", &[], b"").status, 503);

    // Forwarded: served with the identity until 3 s after the outage began.
    std::thread::sleep(Duration::from_millis(2400).saturating_sub(stalled.elapsed()));
    assert_eq!(
        forward("late-in-grace"),
        (200, Some("cust-stall".into())),
        "2.4 s into the outage (4.4 s after the copy was made) is within the grace"
    );
    std::thread::sleep(Duration::from_millis(3600).saturating_sub(stalled.elapsed()));
    assert_eq!(forward("after-grace").0, 503, "the grace is over");

    drop(resume);
    assert!(
        eventually(Duration::from_secs(10), || sc
            .admin("GET", "/readyz", &[], b"")
            .status
            == 200),
        "no recovery after SIGCONT"
    );
    assert_eq!(forward("recovered"), (200, Some("cust-stall".into())));
    assert_eq!(admin_create(ports.admin, "cust-after").status, 201);
}

/// Resumes a stopped server when dropped, even when an assertion failed first.
struct Resume<'a>(&'a RedisServer);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.signal("CONT");
    }
}

fn scopeguard(redis: &RedisServer) -> Resume<'_> {
    Resume(redis)
}
