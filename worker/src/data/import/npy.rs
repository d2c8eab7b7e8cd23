//! `.npy` and `.npz` arrays as clip sources.
//!
//! `.npy` (NumPy format versions 1–3): magic `\x93NUMPY`, version, a little-endian header length,
//! then a Python-literal header dict `{'descr': '|u1', 'fortran_order': False, 'shape': (…), }`
//! and the raw C-order data. Files are read by offset, so the 819 MB `mnist_test_seq.npy`
//! (u8 `[20, 10000, 64, 64]`, time-major) is never loaded whole. A `.npz` is a zip of `.npy`
//! members (stored or deflated); its member is read into memory.
//!
//! Supported element types: u8 (`|u1`), f32 and f64 (little or big endian); floats in [0, 1]
//! are scaled by 255, floats in [0, 255] are rounded (decided by a scan of the whole array,
//! or forced with `--scale`).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Axis order of an array of clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[T, N, H, W]`, one channel (the standard `mnist_test_seq.npy`).
    Tnhw,
    /// `[N, T, H, W]`, one channel.
    Nthw,
    /// `[N, T, H, W, C]` (the reference's `.npz` files).
    Nthwc,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "TNHW" => Ok(Layout::Tnhw),
            "NTHW" => Ok(Layout::Nthw),
            "NTHWC" => Ok(Layout::Nthwc),
            _ => Err(format!("unknown layout {s:?} (TNHW, NTHW or NTHWC)")),
        }
    }
}

pub use convtt_core::npy::{parse_header, Dtype, NpyHeader};

/// Where the array's bytes are.
#[derive(Debug)]
enum Storage {
    File(File),
    Memory(Vec<u8>),
}

/// An array of clips, readable clip by clip as u8 `[T, C, H, W]`.
#[derive(Debug)]
pub struct ClipArray {
    path: PathBuf,
    header: NpyHeader,
    layout: Layout,
    storage: Storage,
    /// Multiplier applied to float values before rounding (255 for [0, 1] data, 1 for [0, 255]).
    scale: f64,
    /// `[T, C, H, W]`.
    pub clip_shape: [usize; 4],
    /// Number of clips.
    pub clips: usize,
}

/// How float values map to u8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Decide from the data: maximum ≤ 1 → ×255, else as is.
    Auto,
    /// Values are in [0, 1].
    Unit,
    /// Values are in [0, 255].
    Byte,
}

impl ClipArray {
    /// Opens a `.npy` file.
    pub fn open_npy(path: &Path, layout: Layout, scale: Scale) -> Result<Self> {
        let bad = |msg: String| Error::Data {
            path: path.to_owned(),
            msg,
        };
        let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let mut head = vec![0u8; 4096];
        let n = file.read_at(&mut head, 0).map_err(|e| bad(e.to_string()))?;
        head.truncate(n);
        let header = parse_header(&head).map_err(bad)?;
        let len = file.metadata().map_err(|e| bad(e.to_string()))?.len() as usize;
        Self::new(path, header, layout, Storage::File(file), len, scale)
    }

