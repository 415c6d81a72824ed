//! What the sidecar's log must not hold. SPEC §5: no secret, token or full session id, even
//! at debug level, whatever the request path, query or failure. Issue 19: no ERROR line for
//! what a client does to its own connection.

use crate::common;

use common::process::SidecarProcess;
use common::*;
use serde_json::json;

#[test]
fn no_secret_or_full_session_id_in_debug_logs() {
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let extra = "[flavors.spreadsheetweb]\n[flavors.knowledge_center]\n[flavors.tessitura]\n[flavors.voucherify]\n";
    let p = SidecarProcess::start_fresh(ports, extra, &[]);
    let port = ports.proxy;
    let web = bearer(WEB_TOKEN);
    let json_auth: &[(&str, &str)] = &[
        ("Authorization", &web),
        ("Content-Type", "application/json"),
    ];
    let mut ids = Vec::new();

    let r = request(
        port,
        "POST",
        "/Api/Applications/OpenDedicatedSession",
        json_auth,
        json!({"ApplicationKey": APP_KEY}).to_string().as_bytes(),
    );
    let swb = r.json()["SessionId"].as_str().unwrap().to_string();
    request(
        port,
        "POST",
        "/Api/Applications/GetResult",
        json_auth,
        json!({"SessionId": swb}).to_string().as_bytes(),
    );
    ids.push(swb);

    let kc = request(
        port,
        "PUT",
        "/gks-server/v1/sessions/new",
        &[("Authorization", &web)],
        b"",
    )
    .json()["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    get(
        port,
        &format!("/gks-server/v1/sessions/{kc}"),
        &[("Authorization", &bearer(OTHER_TOKEN))],
    );
    get(
        port,
        &format!("/p/{kc}?sessionId={kc}"),
        &[("Cookie", &format!("session_id={kc}"))],
    );
    get(
        port,
        &format!("/dead/{kc}?sessionId={kc}"),
        &[("X-Session-Id", &kc)],
    );
    get(
        port,
        &format!("/account/{kc}"),
        &[("X-Session-Id", "0b8f5c1e-1d2a-4c3b-9e8f-00000000abcd")],
    );
    ids.push(kc);
    ids.push("0b8f5c1e-1d2a-4c3b-9e8f-00000000abcd".into());

    let key = request(port, "POST", "/Web/Session", json_auth, b"{}").json()["SessionKey"]
        .as_str()
        .unwrap()
        .to_string();
    let new_key = request(
        port,
        "POST",
        "/api/TransferSession",
        json_auth,
        json!({"SessionKey": key}).to_string().as_bytes(),
    )
    .json()["Data"]["SessionKey"]
        .as_str()
        .unwrap()
        .to_string();
    get(
        port,
        &format!(
            "/Web/Session/{}/Expiration",
            new_key
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        ),
        &[("Authorization", &web)],
    );
    ids.extend([key, new_key]);

    let lock = "ssn_logcheck0123456789abcdefABCDEFGHI".to_string();
    request(port, "POST", "/v1/validations", &[("X-App-Id", POS_APP_ID), ("X-App-Token", POS_TOKEN), ("Content-Type", "application/json")],
        json!({"redeemables": [{"object": "voucher", "id": "LOGCODE"}], "session": {"type": "LOCK", "key": lock}}).to_string().as_bytes());
    request(
        port,
        "DELETE",
        &format!("/v1/vouchers/LOGCODE/sessions/{lock}"),
        &[
            ("X-App-Id", POS_APP_ID),
            ("X-App-Token", "wrong-pos-token-123456"),
        ],
        b"",
    );
    ids.push(lock);

    let admin = bearer(ADMIN_TOKEN);
    let adm = request(
        ports.admin,
        "POST",
        "/admin/sessions",
        &[("Authorization", &admin)],
        b"{}",
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    request(
        ports.admin,
        "DELETE",
        &format!("/admin/sessions/{adm}"),
        &[("Authorization", &admin)],
        b"",
    );
    get(
        port,
        "/secure/x",
        &[(
            "Authorization",
            "Bearer not-a-real-token-but-secret-looking",
        )],
    );
    ids.push(adm);

    let log = p.stop();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "the sidecar ran at debug level"
    );
    // The access log and the audit events share stdout with the process log: the scan below
    // covers them too (SPEC §13.5).
    for kind in ["forward", "session_api", "rejected", "audit"] {
        assert!(
            log.contains(&format!("\"kind\":\"{kind}\"")),
            "no {kind} line in the access log"
        );
    }
    let secrets = [
        WEB_TOKEN,
        OTHER_TOKEN,
        ADMIN_TOKEN,
        POS_TOKEN,
        "wrong-pos-token-123456",
        "not-a-real-token-but-secret-looking",
    ];
    for s in secrets {
        assert!(!log.contains(s), "a secret appears in the log");
    }
    for id in &ids {
        assert!(
            !log.contains(id.as_str()),
            "a full session id ({}…) appears in the log",
            &id[..8]
        );
    }
}

/// Clients hang up all the time at the edge (a closed tab, a timeout, h2load ending its run):
/// that is not the sidecar's error and must not cost an ERROR line each, over HTTP/1.1 or h2.
/// The log stays fit for an incident (issue 19), and a client cannot flood it.
#[test]
fn a_client_that_hangs_up_is_not_an_error_in_the_log() {
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let p = SidecarProcess::start_fresh(ports, "", &[]);
    p.wait_ready();
    let url = format!("http://127.0.0.1:{}/slow/x", ports.proxy);
    for proto in [&["--http1.1"][..], &["--http2-prior-knowledge"][..]] {
        for _ in 0..3 {
            // The app answers after 0.6 s; the client gives up after 0.2 s.
            let out = std::process::Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "--max-time", "0.2"])
                .args(proto)
                .args(["-H", "X-Echo-Sleep: 0.6", &url])
                .output()
                .expect("curl is installed (make test installs it)");
            assert_eq!(out.status.code(), Some(28), "curl timed out: {out:?}");
        }
    }
    // Let the app answer those requests into closed connections.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(get(ports.proxy, "/after", &[]).status, 200);
    assert_eq!(
        up.received_at("/slow/x").len(),
        6,
        "all six reached the app"
    );
    let log = p.stop();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines for clients that hung up:\n{}",
        errors.join("\n")
    );
}
