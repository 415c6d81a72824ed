//! The admin listener (SPEC §8): metrics, health, readiness, and the session admin API.
//! It is a separate pingora service on `server.admin_listen`, normally bound to loopback.
//! Like the flavours, it answers through `api::ApiResponse`: `AdminRoute` names the resource,
//! one handler per route calls `SessionService`. Failed admin authentications are limited per
//! client address (`server.admin_auth_failures_per_minute`, issue 16; see `limits`).

use crate::api::{error, ApiResponse};
use crate::auth::{AuthResult, Credential};
use crate::limits::RetryAfter;
use crate::metrics;
use crate::session::id::{is_valid_client_id, new_uuid};
use crate::session::{
    rfc3339, Caller, EndReason, Flavor, FreshOpen, Session, SessionService, StoreError,
};
use crate::state::AppState;
use async_trait::async_trait;
use bytes::BytesMut;
use http::{HeaderValue, Method, Response, StatusCode};
use percent_encoding::percent_decode_str;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;

/// Largest admin request body accepted.
const MAX_ADMIN_BODY: usize = 64 * 1024;

pub struct AdminApp {
    state: Arc<AppState>,
}

impl AdminApp {
    pub fn new(state: Arc<AppState>) -> AdminApp {
        AdminApp { state }
    }
}

/// An `ApiResponse` as pingora's HTTP apps answer.
fn to_http(r: ApiResponse) -> Response<Vec<u8>> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (name, value) in r.headers {
        builder = builder.header(name, value);
    }
    builder
        .header(http::header::CONTENT_LENGTH, r.body.len())
        .body(r.body.to_vec())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// 429 for an address with too many recent failed authentications: SPEC §12's one 429
/// shape (`rate_limited`), with a message that says which limit.
fn too_many_auth_failures(wait: RetryAfter) -> ApiResponse {
    error(
        429,
        "rate_limited",
        "Too many failed admin authentications from this address; retry later.",
    )
    .with_header(http::header::RETRY_AFTER, HeaderValue::from(wait.0.max(1)))
}

/// The TCP peer of the admin connection. The admin listener takes no forwarding headers
/// (`X-Forwarded-For` and the like): a client could write any address there.
fn peer_ip(http: &ServerSession) -> Option<IpAddr> {
    http.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

fn not_found() -> ApiResponse {
    error(404, "not_found", "No such admin resource.")
}

fn session_not_found() -> ApiResponse {
    error(404, "not_found", "Session not found.")
}

fn store_failed(e: StoreError) -> ApiResponse {
    crate::error_throttled!("store failures", "admin API: {e}");
    error(
        503,
        "store_unavailable",
        "The session store is unavailable.",
    )
}

/// The admin JSON form of a session: SPEC §3 field names in snake_case. Written straight
/// from the session rather than through a `serde_json::Value` (a map and a string copy per
/// field); fields are in alphabetical order, the order the `Value` form had.
#[derive(Serialize)]
pub struct SessionView<'a> {
    agent_id: Option<&'a str>,
    application_key: Option<&'a str>,
    created_at: String,
    customer_id: Option<&'a str>,
    expires_at: String,
    flavor: &'static str,
    global_visit_id: Option<&'a str>,
    id: &'a str,
    last_access: String,
    lock: Option<LockView<'a>>,
    logged_in: bool,
    mode_of_sale_id: Option<i64>,
    original_mode_of_sale_id: Option<i64>,
    owner: Option<&'a str>,
    source_id: Option<i64>,
    tenant_id: Option<&'a str>,
    visit_id: Option<&'a str>,
}

#[derive(Serialize)]
struct LockView<'a> {
    codes: Vec<HoldView<'a>>,
    ttl: u64,
    ttl_unit: &'static str,
}

#[derive(Serialize)]
struct HoldView<'a> {
    code: &'a str,
    credits: i64,
    points: i64,
    quantity: u64,
}

