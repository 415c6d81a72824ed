//! The connection to Redis: one multiplexed connection (standalone, through redis-rs's
//! `ConnectionManager`, which reconnects by itself), a Redis Cluster connection (which
//! follows the slot map and reconnects to nodes by itself), or (Sentinel, SPEC §13.4) a
//! `ConnectionManager` to the master the sentinels name, replaced by `switch_to` when they
//! announce a failover (see `sentinel.rs`). All are created lazily, so a sidecar starts while
//! Redis is down and connects once it is up. TLS (`rediss://`, rustls) and the ACL user are
//! applied to every connection the same way (`client_for`).
//!
//! Every command goes through `Link::run`: bounded by `timeout`, counted in
//! `store_errors_total` when it fails, and recorded in `Health`, which tells when Redis was
//! last reached (degraded mode) and whether it is currently failing. Changes of that state
//! are logged once each (issue 19): Redis stopped answering, answers again.

use super::BACKEND;
use crate::config::RedisSettings;
use crate::metrics;
use crate::session::{now_millis, Millis};
use crate::store::{StoreError, StoreResult};
use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    ClientTlsConfig, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, ScriptInvocation,
    TlsCertificates, Value,
};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// While the last command failed less than this long ago (and nothing succeeded since),
/// reads that can be answered from the near cache do not wait on Redis first.
const PROBE_AFTER: Millis = 500;

/// When Redis was last reached, and last failed to answer; whether it is down (an outage
/// started and has not ended), for the state-change log lines.
#[derive(Default)]
pub struct Health {
    last_ok: AtomicU64,
    last_err: AtomicU64,
    down: AtomicBool,
    /// The outage outlasted `degraded_grace` (logged once per outage).
    grace_over: AtomicBool,
}

impl Health {
    fn ok(&self) {
        let now = now_millis();
        let since = self.last_ok.swap(now, Ordering::Relaxed);
        if self.down.swap(false, Ordering::Relaxed) {
            self.grace_over.store(false, Ordering::Relaxed);
            if since == 0 {
                log::info!("redis store: Redis answers; degraded mode over");
            } else {
                log::info!(
                    "redis store: Redis answers again after {:.1} s; degraded mode over",
                    now.saturating_sub(since) as f64 / 1000.0
                );
            }
        }
    }

    fn failed(&self, why: &str) {
        self.last_err.store(now_millis(), Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            log::warn!(
                "redis store: Redis stopped answering ({why}); degraded mode: session \
                 endpoints answer 503, forwarded requests use this replica's copies for up to \
                 degraded_grace"
            );
        }
    }

    /// A new master: the next command tries it rather than short-cutting to the near cache
    /// (which a failover has just emptied).
    fn forget_failures(&self) {
        self.last_err.store(0, Ordering::Relaxed);
    }

