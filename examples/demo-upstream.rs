//! The demo app `make run` puts behind the sidecar: answers every request with JSON showing
//! what it received, so the injected identity headers are visible.
//!
//! Usage: cargo run --example demo-upstream [PORT]   (default 3000)

#[path = "../tests/it/common/echo.rs"]
mod echo;

fn main() {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let upstream = echo::EchoUpstream::start_on(port);
    println!("demo upstream listening on 127.0.0.1:{}", upstream.port);
    loop {
        std::thread::park();
    }
}