/// The admin view of `s` (see `SessionView`).
pub fn session_view(s: &Session) -> SessionView<'_> {
    SessionView {
        agent_id: s.agent_id.as_deref(),
        application_key: s.application_key.as_deref(),
        created_at: rfc3339(s.created_at),
        customer_id: s.customer_id.as_deref(),
        expires_at: rfc3339(s.expires_at),
        flavor: s.flavor.as_str(),
        global_visit_id: s.global_visit_id.as_deref(),
        id: &s.id,
        last_access: rfc3339(s.last_access),
        lock: s.lock().map(|l| LockView {
            codes: l
                .holds
                .iter()
                .map(|h| HoldView {
                    code: &h.code,
                    credits: h.credits,
                    points: h.points,
                    quantity: h.quantity,
                })
                .collect(),
            ttl: l.ttl,
            ttl_unit: l.ttl_unit.as_str(),
        }),
        logged_in: s.logged_in,
        mode_of_sale_id: s.mode_of_sale_id(),
        original_mode_of_sale_id: s.original_mode_of_sale_id(),
        owner: s.owner.as_deref(),
        source_id: s.source_id(),
        tenant_id: s.tenant_id.as_deref(),
        visit_id: s.visit_id.as_deref(),
    }
}

/// Body of `POST /admin/sessions`: every field optional, nothing else allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    customer_id: Option<String>,
    agent_id: Option<String>,
    visit_id: Option<String>,
    global_visit_id: Option<String>,
    logged_in: Option<bool>,
}

/// Identity values end up in headers: they must be valid ids (no CR/LF, no spaces).
fn valid_identity(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(is_valid_client_id)
}

async fn read_body(http: &mut ServerSession) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    loop {
        match http.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_ADMIN_BODY {
                    return None;
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(buf.to_vec()),
            Err(_) => return None,
        }
    }
}

/// The resources of the session admin API (SPEC §8), path segments percent-decoded.
#[derive(Debug, PartialEq, Eq)]
enum AdminRoute {
    CreateSession,
    GetSession(String),
    DeleteSession(String),
    CustomerSessions(String),
    RevokeCustomer(String),
    /// A known resource, an unsupported method.
    MethodNotAllowed,
    NotFound,
}

impl AdminRoute {
    fn of(method: &Method, path: &str) -> AdminRoute {
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method, segs.as_slice()) {
            (&Method::POST, ["admin", "sessions"]) => AdminRoute::CreateSession,
            (&Method::GET, ["admin", "sessions", id]) => AdminRoute::GetSession(id.to_string()),
            (&Method::DELETE, ["admin", "sessions", id]) => {
                AdminRoute::DeleteSession(id.to_string())
            }
            (&Method::GET, ["admin", "customers", c, "sessions"]) => {
                AdminRoute::CustomerSessions(c.to_string())
            }
            (&Method::DELETE, ["admin", "customers", c, "sessions"]) => {
                AdminRoute::RevokeCustomer(c.to_string())
            }
            (
                _,
                ["admin", "sessions"]
                | ["admin", "sessions", _]
                | ["admin", "customers", _, "sessions"],
            ) => AdminRoute::MethodNotAllowed,
            _ => AdminRoute::NotFound,
        }
    }
}

