//! The ConvLSTM baseline cell (Shi et al. 2015; spec §2.1). Mirrors `ConvLSTMCell` in the
//! reference `code/convlstmcell.py`.
//!
//! One convolution `conv`: Conv(Cin + Ch → 4·Ch, k) over `[X_t | H_{t−1}]`; gates in the
//! reference order i, f, o, g (not i, f, g, o); C_t = f ⊙ C_{t−1} + i ⊙ g; H_t = o ⊙ tanh(C_t).
//! No peepholes, no forget-gate offset.

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use super::compute::ComputeMode;
use super::conv::Conv;
use super::init::InitScheme;
use super::state::CellState;

/// Hyper-parameters of a [`ConvLstmCell`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConvLstmCellConfig {
    /// Cin.
    pub input_channels: i64,
    /// Ch.
    pub hidden_channels: i64,
    /// Kernel size k (odd).
    pub kernel: i64,
    /// Initialisation.
    pub init: InitScheme,
}

impl Default for ConvLstmCellConfig {
    fn default() -> Self {
        Self {
            input_channels: 1,
            hidden_channels: 32,
            kernel: 5,
            init: InitScheme::Pytorch,
        }
    }
}

/// The ConvLSTM cell. Parameters: `conv.weight` `[4Ch, Cin + Ch, k, k]`, `conv.bias` `[4Ch]`.
#[derive(Debug)]
pub struct ConvLstmCell {
    conv: Conv,
    cfg: ConvLstmCellConfig,
}

impl ConvLstmCell {
    /// Registers `p / "conv" / {weight, bias}`.
    pub fn new(p: &nn::Path, cfg: &ConvLstmCellConfig) -> Self {
        let (cin, ch, k) = (cfg.input_channels, cfg.hidden_channels, cfg.kernel);
        Self {
            conv: Conv::new(&(p / "conv"), &[4 * ch, cin + ch, k, k], cfg.init),
            cfg: cfg.clone(),
        }
    }

    /// The cell's hyper-parameters.
    pub fn config(&self) -> &ConvLstmCellConfig {
        &self.cfg
    }

    /// The gate convolution `conv` over `[X | H]`.
    pub fn conv(&self) -> &Conv {
        &self.conv
    }

    /// Zero H and C (one ring slot), in the parameters' dtype.
    ///
    /// # Shapes
    /// → H, C: `[batch, Ch, height, width]`
    pub fn zero_state(&self, batch: i64, height: i64, width: i64, device: Device) -> CellState {
        let opts = (self.conv.weight.kind(), device);
        CellState::zeros(1, batch, self.cfg.hidden_channels, height, width, opts)
    }

    /// One time step; returns H_t and the new state.
    ///
    /// # Shapes
    /// `x`: `[B, Cin, H, W]`, state `[B, Ch, H, W]` → `[B, Ch, H, W]`
    pub fn step(&self, x: &Tensor, state: &CellState) -> (Tensor, CellState) {
        let _span = tracing::trace_span!("conv_lstm_cell").entered();
        conv_lstm_step(|xh| self.conv.forward(xh), x, state)
    }

    /// `conv.weight`, `conv.bias` with `prefix.` prepended (state_dict order).
    pub fn named_parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.conv.named(&format!("{prefix}conv")).into()
    }
}

/// One ConvLSTM time step whose gate pre-activations are `gates([X_t | H_{t−1}])`: the
/// dense cell passes its convolution, the classic-TTD cell its tensor-train convolution.
pub(crate) fn conv_lstm_step(
    gates: impl FnOnce(&Tensor) -> Tensor,
    x: &Tensor,
    state: &CellState,
) -> (Tensor, CellState) {
    let z = gates(&Tensor::cat(&[x, state.latest()], 1));
    let (h, c) = lstm_update(&z, &state.cell);
    let next = state.push(&h, c, 1);
    (h, next)
}

