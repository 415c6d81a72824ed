#![allow(dead_code)] // each target uses part of it
//! Shared by the targets: an input is several fields separated by 0x1E (ASCII record
//! separator), so seeds stay readable text.

/// The first `n` fields of `data`; missing ones are empty.
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0x1e).collect();
    out.resize(n, &[]);
    out
}

pub fn text(field: &[u8]) -> &str {
    std::str::from_utf8(field).unwrap_or("")
}

/// Field names (lower-case, trimmed) of a request head, as a lenient reader would see them:
/// the head ends at the first empty line (`\n` or `\r\n`).
pub fn head_field_names(head: &[u8]) -> Vec<Vec<u8>> {
    head.split(|b| *b == b'\n')
        .skip(1)
        .take_while(|line| !line.is_empty() && *line != b"\r")
        .filter_map(|line| line.iter().position(|b| *b == b':').map(|i| &line[..i]))
        .map(|name| name.trim_ascii().to_ascii_lowercase())
        .collect()
}

/// The framing oracle: a head the sidecar accepted never has both framings, nor either twice.
pub fn assert_unambiguous(head: &[u8]) {
    let names = head_field_names(head);
    let count = |n: &[u8]| names.iter().filter(|x| x.as_slice() == n).count();
    let (cl, te) = (count(b"content-length"), count(b"transfer-encoding"));
    assert!(
        cl <= 1 && te <= 1 && cl + te <= 1,
        "accepted ambiguous framing: {names:?}"
    );
}

/// The credential checker with the test key set (tests/fixtures/jwt/public-jwks.json), built
/// once per fuzzing process in a temp dir of its own.
pub fn credentials() -> &'static session_sidecar::fuzz_api::Credentials {
    static CREDENTIALS: std::sync::OnceLock<session_sidecar::fuzz_api::Credentials> =
        std::sync::OnceLock::new();
    CREDENTIALS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sidecar-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("jwks.json"),
            include_str!("../../tests/fixtures/jwt/public-jwks.json"),
        )
        .expect("jwks");
        session_sidecar::fuzz_api::Credentials::new(&dir)
    })
}
