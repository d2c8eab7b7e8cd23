//! How this thread computes the model — reduced-precision convolutions, the fused cell update,
//! cuDNN's TF32 and determinism flags — without changing what it computes or its parameters.
//!
//! Like libtorch's autocast state the setting is thread-local and scoped: a worker enters a
//! [`ComputeMode`] for its training thread from `[train]` and the cells read it, so the model's
//! signatures (and the golden tests) stay as they are.

use std::cell::Cell;

use tch::{Device, Kind, Tensor};

use crate::config::{ModelConfig, Precision, TrainConfig};

thread_local! {
    static MODE: Cell<ComputeMode> = const { Cell::new(ComputeMode::REFERENCE) };
}

/// The compute settings of the current thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeMode {
    /// The dtype convolutions compute in (None: their input's own). With `Some(kind)` every
    /// [`Conv::forward`](super::Conv::forward) casts input, weight and bias to `kind` (bf16 or
    /// f16), convolves and casts the result back; gates, cell update, skips, loss and the f32
    /// master weights that gradients flow back to through the casts stay f32. That is the
    /// policy of PyTorch's autocast for `conv2d` (which tch cannot switch to bf16), applied to
    /// the operations that carry nearly all of the model's FLOPs, on CPU and CUDA alike.
    pub conv_kind: Option<Kind>,
    /// The LSTM cell update in fewer element-wise kernels (one sigmoid over the three
    /// contiguous sigmoid gates, `addcmul` for the new cell state) instead of the reference's
    /// one kernel per gate and product. Same values up to float rounding.
    pub fused_cell_update: bool,
    /// The rollout's fast path ([`wavefront`](super::wavefront)): each layer's input
    /// convolution runs once over every time step whose input is known before the step starts
    /// (the conditioning frames, and the frames teacher forcing takes for every sample), layer
    /// by layer, and only the recurrent part runs step by step. Same values up to float
    /// rounding.
    pub wavefront: bool,
    /// The fast path with the tensor train's preprocessing fused: every new hidden state is
    /// convolved once with all N·S preprocessing kernels (one convolution instead of N over
    /// concatenated windows) and the results are kept beside the ring. Same values up to float
    /// rounding.
    pub fused_tt: bool,
    /// The fast path in the channels-last (NHWC) memory layout: inputs, states and weights are
    /// converted once per rollout, so oneDNN and cuDNN skip their per-call reorders.
    pub channels_last: bool,
    /// How cuDNN may convolve (CUDA only; CPU convolutions ignore it).
    pub cudnn: CudnnFlags,
}

/// The per-call flags of libtorch's `_convolution` that PyTorch reads from its global
/// context (`torch.backends.cudnn.{benchmark, deterministic, allow_tf32}`). tch 0.24 can set
/// only the benchmark flag globally, so the model's one convolution (`conv2d_same`) passes all three with
/// every convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudnnFlags {
    /// Autotune the algorithm for each new shape (`train.cudnn_benchmark`).
    pub benchmark: bool,
    /// Deterministic algorithms only (`train.deterministic`).
    pub deterministic: bool,
    /// TF32 tensor cores for float32 convolutions (`train.tf32`).
    pub allow_tf32: bool,
}

impl CudnnFlags {
    /// Exact float32 arithmetic, heuristic algorithm choice: the reference's numbers.
    pub const EXACT: Self = Self {
        benchmark: false,
        deterministic: false,
        allow_tf32: false,
    };

    /// The flags `[train]` asks for; `deterministic` turns benchmark autotuning off.
    pub fn for_config(train: &TrainConfig) -> Self {
        Self {
            benchmark: train.cudnn_benchmark && !train.deterministic,
            deterministic: train.deterministic,
            allow_tf32: train.tf32,
        }
    }
}

impl Default for ComputeMode {
    fn default() -> Self {
        Self::REFERENCE
    }
}

/// Restores the previous [`ComputeMode`] when dropped.
#[must_use = "the mode lasts as long as the guard"]
#[derive(Debug)]
pub struct ComputeGuard {
    previous: ComputeMode,
}

impl Drop for ComputeGuard {
    fn drop(&mut self) {
        MODE.with(|m| m.set(self.previous));
    }
}

impl ComputeMode {
    /// Full precision, one kernel per operation: the reference's arithmetic.
    pub const REFERENCE: Self = Self {
        conv_kind: None,
        fused_cell_update: false,
        wavefront: false,
        fused_tt: false,
        channels_last: false,
        cudnn: CudnnFlags::EXACT,
    };

    /// `t` (4-D) in this mode's memory layout: channels-last when [`Self::channels_last`], else
    /// as it is.
    pub(crate) fn layout(&self, t: Tensor) -> Tensor {
        if self.channels_last {
            super::conv::channels_last(&t)
        } else {
            t
        }
    }

    /// Whether the rollout takes the fast path (any of its three switches on).
    pub fn fast_path(&self) -> bool {
        self.wavefront || self.fused_tt || self.channels_last
    }

    /// The mode `[train]` asks for (`precision`, `fused_cell_update`, `wavefront`,
    /// `fused_tt`, `channels_last`, `tf32`, `deterministic`, `cudnn_benchmark`) for `model`
    /// on `device` (`channels_last = "auto"` depends on both).
    pub fn for_config(train: &TrainConfig, model: &ModelConfig, device: Device) -> Self {
        Self {
            conv_kind: match train.precision {
                Precision::F32 => None,
                Precision::Bf16 => Some(Kind::BFloat16),
                Precision::Fp16 => Some(Kind::Half),
            },
            fused_cell_update: train.fused_cell_update,
            wavefront: train.wavefront,
            fused_tt: train.fused_tt,
            channels_last: train
                .channels_last
                .resolve(&model.block_widths, device.is_cuda()),
            cudnn: CudnnFlags::for_config(train),
        }
    }

    /// This thread computes in `self` until the guard is dropped. Guards nest.
    pub fn enter(self) -> ComputeGuard {
        ComputeGuard {
            previous: MODE.with(|m| m.replace(self)),
        }
    }

    /// The current thread's mode.
    pub fn current() -> Self {
        MODE.with(Cell::get)
    }
}
