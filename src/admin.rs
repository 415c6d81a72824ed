//! The admin listener (SPEC §8): metrics, health, readiness, and the session admin API.
//! It is a separate pingora service on `server.admin_listen`, normally bound to loopback.

use crate::auth::AuthResult;
use crate::metrics;
use crate::session::id::{is_valid_client_id, new_uuid};
use crate::session::{rfc3339, Caller, EndReason, Flavor, Session};
use crate::state::AppState;
use crate::store::CreateOutcome;
use async_trait::async_trait;
use bytes::BytesMut;
use http::{Method, Response, StatusCode};
use percent_encoding::percent_decode_str;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::{Deserialize, Serialize};
use serde_json::json;
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

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_response(status: u16, v: &impl Serialize) -> Response<Vec<u8>> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error(status: u16, error: &str, message: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": error, "message": message }))
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
        lock: s.lock.as_ref().map(|l| LockView {
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
        mode_of_sale_id: s.mode_of_sale_id,
        original_mode_of_sale_id: s.original_mode_of_sale_id,
        owner: s.owner.as_deref(),
        source_id: s.source_id,
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

async fn read_body(http: &mut ServerSession) -> Result<Vec<u8>, ()> {
    let mut buf = BytesMut::new();
    loop {
        match http.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_ADMIN_BODY {
                    return Err(());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.to_vec()),
            Err(_) => return Err(()),
        }
    }
}

impl AdminApp {
    async fn admin_api(
        &self,
        http: &mut ServerSession,
        method: Method,
        path: &str,
    ) -> Response<Vec<u8>> {
        let gen = self.state.current();
        let auth = gen.auth.authenticate(&http.req_header().headers).await;
        let credential = match &auth {
            AuthResult::Valid(c) if c.admin => c.clone(),
            AuthResult::Valid(_) => {
                metrics::auth_failure(metrics::AuthFailure::Forbidden);
                return error(
                    403,
                    "forbidden",
                    "This credential may not use the admin API.",
                );
            }
            other => {
                other.record_failure();
                return error(
                    401,
                    "unauthorized",
                    "The admin API requires an admin bearer token.",
                );
            }
        };
        let caller = Caller::named(&credential.name, true);
        let sessions = &gen.sessions;
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let store_failed = |e: crate::store::StoreError| {
            log::error!("admin API: {e}");
            error(
                503,
                "store_unavailable",
                "The session store is unavailable.",
            )
        };
        match (method, segs.as_slice()) {
            (Method::POST, ["admin", "sessions"]) => {
                let Ok(body) = read_body(http).await else {
                    return error(413, "payload_too_large", "The request body is too large.");
                };
                let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
                    b"{}"
                } else {
                    &body
                };
                let new: NewSession = match serde_json::from_slice(body) {
                    Ok(n) => n,
                    Err(e) => {
                        return error(400, "bad_request", &format!("Invalid session JSON: {e}"))
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
                    return error(
                        400,
                        "bad_request",
                        "Identity values must be 1-256 characters of A-Z a-z 0-9 . _ ~ + / = -",
                    );
                }
                let mut s = sessions.new_session(new_uuid(), Flavor::Admin, Some(&credential.name));
                s.customer_id = new.customer_id;
                s.agent_id = new.agent_id;
                s.visit_id = new.visit_id;
                s.global_visit_id = new.global_visit_id;
                s.logged_in = new.logged_in.unwrap_or(false);
                let created = s.clone();
                match sessions.open(s, None).await {
                    Ok(CreateOutcome::Created) => json_response(201, &session_view(&created)),
                    Ok(_) => error(409, "conflict", "The session could not be created."),
                    Err(e) => store_failed(e),
                }
            }
            (Method::GET, ["admin", "sessions", id]) => match sessions.peek(&caller, id).await {
                Ok(Some(s)) => json_response(200, &session_view(&s)),
                Ok(None) => error(404, "not_found", "Session not found."),
                Err(e) => store_failed(e),
            },
            (Method::DELETE, ["admin", "sessions", id]) => {
                match sessions.close(&caller, id, EndReason::Revoked).await {
                    Ok(Some(_)) => respond(204, "application/json", Vec::new()),
                    Ok(None) => error(404, "not_found", "Session not found."),
                    Err(e) => store_failed(e),
                }
            }
            (Method::GET, ["admin", "customers", customer, "sessions"]) => {
                match sessions.customer_sessions(customer).await {
                    Ok(list) => json_response(
                        200,
                        &json!({
                            "customer_id": customer,
                            "sessions": list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
                        }),
                    ),
                    Err(e) => store_failed(e),
                }
            }
            (Method::DELETE, ["admin", "customers", customer, "sessions"]) => {
                match sessions.revoke_customer(customer).await {
                    Ok(n) => json_response(200, &json!({ "revoked": n })),
                    Err(e) => store_failed(e),
                }
            }
            (
                _,
                ["admin", "sessions"]
                | ["admin", "sessions", _]
                | ["admin", "customers", _, "sessions"],
            ) => error(
                405,
                "method_not_allowed",
                "Method not allowed on this admin resource.",
            ),
            _ => error(404, "not_found", "No such admin resource."),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, http: &mut ServerSession) -> Response<Vec<u8>> {
        let method = http.req_header().method.clone();
        let path = http.req_header().uri.path().to_string();
        match (&method, path.as_str()) {
            (&Method::GET, "/metrics") => respond(200, metrics::CONTENT_TYPE, metrics::render()),
            (&Method::GET, "/healthz") => json_response(200, &json!({ "status": "ok" })),
            (&Method::GET, "/readyz") => match self.state.current().sessions.ready().await {
                Ok(()) => json_response(200, &json!({ "status": "ready" })),
                Err(e) => json_response(
                    503,
                    &json!({ "status": "unavailable", "reason": e.to_string() }),
                ),
            },
            (_, p) if p == "/admin" || p.starts_with("/admin/") => {
                self.admin_api(http, method, &path).await
            }
            _ => error(404, "not_found", "No such admin resource."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{CodeHold, Lock, TtlUnit};
    use std::time::Duration;

    #[test]
    fn session_view_keeps_the_sorted_field_order_of_the_map_form() {
        let mut s = Session::new(
            "sid".into(),
            Flavor::Voucherify,
            Some("owner".into()),
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        s.customer_id = Some("c".into());
        s.agent_id = Some("a".into());
        s.mode_of_sale_id = Some(3);
        s.lock = Some(Lock {
            holds: vec![CodeHold {
                code: "CODE".into(),
                quantity: 2,
                credits: 5,
                points: -1,
            }],
            ttl: 7,
            ttl_unit: TtlUnit::Days,
        });
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
