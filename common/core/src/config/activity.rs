//! `[activity]`: early activity recognition (paper §4, "Early activity recognition"; issue 9).
//!
//! With `enabled = true` the run trains the encoder–decoder activity network instead of the
//! prediction network of `[model]`: two strided 2-D convolutions encode each frame, a stack of
//! `recurrent_layers` recurrent layers (the cell and its S/N/C/M of `[model]`) runs over the
//! first `input_ratio` of every clip and then predicts `data.future_frames` more frames, two
//! transposed convolutions decode frames, and a classifier (two strided 2-D convolutions, a
//! global average and one fully-connected layer) reads the last recurrent layer's output at the
//! last step. Loss: `prediction_weight` · (L1 + L2 of the predicted frames) + cross-entropy.
//!
//! The architecture keys (`enabled`, `classes`, the widths and `recurrent_layers`) are part of
//! the checkpoint's model hash; the training keys (`prediction_weight`, `input_ratio`,
//! `eval_ratios`) are not. With `enabled = false` (the default) nothing changes: the model hash
//! of existing configurations is the hash of `[model]` alone, as before.

use serde::{Deserialize, Serialize};

use super::issues::{check, ConfigErrors};

/// `[activity]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityConfig {
    /// Train and evaluate the activity-recognition network instead of the prediction network.
    pub enabled: bool,
    /// Number of classes (must equal the length of the dataset's class list).
    pub classes: usize,
    /// Output channels of the two encoder convolutions (3×3, stride 2 each: H/4 × W/4).
    pub encoder_channels: Vec<usize>,
    /// Recurrent layers between encoder and decoder (the paper: 8).
    pub recurrent_layers: usize,
    /// Hidden channels of every recurrent layer.
    pub hidden_channels: usize,
    /// Output channels of the classifier's two convolutions (3×3, stride 2 each).
    pub classifier_channels: Vec<usize>,
    /// λ: weight of the prediction loss (L1 + L2) next to the cross-entropy.
    pub prediction_weight: f64,
    /// Fraction of each clip the model sees during training (the paper: 0.25 or 0.5); the
    /// conditioning frames are I = round(ratio × T), T the dataset's clip length.
    pub input_ratio: f64,
    /// Input ratios at which `eval` and validation report accuracy.
    pub eval_ratios: Vec<f64>,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            classes: 0,
            encoder_channels: vec![32, 64],
            recurrent_layers: 8,
            hidden_channels: 64,
            classifier_channels: vec![64, 128],
            prediction_weight: 1.0,
            input_ratio: 0.5,
            eval_ratios: vec![0.25, 0.5],
        }
    }
}

/// Conditioning frames for `ratio` of a `t`-frame clip: round(ratio × t), at least 1.
pub fn input_frames_for(ratio: f64, t: usize) -> usize {
    ((ratio * t as f64).round() as usize).max(1)
}

impl ActivityConfig {
    /// The keys that shape the network (what the model hash covers).
    pub fn architecture(&self) -> toml::Table {
        let mut t = toml::Table::try_from(self).expect("activity config serialises");
        for k in ["prediction_weight", "input_ratio", "eval_ratios"] {
            t.remove(k);
        }
        t
    }

    pub(crate) fn validate(&self, errs: &mut ConfigErrors) {
        if !self.enabled {
            return;
        }
        check(errs, self.classes >= 2, "activity.classes", || {
            format!(
                "must be at least 2 when activity.enabled (got {}); set it to the length of \
                 the dataset's class list",
                self.classes
            )
        });
        let two = |v: &[usize], key: &str, errs: &mut ConfigErrors| {
            check(errs, v.len() == 2 && !v.contains(&0), key, || {
                format!("must list two positive widths (got {v:?})")
            });
        };
        two(&self.encoder_channels, "activity.encoder_channels", errs);
        two(
            &self.classifier_channels,
            "activity.classifier_channels",
            errs,
        );
        check(
            errs,
            self.recurrent_layers >= 1,
            "activity.recurrent_layers",
            || "must be at least 1 (got 0)".into(),
        );
        check(
            errs,
            self.hidden_channels >= 1,
            "activity.hidden_channels",
            || "must be at least 1 (got 0)".into(),
        );
        check(
            errs,
            self.prediction_weight.is_finite() && self.prediction_weight >= 0.0,
            "activity.prediction_weight",
            || format!("must be ≥ 0 (got {})", self.prediction_weight),
        );
        let ratio_ok = |r: f64| r > 0.0 && r < 1.0;
        check(
            errs,
            ratio_ok(self.input_ratio),
            "activity.input_ratio",
            || format!("must be in (0, 1) (got {})", self.input_ratio),
        );
        check(
            errs,
            !self.eval_ratios.is_empty(),
            "activity.eval_ratios",
            || "must list at least one ratio".into(),
        );
        for (i, r) in self.eval_ratios.iter().enumerate() {
            check(
                errs,
                ratio_ok(*r),
                &format!("activity.eval_ratios[{i}]"),
                || format!("must be in (0, 1) (got {r})"),
            );
        }
    }
}
