//! SPEC §6: WebSocket upgrades pass through the sidecar to the app.

use crate::common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// An upstream that accepts one WebSocket upgrade, records the request head, and echoes bytes.
fn upgrade_upstream() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        tx.send(head).unwrap();
        let mut w = conn;
        w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n").unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = reader.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).unwrap();
        }
    });
    (port, rx)
}

#[test]
fn websocket_upgrade_passes_through_with_identity() {
    let (port, heads) = upgrade_upstream();
    let ports = Ports::new(port);
    let sc = TestSidecar::start(ports, &base_config(&ports, ""));
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        br#"{"customer_id":"ws-cust"}"#,
    );
    let sid = r.json()["id"].as_str().unwrap().to_string();

    let mut s = TcpStream::connect(("127.0.0.1", ports.proxy)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Session-Id: {sid}\r\nX-Customer-Id: forged\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    s.write_all(b"ping-bytes").unwrap();
    let mut echoed = [0u8; 10];
    reader.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping-bytes");
    let head = heads.recv().unwrap().to_ascii_lowercase();
    assert!(head.contains("x-customer-id: ws-cust"), "{head}");
    assert!(!head.contains("forged"));
}
