//! A real HTTP/1.1 upstream for tests and the `make run` demo: answers every request with
//! 200 JSON describing what it received, and records it.
//!
//! Controls, sent as request headers: `X-Echo-Status: N` sets the status, `X-Echo-Sleep: S`
//! (seconds, fractional) delays the answer, `X-Echo-Assert-Customer: V` adds the response
//! header `X-Sidecar-Set-Customer-Id: V`, `X-Echo-Body: text` replaces the body (sent as
//! `application/json`).
//!
//! `start_answering` puts a fake app in front of the echo: its `Answerer` may answer a request
//! itself (as the real API would), the echo answers the rest.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An answer of a fake app: status, extra headers, JSON body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// A fake app: answers the requests it knows, `None` for the echo to answer.
pub type Answerer = Arc<dyn Fn(&Received) -> Option<Answer> + Send + Sync>;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    /// (name as sent, value), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// Every value of a header, case-insensitively.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    fn describe(&self) -> Value {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in &self.headers {
            headers
                .entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.clone());
        }
        json!({
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
        })
    }
}

pub struct EchoUpstream {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    /// Every request line, recorded as soon as it is read (before the body, which may never
    /// come): what reached the app even when the request did not complete.
    request_lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    /// Open connections, closed when the upstream stops (so pooled connections die too).
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl EchoUpstream {
    /// Starts on a free loopback port (or `port` when non-zero).
    pub fn start_on(port: u16) -> EchoUpstream {
        Self::start_with(port, None)
    }

    /// Starts on a free loopback port with a fake app answering what it knows.
    pub fn start_answering(answerer: Answerer) -> EchoUpstream {
        Self::start_with(0, Some(answerer))
    }

    fn start_with(port: u16, answerer: Option<Answerer>) -> EchoUpstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind echo upstream");
        let port = listener.local_addr().expect("local addr").port();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let request_lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (rec, lines, stop2, conns2) = (
            received.clone(),
            request_lines.clone(),
            stop.clone(),
            conns.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    conns2.lock().unwrap().push(c);
                }
                let (rec, lines, answerer) = (rec.clone(), lines.clone(), answerer.clone());
                std::thread::spawn(move || serve(conn, rec, lines, answerer));
            }
        });
        EchoUpstream {
            port,
            received,
            request_lines,
            stop,
            conns,
        }
    }

    pub fn start() -> EchoUpstream {
        Self::start_on(0)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every request line read so far, complete requests or not.
    pub fn request_lines(&self) -> Vec<String> {
        self.request_lines.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn received_at(&self, prefix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn serve(
    conn: TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    request_lines: Arc<Mutex<Vec<String>>>,
    answerer: Option<Answerer>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        request_lines
            .lock()
            .unwrap()
            .push(line.trim_end().to_string());
        let mut parts = line.trim_end().splitn(3, ' ');
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let rec = Received {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers: headers.clone(),
            body,
        };
        received.lock().unwrap().push(rec.clone());
        if let Some(s) = get("x-echo-sleep").and_then(|v| v.parse::<f64>().ok()) {
            std::thread::sleep(Duration::from_secs_f64(s.clamp(0.0, 30.0)));
        }
        let mut status: u16 = get("x-echo-status")
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let mut body = match get("x-echo-body") {
            Some(b) => b.into_bytes(),
            None => serde_json::to_vec(&rec.describe()).unwrap_or_default(),
        };
        let mut extra_headers = Vec::new();
        if let Some(answer) = answerer.as_ref().and_then(|a| a(&rec)) {
            status = answer.status;
            body = serde_json::to_vec(&answer.body).unwrap_or_default();
            extra_headers = answer.headers;
        }
        let mut head = format!(
            "HTTP/1.1 {status} Echo\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in extra_headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(c) = get("x-echo-assert-customer") {
            head.push_str(&format!("X-Sidecar-Set-Customer-Id: {c}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
            return;
        }
        if get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}
