//! Command-line interface of `convtt-launch`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// convtt-launch: the per-node agent that plans, pins, spawns and supervises convtt workers.
#[derive(Debug, Parser)]
#[command(name = "convtt-launch", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A config file plus `--set` overrides, shared by every subcommand that reads a config.
#[derive(Debug, Args)]
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
    /// Validate a config: print the resolved config, or exit 2 listing every problem.
    Check {
        /// The config and its overrides.
        #[command(flatten)]
        config: ConfigArgs,
    },
}
