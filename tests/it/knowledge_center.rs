//! SPEC §4.2 Knowledge Center sessions: create, read, update, upsert, ids, identity values,
//! credentials, isolation, error shapes, and forwarded calls that carry `?sessionId=`.

use crate::common;

use common::*;
use serde_json::{json, Value};
use session_sidecar::session::Session;
use std::sync::{Arc, Barrier};

const BASE: &str = "/gks-server/v1";
const FIELDS: [&str; 8] = [
    "sessionId",
    "customerId",
    "agentId",
    "visitId",
    "globalVisitId",
    "tenantId",
    "createdAt",
    "expiresAt",
];

fn start_with(up: &EchoUpstream, flavor: &str, extra: &str) -> TestSidecar {
    TestSidecar::with_upstream(
        up,
        &format!("[flavors.knowledge_center]\n{flavor}\n{extra}"),
    )
}

fn start(up: &EchoUpstream) -> TestSidecar {
    start_with(up, "", "")
}

/// Every live session in the sidecar's store (to prove that refused requests stored nothing).
fn stored(sc: &TestSidecar) -> Vec<Session> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(sc.state.store().all_sessions()).unwrap()
}

struct Call<'a> {
    token: Option<&'a str>,
    customer: Option<&'a str>,
    agent: Option<&'a str>,
    body: Option<Value>,
    query: &'a str,
}

impl Default for Call<'_> {
    fn default() -> Self {
        Call {
            token: Some(WEB_TOKEN),
            customer: None,
            agent: None,
            body: None,
            query: "",
        }
    }
}

impl Call<'_> {
    fn send(&self, sc: &TestSidecar, method: &str, path: &str) -> Response {
        let auth = self.token.map(bearer);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        headers.extend(auth.as_deref().map(|a| ("Authorization", a)));
        headers.extend(self.customer.map(|c| ("gkc_customerId", c)));
        headers.extend(self.agent.map(|a| ("gkc_agentId", a)));
        let body = self.body.as_ref().map(Value::to_string).unwrap_or_default();
        if self.body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        sc.proxy(
            method,
            &format!("{BASE}{path}{}", self.query),
            &headers,
            body.as_bytes(),
        )
    }
}

fn new_session(sc: &TestSidecar, call: &Call) -> Value {
    let r = call.send(sc, "PUT", "/sessions/new");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_info_shape(&r);
    r.json()
}

fn get_session(sc: &TestSidecar, token: &str, encoded_id: &str) -> Response {
    sc.proxy_get(
        &format!("{BASE}/sessions/{encoded_id}"),
        &[("Authorization", &bearer(token))],
    )
}

/// The SessionInfo fields, exactly and in order, with RFC 3339 UTC times.
fn assert_info_shape(r: &Response) {
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let text = r.text();
    let positions: Vec<usize> = FIELDS
        .iter()
        .map(|f| {
            text.find(&format!("\"{f}\":"))
                .unwrap_or_else(|| panic!("{f} missing in {text}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "field order: {text}"
    );
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), FIELDS.len(), "{text}");
    for t in ["createdAt", "expiresAt"] {
        let s = v[t].as_str().unwrap();
        assert!(
            s.len() == 24 && s.ends_with('Z') && &s[10..11] == "T",
            "{t}: {s}"
        );
    }
}

fn assert_error(r: &Response, status: u16, description: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 2, "{}", r.text());
    assert_eq!(v["code"], status);
    let d = v["description"].as_str().unwrap();
    assert!(!d.is_empty());
    if let Some(want) = description {
        assert_eq!(d, want);
    }
}

/// One of our RFC 3339 UTC times (`2026-01-02T03:04:05.678Z`) as milliseconds since a fixed
/// origin: enough to subtract two of them.
fn millis(t: &str) -> i64 {
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, ms) = time.split_once('.').unwrap();
    let h: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from a civil date (proleptic Gregorian), enough for differences.
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * m + 2) / 5 + d[2];
    ((days * 24 + h[0]) * 60 + h[1]) * 60_000 + h[2] * 1000 + ms.parse::<i64>().unwrap()
}

