//! MNIST idx image files (LeCun et al.): big-endian header (magic 2051, count, rows, cols), then
//! `count × rows × cols` u8 pixels. Files may be gzip-compressed (`.gz`) or raw.
//!
//! The 10,000 test digits are embedded in the binary (see `worker/assets/mnist/PROVENANCE.md`,
//! CC BY-SA 3.0, LeCun, Cortes & Burges) so generation works from any directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The bundled `t10k-images-idx3-ubyte.gz` (MNIST test digits).
static BUNDLED_TEST_IMAGES: &[u8] = include_bytes!("../../assets/mnist/t10k-images-idx3-ubyte.gz");

/// A set of 28×28 (in general rows×cols) u8 images.
#[derive(Debug, Clone)]
pub struct MnistImages {
    /// Where they came from (a path, or `<bundled t10k>`).
    pub origin: String,
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    pixels: Vec<u8>,
}

impl MnistImages {
    /// The bundled 10,000 MNIST test digits.
    pub fn bundled_test() -> Self {
        Self::parse(
            BUNDLED_TEST_IMAGES,
            "<bundled t10k-images-idx3-ubyte.gz>".into(),
        )
        .expect("the bundled MNIST test images are a valid idx file")
    }

    /// Reads an idx3 image file (`.gz` or raw; gzip is detected by its magic bytes).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Data {
            path: path.into(),
            msg: format!("cannot read MNIST images: {e}"),
        })?;
        Self::parse(&bytes, path.display().to_string())
    }

    /// Every image resampled to `size × size` by area averaging (each output pixel is the
    /// mean of the input area it covers, fractional overlaps weighted), rounded to u8: digits
    /// smaller than 28×28 for small frames (`moving-mnist --digit-size`).
    pub fn resized(&self, size: usize) -> MnistImages {
        if (size, size) == (self.rows, self.cols) {
            return self.clone();
        }
        let wr = area_weights(self.rows, size);
        let wc = area_weights(self.cols, size);
        let mut pixels = Vec::with_capacity(self.count * size * size);
        for k in 0..self.count {
            let img = self.image(k);
            for row in &wr {
                for col in &wc {
                    let v: f64 = row
                        .iter()
                        .flat_map(|&(r, a)| {
                            col.iter()
                                .map(move |&(c, b)| a * b * f64::from(img[r * self.cols + c]))
                        })
                        .sum();
                    pixels.push(v.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        MnistImages {
            origin: format!("{} resized to {size}x{size}", self.origin),
            count: self.count,
            rows: size,
            cols: size,
            pixels,
        }
    }

    /// Images from raw pixels (`count × rows × cols`).
    #[cfg(test)]
    pub(crate) fn from_raw(
        origin: String,
        count: usize,
        rows: usize,
        cols: usize,
        pixels: Vec<u8>,
    ) -> Self {
        assert_eq!(pixels.len(), count * rows * cols);
        Self {
            origin,
            count,
            rows,
            cols,
            pixels,
        }
    }

    fn parse(bytes: &[u8], origin: String) -> Result<Self> {
        let bad = |msg: String| Error::Data {
            path: PathBuf::from(&origin),
            msg,
        };
        let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("corrupt gzip stream: {e}")))?;
            out
        } else {
            bytes.to_vec()
        };
        if raw.len() < 16 {
            return Err(bad(format!(
                "{} bytes is too short for an idx3 header",
                raw.len()
            )));
        }
        let word =
            |i: usize| u32::from_be_bytes(raw[4 * i..4 * i + 4].try_into().unwrap()) as usize;
        let (magic, count, rows, cols) = (word(0), word(1), word(2), word(3));
        if magic != 2051 {
            return Err(bad(format!(
                "magic {magic} is not an idx3 image file (2051)"
            )));
        }
        let want = count * rows * cols;
        if raw.len() - 16 != want {
            return Err(bad(format!(
                "header says {count}×{rows}×{cols} = {want} pixels but {} follow (truncated?)",
                raw.len() - 16
            )));
        }
        let pixels = raw[16..].to_vec();
        Ok(Self {
            origin,
            count,
            rows,
            cols,
            pixels,
        })
    }

    /// Image `i`, `rows × cols` row-major.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// The first existing file among `<dir>/<stem>` and `<dir>/<stem>.gz` (also accepting the
/// dotted spelling `train-images.idx3-ubyte` of some mirrors).
pub fn find_idx(dir: &Path, stem: &str) -> Option<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [stem, &dotted]
        .iter()
        .flat_map(|s| [dir.join(format!("{s}.gz")), dir.join(s)])
        .find(|p| p.is_file())
}

/// For each of `to` output cells over `from` input cells: the input cells it covers and the
/// fraction of the output cell each covers (the fractions sum to 1).
fn area_weights(from: usize, to: usize) -> Vec<Vec<(usize, f64)>> {
    let scale = from as f64 / to as f64;
    (0..to)
        .map(|o| {
            let (lo, hi) = (o as f64 * scale, (o + 1) as f64 * scale);
            (lo.floor() as usize..(hi.ceil() as usize).min(from))
                .map(|i| {
                    let overlap = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                    (i, overlap / scale)
                })
                .filter(|&(_, w)| w > 0.0)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_digits_are_the_mnist_test_set() {
        let m = MnistImages::bundled_test();
        assert_eq!((m.count, m.rows, m.cols), (10_000, 28, 28));
        // The first test digit is a 7: ink in the middle rows, blank corners.
        let first = m.image(0);
        assert_eq!(first[0], 0);
        assert!(first.iter().filter(|&&p| p > 128).count() > 50);
    }

    #[test]
    fn bad_files_are_data_errors_naming_the_file() {
        let e = MnistImages::parse(&[0u8; 20], "x.idx".into()).unwrap_err();
        assert!(e.to_string().starts_with("x.idx: magic 0"), "{e}");
        let mut raw = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
        raw.extend([0u8; 100]);
        let e = MnistImages::parse(&raw, "y".into()).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert_eq!(e.exit_code(), crate::exit::DATA);
    }

    /// Area resampling keeps the mean brightness and, at half size, averages 2×2 blocks.
    #[test]
    fn resizing_averages_areas() {
        let px: Vec<u8> = (0..16).map(|i| (i * 10) as u8).collect();
        let img = MnistImages::from_raw("t".into(), 1, 4, 4, px.clone());
        let half = img.resized(2);
        assert_eq!((half.rows, half.cols), (2, 2));
        // Block (0,0) = pixels 0, 1, 4, 5 → (0 + 10 + 40 + 50) / 4 = 25.
        assert_eq!(half.image(0), &[25, 45, 105, 125]);
        let third = img.resized(3);
        let mean = |v: &[u8]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!((mean(third.image(0)) - mean(&px)).abs() < 1.0);
        assert_eq!(img.resized(4).image(0), &px[..]);
        for w in area_weights(28, 14).iter().chain(&area_weights(28, 11)) {
            assert!((w.iter().map(|p| p.1).sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}
