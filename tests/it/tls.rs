//! SPEC §13.3 downstream TLS, end to end: `tls_listen` with `[server.tls]` (SNI, min_version,
//! client certificates, ALPN), certificate reload without dropping connections, the expiry
//! gauge, the admin listener over TLS, `check-config` on bad files, the `Secure` cookie of a
//! login over TLS, and the Kubernetes TLS variant. Certificates are made here with rcgen (a CA,
//! server certificates with SANs, an expired one, client certificates); the clients are the
//! real curl binary and, where a test must hold a connection open or see the certificate the
//! server sent, a small rustls client.

use crate::common;
use crate::rotation::{cookie, form, login_app, planted_session, FORM, PASSWORD};

use common::process::{check_config, SidecarProcess};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use session_sidecar::background::reload::Reloader;
use session_sidecar::config;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Certificates

/// A test CA in a temp dir, and the files of what it issued.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
}

/// A certificate and key written as PEM files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    /// notAfter in Unix seconds, as the expiry gauge should show it.
    not_after: i64,
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn at_secs(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

const DAY: i64 = 86_400;

impl Pki {
    pub(crate) fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = at_secs(now_secs() - DAY);
        params.not_after = at_secs(now_secs() + 3650 * DAY);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Pki { dir, ca, ca_file }
    }

    /// A certificate for `names` (DNS names or IP addresses) valid from `from` to `until`
    /// (Unix seconds), as `stem.pem` and `stem.key`.
    fn issue_between(
        &self,
        stem: &str,
        names: &[&str],
        purpose: ExtendedKeyUsagePurpose,
        from: i64,
        until: i64,
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(stem));
        params.extended_key_usages = vec![purpose];
        params.not_before = at_secs(from);
        params.not_after = at_secs(until);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let issued = Issued {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
            der: cert.der().clone(),
            not_after: until,
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// A server certificate valid for `days` from yesterday.
    fn server(&self, stem: &str, names: &[&str], days: i64) -> Issued {
        let now = now_secs();
        self.issue_between(
            stem,
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            now - DAY,
            now + days * DAY,
        )
    }

    fn client(&self, stem: &str) -> Issued {
        let now = now_secs();
        self.issue_between(
            stem,
            &["client-1"],
            ExtendedKeyUsagePurpose::ClientAuth,
            now - DAY,
            now + 30 * DAY,
        )
    }

    pub(crate) fn ca(&self) -> &str {
        self.ca_file.to_str().unwrap()
    }
}

/// `cert_file`/`key_file` lines for `issued`.
fn files(issued: &Issued) -> String {
    format!(
        "cert_file = {:?}\nkey_file = {:?}\n",
        issued.cert.display().to_string(),
        issued.key.display().to_string()
    )
}

/// Replaces `to`'s files with `from`'s (a rotation, as cert-manager writes a Secret).
fn rotate(from: &Issued, to: &Issued) {
    std::fs::copy(&from.cert, &to.cert).unwrap();
    std::fs::copy(&from.key, &to.key).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Sidecars and clients

/// An in-process sidecar with the base config, `tls_listen` on a port of its own, and `extra`
/// (which holds the `[server.tls]` table).
pub(crate) struct TlsSidecar {
    pub(crate) sc: TestSidecar,
    port: u16,
}

fn with_tls_listen(config: &str, port: u16) -> String {
    assert!(config.contains("[server]\n"));
    config.replacen(
        "[server]\n",
        &format!("[server]\ntls_listen = [\"127.0.0.1:{port}\"]\n"),
        1,
    )
}

impl TlsSidecar {
    fn start(up: &EchoUpstream, extra: &str) -> TlsSidecar {
        let ports = Ports::new(up.port);
        let port = free_port();
        let sc = TestSidecar::start(ports, &with_tls_listen(&base_config(&ports, extra), port));
        wait_for_port(port);
        TlsSidecar { sc, port }
    }

    /// With a `localhost` certificate of `pki` and nothing else in `[server.tls]`.
    pub(crate) fn with_default_cert(up: &EchoUpstream, pki: &Pki) -> TlsSidecar {
        TlsSidecar::with_default_cert_and(up, pki, "")
    }

    /// `with_default_cert` with `extra` (more tables) in the config.
    pub(crate) fn with_default_cert_and(up: &EchoUpstream, pki: &Pki, extra: &str) -> TlsSidecar {
        let server = pki.server("server", &["localhost", "127.0.0.1"], 90);
        TlsSidecar::start(up, &format!("{extra}\n[server.tls]\n{}", files(&server)))
    }

    /// `https://localhost:PORT{path}`, resolved to loopback.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub(crate) fn resolve(&self, name: &str) -> String {
        format!("{name}:{}:127.0.0.1", self.port)
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What curl made of one request.
#[derive(Debug)]
pub(crate) struct Curl {
    /// Exit status 0.
    pub(crate) ok: bool,
    exit: Option<i32>,
    pub(crate) status: u16,
    /// `%{http_version}`: "1.1", "2"; "0" when no answer came.
    pub(crate) version: String,
    pub(crate) body: String,
    stderr: String,
}

impl Curl {
    /// The server ended the TLS handshake (or the connection right after it, as TLS 1.3 does
    /// when it refuses a client certificate): curl's exits 35 (handshake), 55 and 56 (send and
    /// receive), never one of its own refusals (60: certificate, 58: local files, 7: connect).
    fn refused_by_server(&self) -> bool {
        !self.ok && self.status == 0 && matches!(self.exit, Some(35 | 55 | 56))
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

pub(crate) fn curl(args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "15",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("curl is installed (make test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (status, version) = last.split_once(' ').unwrap_or((last, ""));
    Curl {
        ok: out.status.success(),
        exit: out.status.code(),
        status: status.parse().unwrap_or(0),
        version: version.to_string(),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A TLS connection of a rustls client trusting `ca`, kept open across requests.
struct TlsConn {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsConn {
    fn open(port: u16, sni: &str, ca: &Path) -> TlsConn {
        TlsConn::connect(port, sni, ca, true)
    }

    /// Checks the chain but not the name: to see which certificate an unknown name gets.
    fn open_any_name(port: u16, sni: &str, ca: &Path) -> TlsConn {
        TlsConn::connect(port, sni, ca, false)
    }

    fn connect(port: u16, sni: &str, ca: &Path, check_name: bool) -> TlsConn {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_file_iter(ca).unwrap() {
            let cert: CertificateDer<'static> = cert.unwrap();
            roots.add(cert).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap();
        let config = if check_name {
            builder.with_webpki_verifier(verifier).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
                .with_no_client_auth()
        };
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from(sni.to_string()).unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .unwrap_or_else(|e| panic!("TLS handshake with {sni}: {e}"));
        }
        TlsConn { stream }
    }

    /// The leaf certificate the server sent.
    fn peer_cert(&self) -> CertificateDer<'static> {
        self.stream.conn.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    /// One keep-alive GET: status and body.
    fn get(&mut self, path: &str) -> (u16, String) {
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"
        )
        .unwrap();
        self.stream.flush().unwrap();
        let mut reader = BufReader::new(&mut self.stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {line:?}"));
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.trim_end().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// rustls's verifier, name mismatches forgiven.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn poll(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn admin_session(sc: &TestSidecar, customer: &str) -> String {
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &bearer(ADMIN_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        format!("{{\"customer_id\":\"{customer}\"}}").as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// Serving

#[test]
fn forwards_over_tls_with_identity_headers() {
    let up = EchoUpstream::start();
    let pki = Pki::new("main");
    let server = pki.server("server", &["localhost", "127.0.0.1"], 90);
    let t = TlsSidecar::start(&up, &format!("\n[server.tls]\n{}", files(&server)));
    let sid = admin_session(&t.sc, "cust-tls");

    for url in [
        t.url("/orders/1"),
        format!("https://127.0.0.1:{}/orders/1", t.port),
    ] {
        let r = curl(&[
            "--cacert",
            pki.ca(),
            "--resolve",
            &t.resolve("localhost"),
            "-H",
            &format!("X-Session-Id: {sid}"),
            "-H",
            "X-Customer-Id: forged",
            &url,
        ]);
        assert!(r.ok && r.status == 200, "{url}: {r:?}");
        let seen = r.json();
        assert_eq!(seen["path"], "/orders/1");
        assert_eq!(
            seen["headers"]["x-customer-id"],
            serde_json::json!(["cust-tls"]),
            "the session's identity, never the client's copy: {seen}"
        );
        assert_eq!(seen["headers"]["x-session-id"], serde_json::json!([sid]));
    }

    // Without the CA, curl refuses the certificate: it really is TLS with the test chain.
    let r = curl(&["--resolve", &t.resolve("localhost"), &t.url("/")]);
    assert_eq!(r.exit, Some(60), "{r:?}");
    // The plaintext listener still serves.
    assert_eq!(t.sc.proxy("GET", "/plain", &[], b"").status, 200);
}

#[test]
fn sni_picks_the_certificate_and_unknown_names_get_the_default() {
    let up = EchoUpstream::start();
    let pki = Pki::new("main");
    let server = pki.server("server", &["localhost", "127.0.0.1"], 90);
    let sni = pki.server("sni", &["sni.test"], 60);
    let wild = pki.server("wild", &["*.wild.test"], 60);
    let t = TlsSidecar::start(
        &up,
        &format!(
            "\n[server.tls]\n{}\n[[server.tls.sni]]\nserver_name = \"SNI.test\"\n{}\n[[server.tls.sni]]\nserver_name = \"*.wild.test\"\n{}",
            files(&server),
            files(&sni),
            files(&wild),
        ),
    );
    for (name, want) in [
        ("localhost", &server),
        ("sni.test", &sni),
        ("a.wild.test", &wild),
        ("unknown.test", &server),
    ] {
        let conn = TlsConn::open_any_name(t.port, name, &pki.ca_file);
        assert_eq!(conn.peer_cert(), want.der, "{name}");
    }
    // curl checks the name against the certificate it got: only the SNI entry's one passes.
    let r = curl(&[
        "--cacert",
        pki.ca(),
        "--resolve",
        &t.resolve("sni.test"),
        &format!("https://sni.test:{}/via-sni", t.port),
    ]);
    assert!(r.ok && r.status == 200, "{r:?}");
    assert_eq!(r.json()["path"], "/via-sni");
    let r = curl(&[
        "--cacert",
        pki.ca(),
        "--resolve",
        &t.resolve("unknown.test"),
        &format!("https://unknown.test:{}/", t.port),
    ]);
    assert_eq!(
        r.exit,
        Some(60),
        "the default certificate does not name unknown.test: {r:?}"
    );
}

#[test]
fn min_version_1_3_refuses_tls_1_2_clients() {
    let up = EchoUpstream::start();
    let pki = Pki::new("main");
    let server = pki.server("server", &["localhost", "127.0.0.1"], 90);
    let strict = TlsSidecar::start(
        &up,
        &format!("\n[server.tls]\n{}min_version = \"1.3\"\n", files(&server)),
    );
    let lenient = TlsSidecar::start(&up, &format!("\n[server.tls]\n{}", files(&server)));
    let with = |t: &TlsSidecar, args: &[&str]| {
        let resolve = t.resolve("localhost");
        let url = t.url("/v");
        let mut all = vec!["--cacert", pki.ca(), "--resolve", &resolve];
        all.extend_from_slice(args);
        all.push(&url);
        curl(&all)
    };
    let r = with(&strict, &["--tlsv1.2", "--tls-max", "1.2"]);
    assert!(
        r.exit == Some(35) && r.stderr.contains("handshake failure"),
        "TLS 1.2 against min_version 1.3: {r:?}"
    );
    let r = with(&strict, &["--tlsv1.3"]);
    assert!(r.ok && r.status == 200, "{r:?}");
    let r = with(&lenient, &["--tlsv1.2", "--tls-max", "1.2"]);
    assert!(
        r.ok && r.status == 200,
        "TLS 1.2 under the default min_version: {r:?}"
    );
    // The refused client did not stop the listener.
    let r = with(&strict, &[]);
    assert!(r.ok && r.status == 200, "{r:?}");
}

#[test]
fn client_ca_file_requires_a_client_certificate_from_that_ca() {
    let up = EchoUpstream::start();
    let pki = Pki::new("main");
    let server = pki.server("server", &["localhost", "127.0.0.1"], 90);
    let client = pki.client("client");
    let other_ca = Pki::new("other");
    let stranger = other_ca.client("stranger");
    let t = TlsSidecar::start(
        &up,
        &format!(
            "\n[server.tls]\n{}client_ca_file = {:?}\n",
            files(&server),
            pki.ca()
        ),
    );
    let with = |args: &[&str]| {
        let resolve = t.resolve("localhost");
        let url = t.url("/mtls");
        let mut all = vec!["--cacert", pki.ca(), "--resolve", &resolve];
        all.extend_from_slice(args);
        all.push(&url);
        curl(&all)
    };
    let r = with(&[]);
    assert!(r.refused_by_server(), "no client certificate: {r:?}");
    let r = with(&[
        "--cert",
        stranger.cert.to_str().unwrap(),
        "--key",
        stranger.key.to_str().unwrap(),
    ]);
    assert!(r.refused_by_server(), "a certificate of another CA: {r:?}");
    // Under both versions, and after the refusals above: the next good client is served.
    for version in [&["--tlsv1.3"][..], &["--tls-max", "1.2"]] {
        let mut args = version.to_vec();
        args.extend([
            "--cert",
            client.cert.to_str().unwrap(),
            "--key",
            client.key.to_str().unwrap(),
        ]);
        let r = with(&args);
        assert!(r.ok && r.status == 200, "{version:?}: {r:?}");
        assert_eq!(r.json()["path"], "/mtls");
    }
}

#[test]
fn alpn_offers_h2_unless_http2_is_off() {
    let up = EchoUpstream::start();
    let pki = Pki::new("main");
    let server = pki.server("server", &["localhost", "127.0.0.1"], 90);
    let h2 = TlsSidecar::start(&up, &format!("\n[server.tls]\n{}", files(&server)));
    let sid = admin_session(&h2.sc, "cust-h2");
    let r = curl(&[
        "--http2",
        "--cacert",
        pki.ca(),
        "--resolve",
        &h2.resolve("localhost"),
        "-H",
        &format!("X-Session-Id: {sid}"),
        &h2.url("/over-h2"),
    ]);
    assert!(r.ok && r.status == 200, "{r:?}");
    assert_eq!(r.version, "2", "h2 chosen by ALPN: {r:?}");
    assert_eq!(
        r.json()["headers"]["x-customer-id"],
        serde_json::json!(["cust-h2"])
    );

    let ports = Ports::new(up.port);
    let port = free_port();
    let text = with_tls_listen(
        &base_config(&ports, &format!("\n[server.tls]\n{}", files(&server))),
        port,
    )
    .replacen("[server]\n", "[server]\nhttp2 = false\n", 1);
    let _h1 = TestSidecar::start(ports, &text);
    wait_for_port(port);
    let r = curl(&[
        "--http2",
        "--cacert",
        pki.ca(),
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        &format!("https://localhost:{port}/over-h1"),
    ]);
    assert!(r.ok && r.status == 200, "{r:?}");
    assert_eq!(
        r.version, "1.1",
        "no h2 offered with server.http2 = false: {r:?}"
    );
}

#[test]
fn a_tls_only_sidecar_serves_with_listen_empty() {
    let up = EchoUpstream::start();
    let pki = Pki::new("main");
    let server = pki.server("server", &["localhost", "127.0.0.1"], 90);
    // The proxy port is the TLS one (the harness waits until it accepts connections).
    let ports = Ports::new(up.port);
    let text = base_config(&ports, &format!("\n[server.tls]\n{}", files(&server))).replacen(
        &format!("listen = [\"127.0.0.1:{}\"]", ports.proxy),
        &format!("listen = []\ntls_listen = [\"127.0.0.1:{}\"]", ports.proxy),
        1,
    );
    let sc = TestSidecar::start(ports, &text);
    let r = curl(&[
        "--cacert",
        pki.ca(),
        &format!("https://127.0.0.1:{}/tls-only", ports.proxy),
    ]);
    assert!(r.ok && r.status == 200, "{r:?}");
    assert_eq!(r.json()["path"], "/tls-only");
    let r = curl(&[&format!("http://127.0.0.1:{}/plain", ports.proxy)]);
    assert!(
        !r.ok && r.status == 0,
        "no plaintext HTTP on the TLS port: {r:?}"
    );
    drop(sc);
}

#[test]
fn garbage_instead_of_a_client_hello_closes_that_connection_only() {
    let up = EchoUpstream::start();
    let pki = Pki::new("main");
    let server = pki.server("server", &["localhost", "127.0.0.1"], 90);
    let t = TlsSidecar::start(&up, &format!("\n[server.tls]\n{}", files(&server)));
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00][..],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = s.write_all(garbage);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            !answer.starts_with(b"HTTP/"),
            "no HTTP answer on a TLS port: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    let r = curl(&[
        "--cacert",
        pki.ca(),
        "--resolve",
        &t.resolve("localhost"),
        &t.url("/next"),
    ]);
    assert!(
        r.ok && r.status == 200,
        "the next good client is served: {r:?}"
    );
}

#[test]
fn a_cookie_login_over_tls_gets_a_secure_cookie() {
    let up = login_app();
    let pki = Pki::new("main");
    let server = pki.server("server", &["localhost", "127.0.0.1"], 90);
    let t = TlsSidecar::start(&up, &format!("\n[server.tls]\n{}", files(&server)));
    let planted = planted_session(t.sc.ports.admin);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "15", "-D", "-", "-o", "/dev/null"])
        .args(["--cacert", pki.ca(), "--resolve", &t.resolve("localhost")])
        .args(["-H", &format!("Cookie: {}", cookie(&planted))])
        .args(["-H", &format!("{}: {}", FORM.0, FORM.1)])
        .args(["--data-binary"])
        .arg(String::from_utf8(form("alice", PASSWORD)).unwrap())
        .arg(t.url("/login"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/"), "{head}");
    let set: Vec<&str> = head
        .lines()
        .filter_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
                .map(|(_, v)| v.trim())
        })
        .collect();
    assert_eq!(set.len(), 1, "{head}");
    assert!(
        set[0].starts_with("session_id=") && !set[0].contains(&planted),
        "a new id: {}",
        set[0]
    );
    assert!(
        set[0].ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"),
        "Secure over TLS: {}",
        set[0]
    );
}

// ---------------------------------------------------------------------------------------------
// Reload

#[test]
fn reload_swaps_certificates_for_new_handshakes_and_keeps_open_connections() {
    let up = EchoUpstream::start();
    let pki = Pki::new("main");
    let live = pki.server("live", &["localhost", "127.0.0.1"], 90);
    let first = live.der.clone();
    let t = TlsSidecar::start(&up, &format!("\n[server.tls]\n{}", files(&live)));
    let reloader = Reloader::new(t.sc.state.clone());

    let mut open = TlsConn::open(t.port, "localhost", &pki.ca_file);
    assert_eq!(open.peer_cert(), first);
    assert_eq!(open.get("/before").0, 200);

    let next = pki.server("next", &["localhost", "127.0.0.1"], 120);
    rotate(&next, &live);
    assert!(reloader.reload(), "a good certificate reloads");
    assert_eq!(
        TlsConn::open(t.port, "localhost", &pki.ca_file).peer_cert(),
        next.der,
        "new handshakes get the new certificate"
    );
    let (status, body) = open.get("/after-reload");
    assert_eq!(status, 200, "the open connection still serves: {body}");
    assert!(body.contains("/after-reload"));
    let r = curl(&[
        "--cacert",
        pki.ca(),
        "--resolve",
        &t.resolve("localhost"),
        &t.url("/curl-after"),
    ]);
    assert!(r.ok && r.status == 200, "{r:?}");

    // A broken file keeps the running certificate (and config).
    std::fs::write(&live.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    assert!(!reloader.reload(), "a broken certificate is refused");
    assert_eq!(
        TlsConn::open(t.port, "localhost", &pki.ca_file).peer_cert(),
        next.der
    );
    // A key that belongs to another certificate too.
    std::fs::copy(&next.cert, &live.cert).unwrap();
    std::fs::copy(&pki.server("third", &["localhost"], 10).key, &live.key).unwrap();
    assert!(!reloader.reload(), "a mismatched key is refused");
    assert_eq!(
        TlsConn::open(t.port, "localhost", &pki.ca_file).peer_cert(),
        next.der
    );
    assert_eq!(open.get("/still").0, 200);
}

/// The binary, as production runs it: the admin listener over TLS, the expiry gauge on its
/// `/metrics`, and real SIGHUPs that rotate a certificate or refuse a broken one.
#[test]
fn the_binary_serves_admin_over_tls_with_the_expiry_gauge_and_reloads_on_sighup() {
    let up = EchoUpstream::start();
    let pki = Pki::new("main");
    let live = pki.server("live", &["localhost", "127.0.0.1"], 90);
    let sni = pki.server("sni", &["sni.test"], 30);
    let now = now_secs();
    let expired = pki.issue_between(
        "expired",
        &["expired.test"],
        ExtendedKeyUsagePurpose::ServerAuth,
        now - 60 * DAY,
        now - 2 * DAY,
    );
    let admin_cert = pki.server("admin", &["admin.test", "127.0.0.1"], 45);
    let ports = Ports::new(up.port);
    let tls_port = free_port();
    let expired_entry = format!(
        "\n[[server.tls.sni]]\nserver_name = \"expired.test\"\n{}",
        files(&expired)
    );
    let extra = format!(
        "\n[server.tls]\n{}\n[[server.tls.sni]]\nserver_name = \"sni.test\"\n{}{expired_entry}\n[server.admin_tls]\n{}",
        files(&live),
        files(&sni),
        files(&admin_cert),
    );
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.toml");
    std::fs::write(
        &config_file,
        with_tls_listen(&base_config(&ports, &extra), tls_port),
    )
    .unwrap();
    let p = SidecarProcess::spawn(
        &["--config".as_ref(), config_file.as_os_str()],
        ports,
        dir.path().join("sidecar.log"),
    );
    let admin = |path: &str| {
        curl(&[
            "--cacert",
            pki.ca(),
            &format!("https://127.0.0.1:{}{path}", ports.admin),
        ])
    };
    assert!(
        poll(|| admin("/readyz").status == 200),
        "the admin listener answers over TLS: {}",
        p.log_text()
    );
    let gauge = |name: &str| {
        metric_value(
            &admin("/metrics").body,
            "tls_cert_expiry_timestamp_seconds",
            &[("server_name", name)],
        ) as i64
    };
    assert_eq!(
        gauge("localhost"),
        live.not_after,
        "the default's first DNS name"
    );
    assert_eq!(gauge("sni.test"), sni.not_after);
    assert_eq!(
        gauge("expired.test"),
        expired.not_after,
        "expired, and shown so"
    );
    assert_eq!(gauge("admin.test"), admin_cert.not_after);
    assert!(
        p.log_text().contains("expired.test") && p.log_text().contains("expired at"),
        "an expired certificate is logged: {}",
        p.log_text()
    );
    // Plain HTTP to the admin port gets no answer.
    let mut s = TcpStream::connect(("127.0.0.1", ports.admin)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
    // An admin call with the admin credential, over TLS.
    let r = curl(&[
        "--cacert",
        pki.ca(),
        "-H",
        &format!("Authorization: Bearer {ADMIN_TOKEN}"),
        "-H",
        "Content-Type: application/json",
        "--data",
        "{\"customer_id\":\"c-admin-tls\"}",
        &format!("https://127.0.0.1:{}/admin/sessions", ports.admin),
    ]);
    assert_eq!(r.status, 201, "{r:?}");

    // cert-manager rotates the Secret; the file watcher sends SIGHUP. The operator has also
    // dropped the expired SNI entry: its series goes.
    let next = pki.server("next", &["localhost", "127.0.0.1"], 200);
    rotate(&next, &live);
    let text = std::fs::read_to_string(&config_file).unwrap();
    std::fs::write(&config_file, text.replacen(&expired_entry, "", 1)).unwrap();
    p.signal("HUP");
    assert!(
        poll(|| gauge("localhost") == next.not_after),
        "the gauge follows the reload: {}",
        p.log_text()
    );
    let scrape = admin("/metrics").body;
    assert!(!scrape.contains("expired.test"), "{scrape}");
    assert_eq!(gauge("sni.test"), sni.not_after);
    assert_eq!(
        metric_value(&admin("/metrics").body, "config_reload_success", &[]),
        1.0
    );
    assert_eq!(
        TlsConn::open(tls_port, "localhost", &pki.ca_file).peer_cert(),
        next.der
    );

    // A broken certificate: kept the running one, gauge 0, the log says why.
    std::fs::write(&live.cert, "garbage, no PEM here\n").unwrap();
    p.signal("HUP");
    assert!(
        poll(|| metric_value(&admin("/metrics").body, "config_reload_success", &[]) == 0.0),
        "{}",
        p.log_text()
    );
    assert_eq!(
        TlsConn::open(tls_port, "localhost", &pki.ca_file).peer_cert(),
        next.der,
        "the old certificate stays"
    );
    assert_eq!(gauge("localhost"), next.not_after);
    let log = p.stop();
    let cert_path = live.cert.display().to_string();
    assert!(
        log.lines().any(|l| l.contains("config reload refused")
            && l.contains(&cert_path)
            && l.contains("holds no PEM certificate")),
        "the log names the file and why: {log}"
    );
    for issued in [&live, &next, &sni, &expired, &admin_cert] {
        let key = std::fs::read_to_string(&issued.key).unwrap();
        let body = key.lines().nth(1).unwrap();
        assert!(!log.contains(body), "key material in the log");
    }
    assert!(!log.contains("PRIVATE KEY"));
}

// ---------------------------------------------------------------------------------------------
// check-config

/// Parses `text` as `dir/test.toml`: the error's line, column and message.
fn error_of(dir: &Path, text: &str) -> (usize, usize, String) {
    let e = config::parse(&dir.join("test.toml"), text).expect_err("config should be refused");
    let (line, col) = e.position.unwrap_or_else(|| panic!("no position in {e}"));
    (line, col, e.message)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in the text"))
        + 1
}

#[test]
fn check_config_names_the_key_of_a_missing_or_mismatched_file() {
    let pki = Pki::new("main");
    let server = pki.server("server", &["localhost"], 90);
    let other = pki.server("other", &["other.test"], 90);
    let dir = pki.dir.path();
    let ports = Ports {
        proxy: 18443,
        admin: 19443,
        upstream: 13443,
        dead: 13444,
    };
    let config_with = |tls: &str| {
        with_tls_listen(
            &base_config(&ports, &format!("\n[server.tls]\n{tls}")),
            18444,
        )
    };

    // A good table (paths relative to the config file's directory) passes.
    let good = config_with("cert_file = \"server.pem\"\nkey_file = \"server.key\"\n");
    let c = config::parse(&dir.join("test.toml"), &good).unwrap();
    let tls = c.server.tls.expect("tls");
    assert_eq!(tls.default.label, "localhost");
    assert_eq!(tls.default.not_after, server.not_after);
    assert_eq!(c.server.tls_listen[0].port(), 18444);

    let cases: Vec<(String, &str, &str)> = vec![
        (
            config_with("cert_file = \"missing.pem\"\nkey_file = \"server.key\"\n"),
            "cert_file = \"missing.pem\"",
            "server.tls.cert_file: cannot read",
        ),
        (
            config_with("cert_file = \"server.pem\"\nkey_file = \"missing.key\"\n"),
            "key_file = \"missing.key\"",
            "server.tls.key_file: cannot read",
        ),
        (
            config_with("cert_file = \"server.pem\"\nkey_file = \"other.key\"\n"),
            "key_file = \"other.key\"",
            "does not belong to the certificate",
        ),
        (
            config_with("cert_file = \"server.key\"\nkey_file = \"server.key\"\n"),
            "cert_file = \"server.key\"",
            "holds no PEM certificate",
        ),
        (
            config_with("cert_file = \"server.pem\"\nkey_file = \"server.pem\"\n"),
            "key_file = \"server.pem\"",
            "holds no usable PEM private key",
        ),
        (
            config_with(
                "cert_file = \"server.pem\"\nkey_file = \"server.key\"\n\n[[server.tls.sni]]\nserver_name = \"other.test\"\ncert_file = \"other.pem\"\nkey_file = \"server.key\"\n",
            ),
            "key_file = \"server.key\"\n",
            "server.tls.sni[0].key_file",
        ),
        (
            config_with(
                "cert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"nope.pem\"\n",
            ),
            "client_ca_file",
            "server.tls.client_ca_file: cannot read",
        ),
        (
            config_with("cert_file = \"server.pem\"\nkey_file = \"server.key\"\nmin_version = \"1.1\"\n"),
            "min_version",
            "1.3",
        ),
        (
            base_config(&ports, "").replacen(
                "[server]\n",
                "[server]\ntls_listen = [\"127.0.0.1:18444\"]\n",
                1,
            ),
            "tls_listen",
            "needs a [server.tls] table",
        ),
    ];
    for (text, needle, message) in cases {
        let (line, col, got) = error_of(dir, &text);
        // The SNI case: the entry's key_file, the second `key_file = "server.key"` line.
        let want_line = if message.starts_with("server.tls.sni") {
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.contains("key_file = \"server.key\""))
                .nth(1)
                .unwrap()
                .0
                + 1
        } else {
            line_of(&text, needle.trim_end())
        };
        assert_eq!(line, want_line, "{got}");
        assert!(col > 1, "{got}");
        assert!(got.contains(message), "{got:?} should say {message:?}");
    }
    assert!(error_of(
        dir,
        &config_with("cert_file = \"server.pem\"\nkey_file = \"other.key\"\n")
    )
    .2
    .contains(&other.key.display().to_string()));

    // The CLI prints FILE:LINE:COL and fails.
    let file = dir.join("mismatch.toml");
    let text = config_with("cert_file = \"server.pem\"\nkey_file = \"other.key\"\n");
    std::fs::write(&file, &text).unwrap();
    let (accepted, said) = check_config(&file);
    assert!(!accepted, "{said}");
    let place = format!(
        "{}:{}:",
        file.display(),
        line_of(&text, "key_file = \"other.key\"")
    );
    assert!(said.contains(&place), "{said} should name {place}");
    std::fs::write(&file, &good).unwrap();
    let (accepted, said) = check_config(&file);
    assert!(accepted, "{said}");
}

#[test]
fn key_material_never_reaches_an_error_message() {
    let pki = Pki::new("main");
    let server = pki.server("server", &["localhost"], 90);
    let dir = pki.dir.path();
    let key = std::fs::read_to_string(&server.key).unwrap();
    // A key file given as the certificate, and a key with its base64 broken.
    let broken = key.replacen('A', "!", 1);
    std::fs::write(dir.join("broken.key"), &broken).unwrap();
    let ports = Ports {
        proxy: 18445,
        admin: 19445,
        upstream: 13445,
        dead: 13446,
    };
    for tls in [
        "cert_file = \"server.key\"\nkey_file = \"server.key\"\n",
        "cert_file = \"server.pem\"\nkey_file = \"broken.key\"\n",
    ] {
        let text = with_tls_listen(
            &base_config(&ports, &format!("\n[server.tls]\n{tls}")),
            18446,
        );
        let e = config::parse(&dir.join("test.toml"), &text)
            .unwrap_err()
            .to_string();
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!e.contains(line), "{e}");
        }
    }
}

#[test]
fn addresses_and_tables_must_agree() {
    let pki = Pki::new("main");
    pki.server("server", &["localhost"], 90);
    let dir = pki.dir.path();
    let ports = Ports {
        proxy: 18447,
        admin: 19447,
        upstream: 13447,
        dead: 13448,
    };
    let tls = "\n[server.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n";
    // A table without listeners.
    let (line, _, msg) = error_of(dir, &base_config(&ports, tls));
    assert!(msg.contains("server.tls_listen is empty"), "{msg}");
    assert_eq!(line, line_of(&base_config(&ports, tls), "cert_file"));
    // One address twice.
    let text = with_tls_listen(&base_config(&ports, tls), 18447);
    let (line, _, msg) = error_of(dir, &text);
    assert!(msg.contains("listed twice"), "{msg}");
    assert_eq!(line, line_of(&text, "tls_listen"));
    // TLS only: no plaintext listener is fine.
    let text = with_tls_listen(&base_config(&ports, tls), 18449).replacen(
        "listen = [\"127.0.0.1:18447\"]",
        "listen = []",
        1,
    );
    let c = config::parse(&dir.join("test.toml"), &text).unwrap();
    assert!(c.server.listen.is_empty() && c.server.tls.is_some());
    // SNI names are host names, each once.
    for (entry, msg) in [
        ("server_name = \"not a name\"", "is not a DNS name"),
        ("server_name = \"LOCALHOST\"", "listed twice"),
    ] {
        let text = with_tls_listen(
            &base_config(
                &ports,
                &format!(
                    "{tls}\n[[server.tls.sni]]\nserver_name = \"localhost\"\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n\n[[server.tls.sni]]\n{entry}\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n"
                ),
            ),
            18449,
        );
        let (line, _, got) = error_of(dir, &text);
        assert!(got.contains(msg), "{got}");
        assert_eq!(line, line_of(&text, entry));
    }
}

// ---------------------------------------------------------------------------------------------
// The Kubernetes TLS variant (deploy/kubernetes/tls)

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The objects `kubectl kustomize DIR` builds, or None when kubectl is not installed.
fn kustomize(dir: &str) -> Option<Vec<serde_yaml::Value>> {
    let out = match Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: kubectl is not installed; {dir} not built"
            );
            return None;
        }
        Err(e) => panic!("kubectl: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect(),
    )
}

fn object<'a>(objects: &'a [serde_yaml::Value], kind: &str, name: &str) -> &'a serde_yaml::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn items(v: &serde_yaml::Value) -> &[serde_yaml::Value] {
    v.as_sequence().map_or(&[], Vec::as_slice)
}

fn named<'a>(list: &'a serde_yaml::Value, name: &str) -> &'a serde_yaml::Value {
    items(list)
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("nothing named {name} in {list:?}"))
}

