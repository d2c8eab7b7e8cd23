//! The classic-TTD ConvLSTM baseline (paper §5, Eqs. 12–13): a ConvLSTM cell (spec §2.1) whose
//! convolution weight W `[4·Ch, Cin + Ch, k, k]` is stored in the tensor-train format of
//! Garipov et al. 2016 ("Ultimate tensorization: compressing convolutional and FC layers
//! alike", TT-conv) instead of densely. It is the "ConvLSTM compressed with standard tensor-train
//! decomposition" the paper compares the convolutional tensor-train (CTTD) against.
//!
//! Factorisation: the input channels Cin + Ch = c_1·…·c_d and the outputs 4·Ch = s_1·…·s_d are
//! split into d = `model.ttd_order` factors ≥ 2 by [`tt_factors`] (balanced, descending). The
//! kernel is
//!
//! ```text
//! W[(s_1…s_d), (c_1…c_d), y, x] = G_0[y, x, :] · G_1[:, c_1, s_1, :] · … · G_d[:, c_d, s_d, :]
//! ```
//!
//! with the spatial core G_0 `[k, k, r_1]`, channel cores G_i `[r_i, c_i, s_i, r_{i+1}]`,
//! r_{d+1} = 1, ranks r_i = `model.ttd_ranks`; channel indices are row-major in the factors (c_1
//! most significant). The bias `[4·Ch]` stays dense. Each step reconstructs W from the cores
//! ([`TtConv::full_weight`], a few thousand MACs) and runs one dense convolution, so the
//! activations and MACs per pixel equal the ConvLSTM's while the parameters are
//! k²·r_1 + Σ r_i·c_i·s_i·r_{i+1} + 4·Ch per layer.
//!
//! Initialisation: the cores are N(0, σ²) with σ² = (v / Π r_i)^{1/(d+1)}, so that every
//! element of the reconstructed W has the variance v of the dense cell's initialisation
//! (`pytorch`: 1/(3·fan_in); `xavier`: 2/(fan_in + fan_out)); the bias as the dense cell's.
//!
//! Parameter names: `layers.b{b}l{l}.conv.cores.{0…d}`, `layers.b{b}l{l}.conv.bias` (there is
//! no reference implementation to match).

use tch::nn::Init;
use tch::{nn, Device, Tensor};

use super::conv_lstm_cell::conv_lstm_step;
use super::init::{bias_init, fans, InitScheme};
use super::state::CellState;
pub use crate::config::tt_factors;

/// Hyper-parameters of a [`TtdConvLstmCell`].
#[derive(Debug, Clone, PartialEq)]
pub struct TtdConvLstmCellConfig {
    /// Cin.
    pub input_channels: i64,
    /// Ch.
    pub hidden_channels: i64,
    /// Kernel size k (odd).
    pub kernel: i64,
    /// c_1 … c_d with Π c_i = Cin + Ch.
    pub in_factors: Vec<i64>,
    /// s_1 … s_d with Π s_i = 4·Ch.
    pub out_factors: Vec<i64>,
    /// r_1 … r_d.
    pub ranks: Vec<i64>,
    /// Initialisation.
    pub init: InitScheme,
}

impl TtdConvLstmCellConfig {
    /// The factorisation of [`tt_factors`] for `d` factors and ranks `ranks` (length d).
    /// `None` when Cin + Ch or 4·Ch has fewer than d prime factors.
    pub fn factorised(
        input_channels: i64,
        hidden_channels: i64,
        kernel: i64,
        ranks: &[usize],
        init: InitScheme,
    ) -> Option<Self> {
        let d = ranks.len();
        let f = |n: i64| -> Option<Vec<i64>> {
            Some(
                tt_factors(n as usize, d)?
                    .into_iter()
                    .map(|v| v as i64)
                    .collect(),
            )
        };
        Some(Self {
            input_channels,
            hidden_channels,
            kernel,
            in_factors: f(input_channels + hidden_channels)?,
            out_factors: f(4 * hidden_channels)?,
            ranks: ranks.iter().map(|&r| r as i64).collect(),
            init,
        })
    }

    /// Shapes of the cores G_0 … G_d.
    pub fn core_shapes(&self) -> Vec<Vec<i64>> {
        let k = self.kernel;
        let d = self.ranks.len();
        let mut out = vec![vec![k, k, self.ranks[0]]];
        for i in 0..d {
            let next = if i + 1 < d { self.ranks[i + 1] } else { 1 };
            out.push(vec![
                self.ranks[i],
                self.in_factors[i],
                self.out_factors[i],
                next,
            ]);
        }
        out
    }

