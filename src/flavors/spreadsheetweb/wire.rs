//! SpreadsheetWEB's wire format (SPEC §4.1): the two endpoints' paths, their JSON bodies and
//! the byte-exact answer shape. Pure: no sessions, no I/O.

use crate::api::ApiResponse;
use http::header::{HeaderValue, CACHE_CONTROL};
use serde::Serialize;
use serde_json::{Map, Value};

/// The `SessionId` of a failed open.
pub const NIL_GUID: &str = "00000000-0000-0000-0000-000000000000";

pub const TOKEN_MESSAGE: &str =
    "The requested resource is restricted and your request did not provide a valid token.";
pub const APPLICATION_MESSAGE: &str = "The requested application is invalid.";
pub const SESSION_MESSAGE: &str = "The requested session is invalid.";
pub const LIMIT_MESSAGE: &str = "The application has reached its dedicated session limit.";
pub const TOO_LARGE_MESSAGE: &str = "The request body is too large.";
pub const RATE_LIMIT_MESSAGE: &str = "Too many requests.";
pub const STORE_MESSAGE: &str =
    "The session service is temporarily unavailable. Please try again later.";

/// The two endpoints of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Open,
    Close,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Open => "/OpenDedicatedSession",
            Endpoint::Close => "/CloseDedicatedSession",
        }
    }

    /// Whether `path` (relative to the base) names this endpoint. Matching ignores ASCII case
    /// and one trailing slash, as the original ASP.NET routing does.
    pub fn matches(self, path: &str) -> bool {
        let path = path.strip_suffix('/').unwrap_or(path);
        path.eq_ignore_ascii_case(self.path())
    }

    pub fn ok_open(session_id: String) -> Answer {
        Answer {
            session_id: Some(session_id),
            success: true,
            invalid_token: None,
            messages: Vec::new(),
        }
    }

    pub fn ok_close() -> Answer {
        Answer {
            session_id: None,
            success: true,
            invalid_token: Some(false),
            messages: Vec::new(),
        }
    }

    /// A failure in this endpoint's shape (a failed open carries the nil GUID).
    pub fn failure(self, invalid_token: bool, message: impl Into<String>) -> Answer {
        Answer {
            session_id: (self == Endpoint::Open).then(|| NIL_GUID.to_string()),
            success: false,
            invalid_token: Some(invalid_token),
            messages: vec![message.into()],
        }
    }
}

/// An answer's body. Field order and presence follow the published samples byte for byte:
/// `SessionId` only on open, `InvalidToken` absent from a successful open.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid_token: Option<bool>,
    messages: Vec<String>,
}

/// Every answer: HTTP 200, JSON in UTF-8, never cached.
pub fn respond(answer: &Answer) -> ApiResponse {
    ApiResponse::json_with_type(200, answer, "application/json; charset=utf-8").with_header(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    )
}

/// A parsed `OpenDedicatedSession` / `CloseDedicatedSession` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedicatedSessionRequest {
    pub application_key: String,
    /// Present for close only.
    pub session_id: Option<String>,
}

/// Parses the JSON body of `endpoint`. The error is the message for the client.
///
/// Like the original's Json.NET binding, field names match case-insensitively (an exact
/// match wins) and unknown fields are ignored. Required fields must be non-empty strings.
pub fn parse_body(endpoint: Endpoint, body: &[u8]) -> Result<DedicatedSessionRequest, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("The request body is empty; a JSON object is expected.".to_string());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "The request body is not valid JSON (line {}, column {}).",
            e.line(),
            e.column()
        )
    })?;
    let Value::Object(fields) = value else {
        return Err("The request body must be a JSON object.".to_string());
    };
    let application_key = required_string(&fields, "ApplicationKey")?;
    let session_id = match endpoint {
        Endpoint::Open => None,
        Endpoint::Close => Some(required_string(&fields, "SessionId")?),
    };
    Ok(DedicatedSessionRequest {
        application_key,
        session_id,
    })
}

