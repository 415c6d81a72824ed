//! Test harness: a real sidecar running in-process on free loopback ports (through
//! `build_server` and `Server::run(RunArgs)`), a real echo upstream, and a raw HTTP client.
//! A `TestSidecar` shuts its server down when dropped. One started `with_manual_clock` keeps
//! its sessions on a manual clock: tests `advance` it instead of sleeping until they expire.
//! `over(Protocol::H2c)` makes its `proxy` calls speak HTTP/2 (see `protocol`).

#![allow(dead_code)]

pub mod client;
pub mod echo;
pub mod h2c;
pub mod jwt;
pub mod otlp;
pub mod pki;
pub mod process;
pub mod protocol;
pub mod redis_server;
pub mod store_contract;
pub mod tls_front;

use async_trait::async_trait;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use session_sidecar::session::Clock;
use session_sidecar::{build_server, config, LaunchOptions};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[allow(unused_imports)]
pub use client::{get, post_json, request, Conn, Response};
pub use echo::EchoUpstream;
#[allow(unused_imports)]
pub(crate) use protocol::{both_protocols, AnyConn, Protocol};

/// Bearer tokens of the credentials in `base_config`.
pub const WEB_TOKEN: &str = "test-web-token-0123456789";
pub const OTHER_TOKEN: &str = "test-other-token-0123456789";
pub const NOAPP_TOKEN: &str = "test-noapp-token-0123456789";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const POS_APP_ID: &str = "pos-1";
pub const POS_TOKEN: &str = "test-pos-token-0123456789";
pub const APP_KEY: &str = "a4dcfb4f0464453b928ce1d6bcfb6aa3";

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A loopback port nothing listens on now, never handed out twice in this process.
pub fn free_port() -> u16 {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut taken = TAKEN.lock().unwrap();
        if taken.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Ports of one test sidecar.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub proxy: u16,
    pub admin: u16,
    pub upstream: u16,
    /// A port where nothing listens (502 tests).
    pub dead: u16,
}

impl Ports {
    pub fn new(upstream: u16) -> Ports {
        Ports {
            proxy: free_port(),
            admin: free_port(),
            upstream,
            dead: free_port(),
        }
    }
}

/// A config like SPEC §9's example, on the given ports, with the test credentials, one
/// application, routes for the special cases, and `extra` appended (more tables).
pub fn base_config(p: &Ports, extra: &str) -> String {
    config_with_server(p, "", extra)
}

/// `base_config` with `server` (more `[server]` keys) at the end of its `[server]` table.
pub fn config_with_server(p: &Ports, server: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{proxy}"]
admin_listen = "127.0.0.1:{admin}"
threads = 2
grace_period = "1s"
max_body = "64KiB"
{server}

[upstreams.app]
address = "127.0.0.1:{upstream}"
connect_timeout = "2s"
read_timeout = "30s"
idle_timeout = "50s"

[upstreams.slow]
address = "127.0.0.1:{upstream}"
read_timeout = "1s"

[upstreams.dead]
address = "127.0.0.1:{dead}"
connect_timeout = "1s"

[proxy]
default_upstream = "app"
default_auth = "none"
default_session = "optional"

[[routes]]
path_prefix = "/account/"
session = "required"

[[routes]]
path_prefix = "/secure/"
auth = "token"

[[routes]]
path_prefix = "/post-only/"
methods = ["POST"]
session = "required"

[[routes]]
path_prefix = "/slow/"
upstream = "slow"

[[routes]]
path_prefix = "/dead/"
upstream = "dead"

[sessions.locate]
header = "X-Session-Id"
cookie = "session_id"
query = "sessionId"
path = ["/Web/Session/{{key}}", "/p/{{key}}"]
json_body = ["SessionId", "session.key"]

[store]
snapshot_file = ""

[[credentials]]
name = "web"
token_sha256 = "{web}"
applications = ["{app}"]

[[credentials]]
name = "other"
token_sha256 = "{other}"
applications = ["*"]

[[credentials]]
name = "noapp"
token_sha256 = "{noapp}"
applications = []

[[credentials]]
name = "pos"
app_id = "{pos_id}"
app_token_sha256 = "{pos}"

[[credentials]]
name = "admin"
token_sha256 = "{admin_hash}"
admin = true

[[applications]]
key = "{app}"
name = "test-workbook"
max_sessions = 1000
{extra}
"#,
        proxy = p.proxy,
        admin = p.admin,
        upstream = p.upstream,
        dead = p.dead,
        web = sha256_hex(WEB_TOKEN),
        other = sha256_hex(OTHER_TOKEN),
        noapp = sha256_hex(NOAPP_TOKEN),
        pos_id = POS_APP_ID,
        pos = sha256_hex(POS_TOKEN),
        admin_hash = sha256_hex(ADMIN_TOKEN),
        app = APP_KEY,
        server = server,
        extra = extra,
    )
}

