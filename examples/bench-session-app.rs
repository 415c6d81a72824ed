//! Issue 20's prototype of the design that would answer sessions closer to nginx: the
//! sidecar's own session endpoints served on pingora's lower-level HTTP server app path
//! (`HttpServerApp`, the path the admin listener already takes) instead of the proxy phases
//! (`ProxyHttp`: a per-request context, the phase machine, the downstream-module filters).
//! `bench/proto` measures it beside the sidecar's KC answer, pingora's direct-answer floor and
//! nginx.
//!
//! It runs the whole sidecar from the same config (`build_server`: proxy, admin,
//! housekeeping) and adds one listener, `PROTO_LISTEN`, whose requests go through the very
//! parts the proxy's `request_filter` uses for a session endpoint: framing checks and the
//! keep-alive timeout (`proxy::framing`), `SessionApis::endpoint`, the credentials, the
//! creation rate limit, the flavour's `answer`, the same response bytes as
//! `proxy::respond::write`, and `metrics::request_done`. It leaves out what only forwarded or
//! traced requests need (tracing and the access log are off in the bench config). Other paths
//! are forwarded as the sidecar forwards a request no flavour inspects (`SessionApp::forward`),
//! through pingora's connector: the prototype of forwarding off the proxy phases, measured as
//! row 3a beside the sidecar's row 3 and pingora's proxy floor (2p). With `PROTO_ANSWER_FILE`, `GET /answer` sends that file's
//! bytes as the KC answer's headers would: the app path's floor, as `bench-plain-proxy`'s
//! `/answer` is the proxy path's.
//!
//! Usage: PROTO_LISTEN=127.0.0.1:PORT [PROTO_ANSWER_FILE=FILE] bench-session-app --config FILE

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use mimalloc::MiMalloc;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::server::{RunArgs, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use session_sidecar::api::{self, ApiRequest, ApiResponse, RequestBody};
use session_sidecar::config::{AuthMode, SessionMode};
use session_sidecar::metrics::{self, Lookup, RequestKind};
use session_sidecar::proxy::{framing, locate};
use session_sidecar::session::id::is_valid_client_id;
use session_sidecar::state::{AppState, Generation};
use session_sidecar::{build_server, config, LaunchOptions};
use std::sync::Arc;
use std::time::Instant;

// The sidecar's allocator, as in the sidecar binary.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

struct SessionApp {
    state: Arc<AppState>,
    options: HttpServerOptions,
    /// `PROTO_ANSWER_FILE`'s bytes for `/answer`.
    answer: Option<Bytes>,
    /// Upstream connections and their keep-alive pool, as pingora-proxy keeps them.
    connector: Connector,
}

/// What became of a request: answered here, forwarded, or the connection is to be closed.
enum Outcome {
    Answered(u16),
    Forwarded(u16),
    Close,
}

impl SessionApp {
    async fn serve(&self, http: &mut ServerSession) -> Outcome {
        let gen = self.state.current();
        let path = http.req_header().uri.path();
        if let Some(answer) = self.answer.as_ref().filter(|_| path == "/answer") {
            let resp = ApiResponse {
                status: 200,
                headers: vec![
                    (
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    (
                        http::header::CACHE_CONTROL,
                        HeaderValue::from_static("no-store"),
                    ),
                ],
                body: answer.clone(),
            };
            return write(http, &resp).await;
        }
        let uri = http.req_header().uri.clone();
        let Some((api, rel)) = gen.apis.endpoint(uri.path()) else {
            return self.forward(http, &gen).await;
        };
        let body = match read_body(http, gen.config.server.max_body).await {
            Some(b) => b,
            None => {
                http.set_keepalive(None);
                return write(http, &api.body_too_large()).await;
            }
        };
        let auth = gen.auth.authenticate(&http.req_header().headers).await;
        let client_ip = http.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let h = http.req_header();
        if api.creates_session(&h.method, rel) {
            let credential = auth.credential().map(|c| &*c.name);
            if let Err(wait) = gen.limits.check_create(credential, client_ip) {
                return write(http, &api.rate_limited(wait.0)).await;
            }
        }
        let request = ApiRequest {
            method: &h.method,
            path: rel,
            query: h.uri.query(),
            headers: &h.headers,
            body: RequestBody::Complete(&body),
            auth: &auth,
            client_ip,
        };
        let response = api.answer(&request).await;
        write(http, &response).await
    }
}

impl SessionApp {
    /// A forwarded request the way `proxy::forward::prepare` and `upstream_request_filter`
    /// treat one without a flavour inspecting it or a body to locate in (the bench's case):
    /// route, credentials, the session by `locate`, the forward rate limit and the route's
    /// policy, the identity headers on a copy of the head (as pingora-proxy copies it), then
    /// the upstream through pingora's connector and its keep-alive pool.
    async fn forward(&self, http: &mut ServerSession, gen: &Generation) -> Outcome {
        let h = http.req_header();
        let (path, query) = (h.uri.path(), h.uri.query());
        let policy = gen.config.routes.select(h.method.as_str(), path);
        let auth = gen.auth.authenticate(&h.headers).await;
        if policy.auth == AuthMode::Token && auth.credential().is_none() {
            let resp = api::error(401, "unauthorized", "This route requires a bearer token.");
            return write(http, &resp).await;
        }
        let located = if policy.session == SessionMode::None {
            None
        } else {
            locate::from_head(&gen.config.locate, &h.headers, path, query)
        };
        let carried_id = located.is_some();
        let session = match located {
            Some(l) if is_valid_client_id(&l.id) => match gen.sessions.resolve(&l.id).await {
                Ok(found) => found,
                Err(_) => {
                    let resp = api::error(
                        503,
                        "store_unavailable",
                        "The session store is unavailable; retry later.",
                    );
                    return write(http, &resp).await;
                }
            },
            _ => None,
        };
        metrics::lookup(if session.is_some() {
            Lookup::Hit
        } else {
            Lookup::Miss
        });
        if let Some(s) = &session {
            if let Err(wait) = gen.limits.check_forward(&s.id) {
                return write(http, &api::rate_limited(wait.0)).await;
            }
        }
        if policy.session == SessionMode::Required && session.is_none() {
            let error = if carried_id {
                "session_expired"
            } else {
                "session_required"
            };
            let resp = api::error(401, error, "This route requires a session.");
            return write(http, &resp).await;
        }
        let mut req = http.req_header().clone();
        gen.identity.strip(&mut req);
        let credential = auth.credential().map(|c| &*c.name);
        if gen
            .identity
            .apply(&mut req, session.as_deref(), credential)
            .is_err()
        {
            return Outcome::Close;
        }
        let Some(peer) = gen.upstreams.peer(&policy.upstream) else {
            return Outcome::Close;
        };
        match self.proxy(http, req, &peer).await {
            Ok(status) => Outcome::Forwarded(status),
            Err(_) => Outcome::Close,
        }
    }

    /// One request to the upstream and its answer back, the connection returned to the pool.
    async fn proxy(
        &self,
        http: &mut ServerSession,
        req: RequestHeader,
        peer: &HttpPeer,
    ) -> pingora::Result<u16> {
        let (mut up, _reused) = self.connector.get_http_session(peer).await?;
        up.set_read_timeout(peer.options.read_timeout);
        up.set_write_timeout(peer.options.write_timeout);
        up.write_request_header(Box::new(req)).await?;
        while let Some(chunk) = http.read_request_body().await? {
            up.write_request_body(chunk, false).await?;
        }
        up.finish_request_body().await?;
        up.read_response_header().await?;
        let resp = up
            .response_header()
            .cloned()
            .ok_or_else(|| pingora::Error::new(ErrorType::InvalidHTTPHeader))?;
        let status = resp.status.as_u16();
        http.write_response_header(Box::new(resp)).await?;
        while let Some(chunk) = up.read_response_body().await? {
            http.write_response_body(chunk, false).await?;
        }
        http.finish_body().await?;
        if up.response_done() {
            self.connector
                .release_http_session(up, peer, peer.options.idle_timeout)
                .await;
        }
        Ok(status)
    }
}

/// The body, or `None` when it is larger than `limit`.
async fn read_body(http: &mut ServerSession, limit: usize) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    while let Ok(Some(chunk)) = http.read_request_body().await {
        if buf.len() + chunk.len() > limit {
            return None;
        }
        buf.extend_from_slice(&chunk);
    }
    Some(buf.freeze())
}

/// The response as `proxy::respond::write` writes it.
async fn write(http: &mut ServerSession, resp: &ApiResponse) -> Outcome {
    let Ok(mut header) = ResponseHeader::build(resp.status, Some(resp.headers.len() + 1)) else {
        return Outcome::Close;
    };
    for (name, value) in &resp.headers {
        if header.append_header(name.clone(), value.clone()).is_err() {
            return Outcome::Close;
        }
    }
    if header
        .insert_header(http::header::CONTENT_LENGTH, resp.body.len())
        .is_err()
        || http.write_response_header(Box::new(header)).await.is_err()
    {
        return Outcome::Close;
    }
    if !resp.body.is_empty()
        && http
            .write_response_body(resp.body.clone(), true)
            .await
            .is_err()
    {
        return Outcome::Close;
    }
    Outcome::Answered(resp.status)
}

#[async_trait]
impl HttpServerApp for SessionApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(http.read_request().await, Ok(true)) {
            return None;
        }
        let started = Instant::now();
        let limits = self.state.current().config.server.http;
        if let Err(rejection) = framing::check_session(&http, &limits) {
            framing::answer(&mut http, rejection).await;
            return None;
        }
        if *shutdown.borrow() {
            http.set_keepalive(None);
        } else {
            framing::apply_keepalive_timeout(&mut http, &limits);
        }
        let (kind, status) = match self.serve(&mut http).await {
            Outcome::Answered(status) => (RequestKind::SessionApi, status),
            Outcome::Forwarded(status) => (RequestKind::Forward, status),
            Outcome::Close => return None,
        };
        metrics::request_done(kind, status, started.elapsed().as_secs_f64());
        let persistent = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(_) => None,
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}

