//! Test support for the model: the deterministic fill of spec §10, tolerance bookkeeping,
//! finite-difference gradient checks and the device-variant test macro (candle
//! `test_device!`): `_cpu` always, `_cuda` only with the `gpu-tests` feature.

use tch::{Device, Kind, Tensor};

/// Generates `$cpu` (CPU, f32) and, with `gpu-tests`, `$cuda` (CUDA device 0, f64) and
/// `$cuda_f32` (CUDA device 0, f32) tests that run `$body(device, kind)`.
///
/// Both CUDA variants run in the thread's default [`ComputeMode`](super::ComputeMode), whose
/// convolutions pass `allow_tf32 = false` to cuDNN (PyTorch would allow TF32 there by
/// default), so f32 is exact float32 and must meet the spec's 1e-5; f64 separates cuDNN's
/// algorithm choice from float32 rounding if it does not.
macro_rules! device_tests {
    ($body:ident => $cpu:ident, $cuda:ident, $cuda_f32:ident) => {
        #[test]
        fn $cpu() {
            $body(tch::Device::Cpu, tch::Kind::Float)
        }

        #[cfg(feature = "gpu-tests")]
        #[test]
        fn $cuda() {
            $crate::model::testing::require_cuda();
            $body(tch::Device::Cuda(0), tch::Kind::Double)
        }

        #[cfg(feature = "gpu-tests")]
        #[test]
        fn $cuda_f32() {
            $crate::model::testing::require_cuda();
            $body(tch::Device::Cuda(0), tch::Kind::Float)
        }
    };
}

/// Fails a GPU test with a clear message where libtorch sees no CUDA device (build.rs links
/// libtorch's CUDA backend into the gpu-tests binary).
#[cfg(feature = "gpu-tests")]
pub fn require_cuda() {
    assert!(
        tch::Cuda::is_available(),
        "gpu-tests needs a CUDA device that libtorch can use"
    );
}
pub(crate) use device_tests;

/// Spec §10 parameter fill: tensor `ti` (state_dict order) gets, at flat row-major index j,
/// `s · sin(0.37 j + 0.11 ti + 0.5)` computed in f64 and rounded to f32, with
/// s = 1.5/√(numel/out_channels) for weights and 0.1 for biases. Tensors must be in the `code/`
/// layout (5-D preprocessing weights).
pub fn golden_fill(named: &[(String, Tensor)]) {
    tch::no_grad(|| {
        for (ti, (name, t)) in named.iter().enumerate() {
            let numel = t.numel();
            let s = if name.ends_with("weight") {
                1.5 / (numel as f64 / t.size()[0] as f64).sqrt()
            } else {
                0.1
            };
            let values: Vec<f32> = (0..numel)
                .map(|j| (s * (0.37 * j as f64 + 0.11 * ti as f64 + 0.5).sin()) as f32)
                .collect();
            let src = Tensor::from_slice(&values).reshape(t.size());
            t.shallow_clone().copy_(&src);
        }
    });
}

/// Spec §10 input: x[b, c, h, w] at time t = 0.5 + 0.5·sin(0.7h + 1.3w + 0.9t + 2.1b + 0.4c),
/// f64 rounded to f32, returned as `[B, C, H, W]` of `kind` on `device`.
pub fn golden_frame(dims: [i64; 4], t: i64, (kind, device): (Kind, Device)) -> Tensor {
    let [bn, cn, hn, wn] = dims;
    let mut v = Vec::with_capacity((bn * cn * hn * wn) as usize);
    for b in 0..bn {
        for c in 0..cn {
            for h in 0..hn {
                for w in 0..wn {
                    let a = 0.7 * h as f64
                        + 1.3 * w as f64
                        + 0.9 * t as f64
                        + 2.1 * b as f64
                        + 0.4 * c as f64;
                    v.push((0.5 + 0.5 * a.sin()) as f32);
                }
            }
        }
    }
    Tensor::from_slice(&v)
        .reshape(dims)
        .to_kind(kind)
        .to_device(device)
}

