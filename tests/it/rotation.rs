//! Session id rotation at login (SPEC §13.2), end to end: a real login app behind the sidecar
//! answers a good password with the identity assertion header; the sidecar gives the session a
//! new id, tells the client, lets the old id follow for `rotation_grace`, then ends it. On the
//! memory store (in-process with a manual clock, and the binary on real time) and on one Redis
//! shared by two sidecar binaries.

use crate::common;

use common::echo::{Answer, Answerer};
use common::process::SidecarProcess;
use common::redis_server::RedisServer;
use common::*;
use serde_json::json;
use session_sidecar::session::id::new_uuid;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const PASSWORD: &str = "wonderland";

/// The app: `POST /login` with `user=NAME&password=wonderland` logs NAME in (assertion header),
/// a wrong password is 401 without it, `POST /logout` clears the customer. Everything else is
/// echoed, so tests see the identity headers the app received.
pub(crate) fn login_app() -> EchoUpstream {
    let answerer: Answerer = Arc::new(|r| {
        let form: Vec<(String, String)> = url_pairs(&r.body);
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/login") => Some(match (field("user"), field("password")) {
                (Some(user), Some(p)) if p == PASSWORD && !user.is_empty() => Answer {
                    status: 200,
                    headers: vec![("X-Sidecar-Set-Customer-Id".into(), user.clone())],
                    body: json!({"welcome": user}),
                },
                _ => Answer {
                    status: 401,
                    headers: vec![],
                    body: json!({"error": "bad password"}),
                },
            }),
            ("POST", "/logout") => Some(Answer {
                status: 200,
                headers: vec![("X-Sidecar-Set-Customer-Id".into(), String::new())],
                body: json!({}),
            }),
            _ => None,
        }
    });
    EchoUpstream::start_answering(answerer)
}

