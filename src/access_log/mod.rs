//! The access log and audit events (SPEC §13.5): one line per request and one per session
//! event, built on the request path and written off it. Lines go through a bounded channel to
//! a writer thread; when the channel is full a line is dropped and counted
//! (`access_log_dropped_total`), so a slow disk or a blocked stdout never holds a request.
//! A file sink is reopened on SIGUSR1 (logrotate's `postrotate`).

pub mod line;

use crate::config::{AccessLogFormat, AccessLogSettings};
use crate::metrics;
use crate::session::audit::{AuditEvent, AuditSink};
use crate::session::now_millis;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

/// Lines waiting for the writer; beyond this they are dropped.
const QUEUE: usize = 16_384;

enum Message {
    Line(String),
    Reopen,
}

/// The sink every line goes to: stdout or a file, chosen once at start.
pub struct AccessLog {
    queue: SyncSender<Message>,
}

impl AccessLog {
    /// Opens the sink of `settings` (the file, if any, now: a path that cannot be opened is a
    /// start-up error) and starts its writer thread.
    pub fn open(settings: &AccessLogSettings) -> io::Result<AccessLog> {
        let out = Output::open(settings.path.as_deref())?;
        let (queue, lines) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(out, lines))?;
        Ok(AccessLog { queue })
    }

    /// Queues one line (without its newline); drops it when the writer is behind.
    pub fn write(&self, line: String) {
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics::access_log_dropped(),
            // The writer stopped (its output failed for good): nothing more can be written.
            Err(TrySendError::Disconnected(_)) => metrics::access_log_dropped(),
        }
    }

    /// Reopens a file sink (after logrotate moved it away); lines queued before are written
    /// to the old file.
    pub fn reopen(&self) {
        // A full queue cannot take the request; the next SIGUSR1 will.
        let _ = self.queue.try_send(Message::Reopen);
    }
}

/// Audit events share the sink, as `"kind":"audit"` lines; they are never sampled.
pub struct AuditLog {
    pub log: std::sync::Arc<AccessLog>,
    pub format: AccessLogFormat,
}

impl AuditSink for AuditLog {
    fn record(&self, event: &AuditEvent<'_>) {
        self.log
            .write(line::audit(event, now_millis(), self.format));
    }
}

enum Output {
    Stdout(io::Stdout),
    File { path: PathBuf, out: BufWriter<File> },
}

impl Output {
    fn open(path: Option<&Path>) -> io::Result<Output> {
        Ok(match path {
            None => Output::Stdout(io::stdout()),
            Some(p) => Output::File {
                out: BufWriter::with_capacity(64 * 1024, append(p)?),
                path: p.to_path_buf(),
            },
        })
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        match self {
            Output::Stdout(s) => {
                let mut s = s.lock();
                s.write_all(line.as_bytes())?;
                s.write_all(b"\n")
            }
            Output::File { out, .. } => {
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(s) => s.flush(),
            Output::File { out, .. } => out.flush(),
        }
    }

    fn reopen(&mut self) {
        if let Output::File { path, out } = self {
            let _ = out.flush();
            match append(path) {
                Ok(f) => *out = BufWriter::with_capacity(64 * 1024, f),
                // Keep writing to the old file rather than lose lines.
                Err(e) => log::warn!("access log: cannot reopen {}: {e}", path.display()),
            }
        }
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread: writes lines as they come, flushes whenever the queue runs dry, and
/// stops when every sender is gone.
fn write_lines(mut out: Output, lines: Receiver<Message>) {
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        // Write everything already waiting before paying for one flush.
        while let Some(m) = next.take().or_else(|| lines.try_recv().ok()) {
            match m {
                Message::Line(l) => {
                    if let Err(e) = out.write_line(&l) {
                        log::warn!("access log: write failed: {e}");
                    }
                }
                Message::Reopen => out.reopen(),
            }
        }
        if let Err(e) = out.flush() {
            log::warn!("access log: write failed: {e}");
        }
    }
}
