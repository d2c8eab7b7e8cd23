//! Early activity recognition on the shared training loop (issue 9; paper §4): the task half
//! of `train` when `activity.enabled`. The network is [`ActivityNetwork`]; its parameters live
//! in the same flat buffer, all-reduce, Adam and checkpoints as the prediction network's.
//!
//! A clip of T frames is observed for I = round(`activity.input_ratio` × T) frames, the model
//! predicts F = `data.future_frames` more (autoregressively: it never sees frame I or later),
//! and the loss is `activity.prediction_weight` · (L1 + L2 over the I + F − 1 predictions) +
//! cross-entropy of the class logits. Validation and `eval` report top-1 accuracy overall, per
//! class and per group at every ratio of `activity.eval_ratios` (and the training ratio).

use std::path::Path;

use convtt_common::config::{input_frames_for, DataConfig, ValidConfig};
use convtt_common::dataset::DatasetManifest;
use convtt_common::metrics::FrameMetrics;
use convtt_common::model::{cross_entropy, ActivityNetwork};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

use super::loss;
use crate::data::{Dataset, Loader};
use crate::dist::Collective;
use crate::error::{Error, Result};

/// The labelled dataset as the activity task needs it: classes, groups and the clip length.
#[derive(Debug, Clone)]
pub struct LabelSpace {
    /// Class names (label k = `classes[k]`).
    pub classes: Vec<String>,
    /// Group names in first-appearance order.
    pub groups: Vec<String>,
    /// Group index of every class.
    pub class_group: Vec<usize>,
    /// Frames per clip T.
    pub clip_frames: usize,
}

impl LabelSpace {
    /// Reads the class list of `data.dataset` and checks it and the clip length against the
    /// configuration. A dataset without a class list, a class count other than
    /// `activity.classes`, or clips too short for a ratio's I + F are usage errors (exit 2).
    pub fn open(cfg: &ValidConfig) -> Result<Self> {
        let ds = Dataset::open(Path::new(&cfg.data.dataset))?;
        Self::from_manifest(cfg, ds.manifest(), ds.root())
    }

    fn from_manifest(cfg: &ValidConfig, m: &DatasetManifest, root: &Path) -> Result<Self> {
        let at = root.join(convtt_common::dataset::MANIFEST_FILE);
        if !m.is_labelled() {
            return Err(Error::Usage(format!(
                "{}: no class list (classes = [...]): activity.enabled needs a labelled dataset \
                 (convtt-data moving-mnist --labels direction, or import-frames --labels FILE)",
                at.display()
            )));
        }
        if m.classes.len() != cfg.activity.classes {
            return Err(Error::Usage(format!(
                "activity.classes = {} but {} lists {} classes ({}); set activity.classes = {}",
                cfg.activity.classes,
                at.display(),
                m.classes.len(),
                m.classes.join(", "),
                m.classes.len()
            )));
        }
        let t = m.clip_shape[0];
        let f = cfg.data.future_frames;
        for r in ratios(cfg) {
            let i = input_frames_for(r, t);
            if i + f > t {
                return Err(Error::Usage(format!(
                    "{}: clips hold {t} frames, but input ratio {r} (I = {i}) with \
                     data.future_frames = {f} needs {} (lower data.future_frames or the ratio)",
                    at.display(),
                    i + f
                )));
            }
        }
        let groups = m.group_names();
        let class_group = (0..m.classes.len())
            .map(|k| {
                groups
                    .iter()
                    .position(|g| g == m.group_of(k))
                    .expect("group_names lists every group")
            })
            .collect();
        Ok(Self {
            classes: m.classes.clone(),
            groups,
            class_group,
            clip_frames: t,
        })
    }
}

/// The ratios validation reports: `activity.eval_ratios`, then the training ratio if absent.
pub fn ratios(cfg: &ValidConfig) -> Vec<f64> {
    let mut r = cfg.activity.eval_ratios.clone();
    if !r.contains(&cfg.activity.input_ratio) {
        r.push(cfg.activity.input_ratio);
    }
    r
}

/// The activity network with its label space and rollout lengths.
#[derive(Debug)]
pub struct ActivityTask {
    /// The network.
    pub net: ActivityNetwork,
    /// Classes and groups.
    pub space: LabelSpace,
    /// Conditioning frames I of training.
    pub input: usize,
    /// Predicted frames F.
    pub future: usize,
    /// λ.
    pub prediction_weight: f64,
}

