//! SpreadsheetWEB dedicated sessions (SPEC §4.1): `OpenDedicatedSession` and
//! `CloseDedicatedSession` under `flavors.spreadsheetweb.base_path`.
//!
//! Every answer is HTTP 200 in the API's own shape, failures included (SPEC §4.1, §12). Later
//! calls of the API (`GetResult` …) are not answered here: they are forwarded, and the JSON
//! body locator resolves their `SessionId`.

pub mod wire;

use crate::api::{ApiRequest, ApiResponse, SessionApi, SessionApis};
use crate::config::{ApplicationSettings, SpreadsheetWebSettings};
use crate::metrics::{self, AuthFailure};
use crate::session::id::{is_valid_client_id, new_uuid, redact};
use crate::session::{intern, Caller, EndReason, Flavor, FreshOpen, SessionService, StoreError};
use async_trait::async_trait;
use http::Method;
use std::collections::HashMap;
use std::sync::Arc;
pub use wire::{
    parse_body, DedicatedSessionRequest, Endpoint, APPLICATION_MESSAGE, LIMIT_MESSAGE, NIL_GUID,
    RATE_LIMIT_MESSAGE, SESSION_MESSAGE, TOKEN_MESSAGE, TOO_LARGE_MESSAGE,
};
use wire::{respond, Answer, STORE_MESSAGE};

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
        crate::error_throttled!("store failures", "SpreadsheetWEB {:?}: {e}", self.endpoint);
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
        let parsed = match parse_body(endpoint, req.body.bytes()) {
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
        let build = |id| {
            let mut session = self
                .sessions
                .new_session(id, Flavor::Spreadsheetweb, caller.name);
            session.application_key = Some(intern(&application.key));
            session
        };
        match self.sessions.open_fresh(new_uuid, build, limit).await {
            Ok(FreshOpen::Opened(session)) => Endpoint::ok_open(session.id.to_string()),
            Ok(FreshOpen::ApplicationFull) => Endpoint::Open.failure(false, LIMIT_MESSAGE),
            Ok(FreshOpen::NoFreeId) => Endpoint::Open.failure(false, STORE_MESSAGE),
            Err(e) => self.store_failed(e),
        }
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
    use crate::flavors::testing::{any_body, call, credential, json, service};
    use http::HeaderMap;
    use proptest::prelude::*;
    use serde_json::Value;

    const APP: &str = "a4dcfb4f0464453b928ce1d6bcfb6aa3";

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

    fn post(api: &DedicatedSessions, method: Method, body: &[u8]) -> ApiResponse {
        let path = api.endpoint.path();
        call(
            api,
            method,
            path,
            &HeaderMap::new(),
            None,
            body,
            &credential("web"),
        )
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
        let r = post(&api(Endpoint::Open, &sessions), Method::GET, b"");
        assert_eq!(r.status, 200);
        let v = json(&r);
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
            body in any_body("\\{\"(ApplicationKey|SessionId|applicationkey)\": ?(\"[a-z0-9]{0,6}\"|[0-9]{1,3}|null|\\[\\]|\\{\\}|true)(, ?\"SessionId\": ?\"[a-z0-9-]{0,8}\")?\\}"),
            close in any::<bool>(),
        ) {
            let sessions = service();
            let endpoint = if close { Endpoint::Close } else { Endpoint::Open };
            let r = post(&api(endpoint, &sessions), Method::POST, &body);
            prop_assert_eq!(r.status, 200);
            let v = json(&r);
            prop_assert_eq!(&v["Success"], &Value::Bool(false));
            prop_assert_eq!(&v["InvalidToken"], &Value::Bool(false));
            prop_assert!(v["Messages"][0].as_str().is_some_and(|m| !m.is_empty()));
            prop_assert_eq!(v.get("SessionId").is_some(), !close);
        }
    }
}
