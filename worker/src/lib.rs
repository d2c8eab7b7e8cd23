//! The convtt worker: one process per GPU (or per CPU group) that trains, evaluates and inspects
//! models. `main.rs` is a thin shim over [`run`]; exit codes are documented in [`exit`].
//!
//! | module | holds |
//! |---|---|
//! | [`runtime`] | what every command runs in: the config beside device, rank, collectives, run directory |
//! | [`train`] | the [`train::Trainer`] and its step, validation and checkpoint save/restore |
//! | [`eval`] | `eval`, `predict`, `export`, `plot` |
//! | [`data`] | HDF5 shards, the loader and sampler, Moving-MNIST, imports, the `convtt-data` tool |
//! | [`dist`] | collectives: a world of one, the launcher's agent, NCCL |
//! | [`heartbeat`] | the training thread's phase and progress, and the thread that reports them |
//! | [`checkpoint`] | checkpoint shards: write, commit, resolve, verify |
//! | [`commands`] | `bench`, `forward`, `model-info` |
//! | [`pictures`], [`npy`] | frame grids and PNGs; the f32 `.npy` reader |
//! | [`doctor`], [`torch_runtime`] | what this machine offers; libtorch's location and CUDA backend |
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod data;
pub mod dist;
pub mod doctor;
mod error;
pub mod eval;
pub mod heartbeat;
pub mod npy;
pub mod pictures;
pub mod runtime;
pub(crate) mod sys;
pub mod torch_runtime;
pub mod train;

pub use error::{exit, Error, Result};

/// Runs one parsed command line.
pub fn run(cli: cli::Cli) -> Result<()> {
    match cli.command {
        cli::Command::Doctor { json, require_gpu } => doctor::run(json, require_gpu),
        cli::Command::Train {
            config,
            run_dir,
            resume,
        } => train::run(train::TrainArgs {
            config: config.config,
            overrides: config.overrides,
            run_dir,
            resume,
        }),
        cli::Command::Forward(args) => commands::forward::run(&args),
        cli::Command::ModelInfo(args) => commands::model_info::run(&args),
        cli::Command::Bench(args) => commands::bench::run(&args),
        cli::Command::Eval(args) => eval::run_eval(&args),
        cli::Command::Predict(args) => eval::run_predict(&args),
        cli::Command::Export(args) => eval::run_export(&args),
        cli::Command::Plot { run_dir } => eval::plot::run(&run_dir),
    }
}
