//! Command-line interface of `convtt-launch`.
//!
//! ```text
//! convtt-launch [--gpus N | --cpu-workers N] --config FILE [--run-dir DIR] [--resume auto|PATH]
//!               [--max-restarts K] [--set k=v …] [--worker PATH]
//! convtt-launch doctor [--gpus N | --cpu-workers N] [--config FILE]
//! convtt-launch check --config FILE [--set k=v …]
//! convtt-launch sweep plan|run|submit|task|report …
//! ```

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// convtt-launch: the per-node agent that plans, pins, spawns and supervises convtt workers.
///
/// Without a subcommand it runs the job on this node: `convtt-launch --gpus 8 --config
/// run.toml`, or on every node of a Slurm allocation with `srun --ntasks-per-node=1
/// --mpi=pmix convtt-launch …`.
#[derive(Debug, Parser)]
#[command(name = "convtt-launch", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    /// What to do (default: run the job).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Running the job (when no subcommand is given).
    #[command(flatten)]
    pub run: RunArgs,
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

/// How many workers per node.
#[derive(Debug, Args, Default, Clone)]
#[group(multiple = false)]
pub struct WorkerCount {
    /// One worker per GPU, on this many GPUs per node (overrides `launch.gpus`).
    #[arg(long, value_name = "N")]
    pub gpus: Option<usize>,
    /// This many CPU workers per node (overrides `launch.cpu_workers`; implies no GPUs).
    #[arg(long, value_name = "N")]
    pub cpu_workers: Option<usize>,
}

/// Arguments of a run.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Workers per node.
    #[command(flatten)]
    pub count: WorkerCount,
    /// The run configuration (TOML).
    #[arg(long, short = 'c', value_name = "FILE", required = true)]
    pub config: Option<PathBuf>,
    /// Run directory (overrides `launch.run_dir`).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<String>,
    /// Resume the first attempt from `auto` (the newest valid checkpoint) or a checkpoint
    /// directory. Restarts always resume `auto`.
    #[arg(long, value_name = "auto|PATH")]
    pub resume: Option<String>,
    /// Restarts of the worker group after retryable failures (overrides `launch.max_restarts`).
    #[arg(long, value_name = "K")]
    pub max_restarts: Option<u32>,
    /// Override a config key, e.g. `--set model.order=2` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// The worker binary (default: `$CONVTT_WORKER`, else `convtt-worker` beside this binary).
    #[arg(long, value_name = "PATH")]
    pub worker: Option<PathBuf>,
    /// Do not copy worker output to the terminal (it still goes to `<run>/logs/`).
    #[arg(long)]
    pub quiet_workers: bool,
}

impl RunArgs {
    /// The config overrides these flags amount to, after the user's `--set`s.
    pub fn all_overrides(&self) -> Vec<String> {
        let mut o = self.overrides.clone();
        o.extend(count_overrides(&self.count));
        if let Some(d) = &self.run_dir {
            o.push(format!("launch.run_dir={}", toml_string(d)));
        }
        if let Some(k) = self.max_restarts {
            o.push(format!("launch.max_restarts={k}"));
        }
        o
    }
}

