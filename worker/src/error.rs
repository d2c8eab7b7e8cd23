//! `worker::Error` and the documented mapping from errors to exit codes (ARCHITECTURE §3).

use std::path::PathBuf;

pub use convtt_core::exit;

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
    /// A peer or collective failed (retried by the launcher).
    #[error("{0}")]
    Peer(String),
    /// A peer died and the launcher is replacing it: the step in flight is abandoned and the
    /// trainer stands by at its recovery point (exit 3 where it cannot).
    #[error("{0}")]
    PeerLost(String),
    /// The run was preempted after committing a checkpoint (requeue).
    #[error("preempted after committing the checkpoint of step {0}")]
    Preempted(u64),
    /// Something a requested run needs is not available on this machine.
    #[error("{0}")]
    Unavailable(String),
    /// A file could not be read or written.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, so not also a `source`).
        err: std::io::Error,
    },
    /// An error from libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Something inside the worker failed that no input explains (a signal handler that cannot
    /// be installed, a helper thread that panicked): exit 1, retried by the launcher.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }

    /// A file system that is full, over quota or read-only (ENOSPC, EDQUOT, EROFS) made this
    /// happen — whether it surfaced as an OS error or inside an HDF5 error's text. Retrying
    /// cannot help until someone frees space: exit 6 (resource unavailable), never retried.
    pub fn storage_full(&self) -> bool {
        use convtt_common::Error::Core;
        use convtt_core::Error as CoreError;
        match self {
            Error::Io { err, .. } | Error::Common(Core(CoreError::Io { err, .. })) => {
                storage_errno(err)
            }
            Error::Data { msg, .. }
            | Error::Common(Core(CoreError::Format { msg, .. }))
            | Error::Common(convtt_common::Error::Format { msg, .. }) => storage_text(msg),
            _ => false,
        }
    }

    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        use convtt_common::Error::Core;
        use convtt_core::Error as CoreError;
        if self.storage_full() {
            return exit::UNAVAILABLE;
        }
        match self {
            Error::Common(Core(CoreError::Config(_))) | Error::Usage(_) => exit::CONFIG,
            Error::Common(Core(CoreError::Io { .. }))
            | Error::Common(Core(CoreError::Format { .. }))
            | Error::Common(convtt_common::Error::Format { .. })
            | Error::Data { .. } => exit::DATA,
            Error::Unavailable(_) => exit::UNAVAILABLE,
            Error::Peer(_) | Error::PeerLost(_) => exit::PEER,
            Error::Preempted(_) => exit::PREEMPTED,
            Error::Common(_) | Error::Io { .. } | Error::Torch(_) | Error::Internal(_) => 1,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// ENOSPC, EDQUOT or EROFS.
pub fn storage_errno(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)
    )
}

/// The same in an error message (HDF5 reports `errno = 28, error message = 'No space left on
/// device'`).
fn storage_text(msg: &str) -> bool {
    [libc::ENOSPC, libc::EDQUOT, libc::EROFS]
        .iter()
        .any(|n| msg.contains(&format!("errno = {n},")))
        || [
            "No space left on device",
            "Disk quota exceeded",
            "Read-only file system",
        ]
        .iter()
        .any(|t| msg.contains(t))
}

impl From<convtt_core::Error> for Error {
    fn from(e: convtt_core::Error) -> Self {
        Error::Common(e.into())
    }
}
