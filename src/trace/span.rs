//! A finished span as the sidecar records it, and its OTLP form.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span as OtlpSpan, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The request as the sidecar served it.
    Server,
    /// The hop to the app.
    Client,
    /// Work inside the sidecar (the session store).
    Internal,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    /// Unix time in nanoseconds.
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// The span failed (a 5xx served, an upstream that could not be reached).
    pub error: bool,
}

impl Span {
    pub fn to_otlp(&self) -> OtlpSpan {
        OtlpSpan {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            name: self.name.clone(),
            kind: match self.kind {
                SpanKind::Server => span::SpanKind::Server,
                SpanKind::Client => span::SpanKind::Client,
                SpanKind::Internal => span::SpanKind::Internal,
            } as i32,
            start_time_unix_nano: self.start_ns,
            end_time_unix_nano: self.end_ns.max(self.start_ns),
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| key_value(k, v.clone()))
                .collect(),
            status: Some(Status {
                code: if self.error {
                    status::StatusCode::Error
                } else {
                    status::StatusCode::Unset
                } as i32,
                message: String::new(),
            }),
            ..OtlpSpan::default()
        }
    }
}

pub fn key_value(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(match value {
                Value::Str(s) => any_value::Value::StringValue(s),
                Value::Int(i) => any_value::Value::IntValue(i),
            }),
        }),
        ..KeyValue::default()
    }
}
