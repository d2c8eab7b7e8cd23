//! Training (`convtt-worker train`): data → model → loss → gradient all-reduce → clip → Adam on
//! the flat buffer → validation, metrics log and sharded checkpoints; resume and preemption.
//!
//! Rank roles: every rank loads its share of the data, computes gradients and steps (all ranks
//! hold identical parameters, checked every `train.param_check_every` steps); every rank writes
//! its checkpoint shard; only rank 0 commits checkpoints and writes `metrics.jsonl` and
//! `summary.toml`. Barriers surround checkpoint commits.
//!
//! Preemption (SIGTERM, SIGUSR1, SIGUSR2, or the launcher's preempt message) must make every
//! rank stop at the same step, so the flag travels inside the gradient all-reduce: one extra
//! element, no extra collective. A second SIGINT exits at once.

pub mod activity;
pub mod optim;
pub mod schedule;

#[cfg(all(test, feature = "gpu-tests"))]
mod gpu_tests;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convtt_common::checkpoint::{Manifest, RankState, FORMAT_VERSION};
use convtt_common::config::{Precision, ValidConfig};
use convtt_common::lpips::Lpips;
use convtt_common::metrics::{FrameMetrics, TrivialBaselines};
use convtt_common::model::{
    backward_recomputed, scheduled_sampling_mask, ComputeMode, MaskRng, Network, Rollout,
};
use convtt_core::{AgentClient, WorkerDevice, WorkerEnv};
use serde_json::json;
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::checkpoint::{self as ckpt, Resume};
use crate::data::{self, Loader, Placement};
use crate::dist::{parameter_drift, Agent, Collective, Nccl, Single};
use crate::error::{Error, Result};
use optim::{FlatParams, LossScaler};
use schedule::Schedules;

/// What `train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    /// The run configuration.
    pub config: PathBuf,
    /// `section.key=value` overrides.
    pub overrides: Vec<String>,
    /// Run directory (default: the launcher's, else `launch.run_dir`).
    pub run_dir: Option<PathBuf>,
    /// What to resume from.
    pub resume: Resume,
}

/// Where this worker stands in the job and what it computes on.
pub struct Context {
    /// The resolved configuration.
    pub cfg: ValidConfig,
    /// The launcher's environment (None for a world of one started by hand).
    pub env: Option<WorkerEnv>,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The device.
    pub device: Device,
    /// Collectives.
    pub coll: Box<dyn Collective>,
    /// Set by signals: checkpoint, then exit 4.
    pub preempt: Arc<AtomicBool>,
    /// Set by the launcher's preempt message (the agent client's flag), when launched.
    agent_preempt: Option<Arc<AtomicBool>>,
    /// Dynamic loss scaling (`train.precision = "fp16"` only).
    pub scaler: Option<LossScaler>,
}

impl Context {
    /// Loads the config, reads the launcher's environment, picks the device, sets the thread
    /// count and connects the collectives.
    pub fn new(config: &Path, overrides: &[String], run_dir: Option<PathBuf>) -> Result<Self> {
        let cfg = convtt_common::config::load(config, overrides)?;
        let env = WorkerEnv::from_env().map_err(|e| Error::Usage(e.to_string()))?;
        let run_dir = run_dir
            .or_else(|| env.as_ref().map(|e| e.run_dir.clone()))
            .unwrap_or_else(|| PathBuf::from(cfg.launch.resolved_run_dir()));
        let device = pick_device(&cfg, env.as_ref())?;
        let fp16 = cfg.train.precision == Precision::Fp16;
        if fp16 && !device.is_cuda() {
            return Err(Error::Unavailable(
                "train.precision = \"fp16\" on CPU: libtorch's f16 convolutions on CPU are \
                 about 100x slower than f32; use \"bf16\" (or \"f32\") on CPU"
                    .into(),
            ));
        }
        let scaler = fp16.then(LossScaler::default);
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(cfg.train.cudnn_benchmark && !cfg.train.deterministic);
        }
        set_threads(cfg.train.threads);
        let preempt = Arc::new(AtomicBool::new(false));
        install_signals(&preempt)?;
        let mut agent_preempt = None;
        let coll: Box<dyn Collective> = match &env {
            None => Box::new(Single),
            Some(e) => {
                let timeout = Duration::from_secs_f64(cfg.launch.collective_timeout_secs + 30.0);
                let client =
                    AgentClient::from_env(e, timeout).map_err(|e| Error::Peer(e.to_string()))?;
                agent_preempt = Some(client.preempt_flag());
                let agent = Agent::new(client);
                match device {
                    // GPU workers all-reduce with NCCL; the agent still carries the id,
                    // barriers, metric sums and heartbeats.
                    Device::Cuda(k) => Box::new(Nccl::connect(agent, k, timeout)?),
                    _ => Box::new(agent),
                }
            }
        };
        Ok(Context {
            cfg,
            env,
            run_dir,
            device,
            coll,
            preempt,
            agent_preempt,
            scaler,
        })
    }

    /// A signal or the launcher asked this worker to checkpoint and stop.
    pub fn preempt_requested(&self) -> bool {
        self.preempt.load(Ordering::Acquire)
            || self
                .agent_preempt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Acquire))
    }

    fn rank(&self) -> usize {
        self.coll.rank()
    }

    fn attempt(&self) -> u32 {
        self.env.as_ref().map_or(0, |e| e.attempt)
    }
}

