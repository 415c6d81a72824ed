//! Repeated failures as one line per interval (issue 19): during an outage every request
//! fails the same way, and one WARN per request buries the lines that matter (measured: 2,485
//! lines in 8 s with Redis down). The first occurrence of a kind is logged at once; the rest
//! within `INTERVAL` are counted, and `flush` (every housekeeping tick) writes one summary
//! line per kind: how many, and the last message.

use log::Level;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(10);

struct Kind {
    level: Level,
    /// When a line of this kind was last written.
    written: Instant,
    /// Occurrences since then that were not written.
    suppressed: u64,
    last: String,
}

type Kinds = HashMap<&'static str, Kind>;

static KINDS: Lazy<Mutex<Kinds>> = Lazy::new(Mutex::default);

/// Logs `message` under `kind` at `level`, unless a line of that kind was written less than
/// `INTERVAL` ago: then it is only counted, for `flush` to summarise.
pub fn log(kind: &'static str, level: Level, message: String) {
    let line = record(&mut KINDS.lock(), kind, level, message, Instant::now());
    if let Some((level, line)) = line {
        log::log!(target: "session_sidecar", level, "{line}");
    }
}

/// Writes the summary of each kind whose interval has passed with occurrences not written.
pub fn flush() {
    let lines = due(&mut KINDS.lock(), Instant::now());
    for (level, line) in lines {
        log::log!(target: "session_sidecar", level, "{line}");
    }
}

/// The line to write now for one occurrence, if any.
fn record(
    kinds: &mut Kinds,
    kind: &'static str,
    level: Level,
    message: String,
    now: Instant,
) -> Option<(Level, String)> {
    match kinds.get_mut(kind) {
        Some(k) if now.duration_since(k.written) < INTERVAL => {
            k.suppressed += 1;
            k.last = message;
            None
        }
        Some(k) => {
            let suppressed = std::mem::take(&mut k.suppressed);
            k.written = now;
            Some((level, line(kind, &message, suppressed)))
        }
        None => {
            kinds.insert(
                kind,
                Kind {
                    level,
                    written: now,
                    suppressed: 0,
                    last: String::new(),
                },
            );
            Some((level, message))
        }
    }
}

/// The summaries due at `now`.
fn due(kinds: &mut Kinds, now: Instant) -> Vec<(Level, String)> {
    let mut out = Vec::new();
    for (name, k) in kinds.iter_mut() {
        if k.suppressed > 0 && now.duration_since(k.written) >= INTERVAL {
            let n = std::mem::take(&mut k.suppressed);
            out.push((k.level, line(name, &std::mem::take(&mut k.last), n)));
            k.written = now;
        }
    }
    out
}

fn line(kind: &str, message: &str, suppressed: u64) -> String {
    if suppressed == 0 {
        message.to_string()
    } else {
        format!(
            "{message} ({suppressed} more {kind} in the last {}s, not logged one by one)",
            INTERVAL.as_secs()
        )
    }
}

/// `log::warn!`, one line per interval per kind (see the module).
#[macro_export]
macro_rules! warn_throttled {
    ($kind:expr, $($arg:tt)+) => {
        $crate::logging::throttle::log($kind, log::Level::Warn, format!($($arg)+))
    };
}

/// `log::error!`, one line per interval per kind (see the module).
#[macro_export]
macro_rules! error_throttled {
    ($kind:expr, $($arg:tt)+) => {
        $crate::logging::throttle::log($kind, log::Level::Error, format!($($arg)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_line_then_one_summary_per_interval() {
        let mut kinds = Kinds::new();
        let t0 = Instant::now();
        let mut written = Vec::new();
        for i in 0..2_485u64 {
            let at = t0 + Duration::from_millis(i * 3); // about 7.5 s of failures
            written.extend(record(
                &mut kinds,
                "store failures",
                Level::Warn,
                format!("failure {i}"),
                at,
            ));
            written.extend(due(&mut kinds, at));
        }
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0].1, "failure 0");
        // The interval passes: one summary with the count and the latest message.
        let summary = due(&mut kinds, t0 + INTERVAL + Duration::from_millis(1));
        assert_eq!(summary.len(), 1);
        assert_eq!(
            summary[0].1,
            "failure 2484 (2484 more store failures in the last 10s, not logged one by one)"
        );
        // Quiet since: nothing more; another kind is independent.
        assert!(due(&mut kinds, t0 + INTERVAL * 3).is_empty());
        assert!(record(&mut kinds, "other", Level::Error, "x".into(), t0).is_some());
        // After a quiet interval, the next failure is written at once again.
        let again = record(
            &mut kinds,
            "store failures",
            Level::Warn,
            "back".into(),
            t0 + INTERVAL * 3,
        );
        assert_eq!(again.map(|l| l.1).as_deref(), Some("back"));
    }
}
