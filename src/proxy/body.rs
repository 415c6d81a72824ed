//! Reading request bodies inside `request_filter`.
//!
//! Reading consumes the body. For endpoints the sidecar answers itself that is fine; for
//! forwarded requests we first enable pingora's retry buffer, which replays what was read to
//! the upstream. That buffer holds 64 KiB, so only bodies whose length is known and within it
//! are read for inspection; anything else is forwarded untouched as a stream.

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::Result;

/// pingora's retry buffer capacity (`BODY_BUF_LIMIT`).
pub const RETRY_BUFFER_LIMIT: usize = 64 * 1024;

pub enum Body {
    Complete(Bytes),
    /// More than the limit was sent (or announced); the rest was not read.
    TooLarge,
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
        return Ok(Body::TooLarge);
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if buf.len() + chunk.len() > limit {
            return Ok(Body::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Body::Complete(buf.freeze()))
}

/// Reads a forwarded request's body so it can be inspected *and* still forwarded unchanged.
/// `None` when the body is absent, of unknown length, or larger than `limit` (or the retry
/// buffer): such bodies are forwarded without inspection.
pub async fn read_for_forwarding(session: &mut Session, limit: usize) -> Result<Option<Bytes>> {
    let limit = limit.min(RETRY_BUFFER_LIMIT);
    match content_length(session) {
        Some(n) if n > 0 && n <= limit => {}
        _ => return Ok(None),
    }
    session.enable_retry_buffering();
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            // Cannot happen with a truthful Content-Length; the retry buffer still replays
            // what it holds, so the request is forwarded but not inspected.
            return Ok(None);
        }
    }
    if session.retry_buffer_truncated() {
        return Ok(None);
    }
    Ok(Some(buf.freeze()))
}
