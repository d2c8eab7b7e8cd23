//! Validation: one autoregressive rollout per clip (teacher forcing off), the L1 + L2 loss over
//! every output and per-frame metrics of the F predicted frames beside the copy-last-frame and
//! all-zeros predictors, summed on every rank and reduced over ranks; the record it leaves in
//! `metrics.jsonl`.

use convtt_common::lpips::Lpips;
use convtt_common::metrics::{FrameMetrics, TrivialBaselines};
use convtt_common::model::{Network, Rollout};
use convtt_core::metric::{self, Metric};
use serde_json::json;

use super::activity;
use super::step::loss;
use crate::data::Loader;
use crate::dist::Collective;
use crate::error::Result;

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
    /// Seconds spent in the model's rollouts, summed over ranks (CUDA synchronised).
    pub forward_seconds: f64,
}

impl Validation {
    /// The headline numbers: loss and the means over frames of every metric
    /// ([`metric::SUMMARY`], and accuracy for activity runs).
    pub fn summary(&self) -> Vec<(Metric, f64)> {
        let mut v: Vec<(Metric, f64)> = metric::SUMMARY
            .iter()
            .map(|&m| (m, headline(m, self.loss, &self.frames)))
            .collect();
        if let Some(a) = &self.activity {
            v.push((metric::ACCURACY, a.accuracy));
        }
        v
    }

    /// The `{"kind": "valid", …}` record of `metrics.jsonl` at `step` of `epoch`.
    pub fn record(&self, step: u64, epoch: u64) -> serde_json::Value {
        let mut line = json!({"kind": "valid", "step": step, "epoch": epoch});
        for (m, v) in self.summary() {
            line[m.key] = json!(v);
        }
        line["per_frame"] = per_frame(&self.frames);
        if let Some(b) = &self.baselines {
            for (key, m) in [("copy_last", &b.copy_last), ("zeros", &b.zeros)] {
                let mut entry = json!({"per_frame": per_frame(m)});
                for &metric in &metric::SUMMARY[1..] {
                    entry[metric.key] = json!(headline(metric, f64::NAN, m));
                }
                line["baselines"][key] = entry;
            }
        }
        if let Some(a) = &self.activity {
            line[metric::CROSS_ENTROPY.key] = json!(a.cross_entropy);
            line["prediction_loss"] = json!(a.prediction_loss);
            line["accuracy_per_ratio"] = json!(a
                .ratios
                .iter()
                .map(|r| json!({"ratio": r.ratio, "input_frames": r.input_frames,
                    "accuracy": r.accuracy, "groups": r.groups}))
                .collect::<Vec<_>>());
        }
        line
    }
}

/// The mean over frames of `m` (the loss is one number already).
fn headline(m: Metric, loss: f64, f: &FrameMetrics) -> f64 {
    match m.key {
        "loss" => loss,
        "mse" => mean(&f.mse),
        "mae" => mean(&f.mae),
        "psnr" => mean(&f.psnr),
        "ssim" => mean(&f.ssim_paper),
        "ssim_wang2004" => mean(&f.ssim_wang),
        "lpips" => mean(&f.lpips),
        other => unreachable!("{other} is not a per-frame metric"),
    }
}

/// The per-frame curves a validation record carries.
fn per_frame(f: &FrameMetrics) -> serde_json::Value {
    json!({"mse": f.mse, "mae": f.mae, "psnr": f.psnr, "ssim": f.ssim_paper})
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
    let mut forward_seconds = 0.0;
    tch::no_grad(|| -> Result<()> {
        for batch in loader.epoch(0) {
            crate::heartbeat::process().beat();
            let clips = batch?.clips;
            let rollout = Rollout::training(input, future, None);
            let started = std::time::Instant::now();
            let out = net.forward(&clips.narrow(1, 0, input as i64), &rollout)?;
            if let tch::Device::Cuda(k) = clips.device() {
                tch::Cuda::synchronize(k as i64);
            }
            forward_seconds += started.elapsed().as_secs_f64();
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
    flat.push(forward_seconds);
    flat.push(loss_sum);
    coll.all_reduce_sum_f64(&mut flat)?;
    let loss_total = flat.pop().unwrap_or(0.0);
    let forward_seconds = flat.pop().unwrap_or(0.0);
    let totals = FrameMetrics::from_flat(&flat[..model_len], future);
    let baselines = TrivialBaselines::from_flat(&flat[model_len..], future);
    Ok(Validation {
        loss: loss_total / totals.samples.max(1) as f64,
        frames: totals.means(),
        baselines: Some(baselines.means()),
        activity: None,
        forward_seconds,
    })
}

/// Mean over frames of a per-frame vector (0 for none).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
