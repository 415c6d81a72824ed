//! Bearer JWTs (SPEC §5). A token is accepted when a key of the `[jwt]` key set verifies its
//! signature with an algorithm from `jwt.algorithms` (never `none`, never HS*: a key set holds
//! public keys, and HMAC "verified" with a public key is the algorithm-confusion attack), and
//! its `exp` / `nbf` (with `leeway`), `iss` and `aud` pass. The credential is named by `sub`;
//! `applications_claim`, when configured, lists the SpreadsheetWEB applications it may use.
//!
//! Signature checks are done by the `jsonwebtoken` crate; this file only chooses the key and
//! the rules. Nothing from the token is logged except why it was refused.

use super::jwks::Jwks;
use super::{AuthResult, Credential};
use crate::config::{ApplicationAccess, JwtSettings};
use crate::metrics::AuthFailure;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

/// Longer bearer values are not tokens this sidecar issues or accepts.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// `sub` becomes the credential name, sent to the app in a header.
const MAX_SUBJECT_CHARS: usize = 256;

type Claims = Map<String, Value>;

/// Checks bearer JWTs against one `[jwt]` configuration.
pub struct JwtVerifier {
    jwks: Arc<Jwks>,
    /// One rule set per allowed algorithm: `jsonwebtoken` requires every algorithm of a
    /// `Validation` to belong to the verifying key's family.
    validations: Vec<(Algorithm, Validation)>,
    applications_claim: Option<String>,
    /// Names of the static credentials. A token whose `sub` is one of them is refused, so an
    /// identity provider subject can never act as (and see the sessions of) a static credential.
    reserved_names: HashSet<String>,
}

impl JwtVerifier {
    pub fn new(
        settings: &JwtSettings,
        jwks: Arc<Jwks>,
        reserved_names: HashSet<String>,
    ) -> JwtVerifier {
        let validations = settings
            .algorithms
            .iter()
            // The config allows only names this crate knows (validated in config::runtime).
            .filter_map(|name| Algorithm::from_str(name).ok())
            .map(|alg| (alg, validation(settings, alg)))
            .collect();
        JwtVerifier {
            jwks,
            validations,
            applications_claim: settings.applications_claim.clone(),
            reserved_names,
        }
    }

    pub fn jwks(&self) -> &Arc<Jwks> {
        &self.jwks
    }

    /// The credential a bearer JWT proves, or why it proves none.
    pub async fn verify(&self, token: &[u8]) -> AuthResult {
        match self.check(token).await {
            Ok(credential) => AuthResult::Valid(Arc::new(credential)),
            Err(refusal) => {
                log::debug!("bearer JWT refused: {}", refusal.reason);
                AuthResult::Refused(refusal.failure)
            }
        }
    }

