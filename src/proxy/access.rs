//! A finished request's access-log line (SPEC §13.5), built from what the hooks recorded in
//! the context and handed to the sink (which writes it on its own thread).

use super::context::RequestCtx;
use crate::access_log::line;
use crate::session::id::{redact_path, tag};
use crate::session::{now_millis, rfc3339};
use pingora::proxy::Session;

pub fn record(session: &Session, ctx: &RequestCtx, status: u16) {
    let Some(log) = &ctx.gen.access_log else {
        return;
    };
    let settings = &ctx.gen.config.access_log;
    // Errors are always logged; successes as sampled.
    if status < 400 && status != 0 && !crate::random::sampled(settings.sample_ratio) {
        return;
    }
    let h = session.req_header();
    let protocol = match h.version {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let entry = line::Request {
        ts: rfc3339(now_millis()),
        method: h.method.as_str(),
        path: redact_path(h.uri.path()),
        status,
        kind: ctx.kind.as_str(),
        route: ctx.route.as_deref(),
        flavor: ctx.flavor.map(|f| f.as_str()),
        duration_ms: ctx.started.elapsed().as_secs_f64() * 1000.0,
        upstream_ms: ctx.upstream_ms,
        bytes_in: session.body_bytes_read(),
        bytes_out: session.body_bytes_sent(),
        client_ip: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip()),
        session: ctx.session.as_ref().map(|s| tag(&s.id)),
        credential: ctx.credential.as_ref().map(|c| &*c.name),
        trace_id: ctx.trace_id.as_deref(),
        protocol,
    };
    log.write(entry.format(settings.format));
}
