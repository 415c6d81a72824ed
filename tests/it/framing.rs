//! SPEC §13.1 framing and limits, through the real server on loopback: the request-smuggling
//! probe corpus (tests/fixtures/framing-probes.toml) against a recording upstream, the size
//! limits on both listeners, keep-alive limits, flavour endpoints, and the config keys.

use crate::common;

use common::{
    base_config, bearer, both_protocols, EchoUpstream, Ports, Protocol, Response, TestSidecar,
    APP_KEY, WEB_TOKEN,
};
use serde::Deserialize;
use session_sidecar::config;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sessions in the sidecar's store (metrics are shared by every sidecar in this process).
fn stored_sessions(sc: &TestSidecar) -> u64 {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(sc.state.store().session_count())
        .expect("count")
}

#[derive(Debug, Deserialize)]
struct Corpus {
    probe: Vec<Probe>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Probe {
    name: String,
    #[allow(dead_code)]
    why: String,
    send: String,
    status: Vec<u16>,
    closes: bool,
    reaches: Vec<String>,
}

fn corpus() -> Vec<Probe> {
    let text = std::fs::read_to_string("tests/fixtures/framing-probes.toml").expect("corpus");
    toml::from_str::<Corpus>(&text)
        .expect("corpus parses")
        .probe
}

/// The bytes of a probe: `send` with its expansions (see the corpus header) applied.
fn expand(send: &str) -> Vec<u8> {
    let mut out = String::new();
    let mut rest = send;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("unclosed {{") + start;
        let directive = &rest[start + 2..end];
        if directive == "body_len" {
            out.push_str("\u{1}BODY_LEN\u{1}");
        } else if let Some(n) = directive.strip_prefix("a*") {
            out.push_str(&"a".repeat(n.parse().expect("count")));
        } else if let Some(n) = directive.strip_prefix("h*") {
            for i in 0..n.parse::<usize>().expect("count") {
                out.push_str(&format!("X-Pad-{i}: v\r\n"));
            }
        } else {
            panic!("unknown expansion {directive:?}");
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    let body_len = out.find("\r\n\r\n").map_or(0, |i| out.len() - i - 4);
    out.replace("\u{1}BODY_LEN\u{1}", &body_len.to_string())
        .into_bytes()
}

/// What a connection answered to a probe.
#[derive(Debug, PartialEq)]
struct Outcome {
    status: Vec<u16>,
    closes: bool,
}

/// Parses complete responses from `buf`; `None` when the last one is still incomplete.
fn parse_responses(buf: &[u8], at_eof: bool) -> Option<Vec<u16>> {
    let mut statuses = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let field = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        rest = &rest[head_end..];
        if (100..200).contains(&status) || status == 204 || status == 304 {
        } else if let Some(len) = field("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if rest.len() < len {
                return None;
            }
            rest = &rest[len..];
        } else if field("transfer-encoding").is_some() {
            let end = rest.windows(5).position(|w| w == b"0\r\n\r\n")? + 5;
            rest = &rest[end..];
        } else if at_eof {
            rest = &[];
        } else {
            return None;
        }
        statuses.push(status);
    }
    Some(statuses)
}

/// Sends `bytes` on a fresh connection and reads until the server closes, or until `expect`
/// responses arrived and the connection then stayed quiet (open) for a while.
fn exchange(port: u16, bytes: &[u8], expect: usize) -> Outcome {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // The server may close before reading everything (that is the point of some probes).
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let started = Instant::now();
    let mut last_data = Instant::now();
    let mut closes = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => {
                closes = true;
                break;
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                last_data = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let got = parse_responses(&buf, false).map_or(0, |s| s.len());
                let quiet = last_data.elapsed() > Duration::from_millis(700);
                if (got >= expect && quiet) || started.elapsed() > Duration::from_secs(15) {
                    break;
                }
            }
            Err(_) => {
                // A reset is the server closing too.
                closes = true;
                break;
            }
        }
    }
    let status = parse_responses(&buf, closes)
        .unwrap_or_else(|| panic!("unparsable answer: {:?}", String::from_utf8_lossy(&buf)));
    Outcome { status, closes }
}

/// The path of a request line as the app saw it (absolute-form targets reduced to the path).
fn path_of(request_line: &str) -> String {
    let target = request_line.split(' ').nth(1).unwrap_or("");
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    target.split('?').next().unwrap_or("").to_string()
}

#[test]
fn corpus_expansions_are_exact() {
    assert_eq!(
        expand("POST / HTTP/1.1\r\nContent-Length: {{body_len}}\r\n\r\nabc"),
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    );
    assert_eq!(expand("{{a*3}}{{h*2}}"), b"aaaX-Pad-0: v\r\nX-Pad-1: v\r\n");
    let probes = corpus();
    assert!(probes.len() >= 40, "the corpus has {} probes", probes.len());
    let mut names: Vec<&str> = probes.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), probes.len(), "probe names are unique");
}

