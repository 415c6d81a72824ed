//! SPEC §5 credentials and §3 isolation: static bearer tokens, app-id pairs, JWTs against a
//! key set from a file or a loopback JWKS server (expiry, issuer, audience, forged tokens,
//! rotation, outages, reloads), isolation between credentials, exact `auth_failures_total`
//! counts and logs free of secrets (a real sidecar process with debug logging).

use crate::common;

use common::jwt::*;
use common::process::SidecarProcess;
use common::*;
use serde_json::{json, Value};
use session_sidecar::auth::AuthResult;
use session_sidecar::config::ApplicationAccess;
use session_sidecar::session::id::new_uuid;
use session_sidecar::session::{Caller, EndReason, Flavor};
use std::sync::Arc;
use std::time::Duration;

/// A route with `auth = "token"` in `base_config`.
const TOKEN_ROUTE: &str = "/secure/who";

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The credential name the app saw for one request on the token route, or the refusal status.
fn subject(sc: &TestSidecar, up: &EchoUpstream, headers: &[(&str, &str)]) -> Result<String, u16> {
    let path = format!("{TOKEN_ROUTE}/{}", new_uuid());
    let r = sc.proxy("GET", &path, headers, b"");
    if r.status != 200 {
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["error"], "unauthorized");
        assert!(
            up.received_at(&path).is_empty(),
            "a refused request was forwarded"
        );
        return Err(r.status);
    }
    let rec = &up.received_at(&path)[0];
    let names = rec.header_all("X-Auth-Subject");
    assert_eq!(names.len(), 1, "{names:?}");
    Ok(names[0].clone())
}

fn bearer_subject(sc: &TestSidecar, up: &EchoUpstream, token: &str) -> Result<String, u16> {
    subject(sc, up, &[("Authorization", &bearer(token))])
}

/// A sidecar whose `[jwt]` key set is a file holding `keys`; keep the returned dir alive.
fn with_jwks_file(
    up: &EchoUpstream,
    keys: &[&TestKey],
    extra: &str,
) -> (TestSidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys)).unwrap();
    let table = jwt_table(&format!("jwks_file = \"{}\"", path.display()), "5m");
    (
        TestSidecar::with_upstream(up, &format!("{extra}\n{table}")),
        dir,
    )
}

fn with_jwks_url(up: &EchoUpstream, url: &str, refresh: &str) -> TestSidecar {
    let table = jwt_table(&format!("jwks_url = \"{url}\""), refresh);
    TestSidecar::with_upstream(up, &table)
}

// ---------------------------------------------------------------------------------------------
// Static secrets

fn static_bearer_tokens_match_exactly(proto: Protocol) {
    let up = EchoUpstream::start();
    // More refused admin attempts than the default failure limit allows from one address:
    // this test is about which values match (admin.rs tests the limit).
    let sc =
        TestSidecar::with_server_keys(&up, "admin_auth_failures_per_minute = 0", "").over(proto);
    assert_eq!(bearer_subject(&sc, &up, WEB_TOKEN), Ok("web".into()));
    assert_eq!(bearer_subject(&sc, &up, OTHER_TOKEN), Ok("other".into()));
    // The scheme is case-insensitive (RFC 7235); the token is not.
    assert_eq!(
        subject(
            &sc,
            &up,
            &[("Authorization", &format!("bearer {WEB_TOKEN}"))]
        ),
        Ok("web".into())
    );
    let prefix = &WEB_TOKEN[..WEB_TOKEN.len() - 1];
    let suffix = format!("{WEB_TOKEN}0");
    let upper = WEB_TOKEN.to_ascii_uppercase();
    let refused = [
        format!("Bearer {prefix}"),
        format!("Bearer {suffix}"),
        format!("Bearer x{WEB_TOKEN}"),
        format!("Bearer {upper}"),
        format!("Bearer {WEB_TOKEN} {WEB_TOKEN}"),
        "Bearer ".to_string(),
        "Bearer".to_string(),
        String::new(),
        format!("Basic {WEB_TOKEN}"),
        format!("Token {WEB_TOKEN}"),
        WEB_TOKEN.to_string(),
        format!("Bearer {}", sha256_hex(WEB_TOKEN)),
    ];
    for value in &refused {
        assert_eq!(
            subject(&sc, &up, &[("Authorization", value)]),
            Err(401),
            "{value:?}"
        );
    }
    assert_eq!(subject(&sc, &up, &[]), Err(401));
    // The admin listener applies the same rules.
    for value in &refused {
        let r = sc.admin("GET", "/admin/sessions/x", &[("Authorization", value)], b"");
        assert_eq!(r.status, 401, "{value:?}");
    }
}

