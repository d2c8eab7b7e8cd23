//! The convtt worker: one process per GPU (or per CPU group) that trains, evaluates and inspects
//! models. `main.rs` is a thin shim over [`run`]; exit codes are documented in [`exit`].
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod data;
pub mod dist;
pub mod doctor;
mod error;
pub mod eval;
pub mod npy;
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
