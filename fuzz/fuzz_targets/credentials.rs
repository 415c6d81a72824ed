//! Credential headers (SPEC §5): Authorization, X-App-Id/X-App-Token and
//! X-Client-Application-Id/X-Client-Token. Fields in that order, separated by 0x1E; empty
//! fields are left out of the request.
#![no_main]

#[path = "fields.rs"]
mod fields;

use libfuzzer_sys::fuzz_target;
use session_sidecar::fuzz_api::Credentials;
use std::sync::OnceLock;

const NAMES: [&str; 5] = [
    "authorization",
    "x-app-id",
    "x-app-token",
    "x-client-application-id",
    "x-client-token",
];

fuzz_target!(|data: &[u8]| {
    static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();
    let credentials = CREDENTIALS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sidecar-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("jwks.json"),
            include_str!("../../tests/fixtures/jwt/public-jwks.json"),
        )
        .expect("jwks");
        Credentials::new(&dir)
    });
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
