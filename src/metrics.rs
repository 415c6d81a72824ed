//! Prometheus metrics (SPEC §8), registered in the default registry of the `prometheus` crate
//! that pingora-prometheus re-exports, which is the registry `/metrics` gathers.
//!
//! Labels are small fixed sets (flavor, reason, kind, status…); never an id, token or path.

use crate::session::{EndReason, Flavor, Session};
use once_cell::sync::{Lazy, OnceCell};
use pingora_prometheus::prometheus::{
    self, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Encoder, Histogram, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec,
};
use std::collections::HashMap;

// Registration only fails on a duplicate name, which is a programming error caught by every test.
macro_rules! lazy_metric {
    ($name:ident : $ty:ty = $e:expr) => {
        static $name: Lazy<$ty> =
            Lazy::new(|| $e.expect(concat!("registering ", stringify!($name))));
    };
}

lazy_metric!(SESSIONS_ACTIVE: IntGaugeVec = register_int_gauge_vec!(
    "session_sidecar_sessions_active", "Live sessions by flavor", &["flavor"]));
lazy_metric!(SESSIONS_CREATED: IntCounterVec = register_int_counter_vec!(
    "session_sidecar_sessions_created_total", "Sessions created by flavor", &["flavor"]));
lazy_metric!(SESSIONS_ENDED: IntCounterVec = register_int_counter_vec!(
    "session_sidecar_sessions_ended_total", "Sessions ended by reason", &["reason"]));
lazy_metric!(SESSIONS_ROTATED: IntCounter = register_int_counter!(
    "session_sidecar_sessions_rotated_total", "Session ids replaced at login (SPEC §13.2)"));
lazy_metric!(ACCESS_LOG_DROPPED: IntCounter = register_int_counter!(
    "session_sidecar_access_log_dropped_total", "Access-log and audit lines dropped because the writer was behind"));
lazy_metric!(TRACE_EXPORT_ERRORS: IntCounter = register_int_counter!(
    "session_sidecar_trace_export_errors_total", "Spans dropped or exports to the OTLP collector that failed"));
lazy_metric!(SESSION_LOOKUPS: IntCounterVec = register_int_counter_vec!(
    "session_sidecar_session_lookups_total", "Session lookups of forwarded requests by result", &["result"]));
lazy_metric!(AUTH_FAILURES: IntCounterVec = register_int_counter_vec!(
    "session_sidecar_auth_failures_total", "Rejected credentials by reason", &["reason"]));
lazy_metric!(REQUESTS: IntCounterVec = register_int_counter_vec!(
    "session_sidecar_requests_total", "Requests by kind and status", &["kind", "status"]));
lazy_metric!(REQUEST_DURATION: HistogramVec = register_histogram_vec!(
    "session_sidecar_request_duration_seconds", "Request duration by kind", &["kind"],
    vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]));
lazy_metric!(UPSTREAM_ERRORS: IntCounterVec = register_int_counter_vec!(
    "session_sidecar_upstream_errors_total", "Upstream failures by kind", &["kind"]));
lazy_metric!(LOCKS_ACTIVE: IntGauge = register_int_gauge!(
    "session_sidecar_locks_active", "Live Voucherify lock sessions"));
lazy_metric!(LOCK_REJECTIONS: IntCounterVec = register_int_counter_vec!(
    "session_sidecar_lock_rejections_total", "Refused lock acquisitions by reason", &["reason"]));
lazy_metric!(STORE_DURATION: HistogramVec = register_histogram_vec!(
    "session_sidecar_store_operation_duration_seconds", "Store operation duration", &["backend", "op"],
    vec![0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5]));
lazy_metric!(STORE_ERRORS: IntCounterVec = register_int_counter_vec!(
    "session_sidecar_store_errors_total", "Store operation failures", &["backend"]));
lazy_metric!(STORE_FAILOVERS: IntCounterVec = register_int_counter_vec!(
    "session_sidecar_store_failovers_total",
    "Changes of Redis master followed through Sentinel (SPEC §13.4)", &["backend"]));
