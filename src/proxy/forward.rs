//! Forwarded requests, before they leave: route policy, credentials, session lookup, and the
//! flavour inspection that may refuse or decorate them. Returns `Ok(true)` when the sidecar
//! answered (a rejection), `Ok(false)` to forward.

use super::body;
use super::context::RequestCtx;
use super::locate;
use super::respond;
use crate::auth::AuthResult;
use crate::config::{AuthMode, SessionMode};
use crate::flavors::{ApiRequest, ApiResponse, ForwardDecision};
use crate::metrics::{self, Lookup, RequestKind};
use crate::session::id::{is_valid_client_id, redact};
use pingora::proxy::Session;
use pingora::Result;
use std::sync::Arc;

async fn reject(
    session: &mut Session,
    ctx: &mut RequestCtx,
    response: &ApiResponse,
) -> Result<bool> {
    ctx.kind = RequestKind::Rejected;
    respond::write(session, response).await?;
    Ok(true)
}

pub async fn prepare(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    let gen = ctx.gen.clone();
    let config = &gen.config;
    // Cloning the method and URI shares their bytes (no copy) and frees `session` for the
    // mutable calls below.
    let (method, uri) = {
        let h = session.req_header();
        (h.method.clone(), h.uri.clone())
    };
    let (path, query) = (uri.path(), uri.query());
    let policy = config.routes.select(method.as_str(), path);
    ctx.upstream = Some(policy.upstream.clone());

    // Credentials: a valid one always names the caller; `auth = "token"` demands one.
    let auth = gen.auth.authenticate(&session.req_header().headers).await;
    if policy.auth == AuthMode::Token && auth.credential().is_none() {
        auth.record_failure();
        let message = match auth {
            AuthResult::Missing => "This route requires a bearer token.",
            _ => "The presented credential is not valid.",
        };
        return reject(session, ctx, &respond::error(401, "unauthorized", message)).await;
    }
    ctx.credential = auth.credential().cloned();
    if policy.strip_credentials && ctx.credential.is_some() {
        ctx.strip_credential = crate::auth::secret_header(&session.req_header().headers);
    }

    // Where the session id is: request head first, then (for JSON bodies) the body.
    let wants_session = policy.session != SessionMode::None;
    let mut located = if wants_session {
        locate::from_head(&config.locate, &session.req_header().headers, path, query)
    } else {
        None
    };
    let inspector = gen.apis.inspector(&method, path);
    let is_json = locate::is_json(
        session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let body_locates =
        wants_session && located.is_none() && !config.locate.json_body.is_empty() && is_json;
    let body = if inspector.is_some() || body_locates {
        body::read_for_forwarding(session, config.server.max_body).await?
    } else {
        None
    };
    if body_locates {
        located = body
            .as_deref()
            .and_then(|b| locate::from_json(&config.locate.json_body, b));
    }

    if let Some((api, rel)) = inspector {
        let h = session.req_header();
        let request = ApiRequest {
            method: &h.method,
            path: rel,
            query: h.uri.query(),
            headers: &h.headers,
            body: body.as_deref().unwrap_or(&[]),
            auth: &auth,
            client_ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
        };
        match api.before_forward(&request).await {
            ForwardDecision::Answer(response) => return reject(session, ctx, &response).await,
            ForwardDecision::Respond(response) => {
                ctx.kind = RequestKind::SessionApi;
                respond::write(session, &response).await?;
                return Ok(true);
            }
            ForwardDecision::Forward(hook) => ctx.hook = hook,
        }
        if let Some(key) = ctx.hook.as_ref().and_then(|h| h.session_key()) {
            if wants_session {
                located = Some(key.to_string());
            }
        }
    }

    let carried_id = located.is_some();
    if let Some(id) = located {
        match resolve(&gen.sessions, &id).await {
            Ok(found) => ctx.session = found,
            // The store cannot say whether this session exists (Redis down, no near-cache
            // copy): forwarding it as anonymous would hide the outage from the app.
            Err(()) => {
                let message = "The session store is unavailable; retry later.";
                return reject(
                    session,
                    ctx,
                    &respond::error(503, "store_unavailable", message),
                )
                .await;
            }
        }
    }
    if let Some(s) = &ctx.session {
        if let Err(wait) = gen.limits.check_forward(&s.id) {
            return reject(session, ctx, &respond::rate_limited(wait.0)).await;
        }
    }
    if policy.session == SessionMode::Required && ctx.session.is_none() {
        let (error, message) = if carried_id {
            (
                "session_expired",
                "The session is unknown, closed or expired.",
            )
        } else {
            ("session_required", "This route requires a session.")
        };
        return reject(session, ctx, &respond::error(401, error, message)).await;
    }
    Ok(false)
}

/// The live session for `id`, counting the lookup. Ids that no session could have are misses.
/// `Err` when the store could not answer.
async fn resolve(
    sessions: &crate::session::SessionService,
    id: &str,
) -> Result<Option<Arc<crate::session::Session>>, ()> {
    if !is_valid_client_id(id) {
        metrics::lookup(Lookup::Miss);
        return Ok(None);
    }
    match sessions.resolve(id).await {
        Ok(Some(s)) => {
            metrics::lookup(Lookup::Hit);
            Ok(Some(s))
        }
        Ok(None) => {
            metrics::lookup(Lookup::Miss);
            Ok(None)
        }
        Err(e) => {
            log::warn!("session lookup for {} failed: {e}", redact(id));
            Err(())
        }
    }
}