fn app_id_pairs_need_both_matching_halves(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "").over(proto);
    let ok = |id_h: &'static str, tok_h: &'static str| vec![(id_h, POS_APP_ID), (tok_h, POS_TOKEN)];
    assert_eq!(
        subject(&sc, &up, &ok("X-App-Id", "X-App-Token")),
        Ok("pos".into())
    );
    assert_eq!(
        subject(&sc, &up, &ok("X-Client-Application-Id", "X-Client-Token")),
        Ok("pos".into())
    );
    assert_eq!(
        subject(&sc, &up, &ok("x-app-id", "X-APP-TOKEN")),
        Ok("pos".into())
    );
    let pos_upper = POS_TOKEN.to_ascii_uppercase();
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![("X-App-Id", POS_APP_ID), ("X-App-Token", "wrong")],
        vec![("X-App-Id", POS_APP_ID), ("X-App-Token", &POS_TOKEN[1..])],
        vec![("X-App-Id", POS_APP_ID), ("X-App-Token", &pos_upper)],
        vec![("X-App-Id", POS_APP_ID), ("X-App-Token", "")],
        vec![("X-App-Id", "pos-2"), ("X-App-Token", POS_TOKEN)],
        vec![("X-App-Id", "POS-1"), ("X-App-Token", POS_TOKEN)],
        // A bearer token of another credential is not an app token.
        vec![("X-App-Id", POS_APP_ID), ("X-App-Token", WEB_TOKEN)],
        // Half pairs, and halves of different header families.
        vec![("X-App-Id", POS_APP_ID)],
        vec![("X-App-Token", POS_TOKEN)],
        vec![("X-Client-Application-Id", POS_APP_ID)],
        vec![("X-Client-Token", POS_TOKEN)],
        vec![("X-App-Id", POS_APP_ID), ("X-Client-Token", POS_TOKEN)],
        // The pair's token as a bearer token.
        vec![("Authorization", "Bearer test-pos-token-0123456789")],
    ];
    for headers in &refused {
        assert_eq!(subject(&sc, &up, headers), Err(401), "{headers:?}");
    }
    // A bearer token is preferred: a bad one is not rescued by a good pair.
    let bad_bearer = [
        ("Authorization", "Bearer nope"),
        ("X-App-Id", POS_APP_ID),
        ("X-App-Token", POS_TOKEN),
    ];
    assert_eq!(subject(&sc, &up, &bad_bearer), Err(401));
}

/// `Authorization: Basic` of `user:password`.
fn basic(user_and_password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_and_password)
    )
}

/// Tessitura's user, usergroup and machine location, the user part of its Basic credential.
const BOX_OFFICE_USER: &str = "webapi:webgroup:TNMP_WEB";
const BOX_OFFICE_PASSWORD: &str = "p4ss-w0rd";

fn basic_credential() -> String {
    format!(
        "\n[[credentials]]\nname = \"box-office\"\nbasic_user = \"{BOX_OFFICE_USER}\"\nbasic_password_sha256 = \"{}\"\n",
        sha256_hex(BOX_OFFICE_PASSWORD)
    )
}

