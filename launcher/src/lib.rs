//! The convtt launcher: one per node. It validates the run configuration before anything starts,
//! plans the workers (ranks, devices, CPU sets from the node's topology), pins and spawns them,
//! serves their agent socket (progress, CPU collectives, NCCL id relay), supervises them
//! (restarts, teardown, preemption) and, with several nodes, coordinates with the other
//! launchers over MPI. It never links libtorch.
//!
//! Module map: [`plan`] (what runs where), [`topology`] (sysfs → CPU sets), [`slurm`] (Slurm
//! environment, hostlists), [`cluster`] (MPI between launchers), [`agent`] (the worker socket),
//! [`child`] (one worker process), [`supervisor`] (attempts, restarts, peer recovery),
//! [`postmortem`] (a hang's verdict and stacks), [`straggler`] (slow ranks), [`restart`] (the pure
//! policy), [`shutdown`] (signals), [`console`] (terminal output), [`sweep`] (hyper-parameter sweeps,
//! locally and as Slurm job arrays).
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
pub mod postmortem;
pub mod restart;
pub mod shutdown;
pub mod slurm;
pub mod straggler;
pub mod supervisor;
pub mod sweep;
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
        Some(cli::Command::Sweep { command }) => sweep_command(command),
        None => node::launch(cli.run),
    }
}

fn sweep_command(c: cli::SweepCommand) -> Result<()> {
    use cli::SweepCommand as S;
    match c {
        S::Plan { config } => sweep::cmd_plan(&config.config, &config.overrides),
        S::Run {
            config,
            local,
            parallel,
            sweep_dir,
            retry_failed,
            worker,
        } => {
            if !local {
                return Err(Error::Usage(
                    "`sweep run` runs trials on this machine and needs --local; use `sweep \
                     submit` for a Slurm job array"
                        .into(),
                ));
            }
            let planned = sweep::plan_sweep(&config.config, &config.overrides)?;
            let dir = sweep::default_dir(&planned.base, sweep_dir.as_deref());
            let opts = sweep::local::LocalOptions {
                parallel,
                retry_failed,
                worker,
                only: None,
            };
            sweep::local::run_local(&dir, &planned, &opts)
        }
        S::Rerun {
            config,
            sweep_dir,
            failed,
            stopped,
            parallel,
            worker,
        } => {
            if !failed && !stopped {
                return Err(Error::Usage(
                    "`sweep rerun` needs --failed and/or --stopped".into(),
                ));
            }
            let planned = sweep::plan_sweep(&config.config, &config.overrides)?;
            let dir = sweep::default_dir(&planned.base, sweep_dir.as_deref());
            let pick = sweep::local::Pick {
                failed,
                stopped,
                promote: Vec::new(),
            };
            sweep::local::rerun(&dir, &planned, &pick, parallel, worker)
        }
        S::Resume {
            config,
            sweep_dir,
            promote,
            parallel,
            worker,
        } => {
            let planned = sweep::plan_sweep(&config.config, &config.overrides)?;
            let dir = sweep::default_dir(&planned.base, sweep_dir.as_deref());
            let pick = sweep::local::Pick {
                failed: false,
                stopped: false,
                promote,
            };
            sweep::local::rerun(&dir, &planned, &pick, parallel, worker)
        }
        S::Submit {
            config,
            sweep_dir,
            template,
            dry_run,
            sbatch_args,
            cpus_per_task,
            retry_failed,
            failed,
            worker,
        } => {
            let planned = sweep::plan_sweep(&config.config, &config.overrides)?;
            let dir = sweep::default_dir(&planned.base, sweep_dir.as_deref());
            let opts = sweep::slurm::SubmitOptions {
                template,
                dry_run,
                sbatch_args,
                cpus_per_task,
                retry_failed,
                only_failed: failed,
                worker,
            };
            sweep::slurm::submit(&dir, &planned, &opts)
        }
        S::Task {
            sweep_dir,
            index,
            worker,
        } => {
            let dir = sweep::SweepDir(sweep_dir);
            match index[..] {
                [one] => sweep::task::cmd_task(&dir, one, worker.as_deref()),
                _ => sweep::local::run_pack(&dir, &index, worker),
            }
        }
        S::Report { sweep_dir, metric } => {
            sweep::report::cmd_report(&sweep::SweepDir(sweep_dir), metric.as_deref())
        }
    }
}
