//! Early stopping across a sweep's trials: asynchronous successive halving (ASHA, Li et al.,
//! MLSys 2020) decided from files, with no coordinator.
//!
//! A trial trains to the first rung `grace_steps` (its run pauses there: `train.pause_at_step`,
//! exit 4 after the validation and a checkpoint), its task reads the validation metric of that
//! step from the trial's own `metrics.jsonl`, and decides with what the sweep directory holds:
//!
//! ```text
//! <sweep>/asha/rung-<k>/<trial id>.toml   step, value, decision, how many values it saw
//! ```
//!
//! The trial goes on iff its value ranks within the best ⌈n / η⌉ of the n values recorded at
//! that rung so far, its own included (η = `reduction_factor`; the first trial at a rung always
//! goes on, as in ASHA). Each record is written once, atomically (temporary file + rename), by
//! the task of its own trial, so concurrent tasks — local slots or independent Slurm array
//! tasks on other nodes — never write the same file, and a task that dies after deciding finds
//! its decision again instead of deciding twice. Trials run one at a time in index order
//! decide the same way wherever they run; concurrent ones see whichever records exist when they
//! decide (that is ASHA's asynchrony).

use std::path::{Path, PathBuf};

use convtt_core::config::MetricMode;
use convtt_core::fsutil::write_atomic;
use convtt_core::metric::Metric;
use serde::{Deserialize, Serialize};

use super::SweepDir;
use crate::error::{Error, Result};

/// What a trial does after a rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Train on to the next rung (or the end).
    Continue,
    /// Stop here (the checkpoint stays; `sweep resume --promote` trains it on).
    Stop,
}

/// One trial's record at one rung.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungRecord {
    /// Trial index.
    pub index: usize,
    /// Trial id.
    pub id: String,
    /// The rung's step.
    pub step: u64,
    /// The sweep metric at that step.
    pub value: f64,
    /// What the trial did.
    pub decision: Decision,
    /// Values recorded at the rung when it decided (its own included).
    pub seen: usize,
    /// Its rank among them (1 = best).
    pub rank: usize,
}

/// `<sweep>/asha/rung-<k>`.
pub fn rung_dir(dir: &SweepDir, rung: usize) -> PathBuf {
    dir.0.join("asha").join(format!("rung-{rung}"))
}

/// Every record at rung `rung`, by trial index.
pub fn read_rung(dir: &SweepDir, rung: usize) -> Result<Vec<RungRecord>> {
    let d = rung_dir(dir, rung);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&d, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e.map_err(|e| Error::io(&d, e))?.path();
        if path.extension().is_some_and(|x| x == "toml") {
            out.push(read_record(&path)?);
        }
    }
    out.sort_by_key(|r| r.index);
    Ok(out)
}

fn read_record(path: &Path) -> Result<RungRecord> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    toml::from_str(&text).map_err(|e| {
        Error::Usage(format!(
            "{}: not an ASHA rung record ({e}); remove it to let its trial decide again",
            path.display()
        ))
    })
}

/// Whether `value` goes on among `others` (the values recorded before it at the rung):
/// within the best ⌈n / η⌉ of all n values, ties in its favour. Returns the decision, n and
/// its rank.
pub fn rule(value: f64, others: &[f64], eta: u64, mode: MetricMode) -> (Decision, usize, usize) {
    let n = others.len() + 1;
    let better = others
        .iter()
        .filter(|&&o| mode.cmp_best_first(o, value) == std::cmp::Ordering::Less)
        .count();
    let rank = better + 1;
    let keep = n.div_ceil(eta.max(1) as usize).max(1);
    let d = if rank <= keep {
        Decision::Continue
    } else {
        Decision::Stop
    };
    (d, n, rank)
}