lazy_metric!(STORE_RESETS: IntCounterVec = register_int_counter_vec!(
    "session_sidecar_store_resets_total",
    "Times the store came back empty (Redis restarted without its data)", &["backend"]));
lazy_metric!(CONFIG_RELOAD_SUCCESS: IntGauge = register_int_gauge!(
    "session_sidecar_config_reload_success", "1 if the last config (re)load succeeded, else 0"));
lazy_metric!(TLS_CERT_EXPIRY: IntGaugeVec = register_int_gauge_vec!(
    "session_sidecar_tls_cert_expiry_timestamp_seconds",
    "notAfter of each loaded TLS listener certificate, in Unix seconds (SPEC §13.3)", &["server_name"]));
lazy_metric!(BUILD_INFO: IntGaugeVec = register_int_gauge_vec!(
    "session_sidecar_build_info", "Build information", &["version"]));

/// Registers every family and sets the static ones, so a scrape right after start shows them.
pub fn init() {
    BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    CONFIG_RELOAD_SUCCESS.set(1);
    LOCKS_ACTIVE.set(LOCKS_ACTIVE.get());
    SESSIONS_ROTATED.inc_by(0);
    ACCESS_LOG_DROPPED.inc_by(0);
    TRACE_EXPORT_ERRORS.inc_by(0);
    for f in Flavor::ALL {
        SESSIONS_ACTIVE.with_label_values(&[f.as_str()]);
        SESSIONS_CREATED.with_label_values(&[f.as_str()]);
    }
    // Series with a known, closed set of labels start at zero, so dashboards and alerts see
    // every family from the first scrape rather than after its first event.
    for r in EndReason::ALL {
        SESSIONS_ENDED.with_label_values(&[r.as_str()]);
    }
    for r in ["hit", "miss", "expired"] {
        SESSION_LOOKUPS.with_label_values(&[r]);
    }
    for r in [
        AuthFailure::Missing,
        AuthFailure::Invalid,
        AuthFailure::Expired,
        AuthFailure::Forbidden,
    ] {
        AUTH_FAILURES.with_label_values(&[r.as_str()]);
    }
    for k in [
        RequestKind::SessionApi,
        RequestKind::Forward,
        RequestKind::Rejected,
    ] {
        REQUEST_DURATION.with_label_values(&[k.as_str()]);
    }
    for k in UPSTREAM_ERROR_KINDS {
        UPSTREAM_ERRORS.with_label_values(&[k]);
    }
    LOCK_REJECTIONS.with_label_values(&["quantity_exceeded"]);
    Lazy::force(&REQUESTS);
    Lazy::force(&STORE_DURATION);
    Lazy::force(&STORE_ERRORS);
}

/// Starts the store series of the running backend at zero, so `store_errors_total` is on the
/// first scrape (alert rules and dashboards query it) rather than after the first failure.
pub fn store_backend(backend: &str) {
    STORE_ERRORS.with_label_values(&[backend]);
    // Only Redis fails over or comes back empty; the series exist for every backend so that
    // dashboards and alerts find them (at zero).
    STORE_FAILOVERS.with_label_values(&[backend]);
    STORE_RESETS.with_label_values(&[backend]);
}

/// Values of the `kind` label of `upstream_errors_total`.
pub const UPSTREAM_ERROR_KINDS: [&str; 3] = ["connect", "timeout", "protocol"];

/// A session entered the store.
pub fn session_started(s: &Session) {
    SESSIONS_CREATED
        .with_label_values(&[s.flavor.as_str()])
        .inc();
    SESSIONS_ACTIVE
        .with_label_values(&[s.flavor.as_str()])
        .inc();
    if s.lock().is_some() {
        LOCKS_ACTIVE.inc();
    }
}

/// A session left the store for `reason`.
pub fn session_ended(s: &Session, reason: EndReason) {
    SESSIONS_ENDED.with_label_values(&[reason.as_str()]).inc();
    SESSIONS_ACTIVE
        .with_label_values(&[s.flavor.as_str()])
        .dec();
    if s.lock().is_some() {
        LOCKS_ACTIVE.dec();
    }
}

