//! The convolutional tensor-train decomposition (CTTD), paper §3 Eqs. (8)–(9); spec §2.2.
//!
//! Reference: the "(1) Convolutional tensor-train module" loop of `ConvTTLSTMCell.forward` in
//! `code/convlstmcell.py` (modules `layers[0 … N−2]` and `layers_[0 … N−1]`).
//!
//! Two evaluations of the same quantity
//!
//! ```text
//! Φ = Σ_{i=1..N} K(i) ∗ H̃(i) + β,   K(1) = G(1),  K(i) = G(1) ∗ G(2) ∗ … ∗ G(i)
//! ```
//!
//! where H̃(i) = P(i)(window i) is the preprocessed i-th most recent window and G(i) the TT
//! cores in the paper's numbering (index = distance from the present):
//!
//! * [`evaluate_recursive`]: the linear-time Horner scheme the model trains with:
//!   T ← H̃(N); T ← H̃(j) + G(j+1) ⋆ T for j = N−1 … 1; Φ = G(1) ⋆ T. N convolutions of size k.
//! * [`explicit_kernels`] + [`evaluate_explicit`]: builds every K(i) (spatial size i·(k−1)+1,
//!   rank contracted), then Φ = Σ_i K(i) ⋆ H̃(i) + β (paper Eq. 9). The parameters stay linear in
//!   N but the kernels' elements grow cubically, which is why the model uses the recursion.
//!
//! Every convolution has a bias, so the chain is affine: unrolling the recursion gives the bias
//! term β = b(1) + Σ_{i=1..N−1} K(i) ⋆ b(i+1), where a bias convolved with a kernel is the
//! kernel's spatial sum contracted with the bias vector ([`explicit_bias`]).
//!
//! Boundaries: the identity is exact where convolutions compose exactly. With circular padding
//! (a torus) that is every pixel; with the model's zero "same" padding each stage truncates its
//! output to the frame, so the two agree only on pixels at least (N−1)·⌊k/2⌋ away from the
//! border. The tests check both.
//!
//! In the cell, G(1) is the last C input channels of the gate convolution `layers[N−1]` and
//! G(j) = `layers[N−j]` for j ≥ 2; [`Cttd`] holds `layers[0 … N−2]` and the preprocessing
//! convolutions and returns T, the input of G(1).

use tch::{nn, Tensor};

use super::conv::Conv;
use super::init::InitScheme;
use super::state::{window_slots, CellState};

/// Boundary handling of the standalone evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Zero "same" padding at every stage, as in the model.
    Zeros,
    /// Periodic boundaries: convolutions compose exactly.
    Circular,
}

/// The TT cores `layers[0 … N−2]` and the preprocessing convolutions `layers_[0 … N−1]` of a
/// Conv-TT-LSTM cell.
#[derive(Debug)]
pub struct Cttd {
    /// `layers.l`, l < N−1: Conv(C → C, k); `cores[l−1]` is applied before adding U_l.
    pub cores: Vec<Conv>,
    /// `layers_.l`: weight `[C, Ch, k, k, S]`, one per window, oldest window first.
    pub preprocess: Vec<Conv>,
}

impl Cttd {
    /// Registers the cores and preprocessing convolutions under `p / "layers"` and
    /// `p / "layers_"` (without the gate convolution `layers.{N−1}`, which the cell owns).
    pub fn new(
        p: &nn::Path,
        hidden: i64,
        rank: i64,
        order: usize,
        window: i64,
        kernel: i64,
        init: InitScheme,
    ) -> Self {
        let mut cores = Vec::new();
        let mut preprocess = Vec::new();
        for l in 0..order {
            if l + 1 < order {
                cores.push(core_conv(p, l, rank, kernel, init));
            }
            preprocess.push(preprocess_conv(p, l, hidden, rank, window, kernel, init));
        }
        Self { cores, preprocess }
    }

    /// Order N.
    pub fn order(&self) -> usize {
        self.preprocess.len()
    }

    /// Window length S.
    pub fn window(&self) -> usize {
        self.preprocess[0].weight.size()[4] as usize
    }

    /// U_l = P_l(window_l) for l = 0 … N−1 (oldest window first), read from the ring of
    /// `state` (spec §2.2).
    ///
    /// # Shapes
    /// ring slots `[B, Ch, H, W]` → N × `[B, C, H, W]`
    pub fn preprocessed(&self, state: &CellState) -> Vec<Tensor> {
        let steps = state.hidden.len();
        let window = self.window();
        self.preprocess
            .iter()
            .enumerate()
            .map(|(l, conv)| {
                let states: Vec<&Tensor> = window_slots(state.pointer, steps, l, window)
                    .into_iter()
                    .map(|s| &state.hidden[s])
                    .collect();
                conv.forward(&Tensor::cat(&states, 1))
            })
            .collect()
    }

