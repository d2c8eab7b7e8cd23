//! Saving and restoring the trainer: sharded checkpoints written on a background thread and
//! committed at the next step boundary (ARCHITECTURE §5), and the typed [`TrainerState`] a
//! manifest carries besides the flat buffers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use convtt_common::checkpoint::{Manifest, RankState, FORMAT_VERSION, MANIFEST};
use convtt_common::config::ValidConfig;
use serde::{Deserialize, Serialize};

use super::optim::{FlatParams, LossScaler};
use super::schedule::Schedules;
use super::step::mask_seed;
use crate::checkpoint as ckpt;
use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// Training progress that a checkpoint captures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Optimizer steps taken.
    pub step: u64,
    /// The epoch the next step belongs to.
    pub epoch: u64,
    /// Batches of that epoch already trained on.
    pub batches_done: u64,
    /// Training clips seen over all ranks.
    pub samples_seen: u64,
}

/// The manifest's `[state]`: what every rank shares besides the flat buffers. Each field must
/// be present; a checkpoint that lacks one is refused (exit 5) naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Adam steps taken (its bias correction).
    pub adam_steps: u64,
    /// Batches of the current epoch already trained on.
    pub batches_done: u64,
    /// Learning-rate and scheduled-sampling schedules.
    pub schedules: Schedules,
    /// fp16 dynamic loss scaling (`train.precision = "fp16"` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScaler>,
}

impl TrainerState {
    /// The `[state]` table of a manifest.
    pub fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("the trainer state serialises")
    }

    /// Reads the `[state]` table of the manifest in `dir`.
    pub fn from_table(table: &toml::Table, dir: &Path) -> Result<Self> {
        table
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| Error::Data {
                path: dir.join(MANIFEST),
                msg: format!("[state]: {}", e.message()),
            })
    }
}

/// A checkpoint whose shards are being written by a background thread; committed by
/// [`finish_save`] (after a barrier, by rank 0) once the thread is done.
pub struct PendingSave {
    writer: std::thread::JoinHandle<Result<()>>,
    step: u64,
    tmp: PathBuf,
    /// Rank 0: the manifest to commit (files are filled in at commit time).
    manifest: Option<Manifest>,
    /// Its size on disk, about.
    bytes: u64,
}

/// Starts a checkpoint of the current state: the flat buffers are copied to the host here (so
/// training may continue changing them) and written, with this rank's state file, on a
/// background thread. Training does not wait on the disk; [`finish_save`] commits.
pub fn begin_save(
    cfg: &ValidConfig,
    rt: &Runtime,
    flat: &FlatParams,
    sched: &Schedules,
    cur: &Cursor,
    metrics: BTreeMap<String, f64>,
) -> PendingSave {
    let (rank, world) = (rt.rank(), rt.world());
    let tmp = ckpt::tmp_dir(&rt.run.checkpoints(), cur.step, rt.attempt());
    let bufs = flat.to_host();
    let rank_state = RankState {
        rank,
        rng_seed: mask_seed(cfg.train.seed, cur.step, rank),
        epoch: cur.epoch,
        batches_done: cur.batches_done,
    };
    let dir = tmp.clone();
    let writer = std::thread::spawn(move || {
        ckpt::write_shard(
            &dir,
            rank,
            world,
            [&bufs[0], &bufs[1], &bufs[2]],
            &rank_state,
        )
    });
    let manifest = (rank == 0).then(|| {
        let state = TrainerState {
            adam_steps: flat.adam_steps,
            batches_done: cur.batches_done,
            schedules: sched.clone(),
            loss_scale: rt.scaler.clone(),
        };
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
            state: state.to_table(),
        }
    });
    PendingSave {
        writer,
        step: cur.step,
        tmp,
        manifest,
        bytes: checkpoint_bytes(flat.numel()),
    }
}

impl PendingSave {
    /// Gives the checkpoint up (a peer died before it was committed): waits for the writer
    /// thread so nothing writes behind the trainer's back; the directory stays for rank 0 to
    /// sweep.
    pub fn abandon(self) {
        if let Ok(Err(e)) = self.writer.join() {
            tracing::debug!("abandoned checkpoint of step {}: {e}", self.step);
        }
        tracing::warn!(
            "the checkpoint of step {} in flight is abandoned ({})",
            self.step,
            self.tmp.display()
        );
    }
}

/// Waits for this rank's shard, then (after a barrier) rank 0 verifies and commits the
/// checkpoint and applies retention; a second barrier keeps ranks together.
///
/// A full, over-quota or read-only file system is told as such (exit 6, never retried: the
/// same write would fail again), with the free and the needed space; the uncommitted
/// directory is removed and the committed checkpoints stay as they were.
pub fn finish_save(cfg: &ValidConfig, rt: &mut Runtime, pending: PendingSave) -> Result<PathBuf> {
    let (tmp, bytes) = (pending.tmp.clone(), pending.bytes);
    commit_pending(cfg, rt, pending).map_err(|e| {
        if !e.storage_full() {
            return e;
        }
        let _ = std::fs::remove_dir_all(&tmp);
        no_space(e, rt, bytes)
    })
}

/// One checkpoint's size on disk, about: the three flat buffers (parameters, Adam's two
/// moments) in f32, plus the manifest and state files.
pub fn checkpoint_bytes(numel: i64) -> u64 {
    3 * 4 * numel.max(0) as u64 + 64 * 1024
}

