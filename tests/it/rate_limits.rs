//! SPEC §6, §12: creation rate limits per credential and per client IP (forwarding per session
//! is covered in forwarding.rs).

use crate::common;

use common::*;
use serde_json::json;

const FLAVORS: &str = "[flavors.knowledge_center]\n[flavors.spreadsheetweb]\n";

fn kc_new(sc: &TestSidecar, token: &str) -> Response {
    sc.proxy(
        "PUT",
        "/gks-server/v1/sessions/new",
        &[("Authorization", &bearer(token))],
        b"",
    )
}

fn creation_per_credential_kc_429_and_swb_200_shape(proto: Protocol) {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(
        &up,
        &format!("{FLAVORS}[rate_limits]\ncreate_per_credential = 5\n"),
    )
    .over(proto);
    let rs: Vec<Response> = (0..20).map(|_| kc_new(&sc, OTHER_TOKEN)).collect();
    let limited: Vec<&Response> = rs.iter().filter(|r| r.status == 429).collect();
    assert!(rs.iter().all(|r| r.status == 200 || r.status == 429));
    assert!(
        up.received().is_empty(),
        "session endpoints are never forwarded"
    );
    assert!(!limited.is_empty() && limited.len() < 20);
    assert_eq!(limited[0].json()["error"], "rate_limited");
    assert!(
        limited[0]
            .header("Retry-After")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        kc_new(&sc, ADMIN_TOKEN).status,
        200,
        "another credential is not limited"
    );
    // Reads are not creations.
    let sid = kc_new(&sc, WEB_TOKEN).json()["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..20 {
        let r = sc.proxy(
            "GET",
            &format!("/gks-server/v1/sessions/{sid}"),
            &[("Authorization", &bearer(WEB_TOKEN))],
            b"",
        );
        assert_eq!(r.status, 200);
    }

    let body = json!({"ApplicationKey": APP_KEY}).to_string();
    let auth = bearer(WEB_TOKEN);
    let opens: Vec<Response> = (0..20)
        .map(|_| {
            sc.proxy(
                "POST",
                "/Api/Applications/OpenDedicatedSession",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            )
        })
        .collect();
    assert!(
        opens.iter().all(|r| r.status == 200),
        "SpreadsheetWEB always answers 200"
    );
    let refused: Vec<serde_json::Value> = opens
        .iter()
        .map(|r| r.json())
        .filter(|b| b["Success"] == false)
        .collect();
    assert!(!refused.is_empty());
    assert_eq!(
        refused[0],
        json!({"SessionId": "00000000-0000-0000-0000-000000000000", "Success": false, "InvalidToken": false, "Messages": ["Too many requests."]})
    );
}

#[test]
fn creation_per_ip() {
    let up = EchoUpstream::start();
    let sc =
        TestSidecar::with_upstream(&up, &format!("{FLAVORS}[rate_limits]\ncreate_per_ip = 4\n"));
    let statuses: Vec<u16> = [
        OTHER_TOKEN,
        WEB_TOKEN,
        ADMIN_TOKEN,
        OTHER_TOKEN,
        WEB_TOKEN,
        ADMIN_TOKEN,
        OTHER_TOKEN,
        WEB_TOKEN,
    ]
    .iter()
    .map(|t| kc_new(&sc, t).status)
    .collect();
    assert!(
        statuses.contains(&429),
        "all credentials share the one client IP's budget: {statuses:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(kc_new(&sc, OTHER_TOKEN).status, 200, "the bucket refills");
}

both_protocols!(creation_per_credential_kc_429_and_swb_200_shape,);
