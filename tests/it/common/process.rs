//! The real `session-sidecar` binary as a child process: for signals, restarts, upgrades,
//! resident memory and log contents, which an in-process server cannot show.

use super::{base_config, get, Ports};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SidecarProcess {
    pub child: Child,
    pub ports: Ports,
    /// stdout and stderr of the process (it logs at debug level).
    pub log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl SidecarProcess {
    /// Starts the binary with `args`, logging at debug level into `log`; does not wait.
    pub fn spawn(args: &[&std::ffi::OsStr], ports: Ports, log: PathBuf) -> SidecarProcess {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_session-sidecar"))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the sidecar binary");
        SidecarProcess {
            child,
            ports,
            log,
            _dir: None,
        }
    }

    /// Runs `--config config` and waits until it is ready; the log goes next to the config.
    pub fn start(config: &Path, ports: Ports) -> SidecarProcess {
        let log = config.with_file_name("sidecar.log");
        let p = Self::spawn(&["--config".as_ref(), config.as_os_str()], ports, log);
        p.wait_ready();
        p
    }

    /// Runs `base_config(ports, extra)` from a fresh temp dir holding `files`.
    pub fn start_fresh(ports: Ports, extra: &str, files: &[(&str, String)]) -> SidecarProcess {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let config = dir.path().join("config.toml");
        std::fs::write(&config, base_config(&ports, extra)).unwrap();
        let mut p = Self::start(&config, ports);
        p._dir = Some(dir);
        p
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let up = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up(self.ports.admin)
                && get(self.ports.admin, "/readyz", &[]).status == 200
                && up(self.ports.proxy)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the sidecar did not become ready: {}", self.log_text());
    }

    /// Sends a signal by name (`TERM`, `HUP`, `QUIT`…).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// The exit code, if the process ends within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// SIGTERM, wait for the exit, then the whole log.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        if self.wait_exit(Duration::from_secs(15)).is_none() {
            let _ = self.child.kill();
        }
        self.log_text()
    }

    /// Resident set size in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `session-sidecar check-config PATH`: whether it accepted the file, and what it printed
/// (stdout and stderr).
pub fn check_config(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_session-sidecar"))
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run check-config");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}
