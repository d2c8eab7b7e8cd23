//! Sharded, atomic checkpoints (ARCHITECTURE §5): every rank writes its slice of the flat
//! parameter buffer and the Adam moments into `step-N.tmp-aK/`; after a barrier rank 0 verifies
//! sizes and hashes, writes the manifest last, renames the directory, fsyncs the parent and
//! replaces LATEST by rename. Resume verifies hashes, falls back to the newest valid checkpoint
//! with a warning, and re-slices for any world size.

use std::path::{Path, PathBuf};

use convtt_common::checkpoint::{
    self as fmt, list_committed, parse_step_dir, rank_state_name, shard_name, step_dir_name,
    FileEntry, Manifest, RankState, Retained, LATEST, MANIFEST,
};
use convtt_common::fsutil::{fsync_dir, fsync_file, sha256_file, write_atomic};

use crate::error::{Error, Result};

/// The three flat buffers a checkpoint stores.
pub const BUFFERS: [&str; 3] = ["params", "exp_avg", "exp_avg_sq"];

/// Element range `[lo, hi)` of rank `rank`'s slice of a buffer of `numel` elements.
pub fn slice_range(numel: u64, rank: usize, world: usize) -> (u64, u64) {
    let w = world as u64;
    (numel * rank as u64 / w, numel * (rank as u64 + 1) / w)
}

/// The temporary directory all ranks of one attempt write step `step` into.
pub fn tmp_dir(root: &Path, step: u64, attempt: u32) -> PathBuf {
    root.join(format!("{}.tmp-a{attempt}", step_dir_name(step)))
}

fn data_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_owned(),
        msg: msg.into(),
    }
}

fn h5(path: &Path, e: hdf5::Error) -> Error {
    data_err(path, format!("HDF5: {e}"))
}

/// Writes rank `rank`'s shard (slices of each buffer, given whole) and its state file into
/// `dir`, then fsyncs both.
pub fn write_shard(
    dir: &Path,
    rank: usize,
    world: usize,
    buffers: [&[f32]; 3],
    state: &RankState,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let numel = buffers[0].len() as u64;
    let (lo, hi) = slice_range(numel, rank, world);
    let path = dir.join(shard_name(rank, world));
    {
        let file = hdf5::File::create(&path).map_err(|e| h5(&path, e))?;
        let attr = |name: &str, v: u64| {
            file.new_attr::<u64>()
                .shape(())
                .create(name)
                .and_then(|a| a.write_scalar(&v))
        };
        attr("format_version", fmt::FORMAT_VERSION as u64).map_err(|e| h5(&path, e))?;
        attr("offset", lo).map_err(|e| h5(&path, e))?;
        attr("numel", numel).map_err(|e| h5(&path, e))?;
        for (name, buf) in BUFFERS.iter().zip(buffers) {
            file.new_dataset::<f32>()
                .shape(((hi - lo) as usize,))
                .create(*name)
                .and_then(|d| d.write_raw(&buf[lo as usize..hi as usize]))
                .map_err(|e| h5(&path, e))?;
        }
    }
    fsync_file(&path)?;
    let state_path = dir.join(rank_state_name(rank));
    let text = toml::to_string(state).expect("rank state serialises");
    std::fs::write(&state_path, text).map_err(|e| Error::io(&state_path, e))?;
    Ok(fsync_file(&state_path)?)
}

