//! `launcher::Error` and its exit codes (ARCHITECTURE §3).

/// Errors of the launcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the shared library (configuration, formats).
    #[error(transparent)]
    Common(#[from] convtt_core::Error),
}

impl Error {
    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Common(convtt_core::Error::Config(_))
            | Error::Common(convtt_core::Error::Io { .. }) => 2,
            Error::Common(_) => 1,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
