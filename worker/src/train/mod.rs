//! Training (`convtt-worker train`): data → model → loss → gradient all-reduce → clip → Adam on
//! the flat buffer → validation, metrics log and sharded checkpoints; resume and preemption.
//!
//! | file | holds |
//! |---|---|
//! | `trainer.rs` | [`Trainer`]: the task, flat buffers, schedules, cursor, pending checkpoint, metrics log, throughput window; the loop |
//! | `step.rs` | one optimizer step (forward, loss, backward, the all-reduce, clipping, Adam), timed for `bench` |
//! | `validate.rs` | validation (the model beside the trivial predictors) and its `valid` record |
//! | `save.rs` | checkpoint save/commit/restore and the typed [`save::TrainerState`] |
//! | `task.rs` | prediction or activity recognition |
//! | `metrics_log.rs` | `metrics.jsonl` and TensorBoard (`convtt_core::tensorboard`) |
//! | `recovery.rs` | peer recovery's shared state ([`recovery::PeerState`]) and the loop's [`recovery::Stage`] |
//! | `faults.rs` | `CONVTT_FAULT` injection points |
//! | `optim.rs`, `schedule.rs` | the flat buffer with Adam and loss scaling; LR and scheduled-sampling schedules |
//! | `activity.rs` | the activity-recognition task |
//!
//! The runtime a command runs in (device, rank, collectives, run directory) is
//! [`crate::runtime`].
//!
//! Preemption (SIGTERM, SIGUSR1, SIGUSR2, or the launcher's preempt message) must make every
//! rank stop at the same step, so the flag travels inside the gradient all-reduce: one extra
//! element, no extra collective. A second SIGINT exits at once.

pub mod activity;
pub mod cuda_graph;
pub(crate) mod faults;
mod metrics_log;
pub mod optim;
mod recovery;
pub mod save;
pub mod schedule;
mod step;
mod task;
mod trainer;
mod validate;

#[cfg(all(test, feature = "gpu-tests"))]
mod gpu_tests;

use std::path::PathBuf;

pub(crate) use metrics_log::MetricsLog;
pub use step::{loss, step_loss, step_with_loss, train_step, StepOutcome, StepTimes};
pub use trainer::{Plan, Trainer};
pub use validate::{mean, validate, validate_with, Validation};

use crate::checkpoint::Resume;
use crate::error::Result;
use crate::runtime::Context;

/// What `train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    /// The run configuration.
    pub config: PathBuf,
    /// `section.key=value` overrides.
    pub overrides: Vec<String>,
    /// Run directory (default: the launcher's, else `launch.run_dir`).
    pub run_dir: Option<PathBuf>,
    /// What to resume from.
    pub resume: Resume,
}

/// `convtt-worker train`: trains, then says goodbye to the launcher with the exit code.
pub fn run(args: TrainArgs) -> Result<()> {
    let Context { cfg, mut rt } = Context::new(&args.config, &args.overrides, args.run_dir)?;
    let result = Trainer::new(&cfg, &mut rt, &args.resume).and_then(|mut trainer| {
        let plan = trainer.plan(&rt)?;
        trainer.run(&mut rt, &plan)
    });
    let (code, reason) = match &result {
        Ok(()) => (crate::exit::OK, "finished".to_owned()),
        Err(e) => (e.exit_code(), e.to_string()),
    };
    rt.coll.goodbye(code, &reason);
    result
}
