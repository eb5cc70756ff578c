//! Config errors: every one is `FILE:LINE:COL: message`, positions 1-based.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

/// One problem in a config file, pointing at the offending YAML node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file, as given on the command line.
    pub file: PathBuf,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// What is wrong; never contains secrets (tokens, keys, assertions).
    pub message: String,
}

impl ConfigError {
    /// An error at `location`; unknown locations (0:0) are reported at 1:1 so the format holds.
    pub fn at(file: &Path, location: Location, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: position(location.line()),
            col: position(location.column()),
            message: message.into(),
        }
    }

    /// An error about the file as a whole (unreadable, too large): reported at 1:1.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: 1,
            col: 1,
            message: message.into(),
        }
    }
}

/// A 1-based position; 0 (unknown) becomes 1, and absurdly large values saturate.
fn position(p: u64) -> u32 {
    u32::try_from(p.max(1)).unwrap_or(u32::MAX)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in one config file, in file order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in file order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    /// One `FILE:LINE:COL: message` per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_file_line_col_message() {
        let e = ConfigError {
            file: "routes.yaml".into(),
            line: 3,
            col: 7,
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "routes.yaml:3:7: bad");
        let all = ConfigErrors(vec![e.clone(), e]);
        assert_eq!(
            all.to_string(),
            "routes.yaml:3:7: bad\nroutes.yaml:3:7: bad"
        );
    }

    #[test]
    fn unknown_location_becomes_one_one() {
        let e = ConfigError::at(Path::new("f"), Location::UNKNOWN, "m");
        assert_eq!(e.to_string(), "f:1:1: m");
    }
}
