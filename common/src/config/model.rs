//! `[model]`: the recurrent network (spec §2–§3). Paper names: filter size S (reference `k`),
//! order N, rank C, steps M. The window length M − N + 1 is derived, never configured.

use serde::{Deserialize, Serialize};

use super::issues::{check, ConfigErrors};

/// Which recurrent cell every layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// Convolutional tensor-train LSTM (spec §2.2).
    Convttlstm,
    /// The ConvLSTM baseline (spec §2.1).
    Convlstm,
}

/// Parameter initialisation (spec §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitScheme {
    /// PyTorch's Conv defaults (`code/`): uniform ±1/√fan_in for weights and biases.
    Pytorch,
    /// Xavier-uniform weights, zero biases (`eval_paper/`).
    Xavier,
}

/// `[model]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Cell type of every recurrent layer.
    pub cell: CellKind,
    /// Filter size of every recurrent convolution (the paper's S, the reference's `k`). Odd.
    pub filter_size: usize,
    /// Order N of the tensor train (number of TT cores).
    pub order: usize,
    /// Rank C of the tensor train (all ranks equal).
    pub rank: usize,
    /// Steps M: number of past hidden states kept (M ≥ N).
    pub steps: usize,
    /// Channels of an image frame (1 for Moving-MNIST and the released KTH model).
    pub image_channels: usize,
    /// Hidden channels of each block.
    pub block_widths: Vec<usize>,
    /// Recurrent layers per block.
    pub layers_per_block: usize,
    /// Skip stride: block b > stride also receives block b − 1 − stride's output.
    pub skip_stride: usize,
    /// Sigmoid on the output frame.
    pub output_sigmoid: bool,
    /// Initialisation scheme.
    pub init: InitScheme,
    /// Reproduce `eval_paper/`'s ring pointer that advances modulo N instead of M (spec §2.5).
    pub legacy_pointer_mod_order: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            cell: CellKind::Convttlstm,
            filter_size: 5,
            order: 3,
            rank: 8,
            steps: 3,
            image_channels: 1,
            block_widths: vec![32, 48, 48, 32],
            layers_per_block: 3,
            skip_stride: 2,
            output_sigmoid: false,
            init: InitScheme::Pytorch,
            legacy_pointer_mod_order: false,
        }
    }
}

impl ModelConfig {
    /// Window length M − N + 1 of each preprocessing convolution (the spec's `S`, `lags`).
    pub fn window(&self) -> usize {
        self.steps + 1 - self.order
    }

    pub(crate) fn validate(&self, errs: &mut ConfigErrors) {
        let fs = self.filter_size;
        check(errs, fs % 2 == 1 && fs <= 15, "model.filter_size", || {
            format!("must be odd and at most 15 (got {fs})")
        });
        check(errs, (1..=8).contains(&self.order), "model.order", || {
            format!("must be between 1 and 8 (got {})", self.order)
        });
        check(errs, self.steps >= 1, "model.steps", || {
            "must be at least 1 (got 0)".into()
        });
        if self.order >= 1 && self.steps >= 1 {
            check(errs, self.order <= self.steps, "model.order", || {
                format!(
                    "must be ≤ model.steps (got {} > {})",
                    self.order, self.steps
                )
            });
        }
        check(errs, self.rank >= 1, "model.rank", || {
            "must be at least 1 (got 0)".into()
        });
        check(
            errs,
            self.image_channels >= 1,
            "model.image_channels",
            || "must be at least 1 (got 0)".into(),
        );
        check(
            errs,
            !self.block_widths.is_empty(),
            "model.block_widths",
            || "must list at least one block width".into(),
        );
        for (i, w) in self.block_widths.iter().enumerate() {
            check(errs, *w >= 1, &format!("model.block_widths[{i}]"), || {
                "must be at least 1 (got 0)".into()
            });
        }
        check(
            errs,
            self.layers_per_block >= 1,
            "model.layers_per_block",
            || "must be at least 1 (got 0)".into(),
        );
        check(errs, self.skip_stride >= 1, "model.skip_stride", || {
            "must be at least 1 (got 0)".into()
        });
        check(
            errs,
            !self.legacy_pointer_mod_order || self.cell == CellKind::Convttlstm,
            "model.legacy_pointer_mod_order",
            || "only applies to cell = \"convttlstm\"".into(),
        );
    }
}
