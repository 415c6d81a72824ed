//! Real `redis-server` processes for tests: each on a free loopback port, in its own temp
//! dir, with persistence off (`--save "" --appendonly no`). Never the machine's own Redis.
//!
//! Each server runs under a small shell watchdog that kills it when the test process is gone,
//! so a panicking or aborted test run leaves no server behind.

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
    dir: tempfile::TempDir,
    extra: Vec<String>,
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
            dir,
            extra,
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
        let mut args: Vec<String> = [
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
