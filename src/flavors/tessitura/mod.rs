//! Tessitura sessions (SPEC §4.3, §12): the SFMOMA wrapper's `POST api/TransferSession` and
//! the native `Web/Session` endpoints, answered from the session store. Login stays in the
//! app; the identity assertion of a forwarded login (SPEC §6) is what logs a session in.
//!
//! Endpoints (relative to `base_path`; literal segments match ignoring case, as the original
//! ASP.NET routes do, and one trailing slash is allowed):
//! * `POST /api/TransferSession`
//! * `POST /Web/Session`
//! * `GET /Web/Session/{sessionKey}`
//! * `POST /Web/Session/{sessionKey}/Transfer`
//!
//! Everything else, including other sub-resources such as `/Web/Session/{key}/Expiration`, is
//! forwarded to the app. Keys are percent-decoded from paths (they contain `+ / =`).
//!
//! Clients that do not percent-encode keys (the `tessitura` Python library concatenates
//! strings) send `/Web/Session/<key with slashes>`, which the router above cannot see. Such
//! paths are inspected before forwarding (SPEC §13.7): the whole rest as a key, then the rest
//! without `/Transfer`, are answered here when they name a live session; a longer path whose
//! leading segments name one (`…/<key>/Login`) is forwarded with that session located.

mod lenient_json;
pub mod wire;

use crate::api::{ApiRequest, ApiResponse, ForwardDecision, ForwardHook, SessionApi};
use crate::auth::AuthResult;
use crate::config::{AuthMode, TessituraSettings};
use crate::session::id::{is_valid_client_id, new_tessitura_key, redact};
use crate::session::{
    Caller, Flavor, FreshOpen, IdentityTransfer, Session, SessionService, StoreError,
};
use async_trait::async_trait;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::Method;
use std::sync::Arc;
use wire::{
    code, has_key_shape, native_failure, native_json, negotiate, parse_create_request,
    parse_native_transfer, parse_transfer_request, path_key, route, transfer_success,
    unencoded_rest, without_transfer, wrapper_failure, AnswerFormat, Endpoint, LoginInfo,
    SessionKeyAnswer, SessionView, Shape, UNKNOWN_SESSION, UNKNOWN_TARGET,
};

/// The 503 in `shape` when the store fails, logged.
fn store_error(shape: Shape, e: &StoreError, key: &str) -> ApiResponse {
    crate::warn_throttled!(
        "store failures",
        "tessitura: session store failed for {}: {e}",
        redact(key)
    );
    shape.unavailable()
}

/// A forwarded request whose unencoded path names a live session the locators cannot read.
struct UnencodedKey(String);

#[async_trait]
impl ForwardHook for UnencodedKey {
    fn request_headers(&self) -> Vec<(http::HeaderName, HeaderValue)> {
        Vec::new()
    }

    async fn on_response(&mut self, _status: u16) {}

    fn session_key(&self) -> Option<&str> {
        Some(&self.0)
    }
}

pub struct Tessitura {
    settings: TessituraSettings,
    sessions: Arc<SessionService>,
}

impl Tessitura {
    pub fn new(settings: TessituraSettings, sessions: Arc<SessionService>) -> Tessitura {
        Tessitura { settings, sessions }
    }

