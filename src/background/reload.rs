//! SIGHUP reload (SPEC §9): re-read the config file, and if it validates, swap in a new
//! generation atomically. A bad file changes nothing and sets `config_reload_success` to 0.
//! Listener, thread and store changes only take effect on restart (logged); TLS certificates
//! of the running listeners are swapped with the config (`AppState::install`, `tls`).

use crate::config::{self, Config};
use crate::metrics;
use crate::state::AppState;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

pub struct Reloader {
    state: Arc<AppState>,
}

impl Reloader {
    pub fn new(state: Arc<AppState>) -> Reloader {
        Reloader { state }
    }

    /// Re-reads the running config's file; returns whether the new config was installed.
    pub fn reload(&self) -> bool {
        let current = self.state.current();
        let path = current.config.source.clone();
        match config::load(&path) {
            Ok(new) => {
                for note in restart_only_changes(&current.config, &new) {
                    log::warn!(
                        "config reload: {note} changed; this takes effect only after a restart"
                    );
                }
                self.state.install(new);
                metrics::config_reload(true);
                log::info!("config reloaded from {}", path.display());
                true
            }
            Err(e) => {
                metrics::config_reload(false);
                log::error!("config reload refused, keeping the running config: {e}");
                false
            }
        }
    }
}

fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.server.listen != new.server.listen {
        out.push("server.listen");
    }
    if old.server.admin_listen != new.server.admin_listen {
        out.push("server.admin_listen");
    }
    if old.server.tls_listen != new.server.tls_listen {
        out.push("server.tls_listen");
    }
    // Certificates, SNI entries, min_version and client_ca_file reload; whether a listener
    // speaks TLS at all, and its ALPN list, were fixed when it was built.
    if old.server.tls.is_some() != new.server.tls.is_some() {
        out.push("[server.tls] (added or removed)");
    }
    if old.server.admin_tls.is_some() != new.server.admin_tls.is_some() {
        out.push("[server.admin_tls] (added or removed)");
    }
    if old.server.http2 != new.server.http2 {
        out.push("server.http2");
    }
    if old.server.threads != new.server.threads {
        out.push("server.threads");
    }
    if old.server.http.keepalive_requests != new.server.http.keepalive_requests {
        out.push("server.keepalive_requests");
    }
    // HTTP/1.1 connections take a new keepalive_timeout at their next request; pingora's h2
    // idle timeout was fixed when the listener was built.
    if old.server.http2 && old.server.http.keepalive_timeout != new.server.http.keepalive_timeout {
        out.push("server.keepalive_timeout (for HTTP/2 connections)");
    }
    if old.store.backend != new.store.backend
        || old.store.redis.urls != new.store.redis.urls
        || old.store.redis.sentinels != new.store.redis.sentinels
    {
        out.push("store");
    }
    if old.sessions.max_sessions != new.sessions.max_sessions {
        out.push("sessions.max_sessions");
    }
    if old.access_log.path != new.access_log.path {
        out.push("access_log.path");
    }
    if old.tracing.otlp_endpoint != new.tracing.otlp_endpoint
        || old.tracing.service_name != new.tracing.service_name
    {
        out.push("tracing.otlp_endpoint / service_name");
    }
    out
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload is unavailable: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    self.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
