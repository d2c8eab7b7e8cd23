//! Activation checkpointing by recomputation (the reference `code_opt/`'s `--use-checkpointing`,
//! spec §1.8), driven by hand because libtorch through tch has neither
//! `torch.utils.checkpoint` nor custom autograd functions.
//!
//! [`backward_recomputed`] gives the same parameter gradients as `loss.backward()` after
//! [`Network::forward`], keeping only one time step's autograd graph alive at a time:
//!
//! 1. Forward without gradients over the I + F − 1 steps, keeping only what crosses a step
//!    boundary: the network state S_t at the start of every step (per layer the ring of hidden
//!    states and the cell state; ring slots are shared between steps, so this is one H and one
//!    C per layer and step) and the predictions y_t (fed back as inputs).
//! 2. Walk the steps backwards. Step t is recomputed with gradients from leaf copies of S_t and
//!    of y_{t−1} (when the input mixes in the previous prediction), and
//!    `loss_t(y_t) + Σ S_{t+1} · ∂L/∂S_{t+1} + y_t · ∂L/∂y_t|later` is back-propagated; the
//!    parameter gradients accumulate in `.grad`, and the leaves' gradients are ∂L/∂S_t and
//!    ∂L/∂y_{t−1} for the step before. Ring slots that a step passes through unchanged are the
//!    same leaf tensors in S_t and S_{t+1}, so their gradient flows through the dot product.
//!
//! Cost: one extra forward of every step (the reference recomputes only the gate
//! non-linearities and cell update; recomputing whole steps saves more memory: the peak holds
//! one step's activations instead of I + F − 1). The loss must be a sum of per-step terms, which
//! the training loss (mean L1 + mean L2 over all outputs) is.

use tch::{Kind, Tensor};

use super::network::{Network, Rollout, RolloutInputs};
use super::state::{CellState, NetState};
use crate::error::Result;

/// Leaf copies (detached, requiring gradients) of every tensor of `s`.
fn leaves(s: &NetState) -> NetState {
    let leaf = |t: &Tensor| t.detach().set_requires_grad(true);
    NetState {
        cells: s
            .cells
            .iter()
            .map(|c| CellState {
                hidden: c.hidden.iter().map(leaf).collect(),
                pointer: c.pointer,
                cell: leaf(&c.cell),
            })
            .collect(),
    }
}

/// Every tensor of a state in a fixed order (ring slots, then the cell state, per layer).
fn tensors(s: &NetState) -> Vec<&Tensor> {
    s.cells
        .iter()
        .flat_map(|c| c.hidden.iter().chain([&c.cell]))
        .collect()
}

/// The gradient of a leaf after backward, `None` when nothing flowed into it.
fn grad_of(t: &Tensor) -> Option<Tensor> {
    let g = t.grad();
    g.defined().then_some(g)
}

