//! Command-line interface of `convtt-worker`.

use clap::{Parser, Subcommand};

/// convtt-worker: trains, evaluates and inspects Conv-TT-LSTM models. Normally started by
/// `convtt-launch`; started by hand it is a world of one.
#[derive(Debug, Parser)]
#[command(name = "convtt-worker", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
