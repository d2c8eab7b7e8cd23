//! A stride-1, zero-"same"-padded convolution with a bias, registered under the PyTorch names
//! `weight` and `bias` (reference `nn.Conv2d(..., padding = k // 2, bias = True)` and the
//! preprocessing `nn.Conv3d` of `code/convlstmcell.py`).
//!
//! A 4-D weight `[out, in, k, k]` is a `Conv2d`. A 5-D weight `[C, Ch, k, k, S]` is the
//! reference's Conv3d over S stacked window states; [`Conv::forward`] evaluates it as the
//! equivalent 2-D convolution over the S states concatenated along channels (oldest first),
//! with the weight permuted as in spec §2.4: `W2[o, s·Ch + c, y, x] = W3[o, c, y, x, s]`.

use tch::{nn, Tensor};

use super::compute::ComputeMode;
use super::init::{bias_init, weight_init, InitScheme};

/// Convolution parameters plus the padding rule.
#[derive(Debug)]
pub struct Conv {
    /// `[out, in, k, k]` or, for the preprocessing convolution, `[C, Ch, k, k, S]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
}

impl Conv {
    /// Registers `p / "weight"` (shape `dims`) and `p / "bias"` (shape `[dims[0]]`), drawing
    /// the weight first, as PyTorch does.
    pub fn new(p: &nn::Path, dims: &[i64], init: InitScheme) -> Self {
        let weight = p.var("weight", dims, weight_init(init, dims));
        let bias = p.var("bias", &[dims[0]], bias_init(init, dims));
        Self { weight, bias }
    }

    /// Kernel size k.
    pub fn kernel(&self) -> i64 {
        self.weight.size()[2]
    }

    /// The weight as a 2-D convolution weight: unchanged when 4-D, permuted and merged per
    /// spec §2.4 when 5-D.
    pub fn weight_2d(&self) -> Tensor {
        to_conv2d_layout(&self.weight)
    }

    /// # Shapes
    /// `[B, in, H, W] -> [B, out, H, W]`, where `in` is `S·Ch` for a 5-D weight (the window
    /// states concatenated along channels, oldest first).
    ///
    /// Computes in [`ComputeMode::conv_kind`] when set, returning `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        conv2d_same(x, &self.weight_2d(), Some(&self.bias))
    }

    /// [`Self::forward`] with the (4-D) weight multiplied element-wise by `mask` (broadcast),
    /// so masked weights have no effect and receive zero gradient.
    pub fn forward_masked(&self, x: &Tensor, mask: &Tensor) -> Tensor {
        conv2d_same(x, &self.masked_weight(mask), Some(&self.bias))
    }

    /// The (4-D) weight multiplied element-wise by `mask` (broadcast, moved to the weight's
    /// device and dtype).
    pub fn masked_weight(&self, mask: &Tensor) -> Tensor {
        let mask = mask
            .to_device(self.weight.device())
            .to_kind(self.weight.kind());
        &self.weight * mask
    }

    /// `(prefix.weight, weight), (prefix.bias, bias)` in state_dict order.
    pub fn named(&self, prefix: &str) -> [(String, Tensor); 2] {
        [
            (format!("{prefix}.weight"), self.weight.shallow_clone()),
            (format!("{prefix}.bias"), self.bias.shallow_clone()),
        ]
    }
}

/// A stride-1 "same" convolution (odd kernel, zero padding k/2) computed in
/// [`ComputeMode::conv_kind`] when set, returning `x`'s dtype, with the mode's cuDNN flags
/// (TF32, determinism, benchmark).
///
/// It calls libtorch's `_convolution` — what `conv2d` calls with the flags of PyTorch's global
/// context — so the flags are this thread's, not the process's; the arithmetic on CPU is the
/// same as `conv2d`'s.
///
/// # Shapes
/// `x`: `[B, in, H, W]`, `weight`: `[out, in, k, k]`, `bias`: `[out]` → `[B, out, H, W]`
pub(crate) fn conv2d_same(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let k = weight.size()[2];
    let mode = ComputeMode::current();
    let flags = mode.cudnn;
    let conv = |x: &Tensor, w: &Tensor, b: Option<Tensor>| {
        x.internal_convolution(
            w,
            b.as_ref(),
            [1, 1],
            [k / 2, k / 2],
            [1, 1],
            false,
            [0, 0],
            1,
            flags.benchmark,
            flags.deterministic,
            true,
            flags.allow_tf32,
        )
    };
    match mode.conv_kind {
        Some(low) if low != x.kind() => conv(
            &x.to_kind(low),
            &weight.to_kind(low),
            bias.map(|b| b.to_kind(low)),
        )
        .to_kind(x.kind()),
        _ => conv(x, weight, bias.map(Tensor::shallow_clone)),
    }
}

