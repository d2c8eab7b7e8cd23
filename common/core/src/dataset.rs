//! The dataset manifest `<dataset>/dataset.toml` (ARCHITECTURE §4), readable without HDF5 so the
//! launcher can check a dataset before it requests nodes.
//!
//! ```toml
//! format_version = 1
//! name = "moving-mnist"
//! kind = "moving-mnist"          # moving-mnist | kth | frames
//! clip_shape = [20, 1, 64, 64]   # [T, C, H, W]
//! dtype = "u8"
//! value_range = [0, 255]         # stored values; readers divide by 255 → [0, 1]
//! description = "…"
//!
//! [source]                       # free-form provenance (generator, seed, input files)
//! seed = "1"
//!
//! [splits.train]
//! clips = 10000
//!
//! [[splits.train.shards]]
//! path = "train/shard-00000.h5"  # relative to the dataset directory
//! first_index = 0                # split-wide index of the shard's first clip
//! clips = 1000
//! bytes = 1234567
//! sha256 = "…"
//! ```
//!
//! Each shard holds one HDF5 dataset [`CLIPS_DATASET`] of `u8 [n, T, C, H, W]`, chunked one clip
//! per chunk and deflate-compressed, with attributes `format_version`, `split` and
//! `first_index`. The HDF5 side lives in the worker (`convtt_worker::data`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest inside a dataset directory.
pub const MANIFEST_FILE: &str = "dataset.toml";
/// Name of the HDF5 dataset inside every shard.
pub const CLIPS_DATASET: &str = "clips";
/// Name of the optional per-clip label dataset (`i64 [n]`, indices into `classes`) of a
/// labelled dataset's shards.
pub const LABELS_DATASET: &str = "labels";
/// The only stored element type.
pub const DTYPE_U8: &str = "u8";

/// What produced the clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Moving-MNIST (generated, or imported from `.npy`/`.npz`).
    MovingMnist,
    /// KTH actions (imported frame folders).
    Kth,
    /// Any other frame folders or arrays.
    Frames,
}

impl DatasetKind {
    /// The name used in `dataset.toml` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::MovingMnist => "moving-mnist",
            DatasetKind::Kth => "kth",
            DatasetKind::Frames => "frames",
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "moving-mnist" => Ok(DatasetKind::MovingMnist),
            "kth" => Ok(DatasetKind::Kth),
            "frames" => Ok(DatasetKind::Frames),
            _ => Err(format!(
                "unknown dataset kind {s:?} (moving-mnist, kth or frames)"
            )),
        }
    }
}

/// One shard file of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// Path relative to the dataset directory, e.g. `train/shard-00000.h5`.
    pub path: String,
    /// Split-wide index of the shard's first clip.
    pub first_index: u64,
    /// Clips in the shard.
    pub clips: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
}

/// One split (`train`, `valid`, `test`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitManifest {
    /// Clips in the split (the sum over its shards).
    pub clips: u64,
    /// Shards in index order.
    pub shards: Vec<ShardEntry>,
}

/// The content of `dataset.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Human-readable name.
    pub name: String,
    /// What produced the clips.
    pub kind: DatasetKind,
    /// `[T, C, H, W]` of every clip.
    pub clip_shape: [usize; 4],
    /// Stored element type; always `"u8"`.
    pub dtype: String,
    /// Range of the stored values; always `[0, 255]` (readers scale to `[0, 1]`).
    pub value_range: [u32; 2],
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Provenance: generator, seed, input files, … (strings only).
    #[serde(default)]
    pub source: BTreeMap<String, String>,
    /// The splits by name.
    pub splits: BTreeMap<String, SplitManifest>,
    /// Class names of a labelled dataset, in label order (label `k` is `classes[k]`); empty
    /// for an unlabelled one. Every shard of a labelled dataset holds [`LABELS_DATASET`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Optional class → activity-group map (e.g. Something-Something's 41 classes into 10
    /// groups) for per-group accuracy; classes not listed form their own group.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, String>,
}

impl DatasetManifest {
    /// Elements (bytes) of one clip.
    pub fn clip_len(&self) -> usize {
        self.clip_shape.iter().product()
    }