fn pick_device(cfg: &ValidConfig, env: Option<&WorkerEnv>) -> Result<Device> {
    use convtt_common::config::DeviceKind;
    let cuda = |k: usize| {
        if tch::Cuda::is_available() && (k as i64) < tch::Cuda::device_count() {
            Ok(Device::Cuda(k))
        } else {
            Err(Error::Unavailable(format!(
                "CUDA device {k} is not available (run `convtt-worker doctor --require-gpu`)"
            )))
        }
    };
    match (cfg.train.device, env.map(|e| e.device)) {
        (DeviceKind::Cpu, _) => Ok(Device::Cpu),
        (_, Some(WorkerDevice::Cuda(k))) => cuda(k as usize),
        (DeviceKind::Cuda, _) => cuda(0),
        (DeviceKind::Auto, _) => Ok(Device::Cpu),
    }
}

/// Intra-op threads: the configured number, else one per CPU of this process's mask (so two
/// workers pinned to one core each do not oversubscribe).
fn set_threads(configured: usize) {
    let n = if configured > 0 {
        configured
    } else {
        crate::doctor::cpu_count(&crate::doctor::cpu_mask())
            .unwrap_or(1)
            .max(1)
    };
    tch::set_num_threads(n as i32);
}

fn install_signals(flag: &Arc<AtomicBool>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let err = |e: std::io::Error| Error::Usage(format!("cannot install signal handlers: {e}"));
    for sig in [SIGTERM, SIGUSR1, SIGUSR2] {
        signal_hook::flag::register(sig, flag.clone()).map_err(err)?;
    }
    // First SIGINT: preempt (checkpoint, exit 4). Second: exit at once (130).
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, flag.clone()).map_err(err)?;
    signal_hook::flag::register(SIGINT, flag.clone()).map_err(err)?;
    Ok(())
}

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
fn mask_seed(seed: u64, step: u64, rank: usize) -> u64 {
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
}

