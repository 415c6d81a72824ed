//! JSON Web Key Sets for `[jwt]` (SPEC §5): which keys of a set may verify which algorithms,
//! loading the set from `jwks_file` or `jwks_url`, and keeping the last good set when a load
//! fails.
//!
//! A `Jwks` outlives config generations while its source stays the same (see
//! `Authenticator::from_config_after`), so a SIGHUP neither refetches nor forgets keys. Periodic
//! refreshes are driven by `jwks_refresh::JwksRefresher`; a token whose key is not in the set
//! asks for one early refresh, at most once per `UNKNOWN_KID_COOLDOWN`.

use crate::config::JwksSource;
use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::Mutex;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An unknown `kid` refreshes the set at most this often, so forged tokens cannot make the
/// sidecar hammer the identity provider.
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(10);
/// After a failed load the next periodic attempt comes this soon (or at `jwks_refresh`, if
/// that is shorter) rather than a whole refresh period later.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// One download may take this long in all (connect, TLS, body).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Key sets are a few KiB; anything near this is not one.
const MAX_JWKS_BYTES: u64 = 1 << 20;
/// Keys beyond this many are ignored: a token without `kid` is tried against each key.
const MAX_KEYS: usize = 64;
/// RSA keys shorter than this are ignored (RFC 7518 §3.3 requires 2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// One public key of a set, with the algorithms it may verify.
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

/// The usable signature keys of one JWKS document.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures here (encryption keys,
    /// symmetric `oct` keys, unknown types or curves, short RSA keys) are skipped; a document
    /// with no usable key at all is an error, so it never replaces a good set.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document ({e})"))?;
        let total = doc.keys.len();
        let mut keys = Vec::new();
        for (i, raw) in doc.keys.into_iter().enumerate() {
            if keys.len() == MAX_KEYS {
                log::warn!("JWKS has {total} keys; only the first {MAX_KEYS} usable ones are kept");
                break;
            }
            match usable_key(raw) {
                Ok(k) => keys.push(k),
                Err(why) => log::debug!("JWKS key #{i} skipped: {why}"),
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "none of its {total} keys is a usable signature key"
            ));
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may verify a token with this header: those with its `kid` (every key
    /// when the token names none) that allow its algorithm.
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<&VerifyingKey> {
        self.keys
            .iter()
            .filter(|k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .filter(|k| k.algorithms.contains(&alg))
            .collect()
    }
}

/// One JWK as a verifying key, or why it cannot be one.
fn usable_key(raw: serde_json::Value) -> Result<VerifyingKey, String> {
    let jwk: Jwk =
        serde_json::from_value(raw).map_err(|e| format!("unsupported or malformed ({e})"))?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("not a signature key (\"use\")".into()),
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = base64_len(&p.n);
            if n < MIN_RSA_MODULUS_BYTES {
                return Err(format!("RSA modulus of {} bits is too short", n * 8));
            }
            RSA_ALGORITHMS.to_vec()
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported elliptic curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return Err("unsupported OKP curve".into()),
        },
        // A shared secret published in a key set would let anyone sign tokens.
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are never used".into()),
    };
    // A key that names its algorithm verifies only that one (RFC 7517 §4.4).
    let algorithms = match jwk.common.key_algorithm {
        None => family,
        Some(named) => match Algorithm::from_str(&named.to_string()) {
            Ok(a) if family.contains(&a) => vec![a],
            _ => return Err(format!("\"alg\" {named} does not fit the key type")),
        },
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key material ({e})"))?;
    Ok(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

/// Decoded length of unpadded base64url text (leading zero bytes included, as sent).
fn base64_len(text: &str) -> usize {
    text.trim_end_matches('=').len() * 3 / 4
}

/// Timing of loads, for deciding when the next one is due.
#[derive(Default)]
struct LoadTimes {
    last_attempt: Option<Instant>,
    last_failed: bool,
    last_unknown_kid_refresh: Option<Instant>,
}

/// The key set of one source, kept current.
pub struct Jwks {
    source: JwksSource,
    keys: ArcSwap<KeySet>,
    times: Mutex<LoadTimes>,
    /// Completed load attempts; tells a waiter whether a load finished while it waited.
    attempts: AtomicU64,
    /// One load at a time; waiters use its result instead of loading again.
    loading: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// A key set for `source`. A file is read now (a bad one is logged and retried later, never
    /// fatal); a URL is fetched by the refresher or the first token that needs it, so start-up
    /// never waits on the identity provider.
    pub fn new(source: JwksSource) -> Arc<Jwks> {
        let jwks = Arc::new(Jwks {
            source,
            keys: ArcSwap::from_pointee(KeySet::default()),
            times: Mutex::new(LoadTimes::default()),
            attempts: AtomicU64::new(0),
            loading: tokio::sync::Mutex::new(()),
        });
        if let JwksSource::File(path) = &jwks.source {
            let result = read_file(path);
            jwks.install(result);
        }
        jwks
    }

    pub fn source(&self) -> &JwksSource {
        &self.source
    }

    /// The current key set (empty until a load succeeded).
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Whether the periodic refresh should load again now.
    pub fn is_due(&self, every: Duration) -> bool {
        let times = self.times.lock();
        match times.last_attempt {
            None => true,
            Some(at) => {
                let wait = if times.last_failed {
                    every.min(RETRY_AFTER_FAILURE)
                } else {
                    every
                };
                at.elapsed() >= wait
            }
        }
    }

    /// Loads the set again; on failure the current keys stay. Concurrent callers share one load.
    pub async fn refresh(&self) {
        let seen = self.attempts.load(Ordering::Acquire);
        let _one_at_a_time = self.loading.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return; // a load finished while this one waited: its result is current
        }
        self.load_now().await;
    }

    /// A token named a key the set does not have: refresh early unless that was done within
    /// `UNKNOWN_KID_COOLDOWN`. A load already under way is waited for instead.
    pub async fn refresh_for_unknown_key(&self) {
        let seen = self.attempts.load(Ordering::Acquire);
        let _one_at_a_time = self.loading.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return;
        }
        {
            let mut times = self.times.lock();
            if times
                .last_unknown_kid_refresh
                .is_some_and(|at| at.elapsed() < UNKNOWN_KID_COOLDOWN)
            {
                return;
            }
            times.last_unknown_kid_refresh = Some(Instant::now());
        }
        log::debug!("JWT names a key not in the set: refreshing the JWKS early");
        self.load_now().await;
    }

    /// Loads on the blocking pool (file reads and HTTP are blocking) and installs the result.
    async fn load_now(&self) {
        let source = self.source.clone();
        let result = tokio::task::spawn_blocking(move || load(&source))
            .await
            .unwrap_or_else(|e| Err(format!("loader task failed: {e}")));
        self.install(result);
    }

    fn install(&self, result: Result<KeySet, String>) {
        let mut times = self.times.lock();
        times.last_attempt = Some(Instant::now());
        match result {
            Ok(set) => {
                if times.last_failed || self.keys.load().is_empty() {
                    log::info!(
                        "JWKS loaded from {}: {} usable key(s)",
                        describe(&self.source),
                        set.len()
                    );
                } else {
                    log::debug!(
                        "JWKS refreshed from {}: {} usable key(s)",
                        describe(&self.source),
                        set.len()
                    );
                }
                times.last_failed = false;
                self.keys.store(Arc::new(set));
            }
            Err(why) => {
                times.last_failed = true;
                let kept = self.keys.load().len();
                log::warn!(
                    "JWKS load from {} failed: {why}; keeping the last good set ({kept} key(s))",
                    describe(&self.source)
                );
            }
        }
        self.attempts.fetch_add(1, Ordering::Release);
    }
}

