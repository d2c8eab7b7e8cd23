//! Evaluation and pictures (ARCHITECTURE §7, §8; reference spec §6): `convtt-worker eval`,
//! `predict`, `export` and `plot`.
//!
//! Evaluation runs one autoregressive rollout of the longest requested horizon F from
//! I = `data.input_frames` conditioning frames; a shorter horizon is a prefix of that rollout
//! (spec §3.3), so its numbers are the mean over the first frames of the per-frame table.
//! Per-frame sums over samples are reduced across ranks with the collective (via
//! [`train::validate`]); rank 0 prints the table, writes the JSON report and appends a
//! `{"kind": "eval", …}` line to `<run>/metrics.jsonl`.
//!
//! Every command loads the model the same way ([`load_model`]): resolve the checkpoint (`auto`:
//! newest valid one of the run), refuse one whose `[model]` differs from the config, build the
//! network in a VarStore and restore the checkpoint's flat buffer into it.

pub mod activity;
pub mod plot;
pub mod strip;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use convtt_common::checkpoint::Manifest;
use convtt_common::config::{LpipsPreset, ValidConfig};
use convtt_common::lpips::Lpips;
use convtt_common::metrics::FrameMetrics;
use convtt_common::model::{import_safetensors, ComputeMode, Network};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device};

use crate::checkpoint::{self as ckpt, Resume};
use crate::cli::{CheckpointArgs, EvalArgs, ExportArgs, PredictArgs};
use crate::data::{self, Dataset, Placement};
use crate::error::{Error, Result};
use crate::runtime::Context;
use crate::train::{self, optim::FlatParams, MetricsLog};

/// A network restored from a checkpoint.
pub struct Loaded {
    /// The network (its parameters are views into `flat`).
    pub net: Network,
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    _vs: VarStore,
    _flat: FlatParams,
}

/// The checkpoint `which` of `<run_dir>/checkpoints` (`auto`: the newest valid one) and its
/// manifest, refused (exit 2) when its `[model]` differs from `cfg`'s; `action` names what was
/// refused.
pub(crate) fn find_checkpoint(
    cfg: &ValidConfig,
    run_dir: &Path,
    which: &Resume,
    action: &str,
) -> Result<(PathBuf, Manifest)> {
    let root = convtt_core::RunDir::new(run_dir).checkpoints();
    let (dir, manifest) = match which {
        Resume::No => {
            return Err(Error::Usage(
                "--checkpoint must be `auto` or a checkpoint directory".into(),
            ))
        }
        _ => ckpt::resolve(&root, which)?.ok_or_else(|| {
            Error::Usage(format!(
                "{}: no valid checkpoint (train first, or pass --checkpoint DIR)",
                root.display()
            ))
        })?,
    };
    ckpt::check_model(cfg, &dir, &manifest, action)?;
    Ok((dir, manifest))
}

/// Loads the checkpoint `which` of `<run_dir>/checkpoints` into a new network on `device`.
/// A checkpoint whose `[model]` differs from `cfg`'s is refused (exit 2); `action` names what
/// was refused in that message.
pub fn load_model(
    cfg: &ValidConfig,
    run_dir: &Path,
    which: &Resume,
    device: Device,
    action: &str,
) -> Result<Loaded> {
    if cfg.activity.enabled {
        return Err(Error::Usage(format!(
            "cannot {action} an activity-recognition run (activity.enabled): its network has no \
             prediction-network weights; evaluate it with `convtt-worker eval`"
        )));
    }
    let (dir, manifest) = find_checkpoint(cfg, run_dir, which, action)?;
    let vs = VarStore::new(device);
    let net = Network::new(&vs.root(), &cfg.model);
    let mut flat = FlatParams::new(&vs);
    let bufs = ckpt::load_buffers(&dir, &manifest)?;
    flat.restore(&manifest.layout, &bufs, 0, &dir)?;
    tracing::debug!(step = manifest.step, "loaded {}", dir.display());
    Ok(Loaded {
        net,
        dir,
        manifest,
        _vs: vs,
        _flat: flat,
    })
}

/// The run directory a command means: `--run-dir`, else the run that holds `--checkpoint DIR`
/// (`<run>/checkpoints/<step>`), else `None` (the launcher's, else `launch.run_dir`).
fn implied_run_dir(args: &CheckpointArgs) -> Option<PathBuf> {
    args.run_dir.clone().or_else(|| match &args.checkpoint {
        Resume::Path(p) => convtt_core::RunDir::of_checkpoint(p).map(|r| r.path().to_path_buf()),
        _ => None,
    })
}

