//! A blocking HTTP/2 client over cleartext (h2c, prior knowledge) on the `h2` crate, the
//! HTTP/2 implementation pingora's server is built on, so requests are framed as a real h2
//! client frames them: HPACK, lower-case names, `:authority` instead of `Host`.
//!
//! Like the HTTP/1.1 client in `client.rs` it sends `content-length` for a body (curl and
//! browsers do); `H2Conn::send_unsized` sends a body as DATA frames without one, which h2
//! allows and a server must read to the end of the stream.

#![allow(dead_code)]

use super::client::Response;
use bytes::Bytes;
use h2::client::SendRequest;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Names HTTP/2 forbids in a request (RFC 9113 §8.2.2): the `h2` crate refuses to send them.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// One h2 connection: requests on it are streams of the same TCP connection.
pub struct H2Conn {
    rt: Runtime,
    port: u16,
    client: SendRequest<Bytes>,
    /// The connection task: finishes when the server closes the connection.
    driver: JoinHandle<()>,
}

impl H2Conn {
    /// Connects to 127.0.0.1:`port` and sends the h2 connection preface (prior knowledge).
    pub fn open(port: u16) -> H2Conn {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (client, driver) = rt.block_on(async {
            let tcp = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            (client, driver)
        });
        H2Conn {
            rt,
            port,
            client,
            driver,
        }
    }

    /// A request with `content-length` when it has a body (or is a POST/PUT/PATCH).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let has_len = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        let len = body.len().to_string();
        let mut all = headers.to_vec();
        if !has_len && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
            all.push(("content-length", &len));
        }
        let chunks: Vec<&[u8]> = if body.is_empty() { vec![] } else { vec![body] };
        self.try_send(method, path, &all, &chunks)
            .unwrap_or_else(|e| panic!("h2 {method} {path}: {e}"))
    }

    /// A request whose body is sent as `chunks` (one DATA frame each, up to the frame size)
    /// without `content-length`.
    pub fn send_unsized(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
    ) -> Response {
        self.try_send(method, path, headers, chunks)
            .unwrap_or_else(|e| panic!("h2 {method} {path}: {e}"))
    }

    /// `send_unsized`, with the stream's error (a reset, a refused header list) as `Err`.
    pub fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
    ) -> Result<Response, String> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port));
        for (k, v) in headers {
            assert!(
                !CONNECTION_SPECIFIC.contains(&k.to_ascii_lowercase().as_str()),
                "{k} is not an HTTP/2 header: leave it out of the h2 case"
            );
            req = req.header(*k, *v);
        }
        let req = req.body(()).map_err(|e| e.to_string())?;
        let chunks: Vec<Bytes> = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
        let client = self.client.clone();
        self.rt.block_on(async move {
            let mut client = client.ready().await.map_err(|e| e.to_string())?;
            let (answer, mut stream) = client
                .send_request(req, chunks.is_empty())
                .map_err(|e| e.to_string())?;
            let last = chunks.len().saturating_sub(1);
            for (i, chunk) in chunks.into_iter().enumerate() {
                stream
                    .send_data(chunk, i == last)
                    .map_err(|e| e.to_string())?;
            }
            let answer = tokio::time::timeout(Duration::from_secs(30), answer)
                .await
                .map_err(|_| "no answer in 30 s".to_string())?
                .map_err(|e| e.to_string())?;
            let (parts, mut recv) = answer.into_parts();
            let mut body = Vec::new();
            while let Some(data) = recv.data().await {
                let data = data.map_err(|e| e.to_string())?;
                let _ = recv.flow_control().release_capacity(data.len());
                body.extend_from_slice(&data);
            }
            let headers = parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            Ok(Response {
                status: parts.status.as_u16(),
                headers,
                body,
            })
        })
    }

    /// Whether the server closes this connection within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let driver = &mut self.driver;
        self.rt
            .block_on(async { tokio::time::timeout(within, driver).await.is_ok() })
    }
}

/// One request on a fresh h2c connection.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    H2Conn::open(port).send(method, path, headers, body)
}
