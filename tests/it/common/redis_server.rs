//! Real `redis-server` processes for tests: each on a free loopback port, in its own temp
//! dir, with persistence off (`--save "" --appendonly no`). Never the machine's own Redis.
//!
//! Each server runs under a small shell watchdog that kills it when the test process is gone,
//! so a panicking or aborted test run leaves no server behind.
//!
//! Issue 18's drills also start a TLS server with ACL users (`start_tls`), and a Sentinel
//! deployment (`SentinelSet`: a master, replicas and three `redis-server --sentinel`
//! processes); each process can be SIGKILLed, SIGSTOPped and resumed by the test.

use super::free_port;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn redis_cli_bin() -> String {
    std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".into())
}

/// Sends one inline command and returns the raw reply (enough for PING and CLUSTER INFO).
pub fn raw_command(port: u16, command: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

pub struct RedisServer {
    pub port: u16,
    /// The TLS port of a server started with `start_tls`.
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// A sentinel: its config file (replaces the server arguments).
    sentinel_conf: Option<PathBuf>,
    /// Files the server reads (TLS certificates), removed with it.
    _files: Option<tempfile::TempDir>,
    watchdog: Option<Child>,
}

impl RedisServer {
    /// A standalone server on a free port, ready to answer.
    pub fn start() -> RedisServer {
        RedisServer::start_with(free_port(), Vec::new())
    }

    /// A server on `port` with extra `redis-server` arguments.
    pub fn start_with(port: u16, extra: Vec<String>) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let mut me = RedisServer {
            port,
            tls_port: None,
            dir,
            extra,
            sentinel_conf: None,
            _files: None,
            watchdog: None,
        };
        me.launch();
        me.wait_until(
            || raw_command(port, "PING").is_some_and(|r| r.starts_with("+PONG")),
            "answer PING",
        );
        me
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A server that also listens with TLS (certificate for 127.0.0.1 from `ca`, client
    /// certificates optional) and has the ACL `users` (each a `user` directive, e.g.
    /// `"app on >secret ~* &* +@all"`). The plain port stays open for the test's own checks.
    pub fn start_tls(ca: &super::pki::Ca, users: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let leaf = ca.server(&["127.0.0.1"]);
        let cert = super::pki::write(dir.path(), "redis.crt", &leaf.cert_pem);
        let key = super::pki::write(dir.path(), "redis.key", &leaf.key_pem);
        let ca_file = super::pki::write(dir.path(), "ca.crt", &ca.cert_pem);
        let tls_port = free_port();
        let mut extra: Vec<String> = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-ca-cert-file".into(),
            ca_file.display().to_string(),
            "--tls-auth-clients".into(),
            "optional".into(),
        ];
        for u in users {
            extra.push("--user".into());
            extra.extend(u.split_whitespace().map(str::to_string));
        }
        let mut me = RedisServer::start_with(free_port(), extra);
        me.tls_port = Some(tls_port);
        me._files = Some(dir);
        me
    }

    /// A sentinel on a free port watching `master_name` at `master_port` (quorum 2, master
    /// declared down after 1 s without answers).
    pub fn start_sentinel(master_name: &str, master_port: u16) -> RedisServer {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                 sentinel monitor {master_name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 10000\n\
                 sentinel parallel-syncs {master_name} 2\n",
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let mut me = RedisServer {
            port,
            tls_port: None,
            dir,
            extra: Vec::new(),
            sentinel_conf: Some(conf),
            _files: None,
            watchdog: None,
        };
        me.launch();
        me.wait_until(
            || raw_command(port, "PING").is_some_and(|r| r.starts_with("+PONG")),
            "answer PING (sentinel)",
        );
        me
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Sends a signal by name (`STOP`, `CONT`…) to the server process.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("redis-server pid");
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} {pid} failed");
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("redis.pid")
    }

    fn launch(&mut self) {
        let _ = std::fs::remove_file(self.pid_file());
        let script = format!(
            r#"{bin} "$@" & r=$!; echo $r > "{pid}"; while kill -0 {parent} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done; kill -9 $r 2>/dev/null"#,
            bin = redis_server_bin(),
            pid = self.pid_file().display(),
            parent = std::process::id(),
        );
        let port = self.port.to_string();
        let dir = self.dir.path().display().to_string();
        let mut args: Vec<String> = match &self.sentinel_conf {
            Some(conf) => vec![conf.display().to_string(), "--sentinel".into()],
            None => Vec::new(),
        };
        let server_args: Vec<String> = [
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.sentinel_conf.is_none() {
            args.extend(server_args);
        }
        args.extend(self.extra.iter().cloned());
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("redis-watchdog")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (install the redis-server package): {e}",
                    redis_server_bin()
                )
            });
        self.watchdog = Some(child);
    }

    fn wait_until(&self, ok: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not {what}", self.port);
    }

    /// SIGKILLs the server (no shutdown, no save) and waits until its port is closed.
    pub fn kill(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.pid_file()) {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.wait();
        }
        let port = self.port;
        self.wait_until(
            || TcpStream::connect(("127.0.0.1", port)).is_err(),
            "close its port",
        );
    }

    /// Starts the server again on the same port (empty: nothing was persisted).
    pub fn restart(&mut self) {
        self.launch();
        let port = self.port;
        self.wait_until(
            || raw_command(port, "PING").is_some_and(|r| r.starts_with("+PONG")),
            "answer PING after restart",
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            if let Ok(pid) = std::fs::read_to_string(self.pid_file()) {
                let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
            }
            if let Some(mut w) = self.watchdog.take() {
                let _ = w.wait();
            }
        }
    }
}