/// Largest |a − b|.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Compares values against printed reference numbers: each must satisfy
/// |got − want| ≤ max(rel·|want|, abs). Records the worst relative and absolute errors so the
/// test can report them.
#[derive(Debug)]
pub struct Tolerance {
    rel: f64,
    abs: f64,
    /// Largest |got − want| / |want| seen.
    pub max_rel: f64,
    /// Largest |got − want| seen.
    pub max_abs: f64,
    /// Largest relative error among values where the relative bound binds
    /// (|want| ≥ abs / rel).
    pub max_rel_large: f64,
    failures: Vec<String>,
}

impl Tolerance {
    /// Relative tolerance `rel` with absolute floor `abs`.
    pub fn new(rel: f64, abs: f64) -> Self {
        Self {
            rel,
            abs,
            max_rel: 0.0,
            max_abs: 0.0,
            max_rel_large: 0.0,
            failures: Vec::new(),
        }
    }

    /// Checks one value; `what` names it in the failure message.
    pub fn check(&mut self, what: &str, got: f64, want: f64) {
        let err = (got - want).abs();
        self.max_abs = self.max_abs.max(err);
        if want != 0.0 {
            self.max_rel = self.max_rel.max(err / want.abs());
        }
        if want.abs() * self.rel >= self.abs {
            self.max_rel_large = self.max_rel_large.max(err / want.abs());
        }
        if err > (self.rel * want.abs()).max(self.abs) || !got.is_finite() {
            self.failures.push(format!(
                "{what}: got {got:.7}, want {want:.6} (|Δ| {err:.2e})"
            ));
        }
    }

    /// Panics listing every failed value; otherwise reports the worst errors on stderr.
    pub fn finish(self, table: &str) {
        assert!(
            self.failures.is_empty(),
            "{table}:\n{}",
            self.failures.join("\n")
        );
        eprintln!(
            "{table}: max rel err {:.2e} (values ≥ {:.0e}: {:.2e}), max abs err {:.2e}",
            self.max_rel,
            self.abs / self.rel,
            self.max_rel_large,
            self.max_abs
        );
    }
}

/// Σ_t ⟨h_t, probe⟩ over a rollout of `xs` through a cell's `step`, starting from `state`: the
/// scalar the cells' finite-difference checks differentiate.
pub fn probe_rollout(
    mut state: super::CellState,
    step: impl Fn(&Tensor, &super::CellState) -> (Tensor, super::CellState),
    xs: &[Tensor],
    probe: &Tensor,
) -> Tensor {
    let mut total = Tensor::zeros([], (Kind::Double, probe.device()));
    for x in xs {
        let (h, next) = step(x, &state);
        total = &total + (h * probe).sum(Kind::Double);
        state = next;
    }
    total
}

/// Central finite differences (f64, ε = 1e-6) against autograd for `samples` entries of each
/// parameter; `loss` must be a deterministic scalar function of `params`.
pub fn check_gradients(params: &[Tensor], loss: impl Fn() -> Tensor, samples: usize) {
    for p in params {
        assert_eq!(p.kind(), Kind::Double, "gradient checks need f64");
        let mut p = p.shallow_clone();
        p.zero_grad();
    }
    loss().backward();
    let eps = 1e-6;
    for (pi, p) in params.iter().enumerate() {
        let grad = p.grad().copy().view(-1);
        let n = p.numel() as i64;
        for s in 0..samples as i64 {
            let idx = (s * 7919 + 13 * pi as i64) % n;
            let at = |v: f64| {
                tch::no_grad(|| {
                    let _ = p.view(-1).get(idx).fill_(v);
                    loss().double_value(&[])
                })
            };
            let orig = tch::no_grad(|| p.view(-1).double_value(&[idx]));
            let fd = (at(orig + eps) - at(orig - eps)) / (2.0 * eps);
            at(orig);
            let ad = grad.double_value(&[idx]);
            assert!(
                (fd - ad).abs() <= 1e-6 * fd.abs().max(1.0),
                "param {pi} ({:?}) entry {idx}: finite difference {fd}, autograd {ad}",
                p.size()
            );
        }
    }
}
