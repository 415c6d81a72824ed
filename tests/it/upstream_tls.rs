//! HTTPS upstreams (SPEC §13.3): the sidecar verifies the app's certificate against `ca_file`
//! and the SNI name, presents a client certificate for mTLS, answers 502 (and says why in the
//! log) when verification fails, and reuses pooled TLS connections.

use crate::common;

use common::pki::{write, Ca, Leaf};
use common::process::{check_config, SidecarProcess};
use common::tls_front::TlsFront;
use common::*;

/// The app behind a TLS front with `leaf`; `client_ca` demands client certificates.
fn https_app(leaf: &Leaf, client_ca: Option<&Ca>) -> (EchoUpstream, TlsFront) {
    let up = EchoUpstream::start();
    let front = TlsFront::start(
        up.port,
        std::slice::from_ref(&leaf.cert_der),
        &leaf.key_der,
        client_ca.map(|c| c.cert_der.as_slice()),
    );
    (up, front)
}

/// `[upstreams.secure]` with `keys`, routed from `/tls/`.
fn secure_upstream(address: &str, keys: &str) -> String {
    format!(
        "\n[upstreams.secure]\naddress = \"{address}\"\ntls = true\n{keys}\n\n[[routes]]\npath_prefix = \"/tls/\"\nupstream = \"secure\"\n"
    )
}

fn sidecar(up: &EchoUpstream, extra: &str) -> TestSidecar {
    TestSidecar::with_upstream(up, extra)
}

