//! Process logging: `env_logger` configured by `RUST_LOG` (default `info`), except that crates
//! which dump whole request heads at debug level are held at `info` whatever `RUST_LOG` asks.
//! pingora's debug output carries every request header (`Authorization`, `X-App-Token`,
//! cookies, session ids), and SPEC §5 allows no secret in any log.

pub mod throttle;

use log::{Level, Log, Metadata, Record};

/// Target prefixes that never log below `info`.
const CAPPED_AT_INFO: [&str; 2] = ["pingora", "ureq"];

fn allowed(target: &str, level: Level) -> bool {
    level <= Level::Info || !CAPPED_AT_INFO.iter().any(|p| target.starts_with(p))
}

struct CappedLogger(env_logger::Logger);

impl Log for CappedLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        allowed(metadata.target(), metadata.level()) && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if allowed(record.target(), record.level()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Installs the process logger (once; later calls do nothing).
pub fn init() {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(CappedLogger(logger))).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_dumping_crates_stay_at_info() {
        assert!(!allowed("pingora_proxy::proxy_h1", Level::Debug));
        assert!(!allowed(
            "pingora_core::protocols::http::v1::server",
            Level::Trace
        ));
        assert!(!allowed("ureq::unversioned", Level::Debug));
        assert!(allowed("pingora_core::server", Level::Info));
        assert!(allowed("pingora_proxy", Level::Error));
        assert!(allowed("session_sidecar::auth::jwt", Level::Debug));
        assert!(allowed("session_sidecar::proxy", Level::Trace));
    }
}
