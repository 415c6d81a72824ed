//! Genesys Knowledge Center sessions (SPEC §4.2) under `flavors.knowledge_center.base_path`:
//! `PUT /sessions/new`, `GET /sessions/{sessionId}`, `POST /sessions/{sessionId}`.
//!
//! Identity comes from the headers `gkc_customerId` / `gkc_agentId`, the optional JSON body
//! `{"visitId","globalVisitId"}` and the query parameter `tenantId`. Answers are `SessionInfo`,
//! errors `{"code": <status>, "description": "…"}`. Forwarded KC calls carry the session as
//! `?sessionId=`, which the query locator resolves; nothing here is involved in that.

use super::{ApiRequest, ApiResponse, SessionApi};
use crate::auth::AuthResult;
use crate::config::{AuthMode, KnowledgeCenterSettings};
use crate::session::id::{is_valid_client_id, new_uuid, redact};
use crate::session::{rfc3339, Caller, Flavor, Session, SessionPatch, SessionService};
use crate::store::{CreateOutcome, StoreError};
use async_trait::async_trait;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, WWW_AUTHENTICATE};
use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

pub const CUSTOMER_HEADER: &str = "gkc_customerId";
pub const AGENT_HEADER: &str = "gkc_agentId";
pub const TENANT_PARAM: &str = "tenantId";

/// Longest identity value accepted, as for client-chosen ids (SPEC §3).
const MAX_IDENTITY_LEN: usize = 256;

/// How often a freshly drawn UUID may collide with a live one before giving up (never, in practice).
const ID_ATTEMPTS: usize = 3;

/// A refusal in the KC error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KcError {
    pub status: u16,
    pub description: Cow<'static, str>,
}

impl KcError {
    fn new(status: u16, description: impl Into<Cow<'static, str>>) -> KcError {
        KcError {
            status,
            description: description.into(),
        }
    }

    fn bad_request(description: impl Into<Cow<'static, str>>) -> KcError {
        KcError::new(400, description)
    }

    fn not_found() -> KcError {
        KcError::new(404, "Session not found")
    }

    fn taken() -> KcError {
        KcError::new(409, "Session id is taken")
    }

    fn store(e: StoreError) -> KcError {
        log::error!("Knowledge Center: {e}");
        KcError::new(503, "The session store is unavailable")
    }

