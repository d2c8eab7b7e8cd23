//! Checkpoint format types and the retention policy (ARCHITECTURE §5). No I/O of tensors here:
//! the worker writes the HDF5 shards; this module says what a committed checkpoint looks like
//! and which old ones to delete.
//!
//! ```text
//! <run>/checkpoints/step-00012000/manifest.toml              written last
//! <run>/checkpoints/step-00012000/shard-00003-of-00008.h5    flat slice r of params + Adam moments
//! <run>/checkpoints/step-00012000/rank-00003.toml            RNG + data cursor of rank r
//! <run>/checkpoints/LATEST                                   name of the newest committed step
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::MetricMode;
use crate::{Error, Result};

/// Format version written into manifests and shards.
pub const FORMAT_VERSION: u32 = 1;
/// File naming the newest committed checkpoint directory.
pub const LATEST: &str = "LATEST";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.toml";

/// Directory name of the checkpoint at `step`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Parses `step-00001234` → 1234 (committed directories only, not `.tmp-` ones).
pub fn parse_step_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    (digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Shard file of rank `rank` in a world of `world`.
pub fn shard_name(rank: usize, world: usize) -> String {
    format!("shard-{rank:05}-of-{world:05}.h5")
}

/// Per-rank state file.
pub fn rank_state_name(rank: usize) -> String {
    format!("rank-{rank:05}.toml")
}

/// One parameter's place in the flat buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutEntry {
    /// Reference parameter name, e.g. `layers.b0l0.layers.2.weight`.
    pub name: String,
    /// First element in the flat buffer.
    pub offset: u64,
    /// Tensor shape.
    pub shape: Vec<i64>,
}

/// One file of a checkpoint with its size and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the checkpoint directory.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// `manifest.toml`: what a committed checkpoint holds. Written last, by rank 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Optimizer steps taken.
    pub step: u64,
    /// Epoch the next step belongs to.
    pub epoch: u64,
    /// Training samples consumed (all ranks).
    pub samples_seen: u64,
    /// World size that wrote it (resume may use another).
    pub world_size: usize,
    /// SHA-256 of the `[model]` section; resume refuses a different model.
    pub model_hash: String,
    /// The `[model]` section itself, so a mismatch can name the differing keys.
    pub model: toml::Table,
    /// Elements in the flat parameter buffer.
    pub numel: u64,
    /// Parameter layout in the flat buffer.
    pub layout: Vec<LayoutEntry>,
    /// Every other file of the checkpoint.
    pub files: Vec<FileEntry>,
    /// Validation metrics at this step (e.g. `valid.loss`), for keep-best retention.
    pub metrics: BTreeMap<String, f64>,
    /// Training-wide state every rank restores (schedules), as TOML.
    pub state: toml::Table,
}

impl Manifest {
    /// Reads and parses `<dir>/manifest.toml`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let m: Manifest = toml::from_str(&text).map_err(|e| {
            Error::format(&path, format!("not a checkpoint manifest: {}", e.message()))
        })?;
        if m.format_version != FORMAT_VERSION {
            return Err(Error::format(
                &path,
                format!(
                    "checkpoint format version {} is not supported (this build reads {})",
                    m.format_version, FORMAT_VERSION
                ),
            ));
        }
        Ok(m)
    }

    /// `[model]` keys whose values differ between this checkpoint and `current`, as
    /// `key: checkpoint → current` lines.
    pub fn model_differences(&self, current: &toml::Table) -> Vec<String> {
        let mut keys: Vec<&String> = self.model.keys().chain(current.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| self.model.get(*k) != current.get(*k))
            .map(|k| {
                let show = |v: Option<&toml::Value>| v.map_or("(absent)".into(), |v| v.to_string());
                format!(
                    "model.{k}: {} → {}",
                    show(self.model.get(k)),
                    show(current.get(k))
                )
            })
            .collect()
    }
}

