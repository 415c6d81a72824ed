//! Bearer JWTs (SPEC §5): header JSON 0x1E claims JSON 0x1E signature, each base64url-encoded
//! into a token (so the fuzzer works on the JSON, not on base64), and the raw input as a token.
//! No key signs anything here, so no token may pass.
#![no_main]

#[path = "fields.rs"]
mod fields;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let credentials = fields::credentials();
    let f = fields::fields(data, 3);
    let token = format!(
        "Bearer {}.{}.{}",
        URL_SAFE_NO_PAD.encode(f[0]),
        URL_SAFE_NO_PAD.encode(f[1]),
        URL_SAFE_NO_PAD.encode(f[2])
    );
    assert!(!credentials.check(&[("authorization", token.as_bytes())]));
    let mut raw = b"Bearer ".to_vec();
    raw.extend_from_slice(data);
    assert!(!credentials.check(&[("authorization", &raw)]));
});
