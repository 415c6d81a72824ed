//! Knowledge Center's wire format (SPEC §4.2): routes, identity from headers, query and
//! body, `SessionInfo` answers and the `{"code", "description"}` error shape. Pure: no
//! sessions, no I/O.

use crate::api::{json, ApiResponse};
use crate::session::id::is_valid_client_id;
use crate::session::{Session, SessionPatch};
use http::header::{HeaderValue, CACHE_CONTROL};
use http::HeaderMap;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;

pub const CUSTOMER_HEADER: &str = "gkc_customerId";
pub const AGENT_HEADER: &str = "gkc_agentId";
pub const TENANT_PARAM: &str = "tenantId";

/// Longest identity value accepted, as for client-chosen ids (SPEC §3).
const MAX_IDENTITY_LEN: usize = 256;

/// A refusal in the KC error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KcError {
    pub status: u16,
    pub description: Cow<'static, str>,
}

impl KcError {
    pub fn new(status: u16, description: impl Into<Cow<'static, str>>) -> KcError {
        KcError {
            status,
            description: description.into(),
        }
    }

    pub fn bad_request(description: impl Into<Cow<'static, str>>) -> KcError {
        KcError::new(400, description)
    }

    pub fn not_found() -> KcError {
        KcError::new(404, "Session not found")
    }

    pub fn taken() -> KcError {
        KcError::new(409, "Session id is taken")
    }

    pub fn response(&self) -> ApiResponse {
        #[derive(Serialize)]
        struct Body<'a> {
            code: u16,
            description: &'a str,
        }
        no_store(ApiResponse::json(
            self.status,
            &Body {
                code: self.status,
                description: &self.description,
            },
        ))
    }
}

fn no_store(r: ApiResponse) -> ApiResponse {
    r.with_header(CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

/// The API's view of a session (`SessionInfo`), written field by field: it is the answer of
/// every `GET /sessions/{id}`.
pub fn session_info(s: &Session) -> ApiResponse {
    let mut body = Vec::with_capacity(256);
    let mut o = json::Object::begin(&mut body);
    o.str("sessionId", &s.id);
    o.opt_str("customerId", s.customer_id.as_deref());
    o.opt_str("agentId", s.agent_id.as_deref());
    o.opt_str("visitId", s.visit_id.as_deref());
    o.opt_str("globalVisitId", s.global_visit_id.as_deref());
    o.opt_str("tenantId", s.tenant_id.as_deref());
    o.rfc3339("createdAt", s.created_at);
    o.rfc3339("expiresAt", s.expires_at);
    o.end();
    no_store(ApiResponse::bytes(200, "application/json", body))
}

/// The endpoint a path (relative to the base) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'p> {
    /// `/sessions/new`
    New,
    /// `/sessions/{sessionId}`, the id still percent-encoded.
    Session(&'p str),
}

/// `/sessions/new` or `/sessions/{one segment}`; anything else is not this API's (forwarded).
pub fn route(path: &str) -> Option<Route<'_>> {
    let segment = path.strip_prefix("/sessions/")?;
    if segment.contains('/') {
        return None;
    }
    Some(if segment == "new" {
        Route::New
    } else {
        Route::Session(segment)
    })
}

/// The session id of a path segment: percent-decoded, then held to the client id rules.
/// Borrowed from the path unless it held percent escapes.
pub fn decode_session_id(segment: &str) -> Result<Cow<'_, str>, KcError> {
    let bad = || {
        KcError::bad_request("The session id must be 1-256 characters of A-Z a-z 0-9 . _ ~ + / = -")
    };
    // Ids are almost never escaped: skip the decoder's pass when there is nothing to decode.
    let id = if segment.contains('%') {
        percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| bad())?
    } else {
        Cow::Borrowed(segment)
    };
    if is_valid_client_id(&id) {
        Ok(id)
    } else {
        Err(bad())
    }
}

/// Identity values travel to the app as header values: 1-256 visible ASCII characters, so no
/// spaces, no control characters (CR/LF) and nothing a header could not carry verbatim.
pub fn is_valid_identity(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_IDENTITY_LEN
        && value.iter().all(|b| b.is_ascii_graphic())
}