    /// Who is calling, or the 401 refusing them when `auth = "token"`.
    fn caller<'r>(&self, req: &'r ApiRequest<'_>, shape: Shape) -> Result<Caller<'r>, ApiResponse> {
        if let Some(cred) = req.auth.credential() {
            return Ok(Caller::named(&cred.name, cred.admin));
        }
        if self.settings.auth == AuthMode::None {
            return Ok(Caller::ANONYMOUS);
        }
        req.auth.record_failure();
        let message = match req.auth {
            AuthResult::Missing => "This API requires a bearer token.",
            _ => "The presented credential is not valid.",
        };
        Err(shape
            .failure(401, code::UNAUTHORIZED, message)
            .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
    }

    /// A live session this API may act on: a Tessitura session, or one made by the admin API.
    /// Sessions of other flavours do not exist here. Does not record a use.
    async fn find(&self, caller: &Caller<'_>, key: &str) -> Result<Option<Session>, StoreError> {
        Ok(self
            .sessions
            .peek(caller, key)
            .await?
            .filter(|s| matches!(s.flavor, Flavor::Tessitura | Flavor::Admin)))
    }

    /// The session a wrapper transfer creates: a new key with the old session's identity and,
    /// unless `reset`, its mode of sale and source.
    fn successor(&self, old: &Session, reset: bool) -> Session {
        let mut s =
            self.sessions
                .new_session(new_tessitura_key(), Flavor::Tessitura, old.owner.as_deref());
        s.application_key = old.application_key.clone();
        s.customer_id = old.customer_id.clone();
        s.agent_id = old.agent_id.clone();
        s.visit_id = old.visit_id.clone();
        s.global_visit_id = old.global_visit_id.clone();
        s.tenant_id = old.tenant_id.clone();
        s.logged_in = old.logged_in;
        let defaults = (
            self.settings.default_mode_of_sale,
            self.settings.default_source_id,
        );
        let (mos, original, source) = if reset {
            (defaults.0, defaults.0, defaults.1)
        } else {
            (
                old.mode_of_sale_id().unwrap_or(defaults.0),
                old.original_mode_of_sale_id().unwrap_or(defaults.0),
                old.source_id().unwrap_or(defaults.1),
            )
        };
        s.set_mode_of_sale_id(Some(mos));
        s.set_original_mode_of_sale_id(Some(original));
        s.set_source_id(Some(source));
        s
    }

    /// `POST api/TransferSession`.
    async fn transfer_session(&self, req: &ApiRequest<'_>) -> ApiResponse {
        let format = negotiate(req.header("accept"));
        let shape = Shape::Wrapper(format);
        if req.method != Method::POST {
            return shape.method_not_allowed("POST");
        }
        let caller = match self.caller(req, shape) {
            Ok(c) => c,
            Err(refusal) => return refusal,
        };
        let request = match parse_transfer_request(req.media_type().as_deref(), req.body.bytes()) {
            Ok(r) => r,
            Err(e) => return shape.wire_error(e),
        };
        let key = request.session_key.as_str();
        if !is_valid_client_id(key) {
            return shape.failure(
                400,
                code::INVALID_SESSION_KEY,
                "SessionKey is not a valid session key.",
            );
        }
        match self.find(&caller, key).await {
            Ok(Some(_)) => {}
            Ok(None) => return shape.not_found(UNKNOWN_SESSION),
            Err(e) => return store_error(shape, &e, key),
        }
        let reset = request.reset_session_by_login;
        let grace = self.settings.transfer_grace;
        match self
            .sessions
            .transfer(&caller, key, grace, |old| self.successor(old, reset))
            .await
        {
            Ok(Some(new)) => transfer_success(format, &new.id),
            // Lost a race with another transfer (or expiry) of the same key.
            Ok(None) => shape.not_found(UNKNOWN_SESSION),
            Err(e) => store_error(shape, &e, key),
        }
    }

    /// Whether `encoded` (a path's text) is the key of a live session this API serves. Who
    /// may see it is left to the endpoint; a store failure counts as no.
    async fn is_live_key(&self, encoded: &str) -> bool {
        let Ok(key) = path_key(encoded) else {
            return false;
        };
        match self.sessions.flavor_of(&key).await {
            Ok(flavor) => matches!(flavor, Some(Flavor::Tessitura | Flavor::Admin)),
            Err(e) => {
                crate::warn_throttled!(
                    "store failures",
                    "tessitura: looking up {} failed: {e}",
                    redact(&key)
                );
                false
            }
        }
    }

    /// `POST Web/Session`.
    async fn create_session(&self, req: &ApiRequest<'_>) -> ApiResponse {
        let shape = Shape::Native;
        if req.method != Method::POST {
            return shape.method_not_allowed("POST");
        }
        let caller = match self.caller(req, shape) {
            Ok(c) => c,
            Err(refusal) => return refusal,
        };
        let request = match parse_create_request(req.media_type().as_deref(), req.body.bytes()) {
            Ok(r) => r,
            Err(e) => return shape.wire_error(e),
        };
        let build = |key| {
            let mut session = self
                .sessions
                .new_session(key, Flavor::Tessitura, caller.name);
            session.set_mode_of_sale_id(Some(self.settings.default_mode_of_sale));
            session.set_original_mode_of_sale_id(Some(self.settings.default_mode_of_sale));
            session.set_source_id(Some(
                request
                    .promotion_code
                    .unwrap_or(self.settings.default_source_id),
            ));
            session
        };
        match self
            .sessions
            .open_fresh(new_tessitura_key, build, None)
            .await
        {
            Ok(FreshOpen::Opened(s)) => native_json(&SessionKeyAnswer { session_key: &s.id }),
            // No application limit applies, and 80 random bytes do not collide (the service
            // logs it if they do); an answer is still owed.
            Ok(FreshOpen::ApplicationFull | FreshOpen::NoFreeId) => shape.unavailable(),
            Err(e) => {
                crate::warn_throttled!(
                    "store failures",
                    "tessitura: storing a new session failed: {e}"
                );
                shape.unavailable()
            }
        }
    }

    /// What both native `Web/Session/{sessionKey}…` endpoints check first, in this order:
    /// the method, the credential, and the key in the path (percent-decoded).
    fn native_key_request<'r>(
        &self,
        req: &'r ApiRequest<'_>,
        encoded_key: &str,
        allowed: &'static str,
    ) -> Result<(Caller<'r>, String), ApiResponse> {
        let shape = Shape::Native;
        if req.method.as_str() != allowed {
            return Err(shape.method_not_allowed(allowed));
        }
        let caller = self.caller(req, shape)?;
        Ok((caller, path_key(encoded_key)?))
    }

