//! `[launch]`: how `convtt-launch` lays out and supervises workers (ARCHITECTURE §2).

use serde::{Deserialize, Serialize};

use super::issues::{check, ConfigErrors};

/// `[launch]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LaunchConfig {
    /// Run name, used in the default run directory and in logs.
    pub name: String,
    /// Run directory; `{name}` is replaced by `name`.
    pub run_dir: String,
    /// GPUs per node (one worker each). 0: CPU workers.
    pub gpus: usize,
    /// CPU workers per node when `gpus` is 0.
    pub cpu_workers: usize,
    /// `sweep run --local`: trials sharing each GPU group (separate processes, so separate
    /// CUDA caching allocators), refused when their estimated memory does not fit.
    pub trials_per_gpu: usize,
    /// Restarts of the worker group after retryable failures before giving up.
    pub max_restarts: u32,
    /// Seconds between worker heartbeats.
    pub heartbeat_secs: f64,
    /// A worker silent for this many seconds counts as hung.
    pub heartbeat_timeout_secs: f64,
    /// Timeout of one collective operation (all-reduce, broadcast, barrier).
    pub collective_timeout_secs: f64,
    /// Grace between SIGTERM and SIGKILL when tearing workers down.
    pub grace_secs: f64,
    /// After a preemption request (SIGTERM, SIGINT, SIGUSR1 or SIGUSR2 to the launcher), the
    /// workers have this long to commit a checkpoint and exit 4 before they are killed. Keep
    /// it below the lead time of `sbatch --signal` (and Slurm's KillWait for SIGTERM).
    pub preempt_deadline_secs: f64,
    /// A spawned worker must say hello on the agent socket within this many seconds or it
    /// counts as hung (0: not enforced, for workers that never use the agent).
    pub startup_timeout_secs: f64,
    /// Delay before the first restart; it doubles with every further restart, up to 60 s.
    pub restart_delay_secs: f64,
    /// What replaces a dead worker while others are healthy: `"peer"` (a new worker takes the
    /// state from a healthy peer's memory and the group redoes the abandoned step: no step
    /// lost) or `"checkpoint"` (the whole group restarts from the newest checkpoint). Peer
    /// recovery needs CPU workers on one node; elsewhere the checkpoint restart is used.
    pub recovery: Recovery,
    /// A rank whose compute time per step exceeds this many times the median of its node's
    /// ranks is reported as a straggler (a warning, a `straggler` record, the progress line);
    /// nothing else is done about it. 0 turns the report off.
    pub straggler_ratio: f64,
}

/// `launch.recovery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recovery {
    /// From a healthy peer's memory, falling back to the checkpoint.
    Peer,
    /// Always from the newest checkpoint.
    Checkpoint,
}

impl Default for LaunchConfig {
    fn default() -> Self {
        Self {
            name: "convtt".into(),
            run_dir: "runs/{name}".into(),
            gpus: 0,
            cpu_workers: 1,
            trials_per_gpu: 1,
            max_restarts: 3,
            heartbeat_secs: 5.0,
            heartbeat_timeout_secs: 300.0,
            collective_timeout_secs: 600.0,
            grace_secs: 30.0,
            preempt_deadline_secs: 120.0,
            startup_timeout_secs: 600.0,
            restart_delay_secs: 1.0,
            recovery: Recovery::Peer,
            straggler_ratio: 1.3,
        }
    }
}

impl LaunchConfig {
    /// The run directory with `{name}` substituted.
    pub fn resolved_run_dir(&self) -> String {
        self.run_dir.replace("{name}", &self.name)
    }

    pub(crate) fn validate(&self, errs: &mut ConfigErrors) {
        check(
            errs,
            self.trials_per_gpu >= 1,
            "launch.trials_per_gpu",
            || "must be at least 1 (got 0)".into(),
        );
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        check(errs, name_ok, "launch.name", || {
            format!(
                "must be letters, digits, '-', '_' or '.' (got {:?})",
                self.name
            )
        });
        check(
            errs,
            !self.run_dir.trim().is_empty(),
            "launch.run_dir",
            || "must not be empty".into(),
        );
        check(errs, self.gpus <= 64, "launch.gpus", || {
            format!("must be at most 64 per node (got {})", self.gpus)
        });
        check(
            errs,
            (1..=256).contains(&self.cpu_workers),
            "launch.cpu_workers",
            || format!("must be between 1 and 256 (got {})", self.cpu_workers),
        );
        for (key, v) in [
            ("launch.heartbeat_secs", self.heartbeat_secs),
            ("launch.heartbeat_timeout_secs", self.heartbeat_timeout_secs),
            (
                "launch.collective_timeout_secs",
                self.collective_timeout_secs,
            ),
        ] {
            check(errs, v.is_finite() && v > 0.0, key, || {
                format!("must be a positive number of seconds (got {v})")
            });
        }
        for (key, v) in [
            ("launch.grace_secs", self.grace_secs),
            ("launch.startup_timeout_secs", self.startup_timeout_secs),
            ("launch.restart_delay_secs", self.restart_delay_secs),
        ] {
            check(errs, v.is_finite() && v >= 0.0, key, || {
                format!("must be a non-negative number of seconds (got {v})")
            });
        }
        check(
            errs,
            self.preempt_deadline_secs.is_finite() && self.preempt_deadline_secs > 0.0,
            "launch.preempt_deadline_secs",
            || {
                format!(
                    "must be a positive number of seconds (got {})",
                    self.preempt_deadline_secs
                )
            },
        );
        let r = self.straggler_ratio;
        check(
            errs,
            r == 0.0 || (r.is_finite() && r > 1.0),
            "launch.straggler_ratio",
            || format!("must be 0 (off) or a ratio above 1 (got {r})"),
        );
        if self.heartbeat_secs.is_finite() && self.heartbeat_timeout_secs.is_finite() {
            check(
                errs,
                self.heartbeat_timeout_secs > self.heartbeat_secs,
                "launch.heartbeat_timeout_secs",
                || {
                    format!(
                        "must exceed launch.heartbeat_secs (got {} ≤ {})",
                        self.heartbeat_timeout_secs, self.heartbeat_secs
                    )
                },
            );
        }
    }
}