/// One optimizer step on `clips` `[B, I + F, C, H, W]`: forward with the scheduled-sampling
/// `mask`, L1 + L2 loss, backward, ONE all-reduce carrying the flat gradient, this rank's loss
/// and its `stop` flag, clipping, Adam. With `times`, each phase is timed (CUDA synchronised).
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    net: &Network,
    flat: &mut FlatParams,
    ctx: &mut Context,
    clips: &Tensor,
    mask: Option<Tensor>,
    lr: f64,
    stop: bool,
    times: Option<&mut StepTimes>,
) -> Result<StepOutcome> {
    let (input, future) = (ctx.cfg.data.input_frames, ctx.cfg.data.future_frames);
    let steps_in = (input + future - 1) as i64;
    if ctx.cfg.train.activation_checkpointing {
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
        return step_general(flat, ctx, run, lr, stop, times);
    }
    let forward_loss = || -> Result<Tensor> {
        let rollout = Rollout::training(input, future, mask);
        let out = net.forward(&clips.narrow(1, 0, steps_in), &rollout)?;
        Ok(loss(&out, &clips.narrow(1, 1, steps_in)))
    };
    step_with_loss(flat, ctx, forward_loss, lr, stop, times)
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
pub fn step_with_loss(
    flat: &mut FlatParams,
    ctx: &mut Context,
    forward_loss: impl FnOnce() -> Result<Tensor>,
    lr: f64,
    stop: bool,
    times: Option<&mut StepTimes>,
) -> Result<StepOutcome> {
    let run = |_: &mut FlatParams, _: f64| forward_loss().map(LossPhase::Graph);
    step_general(flat, ctx, run, lr, stop, times)
}

/// [`step_with_loss`] where `run(flat, loss_scale)` either returns the loss graph or has
/// back-propagated `loss × loss_scale` itself (activation checkpointing).
fn step_general(
    flat: &mut FlatParams,
    ctx: &mut Context,
    run: impl FnOnce(&mut FlatParams, f64) -> Result<LossPhase>,
    lr: f64,
    stop: bool,
    times: Option<&mut StepTimes>,
) -> Result<StepOutcome> {
    let cfg = &ctx.cfg;
    let device = ctx.device;
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
    let scale = ctx.scaler.as_ref().map_or(1.0, |sc| sc.scale);
    let (l, forward) = match run(flat, scale)? {
        LossPhase::Graph(l) => {
            let forward = lap();
            flat.zero_grad();
            match &ctx.scaler {
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
    ctx.coll.all_reduce_mean(&mut buf)?;
    let allreduce = lap();
    let n = flat.numel();
    let mut grad = buf.narrow(0, 0, n);
    let tail = Vec::<f32>::try_from(buf.narrow(0, n, 2).to_device(Device::Cpu))?;
    // Under fp16 a gradient that overflowed is dropped (the scale halves instead).
    let finite = ctx.scaler.as_mut().is_none_or(|sc| sc.unscale(&mut grad));
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
    })
}

/// Validation result (global means over every rank's clips).
#[derive(Debug, Clone)]
pub struct Validation {
    /// L1 + L2 loss over all I + F − 1 outputs (teacher forcing off); for activity runs
    /// λ · that + cross-entropy at the training ratio.
    pub loss: f64,
    /// Per-frame metric means over the F future frames.
    pub frames: FrameMetrics,
    /// The same metrics of the copy-last-frame and all-zeros predictors on the same clips
    /// (prediction runs).
    pub baselines: Option<TrivialBaselines>,
    /// Accuracies of an activity run.
    pub activity: Option<activity::ActivityScores>,
}

impl Validation {
    /// The headline numbers: loss and the means over frames of every metric.
    pub fn summary(&self) -> Vec<(&'static str, f64)> {
        let f = &self.frames;
        let mut v = vec![
            ("loss", self.loss),
            ("mse", mean(&f.mse)),
            ("mae", mean(&f.mae)),
            ("psnr", mean(&f.psnr)),
            ("ssim", mean(&f.ssim_paper)),
            ("ssim_wang2004", mean(&f.ssim_wang)),
        ];
        if let Some(a) = &self.activity {
            v.push(("accuracy", a.accuracy));
        }
        v
    }
}

/// Runs the model over `loader` (autoregressive) and reduces loss and metrics over ranks.
pub fn validate(
    net: &Network,
    loader: &Loader,
    coll: &mut dyn Collective,
    input: usize,
    future: usize,
) -> Result<Validation> {
    validate_with(net, loader, coll, input, future, None)
}

/// [`validate`], with LPIPS per frame when `lpips` is given (`eval`).
pub fn validate_with(
    net: &Network,
    loader: &Loader,
    coll: &mut dyn Collective,
    input: usize,
    future: usize,
    lpips: Option<&Lpips>,
) -> Result<Validation> {
    let mut sums: Option<(FrameMetrics, TrivialBaselines)> = None;
    let mut loss_sum = 0.0;
    tch::no_grad(|| -> Result<()> {
        for batch in loader.epoch(0) {
            let clips = batch?.clips;
            let rollout = Rollout::training(input, future, None);
            let out = net.forward(&clips.narrow(1, 0, input as i64), &rollout)?;
            let target = clips.narrow(1, 1, (input + future - 1) as i64);
            let b = clips.size()[0] as f64;
            loss_sum += loss(&out, &target).double_value(&[]) * b;
            let pred = out.narrow(1, input as i64 - 1, future as i64);
            let truth = clips.narrow(1, input as i64, future as i64);
            let mut m = FrameMetrics::compute(&pred, &truth)?;
            if let Some(l) = lpips {
                m.add_lpips(l, &pred, &truth)?;
            }
            let base = TrivialBaselines::compute(&clips.select(1, input as i64 - 1), &truth)?;
            match &mut sums {
                Some((s, sb)) => {
                    s.add(&m);
                    sb.add(&base);
                }
                None => sums = Some((m, base)),
            }
        }
        Ok(())
    })?;
    let model_len = 1 + (6 + usize::from(lpips.is_some())) * future;
    let mut flat = match &sums {
        Some((m, b)) => [m.to_flat(), b.to_flat()].concat(),
        None => vec![0.0; model_len + TrivialBaselines::flat_len(future)],
    };
    flat.push(loss_sum);
    coll.all_reduce_sum_f64(&mut flat)?;
    let loss_total = flat.pop().unwrap_or(0.0);
    let totals = FrameMetrics::from_flat(&flat[..model_len], future);
    let baselines = TrivialBaselines::from_flat(&flat[model_len..], future);
    Ok(Validation {
        loss: loss_total / totals.samples.max(1) as f64,
        frames: totals.means(),
        baselines: Some(baselines.means()),
        activity: None,
    })
}

/// Mean over frames of a per-frame vector.
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Appends JSON lines to `<run>/metrics.jsonl` (rank 0 only).
pub(crate) struct MetricsLog(Option<std::fs::File>);

impl MetricsLog {
    pub(crate) fn open(run_dir: &Path, rank: usize) -> Result<Self> {
        if rank != 0 {
            return Ok(MetricsLog(None));
        }
        let path = run_dir.join("metrics.jsonl");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog(Some(f)))
    }

    pub(crate) fn write(&mut self, v: serde_json::Value) {
        if let Some(f) = &mut self.0 {
            if let Err(e) = writeln!(f, "{v}") {
                tracing::warn!("cannot append to metrics.jsonl: {e}");
            }
        }
    }
}

/// Training progress that a checkpoint captures.
#[derive(Debug, Clone, Default)]
struct Cursor {
    step: u64,
    epoch: u64,
    batches_done: u64,
    samples_seen: u64,
}

/// `convtt-worker train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let mut ctx = Context::new(&args.config, &args.overrides, args.run_dir.clone())?;
    let result = train(&mut ctx, &args.resume);
    let (code, reason) = match &result {
        Ok(()) => (crate::exit::OK, "finished".to_owned()),
        Err(e) => (e.exit_code(), e.to_string()),
    };
    ctx.coll.goodbye(code, &reason);
    result
}

