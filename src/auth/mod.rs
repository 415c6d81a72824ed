//! Credentials (SPEC §5, §13.7): who is calling. Every source — static bearer tokens, app-id
//! pairs, Basic user/password pairs, JWTs — yields the same `Credential`, so routes, flavours and the `credential` identity
//! header treat them alike.

pub mod jwks;
pub mod jwt;
pub mod static_secrets;

use crate::config::{ApplicationAccess, Config};
use crate::metrics::{self, AuthFailure};
use http::header::HeaderName;
use http::HeaderMap;
use jwks::Jwks;
use jwt::JwtVerifier;
use static_secrets::StaticSecrets;
use std::sync::Arc;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub name: Arc<str>,
    pub admin: bool,
    pub applications: ApplicationAccess,
}

/// The result of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// The request presented no credential at all.
    Missing,
    Valid(Arc<Credential>),
    /// A credential was presented but refused (`Invalid` or `Expired`).
    Refused(AuthFailure),
}

impl AuthResult {
    pub fn credential(&self) -> Option<&Arc<Credential>> {
        match self {
            AuthResult::Valid(c) => Some(c),
            _ => None,
        }
    }

    /// The failure to count when this result is not acceptable where a credential is required.
    pub fn failure(&self) -> Option<AuthFailure> {
        match self {
            AuthResult::Valid(_) => None,
            AuthResult::Missing => Some(AuthFailure::Missing),
            AuthResult::Refused(f) => Some(*f),
        }
    }

    /// Counts the failure in `auth_failures_total` (call once where the refusal is decided).
    pub fn record_failure(&self) {
        if let Some(f) = self.failure() {
            metrics::auth_failure(f);
        }
    }
}

/// Checks presented credentials against the configured ones.
pub struct Authenticator {
    secrets: StaticSecrets,
    /// Set when `[jwt]` is configured.
    jwt: Option<JwtVerifier>,
}

/// The id and token headers of the two app-pair schemes, built once: a `&str` name is parsed
/// again on every lookup, and every request without a bearer token looks up all four.
static APP_PAIR_HEADERS: [(HeaderName, HeaderName); 2] = [
    (
        HeaderName::from_static("x-app-id"),
        HeaderName::from_static("x-app-token"),
    ),
    (
        HeaderName::from_static("x-client-application-id"),
        HeaderName::from_static("x-client-token"),
    ),
];

impl Authenticator {
    pub fn from_config(config: &Config) -> Authenticator {
        Authenticator::from_config_after(config, None)
    }

    /// Like `from_config`, but keeps the key set of `previous` (the generation being replaced)
    /// when the JWKS source is unchanged, so a reload neither refetches nor forgets keys.
    pub fn from_config_after(config: &Config, previous: Option<&Authenticator>) -> Authenticator {
        let jwt = config.jwt.as_ref().map(|settings| {
            let jwks = previous
                .and_then(Authenticator::jwks)
                .filter(|j| *j.source() == settings.jwks)
                .cloned()
                .unwrap_or_else(|| Jwks::new(settings.jwks.clone()));
            let static_names = config.credentials.iter().map(|c| c.name.clone()).collect();
            JwtVerifier::new(settings, jwks, static_names)
        });
        Authenticator {
            secrets: StaticSecrets::from_config(&config.credentials),
            jwt,
        }
    }

    /// The JWT key set, when `[jwt]` is configured (the refresher keeps it current).
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwt.as_ref().map(JwtVerifier::jwks)
    }

    /// Checks `Authorization` (Bearer or Basic), `X-App-Id`/`X-App-Token` and
    /// `X-Client-Application-Id`/`X-Client-Token`, in that order of preference. A bearer token
    /// that is no static one is checked as a JWT when `[jwt]` is configured and it has the shape.
    pub async fn authenticate(&self, headers: &HeaderMap) -> AuthResult {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            if let Some(pair) = basic_credentials(value.as_bytes()) {
                return match pair.and_then(|(user, password)| self.secrets.basic(&user, &password))
                {
                    Some(c) => AuthResult::Valid(c),
                    None => AuthResult::Refused(AuthFailure::Invalid),
                };
            }
            let Some(token) = bearer_token(value.as_bytes()) else {
                return AuthResult::Refused(AuthFailure::Invalid);
            };
            if let Some(c) = self.secrets.bearer(token) {
                return AuthResult::Valid(c);
            }
            return match &self.jwt {
                Some(verifier) if jwt::looks_like_jwt(token) => verifier.verify(token).await,
                _ => AuthResult::Refused(AuthFailure::Invalid),
            };
        }
        for (id_header, token_header) in &APP_PAIR_HEADERS {
            let id = headers.get(id_header);
            let token = headers.get(token_header);
            match (id, token) {
                (None, None) => continue,
                (Some(id), Some(token)) => {
                    return match self.secrets.app_pair(id.as_bytes(), token.as_bytes()) {
                        Some(c) => AuthResult::Valid(c),
                        None => AuthResult::Refused(AuthFailure::Invalid),
                    }
                }
                // Half a pair is a malformed credential, not an absent one.
                _ => return AuthResult::Refused(AuthFailure::Invalid),
            }
        }
        AuthResult::Missing
    }
}

