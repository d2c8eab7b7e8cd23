//! One HDF5 shard: dataset `clips` of `u8 [n, T, C, H, W]`, chunked one clip per chunk,
//! deflate-compressed, with attributes `format_version`, `split` and `first_index`
//! (ARCHITECTURE §4).
//!
//! Files are written without object timestamps, so the same clips give byte-identical files.
//! Every error names the file and, when one is involved, the clip index.

use std::path::{Path, PathBuf};
use std::sync::Once;

use convtt_common::dataset::{CLIPS_DATASET, FORMAT_VERSION, LABELS_DATASET};
use hdf5::types::{IntSize, TypeDescriptor, VarLenUnicode};

use crate::{Error, Result};

/// Deflate level of new shards (4: close to the size of level 9 for sparse Moving-MNIST frames
/// at a fraction of the time).
pub const DEFLATE_LEVEL: u8 = 4;

/// Sets `HDF5_USE_FILE_LOCKING=FALSE` unless the user set it, once per process, before the
/// first HDF5 call. Shards are only read by training, and POSIX locks fail or hang on some
/// parallel file systems (research/spike.md §2).
pub fn init_hdf5_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
            // Edition 2021: set_var is safe; binaries call this at the top of `main` (one
            // thread), library readers call it again as a no-op.
            std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
        }
    });
}

fn data_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.to_owned(),
        msg: msg.to_string(),
    }
}

/// Writes one shard clip by clip.
#[derive(Debug)]
pub struct ShardWriter {
    path: PathBuf,
    file: hdf5::File,
    ds: hdf5::Dataset,
    clips: usize,
    shape: [usize; 4],
    written: usize,
}

impl ShardWriter {
    /// Creates `path` (which must not exist) for `clips` clips of `shape = [T, C, H, W]`.
    pub fn create(
        path: &Path,
        clips: usize,
        shape: [usize; 4],
        split: &str,
        first_index: u64,
    ) -> Result<Self> {
        init_hdf5_env();
        let err = |e: hdf5::Error| Error::Io {
            path: path.to_owned(),
            err: std::io::Error::other(format!("cannot create HDF5 shard: {e}")),
        };
        let [t, c, h, w] = shape;
        let file = hdf5::File::with_options()
            .with_fcpl(|p| p.obj_track_times(false))
            .create_excl(path)
            .map_err(err)?;
        let ds = file
            .new_dataset::<u8>()
            .chunk((1, t, c, h, w))
            .deflate(DEFLATE_LEVEL)
            .obj_track_times(false)
            .shape((clips, t, c, h, w))
            .create(CLIPS_DATASET)
            .map_err(err)?;
        let attrs = || -> hdf5::Result<()> {
            ds.new_attr::<u32>()
                .shape(())
                .create("format_version")?
                .write_scalar(&FORMAT_VERSION)?;
            let split: VarLenUnicode = split.parse().map_err(|e| format!("split name: {e}"))?;
            ds.new_attr::<VarLenUnicode>()
                .shape(())
                .create("split")?
                .write_scalar(&split)?;
            ds.new_attr::<u64>()
                .shape(())
                .create("first_index")?
                .write_scalar(&first_index)?;
            Ok(())
        };
        attrs().map_err(err)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            ds,
            clips,
            shape,
            written: 0,
        })
    }

    /// Appends the next clip (`T·C·H·W` bytes, row-major).
    pub fn write_clip(&mut self, clip: &[u8]) -> Result<()> {
        let i = self.written;
        assert!(i < self.clips, "shard {} is full", self.path.display());
        let view = ndarray::ArrayView4::from_shape(self.shape, clip)
            .expect("clip buffer has the clip shape");
        self.ds
            .write_slice(view, ndarray::s![i, .., .., .., ..])
            .map_err(|e| Error::Io {
                path: self.path.clone(),
                err: std::io::Error::other(format!("writing clip {i}: {e}")),
            })?;
        self.written += 1;
        Ok(())
    }

    /// Writes the shard's per-clip class labels (dataset `labels`, `i64 [n]`, one per clip in
    /// clip order) of a labelled dataset.
    pub fn write_labels(&mut self, labels: &[i64]) -> Result<()> {
        assert_eq!(labels.len(), self.clips, "one label per clip");
        let err = |e: hdf5::Error| Error::Io {
            path: self.path.clone(),
            err: std::io::Error::other(format!("writing labels: {e}")),
        };
        self.file
            .new_dataset::<i64>()
            .obj_track_times(false)
            .shape(labels.len())
            .create(LABELS_DATASET)
            .and_then(|d| d.write(labels))
            .map_err(err)
    }

    /// Flushes and closes the file; all clips must have been written.
    pub fn finish(self) -> Result<PathBuf> {
        assert_eq!(
            self.written,
            self.clips,
            "shard {} is incomplete",
            self.path.display()
        );
        drop(self.ds);
        self.file.close().map_err(|e| Error::Io {
            path: self.path.clone(),
            err: std::io::Error::other(format!("closing: {e}")),
        })?;
        Ok(self.path)
    }
}

/// What a shard says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Clips in the shard.
    pub clips: usize,
    /// `[T, C, H, W]`.
    pub shape: [usize; 4],
    /// `format_version` attribute.
    pub format_version: u32,
    /// `split` attribute.
    pub split: String,
    /// `first_index` attribute.
    pub first_index: u64,
}

/// A shard opened read-only.
#[derive(Debug)]
pub struct ShardReader {
    path: PathBuf,
    ds: hdf5::Dataset,
    info: ShardInfo,
    // Keeps the file open for `ds` (HDF5 would keep it anyway; explicit is clearer).
    _file: hdf5::File,
}