/// The volume name mounted at `dir` in container `c`.
fn mounted_at<'a>(c: &'a serde_yaml::Value, dir: &Path) -> &'a str {
    items(&c["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"].as_str().map(Path::new) == Some(dir))
        .unwrap_or_else(|| panic!("{:?} mounts nothing at {}", c["name"], dir.display()))["name"]
        .as_str()
        .unwrap()
}

#[test]
fn kubernetes_tls_variant_serves_https_from_the_secret_and_reloads_it() {
    let Some(objects) = kustomize("deploy/kubernetes/tls") else {
        return;
    };
    let config_map = object(&objects, "ConfigMap", "session-sidecar-config");
    let text = config_map["data"]["config.toml"].as_str().unwrap();

    // The TOML is ../memory's but for [server].
    let memory: toml::Value = toml::from_str(
        object(
            &kustomize("deploy/kubernetes/memory").unwrap(),
            "ConfigMap",
            "session-sidecar-config",
        )["data"]["config.toml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let tls: toml::Value = toml::from_str(text).unwrap();
    let without_server = |t: &toml::Value| {
        let mut t = t.clone();
        t.as_table_mut().unwrap().remove("server");
        t
    };
    assert_eq!(
        without_server(&tls),
        without_server(&memory),
        "the TLS ConfigMap drifted from ../memory outside [server]"
    );

    // It validates with test files in place of the Secrets' mounts.
    let cert_file = tls["server"]["tls"]["cert_file"].as_str().unwrap();
    let key_file = tls["server"]["tls"]["key_file"].as_str().unwrap();
    let signing = tls["identity_headers"]["signing_key_file"]
        .as_str()
        .unwrap();
    let pki = Pki::new("k8s");
    let server = pki.server("server", &["app.example.com"], 90);
    let signing_key = pki.dir.path().join("signing.key");
    std::fs::write(&signing_key, "k8s-test-signing-key-0123456789abcdef").unwrap();
    let runnable = text
        .replace(cert_file, server.cert.to_str().unwrap())
        .replace(key_file, server.key.to_str().unwrap())
        .replace(signing, signing_key.to_str().unwrap());
    let c = config::parse(&pki.dir.path().join("config.toml"), &runnable)
        .unwrap_or_else(|e| panic!("the TLS ConfigMap: {e}"));
    assert!(c.server.listen.is_empty(), "no plaintext client port");
    let tls_port = c.server.tls_listen[0].port();
    assert!(c.server.tls_listen[0].ip().is_unspecified());

    // The pod: the Secret mounted where the config looks, the port, the reloader.
    let pod = &object(&objects, "Deployment", "app")["spec"]["template"]["spec"];
    let sidecar = named(&pod["containers"], "session-sidecar");
    let reload = named(&pod["containers"], "tls-reload");
    let dir = Path::new(cert_file).parent().unwrap();
    assert_eq!(Some(dir), Path::new(key_file).parent());
    let volume = named(&pod["volumes"], mounted_at(sidecar, dir));
    let secret = volume["secret"]["secretName"].as_str().unwrap();
    let certificate = objects
        .iter()
        .find(|o| o["kind"] == "Certificate")
        .expect("the cert-manager Certificate");
    assert_eq!(certificate["spec"]["secretName"], secret);
    assert_eq!(mounted_at(reload, dir), mounted_at(sidecar, dir));
    let script = items(&reload["command"])
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    for needed in [
        dir.to_str().unwrap(),
        Path::new(cert_file).file_name().unwrap().to_str().unwrap(),
        Path::new(key_file).file_name().unwrap().to_str().unwrap(),
        "pkill -HUP -x session-sidecar",
    ] {
        assert!(
            script.contains(needed),
            "tls-reload: {needed} not in {script}"
        );
    }
    assert_eq!(
        pod["shareProcessNamespace"], true,
        "a signal needs one process namespace"
    );
    assert_eq!(
        reload["securityContext"]["runAsUser"], sidecar["securityContext"]["runAsUser"],
        "only the same user may signal the sidecar"
    );
    let ports = items(&sidecar["ports"]);
    assert_eq!(named(&sidecar["ports"], "https")["containerPort"], tls_port);
    assert!(
        ports
            .iter()
            .all(|p| p["name"] == "https" || p["name"] == "admin"),
        "{ports:?}"
    );

    // Clients reach only the https port.
    let service = object(&objects, "Service", "app");
    let service_ports = items(&service["spec"]["ports"]);
    assert!(!service_ports.is_empty());
    for p in service_ports {
        assert_eq!(p["targetPort"], "https", "{p:?}");
    }

    // The Kubernetes schemas, when the validator is installed (the Certificate is a CRD).
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tls.yaml");
    let builtin: Vec<String> = objects
        .iter()
        .filter(|o| o["kind"] != "Certificate")
        .map(|o| serde_yaml::to_string(o).unwrap())
        .collect();
    std::fs::write(&file, builtin.join("---\n")).unwrap();
    match Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "--kubernetes-version", "1.30.0"])
        .arg(&file)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: kubernetes-validate is not installed; schemas not checked"
            );
        }
    }
}