/// Trial `index`/`id`'s decision at rung `rung` (step `step`) with metric `value`: the one on
/// disk when it decided before, else decided now from the rung's records and written.
pub fn decide(
    dir: &SweepDir,
    rung: usize,
    (index, id): (usize, &str),
    step: u64,
    value: f64,
    (eta, mode): (u64, MetricMode),
) -> Result<RungRecord> {
    let d = rung_dir(dir, rung);
    let path = d.join(format!("{id}.toml"));
    if path.exists() {
        return read_record(&path);
    }
    std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    let others: Vec<f64> = read_rung(dir, rung)?
        .into_iter()
        .filter(|r| r.id != id)
        .map(|r| r.value)
        .collect();
    let (decision, seen, rank) = rule(value, &others, eta, mode);
    let rec = RungRecord {
        index,
        id: id.to_owned(),
        step,
        value,
        decision,
        seen,
        rank,
    };
    let text = toml::to_string_pretty(&rec).expect("a rung record serialises");
    write_atomic(&path, text.as_bytes())?;
    Ok(rec)
}

/// One validation of a trial: step, value of the metric, Unix time when recorded.
pub type ValidPoint = (u64, f64, Option<f64>);

/// A trial's validations of `metric` from its `metrics.jsonl`, by step (a step validated more
/// than once keeps its last value); empty when the file does not exist yet.
pub fn valid_series(run_dir: &Path, metric: Metric) -> Result<Vec<ValidPoint>> {
    let path = run_dir.join("metrics.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut by_step = std::collections::BTreeMap::new();
    for r in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "valid")
    {
        if let (Some(step), Some(v)) = (r["step"].as_u64(), r[metric.key].as_f64()) {
            by_step.insert(step, (v, r["time"].as_f64()));
        }
    }
    Ok(by_step.into_iter().map(|(s, (v, t))| (s, v, t)).collect())
}

/// The sweep metric of the validation at `step` in the run's `metrics.jsonl` (the last one, if
/// the step was validated more than once).
pub fn metric_at(run_dir: &Path, metric: Metric, step: u64) -> Result<Option<f64>> {
    Ok(valid_series(run_dir, metric)?
        .into_iter()
        .find(|p| p.0 == step)
        .map(|p| p.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_keeps_the_best_ceil_n_over_eta() {
        let min = MetricMode::Min;
        // First at a rung: always on.
        assert_eq!(rule(5.0, &[], 3, min).0, Decision::Continue);
        // n = 2, η = 2: only the better one.
        assert_eq!(rule(2.0, &[1.0], 2, min), (Decision::Stop, 2, 2));
        assert_eq!(rule(0.5, &[1.0], 2, min), (Decision::Continue, 2, 1));
        // n = 3, η = 2: the best two.
        assert_eq!(rule(2.0, &[1.0, 3.0], 2, min), (Decision::Continue, 3, 2));
        // n = 4, η = 3: ⌈4/3⌉ = 2.
        assert_eq!(rule(3.0, &[1.0, 2.0, 4.0], 3, min).0, Decision::Stop);
        // Ties go on; a larger-is-better metric ranks the other way.
        assert_eq!(rule(1.0, &[1.0], 2, min).0, Decision::Continue);
        assert_eq!(
            rule(30.0, &[20.0], 2, MetricMode::Max).0,
            Decision::Continue
        );
        assert_eq!(rule(10.0, &[20.0], 2, MetricMode::Max).0, Decision::Stop);
    }

    #[test]
    fn decisions_are_written_once_and_read_back() {
        let root = std::env::temp_dir().join(format!("convtt-asha-{}", std::process::id()));
        let dir = SweepDir(root.clone());
        let cfg = (2, MetricMode::Min);
        let a = decide(&dir, 0, (0, "aaa"), 4, 1.0, cfg).unwrap();
        assert_eq!((a.decision, a.seen), (Decision::Continue, 1));
        let b = decide(&dir, 0, (1, "bbb"), 4, 2.0, cfg).unwrap();
        assert_eq!((b.decision, b.seen, b.rank), (Decision::Stop, 2, 2));
        // Deciding again returns the record on disk, whatever the value now.
        let again = decide(&dir, 0, (1, "bbb"), 4, 0.1, cfg).unwrap();
        assert_eq!(again, b);
        let c = decide(&dir, 0, (2, "ccc"), 4, 0.5, cfg).unwrap();
        assert_eq!((c.decision, c.seen, c.rank), (Decision::Continue, 3, 1));
        let all = read_rung(&dir, 0).unwrap();
        assert_eq!(all.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(read_rung(&dir, 1).unwrap().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
