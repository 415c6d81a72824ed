//! SPEC §2 and §9: the config file format, its validation and positioned errors, and the CLI.

use crate::common;

use common::*;
use session_sidecar::config;
use std::path::Path;
use std::process::{Command, Stdio};

fn base() -> String {
    base_config(
        &Ports {
            proxy: 18080,
            admin: 19091,
            upstream: 13000,
            dead: 13001,
        },
        "",
    )
}

/// Parses `text` and returns the error's (line, message); panics if it parses.
fn error_at(text: &str) -> (usize, String) {
    let e = config::parse(Path::new("test.toml"), text).expect_err("config should be refused");
    let (line, col) = e.position.unwrap_or_else(|| panic!("no position in {e}"));
    assert!(col >= 1);
    (line, e.message)
}

/// 1-based line of the first line starting with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(prefix))
        .expect("line present")
        + 1
}

fn insert_after(text: &str, header: &str, line: &str) -> String {
    text.replacen(&format!("{header}\n"), &format!("{header}\n{line}\n"), 1)
}

#[test]
fn example_config_is_valid_and_documents_every_section() {
    let text = std::fs::read_to_string("config.toml.example").unwrap();
    let c = config::parse(Path::new("config.toml.example"), &text)
        .expect("config.toml.example must validate");
    assert_eq!(c.server.threads, 2);
    assert!(c.flavors.spreadsheetweb.is_some() && c.flavors.voucherify.is_some());
    for section in [
        "[server]",
        "[upstreams.app]",
        "[proxy]",
        "[[routes]]",
        "[sessions]",
        "[sessions.locate]",
        "[identity_headers]",
        "[rate_limits]",
        "[store]",
        "[store.redis]",
        "[[credentials]]",
        "[jwt]",
        "[[applications]]",
        "[flavors.spreadsheetweb]",
        "[flavors.knowledge_center]",
        "[flavors.tessitura]",
        "[flavors.voucherify]",
        "[[flavors.voucherify.limits]]",
    ] {
        assert!(
            text.contains(section),
            "config.toml.example does not document {section}"
        );
    }
}

#[test]
fn defaults_apply_to_a_minimal_file() {
    let c = config::parse(
        Path::new("min.toml"),
        "[upstreams.app]\naddress = \"127.0.0.1:3000\"\n",
    )
    .unwrap();
    assert_eq!(c.sessions.idle_timeout.as_secs(), 1800);
    assert_eq!(c.sessions.absolute_timeout.as_secs(), 12 * 3600);
    assert_eq!(c.server.max_body, 64 * 1024);
    assert!(c.sessions.isolate_by_credential);
    assert_eq!(&*c.routes.default.upstream, "app");
    assert_eq!(c.server.admin_auth_failures_per_minute, 20);
}

#[test]
fn unknown_keys_are_errors_at_their_line() {
    let b = base();
    for (header, key) in [
        ("[server]", "bogus_top = 1"),
        ("[sessions.locate]", "bogus_nested = 1"),
        ("[[routes]]", "weight = 3"),
    ] {
        let text = insert_after(&b, header, key);
        let (line, msg) = error_at(&text);
        assert_eq!(line, line_of(&text, key), "{key}: {msg}");
        assert!(msg.contains(key.split(' ').next().unwrap()), "{msg}");
    }
    let text = format!("{b}\nbogus_root = 1\n");
    assert_eq!(error_at(&text).0, line_of(&text, "bogus_root"));
}

#[test]
fn bad_values_are_errors_at_their_line() {
    let b = base();
    for (from, to) in [
        ("grace_period = \"1s\"", "grace_period = \"two seconds\""),
        ("threads = 2", "threads = \"two\""),
        ("max_body = \"64KiB\"", "max_body = \"64 parsecs\""),
        (
            "default_session = \"optional\"",
            "default_session = \"sometimes\"",
        ),
    ] {
        let text = b.replacen(from, to, 1);
        let (line, msg) = error_at(&text);
        assert_eq!(
            line,
            line_of(&text, to.split(' ').next().unwrap()),
            "{to}: {msg}"
        );
    }
    for (table, bad, key) in [
        ("access_log", "sample_ratio = 1.5", "sample_ratio"),
        ("access_log", "path = \"\"", "path"),
        ("access_log", "format = \"xml\"", "format"),
        ("tracing", "sample_ratio = -0.1", "sample_ratio"),
        (
            "tracing",
            "otlp_endpoint = \"collector:4318\"",
            "otlp_endpoint",
        ),
    ] {
        let text = format!("{b}\n[{table}]\n{bad}\n");
        let (line, msg) = error_at(&text);
        assert_eq!(line, line_of(&text, bad), "[{table}] {bad}: {msg}");
        assert!(msg.contains(key) || msg.contains("variant"), "{msg}");
    }
    for bad in [
        "admin_auth_failures_per_minute = -1",
        "admin_auth_failures_per_minute = \"10/min\"",
        "admin_auth_failures_per_minute = 4294967296",
    ] {
        let text = insert_after(&b, "[server]", bad);
        let (line, msg) = error_at(&text);
        assert_eq!(
            line,
            line_of(&text, "admin_auth_failures_per_minute"),
            "{bad}: {msg}"
        );
    }
}

