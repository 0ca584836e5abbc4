//! The engine's one error type. How each kind reaches Python is decided in one place, the
//! `From<Error> for PyErr` conversion in `src/py/mod.rs`.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, by who can act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// An argument is invalid: a name, a label, buckets, states, a mode, an exemplar, the
    /// number of label values, a file mode. The caller's to fix (prometheus_client raises
    /// `ValueError` for these).
    Invalid(String),
    /// A sample name is already held in a registry (prometheus_client's `DuplicateTimeseries`).
    Duplicate(String),
    /// The shared store cannot be used: its directory, a lock, a file, disk space. An I/O
    /// fault (Python: `StoreError`, an `OSError`).
    Store {
        /// The directory or file concerned.
        path: PathBuf,
        /// What went wrong, without the path.
        message: String,
    },
    /// A store file cannot be read: truncated, corrupt, foreign, of another version (Python:
    /// `StoreError`, an `OSError`).
    Corrupt {
        /// The file concerned; empty while the error is about bytes not yet tied to a file.
        path: PathBuf,
        /// What is wrong, without the path.
        message: String,
    },
}

/// A result whose error is the engine's.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A store fault about `path`.
    pub fn store(path: impl AsRef<Path>, message: impl Into<String>) -> Error {
        Error::Store { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    /// Unreadable store data, not yet tied to a file (see [`Error::at`]).
    pub fn corrupt(message: impl Into<String>) -> Error {
        Error::Corrupt { path: PathBuf::new(), message: message.into() }
    }

    /// The same error, about `path` if it names no path yet.
    pub fn at(self, at: impl AsRef<Path>) -> Error {
        match self {
            Error::Store { path, message } if path.as_os_str().is_empty() => Error::store(at, message),
            Error::Corrupt { path, message } if path.as_os_str().is_empty() => {
                Error::Corrupt { path: at.as_ref().to_path_buf(), message }
            }
            other => other,
        }
    }

    /// The message, without the kind or the path.
    pub fn message(&self) -> &str {
        match self {
            Error::Invalid(m) | Error::Duplicate(m) => m,
            Error::Store { message, .. } | Error::Corrupt { message, .. } => message,
        }
    }

    /// The file or directory a store error is about (None for other kinds, or no path).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Store { path, .. } | Error::Corrupt { path, .. } if !path.as_os_str().is_empty() => {
                Some(path)
            }
            _ => None,
        }
    }
}

/// The message, preceded by the path for store errors (`/run/metrics/dir.lock: cannot open: ...`).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path() {
            Some(path) => write!(f, "{}: {}", path.display(), self.message()),
            None => f.write_str(self.message()),
        }
    }
}

impl std::error::Error for Error {}
