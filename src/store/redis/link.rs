//! The connection to Redis: one multiplexed connection (standalone, through redis-rs's
//! `ConnectionManager`, which reconnects by itself) or a Redis Cluster connection (which
//! follows the slot map and reconnects to nodes by itself). Both are created lazily, so a
//! sidecar starts while Redis is down and connects once it is up.
//!
//! Every command goes through `Link::run`: bounded by `timeout`, counted in
//! `store_errors_total` when it fails, and recorded in `Health`, which tells when Redis was
//! last reached (degraded mode) and whether it is currently failing.

use super::BACKEND;
use crate::config::RedisSettings;
use crate::metrics;
use crate::session::{now_millis, Millis};
use crate::store::{StoreError, StoreResult};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, ScriptInvocation, Value};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// While the last command failed less than this long ago (and nothing succeeded since),
/// reads that can be answered from the near cache do not wait on Redis first.
const PROBE_AFTER: Millis = 500;

/// When Redis was last reached, and last failed to answer.
#[derive(Default)]
pub struct Health {
    last_ok: AtomicU64,
    last_err: AtomicU64,
}

impl Health {
    fn ok(&self) {
        self.last_ok.store(now_millis(), Ordering::Relaxed);
    }

    fn failed(&self) {
        self.last_err.store(now_millis(), Ordering::Relaxed);
    }

    /// Failing right now: the last command failed recently and nothing succeeded since.
    pub fn failing(&self) -> bool {
        let err = self.last_err.load(Ordering::Relaxed);
        err > self.last_ok.load(Ordering::Relaxed) && now_millis().saturating_sub(err) < PROBE_AFTER
    }

    /// Redis answered within the last `grace`.
    pub fn reached_within(&self, grace: Duration) -> bool {
        let ok = self.last_ok.load(Ordering::Relaxed);
        ok != 0 && u128::from(now_millis().saturating_sub(ok)) <= grace.as_millis()
    }
}

/// A connection of either topology; cheap to clone (clones share one multiplexed connection).
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(p, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(p, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

pub struct Link {
    conn: Connection,
    timeout: Duration,
    pub health: Health,
}

impl Link {
    /// Prepares the connection without contacting Redis. Must run inside the tokio runtime
    /// that will drive the connection (its tasks are spawned there).
    pub fn open(settings: &RedisSettings) -> Result<Link, String> {
        let timeout = settings.timeout;
        let conn = if settings.cluster {
            let client = ClusterClient::builder(settings.urls.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(200)
                .build()
                .map_err(|e| format!("store.redis.urls: {e}"))?;
            let config = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            Connection::Cluster(client.get_pending_async_connection_with_config(config))
        } else {
            let [url] = settings.urls.as_slice() else {
                return Err(
                    "store.redis.urls must hold exactly one URL unless store.redis.cluster = true"
                        .into(),
                );
            };
            let client =
                redis::Client::open(url.as_str()).map_err(|e| format!("store.redis.urls: {e}"))?;
            // One quick retry per reconnection: while Redis is down, commands fail fast and
            // the next command tries again, instead of queueing behind a long backoff.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(20))
                .set_max_delay(Duration::from_millis(200));
            Connection::Single(
                client
                    .get_connection_manager_lazy(config)
                    .map_err(|e| format!("redis connection: {e}"))?,
            )
        };
        Ok(Link {
            conn,
            timeout,
            health: Health::default(),
        })
    }

    /// Bounds `fut` by the timeout and records the outcome.
    async fn run<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> StoreResult<T> {
        let failure = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => {
                self.health.ok();
                return Ok(v);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.health.failed();
        metrics::store_error(BACKEND);
        Err(StoreError::Unavailable(format!("redis: {failure}")))
    }

    pub async fn query(&self, cmd: &Cmd) -> StoreResult<Value> {
        let mut conn = self.conn.clone();
        self.run(cmd.query_async(&mut conn)).await
    }

    pub async fn script(&self, invocation: &ScriptInvocation<'_>) -> StoreResult<Value> {
        let mut conn = self.conn.clone();
        self.run(invocation.invoke_async(&mut conn)).await
    }
}
