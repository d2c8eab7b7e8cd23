//! Parameter initialisation (spec §2.7), selected by [`InitScheme`].
//!
//! * [`InitScheme::Pytorch`] mirrors PyTorch's `Conv2d`/`Conv3d.reset_parameters` used by the
//!   reference `code/` and `code_opt/` trees: `kaiming_uniform_(a = √5)` for the weight, which is
//!   U(−1/√fan_in, 1/√fan_in), and U(−1/√fan_in, 1/√fan_in) for the bias, with
//!   fan_in = in_channels × prod(kernel). For the 5-D preprocessing weight `[C, Ch, k, k, S]`
//!   that is Ch·k²·S.
//! * [`InitScheme::Xavier`] mirrors `eval_paper/`: `xavier_uniform_` with gain 1, i.e.
//!   U(±√(6 / (fan_in + fan_out))) with fan_out = out_channels × prod(kernel), and zero biases.
//!
//! Randomness comes from libtorch's global generator: the caller seeds it with
//! `tch::manual_seed` before building the model. Modules draw in the reference's construction
//! order (weight then bias; within a TT cell `layers[l]` then `layers_[l]` for each l; layers
//! b0l0 … then the output head). Checked once outside the test suite (CPU, torch 2.11, reference
//! `code/` model in a scratch directory): `tch::manual_seed(s)` + [`Network::new`] gives values
//! bit-identical to `torch.manual_seed(s)` + the reference `ConvLSTMNet`, for both cells.
//!
//! [`Network::new`]: super::network::Network::new

use tch::nn::Init;

pub use crate::config::InitScheme;

/// (fan_in, fan_out) of a convolution weight `[out, in, kernel…]`, as PyTorch computes them.
pub fn fans(dims: &[i64]) -> (i64, i64) {
    debug_assert!(
        dims.len() >= 2,
        "a convolution weight has at least two dimensions"
    );
    let receptive: i64 = dims[2..].iter().product();
    (dims[1] * receptive, dims[0] * receptive)
}

/// Initialiser for a convolution weight of shape `dims`.
pub fn weight_init(scheme: InitScheme, dims: &[i64]) -> Init {
    let (fan_in, fan_out) = fans(dims);
    let bound = match scheme {
        InitScheme::Pytorch => 1.0 / (fan_in as f64).sqrt(),
        InitScheme::Xavier => (6.0 / (fan_in + fan_out) as f64).sqrt(),
    };
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Initialiser for the bias of a convolution whose weight has shape `weight_dims`.
pub fn bias_init(scheme: InitScheme, weight_dims: &[i64]) -> Init {
    match scheme {
        InitScheme::Pytorch => {
            let bound = 1.0 / (fans(weight_dims).0 as f64).sqrt();
            Init::Uniform {
                lo: -bound,
                up: bound,
            }
        }
        InitScheme::Xavier => Init::Const(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conv::Conv;
    use tch::{nn, Device};

    fn bounds(t: &tch::Tensor) -> (f64, f64) {
        (t.min().double_value(&[]), t.max().double_value(&[]))
    }

    #[test]
    fn fan_in_of_the_5d_preprocessing_weight_includes_the_window() {
        assert_eq!(fans(&[8, 32, 5, 5, 3]), (32 * 25 * 3, 8 * 25 * 3));
        assert_eq!(fans(&[128, 40, 5, 5]), (1000, 3200));
    }

    /// Draws large tensors and checks that they fill, but never leave, the documented ranges.
    #[test]
    fn pytorch_and_xavier_ranges() {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let dims = [64, 48, 5, 5, 3];
        let pt = Conv::new(&(&vs.root() / "pt"), &dims, InitScheme::Pytorch);
        let xv = Conv::new(&(&vs.root() / "xv"), &dims, InitScheme::Xavier);
        let b_pt = 1.0 / ((48 * 75) as f64).sqrt();
        let b_xv = (6.0 / ((48 * 75 + 64 * 75) as f64)).sqrt();
        for (t, b) in [(&pt.weight, b_pt), (&pt.bias, b_pt), (&xv.weight, b_xv)] {
            let (lo, hi) = bounds(t);
            assert!(lo >= -b && hi <= b, "values outside ±{b}: [{lo}, {hi}]");
            if t.numel() > 1000 {
                assert!(
                    lo < -0.98 * b && hi > 0.98 * b,
                    "range not filled: [{lo}, {hi}] vs ±{b}"
                );
            }
        }
        assert_eq!(bounds(&xv.bias), (0.0, 0.0));
    }

    #[test]
    fn seeded_init_is_reproducible() {
        // libtorch's generator is global to the process and the tests beside this one draw
        // from it too, so the two draws run alone: in a child process of this test binary
        // that runs only this test.
        const CHILD: &str = "CONVTT_TEST_SEEDED_INIT_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "model::init::tests::seeded_init_is_reproducible"])
                .args(["--test-threads=1", "--nocapture"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "{text}");
            return;
        }
        let draw = || {
            tch::manual_seed(3);
            let vs = nn::VarStore::new(Device::Cpu);
            Conv::new(&vs.root(), &[4, 3, 3, 3], InitScheme::Pytorch)
                .weight
                .copy()
        };
        assert!(draw().equal(&draw()));
    }
}