/// The manifest's `tls-reload` loop, run here against the binary: only the pod-wide `pkill` is
/// narrowed to this sidecar's pid (other sidecars run on this machine), and its waits shortened.
#[test]
fn the_manifests_reload_loop_makes_a_running_sidecar_serve_a_rotated_certificate() {
    let Some(objects) = kustomize("deploy/kubernetes/tls") else {
        return;
    };
    let pod = &object(&objects, "Deployment", "app")["spec"]["template"]["spec"];
    let command: Vec<&str> = items(&named(&pod["containers"], "tls-reload")["command"])
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(command[..2], ["sh", "-c"]);
    let script = command[2];

    let up = EchoUpstream::start();
    let pki = Pki::new("rotation");
    let live = pki.server("tls", &["localhost", "127.0.0.1"], 90);
    std::fs::rename(&live.cert, pki.dir.path().join("tls.crt")).unwrap();
    std::fs::rename(&live.key, pki.dir.path().join("tls.key")).unwrap();
    let live = Issued {
        cert: pki.dir.path().join("tls.crt"),
        key: pki.dir.path().join("tls.key"),
        ..live
    };
    let ports = Ports::new(up.port);
    let tls_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.toml");
    std::fs::write(
        &config_file,
        with_tls_listen(
            &base_config(&ports, &format!("\n[server.tls]\n{}", files(&live))),
            tls_port,
        ),
    )
    .unwrap();
    let p = SidecarProcess::start(&config_file, ports);
    wait_for_port(tls_port);
    assert_eq!(
        TlsConn::open(tls_port, "localhost", &pki.ca_file).peer_cert(),
        live.der
    );

    let mount = "/run/secrets/session-sidecar-tls";
    for needed in [
        mount,
        "last=$(pair)\n",
        "sleep 30",
        "sleep 5",
        "pkill -HUP -x session-sidecar",
    ] {
        assert!(script.contains(needed), "{needed:?} not in {script}");
    }
    // The loop compares with the files as it first read them: rotate only after that read.
    let first_read = pki.dir.path().join("first-read");
    let local = script
        .replace(
            "last=$(pair)\n",
            &format!("last=$(pair)\ntouch {}\n", first_read.display()),
        )
        .replace(mount, pki.dir.path().to_str().unwrap())
        .replace("sleep 30", "sleep 0.2")
        .replace("sleep 5", "sleep 0.2")
        .replace(
            "pkill -HUP -x session-sidecar",
            &format!("kill -HUP {}", p.child.id()),
        );
    let mut watcher = Command::new("sh").arg("-c").arg(&local).spawn().unwrap();
    assert!(
        poll(|| first_read.exists()),
        "the loop did not start: {local}"
    );

    let next = pki.server("next", &["localhost", "127.0.0.1"], 180);
    rotate(&next, &live);
    let served =
        poll(|| TlsConn::open(tls_port, "localhost", &pki.ca_file).peer_cert() == next.der);
    let _ = watcher.kill();
    let _ = watcher.wait();
    let log = p.stop();
    assert!(
        served,
        "the loop did not get the new certificate served: {log}"
    );
    assert!(log.contains("config reloaded"), "{log}");
}