    /// Parameters of the cell: Σ core elements + 4·Ch.
    pub fn parameters(&self) -> i64 {
        let cores: i64 = self
            .core_shapes()
            .iter()
            .map(|s| s.iter().product::<i64>())
            .sum();
        cores + 4 * self.hidden_channels
    }
}

/// A convolution `[Cout, Cin, k, k]` (stride 1, zero "same" padding, bias) whose weight is a
/// tensor train.
#[derive(Debug)]
pub struct TtConv {
    /// G_0 `[k, k, r_1]`, G_i `[r_i, c_i, s_i, r_{i+1}]`.
    pub cores: Vec<Tensor>,
    /// `[Cout]`.
    pub bias: Tensor,
    cfg: TtdConvLstmCellConfig,
}

impl TtConv {
    /// Registers `p / "cores" / {0…d}` then `p / "bias"`.
    pub fn new(p: &nn::Path, cfg: &TtdConvLstmCellConfig) -> Self {
        let (cin, cout, k) = (
            cfg.input_channels + cfg.hidden_channels,
            4 * cfg.hidden_channels,
            cfg.kernel,
        );
        let dense = [cout, cin, k, k];
        let (fan_in, fan_out) = fans(&dense);
        let variance = match cfg.init {
            InitScheme::Pytorch => 1.0 / (3.0 * fan_in as f64),
            InitScheme::Xavier => 2.0 / (fan_in + fan_out) as f64,
        };
        let shapes = cfg.core_shapes();
        let rank_product: f64 = cfg.ranks.iter().map(|&r| r as f64).product();
        let stdev = (variance / rank_product).powf(0.5 / shapes.len() as f64);
        let cp = p / "cores";
        let cores = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| cp.var(&i.to_string(), s, Init::Randn { mean: 0.0, stdev }))
            .collect();
        let bias = p.var("bias", &[cout], bias_init(cfg.init, &dense));
        Self {
            cores,
            bias,
            cfg: cfg.clone(),
        }
    }

    /// The dense kernel `[Cout, Cin, k, k]`: the cores contracted left to right (Eq. 12).
    pub fn full_weight(&self) -> Tensor {
        let k = self.cfg.kernel;
        let g0 = &self.cores[0];
        let r1 = g0.size()[2];
        // a: [P = k², A = Π c so far, B = Π s so far, r]
        let mut a = g0.reshape([k * k, 1, 1, r1]);
        for g in &self.cores[1..] {
            let [p, ai, bi, r] = a.size()[..] else {
                unreachable!("4-D")
            };
            let [_, c, s, q] = g.size()[..] else {
                unreachable!("4-D")
            };
            a = a
                .reshape([p * ai * bi, r])
                .matmul(&g.reshape([r, c * s * q]))
                .reshape([p, ai, bi, c, s, q])
                .permute([0, 1, 3, 2, 4, 5])
                .reshape([p, ai * c, bi * s, q]);
        }
        let s = a.size();
        a.reshape([k, k, s[1], s[2]]).permute([3, 2, 0, 1])
    }

    /// # Shapes
    /// `[B, Cin, H, W]` → `[B, Cout, H, W]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        super::conv::conv2d_same(x, &self.full_weight(), Some(&self.bias))
    }
}

/// The ConvLSTM cell with a tensor-train convolution weight.
#[derive(Debug)]
pub struct TtdConvLstmCell {
    conv: TtConv,
    cfg: TtdConvLstmCellConfig,
}

impl TtdConvLstmCell {
    /// Registers `p / "conv" / "cores" / {0…d}` and `p / "conv" / "bias"`.
    pub fn new(p: &nn::Path, cfg: &TtdConvLstmCellConfig) -> Self {
        Self {
            conv: TtConv::new(&(p / "conv"), cfg),
            cfg: cfg.clone(),
        }
    }

    /// The cell's hyper-parameters.
    pub fn config(&self) -> &TtdConvLstmCellConfig {
        &self.cfg
    }

    /// The tensor-train convolution.
    pub fn conv(&self) -> &TtConv {
        &self.conv
    }