impl ActivityTask {
    /// Builds the network in `vs` for `cfg` over `space`.
    pub fn new(vs: &VarStore, cfg: &ValidConfig, space: LabelSpace) -> Self {
        let net = ActivityNetwork::new(&vs.root(), &cfg.model, &cfg.activity);
        Self {
            net,
            input: input_frames_for(cfg.activity.input_ratio, space.clip_frames),
            future: cfg.data.future_frames,
            prediction_weight: cfg.activity.prediction_weight,
            space,
        }
    }

    /// `[data]` with `input_frames` = the training I, so loaders read I + F frames per clip.
    pub fn data_config(&self, data: &DataConfig) -> DataConfig {
        DataConfig {
            input_frames: self.input,
            ..data.clone()
        }
    }

    /// Frames per clip that validation needs (the longest ratio's I + F).
    pub fn valid_frames(&self, cfg: &ValidConfig) -> usize {
        ratios(cfg)
            .into_iter()
            .map(|r| input_frames_for(r, self.space.clip_frames))
            .max()
            .unwrap_or(self.input)
            + self.future
    }

    /// λ · (L1 + L2) + cross-entropy on `clips` `[B, ≥ I + F, C, H, W]` with `labels` `[B]`.
    pub fn loss(&self, clips: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let out = self.net.forward(clips, self.input, self.future)?;
        let steps = (self.input + self.future - 1) as i64;
        let target = clips.narrow(1, 1, steps).to_device(out.frames.device());
        let ce = cross_entropy(&out.logits, &labels.to_device(out.logits.device()));
        Ok(loss(&out.frames, &target) * self.prediction_weight + ce)
    }
}

/// The labels `[B]` (i64, CPU) of the clips with split-wide `indices`.
pub fn batch_labels(labels: &[i64], indices: &[usize]) -> Result<Tensor> {
    let v = indices
        .iter()
        .map(|&i| {
            labels.get(i).copied().ok_or_else(|| {
                Error::Usage(format!(
                    "clip {i} has no label ({} labels in the split)",
                    labels.len()
                ))
            })
        })
        .collect::<Result<Vec<i64>>>()?;
    Ok(Tensor::from_slice(&v))
}

/// Top-1 accuracy at one input ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioScores {
    /// The input ratio.
    pub ratio: f64,
    /// Conditioning frames I = round(ratio × T).
    pub input_frames: usize,
    /// Correct / clips over every class.
    pub accuracy: f64,
    /// Clips evaluated.
    pub clips: u64,
    /// Correct clips.
    pub correct: u64,
    /// Per group, in group order.
    pub groups: Vec<GroupScore>,
    /// Per class, in label order.
    pub classes: Vec<GroupScore>,
}

/// Accuracy of one group (or class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupScore {
    /// Group or class name.
    pub name: String,
    /// Clips of it.
    pub clips: u64,
    /// Correct clips.
    pub correct: u64,
    /// `correct / clips` (0 when it has no clips).
    pub accuracy: f64,
}

/// Activity validation: accuracy per ratio, with the loss parts at the training ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityScores {
    /// One entry per ratio, `activity.eval_ratios` first.
    pub ratios: Vec<RatioScores>,
    /// Accuracy at the training ratio (`valid.accuracy`).
    pub accuracy: f64,
    /// Mean cross-entropy at the training ratio.
    pub cross_entropy: f64,
    /// Mean prediction loss (L1 + L2) at the training ratio.
    pub prediction_loss: f64,
}

