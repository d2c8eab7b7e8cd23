//! A run directory (ARCHITECTURE §6) and the files in it: the one place their names are
//! spelled. The worker writes them, the launcher and the sweep tool read them.
//!
//! ```text
//! <run>/config.toml            the resolved configuration (launcher, or a worker started by hand)
//! <run>/metrics.jsonl          one JSON record per line (train, valid, eval, …), rank 0
//! <run>/summary.toml           written once training finished: RunSummary
//! <run>/checkpoints/           step-NNNNNNNN/ directories and LATEST (crate::checkpoint)
//! <run>/logs/<node>-<rank>.log each worker's output
//! <run>/plots/                 loss.png, valid-per-frame.png, prediction.png
//! <run>/eval-<split>.json      the report of `convtt-worker eval`
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::metric::Metric;
use crate::{Error, Result};

/// A run directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunDir(PathBuf);

impl RunDir {
    /// The run directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir(path.into())
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }

    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }

    /// `summary.toml`.
    pub fn summary(&self) -> PathBuf {
        self.0.join("summary.toml")
    }

    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.0.join("checkpoints")
    }

    /// `logs/`.
    pub fn logs(&self) -> PathBuf {
        self.0.join("logs")
    }

    /// `logs/<node>-<rank>.log`.
    pub fn worker_log(&self, node: u32, rank: u32) -> PathBuf {
        self.logs().join(format!("{node}-{rank}.log"))
    }

    /// `plots/`.
    pub fn plots(&self) -> PathBuf {
        self.0.join("plots")
    }

    /// `tb/`: TensorBoard event files.
    pub fn tensorboard(&self) -> PathBuf {
        self.0.join("tb")
    }

    /// `eval-<split>.json`.
    pub fn eval_report(&self, split: &str) -> PathBuf {
        self.0.join(format!("eval-{split}.json"))
    }

    /// The run that holds checkpoint directory `dir` (`<run>/checkpoints/<step>`), if it is one.
    pub fn of_checkpoint(dir: &Path) -> Option<RunDir> {
        let parent = dir.parent()?;
        let run = RunDir::new(parent.parent()?);
        (run.checkpoints() == parent).then_some(run)
    }

    /// Whether training finished here (its summary exists).
    pub fn finished(&self) -> bool {
        self.summary().is_file()
    }
}

impl AsRef<Path> for RunDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// `summary.toml`: what a finished training run reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Optimizer steps taken.
    pub steps: u64,
    /// Epochs completed.
    pub epochs_completed: u64,
    /// Training clips seen over all ranks.
    pub samples_seen: u64,
    /// Mean training loss of the last logged window.
    pub final_train_loss: f64,
    /// The final validation's metrics by key ([`crate::metric`]), when validated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub valid: BTreeMap<String, f64>,
}

impl RunSummary {
    /// The final validation value of `metric`, when present and finite.
    pub fn valid(&self, metric: Metric) -> Option<f64> {
        self.valid
            .get(metric.key)
            .copied()
            .filter(|v| v.is_finite())
    }

    /// Writes `<run>/summary.toml` atomically.
    pub fn write(&self, run: &RunDir) -> Result<()> {
        let text = toml::to_string_pretty(self).expect("the summary serialises");
        write_atomic(&run.summary(), text.as_bytes())
    }

    /// Reads `<run>/summary.toml`; `Ok(None)` when there is none, a format error naming the
    /// file when it is damaged.
    pub fn read(run: &RunDir) -> Result<Option<Self>> {
        let path = run.summary();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| Error::format(&path, e.message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_round_trips_and_absent_or_damaged_files_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("convtt-rundir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = RunDir::new(&dir);
        assert_eq!(RunSummary::read(&run).unwrap(), None);
        let ck = run.checkpoints().join("step-00000012");
        assert_eq!(RunDir::of_checkpoint(&ck), Some(run.clone()));
        assert_eq!(RunDir::of_checkpoint(&dir.join("elsewhere/step-1")), None);
        assert!(!run.finished());
        let s = RunSummary {
            steps: 12,
            epochs_completed: 2,
            samples_seen: 48,
            final_train_loss: 0.25,
            valid: [("loss".to_owned(), 0.5), ("psnr".to_owned(), f64::NAN)]
                .into_iter()
                .collect(),
        };
        s.write(&run).unwrap();
        assert!(run.finished());
        let back = RunSummary::read(&run).unwrap().unwrap();
        assert_eq!(back.steps, 12);
        assert_eq!(back.valid(crate::metric::LOSS), Some(0.5));
        assert_eq!(back.valid(crate::metric::PSNR), None, "NaN is no value");
        assert_eq!(back.valid(crate::metric::SSIM), None);
        std::fs::write(run.summary(), "steps = \"x\"").unwrap();
        let e = RunSummary::read(&run).unwrap_err().to_string();
        assert!(e.contains("summary.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