/// Reads and parses the set (blocking: run off the async workers).
fn load(source: &JwksSource) -> Result<KeySet, String> {
    match source {
        JwksSource::File(path) => read_file(path),
        JwksSource::Url(url) => fetch(url),
    }
}

fn read_file(path: &std::path::Path) -> Result<KeySet, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_JWKS_BYTES {
        return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    KeySet::parse(&bytes)
}

fn fetch(url: &str) -> Result<KeySet, String> {
    // The agent honours HTTP(S)_PROXY / NO_PROXY from the environment.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .user_agent(concat!("session-sidecar/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .header("Accept", "application/jwk-set+json, application/json")
        .call()
        .map_err(|e| e.to_string())?;
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    KeySet::parse(&bytes)
}

/// The source for logs: a URL without user info or query, which may hold credentials.
pub fn describe(source: &JwksSource) -> String {
    match source {
        JwksSource::File(path) => path.display().to_string(),
        JwksSource::Url(url) => {
            let no_query = url.split(['?', '#']).next().unwrap_or_default();
            match no_query.split_once("://") {
                Some((scheme, rest)) => {
                    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let host = authority.rsplit('@').next().unwrap_or_default();
                    format!("{scheme}://{host}{path}")
                }
                None => no_query.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture_jwks() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/fixtures/jwt/public-jwks.json")).unwrap()
    }

    fn with(base: &serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        let mut v = base.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn parses_rsa_ec_and_ed_keys_with_their_algorithms() {
        let f = fixture_jwks();
        let doc = json!({"keys": [
            with(&f["rsa-a"], json!({"kid": "r"})),
            with(&f["ec-p256"], json!({"kid": "e"})),
            with(&f["ed25519"], json!({"kid": "d"})),
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.candidates(Some("r"), Algorithm::RS256).len(), 1);
        assert_eq!(set.candidates(Some("r"), Algorithm::PS512).len(), 1);
        assert_eq!(set.candidates(Some("r"), Algorithm::ES256).len(), 0);
        assert_eq!(set.candidates(Some("e"), Algorithm::ES256).len(), 1);
        assert_eq!(set.candidates(Some("e"), Algorithm::ES384).len(), 0);
        assert_eq!(set.candidates(Some("d"), Algorithm::EdDSA).len(), 1);
        assert_eq!(set.candidates(Some("x"), Algorithm::RS256).len(), 0);
        // Without a kid every key of the right type is a candidate.
        assert_eq!(set.candidates(None, Algorithm::RS256).len(), 1);
        // HMAC never matches any key of a set.
        for kid in [Some("r"), Some("e"), Some("d"), None] {
            assert!(set.candidates(kid, Algorithm::HS256).is_empty());
        }
    }

    #[test]
    fn named_algorithm_restricts_the_key() {
        let f = fixture_jwks();
        let doc = json!({"keys": [with(&f["rsa-a"], json!({"kid": "r", "alg": "PS256"}))]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.candidates(Some("r"), Algorithm::PS256).len(), 1);
        assert!(set.candidates(Some("r"), Algorithm::RS256).is_empty());
        // An alg that does not fit the key type makes the key unusable.
        let bad = json!({"keys": [with(&f["rsa-a"], json!({"alg": "ES256"}))]});
        assert!(KeySet::parse(bad.to_string().as_bytes()).is_err());
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let f = fixture_jwks();
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            with(&f["rsa-a"], json!({"kid": "enc", "use": "enc"})),
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "short"},
            {"kty": "weird", "kid": "w"},
            "not an object",
            with(&f["rsa-a"], json!({"kid": "good", "use": "sig"})),
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(
            set.candidates(None, Algorithm::RS256)[0].kid.as_deref(),
            Some("good")
        );
    }

    #[test]
    fn documents_without_usable_keys_are_errors() {
        for bad in [
            &b""[..],
            b"{}",
            b"[]",
            b"{\"keys\": {}}",
            b"{\"keys\": []}",
            b"<html>",
            b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"AA\"}]}",
        ] {
            assert!(
                KeySet::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn urls_are_logged_without_credentials() {
        let d = |u: &str| describe(&JwksSource::Url(u.into()));
        assert_eq!(
            d("https://id.example.com/jwks.json"),
            "https://id.example.com/jwks.json"
        );
        assert_eq!(
            d("https://user:pw@id.example.com/k?apikey=s3cret#x"),
            "https://id.example.com/k"
        );
        assert_eq!(d("http://127.0.0.1:9/"), "http://127.0.0.1:9/");
        assert_eq!(d("http://host"), "http://host");
    }

    #[tokio::test]
    async fn file_reload_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let f = fixture_jwks();
        std::fs::write(
            &path,
            json!({"keys": [with(&f["rsa-a"], json!({"kid": "a"}))]}).to_string(),
        )
        .unwrap();
        let jwks = Jwks::new(JwksSource::File(path.clone()));
        assert_eq!(jwks.keys().len(), 1);
        assert!(!jwks.is_due(Duration::from_secs(60)));
        assert!(jwks.is_due(Duration::ZERO));

        std::fs::write(&path, "{ broken").unwrap();
        jwks.refresh().await;
        assert_eq!(
            jwks.keys().candidates(Some("a"), Algorithm::RS256).len(),
            1,
            "kept"
        );
        // After a failure the retry comes sooner than a long period.
        assert!(!jwks.is_due(RETRY_AFTER_FAILURE));

        std::fs::write(
            &path,
            json!({"keys": [with(&f["rsa-b"], json!({"kid": "b"}))]}).to_string(),
        )
        .unwrap();
        jwks.refresh().await;
        let keys = jwks.keys();
        assert!(
            keys.candidates(Some("a"), Algorithm::RS256).is_empty(),
            "rotated out"
        );
        assert_eq!(keys.candidates(Some("b"), Algorithm::RS256).len(), 1);
    }

    #[tokio::test]
    async fn missing_file_is_not_fatal_and_unknown_key_refresh_is_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.json");
        let jwks = Jwks::new(JwksSource::File(path.clone()));
        assert!(jwks.keys().is_empty());

        let f = fixture_jwks();
        std::fs::write(
            &path,
            json!({"keys": [with(&f["rsa-a"], json!({"kid": "a"}))]}).to_string(),
        )
        .unwrap();
        jwks.refresh_for_unknown_key().await;
        assert_eq!(jwks.keys().len(), 1, "first unknown key loads at once");

        std::fs::write(
            &path,
            json!({"keys": [with(&f["rsa-b"], json!({"kid": "b"}))]}).to_string(),
        )
        .unwrap();
        jwks.refresh_for_unknown_key().await;
        assert!(
            jwks.keys()
                .candidates(Some("b"), Algorithm::RS256)
                .is_empty(),
            "within the cooldown nothing is loaded"
        );
        jwks.refresh().await;
        assert_eq!(
            jwks.keys().candidates(Some("b"), Algorithm::RS256).len(),
            1,
            "a periodic refresh still loads"
        );
    }
}