/// Runs the task over `loader` (labels of its split in `labels`) at every ratio and reduces
/// over ranks. Returns the total loss at the training ratio, the frame metrics of the F
/// predicted frames at the training ratio, and the scores.
pub fn validate(
    task: &ActivityTask,
    cfg: &ValidConfig,
    loader: &Loader,
    labels: &[i64],
    coll: &mut dyn Collective,
) -> Result<(f64, FrameMetrics, ActivityScores)> {
    let rs = ratios(cfg);
    let k = task.space.classes.len();
    let t = task.space.clip_frames;
    let (train_i, f) = (task.input, task.future);
    let mut frames: Option<FrameMetrics> = None;
    // Per ratio: correct per class (k), clips per class (k).
    let mut counts = vec![0.0f64; rs.len() * 2 * k];
    let (mut ce_sum, mut pred_sum) = (0.0f64, 0.0f64);
    tch::no_grad(|| -> Result<()> {
        for batch in loader.epoch(0) {
            crate::heartbeat::process().beat();
            let batch = batch?;
            let y = batch_labels(labels, &batch.indices)?;
            let yv = Vec::<i64>::try_from(&y)?;
            let b = yv.len() as f64;
            for (ri, &r) in rs.iter().enumerate() {
                let i = input_frames_for(r, t);
                let out = task.net.forward(&batch.clips, i, f)?;
                let pred =
                    Vec::<i64>::try_from(out.logits.argmax(-1, false).to_device(tch::Device::Cpu))?;
                for (p, &l) in pred.iter().zip(&yv) {
                    let base = ri * 2 * k;
                    counts[base + k + l as usize] += 1.0;
                    if *p == l {
                        counts[base + l as usize] += 1.0;
                    }
                }
                if i == train_i {
                    let steps = (i + f - 1) as i64;
                    let target = batch.clips.narrow(1, 1, steps);
                    pred_sum += loss(&out.frames, &target).double_value(&[]) * b;
                    ce_sum += cross_entropy(&out.logits, &y.to_device(out.logits.device()))
                        .double_value(&[])
                        * b;
                    let m = FrameMetrics::compute(
                        &out.frames.narrow(1, i as i64 - 1, f as i64),
                        &batch.clips.narrow(1, i as i64, f as i64),
                    )?;
                    match &mut frames {
                        Some(s) => s.add(&m),
                        None => frames = Some(m),
                    }
                }
            }
        }
        Ok(())
    })?;
    let mut flat = frames
        .as_ref()
        .map_or_else(|| vec![0.0; 1 + 6 * f], FrameMetrics::to_flat);
    let metric_len = flat.len();
    flat.extend_from_slice(&counts);
    flat.push(ce_sum);
    flat.push(pred_sum);
    coll.all_reduce_sum_f64(&mut flat)?;
    let totals = FrameMetrics::from_flat(&flat[..metric_len], f);
    let n = totals.samples.max(1) as f64;
    let counts = &flat[metric_len..metric_len + counts.len()];
    let (ce, pred) = (flat[flat.len() - 2] / n, flat[flat.len() - 1] / n);
    let ratios: Vec<RatioScores> = rs
        .iter()
        .enumerate()
        .map(|(ri, &r)| {
            let c = &counts[ri * 2 * k..(ri + 1) * 2 * k];
            score(task, r, input_frames_for(r, t), &c[..k], &c[k..])
        })
        .collect();
    let accuracy = ratios
        .iter()
        .find(|s| s.input_frames == train_i)
        .map_or(0.0, |s| s.accuracy);
    let scores = ActivityScores {
        ratios,
        accuracy,
        cross_entropy: ce,
        prediction_loss: pred,
    };
    Ok((task.prediction_weight * pred + ce, totals.means(), scores))
}

fn frac(c: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        c as f64 / n as f64
    }
}

fn score(
    task: &ActivityTask,
    ratio: f64,
    input: usize,
    correct: &[f64],
    total: &[f64],
) -> RatioScores {
    let sp = &task.space;
    let classes: Vec<GroupScore> = sp
        .classes
        .iter()
        .enumerate()
        .map(|(j, name)| GroupScore {
            name: name.clone(),
            clips: total[j] as u64,
            correct: correct[j] as u64,
            accuracy: frac(correct[j] as u64, total[j] as u64),
        })
        .collect();
    let groups = sp
        .groups
        .iter()
        .enumerate()
        .map(|(g, name)| {
            let (c, n) = classes
                .iter()
                .zip(&sp.class_group)
                .filter(|(_, &cg)| cg == g)
                .fold((0, 0), |(c, n), (s, _)| (c + s.correct, n + s.clips));
            GroupScore {
                name: name.clone(),
                clips: n,
                correct: c,
                accuracy: frac(c, n),
            }
        })
        .collect();
    let (c, n) = classes
        .iter()
        .fold((0, 0), |(c, n), s| (c + s.correct, n + s.clips));
    RatioScores {
        ratio,
        input_frames: input,
        accuracy: frac(c, n),
        clips: n,
        correct: c,
        groups,
        classes,
    }
}

/// The readable table: one row per ratio with the overall and per-group accuracy (%).
pub fn table(scores: &ActivityScores) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let Some(first) = scores.ratios.first() else {
        return s;
    };
    let mut header = format!("{:<12} {:>6} {:>9}", "input ratio", "clips", "overall");
    for g in &first.groups {
        let _ = write!(header, " {:>12}", truncate(&g.name, 12));
    }
    let _ = writeln!(s, "{header}");
    for r in &scores.ratios {
        let mut row = format!(
            "{:<12} {:>6} {:>8.2}%",
            format!("{:.0}% (I={})", r.ratio * 100.0, r.input_frames),
            r.clips,
            r.accuracy * 100.0
        );
        for g in &r.groups {
            let _ = write!(row, " {:>11.2}%", g.accuracy * 100.0);
        }
        let _ = writeln!(s, "{row}");
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