/// Rank 0, after every rank's shard is written: checks and hashes the files, writes the
/// manifest last, renames `tmp` to its final name, replaces LATEST, then applies retention.
/// Returns the committed directory.
pub fn commit(
    root: &Path,
    tmp: &Path,
    mut manifest: Manifest,
    retention: (usize, bool, convtt_common::config::MetricMode, &str),
) -> Result<PathBuf> {
    let world = manifest.world_size;
    let mut files = Vec::new();
    for rank in 0..world {
        for name in [shard_name(rank, world), rank_state_name(rank)] {
            let p = tmp.join(&name);
            if !p.exists() {
                return Err(data_err(
                    &p,
                    format!("rank {rank} did not write its checkpoint file"),
                ));
            }
            let (sha256, bytes) = sha256_file(&p)?;
            files.push(FileEntry {
                path: name,
                bytes,
                sha256,
            });
        }
    }
    manifest.files = files;
    let text = toml::to_string_pretty(&manifest).expect("manifest serialises");
    write_atomic(&tmp.join(MANIFEST), text.as_bytes())?;
    let dir = root.join(step_dir_name(manifest.step));
    if dir.exists() {
        // A step re-reached after a restart: the new one replaces it only once complete.
        let old = root.join(format!(
            "{}.old-{}",
            step_dir_name(manifest.step),
            std::process::id()
        ));
        std::fs::rename(&dir, &old).map_err(|e| Error::io(&dir, e))?;
        std::fs::rename(tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    }
    fsync_dir(root)?;
    write_atomic(
        &root.join(LATEST),
        format!("{}\n", step_dir_name(manifest.step)).as_bytes(),
    )?;
    tracing::info!(
        step = manifest.step,
        "checkpoint committed: {}",
        dir.display()
    );
    apply_retention(root, retention)?;
    Ok(dir)
}

fn apply_retention(
    root: &Path,
    (keep_last, keep_best, mode, metric): (usize, bool, convtt_common::config::MetricMode, &str),
) -> Result<()> {
    let committed: Vec<Retained> = list_committed(root)
        .into_iter()
        .map(|(step, dir)| Retained {
            step,
            metric: Manifest::read(&dir)
                .ok()
                .and_then(|m| m.metrics.get(metric).copied()),
        })
        .collect();
    for step in fmt::retention(&committed, keep_last, keep_best, mode) {
        let dir = root.join(step_dir_name(step));
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        tracing::debug!("retention removed {}", dir.display());
    }
    Ok(())
}

/// Removes temporary directories left by interrupted checkpoints (rank 0, before training).
pub fn remove_stale_tmp(root: &Path) {
    remove_tmp_where(root, |name| {
        name.contains(".tmp-") || name.contains(".old-")
    });
}

/// After a peer recovery into attempt `attempt`: removes the uncommitted directories of
/// earlier attempts (the checkpoint abandoned when a rank died), keeping those the group
/// is writing now.
pub fn remove_abandoned_tmp(root: &Path, attempt: u32) {
    remove_tmp_where(root, |name| {
        name.rsplit_once(".tmp-a")
            .and_then(|(_, a)| a.parse::<u32>().ok())
            .is_some_and(|a| a < attempt)
    });
}

fn remove_tmp_where(root: &Path, stale: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("step-") && stale(&name) {
            tracing::warn!(
                "removing an uncommitted checkpoint directory: {}",
                e.path().display()
            );
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Checks that every file the manifest lists exists with its size and hash.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let manifest = Manifest::read(dir).map_err(|e| data_err(dir, e.to_string()))?;
    let mut problems = Vec::new();
    for f in &manifest.files {
        let p = dir.join(&f.path);
        match sha256_file(&p) {
            Err(_) => problems.push(format!("{} is missing", f.path)),
            Ok((_, bytes)) if bytes != f.bytes => problems.push(format!(
                "{} has {bytes} bytes, expected {}",
                f.path, f.bytes
            )),
            Ok((sha, _)) if sha != f.sha256 => {
                problems.push(format!("{} checksum mismatch", f.path))
            }
            Ok(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(data_err(
            dir,
            format!("corrupt checkpoint: {}", problems.join("; ")),
        ))
    }
}

/// Refuses a checkpoint whose `[model]` differs from `cfg`'s (exit 2), naming every differing
/// key; `action` says what was refused ("resume", "evaluate", …).
pub fn check_model(
    cfg: &convtt_common::config::ValidConfig,
    dir: &Path,
    m: &Manifest,
    action: &str,
) -> Result<()> {
    if m.model_hash == cfg.model_hash() {
        return Ok(());
    }
    let current = cfg.model_table();
    // A checkpoint written before keys were added to `[model]` lacks them (so its hash differs):
    // with those keys at their defaults it may describe exactly the configured model.
    let mut stored = m.model.clone();
    let stored_activity = stored.remove("activity");
    let stored: Option<convtt_common::config::ModelConfig> =
        toml::Value::Table(stored).try_into().ok();
    if stored.as_ref() == Some(&cfg.model) && stored_activity.as_ref() == current.get("activity") {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{}: the checkpoint was written by a different model; refusing to {action}:\n  {}",
        dir.display(),
        m.model_differences(&current).join("\n  ")
    )))
}

/// What to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Start fresh.
    No,
    /// The newest valid checkpoint of the run, if any.
    Auto,
    /// This checkpoint directory (must be valid).
    Path(PathBuf),
}

impl std::str::FromStr for Resume {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "no" | "none" => Resume::No,
            "auto" => Resume::Auto,
            p => Resume::Path(PathBuf::from(p)),
        })
    }
}

