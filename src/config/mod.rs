//! Configuration (SPEC §9) in three tiers: the TOML file format (`file`, serde with
//! `deny_unknown_fields`), its units (`units`), and the validated runtime config (`runtime`),
//! the only thing the rest of the sidecar sees. Every error names `FILE:LINE:COL`, for
//! `check-config` and for a refused reload alike; keep new settings going through all three.

pub mod address;
pub mod file;
pub mod pem;
mod redis;
pub mod runtime;
pub mod tls;
pub mod units;

pub use address::Resolver;
pub use runtime::*;

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration error, reported as `FILE:LINE:COL: message` when a position is known.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the error can be tied to a place in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                line,
                col,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        position: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Parses and validates config text; `path` names the file in errors and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_with(path, text, Resolver::System)
}

/// [`parse`] with the host-name resolution chosen by the caller.
pub fn parse_with(path: &Path, text: &str, resolver: Resolver) -> Result<Config, ConfigError> {
    let file: file::FileConfig = toml::from_str(text).map_err(|e| {
        let position = e.span().map(|span| line_col(text, span.start));
        ConfigError {
            file: path.to_path_buf(),
            position,
            message: e.message().trim().to_string(),
        }
    })?;
    runtime::validate(file, path, resolver).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        position: e.span.map(|span| line_col(text, span.start)),
        message: e.message,
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
        assert_eq!(line_col(text, 999), (3, 1));
    }
}
