//! SPEC §2, §7, §9: the real binary as a process — SIGTERM drains, writes the snapshot and
//! exits 0; a restart restores sessions; SIGHUP reloads or keeps the running config.

use crate::common;

use common::process::SidecarProcess;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn admin_create(port: u16, customer: &str) -> String {
    let r = request(
        port,
        "POST",
        "/admin/sessions",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        json!({"customer_id": customer}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

fn config_with_snapshot(ports: &Ports, dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let text = base_config(ports, extra).replace(
        "snapshot_file = \"\"",
        "snapshot_file = \"state.snapshot\"\nsnapshot_interval = \"1h\"",
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn sigterm_snapshots_and_restart_restores() {
    let up = EchoUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new(up.port);
    let config = config_with_snapshot(&ports, dir.path(), "");
    let mut p = SidecarProcess::start(&config, ports);
    let kept = admin_create(ports.admin, "keep-me");
    let revoked = admin_create(ports.admin, "drop-me");
    let r = request(
        ports.admin,
        "DELETE",
        &format!("/admin/sessions/{revoked}"),
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        b"",
    );
    assert_eq!(r.status, 204);
    p.signal("TERM");
    assert_eq!(
        p.wait_exit(Duration::from_secs(15)),
        Some(0),
        "SIGTERM exits 0 within the grace period"
    );
    // The log says why a quiet SIGTERM still takes the grace period, and what comes next.
    let log = p.log_text();
    assert!(
        log.contains("shutdown: listeners closed")
            && log.contains("server.grace_period (1s")
            && log.contains("server.drain_timeout (2s)"),
        "{log}"
    );
    let snapshot = dir.path().join("state.snapshot");
    assert!(snapshot.exists());
    let text = std::fs::read_to_string(&snapshot).unwrap();
    assert!(text.contains(&kept) && !text.contains(&revoked));

    let _p2 = SidecarProcess::start(&config, ports);
    let auth = bearer(ADMIN_TOKEN);
    let r = get(
        ports.admin,
        &format!("/admin/sessions/{kept}"),
        &[("Authorization", &auth)],
    );
    assert_eq!(
        r.status, 200,
        "a session from before the restart is still there"
    );
    assert_eq!(r.json()["customer_id"], "keep-me");
    assert_eq!(
        get(
            ports.admin,
            &format!("/admin/sessions/{revoked}"),
            &[("Authorization", &auth)]
        )
        .status,
        404,
        "a revoked session stays revoked"
    );
    let r = get(ports.proxy, "/after-restart", &[("X-Session-Id", &kept)]);
    assert_eq!(r.status, 200);
    assert_eq!(
        up.received_at("/after-restart")[0].header_all("X-Customer-Id"),
        vec!["keep-me".to_string()]
    );
}

#[test]
fn restart_keeps_every_flavour_and_closed_sessions_stay_closed() {
    let up = EchoUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new(up.port);
    let flavours = "[flavors.spreadsheetweb]\n[flavors.knowledge_center]\n[flavors.tessitura]\n[flavors.voucherify]\n";
    let config = config_with_snapshot(&ports, dir.path(), flavours);
    let mut p = SidecarProcess::start(&config, ports);
    let web = bearer(WEB_TOKEN);
    let h: &[(&str, &str)] = &[
        ("Authorization", &web),
        ("Content-Type", "application/json"),
    ];
    let open = || {
        let r = request(
            ports.proxy,
            "POST",
            "/Api/Applications/OpenDedicatedSession",
            h,
            json!({"ApplicationKey": APP_KEY}).to_string().as_bytes(),
        );
        r.json()["SessionId"].as_str().unwrap().to_string()
    };
    let close = |sid: &str| {
        let r = request(
            ports.proxy,
            "POST",
            "/Api/Applications/CloseDedicatedSession",
            h,
            json!({"ApplicationKey": APP_KEY, "SessionId": sid})
                .to_string()
                .as_bytes(),
        );
        r.json()["Success"].as_bool().unwrap()
    };
    let (swb, swb_closed) = (open(), open());
    assert!(close(&swb_closed));
    let kc = request(
        ports.proxy,
        "PUT",
        "/gks-server/v1/sessions/new",
        &[("Authorization", &web), ("gkc_customerId", "kc-cust")],
        b"",
    )
    .json()["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let tess = request(ports.proxy, "POST", "/Web/Session", h, b"{}").json()["SessionKey"]
        .as_str()
        .unwrap()
        .to_string();
    let lock_body = json!({"redeemables": [{"object": "voucher", "id": "RESTART"}], "session": {"type": "LOCK", "key": "ssn_restart0000000000000000000000000"}});
    assert_eq!(
        request(
            ports.proxy,
            "POST",
            "/v1/validations",
            h,
            lock_body.to_string().as_bytes()
        )
        .status,
        200
    );

    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(15)), Some(0));
    let _p2 = SidecarProcess::start(&config, ports);

    assert!(close(&swb), "the open SpreadsheetWEB session survived");
    assert!(!close(&swb_closed), "the closed one stayed closed");
    let r = request(
        ports.proxy,
        "GET",
        &format!("/gks-server/v1/sessions/{kc}"),
        &[("Authorization", &web)],
        b"",
    );
    assert_eq!(r.json()["customerId"], "kc-cust");
    let enc = tess
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert_eq!(
        request(
            ports.proxy,
            "GET",
            &format!("/Web/Session/{enc}"),
            &[("Authorization", &web)],
            b""
        )
        .status,
        200
    );
    let r = request(
        ports.proxy,
        "DELETE",
        "/v1/vouchers/RESTART/sessions/ssn_restart0000000000000000000000000",
        &[("Authorization", &web)],
        b"",
    );
    assert_eq!(r.status, 204, "the Voucherify lock survived: {}", r.text());
}

#[test]
fn corrupt_snapshot_is_skipped_not_fatal() {
    let up = EchoUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new(up.port);
    let config = config_with_snapshot(&ports, dir.path(), "");
    std::fs::write(
        dir.path().join("state.snapshot"),
        b"{\"format\": \"session-sidecar-snapshot\", \"vers",
    )
    .unwrap();
    let _p = SidecarProcess::start(&config, ports);
    assert_eq!(get(ports.proxy, "/still-serving", &[]).status, 200);
}

#[test]
fn a_port_that_stays_taken_ends_the_process() {
    let up = EchoUpstream::start();
    let mut ports = Ports::new(up.port);
    // Someone else holds the proxy port for longer than pingora's 30 s of bind retries.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    ports.proxy = squatter.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_snapshot(&ports, dir.path(), "");
    let mut p = SidecarProcess::spawn(
        &["--config".as_ref(), config.as_os_str()],
        ports,
        dir.path().join("sidecar.log"),
    );
    let status = p.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status,
        Some(1),
        "exits with status 1 instead of running without a listener"
    );
    assert!(
        p.log_text().contains("cannot listen"),
        "says why: {}",
        p.log_text()
    );
    drop(squatter);
}

fn reload_gauge(admin: u16) -> f64 {
    metric_value(
        &get(admin, "/metrics", &[]).text(),
        "config_reload_success",
        &[],
    )
}

fn poll(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn sighup_reloads_credentials_and_refuses_bad_files() {
    let up = EchoUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new(up.port);
    let config = config_with_snapshot(&ports, dir.path(), "");
    let p = SidecarProcess::start(&config, ports);
    let new_token = "reloaded-token-0123456789";
    let works = |t: &str| {
        get(
            ports.proxy,
            "/secure/reload",
            &[("Authorization", &bearer(t))],
        )
        .status
            == 200
    };
    assert!(!works(new_token));

    let extra = format!(
        "\n[[credentials]]\nname = \"reloaded\"\ntoken_sha256 = \"{}\"\n",
        sha256_hex(new_token)
    );
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{original}{extra}")).unwrap();
    p.signal("HUP");
    assert!(
        poll(|| works(new_token)),
        "a credential added to the file works after SIGHUP"
    );
    assert_eq!(reload_gauge(ports.admin), 1.0);

    // A file that does not validate changes nothing and turns the gauge to 0.
    let bad = format!("{original}{extra}")
        .replacen("[server]\n", "[server]\nbogus = 1\n", 1)
        .replace(&sha256_hex(WEB_TOKEN), &sha256_hex("never"));
    std::fs::write(&config, bad).unwrap();
    p.signal("HUP");
    assert!(
        poll(|| reload_gauge(ports.admin) == 0.0),
        "config_reload_success turns 0"
    );
    assert!(
        works(new_token) && works(WEB_TOKEN),
        "the running config stays"
    );
    assert!(!works("never"));

    std::fs::write(&config, original).unwrap();
    p.signal("HUP");
    assert!(
        poll(|| reload_gauge(ports.admin) == 1.0 && !works(new_token)),
        "a good reload removes the credential again"
    );
}

#[test]
fn kill_9_loses_at_most_one_snapshot_interval() {
    let up = EchoUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new(up.port);
    let config = config_with_snapshot(&ports, dir.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("snapshot_interval = \"1h\"", "snapshot_interval = \"1s\"");
    std::fs::write(&config, text).unwrap();
    let mut p = SidecarProcess::start(&config, ports);
    let early = admin_create(ports.admin, "before-interval");
    std::thread::sleep(Duration::from_millis(1800));
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let _p2 = SidecarProcess::start(&config, ports);
    let r = get(
        ports.admin,
        &format!("/admin/sessions/{early}"),
        &[("Authorization", &bearer(ADMIN_TOKEN))],
    );
    assert_eq!(
        r.status, 200,
        "a session older than one snapshot interval survives kill -9"
    );
}

#[test]
fn upgrade_hands_over_sockets_and_sessions_under_load() {
    let up = EchoUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new(up.port);
    let config = config_with_snapshot(&ports, dir.path(), "");
    let sock = dir.path().join("upgrade.sock");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[server]\n",
        &format!(
            "[server]\nupgrade_sock = \"{}\"\npid_file = \"{}\"\n",
            sock.display(),
            dir.path().join("pid").display()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let mut old = SidecarProcess::start(&config, ports);
    let before: Vec<String> = (0..5)
        .map(|i| admin_create(ports.admin, &format!("pre-{i}")))
        .collect();

    // The new process waits in bootstrap for the old one's sockets.
    let mut new = SidecarProcess::spawn(
        &[
            "--upgrade".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        ports,
        dir.path().join("new.log"),
    );
    std::thread::sleep(Duration::from_millis(500));

    // A client loop runs through the whole hand-off: every request must succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let known = before.clone();
    let client = std::thread::spawn(move || {
        let (mut ok, mut failed, mut created) = (0, Vec::new(), Vec::new());
        let mut i = 0;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            i += 1;
            let r = std::panic::catch_unwind(|| {
                get(
                    ports.proxy,
                    &format!("/upgrade/{i}"),
                    &[("X-Session-Id", &known[i % known.len()])],
                )
            });
            match r {
                Ok(r) if r.status == 200 => ok += 1,
                Ok(r) => failed.push(format!("status {}", r.status)),
                Err(_) => failed.push("transport error".into()),
            }
            if i % 10 == 0 {
                if let Ok(id) =
                    std::panic::catch_unwind(|| admin_create(ports.admin, &format!("during-{i}")))
                {
                    created.push(id);
                } else {
                    failed.push("admin create failed".into());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (ok, failed, created)
    });
    std::thread::sleep(Duration::from_millis(500));
    old.signal("QUIT");
    assert_eq!(
        old.wait_exit(Duration::from_secs(20)),
        Some(0),
        "the old process exits cleanly after the hand-off"
    );
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed, created) = client.join().unwrap();
    assert!(
        failed.is_empty(),
        "requests failed during the upgrade: {failed:?}"
    );
    assert!(
        ok > 50,
        "the client loop ran through the hand-off ({ok} requests)"
    );
    assert!(
        new.child.try_wait().unwrap().is_none(),
        "the new process keeps running"
    );
    let auth = bearer(ADMIN_TOKEN);
    for id in before.iter().chain(created.iter()) {
        let r = get(
            ports.admin,
            &format!("/admin/sessions/{id}"),
            &[("Authorization", &auth)],
        );
        assert_eq!(
            r.status,
            200,
            "session {} was lost in the upgrade",
            &id[..8]
        );
    }
}
