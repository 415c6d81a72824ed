//! The config file (SPEC §9), as `check-config` reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        session_sidecar::fuzz_api::config_file(text);
    }
});