    /// Zero H and C (one ring slot), in the parameters' dtype.
    pub fn zero_state(&self, batch: i64, height: i64, width: i64, device: Device) -> CellState {
        let opts = (self.conv.bias.kind(), device);
        CellState::zeros(1, batch, self.cfg.hidden_channels, height, width, opts)
    }

    /// One time step, as [`super::ConvLstmCell::step`] with the reconstructed weight.
    ///
    /// # Shapes
    /// `x`: `[B, Cin, H, W]`, state `[B, Ch, H, W]` → `[B, Ch, H, W]`
    pub fn step(&self, x: &Tensor, state: &CellState) -> (Tensor, CellState) {
        let _span = tracing::trace_span!("ttd_conv_lstm_cell").entered();
        conv_lstm_step(|xh| self.conv.forward(xh), x, state)
    }

    /// `conv.cores.{i}`, then `conv.bias`, with `prefix` prepended.
    pub fn named_parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .conv
            .cores
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{prefix}conv.cores.{i}"), t.shallow_clone()))
            .collect();
        out.push((format!("{prefix}conv.bias"), self.conv.bias.shallow_clone()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conv_lstm_cell::lstm_update;
    use crate::model::testing::{check_gradients, probe_rollout};
    use tch::Kind;

    fn cfg(cin: i64, ch: i64, ranks: &[usize]) -> TtdConvLstmCellConfig {
        TtdConvLstmCellConfig::factorised(cin, ch, 3, ranks, InitScheme::Pytorch).unwrap()
    }

    /// Element by element, W[o, i, y, x] = G_0[y, x, :] · Π_j G_j[:, c_j, s_j, :] with the
    /// mixed-radix digits of i and o, computed with plain f64 loops.
    #[test]
    fn reconstructed_kernel_equals_the_contraction_of_its_cores() {
        tch::manual_seed(4);
        for ranks in [vec![3usize], vec![2, 3], vec![2, 3, 2]] {
            let vs = nn::VarStore::new(Device::Cpu);
            // Cin + Ch = 2 + 6 = 8 = 2·2·2 (d ≤ 3), 4·Ch = 24 = 2·2·2·3.
            let c = cfg(2, 6, &ranks);
            let conv = TtConv::new(&vs.root(), &c);
            let w = conv.full_weight();
            assert_eq!(w.size(), [24, 8, 3, 3]);
            let cores: Vec<(Vec<i64>, Vec<f64>)> = conv
                .cores
                .iter()
                .map(|t| {
                    let v = Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
                    (t.size(), v)
                })
                .collect();
            let digits = |mut n: i64, radix: &[i64]| -> Vec<i64> {
                let mut out = vec![0; radix.len()];
                for j in (0..radix.len()).rev() {
                    out[j] = n % radix[j];
                    n /= radix[j];
                }
                out
            };
            let mut worst = 0f64;
            for o in 0..24 {
                for i in 0..8 {
                    for y in 0..3 {
                        for x in 0..3 {
                            let (s0, g0) = &cores[0];
                            let r = s0[2];
                            let mut v: Vec<f64> =
                                (0..r).map(|a| g0[((y * 3 + x) * r + a) as usize]).collect();
                            let (ci, si) = (digits(i, &c.in_factors), digits(o, &c.out_factors));
                            for (j, (sh, g)) in cores[1..].iter().enumerate() {
                                let (rr, cc, ss, qq) = (sh[0], sh[1], sh[2], sh[3]);
                                v = (0..qq)
                                    .map(|q| {
                                        (0..rr)
                                            .map(|a| {
                                                v[a as usize]
                                                    * g[(((a * cc + ci[j]) * ss + si[j]) * qq + q)
                                                        as usize]
                                            })
                                            .sum()
                                    })
                                    .collect();
                            }
                            assert_eq!(v.len(), 1);
                            let got = w.double_value(&[o, i, y, x]);
                            worst = worst.max((got - v[0]).abs());
                        }
                    }
                }
            }
            assert!(worst < 1e-5, "ranks {ranks:?}: max difference {worst}");
        }
    }

    #[test]
    fn parameter_count_is_the_core_sizes_plus_the_bias() {
        let vs = nn::VarStore::new(Device::Cpu);
        // Cin + Ch = 32 + 64 = 96 → (12, 8); 4·Ch = 256 → (16, 16); ranks 4, 5; k = 3.
        let c = cfg(32, 64, &[4, 5]);
        assert_eq!(c.in_factors, [12, 8]);
        assert_eq!(c.out_factors, [16, 16]);
        let cell = TtdConvLstmCell::new(&vs.root(), &c);
        let want = 9 * 4 + 4 * 12 * 16 * 5 + 5 * 8 * 16 + 256;
        assert_eq!(c.parameters(), want);
        let got: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(got, want);
        let names: Vec<String> = cell
            .named_parameters("x.")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "x.conv.cores.0",
                "x.conv.cores.1",
                "x.conv.cores.2",
                "x.conv.bias"
            ]
        );
    }