fn context(args: &CheckpointArgs) -> Result<Context> {
    Context::new(
        &args.config.config,
        &args.config.overrides,
        implied_run_dir(args),
    )
}

/// The worker context and the model of the checkpoint `args` name (for `action` in messages).
fn open_checkpoint(args: &CheckpointArgs, action: &str) -> Result<(Context, Loaded)> {
    let ctx = context(args)?;
    let loaded = load_model(
        &ctx.cfg,
        ctx.rt.run.path(),
        &args.checkpoint,
        ctx.rt.device,
        action,
    )?;
    Ok((ctx, loaded))
}

/// Means over a horizon's frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HorizonMetrics {
    /// Conditioning frames I.
    pub input_frames: usize,
    /// Predicted frames F of this horizon (the first F of the rollout).
    pub future_frames: usize,
    /// Per-pixel MSE on [0, 1].
    pub mse: f64,
    /// `mse` × 10³ (the paper's tables).
    pub mse_x1e3: f64,
    /// Per-frame pixel sum of squared errors (OpenSTL's "MSE").
    pub sse: f64,
    /// Per-pixel MAE on [0, 1].
    pub mae: f64,
    /// Per-frame pixel sum of absolute errors (OpenSTL's "MAE").
    #[serde(default)]
    pub sae: f64,
    /// PSNR in dB, peak 1 (mean of per-frame dB values).
    pub psnr: f64,
    /// SSIM, paper preset.
    pub ssim: f64,
    /// SSIM, Wang 2004 preset.
    pub ssim_wang2004: f64,
    /// LPIPS (AlexNet v0.1), when `train.lpips_weights` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lpips: Option<f64>,
}

/// Per-frame means over the samples, frame 1 … F of the longest horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerFrame {
    /// Per-pixel MSE.
    pub mse: Vec<f64>,
    /// Per-pixel MSE × 10³.
    pub mse_x1e3: Vec<f64>,
    /// Per-frame pixel sum of squared errors.
    pub sse: Vec<f64>,
    /// Per-pixel MAE.
    pub mae: Vec<f64>,
    /// Per-frame pixel sum of absolute errors (OpenSTL's "MAE").
    #[serde(default)]
    pub sae: Vec<f64>,
    /// PSNR (dB, peak 1).
    pub psnr: Vec<f64>,
    /// SSIM, paper preset.
    pub ssim: Vec<f64>,
    /// SSIM, Wang 2004 preset.
    pub ssim_wang2004: Vec<f64>,
    /// LPIPS, when computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lpips: Option<Vec<f64>>,
}

/// The conventions the numbers follow, written into every report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conventions {
    /// Clamping of predictions.
    pub clamp: String,
    /// MSE and its scalings.
    pub mse: String,
    /// MAE.
    pub mae: String,
    /// PSNR.
    pub psnr: String,
    /// SSIM `paper` preset.
    pub ssim: String,
    /// SSIM `wang2004` preset.
    pub ssim_wang2004: String,
    /// How per-frame values and horizon means are formed.
    pub averaging: String,
    /// LPIPS: network, heads and the input convention (`train.lpips_preset`), or why absent.
    #[serde(default)]
    pub lpips: String,
}

impl Default for Conventions {
    fn default() -> Self {
        let s = str::to_owned;
        Conventions {
            clamp: s("predictions clamped to [0, 1] before every metric; targets in [0, 1]"),
            mse: s(
                "mse: per-pixel mean of squared error on the [0, 1] scale; mse_x1e3 = mse × 1000 \
                    (paper tables); sse: per-frame pixel sum of squared errors (OpenSTL)",
            ),
            mae: s("per-pixel mean absolute error on the [0, 1] scale"),
            psnr: s(
                "10·log10(1 / mse), peak 1, mean of per-frame dB values; mse floored at \
                     1e-10 and PSNR capped at 100 dB",
            ),
            ssim: s(
                "paper preset: 7×7 uniform window, sample covariance (N/(N−1)), data range \
                     L = 2, 3-pixel border crop, channels averaged (scikit-image defaults as the \
                     reference called them)",
            ),
            ssim_wang2004: s(
                "wang2004 preset: Gaussian 11×11 window, σ = 1.5, population \
                              covariance, L = 1, 5-pixel border crop",
            ),
            averaging: s(
                "per frame: sum over samples / samples (incomplete last batch dropped); \
                          a horizon: mean over its first F frames of one autoregressive rollout \
                          of the longest horizon",
            ),
            lpips: s("not computed (set train.lpips_weights)"),
        }
    }
}

