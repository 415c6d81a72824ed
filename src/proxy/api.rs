//! Requests to a flavour's own endpoints: read the body, check credentials once, let the
//! flavour answer, write the answer. Nothing here is forwarded.

use super::body::{self, Body};
use super::context::RequestCtx;
use super::respond;
use crate::api::{ApiRequest, RequestBody, SessionApi};
use crate::metrics::RequestKind;
use pingora::proxy::Session;
use pingora::Result;
use std::sync::Arc;

pub async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    api: &Arc<dyn SessionApi>,
    rel_path: &str,
) -> Result<bool> {
    ctx.kind = RequestKind::SessionApi;
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
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    if api.creates_session(&session.req_header().method, rel_path) {
        let credential = auth.credential().map(|c| &*c.name);
        if let Err(wait) = gen.limits.check_create(credential, client_ip) {
            respond::write(session, &api.rate_limited(wait.0)).await?;
            return Ok(true);
        }
    }
    let req_header = session.req_header();
    let request = ApiRequest {
        method: &req_header.method,
        path: rel_path,
        query: req_header.uri.query(),
        headers: &req_header.headers,
        body: RequestBody::Complete(&body),
        auth: &auth,
        client_ip,
    };
    let response = api.answer(&request).await;
    respond::write(session, &response).await?;
    Ok(true)
}