#[test]
fn syntax_errors_have_positions() {
    let text = base().replacen("[proxy]", "[proxy", 1);
    assert_eq!(error_at(&text).0, line_of(&text, "[proxy"));
}

#[test]
fn semantic_errors_point_at_the_offending_key() {
    let b = base();
    let text = b.replacen("upstream = \"slow\"", "upstream = \"nope\"", 1);
    let (line, msg) = error_at(&text);
    assert_eq!(line, line_of(&text, "upstream = \"nope\""));
    assert!(msg.contains("nope"), "{msg}");

    let text = b.replacen(
        "address = \"127.0.0.1:13000\"",
        "address = \"not an address\"",
        1,
    );
    assert_eq!(
        error_at(&text).0,
        line_of(&text, "address = \"not an address\"")
    );

    let text = b.replacen(&sha256_hex(WEB_TOKEN), "xyz", 1);
    assert_eq!(error_at(&text).0, line_of(&text, "token_sha256 = \"xyz\""));

    let text = b.replacen("path = [", "path = [\"/no-key/\", ", 1);
    assert!(error_at(&text).1.contains("{key}"));

    for bad in [
        "rotate_on_login = \"sometimes\"",
        "rotation_grace = \"soon\"",
    ] {
        let text = format!("{b}\n[sessions]\n{bad}\n");
        let (line, msg) = error_at(&text);
        assert_eq!(line, line_of(&text, bad), "{msg}");
    }

    let text = format!("{b}\n[identity_headers]\nsigning_key_file = \"/nonexistent/key\"\n");
    assert_eq!(error_at(&text).0, line_of(&text, "signing_key_file"));
}

#[test]
fn short_signing_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "short\n").unwrap();
    let text = format!(
        "{}\n[identity_headers]\nsigning_key_file = \"{}\"\n",
        base(),
        key.display()
    );
    assert!(error_at(&text).1.contains("at least 32"));
    std::fs::write(&key, format!("{}\n", "x".repeat(32))).unwrap();
    assert!(
        config::parse(Path::new("t.toml"), &text).is_ok(),
        "32 bytes plus a newline is enough"
    );
}

#[test]
fn jwt_never_allows_none_or_shared_secrets() {
    for alg in ["none", "HS256"] {
        let text = format!(
            "{}\n[jwt]\njwks_file = \"j.json\"\nalgorithms = [\"{alg}\"]\n",
            base()
        );
        let (line, _) = error_at(&text);
        assert_eq!(line, line_of(&text, "algorithms"));
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_session-sidecar"))
}

#[test]
fn check_config_cli() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base()).unwrap();
    let out = bin()
        .args(["check-config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    let text = insert_after(&base(), "[server]", "oops = 1");
    std::fs::write(&bad, &text).unwrap();
    let out = bin()
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:{}:", bad.display(), line_of(&text, "oops"));
    assert!(stderr.starts_with(&want), "{stderr}");

    let missing = dir.path().join("missing.toml");
    let out = bin()
        .args(["check-config", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with(&format!("{}: cannot read:", missing.display())));
}

#[test]
fn hash_token_cli_ignores_one_trailing_newline() {
    for input in ["s3cret", "s3cret\n"] {
        let mut child = bin()
            .arg("hash-token")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            sha256_hex("s3cret")
        );
    }
}

#[test]
fn version_cli() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

mod properties {
    use proptest::prelude::*;
    use session_sidecar::config;
    use std::path::Path;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Arbitrary text never panics the parser, and errors always carry a usable message.
        #[test]
        fn config_parser_never_panics(text in "\\PC{0,400}") {
            if let Err(e) = config::parse(Path::new("p.toml"), &text) {
                prop_assert!(!e.message.is_empty());
            }
        }

        /// Mutations of a valid file either parse or fail with a position inside the file.
        #[test]
        fn mutated_config_errors_stay_in_the_file(cut in 0usize..2000, insert in "[\\[\\]=\"a-z0-9 \\n]{0,8}") {
            let base = super::base();
            let cut = cut.min(base.len());
            let cut = (0..=cut).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
            let text = format!("{}{}{}", &base[..cut], insert, &base[cut..]);
            if let Err(e) = config::parse(Path::new("p.toml"), &text) {
                if let Some((line, _)) = e.position {
                    prop_assert!(line <= text.lines().count() + 1);
                }
            }
        }
    }
}
