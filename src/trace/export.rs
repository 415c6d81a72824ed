//! OTLP/HTTP export (protobuf, `POST {otlp_endpoint}/v1/traces`): spans are queued to an
//! exporter thread that sends them in batches (up to 512 spans, or what arrived within a
//! second). A full queue drops spans and an export that fails (collector down, slow, or
//! answering an error) drops its batch; each costs `trace_export_errors_total`, never a
//! request. While a batch gathers the thread naps rather than waiting on the channel, so
//! queuing a span never has to wake it (one wake per span cost measurable CPU, issue 19).

use super::span::{key_value, Span, Value};
use crate::metrics;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

const QUEUE: usize = 8192;
const BATCH: usize = 512;
const BATCH_WAIT: Duration = Duration::from_secs(1);
/// The nap between looks at the queue while a batch gathers: 10 ms holds 512 spans up to
/// 51,200 spans/s, and `QUEUE` is 80 ms of 100,000 spans/s.
const GATHER_NAP: Duration = Duration::from_millis(10);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Exporter {
    queue: SyncSender<Span>,
}

impl Exporter {
    /// Starts the exporter thread for `endpoint` (e.g. `http://127.0.0.1:4318`).
    pub fn start(endpoint: &str, service_name: &str) -> std::io::Result<Exporter> {
        let (queue, spans) = sync_channel(QUEUE);
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let service = service_name.to_string();
        std::thread::Builder::new()
            .name("trace-export".into())
            .spawn(move || export_loop(&url, &service, spans))?;
        Ok(Exporter { queue })
    }

    /// Queues a finished span; a full queue drops it (counted).
    pub fn export(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            metrics::trace_export_error();
        }
    }
}

fn export_loop(url: &str, service: &str, spans: Receiver<Span>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(EXPORT_TIMEOUT))
        .http_status_as_error(true)
        .user_agent(concat!("session-sidecar/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut batch: Vec<Span> = Vec::with_capacity(BATCH);
    loop {
        let Ok(first) = spans.recv() else {
            return;
        };
        batch.push(first);
        let deadline = Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH {
            match spans.try_recv() {
                Ok(s) => batch.push(s),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(GATHER_NAP));
                }
            }
        }
        let body = encode(service, &batch);
        let sent = agent
            .post(url)
            .header("Content-Type", "application/x-protobuf")
            .send(&body[..]);
        if let Err(e) = sent {
            metrics::trace_export_error();
            log::debug!("trace export of {} spans failed: {e}", batch.len());
        }
        batch.clear();
    }
}

/// One OTLP export request holding `spans`, under this service's resource.
pub fn encode(service: &str, spans: &[Span]) -> Vec<u8> {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![key_value("service.name", Value::Str(service.to_string()))],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "session-sidecar".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.iter().map(Span::to_otlp).collect(),
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    request.encode_to_vec()
}
