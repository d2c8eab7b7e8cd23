//! The convtt launcher: one per node. It validates the run configuration before anything starts,
//! plans the workers, pins and supervises them. It never links libtorch.
#![warn(missing_docs)]
// `deny`, not `forbid`: the pre-exec hook in `sys.rs` (fork → exec) needs `unsafe`, and it
// alone allows it.
#![deny(unsafe_code)]

pub mod agent;
pub mod child;
pub mod cli;
pub mod cluster;
pub mod console;
mod error;
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
        cli::Command::Check { config } => {
            let cfg = convtt_core::config::load(&config.config, &config.overrides)?;
            print!("{}", cfg.to_toml());
            tracing::info!("{}: configuration is valid", config.config.display());
            Ok(())
        }
    }
}
