//! Issue 16 item 5, the metric side of the admin listener's failure limit: every real
//! authentication failure counts in `auth_failures_total` under its own reason, and an attempt
//! refused for too many failures counts under none (its credential is never evaluated, and
//! SPEC §8 closes the reasons at missing/invalid/expired/forbidden). Exact deltas of a
//! process-wide registry, hence `exclusive`.

use crate::common;

use common::*;

#[test]
fn admin_failures_count_under_their_reason_and_refused_attempts_under_none() {
    let up = EchoUpstream::start();
    // One failure back every 15 s: the address stays refused for the rest of the test.
    let sc = TestSidecar::with_server_keys(&up, "admin_auth_failures_per_minute = 4", "");
    let reasons = ["missing", "invalid", "expired", "forbidden"];
    let counts = || -> Vec<f64> {
        reasons
            .iter()
            .map(|r| sc.metric("auth_failures_total", &[("reason", r)]))
            .collect()
    };
    let before = counts();
    let path = "/admin/sessions/x";
    let (admin, web) = (bearer(ADMIN_TOKEN), bearer(WEB_TOKEN));
    let from_a = |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        sc.admin_from([127, 0, 0, 1], "GET", path, &headers, b"")
    };
    // A valid non-admin credential: 403, counted as forbidden, not against the budget.
    assert_eq!(from_a(Some(&web)).status, 403);
    // The budget of four: two missing, two invalid.
    for auth in [None, Some("Bearer guess-1"), None, Some("Bearer guess-2")] {
        assert_eq!(from_a(auth).status, 401, "{auth:?}");
    }
    // Refused unseen: the right token, a wrong one, none, a non-admin one.
    for auth in [
        Some(admin.as_str()),
        Some("Bearer guess-3"),
        None,
        Some(&web),
    ] {
        assert_eq!(from_a(auth).status, 429, "{auth:?}");
    }
    let deltas: Vec<f64> = counts().iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        deltas,
        vec![2.0, 2.0, 0.0, 1.0],
        "missing, invalid, expired, forbidden"
    );
}