impl Conventions {
    /// The conventions with LPIPS computed in `preset`.
    pub fn with_lpips(preset: LpipsPreset) -> Self {
        let how = match preset {
            LpipsPreset::Reference => {
                "preset reference: [0, 1] frames fed where LPIPS expects [−1, 1], as the \
                 reference did (comparable with the paper's numbers)"
            }
            LpipsPreset::Corrected => "preset corrected: frames mapped to [−1, 1] (2x − 1) first",
        };
        Conventions {
            lpips: format!(
                "AlexNet, LPIPS v0.1 linear heads, gray frames repeated to RGB, raw value \
                 (the paper's tables print ×10³); {how}"
            ),
            ..Self::default()
        }
    }
}

/// A trivial predictor's numbers on the same clips and frames as the model's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineReport {
    /// `copy_last` (every future frame = the last input frame) or `zeros` (all-black frames).
    pub name: String,
    /// One entry per requested horizon, as the model's.
    pub horizons: Vec<HorizonMetrics>,
    /// Per-frame means of the longest horizon.
    pub per_frame: PerFrame,
}

impl BaselineReport {
    fn new(
        name: &str,
        means: &FrameMetrics,
        pixels: usize,
        input: usize,
        horizons: &[usize],
    ) -> Self {
        let per_frame = PerFrame::from_means(means, pixels);
        BaselineReport {
            name: name.to_owned(),
            horizons: horizons
                .iter()
                .map(|&h| per_frame.horizon(input, h))
                .collect(),
            per_frame,
        }
    }

    /// The label of its table rows.
    fn label(&self) -> &str {
        match self.name.as_str() {
            "copy_last" => "copy last",
            other => other,
        }
    }
}

/// Where `eval` takes the model's weights from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A checkpoint of the run: `auto` (the newest valid one) or a directory.
    Checkpoint(Resume),
    /// A safetensors file under the reference parameter names (`--weights`): exported by
    /// `convtt-worker export`, written by the PyTorch baseline, or saved from the reference.
    Weights(PathBuf),
}

/// The result of `convtt-worker eval` (the JSON report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Always `"eval"`.
    pub kind: String,
    /// The evaluated split.
    pub split: String,
    /// The dataset directory.
    pub dataset: String,
    /// The checkpoint directory (or the `--weights` file).
    pub checkpoint: String,
    /// Its training step (0 for `--weights`).
    pub step: u64,
    /// Conditioning frames I.
    pub input_frames: usize,
    /// Frames of the rollout (the longest horizon).
    pub future_frames: usize,
    /// Clips evaluated (over all ranks).
    pub samples: u64,
    /// Ranks that shared the work.
    pub world_size: usize,
    /// L1 + L2 loss over all I + F − 1 outputs, teacher forcing off (as validation).
    pub loss: f64,
    /// One entry per requested horizon, in the order asked.
    pub horizons: Vec<HorizonMetrics>,
    /// Per-frame means of the longest horizon.
    pub per_frame: PerFrame,
    /// The copy-last-frame and all-zeros predictors on the same clips (no LPIPS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<BaselineReport>,
    /// How fast the model predicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Throughput>,
    /// The conventions.
    pub conventions: Conventions,
}

impl PerFrame {
    /// The per-frame means of `m`, for frames of `pixels` values (C × H × W).
    fn from_means(m: &FrameMetrics, pixels: usize) -> Self {
        PerFrame {
            mse: m.mse.clone(),
            mse_x1e3: m.mse.iter().map(|v| v * 1e3).collect(),
            sse: m.sse.clone(),
            mae: m.mae.clone(),
            sae: m.mae.iter().map(|v| v * pixels as f64).collect(),
            psnr: m.psnr.clone(),
            ssim: m.ssim_paper.clone(),
            ssim_wang2004: m.ssim_wang.clone(),
            lpips: (!m.lpips.is_empty()).then(|| m.lpips.clone()),
        }
    }

