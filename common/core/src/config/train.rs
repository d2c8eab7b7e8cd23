//! `[train]`: the training loop (spec §4), devices and precision.

use serde::{Deserialize, Serialize};

use super::issues::{check, ConfigErrors};

/// Where a worker computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// CUDA when the launcher assigned a GPU, else CPU.
    Auto,
    /// Always the CPU.
    Cpu,
    /// Always CUDA; an error where none is available.
    Cuda,
}

/// Numeric precision of the forward/backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 everywhere.
    F32,
    /// Convolutions in bfloat16, everything else and the master weights f32 (CUDA or CPU).
    Bf16,
    /// Convolutions in float16 with dynamic loss scaling (CUDA only).
    Fp16,
}

/// Whether the rollout keeps its tensors channels-last (NHWC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelsLast {
    /// On CUDA, and on CPU when every block is at least [`Self::CPU_MIN_WIDTH`] channels
    /// wide (measured: the paper network's 32/48 gains 12–15 % a training step on CPU; the
    /// 8-channel tiny config loses ~20 % in inference).
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl ChannelsLast {
    /// The narrowest block width at which `auto` turns channels-last on for CPU.
    pub const CPU_MIN_WIDTH: usize = 32;

    /// The decision for a model whose blocks are `widths` wide, on CUDA or not.
    pub fn resolve(self, widths: &[usize], cuda: bool) -> bool {
        match self {
            ChannelsLast::On => true,
            ChannelsLast::Off => false,
            ChannelsLast::Auto => {
                cuda || widths
                    .iter()
                    .min()
                    .is_some_and(|&w| w >= Self::CPU_MIN_WIDTH)
            }
        }
    }
}

/// Input convention of the LPIPS metric (reference spec §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LpipsPreset {
    /// As the reference: [0, 1] frames fed where LPIPS expects [−1, 1] (matches its numbers).
    Reference,
    /// Frames mapped to [−1, 1] (2x − 1) first, as LPIPS intends.
    Corrected,
}

/// `[train]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs to train.
    pub epochs: usize,
    /// Stop after this many optimizer steps (0: no limit beyond `epochs`).
    pub max_steps: u64,
    /// Seed for initialisation, sampling and scheduled-sampling masks.
    pub seed: u64,
    /// Device selection.
    pub device: DeviceKind,
    /// Numeric precision.
    pub precision: Precision,
    /// Log training loss every this many steps.
    pub log_every: u64,
    /// Validate every this many steps (0: at the end of every epoch).
    pub valid_every: u64,
    /// Compare parameters across ranks every this many steps (0: never).
    pub param_check_every: u64,
    /// Intra-op threads per worker (0: one per core of the worker's CPU set).
    pub threads: usize,
    /// cuDNN benchmark mode (autotuned convolution algorithms).
    pub cudnn_benchmark: bool,
    /// TF32 tensor-core arithmetic for float32 convolutions on CUDA (PyTorch's default for
    /// cuDNN convolutions: ~10 bits of mantissa in the products); false: exact float32. No
    /// effect on CPU or on bf16/fp16 convolutions.
    pub tf32: bool,
    /// Deterministic cuDNN algorithms and no benchmark autotuning: a GPU run (and a resumed
    /// one) reproduces its parameters bit for bit, usually a little slower. CPU runs are
    /// deterministic either way.
    pub deterministic: bool,
    /// Future-frame horizons `eval` reports by default.
    pub eval_horizons: Vec<usize>,
    /// The LSTM cell update in fewer element-wise kernels (same values up to rounding).
    pub fused_cell_update: bool,
    /// Layer-by-layer evaluation of the time steps whose inputs are known before the step
    /// (conditioning frames, teacher-forced frames): each layer's input convolution runs once
    /// for all of them (same values up to rounding).
    pub wavefront: bool,
    /// The Conv-TT-LSTM preprocessing convolutions fused into one per new hidden state (same
    /// values up to rounding).
    pub fused_tt: bool,
    /// Channels-last (NHWC) tensors throughout the rollout (same values up to rounding):
    /// `auto`, `on`, `off`.
    pub channels_last: ChannelsLast,
    /// CUDA graphs: capture the forward and backward pass of the fixed-shape step once and
    /// replay it (CUDA only; needs `libconvtt_cuda_graph.so`, built with the worker where the
    /// CUDA headers are). Ignored on CPU.
    pub cuda_graphs: bool,
    /// After this step (its validation and a checkpoint) the run ends as if preempted (exit
    /// 4) and resumes from there later; 0: never. The sweep's ASHA pauses trials at its rungs
    /// with it.
    pub pause_at_step: u64,
    /// Activation checkpointing (the reference's `--use-checkpointing`): keep only the states
    /// between time steps in the forward pass and recompute each step in backward.
    pub activation_checkpointing: bool,
    /// LPIPS weights (one safetensors file, README "LPIPS weights"); empty: no LPIPS. Relative
    /// to the working directory.
    pub lpips_weights: String,
    /// LPIPS input convention.
    pub lpips_preset: LpipsPreset,
    /// TensorBoard event files in `<run>/tb/` (rank 0): the `metrics.jsonl` records as scalars,
    /// the prediction strip at each validation as an image, recoveries as text.
    pub tensorboard: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 400,
            max_steps: 0,
            seed: 0,
            device: DeviceKind::Auto,
            precision: Precision::F32,
            log_every: 50,
            valid_every: 0,
            param_check_every: 500,
            threads: 0,
            cudnn_benchmark: true,
            tf32: true,
            deterministic: false,
            eval_horizons: vec![10, 30],
            fused_cell_update: true,
            wavefront: true,
            fused_tt: true,
            channels_last: ChannelsLast::Auto,
            cuda_graphs: false,
            pause_at_step: 0,
            activation_checkpointing: false,
            lpips_weights: String::new(),
            lpips_preset: LpipsPreset::Reference,
            tensorboard: true,
        }
    }
}

impl TrainConfig {
    pub(crate) fn validate(&self, errs: &mut ConfigErrors) {
        check(
            errs,
            !(self.cuda_graphs && self.activation_checkpointing),
            "train.cuda_graphs",
            || {
                "cannot be combined with train.activation_checkpointing (its backward \
                 interleaves host decisions with the recomputation); turn one off"
                    .into()
            },
        );
        check(errs, self.epochs >= 1, "train.epochs", || {
            "must be at least 1 (got 0)".into()
        });
        check(errs, self.log_every >= 1, "train.log_every", || {
            "must be at least 1 (got 0)".into()
        });
        check(
            errs,
            !self.eval_horizons.is_empty(),
            "train.eval_horizons",
            || "must list at least one horizon, e.g. [10, 30]".into(),
        );
        for (i, h) in self.eval_horizons.iter().enumerate() {
            check(
                errs,
                (1..=1000).contains(h),
                &format!("train.eval_horizons[{i}]"),
                || format!("must be between 1 and 1000 frames (got {h})"),
            );
        }
        check(
            errs,
            self.precision != Precision::Fp16 || self.device != DeviceKind::Cpu,
            "train.precision",
            || {
                "\"fp16\" needs CUDA (f16 convolutions on CPU are ~100x slower than f32); \
                 use \"bf16\" or \"f32\" with train.device = \"cpu\""
                    .into()
            },
        );
    }
}