    fn response(&self) -> ApiResponse {
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

/// The API's view of a session.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionInfo<'a> {
    session_id: &'a str,
    customer_id: Option<&'a str>,
    agent_id: Option<&'a str>,
    visit_id: Option<&'a str>,
    global_visit_id: Option<&'a str>,
    tenant_id: Option<&'a str>,
    created_at: String,
    expires_at: String,
}

fn session_info(s: &Session) -> ApiResponse {
    let info = SessionInfo {
        session_id: &s.id,
        customer_id: s.customer_id.as_deref(),
        agent_id: s.agent_id.as_deref(),
        visit_id: s.visit_id.as_deref(),
        global_visit_id: s.global_visit_id.as_deref(),
        tenant_id: s.tenant_id.as_deref(),
        created_at: rfc3339(s.created_at),
        expires_at: rfc3339(s.expires_at),
    };
    no_store(ApiResponse::json(200, &info))
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
pub fn decode_session_id(segment: &str) -> Result<String, KcError> {
    let bad = || {
        KcError::bad_request("The session id must be 1-256 characters of A-Z a-z 0-9 . _ ~ + / = -")
    };
    let id = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| bad())?;
    if is_valid_client_id(&id) {
        Ok(id.into_owned())
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

    fn apply_to(self, s: &mut Session) {
        s.customer_id = self.customer_id;
        s.agent_id = self.agent_id;
        s.visit_id = self.visit_id;
        s.global_visit_id = self.global_visit_id;
        s.tenant_id = self.tenant_id;
    }

    /// Changes only the values present.
    fn patch(self) -> SessionPatch {
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

pub struct KnowledgeCenter {
    sessions: Arc<SessionService>,
    auth: AuthMode,
    allow_client_ids: bool,
}

impl KnowledgeCenter {
    pub fn new(
        settings: &KnowledgeCenterSettings,
        sessions: Arc<SessionService>,
    ) -> KnowledgeCenter {
        KnowledgeCenter {
            sessions,
            auth: settings.auth,
            allow_client_ids: settings.allow_client_ids,
        }
    }

    /// The caller's credential, or the 401 when `auth = "token"` and there is no valid one.
    /// With `auth = "none"` a refused credential is ignored, as on `auth = "none"` routes.
    fn credential<'r>(
        &self,
        auth: &'r AuthResult,
    ) -> Result<Option<&'r crate::auth::Credential>, ApiResponse> {
        match (auth, self.auth) {
            (AuthResult::Valid(c), _) => Ok(Some(c)),
            (_, AuthMode::None) => Ok(None),
            (AuthResult::Missing, AuthMode::Token) | (AuthResult::Refused(_), AuthMode::Token) => {
                auth.record_failure();
                let description = if *auth == AuthResult::Missing {
                    "A bearer token is required"
                } else {
                    "The presented credential is not valid"
                };
                Err(KcError::new(401, description)
                    .response()
                    .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
            }
        }
    }

    async fn handle(
        &self,
        req: &ApiRequest<'_>,
        route: Route<'_>,
        caller: &Caller<'_>,
    ) -> Result<ApiResponse, KcError> {
        match route {
            Route::New => {
                let identity = Identity::parse(req.headers, req.query, req.body)?;
                self.create(caller, identity).await
            }
            Route::Session(segment) if *req.method == Method::GET => {
                let id = decode_session_id(segment)?;
                // `get` records the read: a GET extends the idle expiry (SPEC §3).
                match self
                    .sessions
                    .get(caller, &id)
                    .await
                    .map_err(KcError::store)?
                {
                    Some(s) if s.flavor == Flavor::KnowledgeCenter => Ok(session_info(&s)),
                    _ => Err(KcError::not_found()),
                }
            }
            Route::Session(segment) => {
                let id = decode_session_id(segment)?;
                let identity = Identity::parse(req.headers, req.query, req.body)?;
                self.upsert(caller, &id, identity).await
            }
        }
    }

    async fn create(
        &self,
        caller: &Caller<'_>,
        identity: Identity,
    ) -> Result<ApiResponse, KcError> {
        for _ in 0..ID_ATTEMPTS {
            let session = self.build(new_uuid(), caller, identity.clone());
            if let Some(created) = self.try_open(session).await? {
                return Ok(created);
            }
        }
        log::error!("Knowledge Center: {ID_ATTEMPTS} fresh UUIDs collided with live sessions");
        Err(KcError::new(503, "The session could not be created"))
    }

    /// Updates the caller's session `id`, or creates it under that id (`allow_client_ids`).
    async fn upsert(
        &self,
        caller: &Caller<'_>,
        id: &str,
        identity: Identity,
    ) -> Result<ApiResponse, KcError> {
        // Two rounds: a concurrent upsert of the same new id may create it between our look
        // and our create; the second round then updates it (or finds it taken).
        for _ in 0..2 {
            match self
                .sessions
                .peek(caller, id)
                .await
                .map_err(KcError::store)?
            {
                Some(s) if s.flavor == Flavor::KnowledgeCenter => {
                    let patch = identity.clone().patch();
                    match self
                        .sessions
                        .update(caller, id, &patch)
                        .await
                        .map_err(KcError::store)?
                    {
                        Some(updated) => return Ok(session_info(&updated)),
                        None => continue, // ended meanwhile
                    }
                }
                // Another API's session: its id is not free for a KC session.
                Some(_) => return Err(KcError::taken()),
                None => {}
            }
            if !self.allow_client_ids {
                // Someone else's session and an unknown id look alike here (SPEC §3).
                return Err(KcError::not_found());
            }
            let anyone = Caller {
                name: None,
                admin: true,
            };
            if self
                .sessions
                .peek(&anyone, id)
                .await
                .map_err(KcError::store)?
                .is_some()
            {
                // Either someone else's session, or one a concurrent upsert by this caller
                // created since our first look: the next round tells them apart.
                continue;
            }
            if let Some(created) = self
                .try_open(self.build(id.to_string(), caller, identity.clone()))
                .await?
            {
                log::debug!("Knowledge Center session {} created by upsert", redact(id));
                return Ok(created);
            }
        }
        Err(KcError::taken())
    }

    fn build(&self, id: String, caller: &Caller<'_>, identity: Identity) -> Session {
        let mut session = self
            .sessions
            .new_session(id, Flavor::KnowledgeCenter, caller.name);
        identity.apply_to(&mut session);
        session
    }

    /// Stores a new session: its `SessionInfo`, or `None` if the id is taken.
    async fn try_open(&self, session: Session) -> Result<Option<ApiResponse>, KcError> {
        let answer = session_info(&session);
        match self
            .sessions
            .open(session, None)
            .await
            .map_err(KcError::store)?
        {
            CreateOutcome::Created => Ok(Some(answer)),
            CreateOutcome::IdTaken | CreateOutcome::ApplicationFull => Ok(None),
        }
    }
}

#[async_trait]
impl SessionApi for KnowledgeCenter {
    fn flavor(&self) -> Flavor {
        Flavor::KnowledgeCenter
    }

    fn answers(&self, path: &str) -> bool {
        route(path).is_some()
    }

    fn body_too_large(&self) -> ApiResponse {
        KcError::new(413, "The request body is too large").response()
    }

    fn creates_session(&self, method: &Method, path: &str) -> bool {
        *method == Method::PUT && matches!(route(path), Some(Route::New))
    }

    async fn answer(&self, req: &ApiRequest<'_>) -> ApiResponse {
        let Some(route) = route(req.path) else {
            return KcError::new(404, "Not found").response();
        };
        let allowed = match route {
            Route::New => "PUT",
            Route::Session(_) => "GET, POST",
        };
        let method_ok = match route {
            Route::New => *req.method == Method::PUT,
            Route::Session(_) => *req.method == Method::GET || *req.method == Method::POST,
        };
        if !method_ok {
            return KcError::new(405, "Method not allowed")
                .response()
                .with_header(ALLOW, HeaderValue::from_static(allowed));
        }
        let credential = match self.credential(req.auth) {
            Ok(c) => c,
            Err(refusal) => return refusal,
        };
        let caller = credential.map_or(Caller::ANONYMOUS, |c| Caller::named(&c.name, c.admin));
        match self.handle(req, route, &caller).await {
            Ok(answer) => answer,
            Err(e) => e.response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credential;
    use crate::config::{ApplicationAccess, SessionSettings};
    use crate::store::memory::MemoryStore;
    use proptest::prelude::*;
    use std::time::Duration;

    fn kc(allow_client_ids: bool) -> KnowledgeCenter {
        let settings = SessionSettings {
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: Duration::from_secs(600),
            max_sessions: 1000,
            max_sessions_per_customer: 0,
            isolate_by_credential: true,
        };
        let sessions = Arc::new(SessionService::new(
            Arc::new(MemoryStore::new(1000)),
            settings,
        ));
        let kc = KnowledgeCenterSettings {
            base_path: "/gks-server/v1".into(),
            auth: AuthMode::Token,
            allow_client_ids,
        };
        KnowledgeCenter::new(&kc, sessions)
    }

    fn credential(name: &str) -> AuthResult {
        AuthResult::Valid(Arc::new(Credential {
            name: name.into(),
            admin: false,
            applications: ApplicationAccess::All,
        }))
    }

    fn call(
        api: &KnowledgeCenter,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
    ) -> ApiResponse {
        let auth = credential("web");
        let req = ApiRequest {
            method: &method,
            path,
            query,
            headers,
            body,
            auth: &auth,
            client_ip: None,
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(api.answer(&req))
    }

    fn json(r: &ApiResponse) -> Value {
        serde_json::from_slice(&r.body).expect("JSON answer")
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
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
            Ok("Conf.K_c~1+2=3-x".to_string())
        );
        assert_eq!(decode_session_id("a%2Bb%2F%3D"), Ok("a+b/=".to_string()));
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

    #[test]
    fn create_get_update() {
        let api = kc(true);
        let created = call(
            &api,
            Method::PUT,
            "/sessions/new",
            &headers(&[("gkc_customerId", b"c1")]),
            Some("tenantId=t"),
            b"",
        );
        assert_eq!(created.status, 200);
        let info = json(&created);
        let id = info["sessionId"].as_str().unwrap().to_string();
        assert_eq!(info["tenantId"], "t");
        assert_eq!(info["agentId"], Value::Null);
        let path = format!("/sessions/{id}");
        let updated = call(
            &api,
            Method::POST,
            &path,
            &headers(&[("gkc_agentId", b"a1")]),
            None,
            br#"{"visitId":"v1"}"#,
        );
        let info = json(&updated);
        assert_eq!(
            (
                info["customerId"].as_str(),
                info["agentId"].as_str(),
                info["visitId"].as_str()
            ),
            (Some("c1"), Some("a1"), Some("v1"))
        );
        assert_eq!(
            call(&api, Method::GET, &path, &HeaderMap::new(), None, b"").status,
            200
        );
        let other = call(
            &api,
            Method::GET,
            "/sessions/unknown-id",
            &HeaderMap::new(),
            None,
            b"",
        );
        assert_eq!(
            (other.status, json(&other)),
            (
                404,
                serde_json::json!({"code": 404, "description": "Session not found"})
            )
        );
    }

    #[test]
    fn unknown_methods_are_405_with_allow() {
        let api = kc(true);
        for (method, path, allow) in [
            (Method::GET, "/sessions/new", "PUT"),
            (Method::PATCH, "/sessions/x", "GET, POST"),
            (Method::DELETE, "/sessions/x", "GET, POST"),
        ] {
            let r = call(&api, method, path, &HeaderMap::new(), None, b"");
            assert_eq!(r.status, 405);
            assert_eq!(json(&r)["code"], 405);
            assert!(r.headers.iter().any(|(k, v)| k == ALLOW && v == allow));
        }
    }

    #[test]
    fn upsert_without_client_ids_is_404() {
        let api = kc(false);
        let r = call(
            &api,
            Method::POST,
            "/sessions/my-own-id",
            &headers(&[("gkc_customerId", b"c")]),
            None,
            b"",
        );
        assert_eq!(r.status, 404);
    }

    proptest! {
        /// Whatever the body, headers, query and path segment: never a panic, never a 5xx, and
        /// every refusal is in the KC error shape.
        #[test]
        fn any_request_gets_kc_shape(
            body in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..100),
                "\\{(\"(visitId|globalVisitId|x)\": ?(\"[ -~\r\n]{0,8}\"|[0-9]{1,3}|null|\\[\\]|true),? ?){0,3}\\}".prop_map(String::into_bytes),
            ],
            customer in proptest::collection::vec(any::<u8>(), 0..20),
            query in "[a-zA-Z=&%0-9+]{0,20}",
            segment in "[a-zA-Z0-9%!+/=._~-]{0,12}",
            post in any::<bool>(),
        ) {
            let api = kc(true);
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&customer) {
                h.insert(http::HeaderName::from_static("gkc_customerid"), v);
            }
            let (method, path) = if post { (Method::POST, format!("/sessions/{segment}")) } else { (Method::PUT, "/sessions/new".to_string()) };
            if route(&path).is_none() {
                return Ok(());
            }
            let r = call(&api, method, &path, &h, Some(&query), &body);
            prop_assert!(r.status == 200 || (400..500).contains(&r.status), "status {}", r.status);
            let v = json(&r);
            if r.status == 200 {
                prop_assert!(v["sessionId"].as_str().is_some_and(is_valid_client_id));
            } else {
                prop_assert_eq!(v["code"].as_u64(), Some(u64::from(r.status)));
                prop_assert!(v["description"].as_str().is_some_and(|d| !d.is_empty()));
            }
        }
    }
}
