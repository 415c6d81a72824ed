//! Forwarded requests, before they leave (SPEC §6): `prepare` runs the steps in order —
//! authorize (route credentials) → locate (where the session id is) → inspect body (the
//! flavour that may refuse or decorate the request) → resolve (the live session) → require
//! (the route's session policy and per-session rate limit). Returns `Ok(true)` when the
//! sidecar answered (a refusal), `Ok(false)` to forward.

use super::body::{self, Body};
use super::context::RequestCtx;
use super::locate::{self, Located, Locator};
use super::respond;
use crate::api::{self, ApiResponse, ForwardDecision, SessionApi};
use crate::auth::AuthResult;
use crate::config::{AuthMode, RoutePolicy, SessionMode};
use crate::metrics::{self, Lookup, RequestKind};
use crate::session::id::{is_valid_client_id, redact};
use crate::session::{Session as LiveSession, SessionService, StoreError};
use crate::state::Generation;
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
    // Cloning the method and URI shares their bytes (no copy) and frees `session` for the
    // mutable calls below.
    let (method, uri) = {
        let h = session.req_header();
        (h.method.clone(), h.uri.clone())
    };
    let (path, query) = (uri.path(), uri.query());
    let policy = gen.config.routes.select(method.as_str(), path);
    ctx.upstream = Some(policy.upstream.clone());
    ctx.route = policy.name.clone();

    let auth = gen.auth.authenticate(&session.req_header().headers).await;
    if let Err(refusal) = authorize(policy, &auth) {
        return reject(session, ctx, &refusal).await;
    }
    ctx.credential = auth.credential().cloned();
    if policy.strip_credentials && ctx.credential.is_some() {
        ctx.strip_credential = crate::auth::secret_header(&session.req_header().headers);
    }

    let wants_session = policy.session != SessionMode::None;
    let mut located = if wants_session {
        locate::from_head(
            &gen.config.locate,
            &session.req_header().headers,
            path,
            query,
        )
    } else {
        None
    };
    let inspector = gen.apis.inspector(&method, path);
    ctx.flavor_path = inspector.is_some();
    ctx.flavor = inspector.as_ref().map(|(api, _)| api.flavor());
    let body_locates = wants_session && located.is_none() && body_may_locate(&gen, session);
    let body = if inspector.is_some() || body_locates {
        body::read_for_forwarding(session, gen.config.server.max_body).await?
    } else {
        Body::NotRead
    };
    if session.retry_buffer_truncated() {
        // More was read than pingora can replay (an h2 peer ignoring our frame size): the
        // body can no longer reach the app whole.
        session.set_keepalive(None);
        let refusal = match &inspector {
            Some((api, _)) => api.body_too_large(),
            None => api::error(413, "payload_too_large", "The request body is too large."),
        };
        return reject(session, ctx, &refusal).await;
    }
    if body_locates {
        located = locate::from_json(&gen.config.locate.json_body, body.as_request().bytes())
            .map(|id| Located::new(id, Locator::JsonBody));
    }

    if let Some((api, rel)) = inspector {
        match inspect(session, api.as_ref(), rel, &body, &auth).await {
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
                located = Some(Located::new(key.to_string(), Locator::Flavor));
            }
        }
    }

    let carried_id = located.is_some();
    if let Some(located) = located {
        let timing = ctx.trace.as_ref().map(|_| super::trace::Timing::begin());
        let resolved = resolve(&gen.sessions, &located.id).await;
        if let (Some(t), Some(mut timing)) = (ctx.trace.as_mut(), timing) {
            timing.end();
            t.store = Some(timing);
        }
        match resolved {
            Ok(found) => {
                ctx.session = found;
                ctx.located = Some(located);
            }
            // The store cannot say whether this session exists (Redis down, no near-cache
            // copy): forwarding it as anonymous would hide the outage from the app.
            Err(_) => {
                let message = "The session store is unavailable; retry later.";
                let refusal = api::error(503, "store_unavailable", message);
                return reject(session, ctx, &refusal).await;
            }
        }
    }
    if let Err(refusal) = require(&gen, policy, ctx.session.as_deref(), carried_id) {
        return reject(session, ctx, &refusal).await;
    }
    Ok(false)
}

/// Credentials: a valid one always names the caller; `auth = "token"` demands one.
fn authorize(policy: &RoutePolicy, auth: &AuthResult) -> std::result::Result<(), ApiResponse> {
    if policy.auth == AuthMode::Token && auth.credential().is_none() {
        auth.record_failure();
        let message = match auth {
            AuthResult::Missing => "This route requires a bearer token.",
            _ => "The presented credential is not valid.",
        };
        return Err(api::error(401, "unauthorized", message));
    }
    Ok(())
}

/// Whether the JSON body locators apply: some are configured and the body is JSON.
fn body_may_locate(gen: &Generation, session: &Session) -> bool {
    !gen.config.locate.json_body.is_empty()
        && api::is_json(
            session
                .req_header()
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        )
}

/// Lets the flavour that inspects this forwarded request decide on it.
async fn inspect(
    session: &Session,
    api: &dyn SessionApi,
    rel_path: &str,
    body: &Body,
    auth: &AuthResult,
) -> ForwardDecision {
    let request = super::api::api_request(session, rel_path, body.as_request(), auth);
    api.before_forward(&request).await
}

/// The live session for `id`, counting the lookup. Ids that no session could have are misses.
/// `Err` when the store could not answer.
async fn resolve(
    sessions: &SessionService,
    id: &str,
) -> std::result::Result<Option<Arc<LiveSession>>, StoreError> {
    if !is_valid_client_id(id) {
        metrics::lookup(Lookup::Miss);
        return Ok(None);
    }
    match sessions.resolve(id).await {
        Ok(found) => {
            metrics::lookup(if found.is_some() {
                Lookup::Hit
            } else {
                Lookup::Miss
            });
            Ok(found)
        }
        Err(e) => {
            crate::warn_throttled!(
                "store failures",
                "session lookup for {} failed: {e}",
                redact(id)
            );
            Err(e)
        }
    }
}

/// The route's session policy, and the per-session forward rate limit.
fn require(
    gen: &Generation,
    policy: &RoutePolicy,
    found: Option<&LiveSession>,
    carried_id: bool,
) -> std::result::Result<(), ApiResponse> {
    if let Some(s) = found {
        if let Err(wait) = gen.limits.check_forward(&s.id) {
            return Err(api::rate_limited(wait.0));
        }
    }
    if policy.session == SessionMode::Required && found.is_none() {
        let (error, message) = if carried_id {
            (
                "session_expired",
                "The session is unknown, closed or expired.",
            )
        } else {
            ("session_required", "This route requires a session.")
        };
        return Err(api::error(401, error, message));
    }
    Ok(())
}
