//! Requests to a flavour's own endpoints: read the body, check credentials once, let the
//! flavour answer, write the answer. Nothing here is forwarded.

use super::body::{self, Body};
use super::context::RequestCtx;
use super::respond;
use crate::api::{ApiRequest, RequestBody, SessionApi};
use crate::auth::AuthResult;
use crate::metrics::RequestKind;
use pingora::proxy::Session;
use pingora::Result;
use std::net::IpAddr;
use std::sync::Arc;

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The flavour's view of the request in `session` (`rel_path`: relative to its base path).
pub fn api_request<'a>(
    session: &'a Session,
    rel_path: &'a str,
    body: RequestBody<'a>,
    auth: &'a AuthResult,
) -> ApiRequest<'a> {
    let h = session.req_header();
    ApiRequest {
        method: &h.method,
        path: rel_path,
        query: h.uri.query(),
        headers: &h.headers,
        body,
        auth,
        client_ip: client_ip(session),
    }
}

pub async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    api: &Arc<dyn SessionApi>,
    rel_path: &str,
) -> Result<bool> {
    ctx.kind = RequestKind::SessionApi;
    ctx.flavor = Some(api.flavor());
    let gen = ctx.gen.clone();
    let body = match body::read_all(session, gen.config.server.max_body).await? {
        Body::Complete(b) => b,
        Body::TooLarge { .. } | Body::NotRead => {
            // The rest of the body is not worth draining: answer and close.
            session.set_keepalive(None);
            respond::write(session, &api.body_too_large()).await?;
            return Ok(true);
        }
    };
    let auth = gen.auth.authenticate(&session.req_header().headers).await;
    ctx.credential = auth.credential().cloned();
    let client_ip = client_ip(session);
    if api.creates_session(&session.req_header().method, rel_path) {
        let credential = auth.credential().map(|c| &*c.name);
        if let Err(wait) = gen.limits.check_create(credential, client_ip) {
            respond::write(session, &api.rate_limited(wait.0)).await?;
            return Ok(true);
        }
    }
    let request = api_request(session, rel_path, RequestBody::Complete(&body), &auth);
    let timing = ctx.trace.as_ref().map(|_| super::trace::Timing::begin());
    let response = api.answer(&request).await;
    if let (Some(t), Some(mut timing)) = (ctx.trace.as_mut(), timing) {
        timing.end();
        t.store = Some(timing);
    }
    respond::write(session, &response).await?;
    Ok(true)
}
