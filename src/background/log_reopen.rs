//! SIGUSR1 reopens the access-log file (SPEC §13.5), as nginx does for logrotate's
//! `postrotate`: lines already queued go to the old file, later ones to the new.

use crate::state::AppState;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

pub struct LogReopener {
    state: Arc<AppState>,
}

impl LogReopener {
    pub fn new(state: Arc<AppState>) -> LogReopener {
        LogReopener { state }
    }
}

#[async_trait]
impl BackgroundService for LogReopener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGUSR1, the access log cannot be reopened: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                received = usr1.recv() => {
                    if received.is_none() {
                        return;
                    }
                    if let Some(log) = self.state.access_log() {
                        log.reopen();
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