    /// `GET Web/Session/{sessionKey}`.
    async fn read_session(&self, req: &ApiRequest<'_>, encoded_key: &str) -> ApiResponse {
        let shape = Shape::Native;
        let (caller, key) = match self.native_key_request(req, encoded_key, "GET") {
            Ok(v) => v,
            Err(refusal) => return refusal,
        };
        let found = match self.find(&caller, &key).await {
            Ok(Some(s)) => self.sessions.get(&caller, &s.id).await,
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match found {
            Ok(Some(s)) => native_json(&self.view(&s)),
            Ok(None) => shape.not_found(UNKNOWN_SESSION),
            Err(e) => store_error(shape, &e, &key),
        }
    }

    /// The native `Session` for `s`. A transferred key in its grace period answers with the
    /// session it moved to, whose key it shows.
    fn view<'s>(&self, s: &'s Session) -> SessionView<'s> {
        let constituent = if s.logged_in {
            s.customer_id.as_deref()
        } else {
            None
        };
        SessionView {
            session_key: &s.id,
            is_logged_in: s.logged_in,
            mode_of_sale_id: s
                .mode_of_sale_id()
                .unwrap_or(self.settings.default_mode_of_sale),
            original_mode_of_sale_id: s
                .original_mode_of_sale_id()
                .unwrap_or(self.settings.default_mode_of_sale),
            source_id: s.source_id().unwrap_or(self.settings.default_source_id),
            login_info: LoginInfo {
                constituent_id: constituent,
                original_constituent_id: constituent,
                user_id: None,
                status: None,
                failed_attempts: 0,
                locked_date: None,
                electronic_address: None,
            },
        }
    }

    /// `POST Web/Session/{sessionKey}/Transfer`.
    async fn native_transfer(&self, req: &ApiRequest<'_>, encoded_key: &str) -> ApiResponse {
        let shape = Shape::Native;
        let (caller, old) = match self.native_key_request(req, encoded_key, "POST") {
            Ok(v) => v,
            Err(refusal) => return refusal,
        };
        let target = match parse_native_transfer(req.media_type().as_deref(), req.body.bytes()) {
            Ok(t) => t,
            Err(e) => return shape.wire_error(e),
        };
        if !is_valid_client_id(&target) {
            return shape.failure(
                400,
                code::INVALID_SESSION_KEY,
                "NewSessionKey is not a valid session key.",
            );
        }
        if target == old {
            return shape.failure(
                400,
                code::INVALID_REQUEST,
                "NewSessionKey must differ from the session key.",
            );
        }
        for (key, unknown) in [(&old, UNKNOWN_SESSION), (&target, UNKNOWN_TARGET)] {
            match self.find(&caller, key).await {
                Ok(Some(_)) => {}
                Ok(None) => return shape.not_found(unknown),
                Err(e) => return store_error(shape, &e, key),
            }
        }
        match self
            .sessions
            .transfer_identity(&caller, &old, &target, self.settings.transfer_grace)
            .await
        {
            Ok(IdentityTransfer::Moved) => ApiResponse::empty(200),
            Ok(IdentityTransfer::OldUnknown) => shape.not_found(UNKNOWN_SESSION),
            Ok(IdentityTransfer::TargetUnknown) => shape.not_found(UNKNOWN_TARGET),
            Err(e) => store_error(shape, &e, &old),
        }
    }
}