#[test]
fn a_verified_https_upstream_gets_identity_over_few_handshakes() {
    let ca = Ca::new("test CA");
    let (up, front) = https_app(&ca.server(&["localhost"]), None);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    // The SNI name defaults to the address's host: `localhost`, which the certificate names.
    let sc = sidecar(
        &up,
        &secure_upstream(
            &format!("localhost:{}", front.port),
            &format!("ca_file = \"{}\"", ca_file.display()),
        ),
    );
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &bearer(ADMIN_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        br#"{"customer_id":"cust-tls"}"#,
    );
    let sid = r.json()["id"].as_str().unwrap().to_string();
    const N: usize = 40;
    let mut conn = Conn::open(sc.ports.proxy);
    for i in 0..N {
        let path = format!("/tls/{i}");
        let r = conn.send(
            "GET",
            &path,
            &[("X-Session-Id", &sid), ("X-Customer-Id", "spoofed")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let rec = &up.received_at(&path)[0];
        assert_eq!(
            rec.header_all("X-Customer-Id"),
            vec!["cust-tls".to_string()]
        );
    }
    let handshakes = front.handshakes();
    println!("{N} requests over HTTPS made {handshakes} TLS handshakes");
    assert!(handshakes >= 1, "the requests went through the TLS front");
    // Connections are pooled: a handshake per pooled connection, not per request (the pool is
    // per worker thread, and the test sidecar has two).
    assert!(handshakes <= 2, "{handshakes} handshakes for {N} requests");
}

#[test]
fn certificates_that_do_not_verify_get_502_unless_verify_is_off() {
    let ca = Ca::new("test CA");
    let stranger = Ca::new("someone else's CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let ca_key = format!("ca_file = \"{}\"", ca_file.display());
    let cases: Vec<(&str, Leaf, String, u16)> = vec![
        (
            "unknown issuer",
            stranger.server(&["localhost"]),
            ca_key.clone(),
            502,
        ),
        (
            "name mismatch",
            ca.server(&["localhost"]),
            format!("{ca_key}\nsni = \"app.example\""),
            502,
        ),
        (
            "expired",
            ca.expired_server(&["localhost"]),
            ca_key.clone(),
            502,
        ),
        (
            "IP address in the SANs",
            ca.server(&["127.0.0.1"]),
            ca_key.clone(),
            200,
        ),
        (
            "unknown issuer, verify = false",
            stranger.server(&["localhost"]),
            format!("{ca_key}\nverify = false"),
            200,
        ),
    ];
    for (what, leaf, keys, status) in cases {
        let (up, front) = https_app(&leaf, None);
        let host = if what.starts_with("IP") {
            "127.0.0.1"
        } else {
            "localhost"
        };
        let sc = sidecar(
            &up,
            &secure_upstream(&format!("{host}:{}", front.port), &keys),
        );
        let r = sc.proxy("GET", "/tls/x", &[], b"");
        assert_eq!(r.status, status, "{what}: {}", r.text());
        if status == 502 {
            assert_eq!(r.json()["error"], "bad_gateway", "{what}");
            assert!(up.received().is_empty(), "{what}: nothing reached the app");
            // The rest of the sidecar is unaffected.
            assert_eq!(sc.proxy("GET", "/plain", &[], b"").status, 200, "{what}");
        }
    }
}

#[test]
fn mutual_tls_presents_the_configured_client_certificate() {
    let ca = Ca::new("test CA");
    let (up, front) = https_app(&ca.server(&["localhost"]), Some(&ca));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let client = ca.client("sidecar-client");
    let cert = write(dir.path(), "client.pem", &client.cert_pem);
    let key = write(dir.path(), "client.key", &client.key_pem);
    let address = format!("localhost:{}", front.port);

    let without = sidecar(
        &up,
        &secure_upstream(&address, &format!("ca_file = \"{}\"", ca_file.display())),
    );
    assert_eq!(without.proxy("GET", "/tls/no-cert", &[], b"").status, 502);

    let with = sidecar(
        &up,
        &secure_upstream(
            &address,
            &format!(
                "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"",
                ca_file.display(),
                cert.display(),
                key.display()
            ),
        ),
    );
    let r = with.proxy("GET", "/tls/with-cert", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.received_at("/tls/with-cert").len(), 1);
    assert_eq!(
        front.client_subjects(),
        vec!["CN=sidecar-client".to_string()]
    );
}

#[test]
fn a_failed_verification_is_logged_with_its_reason_and_verify_off_warns_at_start() {
    let ca = Ca::new("test CA");
    let stranger = Ca::new("someone else's CA");
    let (up, front) = https_app(&stranger.server(&["localhost"]), None);
    let ports = Ports::new(up.port);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let extra = secure_upstream(
        &format!("localhost:{}", front.port),
        &format!("ca_file = \"{}\"", ca_file.display()),
    ) + "\n[upstreams.lax]\naddress = \"127.0.0.1:9\"\ntls = true\nverify = false\n";
    let sidecar = SidecarProcess::start_fresh(ports, &extra, &[]);
    sidecar.wait_ready();
    let r = get(ports.proxy, "/tls/x", &[]);
    assert_eq!(r.status, 502);
    let log = sidecar.stop();
    let line = log
        .lines()
        .find(|l| l.contains("TLS handshake failed"))
        .unwrap_or_else(|| panic!("no TLS failure line in:\n{log}"));
    assert!(line.contains("upstream secure"), "{line}");
    assert!(line.contains("UnknownIssuer"), "the reason: {line}");
    assert!(
        log.contains("upstreams.lax: verify = false"),
        "no startup warning for verify = false"
    );
}

#[test]
fn tls_settings_are_checked_at_load_with_positions() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let junk = write(dir.path(), "junk.pem", "not a certificate\n");
    let client = ca.client("c");
    let cert = write(dir.path(), "client.pem", &client.cert_pem);
    let cases = [
        (
            format!("ca_file = \"{}/missing.pem\"", dir.path().display()),
            "ca_file",
        ),
        (format!("ca_file = \"{}\"", junk.display()), "ca_file"),
        (
            format!("client_cert_file = \"{}\"", cert.display()),
            "client_cert_file",
        ),
        (
            format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{}\"",
                cert.display(),
                ca_file.display()
            ),
            "client_key_file",
        ),
        ("sni = \"\"".to_string(), "sni"),
    ];
    let ports = Ports::new(free_port());
    for (keys, at) in cases {
        let text = base_config(&ports, &secure_upstream("127.0.0.1:9", &keys));
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).unwrap();
        let (accepted, err) = check_config(&path);
        assert!(!accepted, "{keys}: accepted");
        let line = text
            .lines()
            .position(|l| l.starts_with(&format!("{at} =")))
            .unwrap()
            + 1;
        assert!(
            err.contains(&format!("config.toml:{line}:")),
            "{keys}: error not at line {line}: {err}"
        );
        assert!(err.contains(&format!("upstreams.secure.{at}")), "{err}");
        assert!(
            !err.contains("PRIVATE KEY"),
            "key material in an error: {err}"
        );
    }
    // TLS keys without `tls = true` are a mistake, not silently plain HTTP.
    let text = base_config(
        &ports,
        &format!(
            "\n[upstreams.secure]\naddress = \"127.0.0.1:9\"\nca_file = \"{}\"\n",
            ca_file.display()
        ),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let (accepted, err) = check_config(&path);
    assert!(!accepted);
    assert!(err.contains("tls = true"));
}
