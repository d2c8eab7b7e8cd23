//! The convtt launcher: one per node. It validates the run configuration before anything starts,
//! plans the workers, pins and supervises them. It never links libtorch.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod cli;
mod error;
pub mod restart;
pub mod slurm;
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
