//! The pingora proxy: a thin `impl ProxyHttp` whose hooks each hand off to one component.
//!
//! * `early_request_filter`: framing and size limits, keep-alive timeout (`framing`).
//! * `request_filter`: a flavour's own endpoint → `api::answer`; else `forward::prepare`.
//! * `upstream_peer`: the route's upstream (`upstreams`).
//! * `upstream_request_filter`: strip and set identity headers (`identity`).
//! * `response_filter` / `response_body_filter`: `response` (assertion, hooks, rewrites),
//!   `rotation` (a new session id at login).
//! * `fail_to_proxy`: 502/504 as JSON on a kept-alive connection (`respond`).
//! * `logging`: metrics, the spans (`trace`, begun in `request_filter`, passed to the app in
//!   `upstream_request_filter`), the access-log line (`access`).
//!
//! Keep it so: a hook holds no policy of its own, and this table is the map of the proxy. What
//! a flavour sees of a request is built in `api.rs` (`api_request`); flavours never see pingora.

pub mod access;
pub mod api;
pub mod body;
pub mod context;
pub mod forward;
pub mod framing;
pub mod locate;
pub mod respond;
pub mod response;
pub mod rotation;
pub mod trace;

use crate::metrics;
use crate::session::id::redact_path;
use crate::state::AppState;
use async_trait::async_trait;
use bytes::Bytes;
use context::RequestCtx;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use std::sync::Arc;
use std::time::Duration;

pub struct SidecarProxy {
    state: Arc<AppState>,
}

impl SidecarProxy {
    pub fn new(state: Arc<AppState>) -> SidecarProxy {
        SidecarProxy { state }
    }
}

/// A failed TLS handshake with an upstream (its certificate did not verify, among others).
fn is_tls_failure(e: &Error) -> bool {
    use ErrorType::*;
    matches!(
        e.etype(),
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
    )
}

/// Status, error code and message for a failure to proxy.
fn classify(e: &Error) -> (u16, &'static str, &'static str, &'static str) {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(code)) => (*code, "error", "request refused", "status"),
        (ErrorSource::Upstream, ConnectTimedout | ReadTimedout | WriteTimedout) => (
            504,
            "gateway_timeout",
            "The upstream did not answer in time.",
            "timeout",
        ),
        (ErrorSource::Upstream, ConnectRefused | ConnectNoRoute | ConnectError | SocketError) => (
            502,
            "bad_gateway",
            "The upstream cannot be reached.",
            "connect",
        ),
        (ErrorSource::Upstream, _) => (
            502,
            "bad_gateway",
            "The upstream answered with an error.",
            "protocol",
        ),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => (0, "", "", ""),
        (ErrorSource::Downstream, ReadTimedout) => (
            408,
            "request_timeout",
            "The request was not received in time.",
            "",
        ),
        (ErrorSource::Downstream, _) => (400, "bad_request", "The request is malformed.", ""),
        _ => (
            500,
            "internal_error",
            "The sidecar failed to handle the request.",
            "",
        ),
    }
}

#[async_trait]
impl ProxyHttp for SidecarProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.state.current())
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let limits = &ctx.gen.config.server.http;
        if let Err(rejection) = framing::check_session(session, limits) {
            ctx.kind = metrics::RequestKind::Rejected;
            framing::answer(session, rejection).await;
            return Err(framing::rejected_error(rejection));
        }
        framing::apply_keepalive_timeout(session, limits);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let gen = ctx.gen.clone();
        ctx.trace = trace::begin(&gen, session.req_header());
        let uri = session.req_header().uri.clone(); // shares the bytes; frees `session`
        if let Some((api, rel)) = gen.apis.endpoint(uri.path()) {
            return api::answer(session, ctx, api, rel).await;
        }
        forward::prepare(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let name = ctx.upstream.as_deref().unwrap_or("");
        ctx.upstream_started = Some(std::time::Instant::now());
        ctx.gen.upstreams.peer(name).ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "route names an unknown upstream")
        })
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if is_tls_failure(&e) {
            // Says why (unknown issuer, name mismatch, expired, …): certificates are public.
            crate::warn_throttled!(
                "upstream TLS failures",
                "upstream {} ({}, sni {:?}): TLS handshake failed: {e}",
                ctx.upstream.as_deref().unwrap_or(""),
                peer._address,
                peer.sni
            );
        }
        // A refused or timed-out connect will not succeed on an immediate retry; answering
        // 502/504 at once beats multiplying the connect timeout.
        e.set_retry(false);
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let identity = &ctx.gen.identity;
        identity.strip(upstream_request);
        if let Some(name) = &ctx.strip_credential {
            while upstream_request.remove_header(name).is_some() {}
        }
        identity.apply(
            upstream_request,
            ctx.session.as_deref(),
            ctx.credential.as_ref().map(|c| &*c.name),
        )?;
        if let Some(t) = ctx.trace.as_mut() {
            trace::to_upstream(t, upstream_request)?;
        }
        if let Some(hook) = &ctx.hook {
            for name in hook.remove_headers() {
                while upstream_request.remove_header(&name).is_some() {}
            }
            for (name, value) in hook.request_headers() {
                while upstream_request.remove_header(&name).is_some() {}
                upstream_request.insert_header(name, value)?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(t) = ctx.upstream_started {
            ctx.upstream_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
        }
        if let Some(t) = ctx.trace.as_mut() {
            trace::upstream_answered(t, upstream_response.status.as_u16());
        }
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        response::on_header(upstream_response, ctx, tls).await
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        response::on_body(body, end_of_stream, ctx);
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if framing::is_rejection(e) {
            return FailToProxy {
                error_code: session
                    .response_written()
                    .map_or(400, |r| r.status.as_u16()),
                can_reuse_downstream: false,
            };
        }
        let (status, error, message, upstream_kind) = classify(e);
        if !upstream_kind.is_empty() && upstream_kind != "status" {
            metrics::upstream_error(upstream_kind);
        }
        if let Some(hook) = ctx.hook.as_mut() {
            hook.on_failure().await;
        }
        if !upstream_kind.is_empty() {
            // pingora does not reuse a client connection once an upstream attempt failed:
            // say so in the answer instead of resetting it afterwards.
            session.set_keepalive(None);
        }
        if status > 0 && session.response_written().is_none() {
            let body = if status >= 500 || error != "error" {
                crate::api::error(status, error, message)
            } else {
                crate::api::error(status, "request_refused", message)
            };
            if let Err(write_error) = respond::write(session, &body).await {
                log::debug!("could not write the error answer: {write_error}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: status > 0,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        metrics::request_done(ctx.kind, status, ctx.started.elapsed().as_secs_f64());
        trace::finish(session, ctx, status);
        access::record(session, ctx, status);
        if log::log_enabled!(log::Level::Debug) {
            let h = session.req_header();
            log::debug!(
                "{} {} -> {} ({:?}){}",
                h.method,
                redact_path(h.uri.path()),
                status,
                ctx.kind,
                e.map(|e| format!(" error: {:?}", e.etype()))
                    .unwrap_or_default()
            );
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        // A refused head, a client that hung up or broke its own stream: the client's doing,
        // counted in requests_total and logged at debug by `logging`. An ERROR line each would
        // bury the sidecar's own errors and let any client flood the log.
        framing::is_rejection(e) || e.esource() == &ErrorSource::Downstream
    }

    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        // pingora puts this in its error logs: never let a full session id through.
        let h = session.req_header();
        format!("{} {}", h.method, redact_path(h.uri.path()))
    }
}