fn url_pairs(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn form(user: &str, password: &str) -> Vec<u8> {
    format!("user={user}&password={password}").into_bytes()
}

pub(crate) const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// A session with no identity, as an attacker would mint one to plant in a victim's browser.
pub(crate) fn planted_session(admin_port: u16) -> String {
    let r = request(
        admin_port,
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &bearer(ADMIN_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

pub(crate) fn cookie(sid: &str) -> String {
    format!("theme=dark; session_id={sid}")
}

/// The identity the app received on a request carrying `sid` in the cookie:
/// (X-Session-Id, X-Customer-Id).
fn seen_with_cookie(
    port: u16,
    up: &EchoUpstream,
    sid: &str,
) -> (u16, Option<String>, Option<String>) {
    let path = format!("/page/{}", new_uuid());
    let r = request(port, "GET", &path, &[("Cookie", &cookie(sid))], b"");
    let rec = up.received_at(&path).into_iter().next();
    (
        r.status,
        rec.as_ref().and_then(|x| x.header("X-Session-Id")),
        rec.as_ref().and_then(|x| x.header("X-Customer-Id")),
    )
}

/// The new id from a login answer: the `Set-Cookie` value, checked against SPEC §13.2's shape,
/// and the same in the session-id response header.
fn rotated_id(r: &Response, old: &str) -> String {
    let set = r.header_all("Set-Cookie");
    assert_eq!(set.len(), 1, "one Set-Cookie: {set:?}");
    let value = set[0]
        .strip_prefix("session_id=")
        .and_then(|v| v.strip_suffix("; Path=/; HttpOnly; SameSite=Lax"))
        .unwrap_or_else(|| panic!("Set-Cookie shape: {}", set[0]));
    assert_ne!(value, old, "the id changed");
    assert!(
        uuid::Uuid::parse_str(value).is_ok(),
        "same kind of id: {value}"
    );
    assert_eq!(r.header("X-Session-Id"), Some(value));
    value.to_string()
}

fn memory_sidecar(up: &EchoUpstream, sessions: &str) -> TestSidecar {
    TestSidecar::with_manual_clock(up, &format!("\n[sessions]\n{sessions}\n"))
}

#[test]
fn login_gives_a_cookie_session_a_new_id_and_the_old_one_follows_only_for_the_grace() {
    let up = login_app();
    let sc = memory_sidecar(&up, "rotation_grace = \"10s\"");
    let old = planted_session(sc.ports.admin);

    let r = sc.proxy(
        "POST",
        "/login",
        &[("Cookie", &cookie(&old)), FORM],
        &form("alice", PASSWORD),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("X-Sidecar-Set-Customer-Id").is_none());
    let new = rotated_id(&r, &old);
    // The app saw the login on the session as it was (the old id): the id changes only in
    // the answer.
    let login = &up.received_at("/login")[0];
    assert_eq!(login.header("X-Session-Id").as_deref(), Some(old.as_str()));

    let alice = Some("alice".to_string());
    assert_eq!(
        seen_with_cookie(sc.ports.proxy, &up, &new),
        (200, Some(new.clone()), alice.clone()),
        "the new id carries the login"
    );
    // During the grace the old id (a request already under way, another tab) reaches the
    // same session, under its new id.
    sc.advance(Duration::from_secs(9));
    assert_eq!(
        seen_with_cookie(sc.ports.proxy, &up, &old),
        (200, Some(new.clone()), alice.clone())
    );
    // Then it ends: whoever planted it holds nothing.
    sc.advance(Duration::from_secs(2));
    assert_eq!(
        seen_with_cookie(sc.ports.proxy, &up, &old),
        (200, None, None)
    );
    let r = sc.proxy("GET", "/account/x", &[("Cookie", &cookie(&old))], b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "session_expired");
    assert_eq!(
        seen_with_cookie(sc.ports.proxy, &up, &new),
        (200, Some(new.clone()), alice),
        "the session lives on under its new id"
    );
    let admin = |id: &str| {
        sc.admin(
            "GET",
            &format!("/admin/sessions/{id}"),
            &[("Authorization", &bearer(ADMIN_TOKEN))],
            b"",
        )
    };
    assert_eq!(admin(&old).status, 404);
    let view = admin(&new);
    assert_eq!(view.status, 200);
    assert_eq!(view.json()["customer_id"], "alice");
}

#[test]
fn a_failed_login_or_a_logout_does_not_rotate() {
    let up = login_app();
    let sc = memory_sidecar(&up, "");
    let sid = planted_session(sc.ports.admin);
    for (path, body) in [
        ("/login", form("alice", "guess")),
        ("/login", form("", PASSWORD)),
        ("/logout", Vec::new()),
    ] {
        let r = sc.proxy("POST", path, &[("Cookie", &cookie(&sid)), FORM], &body);
        assert!(r.header("Set-Cookie").is_none(), "{path}: {:?}", r.headers);
        assert!(r.header("X-Session-Id").is_none(), "{path}");
    }
    assert_eq!(
        seen_with_cookie(sc.ports.proxy, &up, &sid),
        (200, Some(sid.clone()), None)
    );
}

#[test]
fn the_policy_decides_which_locators_rotate() {
    let up = login_app();
    let login = |sc: &TestSidecar, how: (&str, String)| {
        sc.proxy(
            "POST",
            "/login",
            &[(how.0, &how.1), FORM],
            &form("bob", PASSWORD),
        )
    };
    // Default ("cookie"): a session carried in a header is an API client's, not a browser's.
    let sc = memory_sidecar(&up, "");
    let sid = planted_session(sc.ports.admin);
    let r = login(&sc, ("X-Session-Id", sid.clone()));
    assert_eq!(r.status, 200);
    assert!(r.header("X-Session-Id").is_none() && r.header("Set-Cookie").is_none());
    let r = login(&sc, ("Cookie", cookie(&sid)));
    rotated_id(&r, &sid);

    // "always": any locator; the new id comes back in the session-id header only.
    let sc = memory_sidecar(&up, "rotate_on_login = \"always\"");
    let sid = planted_session(sc.ports.admin);
    let r = login(&sc, ("X-Session-Id", sid.clone()));
    assert_eq!(r.status, 200);
    assert!(r.header("Set-Cookie").is_none());
    let new = r.header("X-Session-Id").expect("new id in the header");
    assert_ne!(new, sid);
    assert!(uuid::Uuid::parse_str(new).is_ok());
    let path = format!("/q?sessionId={new}");
    let r = sc.proxy("GET", &path, &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        up.received_at("/q").last().unwrap().header("X-Customer-Id"),
        Some("bob".to_string())
    );

    // "never": not even the cookie.
    let sc = memory_sidecar(&up, "rotate_on_login = \"never\"");
    let sid = planted_session(sc.ports.admin);
    let r = login(&sc, ("Cookie", cookie(&sid)));
    assert_eq!(r.status, 200);
    assert!(r.header("Set-Cookie").is_none() && r.header("X-Session-Id").is_none());
    assert_eq!(
        seen_with_cookie(sc.ports.proxy, &up, &sid).2,
        Some("bob".to_string())
    );
}

#[test]
fn a_second_login_on_the_old_id_during_the_grace_learns_the_same_new_id() {
    let up = login_app();
    let sc = memory_sidecar(&up, "");
    let old = planted_session(sc.ports.admin);
    let login = || {
        sc.proxy(
            "POST",
            "/login",
            &[("Cookie", &cookie(&old)), FORM],
            &form("carol", PASSWORD),
        )
    };
    let first = rotated_id(&login(), &old);
    let second = rotated_id(&login(), &old);
    assert_eq!(first, second, "no second rotation from the grace alias");
}

#[test]
fn paths_of_a_flavour_api_never_rotate() {
    // Even under "always", a login forwarded under Tessitura's `Web/Session/{key}/…` keeps the
    // key: Tessitura clients learn keys only from that API's own answers.
    let up = login_app();
    let sc = memory_sidecar(&up, "rotate_on_login = \"always\"\n\n[flavors.tessitura]");
    let r = post_json(
        sc.ports.proxy,
        "/Web/Session",
        &[("Authorization", &bearer(WEB_TOKEN))],
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let key = r.json()["SessionKey"]
        .as_str()
        .expect("SessionKey")
        .to_string();
    assert!(r.header("Set-Cookie").is_none() && r.header("X-Session-Id").is_none());
    let encoded = percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC);
    let login = |path: &str| {
        sc.proxy(
            "POST",
            path,
            &[
                ("Authorization", &bearer(WEB_TOKEN)),
                ("X-Session-Id", &key),
                ("X-Echo-Assert-Customer", "dave"),
            ],
            b"",
        )
    };
    let r = login(&format!("/Web/Session/{encoded}/Login"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("Set-Cookie").is_none(), "{:?}", r.headers);
    assert!(r.header("X-Session-Id").is_none(), "{:?}", r.headers);
    let rec = up
        .received_at("/Web/Session/")
        .pop()
        .expect("forwarded to the app");
    assert_eq!(rec.header("X-Session-Id"), Some(key.clone()));
    // The same session logging in through an app path of its own does rotate ("always").
    let r = login("/app/login");
    assert_eq!(r.status, 200, "{}", r.text());
    let new = r
        .header("X-Session-Id")
        .expect("rotated outside the flavour's API");
    assert_ne!(new, key);
    assert_eq!(
        new.len(),
        108,
        "a Tessitura key stays a Tessitura key: {new}"
    );
}

/// Waits (checking, not timing) until the old id no longer reaches anything on every port;
/// until then each answer must be the new session.
fn wait_out_the_grace(ports: &[u16], up: &EchoUpstream, old: &str, new: &str, customer: &str) {
    let followed = (200, Some(new.to_string()), Some(customer.to_string()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen: Vec<_> = ports
            .iter()
            .map(|p| seen_with_cookie(*p, up, old))
            .collect();
        if seen.iter().all(|s| *s == (200, None, None)) {
            return;
        }
        for s in &seen {
            assert!(
                *s == followed || *s == (200, None, None),
                "the old id either follows to the new session or is gone: {s:?}"
            );
        }
        assert!(Instant::now() < deadline, "the old id never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The release path as operators run it: the `session-sidecar` binary on the memory store,
/// real time, a cookie session planted through the admin API, then a login through the proxy.
#[test]
fn the_binary_on_the_memory_store_rotates_at_login() {
    let up = login_app();
    let ports = Ports::new(up.port);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        base_config(
            &ports,
            "
[sessions]
rotation_grace = \"3s\"\n",
        ),
    )
    .unwrap();
    let sc = SidecarProcess::start(&path, ports);
    sc.wait_ready();
    let p = sc.ports.proxy;
    let old = planted_session(sc.ports.admin);

    let r = request(
        p,
        "POST",
        "/login",
        &[("Cookie", &cookie(&old)), FORM],
        &form("frank", PASSWORD),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let new = rotated_id(&r, &old);
    let frank = Some("frank".to_string());
    assert_eq!(
        seen_with_cookie(p, &up, &new),
        (200, Some(new.clone()), frank.clone())
    );
    // Right after the login the old id is within its grace and follows to the new session.
    assert_eq!(
        seen_with_cookie(p, &up, &old),
        (200, Some(new.clone()), frank.clone())
    );
    wait_out_the_grace(&[p], &up, &old, &new, "frank");
    assert_eq!(
        request(p, "GET", "/account/x", &[("Cookie", &cookie(&old))], b"").status,
        401
    );
    assert_eq!(
        seen_with_cookie(p, &up, &new),
        (200, Some(new.clone()), frank)
    );

    let metrics = request(sc.ports.admin, "GET", "/metrics", &[], b"").text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("session_sidecar_sessions_rotated_total") && l.ends_with(" 1")),
        "one rotation counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("rotated"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let log = sc.stop();
    for id in [&old, &new] {
        assert!(!log.contains(id.as_str()), "a full session id in the log");
    }
}

/// A `session-sidecar` binary on the Redis store at `url`, in front of `up`.
fn redis_replica(
    up: &EchoUpstream,
    url: &str,
    prefix: &str,
) -> (SidecarProcess, tempfile::TempDir) {
    let ports = Ports::new(up.port);
    let extra = format!(
        "\n[sessions]\nrotation_grace = \"1500ms\"\n\n[store.redis]\nurls = [\"{url}\"]\nkey_prefix = \"{prefix}\"\nnear_cache_ttl = \"30s\"\n"
    );
    let toml = base_config(&ports, &extra).replace(
        "[store]\nsnapshot_file = \"\"",
        "[store]\nbackend = \"redis\"\nsnapshot_file = \"\"",
    );
    assert!(toml.contains("backend = \"redis\""));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let p = SidecarProcess::start(&path, ports);
    p.wait_ready();
    (p, dir)
}

#[test]
fn two_replicas_on_one_redis_agree_on_a_rotation() {
    let redis = RedisServer::start();
    let up = login_app();
    let prefix = format!("rot:{}:", new_uuid());
    let (a, _da) = redis_replica(&up, &redis.url(), &prefix);
    let (b, _db) = redis_replica(&up, &redis.url(), &prefix);
    let (pa, pb) = (a.ports.proxy, b.ports.proxy);
    let old = planted_session(a.ports.admin);
    // B caches the planted session (a 30 s near cache): only the rotation's invalidation can
    // make it let go.
    assert_eq!(
        seen_with_cookie(pb, &up, &old),
        (200, Some(old.clone()), None)
    );

    // The same browser logs in on both replicas at once (two tabs): both answers name one
    // new id, and no second copy of the session exists.
    let logins: Vec<_> = [pa, pb]
        .into_iter()
        .map(|port| {
            let old = old.clone();
            std::thread::spawn(move || {
                request(
                    port,
                    "POST",
                    "/login",
                    &[("Cookie", &cookie(&old)), FORM],
                    &form("erin", PASSWORD),
                )
            })
        })
        .collect();
    let answers: Vec<Response> = logins.into_iter().map(|t| t.join().unwrap()).collect();
    let ids: Vec<String> = answers.iter().map(|r| rotated_id(r, &old)).collect();
    assert_eq!(ids[0], ids[1], "both replicas tell the client the same id");
    let new = ids[0].clone();
    let r = request(
        b.ports.admin,
        "GET",
        "/admin/customers/erin/sessions",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        b"",
    );
    assert_eq!(r.json()["sessions"], json!([new]), "one session for erin");

    let erin = Some("erin".to_string());
    for port in [pa, pb] {
        assert_eq!(
            seen_with_cookie(port, &up, &new),
            (200, Some(new.clone()), erin.clone())
        );
    }
    // The grace runs on Redis's clock: wait it out (checking, not timing).
    wait_out_the_grace(&[pa, pb], &up, &old, &new, "erin");
    let log = a.stop() + &b.stop();
    for id in [&old, &new] {
        assert!(!log.contains(id.as_str()), "a full session id in the log");
    }
}
