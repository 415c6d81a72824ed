//! Distributed tracing (SPEC §13.5): W3C Trace Context in, out to the app, and spans exported
//! with OTLP over HTTP. A request that arrives with a `traceparent` continues that trace; one
//! without starts a trace when `[tracing] enabled`. The app always receives a `traceparent`
//! naming the sidecar's upstream span as its parent (and `tracestate` as it came), so its own
//! spans hang under the sidecar's. Spans are exported only when tracing is enabled and the
//! trace is sampled; export never blocks or fails a request (`export`).

pub mod context;
pub mod export;
pub mod span;

pub use context::TraceContext;
pub use export::Exporter;
pub use span::{Span, SpanKind, Value};
