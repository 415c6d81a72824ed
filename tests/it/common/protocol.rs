//! The client protocol a test speaks to the proxy listener (SPEC §13.3: every feature works
//! the same over HTTP/2), and `both_protocols!`, which runs one test body over each.
//!
//! ```ignore
//! fn forwards(proto: Protocol) {
//!     let sc = TestSidecar::with_upstream(&up, "").over(proto);
//!     sc.proxy("GET", "/x", &[], b"");
//! }
//! both_protocols!(forwards);
//! ```
//! makes the tests `forwards::h1` and `forwards::h2c` (`cargo test --test it -- ::h2c` runs
//! every h2 case); the test fn itself stays plain code. Upstream traffic stays HTTP/1.1.

#![allow(dead_code)]

use super::client::{self, Response};
use super::h2c;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 through the raw client (`client.rs`).
    H1,
    /// HTTP/2 over cleartext with prior knowledge (`h2c.rs`).
    H2c,
}

impl Protocol {
    /// One request on a fresh connection.
    pub fn request(
        self,
        port: u16,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        match self {
            Protocol::H1 => client::request(port, method, path, headers, body),
            Protocol::H2c => h2c::request(port, method, path, headers, body),
        }
    }

    /// The access log's `protocol` for requests over it.
    pub fn log_name(self) -> &'static str {
        match self {
            Protocol::H1 => "HTTP/1.1",
            Protocol::H2c => "HTTP/2",
        }
    }

    pub fn is_h2(self) -> bool {
        self == Protocol::H2c
    }
}

/// A connection to the proxy listener that may carry several requests, over either protocol.
pub enum AnyConn {
    H1(client::Conn),
    H2(h2c::H2Conn),
}

impl AnyConn {
    pub fn open(protocol: Protocol, port: u16) -> AnyConn {
        match protocol {
            Protocol::H1 => AnyConn::H1(client::Conn::open(port)),
            Protocol::H2c => AnyConn::H2(h2c::H2Conn::open(port)),
        }
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        match self {
            AnyConn::H1(c) => c.send(method, path, headers, body),
            AnyConn::H2(c) => c.send(method, path, headers, body),
        }
    }

    /// Whether the server said it closes (h1 `Connection: close`) or closed (h2).
    pub fn closed(&mut self) -> bool {
        match self {
            AnyConn::H1(c) => c.closed,
            AnyConn::H2(c) => c.closed_within(std::time::Duration::from_millis(50)),
        }
    }
}

/// `both_protocols!(a, b)`: for each test fn `a(proto: Protocol)`, the tests `a::h1` and
/// `a::h2c` calling it.
macro_rules! both_protocols {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn h1() {
                super::$name($crate::common::Protocol::H1)
            }

            #[test]
            fn h2c() {
                super::$name($crate::common::Protocol::H2c)
            }
        }
    )+};
}

pub(crate) use both_protocols;