impl AdminApp {
    /// The caller's admin credential, or the 401/403 refusal, or 429 when the caller's address
    /// has failed too often (issue 16).
    async fn admin_credential(&self, http: &ServerSession) -> Result<Arc<Credential>, ApiResponse> {
        let gen = self.state.current();
        // Brute force: an address whose failures used up the budget is refused before its
        // credential is looked at, so a right guess is refused too and confirms nothing.
        let limit = gen.admin_auth_limit.as_deref().zip(peer_ip(http));
        if let Some((limit, ip)) = limit {
            if let Err(wait) = limit.admit(ip) {
                log::debug!("admin API: refused {ip}, too many failed authentications");
                return Err(too_many_auth_failures(wait));
            }
        }
        let auth = gen.auth.authenticate(&http.req_header().headers).await;
        match auth {
            AuthResult::Valid(c) if c.admin => {
                if let Some((limit, ip)) = limit {
                    limit.forgive(ip);
                }
                Ok(c)
            }
            AuthResult::Valid(_) => {
                // Not counted against the address (still `forbidden` in the metric): the
                // caller holds a valid credential, so it is not guessing one, and a 403 tells
                // nothing about admin secrets. Counting it would only let a client with a
                // working non-admin token lock its own address out.
                if let Some((limit, ip)) = limit {
                    limit.forgive(ip);
                }
                metrics::auth_failure(metrics::AuthFailure::Forbidden);
                Err(error(
                    403,
                    "forbidden",
                    "This credential may not use the admin API.",
                ))
            }
            other => {
                // Missing, invalid or expired: the reservation `admit` took stands.
                other.record_failure();
                if let Some((limit, ip)) = limit {
                    if let Some(wait) = limit.refused_for(ip) {
                        log::warn!(
                            "admin API: too many failed authentications from {ip}; its admin \
                             requests are refused for {} s",
                            wait.0
                        );
                    }
                }
                Err(error(
                    401,
                    "unauthorized",
                    "The admin API requires an admin bearer token.",
                ))
            }
        }
    }

    async fn admin_api(&self, http: &mut ServerSession, route: AdminRoute) -> ApiResponse {
        let credential = match self.admin_credential(http).await {
            Ok(c) => c,
            Err(refusal) => return refusal,
        };
        let caller = Caller::named(&credential.name, true);
        let gen = self.state.current();
        let sessions = &gen.sessions;
        let answer = match route {
            AdminRoute::CreateSession => {
                let Some(body) = read_body(http).await else {
                    return error(413, "payload_too_large", "The request body is too large.");
                };
                create_session(sessions, &credential.name, &body).await
            }
            AdminRoute::GetSession(id) => {
                sessions.peek(&caller, &id).await.map(|found| match found {
                    Some(s) => ApiResponse::json(200, &session_view(&s)),
                    None => session_not_found(),
                })
            }
            AdminRoute::DeleteSession(id) => sessions
                .close(&caller, &id, EndReason::Revoked)
                .await
                .map(|ended| match ended {
                    Some(_) => ApiResponse::bytes(204, "application/json", Vec::new()),
                    None => session_not_found(),
                }),
            AdminRoute::CustomerSessions(customer) => {
                sessions.customer_sessions(&customer).await.map(|list| {
                    let ids: Vec<&str> = list.iter().map(|s| &*s.id).collect();
                    ApiResponse::json(200, &json!({ "customer_id": customer, "sessions": ids }))
                })
            }
            AdminRoute::RevokeCustomer(customer) => sessions
                .revoke_customer(&credential.name, &customer)
                .await
                .map(|n| ApiResponse::json(200, &json!({ "revoked": n }))),
            AdminRoute::MethodNotAllowed => Ok(error(
                405,
                "method_not_allowed",
                "Method not allowed on this admin resource.",
            )),
            AdminRoute::NotFound => Ok(not_found()),
        };
        answer.unwrap_or_else(store_failed)
    }
}

