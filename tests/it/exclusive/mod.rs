//! Tests that assert exact deltas of the process-wide metrics: `make test` skips them in the
//! main run and runs them afterwards in a process of their own, one at a time.

mod admin_brute_force;
mod redis_metrics;
mod rotation;
mod tracing;
mod voucherify;