struct NotifyShutdown(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for NotifyShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

/// A sidecar running in this process; stopped on drop.
pub struct TestSidecar {
    pub ports: Ports,
    pub dir: tempfile::TempDir,
    pub state: Arc<session_sidecar::state::AppState>,
    /// The sessions' clock: the system clock unless started `with_manual_clock`.
    pub clock: Clock,
    /// What `proxy` speaks: HTTP/1.1 unless set by `over`.
    pub protocol: Protocol,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl TestSidecar {
    /// Starts a sidecar for `toml` (written to a temp dir as `config.toml`) and waits until
    /// `/readyz` answers 200.
    pub fn start(ports: Ports, toml: &str) -> TestSidecar {
        TestSidecar::start_with_clock(ports, toml, Clock::system())
    }

    /// `start` with the sessions on `clock`. Unless `toml` says otherwise, the access log goes
    /// to `access.log` in the sidecar's directory (see `access_log_lines`), not to stdout.
    pub fn start_with_clock(ports: Ports, toml: &str, clock: Clock) -> TestSidecar {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let toml = if toml.contains("[access_log]") {
            toml.to_string()
        } else {
            format!("{toml}\n[access_log]\npath = \"access.log\"\n")
        };
        std::fs::write(&path, toml).unwrap();
        let config = config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let sidecar = build_server(
            config,
            // Several servers start and stop in this one process: see `work_stealing`.
            &LaunchOptions {
                work_stealing: true,
                clock: clock.clone(),
                ..LaunchOptions::default()
            },
        )
        .expect("build server");
        let state = sidecar.state.clone();
        let stop = Arc::new(Notify::new());
        let watch = NotifyShutdown(stop.clone());
        let mut server = sidecar.server;
        let thread = std::thread::spawn(move || {
            server.bootstrap();
            server.run(RunArgs {
                shutdown_signal: Box::new(watch),
            });
        });
        let me = TestSidecar {
            ports,
            dir,
            state,
            clock,
            protocol: Protocol::H1,
            stop,
            thread: Some(thread),
        };
        me.wait_ready();
        me
    }

    /// A sidecar with `base_config` plus `extra`, in front of `upstream`.
    pub fn with_upstream(upstream: &EchoUpstream, extra: &str) -> TestSidecar {
        let ports = Ports::new(upstream.port);
        TestSidecar::start(ports, &base_config(&ports, extra))
    }

    /// `with_upstream` with `server` added to the `[server]` table.
    pub fn with_server_keys(upstream: &EchoUpstream, server: &str, extra: &str) -> TestSidecar {
        let ports = Ports::new(upstream.port);
        TestSidecar::start(ports, &config_with_server(&ports, server, extra))
    }

    /// `with_upstream` with the sessions on a manual clock (see `advance`).
    pub fn with_manual_clock(upstream: &EchoUpstream, extra: &str) -> TestSidecar {
        let ports = Ports::new(upstream.port);
        TestSidecar::start_with_clock(ports, &base_config(&ports, extra), Clock::manual())
    }

    /// Moves the manual clock forward by `by`, then runs the store's upkeep, so sessions the
    /// clock has passed are ended and counted at once.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.maintain();
    }

    /// The store's upkeep now (housekeeping runs it every 250 ms): the memory store accounts
    /// for expirations and evictions.
    pub fn maintain(&self) {
        self.state
            .store()
            .maintain(&self.state.current().config.store);
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.ports.admin))
                .map(|_| Conn::open(self.ports.admin))
            {
                if c.send("GET", "/readyz", &[], b"").status == 200
                    && std::net::TcpStream::connect(("127.0.0.1", self.ports.proxy)).is_ok()
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sidecar did not become ready");
    }

    /// The access-log lines written so far (the writer flushes as soon as its queue is empty:
    /// this waits until `at_least` lines are there, up to 5 s).
    pub fn access_log_lines(&self, at_least: usize) -> Vec<String> {
        let path = self.dir.path().join("access.log");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<String> = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect();
            if lines.len() >= at_least || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("config.toml")
    }

    /// This sidecar with its `proxy` calls over `protocol` (the admin listener stays HTTP/1.1).
    pub fn over(mut self, protocol: Protocol) -> TestSidecar {
        self.protocol = protocol;
        self
    }

    /// A request through the proxy listener, over `self.protocol`, on a fresh connection.
    pub fn proxy(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.protocol
            .request(self.ports.proxy, method, path, headers, body)
    }

    /// A connection to the proxy listener over `self.protocol`, for several requests.
    pub fn proxy_conn(&self) -> AnyConn {
        AnyConn::open(self.protocol, self.ports.proxy)
    }

    /// `proxy` GET without a body.
    pub fn proxy_get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.proxy("GET", path, headers, b"")
    }

    /// `proxy` POST with a JSON body (`post_json` over `self.protocol`).
    pub fn proxy_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Response {
        self.proxy(
            "POST",
            path,
            &client::json_headers(headers),
            body.to_string().as_bytes(),
        )
    }

    /// A request to the admin listener.
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(self.ports.admin, method, path, headers, body)
    }

    /// A request to the admin listener from the local address `from` (127.x.y.z: another
    /// client IP as the server sees it).
    pub fn admin_from(
        &self,
        from: [u8; 4],
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        Conn::open_from(std::net::IpAddr::from(from), self.ports.admin)
            .send(method, path, headers, body)
    }

    /// The value of a metric series (sum over series matching all `labels`), 0 if absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.admin("GET", "/metrics", &[], b"").text();
        metric_value(&text, name, labels)
    }
}

/// Sum of the samples of `name` whose labels include every `labels` pair.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let full = format!("session_sidecar_{name}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != full {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

impl Drop for TestSidecar {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Runs `check` (every 20 ms) until it returns true or `within` passes; says whether it did.
pub fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
