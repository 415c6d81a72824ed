//! SPEC §13.7: the sidecar driven through the real client libraries, unmodified — Voucherify's
//! official Python SDK (`voucherify` 6.x) and JS SDK (`@voucherify/sdk` 2.x), and the
//! `tessitura` Python library — on the memory store and on Redis. A fake app answers like the
//! real APIs would; the scripts under tests/clients/ check what each library returns or raises,
//! and this side checks what reached the app.
//!
//! The libraries are installed by `make test` (scripts/install-clients): a virtualenv at
//! `$CLIENTS_VENV` (default target/clients-venv) and tests/clients/js/node_modules.

use crate::common;

use common::echo::{Answer, Received};
use common::redis_server::RedisServer;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The Basic credential of the Tessitura library: `user:usergroup:location` and password.
const TESSITURA_USER: &str = "webapi:webgroup:TNMP_WEB";
const TESSITURA_PASSWORD: &str = "tess-p4ss";
/// The customer the fake app's login asserts.
const CONSTITUENT: &str = "8675309";

fn config_extra() -> String {
    let mut limits = String::new();
    for prefix in ["PY", "JS"] {
        for (code, quantity) in [("ONE", 1), ("FIVE", 5)] {
            limits.push_str(&format!(
                "\n[[flavors.voucherify.limits]]\ncode = \"{prefix}-{code}\"\nquantity = {quantity}\n"
            ));
        }
    }
    format!(
        r#"
[[credentials]]
name = "box-office"
basic_user = "{TESSITURA_USER}"
basic_password_sha256 = "{password}"

[flavors.tessitura]
auth = "token"

[flavors.voucherify]
enabled = true
max_ttl = "30d"
{limits}"#,
        password = sha256_hex(TESSITURA_PASSWORD)
    )
}

fn voucherify_error(status: u16, key: &str, message: &str) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: json!({"code": status, "key": key, "message": message, "details": message, "request_id": "v-app-0001"}),
    }
}

fn ok(body: Value) -> Answer {
    Answer {
        status: 200,
        headers: Vec::new(),
        body,
    }
}

