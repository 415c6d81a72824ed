//! A request's part in a distributed trace (SPEC §13.5): continued from the client's
//! `traceparent` or started here, passed to the app as the parent of its work, and exported as
//! spans — the request (server), the session store work (internal) and the hop to the app
//! (client) — when tracing is on and the trace sampled.

use super::context::RequestCtx;
use crate::session::id::redact_path;
use crate::state::Generation;
use crate::trace::context::new_span_id;
use crate::trace::{Span, SpanKind, TraceContext, Value};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A span being timed: its id, and when it started (wall clock for export, monotonic for
/// the duration).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub id: [u8; 8],
    start_ns: u64,
    started: Instant,
    pub end_ns: Option<u64>,
}

impl Timing {
    pub fn begin() -> Timing {
        Timing {
            id: new_span_id(),
            start_ns: unix_nanos(),
            started: Instant::now(),
            end_ns: None,
        }
    }

    pub fn end(&mut self) {
        self.end_ns = Some(self.now_ns());
    }

    fn now_ns(&self) -> u64 {
        self.start_ns
            .saturating_add(u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// The trace state of one request.
pub struct RequestTrace {
    pub context: TraceContext,
    request: Timing,
    /// The session store work (lookup of a forwarded request, or the flavour's answer).
    pub store: Option<Timing>,
    /// The hop to the app; its id is the parent the app sees.
    pub upstream: Option<Timing>,
    pub upstream_status: Option<u16>,
    /// Spans leave the process only for sampled traces with tracing on.
    export: bool,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// W3C trace context headers, built once: every request is asked for `traceparent`, and every
/// traced one has both replaced on its way to the app.
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The trace a request joins: the client's (always honoured), or a new one when tracing is on.
pub fn begin(gen: &Generation, req: &RequestHeader) -> Option<RequestTrace> {
    let header = |name| req.headers.get(name).and_then(|v| v.to_str().ok());
    let settings = &gen.config.tracing;
    let context =
        match header(&TRACEPARENT).and_then(|tp| TraceContext::parse(tp, header(&TRACESTATE))) {
            Some(c) => c,
            None if gen.exporter.is_some() => {
                TraceContext::start(crate::random::sampled(settings.sample_ratio))
            }
            None => return None,
        };
    Some(RequestTrace {
        export: gen.exporter.is_some() && context.sampled,
        context,
        request: Timing::begin(),
        store: None,
        upstream: None,
        upstream_status: None,
    })
}

/// Names the sidecar's upstream span as the parent of the app's work: `traceparent` replaced,
/// `tracestate` passed on as it came.
pub fn to_upstream(trace: &mut RequestTrace, req: &mut RequestHeader) -> pingora::Result<()> {
    let hop = Timing::begin();
    while req.remove_header(&TRACEPARENT).is_some() {}
    while req.remove_header(&TRACESTATE).is_some() {}
    req.insert_header("traceparent", trace.context.traceparent(&hop.id))?;
    if let Some(state) = &trace.context.tracestate {
        req.insert_header("tracestate", state.as_str())?;
    }
    trace.upstream = Some(hop);
    Ok(())
}

/// The app's answer arrived (its header).
pub fn upstream_answered(trace: &mut RequestTrace, status: u16) {
    if let Some(hop) = trace.upstream.as_mut() {
        hop.end();
    }
    trace.upstream_status = Some(status);
}

/// Ends the request's spans and hands them to the exporter.
pub fn finish(session: &Session, ctx: &mut RequestCtx, status: u16) {
    let Some(mut trace) = ctx.trace.take() else {
        return;
    };
    // The access-log line (written after this) names the trace, exported or not.
    ctx.trace_id = Some(trace.context.trace_id_hex());
    let Some(exporter) = ctx.gen.exporter.clone().filter(|_| trace.export) else {
        return;
    };
    trace.request.end();
    let req = session.req_header();
    let route = ctx
        .route
        .as_deref()
        .map(str::to_string)
        .or_else(|| ctx.flavor.map(|f| f.as_str().to_string()));
    let name = match &route {
        Some(r) => format!("{} {r}", req.method),
        None => req.method.to_string(),
    };
    let t = &trace.context;
    let mut attributes = vec![
        ("http.request.method", Value::Str(req.method.to_string())),
        ("url.path", Value::Str(redact_path(req.uri.path()))),
        ("http.response.status_code", Value::Int(i64::from(status))),
        (
            "network.protocol.version",
            Value::Str(
                match req.version {
                    http::Version::HTTP_2 => "2",
                    http::Version::HTTP_10 => "1.0",
                    _ => "1.1",
                }
                .into(),
            ),
        ),
    ];
    if let Some(r) = route {
        attributes.push(("http.route", Value::Str(r)));
    }
    if let Some(host) = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
    {
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        attributes.push(("server.address", Value::Str(host.to_string())));
    }
    if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()) {
        attributes.push(("client.address", Value::Str(ip.ip().to_string())));
    }
    if let Some(f) = ctx.flavor {
        attributes.push(("session.flavor", Value::Str(f.as_str().into())));
    }
    let span = |timing: &Timing, parent, name: String, kind, attributes, error| Span {
        trace_id: t.trace_id,
        span_id: timing.id,
        parent_span_id: parent,
        name,
        kind,
        start_ns: timing.start_ns,
        end_ns: timing.end_ns.unwrap_or_else(|| timing.now_ns()),
        attributes,
        error,
    };
    let request_id = trace.request.id;
    exporter.export(span(
        &trace.request,
        t.parent_span_id,
        name,
        SpanKind::Server,
        attributes,
        status >= 500,
    ));
    if let Some(store) = &trace.store {
        exporter.export(span(
            store,
            Some(request_id),
            "session store".into(),
            SpanKind::Internal,
            vec![(
                "db.system.name",
                Value::Str(ctx.gen.sessions.backend().into()),
            )],
            false,
        ));
    }
    if let Some(hop) = &trace.upstream {
        let mut attributes = vec![("http.request.method", Value::Str(req.method.to_string()))];
        if let Some(peer) = ctx
            .upstream
            .as_deref()
            .and_then(|u| ctx.gen.config.upstreams.get(u))
        {
            attributes.push(("server.address", Value::Str(peer.address.ip().to_string())));
            attributes.push(("server.port", Value::Int(i64::from(peer.address.port()))));
        }
        if let Some(s) = trace.upstream_status {
            attributes.push(("http.response.status_code", Value::Int(i64::from(s))));
        }
        exporter.export(span(
            hop,
            Some(request_id),
            format!("{} upstream", req.method),
            SpanKind::Client,
            attributes,
            trace.upstream_status.is_none_or(|s| s >= 500),
        ));
    }
}