fn train(ctx: &mut Context, resume: &Resume) -> Result<()> {
    let cfg = ctx.cfg.clone();
    let (rank, world) = (ctx.rank(), ctx.coll.world_size());
    let (input, future) = (cfg.data.input_frames, cfg.data.future_frames);
    let ckpt_root = ctx.run_dir.join("checkpoints");
    if rank == 0 {
        for d in [&ctx.run_dir, &ckpt_root] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        ckpt::remove_stale_tmp(&ckpt_root);
        let cfg_path = ctx.run_dir.join("config.toml");
        if !cfg_path.exists() {
            convtt_common::fsutil::write_atomic(&cfg_path, cfg.to_toml().as_bytes())?;
        }
    }
    ctx.coll.barrier()?;

    tch::manual_seed(cfg.train.seed as i64);
    let vs = VarStore::new(ctx.device);
    let task = Task::new(&vs, &cfg)?;
    let mut flat = FlatParams::new(&vs);
    ctx.coll.broadcast(&mut flat.params)?;
    // This (the training) thread computes as `train.precision` and `fused_cell_update` say.
    let _compute = ComputeMode::for_config(&cfg.train).enter();

    let mut sched = Schedules::new(&cfg.optim);
    let mut cur = Cursor::default();
    if let Some((dir, m)) = ckpt::resolve(&ckpt_root, resume)? {
        restore(&cfg, &dir, &m, &mut flat, &mut sched, &mut cur)?;
        if let (Some(sc), Some(v)) = (ctx.scaler.as_mut(), m.state.get("loss_scale")) {
            *sc = v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| Error::Data {
                    path: dir.join(convtt_common::checkpoint::MANIFEST),
                    msg: format!("bad loss_scale state: {}", e.message()),
                })?;
        }
        tracing::info!(step = cur.step, "resumed from {}", dir.display());
    }

    let at = Placement {
        world,
        rank,
        device: ctx.device,
    };
    let data_cfg = task.data_config(&cfg);
    let loader = data::train_loader(&data_cfg, cfg.train.seed, at)?;
    let steps_per_epoch = loader.steps() as u64;
    if steps_per_epoch == 0 {
        return Err(Error::Usage(format!(
            "{}: too few training clips for one batch of {} on each of {world} workers",
            cfg.data.dataset,
            cfg.data.batch_size / world
        )));
    }
    let valid = match data::eval_loader(
        &data_cfg,
        &cfg.data.valid_split,
        cfg.data.max_valid_clips,
        task.valid_frames(&cfg),
        at,
    ) {
        Ok(l) if l.steps() > 0 => Some(l),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("no validation: {e}");
            None
        }
    };
    let mut total = cfg.train.epochs as u64 * steps_per_epoch;
    if cfg.train.max_steps > 0 {
        total = total.min(cfg.train.max_steps);
    }
    let mut log = MetricsLog::open(&ctx.run_dir, rank)?;
    if rank == 0 {
        tracing::info!(
            world,
            steps_per_epoch,
            total_steps = total,
            params = flat.numel(),
            "training {} on {:?}",
            cfg.launch.name,
            ctx.device
        );
    }

    let per_rank_batch = (cfg.data.batch_size / world) as u64;
    let mut last_saved = cur.step;
    // At most one checkpoint in flight; it is committed at the next step boundary.
    let mut pending: Option<PendingSave> = None;
    let mut window = (Instant::now(), 0u64, 0.0f64, 0u64); // (since, samples, loss sum, steps)
    let mut last_loss = f64::NAN;
    'epochs: while cur.epoch < cfg.train.epochs as u64 && cur.step < total {
        let skip = cur.batches_done;
        for (i, batch) in loader.epoch(cur.epoch).enumerate() {
            if (i as u64) < skip {
                continue;
            }
            let batch = batch?;
            let clips = batch.clips;
            let lr = sched.lr_at(&cfg.optim, cur.step, total);
            let ratio = sched.ss_ratio_at(&cfg.optim, cur.step, total);
            let mut mrng = MaskRng::new(mask_seed(cfg.train.seed, cur.step, rank));
            let mask = scheduled_sampling_mask(&mut mrng, clips.size()[0] as usize, future, ratio);
            let stop = ctx.preempt_requested();
            let out = match &task {
                Task::Predict(net) => {
                    train_step(net, &mut flat, ctx, &clips, mask, lr, stop, None)?
                }
                Task::Activity(a, labels) => {
                    // Autoregressive after the observed frames: no scheduled sampling, so the
                    // model never sees frames beyond the input ratio.
                    let y = activity::batch_labels(&labels.train, &batch.indices)?;
                    step_with_loss(&mut flat, ctx, || a.loss(&clips, &y), lr, stop, None)?
                }
            };
            cur.step += 1;
            cur.batches_done += 1;
            cur.samples_seen += per_rank_batch * world as u64;
            let step_loss = out.loss;
            last_loss = step_loss;
            window.1 += per_rank_batch * world as u64;
            window.2 += step_loss;
            window.3 += 1;

            if cur.step % cfg.train.log_every == 0 || cur.step == total {
                let secs = window.0.elapsed().as_secs_f64().max(1e-9);
                let sps = window.1 as f64 / secs;
                let mean_loss = window.2 / window.3.max(1) as f64;
                if rank == 0 {
                    tracing::info!(
                        step = cur.step,
                        epoch = cur.epoch,
                        loss = format!("{mean_loss:.5}"),
                        lr = format!("{lr:.3e}"),
                        ss_ratio = format!("{ratio:.3}"),
                        samples_per_s = format!("{sps:.1}"),
                        "train {}/{}",
                        cur.step,
                        total
                    );
                }
                log.write(
                    json!({"kind": "train", "step": cur.step, "epoch": cur.epoch,
                    "loss": mean_loss, "lr": lr, "ss_ratio": ratio, "samples_per_s": sps}),
                );
                heartbeat(ctx, &cur, total, mean_loss, sps);
                window = (Instant::now(), 0, 0.0, 0);
            }
            let pc = cfg.train.param_check_every;
            if pc > 0 && cur.step % pc == 0 && world > 1 {
                let drift = parameter_drift(ctx.coll.as_mut(), &flat.params)?;
                if drift > 1e-5 {
                    return Err(Error::Peer(format!(
                        "rank {rank}: parameters differ from the other ranks' mean by {drift:.2e} \
                         (relative) at step {}",
                        cur.step
                    )));
                }
            }
            let mut metrics = None;
            if cfg.train.valid_every > 0 && cur.step % cfg.train.valid_every == 0 {
                if let Some(v) = &valid {
                    metrics = Some(run_validation(
                        &task, v, ctx, &mut log, &cur, input, future,
                    )?);
                }
            }
            if let Some(p) = pending.take() {
                finish_save(ctx, p)?;
            }
            let every = cfg.checkpoint.every_steps;
            let preempted = out.preempt;
            if (every > 0 && cur.step % every == 0) || preempted {
                pending = Some(begin_save(ctx, &flat, &sched, &cur, metrics.as_ref()));
                last_saved = cur.step;
            }
            if preempted {
                // A preemption waits for the commit.
                if let Some(p) = pending.take() {
                    finish_save(ctx, p)?;
                }
                return Err(Error::Preempted(cur.step));
            }
            // Stop mid-epoch at the step limit; at an epoch's last batch the epoch ends normally.
            if cur.step >= total && cur.batches_done < steps_per_epoch {
                break 'epochs;
            }
        }
        // End of epoch.
        let v = match &valid {
            Some(v) if cfg.train.valid_every == 0 => Some(run_validation(
                &task, v, ctx, &mut log, &cur, input, future,
            )?),
            _ => None,
        };
        sched.end_epoch(&cfg.optim, cur.epoch as usize, v.as_ref().map(|v| v.loss));
        cur.epoch += 1;
        cur.batches_done = 0;
    }
    if let Some(p) = pending.take() {
        finish_save(ctx, p)?;
    }
    let final_valid = match &valid {
        Some(v) => Some(run_validation(
            &task, v, ctx, &mut log, &cur, input, future,
        )?),
        None => None,
    };
    if last_saved != cur.step {
        let p = begin_save(ctx, &flat, &sched, &cur, final_valid.as_ref());
        finish_save(ctx, p)?;
    }
    if rank == 0 {
        write_summary(&ctx.run_dir, &cur, last_loss, final_valid.as_ref())?;
        match &task {
            Task::Predict(net) => crate::eval::plot::after_training(&ctx.run_dir, &cfg, net),
            Task::Activity(..) => {
                if let Err(e) = crate::eval::plot::write_plots(&ctx.run_dir, &cfg, None) {
                    tracing::warn!("cannot draw the plots: {e}");
                }
            }
        }
        tracing::info!(
            step = cur.step,
            "training finished: {}",
            ctx.run_dir.display()
        );
    }
    Ok(())
}

