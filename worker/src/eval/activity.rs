//! `convtt-worker eval` of an activity run (`activity.enabled`; issue 9): top-1 accuracy
//! overall, per group and per class at every input ratio of `activity.eval_ratios` (plus the
//! training ratio), as a table on stdout and a JSON report (`<run>/eval-<split>.json`), with a
//! `{"kind": "eval", …}` line in `<run>/metrics.jsonl`. Every rank evaluates its share; counts
//! are summed over ranks.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use crate::checkpoint as ckpt;
use crate::cli::EvalArgs;
use crate::data::{self, Dataset, Placement};
use crate::error::{Error, Result};
use crate::runtime::Context;
use crate::train::activity::{self as task, ActivityTask, LabelSpace, RatioScores};
use crate::train::optim::FlatParams;

/// The JSON report of an activity evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityReport {
    /// Always `"eval-activity"`.
    pub kind: String,
    /// The evaluated split.
    pub split: String,
    /// The dataset directory.
    pub dataset: String,
    /// The checkpoint directory.
    pub checkpoint: String,
    /// Its training step.
    pub step: u64,
    /// Frames per clip T (ratios are of T).
    pub clip_frames: usize,
    /// Frames predicted after the observed ones, F.
    pub future_frames: usize,
    /// Ranks that shared the work.
    pub world_size: usize,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Class → group.
    pub groups: BTreeMap<String, String>,
    /// Chance level: the accuracy of always answering the most frequent class of the split.
    pub majority_baseline: f64,
    /// Accuracy per ratio (overall, per group, per class).
    pub ratios: Vec<RatioScores>,
    /// Mean cross-entropy at the training ratio.
    pub cross_entropy: f64,
    /// Mean prediction loss (L1 + L2) at the training ratio.
    pub prediction_loss: f64,
}

/// Evaluates the checkpoint of `args` (every rank calls this; all get the global report).
pub fn evaluate(ctx: &mut Context, args: &EvalArgs) -> Result<ActivityReport> {
    let Context { cfg, rt } = ctx;
    let (dir, manifest) =
        super::find_checkpoint(cfg, rt.run.path(), &args.model.checkpoint, "evaluate")?;
    let space = LabelSpace::open(cfg)?;
    let k = space.classes.len();
    let vs = VarStore::new(rt.device);
    let t = ActivityTask::new(&vs, cfg, space);
    let mut flat = FlatParams::new(&vs);
    let bufs = ckpt::load_buffers(&dir, &manifest)?;
    flat.restore(&manifest.layout, &bufs, 0, &dir)?;
    let at = Placement {
        world: rt.world(),
        rank: rt.rank(),
        device: rt.device,
    };
    let ds = Dataset::open(Path::new(&cfg.data.dataset))?;
    let labels = ds.split(&args.split)?.labels(k)?;
    let loader = data::eval_loader(
        &t.data_config(&cfg.data),
        &args.split,
        args.max_clips,
        t.valid_frames(cfg),
        at,
    )?;
    if loader.steps() == 0 {
        return Err(Error::Usage(format!(
            "{}: split {} has too few clips for one batch of {} on each of {} workers",
            ds.root().display(),
            args.split,
            cfg.data.batch_size / at.world,
            at.world
        )));
    }
    let (_, _, scores) = task::validate(&t, cfg, &loader, &labels, rt.coll.as_mut())?;
    let majority = scores.ratios.first().map_or(0.0, |r| {
        let most = r.classes.iter().map(|c| c.clips).max().unwrap_or(0);
        most as f64 / r.clips.max(1) as f64
    });
    let m = ds.manifest();
    Ok(ActivityReport {
        kind: "eval-activity".into(),
        split: args.split.clone(),
        dataset: cfg.data.dataset.clone(),
        checkpoint: dir.display().to_string(),
        step: manifest.step,
        clip_frames: t.space.clip_frames,
        future_frames: t.future,
        world_size: at.world,
        classes: t.space.classes.clone(),
        groups: (0..k)
            .map(|j| (m.classes[j].clone(), m.group_of(j).to_owned()))
            .collect(),
        majority_baseline: majority,
        ratios: scores.ratios,
        cross_entropy: scores.cross_entropy,
        prediction_loss: scores.prediction_loss,
    })
}

impl ActivityReport {
    /// Header line, then one row per ratio: overall and per-group top-1 accuracy.
    pub fn table(&self) -> String {
        let scores = task::ActivityScores {
            ratios: self.ratios.clone(),
            accuracy: 0.0,
            cross_entropy: self.cross_entropy,
            prediction_loss: self.prediction_loss,
        };
        format!(
            "eval {} of {}: checkpoint step {} ({}); top-1 accuracy, {} classes, chance \
             (majority class) {:.2}%\n{}",
            self.split,
            self.dataset,
            self.step,
            self.checkpoint,
            self.classes.len(),
            self.majority_baseline * 100.0,
            task::table(&scores)
        )
    }
}

/// `convtt-worker eval` for an activity run.
pub fn run_eval(args: &EvalArgs, mut ctx: Context) -> Result<()> {
    let report = evaluate(&mut ctx, args)?;
    let line = serde_json::json!({
        "kind": "eval", "task": "activity", "step": report.step, "split": report.split,
        "checkpoint": report.checkpoint, "ratios": report.ratios,
    });
    super::publish(&ctx, args, &report.table(), &report, line)
}
