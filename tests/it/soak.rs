//! Issue 8: a bounded mixed soak against the real binary — several client threads open,
//! forward, lock, release and close sessions of every flavour — ending with zero 5xx and
//! resident memory back within 10% of its plateau. `make test` runs a short version
//! (SOAK_SECONDS, default 6); `make soak` runs 60 seconds.

use crate::common;

use common::process::SidecarProcess;
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const THREADS: usize = 4;

fn extra() -> String {
    "[flavors.spreadsheetweb]\n[flavors.knowledge_center]\n[flavors.tessitura]\n[flavors.voucherify]\n\
     [[flavors.voucherify.limits]]\ncode = \"SOAK\"\nquantity = 3\n\
     [sessions]\nidle_timeout = \"3s\"\n"
        .to_string()
}

/// One round of mixed traffic; returns the statuses of every answer.
fn round(port: u16, n: u64) -> Vec<(String, u16)> {
    let web = bearer(WEB_TOKEN);
    let auth: &[(&str, &str)] = &[
        ("Authorization", &web),
        ("Content-Type", "application/json"),
    ];
    let mut out = Vec::new();
    let mut note = |what: &str, r: &Response| out.push((what.to_string(), r.status));

    // SpreadsheetWEB: open, use through the body locator, close.
    let r = request(
        port,
        "POST",
        "/Api/Applications/OpenDedicatedSession",
        auth,
        json!({"ApplicationKey": APP_KEY}).to_string().as_bytes(),
    );
    note("swb open", &r);
    let sid = r.json()["SessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    note(
        "swb forward",
        &request(
            port,
            "POST",
            "/Api/Applications/GetResult",
            auth,
            json!({"SessionId": sid}).to_string().as_bytes(),
        ),
    );
    note(
        "swb close",
        &request(
            port,
            "POST",
            "/Api/Applications/CloseDedicatedSession",
            auth,
            json!({"ApplicationKey": APP_KEY, "SessionId": sid})
                .to_string()
                .as_bytes(),
        ),
    );

    // Knowledge Center: create with identity, read, forward by query; left to expire.
    let r = request(
        port,
        "PUT",
        "/gks-server/v1/sessions/new",
        &[
            ("Authorization", &web),
            ("gkc_customerId", &format!("soak-{n}")),
        ],
        b"",
    );
    note("kc new", &r);
    let kc = r.json()["sessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    note(
        "kc get",
        &request(
            port,
            "GET",
            &format!("/gks-server/v1/sessions/{kc}"),
            &[("Authorization", &web)],
            b"",
        ),
    );
    note(
        "kc forward",
        &get(
            port,
            &format!("/gks-server/v1/kbs/x/search?sessionId={kc}"),
            &[],
        ),
    );
    note(
        "forward header",
        &get(port, "/soak/plain", &[("X-Session-Id", &kc)]),
    );

    // Tessitura: create, transfer.
    let r = request(port, "POST", "/Web/Session", auth, b"{}");
    note("tess create", &r);
    let key = r.json()["SessionKey"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    note(
        "tess transfer",
        &request(
            port,
            "POST",
            "/api/TransferSession",
            auth,
            json!({"SessionKey": key}).to_string().as_bytes(),
        ),
    );

    // Voucherify: lock a limited code (may be refused: 400), release it.
    let lock_key = format!("ssn_soak{n:028}");
    let body = json!({"redeemables": [{"object": "voucher", "id": "SOAK"}], "session": {"type": "LOCK", "key": lock_key, "ttl": 2, "ttl_unit": "SECONDS"}});
    note(
        "vf validate",
        &request(
            port,
            "POST",
            "/v1/validations",
            auth,
            body.to_string().as_bytes(),
        ),
    );
    note(
        "vf release",
        &request(
            port,
            "DELETE",
            &format!("/v1/vouchers/SOAK/sessions/{lock_key}"),
            &[("Authorization", &web)],
            b"",
        ),
    );
    out
}

#[test]
fn mixed_soak_no_5xx_and_memory_returns_to_plateau() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let up = EchoUpstream::start();
    let ports = Ports::new(up.port);
    let p = SidecarProcess::start_fresh(ports, &extra(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (stop, counter) = (stop.clone(), counter.clone());
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                let mut answers = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    for (what, status) in round(ports.proxy, n) {
                        answers += 1;
                        if status >= 500 {
                            bad.push(format!("{what}: {status}"));
                        }
                    }
                }
                (answers, bad)
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(250));
        samples.push(p.rss_kib());
    }
    stop.store(true, Ordering::SeqCst);
    let (mut answers, mut bad) = (0, Vec::new());
    for w in workers {
        let (a, b) = w.join().unwrap();
        answers += a;
        bad.extend(b);
    }
    assert!(
        bad.is_empty(),
        "5xx answers during the soak: {:?}",
        &bad[..bad.len().min(10)]
    );
    assert!(answers > 100, "the soak hardly ran ({answers} answers)");

    // Plateau: the median RSS of the second half of the run. After the load stops and idle
    // sessions expire, memory must not have grown past it.
    let half = &mut samples[samples.len() / 2..].to_vec();
    half.sort_unstable();
    let plateau = half[half.len() / 2];
    std::thread::sleep(Duration::from_secs(4));
    let after = p.rss_kib();
    eprintln!(
        "soak: {answers} answers in {seconds}s, RSS plateau {plateau} KiB, after {after} KiB"
    );
    assert!(
        after as f64 <= plateau as f64 * 1.10,
        "RSS {after} KiB is more than 10% over the plateau {plateau} KiB"
    );
    let log = p.stop();
    assert!(
        !log.contains("panicked"),
        "the sidecar panicked during the soak"
    );
}