fn heartbeat(ctx: &mut Context, cur: &Cursor, total: u64, loss: f64, sps: f64) {
    let progress = convtt_core::protocol::Progress {
        step: cur.step,
        total_steps: total,
        epoch: cur.epoch as u32,
        loss: loss as f32,
        samples_per_sec: sps as f32,
    };
    if let Err(e) = ctx.coll.heartbeat(&progress) {
        tracing::warn!("heartbeat: {e}");
    }
}

/// What `train` trains: the prediction network, or the activity task with its split labels.
enum Task {
    Predict(Network),
    Activity(Box<activity::ActivityTask>, SplitLabels),
}

/// Labels of the training and validation splits of an activity run.
struct SplitLabels {
    train: Vec<i64>,
    valid: Vec<i64>,
}

impl Task {
    fn new(vs: &VarStore, cfg: &ValidConfig) -> Result<Self> {
        if !cfg.activity.enabled {
            return Ok(Task::Predict(Network::new(&vs.root(), &cfg.model)));
        }
        if cfg.data.source != convtt_common::config::DataSource::Shards {
            return Err(Error::Usage(
                "activity.enabled needs data.source = \"shards\" (a labelled dataset)".into(),
            ));
        }
        let space = activity::LabelSpace::open(cfg)?;
        let k = space.classes.len();
        let ds = data::Dataset::open(Path::new(&cfg.data.dataset))?;
        let train = ds.split(&cfg.data.train_split)?.labels(k)?;
        let valid = match ds.split(&cfg.data.valid_split) {
            Ok(s) => s.labels(k)?,
            Err(_) => Vec::new(),
        };
        let task = activity::ActivityTask::new(vs, cfg, space);
        Ok(Task::Activity(Box::new(task), SplitLabels { train, valid }))
    }

