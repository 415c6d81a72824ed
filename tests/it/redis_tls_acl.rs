//! Issue 18 drills, managed-Redis style (SPEC §13.4): `rediss://` with the CA and a client
//! certificate, an ACL user whose password is in a file; a wrong password and a user without
//! the commands the store needs each stop the start with a clear error; conflicting topology
//! keys are config errors with their position.

use crate::common;

use common::pki::{self, Ca};
use common::process::{check_config, SidecarProcess};
use common::redis_server::{raw_command, redis_store_config, RedisServer};
use common::*;
use serde_json::json;
use session_sidecar::session::id::new_uuid;
use std::path::Path;
use std::time::Duration;

/// The permissions docs/redis.md tells operators to grant, on this test's prefix.
const APP_USER: &str =
    "app on >s3cret-Pw ~tls:* &tls:* +@read +@write +@scripting +@pubsub +@connection +wait";
/// Reads only: no HSET, no EVAL of writing scripts.
const LIMITED_USER: &str = "limited on >lim-Pw ~* &* +@read +ping +@scripting";

/// The TLS and ACL keys for `redis`, with the files written into `dir`.
fn tls_keys(redis: &RedisServer, ca: &Ca, dir: &Path, user: &str, password: &str) -> String {
    let client = ca.client("sidecar");
    pki::write(dir, "ca.crt", &ca.cert_pem);
    pki::write(dir, "client.crt", &client.cert_pem);
    pki::write(dir, "client.key", &client.key_pem);
    // A trailing newline, as `echo` writes it: never part of the password.
    pki::write(dir, "redis.pass", &format!("{password}\n"));
    format!(
        "urls = [\"rediss://127.0.0.1:{}\"]\nkey_prefix = \"tls:{}:\"\nca_file = \"ca.crt\"\n\
         client_cert_file = \"client.crt\"\nclient_key_file = \"client.key\"\n\
         username = \"{user}\"\npassword_file = \"redis.pass\"\ntimeout = \"1s\"\n",
        redis.tls_port.unwrap(),
        new_uuid()
    )
}

/// Starts the binary on `keys`; returns it (not waited for).
fn spawn_binary(dir: &Path, keys: &str) -> SidecarProcess {
    let ports = Ports::new(free_port());
    let config = dir.join("config.toml");
    std::fs::write(&config, redis_store_config(&ports, keys, "")).unwrap();
    SidecarProcess::spawn(
        &["--config".as_ref(), config.as_os_str()],
        ports,
        dir.join("sidecar.log"),
    )
}

