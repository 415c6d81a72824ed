//! Request framing and size limits (SPEC §13.1), checked once per request, on every listener,
//! before any other hook looks at the request.
//!
//! pingora 0.9.1's HTTP/1 reader (httparse underneath) already answers 400 and closes for
//! whitespace before a colon, obsolete line folding, NUL/CR/LF and other control bytes in a
//! header value, a differing or non-numeric repeated `Content-Length`, a `Transfer-Encoding`
//! whose last coding is not `chunked`, `Transfer-Encoding` on HTTP/1.0, and a repeated `Host`.
//! What it lets through, and this module refuses:
//! * `Content-Length` together with `Transfer-Encoding` (pingora drops the Content-Length,
//!   RFC 9112 §6.3; nginx answers 400). pingora removes the field from the parsed header, so it
//!   is looked for in the raw header bytes;
//! * a repeated `Content-Length`, even with equal values (`5, 5` or two lines);
//! * a `Transfer-Encoding` that is anything but one `chunked` (`gzip, chunked`, two lines);
//! * heads beyond `server.max_header_size` / `server.max_headers` (431) and request targets
//!   beyond `server.max_uri` (414): pingora's own ceilings are 1 MiB and 256 fields.
//!
//! Every refusal is answered here with JSON and `Connection: close`; the connection is then
//! dropped, so no byte after the refused head is ever read as a request.
//!
//! HTTP/2 (SPEC §13.3) has its own framing (RFC 9113 §8.1: no `Transfer-Encoding`, lengths
//! checked by pingora), so the framing rules above stay HTTP/1-only; the size limits apply to
//! an h2 request as to the HTTP/1.1 head it stands for (`h1_equivalent_size`), counting
//! `:authority` as the `Host` line it replaces.

use crate::config::HttpLimits;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::{Error, ErrorType};
use serde_json::json;
use std::time::Duration;

/// The error a refused request ends with, so `fail_to_proxy` knows the answer is written.
pub const REJECTED: ErrorType = ErrorType::Custom("FramingRejected");

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Ambiguous or invalid framing: 400.
    BadFraming(&'static str),
    /// Request target over `max_uri`: 414.
    UriTooLong,
    /// Head over `max_header_size` or `max_headers`: 431.
    HeaderTooLarge(&'static str),
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Rejection::BadFraming(_) => 400,
            Rejection::UriTooLong => 414,
            Rejection::HeaderTooLarge(_) => 431,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Rejection::BadFraming(_) => "bad_request",
            Rejection::UriTooLong => "uri_too_long",
            Rejection::HeaderTooLarge(_) => "header_too_large",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Rejection::BadFraming(m) | Rejection::HeaderTooLarge(m) => m,
            Rejection::UriTooLong => "The request target is longer than the sidecar accepts.",
        }
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> Bytes {
        let v = json!({ "error": self.code(), "message": self.message() });
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }
}

/// Checks a parsed request head against SPEC §13.1. `raw` is the head as received (request
/// line and header lines), `None` when the protocol has none (HTTP/2): then the sizes are
/// those of the equivalent HTTP/1.1 head and the framing checks are left to h2's own rules.
pub fn check(
    head: &RequestHeader,
    raw: Option<&[u8]>,
    limits: &HttpLimits,
) -> Result<(), Rejection> {
    if head.raw_path().len() > limits.max_uri {
        return Err(Rejection::UriTooLong);
    }
    let (size, fields) = match raw {
        Some(raw) => (raw.len(), head.headers.len()),
        None => h1_equivalent_size(head),
    };
    if size > limits.max_header_size {
        return Err(Rejection::HeaderTooLarge(
            "The request line and headers are larger than the sidecar accepts.",
        ));
    }
    if fields > limits.max_headers {
        return Err(Rejection::HeaderTooLarge(
            "The request has more header fields than the sidecar accepts.",
        ));
    }
    let mut lengths = head.headers.get_all(CONTENT_LENGTH).iter();
    if let Some(length) = lengths.next() {
        if lengths.next().is_some() || !is_decimal_length(length.as_bytes()) {
            return Err(Rejection::BadFraming(
                "Content-Length must be one decimal number.",
            ));
        }
    }
    let mut codings = head.headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(coding) = codings.next() {
        if codings.next().is_some()
            || !coding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err(Rejection::BadFraming(
                "Transfer-Encoding must be exactly \"chunked\".",
            ));
        }
        // pingora removed a Content-Length sent beside Transfer-Encoding; the raw head still has it.
        if raw.is_some_and(has_content_length_field) {
            return Err(Rejection::BadFraming(
                "A request must not carry both Content-Length and Transfer-Encoding.",
            ));
        }
    }
    Ok(())
}

