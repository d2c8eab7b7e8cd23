//! One training step: forward with the scheduled-sampling mask, the reference's L1 + L2 loss,
//! backward (or the recomputing backward of activation checkpointing), ONE all-reduce carrying
//! the flat gradient, this rank's loss and its stop flag, fp16 loss scaling, clipping and Adam
//! on the flat buffer. Every phase can be timed (`bench`).

use std::time::Instant;

use convtt_core::protocol::Phase;

use convtt_common::config::ValidConfig;
use convtt_common::model::{backward_recomputed, teacher_forced_prefix, MaskRng, Network, Rollout};
use tch::{Device, Kind, Tensor};

use super::optim::FlatParams;
use crate::error::Result;
use crate::runtime::Runtime;

/// Loss of the reference: mean L1 + mean L2 over all predicted frames.
pub fn loss(pred: &Tensor, target: &Tensor) -> Tensor {
    let d = pred - target;
    d.abs().mean(Kind::Float) + d.square().mean(Kind::Float)
}

/// One output frame's share of [`loss`] over `numel` elements in all: (Σ|d| + Σd²) / numel, so
/// the shares of all frames sum to the loss (activation checkpointing back-propagates per step).
pub fn step_loss(pred: &Tensor, target: &Tensor, numel: f64) -> Tensor {
    let d = pred - target;
    (d.abs().sum(Kind::Float) + d.square().sum(Kind::Float)) / numel
}

/// The seed of the scheduled-sampling mask of `step` on `rank`.
pub(crate) fn mask_seed(seed: u64, step: u64, rank: usize) -> u64 {
    let mut r = MaskRng::new(seed ^ 0x5EED_0000_0000_0000);
    let a = r.next_u64();
    a ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// Seconds spent in each phase of one training step (filled when timing was asked for; GPU
/// work is synchronised at each phase boundary then, which costs some overlap).
#[derive(Debug, Clone, Copy, Default)]
pub struct StepTimes {
    /// Forward pass and loss.
    pub forward: f64,
    /// Backward pass and gathering the flat gradient.
    pub backward: f64,
    /// The gradient all-reduce.
    pub allreduce: f64,
    /// Clipping and the Adam update.
    pub optimizer: f64,
}

/// What one training step produced.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    /// The step's loss, averaged over ranks.
    pub loss: f64,
    /// Some rank asked to stop (preemption): every rank sees the same value.
    pub preempt: bool,
    /// Wall-clock seconds in the gradient all-reduce (mostly waiting for the slowest rank):
    /// the trainer subtracts it from the step's time to get this rank's compute time.
    pub allreduce_secs: f64,
}

/// One optimizer step on `clips` `[B, I + F, C, H, W]`: forward with the scheduled-sampling
/// `mask`, L1 + L2 loss, backward, ONE all-reduce carrying the flat gradient, this rank's loss
/// and its `stop` flag, clipping, Adam. With `times`, each phase is timed (CUDA synchronised).
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    net: &Network,
    flat: &mut FlatParams,
    cfg: &ValidConfig,
    rt: &mut Runtime,
    clips: &Tensor,
    mask: Option<Tensor>,
    lr: f64,
    stop: bool,
    times: Option<&mut StepTimes>,
) -> Result<StepOutcome> {
    let (input, future) = (cfg.data.input_frames, cfg.data.future_frames);
    let steps_in = (input + future - 1) as i64;
    if cfg.train.activation_checkpointing {
        // Forward and backward interleave, one time step at a time (the whole recomputed pass
        // counts as backward in the timings).
        let run = |flat: &mut FlatParams, scale: f64| -> Result<LossPhase> {
            flat.zero_grad();
            let target = clips.narrow(1, 1, steps_in);
            let numel = target.numel() as f64;
            let rollout = Rollout::training(input, future, mask);
            let l = backward_recomputed(net, &clips.narrow(1, 0, steps_in), &rollout, |t, y| {
                Some(step_loss(y, &target.select(1, t as i64), numel) * scale)
            })?;
            Ok(LossPhase::BackPropagated(l / scale))
        };
        return step_general(flat, cfg, rt, run, lr, stop, times);
    }
    if let (true, Device::Cuda(k)) = (cfg.train.cuda_graphs, rt.device) {
        let run = |flat: &mut FlatParams, scale: f64| -> Result<LossPhase> {
            graphed_loss(net, flat, (input, future), clips, mask, scale, k)
        };
        return step_general(flat, cfg, rt, run, lr, stop, times);
    }
    let forward_loss = || -> Result<Tensor> {
        let rollout = Rollout::training(input, future, mask);
        let out = net.forward(&clips.narrow(1, 0, steps_in), &rollout)?;
        Ok(loss(&out, &clips.narrow(1, 1, steps_in)))
    };
    step_with_loss(flat, cfg, rt, forward_loss, lr, stop, times)
}

