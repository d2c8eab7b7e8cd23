//! convtt's libtorch-free core: configuration and its validation, on-disk format types, and
//! logging setup. The launcher depends on this crate alone so it never links libtorch;
//! `convtt-common` (the model, CTTD and metrics) re-exports it.
//!
//! Why a crate and not a cargo feature of `convtt-common`: cargo unifies features across a
//! workspace build, so with a feature the launcher built by `cargo build` would link libtorch.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod env;
mod error;
pub mod exit;
pub mod fsutil;
pub mod metric;
pub mod npy;
pub mod plot;
pub mod protocol;
pub mod run_dir;
pub mod summary;
pub mod sweep;
pub mod telemetry;

pub use env::{WorkerDevice, WorkerEnv};
pub use error::{Error, Result};
pub use protocol::{AgentClient, AgentError, Progress};
pub use run_dir::{RunDir, RunSummary};