/// The size in bytes and the number of fields of the HTTP/1.1 head an h2 request stands for:
/// `METHOD SP target SP HTTP/1.1 CRLF`, one `name: value CRLF` per field (h2 sends cookie
/// crumbs as separate fields: each counts), a `Host` line for `:authority` when the request
/// has no `host` field, and the final CRLF.
pub fn h1_equivalent_size(head: &RequestHeader) -> (usize, usize) {
    const LINE_END: usize = 2;
    let request_line = head.method.as_str().len() + 1 + head.raw_path().len() + 1 + 8 + LINE_END;
    let mut fields = head.headers.len();
    let mut size = request_line + LINE_END;
    for (name, value) in head.headers.iter() {
        size += name.as_str().len() + 2 + value.len() + LINE_END;
    }
    if !head.headers.contains_key(http::header::HOST) {
        if let Some(authority) = head.uri.authority() {
            size += "host".len() + 2 + authority.as_str().len() + LINE_END;
            fields += 1;
        }
    }
    (size, fields)
}

fn is_decimal_length(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    let significant = v
        .iter()
        .position(|&b| b != b'0')
        .map_or(&v[..0], |i| &v[i..]);
    // 19 digits always fit in a u64.
    !v.is_empty() && v.iter().all(u8::is_ascii_digit) && significant.len() <= 19
}

/// Whether the raw head has a `Content-Length` field line. The parser already refused names
/// with whitespace or other non-token bytes, so a field name is exactly what precedes the colon.
fn has_content_length_field(raw: &[u8]) -> bool {
    raw.split(|&b| b == b'\n')
        .skip(1) // the request line
        .filter_map(|line| line.iter().position(|&b| b == b':').map(|i| &line[..i]))
        .any(|name| name.eq_ignore_ascii_case(b"content-length"))
}

/// Checks the request `session` has read (see `check`); an h2 request has no raw head.
pub fn check_session(session: &ServerSession, limits: &HttpLimits) -> Result<(), Rejection> {
    let raw = session.as_http1().map(|h1| h1.get_headers_raw_bytes());
    check(session.req_header(), raw.as_deref(), limits)
}

/// Applies `server.keepalive_timeout` to the connection of `session`. pingora keeps an idle
/// HTTP/1.1 connection forever once a request was read; only a connection the client and
/// pingora both keep alive is given the timeout (HTTP/1.0 without `keep-alive` stays closed).
pub fn apply_keepalive_timeout(session: &mut ServerSession, limits: &HttpLimits) {
    if session.get_keepalive().is_none() {
        return;
    }
    if limits.keepalive_timeout.is_zero() {
        session.set_keepalive(None);
    } else {
        // pingora counts whole seconds; 0 would mean "forever", so round up.
        let secs = limits.keepalive_timeout.as_secs_f64().ceil() as u64;
        session.set_keepalive(Some(secs.max(1)));
    }
}