    async fn check(&self, token: &[u8]) -> Result<Credential, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::invalid("too long"));
        }
        let token = std::str::from_utf8(token).map_err(|_| Refusal::invalid("not text"))?;
        // `alg: none` and unknown algorithms fail here: the crate has no such algorithm.
        let header = decode_header(token).map_err(|_| Refusal::invalid("malformed header"))?;
        let Some((alg, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg)
        else {
            return Err(Refusal::invalid(format!(
                "algorithm {:?} is not allowed",
                header.alg
            )));
        };
        let kid = header.kid.as_deref();
        let mut keys = self.jwks.keys();
        if keys.candidates(kid, *alg).is_empty() {
            // Perhaps the provider rotated keys since the last refresh.
            self.jwks.refresh_for_unknown_key().await;
            keys = self.jwks.keys();
        }
        let candidates = keys.candidates(kid, *alg);
        if candidates.is_empty() {
            return Err(Refusal::invalid(match kid {
                Some(_) => "its kid is not in the key set (for its algorithm)",
                None => "no key in the set fits its algorithm",
            }));
        }
        for key in candidates {
            match decode::<Claims>(token, &key.key, validation) {
                Ok(data) => return self.credential(&data.claims),
                // Without a kid several keys may fit: try the next one.
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => continue,
                Err(e) => return Err(Refusal::from_error(e.kind())),
            }
        }
        Err(Refusal::invalid("bad signature"))
    }

    fn credential(&self, claims: &Claims) -> Result<Credential, Refusal> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if sub.is_empty()
            || sub.chars().count() > MAX_SUBJECT_CHARS
            || sub.chars().any(char::is_control)
        {
            return Err(Refusal::invalid("sub must be 1-256 printable characters"));
        }
        if self.reserved_names.contains(sub) {
            log::warn!("bearer JWT refused: its sub {sub:?} is the name of a static credential");
            return Err(Refusal::invalid("sub names a static credential"));
        }
        Ok(Credential {
            name: Arc::from(sub),
            // Admin rights come only from `[[credentials]]` with `admin = true`.
            admin: false,
            applications: self.applications(claims)?,
        })
    }

    /// Without `applications_claim` a token may use every application; with it, exactly those
    /// the claim lists (a list of keys, or one key as a string; `"*"` = all). A token without
    /// the claim may use none.
    fn applications(&self, claims: &Claims) -> Result<ApplicationAccess, Refusal> {
        let Some(claim) = &self.applications_claim else {
            return Ok(ApplicationAccess::All);
        };
        let list: Vec<String> = match claims.get(claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| Refusal::invalid(format!("claim {claim:?} must list strings")))?,
            Some(_) => {
                return Err(Refusal::invalid(format!(
                    "claim {claim:?} must be a list of strings"
                )))
            }
        };
        Ok(ApplicationAccess::from_list(&list))
    }
}

