//! Distributed tracing (SPEC §13.5): W3C `traceparent` honoured and passed to the app with the
//! sidecar's span as parent, traces started when enabled, spans exported over OTLP/HTTP to a
//! real (test) collector that decodes them with OpenTelemetry's own protobuf types.

use crate::common;

use common::otlp::{attribute, Collector};
use common::*;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traced(up: &EchoUpstream, collector: &Collector, extra: &str) -> TestSidecar {
    TestSidecar::with_upstream(
        up,
        &format!(
            "\n[tracing]\nenabled = true\notlp_endpoint = \"{}\"\nservice_name = \"sidecar-under-test\"\n{extra}\n",
            collector.endpoint()
        ),
    )
}

fn kind(s: &Span) -> SpanKind {
    SpanKind::try_from(s.kind).unwrap()
}

fn one(spans: &[Span], k: SpanKind) -> &Span {
    let found: Vec<&Span> = spans.iter().filter(|s| kind(s) == k).collect();
    assert_eq!(found.len(), 1, "one {k:?} span in {spans:#?}");
    found[0]
}

/// The trace id, parent id and flags of the `traceparent` the app received.
fn app_traceparent(up: &EchoUpstream, path: &str) -> (String, String, String) {
    let rec = &up.received_at(path)[0];
    let values = rec.header_all("traceparent");
    assert_eq!(values.len(), 1, "one traceparent: {values:?}");
    let parts: Vec<String> = values[0].split('-').map(str::to_string).collect();
    assert_eq!(parts.len(), 4, "{}", values[0]);
    assert_eq!(parts[0], "00");
    (parts[1].clone(), parts[2].clone(), parts[3].clone())
}

#[test]
fn an_incoming_trace_continues_through_the_sidecar_to_the_app() {
    let up = EchoUpstream::start();
    let collector = Collector::start();
    let sc = traced(&up, &collector, "");
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &bearer(ADMIN_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        br#"{"customer_id":"cust-trace"}"#,
    );
    let sid = r.json()["id"].as_str().unwrap().to_string();
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let r = sc.proxy(
        "GET",
        "/account/orders?x=1",
        &[
            ("traceparent", &traceparent),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("X-Session-Id", &sid),
        ],
        b"",
    );
    assert_eq!(r.status, 200);

    // The app sees the same trace, with the sidecar's upstream span as parent.
    let (trace, app_parent, flags) = app_traceparent(&up, "/account/orders");
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(
        app_parent, PARENT,
        "the app's parent is the sidecar's hop, not the client"
    );
    assert_eq!(
        up.received_at("/account/orders")[0].header_all("tracestate"),
        vec!["congo=t61rcWkgMzE".to_string()]
    );

    let spans = collector.spans_of(TRACE, 3);
    assert_eq!(
        spans.len(),
        3,
        "request, store and upstream spans: {spans:#?}"
    );
    let server = one(&spans, SpanKind::Server);
    let store = one(&spans, SpanKind::Internal);
    let client = one(&spans, SpanKind::Client);
    assert_eq!(hex::encode(&server.parent_span_id), PARENT);
    assert_eq!(store.parent_span_id, server.span_id);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(hex::encode(&client.span_id), app_parent);
    assert_eq!(server.name, "GET /account/");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", "/account/"),
        ("http.response.status_code", "200"),
        ("url.path", "/account/orders"),
        ("server.address", "127.0.0.1"),
        ("network.protocol.version", "1.1"),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(attribute(server, key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(
        attribute(client, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(client, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attribute(store, "db.system.name").as_deref(),
        Some("memory")
    );
    for s in [server, store, client] {
        assert!(s.start_time_unix_nano > 0 && s.end_time_unix_nano >= s.start_time_unix_nano);
    }
    assert!(client.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(collector
        .all()
        .iter()
        .all(|(svc, _)| svc == "sidecar-under-test"));

    // The access-log line of the request names the trace.
    let lines: Vec<Value> = sc
        .access_log_lines(2)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let line = lines
        .iter()
        .find(|l| l["path"] == "/account/orders")
        .unwrap();
    assert_eq!(line["trace_id"], TRACE);
}

#[test]
fn a_trace_starts_here_when_enabled_and_session_endpoints_are_traced() {
    let up = EchoUpstream::start();
    let collector = Collector::start();
    let sc = traced(&up, &collector, "\n[flavors.knowledge_center]\n");
    assert_eq!(sc.proxy("GET", "/plain/x", &[], b"").status, 200);
    let (trace, parent, flags) = app_traceparent(&up, "/plain/x");
    assert_eq!(flags, "01");
    let spans = collector.spans_of(&trace, 2);
    let server = one(&spans, SpanKind::Server);
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert_eq!(hex::encode(&one(&spans, SpanKind::Client).span_id), parent);

    // A session endpoint: answered by the sidecar, one server and one store span.
    let tp = format!("00-{}-{PARENT}-01", "1".repeat(32));
    let r = sc.proxy(
        "PUT",
        "/gks-server/v1/sessions/new",
        &[("Authorization", &bearer(WEB_TOKEN)), ("traceparent", &tp)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let spans = collector.spans_of(&"1".repeat(32), 2);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = one(&spans, SpanKind::Server);
    assert_eq!(
        attribute(server, "session.flavor").as_deref(),
        Some("knowledge_center")
    );
    assert_eq!(
        one(&spans, SpanKind::Internal).parent_span_id,
        server.span_id
    );
}

#[test]
fn unsampled_and_untraced_requests_still_pass_the_context_on() {
    let up = EchoUpstream::start();
    let collector = Collector::start();
    // Tracing on, nothing sampled: the app still gets a traceparent (flags 00), nothing leaves.
    let sc = traced(&up, &collector, "sample_ratio = 0.0");
    assert_eq!(sc.proxy("GET", "/unsampled", &[], b"").status, 200);
    let (_, _, flags) = app_traceparent(&up, "/unsampled");
    assert_eq!(flags, "00");
    // An incoming unsampled trace is honoured as unsampled.
    let tp = format!("00-{}-{PARENT}-00", "2".repeat(32));
    sc.proxy("GET", "/incoming-unsampled", &[("traceparent", &tp)], b"");
    assert_eq!(app_traceparent(&up, "/incoming-unsampled").2, "00");

    // Tracing off: an incoming trace is still continued to the app, under a new parent id.
    let off = TestSidecar::with_upstream(&up, "");
    let tp = format!("00-{}-{PARENT}-01", "3".repeat(32));
    off.proxy(
        "GET",
        "/off",
        &[("traceparent", &tp), ("tracestate", "a=b")],
        b"",
    );
    let (trace, parent, flags) = app_traceparent(&up, "/off");
    assert_eq!((trace, flags), ("3".repeat(32), "01".to_string()));
    assert_ne!(parent, PARENT);
    // Without one, nothing is invented.
    off.proxy("GET", "/off-plain", &[], b"");
    assert!(up.received_at("/off-plain")[0]
        .header_all("traceparent")
        .is_empty());
    // A malformed one is no trace to continue: tracing off, it passes untouched.
    off.proxy("GET", "/off-bad", &[("traceparent", "00-zz-yy-01")], b"");
    assert_eq!(
        up.received_at("/off-bad")[0].header_all("traceparent"),
        vec!["00-zz-yy-01".to_string()]
    );

    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        collector.all().is_empty(),
        "nothing sampled, nothing exported"
    );
}