/// `server.keepalive_timeout` for h2 connections: pingora closes one idle (no stream open)
/// that long. Fixed when the listener is built. 0 (no keep-alive) becomes 1 s: h2 has no
/// "close after this request", and pingora's zero would close before the first stream.
pub fn h2_idle_timeout(limits: &HttpLimits) -> Duration {
    limits.keepalive_timeout.max(Duration::from_secs(1))
}

/// `server.keepalive_requests` as pingora's reuse limit: pingora allows one request more than
/// the number of reuses (the first request is not a reuse).
pub fn keepalive_reuse_limit(limits: &HttpLimits) -> u32 {
    limits.keepalive_requests.saturating_sub(1)
}

/// Writes the answer for `rejection` and marks the connection to be closed after it.
pub async fn answer(session: &mut ServerSession, rejection: Rejection) {
    session.set_keepalive(None);
    let body = rejection.body();
    let written = async {
        let mut header = ResponseHeader::build(rejection.status(), Some(3))?;
        header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        session.write_response_header(Box::new(header)).await?;
        session.write_response_body(body, true).await
    };
    if let Err(e) = written.await {
        log::debug!("could not write the framing refusal: {e}");
    }
}

/// The error a hook returns after `answer`: pingora then stops, and `is_rejection` tells
/// `fail_to_proxy` not to answer again nor to reuse the connection.
pub fn rejected_error(rejection: Rejection) -> Box<Error> {
    Error::explain(REJECTED, rejection.message())
}

pub fn is_rejection(e: &Error) -> bool {
    *e.etype() == REJECTED
}