    fn data_config(&self, cfg: &ValidConfig) -> convtt_common::config::DataConfig {
        match self {
            Task::Predict(_) => cfg.data.clone(),
            Task::Activity(a, _) => a.data_config(&cfg.data),
        }
    }

    fn valid_frames(&self, cfg: &ValidConfig) -> usize {
        match self {
            Task::Predict(_) => cfg.data.clip_frames(),
            Task::Activity(a, _) => a.valid_frames(cfg),
        }
    }
}

fn run_validation(
    task: &Task,
    loader: &Loader,
    ctx: &mut Context,
    log: &mut MetricsLog,
    cur: &Cursor,
    input: usize,
    future: usize,
) -> Result<Validation> {
    let v = match task {
        Task::Predict(net) => validate(net, loader, ctx.coll.as_mut(), input, future)?,
        Task::Activity(a, labels) => {
            let cfg = ctx.cfg.clone();
            let (loss, frames, scores) =
                activity::validate(a, &cfg, loader, &labels.valid, ctx.coll.as_mut())?;
            Validation {
                loss,
                frames,
                baselines: None,
                activity: Some(scores),
            }
        }
    };
    let f = &v.frames;
    if ctx.rank() == 0 {
        tracing::info!(
            step = cur.step,
            loss = format!("{:.5}", v.loss),
            mse_x1e3 = format!("{:.3}", mean(&f.mse) * 1e3),
            psnr = format!("{:.2}", mean(&f.psnr)),
            ssim = format!("{:.4}", mean(&f.ssim_paper)),
            "valid"
        );
    }
    let mut line = json!({"kind": "valid", "step": cur.step, "epoch": cur.epoch, "loss": v.loss,
        "mse": mean(&f.mse), "mae": mean(&f.mae), "psnr": mean(&f.psnr),
        "ssim": mean(&f.ssim_paper), "ssim_wang2004": mean(&f.ssim_wang),
        "per_frame": {"mse": f.mse, "mae": f.mae, "psnr": f.psnr, "ssim": f.ssim_paper}});
    if let Some(b) = &v.baselines {
        for (key, m) in [("copy_last", &b.copy_last), ("zeros", &b.zeros)] {
            line["baselines"][key] = json!({"mse": mean(&m.mse), "mae": mean(&m.mae),
                "psnr": mean(&m.psnr), "ssim": mean(&m.ssim_paper),
                "ssim_wang2004": mean(&m.ssim_wang),
                "per_frame": {"mse": m.mse, "mae": m.mae, "psnr": m.psnr, "ssim": m.ssim_paper}});
        }
    }
    if let Some(a) = &v.activity {
        if ctx.rank() == 0 {
            tracing::info!(
                step = cur.step,
                accuracy = format!("{:.4}", a.accuracy),
                cross_entropy = format!("{:.4}", a.cross_entropy),
                "valid activity"
            );
        }
        line["accuracy"] = json!(a.accuracy);
        line["cross_entropy"] = json!(a.cross_entropy);
        line["prediction_loss"] = json!(a.prediction_loss);
        line["accuracy_per_ratio"] = json!(a
            .ratios
            .iter()
            .map(|r| json!({"ratio": r.ratio, "input_frames": r.input_frames,
                "accuracy": r.accuracy, "groups": r.groups}))
            .collect::<Vec<_>>());
    }
    log.write(line);
    Ok(v)
}