/// Finds the checkpoint to resume from: for `Auto`, LATEST if it verifies, else the newest
/// committed checkpoint that verifies (with a warning per rejected one).
pub fn resolve(root: &Path, resume: &Resume) -> Result<Option<(PathBuf, Manifest)>> {
    match resume {
        Resume::No => Ok(None),
        Resume::Path(p) => verify(p).map(|m| Some((p.clone(), m))),
        Resume::Auto => {
            let latest = std::fs::read_to_string(root.join(LATEST))
                .ok()
                .and_then(|s| parse_step_dir(s.trim()));
            let mut candidates = list_committed(root);
            if let Some(step) = latest {
                if !candidates.iter().any(|(s, _)| *s == step) {
                    // Damage like any other: the manifest was deleted by hand or lost in a copy.
                    tracing::warn!(
                        "skipping checkpoint: {} names {} but {} has no manifest.toml",
                        root.join(LATEST).display(),
                        step_dir_name(step),
                        root.join(step_dir_name(step)).display()
                    );
                }
            }
            // LATEST first, then newest to oldest.
            candidates.sort_by_key(|(s, _)| (Some(*s) == latest, *s));
            for (_, dir) in candidates.into_iter().rev() {
                match verify(&dir) {
                    Ok(m) => return Ok(Some((dir, m))),
                    Err(e) => tracing::warn!("skipping checkpoint: {e}"),
                }
            }
            Ok(None)
        }
    }
}

/// Reads every shard of a verified checkpoint back into the three whole flat buffers (any
/// world size can then take its own slices).
pub fn load_buffers(dir: &Path, manifest: &Manifest) -> Result<[Vec<f32>; 3]> {
    let numel = manifest.numel as usize;
    let mut out = [vec![0f32; numel], vec![0f32; numel], vec![0f32; numel]];
    let world = manifest.world_size;
    for rank in 0..world {
        let path = dir.join(shard_name(rank, world));
        let file = hdf5::File::open(&path).map_err(|e| h5(&path, e))?;
        let (lo, hi) = slice_range(manifest.numel, rank, world);
        for (name, buf) in BUFFERS.iter().zip(out.iter_mut()) {
            let v: Vec<f32> = file
                .dataset(name)
                .and_then(|d| d.read_raw::<f32>())
                .map_err(|e| h5(&path, e))?;
            if v.len() as u64 != hi - lo {
                return Err(data_err(
                    &path,
                    format!(
                        "dataset {name} has {} values, expected {}",
                        v.len(),
                        hi - lo
                    ),
                ));
            }
            buf[lo as usize..hi as usize].copy_from_slice(&v);
        }
    }
    Ok(out)
}

