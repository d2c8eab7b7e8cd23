//! `convtt-worker bench`: steady-state training-step time split into data wait, forward,
//! backward, all-reduce and optimizer, with samples/s, peak memory and achieved FLOP/s; with
//! `--eval`, the inference rollout's clips per second instead.
//!
//! It runs the real training step ([`crate::train::train_step`]) — or the evaluation rollout
//! `eval` and `predict` run — on the configured data and model; nothing is written. Figures are printed, never asserted: tests only check that a
//! breakdown is produced.

use std::time::Instant;

use convtt_common::config::ValidConfig;
use convtt_common::model::{
    scheduled_sampling_mask, summarize, ComputeMode, MaskRng, Network, Rollout,
};
use serde::Serialize;
use tch::{nn::VarStore, Device, Tensor};

use crate::cli::BenchArgs;
use crate::data::Loader;
use crate::data::{self, Placement};
use crate::error::{Error, Result};
use crate::runtime::{Context, Runtime};
use crate::train::{optim::FlatParams, train_step, StepTimes};

/// The benchmark's findings (per timed step means).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `train` (training steps) or `eval` (inference rollouts, `--eval`).
    pub mode: String,
    /// `cpu` or `cuda:K`.
    pub device: String,
    /// `train.precision` (`f32`, `bf16`, `fp16`).
    pub precision: String,
    /// Workers in the run (1 unless started by the launcher).
    pub world_size: usize,
    /// Clips per step on this worker.
    pub batch_per_worker: usize,
    /// Intra-op threads libtorch used.
    pub threads: i32,
    /// Steps timed (after the warm-up).
    pub steps: usize,
    /// Milliseconds per step waiting for the loader.
    pub data_wait_ms: f64,
    /// Milliseconds per step in the forward pass and loss (with `--eval`: the whole rollout).
    pub forward_ms: f64,
    /// Milliseconds per step in the backward pass (and gathering the flat gradient).
    pub backward_ms: f64,
    /// Milliseconds per step in the gradient all-reduce.
    pub allreduce_ms: f64,
    /// Milliseconds per step in clipping and Adam.
    pub optimizer_ms: f64,
    /// Milliseconds per step in total (the sum of the phases).
    pub step_ms: f64,
    /// Training (or, with `--eval`, predicted) clips per second over all workers.
    pub samples_per_s: f64,
    /// Peak resident memory of this process (VmHWM), MiB.
    pub peak_host_mib: f64,
    /// Peak device memory in use, MiB: the CUDA driver's total − free, sampled after every
    /// step, so it includes the CUDA context and the caching allocator's reserve (tch 0.24
    /// does not reach the allocator's own statistics). `null` on CPU.
    pub peak_device_mib: Option<f64>,
    /// Floating-point operations per step on this worker (2 × model-info's training MACs; a
    /// third of that for `--eval`'s forward-only rollout).
    pub flops_per_step: f64,
    /// Achieved GFLOP/s on this worker.
    pub achieved_gflops: f64,
    /// Achieved over the given peak (`--peak-tflops`), when given.
    pub fraction_of_peak: Option<f64>,
}

/// `convtt-worker bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let mut overrides = args.config.overrides.clone();
    if let Some(d) = &args.device {
        match d.as_str() {
            "cpu" | "cuda" => overrides.push(format!("train.device={d}")),
            other => {
                return Err(Error::Usage(format!(
                    "--device must be cpu or cuda (got {other:?})"
                )))
            }
        }
    }
    if args.steps == 0 {
        return Err(Error::Usage("--steps must be at least 1".into()));
    }
    let mut ctx = Context::new(&args.config.config, &overrides, None)?;
    let report = measure(
        &mut ctx,
        args.warmup,
        args.steps,
        args.peak_tflops,
        args.eval,
    )?;
    if ctx.rt.rank() == 0 {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("report serialises")
            );
        } else {
            print!("{}", render(&ctx.cfg.launch.name, &report, args.warmup));
        }
    }
    Ok(())
}

