//! Writing a dataset directory atomically (ARCHITECTURE §4).
//!
//! Shards go to a sibling temporary directory `<out>.tmp-<nonce>`; `dataset.toml` is written
//! last inside it (temporary file, fsync, rename), then the directory is renamed to `<out>`. An
//! existing dataset is never touched without `force`; with it, the new dataset is complete
//! before the old one is moved aside and deleted. A writer dropped before [`DatasetWriter::finish`]
//! (an error, a panic) deletes its temporary directory, so no partial dataset ever looks complete
//! and nothing previously written is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use convtt_common::dataset::{
    self, valid_split_name, DatasetKind, DatasetManifest, ShardEntry, SplitManifest,
    FORMAT_VERSION, MANIFEST_FILE,
};

use super::progress::Progress;
use super::shard::ShardWriter;
use crate::{Error, Result};

/// What a new dataset is.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    /// Human-readable name.
    pub name: String,
    /// What produced the clips.
    pub kind: DatasetKind,
    /// `[T, C, H, W]`.
    pub clip_shape: [usize; 4],
    /// Free text for `dataset.toml`.
    pub description: String,
    /// Provenance (generator, seed, inputs).
    pub source: BTreeMap<String, String>,
}

/// Writes a dataset split by split; see the module docs.
#[derive(Debug)]
pub struct DatasetWriter {
    out: PathBuf,
    tmp: PathBuf,
    spec: DatasetSpec,
    shard_clips: usize,
    splits: BTreeMap<String, SplitManifest>,
    bytes: u64,
    finished: bool,
    classes: Vec<String>,
    groups: BTreeMap<String, String>,
}

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{t:08x}", std::process::id())
}

impl DatasetWriter {
    /// Prepares to write a dataset at `out` with `shard_clips` clips per shard.
    ///
    /// Refuses (usage error) when `out` exists and `force` is false, and — even with `force` —
    /// when `out` is something other than a dataset directory or an empty directory.
    pub fn create(out: &Path, spec: DatasetSpec, shard_clips: usize, force: bool) -> Result<Self> {
        if shard_clips == 0 {
            return Err(Error::Usage("--shard-clips must be at least 1".into()));
        }
        if spec.clip_shape.contains(&0) {
            return Err(Error::Usage(format!(
                "clip shape {:?} has a zero dimension",
                spec.clip_shape
            )));
        }
        if out.exists() {
            if !force {
                return Err(Error::Usage(format!(
                    "{} already exists; pass --force to replace it (the new dataset is built \
                     completely before the old one is removed)",
                    out.display()
                )));
            }
            let is_dataset = out.join(MANIFEST_FILE).is_file();
            let is_empty_dir = out.is_dir()
                && std::fs::read_dir(out)
                    .map_err(|e| Error::io(out, e))?
                    .next()
                    .is_none();
            if !is_dataset && !is_empty_dir {
                return Err(Error::Usage(format!(
                    "{} exists and is not a dataset directory (no {MANIFEST_FILE}); refusing to \
                     replace it even with --force",
                    out.display()
                )));
            }
        }
        let name = out
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a directory name", out.display())))?
            .to_string_lossy()
            .into_owned();
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let tmp = parent.join(format!("{name}.tmp-{}", nonce()));
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        tracing::debug!("writing {} via {}", out.display(), tmp.display());
        Ok(Self {
            out: out.to_owned(),
            tmp,
            spec,
            shard_clips,
            splits: BTreeMap::new(),
            bytes: 0,
            finished: false,
            classes: Vec::new(),
            groups: BTreeMap::new(),
        })
    }

    /// Bytes of one clip.
    pub fn clip_len(&self) -> usize {
        self.spec.clip_shape.iter().product()
    }

    /// Makes this a labelled dataset with these classes (label k = `classes[k]`) and optional
    /// class → group map; call before writing splits with [`Self::write_labelled_split`].
    pub fn set_classes(
        &mut self,
        classes: Vec<String>,
        groups: BTreeMap<String, String>,
    ) -> Result<()> {
        let probe = DatasetManifest {
            format_version: FORMAT_VERSION,
            name: String::new(),
            kind: self.spec.kind,
            clip_shape: self.spec.clip_shape,
            dtype: dataset::DTYPE_U8.into(),
            value_range: [0, 255],
            description: String::new(),
            source: BTreeMap::new(),
            splits: BTreeMap::from([("x".into(), SplitManifest::default())]),
            classes,
            groups,
        };
        let problems = probe.problems();
        if !problems.is_empty() {
            return Err(Error::Usage(format!(
                "bad class list: {}",
                problems.join("; ")
            )));
        }
        self.classes = probe.classes;
        self.groups = probe.groups;
        Ok(())
    }

    /// Like [`Self::write_split`] for a labelled dataset: `labels[i]` is clip i's class index
    /// (each must be below the number of classes set with [`Self::set_classes`]).
    pub fn write_labelled_split(
        &mut self,
        split: &str,
        labels: &[i64],
        fill: impl FnMut(usize, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let n = self.classes.len() as i64;
        if n == 0 {
            return Err(Error::Usage(
                "a labelled split needs a class list (set_classes)".into(),
            ));
        }
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l >= n) {
            return Err(Error::Usage(format!(
                "split {split}: clip {i} has label {l}, outside the {n} classes 0 … {}",
                n - 1
            )));
        }
        self.write_split_inner(split, labels.len(), fill, Some(labels))
    }