    /// Means over the first `f` frames.
    pub fn horizon(&self, input_frames: usize, f: usize) -> HorizonMetrics {
        let m = |v: &[f64]| train::mean(&v[..f.min(v.len())]);
        HorizonMetrics {
            input_frames,
            future_frames: f,
            mse: m(&self.mse),
            mse_x1e3: m(&self.mse_x1e3),
            sse: m(&self.sse),
            mae: m(&self.mae),
            sae: m(&self.sae),
            psnr: m(&self.psnr),
            ssim: m(&self.ssim),
            ssim_wang2004: m(&self.ssim_wang2004),
            lpips: self.lpips.as_deref().map(m),
        }
    }
}

impl EvalReport {
    /// The readable table: one row per horizon (the trivial predictors below it), then one per
    /// frame. Both conventions, named: the reference's MSE × 10³ and SSIM (paper preset), and
    /// OpenSTL's per-frame pixel sums of squared and absolute errors.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "eval {} of {}: {} clips, checkpoint step {} ({})",
            self.split, self.dataset, self.samples, self.step, self.checkpoint
        );
        let _ = writeln!(
            s,
            "  ref = the reference/paper's (per-pixel MSE ×10³, SSIM of its preset); OpenSTL = \
             per-frame pixel sums (MSE, MAE), as OpenSTL's tables"
        );
        let with_lpips = self.per_frame.lpips.is_some();
        let mut header = format!(
            "{:<11} {:>11} {:>11} {:>11} {:>7} {:>9} {:>13}",
            "", "MSE×10³ ref", "MSE OpenSTL", "MAE OpenSTL", "PSNR", "SSIM ref", "SSIM wang2004"
        );
        if with_lpips {
            header += &format!(" {:>9}", "LPIPS");
        }
        let lpips_cell = |v: Option<f64>| v.map_or_else(String::new, |v| format!(" {v:>9.5}"));
        let row = |label: String, v: [f64; 6]| {
            format!(
                "{label:<11} {:>11.3} {:>11.2} {:>11.2} {:>7.3} {:>9.4} {:>13.4}",
                v[0], v[1], v[2], v[3], v[4], v[5]
            )
        };
        let cells =
            |h: &HorizonMetrics| [h.mse_x1e3, h.sse, h.sae, h.psnr, h.ssim, h.ssim_wang2004];
        let _ = writeln!(s, "{header}");
        for (i, h) in self.horizons.iter().enumerate() {
            let label = format!("{} → {}", h.input_frames, h.future_frames);
            let _ = writeln!(s, "{}{}", row(label, cells(h)), lpips_cell(h.lpips));
            for b in &self.baselines {
                let _ = writeln!(
                    s,
                    "{}",
                    row(format!("  {}", b.label()), cells(&b.horizons[i]))
                );
            }
        }
        let _ = writeln!(s, "per frame");
        let p = &self.per_frame;
        for i in 0..p.mse.len() {
            let label = format!("t+{}", i + 1);
            let sae = p.sae.get(i).copied().unwrap_or(f64::NAN);
            let v = [
                p.mse_x1e3[i],
                p.sse[i],
                sae,
                p.psnr[i],
                p.ssim[i],
                p.ssim_wang2004[i],
            ];
            let l = p.lpips.as_ref().map(|l| l[i]);
            let _ = writeln!(s, "{}{}", row(label, v), lpips_cell(l));
        }
        if let Some(t) = &self.timing {
            let _ = writeln!(
                s,
                "throughput: {:.1} clips/s, {:.1} predicted frames/s (the model's rollouts only, \
                 summed over {} worker(s))",
                t.clips_per_s, t.frames_per_s, self.world_size
            );
        }
        s
    }
}

/// How fast the model predicted (its rollouts alone, CUDA synchronised; metrics excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Seconds in the model's forward passes, summed over ranks.
    pub forward_seconds: f64,
    /// Clips per second of rollout time (per worker when several share the work).
    pub clips_per_s: f64,
    /// Predicted frames per second (OpenSTL's FPS counts frames).
    pub frames_per_s: f64,
}

/// Evaluates the checkpoint `which` of `ctx`'s run on `split` (every rank calls this; all get
/// the global report). `horizons` empty means `train.eval_horizons`.
pub fn evaluate(
    ctx: &mut Context,
    which: &Resume,
    split: &str,
    horizons: &[usize],
    cap: usize,
) -> Result<EvalReport> {
    evaluate_source(
        ctx,
        &ModelSource::Checkpoint(which.clone()),
        split,
        horizons,
        cap,
    )
}

