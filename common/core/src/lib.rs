//! convtt's libtorch-free core: everything the launcher, the sweep tool and the worker must
//! agree on. The launcher depends on this crate alone so it never links libtorch;
//! `convtt-common` (the model, CTTD and metrics) re-exports it. Map (docs/architecture.md has
//! the whole system):
//!
//! | module | holds |
//! |---|---|
//! | [`config`] | the run configuration, its defaults and validation (`ValidConfig`), sweeps' `[sweep]` |
//! | [`metric`] | every reported metric: key, unit, which direction is better |
//! | [`run_dir`] | a run directory's files ([`RunDir`]) and `summary.toml` ([`RunSummary`]) |
//! | [`checkpoint`] | checkpoint manifests, rank state files, the retention policy |
//! | [`dataset`] | `dataset.toml`: splits, shards, labels |
//! | [`env`](mod@env) | the worker environment contract (`CONVTT_*` variables) |
//! | [`protocol`] | the agent channel between a worker and its launcher (messages, codec, client) |
//! | [`exit`] | exit codes |
//! | [`fault`] | fault injection (`CONVTT_FAULT`) for rehearsing recovery |
//! | [`sweep`] | sweep plans: trial ids, parameters and FLOPs |
//! | [`summary`] | parameter, FLOP and activation-memory accounting of a model config |
//! | [`npy`], [`fsutil`], [`plot`], [`telemetry`] | `.npy` codec, atomic writes and checksums, plot helpers, logging |
//! | [`tensorboard`] | TensorBoard event files (TFRecord framing, `Event` protocol buffers) |
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
pub mod fault;
pub mod fsutil;
pub mod metric;
pub mod npy;
pub mod plot;
pub mod protocol;
pub mod run_dir;
pub mod summary;
pub mod sweep;
pub mod telemetry;
pub mod tensorboard;

pub use env::{WorkerDevice, WorkerEnv};
pub use error::{Error, Result};
pub use protocol::{AgentClient, AgentError, Progress};
pub use run_dir::{RunDir, RunSummary};