/// The storage error `e` with what a user needs to act on it.
fn no_space(e: Error, rt: &Runtime, needed: u64) -> Error {
    let free =
        crate::sys::free_bytes(rt.run.path()).map_or_else(|| "unknown space".to_owned(), mib);
    let newest = ckpt::resolve(&rt.run.checkpoints(), &crate::checkpoint::Resume::Auto)
        .ok()
        .flatten()
        .map_or_else(|| "none yet".to_owned(), |(d, _)| d.display().to_string());
    Error::Unavailable(format!(
        "{e}\n  the file system of {} is full, over quota or read-only ({free} free, a \
         checkpoint needs about {}); the committed checkpoints are intact (newest: {newest}); \
         free space (or move launch.run_dir), then resume with --resume auto",
        rt.run.path().display(),
        mib(needed)
    ))
}

/// `bytes` in MiB, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn commit_pending(cfg: &ValidConfig, rt: &mut Runtime, pending: PendingSave) -> Result<PathBuf> {
    let written = pending.writer.join().unwrap_or_else(|_| {
        Err(Error::Internal(
            "the checkpoint writer thread panicked".into(),
        ))
    });
    written?;
    rt.coll.barrier()?;
    let root = rt.run.checkpoints();
    let dir = root.join(convtt_common::checkpoint::step_dir_name(pending.step));
    if let Some(manifest) = pending.manifest {
        let c = &cfg.checkpoint;
        let retention = (
            c.keep_last,
            c.keep_best,
            c.best_mode(),
            c.best_metric.as_str(),
        );
        ckpt::commit(&root, &pending.tmp, manifest, retention)?;
        rt.coll.checkpoint_committed(pending.step, &dir)?;
    }
    rt.coll.barrier()?;
    Ok(dir)
}

/// Rank 0 at the start: warns when the run directory's file system cannot hold
/// `checkpoint.keep_last + 2` checkpoints of `numel` parameters (the kept ones, the one being
/// written, and the best).
pub fn check_space(cfg: &ValidConfig, rt: &Runtime, numel: i64) {
    let Some(free) = crate::sys::free_bytes(rt.run.path()) else {
        return;
    };
    let one = checkpoint_bytes(numel);
    let want = one * (cfg.checkpoint.keep_last as u64 + 2);
    if free < want {
        tracing::warn!(
            "{} has {} free, but {} checkpoints of about {} each need {}: training will stop \
             (exit 6) when a checkpoint no longer fits",
            rt.run.path().display(),
            mib(free),
            cfg.checkpoint.keep_last + 2,
            mib(one),
            mib(want)
        );
    }
}

/// What a checkpoint restores: the flat buffers (into `flat`), the typed state and the cursor.
pub fn restore(
    cfg: &ValidConfig,
    dir: &Path,
    m: &Manifest,
    flat: &mut FlatParams,
) -> Result<(TrainerState, Cursor)> {
    ckpt::check_model(cfg, dir, m, "resume")?;
    let state = TrainerState::from_table(&m.state, dir)?;
    let bufs = ckpt::load_buffers(dir, m)?;
    flat.restore(&m.layout, &bufs, state.adam_steps, dir)?;
    let cur = Cursor {
        step: m.step,
        epoch: m.epoch,
        batches_done: state.batches_done,
        samples_seen: m.samples_seen,
    };
    Ok((state, cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[state]` table exactly as the code before the typed state wrote it (string keys
    /// assembled by hand) — such checkpoints must keep loading.
    const WRITTEN_BEFORE: &str = r#"
adam_steps = 12
batches_done = 3

[schedules]
lr = 0.002
ss_ratio = 1.0
lr_decay_active = false
ss_decay_active = false
best_valid = inf
best_epoch = 0

[loss_scale]
scale = 32768.0
good_steps = 7
growth_interval = 2000
"#;

    #[test]
    fn state_written_by_the_previous_format_loads_and_round_trips() {
        let table: toml::Table = WRITTEN_BEFORE.parse().unwrap();
        let s = TrainerState::from_table(&table, Path::new("/ck")).unwrap();
        assert_eq!((s.adam_steps, s.batches_done), (12, 3));
        assert_eq!(s.schedules.lr, 0.002);
        assert_eq!(s.loss_scale.as_ref().unwrap().good_steps, 7);
        let back = TrainerState::from_table(&s.to_table(), Path::new("/ck")).unwrap();
        assert_eq!(back, s);
        // Without fp16 there is no loss_scale table, and none is written.
        let mut no_scale = table.clone();
        no_scale.remove("loss_scale");
        let s = TrainerState::from_table(&no_scale, Path::new("/ck")).unwrap();
        assert_eq!(s.loss_scale, None);
        assert!(!s.to_table().contains_key("loss_scale"));
    }

    /// A missing field is a data error naming the field and the manifest (the old reader took
    /// 0 silently and restarted Adam's bias correction).
    #[test]
    fn a_state_missing_a_field_is_a_data_error_naming_it() {
        for field in ["adam_steps", "batches_done", "schedules"] {
            let mut table: toml::Table = WRITTEN_BEFORE.parse().unwrap();
            table.remove(field);
            let e = TrainerState::from_table(&table, Path::new("/ck/step-00000012")).unwrap_err();
            assert_eq!(e.exit_code(), crate::exit::DATA, "{e}");
            let msg = e.to_string();
            assert!(msg.contains(field), "{msg}");
            assert!(msg.contains("/ck/step-00000012/manifest.toml"), "{msg}");
        }
    }
}
