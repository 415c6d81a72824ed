//! Genesys Knowledge Center sessions (SPEC §4.2) under `flavors.knowledge_center.base_path`:
//! `PUT /sessions/new`, `GET /sessions/{sessionId}`, `POST /sessions/{sessionId}`.
//!
//! Identity comes from the headers `gkc_customerId` / `gkc_agentId`, the optional JSON body
//! `{"visitId","globalVisitId"}` and the query parameter `tenantId`. Answers are `SessionInfo`,
//! errors `{"code": <status>, "description": "…"}`. Forwarded KC calls carry the session as
//! `?sessionId=`, which the query locator resolves; nothing here is involved in that.

pub mod wire;

use crate::api::{ApiRequest, ApiResponse, SessionApi};
use crate::auth::AuthResult;
use crate::config::{AuthMode, KnowledgeCenterSettings};
use crate::session::id::{new_uuid, redact};
use crate::session::{Caller, Flavor, FreshOpen, SessionService, StoreError, Upsert};
use async_trait::async_trait;
use http::header::{HeaderValue, ALLOW, WWW_AUTHENTICATE};
use http::Method;
use std::sync::Arc;
use wire::session_info;
pub use wire::{
    decode_session_id, is_valid_identity, parse_body, route, Identity, KcError, Route,
    AGENT_HEADER, CUSTOMER_HEADER, TENANT_PARAM,
};

/// The 503 for a store that did not answer (logged; the client learns nothing more).
fn store_failed(e: StoreError) -> KcError {
    crate::error_throttled!("store failures", "Knowledge Center: {e}");
    KcError::new(503, "The session store is unavailable")
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
                let identity = Identity::parse(req.headers, req.query, req.body.bytes())?;
                self.create(caller, identity).await
            }
            Route::Session(segment) if *req.method == Method::GET => {
                let id = decode_session_id(segment)?;
                // `get` records the read: a GET extends the idle expiry (SPEC §3).
                match self.sessions.get(caller, &id).await.map_err(store_failed)? {
                    Some(s) if s.flavor == Flavor::KnowledgeCenter => Ok(session_info(&s)),
                    _ => Err(KcError::not_found()),
                }
            }
            Route::Session(segment) => {
                let id = decode_session_id(segment)?;
                let identity = Identity::parse(req.headers, req.query, req.body.bytes())?;
                self.upsert(caller, &id, identity).await
            }
        }
    }

    async fn create(
        &self,
        caller: &Caller<'_>,
        identity: Identity,
    ) -> Result<ApiResponse, KcError> {
        let patch = identity.patch();
        let build = |id| {
            let mut session = self
                .sessions
                .new_session(id, Flavor::KnowledgeCenter, caller.name);
            patch.apply(&mut session);
            session
        };
        match self
            .sessions
            .open_fresh(new_uuid, build, None)
            .await
            .map_err(store_failed)?
        {
            FreshOpen::Opened(session) => Ok(session_info(&session)),
            FreshOpen::ApplicationFull | FreshOpen::NoFreeId => {
                Err(KcError::new(503, "The session could not be created"))
            }
        }
    }

    /// Updates the caller's session `id`, or creates it under that id (`allow_client_ids`).
    async fn upsert(
        &self,
        caller: &Caller<'_>,
        id: &str,
        identity: Identity,
    ) -> Result<ApiResponse, KcError> {
        let patch = identity.patch();
        match self
            .sessions
            .upsert(
                caller,
                id,
                Flavor::KnowledgeCenter,
                &patch,
                self.allow_client_ids,
            )
            .await
            .map_err(store_failed)?
        {
            Upsert::Updated(s) => Ok(session_info(&s)),
            Upsert::Created(s) => {
                log::debug!("Knowledge Center session {} created by upsert", redact(id));
                Ok(session_info(&s))
            }
            Upsert::Taken => Err(KcError::taken()),
            Upsert::NotFound => Err(KcError::not_found()),
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
    use super::wire::tests::headers;
    use super::*;
    use crate::flavors::testing::{self, any_body, credential, json, service};
    use crate::session::id::is_valid_client_id;
    use http::HeaderMap;
    use proptest::prelude::*;
    use serde_json::Value;

    fn kc(allow_client_ids: bool) -> KnowledgeCenter {
        let kc = KnowledgeCenterSettings {
            base_path: "/gks-server/v1".into(),
            auth: AuthMode::Token,
            allow_client_ids,
        };
        KnowledgeCenter::new(&kc, service())
    }

    fn call(
        api: &KnowledgeCenter,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
    ) -> ApiResponse {
        testing::call(api, method, path, headers, query, body, &credential("web"))
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
            body in any_body("\\{(\"(visitId|globalVisitId|x)\": ?(\"[ -~\r\n]{0,8}\"|[0-9]{1,3}|null|\\[\\]|true),? ?){0,3}\\}"),
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
