//! Reading a dataset directory: `dataset.toml` checked against its shard files, random access
//! to clips of a split, and `verify` (every clip and every checksum, every problem listed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use convtt_common::dataset::{DatasetManifest, ShardEntry, SplitManifest, MANIFEST_FILE};

use super::progress::Progress;
use super::shard::ShardReader;
use crate::{Error, Result};
use convtt_common::fsutil::sha256_io as sha256_file;

/// A dataset whose manifest agrees with its files (as far as headers and sizes tell; the
/// checksums are only checked by [`verify`]).
#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
    manifest: Arc<DatasetManifest>,
}

impl Dataset {
    /// Opens `root`, reads `dataset.toml` and checks every shard's presence, size, HDF5 header
    /// (dtype u8, shape, clip count) and attributes against it. All problems are reported in
    /// one error naming each file.
    pub fn open(root: &Path) -> Result<Self> {
        let manifest = DatasetManifest::load(root)?;
        let mut problems = Vec::new();
        for (split, s) in &manifest.splits {
            for entry in &s.shards {
                let path = root.join(&entry.path);
                match std::fs::metadata(&path) {
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                    Ok(m) if m.len() != entry.bytes => problems.push(format!(
                        "{}: {} bytes but dataset.toml says {} (truncated or replaced?)",
                        path.display(),
                        m.len(),
                        entry.bytes
                    )),
                    Ok(_) => match ShardReader::open(&path) {
                        Err(e) => problems.push(e.to_string()),
                        Ok(r) => problems.extend(
                            header_problems(&manifest, split, entry, &r)
                                .into_iter()
                                .map(|p| format!("{}: {p}", path.display())),
                        ),
                    },
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::Data {
                path: root.join(MANIFEST_FILE),
                msg: format!("does not match the files:\n  {}", problems.join("\n  ")),
            });
        }
        Ok(Self {
            root: root.to_owned(),
            manifest: Arc::new(manifest),
        })
    }

    /// The dataset directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The manifest.
    pub fn manifest(&self) -> &DatasetManifest {
        &self.manifest
    }

    /// A split by name (a usage error listing the available splits if there is none).
    pub fn split(&self, name: &str) -> Result<SplitHandle> {
        let s = self.manifest.splits.get(name).ok_or_else(|| {
            let have: Vec<&str> = self.manifest.splits.keys().map(String::as_str).collect();
            Error::Usage(format!(
                "{}: no split {name:?} (it has: {})",
                self.root.join(MANIFEST_FILE).display(),
                have.join(", ")
            ))
        })?;
        Ok(SplitHandle {
            root: self.root.clone(),
            name: name.to_owned(),
            clip_shape: self.manifest.clip_shape,
            clips: s.clips as usize,
            shards: Arc::new(s.shards.clone()),
        })
    }
}

fn header_problems(
    m: &DatasetManifest,
    split: &str,
    entry: &ShardEntry,
    r: &ShardReader,
) -> Vec<String> {
    let i = r.info();
    let mut p = Vec::new();
    if i.shape != m.clip_shape {
        p.push(format!(
            "clip shape {:?} but dataset.toml says {:?}",
            i.shape, m.clip_shape
        ));
    }
    if i.clips as u64 != entry.clips {
        p.push(format!(
            "{} clips but dataset.toml says {}",
            i.clips, entry.clips
        ));
    }
    if i.split != split {
        p.push(format!(
            "split attribute {:?} but it is listed under {split:?}",
            i.split
        ));
    }
    if i.first_index != entry.first_index {
        p.push(format!(
            "first_index attribute {} but dataset.toml says {}",
            i.first_index, entry.first_index
        ));
    }
    if i.format_version != m.format_version {
        p.push(format!("format_version attribute {}", i.format_version));
    }
    p
}

/// A shard's labels checked against a class count: `None` for an unlabelled dataset
/// (`classes` = 0) whose shard has none; a data error for a missing `labels` dataset in a
/// labelled one, a `labels` dataset in an unlabelled one, or a label out of range.
fn shard_labels(r: &ShardReader, classes: usize) -> Result<Option<Vec<i64>>> {
    let err = |msg: String| Error::Data {
        path: r.path().to_owned(),
        msg,
    };
    match (r.read_labels()?, classes) {
        (None, 0) => Ok(None),
        (None, n) => Err(err(format!(
            "no \"labels\" dataset, but dataset.toml lists {n} classes"
        ))),
        (Some(_), 0) => Err(err(
            "has a \"labels\" dataset but dataset.toml has no class list (classes = [...])".into(),
        )),
        (Some(v), n) => match v.iter().position(|&l| l < 0 || l >= n as i64) {
            Some(i) => Err(err(format!(
                "label {} of clip {} (shard-local) is outside the {n} classes 0 … {}",
                v[i],
                i,
                n - 1
            ))),
            None => Ok(Some(v)),
        },
    }
}

/// A split of an opened dataset: cheap to clone and to send to loader threads, each of which
/// makes its own [`SplitReader`] (HDF5 handles are opened in the thread that reads).
#[derive(Debug, Clone)]
pub struct SplitHandle {
    root: PathBuf,
    name: String,
    clip_shape: [usize; 4],
    clips: usize,
    shards: Arc<Vec<ShardEntry>>,
}

impl SplitHandle {
    /// Split name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Clips in the split.
    pub fn len(&self) -> usize {
        self.clips
    }