    /// Opens member `key` (`key.npy`) of a `.npz` file.
    pub fn open_npz(path: &Path, key: &str, layout: Layout, scale: Scale) -> Result<Self> {
        let bad = |msg: String| Error::Data {
            path: path.to_owned(),
            msg,
        };
        let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let mut zip =
            zip::ZipArchive::new(file).map_err(|e| bad(format!("not a valid .npz (zip): {e}")))?;
        let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
        let member = format!("{key}.npy");
        let mut entry = zip.by_name(&member).map_err(|_| {
            bad(format!(
                "no array {key:?} in the archive (it has: {})",
                names.join(", ")
            ))
        })?;
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("{member}: corrupt member: {e}")))?;
        let header = parse_header(&bytes).map_err(|m| bad(format!("{member}: {m}")))?;
        let len = bytes.len();
        Self::new(path, header, layout, Storage::Memory(bytes), len, scale)
    }

    fn new(
        path: &Path,
        header: NpyHeader,
        layout: Layout,
        storage: Storage,
        len: usize,
        scale: Scale,
    ) -> Result<Self> {
        let bad = |msg: String| Error::Data {
            path: path.to_owned(),
            msg,
        };
        let s = &header.shape;
        let (clips, clip_shape) = match (layout, s.len()) {
            (Layout::Tnhw, 4) => (s[1], [s[0], 1, s[2], s[3]]),
            (Layout::Nthw, 4) => (s[0], [s[1], 1, s[2], s[3]]),
            (Layout::Nthwc, 5) => (s[0], [s[1], s[4], s[2], s[3]]),
            // The reference's single-channel .npz may drop the channel axis.
            (Layout::Nthwc, 4) => (s[0], [s[1], 1, s[2], s[3]]),
            _ => {
                return Err(bad(format!(
                    "array of shape {s:?} does not fit layout {layout:?} (TNHW/NTHW: 4 axes, \
                     NTHWC: 5)"
                )))
            }
        };
        if clips == 0 || clip_shape.contains(&0) {
            return Err(bad(format!("array of shape {s:?} holds no clips")));
        }
        let need = header.data_offset + s.iter().product::<usize>() * header.dtype.size();
        if len < need {
            return Err(bad(format!(
                "truncated: {len} bytes, the header's shape {s:?} needs {need}"
            )));
        }
        let mut a = Self {
            path: path.to_owned(),
            header,
            layout,
            storage,
            scale: 1.0,
            clip_shape,
            clips,
        };
        a.scale = match (a.header.dtype, scale) {
            (Dtype::U8, _) | (_, Scale::Byte) => 1.0,
            (_, Scale::Unit) => 255.0,
            (_, Scale::Auto) => {
                let max = a.max_value()?;
                tracing::info!("{}: float data, maximum {max}", path.display());
                if max <= 1.0 {
                    255.0
                } else {
                    1.0
                }
            }
        };
        Ok(a)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_elems(&self, first: usize, count: usize, out: &mut [u8]) -> Result<()> {
        let size = self.header.dtype.size();
        let off = self.header.data_offset + first * size;
        match &self.storage {
            Storage::File(f) => f
                .read_exact_at(&mut out[..count * size], off as u64)
                .map_err(|e| Error::Data {
                    path: self.path.clone(),
                    msg: format!("read at byte {off}: {e}"),
                }),
            Storage::Memory(m) => {
                out[..count * size].copy_from_slice(&m[off..off + count * size]);
                Ok(())
            }
        }
    }

    fn to_u8(&self, raw: &[u8], out: &mut [u8]) {
        let conv = |v: f64| (v * self.scale).round().clamp(0.0, 255.0) as u8;
        match self.header.dtype {
            Dtype::U8 => out.copy_from_slice(&raw[..out.len()]),
            Dtype::F32 { big } => {
                for (o, c) in out.iter_mut().zip(raw.chunks_exact(4)) {
                    let b: [u8; 4] = c.try_into().unwrap();
                    *o = conv(if big {
                        f32::from_be_bytes(b)
                    } else {
                        f32::from_le_bytes(b)
                    } as f64);
                }
            }
            Dtype::F64 { big } => {
                for (o, c) in out.iter_mut().zip(raw.chunks_exact(8)) {
                    let b: [u8; 8] = c.try_into().unwrap();
                    *o = conv(if big {
                        f64::from_be_bytes(b)
                    } else {
                        f64::from_le_bytes(b)
                    });
                }
            }
        }
    }

    fn max_value(&self) -> Result<f64> {
        let total: usize = self.header.shape.iter().product();
        let size = self.header.dtype.size();
        let step = (1 << 20) / size;
        let mut raw = vec![0u8; step * size];
        let mut max = f64::MIN;
        for first in (0..total).step_by(step) {
            let n = step.min(total - first);
            self.read_elems(first, n, &mut raw)?;
            for c in raw[..n * size].chunks_exact(size) {
                let v = match self.header.dtype {
                    Dtype::U8 => c[0] as f64,
                    Dtype::F32 { big } => {
                        let b = c.try_into().unwrap();
                        (if big {
                            f32::from_be_bytes(b)
                        } else {
                            f32::from_le_bytes(b)
                        }) as f64
                    }
                    Dtype::F64 { big } => {
                        let b = c.try_into().unwrap();
                        if big {
                            f64::from_be_bytes(b)
                        } else {
                            f64::from_le_bytes(b)
                        }
                    }
                };
                max = max.max(v);
            }
        }
        Ok(max)
    }

    /// Reads clip `n` as u8 `[T, C, H, W]` into `out`.
    pub fn read_clip(&self, n: usize, out: &mut [u8]) -> Result<()> {
        let [t, c, h, w] = self.clip_shape;
        let size = self.header.dtype.size();
        let hw = h * w;
        match self.layout {
            Layout::Tnhw => {
                let mut raw = vec![0u8; hw * size];
                for f in 0..t {
                    self.read_elems((f * self.clips + n) * hw, hw, &mut raw)?;
                    self.to_u8(&raw, &mut out[f * hw..(f + 1) * hw]);
                }
            }
            Layout::Nthw => {
                let mut raw = vec![0u8; t * hw * size];
                self.read_elems(n * t * hw, t * hw, &mut raw)?;
                self.to_u8(&raw, out);
            }
            Layout::Nthwc => {
                let len = t * hw * c;
                let mut raw = vec![0u8; len * size];
                self.read_elems(n * len, len, &mut raw)?;
                let mut hwc = vec![0u8; len];
                self.to_u8(&raw, &mut hwc);
                // [T, H, W, C] → [T, C, H, W]
                for f in 0..t {
                    for p in 0..hw {
                        for ch in 0..c {
                            out[(f * c + ch) * hw + p] = hwc[(f * hw + p) * c + ch];
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Serialises an `.npy` (format 1.0) of u8 or little-endian f32 data; for tests and fixtures.
pub use convtt_core::npy::to_bytes as write_npy;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_clips_in_every_layout() {
        let dir = tempfile::tempdir().unwrap();
        // 2 clips, 3 frames, 2×2 pixels; value = 100·n + 10·t + pixel.
        let val = |n: usize, t: usize, p: usize| (100 * n + 10 * t + p) as u8;
        let mut tnhw = Vec::new();
        for t in 0..3 {
            for n in 0..2 {
                tnhw.extend((0..4).map(|p| val(n, t, p)));
            }
        }
        let path = dir.path().join("a.npy");
        std::fs::write(&path, write_npy("|u1", &[3, 2, 2, 2], &tnhw)).unwrap();
        let a = ClipArray::open_npy(&path, Layout::Tnhw, Scale::Auto).unwrap();
        assert_eq!((a.clips, a.clip_shape), (2, [3, 1, 2, 2]));
        let mut out = vec![0u8; 12];
        a.read_clip(1, &mut out).unwrap();
        assert_eq!(
            out,
            (0..3)
                .flat_map(|t| (0..4).map(move |p| val(1, t, p)))
                .collect::<Vec<_>>()
        );

        // NTHWC with 2 channels in [0, 1] floats: channel c = pixel/255·(c+1).
        let mut f = Vec::new();
        for _n in 0..2 {
            for _t in 0..3 {
                for p in 0..4 {
                    for c in 0..2 {
                        f.extend(((p * (c + 1)) as f32 / 255.0).to_le_bytes());
                    }
                }
            }
        }
        let path = dir.path().join("b.npy");
        std::fs::write(&path, write_npy("<f4", &[2, 3, 2, 2, 2], &f)).unwrap();
        let a = ClipArray::open_npy(&path, Layout::Nthwc, Scale::Auto).unwrap();
        assert_eq!(a.clip_shape, [3, 2, 2, 2]);
        let mut out = vec![0u8; 24];
        a.read_clip(0, &mut out).unwrap();
        assert_eq!(&out[..8], &[0, 1, 2, 3, 0, 2, 4, 6]);

        // A layout that does not fit, and a truncated file: data errors naming the file.
        let e = ClipArray::open_npy(&path, Layout::Tnhw, Scale::Auto).unwrap_err();
        assert!(
            e.to_string().contains("b.npy") && e.to_string().contains("does not fit"),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::exit::DATA);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let e = ClipArray::open_npy(&path, Layout::Nthwc, Scale::Auto).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