/// Reads one request head from `bytes` with pingora's own HTTP/1 reader, as a listener would.
/// `Ok(None)`: the bytes end before a complete head. For tests and fuzzing.
#[doc(hidden)]
pub async fn read_head(bytes: &[u8]) -> pingora::Result<Option<ServerSession>> {
    use tokio::io::AsyncWriteExt;
    let (mut client, server) = tokio::io::duplex(bytes.len() + 1);
    // The buffer holds all of it, so this never waits; dropping `client` ends the stream.
    client
        .write_all(bytes)
        .await
        .map_err(|e| Error::because(ErrorType::WriteError, "duplex", e))?;
    drop(client);
    let mut session = ServerSession::new_http1(Box::new(server));
    match session.read_request().await? {
        true => Ok(Some(session)),
        false => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            max_header_size: 16 * 1024,
            max_headers: 100,
            max_uri: 8 * 1024,
            keepalive_requests: 1000,
            keepalive_timeout: Duration::from_secs(60),
        }
    }

    /// What pingora's reader plus `check` make of `raw`: the status of the refusal, 0 when
    /// accepted, or `pingora` when pingora itself refuses (it answers 400 and closes).
    fn verdict(raw: &[u8]) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            match read_head(raw).await {
                Err(_) => "pingora".to_string(),
                Ok(None) => "incomplete".to_string(),
                Ok(Some(s)) => match check_session(&s, &limits()) {
                    Ok(()) => "0".to_string(),
                    Err(r) => r.status().to_string(),
                },
            }
        })
    }

    const POST: &str = "POST /x HTTP/1.1\r\nHost: a\r\n";

    fn with(fields: &str) -> Vec<u8> {
        format!("{POST}{fields}\r\n").into_bytes()
    }

    #[test]
    fn plain_requests_pass() {
        assert_eq!(verdict(&with("")), "0");
        assert_eq!(verdict(&with("Content-Length: 5\r\n")), "0");
        assert_eq!(verdict(&with("Content-Length: 0000005\r\n")), "0");
        assert_eq!(verdict(&with("Transfer-Encoding: chunked\r\n")), "0");
        assert_eq!(verdict(&with("Transfer-Encoding: CHUNKED\r\n")), "0");
        assert_eq!(verdict(&with("Transfer-Encoding:   chunked  \r\n")), "0");
    }

    #[test]
    fn what_pingora_refuses_itself() {
        for fields in [
            "Content-Length : 5\r\n",
            "Content-Length: 5\r\n folded\r\n",
            "X-A: a\0b\r\n",
            "X-A: a\rb\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: abc\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 123456789012345678901\r\n",
            "Transfer-Encoding: chunked, identity\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Host: b\r\n",
        ] {
            assert_eq!(verdict(&with(fields)), "pingora", "{fields:?}");
        }
        let http10 = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(verdict(http10), "pingora");
    }

    #[test]
    fn what_the_sidecar_adds() {
        for fields in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\ncontent-length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5, 5\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
        ] {
            assert_eq!(verdict(&with(fields)), "400", "{fields:?}");
        }
    }

    #[test]
    fn limits_answer_414_and_431() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(8 * 1024));
        assert_eq!(verdict(long_uri.as_bytes()), "414");
        let fits = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "u".repeat(8 * 1024 - 1)
        );
        assert_eq!(verdict(fits.as_bytes()), "0");
        let big = with(&format!("X-Big: {}\r\n", "b".repeat(16 * 1024)));
        assert_eq!(verdict(&big), "431");
        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(verdict(&with(&many)), "431", "101 fields with Host");
        let enough: String = (0..99).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(verdict(&with(&enough)), "0", "100 fields with Host");
    }

    #[test]
    fn h2_heads_are_measured_as_the_h1_head_they_stand_for() {
        let raw = with("X-A: 1\r\nCookie: a=1\r\nCookie: b=2\r\n");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let session = rt
            .block_on(read_head(&raw))
            .expect("parsed")
            .expect("complete");
        let h1 = session.req_header();
        assert_eq!(h1_equivalent_size(h1), (raw.len(), h1.headers.len()));
        // The same request as h2 delivers it: `:authority` instead of a Host field.
        let mut h2 = RequestHeader::build("POST", b"/x", None).expect("head");
        h2.set_uri("http://a/x".parse().expect("uri"));
        h2.set_version(http::Version::HTTP_2);
        for (k, v) in [("x-a", "1"), ("cookie", "a=1"), ("cookie", "b=2")] {
            h2.append_header(k, v).expect("header");
        }
        assert_eq!(h1_equivalent_size(&h2), (raw.len(), 4));
        let mut tight = limits();
        tight.max_header_size = raw.len() - 1;
        assert_eq!(check(&h2, None, &limits()), Ok(()));
        assert!(matches!(
            check(&h2, None, &tight),
            Err(Rejection::HeaderTooLarge(_))
        ));
        tight = limits();
        tight.max_headers = 3;
        assert!(matches!(
            check(&h2, None, &tight),
            Err(Rejection::HeaderTooLarge(_))
        ));
    }

    #[test]
    fn content_length_field_is_found_in_any_case_and_line_ending() {
        assert!(has_content_length_field(
            b"POST / HTTP/1.1\nCONTENT-length: 1\n\n"
        ));
        assert!(!has_content_length_field(
            b"POST / HTTP/1.1\r\nX-Content-Length: 1\r\n\r\n"
        ));
        // A request target that mentions the name is not a field.
        assert!(!has_content_length_field(
            b"GET /content-length:1 HTTP/1.1\r\n\r\n"
        ));
    }

    #[test]
    fn keepalive_limits_map_to_pingora() {
        let mut l = limits();
        assert_eq!(keepalive_reuse_limit(&l), 999);
        l.keepalive_requests = 1;
        assert_eq!(keepalive_reuse_limit(&l), 0);
    }

    #[test]
    fn refusal_bodies_name_the_error() {
        let body: serde_json::Value =
            serde_json::from_slice(&Rejection::UriTooLong.body()).expect("json");
        assert_eq!(body["error"], "uri_too_long");
        let body: serde_json::Value =
            serde_json::from_slice(&Rejection::HeaderTooLarge("x").body()).expect("json");
        assert_eq!(body["error"], "header_too_large");
    }
}