/// A Redis Cluster of `masters` masters (no replicas), created with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                let port = free_port();
                // The bus port is chosen explicitly: port + 10000 may be taken or out of range.
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &free_port().to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                RedisServer::start_with(port, extra)
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(redis_cli_bin())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (install the redis-tools package): {e}",
                    redis_cli_bin()
                )
            });
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = cluster.nodes.iter().all(|n| {
                raw_command(n.port, "CLUSTER INFO").is_some_and(|r| r.contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// The value after `field` in a RESP reply of field/value pairs (SENTINEL MASTER).
fn resp_field(reply: &str, field: &str) -> Option<String> {
    let lines: Vec<&str> = reply.split("\r\n").collect();
    let at = lines.iter().position(|l| *l == field)?;
    lines.get(at + 2).map(|v| v.to_string())
}

/// A Sentinel deployment: one master, `replicas` replicas, three sentinels (quorum 2).
pub struct SentinelSet {
    pub master_name: String,
    /// `servers[0]` is the first master; which one is master now is the sentinels' call.
    pub servers: Vec<RedisServer>,
    pub sentinels: Vec<RedisServer>,
}

impl SentinelSet {
    pub fn start(replicas: usize) -> SentinelSet {
        let master = RedisServer::start();
        let mport = master.port;
        let mut servers = vec![master];
        for _ in 0..replicas {
            servers.push(RedisServer::start_with(
                free_port(),
                vec!["--replicaof".into(), "127.0.0.1".into(), mport.to_string()],
            ));
        }
        let name = "sidecar-master".to_string();
        let sentinels = (0..3)
            .map(|_| RedisServer::start_sentinel(&name, mport))
            .collect();
        let set = SentinelSet {
            master_name: name,
            servers,
            sentinels,
        };
        set.wait_settled(Duration::from_secs(20));
        set
    }

    /// `["127.0.0.1:P", …]` of the sentinels, for `store.redis.sentinels`.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The master's port according to the first sentinel that answers.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let r = raw_command(
                s.port,
                &format!("SENTINEL get-master-addr-by-name {}", self.master_name),
            )?;
            let lines: Vec<&str> = r.split("\r\n").collect();
            lines.get(4)?.parse().ok()
        })
    }

    /// Waits until every sentinel knows the other two and every replica, and every replica
    /// is in sync: only then can a failover happen.
    pub fn wait_settled(&self, within: Duration) {
        let replicas = (self.servers.len() - 1).to_string();
        let deadline = Instant::now() + within;
        loop {
            let sentinels_ok = self.sentinels.iter().all(|s| {
                raw_command(s.port, &format!("SENTINEL MASTER {}", self.master_name)).is_some_and(
                    |r| {
                        resp_field(&r, "num-other-sentinels").as_deref() == Some("2")
                            && resp_field(&r, "num-slaves").as_deref() == Some(replicas.as_str())
                    },
                )
            });
            let master = self.master_port();
            let replicas_ok = self
                .servers
                .iter()
                .filter(|s| Some(s.port) != master)
                .all(|s| {
                    raw_command(s.port, "INFO replication")
                        .is_some_and(|r| r.contains("master_link_status:up"))
                });
            if sentinels_ok && replicas_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel deployment did not settle"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server that is master now.
    pub fn master_index(&self) -> usize {
        let port = self.master_port().expect("a sentinel names the master");
        self.servers
            .iter()
            .position(|s| s.port == port)
            .expect("the master is one of ours")
    }
}

/// `base_config` on the Redis store: `extra` (more tables), then `[store.redis]` with `keys`.
pub fn redis_store_config(ports: &super::Ports, keys: &str, extra: &str) -> String {
    let toml = super::base_config(ports, &format!("{extra}\n[store.redis]\n{keys}\n")).replace(
        "[store]\nsnapshot_file = \"\"",
        "[store]\nbackend = \"redis\"\nsnapshot_file = \"\"",
    );
    assert!(toml.contains("backend = \"redis\""));
    toml
}
