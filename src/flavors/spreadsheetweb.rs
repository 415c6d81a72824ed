//! SpreadsheetWEB dedicated sessions (SPEC §4.1): `OpenDedicatedSession` and
//! `CloseDedicatedSession` under `flavors.spreadsheetweb.base_path`.
//!
//! Every answer is HTTP 200 in the API's own shape, failures included (SPEC §4.1, §12). Later
//! calls of the API (`GetResult` …) are not answered here: they are forwarded, and the JSON
//! body locator resolves their `SessionId`.

use super::{ApiRequest, ApiResponse, SessionApi, SessionApis};
use crate::config::{ApplicationSettings, SpreadsheetWebSettings};
use crate::metrics::{self, AuthFailure};
use crate::session::id::{is_valid_client_id, new_uuid, redact};
use crate::session::{Caller, EndReason, Flavor, SessionService};
use crate::store::{CreateOutcome, StoreError};
use async_trait::async_trait;
use http::header::{HeaderValue, CACHE_CONTROL};
use http::Method;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The `SessionId` of a failed open.
pub const NIL_GUID: &str = "00000000-0000-0000-0000-000000000000";

pub const TOKEN_MESSAGE: &str =
    "The requested resource is restricted and your request did not provide a valid token.";
pub const APPLICATION_MESSAGE: &str = "The requested application is invalid.";
pub const SESSION_MESSAGE: &str = "The requested session is invalid.";
pub const LIMIT_MESSAGE: &str = "The application has reached its dedicated session limit.";
pub const TOO_LARGE_MESSAGE: &str = "The request body is too large.";
pub const RATE_LIMIT_MESSAGE: &str = "Too many requests.";
const STORE_MESSAGE: &str =
    "The session service is temporarily unavailable. Please try again later.";

/// How often a freshly drawn UUID may collide with a live one before giving up (never, in practice).
const ID_ATTEMPTS: usize = 3;

/// The two endpoints of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Open,
    Close,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Open => "/OpenDedicatedSession",
            Endpoint::Close => "/CloseDedicatedSession",
        }
    }

    /// Whether `path` (relative to the base) names this endpoint. Matching ignores ASCII case
    /// and one trailing slash, as the original ASP.NET routing does.
    fn matches(self, path: &str) -> bool {
        let path = path.strip_suffix('/').unwrap_or(path);
        path.eq_ignore_ascii_case(self.path())
    }

    fn ok_open(session_id: String) -> Answer {
        Answer {
            session_id: Some(session_id),
            success: true,
            invalid_token: None,
            messages: Vec::new(),
        }
    }

    fn ok_close() -> Answer {
        Answer {
            session_id: None,
            success: true,
            invalid_token: Some(false),
            messages: Vec::new(),
        }
    }

    /// A failure in this endpoint's shape (a failed open carries the nil GUID).
    fn failure(self, invalid_token: bool, message: impl Into<String>) -> Answer {
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
struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid_token: Option<bool>,
    messages: Vec<String>,
}