/// A session was created in a shared store, whose own count sets `sessions_active`
/// (`set_sessions_active`) rather than this process's increments.
/// A span could not be queued, or an export to the collector failed.
pub fn trace_export_error() {
    TRACE_EXPORT_ERRORS.inc();
}

/// An access-log or audit line could not be queued.
pub fn access_log_dropped() {
    ACCESS_LOG_DROPPED.inc();
}

/// A session got a new id at login.
pub fn session_rotated() {
    SESSIONS_ROTATED.inc();
}

pub fn session_created(flavor: Flavor) {
    SESSIONS_CREATED.with_label_values(&[flavor.as_str()]).inc();
}

/// A session of a shared store ended (the gauges are set from the store's count).
pub fn session_end_counted(reason: EndReason) {
    SESSIONS_ENDED.with_label_values(&[reason.as_str()]).inc();
}

/// Live sessions of a flavour as counted by a shared store.
pub fn set_sessions_active(flavor: Flavor, n: i64) {
    SESSIONS_ACTIVE.with_label_values(&[flavor.as_str()]).set(n);
}

/// Live locks as counted by a shared store.
pub fn set_locks_active(n: i64) {
    LOCKS_ACTIVE.set(n);
}

/// A session came back from a snapshot: it is live again, but was not created now.
pub fn session_restored(s: &Session) {
    SESSIONS_ACTIVE
        .with_label_values(&[s.flavor.as_str()])
        .inc();
    if s.lock().is_some() {
        LOCKS_ACTIVE.inc();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
    Expired,
}

// Per-request series are resolved once: `with_label_values` hashes the labels and takes a
// lock on every call, which showed in the forwarding profile.
static LOOKUP_SERIES: Lazy<[IntCounter; 3]> =
    Lazy::new(|| ["hit", "miss", "expired"].map(|l| SESSION_LOOKUPS.with_label_values(&[l])));

pub fn lookup(result: Lookup) {
    let i = match result {
        Lookup::Hit => 0,
        Lookup::Miss => 1,
        Lookup::Expired => 2,
    };
    LOOKUP_SERIES[i].inc();
}

/// Reasons of `auth_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
    Expired,
    Forbidden,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::Expired => "expired",
            AuthFailure::Forbidden => "forbidden",
        }
    }
}

pub fn auth_failure(reason: AuthFailure) {
    AUTH_FAILURES.with_label_values(&[reason.as_str()]).inc();
}

/// Kinds of `requests_total` and `request_duration_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    SessionApi,
    Forward,
    Rejected,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::SessionApi => "session_api",
            RequestKind::Forward => "forward",
            RequestKind::Rejected => "rejected",
        }
    }
}

const KINDS: [RequestKind; 3] = [
    RequestKind::SessionApi,
    RequestKind::Forward,
    RequestKind::Rejected,
];

/// `requests_total` series by kind and status code (0–599), created on first use.
static REQUEST_SERIES: Lazy<[Vec<OnceCell<IntCounter>>; 3]> =
    Lazy::new(|| std::array::from_fn(|_| (0..600).map(|_| OnceCell::new()).collect()));
static DURATION_SERIES: Lazy<[Histogram; 3]> =
    Lazy::new(|| KINDS.map(|k| REQUEST_DURATION.with_label_values(&[k.as_str()])));

pub fn request_done(kind: RequestKind, status: u16, seconds: f64) {
    let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
    match REQUEST_SERIES[k].get(usize::from(status)) {
        Some(cell) => cell
            .get_or_init(|| REQUESTS.with_label_values(&[kind.as_str(), &status.to_string()]))
            .inc(),
        None => REQUESTS
            .with_label_values(&[kind.as_str(), &status.to_string()])
            .inc(),
    }
    DURATION_SERIES[k].observe(seconds);
}

pub fn upstream_error(kind: &str) {
    UPSTREAM_ERRORS.with_label_values(&[kind]).inc();
}