/// [`evaluate`] with the weights from `source`: a checkpoint of the run or a safetensors file.
pub fn evaluate_source(
    ctx: &mut Context,
    source: &ModelSource,
    split: &str,
    horizons: &[usize],
    cap: usize,
) -> Result<EvalReport> {
    let Context { cfg, rt } = ctx;
    let (horizons, future, ds) = horizons_to_evaluate(cfg, horizons)?;
    let input = cfg.data.input_frames;
    let from_checkpoint;
    let from_weights;
    let (net, origin, step) = match source {
        ModelSource::Checkpoint(which) => {
            from_checkpoint = load_model(cfg, rt.run.path(), which, rt.device, "evaluate")?;
            let l = &from_checkpoint;
            (&l.net, l.dir.display().to_string(), l.manifest.step)
        }
        ModelSource::Weights(path) => {
            let vs = VarStore::new(rt.device);
            let net = Network::new(&vs.root(), &cfg.model);
            import_safetensors(&net, path)?;
            from_weights = (vs, net);
            (&from_weights.1, path.display().to_string(), 0)
        }
    };
    let at = Placement {
        world: rt.world(),
        rank: rt.rank(),
        device: rt.device,
    };
    let loader = data::eval_loader(&cfg.data, split, cap, input + future, at)?;
    if loader.steps() == 0 {
        return Err(Error::Usage(format!(
            "{}: split {split} has too few clips for one batch of {} on each of {} workers",
            ds.root().display(),
            cfg.data.batch_size / at.world,
            at.world
        )));
    }
    let lpips = if cfg.train.lpips_weights.is_empty() {
        None
    } else {
        let path = Path::new(&cfg.train.lpips_weights);
        Some(Lpips::load(path, cfg.train.lpips_preset, rt.device)?)
    };
    let v = train::validate_with(
        net,
        &loader,
        rt.coll.as_mut(),
        input,
        future,
        lpips.as_ref(),
    )?;
    let pixels = cfg.model.image_channels * cfg.data.height * cfg.data.width;
    let per_frame = PerFrame::from_means(&v.frames, pixels);
    let baselines = v.baselines.as_ref().map_or_else(Vec::new, |b| {
        vec![
            BaselineReport::new("copy_last", &b.copy_last, pixels, input, &horizons),
            BaselineReport::new("zeros", &b.zeros, pixels, input, &horizons),
        ]
    });
    let predicted = v.frames.samples as f64 * future as f64;
    Ok(EvalReport {
        kind: "eval".into(),
        split: split.to_owned(),
        dataset: cfg.data.dataset.clone(),
        checkpoint: origin,
        step,
        input_frames: input,
        future_frames: future,
        samples: v.frames.samples,
        world_size: at.world,
        loss: v.loss,
        horizons: horizons
            .iter()
            .map(|&h| per_frame.horizon(input, h))
            .collect(),
        per_frame,
        baselines,
        timing: (v.forward_seconds > 0.0).then(|| Throughput {
            forward_seconds: v.forward_seconds,
            clips_per_s: v.frames.samples as f64 / v.forward_seconds,
            frames_per_s: predicted / v.forward_seconds,
        }),
        conventions: lpips.as_ref().map_or_else(Conventions::default, |l| {
            Conventions::with_lpips(l.preset())
        }),
    })
}

/// The horizons to report (`requested`, else `train.eval_horizons`), the longest (the rollout)
/// and the dataset, checked: every horizon at least 1, clips long enough for I + F frames.
fn horizons_to_evaluate(
    cfg: &ValidConfig,
    requested: &[usize],
) -> Result<(Vec<usize>, usize, Dataset)> {
    let horizons: Vec<usize> = if requested.is_empty() {
        cfg.train.eval_horizons.clone()
    } else {
        requested.to_vec()
    };
    if horizons.contains(&0) {
        return Err(Error::Usage("--horizon must be at least 1".into()));
    }
    let input = cfg.data.input_frames;
    let future = horizons.iter().copied().max().unwrap_or(1);
    let ds = Dataset::open(Path::new(&cfg.data.dataset))?;
    let t = ds.manifest().clip_shape[0];
    if t < input + future {
        return Err(Error::Usage(format!(
            "{}: clips hold {t} frames, but evaluating {input} → {future} needs {} \
             (data.input_frames + the longest --horizon)",
            ds.root().display(),
            input + future
        )));
    }
    Ok((horizons, future, ds))
}

