//! The convtt launcher: one per node. It validates the run configuration before anything starts,
//! plans the workers (ranks, devices, CPU sets from the node's topology), pins and spawns them,
//! serves their agent socket (progress, CPU collectives, NCCL id relay), supervises them
//! (restarts, teardown, preemption) and, with several nodes, coordinates with the other
//! launchers over MPI. It never links libtorch.
//!
//! Module map: [`plan`] (what runs where), [`topology`] (sysfs → CPU sets), [`slurm`] (Slurm
//! environment, hostlists), [`cluster`] (MPI between launchers), [`agent`] (the worker socket),
//! [`child`] (one worker process), [`supervisor`] (attempts and restarts), [`restart`] (the pure
//! policy), [`shutdown`] (signals), [`console`] (terminal output).
#![warn(missing_docs)]
// `deny`, not `forbid`: the pre-exec hook in `sys.rs` (between fork and exec) needs `unsafe`,
// and only that module allows it.
#![deny(unsafe_code)]

pub mod agent;
pub mod child;
pub mod cli;
pub mod cluster;
pub mod console;
mod error;
mod node;
pub mod plan;
pub mod restart;
pub mod shutdown;
pub mod slurm;
pub mod supervisor;
mod sys;
pub mod topology;

pub use error::{Error, Result};

/// Runs one parsed command line.
pub fn run(cli: cli::Cli) -> Result<()> {
    match cli.command {
        Some(cli::Command::Check { config }) => {
            let cfg = convtt_core::config::load(&config.config, &config.overrides)?;
            print!("{}", cfg.to_toml());
            tracing::info!("{}: configuration is valid", config.config.display());
            Ok(())
        }
        Some(cli::Command::Doctor {
            count,
            config,
            overrides,
        }) => node::doctor(&count, config.as_deref(), &overrides),
        None => node::launch(cli.run),
    }
}
