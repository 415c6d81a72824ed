//! The integration tests, as one crate (one build, one binary): every feature's tests are a
//! module here, `common` is the shared harness (an in-process server on free ports, a real
//! echo upstream, real redis-server processes, a raw HTTP client, the store contract).
//!
//! Metrics live in one process-wide registry. The few tests that assert exact metric deltas
//! sit under `exclusive`: `make test` skips them in the main run and runs them afterwards in a
//! process of their own, one at a time (`cargo test --test it exclusive:: -- --test-threads=1`).

mod common;

mod access_log;
mod admin;
mod config;
mod credentials;
mod deploy;
mod forwarding;
mod framing;
mod fuzz_inputs;
mod http2;
mod knowledge_center;
mod lifecycle;
mod log_hygiene;
mod rate_limits;
mod real_clients;
mod redis_faults;
mod redis_sentinel;
mod redis_sidecar;
mod redis_store;
mod redis_tls_acl;
mod rotation;
mod sessions;
mod soak;
mod spreadsheetweb;
mod store_contract;
mod tessitura;
mod tls;
mod tracing;
mod upstream_tls;
mod websocket;

mod exclusive;