fn create_with_identity_then_read(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let call = Call {
        customer: Some("cust-1"),
        agent: Some("agent-1"),
        body: Some(json!({"visitId": "visit-1", "globalVisitId": "gv-1"})),
        query: "?tenantId=tenant%2B1",
        ..Call::default()
    };
    let info = new_session(&sc, &call);
    let id = info["sessionId"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4", "UUIDv4");
    assert_eq!(
        (
            &info["customerId"],
            &info["agentId"],
            &info["visitId"],
            &info["globalVisitId"],
            &info["tenantId"]
        ),
        (
            &json!("cust-1"),
            &json!("agent-1"),
            &json!("visit-1"),
            &json!("gv-1"),
            &json!("tenant+1")
        )
    );
    let span =
        millis(info["expiresAt"].as_str().unwrap()) - millis(info["createdAt"].as_str().unwrap());
    assert_eq!(span, 30 * 60 * 1000, "expiresAt = createdAt + idle_timeout");
    let r = get_session(&sc, WEB_TOKEN, &id);
    assert_eq!(r.status, 200);
    assert_info_shape(&r);
    let got = r.json();
    for f in &FIELDS[..7] {
        assert_eq!(got[f], info[f], "{f}");
    }
    let stored = stored(&sc);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].owner.as_deref(), Some("web"));
    assert!(
        up.received().is_empty(),
        "session endpoints are never forwarded"
    );
}

fn create_without_identity(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    for body in [
        None,
        Some(json!({})),
        Some(json!({"visitId": null, "unrelated": [1, {"x": 2}]})),
    ] {
        let info = new_session(
            &sc,
            &Call {
                body,
                ..Call::default()
            },
        );
        for f in [
            "customerId",
            "agentId",
            "visitId",
            "globalVisitId",
            "tenantId",
        ] {
            assert_eq!(info[f], Value::Null, "{f}");
        }
    }
}