fn invalid_identity(what: &str) -> KcError {
    KcError::bad_request(format!(
        "{what} must be 1-{MAX_IDENTITY_LEN} visible ASCII characters"
    ))
}

/// Identity carried by one request. `None` = not given (empty values count as not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub customer_id: Option<String>,
    pub agent_id: Option<String>,
    pub visit_id: Option<String>,
    pub global_visit_id: Option<String>,
    pub tenant_id: Option<String>,
}

impl Identity {
    /// Reads and checks every identity value of a request; any bad value refuses all of them.
    pub fn parse(
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Identity, KcError> {
        let (visit_id, global_visit_id) = parse_body(body)?;
        Ok(Identity {
            customer_id: identity_header(headers, CUSTOMER_HEADER)?,
            agent_id: identity_header(headers, AGENT_HEADER)?,
            visit_id,
            global_visit_id,
            tenant_id: tenant(query)?,
        })
    }

    /// Changes only the values present.
    pub fn patch(self) -> SessionPatch {
        SessionPatch {
            customer_id: self.customer_id.map(Some),
            agent_id: self.agent_id,
            visit_id: self.visit_id,
            global_visit_id: self.global_visit_id,
            tenant_id: self.tenant_id,
            ..SessionPatch::default()
        }
    }
}

/// A header sent at most once; an identity that arrives twice is ambiguous, so refused.
fn identity_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, KcError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(KcError::bad_request(format!(
            "{name} must be sent at most once"
        )));
    }
    identity_value(value.as_bytes(), name)
}

fn identity_value(value: &[u8], what: &str) -> Result<Option<String>, KcError> {
    if value.is_empty() {
        return Ok(None);
    }
    match std::str::from_utf8(value) {
        Ok(v) if is_valid_identity(value) => Ok(Some(v.to_string())),
        _ => Err(invalid_identity(what)),
    }
}

/// The first `tenantId` query parameter, percent-decoded (`+` stays `+`). Unlike the
/// locators' lookup, a value that does not decode is refused rather than ignored.
fn tenant(query: Option<&str>) -> Result<Option<String>, KcError> {
    let Some(query) = query else { return Ok(None) };
    let Some(raw) = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode_str(k).collect::<Vec<u8>>() == TENANT_PARAM.as_bytes()).then_some(v)
    }) else {
        return Ok(None);
    };
    identity_value(&percent_decode_str(raw).collect::<Vec<u8>>(), TENANT_PARAM)
}