/// `convtt-worker eval`.
pub fn run_eval(args: &EvalArgs) -> Result<()> {
    let mut ctx = context(&args.model)?;
    let _compute = compute_mode(&ctx).enter();
    if ctx.cfg.activity.enabled {
        if args.weights.is_some() {
            return Err(Error::Usage(
                "--weights holds prediction-network weights; an activity run (activity.enabled) \
                 is evaluated from its checkpoints"
                    .into(),
            ));
        }
        return activity::run_eval(args, ctx);
    }
    let source = match &args.weights {
        Some(w) => ModelSource::Weights(w.clone()),
        None => ModelSource::Checkpoint(args.model.checkpoint.clone()),
    };
    let report = evaluate_source(
        &mut ctx,
        &source,
        &args.split,
        &args.horizons,
        args.max_clips,
    )?;
    let line = serde_json::json!({
        "kind": "eval", "step": report.step, "split": report.split,
        "checkpoint": report.checkpoint, "samples": report.samples, "loss": report.loss,
        "horizons": report.horizons, "per_frame": report.per_frame,
        "baselines": report.baselines, "lpips": report.conventions.lpips,
    });
    publish(&ctx, args, &report.table(), &report, line)
}

/// Rank 0: prints `table`, writes `report` as JSON (`--json`, else `<run>/eval-<split>.json`)
/// and appends `line` to `metrics.jsonl`.
pub(crate) fn publish(
    ctx: &Context,
    args: &EvalArgs,
    table: &str,
    report: &impl serde::Serialize,
    line: serde_json::Value,
) -> Result<()> {
    if ctx.rt.rank() != 0 {
        return Ok(());
    }
    print!("{table}");
    let run = &ctx.rt.run;
    std::fs::create_dir_all(run.path()).map_err(|e| Error::io(run.path(), e))?;
    let path = args
        .json
        .clone()
        .unwrap_or_else(|| run.eval_report(&args.split));
    let text = serde_json::to_string_pretty(report).expect("report serialises");
    convtt_common::fsutil::write_atomic(&path, text.as_bytes())?;
    let mut log = MetricsLog::open(run, 0)?;
    log.write(line);
    log.check()?;
    tracing::info!("wrote {}", path.display());
    Ok(())
}

/// How `eval` and `predict` compute: `[train]`'s [`ComputeMode`] for the model and device (the
/// fast path, cuDNN flags), but always in f32.
fn compute_mode(ctx: &Context) -> ComputeMode {
    ComputeMode {
        conv_kind: None,
        ..ComputeMode::for_config(&ctx.cfg.train, &ctx.cfg.model, ctx.rt.device)
    }
}

/// `convtt-worker predict`.
pub fn run_predict(args: &PredictArgs) -> Result<()> {
    let (ctx, loaded) = open_checkpoint(&args.model, "predict")?;
    if ctx.rt.rank() != 0 {
        return Ok(());
    }
    let _compute = compute_mode(&ctx).enter();
    let future = args.future.unwrap_or(ctx.cfg.data.future_frames);
    let clip =
        strip::ClipPrediction::new(&loaded.net, &ctx.cfg.data, &args.split, args.clip, future)?;
    let (w, h) = clip.write_strip(&args.out)?;
    println!(
        "wrote {} ({w}×{h}: {} input | {future} truth | {future} predicted frames of clip {} of {}, step {})",
        args.out.display(),
        ctx.cfg.data.input_frames,
        args.clip,
        args.split,
        loaded.manifest.step
    );
    if let Some(gif) = &args.gif {
        let (w, h) = clip.write_gif(gif)?;
        println!(
            "wrote {} ({w}×{h}, {} frames: truth | input then prediction)",
            gif.display(),
            ctx.cfg.data.input_frames + future
        );
    }
    Ok(())
}

/// `convtt-worker export`.
pub fn run_export(args: &ExportArgs) -> Result<()> {
    let (ctx, loaded) = open_checkpoint(&args.model, "export")?;
    if ctx.rt.rank() != 0 {
        return Ok(());
    }
    convtt_common::model::export_safetensors(&loaded.net, &args.out)?;
    println!(
        "wrote {} ({} tensors, step {} of {})",
        args.out.display(),
        loaded.net.named_parameters().len(),
        loaded.manifest.step,
        loaded.dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests;
