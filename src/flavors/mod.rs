//! The wire flavours (SPEC §4): one file per public session API. Each translates between its
//! API's exact wire shape and `SessionService` calls, and nothing else: the proxy reads the
//! request, checks nothing flavour-specific, and writes back whatever `ApiResponse` it gets.
//!
//! Two kinds of traffic reach a flavour:
//! * its **own endpoints** (`SessionApi::answers`), answered entirely by the sidecar;
//! * **forwarded requests** under its base path that it wants to see first
//!   (`SessionApi::inspects`, Voucherify's locks), which may be refused or decorated and get a
//!   `ForwardHook` that follows the app's answer.

pub mod knowledge_center;
pub mod lenient_json;
pub mod spreadsheetweb;
pub mod tessitura;
pub mod tessitura_wire;
pub mod voucherify;

use crate::auth::AuthResult;
use crate::session::Flavor;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;

/// A request to a session API, already read in full (body within `server.max_body`).
pub struct ApiRequest<'a> {
    pub method: &'a Method,
    /// Path relative to the flavour's base path, still percent-encoded as received.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The request's credentials, checked once by the proxy.
    pub auth: &'a AuthResult,
    pub client_ip: Option<IpAddr>,
}

impl ApiRequest<'_> {
    /// The first value of a header as text, if it is valid visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The media type of `Content-Type`, lowercased, without parameters.
    pub fn media_type(&self) -> Option<String> {
        self.header("content-type")
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|m| !m.is_empty())
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        crate::proxy::locate::query_param(self.query?, name)
    }
}

