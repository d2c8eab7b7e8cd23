//! `launcher::Error` and its exit codes (ARCHITECTURE §3).

use std::path::PathBuf;

use convtt_core::exit;

/// Errors of the launcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the shared library (configuration, formats).
    #[error(transparent)]
    Common(#[from] convtt_core::Error),
    /// A wrong command line, environment or allocation (never retried: exit 2).
    #[error("{0}")]
    Usage(String),
    /// A file or socket operation failed.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
    /// A worker could not be started.
    #[error("cannot start worker rank {rank} ({}): {err}", program.display())]
    Spawn {
        /// Its rank.
        rank: u32,
        /// The worker binary.
        program: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
    /// The job failed and is not restarted; `detail` quotes the failing worker's last stderr.
    #[error("{reason}{detail}")]
    GaveUp {
        /// The launcher's exit code.
        code: i32,
        /// Why.
        reason: String,
        /// The root failure and its stderr tail (may be empty).
        detail: String,
    },
    /// The run was preempted after the workers were asked to checkpoint (exit 4: requeue).
    #[error("preempted: {0}")]
    Preempted(String),
    /// Multi-node coordination over MPI failed.
    #[error("MPI: {0}")]
    Mpi(String),
    /// Something inside the launcher failed that no input explains (a supervising task that
    /// panicked, a signal handler that cannot be installed): exit 1, not a usage error.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Common(convtt_core::Error::Config(_))
            | Error::Common(convtt_core::Error::Io { .. }) => exit::CONFIG,
            Error::Common(_) => 1,
            Error::Usage(_) => exit::CONFIG,
            Error::Io { .. } => 1,
            Error::Spawn { err, .. } if err.kind() == std::io::ErrorKind::NotFound => exit::CONFIG,
            Error::Spawn { .. } => 1,
            Error::GaveUp { code, .. } => *code,
            Error::Preempted(_) => exit::PREEMPTED,
            Error::Mpi(_) => exit::PEER,
            Error::Internal(_) => 1,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