/// A checkpoint whose shards are being written by a background thread; committed by
/// [`finish_save`] (after a barrier, by rank 0) once the thread is done.
struct PendingSave {
    writer: std::thread::JoinHandle<Result<()>>,
    step: u64,
    tmp: PathBuf,
    /// Rank 0: the manifest to commit (files are filled in at commit time).
    manifest: Option<Manifest>,
}

/// Starts a checkpoint of the current state: the flat buffers are copied to the host here (so
/// training may continue changing them) and written, with this rank's state file, on a
/// background thread. Training does not wait on the disk; [`finish_save`] commits.
fn begin_save(
    ctx: &Context,
    flat: &FlatParams,
    sched: &Schedules,
    cur: &Cursor,
    valid: Option<&Validation>,
) -> PendingSave {
    let cfg = &ctx.cfg;
    let (rank, world) = (ctx.rank(), ctx.coll.world_size());
    let root = ctx.run_dir.join("checkpoints");
    let tmp = ckpt::tmp_dir(&root, cur.step, ctx.attempt());
    let bufs = flat.to_host();
    let state = RankState {
        rank,
        rng_seed: mask_seed(cfg.train.seed, cur.step, rank),
        epoch: cur.epoch,
        batches_done: cur.batches_done,
    };
    let dir = tmp.clone();
    let writer = std::thread::spawn(move || {
        ckpt::write_shard(&dir, rank, world, [&bufs[0], &bufs[1], &bufs[2]], &state)
    });
    let manifest = (rank == 0).then(|| {
        let metrics = valid
            .map(Validation::summary)
            .into_iter()
            .flatten()
            .map(|(k, x)| (format!("valid.{k}"), x))
            .collect();
        let mut state = toml::Table::new();
        state.insert(
            "adam_steps".into(),
            toml::Value::Integer(flat.adam_steps as i64),
        );
        state.insert(
            "batches_done".into(),
            toml::Value::Integer(cur.batches_done as i64),
        );
        state.insert(
            "schedules".into(),
            toml::Value::try_from(sched).expect("schedules serialise"),
        );
        if let Some(sc) = &ctx.scaler {
            state.insert(
                "loss_scale".into(),
                toml::Value::try_from(sc).expect("the loss scaler serialises"),
            );
        }
        Manifest {
            format_version: FORMAT_VERSION,
            step: cur.step,
            epoch: cur.epoch,
            samples_seen: cur.samples_seen,
            world_size: world,
            model_hash: cfg.model_hash(),
            model: cfg.model_table(),
            numel: flat.numel() as u64,
            layout: flat.layout.clone(),
            files: Vec::new(),
            metrics,
            state,
        }
    });
    PendingSave {
        writer,
        step: cur.step,
        tmp,
        manifest,
    }
}