/// Runs `warmup` untimed then `steps` timed training steps (with `eval`: inference rollouts)
/// and reports the means.
pub fn measure(
    ctx: &mut Context,
    warmup: usize,
    steps: usize,
    peak_tflops: Option<f64>,
    eval: bool,
) -> Result<BenchReport> {
    let Context { cfg, rt } = ctx;
    let (rank, world) = (rt.rank(), rt.world());
    tch::manual_seed(cfg.train.seed as i64);
    let vs = VarStore::new(rt.device);
    let net = Network::new(&vs.root(), &cfg.model);
    let mut flat = FlatParams::new(&vs);
    rt.coll.broadcast(&mut flat.params)?;
    let _compute = ComputeMode::for_config(&cfg.train, &cfg.model, rt.device).enter();
    let loader = data::train_loader(
        &cfg.data,
        cfg.train.seed,
        Placement {
            world,
            rank,
            device: rt.device,
        },
    )?;
    if loader.steps() == 0 {
        return Err(Error::Usage(format!(
            "{}: too few training clips for one batch per worker",
            cfg.data.dataset
        )));
    }
    let per_worker = cfg.data.batch_size / world;
    let mut device_mem = DeviceMemory::new(rt.device);
    let (times, data_wait) = if eval {
        run_rollouts(cfg, rt, &net, &loader, (warmup, steps), || {
            device_mem.sample()
        })?
    } else {
        run_steps(cfg, rt, &net, &mut flat, &loader, (warmup, steps), || {
            device_mem.sample()
        })?
    };
    let n = steps as f64;
    let ms = |s: f64| s * 1e3 / n;
    let step_s =
        (data_wait + times.forward + times.backward + times.allreduce + times.optimizer) / n;
    let summary = summarize(
        &cfg.model,
        cfg.data.height as i64,
        cfg.data.width as i64,
        per_worker as i64,
        (cfg.data.input_frames + cfg.data.future_frames - 1) as i64,
    );
    let training_flops = 2.0 * summary.macs_per_training_step as f64;
    let flops = if eval {
        training_flops / 3.0
    } else {
        training_flops
    };
    let achieved = flops / step_s.max(1e-12) / 1e9;
    Ok(BenchReport {
        mode: if eval { "eval" } else { "train" }.into(),
        device: format!("{:?}", rt.device)
            .to_lowercase()
            .replace("cuda(", "cuda:")
            .replace(')', ""),
        precision: format!("{:?}", cfg.train.precision).to_lowercase(),
        world_size: world,
        batch_per_worker: per_worker,
        threads: tch::get_num_threads(),
        steps,
        data_wait_ms: ms(data_wait),
        forward_ms: ms(times.forward),
        backward_ms: ms(times.backward),
        allreduce_ms: ms(times.allreduce),
        optimizer_ms: ms(times.optimizer),
        step_ms: step_s * 1e3,
        samples_per_s: (per_worker * world) as f64 / step_s.max(1e-12),
        peak_host_mib: peak_rss_mib(),
        peak_device_mib: device_mem.peak_mib(),
        flops_per_step: flops,
        achieved_gflops: achieved,
        fraction_of_peak: peak_tflops.map(|p| achieved / (p * 1e3)),
    })
}

/// Feeds `warmup` untimed then `steps` timed batches to `f(clips, timed, index)` over as many
/// epochs as it takes; returns the timed data wait (s).
fn each_batch(
    loader: &Loader,
    (warmup, steps): (usize, usize),
    mut f: impl FnMut(Tensor, bool, usize) -> Result<()>,
) -> Result<f64> {
    let mut data_wait = 0.0;
    let mut done = 0usize;
    let mut epoch = 0u64;
    while done < warmup + steps {
        let mut batches = loader.epoch(epoch);
        while done < warmup + steps {
            let waited = Instant::now();
            let Some(batch) = batches.next() else { break };
            let clips = batch?.clips;
            let timed = done >= warmup;
            if timed {
                data_wait += waited.elapsed().as_secs_f64();
            }
            f(clips, timed, done)?;
            done += 1;
        }
        epoch += 1;
    }
    Ok(data_wait)
}

/// Runs `warmup` untimed then `steps` timed training steps, calling `after_step` after each;
/// returns the timed phases and the timed data wait (s).
fn run_steps(
    cfg: &ValidConfig,
    rt: &mut Runtime,
    net: &Network,
    flat: &mut FlatParams,
    loader: &Loader,
    counts: (usize, usize),
    mut after_step: impl FnMut(),
) -> Result<(StepTimes, f64)> {
    let per_worker = cfg.data.batch_size / rt.world();
    let mut times = StepTimes::default();
    let data_wait = each_batch(loader, counts, |clips, timed, done| {
        let mut rng = MaskRng::new(cfg.train.seed ^ done as u64);
        let ratio = cfg.optim.ss_ratio_start;
        let mask = scheduled_sampling_mask(&mut rng, per_worker, cfg.data.future_frames, ratio);
        let slot = if timed { Some(&mut times) } else { None };
        let lr = cfg.optim.learning_rate;
        train_step(net, flat, cfg, rt, &clips, mask, lr, false, slot)?;
        after_step();
        Ok(())
    })?;
    Ok((times, data_wait))
}