pub fn lock_rejected(reason: &str) {
    LOCK_REJECTIONS.with_label_values(&[reason]).inc();
}

/// `store_operation_duration_seconds` series by (backend, op), created on first use. A short
/// list compared by pointer first: a dozen pairs at most, and SipHashing two strings per store
/// call cost more than the scan (callgrind).
type StoreSeries = Vec<((&'static str, &'static str), Histogram)>;
static STORE_SERIES: Lazy<parking_lot::RwLock<StoreSeries>> = Lazy::new(Default::default);

fn same(a: &'static str, b: &'static str) -> bool {
    std::ptr::eq(a, b) || a == b
}

pub fn store_operation(backend: &'static str, op: &'static str, seconds: f64) {
    let is =
        |((b, o), _): &&((&'static str, &'static str), Histogram)| same(b, backend) && same(o, op);
    if let Some((_, h)) = STORE_SERIES.read().iter().find(is) {
        h.observe(seconds);
        return;
    }
    let mut series = STORE_SERIES.write();
    match series.iter().find(is) {
        Some((_, h)) => h.observe(seconds),
        None => {
            let h = STORE_DURATION.with_label_values(&[backend, op]);
            h.observe(seconds);
            series.push(((backend, op), h));
        }
    }
}

pub fn store_error(backend: &str) {
    STORE_ERRORS.with_label_values(&[backend]).inc();
}

pub fn store_failover(backend: &str) {
    STORE_FAILOVERS.with_label_values(&[backend]).inc();
}

pub fn store_reset(backend: &str) {
    STORE_RESETS.with_label_values(&[backend]).inc();
}

/// The loaded TLS certificates as `(server_name, notAfter)`; `gone`: names published before
/// that no longer have a certificate (their series are removed). Two certificates under one
/// name (the proxy's and the admin listener's) show the earlier expiry, the one an alert needs.
pub fn tls_cert_expiry(certs: &[(String, i64)], gone: &[String]) {
    let mut by_name: HashMap<&str, i64> = HashMap::new();
    for (name, not_after) in certs {
        let e = by_name.entry(name.as_str()).or_insert(*not_after);
        *e = (*e).min(*not_after);
    }
    for name in gone {
        if !by_name.contains_key(name.as_str()) {
            // Absent already is fine: nothing to remove.
            let _ = TLS_CERT_EXPIRY.remove_label_values(&[name]);
        }
    }
    for (name, not_after) in by_name {
        TLS_CERT_EXPIRY.with_label_values(&[name]).set(not_after);
    }
}

pub fn config_reload(success: bool) {
    CONFIG_RELOAD_SUCCESS.set(i64::from(success));
}

/// The Prometheus text exposition of every registered metric.
pub fn render() -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    let encoder = prometheus::TextEncoder::new();
    // Encoding into a Vec only fails on invalid metric data, which registration rules out.
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut out) {
        log::error!("encoding metrics failed: {e}");
    }
    out
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn count(backend: &str, op: &str) -> u64 {
        STORE_DURATION
            .with_label_values(&[backend, op])
            .get_sample_count()
    }

    #[test]
    fn store_operations_land_in_their_own_series_found_by_value_too() {
        store_operation("unit-test-backend", "op-a", 0.001);
        store_operation("unit-test-backend", "op-b", 0.001);
        store_operation("unit-test-backend", "op-a", 0.001);
        // The same names at other addresses (another crate's literal) find the same series.
        let backend: &'static str = Box::leak(String::from("unit-test-backend").into_boxed_str());
        let op: &'static str = Box::leak(String::from("op-a").into_boxed_str());
        store_operation(backend, op, 0.001);
        assert_eq!(count("unit-test-backend", "op-a"), 3);
        assert_eq!(count("unit-test-backend", "op-b"), 1);
        let listed = STORE_SERIES
            .read()
            .iter()
            .filter(|((b, _), _)| *b == "unit-test-backend")
            .count();
        assert_eq!(listed, 2, "one entry per (backend, op), not per address");
    }
}
