//! SpreadsheetWEB session bodies (SPEC §4.1).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| session_sidecar::fuzz_api::spreadsheetweb_body(data));