/// The header that carried the secret `authenticate` checks first, when there is one: the
/// one `[proxy] strip_credentials` removes once it was validated (SPEC §13.7).
pub fn secret_header(headers: &HeaderMap) -> Option<HeaderName> {
    if headers.contains_key(http::header::AUTHORIZATION) {
        return Some(http::header::AUTHORIZATION);
    }
    [
        ("x-app-id", "x-app-token"),
        ("x-client-application-id", "x-client-token"),
    ]
    .into_iter()
    .find(|(id, token)| headers.contains_key(*id) || headers.contains_key(*token))
    .map(|(_, token)| HeaderName::from_static(token))
}

/// `Authorization: Basic base64(user:password)` (scheme case-insensitive): `None` when the
/// scheme is not Basic; `Some(None)` when it is but the value is malformed. The pair is split
/// at the **last** colon, so users may contain colons (Tessitura's
/// `user:usergroup:location:password`) and passwords may not.
pub fn basic_credentials(value: &[u8]) -> Option<Option<(Vec<u8>, Vec<u8>)>> {
    use base64::Engine;
    let value = value.trim_ascii();
    let (scheme, rest) =
        value.split_at(value.iter().position(|b| *b == b' ').unwrap_or(value.len()));
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok();
    Some(decoded.and_then(|pair| {
        let colon = pair.iter().rposition(|b| *b == b':')?;
        let (user, password) = (&pair[..colon], &pair[colon + 1..]);
        (!user.is_empty()).then(|| (user.to_vec(), password.to_vec()))
    }))
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any Authorization value parses without panicking; a token, when found, is the
        /// trimmed, non-empty rest after the scheme.
        #[test]
        fn bearer_parser_is_total(value in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Some(token) = bearer_token(&value) {
                prop_assert!(!token.is_empty());
                prop_assert!(value.len() >= 7 + token.len());
                prop_assert_eq!(token, token.trim_ascii());
            }
        }

        #[test]
        fn basic_parser_is_total(value in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Some(Some((user, _))) = basic_credentials(&value) {
                prop_assert!(!user.is_empty());
            }
        }

        #[test]
        fn basic_round_trip(user in "[ -~]{1,40}", password in "[ -9;-~]{0,40}") {
            use base64::Engine;
            let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
            prop_assert_eq!(
                basic_credentials(value.as_bytes()),
                Some(Some((user.into_bytes(), password.into_bytes())))
            );
        }

        #[test]
        fn bearer_round_trip(token in "[!-~]{1,80}") {
            let value = format!("Bearer {token}");
            prop_assert_eq!(bearer_token(value.as_bytes()), Some(token.as_bytes()));
        }
    }

    #[test]
    fn basic_parsing() {
        use base64::Engine;
        let enc = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let pair = |u: &str, p: &str| Some(Some((u.as_bytes().to_vec(), p.as_bytes().to_vec())));
        assert_eq!(basic_credentials(enc("u:p").as_bytes()), pair("u", "p"));
        assert_eq!(
            basic_credentials(enc("user:group:LOC:secret").as_bytes()),
            pair("user:group:LOC", "secret"),
            "split at the last colon"
        );
        assert_eq!(basic_credentials(enc("u:").as_bytes()), pair("u", ""));
        assert_eq!(
            basic_credentials(format!("  bAsIc   {}  ", &enc("u:p")[6..]).as_bytes()),
            pair("u", "p")
        );
        for malformed in [
            enc("no-colon"),
            enc(":password-only"),
            "Basic !!!".to_string(),
            "Basic ".to_string(),
            "Basic dTpw=====".to_string(),
        ] {
            assert_eq!(
                basic_credentials(malformed.as_bytes()),
                Some(None),
                "{malformed}"
            );
        }
        for other in ["Bearer abc", "Basicx", "", "Digest u=1"] {
            assert_eq!(basic_credentials(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn secret_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(secret_header(&h), None);
        h.insert("x-client-token", "t".parse().unwrap());
        assert_eq!(secret_header(&h).unwrap(), "x-client-token");
        h.insert("x-app-id", "a".parse().unwrap());
        assert_eq!(secret_header(&h).unwrap(), "x-app-token");
        h.insert("authorization", "Basic x".parse().unwrap());
        assert_eq!(secret_header(&h).unwrap(), "authorization");
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b""), None);
    }
}