impl ShardReader {
    /// Opens `path` read-only and checks that it holds a `u8` dataset `clips` of rank 5 with
    /// the format attributes.
    pub fn open(path: &Path) -> Result<Self> {
        init_hdf5_env();
        if !path.is_file() {
            return Err(data_err(path, "shard file is missing"));
        }
        let file = hdf5::File::open(path)
            .map_err(|e| data_err(path, format!("not a readable HDF5 file (truncated?): {e}")))?;
        let ds = file
            .dataset(CLIPS_DATASET)
            .map_err(|e| data_err(path, format!("no dataset {CLIPS_DATASET:?}: {e}")))?;
        let dtype = ds
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(|e| data_err(path, e))?;
        if dtype != TypeDescriptor::Unsigned(IntSize::U1) {
            return Err(data_err(
                path,
                format!("dataset \"clips\" has dtype {dtype}, expected u8"),
            ));
        }
        let dims = ds.shape();
        let shape: [usize; 4] = match dims[..] {
            [_, t, c, h, w] => [t, c, h, w],
            _ => {
                return Err(data_err(
                    path,
                    format!("dataset \"clips\" has shape {dims:?}, expected [n, T, C, H, W]"),
                ))
            }
        };
        let attr = |name: &str| {
            ds.attr(name)
                .map_err(|e| data_err(path, format!("attribute {name:?} missing: {e}")))
        };
        let bad_attr =
            |name: &str, e: hdf5::Error| data_err(path, format!("attribute {name:?}: {e}"));
        let info = ShardInfo {
            clips: dims[0],
            shape,
            format_version: attr("format_version")?
                .read_scalar::<u32>()
                .map_err(|e| bad_attr("format_version", e))?,
            split: attr("split")?
                .read_scalar::<VarLenUnicode>()
                .map_err(|e| bad_attr("split", e))?
                .to_string(),
            first_index: attr("first_index")?
                .read_scalar::<u64>()
                .map_err(|e| bad_attr("first_index", e))?,
        };
        Ok(Self {
            path: path.to_owned(),
            ds,
            info,
            _file: file,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file says about itself.
    pub fn info(&self) -> &ShardInfo {
        &self.info
    }

    /// The shard's labels (dataset `labels`, `i64 [n]`), or `None` when it has none.
    pub fn read_labels(&self) -> Result<Option<Vec<i64>>> {
        let Ok(ds) = self._file.dataset(LABELS_DATASET) else {
            return Ok(None);
        };
        let v: Vec<i64> = ds
            .read_raw()
            .map_err(|e| data_err(&self.path, format!("dataset {LABELS_DATASET:?}: {e}")))?;
        if v.len() != self.info.clips {
            return Err(data_err(
                &self.path,
                format!(
                    "dataset {LABELS_DATASET:?} holds {} labels for {} clips",
                    v.len(),
                    self.info.clips
                ),
            ));
        }
        Ok(Some(v))
    }

    /// Reads clip `i` (shard-local) into `out` (`T·C·H·W` bytes).
    pub fn read_clip(&self, i: usize, out: &mut [u8]) -> Result<()> {
        if i >= self.info.clips {
            return Err(data_err(
                &self.path,
                format!(
                    "clip {i} is beyond the {} clips of the shard",
                    self.info.clips
                ),
            ));
        }
        let a: ndarray::Array4<u8> = self
            .ds
            .read_slice(ndarray::s![i, .., .., .., ..])
            .map_err(|e| data_err(&self.path, format!("clip {i} cannot be read: {e}")))?;
        let src = a.as_slice().expect("a freshly read array is contiguous");
        out.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_is_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let shape = [3, 1, 4, 5];
        let clip = |k: usize| (0..60).map(|i| (i * 7 + k * 31) as u8).collect::<Vec<u8>>();
        let write = |name: &str| {
            let path = dir.path().join(name);
            let mut w = ShardWriter::create(&path, 2, shape, "train", 10).unwrap();
            w.write_clip(&clip(0)).unwrap();
            w.write_clip(&clip(1)).unwrap();
            w.finish().unwrap()
        };
        let (a, b) = (write("a.h5"), write("b.h5"));
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "no timestamps"
        );
        let r = ShardReader::open(&a).unwrap();
        assert_eq!(
            r.info(),
            &ShardInfo {
                clips: 2,
                shape,
                format_version: 1,
                split: "train".into(),
                first_index: 10
            }
        );
        let mut out = vec![0u8; 60];
        r.read_clip(1, &mut out).unwrap();
        assert_eq!(out, clip(1));
        let e = r.read_clip(2, &mut out).unwrap_err().to_string();
        assert!(e.contains("a.h5") && e.contains("clip 2"), "{e}");
        // Creating over an existing file is refused.
        assert!(ShardWriter::create(&a, 1, shape, "train", 0).is_err());
    }

    #[test]
    fn wrong_dtype_and_missing_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f32.h5");
        let f = hdf5::File::create(&path).unwrap();
        f.new_dataset::<f32>()
            .shape((1, 1, 1, 2, 2))
            .create("clips")
            .unwrap();
        drop(f);
        let e = ShardReader::open(&path).unwrap_err().to_string();
        assert!(e.contains("f32.h5") && e.contains("expected u8"), "{e}");
        let e = ShardReader::open(&dir.path().join("nope.h5")).unwrap_err();
        assert!(
            e.to_string().contains("nope.h5: shard file is missing"),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::exit::DATA);
    }
}
