//! The engine's one error type. How each kind reaches Python is decided in one place, the
//! `From<Error> for PyErr` conversion in `src/py/mod.rs`.

use std::fmt;

/// What went wrong, by who can act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// An argument is invalid: a name, a label, buckets, states, a mode, an exemplar, the
    /// number of label values, a file mode. The caller's to fix (prometheus_client raises
    /// `ValueError` for these).
    Invalid(String),
    /// A sample name is already held in a registry (prometheus_client's `DuplicateTimeseries`).
    Duplicate(String),
    /// The shared store cannot be used: its directory, a lock, a file, disk space.
    Store(String),
    /// A store file cannot be read: truncated, corrupt, foreign, of another version.
    Corrupt(String),
}

/// A result whose error is the engine's.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::Invalid(m) | Error::Duplicate(m) | Error::Store(m) | Error::Corrupt(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Store(e.to_string())
    }
}
