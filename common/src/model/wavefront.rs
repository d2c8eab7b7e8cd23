//! The rollout's fast path: a wavefront over the layers where the inputs are known, step by
//! step where predictions feed back.
//!
//! On the reference path ([`Network::forward`] without a fast [`ComputeMode`]) every time step
//! runs every layer, so each layer's gate convolution runs once per step on one step's batch.
//! But the inputs of the first K steps are known before the rollout starts — the I
//! conditioning frames and, under scheduled sampling, the following steps whose mask takes the
//! ground truth for every sample (all of them with teacher forcing). For those steps the
//! network is evaluated layer by layer instead: layer 1 runs its input convolution once over
//! all K steps (`[K·B, Cin, H, W]`), then its recurrence step by step, and hands its K outputs
//! to layer 2, which does the same; skips and the head work on the stacked steps too. The
//! remaining steps, whose inputs are the network's own predictions, run step by step as before,
//! from the states the wavefront left. Each cell's work is [`FastCell`]'s split of the gate
//! convolution (projection + recurrence) with fused preprocessing.
//!
//! The dependency order is unchanged — layer l at step t still reads layer l − 1 at step t and
//! layer l at step t − 1 — so the values are the reference's up to float rounding (the split
//! convolution and the fused preprocessing add the same products in another order); the tests
//! in `network` hold outputs and gradients to 1e-5 of the reference path.

use tch::{Device, Tensor};

use super::compute::ComputeMode;
use super::fast_cell::{FastCell, FastState};
use super::network::{Network, Rollout, RolloutInputs};

/// The predictions of the rollout's steps (each `[B, C, H, W]`) on the fast path, or `None`
/// when a layer has no fast form (then the caller takes the reference path).
pub(crate) fn rollout(
    net: &Network,
    inputs: &RolloutInputs,
    rollout: &Rollout,
    (b, h, w): (i64, i64, i64),
) -> Option<Vec<Tensor>> {
    let _span = tracing::trace_span!("wavefront_rollout").entered();
    let cells = net
        .layers()
        .iter()
        .map(|l| FastCell::prepare(&l.cell))
        .collect::<Option<Vec<_>>>()?;
    let mode = ComputeMode::current();
    let steps = rollout.steps();
    let device: Device = net.options().1;
    let mut states: Vec<FastState> = cells
        .iter()
        .map(|c| c.zero_state(b, h, w, device))
        .collect();
    let known = if mode.wavefront {
        rollout.known_steps().min(steps)
    } else {
        0
    };
    let mut outputs: Vec<Tensor> = Vec::with_capacity(steps);
    if known > 0 {
        let y = net.walk(mode.layout(inputs.known_sequence(known)), |i, xs| {
            let zx = cells[i].project(xs);
            let hs: Vec<Tensor> = zx
                .split(b, 0)
                .iter()
                .map(|z| {
                    let (h, next) = cells[i].recur(z, &states[i]);
                    states[i] = next;
                    h
                })
                .collect();
            Tensor::cat(&hs, 0)
        });
        outputs.extend(y.split(b, 0));
    }
    for t in known..steps {
        let x = mode.layout(inputs.at(t, outputs.last()));
        let y = net.walk(x, |i, x| {
            let (h, next) = cells[i].recur(&cells[i].project(x), &states[i]);
            states[i] = next;
            h
        });
        outputs.push(y);
    }
    Some(outputs)
}
