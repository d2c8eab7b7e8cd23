//! `convtt_core::Error`: what configuration and format handling can fail with.

use std::path::{Path, PathBuf};

use crate::config::ConfigErrors;

/// Errors of the shared library. Each names the file or field involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, so not also a `source`).
        err: std::io::Error,
    },
    /// The configuration has one or more problems (all of them are listed).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A file's content does not have the expected format or shape.
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        msg: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_owned(),
            err: source,
        }
    }

    /// A format error in `path`.
    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_owned(),
            msg: msg.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