/// The voucher codes of a stacked request body.
fn redeemable_ids(rec: &Received) -> Vec<String> {
    let body: Value = serde_json::from_slice(&rec.body).unwrap_or(Value::Null);
    body["redeemables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A query parameter of a received request (values here need no decoding).
fn query_value(rec: &Received, name: &str) -> Option<String> {
    rec.query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// The fake app: Voucherify's validation and redemption answers (without `session`, which the
/// sidecar adds), a failure when the request asks for one (`APP_FAILS`), and Tessitura's
/// native login, which asserts the customer of the session it was called for.
fn fake_app(rec: &Received) -> Option<Answer> {
    let text = String::from_utf8_lossy(&rec.body);
    let path = rec.path.as_str();
    let voucherify = path.starts_with("/v1/") || path.starts_with("/client/v1/");
    if voucherify && (text.contains("APP_FAILS") || rec.query.contains("APP_FAILS")) {
        return Some(voucherify_error(400, "voucher_expired", "Voucher expired"));
    }
    if path.ends_with("/validations") {
        let redeemables: Vec<Value> = redeemable_ids(rec)
            .into_iter()
            .map(|id| json!({"status": "APPLICABLE", "id": id, "object": "voucher", "result": {}}))
            .collect();
        return Some(ok(json!({
            "valid": true,
            "redeemables": redeemables,
            "tracking_id": "track_0001",
            "stacking_rules": {"redeemables_limit": 30, "applicable_redeemables_limit": 5,
                "applicable_exclusive_redeemables_limit": 1, "exclusive_categories": [],
                "joint_categories": [], "redeemables_application_mode": "ALL",
                "redeemables_sorting_rule": "REQUESTED_ORDER"},
        })));
    }
    if path.ends_with("/redemptions") {
        let redemptions: Vec<Value> = redeemable_ids(rec)
            .into_iter()
            .map(|id| json!({"id": format!("r_{id}"), "object": "redemption", "result": "SUCCESS", "voucher": {"code": id}}))
            .collect();
        return Some(ok(json!({ "redemptions": redemptions })));
    }
    if path == "/client/v1/validate"
        || (path.starts_with("/v1/vouchers/") && path.ends_with("/validate"))
    {
        let code = query_value(rec, "code")
            .or_else(|| path.split('/').nth(3).map(str::to_string))
            .unwrap_or_default();
        return Some(ok(json!({
            "valid": true, "code": code, "discount": {"type": "AMOUNT", "amount_off": 1000},
            "tracking_id": "track_0001",
        })));
    }
    if path == "/client/v1/redeem" {
        let code = query_value(rec, "code").unwrap_or_default();
        return Some(ok(
            json!({"id": "r_legacy", "object": "redemption", "result": "SUCCESS", "voucher": {"code": code}}),
        ));
    }
    if path.starts_with("/Web/Session/") && path.ends_with("/Login") {
        return Some(Answer {
            status: 200,
            headers: vec![(
                "X-Sidecar-Set-Customer-Id".to_string(),
                CONSTITUENT.to_string(),
            )],
            body: json!({"IsLoggedIn": true}),
        });
    }
    None
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the clients' virtualenv; panics with the way to install it.
fn python() -> PathBuf {
    let venv = std::env::var_os("CLIENTS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("target/clients-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test` (or scripts/install-clients) to install the client libraries",
        python.display()
    );
    python
}

fn js_dir() -> PathBuf {
    let dir = manifest_dir().join("tests/clients/js");
    assert!(
        dir.join("node_modules/@voucherify/sdk").exists(),
        "tests/clients/js/node_modules is missing: run `make test` (or scripts/install-clients)"
    );
    dir
}

/// Runs one client script; its stdout's last line is a JSON object of facts.
fn run_script(program: &Path, script: &Path, sc: &TestSidecar, prefix: &str) -> Value {
    let out = Command::new(program)
        .arg(script)
        .current_dir(script.parent().expect("script dir"))
        .env(
            "SIDECAR_URL",
            format!("http://127.0.0.1:{}", sc.ports.proxy),
        )
        .env("APP_ID", POS_APP_ID)
        .env("APP_TOKEN", POS_TOKEN)
        .env("PREFIX", prefix)
        .env(
            "TESSITURA_CREDENTIALS",
            format!("{TESSITURA_USER}:{TESSITURA_PASSWORD}"),
        )
        .env("CONSTITUENT", CONSTITUENT)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        out.status
    );
    // Shown with `--nocapture`: every check the script made.
    println!("{}:\n{stdout}", script.display());
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{}: last line is not JSON ({e}):\n{stdout}",
            script.display()
        )
    })
}

/// What reached the app for the Voucherify API: only requests with the right credentials,
/// every validation of a LOCK with the sidecar's lock headers.
fn check_voucherify_traffic(app: &EchoUpstream, prefix: &str) {
    let traffic: Vec<Received> = app
        .received()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/") || r.path.starts_with("/client/v1/"))
        .filter(|r| String::from_utf8_lossy(&r.body).contains(prefix) || r.query.contains(prefix))
        .collect();
    assert!(!traffic.is_empty(), "{prefix}: nothing reached the app");
    for r in &traffic {
        let token = r
            .header("X-App-Token")
            .or_else(|| r.header("X-Client-Token"));
        assert_eq!(
            token.as_deref(),
            Some(POS_TOKEN),
            "{prefix}: a request with bad credentials reached the app: {} {}",
            r.method,
            r.path
        );
    }
    let locked: Vec<&Received> = traffic
        .iter()
        .filter(|r| r.header("X-Session-Type").as_deref() == Some("LOCK"))
        .collect();
    assert!(
        locked.iter().any(|r| r.header("X-Session-Key").as_deref()
            == Some(&format!("{prefix}-k1"))
            && r.header("X-Locked-Quantity").as_deref()
                == Some(&format!("{prefix}-ONE=0, {prefix}-FREE=0"))),
        "{prefix}: the first lock's headers"
    );
    assert!(
        !traffic
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains(&format!("{prefix}-k2"))),
        "{prefix}: a sold-out validation reached the app"
    );
}

fn drive_every_client(redis: Option<&RedisServer>) {
    let app = EchoUpstream::start_answering(Arc::new(fake_app));
    let ports = Ports::new(app.port);
    let mut toml = base_config(&ports, &config_extra());
    if let Some(redis) = redis {
        toml = toml.replace(
            "[store]\nsnapshot_file = \"\"",
            &format!(
                "[store]\nbackend = \"redis\"\nsnapshot_file = \"\"\n\n[store.redis]\nurls = [\"{}\"]\n",
                redis.url()
            ),
        );
        assert!(toml.contains("backend = \"redis\""));
    }
    let sc = TestSidecar::start(ports, &toml);
    let clients = manifest_dir().join("tests/clients");

    let facts = run_script(
        &python(),
        &clients.join("python/voucherify_sdk.py"),
        &sc,
        "PY",
    );
    assert_eq!(facts["crowd_won"], 5);
    check_voucherify_traffic(&app, "PY");

    let facts = run_script(
        Path::new("node"),
        &js_dir().join("voucherify_sdk.js"),
        &sc,
        "JS",
    );
    assert_eq!(facts["crowd_won"], 5);
    check_voucherify_traffic(&app, "JS");
    let legacy = app.received_at("/client/v1/validate");
    assert!(
        legacy.iter().any(
            |r| r.header("X-Session-Key").as_deref() == Some("JS-legacy")
                && r.header("X-Session-Type").as_deref() == Some("LOCK")
        ),
        "the legacy client.validate() took its lock"
    );

    let facts = run_script(
        &python(),
        &clients.join("python/tessitura_lib.py"),
        &sc,
        "TS",
    );
    let login = app
        .received_at("/Web/Session/")
        .into_iter()
        .find(|r| r.path.ends_with("/Login"))
        .expect("the login was forwarded");
    assert_eq!(
        login.header("X-Session-Id").as_deref(),
        facts["logged_in_key"].as_str(),
        "the login carried its session, found under the unencoded key"
    );
    assert!(
        login.header("Authorization").is_some(),
        "strip_credentials is off by default"
    );
    assert!(
        app.received()
            .iter()
            .all(|r| !r.path.starts_with("/Web/Session/") || r.path.ends_with("/Login")),
        "only the login reached the app: session endpoints are the sidecar's"
    );
}

#[test]
fn every_client_library_on_the_memory_store() {
    drive_every_client(None);
}

#[test]
fn every_client_library_on_the_redis_store() {
    let redis = RedisServer::start();
    drive_every_client(Some(&redis));
}
