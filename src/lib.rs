//! session-sidecar: a pingora reverse proxy that answers session APIs itself and forwards
//! everything else with the session's identity attached.
//!
//! `build_server` is the whole product: `main.rs` parses arguments and calls it; tests call it
//! too and run the result in-process.

pub mod access_log;
pub mod admin;
pub mod admin_listener;
pub mod api;
pub mod auth;
pub mod background;
pub mod config;
pub mod flavors;
pub mod forwarding;
#[doc(hidden)]
pub mod fuzz_api;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod random;
pub mod session;
pub mod state;
pub mod store;
pub mod tls;
pub mod trace;

use config::Config;
use pingora::prelude::Opt;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use state::AppState;
use std::sync::Arc;

/// Process-level options that come from the command line rather than the config file.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Take over the listening sockets of a running instance (pingora `--upgrade`).
    pub upgrade: bool,
    /// Detach into the background (pingora `--daemon`).
    pub daemon: bool,
    /// Run each service on a work-stealing pool (pingora's default) instead of one
    /// single-threaded runtime per thread, which costs less per request. Only for processes
    /// that start more than one server in turn (the in-process tests): pingora finds a
    /// single-threaded runtime's handle by thread id, and ids of exited threads are reused,
    /// so a later server could be handed a runtime that has stopped.
    pub work_stealing: bool,
    /// The time sessions live by: always the system clock in production (`main`); in-process
    /// tests pass a manual one to advance instead of sleeping. The Redis store ignores it.
    pub clock: session::Clock,
}

/// A built sidecar: the pingora server to run, and the state it shares with the caller.
pub struct Sidecar {
    pub server: Server,
    pub state: Arc<AppState>,
}

/// Why `build_server` could not build a sidecar.
#[derive(Debug)]
pub enum BuildError {
    Store(store::OpenError),
    Sink(String),
    /// pingora refused the TLS settings of a listener.
    Tls(Box<pingora::Error>),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Store(e) => e.fmt(f),
            BuildError::Sink(e) => f.write_str(e),
            BuildError::Tls(e) => write!(f, "TLS listener: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

fn server_conf(config: &Config, launch: &LaunchOptions) -> ServerConf {
    let mut conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.drain_timeout.as_secs()),
        upgrade_sock: config.server.upgrade_sock.clone(),
        pid_file: config.server.pid_file.clone(),
        ..ServerConf::default()
    };
    // Connect failures are not retried (see `fail_to_connect`); one retry covers a pooled
    // connection the upstream closed just as it was reused.
    conf.max_retries = 2;
    // One single-threaded runtime per worker thread instead of one work-stealing pool: a
    // request never moves between threads, so its task wake-ups skip the shared queues
    // (measured: 5-15 % less CPU per forwarded request, bench/RESULTS.md).
    conf.work_stealing = launch.work_stealing;
    conf
}

/// Builds the server for `config`: proxy listeners, admin listener, housekeeping and reload.
pub fn build_server(config: Config, launch: &LaunchOptions) -> Result<Sidecar, BuildError> {
    metrics::init();
    let store =
        store::open(&config, launch.upgrade, launch.clock.clone()).map_err(BuildError::Store)?;
    let conf = server_conf(&config, launch);
    metrics::store_backend(store.backend());
    let opt = Opt {
        upgrade: launch.upgrade,
        daemon: launch.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // Opened even when disabled, so a reload can turn it on; a path that cannot be opened is
    // a start-up error rather than a silently missing log.
    let access_log = access_log::AccessLog::open(&config.access_log)
        .map(Arc::new)
        .map_err(|e| BuildError::Sink(format!("access_log.path: {e}")))?;
    // Started only when tracing is on at start: the endpoint is fixed for the process.
    let exporter = if config.tracing.enabled {
        let t = &config.tracing;
        Some(Arc::new(
            trace::Exporter::start(&t.otlp_endpoint, &t.service_name).map_err(|e| {
                BuildError::Sink(format!("tracing: cannot start the exporter: {e}"))
            })?,
        ))
    } else {
        None
    };
    let sinks = state::Sinks {
        access_log: Some(access_log),
        exporter,
    };
    let state = Arc::new(AppState::new(config, store, flavors::mount_all, sinks));
    let config = state.current();
    let config = &config.config;

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        proxy::SidecarProxy::new(state.clone()),
        "session-sidecar proxy",
    );
    for addr in &config.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(certs) = &state.tls().proxy {
        for addr in &config.server.tls_listen {
            let settings = certs
                .listener_settings(config.server.http2)
                .map_err(BuildError::Tls)?;
            proxy.add_tls_with_settings(&addr.to_string(), None, settings);
        }
    }
    if let Some(app) = proxy.app_logic_mut() {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.keepalive_request_limit =
            Some(proxy::framing::keepalive_reuse_limit(&config.server.http));
        // h2c by prior knowledge: pingora reads the connection preface and falls back to
        // HTTP/1.1 for everything else.
        options.h2c = config.server.http2;
        options.h2_idle_timeout = Some(proxy::framing::h2_idle_timeout(&config.server.http));
        app.server_options = Some(options);
    }
    server.add_service(proxy);

    let mut admin = Service::new(
        "session-sidecar admin".to_string(),
        admin_listener::AdminListener::new(state.clone()),
    );
    match &state.tls().admin {
        // The admin listener speaks HTTP/1.1 only (AdminListener), over TLS too.
        Some(certs) => admin.add_tls_with_settings(
            &config.server.admin_listen.to_string(),
            None,
            certs.listener_settings(false).map_err(BuildError::Tls)?,
        ),
        None => admin.add_tcp(&config.server.admin_listen.to_string()),
    }
    admin.threads = Some(1);
    server.add_service(admin);

    server.add_service(background_service(
        "session-sidecar housekeeping",
        background::housekeeping::Housekeeping::new(state.clone()),
    ));
    server.add_service(background_service(
        "session-sidecar reload",
        background::reload::Reloader::new(state.clone()),
    ));
    server.add_service(background_service(
        "session-sidecar access log reopen",
        background::log_reopen::LogReopener::new(state.clone()),
    ));
    server.add_service(background_service(
        "session-sidecar jwks refresh",
        background::jwks_refresh::JwksRefresher::new(state.clone()),
    ));
    Ok(Sidecar { server, state })
}
