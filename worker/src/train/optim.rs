//! Parameters in one flat buffer, and Adam on it.
//!
//! Every parameter of the VarStore becomes a view into one contiguous f32 buffer (sorted by
//! name, so every rank and every checkpoint agrees on the layout). Gradients are gathered into
//! one flat tensor, so a step costs one all-reduce, one norm and a handful of fused element-wise
//! ops for Adam, whatever the number of tensors (146 for the paper's model).

use convtt_common::checkpoint::LayoutEntry;
use convtt_common::config::OptimConfig;
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

use crate::error::{Error, Result};

/// Dynamic loss scaling for `train.precision = "fp16"` (the rule of PyTorch's `GradScaler`):
/// the loss is multiplied by `scale` before backward so small f16 gradients do not flush to
/// zero; after the all-reduce the flat gradient is divided by it. A step whose gradient holds
/// an inf or NaN is skipped and the scale halved; after `growth_interval` good steps in a row it
/// doubles. Every rank sees the same all-reduced gradient, so every rank decides alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The current factor.
    pub scale: f64,
    /// Good steps since the scale last changed.
    pub good_steps: u64,
    /// Good steps after which the scale doubles.
    pub growth_interval: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: 65536.0,
            good_steps: 0,
            growth_interval: 2000,
        }
    }
}

impl LossScaler {
    /// Unscales the all-reduced `grad` in place and updates the scale. Returns whether the
    /// gradient is finite, i.e. whether the optimizer may step.
    pub fn unscale(&mut self, grad: &mut Tensor) -> bool {
        let _ = grad.g_mul_scalar_(1.0 / self.scale);
        let finite = grad.isfinite().all().int64_value(&[]) != 0;
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
        }
        finite
    }
}

/// The flat parameter buffer, its Adam moments and the views the model uses.
pub struct FlatParams {
    vars: Vec<Tensor>,
    /// Parameter names and places, in buffer order.
    pub layout: Vec<LayoutEntry>,
    /// The parameters (the model's variables are views into it).
    pub params: Tensor,
    /// Adam first moment.
    pub exp_avg: Tensor,
    /// Adam second moment.
    pub exp_avg_sq: Tensor,
    /// Adam steps taken (bias correction).
    pub adam_steps: u64,
}

impl FlatParams {
    /// Moves every trainable variable of `vs` into one flat buffer (values unchanged).
    pub fn new(vs: &VarStore) -> Self {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let numel: i64 = named.iter().map(|(_, t)| t.numel() as i64).sum();
        let params = Tensor::zeros([numel], (Kind::Float, vs.device()));
        let mut layout = Vec::with_capacity(named.len());
        let mut vars = Vec::with_capacity(named.len());
        let mut offset = 0i64;
        tch::no_grad(|| {
            for (name, mut var) in named {
                let n = var.numel() as i64;
                let shape = var.size();
                let mut view = params.narrow(0, offset, n).view(shape.as_slice());
                view.copy_(&var);
                var.set_data(&view);
                layout.push(LayoutEntry {
                    name,
                    offset: offset as u64,
                    shape,
                });
                vars.push(var);
                offset += n;
            }
        });
        FlatParams {
            vars,
            layout,
            exp_avg: params.zeros_like(),
            exp_avg_sq: params.zeros_like(),
            params,
            adam_steps: 0,
        }
    }

    /// Elements in the buffer.
    pub fn numel(&self) -> i64 {
        self.params.size()[0]
    }

    /// All gradients as one flat tensor (zeros for parameters that got none).
    pub fn flat_grad(&self) -> Tensor {
        let parts: Vec<Tensor> = self
            .vars
            .iter()
            .map(|v| {
                let g = v.grad();
                if g.defined() {
                    g.reshape([-1])
                } else {
                    Tensor::zeros([v.numel() as i64], (Kind::Float, v.device()))
                }
            })
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for v in &mut self.vars {
            v.zero_grad();
        }
    }