fn field<'v>(fields: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    fields.get(name).or_else(|| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn required_string(fields: &Map<String, Value>, name: &str) -> Result<String, String> {
    match field(fields, name) {
        None | Some(Value::Null) => Err(format!("{name} is required.")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{name} is required.")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{name} must be a string.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_paths() {
        assert!(Endpoint::Open.matches("/OpenDedicatedSession"));
        assert!(Endpoint::Open.matches("/opendedicatedsession/"));
        assert!(!Endpoint::Open.matches("/OpenDedicatedSession//"));
        assert!(!Endpoint::Open.matches("/CloseDedicatedSession"));
        assert!(!Endpoint::Close.matches("/GetResult"));
        assert!(!Endpoint::Close.matches("/CloseDedicatedSession/x"));
        assert!(!Endpoint::Close.matches(""));
    }

    #[test]
    fn body_parsing() {
        let ok = parse_body(
            Endpoint::Close,
            br#"{"SessionId":"s","ApplicationKey":"k","Extra":[1]}"#,
        );
        assert_eq!(
            ok,
            Ok(DedicatedSessionRequest {
                application_key: "k".into(),
                session_id: Some("s".into())
            })
        );
        let ci = parse_body(Endpoint::Open, br#"{"applicationkey":"k"}"#);
        assert_eq!(ci.map(|r| r.application_key), Ok("k".to_string()));
        let exact_wins = parse_body(
            Endpoint::Open,
            br#"{"applicationKey":5,"ApplicationKey":"k"}"#,
        );
        assert_eq!(exact_wins.map(|r| r.application_key), Ok("k".to_string()));
    }

    #[test]
    fn malformed_bodies() {
        let cases: [(&[u8], &str); 10] = [
            (b"", "empty"),
            (b"  \n", "empty"),
            (b"{\"ApplicationKey\": ", "not valid JSON"),
            (b"\xff\xfe", "not valid JSON"),
            (b"[\"k\"]", "JSON object"),
            (b"\"k\"", "JSON object"),
            (b"{}", "ApplicationKey is required."),
            (b"{\"ApplicationKey\":null}", "ApplicationKey is required."),
            (b"{\"ApplicationKey\":\"\"}", "ApplicationKey is required."),
            (
                b"{\"ApplicationKey\":12345}",
                "ApplicationKey must be a string.",
            ),
        ];
        for (body, want) in cases {
            let err = parse_body(Endpoint::Open, body).expect_err(want);
            assert!(err.contains(want), "{body:?}: {err}");
        }
        assert_eq!(
            parse_body(Endpoint::Close, br#"{"ApplicationKey":"k"}"#),
            Err("SessionId is required.".to_string())
        );
        assert_eq!(
            parse_body(Endpoint::Close, br#"{"ApplicationKey":"k","SessionId":42}"#),
            Err("SessionId must be a string.".to_string())
        );
    }

    #[test]
    fn answers_are_byte_exact() {
        let to_text = |a: &Answer| String::from_utf8(serde_json::to_vec(a).unwrap()).unwrap();
        assert_eq!(
            to_text(&Endpoint::ok_open(
                "25eae3ae-755e-4b3c-aa48-d7f096f6a2a7".into()
            )),
            r#"{"SessionId":"25eae3ae-755e-4b3c-aa48-d7f096f6a2a7","Success":true,"Messages":[]}"#
        );
        assert_eq!(
            to_text(&Endpoint::ok_close()),
            r#"{"Success":true,"InvalidToken":false,"Messages":[]}"#
        );
        assert_eq!(
            to_text(&Endpoint::Open.failure(true, TOKEN_MESSAGE)),
            format!(
                r#"{{"SessionId":"{NIL_GUID}","Success":false,"InvalidToken":true,"Messages":["{TOKEN_MESSAGE}"]}}"#
            )
        );
        assert_eq!(
            to_text(&Endpoint::Close.failure(false, SESSION_MESSAGE)),
            format!(r#"{{"Success":false,"InvalidToken":false,"Messages":["{SESSION_MESSAGE}"]}}"#)
        );
    }
}