#[async_trait]
impl SessionApi for Tessitura {
    fn flavor(&self) -> Flavor {
        Flavor::Tessitura
    }

    fn answers(&self, path: &str) -> bool {
        route(path).is_some()
    }

    fn body_too_large(&self) -> ApiResponse {
        // The path is not known here: the wrapper's envelope also carries the native
        // `ErrorMessages`, so it serves both APIs.
        wrapper_failure(
            AnswerFormat::DEFAULT,
            413,
            code::REQUEST_TOO_LARGE,
            "The request body is too large.",
        )
    }

    fn creates_session(&self, method: &Method, path: &str) -> bool {
        *method == Method::POST
            && matches!(
                route(path),
                Some(Endpoint::TransferSession | Endpoint::CreateSession)
            )
    }

    fn inspects(&self, _method: &Method, path: &str) -> bool {
        unencoded_rest(path).is_some()
    }

    async fn before_forward(&self, req: &ApiRequest<'_>) -> ForwardDecision {
        let Some(rest) = unencoded_rest(req.path) else {
            return ForwardDecision::Forward(None);
        };
        // A key of the shape this API hands out is never the app's, live or not: an unknown
        // or expired one gets the endpoint's 404 rather than reaching the app.
        if self.is_live_key(rest).await || has_key_shape(rest) {
            return ForwardDecision::Respond(self.read_session(req, rest).await);
        }
        if let Some(key) = without_transfer(rest) {
            if self.is_live_key(key).await || has_key_shape(key) {
                return ForwardDecision::Respond(self.native_transfer(req, key).await);
            }
        }
        // A sub-resource of a session (`…/<key>/Login`): the longest leading segments that
        // name one.
        for (cut, _) in rest.rmatch_indices('/') {
            let key = &rest[..cut];
            if !key.is_empty() && self.is_live_key(key).await {
                let decoded = path_key(key).unwrap_or_default();
                return ForwardDecision::Forward(Some(Box::new(UnencodedKey(decoded))));
            }
        }
        ForwardDecision::Forward(None)
    }

