//! The app's answer on its way back: identity assertion (and rotation at login), the flavour
//! hook's commit/rollback, and body rewriting.

use super::context::{BodyRewrite, RequestCtx};
use crate::session::id::redact;
use crate::session::SessionPatch;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::Result;

/// Largest app answer buffered for rewriting; larger ones pass through unchanged.
const REWRITE_LIMIT: usize = 1024 * 1024;

/// `tls`: the request came over TLS.
pub async fn on_header(resp: &mut ResponseHeader, ctx: &mut RequestCtx, tls: bool) -> Result<()> {
    let gen = ctx.gen.clone();
    if let Some(name) = gen.identity.assert_customer_header() {
        let asserted = resp
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string());
        while resp.remove_header(name).is_some() {}
        if let (Some(value), Some(s)) = (asserted, &ctx.session) {
            let login = !value.is_empty();
            let patch = if value.is_empty() {
                SessionPatch {
                    customer_id: Some(None),
                    logged_in: Some(false),
                    ..Default::default()
                }
            } else {
                SessionPatch {
                    customer_id: Some(Some(value)),
                    logged_in: Some(true),
                    ..Default::default()
                }
            };
            match gen.sessions.update_resolved(&s.id, &patch).await {
                Ok(Some(_)) if login => super::rotation::after_login(resp, ctx, tls).await?,
                Ok(_) => {}
                Err(e) => crate::warn_throttled!(
                    "store failures",
                    "identity assertion for session {} failed: {e}",
                    redact(&s.id)
                ),
            }
        }
    }
    let status = resp.status.as_u16();
    if let Some(hook) = ctx.hook.as_mut() {
        hook.on_response(status).await;
        if hook.rewrites_body() && (200..300).contains(&status) {
            ctx.rewrite = Some(BodyRewrite {
                content_type: resp
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                buffer: Vec::new(),
            });
            resp.remove_header(&http::header::CONTENT_LENGTH);
            resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
    }
    Ok(())
}

pub fn on_body(body: &mut Option<Bytes>, end_of_stream: bool, ctx: &mut RequestCtx) {
    let Some(rewrite) = ctx.rewrite.as_mut() else {
        return;
    };
    if let Some(chunk) = body.take() {
        rewrite.buffer.extend_from_slice(&chunk);
    }
    if rewrite.buffer.len() > REWRITE_LIMIT {
        // Too big to rewrite: send what we have and stream the rest as it comes.
        *body = Some(Bytes::from(std::mem::take(&mut rewrite.buffer)));
        ctx.rewrite = None;
        return;
    }
    if end_of_stream {
        let original = std::mem::take(&mut rewrite.buffer);
        let content_type = rewrite.content_type.take();
        let new = ctx
            .hook
            .as_ref()
            .and_then(|h| h.rewrite_body(content_type.as_deref(), &original))
            .unwrap_or(original);
        *body = Some(Bytes::from(new));
        ctx.rewrite = None;
    }
}
