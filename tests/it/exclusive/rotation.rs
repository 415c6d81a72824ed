//! `sessions_rotated_total` and `sessions_ended_total{reason="rotated"}` move once per
//! rotation at login (SPEC §13.2), not for a failed login or an id already rotated away.

use crate::common::*;
use crate::rotation::{cookie, form, login_app, planted_session, FORM, PASSWORD};
use std::time::Duration;

#[test]
fn each_rotation_is_counted_once() {
    let up = login_app();
    let sc = TestSidecar::with_manual_clock(&up, "");
    let rotated = || sc.metric("sessions_rotated_total", &[]);
    let ended = || sc.metric("sessions_ended_total", &[("reason", "rotated")]);
    let (rotated0, ended0) = (rotated(), ended());
    let old = planted_session(sc.ports.admin);
    let login = |password: &str| {
        sc.proxy(
            "POST",
            "/login",
            &[("Cookie", &cookie(&old)), FORM],
            &form("frank", password),
        )
    };
    assert_eq!(login("nope").status, 401);
    assert_eq!((rotated(), ended()), (rotated0, ended0), "a failed login");
    assert_eq!(login(PASSWORD).status, 200);
    assert_eq!((rotated(), ended()), (rotated0 + 1.0, ended0 + 1.0));
    // Again on the old id, during the grace: the client learns the same id, nothing rotates.
    assert_eq!(login(PASSWORD).status, 200);
    sc.advance(Duration::from_secs(11));
    assert_eq!((rotated(), ended()), (rotated0 + 1.0, ended0 + 1.0));
}