#[test]
fn smuggling_probe_corpus_against_the_sidecar() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    let probes = corpus();
    let outcomes: Vec<(Probe, Outcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = probes
            .iter()
            .map(|p| {
                let port = sc.ports.proxy;
                scope.spawn(move || (p.clone(), exchange(port, &expand(&p.send), p.status.len())))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    // Give the upstream a moment to record anything still in flight.
    std::thread::sleep(Duration::from_millis(300));
    let lines = up.request_lines();

    let mut failures = Vec::new();
    for (p, got) in &outcomes {
        let want = Outcome {
            status: p.status.clone(),
            closes: p.closes,
        };
        if *got != want {
            failures.push(format!("{}: expected {want:?}, got {got:?}", p.name));
        }
        let own = format!("/ok/{}", p.name);
        let reached: Vec<String> = lines
            .iter()
            .map(|l| path_of(l))
            .filter(|path| *path == own || path.starts_with(&format!("{own}/")))
            .collect();
        if reached != p.reaches {
            failures.push(format!(
                "{}: the app received {reached:?}, expected {:?}",
                p.name, p.reaches
            ));
        }
        let refused = p.status.first().is_some_and(|s| *s >= 400);
        if refused && !up.received_at(&own).is_empty() {
            failures.push(format!(
                "{}: a refused request reached the app whole",
                p.name
            ));
        }
    }
    let smuggled: Vec<&String> = lines.iter().filter(|l| l.contains("/smuggled")).collect();
    assert!(
        smuggled.is_empty(),
        "hidden requests reached the app: {smuggled:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Refusals made by the sidecar itself (not pingora's parser) are counted as rejected. The
    // registry is shared by every sidecar of this test process, hence "at least".
    for status in [400, 414, 431] {
        let ours = outcomes
            .iter()
            .filter(|(p, _)| p.status == [status])
            .count() as f64;
        let counted = sc.metric(
            "requests_total",
            &[("kind", "rejected"), ("status", &status.to_string())],
        );
        assert!(counted >= ours.min(8.0), "{status}: counted {counted}");
    }
}

fn limits_config(ports: &Ports, server_keys: &str) -> String {
    base_config(ports, "").replacen(
        "max_body = \"64KiB\"",
        &format!("max_body = \"64KiB\"\n{server_keys}"),
        1,
    )
}

/// HTTP/1.1 says `Connection: close`; HTTP/2 has no such header (the refusal ends its stream).
fn assert_closes(proto: Protocol, r: &Response) {
    if !proto.is_h2() {
        assert_eq!(r.header("connection"), Some("close"));
    }
}

/// Over h2 the sizes are those of the HTTP/1.1 head the request stands for.
fn limits_are_configurable_and_answer_json(proto: Protocol) {
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let sc = TestSidecar::start(
        ports,
        &limits_config(
            &ports,
            "max_uri = \"64\"\nmax_headers = 5\nmax_header_size = \"1KiB\"",
        ),
    )
    .over(proto);
    let fits = format!("/{}", "u".repeat(63));
    assert_eq!(sc.proxy("GET", &fits, &[], b"").status, 200);
    let long = format!("/{}", "u".repeat(64));
    let r = sc.proxy("GET", &long, &[], b"");
    assert_eq!(r.status, 414);
    assert_eq!(r.json()["error"], "uri_too_long");
    assert_closes(proto, &r);

    // Host is one of the 5 (over h2, `:authority` stands for it).
    let four = [("A", "1"), ("B", "1"), ("C", "1"), ("D", "1")];
    assert_eq!(sc.proxy("GET", "/x", &four, b"").status, 200);
    let five = [("A", "1"), ("B", "1"), ("C", "1"), ("D", "1"), ("E", "1")];
    let r = sc.proxy("GET", "/x", &five, b"");
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "header_too_large");
    assert_closes(proto, &r);

    let big = "b".repeat(1024);
    let r = sc.proxy("GET", "/x", &[("X-Big", big.as_str())], b"");
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "header_too_large");
    assert!(up.received_at(&long).is_empty());
    assert_eq!(up.received_at("/x").len(), 1);
}

#[test]
fn the_admin_listener_enforces_the_same_rules() {
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let sc = TestSidecar::start(ports, &limits_config(&ports, "max_uri = \"64\""));
    let admin = sc.ports.admin;
    let auth = format!("Authorization: {}\r\n", bearer(common::ADMIN_TOKEN));

    let cl_te = format!(
        "POST /admin/sessions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    let got = exchange(admin, cl_te.as_bytes(), 1);
    assert_eq!(
        got,
        Outcome {
            status: vec![400],
            closes: true
        }
    );
    assert_eq!(stored_sessions(&sc), 0);

    let long = format!(
        "GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "q".repeat(80)
    );
    assert_eq!(
        exchange(admin, long.as_bytes(), 1),
        Outcome {
            status: vec![414],
            closes: true
        }
    );
    // pingora's own parser refusal is answered too (its generic loop would just hang up).
    let bad = b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n";
    assert_eq!(
        exchange(admin, bad, 1),
        Outcome {
            status: vec![400],
            closes: true
        }
    );
    // Valid requests still work, several on one connection.
    assert_eq!(
        sequential(admin, 2),
        Outcome {
            status: vec![404, 404],
            closes: false
        }
    );
}

#[test]
fn flavour_endpoints_refuse_ambiguous_framing_and_store_nothing() {
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "[flavors.spreadsheetweb]\nenabled = true\n");
    let body = format!("{{\"ApplicationKey\":\"{APP_KEY}\"}}");
    let req = format!(
        "POST /Api/Applications/OpenDedicatedSession HTTP/1.1\r\nHost: x\r\n\
         Authorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        bearer(WEB_TOKEN),
        body.len(),
        body.len()
    );
    assert_eq!(
        exchange(sc.ports.proxy, req.as_bytes(), 1),
        Outcome {
            status: vec![400],
            closes: true
        }
    );
    assert_eq!(stored_sessions(&sc), 0);
    // The same request framed once is served.
    let fine = req.replace(&format!("Content-Length: {}\r\n", body.len()), "");
    let got = exchange(sc.ports.proxy, fine.as_bytes(), 1);
    assert_eq!(got.status, vec![200]);
    assert_eq!(stored_sessions(&sc), 1);
    assert!(up.request_lines().is_empty());
}

/// Sends `n` GETs one after the other on one connection; returns the statuses answered and
/// whether the server closed the connection.
fn sequential(port: u16, n: usize) -> Outcome {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut status = Vec::new();
    for i in 0..n {
        let req = format!("GET /ka/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return Outcome {
                status,
                closes: true,
            };
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    let answered = parse_responses(&buf, true).unwrap_or_default();
                    status.extend(answered);
                    return Outcome {
                        status,
                        closes: true,
                    };
                }
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
            if let Some(r) = parse_responses(&buf, false).filter(|r| !r.is_empty()) {
                status.extend(r);
                break;
            }
        }
    }
    Outcome {
        status,
        closes: false,
    }
}

