//! `worker::Error` and the documented mapping from errors to exit codes (ARCHITECTURE §3).

use std::path::PathBuf;

/// Exit codes shared by `convtt-worker`, `convtt-data` and `convtt-launch` (ARCHITECTURE §3).
pub mod exit {
    /// Finished.
    pub const OK: i32 = 0;
    /// Configuration or usage error: never retried.
    pub const CONFIG: i32 = 2;
    /// Peer or collective failure: retried.
    pub const PEER: i32 = 3;
    /// Preempted after a committed checkpoint: requeue.
    pub const PREEMPTED: i32 = 4;
    /// Data error (bad shard): never retried.
    pub const DATA: i32 = 5;
    /// A missing runtime requirement (e.g. `doctor --require-gpu` without a usable GPU).
    pub const UNAVAILABLE: i32 = 6;
}

/// Errors of the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the shared library (configuration, formats, libtorch).
    #[error(transparent)]
    Common(#[from] convtt_common::Error),
    /// A command-line argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// A dataset file is missing, truncated or corrupt.
    #[error("{}: {msg}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Something a requested run needs is not available on this machine.
    #[error("{0}")]
    Unavailable(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An error from libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Common(convtt_common::Error::Config(_)) | Error::Usage(_) => exit::CONFIG,
            Error::Common(convtt_common::Error::Io { .. })
            | Error::Common(convtt_common::Error::Format { .. })
            | Error::Data { .. } => exit::DATA,
            Error::Unavailable(_) => exit::UNAVAILABLE,
            Error::Common(_) | Error::Io { .. } | Error::Torch(_) => 1,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