    /// The reference's Horner loop: T ← U_0; T ← U_l + `layers[l−1]`(T) for l = 1 … N−1.
    ///
    /// # Shapes
    /// N × `[B, C, H, W]` (oldest window first) → `[B, C, H, W]`
    pub fn horner(&self, u: &[Tensor]) -> Tensor {
        debug_assert_eq!(u.len(), self.order());
        let mut t = u[0].shallow_clone();
        for (l, ul) in u.iter().enumerate().skip(1) {
            t = ul + self.cores[l - 1].forward(&t);
        }
        t
    }

    /// T for the current step: [`Self::horner`] of [`Self::preprocessed`].
    ///
    /// # Shapes
    /// ring slots `[B, Ch, H, W]` → `[B, C, H, W]`
    pub fn forward(&self, state: &CellState) -> Tensor {
        let _span = tracing::trace_span!("cttd").entered();
        self.horner(&self.preprocessed(state))
    }

    /// The cores in the paper's order G(2), …, G(N) (= `layers[N−2]`, …, `layers[0]`).
    pub fn paper_cores(&self) -> Vec<&Conv> {
        self.cores.iter().rev().collect()
    }
}

/// `layers.l`: Conv(C → C, k).
pub(crate) fn core_conv(p: &nn::Path, l: usize, rank: i64, k: i64, init: InitScheme) -> Conv {
    Conv::new(&(p / "layers" / l), &[rank, rank, k, k], init)
}

/// `layers_.l`: the Conv3d weight `[C, Ch, k, k, S]` in the `code/` layout.
pub(crate) fn preprocess_conv(
    p: &nn::Path,
    l: usize,
    hidden: i64,
    rank: i64,
    window: i64,
    k: i64,
    init: InitScheme,
) -> Conv {
    Conv::new(&(p / "layers_" / l), &[rank, hidden, k, k, window], init)
}

/// A "same" cross-correlation with the given boundary handling (odd kernel sizes).
fn conv(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, padding: Padding) -> Tensor {
    let p = weight.size()[2] / 2;
    match padding {
        Padding::Zeros => x.conv2d(weight, bias, [1, 1], [p, p], [1, 1], 1),
        Padding::Circular => {
            x.pad([p, p, p, p], "circular", None)
                .conv2d(weight, bias, [1, 1], [0, 0], [1, 1], 1)
        }
    }
}

/// Linear-time evaluation. `cores[i]` = G(i+1) (G(1) first), `u[i]` = H̃(i+1) (most recent
/// first). Each core is a [`Conv`] with a 4-D weight.
///
/// # Shapes
/// `u`: N × `[B, C, H, W]`, G(1): `[O, C, k, k]`, other cores `[C, C, k, k]` → `[B, O, H, W]`
pub fn evaluate_recursive(cores: &[&Conv], u: &[Tensor], padding: Padding) -> Tensor {
    let n = u.len();
    debug_assert_eq!(cores.len(), n);
    let mut t = u[n - 1].shallow_clone();
    for j in (0..n - 1).rev() {
        t = &u[j] + conv(&t, &cores[j + 1].weight, Some(&cores[j + 1].bias), padding);
    }
    conv(&t, &cores[0].weight, Some(&cores[0].bias), padding)
}

/// Composes two convolutions: `outer ⋆ (inner ⋆ x) = compose(outer, inner) ⋆ x` on an unbounded
/// domain. Kernel sizes add minus one.
///
/// # Shapes
/// `[O, M, ka, ka]`, `[M, I, kb, kb]` → `[O, I, ka + kb − 1, ka + kb − 1]`
pub fn compose(outer: &Tensor, inner: &Tensor) -> Tensor {
    // K[o, c, d] = Σ_m Σ_{a+b=d} outer[o, m, b] · inner[m, c, a]: a true convolution of the two
    // kernels, computed as a cross-correlation of the zero-padded inner kernel (channels m,
    // batch c) with the flipped outer kernel.
    let ka = outer.size()[2];
    inner
        .permute([1, 0, 2, 3])
        .conv2d(
            &outer.flip([2, 3]),
            None::<&Tensor>,
            [1, 1],
            [ka - 1, ka - 1],
            [1, 1],
            1,
        )
        .permute([1, 0, 2, 3])
        .contiguous()
}

