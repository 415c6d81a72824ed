//! The periodic JWKS refresh (`jwt.jwks_refresh`), as a pingora background service.
//!
//! It always works on the key set of the *current* generation, so a SIGHUP that adds, changes
//! or removes `[jwt]` needs nothing from it: an unchanged source keeps its `Jwks` (and timing)
//! across generations, a new source is loaded within a tick. A background service (rather than
//! a task spawned from a request) has a clear owner and stops with the server.

use crate::state::AppState;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// How often the refresher looks whether a load is due; the refresh period itself is at least
/// this long (config validation).
const TICK: Duration = Duration::from_secs(1);

pub struct JwksRefresher {
    state: Arc<AppState>,
}

impl JwksRefresher {
    pub fn new(state: Arc<AppState>) -> JwksRefresher {
        JwksRefresher { state }
    }
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let due = {
                let gen = self.state.current();
                match (gen.auth.jwks(), &gen.config.jwt) {
                    (Some(jwks), Some(settings)) if jwks.is_due(settings.jwks_refresh) => {
                        Some(jwks.clone())
                    }
                    _ => None,
                }
            };
            if let Some(jwks) = due {
                tokio::select! {
                    _ = jwks.refresh() => {}
                    _ = shutdown.changed() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
