//! The Conv-TT-LSTM cell (paper §3, Eqs. 8–10; spec §2.2–§2.5). Mirrors `ConvTTLSTMCell` in
//! the reference `code/convlstmcell.py` (identical maths in `code_opt/` and, with the default
//! `version = "v4"`, in `eval_paper/`).
//!
//! Step t: the [`Cttd`] turns the ring of the last M hidden states into T (N preprocessing
//! convolutions over sliding windows of S = M − N + 1 states, Horner accumulation through the
//! cores); the gate convolution `layers[N−1]`: Conv(Cin + C → 4·Ch, k) over `[X_t | T]` (the
//! input convolution W and the last TT core G(1) sharing one bias) gives the i, f, o, g
//! pre-activations; then the LSTM update. H_t overwrites the ring's oldest slot.
//!
//! Parameter names (`code/` layout): `layers.{0…N−2}` cores `[C, C, k, k]`, `layers.{N−1}` gate
//! conv `[4Ch, Cin + C, k, k]`, `layers_.{0…N−1}` preprocessing `[C, Ch, k, k, S]`.
//!
//! `legacy_pointer_mod_order` reproduces `eval_paper/`'s pointer, which advances modulo N
//! instead of M (issue #2; harmless when M = N).

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use super::conv::Conv;
use super::conv_lstm_cell::lstm_update;
use super::cttd::{core_conv, preprocess_conv, Cttd};
use super::init::InitScheme;
use super::state::CellState;

/// Hyper-parameters of a [`ConvTtLstmCell`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConvTtLstmCellConfig {
    /// Cin.
    pub input_channels: i64,
    /// Ch.
    pub hidden_channels: i64,
    /// Order N (number of TT cores).
    pub order: usize,
    /// Steps M (stored past hidden states), M ≥ N.
    pub steps: usize,
    /// Rank C.
    pub rank: i64,
    /// Kernel size k of every convolution (odd).
    pub kernel: i64,
    /// Initialisation.
    pub init: InitScheme,
    /// Advance the ring pointer modulo N (`eval_paper/`) instead of M.
    pub legacy_pointer_mod_order: bool,
    /// Kernel size of the tensor-train part (cores, preprocessing, the T channels of the gate
    /// convolution), odd and at most `kernel`; `kernel` for the paper's model, 1 for the
    /// "standard TTD" ablation (resolved from `model.tt_filter_size` by
    /// [`ModelConfig::tt_kernel`](crate::config::ModelConfig::tt_kernel)).
    pub tt_kernel: i64,
}

impl Default for ConvTtLstmCellConfig {
    fn default() -> Self {
        Self {
            input_channels: 1,
            hidden_channels: 32,
            order: 3,
            steps: 3,
            rank: 8,
            kernel: 5,
            init: InitScheme::Pytorch,
            legacy_pointer_mod_order: false,
            tt_kernel: 5,
        }
    }
}

impl ConvTtLstmCellConfig {
    /// Window length S = M − N + 1.
    pub fn window(&self) -> usize {
        self.steps + 1 - self.order
    }
}

/// The Conv-TT-LSTM cell.
#[derive(Debug)]
pub struct ConvTtLstmCell {
    cttd: Cttd,
    gates: Conv,
    /// With `tt_kernel` < `kernel`: 1 on the X channels, 1 on the T channels only inside the
    /// central tt_kernel × tt_kernel window, so G(1) is a tt_kernel-sized convolution.
    gate_mask: Option<Tensor>,
    cfg: ConvTtLstmCellConfig,
}

