//! The floor under the sidecar's forwarding cost: a pingora proxy with no session logic at all
//! (no routes, credentials, locators or identity headers; one worker thread), built with the
//! same pingora, profile, allocator and runtime settings as the sidecar. `bench/profile` measures it beside the
//! sidecar and nginx to split the sidecar's CPU per request into "pingora" and "ours".
//! Requests under `/answer` are answered by the proxy itself (`200 ok`, as nginx's static
//! `return 200` answers): the floor under the sidecar's own session answers (bench/run row 5).
//! With ANSWER_FILE, `/answer` sends that file's bytes as `application/json` with
//! `Cache-Control: no-store` instead: bench/run passes the sidecar's KC GET answer, so the
//! floor writes the same bytes and headers the sidecar does (SPEC §13.6's "direct floor").
//!
//! It arms the timeouts every production proxy has, at the sidecar's defaults (nginx has its
//! own on by default too): a keep-alive timeout on client connections, and connect, read,
//! write and idle timeouts towards the upstream. Each costs pingora a timer registration per
//! request, so a floor without them would not be a proxy anyone deploys.
//!
//! Usage: bench-plain-proxy LISTEN_ADDR UPSTREAM_ADDR [ANSWER_FILE]
//!        (e.g. 127.0.0.1:8081 127.0.0.1:3000)

use async_trait::async_trait;
use mimalloc::MiMalloc;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::RunArgs;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::time::Duration;

// The sidecar's allocator, so the floor differs from the sidecar only in the session logic.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

struct PlainProxy {
    peer: HttpPeer,
    /// The `/answer` body and its content type.
    answer: bytes::Bytes,
    json: bool,
}

#[async_trait]
impl ProxyHttp for PlainProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<()> {
        // The sidecar's default `server.keepalive_timeout` (60 s).
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(60));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        if !session.req_header().uri.path().starts_with("/answer") {
            return Ok(false);
        }
        let mut header = ResponseHeader::build(200, Some(3))?;
        if self.json {
            header.insert_header("Content-Type", "application/json")?;
            header.insert_header("Cache-Control", "no-store")?;
        } else {
            header.insert_header("Content-Type", "text/plain")?;
        }
        header.insert_header("Content-Length", self.answer.len())?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(self.answer.clone()), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bench-plain-proxy LISTEN_ADDR UPSTREAM_ADDR [ANSWER_FILE]");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("bench-plain-proxy: {upstream} is not an address like 127.0.0.1:3000");
        std::process::exit(2);
    };
    let (answer, json) = match args.get(3) {
        Some(path) => match std::fs::read(path) {
            Ok(body) => (bytes::Bytes::from(body), true),
            Err(e) => {
                eprintln!("bench-plain-proxy: cannot read {path}: {e}");
                std::process::exit(2);
            }
        },
        None => (bytes::Bytes::from_static(b"ok\n"), false),
    };
    // The sidecar's runtime settings: one thread, running its own single-threaded runtime.
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    // The sidecar's default upstream timeouts (`[upstreams.NAME]`).
    let mut peer = HttpPeer::new(upstream, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(2));
    peer.options.total_connection_timeout = Some(Duration::from_secs(2));
    peer.options.read_timeout = Some(Duration::from_secs(30));
    peer.options.write_timeout = Some(Duration::from_secs(30));
    peer.options.idle_timeout = Some(Duration::from_secs(50));
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        PlainProxy { peer, answer, json },
    );
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run(RunArgs::default());
}