/// The loss phase of a step through a CUDA graph ([`super::cuda_graph`]): eager warm-up steps
/// on a side stream for a new key, then one capture of zero-grad + forward + loss + backward,
/// then replays with this step's batch and mask copied into the static inputs. The gradients
/// end in the parameters' `.grad`, as with activation checkpointing.
fn graphed_loss(
    net: &Network,
    flat: &mut FlatParams,
    (input, future): (usize, usize),
    clips: &Tensor,
    mask: Option<Tensor>,
    scale: f64,
    k: usize,
) -> Result<LossPhase> {
    use super::cuda_graph::{on_side_stream, GraphKey, STEP_GRAPHS};
    let steps_in = (input + future - 1) as i64;
    // Decided on the host from the CPU mask, so nothing inside the capture reads the device.
    let forced = mask.as_ref().map_or(0, teacher_forced_prefix);
    let key = GraphKey {
        known: input + forced,
        scale_bits: scale.to_bits(),
    };
    let device = Device::Cuda(k);
    // The CPU mask moved to the device (a tensor of its own, so a capture may keep it).
    let mask = mask.map(|m| m.to_device(device).to_kind(Kind::Float));
    let body = |flat: &mut FlatParams, clips: &Tensor, mask: Option<&Tensor>| -> Result<Tensor> {
        flat.zero_grad();
        let rollout = Rollout::training(input, future, mask.map(Tensor::shallow_clone))
            .with_teacher_forced(forced);
        let out = net.forward(&clips.narrow(1, 0, steps_in), &rollout)?;
        let l = loss(&out, &clips.narrow(1, 1, steps_in)) * scale;
        l.backward();
        Ok(l)
    };
    STEP_GRAPHS.with(|graphs| {
        let mut graphs = graphs.borrow_mut();
        let scaled = if graphs.get(&key).is_some() {
            graphs.replay(k, &key, clips, mask.as_ref())?
        } else if !graphs.warmed(key) {
            on_side_stream(k, || body(flat, clips, mask.as_ref()))?.detach()
        } else {
            let static_clips = clips.copy();
            let captured = graphs.capture(k, key, static_clips, mask, |c, m| body(flat, c, m))?;
            captured.loss.shallow_clone()
        };
        Ok(LossPhase::BackPropagated(scaled / scale))
    })
}

/// What the loss phase of a step hands over.
enum LossPhase {
    /// The loss with its autograd graph: backward comes next.
    Graph(Tensor),
    /// The (unscaled) loss value; the gradients are already in the parameters' `.grad`.
    BackPropagated(Tensor),
}

/// The body of every training step whatever the task: `forward_loss` computes this rank's
/// scalar loss; then backward, ONE all-reduce carrying the flat gradient, the loss and the
/// `stop` flag, clipping and Adam on the flat buffer. With `times`, each phase is timed.
#[allow(clippy::too_many_arguments)]
pub fn step_with_loss(
    flat: &mut FlatParams,
    cfg: &ValidConfig,
    rt: &mut Runtime,
    forward_loss: impl FnOnce() -> Result<Tensor>,
    lr: f64,
    stop: bool,
    times: Option<&mut StepTimes>,
) -> Result<StepOutcome> {
    let run = |_: &mut FlatParams, _: f64| forward_loss().map(LossPhase::Graph);
    step_general(flat, cfg, rt, run, lr, stop, times)
}

/// [`step_with_loss`] where `run(flat, loss_scale)` either returns the loss graph or has
/// back-propagated `loss × loss_scale` itself (activation checkpointing).
fn step_general(
    flat: &mut FlatParams,
    cfg: &ValidConfig,
    rt: &mut Runtime,
    run: impl FnOnce(&mut FlatParams, f64) -> Result<LossPhase>,
    lr: f64,
    stop: bool,
    times: Option<&mut StepTimes>,
) -> Result<StepOutcome> {
    let device = rt.device;
    let timed = times.is_some();
    let mut clock = Instant::now();
    // Seconds since the previous lap (0 when not timing); synchronises CUDA first.
    let mut lap = || {
        if !timed {
            return 0.0;
        }
        if let Device::Cuda(k) = device {
            tch::Cuda::synchronize(k as i64);
        }
        let e = clock.elapsed().as_secs_f64();
        clock = Instant::now();
        e
    };
    let tracker = rt.tracker.clone();
    tracker.phase(Phase::Forward);
    let scale = rt.scaler.as_ref().map_or(1.0, |sc| sc.scale);
    let (l, forward) = match run(flat, scale)? {
        LossPhase::Graph(l) => {
            let forward = lap();
            tracker.phase(Phase::Backward);
            flat.zero_grad();
            match &rt.scaler {
                Some(sc) => (&l * sc.scale).backward(),
                None => l.backward(),
            }
            (l, forward)
        }
        LossPhase::BackPropagated(l) => (l, 0.0),
    };
    let extra = Tensor::from_slice(&[l.double_value(&[]) as f32, f32::from(u8::from(stop))])
        .to_device(device);
    let mut buf = Tensor::cat(&[flat.flat_grad(), extra], 0);
    let backward = lap();
    tracker.phase(Phase::AllReduce);
    let reduce_start = Instant::now();
    rt.coll.all_reduce_mean(&mut buf)?;
    let allreduce_secs = reduce_start.elapsed().as_secs_f64();
    let allreduce = lap();
    tracker.phase(Phase::Optimizer);
    let n = flat.numel();
    let mut grad = buf.narrow(0, 0, n);
    let tail = Vec::<f32>::try_from(buf.narrow(0, n, 2).to_device(Device::Cpu))?;
    // Under fp16 a gradient that overflowed is dropped (the scale halves instead).
    let finite = rt.scaler.as_mut().is_none_or(|sc| sc.unscale(&mut grad));
    if finite {
        if cfg.optim.gradient_clipping {
            FlatParams::clip(&mut grad, cfg.optim.clipping_threshold);
        }
        flat.adam_step(&grad, lr, &cfg.optim);
    } else {
        tracing::warn!("fp16 gradient overflow: step skipped, loss scale lowered");
    }
    let optimizer = lap();
    if let Some(t) = times {
        t.forward += forward;
        t.backward += backward;
        t.allreduce += allreduce;
        t.optimizer += optimizer;
    }
    Ok(StepOutcome {
        loss: f64::from(tail[0]),
        preempt: tail[1] > 0.0,
        allreduce_secs,
    })
}