/// The rules for tokens signed with `alg`.
fn validation(settings: &JwtSettings, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = settings.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    // A token must expire and must name its subject; issuer and audience, when configured,
    // must be present, not just right when present.
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = &settings.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    match &settings.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// Whether a bearer value has the shape of a compact JWS: three base64url parts, the first two
/// non-empty (an empty signature is left for the verifier to refuse).
pub fn looks_like_jwt(token: &[u8]) -> bool {
    let mut parts = token.split(|b| *b == b'.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let base64url = |p: &[u8]| {
        p.iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    };
    !header.is_empty()
        && !payload.is_empty()
        && [header, payload, signature].into_iter().all(base64url)
}

/// Why a token was refused: the metric reason, and a log text that holds nothing from the token
/// beyond its algorithm.
struct Refusal {
    failure: AuthFailure,
    reason: String,
}

impl Refusal {
    fn invalid(reason: impl Into<String>) -> Refusal {
        Refusal {
            failure: AuthFailure::Invalid,
            reason: reason.into(),
        }
    }

    fn from_error(kind: &ErrorKind) -> Refusal {
        let reason = match kind {
            ErrorKind::ExpiredSignature => {
                return Refusal {
                    failure: AuthFailure::Expired,
                    reason: "expired".into(),
                };
            }
            ErrorKind::ImmatureSignature => "not valid yet (nbf)",
            ErrorKind::InvalidIssuer => "wrong issuer",
            ErrorKind::InvalidAudience => "wrong audience",
            ErrorKind::MissingRequiredClaim(c) => {
                return Refusal::invalid(format!("claim {c:?} is missing"))
            }
            ErrorKind::InvalidClaimFormat(c) => {
                return Refusal::invalid(format!("claim {c:?} is malformed"))
            }
            ErrorKind::InvalidAlgorithm => "algorithm does not fit the key",
            _ => "malformed",
        };
        Refusal::invalid(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JwksSource;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;
    use std::time::Duration;

    const RSA_A: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa-a.key.pem");
    const RSA_B: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa-b.key.pem");
    const RSA_A_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa-a.pub.pem");
    const EC: &[u8] = include_bytes!("../../tests/fixtures/jwt/ec-p256.key.pem");
    const ED: &[u8] = include_bytes!("../../tests/fixtures/jwt/ed25519.key.pem");

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn jwk(name: &str, kid: &str) -> Value {
        let all: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/jwt/public-jwks.json"))
                .unwrap();
        let mut k = all[name].clone();
        k["kid"] = json!(kid);
        k
    }

    fn settings(path: &std::path::Path) -> JwtSettings {
        JwtSettings {
            jwks: JwksSource::File(path.to_path_buf()),
            jwks_refresh: Duration::from_secs(300),
            issuer: Some("https://id.test/".into()),
            audience: Some("sidecar".into()),
            algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
            leeway: Duration::from_secs(30),
            applications_claim: Some("apps".into()),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        verifier: JwtVerifier,
    }

    fn fixture_with(edit: impl FnOnce(&mut JwtSettings)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let doc =
            json!({"keys": [jwk("rsa-a", "rsa-a"), jwk("ec-p256", "ec"), jwk("ed25519", "ed")]});
        std::fs::write(&path, doc.to_string()).unwrap();
        let mut s = settings(&path);
        edit(&mut s);
        let verifier = JwtVerifier::new(
            &s,
            Jwks::new(s.jwks.clone()),
            HashSet::from(["static-web".to_string()]),
        );
        Fixture {
            _dir: dir,
            verifier,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(|_| {})
    }

    fn good_claims() -> Value {
        json!({"sub": "alice", "iss": "https://id.test/", "aud": "sidecar", "exp": now() + 600, "apps": ["app-1"]})
    }

    fn claims_with(changes: Value) -> Value {
        let mut c = good_claims();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        encode(&h, claims, key).unwrap()
    }

    fn rsa_a() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_A).unwrap()
    }

    fn rs256(claims: &Value) -> String {
        sign(Algorithm::RS256, Some("rsa-a"), &rsa_a(), claims)
    }

    async fn verify(f: &Fixture, token: &str) -> AuthResult {
        f.verifier.verify(token.as_bytes()).await
    }

    fn name(r: &AuthResult) -> Option<String> {
        r.credential().map(|c| c.name.to_string())
    }

    const INVALID: AuthResult = AuthResult::Refused(AuthFailure::Invalid);

    #[tokio::test]
    async fn accepts_each_key_type() {
        let f = fixture();
        let c = good_claims();
        let ok = [
            rs256(&c),
            sign(
                Algorithm::ES256,
                Some("ec"),
                &EncodingKey::from_ec_pem(EC).unwrap(),
                &c,
            ),
            sign(
                Algorithm::EdDSA,
                Some("ed"),
                &EncodingKey::from_ed_pem(ED).unwrap(),
                &c,
            ),
            // No kid: every key of the token's type is tried.
            sign(Algorithm::RS256, None, &rsa_a(), &c),
        ];
        for token in ok {
            let r = verify(&f, &token).await;
            assert_eq!(name(&r).as_deref(), Some("alice"), "{r:?}");
            let cred = r.credential().unwrap();
            assert!(!cred.admin);
            assert_eq!(
                cred.applications,
                ApplicationAccess::from_list(&["app-1".into()])
            );
        }
    }

    #[tokio::test]
    async fn algorithms_outside_the_allow_list_are_refused() {
        let f = fixture_with(|s| s.algorithms = vec!["ES256".into()]);
        assert_eq!(verify(&f, &rs256(&good_claims())).await, INVALID);
        // PS256 with the same RSA key is not in the list either.
        let f = fixture();
        let ps = sign(Algorithm::PS256, Some("rsa-a"), &rsa_a(), &good_claims());
        assert_eq!(verify(&f, &ps).await, INVALID);
    }

    #[tokio::test]
    async fn expiry_and_not_before_honour_leeway() {
        let f = fixture();
        let t = now();
        let cases = [
            (json!({"exp": t - 10}), None),
            (json!({"exp": t - 120}), Some(AuthFailure::Expired)),
            (json!({"nbf": t + 10}), None),
            (json!({"nbf": t + 120}), Some(AuthFailure::Invalid)),
            (json!({"exp": null}), Some(AuthFailure::Invalid)),
            (json!({"exp": "tomorrow"}), Some(AuthFailure::Invalid)),
        ];
        for (change, refused) in cases {
            let r = verify(&f, &rs256(&claims_with(change.clone()))).await;
            assert_eq!(r.failure(), refused, "{change}: {r:?}");
        }
        let strict = fixture_with(|s| s.leeway = Duration::ZERO);
        let r = verify(&strict, &rs256(&claims_with(json!({"exp": t - 10})))).await;
        assert_eq!(r, AuthResult::Refused(AuthFailure::Expired));
    }

    #[tokio::test]
    async fn issuer_audience_and_subject_are_checked() {
        let f = fixture();
        let refused = [
            json!({"iss": "https://evil.test/"}),
            json!({"iss": null}),
            json!({"aud": "someone-else"}),
            json!({"aud": ["a", "b"]}),
            json!({"aud": null}),
            json!({"sub": null}),
            json!({"sub": ""}),
            json!({"sub": 42}),
            json!({"sub": "line\nbreak"}),
            json!({"sub": "x".repeat(257)}),
            json!({"sub": "static-web"}),
        ];
        for change in refused {
            let r = verify(&f, &rs256(&claims_with(change.clone()))).await;
            assert_eq!(r, INVALID, "{change}");
        }
        let r = verify(
            &f,
            &rs256(&claims_with(json!({"aud": ["other", "sidecar"]}))),
        )
        .await;
        assert_eq!(
            name(&r).as_deref(),
            Some("alice"),
            "one of several audiences"
        );
        // Without configured issuer/audience, tokens need not carry them (and any value passes).
        let open = fixture_with(|s| {
            s.issuer = None;
            s.audience = None;
        });
        let r = verify(
            &open,
            &rs256(&claims_with(json!({"iss": null, "aud": "whoever"}))),
        )
        .await;
        assert_eq!(name(&r).as_deref(), Some("alice"));
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let f = fixture();
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        for header in [
            json!({"alg": "none", "kid": "rsa-a"}),
            json!({"alg": "None"}),
            json!({"alg": "NONE", "typ": "JWT"}),
        ] {
            let token = format!("{}.{}.", b64(header.clone()), b64(good_claims()));
            assert!(looks_like_jwt(token.as_bytes()));
            assert_eq!(verify(&f, &token).await, INVALID, "{header}");
            // A signature copied from a real token does not help.
            let real = rs256(&good_claims());
            let sig = real.rsplit('.').next().unwrap();
            assert_eq!(verify(&f, &format!("{token}{sig}")).await, INVALID);
        }
    }

    #[tokio::test]
    async fn hmac_signed_with_the_public_key_is_refused() {
        let f = fixture();
        let public_der = {
            let pem = std::str::from_utf8(RSA_A_PUBLIC).unwrap();
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap()
        };
        let all: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/jwt/public-jwks.json"))
                .unwrap();
        let n = URL_SAFE_NO_PAD
            .decode(all["rsa-a"]["n"].as_str().unwrap())
            .unwrap();
        let jwk_text = all["rsa-a"].to_string();
        let secrets: [&[u8]; 4] = [RSA_A_PUBLIC, &public_der, &n, jwk_text.as_bytes()];
        for secret in secrets {
            for (alg, kid) in [
                (Algorithm::HS256, Some("rsa-a")),
                (Algorithm::HS256, None),
                (Algorithm::HS512, Some("rsa-a")),
            ] {
                let token = sign(alg, kid, &EncodingKey::from_secret(secret), &good_claims());
                assert_eq!(verify(&f, &token).await, INVALID, "{alg:?} {kid:?}");
            }
        }
        // Even when an operator lists an HMAC algorithm in a hand-built setting, no key of a
        // key set ever verifies HMAC.
        let careless = fixture_with(|s| s.algorithms.push("HS256".into()));
        let token = sign(
            Algorithm::HS256,
            Some("rsa-a"),
            &EncodingKey::from_secret(RSA_A_PUBLIC),
            &good_claims(),
        );
        assert_eq!(verify(&careless, &token).await, INVALID);
    }

    #[tokio::test]
    async fn wrong_key_unknown_kid_and_tampering_are_refused() {
        let f = fixture();
        let other = EncodingKey::from_rsa_pem(RSA_B).unwrap();
        assert_eq!(
            verify(
                &f,
                &sign(Algorithm::RS256, Some("rsa-a"), &other, &good_claims())
            )
            .await,
            INVALID
        );
        assert_eq!(
            verify(&f, &sign(Algorithm::RS256, None, &other, &good_claims())).await,
            INVALID
        );
        assert_eq!(
            verify(
                &f,
                &sign(Algorithm::RS256, Some("nope"), &rsa_a(), &good_claims())
            )
            .await,
            INVALID
        );
        // An ES256 token naming the RSA key's kid finds no key for its algorithm.
        let ec = sign(
            Algorithm::ES256,
            Some("rsa-a"),
            &EncodingKey::from_ec_pem(EC).unwrap(),
            &good_claims(),
        );
        assert_eq!(verify(&f, &ec).await, INVALID);
        // Swap in other claims under a valid signature.
        let token = rs256(&good_claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(claims_with(json!({"sub": "mallory"})).to_string());
        assert_eq!(
            verify(&f, &format!("{}.{forged}.{}", parts[0], parts[2])).await,
            INVALID
        );
        for junk in [
            "",
            "a.b",
            "a.b.c",
            "...",
            "a.b.c.d",
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(verify(&f, junk).await, INVALID, "{junk:.20}");
        }
        assert_eq!(
            f.verifier.verify(&[0xff, b'.', b'a', b'.', b'b']).await,
            INVALID
        );
    }

    #[tokio::test]
    async fn applications_claim_decides_the_applications() {
        let f = fixture();
        let apps = |r: AuthResult| r.credential().map(|c| c.applications.clone());
        let only = |keys: &[&str]| {
            Some(ApplicationAccess::Only(
                keys.iter().map(|k| k.to_string()).collect(),
            ))
        };
        assert_eq!(
            apps(verify(&f, &rs256(&claims_with(json!({"apps": ["a", "b"]})))).await),
            only(&["a", "b"])
        );
        assert_eq!(
            apps(verify(&f, &rs256(&claims_with(json!({"apps": "a"})))).await),
            only(&["a"])
        );
        assert_eq!(
            apps(verify(&f, &rs256(&claims_with(json!({"apps": ["*"]})))).await),
            Some(ApplicationAccess::All)
        );
        assert_eq!(
            apps(verify(&f, &rs256(&claims_with(json!({"apps": []})))).await),
            only(&[])
        );
        assert_eq!(
            apps(verify(&f, &rs256(&claims_with(json!({"apps": null})))).await),
            only(&[]),
            "absent claim: none"
        );
        for bad in [
            json!({"apps": [1, 2]}),
            json!({"apps": {"a": true}}),
            json!({"apps": 7}),
            json!({"apps": ["a", null]}),
        ] {
            assert_eq!(
                verify(&f, &rs256(&claims_with(bad.clone()))).await,
                INVALID,
                "{bad}"
            );
        }
        // Not configured: every application, whatever the token carries.
        let open = fixture_with(|s| s.applications_claim = None);
        assert_eq!(
            apps(verify(&open, &rs256(&claims_with(json!({"apps": ["a"]})))).await),
            Some(ApplicationAccess::All)
        );
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt(b"eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt(b"a-_.b.")); // unsigned: shaped like one, refused later
        for not in [
            &b""[..],
            b"abc",
            b"a.b",
            b"a.b.c.d",
            b".b.c",
            b"a..c",
            b"a.b.c=",
            b"a b.c.d",
            b"a.b.c/",
        ] {
            assert!(!looks_like_jwt(not), "{}", String::from_utf8_lossy(not));
        }
    }
}