    /// Writes split `split` of `clips` clips; `fill(i, buf)` produces clip `i` (split-wide
    /// index) into `buf`. A split of 0 clips is skipped.
    pub fn write_split(
        &mut self,
        split: &str,
        clips: usize,
        fill: impl FnMut(usize, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        if !self.classes.is_empty() {
            return Err(Error::Usage(format!(
                "split {split}: this dataset is labelled; write it with write_labelled_split"
            )));
        }
        self.write_split_inner(split, clips, fill, None)
    }

    fn write_split_inner(
        &mut self,
        split: &str,
        clips: usize,
        mut fill: impl FnMut(usize, &mut [u8]) -> Result<()>,
        labels: Option<&[i64]>,
    ) -> Result<()> {
        if !valid_split_name(split) {
            return Err(Error::Usage(format!(
                "split name {split:?} must be letters, digits, '-' or '_'"
            )));
        }
        if self.splits.contains_key(split) {
            return Err(Error::Usage(format!("split {split:?} given twice")));
        }
        if clips == 0 {
            tracing::info!("split {split}: 0 clips, skipped");
            return Ok(());
        }
        let dir = self.tmp.join(split);
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut buf = vec![0u8; self.clip_len()];
        let mut shards = Vec::new();
        let mut progress = Progress::new(split.to_string(), clips as u64);
        for (k, first) in (0..clips).step_by(self.shard_clips).enumerate() {
            let n = self.shard_clips.min(clips - first);
            let rel = format!("{split}/shard-{k:05}.h5");
            let path = self.tmp.join(&rel);
            let mut w = ShardWriter::create(&path, n, self.spec.clip_shape, split, first as u64)?;
            for i in first..first + n {
                fill(i, &mut buf)?;
                w.write_clip(&buf)?;
                progress.inc(1);
            }
            if let Some(l) = labels {
                w.write_labels(&l[first..first + n])?;
            }
            w.finish()?;
            let (sha256, bytes) =
                convtt_common::fsutil::sha256_io(&path).map_err(|e| Error::io(&path, e))?;
            self.bytes += bytes;
            shards.push(ShardEntry {
                path: rel,
                first_index: first as u64,
                clips: n as u64,
                bytes,
                sha256,
            });
        }
        let took = progress.finish();
        tracing::info!(
            "split {split}: {clips} clips in {} shard(s), {:.1} s",
            shards.len(),
            took.as_secs_f64()
        );
        self.splits.insert(
            split.to_owned(),
            SplitManifest {
                clips: clips as u64,
                shards,
            },
        );
        Ok(())
    }

    /// Writes `dataset.toml` and moves the dataset into place (replacing an old one when
    /// `force` was given). Returns the manifest and the total shard bytes.
    pub fn finish(mut self) -> Result<(DatasetManifest, u64)> {
        if self.splits.is_empty() {
            return Err(Error::Usage(
                "nothing to write: every split has 0 clips".into(),
            ));
        }
        let manifest = DatasetManifest {
            format_version: FORMAT_VERSION,
            name: self.spec.name.clone(),
            kind: self.spec.kind,
            clip_shape: self.spec.clip_shape,
            dtype: dataset::DTYPE_U8.into(),
            value_range: [0, 255],
            description: self.spec.description.clone(),
            source: self.spec.source.clone(),
            splits: std::mem::take(&mut self.splits),
            classes: self.classes.clone(),
            groups: self.groups.clone(),
        };
        debug_assert!(manifest.problems().is_empty(), "{:?}", manifest.problems());
        manifest.write(&self.tmp)?;
        for split in manifest.splits.keys() {
            let d = self.tmp.join(split);
            convtt_common::fsutil::sync_dir(&d).map_err(|e| Error::io(&d, e))?;
        }
        let parent = self.tmp.parent().expect("tmp has a parent").to_owned();
        if self.out.exists() {
            let old = parent.join(format!(
                "{}.old-{}",
                self.out.file_name().expect("checked").to_string_lossy(),
                nonce()
            ));
            std::fs::rename(&self.out, &old).map_err(|e| Error::io(&self.out, e))?;
            if let Err(e) = std::fs::rename(&self.tmp, &self.out) {
                // Put the old dataset back; the new one stays in tmp and is dropped below.
                let _ = std::fs::rename(&old, &self.out);
                return Err(Error::io(&self.out, e));
            }
            self.finished = true;
            convtt_common::fsutil::sync_dir(&parent).map_err(|e| Error::io(&parent, e))?;
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(
                    "could not delete the replaced dataset {}: {e}",
                    old.display()
                );
            }
        } else {
            std::fs::rename(&self.tmp, &self.out).map_err(|e| Error::io(&self.out, e))?;
            self.finished = true;
            convtt_common::fsutil::sync_dir(&parent).map_err(|e| Error::io(&parent, e))?;
        }
        Ok((manifest, self.bytes))
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        if !self.finished && self.tmp.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.tmp) {
                tracing::warn!("could not delete {}: {e}", self.tmp.display());
            }
        }
    }
}
