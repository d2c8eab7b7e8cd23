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
    /// ConvLSTM whose convolution weight is stored in the classic tensor-train format of
    /// Garipov et al. 2016 (paper §5, Eqs. 12–13): `model.ttd_order`, `model.ttd_ranks`.
    #[serde(rename = "convlstm_ttd")]
    ConvlstmTtd,
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
    /// Kernel size of the tensor-train part of a Conv-TT-LSTM cell (the cores G, the
    /// preprocessing convolutions P and the T channels of the gate convolution); 0: the same as
    /// `filter_size`. 1 is the paper's "standard TTD" ablation (Table 4).
    pub tt_filter_size: usize,
    /// `cell = "convlstm_ttd"`: number d of channel factors (the tensor train has d + 1 cores:
    /// one spatial core and d channel cores).
    pub ttd_order: usize,
    /// `cell = "convlstm_ttd"`: the d TT ranks r_1 … r_d (one value: all equal).
    pub ttd_ranks: Vec<usize>,
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
            tt_filter_size: 0,
            ttd_order: 2,
            ttd_ranks: vec![8],
        }
    }
}

impl ModelConfig {
    /// Window length M − N + 1 of each preprocessing convolution (the spec's `S`, `lags`).
    pub fn window(&self) -> usize {
        self.steps + 1 - self.order
    }

    /// Kernel size of the tensor-train part (`tt_filter_size`, 0 meaning `filter_size`).
    pub fn tt_kernel(&self) -> usize {
        if self.tt_filter_size == 0 {
            self.filter_size
        } else {
            self.tt_filter_size
        }
    }

    /// The d TT ranks of `cell = "convlstm_ttd"` (`ttd_ranks` broadcast when it has one entry).
    pub fn ttd_rank_list(&self) -> Vec<usize> {
        if self.ttd_ranks.len() == 1 {
            vec![self.ttd_ranks[0]; self.ttd_order]
        } else {
            self.ttd_ranks.clone()
        }
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
        let tk = self.tt_filter_size;
        check(
            errs,
            tk == 0 || (tk % 2 == 1 && tk <= self.filter_size),
            "model.tt_filter_size",
            || {
                format!(
                    "must be 0 (same as model.filter_size) or odd and ≤ model.filter_size = {} (got {tk})",
                    self.filter_size
                )
            },
        );
        check(
            errs,
            tk == 0 || self.cell == CellKind::Convttlstm,
            "model.tt_filter_size",
            || "only applies to cell = \"convttlstm\"; remove it or set 0".into(),
        );
        self.validate_ttd(errs);
    }

    fn validate_ttd(&self, errs: &mut ConfigErrors) {
        let d = self.ttd_order;
        check(errs, (1..=4).contains(&d), "model.ttd_order", || {
            format!("must be between 1 and 4 (got {d})")
        });
        check(
            errs,
            self.ttd_ranks.len() == 1 || self.ttd_ranks.len() == d,
            "model.ttd_ranks",
            || {
                format!(
                    "must list one rank (all equal) or model.ttd_order = {d} ranks (got {})",
                    self.ttd_ranks.len()
                )
            },
        );
        for (i, r) in self.ttd_ranks.iter().enumerate() {
            check(errs, *r >= 1, &format!("model.ttd_ranks[{i}]"), || {
                "must be at least 1 (got 0)".into()
            });
        }
        if self.cell != CellKind::ConvlstmTtd || !(1..=4).contains(&d) {
            return;
        }
        if self.block_widths.contains(&0) || self.image_channels == 0 || self.skip_stride == 0 {
            return; // reported above; the channel plan is meaningless
        }
        if self.block_widths.is_empty() || self.layers_per_block == 0 {
            return;
        }
        for l in crate::summary::layer_plan(self).0 {
            let (name, cin, ch) = (
                l.name,
                l.input_channels as usize,
                l.hidden_channels as usize,
            );
            for (what, n) in [
                ("input channels Cin + Ch", cin + ch),
                ("outputs 4·Ch", 4 * ch),
            ] {
                if tt_factors(n, d).is_none() {
                    errs.push(
                        "model.ttd_order",
                        format!(
                            "layer {name}'s {what} = {n} = {} cannot be split into ttd_order = {d} \
                             factors ≥ 2; lower model.ttd_order or change model.block_widths / \
                             model.image_channels",
                            prime_factors(n)
                                .iter()
                                .map(|p| p.to_string())
                                .collect::<Vec<_>>()
                                .join(" × ")
                        ),
                    );
                }
            }
        }
    }
}

/// Prime factors of `n` in ascending order, with multiplicity (empty for 0 and 1).
pub fn prime_factors(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut p = 2;
    while n > 1 && p * p <= n {
        while n.is_multiple_of(p) {
            out.push(p);
            n /= p;
        }
        p += 1;
    }
    if n > 1 {
        out.push(n);
    }
    out
}

/// Splits a channel count `n` into `d` factors ≥ 2 whose product is `n`, as balanced as the
/// prime factorisation allows (largest primes first, each onto the currently smallest factor),
/// listed in descending order. `None` when `n` has fewer than `d` prime factors. This is how
/// the classic-TTD cell factorises its channel dimensions (Cin + Ch = Π c_i, 4·Ch = Π s_i).
pub fn tt_factors(n: usize, d: usize) -> Option<Vec<usize>> {
    let primes = prime_factors(n);
    if d == 0 || primes.len() < d {
        return None;
    }
    let mut f = vec![1usize; d];
    for p in primes.into_iter().rev() {
        let i = (0..d).min_by_key(|&i| (f[i], i)).expect("d ≥ 1");
        f[i] *= p;
    }
    // Every factor got at least one prime: the first d primes go to distinct factors.
    f.sort_unstable_by(|a, b| b.cmp(a));
    Some(f)
}
