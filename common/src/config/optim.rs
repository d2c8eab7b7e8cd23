//! `[optim]`: Adam, clipping, and the learning-rate / scheduled-sampling schedules (spec §4.2–§4.4).

use serde::{Deserialize, Serialize};

use super::issues::{check, ConfigErrors};

/// How a quantity changes during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Never changes.
    Constant,
    /// The reference's validation-plateau trigger (spec §4.4), then periodic decay.
    Plateau,
    /// Periodic decay from the first epoch.
    Step,
    /// Cosine from the start value to the floor over the whole run.
    Cosine,
}

/// `[optim]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Initial Adam learning rate.
    pub learning_rate: f64,
    /// Adam β1.
    pub beta1: f64,
    /// Adam β2.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
    /// Decoupled weight decay (0 in the reference).
    pub weight_decay: f64,
    /// Clip the global gradient L2 norm.
    pub gradient_clipping: bool,
    /// Maximum global gradient norm when clipping.
    pub clipping_threshold: f64,
    /// Learning-rate schedule.
    pub lr_schedule: Schedule,
    /// Multiplicative decay per period (`step`, `plateau`).
    pub lr_decay_rate: f64,
    /// Decay period in epochs (`step`, `plateau`).
    pub lr_decay_epochs: usize,
    /// Floor of the learning rate (`cosine`).
    pub min_learning_rate: f64,
    /// Scheduled-sampling (teacher-forcing) ratio schedule.
    pub ss_schedule: Schedule,
    /// Initial scheduled-sampling ratio r (1: always ground truth).
    pub ss_ratio_start: f64,
    /// Decrement of r per period (`step`, `plateau`).
    pub ss_decay: f64,
    /// Period of the r decrement in epochs.
    pub ss_decay_epochs: usize,
    /// Epochs without a validation improvement that switch a `plateau` schedule on.
    pub plateau_epochs: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            gradient_clipping: false,
            clipping_threshold: 3.0,
            lr_schedule: Schedule::Plateau,
            lr_decay_rate: 0.98,
            lr_decay_epochs: 5,
            min_learning_rate: 0.0,
            ss_schedule: Schedule::Plateau,
            ss_ratio_start: 1.0,
            ss_decay: 4e-3,
            ss_decay_epochs: 1,
            plateau_epochs: 20,
        }
    }
}

impl OptimConfig {
    pub(crate) fn validate(&self, errs: &mut ConfigErrors) {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        check(
            errs,
            positive(self.learning_rate),
            "optim.learning_rate",
            || format!("must be a positive number (got {})", self.learning_rate),
        );
        for (key, v) in [("optim.beta1", self.beta1), ("optim.beta2", self.beta2)] {
            check(errs, (0.0..1.0).contains(&v), key, || {
                format!("must be in [0, 1) (got {v})")
            });
        }
        check(errs, positive(self.eps), "optim.eps", || {
            format!("must be a positive number (got {})", self.eps)
        });
        check(errs, self.weight_decay >= 0.0, "optim.weight_decay", || {
            format!("must not be negative (got {})", self.weight_decay)
        });
        check(
            errs,
            positive(self.clipping_threshold),
            "optim.clipping_threshold",
            || {
                format!(
                    "must be a positive number (got {})",
                    self.clipping_threshold
                )
            },
        );
        check(
            errs,
            self.lr_decay_rate > 0.0 && self.lr_decay_rate <= 1.0,
            "optim.lr_decay_rate",
            || format!("must be in (0, 1] (got {})", self.lr_decay_rate),
        );
        check(
            errs,
            self.lr_decay_epochs >= 1,
            "optim.lr_decay_epochs",
            || "must be at least 1 (got 0)".into(),
        );
        check(
            errs,
            self.min_learning_rate >= 0.0
                && (!positive(self.learning_rate) || self.min_learning_rate <= self.learning_rate),
            "optim.min_learning_rate",
            || {
                format!(
                    "must be in [0, optim.learning_rate] (got {})",
                    self.min_learning_rate
                )
            },
        );
        check(
            errs,
            (0.0..=1.0).contains(&self.ss_ratio_start),
            "optim.ss_ratio_start",
            || format!("must be in [0, 1] (got {})", self.ss_ratio_start),
        );
        check(
            errs,
            (0.0..=1.0).contains(&self.ss_decay),
            "optim.ss_decay",
            || format!("must be in [0, 1] (got {})", self.ss_decay),
        );
        check(
            errs,
            self.ss_decay_epochs >= 1,
            "optim.ss_decay_epochs",
            || "must be at least 1 (got 0)".into(),
        );
    }
}
