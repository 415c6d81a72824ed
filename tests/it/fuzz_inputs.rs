//! Every fuzz seed (fuzz/seeds/TARGET/*) and every input a fuzzer ever crashed on
//! (fuzz/regressions/TARGET/*) through the same `fuzz_api` calls the targets make, on the
//! stable toolchain in every `make test`: a fixed crash stays fixed.

#[path = "../../fuzz/fuzz_targets/fields.rs"]
mod fields;

use session_sidecar::fuzz_api::{self, Credentials, Framing};
use std::path::{Path, PathBuf};

/// Files of `fuzz/{seeds,regressions}/target`.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = Path::new("fuzz").join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.expect("dir entry").path();
            let data = std::fs::read(&path).expect("input");
            out.push((path, data));
        }
    }
    out
}

fn credentials() -> (tempfile::TempDir, Credentials) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        "tests/fixtures/jwt/public-jwks.json",
        dir.path().join("jwks.json"),
    )
    .expect("jwks");
    let c = Credentials::new(dir.path());
    (dir, c)
}

#[test]
fn seeds_exist_for_every_target() {
    for target in [
        "framing",
        "spreadsheetweb_body",
        "knowledge_center",
        "tessitura_body",
        "voucherify_body",
        "locators",
        "credentials",
        "jwt",
        "config_file",
    ] {
        assert!(!inputs(target).is_empty(), "no seeds for {target}");
    }
}

#[test]
fn framing_inputs() {
    let framing = Framing::default();
    for (path, data) in inputs("framing") {
        let verdict = framing.verdict(&data);
        if verdict == Some(0) {
            fields::assert_unambiguous(&data);
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The seeds named after smuggling shapes must be refused, by pingora or the sidecar.
        if ["cl_te", "te_te", "cl_list"].contains(&name) {
            assert_ne!(verdict, Some(0), "{path:?} was accepted");
        }
        if name == "get" {
            assert_eq!(verdict, Some(0), "{path:?}");
        }
    }
}

#[test]
fn body_and_locator_inputs() {
    for (_, data) in inputs("spreadsheetweb_body") {
        fuzz_api::spreadsheetweb_body(&data);
    }
    for (_, data) in inputs("knowledge_center") {
        let f = fields::fields(&data, 4);
        fuzz_api::knowledge_center(f[0], f[1], fields::text(f[2]), f[3]);
    }
    for (_, data) in inputs("tessitura_body") {
        if let Some((media, body)) = data.split_first() {
            fuzz_api::tessitura_body(*media, body);
        }
    }
    for (_, data) in inputs("voucherify_body") {
        let f = fields::fields(&data, 2);
        let code = (!f[0].is_empty()).then(|| fields::text(f[0]));
        fuzz_api::voucherify_body(code, f[1]);
    }
    for (_, data) in inputs("locators") {
        let f = fields::fields(&data, 4);
        fuzz_api::locators(f[0], fields::text(f[1]), fields::text(f[2]), f[3]);
    }
    for (_, data) in inputs("config_file") {
        if let Ok(text) = std::str::from_utf8(&data) {
            fuzz_api::config_file(text);
        }
    }
}

/// The config fuzz target hung on DNS: a fuzzed `upstreams.app.address = "924.0.0.1:3000"` went
/// to the system resolver on every run. The target now resolves offline, so that input gets as
/// far as a well-formed name does, and no lookup decides the outcome.
#[test]
fn config_fuzz_target_never_looks_up_host_names() {
    let input = std::fs::read_to_string(
        "fuzz/regressions/config_file/timeout-dns-lookup-of-fuzzed-upstream-host",
    )
    .expect("regression input");
    assert!(input.contains("\"924.0.0.1:3000\""));
    let outcome = session_sidecar::config::parse_with(
        Path::new("/nonexistent/fuzz.toml"),
        &input,
        session_sidecar::config::Resolver::Offline,
    );
    if let Err(e) = outcome {
        assert!(
            !e.message.contains("cannot resolve"),
            "the offline resolver refused a well-formed host name: {e}"
        );
    }
}

#[test]
fn credential_inputs() {
    let (_dir, creds) = credentials();
    let names = [
        "authorization",
        "x-app-id",
        "x-app-token",
        "x-client-application-id",
        "x-client-token",
    ];
    let mut accepted = Vec::new();
    for (path, data) in inputs("credentials") {
        let f = fields::fields(&data, names.len());
        let present: Vec<(&'static str, &[u8])> = names
            .iter()
            .zip(f)
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (*n, v))
            .collect();
        if creds.check(&present) {
            accepted.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    accepted.sort();
    // The seeds holding the configured secrets pass; the half pair does not.
    assert_eq!(accepted, ["app_pair", "bearer", "client_pair"]);
    for (path, data) in inputs("jwt") {
        let mut raw = b"Bearer ".to_vec();
        raw.extend_from_slice(&data);
        assert!(!creds.check(&[("authorization", &raw)]), "{path:?}");
    }
}
