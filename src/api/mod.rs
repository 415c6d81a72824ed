//! The neutral API layer between the wire flavours and the pingora proxy (and the admin
//! listener): what a session API sees of a request (`ApiRequest`, with its body already read
//! into a `RequestBody`), what it answers (`ApiResponse`), the sidecar's own error shape and
//! rate-limit answer, and the media-type and query helpers both sides read requests with.
//!
//! Both `flavors/` and `proxy/` build on this module and neither imports the other: a flavour
//! knows nothing of pingora (its sessions, buffers or hooks), and the proxy knows nothing of
//! any flavour's wire shape. `SessionApi` and `ForwardHook` are the two traits that keep it so
//! (SPEC §4 for the flavours, §6 for forwarding):
//!
//! * a flavour's **own endpoints** (`SessionApi::answers`) are answered entirely by the sidecar;
//! * **forwarded requests** under its base path that it wants to see first
//!   (`SessionApi::inspects`, Voucherify's locks) may be refused or decorated, and get a
//!   `ForwardHook` that follows the app's answer.

pub mod json;
pub mod media;
pub mod response;

pub use media::{is_json, media_type, query_param};
pub use response::{error, rate_limited, ApiResponse};

use crate::auth::AuthResult;
use crate::session::Flavor;
use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use std::net::IpAddr;
use std::sync::Arc;

/// Largest forwarded-request body read for a flavour's inspection: it must still reach the
/// app unchanged, and the proxy can replay at most this much (pingora's retry buffer).
pub const MAX_INSPECTED_BODY: usize = 64 * 1024;

/// What became of a request's body before the flavour saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody<'a> {
    /// Read in full (possibly empty).
    Complete(&'a [u8]),
    /// Larger than `limit` bytes, as announced or as sent: not read.
    TooLarge { limit: usize },
    /// Not read: sent without a length (chunked), so it is forwarded as a stream.
    NotRead,
}

impl<'a> RequestBody<'a> {
    /// The body's bytes; empty unless it was read in full.
    pub fn bytes(&self) -> &'a [u8] {
        match self {
            RequestBody::Complete(b) => b,
            RequestBody::TooLarge { .. } | RequestBody::NotRead => &[],
        }
    }
}

/// A request to a session API, as a flavour sees it.
pub struct ApiRequest<'a> {
    pub method: &'a Method,
    /// Path relative to the flavour's base path, still percent-encoded as received.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Requests to a flavour's own endpoints always arrive `Complete` (within
    /// `server.max_body`); inspected forwarded requests may not (see `RequestBody`).
    pub body: RequestBody<'a>,
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
        self.header("content-type").and_then(media_type)
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.query?, name)
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
        rate_limited(retry_after_secs)
    }

    /// Whether a forwarded request (not one of `answers`) must first go through `before_forward`.
    fn inspects(&self, _method: &Method, _path: &str) -> bool {
        false
    }

    /// Decides on an inspected forwarded request (its body is read when within `max_body`
    /// and `MAX_INSPECTED_BODY`).
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