/// Runs `warmup` untimed then `steps` timed evaluation rollouts (I frames in, F predicted, no
/// gradients), calling `after_step` after each; the rollout's time counts as forward.
fn run_rollouts(
    cfg: &ValidConfig,
    rt: &Runtime,
    net: &Network,
    loader: &Loader,
    counts: (usize, usize),
    mut after_step: impl FnMut(),
) -> Result<(StepTimes, f64)> {
    let (input, future) = (cfg.data.input_frames, cfg.data.future_frames);
    let mut times = StepTimes::default();
    let data_wait = each_batch(loader, counts, |clips, timed, _| {
        let started = Instant::now();
        let y = tch::no_grad(|| {
            net.forward(
                &clips.narrow(1, 0, input as i64),
                &Rollout::eval(input, future),
            )
        })?;
        if let Device::Cuda(k) = rt.device {
            tch::Cuda::synchronize(k as i64);
        }
        drop(y);
        if timed {
            times.forward += started.elapsed().as_secs_f64();
        }
        after_step();
        Ok(())
    })?;
    Ok((times, data_wait))
}

/// Peak device memory in use as the CUDA driver reports it (total − free on the device).
struct DeviceMemory {
    ctx: Option<std::sync::Arc<cudarc::driver::CudaContext>>,
    peak: usize,
}

impl DeviceMemory {
    /// Watches CUDA device `k` (the primary context libtorch uses); nothing on CPU or when the
    /// driver is missing.
    fn new(device: Device) -> Self {
        let ctx = match device {
            Device::Cuda(k) if crate::sys::cuda_driver_present() => {
                cudarc::driver::CudaContext::new(k).ok()
            }
            _ => None,
        };
        Self { ctx, peak: 0 }
    }

    fn sample(&mut self) {
        if let Some((free, total)) = self.ctx.as_ref().and_then(|c| c.mem_get_info().ok()) {
            self.peak = self.peak.max(total - free);
        }
    }

    fn peak_mib(&self) -> Option<f64> {
        self.ctx
            .as_ref()
            .map(|_| self.peak as f64 / (1024.0 * 1024.0))
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The human-readable table.
pub fn render(name: &str, r: &BenchReport, warmup: usize) -> String {
    let share = |x: f64| 100.0 * x / r.step_ms.max(1e-12);
    let what = if r.mode == "eval" {
        "inference rollouts"
    } else {
        "steps"
    };
    let mut s = format!(
        "bench {name}: {} × {} worker(s), {}, batch {} per worker, {} thread(s); {} timed {what} after {warmup} warm-up\n",
        r.device, r.world_size, r.precision, r.batch_per_worker, r.threads, r.steps
    );
    s.push_str("phase          ms/step   share\n");
    for (label, v) in [
        ("data wait", r.data_wait_ms),
        ("forward", r.forward_ms),
        ("backward", r.backward_ms),
        ("all-reduce", r.allreduce_ms),
        ("optimizer", r.optimizer_ms),
    ] {
        s.push_str(&format!("{label:<12} {v:>9.2} {:>6.1}%\n", share(v)));
    }
    s.push_str(&format!("{:<12} {:>9.2}\n", "step", r.step_ms));
    s.push_str(&format!(
        "samples/s      {:.2} (all workers)\n",
        r.samples_per_s
    ));
    s.push_str(&format!(
        "peak memory    {:.0} MiB host (VmHWM)\n",
        r.peak_host_mib
    ));
    if let Some(d) = r.peak_device_mib {
        s.push_str(&format!(
            "               {d:.0} MiB device (driver: total − free, incl. context and cache)\n"
        ));
    }
    s.push_str(&format!(
        "achieved       {:.2} GFLOP/s per worker ({:.3} GFLOP per step: 2 × the training MACs of model-info{})\n",
        r.achieved_gflops,
        r.flops_per_step / 1e9,
        if r.mode == "eval" { " ÷ 3, forward only" } else { "" }
    ));
    if let Some(f) = r.fraction_of_peak {
        s.push_str(&format!("of peak        {:.1}%\n", 100.0 * f));
    }
    s
}