/// Every answer: HTTP 200, JSON in UTF-8, never cached.
fn respond(answer: &Answer) -> ApiResponse {
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

/// One endpoint of the API. The flavour is mounted once per endpoint so that an oversize
/// body, refused before anything is parsed, still gets that endpoint's exact failure shape.
pub struct DedicatedSessions {
    endpoint: Endpoint,
    sessions: Arc<SessionService>,
    applications: Arc<HashMap<String, ApplicationSettings>>,
}

impl DedicatedSessions {
    pub fn new(
        endpoint: Endpoint,
        sessions: Arc<SessionService>,
        applications: Arc<HashMap<String, ApplicationSettings>>,
    ) -> DedicatedSessions {
        DedicatedSessions {
            endpoint,
            sessions,
            applications,
        }
    }

    /// Mounts both endpoints under the configured base path.
    pub fn mount(
        apis: &mut SessionApis,
        settings: &SpreadsheetWebSettings,
        sessions: &Arc<SessionService>,
        applications: &HashMap<String, ApplicationSettings>,
    ) {
        let applications = Arc::new(applications.clone());
        for endpoint in [Endpoint::Open, Endpoint::Close] {
            let api = DedicatedSessions::new(endpoint, sessions.clone(), applications.clone());
            apis.mount(&settings.base_path, Arc::new(api));
        }
    }

    fn store_failed(&self, e: StoreError) -> Answer {
        log::error!("SpreadsheetWEB {:?}: {e}", self.endpoint);
        self.endpoint.failure(false, STORE_MESSAGE)
    }

    async fn handle(&self, req: &ApiRequest<'_>) -> Answer {
        let endpoint = self.endpoint;
        if *req.method != Method::POST {
            return endpoint.failure(
                false,
                format!(
                    "The requested resource does not support http method '{}'.",
                    req.method
                ),
            );
        }
        // The original checks the token before it looks at the body.
        let Some(credential) = req.auth.credential() else {
            req.auth.record_failure();
            return endpoint.failure(true, TOKEN_MESSAGE);
        };
        let parsed = match parse_body(endpoint, req.body) {
            Ok(p) => p,
            Err(message) => return endpoint.failure(false, message),
        };
        let application = match self.applications.get(&parsed.application_key) {
            Some(app) if credential.applications.allows(&app.key) => app,
            Some(_) => {
                metrics::auth_failure(AuthFailure::Forbidden);
                return endpoint.failure(false, APPLICATION_MESSAGE);
            }
            None => return endpoint.failure(false, APPLICATION_MESSAGE),
        };
        let caller = Caller::named(&credential.name, credential.admin);
        match parsed.session_id {
            None => self.open(&caller, application).await,
            Some(id) => self.close(&caller, application, &id).await,
        }
    }

    async fn open(&self, caller: &Caller<'_>, application: &ApplicationSettings) -> Answer {
        let limit = (application.max_sessions > 0).then_some(application.max_sessions);
        for _ in 0..ID_ATTEMPTS {
            let mut session =
                self.sessions
                    .new_session(new_uuid(), Flavor::Spreadsheetweb, caller.name);
            session.application_key = Some(application.key.clone());
            let id = session.id.clone();
            match self.sessions.open(session, limit).await {
                Ok(CreateOutcome::Created) => return Endpoint::ok_open(id),
                Ok(CreateOutcome::ApplicationFull) => {
                    return Endpoint::Open.failure(false, LIMIT_MESSAGE)
                }
                Ok(CreateOutcome::IdTaken) => continue,
                Err(e) => return self.store_failed(e),
            }
        }
        log::error!("SpreadsheetWEB open: {ID_ATTEMPTS} fresh UUIDs collided with live sessions");
        Endpoint::Open.failure(false, STORE_MESSAGE)
    }

    async fn close(
        &self,
        caller: &Caller<'_>,
        application: &ApplicationSettings,
        id: &str,
    ) -> Answer {
        if !is_valid_client_id(id) {
            return Endpoint::Close.failure(false, SESSION_MESSAGE);
        }
        // Only a dedicated session of this very application, visible to the caller, is closed.
        match self.sessions.peek(caller, id).await {
            Ok(Some(s))
                if s.flavor == Flavor::Spreadsheetweb
                    && s.application_key.as_deref() == Some(application.key.as_str()) => {}
            Ok(_) => return Endpoint::Close.failure(false, SESSION_MESSAGE),
            Err(e) => return self.store_failed(e),
        }
        match self.sessions.close(caller, id, EndReason::Closed).await {
            Ok(Some(_)) => {
                log::debug!("SpreadsheetWEB session {} closed", redact(id));
                Endpoint::ok_close()
            }
            // A concurrent close won.
            Ok(None) => Endpoint::Close.failure(false, SESSION_MESSAGE),
            Err(e) => self.store_failed(e),
        }
    }
}

#[async_trait]
impl SessionApi for DedicatedSessions {
    fn flavor(&self) -> Flavor {
        Flavor::Spreadsheetweb
    }

    fn answers(&self, path: &str) -> bool {
        self.endpoint.matches(path)
    }

    fn body_too_large(&self) -> ApiResponse {
        respond(&self.endpoint.failure(false, TOO_LARGE_MESSAGE))
    }

    fn creates_session(&self, _method: &Method, _path: &str) -> bool {
        self.endpoint == Endpoint::Open
    }

    /// SpreadsheetWEB keeps its 200 shape when rate limited (SPEC §12).
    fn rate_limited(&self, _retry_after_secs: u64) -> ApiResponse {
        respond(&self.endpoint.failure(false, RATE_LIMIT_MESSAGE))
    }

    async fn answer(&self, req: &ApiRequest<'_>) -> ApiResponse {
        respond(&self.handle(req).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthResult, Credential};
    use crate::config::{ApplicationAccess, SessionSettings};
    use crate::store::memory::MemoryStore;
    use http::HeaderMap;
    use proptest::prelude::*;
    use std::time::Duration;

    const APP: &str = "a4dcfb4f0464453b928ce1d6bcfb6aa3";

    fn service() -> Arc<SessionService> {
        let settings = SessionSettings {
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: Duration::from_secs(600),
            max_sessions: 1000,
            max_sessions_per_customer: 0,
            isolate_by_credential: true,
        };
        Arc::new(SessionService::new(
            Arc::new(MemoryStore::new(1000)),
            settings,
        ))
    }

    fn api(endpoint: Endpoint, sessions: &Arc<SessionService>) -> DedicatedSessions {
        let app = ApplicationSettings {
            key: APP.into(),
            name: None,
            max_sessions: 0,
        };
        DedicatedSessions::new(
            endpoint,
            sessions.clone(),
            Arc::new(HashMap::from([(APP.to_string(), app)])),
        )
    }

    fn web_credential() -> AuthResult {
        AuthResult::Valid(Arc::new(Credential {
            name: "web".into(),
            admin: false,
            applications: ApplicationAccess::All,
        }))
    }

    fn call(
        api: &DedicatedSessions,
        method: Method,
        auth: &AuthResult,
        body: &[u8],
    ) -> ApiResponse {
        let headers = HeaderMap::new();
        let req = ApiRequest {
            method: &method,
            path: api.endpoint.path(),
            query: None,
            headers: &headers,
            body,
            auth,
            client_ip: None,
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(api.answer(&req))
    }

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

    #[test]
    fn oversize_answer_keeps_each_endpoints_shape() {
        let sessions = service();
        for (endpoint, has_id) in [(Endpoint::Open, true), (Endpoint::Close, false)] {
            let r = api(endpoint, &sessions).body_too_large();
            assert_eq!(r.status, 200);
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["Messages"][0], TOO_LARGE_MESSAGE);
            assert_eq!(v.get("SessionId").is_some(), has_id);
        }
    }

    #[test]
    fn wrong_method_is_a_200_failure() {
        let sessions = service();
        let r = call(
            &api(Endpoint::Open, &sessions),
            Method::GET,
            &web_credential(),
            b"",
        );
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Success"], false);
        assert_eq!(v["SessionId"], NIL_GUID);
        assert_eq!(
            v["Messages"][0],
            "The requested resource does not support http method 'GET'."
        );
    }

    proptest! {
        /// Whatever the body, an answer is HTTP 200 in the endpoint's shape, and nothing
        /// malformed ever opens or closes a session.
        #[test]
        fn any_body_gets_the_200_shape(
            body in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..120),
                "\\{\"(ApplicationKey|SessionId|applicationkey)\": ?(\"[a-z0-9]{0,6}\"|[0-9]{1,3}|null|\\[\\]|\\{\\}|true)(, ?\"SessionId\": ?\"[a-z0-9-]{0,8}\")?\\}".prop_map(String::into_bytes),
            ],
            close in any::<bool>(),
        ) {
            let sessions = service();
            let endpoint = if close { Endpoint::Close } else { Endpoint::Open };
            let r = call(&api(endpoint, &sessions), Method::POST, &web_credential(), body.as_slice());
            prop_assert_eq!(r.status, 200);
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            prop_assert_eq!(&v["Success"], &Value::Bool(false));
            prop_assert_eq!(&v["InvalidToken"], &Value::Bool(false));
            prop_assert!(v["Messages"][0].as_str().is_some_and(|m| !m.is_empty()));
            prop_assert_eq!(v.get("SessionId").is_some(), !close);
        }
    }
}
