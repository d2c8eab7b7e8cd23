//! `[checkpoint]`: when to write sharded checkpoints and which to keep (ARCHITECTURE §5).

use serde::{Deserialize, Serialize};

use super::issues::{check, ConfigErrors};

/// Whether a smaller or a larger metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricMode {
    /// Smaller is better (losses, MSE, LPIPS).
    Min,
    /// Larger is better (PSNR, SSIM).
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
    /// Whether the metric is minimised or maximised.
    pub best_mode: MetricMode,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_steps: 1000,
            keep_last: 3,
            keep_best: true,
            best_metric: "valid.loss".into(),
            best_mode: MetricMode::Min,
        }
    }
}

/// Metrics a checkpoint can be ranked by.
pub const RANKING_METRICS: &[&str] = &[
    "valid.loss",
    "valid.mse",
    "valid.mae",
    "valid.psnr",
    "valid.ssim",
    "valid.accuracy",
];

impl CheckpointConfig {
    pub(crate) fn validate(&self, errs: &mut ConfigErrors) {
        check(errs, self.keep_last >= 1, "checkpoint.keep_last", || {
            "must be at least 1 (got 0); the newest checkpoint is always kept".into()
        });
        check(
            errs,
            RANKING_METRICS.contains(&self.best_metric.as_str()),
            "checkpoint.best_metric",
            || {
                format!(
                    "unknown metric {:?}{}; one of {}",
                    self.best_metric,
                    super::suggest(&self.best_metric, RANKING_METRICS.iter().copied()),
                    RANKING_METRICS.join(", ")
                )
            },
        );
    }
}
