//! A test OTLP/HTTP collector: the test upstream (`EchoUpstream`) answering `POST /v1/traces`
//! itself, decoding each protobuf export with the OpenTelemetry project's own types and
//! keeping every span.

#![allow(dead_code)]

use super::echo::{Answer, Answerer, EchoUpstream};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Collector {
    pub port: u16,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    /// The HTTP side: the test upstream, answering every export itself.
    _http: EchoUpstream,
}

impl Collector {
    pub fn start() -> Collector {
        let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
        let keep = spans.clone();
        let answerer: Answerer = Arc::new(move |r| {
            let request = ExportTraceServiceRequest::decode(r.body.as_slice())
                .expect("an OTLP protobuf export");
            for rs in request.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        keep.lock().unwrap().push((service.clone(), s));
                    }
                }
            }
            Some(Answer {
                status: 200,
                headers: vec![],
                body: serde_json::json!({}),
            })
        });
        let http = EchoUpstream::start_answering(answerer);
        Collector {
            port: http.port,
            spans,
            _http: http,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The spans of `trace_id` (hex), once at least `n` arrived (waits up to 10 s).
    pub fn spans_of(&self, trace_id: &str, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, s)| hex::encode(&s.trace_id) == trace_id)
                .map(|(_, s)| s.clone())
                .collect();
            if found.len() >= n || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every span received so far, with its service name.
    pub fn all(&self) -> Vec<(String, Span)> {
        self.spans.lock().unwrap().clone()
    }
}

/// A span attribute as text (strings as they are, integers formatted).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            Some(any_value::Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}
