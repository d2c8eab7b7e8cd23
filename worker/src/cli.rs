//! Command-line interface of `convtt-worker`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// convtt-worker: trains, evaluates and inspects Conv-TT-LSTM models. Normally started by
/// `convtt-launch`; started by hand it is a world of one.
#[derive(Debug, Parser)]
#[command(name = "convtt-worker", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A config file plus `--set` overrides.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The run configuration (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config key, e.g. `--set model.order=2` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train (normally started by convtt-launch; started by hand it is a world of one).
    Train {
        /// The config and its overrides.
        #[command(flatten)]
        config: ConfigArgs,
        /// Run directory (default: the launcher's, else `launch.run_dir`).
        #[arg(long, value_name = "DIR")]
        run_dir: Option<PathBuf>,
        /// `auto` (newest valid checkpoint of the run, if any), `no`, or a checkpoint directory.
        #[arg(long, default_value = "auto", value_name = "auto|no|PATH")]
        resume: crate::checkpoint::Resume,
    },
    /// Report libtorch, CUDA, cuDNN, NCCL, MPI, HDF5, NUMA nodes and this process's CPU mask.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 6 with the reasons when a GPU run could not start here.
        #[arg(long)]
        require_gpu: bool,
    },
}