/// `--gpus`/`--cpu-workers` as config overrides.
pub fn count_overrides(c: &WorkerCount) -> Vec<String> {
    let mut o = Vec::new();
    if let Some(g) = c.gpus {
        o.push(format!("launch.gpus={g}"));
    }
    if let Some(n) = c.cpu_workers {
        o.push("launch.gpus=0".into());
        o.push(format!("launch.cpu_workers={n}"));
    }
    o
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
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
    /// Print this node's topology (GPUs, NUMA, CPU mask), Slurm/MPI context and the worker
    /// plan a run would use. Starts nothing.
    Doctor {
        /// Workers per node to plan for (default: the config's, else every visible GPU).
        #[command(flatten)]
        count: WorkerCount,
        /// A run configuration to plan with.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Override a config key (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Hyper-parameter sweeps over the config's `[sweep]` grid (the paper's S/N/C/M grid),
    /// locally or as a Slurm job array.
    Sweep {
        /// What to do.
        #[command(subcommand)]
        command: SweepCommand,
    },
}

/// `convtt-launch sweep …`.
#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// Print the trial table (grid values, seed, parameters, FLOPs); writes nothing.
    Plan {
        /// The sweep's base config (with its `[sweep]` section) and overrides.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Run the trials on this machine, K at a time, skipping finished ones; resumable.
    Run {
        /// The sweep's base config and overrides.
        #[command(flatten)]
        config: ConfigArgs,
        /// Run on this machine (required: `sweep submit` is the Slurm way).
        #[arg(long)]
        local: bool,
        /// Trials at a time (each on its own CPU group or GPUs).
        #[arg(long, value_name = "K", default_value_t = 1)]
        parallel: usize,
        /// Sweep directory (default `runs/sweep-{launch.name}`).
        #[arg(long, value_name = "DIR")]
        sweep_dir: Option<PathBuf>,
        /// Try failed trials again even when their retry budget is spent.
        #[arg(long)]
        retry_failed: bool,
        /// The worker binary for the trials' launchers.
        #[arg(long, value_name = "PATH")]
        worker: Option<PathBuf>,
    },
    /// Write `<sweep>/sweep.sbatch` (one array task per unfinished trial) and submit it.
    Submit {
        /// The sweep's base config and overrides.
        #[command(flatten)]
        config: ConfigArgs,
        /// Sweep directory (default `runs/sweep-{launch.name}`).
        #[arg(long, value_name = "DIR")]
        sweep_dir: Option<PathBuf>,
        /// sbatch template (default: the built-in `slurm/sweep.sbatch`).
        #[arg(long, value_name = "FILE")]
        template: Option<PathBuf>,
        /// Only write the script; do not call sbatch.
        #[arg(long)]
        dry_run: bool,
        /// An extra sbatch option, e.g. `--sbatch-arg=--time=2:00:00` (repeatable; overrides
        /// the script's directives).
        #[arg(long = "sbatch-arg", value_name = "OPTION", allow_hyphen_values = true)]
        sbatch_args: Vec<String>,
        /// CPUs per array task (default: `launch.cpu_workers`, or 8 per GPU).
        #[arg(long, value_name = "N")]
        cpus_per_task: Option<usize>,
        /// Resubmit failed trials even when their retry budget is spent.
        #[arg(long)]
        retry_failed: bool,
        /// An array over only the failed trials (a fresh retry budget each; attempts stay
        /// counted).
        #[arg(long)]
        failed: bool,
        /// The worker binary for the trials' launchers.
        #[arg(long, value_name = "PATH")]
        worker: Option<PathBuf>,
    },
    /// Run again, on this machine, exactly the failed trials (`--failed`, a fresh retry budget;
    /// their attempts stay counted) and/or the ones ASHA stopped (`--stopped`, promoted: they
    /// train on to the end from their checkpoints).
    Rerun {
        /// The sweep's base config and overrides.
        #[command(flatten)]
        config: ConfigArgs,
        /// Sweep directory (default `runs/sweep-{launch.name}`).
        #[arg(long, value_name = "DIR")]
        sweep_dir: Option<PathBuf>,
        /// The failed trials.
        #[arg(long)]
        failed: bool,
        /// The trials ASHA stopped.
        #[arg(long)]
        stopped: bool,
        /// Trials at a time.
        #[arg(long, value_name = "K", default_value_t = 1)]
        parallel: usize,
        /// The worker binary for the trials' launchers.
        #[arg(long, value_name = "PATH")]
        worker: Option<PathBuf>,
    },
    /// Promote trials past ASHA (by id or index) and train them on to the end, on this machine.
    Resume {
        /// The sweep's base config and overrides.
        #[command(flatten)]
        config: ConfigArgs,
        /// Sweep directory (default `runs/sweep-{launch.name}`).
        #[arg(long, value_name = "DIR")]
        sweep_dir: Option<PathBuf>,
        /// A trial id (or index) to promote (repeatable).
        #[arg(long, value_name = "ID", required = true)]
        promote: Vec<String>,
        /// Trials at a time.
        #[arg(long, value_name = "K", default_value_t = 1)]
        parallel: usize,
        /// The worker binary for the trials' launchers.
        #[arg(long, value_name = "PATH")]
        worker: Option<PathBuf>,
    },
    /// Run one trial (what each array task and each local slot runs), or several at once
    /// (`--index 4,5`: an array task packing `launch.trials_per_gpu` trials).
    Task {
        /// The sweep directory (holding `manifest.toml`).
        #[arg(long, value_name = "DIR")]
        sweep_dir: PathBuf,
        /// The trial's index (`$SLURM_ARRAY_TASK_ID`), or a comma-separated pack of them.
        #[arg(long, value_name = "I[,J…]", value_delimiter = ',', required = true)]
        index: Vec<usize>,
        /// The worker binary for the trial's launcher.
        #[arg(long, value_name = "PATH")]
        worker: Option<PathBuf>,
    },
    /// Every trial's summary in one table: report.csv, report.md and the report.png bubble
    /// chart in the sweep directory; prints the Markdown table.
    Report {
        /// The sweep directory.
        #[arg(long, value_name = "DIR")]
        sweep_dir: PathBuf,
        /// Rank by this validation metric (default: `sweep.metric`).
        #[arg(long, value_name = "METRIC")]
        metric: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn run_is_the_default_and_doctor_and_check_are_subcommands() {
        let c = Cli::try_parse_from([
            "convtt-launch",
            "--gpus",
            "8",
            "--config",
            "a.toml",
            "--set",
            "x.y=1",
        ])
        .unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.run.all_overrides(), ["x.y=1", "launch.gpus=8"]);
        let c = Cli::try_parse_from(["convtt-launch", "doctor", "--cpu-workers", "2"]).unwrap();
        assert!(matches!(c.command, Some(Command::Doctor { .. })));
        let c = Cli::try_parse_from(["convtt-launch", "check", "--config", "a.toml"]).unwrap();
        assert!(matches!(c.command, Some(Command::Check { .. })));
        assert!(Cli::try_parse_from([
            "convtt-launch",
            "--gpus",
            "1",
            "--cpu-workers",
            "2",
            "-c",
            "a"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["convtt-launch", "--gpus", "1"]).is_err(),
            "--config is required"
        );
        let c = Cli::try_parse_from([
            "convtt-launch",
            "-c",
            "a.toml",
            "--cpu-workers",
            "3",
            "--run-dir",
            "/r/x y",
            "--max-restarts",
            "0",
        ])
        .unwrap();
        assert_eq!(
            c.run.all_overrides(),
            [
                "launch.gpus=0",
                "launch.cpu_workers=3",
                "launch.run_dir=\"/r/x y\"",
                "launch.max_restarts=0"
            ]
        );
    }
}
