//! `[checkpoint]`: when to write sharded checkpoints and which to keep (ARCHITECTURE §5).

use serde::{Deserialize, Serialize};

use super::issues::{check, ConfigErrors};

pub use crate::metric::MetricMode;
use crate::metric::{ranking_names, Metric};

/// `checkpoint.best_mode`: the direction of `best_metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BestMode {
    /// The metric's own direction ([`crate::metric`]: larger PSNR, SSIM and accuracy are
    /// better, smaller losses and errors).
    Auto,
    /// Smaller is better.
    Min,
    /// Larger is better.
    Max,
}

/// `[checkpoint]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many optimizer steps (0: only at epoch ends and on exit).
    pub every_steps: u64,
    /// Keep the newest this many checkpoints.
    pub keep_last: usize,
    /// Also keep the best checkpoint by `best_metric`.
    pub keep_best: bool,
    /// Metric that ranks checkpoints, e.g. `valid.loss` or `valid.ssim`.
    pub best_metric: String,
    /// Whether the metric is minimised or maximised (`auto`: its own direction).
    pub best_mode: BestMode,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_steps: 1000,
            keep_last: 3,
            keep_best: true,
            best_metric: "valid.loss".into(),
            best_mode: BestMode::Auto,
        }
    }
}

impl CheckpointConfig {
    /// The direction of `best_metric`: `best_mode` when given, else the metric's own.
    pub fn best_mode(&self) -> MetricMode {
        match self.best_mode {
            BestMode::Min => MetricMode::Min,
            BestMode::Max => MetricMode::Max,
            BestMode::Auto => {
                Metric::ranking(&self.best_metric).map_or(MetricMode::Min, |m| m.mode)
            }
        }
    }

    pub(crate) fn validate(&self, errs: &mut ConfigErrors) {
        check(errs, self.keep_last >= 1, "checkpoint.keep_last", || {
            "must be at least 1 (got 0); the newest checkpoint is always kept".into()
        });
        check(
            errs,
            Metric::ranking(&self.best_metric).is_some(),
            "checkpoint.best_metric",
            || {
                let names = ranking_names();
                format!(
                    "unknown metric {:?}{}; one of {}",
                    self.best_metric,
                    super::suggest(&self.best_metric, names.iter().map(String::as_str)),
                    names.join(", ")
                )
            },
        );
    }
}
