//! The metrics convtt reports, in one table: their keys (in `metrics.jsonl` lines, the
//! `[valid]` table of `summary.toml`, checkpoint manifests and sweep reports), their units and
//! which direction is better. Validation, evaluation, the checkpoint "best" policy and the sweep
//! report all read them from here, so a metric ranked by accuracy is maximised everywhere.

use serde::{Deserialize, Serialize};

/// Whether a smaller or a larger value is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricMode {
    /// Smaller is better (losses, MSE, LPIPS).
    Min,
    /// Larger is better (PSNR, SSIM, accuracy).
    Max,
}

impl MetricMode {
    /// Whether `a` is better than `b` in this direction.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            MetricMode::Min => a < b,
            MetricMode::Max => a > b,
        }
    }

    /// `a` against `b`, best first: `Less` when `a` is better.
    pub fn cmp_best_first(self, a: f64, b: f64) -> std::cmp::Ordering {
        match self {
            MetricMode::Min => a.total_cmp(&b),
            MetricMode::Max => b.total_cmp(&a),
        }
    }
}

/// One reported metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Its key in records and files (`valid.<key>` when it ranks checkpoints or trials).
    pub key: &'static str,
    /// Its name in tables.
    pub label: &'static str,
    /// What it measures and in which unit.
    pub unit: &'static str,
    /// Which direction is better.
    pub mode: MetricMode,
}

/// L1 + L2 loss over every output (teacher forcing off in validation).
pub const LOSS: Metric = Metric {
    key: "loss",
    label: "loss",
    unit: "mean |error| + mean error² over all outputs, [0, 1] scale",
    mode: MetricMode::Min,
};
/// Per-pixel mean squared error.
pub const MSE: Metric = Metric {
    key: "mse",
    label: "MSE",
    unit: "per pixel, [0, 1] scale (×10³ in the paper's tables)",
    mode: MetricMode::Min,
};
/// Per-pixel mean absolute error.
pub const MAE: Metric = Metric {
    key: "mae",
    label: "MAE",
    unit: "per pixel, [0, 1] scale",
    mode: MetricMode::Min,
};
/// Peak signal-to-noise ratio.
pub const PSNR: Metric = Metric {
    key: "psnr",
    label: "PSNR",
    unit: "dB, peak 1, mean of per-frame values",
    mode: MetricMode::Max,
};
/// SSIM, the reference's (paper) preset.
pub const SSIM: Metric = Metric {
    key: "ssim",
    label: "SSIM",
    unit: "paper preset (7×7 box window, L = 2)",
    mode: MetricMode::Max,
};
/// SSIM, Wang et al. 2004 preset.
pub const SSIM_WANG2004: Metric = Metric {
    key: "ssim_wang2004",
    label: "SSIM wang2004",
    unit: "Gaussian 11×11 window, σ = 1.5, L = 1",
    mode: MetricMode::Max,
};
/// LPIPS (AlexNet, v0.1 heads).
pub const LPIPS: Metric = Metric {
    key: "lpips",
    label: "LPIPS",
    unit: "raw distance (×10³ in the paper's tables)",
    mode: MetricMode::Min,
};
/// Top-1 accuracy of activity recognition.
pub const ACCURACY: Metric = Metric {
    key: "accuracy",
    label: "accuracy",
    unit: "top-1, fraction of clips",
    mode: MetricMode::Max,
};
/// Cross-entropy of activity recognition.
pub const CROSS_ENTROPY: Metric = Metric {
    key: "cross_entropy",
    label: "cross-entropy",
    unit: "nats per clip",
    mode: MetricMode::Min,
};

/// Every metric, in report order.
pub const ALL: &[Metric] = &[
    LOSS,
    MSE,
    MAE,
    PSNR,
    SSIM,
    SSIM_WANG2004,
    LPIPS,
    ACCURACY,
    CROSS_ENTROPY,
];

/// The validation metrics that rank checkpoints (`checkpoint.best_metric`) and sweep trials
/// (`sweep.metric`), as `valid.<key>`.
pub const RANKING: &[Metric] = &[LOSS, MSE, MAE, PSNR, SSIM, ACCURACY];

/// The validation metrics a prediction run's `summary.toml` holds, in report order.
pub const SUMMARY: &[Metric] = &[LOSS, MSE, MAE, PSNR, SSIM, SSIM_WANG2004];

impl Metric {
    /// The metric of `key` (`mse`, …).
    pub fn by_key(key: &str) -> Option<Metric> {
        ALL.iter().copied().find(|m| m.key == key)
    }

    /// The ranking metric a `valid.<key>` name means.
    pub fn ranking(name: &str) -> Option<Metric> {
        let key = name.strip_prefix("valid.")?;
        RANKING.iter().copied().find(|m| m.key == key)
    }

    /// `valid.<key>`.
    pub fn valid_name(&self) -> String {
        format!("valid.{}", self.key)
    }
}

/// The `valid.<key>` names of [`RANKING`], for messages and suggestions.
pub fn ranking_names() -> Vec<String> {
    RANKING.iter().map(Metric::valid_name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_directions_are_the_natural_ones() {
        let mut keys: Vec<&str> = ALL.iter().map(|m| m.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), ALL.len());
        for (name, mode) in [
            ("valid.loss", MetricMode::Min),
            ("valid.mse", MetricMode::Min),
            ("valid.psnr", MetricMode::Max),
            ("valid.ssim", MetricMode::Max),
            ("valid.accuracy", MetricMode::Max),
        ] {
            assert_eq!(Metric::ranking(name).unwrap().mode, mode, "{name}");
        }
        assert_eq!(Metric::ranking("loss"), None, "ranking names carry valid.");
        assert_eq!(Metric::ranking("valid.lpips"), None, "not a ranking metric");
        assert!(RANKING.iter().all(|m| ALL.contains(m)));
        assert!(SUMMARY.iter().all(|m| ALL.contains(m)));
    }

    #[test]
    fn best_first_order_follows_the_mode() {
        let mut v = vec![0.2, 0.9, 0.5];
        v.sort_by(|a, b| MetricMode::Max.cmp_best_first(*a, *b));
        assert_eq!(v, [0.9, 0.5, 0.2]);
        v.sort_by(|a, b| MetricMode::Min.cmp_best_first(*a, *b));
        assert_eq!(v, [0.2, 0.5, 0.9]);
        assert!(MetricMode::Max.better(0.9, 0.2) && MetricMode::Min.better(0.2, 0.9));
    }
}