#[test]
fn the_right_acl_user_works_over_tls_with_a_client_certificate() {
    let ca = Ca::new("redis test CA");
    let redis = RedisServer::start_tls(&ca, &[APP_USER]);
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let dir = tempfile::tempdir().unwrap();
    let keys = tls_keys(&redis, &ca, dir.path(), "app", "s3cret-Pw");
    // TestSidecar writes its config into its own dir: the files go with absolute paths.
    let keys = keys
        .replace(
            "\"ca.crt\"",
            &format!("\"{}\"", dir.path().join("ca.crt").display()),
        )
        .replace(
            "\"client.crt\"",
            &format!("\"{}\"", dir.path().join("client.crt").display()),
        )
        .replace(
            "\"client.key\"",
            &format!("\"{}\"", dir.path().join("client.key").display()),
        )
        .replace(
            "\"redis.pass\"",
            &format!("\"{}\"", dir.path().join("redis.pass").display()),
        );
    let sc = TestSidecar::start(ports, &redis_store_config(&ports, &keys, ""));
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &bearer(ADMIN_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        json!({"customer_id": "cust-tls"}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let sid = r.json()["id"].as_str().unwrap().to_string();
    let path = format!("/tls/{}", new_uuid());
    assert_eq!(
        sc.proxy("GET", &path, &[("X-Session-Id", &sid)], b"")
            .status,
        200
    );
    let seen = up.received_at(&path);
    assert_eq!(
        seen.first()
            .and_then(|r| r.header("X-Customer-Id"))
            .as_deref(),
        Some("cust-tls")
    );
    // The session is in this Redis, written by the ACL user over TLS.
    let clients = raw_command(redis.port, "CLIENT LIST").unwrap();
    assert!(clients.contains("user=app"), "{clients}");
    let keys_in_redis = raw_command(redis.port, "DBSIZE").unwrap();
    assert!(!keys_in_redis.starts_with(":0"), "{keys_in_redis}");
}

#[test]
fn a_wrong_password_stops_the_start_naming_the_user_never_the_password() {
    let ca = Ca::new("redis test CA");
    let redis = RedisServer::start_tls(&ca, &[APP_USER]);
    let dir = tempfile::tempdir().unwrap();
    let keys = tls_keys(&redis, &ca, dir.path(), "app", "not-the-Pw-4711");
    let mut p = spawn_binary(dir.path(), &keys);
    let code = p.wait_exit(Duration::from_secs(15));
    let log = p.log_text();
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {log}");
    assert!(log.contains("refused user \"app\""), "{log}");
    assert!(log.contains("wrong password"), "{log}");
    assert!(
        !log.contains("not-the-Pw-4711"),
        "the password is in the log: {log}"
    );
}

#[test]
fn a_user_without_the_needed_commands_stops_the_start_with_noperm() {
    let ca = Ca::new("redis test CA");
    let redis = RedisServer::start_tls(&ca, &[LIMITED_USER]);
    let dir = tempfile::tempdir().unwrap();
    let keys = tls_keys(&redis, &ca, dir.path(), "limited", "lim-Pw");
    let mut p = spawn_binary(dir.path(), &keys);
    let code = p.wait_exit(Duration::from_secs(15));
    let log = p.log_text();
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {log}");
    assert!(
        log.contains("user \"limited\" lacks a permission the store needs"),
        "{log}"
    );
    // Redis's own refusal is quoted: it names what is missing.
    assert!(log.contains("can't run this command"), "{log}");
    assert!(!log.contains("lim-Pw"), "{log}");
}

/// `check-config` on `[store.redis]` keys: the error and the 1-based line it must point at.
fn refused_at(keys: &str, expect: &str, line_of: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw\n").unwrap();
    let toml = redis_store_config(&Ports::new(free_port()), keys, "");
    let line = toml
        .lines()
        .position(|l| l.starts_with(line_of))
        .unwrap_or_else(|| panic!("{line_of} not in the config"))
        + 1;
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &toml).unwrap();
    let (ok, said) = check_config(&path);
    assert!(!ok, "accepted: {keys}");
    assert!(said.contains(expect), "{said}");
    assert!(
        said.contains(&format!("config.toml:{line}:")),
        "not at line {line}: {said}"
    );
}

#[test]
fn topology_and_secret_keys_are_checked_with_their_position() {
    refused_at(
        "sentinels = [\"127.0.0.1:26379\"]\nsentinel_master = \"m\"\nurls = [\"redis://127.0.0.1:6379\"]",
        "mutually exclusive",
        "urls",
    );
    refused_at(
        "sentinels = [\"127.0.0.1:26379\"]\nsentinel_master = \"m\"\ncluster = true",
        "mutually exclusive",
        "cluster",
    );
    refused_at(
        "sentinels = [\"127.0.0.1:26379\"]",
        "needs store.redis.sentinel_master",
        "sentinels",
    );
    refused_at(
        "urls = [\"redis://app:hunter2@127.0.0.1:6379\"]",
        "password_file",
        "urls",
    );
    refused_at(
        "urls = [\"redis://127.0.0.1:6379\"]\nca_file = \"pw\"",
        "rediss://",
        "ca_file",
    );
    refused_at(
        "urls = [\"redis://127.0.0.1:6379\"]\nusername = \"app\"\npassword_file = \"missing.pass\"",
        "cannot read",
        "password_file",
    );
    refused_at(
        "urls = [\"redis://127.0.0.1:1\"]\ncluster = true\nwait_for_replicas = 1",
        "standalone and Sentinel",
        "wait_for_replicas",
    );
    refused_at(
        "urls = [\"redis://127.0.0.1:1\", \"redis://127.0.0.1:2\"]",
        "exactly one URL",
        "urls",
    );
}
