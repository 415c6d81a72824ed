//! Reading request bodies inside `request_filter`.
//!
//! Reading consumes the body. For endpoints the sidecar answers itself that is fine; for
//! forwarded requests we first enable pingora's retry buffer, which replays what was read to
//! the upstream. That buffer holds `api::MAX_INSPECTED_BODY` (pingora's `BODY_BUF_LIMIT`), so
//! only bodies whose length is known and within it are read for inspection; anything else is
//! forwarded untouched as a stream.
//!
//! HTTP/2 (SPEC §13.3) frames a body itself and need not send `Content-Length`: such a body
//! is read to the end of its stream, up to `H2_UNSIZED_LIMIT` so the retry buffer always holds
//! what was read (else a Voucherify validation without a length would skip its lock).

use crate::api::{RequestBody, MAX_INSPECTED_BODY};
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::Result;

/// h2 DATA frames are at most 16 KiB (the SETTINGS_MAX_FRAME_SIZE pingora's h2 server keeps):
/// reading stops at the first frame past this, which then still fits the retry buffer.
const H2_MAX_FRAME: usize = 16 * 1024;

/// Most of an h2 body without `Content-Length` read for inspection (48 KiB).
pub const H2_UNSIZED_LIMIT: usize = MAX_INSPECTED_BODY - H2_MAX_FRAME;

/// A request body as the proxy left it: the owned form of `api::RequestBody`.
pub enum Body {
    Complete(Bytes),
    /// More than `limit` was sent (or announced); the rest was not read.
    TooLarge {
        limit: usize,
    },
    /// Sent without a length: not read.
    NotRead,
}

impl Body {
    /// The body as a flavour sees it.
    pub fn as_request(&self) -> RequestBody<'_> {
        match self {
            Body::Complete(b) => RequestBody::Complete(b),
            Body::TooLarge { limit } => RequestBody::TooLarge { limit: *limit },
            Body::NotRead => RequestBody::NotRead,
        }
    }
}

/// The declared `Content-Length`, if any and valid.
pub fn content_length(session: &Session) -> Option<usize> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads the whole body of a request the sidecar answers itself, up to `limit` bytes.
pub async fn read_all(session: &mut Session, limit: usize) -> Result<Body> {
    if content_length(session).is_some_and(|n| n > limit) {
        return Ok(Body::TooLarge { limit });
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if buf.len() + chunk.len() > limit {
            return Ok(Body::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Body::Complete(buf.freeze()))
}

/// Reads a forwarded request's body so it can be inspected *and* still forwarded unchanged.
/// HTTP/1 bodies of unknown length (chunked) are not read; bodies larger than `limit` (or the
/// retry buffer) are not either: such bodies are forwarded without inspection. An h2 body
/// without `Content-Length` is read up to `H2_UNSIZED_LIMIT`.
pub async fn read_for_forwarding(session: &mut Session, limit: usize) -> Result<Body> {
    let mut limit = limit.min(MAX_INSPECTED_BODY);
    match content_length(session) {
        None if session.as_http2().is_some() => {
            if session.is_body_empty() {
                return Ok(Body::Complete(Bytes::new()));
            }
            limit = limit.min(H2_UNSIZED_LIMIT);
        }
        // Neither length nor chunked: a request without a body (RFC 9112 §6.3).
        None if !session
            .req_header()
            .headers
            .contains_key(http::header::TRANSFER_ENCODING) =>
        {
            return Ok(Body::Complete(Bytes::new()))
        }
        None => return Ok(Body::NotRead),
        Some(0) => return Ok(Body::Complete(Bytes::new())),
        Some(n) if n > limit => return Ok(Body::TooLarge { limit }),
        Some(_) => {}
    }
    session.enable_retry_buffering();
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            // An h2 body without a length (a truthful Content-Length cannot get here): the
            // retry buffer replays what was read, the rest streams after it.
            return Ok(Body::TooLarge { limit });
        }
    }
    if session.retry_buffer_truncated() {
        return Ok(Body::TooLarge { limit });
    }
    Ok(Body::Complete(buf.freeze()))
}