/// Runs the rollout of [`Network::forward`] and back-propagates `Σ_t step_loss(t, y_t)` into
/// the parameters' `.grad` (accumulating, like `backward`), recomputing each step in the
/// backward pass. `step_loss(t, y_t)` is the loss term of the output of step t (`None`: the
/// output does not enter the loss); it must be differentiable in `y_t`. Returns the total loss
/// (detached scalar).
///
/// # Errors
/// As [`Network::forward`].
pub fn backward_recomputed(
    net: &Network,
    frames: &Tensor,
    rollout: &Rollout,
    step_loss: impl Fn(usize, &Tensor) -> Option<Tensor>,
) -> Result<Tensor> {
    let _span = tracing::trace_span!("backward_recomputed").entered();
    let (inputs, (b, h, w)) = RolloutInputs::new(net, frames, rollout)?;
    let (kind, device) = net.options();
    let input_frames = rollout.input_frames;
    let steps = rollout.steps();

    // 1. Forward without gradients, keeping the step-boundary states and the predictions.
    let mut states = Vec::with_capacity(steps);
    let mut outputs: Vec<Tensor> = Vec::with_capacity(steps);
    tch::no_grad(|| {
        let mut state = net.zero_state(b, h, w);
        for t in 0..steps {
            let x = inputs.at(t, outputs.last());
            let (y, next) = net.step(&x, &state);
            states.push(state);
            outputs.push(y);
            state = next;
        }
    });

    // 2. Backwards through the steps, one recomputed graph at a time.
    let mut total = Tensor::zeros([], (Kind::Double, device));
    let mut grad_next: Vec<Option<Tensor>> = Vec::new(); // ∂L/∂S_{t+1}, per state tensor
    let mut grad_y: Option<Tensor> = None; // ∂L/∂y_t from step t + 1's input
    for t in (0..steps).rev() {
        let s = leaves(&states[t]);
        let prev = (t >= input_frames).then(|| outputs[t - 1].detach().set_requires_grad(true));
        let x = inputs.at(t, prev.as_ref());
        let (y, next) = net.step(&x, &s);
        let mut terms: Vec<Tensor> = Vec::new();
        if let Some(l) = step_loss(t, &y) {
            total += l.detach().to_kind(Kind::Double);
            terms.push(l);
        }
        for (out, g) in tensors(&next).into_iter().zip(&grad_next) {
            if let Some(g) = g {
                terms.push((out * g).sum(kind));
            }
        }
        if let Some(g) = &grad_y {
            terms.push((&y * g).sum(kind));
        }
        if let Some(surrogate) = terms.into_iter().reduce(|a, b| a + b) {
            if surrogate.requires_grad() {
                surrogate.backward();
            }
        }
        grad_next = tensors(&s).into_iter().map(grad_of).collect();
        grad_y = prev.as_ref().and_then(grad_of);
    }
    Ok(total.to_kind(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CellKind, ModelConfig};
    use crate::model::network::{scheduled_sampling_mask, MaskRng};
    use tch::{nn, Device};

    fn plain_loss(out: &Tensor, target: &Tensor) -> Tensor {
        let d = out - target;
        d.abs().mean(Kind::Float) + d.square().mean(Kind::Float)
    }

    /// Gradients and loss equal the plain forward + backward for both cell types, with
    /// scheduled sampling (predictions fed back, mixed with ground truth) and without (pure
    /// autoregression after the conditioning frames).
    #[test]
    fn recomputed_gradients_equal_plain_backward() {
        for (cell, ratio) in [
            (CellKind::Convttlstm, 0.5),
            (CellKind::Convttlstm, 0.0),
            (CellKind::Convlstm, 0.5),
            (CellKind::ConvlstmTtd, 0.3),
        ] {
            let cfg = ModelConfig {
                cell,
                block_widths: vec![3, 5],
                layers_per_block: 2,
                skip_stride: 1,
                filter_size: 3,
                order: 2,
                steps: 3,
                rank: 2,
                ttd_ranks: vec![2],
                ..ModelConfig::default()
            };
            tch::manual_seed(3);
            let vs = nn::VarStore::new(Device::Cpu);
            let net = Network::new(&vs.root(), &cfg);
            let (i, f, bsz) = (3usize, 4usize, 2usize);
            let clips = Tensor::rand(
                [bsz as i64, (i + f) as i64, 1, 6, 6],
                (Kind::Float, Device::Cpu),
            );
            let n = (i + f - 1) as i64;
            let mask = || scheduled_sampling_mask(&mut MaskRng::new(7), bsz, f, ratio);
            assert_eq!(mask().is_some(), ratio > 0.0);
            let inputs = clips.narrow(1, 0, n);
            let target = clips.narrow(1, 1, n);
            let params = vs.trainable_variables();
            let zero = || {
                for p in &params {
                    let mut p = p.shallow_clone();
                    p.zero_grad();
                }
            };
            let grads = || -> Vec<Tensor> { params.iter().map(|p| p.grad().copy()).collect() };

            zero();
            let out = net
                .forward(&inputs, &Rollout::training(i, f, mask()))
                .unwrap();
            let l_plain = plain_loss(&out, &target);
            l_plain.backward();
            let g_plain = grads();

            zero();
            let numel = target.numel() as f64;
            let l_rec =
                backward_recomputed(&net, &inputs, &Rollout::training(i, f, mask()), |t, y| {
                    let d = y - target.select(1, t as i64);
                    Some((d.abs().sum(Kind::Float) + d.square().sum(Kind::Float)) / numel)
                })
                .unwrap();
            let g_rec = grads();

            let (a, b) = (l_plain.double_value(&[]), l_rec.double_value(&[]));
            assert!((a - b).abs() <= 1e-5 * a.abs(), "{cell:?}: loss {a} vs {b}");
            for ((gp, gr), p) in g_plain.iter().zip(&g_rec).zip(&params) {
                let scale = gp.abs().max().double_value(&[]).max(1e-12);
                let diff = (gp - gr).abs().max().double_value(&[]);
                assert!(
                    diff <= 1e-5 * scale,
                    "{cell:?} r={ratio}: parameter {:?} gradient differs by {diff} (scale {scale})",
                    p.size()
                );
                assert!(scale > 1e-9, "{cell:?}: a parameter got no gradient");
            }
        }
    }
}
