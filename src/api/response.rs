//! `ApiResponse`: every answer the sidecar writes itself (flavour endpoints, refusals of
//! forwarded requests, the admin listener), and the sidecar's own error shape.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::json;

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
        // Most answers fit in 256 bytes: one allocation instead of to_vec's 128 and a regrowth.
        let mut body = Vec::with_capacity(256);
        // Serializing our own response types cannot fail (no maps with non-string keys).
        if serde_json::to_writer(&mut body, value).is_err() {
            body = b"null".to_vec();
        }
        Self::bytes(status, content_type, body)
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
        // Room for the one header most answers add (`Cache-Control`, `Allow`, ...).
        let mut headers = Vec::with_capacity(2);
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        ));
        ApiResponse {
            status,
            headers,
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiResponse {
        self.headers.push((name, value));
        self
    }
}

/// The sidecar's own error shape (forwarded routes, the admin API):
/// `{"error": …, "message": …}`.
pub fn error(status: u16, error: &str, message: &str) -> ApiResponse {
    ApiResponse::json(status, &json!({ "error": error, "message": message }))
}

/// 429 with `Retry-After` (seconds), in the sidecar's error shape (SPEC §12).
pub fn rate_limited(retry_after_secs: u64) -> ApiResponse {
    error(429, "rate_limited", "Too many requests; retry later.").with_header(
        http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs.max(1)),
    )
}
