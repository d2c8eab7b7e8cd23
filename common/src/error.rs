//! `common::Error`: what the model half can fail with, on top of [`convtt_core::Error`].

use std::path::{Path, PathBuf};

/// Errors of the shared library. Each names the file or tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration or I/O (from `convtt-core`).
    #[error(transparent)]
    Core(#[from] convtt_core::Error),
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
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Core(convtt_core::Error::io(path, source))
    }

    /// A format error in `path`.
    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_owned(),
            msg: msg.into(),
        }
    }
}

impl From<convtt_core::config::ConfigErrors> for Error {
    fn from(e: convtt_core::config::ConfigErrors) -> Self {
        Error::Core(e.into())
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