    /// True when the split has no clips.
    pub fn is_empty(&self) -> bool {
        self.clips == 0
    }

    /// `[T, C, H, W]`.
    pub fn clip_shape(&self) -> [usize; 4] {
        self.clip_shape
    }

    /// The class label of every clip of the split (a labelled dataset with `classes` classes).
    ///
    /// # Errors
    /// [`Error::Data`] naming the shard when one lacks its `labels` dataset or holds a label
    /// outside `0 … classes − 1`.
    pub fn labels(&self, classes: usize) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(self.clips);
        for entry in self.shards.iter() {
            let r = ShardReader::open(&self.root.join(&entry.path))?;
            out.extend(shard_labels(&r, classes)?.unwrap_or_default());
        }
        Ok(out)
    }

    /// A reader that opens shards lazily, read-only.
    pub fn reader(&self) -> SplitReader {
        SplitReader {
            handle: self.clone(),
            open: (0..self.shards.len()).map(|_| None).collect(),
        }
    }
}

/// Random access to the clips of one split.
#[derive(Debug)]
pub struct SplitReader {
    handle: SplitHandle,
    open: Vec<Option<ShardReader>>,
}

impl SplitReader {
    /// Clips in the split.
    pub fn len(&self) -> usize {
        self.handle.clips
    }

    /// True when the split has no clips.
    pub fn is_empty(&self) -> bool {
        self.handle.clips == 0
    }