/// Reads rank `rank`'s state file.
pub fn read_rank_state(dir: &Path, rank: usize) -> Result<RankState> {
    let path = dir.join(rank_state_name(rank));
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    toml::from_str(&text).map_err(|e| data_err(&path, format!("bad rank state: {}", e.message())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use convtt_common::config::MetricMode;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("convtt-ckpt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn manifest(step: u64, world: usize, numel: u64, metric: f64) -> Manifest {
        Manifest {
            format_version: fmt::FORMAT_VERSION,
            step,
            epoch: 0,
            samples_seen: step * 4,
            world_size: world,
            model_hash: "h".into(),
            model: toml::Table::new(),
            numel,
            layout: vec![],
            files: vec![],
            metrics: [("valid.loss".to_owned(), metric)].into(),
            state: toml::Table::new(),
        }
    }

    fn save(root: &Path, step: u64, world: usize, bufs: &[Vec<f32>; 3], metric: f64) -> PathBuf {
        let tmp = tmp_dir(root, step, 0);
        for rank in 0..world {
            let st = RankState {
                rank,
                rng_seed: 7 + rank as u64,
                epoch: 0,
                batches_done: step,
            };
            write_shard(&tmp, rank, world, [&bufs[0], &bufs[1], &bufs[2]], &st).unwrap();
        }
        let m = manifest(step, world, bufs[0].len() as u64, metric);
        commit(root, &tmp, m, (2, true, MetricMode::Min, "valid.loss")).unwrap()
    }

    fn bufs(n: usize, k: f32) -> [Vec<f32>; 3] {
        let v = |o: f32| (0..n).map(|i| i as f32 * k + o).collect::<Vec<_>>();
        [v(0.0), v(0.5), v(0.25)]
    }

    #[test]
    fn slices_cover_the_buffer_without_overlap() {
        for world in 1..9 {
            let mut next = 0;
            for r in 0..world {
                let (lo, hi) = slice_range(1001, r, world);
                assert_eq!(lo, next);
                next = hi;
            }
            assert_eq!(next, 1001);
        }
    }

    #[test]
    fn round_trip_resliced_for_another_world_size_and_retention() {
        let root = temp("rt");
        let b = bufs(1001, 0.001);
        save(&root, 10, 3, &b, 0.5);
        save(&root, 20, 3, &b, 0.1);
        save(&root, 30, 3, &b, 0.4);
        let dir = save(&root, 40, 2, &bufs(1001, 0.002), 0.9);
        // keep last 2 (30, 40) + best (20).
        let steps: Vec<u64> = list_committed(&root).into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [20, 30, 40]);
        let (found, m) = resolve(&root, &Resume::Auto).unwrap().unwrap();
        assert_eq!(found, dir);
        assert_eq!(m.step, 40);
        assert_eq!(load_buffers(&found, &m).unwrap(), bufs(1001, 0.002));
        assert_eq!(read_rank_state(&found, 1).unwrap().rng_seed, 8);
        assert!(!root.join("step-00040000.tmp-a0").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_corrupt_latest_falls_back_to_the_previous_valid_one() {
        let root = temp("corrupt");
        let b = bufs(100, 1.0);
        save(&root, 1, 2, &b, 0.5);
        let newest = save(&root, 2, 2, &b, 0.5);
        // Flip one byte in the middle of a shard.
        let shard = newest.join(shard_name(1, 2));
        let mut bytes = std::fs::read(&shard).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&shard, bytes).unwrap();
        let err = verify(&newest).unwrap_err().to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains("shard-00001-of-00002.h5"),
            "{err}"
        );
        let (found, m) = resolve(&root, &Resume::Auto).unwrap().unwrap();
        assert_eq!((found, m.step), (root.join("step-00000001"), 1));
        // An explicit path to the corrupt one is an error, with exit code 5.
        let e = resolve(&root, &Resume::Path(newest.clone())).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::DATA);
        // Truncation and a missing manifest are caught too.
        std::fs::write(newest.join(shard_name(0, 2)), b"x").unwrap();
        assert!(verify(&newest)
            .unwrap_err()
            .to_string()
            .contains("bytes, expected"));
        std::fs::remove_file(newest.join(MANIFEST)).unwrap();
        assert!(verify(&newest).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_uncommitted_directory_is_never_resumed_and_is_cleaned() {
        let root = temp("tmp");
        let b = bufs(10, 1.0);
        let tmp = tmp_dir(&root, 5, 0);
        let st = RankState {
            rank: 0,
            rng_seed: 1,
            epoch: 0,
            batches_done: 5,
        };
        write_shard(&tmp, 0, 1, [&b[0], &b[1], &b[2]], &st).unwrap();
        assert!(resolve(&root, &Resume::Auto).unwrap().is_none());
        remove_stale_tmp(&root);
        assert!(!tmp.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A checkpoint whose `[model]` predates keys added later (absent there, default here) is
    /// the same model; a real difference is still refused naming the key.
    #[test]
    fn checkpoints_without_later_model_keys_are_the_same_model() {
        let cfg = convtt_common::config::parse("", None, &[] as &[&str]).unwrap();
        let mut old = toml::Table::try_from(&cfg.model).unwrap();
        for k in ["tt_filter_size", "ttd_order", "ttd_ranks"] {
            assert!(old.remove(k).is_some(), "{k}");
        }
        let mut m = manifest(1, 1, 1, 0.0);
        m.model = old.clone();
        m.model_hash = "written-before-the-new-keys".into();
        check_model(&cfg, Path::new("ckpt"), &m, "resume").unwrap();
        old.insert("rank".into(), toml::Value::Integer(4));
        m.model = old;
        let e = check_model(&cfg, Path::new("ckpt"), &m, "resume").unwrap_err();
        assert!(e.to_string().contains("model.rank: 4 → 8"), "{e}");
    }
}
