//! Credential headers (SPEC §5): Authorization, X-App-Id/X-App-Token and
//! X-Client-Application-Id/X-Client-Token. Fields in that order, separated by 0x1E; empty
//! fields are left out of the request.
#![no_main]

#[path = "fields.rs"]
mod fields;

use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 5] = [
    "authorization",
    "x-app-id",
    "x-app-token",
    "x-client-application-id",
    "x-client-token",
];

fuzz_target!(|data: &[u8]| {
    let credentials = fields::credentials();
    let f = fields::fields(data, NAMES.len());
    let present: Vec<(&'static str, &[u8])> = NAMES
        .iter()
        .zip(f)
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| (*n, v))
        .collect();
    // Only the configured secrets may pass.
    if credentials.check(&present) {
        let auth = present
            .iter()
            .find(|(n, _)| *n == "authorization")
            .map(|(_, v)| *v);
        let pair = |id: &str, token: &str| {
            present
                .iter()
                .any(|(n, v)| *n == id && v.trim_ascii() == b"pos-1")
                && present
                    .iter()
                    .any(|(n, v)| *n == token && v.trim_ascii() == b"pos-token")
        };
        assert!(
            auth.is_some_and(
                |a| a.trim_ascii().len() > 7 && a.trim_ascii()[7..].trim_ascii() == b"web-token"
            ) || pair("x-app-id", "x-app-token")
                || pair("x-client-application-id", "x-client-token"),
            "accepted {present:?}"
        );
    }
});