/// `t` (4-D) with the same values in the channels-last memory layout (NHWC strides, shape and
/// indexing unchanged); no copy when it already is. Convolutions, element-wise operations and
/// concatenations keep the layout of their inputs, so converting a rollout's inputs, states
/// and weights once keeps the whole recurrence in it.
pub(crate) fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Spec §2.4: `[C, Ch, k, k, S]` (`code/`) → `[C, S·Ch, k, k]` (`code_opt/`); a 4-D weight is
/// returned as is.
pub fn to_conv2d_layout(w: &Tensor) -> Tensor {
    let d = w.size();
    if d.len() == 4 {
        return w.shallow_clone();
    }
    debug_assert_eq!(d.len(), 5);
    w.permute([0, 4, 1, 2, 3])
        .reshape([d[0], d[4] * d[1], d[2], d[3]])
}

/// Inverse of [`to_conv2d_layout`]: `[C, S·Ch, k, k]` → `[C, Ch, k, k, S]` for a given S.
pub fn to_conv3d_layout(w: &Tensor, window: i64) -> Tensor {
    let d = w.size();
    debug_assert_eq!(d.len(), 4);
    w.reshape([d[0], window, d[1] / window, d[2], d[3]])
        .permute([0, 2, 3, 4, 1])
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Under a bf16 guard a convolution returns f32 close to the f32 result (bf16 keeps 8 bits
    /// of mantissa), gradients reach the f32 weight, and dropping the guard restores f32.
    #[test]
    fn reduced_precision_convolution_stays_close_and_restores() {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let conv = Conv {
            weight: Tensor::randn([6, 4, 3, 3], opts).set_requires_grad(true),
            bias: Tensor::randn([6], opts).set_requires_grad(true),
        };
        let x = Tensor::rand([2, 4, 8, 8], opts);
        let full = conv.forward(&x);
        let low = {
            let bf16 = ComputeMode {
                conv_kind: Some(Kind::BFloat16),
                ..ComputeMode::default()
            };
            let _g = bf16.enter();
            assert_eq!(ComputeMode::current(), bf16);
            {
                let _inner = ComputeMode::default().enter();
                assert_eq!(ComputeMode::current().conv_kind, None, "guards nest");
            }
            assert_eq!(ComputeMode::current(), bf16);
            conv.forward(&x)
        };
        assert_eq!(ComputeMode::current().conv_kind, None);
        assert_eq!(low.kind(), Kind::Float);
        let rel = ((&low - &full).norm() / full.norm()).double_value(&[]);
        assert!(rel > 0.0 && rel < 1e-2, "relative difference {rel}");
        low.sum(Kind::Float).backward();
        let g = conv.weight.grad();
        assert_eq!(g.kind(), Kind::Float);
        // d(sum)/dW of a conv is the sum of input patches: nonzero.
        assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    /// The 2-D evaluation equals the reference's Conv3d on the states stacked on a new last
    /// axis (padding (k/2, k/2, 0)), and the layout maps are inverse to each other.
    #[test]
    fn conv3d_and_permuted_conv2d_agree() {
        tch::manual_seed(11);
        let opts = (Kind::Double, Device::Cpu);
        let (c, ch, k, s) = (3, 4, 3, 3);
        let w3 = Tensor::randn([c, ch, k, k, s], opts);
        let bias = Tensor::randn([c], opts);
        let states: Vec<Tensor> = (0..s).map(|_| Tensor::randn([2, ch, 5, 6], opts)).collect();
        let conv = Conv {
            weight: w3.shallow_clone(),
            bias: bias.shallow_clone(),
        };
        let ours = conv.forward(&Tensor::cat(&states, 1));
        let reference = Tensor::stack(&states, -1)
            .conv3d(&w3, Some(&bias), [1, 1, 1], [k / 2, k / 2, 0], [1, 1, 1], 1)
            .squeeze_dim(-1);
        assert_eq!(ours.size(), [2, c, 5, 6]);
        let err = (&ours - &reference).abs().max().double_value(&[]);
        assert!(err < 1e-12, "max difference {err}");
        let w2 = to_conv2d_layout(&w3);
        assert_eq!(w2.size(), [c, s * ch, k, k]);
        // Spot-check the index rule W2[o, s·Ch + c, y, x] = W3[o, c, y, x, s].
        assert_eq!(
            w2.double_value(&[2, 4 + 1, 0, 2]),
            w3.double_value(&[2, 1, 0, 2, 1])
        );
        assert!(to_conv3d_layout(&w2, s).equal(&w3));
    }
}
