//! `common::Error`: everything the shared library can fail with.

use std::path::{Path, PathBuf};

use crate::config::ConfigErrors;

/// Errors of the shared library. Each names the file or field involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
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
    /// A tensor or argument has the wrong shape.
    #[error("shape error: {0}")]
    Shape(String),
    /// An error from libtorch.
    #[cfg(feature = "model")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_owned(),
            source,
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