/// K(1) = G(1), K(i) = K(i−1) ∗ G(i) (paper Eq. 8; G(1) outermost). `cores[i]` = G(i+1).
///
/// # Shapes
/// → N kernels `[O, C, i·(k−1)+1, i·(k−1)+1]`, i = 1 … N
pub fn explicit_kernels(cores: &[&Conv]) -> Vec<Tensor> {
    let mut kernels: Vec<Tensor> = vec![cores[0].weight.shallow_clone()];
    for core in &cores[1..] {
        let next = compose(kernels.last().expect("K(1) exists"), &core.weight);
        kernels.push(next);
    }
    kernels
}

/// β = b(1) + Σ_{i=1..N−1} K(i) ⋆ b(i+1): the bias terms of the recursion, propagated through
/// the explicit kernels.
///
/// # Shapes
/// → `[O]`
pub fn explicit_bias(cores: &[&Conv], kernels: &[Tensor]) -> Tensor {
    // Not `+=`: that would add in place into G(1)'s bias variable.
    kernels
        .iter()
        .zip(&cores[1..])
        .fold(cores[0].bias.shallow_clone(), |beta, (k, core)| {
            beta + k
                .sum_dim_intlist([2, 3].as_slice(), false, None)
                .mv(&core.bias)
        })
}