    /// Reads clip `index` (split-wide) into `out` (`T·C·H·W` bytes). Errors name the shard
    /// file and the split-wide clip index.
    pub fn read_clip(&mut self, index: usize, out: &mut [u8]) -> Result<()> {
        let shards = &self.handle.shards;
        let k = shards
            .partition_point(|s| s.first_index <= index as u64)
            .saturating_sub(1);
        let entry = shards
            .get(k)
            .filter(|s| (index as u64) < s.first_index + s.clips);
        let Some(entry) = entry else {
            return Err(Error::Usage(format!(
                "clip {index} is beyond the {} clips of split {}",
                self.handle.clips, self.handle.name
            )));
        };
        if self.open[k].is_none() {
            self.open[k] = Some(ShardReader::open(&self.handle.root.join(&entry.path))?);
        }
        let r = self.open[k].as_ref().expect("just opened");
        let local = index - entry.first_index as usize;
        r.read_clip(local, out).map_err(|e| match e {
            Error::Data { path, msg } => Error::Data {
                path,
                msg: format!("{msg} (clip {index} of split {})", self.handle.name),
            },
            e => e,
        })
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Every problem found, each naming its file (and clip).
    pub problems: Vec<String>,
    /// Shards looked at.
    pub shards: usize,
    /// Clips read successfully.
    pub clips: u64,
    /// Bytes hashed.
    pub bytes: u64,
}

/// At most this many failing clips are listed per shard (then a count).
const CLIP_PROBLEMS_PER_SHARD: usize = 5;

/// Checks a dataset completely: the manifest, every shard's presence, size and SHA-256, its
/// header, and every clip's readability; also files in split directories that the manifest
/// does not list. Collects every problem instead of stopping at the first.
pub fn verify(root: &Path) -> VerifyReport {
    let mut rep = VerifyReport::default();
    let manifest = match DatasetManifest::load(root) {
        Ok(m) => m,
        Err(e) => {
            rep.problems.push(e.to_string());
            return rep;
        }
    };
    let total: u64 = manifest.splits.values().map(|s| s.clips).sum();
    let mut progress = Progress::new("verify", total);
    let mut buf = vec![0u8; manifest.clip_len()];
    for (split, s) in &manifest.splits {
        for entry in &s.shards {
            rep.shards += 1;
            let before = rep.clips;
            verify_shard(
                &mut rep,
                root,
                &manifest,
                split,
                entry,
                &mut buf,
                &mut progress,
            );
            // Clips not read (an unreadable shard, a wrong shape) still count as checked.
            let read = rep.clips - before;
            progress.inc(entry.clips.saturating_sub(read));
        }
        rep.problems.extend(unlisted_files(root, split, s));
    }
    progress.finish();
    rep
}

/// One shard of [`verify`]: its size and SHA-256 against the manifest, its header, its labels and
/// every clip's readability. Counts read clips into `rep` and on `progress`.
fn verify_shard(
    rep: &mut VerifyReport,
    root: &Path,
    manifest: &DatasetManifest,
    split: &str,
    entry: &ShardEntry,
    buf: &mut [u8],
    progress: &mut Progress,
) {
    let path = root.join(&entry.path);
    let shown = path.display();
    match sha256_file(&path) {
        Err(e) => {
            rep.problems.push(format!("{shown}: {e}"));
            return;
        }
        Ok((sha, bytes)) => {
            rep.bytes += bytes;
            if bytes != entry.bytes {
                rep.problems.push(format!(
                    "{shown}: {bytes} bytes but dataset.toml says {} (truncated or replaced?)",
                    entry.bytes
                ));
            }
            if sha != entry.sha256 {
                rep.problems.push(format!(
                    "{shown}: sha256 mismatch: file has {sha}, dataset.toml says {}",
                    entry.sha256
                ));
            }
        }
    }
    let r = match ShardReader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            rep.problems.push(e.to_string());
            return;
        }
    };
    rep.problems.extend(
        header_problems(manifest, split, entry, &r)
            .into_iter()
            .map(|p| format!("{shown}: {p}")),
    );
    if let Err(e) = shard_labels(&r, manifest.classes.len()) {
        rep.problems.push(e.to_string());
    }
    if r.info().shape != manifest.clip_shape {
        return;
    }
    let mut failed = 0usize;
    for i in 0..r.info().clips {
        match r.read_clip(i, buf) {
            Ok(()) => {
                rep.clips += 1;
                progress.inc(1);
            }
            Err(e) => {
                failed += 1;
                if failed <= CLIP_PROBLEMS_PER_SHARD {
                    rep.problems.push(format!(
                        "{e} (clip {} of split {split})",
                        entry.first_index as usize + i
                    ));
                }
            }
        }
    }
    if failed > CLIP_PROBLEMS_PER_SHARD {
        rep.problems.push(format!(
            "{shown}: {} more clips cannot be read",
            failed - CLIP_PROBLEMS_PER_SHARD
        ));
    }
}

/// Files in the split directory that dataset.toml does not list, as problems.
fn unlisted_files(root: &Path, split: &str, s: &SplitManifest) -> Vec<String> {
    let listed: std::collections::BTreeSet<PathBuf> =
        s.shards.iter().map(|e| root.join(&e.path)).collect();
    let Ok(dir) = std::fs::read_dir(root.join(split)) else {
        return Vec::new();
    };
    let mut extra: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !listed.contains(p))
        .collect();
    extra.sort();
    extra
        .iter()
        .map(|p| format!("{}: not listed in dataset.toml", p.display()))
        .collect()
}
