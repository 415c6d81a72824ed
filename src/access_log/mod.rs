//! The access log and audit events (SPEC §13.5): one line per request and one per session
//! event, built on the request path and written off it. Lines go through a bounded channel to
//! a writer thread; when the channel is full a line is dropped and counted
//! (`access_log_dropped_total`), so a slow disk or a blocked stdout never holds a request.
//! A file sink is reopened on SIGUSR1 (logrotate's `postrotate`).
//!
//! While lines keep coming the writer naps between batches instead of waiting on the channel:
//! a request then only queues its line, where waking a waiting writer for every line cost a
//! futex wake, a context switch and a `write(2)` per request (issue 19 measured the log at
//! +74 % CPU per forwarded request that way).

pub mod line;

use crate::config::{AccessLogFormat, AccessLogSettings};
use crate::metrics;
use crate::session::audit::{AuditEvent, AuditSink};
use crate::session::now_millis;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::Duration;

/// Lines waiting for the writer; beyond this they are dropped.
const QUEUE: usize = 16_384;
/// How long the writer naps between batches while lines keep coming: at most this late on
/// disk, and room for `QUEUE` lines at 800,000 requests/s.
const BATCH_NAP: Duration = Duration::from_millis(20);

enum Message {
    Line(String),
    Reopen,
    /// Write and flush everything queued before, then answer.
    Flush(SyncSender<()>),
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

    /// Writes out every line queued so far, waiting at most `timeout` (at shutdown, so the
    /// last requests' lines are not lost with the process).
    pub fn flush(&self, timeout: Duration) {
        let (done, written) = sync_channel(1);
        if send_within(&self.queue, Message::Flush(done), timeout) {
            let _ = written.recv_timeout(timeout);
        }
    }
}

/// `SyncSender` has no `send_timeout`: retries `try_send` on a full queue until `timeout`.
fn send_within(queue: &SyncSender<Message>, mut m: Message, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match queue.try_send(m) {
            Ok(()) => return true,
            Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                m = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return false,
        }
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

/// The writer thread. Idle, it waits on the channel (no CPU). A line wakes it; it writes
/// what is queued, flushes, then naps `BATCH_NAP` and goes again as long as lines keep coming,
/// so a busy sidecar's requests never have to wake it. It stops when every sender is gone.
fn write_lines(mut out: Output, lines: Receiver<Message>) {
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        loop {
            let mut wrote = false;
            let mut closed = false;
            loop {
                let m = match next.take().map_or_else(|| lines.try_recv(), Ok) {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                };
                wrote = true;
                match m {
                    Message::Line(l) => {
                        if let Err(e) = out.write_line(&l) {
                            log::warn!("access log: write failed: {e}");
                        }
                    }
                    Message::Reopen => out.reopen(),
                    Message::Flush(done) => {
                        flush(&mut out);
                        let _ = done.try_send(());
                    }
                }
            }
            if wrote {
                flush(&mut out);
            }
            if closed {
                return;
            }
            if !wrote {
                break; // nothing came during the nap: wait on the channel again
            }
            std::thread::sleep(BATCH_NAP);
        }
    }
}

fn flush(out: &mut Output) {
    if let Err(e) = out.flush() {
        log::warn!("access log: write failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AccessLogFormat;

    /// An access log writing to a file in a fresh temporary directory (kept alive by the
    /// returned guard).
    fn file_log() -> (tempfile::TempDir, PathBuf, AccessLog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&AccessLogSettings {
            enabled: true,
            path: Some(path.clone()),
            format: AccessLogFormat::Json,
            sample_ratio: 1.0,
        })
        .unwrap();
        (dir, path, log)
    }

    fn lines_in(path: &Path) -> usize {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// A busy writer naps between batches; `flush` (at shutdown) must not wait for the nap to
    /// end on its own, and must return only once every line queued before it is on disk.
    #[test]
    fn flush_writes_every_queued_line_before_it_returns() {
        let (_dir, path, log) = file_log();
        log.write("first".into());
        // The writer takes the first line at once, then naps while more arrive.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lines_in(&path) < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first line was never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 0..500 {
            log.write(format!("line {i}"));
        }
        log.flush(Duration::from_secs(5));
        assert_eq!(lines_in(&path), 501);
    }

    #[test]
    fn lines_queued_while_the_writer_naps_are_written_without_a_flush() {
        let (_dir, path, log) = file_log();
        for i in 0..300 {
            log.write(format!("line {i}"));
            if i % 100 == 0 {
                std::thread::sleep(BATCH_NAP / 2);
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lines_in(&path) < 300 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of 300 lines",
                lines_in(&path)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(lines_in(&path), 300);
    }
}
