//! The admin listener's HTTP/1 connection loop (SPEC §8, §13.1): pingora's `ServeHttp` loop
//! around `AdminApp`, plus what SPEC §13.1 asks of every listener. pingora's generic loop
//! drops a connection whose head it cannot parse without a word; this one answers 400 like the
//! proxy listener, refuses heads `proxy::framing` refuses, and applies the keep-alive limits.

use crate::admin::AdminApp;
use crate::proxy::framing;
use crate::state::AppState;
use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::ErrorType;
use std::sync::Arc;

pub struct AdminListener {
    app: AdminApp,
    state: Arc<AppState>,
    options: HttpServerOptions,
}

impl AdminListener {
    pub fn new(state: Arc<AppState>) -> AdminListener {
        let mut options = HttpServerOptions::default();
        options.keepalive_request_limit = Some(framing::keepalive_reuse_limit(
            &state.current().config.server.http,
        ));
        AdminListener {
            app: AdminApp::new(state.clone()),
            state,
            options,
        }
    }
}

#[async_trait]
impl HttpServerApp for AdminListener {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                // As the proxy listener does (pingora-proxy answers an unparsable head 400).
                if *e.etype() == ErrorType::InvalidHTTPHeader {
                    let _ = http.respond_error(400).await;
                }
                return None;
            }
        }
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
        let (parts, body) = self.app.response(&mut http).await.into_parts();
        let header: ResponseHeader = parts.into();
        if let Err(e) = http.write_response_header(Box::new(header)).await {
            log::debug!("admin: could not write the answer: {e}");
            return None;
        }
        if !body.is_empty() {
            if let Err(e) = http.write_response_body(body.into(), true).await {
                log::debug!("admin: could not write the answer: {e}");
                return None;
            }
        }
        let persistent = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(e) => {
                log::debug!("admin: could not finish the request: {e}");
                None
            }
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}
