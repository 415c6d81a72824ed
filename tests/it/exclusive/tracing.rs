//! An unreachable collector costs a counter, never a request (SPEC §13.5).

use crate::common::*;
use std::time::{Duration, Instant};

#[test]
fn a_collector_that_is_down_costs_only_a_counter() {
    let up = EchoUpstream::start();
    let dead = free_port();
    let sc = TestSidecar::with_upstream(
        &up,
        &format!("\n[tracing]\nenabled = true\notlp_endpoint = \"http://127.0.0.1:{dead}\"\n"),
    );
    let errors = || sc.metric("trace_export_errors_total", &[]);
    let before = errors();
    let mut conn = Conn::open(sc.ports.proxy);
    for i in 0..100 {
        let r = conn.send("GET", &format!("/traced/{i}"), &[], b"");
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(up.received_at("/traced/").len(), 100);
    // The exporter sends a batch at most a second after its first span.
    let deadline = Instant::now() + Duration::from_secs(10);
    while errors() <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(errors() > before, "failed exports are counted");
}