    /// The cores' initial variance gives the reconstructed kernel the dense cell's variance.
    #[test]
    fn initial_kernel_variance_matches_the_dense_initialisation() {
        tch::manual_seed(9);
        let vs = nn::VarStore::new(Device::Cpu);
        let c = cfg(32, 64, &[8, 8]);
        let conv = TtConv::new(&vs.root(), &c);
        let var = conv.full_weight().var(true).double_value(&[]);
        let want = 1.0 / (3.0 * (96 * 9) as f64);
        assert!((var / want - 1.0).abs() < 0.5, "variance {var} vs {want}");
    }

    /// The cell is the ConvLSTM cell with W = the reconstructed kernel.
    #[test]
    fn step_equals_a_convlstm_with_the_reconstructed_weight() {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let c = cfg(2, 6, &[2, 3]);
        let cell = TtdConvLstmCell::new(&vs.root(), &c);
        let x = Tensor::randn([2, 2, 5, 5], (Kind::Float, Device::Cpu));
        let s0 = cell.zero_state(2, 5, 5, Device::Cpu);
        let (h1, s1) = cell.step(&x, &s0);
        let (h2, _) = cell.step(&x, &s1);
        let z = Tensor::cat(&[&x, &h1], 1).conv2d(
            &cell.conv.full_weight(),
            Some(&cell.conv.bias),
            [1, 1],
            [1, 1],
            [1, 1],
            1,
        );
        let (want, _) = lstm_update(&z, &s1.cell);
        assert!((&h2 - &want).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn ttd_gradients_match_finite_differences() {
        tch::manual_seed(2);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let c = cfg(2, 2, &[2]); // Cin + Ch = 4 → (4), 4·Ch = 8 → (8), d = 1
        let cell = TtdConvLstmCell::new(&vs.root(), &c);
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

    /// A classic-TTD network and a Conv-TT-LSTM with `tt_filter_size = 1` build, run a rollout
    /// and have exactly the parameters `model-info` reports (stored numel for TTD; for the
    /// masked gate weights, numel minus the masked entries).
    #[test]
    fn networks_build_and_summaries_count_their_parameters() {
        use crate::config::{CellKind, ModelConfig};
        use crate::model::{summary, Network, Rollout};
        let base = ModelConfig {
            block_widths: vec![3, 5], // Cin + Ch: 4, 6, 8, 10; 4·Ch: 12, 20
            layers_per_block: 2,
            skip_stride: 1,
            filter_size: 3,
            ..ModelConfig::default()
        };
        let ttd = ModelConfig {
            cell: CellKind::ConvlstmTtd,
            ttd_order: 2,
            ttd_ranks: vec![3, 2],
            ..base.clone()
        };
        let tt1 = ModelConfig {
            order: 2,
            steps: 3,
            rank: 2,
            tt_filter_size: 1,
            ..base.clone()
        };
        for (cfg, masked) in [(ttd, 0), (tt1, 1)] {
            tch::manual_seed(1);
            let vs = nn::VarStore::new(Device::Cpu);
            let net = Network::new(&vs.root(), &cfg);
            let y = net
                .forward(
                    &Tensor::rand([2, 3, 1, 6, 6], (Kind::Float, Device::Cpu)),
                    &Rollout::eval(3, 2),
                )
                .unwrap();
            assert_eq!(y.size(), [2, 2, 1, 6, 6]);
            let stored: i64 = vs
                .trainable_variables()
                .iter()
                .map(|t| t.numel() as i64)
                .sum();
            // Masked entries: per layer, C · 4Ch · (k² − 1) with C = 2, k = 3.
            let hidden: i64 = crate::model::layer_plan(&cfg)
                .0
                .iter()
                .map(|l| l.hidden_channels)
                .sum();
            let masked_entries = masked * 2 * 4 * hidden * 8;
            assert_eq!(
                summary::total_parameters(&cfg),
                stored - masked_entries,
                "{cfg:?}"
            );
        }
    }
}