/// `rank-NNNNN.toml`: what one rank needs to continue exactly (RNG and data cursor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankState {
    /// The rank that wrote it.
    pub rank: usize,
    /// Seed of the rank's random stream for the next step (derived from the run seed).
    pub rng_seed: u64,
    /// Epoch of the data cursor.
    pub epoch: u64,
    /// Batches of that epoch this rank has consumed.
    pub batches_done: u64,
}

/// The committed checkpoints of a run, newest last.
pub fn list_committed(ckpt_root: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(ckpt_root) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let step = parse_step_dir(&e.file_name().to_string_lossy())?;
            e.path().join(MANIFEST).exists().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// A committed checkpoint as retention sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Retained {
    /// Its step.
    pub step: u64,
    /// Its ranking metric, when it was validated.
    pub metric: Option<f64>,
}

/// Which committed checkpoints to delete: keep the newest `keep_last`, plus (with `keep_best`)
/// the best by metric. Pure; the caller deletes only after the newest one is committed.
pub fn retention(
    committed: &[Retained],
    keep_last: usize,
    keep_best: bool,
    mode: MetricMode,
) -> Vec<u64> {
    let mut steps: Vec<u64> = committed.iter().map(|c| c.step).collect();
    steps.sort_unstable();
    let keep_from = steps.len().saturating_sub(keep_last.max(1));
    let mut keep: Vec<u64> = steps[keep_from..].to_vec();
    if keep_best {
        let better = |a: f64, b: f64| mode.better(a, b);
        let best = committed
            .iter()
            .filter_map(|c| c.metric.filter(|m| m.is_finite()).map(|m| (c.step, m)))
            .fold(None, |acc: Option<(u64, f64)>, (s, m)| match acc {
                Some((_, bm)) if !better(m, bm) => acc,
                _ => Some((s, m)),
            });
        keep.extend(best.map(|(s, _)| s));
    }
    steps.into_iter().filter(|s| !keep.contains(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(step: u64, metric: Option<f64>) -> Retained {
        Retained { step, metric }
    }

    #[test]
    fn retention_keeps_the_newest_and_the_best() {
        let all = [
            r(10, Some(0.5)),
            r(20, Some(0.2)),
            r(30, None),
            r(40, Some(0.4)),
            r(50, None),
        ];
        assert_eq!(retention(&all, 2, false, MetricMode::Min), vec![10, 20, 30]);
        assert_eq!(retention(&all, 2, true, MetricMode::Min), vec![10, 30]);
        assert_eq!(retention(&all, 2, true, MetricMode::Max), vec![20, 30]);
        assert_eq!(
            retention(&all, 10, true, MetricMode::Min),
            Vec::<u64>::new()
        );
        // keep_last 0 still keeps the newest.
        assert_eq!(retention(&all[..2], 0, false, MetricMode::Min), vec![10]);
    }

    #[test]
    fn step_dir_names_round_trip_and_temp_dirs_are_not_steps() {
        assert_eq!(step_dir_name(12000), "step-00012000");
        assert_eq!(parse_step_dir("step-00012000"), Some(12000));
        assert_eq!(parse_step_dir("step-00012000.tmp-ab12"), None);
        assert_eq!(parse_step_dir("step-12"), None);
        assert_eq!(shard_name(3, 8), "shard-00003-of-00008.h5");
    }

    #[test]
    fn model_differences_name_the_keys() {
        let a: toml::Table = "order = 3\nrank = 8\ncell = \"convttlstm\""
            .parse()
            .unwrap();
        let b: toml::Table = "order = 2\nrank = 8\ncell = \"convttlstm\"\nsteps = 3"
            .parse()
            .unwrap();
        let m = Manifest {
            format_version: FORMAT_VERSION,
            step: 1,
            epoch: 0,
            samples_seen: 0,
            world_size: 1,
            model_hash: String::new(),
            model: a,
            numel: 0,
            layout: vec![],
            files: vec![],
            metrics: BTreeMap::new(),
            state: toml::Table::new(),
        };
        assert_eq!(
            m.model_differences(&b),
            ["model.order: 3 → 2", "model.steps: (absent) → 3"]
        );
    }
}