    /// Reads and checks `<dir>/dataset.toml`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let m: DatasetManifest = toml::from_str(&text).map_err(|e| {
            Error::format(
                &path,
                format!("not a valid dataset manifest: {}", e.message()),
            )
        })?;
        let problems = m.problems();
        if !problems.is_empty() {
            return Err(Error::format(&path, problems.join("; ")));
        }
        Ok(m)
    }

    /// Every internal inconsistency of the manifest (empty when it is sound). Files are not
    /// looked at.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.format_version != FORMAT_VERSION {
            p.push(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.dtype != DTYPE_U8 {
            p.push(format!(
                "dtype {:?} is not supported (only \"u8\")",
                self.dtype
            ));
        }
        if self.value_range != [0, 255] {
            p.push(format!(
                "value_range {:?} is not supported (only [0, 255])",
                self.value_range
            ));
        }
        if self.clip_shape.contains(&0) {
            p.push(format!(
                "clip_shape {:?} has a zero dimension",
                self.clip_shape
            ));
        }
        if self.splits.is_empty() {
            p.push("no splits".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (name, split) in &self.splits {
            if !valid_split_name(name) {
                p.push(format!(
                    "split name {name:?} must be letters, digits, '-' or '_'"
                ));
            }
            let mut next = 0u64;
            for (k, s) in split.shards.iter().enumerate() {
                let at = format!("splits.{name}.shards[{k}] ({})", s.path);
                if !is_safe_relative(&s.path) {
                    p.push(format!(
                        "{at}: path must be relative and stay inside the dataset"
                    ));
                }
                if !seen.insert(s.path.clone()) {
                    p.push(format!("{at}: listed twice"));
                }
                if s.first_index != next {
                    p.push(format!(
                        "{at}: first_index is {} but should be {next}",
                        s.first_index
                    ));
                }
                if s.clips == 0 {
                    p.push(format!("{at}: holds no clips"));
                }
                if s.sha256.len() != 64 || !s.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    p.push(format!("{at}: sha256 is not 64 hex digits"));
                }
                next = s.first_index.max(next) + s.clips;
            }
            let sum: u64 = split.shards.iter().map(|s| s.clips).sum();
            if sum != split.clips {
                p.push(format!(
                    "splits.{name}: clips = {} but its shards hold {sum}",
                    split.clips
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (k, c) in self.classes.iter().enumerate() {
            if c.trim().is_empty() {
                p.push(format!("classes[{k}] is empty"));
            } else if !names.insert(c.as_str()) {
                p.push(format!("classes[{k}] {c:?} is listed twice"));
            }
        }
        for class in self.groups.keys() {
            if !names.contains(class.as_str()) {
                p.push(format!("groups: class {class:?} is not in the class list"));
            }
        }
        p
    }

    /// True when the clips carry class labels.
    pub fn is_labelled(&self) -> bool {
        !self.classes.is_empty()
    }

    /// The group of class `k` (its own name when the map does not list it).
    pub fn group_of(&self, k: usize) -> &str {
        let c = self.classes[k].as_str();
        self.groups.get(c).map_or(c, String::as_str)
    }

    /// The group names in first-appearance order of the classes.
    pub fn group_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for k in 0..self.classes.len() {
            let g = self.group_of(k);
            if !out.iter().any(|x| x == g) {
                out.push(g.to_owned());
            }
        }
        out
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a dataset manifest always serialises")
    }

    /// Writes `<dir>/dataset.toml` atomically (temporary file, fsync, rename, fsync of `dir`).
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(MANIFEST_FILE);
        crate::fsutil::write_atomic(&path, self.to_toml().as_bytes())?;
        Ok(path)
    }
}

/// True for names of letters, digits, `-` and `_` (split names become directory names).
pub fn valid_split_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> DatasetManifest {
        let shard = |path: &str, first_index, clips| ShardEntry {
            path: path.into(),
            first_index,
            clips,
            bytes: 10,
            sha256: "ab".repeat(32),
        };
        DatasetManifest {
            format_version: FORMAT_VERSION,
            name: "t".into(),
            kind: DatasetKind::MovingMnist,
            clip_shape: [4, 1, 8, 8],
            dtype: "u8".into(),
            value_range: [0, 255],
            description: String::new(),
            source: BTreeMap::from([("seed".into(), "3".into())]),
            splits: BTreeMap::from([(
                "train".into(),
                SplitManifest {
                    clips: 5,
                    shards: vec![
                        shard("train/shard-00000.h5", 0, 3),
                        shard("train/shard-00001.h5", 3, 2),
                    ],
                },
            )]),
            classes: Vec::new(),
            groups: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let m = manifest();
        assert!(m.problems().is_empty(), "{:?}", m.problems());
        let text = m.to_toml();
        assert!(text.contains("[[splits.train.shards]]"), "{text}");
        let back: DatasetManifest = toml::from_str(&text).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn labelled_manifest_round_trips_and_checks_its_classes() {
        let mut m = manifest();
        m.classes = vec!["up".into(), "down".into(), "left".into()];
        m.groups = BTreeMap::from([
            ("up".into(), "vertical".into()),
            ("down".into(), "vertical".into()),
        ]);
        assert!(m.problems().is_empty(), "{:?}", m.problems());
        let back: DatasetManifest = toml::from_str(&m.to_toml()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.group_names(), ["vertical", "left"]);
        assert_eq!(m.group_of(2), "left");
        // An unlabelled manifest writes neither key (older readers stay happy).
        assert!(!manifest().to_toml().contains("classes"));
        m.classes.push("up".into());
        m.groups.insert("sideways".into(), "x".into());
        let p = m.problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("listed twice") && p[1].contains("\"sideways\""));
    }

    #[test]
    fn lists_every_inconsistency() {
        let mut m = manifest();
        m.dtype = "f32".into();
        m.clip_shape[2] = 0;
        let split = m.splits.get_mut("train").unwrap();
        split.clips = 9;
        split.shards[1].first_index = 7;
        split.shards[1].path = "../escape.h5".into();
        let p = m.problems();
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(p.iter().any(|s| s.contains("dtype")));
        assert!(p
            .iter()
            .any(|s| s.contains("clips = 9 but its shards hold 5")));
        assert!(p
            .iter()
            .any(|s| s.contains("first_index is 7 but should be 3")));
        assert!(p.iter().any(|s| s.contains("inside the dataset")));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("convtt-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = manifest();
        m.write(&dir).unwrap();
        m.write(&dir).unwrap();
        assert_eq!(DatasetManifest::load(&dir).unwrap(), m);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(MANIFEST_FILE)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