    async fn answer(&self, req: &ApiRequest<'_>) -> ApiResponse {
        match route(req.path) {
            Some(Endpoint::TransferSession) => self.transfer_session(req).await,
            Some(Endpoint::CreateSession) => self.create_session(req).await,
            Some(Endpoint::Session(key)) => self.read_session(req, key).await,
            Some(Endpoint::NativeTransfer(key)) => self.native_transfer(req, key).await,
            // The proxy only sends paths `answers` claimed.
            None => native_failure(404, "NotFound", "No such Tessitura endpoint."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavors::testing;
    use crate::session::CreateOutcome;
    use std::time::Duration;

    fn api(grace: Duration) -> Tessitura {
        Tessitura::new(
            TessituraSettings {
                base_path: String::new(),
                auth: AuthMode::Token,
                default_mode_of_sale: 3,
                default_source_id: 9,
                transfer_grace: grace,
            },
            testing::service(),
        )
    }

    fn old_session(t: &Tessitura) -> Session {
        let mut s = t
            .sessions
            .new_session("old-key".into(), Flavor::Tessitura, Some("web"));
        s.customer_id = Some("c1".into());
        s.logged_in = true;
        s.agent_id = Some("a1".into());
        s.visit_id = Some("v1".into());
        s.global_visit_id = Some("g1".into());
        s.tenant_id = Some("t1".into());
        s.set_mode_of_sale_id(Some(7));
        s.set_original_mode_of_sale_id(Some(6));
        s.set_source_id(Some(77));
        s
    }

    #[test]
    fn successor_copies_identity_and_attributes() {
        let t = api(Duration::ZERO);
        let old = old_session(&t);
        let new = t.successor(&old, false);
        assert_eq!(new.id.len(), 108);
        assert_ne!(new.id, old.id);
        assert_eq!(new.flavor, Flavor::Tessitura);
        assert_eq!(new.owner.as_deref(), Some("web"));
        assert_eq!(
            (
                new.customer_id.clone(),
                new.agent_id.clone(),
                new.visit_id.clone(),
                new.global_visit_id.clone(),
                new.tenant_id.clone(),
                new.logged_in
            ),
            (
                old.customer_id.clone(),
                old.agent_id.clone(),
                old.visit_id.clone(),
                old.global_visit_id.clone(),
                old.tenant_id.clone(),
                true
            )
        );
        assert_eq!(
            (
                new.mode_of_sale_id(),
                new.original_mode_of_sale_id(),
                new.source_id()
            ),
            (Some(7), Some(6), Some(77))
        );
    }

    #[test]
    fn successor_resets_to_defaults() {
        let t = api(Duration::ZERO);
        let old = old_session(&t);
        let new = t.successor(&old, true);
        assert_eq!(new.customer_id.as_deref(), Some("c1"));
        assert!(new.logged_in);
        assert_eq!(
            (
                new.mode_of_sale_id(),
                new.original_mode_of_sale_id(),
                new.source_id()
            ),
            (Some(3), Some(3), Some(9))
        );
    }

    #[tokio::test]
    async fn sessions_of_other_flavours_do_not_exist_here() {
        let t = api(Duration::ZERO);
        let caller = Caller::named("web", false);
        for (id, flavor, visible) in [
            ("tess", Flavor::Tessitura, true),
            ("adm", Flavor::Admin, true),
            ("kc", Flavor::KnowledgeCenter, false),
            ("lock", Flavor::Voucherify, false),
        ] {
            let s = t.sessions.new_session(id.into(), flavor, Some("web"));
            assert_eq!(t.sessions.open(s, None).await, Ok(CreateOutcome::Created));
            assert_eq!(
                t.find(&caller, id).await.unwrap().is_some(),
                visible,
                "{flavor:?}"
            );
        }
    }

    #[test]
    fn view_shows_the_constituent_only_when_logged_in() {
        let t = api(Duration::ZERO);
        let mut s = old_session(&t);
        let v = serde_json::to_value(t.view(&s)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "SessionKey": "old-key", "IsLoggedIn": true, "ModeOfSaleId": 7, "OriginalModeOfSaleId": 6, "SourceId": 77,
                "LoginInfo": {"ConstituentId": "c1", "OriginalConstituentId": "c1", "UserId": null, "Status": null,
                              "FailedAttempts": 0, "LockedDate": null, "ElectronicAddress": null}
            })
        );
        s.logged_in = false;
        s.set_mode_of_sale_id(None);
        let v = serde_json::to_value(t.view(&s)).unwrap();
        assert_eq!(v["LoginInfo"]["ConstituentId"], serde_json::Value::Null);
        assert_eq!(
            v["ModeOfSaleId"], 3,
            "a session without one shows the default"
        );
    }
}