/// `POST /admin/sessions`: a session owned by the admin credential, with the identity given.
async fn create_session(
    sessions: &SessionService,
    owner: &str,
    body: &[u8],
) -> Result<ApiResponse, StoreError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let new: NewSession = match serde_json::from_slice(body) {
        Ok(n) => n,
        Err(e) => {
            return Ok(error(
                400,
                "bad_request",
                &format!("Invalid session JSON: {e}"),
            ))
        }
    };
    if ![
        &new.customer_id,
        &new.agent_id,
        &new.visit_id,
        &new.global_visit_id,
    ]
    .into_iter()
    .all(valid_identity)
    {
        return Ok(error(
            400,
            "bad_request",
            "Identity values must be 1-256 characters of A-Z a-z 0-9 . _ ~ + / = -",
        ));
    }
    let build = |id| {
        let mut s = sessions.new_session(id, Flavor::Admin, Some(owner));
        s.customer_id = new.customer_id.as_deref().map(Into::into);
        s.agent_id = new.agent_id.as_deref().map(Into::into);
        s.visit_id = new.visit_id.as_deref().map(Into::into);
        s.global_visit_id = new.global_visit_id.as_deref().map(Into::into);
        s.logged_in = new.logged_in.unwrap_or(false);
        s
    };
    Ok(match sessions.open_fresh(new_uuid, build, None).await? {
        FreshOpen::Opened(created) => ApiResponse::json(201, &session_view(&created)),
        FreshOpen::ApplicationFull | FreshOpen::NoFreeId => {
            error(409, "conflict", "The session could not be created.")
        }
    })
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, http: &mut ServerSession) -> Response<Vec<u8>> {
        let method = http.req_header().method.clone();
        let path = http.req_header().uri.path().to_string();
        let answer = match (&method, path.as_str()) {
            (&Method::GET, "/metrics") => {
                ApiResponse::bytes(200, metrics::CONTENT_TYPE, metrics::render())
            }
            (&Method::GET, "/healthz") => ApiResponse::json(200, &json!({ "status": "ok" })),
            (&Method::GET, "/readyz") => match self.state.current().sessions.ready().await {
                Ok(()) => ApiResponse::json(200, &json!({ "status": "ready" })),
                Err(e) => ApiResponse::json(
                    503,
                    &json!({ "status": "unavailable", "reason": e.to_string() }),
                ),
            },
            (_, p) if p == "/admin" || p.starts_with("/admin/") => {
                self.admin_api(http, AdminRoute::of(&method, p)).await
            }
            _ => not_found(),
        };
        to_http(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{CodeHold, Lock, TtlUnit};
    use std::time::Duration;

    #[test]
    fn admin_routes() {
        use AdminRoute::*;
        let route = |m: Method, p: &str| AdminRoute::of(&m, p);
        assert_eq!(route(Method::POST, "/admin/sessions"), CreateSession);
        assert_eq!(
            route(Method::GET, "/admin/sessions/a%2Bb"),
            GetSession("a+b".into())
        );
        assert_eq!(
            route(Method::DELETE, "/admin/sessions/x"),
            DeleteSession("x".into())
        );
        assert_eq!(
            route(Method::GET, "/admin/customers/c1/sessions"),
            CustomerSessions("c1".into())
        );
        assert_eq!(
            route(Method::DELETE, "/admin/customers/c1/sessions"),
            RevokeCustomer("c1".into())
        );
        assert_eq!(route(Method::PUT, "/admin/sessions/x"), MethodNotAllowed);
        assert_eq!(route(Method::GET, "/admin/sessions"), MethodNotAllowed);
        assert_eq!(route(Method::GET, "/admin/sessions/x/y"), NotFound);
        assert_eq!(route(Method::GET, "/admin"), NotFound);
    }

    #[test]
    fn session_view_keeps_the_sorted_field_order_of_the_map_form() {
        let mut s = Session::new(
            "sid".into(),
            Flavor::Voucherify,
            Some("owner".into()),
            Duration::from_secs(60),
            Duration::from_secs(600),
            crate::session::now_millis(),
        );
        s.customer_id = Some("c".into());
        s.agent_id = Some("a".into());
        s.set_mode_of_sale_id(Some(3));
        s.set_lock(Some(Lock {
            holds: vec![CodeHold {
                code: "CODE".into(),
                quantity: 2,
                credits: 5,
                points: -1,
            }],
            ttl: 7,
            ttl_unit: TtlUnit::Days,
        }));
        let direct = serde_json::to_vec(&session_view(&s)).unwrap();
        // Through a Value, whose maps sort their keys: the bytes must not change.
        let sorted = serde_json::to_vec(&serde_json::to_value(session_view(&s)).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(direct).unwrap(),
            String::from_utf8(sorted).unwrap()
        );
        let v = serde_json::to_value(session_view(&s)).unwrap();
        assert_eq!(v["lock"]["codes"][0]["points"], -1);
        assert_eq!(v["lock"]["ttl_unit"], TtlUnit::Days.as_str());
        assert_eq!(v["owner"], "owner");
        assert_eq!(v["tenant_id"], serde_json::Value::Null);
    }
}
