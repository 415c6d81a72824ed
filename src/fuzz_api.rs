//! The one door the fuzz targets (fuzz/fuzz_targets/*.rs) come through: every parser that
//! reads client bytes, called the way a request calls it. Not an API; when a parser moves,
//! only this file changes.

use crate::auth::{AuthResult, Authenticator};
use crate::config::{self, Config, HttpLimits, PathTemplate};
use crate::flavors::tessitura::wire as tessitura_wire;
use crate::flavors::{knowledge_center, spreadsheetweb, voucherify};
use crate::proxy::{framing, locate};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::path::Path;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// A request head through pingora's HTTP/1 reader and `proxy::framing` (SPEC §13.1).
pub struct Framing {
    rt: tokio::runtime::Runtime,
    limits: HttpLimits,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            rt: runtime(),
            limits: HttpLimits {
                max_header_size: 16 * 1024,
                max_headers: 100,
                max_uri: 8 * 1024,
                keepalive_requests: 1000,
                keepalive_timeout: Duration::from_secs(60),
            },
        }
    }
}

impl Framing {
    /// The status the sidecar answers for `head`: 0 when accepted, `None` when pingora's reader
    /// refuses it or the bytes end early.
    pub fn verdict(&self, head: &[u8]) -> Option<u16> {
        self.rt.block_on(async {
            let session = framing::read_head(head).await.ok()??;
            Some(match framing::check_session(&session, &self.limits) {
                Ok(()) => 0,
                Err(r) => r.status(),
            })
        })
    }
}

/// SpreadsheetWEB `OpenDedicatedSession` / `CloseDedicatedSession` bodies (SPEC §4.1).
pub fn spreadsheetweb_body(body: &[u8]) {
    let _ = spreadsheetweb::parse_body(spreadsheetweb::Endpoint::Open, body);
    let _ = spreadsheetweb::parse_body(spreadsheetweb::Endpoint::Close, body);
}

/// Knowledge Center bodies and identity values (SPEC §4.2): `customer` and `agent` as the
/// `gkc_*` headers, `query` as the request's query string.
pub fn knowledge_center(customer: &[u8], agent: &[u8], query: &str, body: &[u8]) {
    let _ = knowledge_center::parse_body(body);
    let _ = knowledge_center::decode_session_id(query);
    let mut headers = HeaderMap::new();
    for (name, value) in [("gkc_customerId", customer), ("gkc_agentId", agent)] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(header_name(name), v);
        }
    }
    let _ = knowledge_center::Identity::parse(&headers, Some(query), body);
}

/// Media types a Tessitura body is parsed as (SPEC §4.3).
pub const TESSITURA_MEDIA_TYPES: [&str; 6] = [
    "application/json",
    "text/json; charset=utf-8",
    "application/xml",
    "text/xml",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
];

/// Tessitura wrapper and native bodies in the media type `media` indexes (mod 6).
pub fn tessitura_body(media: u8, body: &[u8]) {
    let media_type = TESSITURA_MEDIA_TYPES[usize::from(media) % TESSITURA_MEDIA_TYPES.len()];
    let _ = tessitura_wire::parse_transfer_request(Some(media_type), body);
    let _ = tessitura_wire::parse_create_request(Some(media_type), body);
    let _ = tessitura_wire::parse_native_transfer(Some(media_type), body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = tessitura_wire::parse_form(text);
        let _ = tessitura_wire::negotiate(Some(text));
    }
}

/// Voucherify validation and redemption bodies (SPEC §4.4), with an optional path code.
pub fn voucherify_body(path_code: Option<&str>, body: &[u8]) {
    let _ = voucherify::wire::parse_validation(body, path_code, Duration::from_secs(30 * 86_400));
    let _ = voucherify::wire::parse_redemption(body, path_code);
}

/// The locators (SPEC §6): cookie and header values, query string, path templates and JSON
/// body paths, with the settings of SPEC §9's example.
pub fn locators(cookie: &[u8], query: &str, path: &str, body: &[u8]) {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(cookie) {
        headers.append(http::header::COOKIE, v.clone());
        headers.append(header_name("x-session-id"), v);
    }
    let _ = locate::cookie(&headers, "session_id");
    let _ = locate::header_value(&headers, "x-session-id");
    let _ = crate::api::query_param(query, "sessionId");
    for (prefix, suffix) in [("/Web/Session/", ""), ("/p/", ".json")] {
        let template = PathTemplate {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        };
        let _ = locate::path_template(&template, path);
    }
    let fields = [
        vec!["SessionId".to_string()],
        vec!["session".to_string(), "key".to_string()],
    ];
    let _ = locate::from_json(&fields, body);
    let _ = crate::api::is_json(std::str::from_utf8(cookie).ok());
}

/// Credentials (SPEC §5): `Authorization`, app-id pairs and JWTs, checked by an authenticator
/// built from a config with static secrets and a `[jwt]` section on `jwks_file`.
pub struct Credentials {
    rt: tokio::runtime::Runtime,
    auth: Authenticator,
}

impl Credentials {
    /// `dir` must hold `jwks.json` (the fuzz target writes one).
    pub fn new(dir: &Path) -> Credentials {
        let text = format!(
            r#"
[upstreams.app]
address = "127.0.0.1:3000"

[[credentials]]
name = "web"
token_sha256 = "{web}"

[[credentials]]
name = "pos"
app_id = "pos-1"
app_token_sha256 = "{pos}"

[jwt]
jwks_file = "jwks.json"
issuer = "https://id.example.com/"
audience = "session-sidecar"
algorithms = ["RS256", "ES256", "EdDSA"]
"#,
            web = hex::encode(crate::auth::static_secrets::sha256(b"web-token")),
            pos = hex::encode(crate::auth::static_secrets::sha256(b"pos-token")),
        );
        let config: Config = config::parse(&dir.join("fuzz.toml"), &text)
            .unwrap_or_else(|e| panic!("fuzz credentials config: {e}"));
        Credentials {
            rt: runtime(),
            auth: Authenticator::from_config(&config),
        }
    }

    /// Checks one request's credential headers (values that are no valid header value are left
    /// out, as pingora would have refused them).
    pub fn check(&self, fields: &[(&'static str, &[u8])]) -> bool {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                headers.append(header_name(name), v);
            }
        }
        matches!(
            self.rt.block_on(self.auth.authenticate(&headers)),
            AuthResult::Valid(_)
        )
    }
}

/// The config file (SPEC §9) as `check-config` reads it, with host names taken as well-formed
/// rather than looked up (a DNS query per input is the network's speed, not the parser's).
pub fn config_file(text: &str) {
    let _ = config::parse_with(
        Path::new("/nonexistent/fuzz.toml"),
        text,
        config::Resolver::Offline,
    );
}

/// A fixed header name of this file.
fn header_name(name: &str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).expect("a valid header name")
}