#[test]
fn config_example_documents_every_tls_key() {
    let text = std::fs::read_to_string(repo().join("config.toml.example")).unwrap();
    for key in [
        "http2 =",
        "# tls_listen =",
        "# [server.tls]",
        "# cert_file =",
        "# key_file =",
        "# min_version = \"1.2\"",
        "# client_ca_file =",
        "# [[server.tls.sni]]",
        "# server_name =",
        "# [server.admin_tls]",
    ] {
        assert!(
            text.contains(key),
            "config.toml.example does not show {key}"
        );
    }
    // Uncommented with real files, the block is a valid config.
    let pki = Pki::new("example");
    let tls_dir = pki.dir.path().join("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    for stem in ["tls", "api", "admin"] {
        let issued = pki.server(stem, &[&format!("{stem}.example.com")], 30);
        std::fs::rename(&issued.cert, tls_dir.join(format!("{stem}.crt"))).unwrap();
        std::fs::rename(&issued.key, tls_dir.join(format!("{stem}.key"))).unwrap();
    }
    std::fs::copy(&pki.ca_file, tls_dir.join("clients-ca.pem")).unwrap();
    // The TLS block: from its heading comment to the next table.
    let start = text.find("# TLS (SPEC").expect("the TLS block");
    let end = start
        + text[start..]
            .find("\n[upstreams.")
            .expect("[upstreams] after it");
    let block: String = text[start..end]
        .lines()
        .map(|l| {
            let toml_line = l.strip_prefix("# ").filter(|rest| {
                rest.starts_with('[')
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' '))
            });
            format!("{}\n", toml_line.unwrap_or(l))
        })
        .collect();
    let uncommented = format!("{}{block}{}", &text[..start], &text[end..]);
    let c = config::parse(&pki.dir.path().join("config.toml"), &uncommented)
        .unwrap_or_else(|e| panic!("the example with its TLS block uncommented: {e}"));
    let tls = c.server.tls.expect("[server.tls]");
    assert_eq!(c.server.tls_listen.len(), 1);
    assert_eq!(tls.sni[0].server_name.as_deref(), Some("api.example.com"));
    assert!(tls.client_ca.is_some());
    assert!(c.server.admin_tls.is_some());
}