/// Waits for this rank's shard, then (after a barrier) rank 0 verifies and commits the
/// checkpoint and applies retention; a second barrier keeps ranks together.
fn finish_save(ctx: &mut Context, pending: PendingSave) -> Result<PathBuf> {
    let written = pending
        .writer
        .join()
        .unwrap_or_else(|_| Err(Error::Peer("the checkpoint writer thread panicked".into())));
    written?;
    ctx.coll.barrier()?;
    let root = ctx.run_dir.join("checkpoints");
    let dir = root.join(convtt_common::checkpoint::step_dir_name(pending.step));
    if let Some(manifest) = pending.manifest {
        let c = &ctx.cfg.checkpoint;
        let retention = (
            c.keep_last,
            c.keep_best,
            c.best_mode,
            c.best_metric.as_str(),
        );
        ckpt::commit(&root, &pending.tmp, manifest, retention)?;
        ctx.coll.checkpoint_committed(pending.step, &dir)?;
    }
    ctx.coll.barrier()?;
    Ok(dir)
}

fn restore(
    cfg: &ValidConfig,
    dir: &Path,
    m: &Manifest,
    flat: &mut FlatParams,
    sched: &mut Schedules,
    cur: &mut Cursor,
) -> Result<()> {
    ckpt::check_model(cfg, dir, m, "resume")?;
    let bufs = ckpt::load_buffers(dir, m)?;
    let int = |k: &str| {
        m.state
            .get(k)
            .and_then(toml::Value::as_integer)
            .unwrap_or(0) as u64
    };
    flat.restore(&m.layout, &bufs, int("adam_steps"), dir)?;
    if let Some(s) = m.state.get("schedules") {
        *sched = s
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| Error::Data {
                path: dir.join(convtt_common::checkpoint::MANIFEST),
                msg: format!("bad schedule state: {}", e.message()),
            })?;
    }
    *cur = Cursor {
        step: m.step,
        epoch: m.epoch,
        batches_done: int("batches_done"),
        samples_seen: m.samples_seen,
    };
    Ok(())
}

fn write_summary(
    run_dir: &Path,
    cur: &Cursor,
    loss: f64,
    valid: Option<&Validation>,
) -> Result<()> {
    let mut t = toml::Table::new();
    t.insert("steps".into(), toml::Value::Integer(cur.step as i64));
    t.insert(
        "epochs_completed".into(),
        toml::Value::Integer(cur.epoch as i64),
    );
    t.insert(
        "samples_seen".into(),
        toml::Value::Integer(cur.samples_seen as i64),
    );
    t.insert("final_train_loss".into(), toml::Value::Float(loss));
    if let Some(v) = valid {
        let vt: toml::Table = v
            .summary()
            .into_iter()
            .map(|(k, x)| (k.to_owned(), toml::Value::Float(x)))
            .collect();
        t.insert("valid".into(), toml::Value::Table(vt));
    }
    let text = toml::to_string_pretty(&t).expect("summary serialises");
    convtt_common::fsutil::write_atomic(&run_dir.join("summary.toml"), text.as_bytes())?;
    Ok(())
}