impl ConvTtLstmCell {
    /// Registers `p / "layers" / l` and `p / "layers_" / l`, drawing the initial values in the
    /// reference's order (`layers[l]` then `layers_[l]` for l = 0 … N−1).
    pub fn new(p: &nn::Path, cfg: &ConvTtLstmCellConfig) -> Self {
        assert!(
            cfg.order >= 1 && cfg.steps >= cfg.order,
            "need 1 ≤ N ≤ M (validated config)"
        );
        let (cin, ch, c, k) = (
            cfg.input_channels,
            cfg.hidden_channels,
            cfg.rank,
            cfg.kernel,
        );
        let s = cfg.window() as i64;
        let n = cfg.order;
        let tk = cfg.tt_kernel;
        assert!(
            tk % 2 == 1 && tk <= k,
            "tt_kernel odd and ≤ kernel (validated config)"
        );
        let mut cores = Vec::new();
        let mut preprocess = Vec::new();
        let mut gates = None;
        for l in 0..n {
            if l + 1 < n {
                cores.push(core_conv(p, l, c, tk, cfg.init));
            } else {
                gates = Some(Conv::new(
                    &(p / "layers" / l),
                    &[4 * ch, cin + c, k, k],
                    cfg.init,
                ));
            }
            preprocess.push(preprocess_conv(p, l, ch, c, s, tk, cfg.init));
        }
        let gates = gates.expect("order ≥ 1");
        let gate_mask = (tk < k).then(|| {
            let opts = (gates.weight.kind(), gates.weight.device());
            let mask = Tensor::ones([1, cin + c, k, k], opts);
            let off = (k - tk) / 2;
            let _ = mask.narrow(1, cin, c).fill_(0.0);
            let _ = mask
                .narrow(1, cin, c)
                .narrow(2, off, tk)
                .narrow(3, off, tk)
                .fill_(1.0);
            // Masked weights start (and, with zero gradient, stay) at zero.
            tch::no_grad(|| {
                let _ = gates.weight.shallow_clone().g_mul_(&mask);
            });
            mask
        });
        Self {
            cttd: Cttd { cores, preprocess },
            gates,
            gate_mask,
            cfg: cfg.clone(),
        }
    }

    /// The cell's hyper-parameters.
    pub fn config(&self) -> &ConvTtLstmCellConfig {
        &self.cfg
    }

    /// The tensor-train part (cores and preprocessing).
    pub fn cttd(&self) -> &Cttd {
        &self.cttd
    }

    /// The gate convolution `layers.{N−1}`.
    pub fn gates(&self) -> &Conv {
        &self.gates
    }

    /// With `tt_kernel` < `kernel`: the 0/1 mask of the gate weight (`[1, Cin + C, k, k]`) that
    /// makes G(1) a `tt_kernel`-sized convolution.
    pub fn gate_mask(&self) -> Option<&Tensor> {
        self.gate_mask.as_ref()
    }

    /// The ring pointer's modulus: M, or N with `legacy_pointer_mod_order`.
    pub fn ring_modulus(&self) -> usize {
        if self.cfg.legacy_pointer_mod_order {
            self.cfg.order
        } else {
            self.cfg.steps
        }
    }

    /// M zero hidden states, zero C, pointer 0, in the parameters' dtype.
    ///
    /// # Shapes
    /// → M × `[batch, Ch, height, width]` and C `[batch, Ch, height, width]`
    pub fn zero_state(&self, batch: i64, height: i64, width: i64, device: Device) -> CellState {
        let opts = (self.gates.weight.kind(), device);
        CellState::zeros(
            self.cfg.steps,
            batch,
            self.cfg.hidden_channels,
            height,
            width,
            opts,
        )
    }

    /// One time step; returns H_t and the new state.
    ///
    /// # Shapes
    /// `x`: `[B, Cin, H, W]`, state M × `[B, Ch, H, W]` → `[B, Ch, H, W]`
    pub fn step(&self, x: &Tensor, state: &CellState) -> (Tensor, CellState) {
        let _span = tracing::trace_span!("conv_tt_lstm_cell").entered();
        let t = self.cttd.forward(state);
        let xt = Tensor::cat(&[x, &t], 1);
        let z = match &self.gate_mask {
            None => self.gates.forward(&xt),
            Some(mask) => self.gates.forward_masked(&xt, mask),
        };
        let (h, c) = lstm_update(&z, &state.cell);
        let next = state.push(&h, c, self.ring_modulus());
        (h, next)
    }

