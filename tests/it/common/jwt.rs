//! JWT helpers for tests: signing keys from `tests/fixtures/jwt`, tokens, JWKS documents, and a
//! JWKS server on a loopback port whose answer, availability and hit count the test controls.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const ISSUER: &str = "https://id.test/";
pub const AUDIENCE: &str = "sidecar-test";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The public half of the RSA key `rsa-a`, as PEM (the algorithm-confusion "secret").
pub fn rsa_a_public_pem() -> Vec<u8> {
    fixture("rsa-a.pub.pem")
}

/// A signing key of the fixtures under a `kid` of the test's choosing.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    fixture: &'static str,
    encoding: EncodingKey,
}

impl TestKey {
    pub fn rsa_a(kid: &str) -> TestKey {
        TestKey::new(
            kid,
            Algorithm::RS256,
            "rsa-a",
            EncodingKey::from_rsa_pem(&fixture("rsa-a.key.pem")).unwrap(),
        )
    }

    pub fn rsa_b(kid: &str) -> TestKey {
        TestKey::new(
            kid,
            Algorithm::RS256,
            "rsa-b",
            EncodingKey::from_rsa_pem(&fixture("rsa-b.key.pem")).unwrap(),
        )
    }

    pub fn ec(kid: &str) -> TestKey {
        TestKey::new(
            kid,
            Algorithm::ES256,
            "ec-p256",
            EncodingKey::from_ec_pem(&fixture("ec-p256.key.pem")).unwrap(),
        )
    }

    pub fn ed(kid: &str) -> TestKey {
        TestKey::new(
            kid,
            Algorithm::EdDSA,
            "ed25519",
            EncodingKey::from_ed_pem(&fixture("ed25519.key.pem")).unwrap(),
        )
    }

    fn new(kid: &str, alg: Algorithm, fixture: &'static str, encoding: EncodingKey) -> TestKey {
        TestKey {
            kid: kid.to_string(),
            alg,
            fixture,
            encoding,
        }
    }

    /// The public JWK, with this key's `kid`.
    pub fn jwk(&self) -> Value {
        let all: Value = serde_json::from_slice(&fixture("public-jwks.json")).unwrap();
        let mut k = all[self.fixture].clone();
        k["kid"] = json!(self.kid);
        k
    }

    /// A token over `claims`, naming this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(Some(&self.kid), claims)
    }

    /// A token over `claims` with any (or no) `kid` in its header.
    pub fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims that pass the `[jwt]` table of `jwt_table`, for subject `sub`, with `changes` applied
/// (a `null` value removes the claim).
pub fn claims(sub: &str, changes: Value) -> Value {
    let mut c = json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": unix_now(), "exp": unix_now() + 600});
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// A `[jwt]` table whose key set is at `source` (`jwks_file = "…"` or `jwks_url = "…"`).
pub fn jwt_table(source: &str, refresh: &str) -> String {
    format!(
        r#"
[jwt]
{source}
jwks_refresh = "{refresh}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
algorithms = ["RS256", "ES256", "EdDSA"]
leeway = "30s"
applications_claim = "apps"
"#
    )
}

struct Answer {
    status: u16,
    body: String,
}

/// An HTTP server for one JWKS document on 127.0.0.1. Dropping it (or `stop`) closes the
/// port, so later fetches are refused at connect.
pub struct JwksServer {
    pub port: u16,
    answer: Arc<Mutex<Answer>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    pub fn start(body: &str) -> JwksServer {
        JwksServer::start_on(super::free_port(), body)
    }

    pub fn start_on(port: u16, body: &str) -> JwksServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind JWKS server");
        listener.set_nonblocking(true).unwrap();
        let answer = Arc::new(Mutex::new(Answer {
            status: 200,
            body: body.to_string(),
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (answer, hits, stop) = (answer.clone(), hits.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            conn.set_nonblocking(false).unwrap();
                            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            let mut head = Vec::new();
                            let mut byte = [0u8; 1];
                            while !head.ends_with(b"\r\n\r\n")
                                && conn.read(&mut byte).is_ok_and(|n| n == 1)
                            {
                                head.push(byte[0]);
                            }
                            hits.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = {
                                let a = answer.lock().unwrap();
                                (a.status, a.body.clone())
                            };
                            let reply = format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = conn.write_all(reply.as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        JwksServer {
            port,
            answer,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    /// Serve `body` with `status` from now on.
    pub fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = Answer {
            status,
            body: body.to_string(),
        };
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Closes the port.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}