#[test]
fn keepalive_requests_bounds_a_connection() {
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let sc = TestSidecar::start(ports, &limits_config(&ports, "keepalive_requests = 3"));
    for port in [sc.ports.proxy, sc.ports.admin] {
        let got = sequential(port, 5);
        assert_eq!(got.status.len(), 3, "port {port}: {got:?}");
        assert!(got.closes, "port {port}");
    }
}

#[test]
fn keepalive_timeout_closes_idle_connections() {
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let sc = TestSidecar::start(ports, &limits_config(&ports, "keepalive_timeout = \"1s\""));
    for port in [sc.ports.proxy, sc.ports.admin] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        // Reads the answer, then waits for the server to hang up the idle connection.
        let _ = s.read_to_end(&mut buf);
        let waited = started.elapsed();
        assert_eq!(parse_responses(&buf, true).map(|s| s.len()), Some(1));
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "port {port}: closed after {waited:?}"
        );
    }
}

fn check(text: &str) -> Result<config::Config, config::ConfigError> {
    config::parse(Path::new("c.toml"), text)
}

#[test]
fn limit_keys_have_defaults_and_positioned_errors() {
    let min = "[upstreams.app]\naddress = \"127.0.0.1:3000\"\n";
    let c = check(min).expect("minimal config");
    let h = c.server.http;
    assert_eq!(h.max_header_size, 16 * 1024);
    assert_eq!(h.max_headers, 100);
    assert_eq!(h.max_uri, 8 * 1024);
    assert_eq!(h.keepalive_requests, 1000);
    assert_eq!(h.keepalive_timeout, Duration::from_secs(60));

    for (line, message) in [
        ("max_headers = 0", "max_headers"),
        ("max_headers = 300", "max_headers"),
        ("max_header_size = \"2MiB\"", "max_header_size"),
        ("max_uri = \"0\"", "max_uri"),
        ("keepalive_requests = 0", "keepalive_requests"),
        ("keepalive_timeout = \"soon\"", "duration"),
        ("max_uri = \"8 parsecs\"", "size"),
    ] {
        let text = format!("[server]\nthreads = 1\n{line}\n\n{min}");
        let e = check(&text).expect_err(line);
        assert_eq!(e.position.map(|p| p.0), Some(3), "{line}: {e}");
        assert!(e.message.contains(message), "{line}: {e}");
    }
}

both_protocols!(limits_are_configurable_and_answer_json,);