/// Φ = Σ_i K(i) ⋆ H̃(i) + β (paper Eq. 9), each K(i) applied as one "same" convolution.
///
/// # Shapes
/// `kernels`: N × `[O, C, ·, ·]`, `u`: N × `[B, C, H, W]` (most recent first), `bias`: `[O]`
/// → `[B, O, H, W]`
pub fn evaluate_explicit(
    kernels: &[Tensor],
    bias: &Tensor,
    u: &[Tensor],
    padding: Padding,
) -> Tensor {
    kernels
        .iter()
        .zip(u)
        .fold(bias.view([1, -1, 1, 1]), |phi, (k, x)| {
            phi + conv(x, k, None, padding)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{check_gradients, max_abs_diff};
    use tch::{Device, Kind};

    struct Fixture {
        _vs: nn::VarStore,
        cttd: Cttd,
        head: Conv,
    }

    /// A random CTTD with a head G(1) of `out` channels, in f64.
    fn fixture(order: usize, rank: i64, hidden: i64, window: i64, k: i64, out: i64) -> Fixture {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let cttd = Cttd::new(&root, hidden, rank, order, window, k, InitScheme::Pytorch);
        let head = Conv::new(&(&root / "head"), &[out, rank, k, k], InitScheme::Pytorch);
        vs.double();
        // Larger biases than the init's, so the affine part is not negligible.
        tch::no_grad(|| {
            for (_, mut v) in vs.variables() {
                if v.dim() == 1 {
                    v.copy_(&(Tensor::randn(v.size(), (Kind::Double, Device::Cpu)) * 0.5));
                }
            }
        });
        Fixture {
            _vs: vs,
            cttd,
            head,
        }
    }

    fn zero_biases(f: &Fixture) {
        tch::no_grad(|| {
            for c in f
                .cttd
                .cores
                .iter()
                .chain(&f.cttd.preprocess)
                .chain([&f.head])
            {
                let _ = c.bias.shallow_clone().zero_();
            }
        });
    }

    /// Random ring state with M = N + S − 1 written slots.
    fn ring(f: &Fixture, batch: i64, hidden: i64, size: i64) -> CellState {
        let steps = f.cttd.order() + f.cttd.window() - 1;
        let opts = (Kind::Double, Device::Cpu);
        let mut s = CellState::zeros(steps, batch, hidden, size, size, opts);
        for h in s.hidden.iter_mut() {
            *h = Tensor::randn([batch, hidden, size, size], opts);
        }
        s.pointer = 1 % steps;
        s
    }

    /// Recursive (the model's code path) and explicit kernels agree, with and without biases,
    /// with circular padding everywhere and with zero padding away from the border.
    #[test]
    fn recursive_and_explicit_kernels_agree_for_orders_1_to_5() {
        tch::manual_seed(5);
        let (rank, hidden, k, out, size) = (3, 2, 3, 4, 13);
        for order in 1..=5 {
            for with_bias in [false, true] {
                let f = fixture(order, rank, hidden, 2, k, out);
                if !with_bias {
                    zero_biases(&f);
                }
                let u_oldest_first = f.cttd.preprocessed(&ring(&f, 2, hidden, size));
                let u: Vec<Tensor> = u_oldest_first
                    .iter()
                    .rev()
                    .map(|t| t.shallow_clone())
                    .collect();
                let mut cores = vec![&f.head];
                cores.extend(f.cttd.paper_cores());
                let kernels = explicit_kernels(&cores);
                let beta = explicit_bias(&cores, &kernels);
                for (i, kern) in kernels.iter().enumerate() {
                    let side = (i as i64 + 1) * (k - 1) + 1;
                    assert_eq!(kern.size(), [out, rank, side, side]);
                }
                // The model's own path: Horner over the module, then G(1).
                let model = f.head.forward(&f.cttd.horner(&u_oldest_first));
                for padding in [Padding::Zeros, Padding::Circular] {
                    let rec = evaluate_recursive(&cores, &u, padding);
                    let exp = evaluate_explicit(&kernels, &beta, &u, padding);
                    let m = match padding {
                        Padding::Circular => 0,
                        Padding::Zeros => (order as i64 - 1) * (k / 2),
                    };
                    let inner =
                        |t: &Tensor| t.narrow(2, m, size - 2 * m).narrow(3, m, size - 2 * m);
                    let err = max_abs_diff(&inner(&rec), &inner(&exp));
                    let scale = rec.abs().max().double_value(&[]);
                    assert!(
                        err <= 1e-10 * scale.max(1.0),
                        "N={order} bias={with_bias} {padding:?}: max |Δ| {err} (scale {scale})"
                    );
                    if padding == Padding::Zeros {
                        assert!(rec.equal(&model) || max_abs_diff(&rec, &model) < 1e-12);
                        if order > 1 {
                            // Near the border the truncation matters: the check above is not vacuous.
                            assert!(
                                max_abs_diff(&rec, &exp) > 1e-6,
                                "N={order}: border effect expected"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Parameters are linear in N; the explicit kernels' elements are cubic in N.
    #[test]
    fn parameters_linear_explicit_kernels_cubic_in_order() {
        let (rank, hidden, window, k, out) = (3i64, 4i64, 2i64, 3i64, 5i64);
        let mut params = Vec::new();
        let mut kernel_elems = Vec::new();
        for order in 1..=6usize {
            let f = fixture(order, rank, hidden, window, k, out);
            let mut cores = vec![&f.head];
            cores.extend(f.cttd.paper_cores());
            let p: i64 = f
                ._vs
                .trainable_variables()
                .iter()
                .map(Tensor::numel)
                .sum::<usize>() as i64;
            let n = order as i64;
            // Formula: head + (N−1) cores + N preprocessing convolutions.
            let formula = (out * rank * k * k + out)
                + (n - 1) * (rank * rank * k * k + rank)
                + n * (rank * hidden * k * k * window + rank);
            assert_eq!(p, formula, "N={order}");
            params.push(p);
            let e: i64 = explicit_kernels(&cores)
                .iter()
                .map(|t| t.numel() as i64)
                .sum();
            let formula: i64 = (1..=n).map(|i| out * rank * (i * (k - 1) + 1).pow(2)).sum();
            assert_eq!(e, formula, "N={order}");
            kernel_elems.push(e);
        }
        let diff = |v: &[i64]| v.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>();
        // Linear: constant first differences (one core + one preprocessing conv per order).
        let d1 = diff(&params);
        assert!(d1
            .iter()
            .all(|&d| d == rank * rank * k * k + rank + rank * hidden * k * k * window + rank));
        // Cubic: constant, non-zero third differences = 6 · leading coefficient O·C·(k−1)²/3.
        let d3 = diff(&diff(&diff(&kernel_elems)));
        assert!(
            d3.iter().all(|&d| d == 2 * out * rank * (k - 1) * (k - 1)),
            "{d3:?}"
        );
    }

    /// Finite differences (f64) against autograd through the recursive evaluation and the
    /// module's preprocessing.
    #[test]
    fn cttd_gradients_match_finite_differences() {
        tch::manual_seed(9);
        let f = fixture(3, 2, 2, 2, 3, 2);
        let state = ring(&f, 1, 2, 5);
        let probe = Tensor::randn([1, 2, 5, 5], (Kind::Double, Device::Cpu));
        let loss = || {
            let u: Vec<Tensor> = f.cttd.preprocessed(&state).into_iter().rev().collect();
            let mut cores = vec![&f.head];
            cores.extend(f.cttd.paper_cores());
            (evaluate_recursive(&cores, &u, Padding::Zeros) * &probe).sum(Kind::Double)
        };
        let params: Vec<Tensor> = f._vs.trainable_variables();
        check_gradients(&params, loss, 4);
    }
}
