//! Shared fixtures of the flavours' unit tests: a `SessionService` on a memory store, test
//! credentials, a blocking call into a `SessionApi`, and the body strategy of the "any input
//! gets the flavour's shape" property tests.

use crate::api::{ApiRequest, ApiResponse, RequestBody, SessionApi};
use crate::auth::{AuthResult, Credential};
use crate::config::{ApplicationAccess, SessionSettings};
use crate::session::SessionService;
use crate::store::memory::MemoryStore;
use http::{HeaderMap, Method};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// Sessions on a fresh memory store: 60 s idle, 600 s absolute, isolated by credential.
pub fn service() -> Arc<SessionService> {
    let settings = SessionSettings {
        idle_timeout: Duration::from_secs(60),
        absolute_timeout: Duration::from_secs(600),
        max_sessions: 1000,
        max_sessions_per_customer: 0,
        isolate_by_credential: true,
        rotate_on_login: crate::config::RotateOnLogin::Cookie,
        rotation_grace: Duration::from_secs(10),
    };
    Arc::new(SessionService::new(
        Arc::new(MemoryStore::new(1000)),
        settings,
    ))
}

/// A valid, non-admin credential allowed every application.
pub fn credential(name: &str) -> AuthResult {
    AuthResult::Valid(Arc::new(Credential {
        name: name.into(),
        admin: false,
        applications: ApplicationAccess::All,
    }))
}

/// One request to `api`'s own endpoint `path`, answered on a runtime of its own.
pub fn call(
    api: &dyn SessionApi,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    auth: &AuthResult,
) -> ApiResponse {
    let req = ApiRequest {
        method: &method,
        path,
        query,
        headers,
        body: RequestBody::Complete(body),
        auth,
        client_ip: None,
    };
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(api.answer(&req))
}

/// An answer's body as JSON.
pub fn json(r: &ApiResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).expect("JSON answer")
}

/// Bodies for the shape property tests: arbitrary bytes, or text from `near_miss` (a regex
/// for almost-valid bodies of the flavour).
pub fn any_body(near_miss: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..120),
        near_miss.prop_map(String::into_bytes),
    ]
}