/// The LSTM update from gate pre-activations `z` = [i | f | o | g] (each Ch channels):
/// returns (H_t, C_t).
///
/// # Shapes
/// `z`: `[B, 4Ch, H, W]`, `c`: `[B, Ch, H, W]` → two `[B, Ch, H, W]`
///
/// With [`ComputeMode::fused_cell_update`] the same values come from fewer kernels: the i, f, o
/// gates are contiguous channels, so one sigmoid covers them, and `f·c + i·g` is one `addcmul`.
pub fn lstm_update(z: &Tensor, c: &Tensor) -> (Tensor, Tensor) {
    if ComputeMode::current().fused_cell_update {
        // split/chunk (not narrow): their backward is one concatenation, not a zero-filled
        // full-size gradient per slice.
        let ch = c.size()[1];
        let parts = z.split_with_sizes([3 * ch, ch], 1);
        let ifo = parts[0].sigmoid().chunk(3, 1);
        let g = parts[1].tanh();
        let c_next = (&ifo[1] * c).addcmul(&ifo[0], &g);
        let h = &ifo[2] * c_next.tanh();
        return (h, c_next);
    }
    let gates = z.chunk(4, 1);
    let i = gates[0].sigmoid();
    let f = gates[1].sigmoid();
    let o = gates[2].sigmoid();
    let g = gates[3].tanh();
    let c_next = f * c + i * g;
    let h = o * c_next.tanh();
    (h, c_next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{check_gradients, probe_rollout};
    use tch::Kind;

    /// Gate order i, f, o, g: with only the o-gate bias large and negative the output is ≈ 0
    /// although the cell state is not; with only the f-gate bias large the old C is kept.
    /// The fused update gives the reference update's values and gradients.
    #[test]
    fn fused_cell_update_matches_the_reference_update() {
        tch::manual_seed(5);
        let opts = (Kind::Double, tch::Device::Cpu);
        let z = Tensor::randn([2, 12, 3, 4], opts).set_requires_grad(true);
        let c = Tensor::randn([2, 3, 3, 4], opts).set_requires_grad(true);
        let run = |fused: bool| {
            let _g = ComputeMode {
                fused_cell_update: fused,
                ..ComputeMode::REFERENCE
            }
            .enter();
            let (h, c_next) = lstm_update(&z, &c);
            let loss = (&h * 1.5 + &c_next * &c_next).sum(Kind::Double);
            let grads = Tensor::run_backward(&[&loss], &[&z, &c], false, false);
            (h, c_next, grads)
        };
        let (h0, c0, g0) = run(false);
        let (h1, c1, g1) = run(true);
        let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert!(diff(&h0, &h1) < 1e-12 && diff(&c0, &c1) < 1e-12);
        for (a, b) in g0.iter().zip(&g1) {
            assert!(diff(a, b) < 1e-12, "gradients differ by {}", diff(a, b));
        }
    }

    #[test]
    fn gate_order_is_i_f_o_g() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConvLstmCellConfig {
            input_channels: 1,
            hidden_channels: 2,
            kernel: 3,
            ..Default::default()
        };
        let cell = ConvLstmCell::new(&vs.root(), &cfg);
        let set_bias = |vals: [f64; 4]| {
            tch::no_grad(|| {
                let _ = cell.conv.weight.shallow_clone().zero_();
                let b: Vec<f64> = vals.iter().flat_map(|&v| [v, v]).collect();
                cell.conv
                    .bias
                    .shallow_clone()
                    .copy_(&Tensor::from_slice(&b));
            })
        };
        let x = Tensor::ones([1, 1, 3, 3], (Kind::Float, Device::Cpu));
        // i open, f closed, o closed, g = tanh(1): C = tanh(1), H ≈ 0.
        set_bias([30.0, -30.0, -30.0, 1.0]);
        let (h, s) = cell.step(&x, &cell.zero_state(1, 3, 3, Device::Cpu));
        assert!(h.abs().max().double_value(&[]) < 1e-9);
        assert!((s.cell.mean(Kind::Float).double_value(&[]) - 1f64.tanh()).abs() < 1e-6);
        // i closed, f open, o open: C kept, H = tanh(C).
        set_bias([-30.0, 30.0, 30.0, -1.0]);
        let (h2, s2) = cell.step(&x, &s);
        assert!((&s2.cell - &s.cell).abs().max().double_value(&[]) < 1e-9);
        assert!((h2.mean(Kind::Float).double_value(&[]) - 1f64.tanh().tanh()).abs() < 1e-6);
    }

    #[test]
    fn conv_lstm_gradients_match_finite_differences() {
        tch::manual_seed(2);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConvLstmCellConfig {
            input_channels: 2,
            hidden_channels: 2,
            kernel: 3,
            ..Default::default()
        };
        let cell = ConvLstmCell::new(&vs.root(), &cfg);
        vs.double();
        let opts = (Kind::Double, Device::Cpu);
        let xs: Vec<Tensor> = (0..3).map(|_| Tensor::randn([1, 2, 4, 4], opts)).collect();
        let probe = Tensor::randn([1, 2, 4, 4], opts);
        let loss = || {
            let zero = cell.zero_state(1, 4, 4, Device::Cpu);
            probe_rollout(zero, |x, s| cell.step(x, s), &xs, &probe)
        };
        check_gradients(&vs.trainable_variables(), loss, 6);
    }
}