    /// Parameters in the reference state_dict order: `layers.0 …`, then `layers_.0 …`, each
    /// name with `prefix` prepended.
    pub fn named_parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (l, core) in self.cttd.cores.iter().chain([&self.gates]).enumerate() {
            out.extend(core.named(&format!("{prefix}layers.{l}")));
        }
        for (l, pre) in self.cttd.preprocess.iter().enumerate() {
            out.extend(pre.named(&format!("{prefix}layers_.{l}")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{check_gradients, probe_rollout};
    use tch::Kind;

    fn cfg(order: usize, steps: usize) -> ConvTtLstmCellConfig {
        ConvTtLstmCellConfig {
            input_channels: 1,
            hidden_channels: 2,
            order,
            steps,
            rank: 2,
            kernel: 3,
            tt_kernel: 3,
            ..Default::default()
        }
    }

    #[test]
    fn names_and_shapes_follow_the_reference_table() {
        let vs = nn::VarStore::new(Device::Cpu);
        let c = ConvTtLstmCellConfig {
            input_channels: 2,
            hidden_channels: 4,
            order: 3,
            steps: 5,
            rank: 3,
            kernel: 3,
            tt_kernel: 3,
            ..Default::default()
        };
        let cell = ConvTtLstmCell::new(&vs.root(), &c);
        let got: Vec<(String, Vec<i64>)> = cell
            .named_parameters("")
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect();
        // Spec §10.1's state_dict order and shapes.
        let want: Vec<(&str, Vec<i64>)> = vec![
            ("layers.0.weight", vec![3, 3, 3, 3]),
            ("layers.0.bias", vec![3]),
            ("layers.1.weight", vec![3, 3, 3, 3]),
            ("layers.1.bias", vec![3]),
            ("layers.2.weight", vec![16, 5, 3, 3]),
            ("layers.2.bias", vec![16]),
            ("layers_.0.weight", vec![3, 4, 3, 3, 3]),
            ("layers_.0.bias", vec![3]),
            ("layers_.1.weight", vec![3, 4, 3, 3, 3]),
            ("layers_.1.bias", vec![3]),
            ("layers_.2.weight", vec![3, 4, 3, 3, 3]),
            ("layers_.2.bias", vec![3]),
        ];
        let want: Vec<(String, Vec<i64>)> =
            want.into_iter().map(|(n, s)| (n.to_owned(), s)).collect();
        assert_eq!(got, want);
        // The var store holds exactly these names (no `__N` renames).
        let mut vs_names: Vec<String> = vs.variables().into_keys().collect();
        vs_names.sort();
        let mut ours: Vec<String> = got.into_iter().map(|(n, _)| n).collect();
        ours.sort();
        assert_eq!(vs_names, ours);
    }

    /// With M > N the legacy pointer leaves slots N … M−1 at zero for ever, which changes the
    /// output from step N on; with M = N both pointers are the same.
    #[test]
    fn legacy_pointer_changes_outputs_only_when_steps_exceed_order() {
        for (order, steps, differs) in [(2, 4, true), (3, 3, false)] {
            tch::manual_seed(4);
            let vs = nn::VarStore::new(Device::Cpu);
            let fixed = ConvTtLstmCell::new(&vs.root(), &cfg(order, steps));
            let mut legacy_cfg = cfg(order, steps);
            legacy_cfg.legacy_pointer_mod_order = true;
            let legacy = ConvTtLstmCell {
                cttd: Cttd {
                    cores: fixed
                        .cttd
                        .cores
                        .iter()
                        .map(|c| Conv {
                            weight: c.weight.shallow_clone(),
                            bias: c.bias.shallow_clone(),
                        })
                        .collect(),
                    preprocess: fixed
                        .cttd
                        .preprocess
                        .iter()
                        .map(|c| Conv {
                            weight: c.weight.shallow_clone(),
                            bias: c.bias.shallow_clone(),
                        })
                        .collect(),
                },
                gates: Conv {
                    weight: fixed.gates.weight.shallow_clone(),
                    bias: fixed.gates.bias.shallow_clone(),
                },
                gate_mask: None,
                cfg: legacy_cfg,
            };
            let (mut sa, mut sb) = (
                fixed.zero_state(1, 4, 4, Device::Cpu),
                legacy.zero_state(1, 4, 4, Device::Cpu),
            );
            let mut max_diff = 0f64;
            for t in 0..6 {
                let x = Tensor::randn([1, 1, 4, 4], (Kind::Float, Device::Cpu));
                let (ha, na) = fixed.step(&x, &sa);
                let (hb, nb) = legacy.step(&x, &sb);
                let d = (&ha - &hb).abs().max().double_value(&[]);
                if t < order {
                    assert_eq!(d, 0.0, "step {t}: identical before the ring wraps");
                }
                max_diff = max_diff.max(d);
                (sa, sb) = (na, nb);
            }
            let untouched = steps > order
                && sb.hidden[order..]
                    .iter()
                    .all(|h| h.abs().max().double_value(&[]) == 0.0);
            assert_eq!(untouched, differs);
            assert_eq!(
                max_diff > 1e-6,
                differs,
                "N={order} M={steps}: max diff {max_diff}"
            );
        }
    }

    #[test]
    fn conv_tt_lstm_gradients_match_finite_differences() {
        tch::manual_seed(8);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let cell = ConvTtLstmCell::new(&vs.root(), &cfg(2, 3));
        vs.double();
        let opts = (Kind::Double, Device::Cpu);
        let xs: Vec<Tensor> = (0..4).map(|_| Tensor::randn([1, 1, 4, 4], opts)).collect();
        let probe = Tensor::randn([1, 2, 4, 4], opts);
        let loss = || {
            let zero = cell.zero_state(1, 4, 4, Device::Cpu);
            probe_rollout(zero, |x, s| cell.step(x, s), &xs, &probe)
        };
        check_gradients(&vs.trainable_variables(), loss, 4);
    }

    /// `tt_kernel` = 1 (the "standard TTD" ablation): cores and preprocessing are 1×1, the gate
    /// convolution equals a k×k convolution of X plus a 1×1 convolution of T, and the masked
    /// gate weights get zero gradient.
    #[test]
    fn tt_kernel_one_makes_the_tensor_train_pointwise() {
        tch::manual_seed(8);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut c = cfg(2, 3);
        c.tt_kernel = 1;
        let cell = ConvTtLstmCell::new(&vs.root(), &c);
        assert!(cell
            .cttd
            .cores
            .iter()
            .all(|g| g.weight.size()[2..] == [1, 1]));
        assert!(cell
            .cttd
            .preprocess
            .iter()
            .all(|p| p.weight.size()[2..] == [1, 1, 2]));
        let w = &cell.gates.weight; // [8, 1 + 2, 3, 3]
        let x = Tensor::randn([2, 1, 5, 5], (Kind::Float, Device::Cpu));
        let t = Tensor::randn([2, 2, 5, 5], (Kind::Float, Device::Cpu));
        let z = cell
            .gates
            .forward_masked(&Tensor::cat(&[&x, &t], 1), cell.gate_mask.as_ref().unwrap());
        let wx = w.narrow(1, 0, 1);
        let wt = w.narrow(1, 1, 2).narrow(2, 1, 1).narrow(3, 1, 1);
        let want = x.conv2d(&wx, Some(&cell.gates.bias), [1, 1], [1, 1], [1, 1], 1)
            + t.conv2d(&wt, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1);
        assert!((&z - &want).abs().max().double_value(&[]) < 1e-5);
        // Masked weights start at zero and get no gradient through a whole step.
        let outside = |g: &Tensor| -> f64 {
            let m = cell.gate_mask.as_ref().unwrap();
            let keep: Tensor = m.ones_like() - m;
            (g * keep).abs().sum(Kind::Double).double_value(&[])
        };
        assert_eq!(outside(w), 0.0);
        let s = cell.zero_state(2, 5, 5, Device::Cpu);
        let (h, s) = cell.step(&x, &s);
        let (h2, _) = cell.step(&h.narrow(1, 0, 1), &s);
        h2.sum(Kind::Float).backward();
        assert_eq!(outside(&w.grad()), 0.0);
        assert!(w.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
    }
}