fn main() {
    session_sidecar::logging::init();
    let args: Vec<String> = std::env::args().collect();
    let (Some("--config"), Some(file), Ok(listen)) = (
        args.get(1).map(String::as_str),
        args.get(2),
        std::env::var("PROTO_LISTEN"),
    ) else {
        eprintln!(
            "usage: PROTO_LISTEN=ADDR [PROTO_ANSWER_FILE=FILE] bench-session-app --config FILE"
        );
        std::process::exit(2);
    };
    let answer = match std::env::var("PROTO_ANSWER_FILE") {
        Ok(path) => match std::fs::read(&path) {
            Ok(body) => Some(Bytes::from(body)),
            Err(e) => {
                eprintln!("bench-session-app: cannot read {path}: {e}");
                std::process::exit(2);
            }
        },
        Err(_) => None,
    };
    let config = match config::load(std::path::Path::new(file)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut sidecar = match build_server(config, &LaunchOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench-session-app: {e}");
            std::process::exit(1);
        }
    };
    let mut options = HttpServerOptions::default();
    options.keepalive_request_limit = Some(framing::keepalive_reuse_limit(
        &sidecar.state.current().config.server.http,
    ));
    let app = SessionApp {
        state: sidecar.state.clone(),
        options,
        answer,
        connector: Connector::new(None),
    };
    let threads = sidecar.state.current().config.server.threads;
    let mut service = Service::new("session app prototype".to_string(), app);
    service.add_tcp(&listen);
    service.threads = Some(threads);
    sidecar.server.add_service(service);
    sidecar.server.bootstrap();
    sidecar.server.run(RunArgs::default());
    sidecar.state.shutdown_store();
}