/// The optional JSON body: `visitId` and `globalVisitId`, each a string or null. An empty
/// body is no body; fields KC clients of other versions send (anything else) are ignored.
pub fn parse_body(body: &[u8]) -> Result<(Option<String>, Option<String>), KcError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        KcError::bad_request(format!(
            "The request body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let fields = match value {
        Value::Object(fields) => fields,
        // An explicit null is no body (SPEC §13.7).
        Value::Null => return Ok((None, None)),
        _ => {
            return Err(KcError::bad_request(
                "The request body must be a JSON object",
            ))
        }
    };
    let string_field = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => identity_value(s.as_bytes(), name),
        Some(_) => Err(KcError::bad_request(format!("{name} must be a string"))),
    };
    Ok((string_field("visitId")?, string_field("globalVisitId")?))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn session_info_is_the_apis_shape_in_its_order() {
        let mut s = Session::blank("kc-1".into());
        s.customer_id = Some("c\"1".into());
        s.visit_id = Some("v-9".into());
        s.created_at = 1_700_000_000_123;
        s.expires_at = 1_700_001_800_123;
        let r = session_info(&s);
        assert_eq!(r.status, 200);
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            r#"{"sessionId":"kc-1","customerId":"c\"1","agentId":null,"visitId":"v-9","globalVisitId":null,"tenantId":null,"createdAt":"2023-11-14T22:13:20.123Z","expiresAt":"2023-11-14T22:43:20.123Z"}"#
        );
        let types: Vec<_> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            types,
            [
                ("content-type", "application/json"),
                ("cache-control", "no-store")
            ]
        );
    }

    pub fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn routes() {
        assert_eq!(route("/sessions/new"), Some(Route::New));
        assert_eq!(route("/sessions/abc"), Some(Route::Session("abc")));
        assert_eq!(route("/sessions/a%2Fb"), Some(Route::Session("a%2Fb")));
        assert_eq!(route("/sessions/"), Some(Route::Session("")));
        assert_eq!(route("/sessions"), None);
        assert_eq!(route("/sessions/abc/x"), None);
        assert_eq!(route("/kbs/x/search"), None);
        assert_eq!(route(""), None);
    }

    #[test]
    fn session_ids_from_paths() {
        assert_eq!(
            decode_session_id("Conf.K_c~1+2=3-x"),
            Ok(Cow::Borrowed("Conf.K_c~1+2=3-x"))
        );
        assert_eq!(
            decode_session_id("a%2Bb%2F%3D"),
            Ok(Cow::Owned("a+b/=".to_string()))
        );
        // An id without escapes is the path's own bytes: no copy per GET.
        assert!(matches!(decode_session_id("abc-1"), Ok(Cow::Borrowed(_))));
        for bad in [
            "",
            "conf!bad",
            "conf%20bad",
            "a%0D%0Ab",
            "%ff",
            "%",
            "é",
            &"a".repeat(257),
        ] {
            assert_eq!(
                decode_session_id(bad).map_err(|e| e.status),
                Err(400),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b""), Ok((None, None)));
        assert_eq!(parse_body(b" \r\n"), Ok((None, None)));
        assert_eq!(parse_body(b"{}"), Ok((None, None)));
        assert_eq!(parse_body(b"null"), Ok((None, None)), "null is no body");
        assert_eq!(
            parse_body(br#"{"visitId":"v","globalVisitId":"g","other":[1,{"x":null}]}"#),
            Ok((Some("v".into()), Some("g".into())))
        );
        assert_eq!(
            parse_body(br#"{"visitId":null,"globalVisitId":""}"#),
            Ok((None, None))
        );
        for bad in [
            &b"{\"visitId\": "[..],
            b"[]",
            b"\"v\"",
            b"{\"visitId\":5}",
            b"{\"globalVisitId\":{}}",
            b"{\"visitId\":\"v1\\r\\nX-Customer-Id: evil\"}",
            b"{\"visitId\":\"a b\"}",
            b"\xff",
        ] {
            assert_eq!(
                parse_body(bad).map_err(|e| e.status),
                Err(400),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn identity_headers_and_tenant() {
        let h = headers(&[("gkc_customerId", b"c-1"), ("GKC_AGENTID", b"a@x.example")]);
        let id = Identity::parse(&h, Some("x=1&tenantId=t%2B1&tenantId=t2"), b"").unwrap();
        assert_eq!(id.customer_id.as_deref(), Some("c-1"));
        assert_eq!(id.agent_id.as_deref(), Some("a@x.example"));
        assert_eq!(
            id.tenant_id.as_deref(),
            Some("t+1"),
            "first value wins, percent-decoded"
        );
        assert_eq!(
            Identity::parse(&headers(&[("gkc_customerId", b"")]), None, b"").unwrap(),
            Identity::default()
        );
        let refused: [(HeaderMap, Option<&str>); 7] = [
            (headers(&[("gkc_customerId", b"a\tb")]), None),
            (headers(&[("gkc_customerId", b"caf\xc3\xa9")]), None),
            (
                headers(&[("gkc_agentId", b"a"), ("gkc_agentId", b"b")]),
                None,
            ),
            (
                headers(&[("gkc_agentId", "x".repeat(257).as_bytes())]),
                None,
            ),
            (HeaderMap::new(), Some("tenantId=a%0D%0Ab")),
            (HeaderMap::new(), Some("tenantId=%ff")),
            (HeaderMap::new(), Some("tenantId=a%20b")),
        ];
        for (h, q) in refused {
            assert_eq!(
                Identity::parse(&h, q, b"").map_err(|e| e.status),
                Err(400),
                "{h:?} {q:?}"
            );
        }
    }
}