fn post_changes_only_the_values_present(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let info = new_session(
        &sc,
        &Call {
            customer: Some("c1"),
            agent: Some("a1"),
            body: Some(json!({"visitId": "v1", "globalVisitId": "g1"})),
            query: "?tenantId=t1",
            ..Call::default()
        },
    );
    let id = info["sessionId"].as_str().unwrap();
    let update = Call {
        agent: Some("a2"),
        body: Some(json!({"visitId": "v2"})),
        ..Call::default()
    };
    let r = update.send(&sc, "POST", &format!("/sessions/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_info_shape(&r);
    let expected = json!({"sessionId": id, "customerId": "c1", "agentId": "a2", "visitId": "v2", "globalVisitId": "g1", "tenantId": "t1"});
    for v in [r.json(), get_session(&sc, WEB_TOKEN, id).json()] {
        for (k, want) in expected.as_object().unwrap() {
            assert_eq!(&v[k], want, "{k}");
        }
        assert_eq!(v["createdAt"], info["createdAt"]);
    }
    // An empty POST changes nothing.
    let r = Call::default().send(&sc, "POST", &format!("/sessions/{id}"));
    assert_eq!(r.json()["agentId"], "a2");
}

fn post_to_an_unknown_id_creates_it(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let call = Call {
        customer: Some("c-up"),
        body: Some(json!({"visitId": "v-up"})),
        ..Call::default()
    };
    for (encoded, id) in [
        ("my-own.id_1~x", "my-own.id_1~x"),
        ("a%2Bb%2Fc%3D", "a+b/c="),
        ("Conf.K_c~1+2=3-", "Conf.K_c~1+2=3-"),
    ] {
        let r = call.send(&sc, "POST", &format!("/sessions/{encoded}"));
        assert_eq!(r.status, 200, "{encoded}: {}", r.text());
        assert_info_shape(&r);
        assert_eq!(r.json()["sessionId"], id);
        assert_eq!(r.json()["customerId"], "c-up");
        let r = get_session(&sc, WEB_TOKEN, encoded);
        assert_eq!(r.json()["sessionId"], id, "{encoded}");
    }
    let long = "b".repeat(256);
    assert_eq!(
        call.send(&sc, "POST", &format!("/sessions/{long}")).status,
        200,
        "256 characters are fine"
    );
}

fn post_to_an_unknown_id_without_client_ids_is_404(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start_with(&up, "allow_client_ids = false", "").over(proto);
    let r = Call {
        customer: Some("c"),
        ..Call::default()
    }
    .send(&sc, "POST", "/sessions/chosen-by-client");
    assert_error(&r, 404, Some("Session not found"));
    assert!(stored(&sc).is_empty());
    // Existing sessions are still updated.
    let id = new_session(&sc, &Call::default())["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = Call {
        customer: Some("c"),
        ..Call::default()
    }
    .send(&sc, "POST", &format!("/sessions/{id}"));
    assert_eq!(r.json()["customerId"], "c");
}

fn bad_ids_are_400(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let too_long = "a".repeat(257);
    for encoded in [
        "conf!bad",
        "conf*bad",
        "conf%20bad",
        "a%0D%0Ab",
        "%ff",
        "caf%C3%A9",
        too_long.as_str(),
        "",
    ] {
        let r = Call {
            customer: Some("c"),
            ..Call::default()
        }
        .send(&sc, "POST", &format!("/sessions/{encoded}"));
        assert_error(&r, 400, None);
        assert_error(&get_session(&sc, WEB_TOKEN, encoded), 400, None);
    }
    assert!(stored(&sc).is_empty());
}

fn control_characters_in_values_are_refused_and_nothing_is_stored(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let crlf_body = Call {
        body: Some(json!({"visitId": "v1\r\nX-Customer-Id: evil"})),
        ..Call::default()
    };
    let tab_header = Call {
        customer: Some("a\tb"),
        ..Call::default()
    };
    let crlf_tenant = Call {
        query: "?tenantId=t%0D%0AX-Evil:%201",
        ..Call::default()
    };
    let nul_body = Call {
        body: Some(json!({"globalVisitId": "g\u{0}"})),
        ..Call::default()
    };
    let space_agent = Call {
        agent: Some("two words"),
        ..Call::default()
    };
    for call in [
        &crlf_body,
        &tab_header,
        &crlf_tenant,
        &nul_body,
        &space_agent,
    ] {
        assert_error(&call.send(&sc, "POST", "/sessions/conf-crlf-1"), 400, None);
        assert_error(&call.send(&sc, "PUT", "/sessions/new"), 400, None);
    }
    assert_error(
        &get_session(&sc, WEB_TOKEN, "conf-crlf-1"),
        404,
        Some("Session not found"),
    );
    assert!(stored(&sc).is_empty());
    // A refused update leaves an existing session as it was.
    let id = new_session(
        &sc,
        &Call {
            customer: Some("kept"),
            ..Call::default()
        },
    )["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = Call {
        customer: Some("new"),
        body: Some(json!({"visitId": "v\n"})),
        ..Call::default()
    };
    assert_error(
        &bad.send(&sc, "POST", &format!("/sessions/{id}")),
        400,
        None,
    );
    assert_eq!(
        get_session(&sc, WEB_TOKEN, &id).json()["customerId"],
        "kept"
    );
}

fn malformed_input_is_400(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let auth = bearer(WEB_TOKEN);
    let bodies: [&[u8]; 5] = [
        b"{\"visitId\": ",
        b"[]",
        b"\"v\"",
        b"{\"visitId\": 5}",
        b"{\"globalVisitId\": {\"a\": 1}}",
    ];
    for body in bodies {
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        let r = sc.proxy("PUT", &format!("{BASE}/sessions/new"), &headers, body);
        assert_error(&r, 400, None);
    }
    // The same identity header twice is ambiguous.
    let headers = [
        ("Authorization", auth.as_str()),
        ("gkc_customerId", "a"),
        ("gkc_customerId", "b"),
    ];
    assert_error(
        &sc.proxy("PUT", &format!("{BASE}/sessions/new"), &headers, b""),
        400,
        None,
    );
    assert!(stored(&sc).is_empty());
}

fn token_auth(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let id = new_session(&sc, &Call::default())["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    for token in [None, Some("not-a-configured-token")] {
        let call = Call {
            token,
            customer: Some("c"),
            ..Call::default()
        };
        for (method, path) in [
            ("PUT", "/sessions/new".to_string()),
            ("GET", format!("/sessions/{id}")),
            ("POST", format!("/sessions/{id}")),
        ] {
            let r = call.send(&sc, method, &path);
            assert_error(&r, 401, None);
            assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
        }
    }
    // A malformed Authorization header is a bad credential too.
    let r = sc.proxy(
        "GET",
        &format!("{BASE}/sessions/{id}"),
        &[("Authorization", "Basic abc")],
        b"",
    );
    assert_error(&r, 401, None);
    assert_eq!(stored(&sc).len(), 1);
    assert_eq!(
        get_session(&sc, WEB_TOKEN, &id).json()["customerId"],
        Value::Null,
        "refused POSTs changed nothing"
    );
}

fn auth_none_opens_the_endpoints(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start_with(&up, "auth = \"none\"", "").over(proto);
    let anonymous = Call {
        token: None,
        customer: Some("c"),
        ..Call::default()
    };
    let id = new_session(&sc, &anonymous)["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = sc.proxy_get(&format!("{BASE}/sessions/{id}"), &[]);
    assert_eq!(r.json()["customerId"], "c");
    // A refused credential is ignored (as on auth = "none" routes); a valid one names the owner.
    let bad = Call {
        token: Some("not-a-configured-token"),
        ..Call::default()
    };
    assert_eq!(bad.send(&sc, "GET", &format!("/sessions/{id}")).status, 200);
    let owned = new_session(&sc, &Call::default())["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = sc.proxy_get(&format!("{BASE}/sessions/{owned}"), &[]);
    assert_error(&r, 404, Some("Session not found"));
}

fn isolation_between_credentials(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let id = new_session(
        &sc,
        &Call {
            customer: Some("owner-cust"),
            ..Call::default()
        },
    )["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_error(
        &get_session(&sc, OTHER_TOKEN, &id),
        404,
        Some("Session not found"),
    );
    let takeover = Call {
        token: Some(OTHER_TOKEN),
        customer: Some("evil"),
        ..Call::default()
    };
    let r = takeover.send(&sc, "POST", &format!("/sessions/{id}"));
    assert_eq!(r.status, 409);
    assert_eq!(
        r.text(),
        r#"{"code":409,"description":"Session id is taken"}"#
    );
    assert_eq!(
        get_session(&sc, WEB_TOKEN, &id).json()["customerId"],
        "owner-cust",
        "nothing changed"
    );
    // An admin credential sees and may update every session.
    assert_eq!(
        get_session(&sc, ADMIN_TOKEN, &id).json()["customerId"],
        "owner-cust"
    );
    let r = Call {
        token: Some(ADMIN_TOKEN),
        agent: Some("supervisor"),
        ..Call::default()
    }
    .send(&sc, "POST", &format!("/sessions/{id}"));
    assert_eq!(r.json()["agentId"], "supervisor");
    assert_eq!(
        stored(&sc)[0].owner.as_deref(),
        Some("web"),
        "the owner stays"
    );
}

fn other_apis_sessions_are_not_kc_sessions(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start_with(&up, "", "[flavors.spreadsheetweb]\n").over(proto);
    let auth = bearer(WEB_TOKEN);
    let open = "/Api/Applications/OpenDedicatedSession";
    let r = sc.proxy_json(
        open,
        &[("Authorization", &auth)],
        &json!({"ApplicationKey": APP_KEY}),
    );
    let sid = r.json()["SessionId"].as_str().unwrap().to_string();
    assert_error(
        &get_session(&sc, WEB_TOKEN, &sid),
        404,
        Some("Session not found"),
    );
    let r = Call {
        customer: Some("c"),
        ..Call::default()
    }
    .send(&sc, "POST", &format!("/sessions/{sid}"));
    assert_error(&r, 409, Some("Session id is taken"));
    let s = stored(&sc).into_iter().find(|s| *s.id == *sid).unwrap();
    assert_eq!(s.customer_id, None);
}

fn reading_extends_the_idle_expiry(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_manual_clock(&up, "[flavors.knowledge_center]\n").over(proto);
    let info = new_session(&sc, &Call::default());
    let id = info["sessionId"].as_str().unwrap();
    sc.advance(std::time::Duration::from_millis(1100));
    let later = get_session(&sc, WEB_TOKEN, id).json();
    let moved =
        millis(later["expiresAt"].as_str().unwrap()) - millis(info["expiresAt"].as_str().unwrap());
    assert_eq!(moved, 1100, "expiresAt moves with the read");
    assert_eq!(later["createdAt"], info["createdAt"]);
}

fn unknown_methods_are_405_and_not_forwarded(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let id = new_session(&sc, &Call::default())["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    for (method, path, allow) in [
        ("PATCH", format!("/sessions/{id}"), "GET, POST"),
        ("DELETE", format!("/sessions/{id}"), "GET, POST"),
        ("PUT", format!("/sessions/{id}"), "GET, POST"),
        ("GET", "/sessions/new".to_string(), "PUT"),
        ("POST", "/sessions/new".to_string(), "PUT"),
    ] {
        let r = Call {
            body: Some(json!({})),
            ..Call::default()
        }
        .send(&sc, method, &path);
        assert_error(&r, 405, None);
        assert_eq!(r.header("Allow"), Some(allow), "{method} {path}");
    }
    assert!(up.received().is_empty());
    assert_eq!(stored(&sc).len(), 1);
}

fn oversize_body_is_413(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let big = Call {
        body: Some(json!({"visitId": "v".repeat(70 * 1024)})),
        ..Call::default()
    };
    assert_error(&big.send(&sc, "PUT", "/sessions/new"), 413, None);
    assert_error(&big.send(&sc, "POST", "/sessions/big-one"), 413, None);
    assert!(stored(&sc).is_empty());
    assert!(up.received().is_empty());
}

fn forwarded_calls_find_the_session_by_query(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start(&up).over(proto);
    let call = Call {
        customer: Some("cust-q"),
        agent: Some("agent-q"),
        body: Some(json!({"visitId": "visit-q", "globalVisitId": "gv-q"})),
        ..Call::default()
    };
    let id = new_session(&sc, &call)["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("{BASE}/kbs/kb1/search?q=ticket&sessionId={id}&size=5");
    let r = sc.proxy_get(&path, &[]);
    assert_eq!(r.status, 200, "forwarded");
    let rec = up.received_at(&format!("{BASE}/kbs/")).pop().unwrap();
    for (h, v) in [
        ("X-Session-Id", id.as_str()),
        ("X-Customer-Id", "cust-q"),
        ("X-Agent-Id", "agent-q"),
        ("X-Visit-Id", "visit-q"),
        ("X-Global-Visit-Id", "gv-q"),
    ] {
        assert_eq!(rec.header_all(h), vec![v.to_string()], "{h}");
    }
    assert!(
        rec.query.contains(&format!("sessionId={id}")),
        "the query is forwarded as sent"
    );
    // Paths beside the session endpoints are the app's.
    for p in ["/sessions", "/sessions/x/y", "/sessionsx/1"] {
        assert_eq!(sc.proxy_get(&format!("{BASE}{p}"), &[]).status, 200);
        assert_eq!(
            up.received_at(&format!("{BASE}{p}")).len(),
            1,
            "{p} forwarded"
        );
    }
}

fn base_path_is_configurable(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = start_with(&up, "base_path = \"/kc\"", "").over(proto);
    let r = Call::default().send(&sc, "PUT", "/sessions/new");
    assert_eq!(r.status, 200, "the default base is forwarded now");
    assert_eq!(up.received().len(), 1);
    let auth = bearer(WEB_TOKEN);
    let r = sc.proxy("PUT", "/kc/sessions/new", &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200);
    assert_info_shape(&r);
    assert_eq!(up.received().len(), 1);
}

fn concurrent_upserts_of_one_new_id(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = Arc::new(start(&up).over(proto));
    let n = 10;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (sc, barrier) = (sc.clone(), barrier.clone());
            std::thread::spawn(move || {
                let agent = format!("agent-{i}");
                barrier.wait();
                Call {
                    agent: Some(&agent),
                    ..Call::default()
                }
                .send(&sc, "POST", "/sessions/raced-id")
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["sessionId"], "raced-id");
    }
    assert_eq!(stored(&sc).len(), 1);
}

both_protocols!(
    create_with_identity_then_read,
    create_without_identity,
    post_changes_only_the_values_present,
    post_to_an_unknown_id_creates_it,
    post_to_an_unknown_id_without_client_ids_is_404,
    bad_ids_are_400,
    control_characters_in_values_are_refused_and_nothing_is_stored,
    malformed_input_is_400,
    token_auth,
    auth_none_opens_the_endpoints,
    isolation_between_credentials,
    other_apis_sessions_are_not_kc_sessions,
    reading_extends_the_idle_expiry,
    unknown_methods_are_405_and_not_forwarded,
    oversize_body_is_413,
    forwarded_calls_find_the_session_by_query,
    base_path_is_configurable,
    concurrent_upserts_of_one_new_id,
);