    /// Logs, once per outage, that it has outlasted `grace` (called by the maintenance loop).
    pub fn note_grace(&self, grace: Duration) {
        if self.down.load(Ordering::Relaxed)
            && !self.reached_within(grace)
            && !self.grace_over.swap(true, Ordering::Relaxed)
        {
            log::warn!(
                "redis store: Redis unreachable for longer than degraded_grace ({grace:?}): \
                 forwarded requests that need a session now get 503"
            );
        }
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

/// What `switch_to` did.
pub enum Switch {
    Same,
    /// The first master the sentinels named.
    First,
    /// A failover: the master was this one.
    Moved(String, u16),
}

pub struct Link {
    /// None until the sentinels named a master (Sentinel only).
    conn: RwLock<Option<Connection>>,
    /// With `wait_for_replicas` (not Cluster): a second connection that carries only the
    /// writes that are waited for, and their `WAIT`. Redis blocks a connection during `WAIT`,
    /// so on the shared one every read and touch would queue behind it.
    writer: RwLock<Option<Connection>>,
    /// Sentinel: the master `conn` points at.
    master: RwLock<Option<(String, u16)>>,
    settings: RedisSettings,
    timeout: Duration,
    pub health: Health,
    /// Woken when the master changes, so the invalidation subscriber moves too.
    pub switched: tokio::sync::Notify,
    /// Bumped when the master changes (see `attempt`).
    generation: AtomicU64,
}

/// A client for `url` with the settings' ACL user and TLS material.
pub fn client_for(settings: &RedisSettings, url: &str) -> Result<redis::Client, String> {
    let mut info = url
        .into_connection_info()
        .map_err(|e| format!("store.redis: {e}"))?;
    if let Some(password) = &settings.password {
        let mut r = info.redis_settings().clone().set_password(&password.0);
        if let Some(user) = &settings.username {
            r = r.set_username(user);
        }
        info = info.set_redis_settings(r);
    }
    match &settings.tls {
        Some(tls) if url.starts_with("rediss://") => {
            redis::Client::build_with_tls(info, certificates(tls))
                .map_err(|e| format!("store.redis TLS: {e}"))
        }
        _ => redis::Client::open(info).map_err(|e| format!("store.redis: {e}")),
    }
}

fn certificates(tls: &crate::config::RedisTls) -> TlsCertificates {
    TlsCertificates {
        client_tls: match (&tls.client_cert_pem, &tls.client_key_pem) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            _ => None,
        },
        root_cert: tls.ca_pem.clone(),
    }
}

/// A lazily connecting `ConnectionManager` for one address.
fn manager(settings: &RedisSettings, url: &str) -> Result<Connection, String> {
    let timeout = settings.timeout;
    let client = client_for(settings, url)?;
    // One quick retry per reconnection: while Redis is down, commands fail fast and the next
    // command tries again, instead of queueing behind a long backoff.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(200));
    Ok(Connection::Single(
        client
            .get_connection_manager_lazy(config)
            .map_err(|e| format!("redis connection: {e}"))?,
    ))
}

impl Link {
    /// Prepares the connection without contacting Redis. Must run inside the tokio runtime
    /// that will drive the connection (its tasks are spawned there).
    pub fn open(settings: &RedisSettings) -> Result<Link, String> {
        let timeout = settings.timeout;
        let mut writer = None;
        let conn = if settings.sentinel() {
            None
        } else if settings.cluster {
            let mut builder = ClusterClient::builder(settings.urls.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(200);
            if let Some(password) = &settings.password {
                builder = builder.password(password.0.clone());
                if let Some(user) = &settings.username {
                    builder = builder.username(user.clone());
                }
            }
            if let Some(tls) = &settings.tls {
                builder = builder.certs(certificates(tls));
            }
            let client = builder
                .build()
                .map_err(|e| format!("store.redis.urls: {e}"))?;
            let config = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            Some(Connection::Cluster(
                client.get_pending_async_connection_with_config(config),
            ))
        } else {
            let [url] = settings.urls.as_slice() else {
                return Err(
                    "store.redis.urls must hold exactly one URL unless store.redis.cluster = true"
                        .into(),
                );
            };
            if settings.wait_for_replicas > 0 {
                writer = Some(manager(settings, url)?);
            }
            Some(manager(settings, url)?)
        };
        Ok(Link {
            conn: RwLock::new(conn),
            writer: RwLock::new(writer),
            master: RwLock::new(None),
            settings: settings.clone(),
            timeout,
            health: Health::default(),
            switched: tokio::sync::Notify::new(),
            generation: AtomicU64::new(0),
        })
    }

    /// The URL of a Sentinel master (TLS when the settings carry TLS material).
    fn master_url(&self, host: &str, port: u16) -> String {
        let scheme = if self.settings.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{host}:{port}")
    }

    /// Sentinel: the master the connection points at.
    pub fn master(&self) -> Option<(String, u16)> {
        self.master.read().clone()
    }

    /// Sentinel: points the connection at `host:port`.
    pub fn switch_to(&self, host: &str, port: u16) -> Result<Switch, String> {
        let new = (host.to_string(), port);
        let previous = self.master.read().clone();
        if previous.as_ref() == Some(&new) {
            return Ok(Switch::Same);
        }
        let url = self.master_url(host, port);
        let conn = manager(&self.settings, &url)?;
        if self.settings.wait_for_replicas > 0 {
            *self.writer.write() = Some(manager(&self.settings, &url)?);
        }
        *self.conn.write() = Some(conn);
        *self.master.write() = Some(new);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.health.forget_failures();
        self.switched.notify_waiters();
        Ok(match previous {
            None => Switch::First,
            Some((h, p)) => Switch::Moved(h, p),
        })
    }

    /// A client for a pub/sub connection: the `seed`-th URL (Cluster: any node serves
    /// pub/sub), or the current Sentinel master.
    pub fn pubsub_client(&self, seed: usize) -> Result<redis::Client, String> {
        if self.settings.sentinel() {
            let (host, port) = self
                .master()
                .ok_or_else(|| "the sentinels have not named a master yet".to_string())?;
            return client_for(&self.settings, &self.master_url(&host, port));
        }
        let urls = &self.settings.urls;
        client_for(&self.settings, &urls[seed % urls.len()])
    }

    fn conn(&self) -> StoreResult<Connection> {
        self.conn.read().clone().ok_or_else(|| {
            StoreError::Unavailable("redis: the sentinels have not named a master yet".into())
        })
    }

    /// Bounds `fut` by the timeout and records the outcome.
    async fn run<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> StoreResult<T> {
        let gen = self.generation.load(Ordering::Acquire);
        self.attempt(gen, fut)
            .await
            .unwrap_or_else(|| Err(StoreError::Unavailable("redis: the master changed".into())))
    }

    /// `run` for a command sent on the connection of generation `gen`. None: it failed after
    /// the master changed (Sentinel), so the failure belongs to the old master: it is not
    /// recorded (it would put the new one in degraded mode) and the caller retries.
    async fn attempt<T>(
        &self,
        gen: u64,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Option<StoreResult<T>> {
        let limit = self.timeout;
        let failure = match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => {
                self.health.ok();
                return Some(Ok(v));
            }
            Ok(Err(e)) => {
                let why = e.to_string();
                if super::checks::is_permission_failure(&why) {
                    // Redis answered: it is up, it refused. Not degraded mode, but loud.
                    self.health.ok();
                    metrics::store_error(BACKEND);
                    crate::warn_throttled!("redis permissions", "redis store: {why}");
                    return Some(Err(StoreError::Unavailable(format!("redis: {why}"))));
                }
                why
            }
            Err(_) => format!("no answer within {limit:?}"),
        };
        if self.generation.load(Ordering::Acquire) != gen {
            return None;
        }
        self.failed(&failure);
        Some(Err(StoreError::Unavailable(format!("redis: {failure}"))))
    }

    fn failed(&self, why: &str) {
        self.health.failed(why);
        metrics::store_error(BACKEND);
    }

    /// The connection and its generation.
    fn current(&self) -> StoreResult<(u64, Connection)> {
        let gen = self.generation.load(Ordering::Acquire);
        match self.conn() {
            Ok(c) => Ok((gen, c)),
            Err(e) => {
                self.failed("no master known");
                Err(e)
            }
        }
    }

    pub async fn query(&self, cmd: &Cmd) -> StoreResult<Value> {
        // A second try only when the master changed under the first.
        for _ in 0..2 {
            let (gen, mut conn) = self.current()?;
            if let Some(r) = self.attempt(gen, cmd.query_async(&mut conn)).await {
                return r;
            }
        }
        Err(StoreError::Unavailable("redis: the master changed".into()))
    }

    pub async fn script(&self, invocation: &ScriptInvocation<'_>) -> StoreResult<Value> {
        for _ in 0..2 {
            let (gen, mut conn) = self.current()?;
            if let Some(r) = self.attempt(gen, invocation.invoke_async(&mut conn)).await {
                return r;
            }
        }
        Err(StoreError::Unavailable("redis: the master changed".into()))
    }

    /// A write that `wait_for_replicas` (SPEC §13.4) applies to: the script, then, when
    /// `wrote` says it changed something, `WAIT n` on the same connection, so the write is
    /// acknowledged only once `n` replicas hold it. Returns the script's reply and the
    /// outcome of the wait (Ok when nothing was to be waited for).
    pub async fn script_replicated(
        &self,
        invocation: &ScriptInvocation<'_>,
        wrote: impl Fn(&Value) -> bool,
    ) -> StoreResult<(Value, StoreResult<()>)> {
        let n = self.settings.wait_for_replicas;
        if n == 0 {
            return Ok((self.script(invocation).await?, Ok(())));
        }
        // The dedicated connection (the shared one only before a Sentinel master is known).
        let writer = self.writer.read().clone();
        let mut conn = match writer {
            Some(w) => w,
            None => self.conn()?,
        };
        let reply = self.run(invocation.invoke_async(&mut conn)).await?;
        if !wrote(&reply) {
            return Ok((reply, Ok(())));
        }
        // WAIT's own timeout ends before ours, so a slow replica is an answer, not a timeout.
        let wait_ms = (self.timeout.as_millis() as u64 * 3 / 4).max(1);
        let mut c = redis::cmd("WAIT");
        c.arg(n).arg(wait_ms);
        let waited = match self.run(c.query_async::<i64>(&mut conn)).await {
            Ok(acked) if acked >= i64::from(n) => Ok(()),
            Ok(acked) => {
                crate::warn_throttled!(
                    "redis replicas",
                    "redis store: only {acked} of {n} replicas acknowledged a write within \
                     {wait_ms} ms (wait_for_replicas): the request is refused"
                );
                Err(StoreError::Unavailable(format!(
                    "redis: {acked} of {n} replicas acknowledged the write"
                )))
            }
            Err(e) => Err(e),
        };
        Ok((reply, waited))
    }
}