    /// Scales `grad` in place so its L2 norm is at most `max_norm`; returns the norm before.
    pub fn clip(grad: &mut Tensor, max_norm: f64) -> f64 {
        let norm = grad.norm().double_value(&[]);
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            let _ = grad.g_mul_scalar_(coef);
        }
        norm
    }

    /// One Adam step with learning rate `lr`, exactly as `torch.optim.Adam` (L2 weight decay
    /// added to the gradient, bias-corrected moments, ε added after the square root).
    pub fn adam_step(&mut self, grad: &Tensor, lr: f64, cfg: &OptimConfig) {
        tch::no_grad(|| {
            let g = if cfg.weight_decay != 0.0 {
                grad + &self.params * cfg.weight_decay
            } else {
                grad.shallow_clone()
            };
            self.adam_steps += 1;
            let t = self.adam_steps as i32;
            let bc1 = 1.0 - cfg.beta1.powi(t);
            let bc2 = 1.0 - cfg.beta2.powi(t);
            let _ = self
                .exp_avg
                .g_mul_scalar_(cfg.beta1)
                .g_add_(&(&g * (1.0 - cfg.beta1)));
            let _ = self
                .exp_avg_sq
                .g_mul_scalar_(cfg.beta2)
                .g_add_(&(&g * &g * (1.0 - cfg.beta2)));
            let denom = self.exp_avg_sq.sqrt() / bc2.sqrt() + cfg.eps;
            let _ = self.params.g_add_(&(&self.exp_avg / denom * (-lr / bc1)));
        });
    }

    /// The three buffers on the host, for a checkpoint.
    pub fn to_host(&self) -> [Vec<f32>; 3] {
        let host = |t: &Tensor| Vec::<f32>::try_from(t.to_device(tch::Device::Cpu)).expect("f32");
        [
            host(&self.params),
            host(&self.exp_avg),
            host(&self.exp_avg_sq),
        ]
    }

    /// Restores the buffers from a checkpoint whose layout must equal this one's.
    pub fn restore(
        &mut self,
        layout: &[LayoutEntry],
        bufs: &[Vec<f32>; 3],
        adam_steps: u64,
        source: &std::path::Path,
    ) -> Result<()> {
        if layout != self.layout.as_slice() {
            let want: Vec<_> = self.layout.iter().map(|l| &l.name).collect();
            let got: Vec<_> = layout.iter().map(|l| &l.name).collect();
            return Err(Error::Data {
                path: source.to_owned(),
                msg: format!(
                    "checkpoint parameter layout differs from the model's ({} vs {} tensors; \
                     first names {:?} vs {:?})",
                    got.len(),
                    want.len(),
                    got.first(),
                    want.first()
                ),
            });
        }
        let dev = self.params.device();
        tch::no_grad(|| {
            for (dst, src) in [&mut self.params, &mut self.exp_avg, &mut self.exp_avg_sq]
                .into_iter()
                .zip(bufs)
            {
                dst.copy_(&Tensor::from_slice(src).to_device(dev));
            }
        });
        self.adam_steps = adam_steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module, OptimizerConfig};

    fn net(vs: &VarStore) -> impl Module {
        let p = vs.root();
        nn::seq()
            .add(nn::conv2d(&p / "a", 2, 3, 3, Default::default()))
            .add_fn(|x| x.tanh())
            .add(nn::conv2d(&p / "b", 3, 1, 1, Default::default()))
    }

    /// Finite gradients are unscaled and counted until the scale doubles; an overflow is
    /// reported (so the step is skipped), halves the scale and restarts the count.
    #[test]
    fn loss_scaler_unscales_skips_overflows_and_grows() {
        let mut s = LossScaler {
            scale: 8.0,
            good_steps: 0,
            growth_interval: 2,
        };
        let mut g = Tensor::from_slice(&[8.0f32, -16.0]);
        assert!(s.unscale(&mut g));
        assert_eq!(Vec::<f32>::try_from(&g).unwrap(), [1.0, -2.0]);
        assert_eq!((s.scale, s.good_steps), (8.0, 1));
        assert!(s.unscale(&mut Tensor::from_slice(&[1.0f32])));
        assert_eq!(
            (s.scale, s.good_steps),
            (16.0, 0),
            "grows after 2 good steps"
        );
        assert!(!s.unscale(&mut Tensor::from_slice(&[f32::INFINITY, 1.0])));
        assert_eq!((s.scale, s.good_steps), (8.0, 0), "an overflow halves");
        assert!(!s.unscale(&mut Tensor::from_slice(&[f32::NAN])));
        assert_eq!(s.scale, 4.0);
    }

    #[test]
    fn flat_adam_matches_libtorch_adam_step_for_step() {
        tch::manual_seed(1);
        let input = Tensor::randn([2, 2, 5, 5], (Kind::Float, tch::Device::Cpu));
        let cfg = OptimConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let reference = VarStore::new(tch::Device::Cpu);
        let ref_net = net(&reference);
        let mut ours = VarStore::new(tch::Device::Cpu);
        let our_net = net(&ours);
        ours.copy(&reference).unwrap();
        let mut flat = FlatParams::new(&ours);
        let mut opt = nn::Adam {
            wd: 0.01,
            ..Default::default()
        }
        .build(&reference, 1e-2)
        .unwrap();
        for _ in 0..5 {
            opt.backward_step(&ref_net.forward(&input).square().mean(Kind::Float));
            flat.zero_grad();
            our_net
                .forward(&input)
                .square()
                .mean(Kind::Float)
                .backward();
            let g = flat.flat_grad();
            flat.adam_step(&g, 1e-2, &cfg);
        }
        for (name, t) in reference.variables() {
            let mine = &ours.variables()[&name];
            let diff = (&t - mine).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{name}: {diff}");
        }
        assert_eq!(flat.adam_steps, 5);
    }

    #[test]
    fn the_model_sees_the_flat_buffer_and_layout_is_sorted() {
        let vs = VarStore::new(tch::Device::Cpu);
        let n = net(&vs);
        let mut flat = FlatParams::new(&vs);
        let names: Vec<_> = flat.layout.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a.bias", "a.weight", "b.bias", "b.weight"]);
        let x = Tensor::ones([1, 2, 5, 5], (Kind::Float, tch::Device::Cpu));
        let before = n.forward(&x);
        tch::no_grad(|| {
            let z = flat.params.zeros_like();
            flat.params.copy_(&z)
        });
        assert_eq!(n.forward(&x).abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert!(before.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    #[test]
    fn clipping_bounds_the_norm() {
        let mut g = Tensor::from_slice(&[3.0f32, 4.0]);
        assert!((FlatParams::clip(&mut g, 1.0) - 5.0).abs() < 1e-9);
        assert!((g.norm().double_value(&[]) - 1.0).abs() < 1e-5);
        let mut small = Tensor::from_slice(&[0.3f32, 0.4]);
        FlatParams::clip(&mut small, 1.0);
        assert!((small.norm().double_value(&[]) - 0.5).abs() < 1e-7);
    }
}