/// A complete answer written by the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl ApiResponse {
    /// `status` with `value` as `application/json`.
    pub fn json(status: u16, value: &impl Serialize) -> ApiResponse {
        Self::json_with_type(status, value, "application/json")
    }

    /// `status` with `value` serialized as JSON, under a specific `Content-Type`.
    pub fn json_with_type(
        status: u16,
        value: &impl Serialize,
        content_type: &'static str,
    ) -> ApiResponse {
        // Serializing our own response types cannot fail (no maps with non-string keys).
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        ApiResponse {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            )],
            body: Bytes::from(body),
        }
    }

    /// `status` with no body.
    pub fn empty(status: u16) -> ApiResponse {
        ApiResponse {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// `status` with a body of the given type.
    pub fn bytes(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> ApiResponse {
        ApiResponse {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            )],
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiResponse {
        self.headers.push((name, value));
        self
    }
}

/// What to do with a forwarded request a flavour inspected.
pub enum ForwardDecision {
    /// Forward it, with the hook (if any) adding headers and following the app's answer.
    Forward(Option<Box<dyn ForwardHook>>),
    /// Do not forward: answer with this (a refusal).
    Answer(ApiResponse),
    /// Do not forward: the request turned out to be for one of the flavour's own endpoints
    /// (a Tessitura key sent unencoded), answered with this.
    Respond(ApiResponse),
}

/// Follows one forwarded request through the app: extra request headers before, and a look at
/// the app's answer after (to commit or roll back what was done before forwarding).
#[async_trait]
pub trait ForwardHook: Send + Sync {
    /// Headers to set on the forwarded request, replacing any client copies.
    fn request_headers(&self) -> Vec<(HeaderName, HeaderValue)>;

    /// Headers to remove from the forwarded request (client copies of headers only the
    /// sidecar may send), before `request_headers` are set.
    fn remove_headers(&self) -> Vec<HeaderName> {
        Vec::new()
    }

    /// Called once with the app's status code, before the answer is sent on.
    async fn on_response(&mut self, status: u16);

    /// Whether the app's answer body should be passed through `rewrite_body` (buffered).
    fn rewrites_body(&self) -> bool {
        false
    }

    /// The body to send instead of the app's, or `None` to send it unchanged.
    fn rewrite_body(&self, _content_type: Option<&str>, _body: &[u8]) -> Option<Vec<u8>> {
        None
    }

    /// Called if the request could not be forwarded at all (upstream down).
    async fn on_failure(&mut self) {}

    /// The session the request names in a way the configured locators cannot read (a
    /// Tessitura key sent unencoded in the path, SPEC §13.7), checked to be live. It takes the
    /// place of what the locators found.
    fn session_key(&self) -> Option<&str> {
        None
    }
}

/// One wire API, mounted under its base path.
#[async_trait]
pub trait SessionApi: Send + Sync {
    fn flavor(&self) -> Flavor;

    /// Whether `path` (relative to the base) is one of this API's own endpoints, for any
    /// method: requests there are answered by `answer` and never forwarded.
    fn answers(&self, path: &str) -> bool;

    /// The answer when the request body exceeds `server.max_body`.
    fn body_too_large(&self) -> ApiResponse;

    /// The answer to a request for one of this API's own endpoints.
    async fn answer(&self, req: &ApiRequest<'_>) -> ApiResponse;

    /// Whether this request to one of this API's own endpoints creates a session, and so counts
    /// against the creation rate limits (`[rate_limits]`).
    fn creates_session(&self, _method: &Method, _path: &str) -> bool {
        false
    }

    /// The answer when a rate limit refuses the request (`Retry-After` in seconds).
    fn rate_limited(&self, retry_after_secs: u64) -> ApiResponse {
        crate::proxy::respond::rate_limited(retry_after_secs)
    }

    /// Whether a forwarded request (not one of `answers`) must first go through `before_forward`.
    fn inspects(&self, _method: &Method, _path: &str) -> bool {
        false
    }

    /// Decides on an inspected forwarded request (its body is read when within `max_body`).
    async fn before_forward(&self, _req: &ApiRequest<'_>) -> ForwardDecision {
        ForwardDecision::Forward(None)
    }
}

/// Every enabled API with its base path.
#[derive(Clone, Default)]
pub struct SessionApis {
    mounted: Vec<(String, Arc<dyn SessionApi>)>,
}

impl SessionApis {
    pub fn new() -> SessionApis {
        SessionApis::default()
    }

    pub fn mount(&mut self, base_path: &str, api: Arc<dyn SessionApi>) {
        self.mounted.push((base_path.to_string(), api));
    }

    /// The API whose own endpoint `path` is, with the path relative to its base.
    pub fn endpoint<'p>(&self, path: &'p str) -> Option<(&Arc<dyn SessionApi>, &'p str)> {
        self.mounted.iter().find_map(|(base, api)| {
            let rel = relative(path, base)?;
            api.answers(rel).then_some((api, rel))
        })
    }

    /// The API that wants to inspect this forwarded request, with the relative path.
    pub fn inspector<'p>(
        &self,
        method: &Method,
        path: &'p str,
    ) -> Option<(&Arc<dyn SessionApi>, &'p str)> {
        self.mounted.iter().find_map(|(base, api)| {
            let rel = relative(path, base)?;
            api.inspects(method, rel).then_some((api, rel))
        })
    }
}

/// `path` relative to `base` if it lies under it (`/a/b` under `/a` is `/b`).
fn relative<'p>(path: &'p str, base: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(base)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Builds and mounts every flavour enabled in `config`.
pub fn mount_all(
    config: &crate::config::Config,
    sessions: &Arc<crate::session::SessionService>,
) -> SessionApis {
    let mut apis = SessionApis::new();
    if let Some(s) = &config.flavors.spreadsheetweb {
        spreadsheetweb::DedicatedSessions::mount(&mut apis, s, sessions, &config.applications);
    }
    if let Some(s) = &config.flavors.knowledge_center {
        let api = knowledge_center::KnowledgeCenter::new(s, sessions.clone());
        apis.mount(&s.base_path, Arc::new(api));
    }
    if let Some(s) = &config.flavors.tessitura {
        let api = tessitura::Tessitura::new(s.clone(), sessions.clone());
        apis.mount(&s.base_path, Arc::new(api));
    }
    if let Some(v) = &config.flavors.voucherify {
        let api = voucherify::Voucherify::new(v, config.server.max_body, sessions.clone());
        apis.mount(&v.base_path, Arc::new(api));
    }
    apis
}

#[cfg(test)]
mod tests {
    use super::relative;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative("/gks-server/v1/sessions/new", "/gks-server/v1"),
            Some("/sessions/new")
        );
        assert_eq!(relative("/gks-server/v10/x", "/gks-server/v1"), None);
        assert_eq!(relative("/Web/Session", ""), Some("/Web/Session"));
        assert_eq!(relative("/a", "/a"), Some(""));
    }
}