/// SPEC §13.7: `basic_user` + `basic_password_sha256`, split at the last colon, accepted
/// wherever a bearer token is.
fn basic_credentials_split_at_the_last_colon(proto: Protocol) {
    let up = EchoUpstream::start();
    let kc = "\n[flavors.knowledge_center]\nenabled = true\nauth = \"token\"\n";
    let sc = TestSidecar::with_upstream(&up, &format!("{}{kc}", basic_credential())).over(proto);
    let good = basic(&format!("{BOX_OFFICE_USER}:{BOX_OFFICE_PASSWORD}"));
    assert_eq!(
        subject(&sc, &up, &[("Authorization", &good)]),
        Ok("box-office".into())
    );
    let lower_scheme = good.replacen("Basic", "basic", 1);
    assert_eq!(
        subject(&sc, &up, &[("Authorization", &lower_scheme)]),
        Ok("box-office".into())
    );
    let refused = [
        basic(&format!("{BOX_OFFICE_USER}:wrong")),
        basic(&format!("{BOX_OFFICE_USER}:{BOX_OFFICE_PASSWORD}x")),
        basic(&format!("webapi:webgroup:{BOX_OFFICE_PASSWORD}")),
        basic(&format!("{BOX_OFFICE_USER}:{BOX_OFFICE_PASSWORD}:extra")),
        basic(&format!("WEBAPI:webgroup:TNMP_WEB:{BOX_OFFICE_PASSWORD}")),
        basic(BOX_OFFICE_PASSWORD),
        basic(&format!("pos-1:{POS_TOKEN}")),
        "Basic %%%".to_string(),
        "Basic".to_string(),
        format!("Bearer {BOX_OFFICE_PASSWORD}"),
    ];
    for value in &refused {
        assert_eq!(
            subject(&sc, &up, &[("Authorization", value)]),
            Err(401),
            "{value}"
        );
    }
    // A flavour endpoint takes it like a bearer token.
    let r = sc.proxy(
        "PUT",
        "/gks-server/v1/sessions/new",
        &[("Authorization", &good)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["sessionId"].is_string(), "{}", r.text());
    let r = sc.proxy(
        "PUT",
        "/gks-server/v1/sessions/new",
        &[("Authorization", &refused[0])],
        b"",
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(up.received_at("/gks-server/").is_empty());
}

#[test]
fn basic_credentials_are_validated_in_the_config() {
    let ports = Ports::new(free_port());
    let check = |table: &str| {
        let text = base_config(&ports, table);
        session_sidecar::config::parse(std::path::Path::new("/tmp/c.toml"), &text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let hash = sha256_hex("x");
    let cred = |body: &str| format!("[[credentials]]\nname = \"b\"\n{body}\n");
    assert!(check(&cred(&format!(
        "basic_user = \"u:g:l\"\nbasic_password_sha256 = \"{hash}\""
    )))
    .is_ok());
    let refused = [
        (cred("basic_user = \"u\""), "needs exactly one"),
        (
            cred(&format!("basic_password_sha256 = \"{hash}\"")),
            "needs exactly one",
        ),
        (
            cred(&format!(
                "basic_user = \"u\"\nbasic_password_sha256 = \"{hash}\"\ntoken_sha256 = \"{hash}\""
            )),
            "needs exactly one",
        ),
        (
            cred("basic_user = \"u\"\nbasic_password_sha256 = \"nothex\""),
            "64 hex digits",
        ),
        (
            cred(&format!(
                "basic_user = \"\"\nbasic_password_sha256 = \"{hash}\""
            )),
            "basic_user",
        ),
        (
            format!(
                "{}{}",
                cred(&format!(
                    "basic_user = \"u\"\nbasic_password_sha256 = \"{hash}\""
                )),
                cred(&format!(
                    "basic_user = \"u\"\nbasic_password_sha256 = \"{hash}\""
                ))
                .replace("\"b\"", "\"c\"")
            ),
            "used twice",
        ),
    ];
    for (table, needle) in refused {
        let e = check(&table).expect_err(&table);
        assert!(e.contains(needle), "{table}: {e}");
        // FILE:LINE:COL, like every other key.
        assert!(e.starts_with("/tmp/c.toml:"), "{e}");
        assert!(
            e.split(':')
                .nth(1)
                .is_some_and(|l| l.parse::<usize>().is_ok()),
            "{e}"
        );
    }
}

/// SPEC §13.7: with `strip_credentials` (global or per route) the credential header the
/// sidecar validated does not reach the app; without it, it does.
fn strip_credentials_globally_and_per_route(proto: Protocol) {
    let up = EchoUpstream::start();
    let extra = format!(
        "{}\n[[routes]]\npath_prefix = \"/keep/\"\nstrip_credentials = false\n",
        basic_credential()
    );
    let ports = Ports::new(up.port);
    let toml = base_config(&ports, &extra).replace(
        "default_session = \"optional\"",
        "default_session = \"optional\"\nstrip_credentials = true",
    );
    let sc = TestSidecar::start(ports, &toml).over(proto);
    let good_basic = basic(&format!("{BOX_OFFICE_USER}:{BOX_OFFICE_PASSWORD}"));
    let web = bearer(WEB_TOKEN);
    let cases: [(Vec<(&str, &str)>, &str); 4] = [
        (vec![("Authorization", &web)], "authorization"),
        (vec![("Authorization", &good_basic)], "authorization"),
        (
            vec![("X-App-Id", POS_APP_ID), ("X-App-Token", POS_TOKEN)],
            "x-app-token",
        ),
        (
            vec![
                ("X-Client-Application-Id", POS_APP_ID),
                ("X-Client-Token", POS_TOKEN),
            ],
            "x-client-token",
        ),
    ];
    for (headers, secret) in &cases {
        for (prefix, stripped) in [("/strip/", true), ("/secure/", true), ("/keep/", false)] {
            let path = format!("{prefix}{}", new_uuid());
            let r = sc.proxy("GET", &path, headers, b"");
            assert_eq!(r.status, 200, "{}", r.text());
            let rec = &up.received_at(&path)[0];
            assert_eq!(
                rec.header_all(secret).is_empty(),
                stripped,
                "{path} {secret}"
            );
            assert_eq!(
                rec.header_all("X-Auth-Subject").len(),
                1,
                "the caller is still named"
            );
        }
    }
    // An invalid credential is not the sidecar's to remove: on an auth = "none" route it
    // reaches the app untouched.
    let path = format!("/strip/{}", new_uuid());
    sc.proxy(
        "GET",
        &path,
        &[("Authorization", "Bearer not-a-token")],
        b"",
    );
    assert_eq!(
        up.received_at(&path)[0].header_all("authorization"),
        vec!["Bearer not-a-token".to_string()]
    );
}

// ---------------------------------------------------------------------------------------------
// JWT verification

fn jwts_of_each_key_type_name_the_caller_on_every_route(proto: Protocol) {
    let up = EchoUpstream::start();
    let (rsa, ec, ed) = (
        TestKey::rsa_a("rsa-1"),
        TestKey::ec("ec-1"),
        TestKey::ed("ed-1"),
    );
    let (sc, _keys) = with_jwks_file(&up, &[&rsa, &ec, &ed], "");
    let sc = sc.over(proto);
    for (key, sub) in [(&rsa, "alice"), (&ec, "bob"), (&ed, "carol")] {
        assert_eq!(
            bearer_subject(&sc, &up, &key.sign(&claims(sub, json!({})))),
            Ok(sub.into()),
            "{:?}",
            key.alg
        );
    }
    // A token without kid is tried against the keys of its type.
    assert_eq!(
        bearer_subject(&sc, &up, &rsa.sign_as(None, &claims("dave", json!({})))),
        Ok("dave".into())
    );
    // Static tokens keep working beside JWTs.
    assert_eq!(bearer_subject(&sc, &up, WEB_TOKEN), Ok("web".into()));
    // On an `auth = "none"` route a valid JWT names the caller, an invalid one is ignored.
    let token = rsa.sign(&claims("alice", json!({})));
    sc.proxy(
        "GET",
        "/open/jwt",
        &[
            ("Authorization", &bearer(&token)),
            ("X-Auth-Subject", "spoofed"),
        ],
        b"",
    );
    assert_eq!(
        up.received_at("/open/jwt")[0].header_all("X-Auth-Subject"),
        vec!["alice".to_string()]
    );
    let expired = rsa.sign(&claims("alice", json!({"exp": unix_now() - 3600})));
    let r = sc.proxy(
        "GET",
        "/open/expired",
        &[
            ("Authorization", &bearer(&expired)),
            ("X-Auth-Subject", "spoofed"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(up.received_at("/open/expired")[0]
        .header_all("X-Auth-Subject")
        .is_empty());
}

fn jwt_time_claims_honour_the_leeway(proto: Protocol) {
    let up = EchoUpstream::start();
    let key = TestKey::rsa_a("k");
    let (sc, _keys) = with_jwks_file(&up, &[&key], "");
    let sc = sc.over(proto);
    let now = unix_now();
    let cases = [
        (json!({"exp": now - 5}), true),
        (json!({"exp": now - 120}), false),
        (json!({"exp": now - 86_400}), false),
        (json!({"nbf": now + 5}), true),
        (json!({"nbf": now + 120}), false),
        (json!({"nbf": now - 60, "exp": now + 60}), true),
        (json!({"exp": null}), false),
        (json!({"exp": "soon"}), false),
    ];
    for (change, accepted) in cases {
        let r = bearer_subject(&sc, &up, &key.sign(&claims("alice", change.clone())));
        assert_eq!(r.is_ok(), accepted, "{change}: {r:?}");
    }
}

fn jwt_issuer_audience_and_subject_must_fit(proto: Protocol) {
    let up = EchoUpstream::start();
    let key = TestKey::rsa_a("k");
    let (sc, _keys) = with_jwks_file(&up, &[&key], "");
    let sc = sc.over(proto);
    let refused = [
        json!({"iss": "https://evil.test/"}),
        json!({"iss": "https://id.test"}),
        json!({"iss": null}),
        json!({"aud": "someone-else"}),
        json!({"aud": [ "a", "b" ]}),
        json!({"aud": null}),
        json!({"sub": null}),
        json!({"sub": ""}),
        json!({"sub": ["alice"]}),
        json!({"sub": "two\r\nlines"}),
        // A subject may not take a static credential's name (and with it, its sessions).
        json!({"sub": "web"}),
        json!({"sub": "admin"}),
    ];
    for change in refused {
        assert_eq!(
            bearer_subject(&sc, &up, &key.sign(&claims("alice", change.clone()))),
            Err(401),
            "{change}"
        );
    }
    let several = claims("alice", json!({"aud": ["other", AUDIENCE]}));
    assert_eq!(
        bearer_subject(&sc, &up, &key.sign(&several)),
        Ok("alice".into())
    );
}

fn forged_jwts_are_refused(proto: Protocol) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let up = EchoUpstream::start();
    let key = TestKey::rsa_a("rsa-a");
    let (sc, _keys) = with_jwks_file(&up, &[&key], "");
    let sc = sc.over(proto);
    let good = key.sign(&claims("alice", json!({})));
    assert_eq!(bearer_subject(&sc, &up, &good), Ok("alice".into()));
    let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let body = b64(claims("mallory", json!({})));
    let good_sig = good.rsplit('.').next().unwrap();
    let hs256_with_public_key = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("rsa-a".into());
        let secret = jsonwebtoken::EncodingKey::from_secret(&rsa_a_public_pem());
        jsonwebtoken::encode(&h, &claims("mallory", json!({})), &secret).unwrap()
    };
    let parts: Vec<&str> = good.split('.').collect();
    let forged = [
        (
            "alg none",
            format!(
                "{}.{body}.",
                b64(json!({"alg": "none", "typ": "JWT", "kid": "rsa-a"}))
            ),
        ),
        (
            "alg none, real signature",
            format!(
                "{}.{body}.{good_sig}",
                b64(json!({"alg": "none", "kid": "rsa-a"}))
            ),
        ),
        ("HS256 with the RSA public key", hs256_with_public_key),
        (
            "other key under the known kid",
            TestKey::rsa_b("rsa-a").sign(&claims("mallory", json!({}))),
        ),
        (
            "other key without kid",
            TestKey::rsa_b("x").sign_as(None, &claims("mallory", json!({}))),
        ),
        (
            "claims swapped under a valid signature",
            format!("{}.{body}.{}", parts[0], parts[2]),
        ),
        (
            "truncated signature",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                &good_sig[..good_sig.len() - 4]
            ),
        ),
        ("embedded jwk", {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            h.kid = Some("mine".into());
            h.jwk = serde_json::from_value(TestKey::rsa_b("mine").jwk()).ok();
            jsonwebtoken::encode(
                &h,
                &claims("mallory", json!({})),
                &jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!(
                    "../fixtures/jwt/rsa-b.key.pem"
                ))
                .unwrap(),
            )
            .unwrap()
        }),
    ];
    for (what, token) in &forged {
        assert_eq!(bearer_subject(&sc, &up, token), Err(401), "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// Key sets over HTTP

#[test]
fn unknown_kid_refreshes_the_key_set_once_per_cooldown() {
    let up = EchoUpstream::start();
    let (a, b) = (TestKey::rsa_a("a"), TestKey::rsa_b("b"));
    let server = JwksServer::start(&jwks(&[&a]));
    let sc = with_jwks_url(&up, &server.url(), "1h");
    // The refresher's first load at start; a token arriving during it waits for it, and does
    // not count as an unknown-key refresh.
    assert!(eventually(Duration::from_secs(10), || server.hits() >= 1));
    assert_eq!(
        bearer_subject(&sc, &up, &a.sign(&claims("alice", json!({})))),
        Ok("alice".into())
    );
    let before = server.hits();
    // The provider adds key b: the first token naming it loads the new set at once.
    server.answer(200, &jwks(&[&a, &b]));
    assert_eq!(
        bearer_subject(&sc, &up, &b.sign(&claims("bob", json!({})))),
        Ok("bob".into())
    );
    assert_eq!(server.hits(), before + 1);
    // More unknown kids within the cooldown do not reach the provider.
    for kid in ["ghost-1", "ghost-2", "ghost-3"] {
        assert_eq!(
            bearer_subject(&sc, &up, &b.sign_as(Some(kid), &claims("eve", json!({})))),
            Err(401)
        );
    }
    assert_eq!(server.hits(), before + 1);
    // Known keys need no fetch.
    assert_eq!(
        bearer_subject(&sc, &up, &a.sign(&claims("alice", json!({})))),
        Ok("alice".into())
    );
    assert_eq!(server.hits(), before + 1);
}

#[test]
fn key_rotation_through_a_jwks_url_and_outages_keep_the_last_good_set() {
    let up = EchoUpstream::start();
    let (a, b) = (TestKey::rsa_a("2024-a"), TestKey::ec("2025-b"));
    let mut server = JwksServer::start(&jwks(&[&a]));
    let sc = with_jwks_url(&up, &server.url(), "1s");
    let token_a = a.sign(&claims("alice", json!({})));
    let token_b = b.sign(&claims("bob", json!({})));
    assert_eq!(bearer_subject(&sc, &up, &token_a), Ok("alice".into()));
    assert_eq!(
        bearer_subject(&sc, &up, &token_b),
        Err(401),
        "b is not published yet"
    );

    // Rotation: a is removed, b published. After the next refresh a's tokens are refused.
    server.answer(200, &jwks(&[&b]));
    assert!(
        eventually(Duration::from_secs(10), || bearer_subject(
            &sc, &up, &token_a
        )
        .is_err()),
        "the removed key was still accepted"
    );
    assert_eq!(bearer_subject(&sc, &up, &token_b), Ok("bob".into()));

    // Broken answers and a dead server leave the last good set in place.
    for (status, body) in [
        (200, "{ not json"),
        (200, "{\"keys\": []}"),
        (500, "oops"),
        (404, ""),
    ] {
        let hits = server.hits();
        server.answer(status, body);
        assert!(
            eventually(Duration::from_secs(10), || server.hits() > hits + 1),
            "the refresher did not retry"
        );
        assert_eq!(
            bearer_subject(&sc, &up, &token_b),
            Ok("bob".into()),
            "after {status} {body:?}"
        );
        assert_eq!(bearer_subject(&sc, &up, &token_a), Err(401));
    }
    server.stop();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        bearer_subject(&sc, &up, &token_b),
        Ok("bob".into()),
        "with the server down"
    );
}

#[test]
fn a_key_set_that_cannot_be_loaded_at_start_is_not_fatal() {
    let up = EchoUpstream::start();
    let key = TestKey::rsa_a("late");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let sc = with_jwks_url(&up, &url, "1s");
    let token = key.sign(&claims("alice", json!({})));
    assert_eq!(
        bearer_subject(&sc, &up, WEB_TOKEN),
        Ok("web".into()),
        "static tokens work meanwhile"
    );
    assert_eq!(bearer_subject(&sc, &up, &token), Err(401));
    // The provider comes up: the periodic retry picks the set up.
    let _server = JwksServer::start_on(port, &jwks(&[&key]));
    assert!(eventually(Duration::from_secs(15), || bearer_subject(
        &sc, &up, &token
    )
    .is_ok()));

    // The same with a key-set file that appears later.
    let ports = Ports::new(up.port);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later.json");
    let toml = base_config(
        &ports,
        &jwt_table(&format!("jwks_file = \"{}\"", path.display()), "1s"),
    );
    let sc = TestSidecar::start(ports, &toml);
    assert_eq!(bearer_subject(&sc, &up, &token), Err(401));
    std::fs::write(&path, jwks(&[&key])).unwrap();
    assert!(eventually(Duration::from_secs(15), || bearer_subject(
        &sc, &up, &token
    )
    .is_ok()));
}

#[test]
fn reload_keeps_the_key_set_while_its_source_is_unchanged() {
    let up = EchoUpstream::start();
    let key = TestKey::rsa_a("k");
    let first = JwksServer::start(&jwks(&[&key]));
    let ports = Ports::new(up.port);
    let config = |extra: &str| base_config(&ports, extra);
    let jwt_at = |url: &str| jwt_table(&format!("jwks_url = \"{url}\""), "1h");
    let sc = TestSidecar::start(ports, &config(&jwt_at(&first.url())));
    let token = key.sign(&claims("alice", json!({})));
    assert_eq!(bearer_subject(&sc, &up, &token), Ok("alice".into()));
    let jwks_of = |sc: &TestSidecar| sc.state.current().auth.jwks().cloned();
    let before = jwks_of(&sc).expect("jwt configured");
    let hits = first.hits();
    let reload = |text: &str| {
        std::fs::write(sc.config_path(), text).unwrap();
        assert!(session_sidecar::background::reload::Reloader::new(sc.state.clone()).reload());
    };

    // Another credential and another leeway: same source, same key set, no refetch.
    let extra = format!(
        "[[credentials]]\nname = \"late\"\ntoken_sha256 = \"{}\"\n{}",
        sha256_hex("late-token"),
        jwt_at(&first.url()).replace("30s", "10s")
    );
    reload(&config(&extra));
    assert!(
        Arc::ptr_eq(&before, &jwks_of(&sc).unwrap()),
        "the key set was rebuilt"
    );
    assert_eq!(bearer_subject(&sc, &up, &token), Ok("alice".into()));
    assert_eq!(bearer_subject(&sc, &up, "late-token"), Ok("late".into()));
    assert_eq!(
        first.hits(),
        hits,
        "a reload refetched an unchanged key set"
    );

    // Another URL: a new key set, loaded from there.
    let second = JwksServer::start(&jwks(&[&key]));
    reload(&config(&jwt_at(&second.url())));
    assert!(!Arc::ptr_eq(&before, &jwks_of(&sc).unwrap()));
    assert_eq!(bearer_subject(&sc, &up, &token), Ok("alice".into()));
    assert!(second.hits() >= 1);

    // `[jwt]` removed: JWTs are refused, static tokens still work.
    reload(&config(""));
    assert!(jwks_of(&sc).is_none());
    assert_eq!(bearer_subject(&sc, &up, &token), Err(401));
    assert_eq!(bearer_subject(&sc, &up, WEB_TOKEN), Ok("web".into()));
}

#[test]
fn applications_claim_sets_the_credentials_applications() {
    let up = EchoUpstream::start();
    let key = TestKey::rsa_a("k");
    let (sc, _keys) = with_jwks_file(&up, &[&key], "");
    let access = |claims: Value| {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            bearer(&key.sign(&claims)).parse().unwrap(),
        );
        let gen = sc.state.current();
        match block_on(gen.auth.authenticate(&headers)) {
            AuthResult::Valid(c) => Some(c.applications.clone()),
            _ => None,
        }
    };
    let only = |keys: &[&str]| {
        Some(ApplicationAccess::Only(
            keys.iter().map(|k| k.to_string()).collect(),
        ))
    };
    assert_eq!(
        access(claims("a", json!({"apps": [APP_KEY, "other-app"]}))),
        only(&[APP_KEY, "other-app"])
    );
    assert_eq!(
        access(claims("a", json!({"apps": APP_KEY}))),
        only(&[APP_KEY])
    );
    assert_eq!(
        access(claims("a", json!({"apps": ["*"]}))),
        Some(ApplicationAccess::All)
    );
    assert_eq!(
        access(claims("a", json!({}))),
        only(&[]),
        "no claim, no applications"
    );
    assert_eq!(
        access(claims("a", json!({"apps": [1]}))),
        None,
        "a malformed claim refuses the token"
    );
}

#[test]
fn jwt_config_is_validated() {
    let ports = Ports::new(free_port());
    let check = |table: &str| {
        let text = base_config(&ports, table);
        session_sidecar::config::parse(std::path::Path::new("/tmp/c.toml"), &text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(check("[jwt]\njwks_url = \"https://id.example.com/jwks.json\"").is_ok());
    assert!(check("[jwt]\njwks_file = \"jwks.json\"\nalgorithms = [\"EdDSA\", \"PS256\"]").is_ok());
    let refused = [
        ("[jwt]\njwks_file = \"a\"\nalgorithms = [\"none\"]", "none"),
        (
            "[jwt]\njwks_file = \"a\"\nalgorithms = [\"RS256\", \"HS256\"]",
            "HS256",
        ),
        ("[jwt]\njwks_file = \"a\"\nalgorithms = []", "at least one"),
        (
            "[jwt]\njwks_file = \"a\"\njwks_url = \"https://x/\"",
            "exactly one",
        ),
        ("[jwt]\nissuer = \"x\"", "exactly one"),
        ("[jwt]\njwks_url = \"ftp://x/\"", "http"),
        (
            "[jwt]\njwks_file = \"a\"\njwks_refresh = \"0s\"",
            "jwks_refresh",
        ),
        ("[jwt]\njwks_file = \"a\"\nleeway = \"2h\"", "leeway"),
        ("[jwt]\njwks_file = \"a\"\naudience = \"\"", "audience"),
        ("[jwt]\njwks_file = \"a\"\nsecret = \"s\"", "unknown field"),
    ];
    for (table, needle) in refused {
        let e = check(table).expect_err(table);
        assert!(e.contains(needle), "{table}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Isolation (SPEC §3) across credentials of every source

#[test]
fn admin_sessions_are_visible_only_to_admins() {
    let up = EchoUpstream::start();
    let key = TestKey::rsa_a("k");
    let extra = format!(
        "[[credentials]]\nname = \"admin2\"\ntoken_sha256 = \"{}\"\nadmin = true\n",
        sha256_hex("second-admin-token")
    );
    let (sc, _keys) = with_jwks_file(&up, &[&key], &extra);
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        br#"{"customer_id": "c-iso"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let sid = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["owner"], "admin");
    let path = format!("/admin/sessions/{sid}");
    let get = |auth: &str| sc.admin("GET", &path, &[("Authorization", &bearer(auth))], b"");
    assert_eq!(get(ADMIN_TOKEN).status, 200);
    let other_admin = get("second-admin-token");
    assert_eq!(other_admin.status, 200, "admins see every session");
    assert_eq!(other_admin.json()["owner"], "admin");
    // Non-admin credentials of every kind get no admin API at all.
    assert_eq!(get(WEB_TOKEN).status, 403);
    assert_eq!(get(&key.sign(&claims("alice", json!({})))).status, 403);
    let pos = sc.admin(
        "GET",
        &path,
        &[("X-App-Id", POS_APP_ID), ("X-App-Token", POS_TOKEN)],
        b"",
    );
    assert_eq!(pos.status, 403);
    assert_eq!(get("not-a-token").status, 401);
    // A JWT whose subject is the admin's name is refused outright, not treated as the admin.
    assert_eq!(get(&key.sign(&claims("admin", json!({})))).status, 401);
}

fn sessions_of_one_credential_are_invisible_to_another(proto: Protocol) {
    let up = EchoUpstream::start();
    let key = TestKey::rsa_a("k");
    let (sc, _keys) = with_jwks_file(&up, &[&key], "");
    let sc = sc.over(proto);
    let gen = sc.state.current();
    let credential = |auth: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, bearer(auth).parse().unwrap());
        block_on(gen.auth.authenticate(&headers))
            .credential()
            .cloned()
            .expect("valid credential")
    };
    let alice = credential(&key.sign(&claims("alice", json!({}))));
    let bob = credential(&key.sign(&claims("bob", json!({}))));
    let web = credential(WEB_TOKEN);
    let admin = credential(ADMIN_TOKEN);
    let sessions = &gen.sessions;
    block_on(async {
        // A session created by a JWT credential, and one by a static credential.
        let mut mine = sessions.new_session(new_uuid(), Flavor::KnowledgeCenter, Some(&alice.name));
        mine.customer_id = Some("c-alice".into());
        let alice_sid = mine.id.clone();
        sessions.open(mine, None).await.unwrap();
        let theirs = sessions.new_session(new_uuid(), Flavor::KnowledgeCenter, Some(&web.name));
        let web_sid = theirs.id.clone();
        sessions.open(theirs, None).await.unwrap();

        for (sid, owner, others) in [
            (&alice_sid, &alice, [&bob, &web]),
            (&web_sid, &web, [&alice, &bob]),
        ] {
            assert!(sessions.peek(&caller(owner), sid).await.unwrap().is_some());
            assert!(
                sessions.peek(&caller(&admin), sid).await.unwrap().is_some(),
                "admin override"
            );
            for other in others {
                assert!(
                    sessions.peek(&caller(other), sid).await.unwrap().is_none(),
                    "{} saw {}'s session",
                    other.name,
                    owner.name
                );
                assert!(sessions.get(&caller(other), sid).await.unwrap().is_none());
                assert!(sessions
                    .close(&caller(other), sid, EndReason::Closed)
                    .await
                    .unwrap()
                    .is_none());
            }
            assert!(
                sessions.peek(&caller(owner), sid).await.unwrap().is_some(),
                "a refused close changed nothing"
            );
        }
    });

    // Forwarding resolves by id alone (SPEC §12); the app learns who is calling from
    // X-Auth-Subject, the caller's own name whatever the session's owner.
    let r = post_json(
        sc.ports.admin,
        "/admin/sessions",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        &json!({"customer_id": "c-shared"}),
    );
    assert_eq!(r.status, 201);
    let shared = r.json()["id"].as_str().unwrap().to_string();
    let for_path = |auth: String, path: &str| {
        let r = sc.proxy(
            "GET",
            path,
            &[
                ("Authorization", &auth),
                ("X-Session-Id", &shared),
                ("X-Auth-Subject", "alice"),
            ],
            b"",
        );
        assert_eq!(r.status, 200);
        up.received_at(path)[0].clone()
    };
    let rec = for_path(bearer(WEB_TOKEN), "/secure/as-web");
    assert_eq!(rec.header_all("X-Auth-Subject"), vec!["web".to_string()]);
    assert_eq!(
        rec.header_all("X-Customer-Id"),
        vec!["c-shared".to_string()]
    );
    let rec = for_path(
        bearer(&key.sign(&claims("bob", json!({})))),
        "/secure/as-bob",
    );
    assert_eq!(rec.header_all("X-Auth-Subject"), vec!["bob".to_string()]);
    assert_eq!(
        rec.header_all("X-Customer-Id"),
        vec!["c-shared".to_string()]
    );
}

/// The isolation identity of a credential.
fn caller(c: &session_sidecar::auth::Credential) -> Caller<'_> {
    Caller::named(&c.name, c.admin)
}

// ---------------------------------------------------------------------------------------------
// A real process: exact failure counts, and logs without secrets

/// What the tests below ask of a running sidecar process.
trait Probe {
    fn proxy(&self, path: &str, headers: &[(&str, &str)]) -> Response;
    fn admin(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response;
    fn failures(&self, reason: &str) -> f64;
}

impl Probe for SidecarProcess {
    fn proxy(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.ports.proxy, "GET", path, headers, b"")
    }

    fn admin(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.ports.admin, method, path, headers, body)
    }

    fn failures(&self, reason: &str) -> f64 {
        let text = get(self.ports.admin, "/metrics", &[]).text();
        metric_value(&text, "auth_failures_total", &[("reason", reason)])
    }
}

#[test]
fn each_refusal_is_counted_once_and_no_secret_is_logged() {
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let (key, stranger) = (TestKey::rsa_a("live"), TestKey::rsa_b("live"));
    let p = SidecarProcess::start_fresh(
        ports,
        &jwt_table("jwks_file = \"jwks.json\"", "5m"),
        &[("jwks.json", jwks(&[&key]))],
    );

    let valid_jwt = key.sign(&claims("alice", json!({})));
    let expired_jwt = key.sign(&claims("alice", json!({"exp": unix_now() - 3600})));
    let expired_jwt_2 = key.sign(&claims("bob", json!({"exp": unix_now() - 7200})));
    let forged_jwts = [
        stranger.sign(&claims("mallory", json!({}))),
        key.sign(&claims("alice", json!({"iss": "https://evil.test/"}))),
        key.sign(&claims("alice", json!({"aud": "elsewhere"}))),
        key.sign_as(Some("unknown-kid"), &claims("alice", json!({}))),
        key.sign(&claims("web", json!({}))),
        {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = Some("live".into());
            jsonwebtoken::encode(
                &h,
                &claims("mallory", json!({})),
                &jsonwebtoken::EncodingKey::from_secret(&rsa_a_public_pem()),
            )
            .unwrap()
        },
    ];
    let mut expected = [
        ("missing", 0.0),
        ("invalid", 0.0),
        ("expired", 0.0),
        ("forbidden", 0.0),
    ];
    let mut count =
        |reason: &str| expected.iter_mut().find(|(r, _)| *r == reason).unwrap().1 += 1.0;
    let route = |p: &SidecarProcess, headers: &[(&str, &str)], status: u16| {
        let r = p.proxy(&format!("{TOKEN_ROUTE}/{}", new_uuid()), headers);
        assert_eq!(r.status, status, "{headers:?}: {}", r.text());
    };

    // Accepted: nothing counted.
    route(&p, &[("Authorization", &bearer(WEB_TOKEN))], 200);
    route(&p, &[("Authorization", &bearer(&valid_jwt))], 200);
    route(
        &p,
        &[("X-App-Id", POS_APP_ID), ("X-App-Token", POS_TOKEN)],
        200,
    );
    // Refused on the token route.
    route(&p, &[], 401);
    count("missing");
    let wrong_static = [
        format!("{WEB_TOKEN}x"),
        WEB_TOKEN[1..].to_string(),
        WEB_TOKEN.to_ascii_uppercase(),
        ADMIN_TOKEN[..10].to_string(),
    ];
    for t in &wrong_static {
        route(&p, &[("Authorization", &bearer(t))], 401);
        count("invalid");
    }
    route(&p, &[("Authorization", &format!("Basic {WEB_TOKEN}"))], 401);
    count("invalid");
    for pair in [
        vec![("X-App-Id", POS_APP_ID), ("X-App-Token", "wrong-pos-token")],
        vec![("X-App-Id", POS_APP_ID)],
    ] {
        route(&p, &pair, 401);
        count("invalid");
    }
    for t in &forged_jwts {
        route(&p, &[("Authorization", &bearer(t))], 401);
        count("invalid");
    }
    for t in [&expired_jwt, &expired_jwt_2] {
        route(&p, &[("Authorization", &bearer(t))], 401);
        count("expired");
    }
    // On `auth = "none"` routes a bad credential is ignored, not refused: nothing counted.
    assert_eq!(
        p.proxy("/open/x", &[("Authorization", &bearer(&expired_jwt))])
            .status,
        200
    );
    assert_eq!(
        p.proxy("/open/y", &[("Authorization", "Bearer wrong")])
            .status,
        200
    );
    // The admin API.
    assert_eq!(p.admin("GET", "/admin/sessions/x", &[], b"").status, 401);
    count("missing");
    assert_eq!(
        p.admin(
            "GET",
            "/admin/sessions/x",
            &[("Authorization", &bearer(&wrong_static[0]))],
            b""
        )
        .status,
        401
    );
    count("invalid");
    assert_eq!(
        p.admin(
            "GET",
            "/admin/sessions/x",
            &[("Authorization", &bearer(&expired_jwt))],
            b""
        )
        .status,
        401
    );
    count("expired");
    assert_eq!(
        p.admin(
            "GET",
            "/admin/sessions/x",
            &[("Authorization", &bearer(WEB_TOKEN))],
            b""
        )
        .status,
        403
    );
    count("forbidden");
    assert_eq!(
        p.admin(
            "GET",
            "/admin/sessions/x",
            &[("Authorization", &bearer(&valid_jwt))],
            b""
        )
        .status,
        403
    );
    count("forbidden");
    let created = p.admin(
        "POST",
        "/admin/sessions",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        br#"{"customer_id": "c-log"}"#,
    );
    assert_eq!(created.status, 201);
    let sid = created.json()["id"].as_str().unwrap().to_string();
    route(
        &p,
        &[
            ("Authorization", &bearer(&valid_jwt)),
            ("X-Session-Id", &sid),
        ],
        200,
    );

    for (reason, n) in expected {
        assert_eq!(
            p.failures(reason),
            n,
            "auth_failures_total{{reason=\"{reason}\"}}"
        );
    }

    let log = p.stop();
    assert!(
        log.contains("bearer JWT refused: expired"),
        "debug logging was not captured:\n{log}"
    );
    assert!(log.contains("JWKS loaded"), "{log}");
    // Secrets: every token and app token presented, and the signatures of every JWT.
    let mut secrets: Vec<String> = [
        WEB_TOKEN,
        OTHER_TOKEN,
        ADMIN_TOKEN,
        POS_TOKEN,
        "wrong-pos-token",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    secrets.extend(wrong_static.iter().cloned());
    for jwt in [&valid_jwt, &expired_jwt, &expired_jwt_2]
        .into_iter()
        .chain(forged_jwts.iter())
    {
        secrets.push(jwt.clone());
        secrets.push(jwt.rsplit('.').next().unwrap().to_string());
    }
    for secret in &secrets {
        // Any 12 characters in a row would be a leak (prefixes, fragments).
        let chars: Vec<char> = secret.chars().collect();
        for window in chars.windows(12) {
            let fragment: String = window.iter().collect();
            if log.contains(&fragment) {
                let i = log.find(&fragment).unwrap();
                panic!(
                    "the log holds {fragment:?} of a secret: ...{}...",
                    &log[i.saturating_sub(300)..(i + 200).min(log.len())]
                );
            }
        }
    }
    assert!(!log.contains(&sid), "the log holds a full session id");
}

both_protocols!(
    static_bearer_tokens_match_exactly,
    app_id_pairs_need_both_matching_halves,
    basic_credentials_split_at_the_last_colon,
    strip_credentials_globally_and_per_route,
    jwts_of_each_key_type_name_the_caller_on_every_route,
    jwt_time_claims_honour_the_leeway,
    jwt_issuer_audience_and_subject_must_fit,
    forged_jwts_are_refused,
    sessions_of_one_credential_are_invisible_to_another,
);
