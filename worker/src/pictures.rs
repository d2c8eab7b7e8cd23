//! Pictures of frames: laying 8-bit frames out on a grid with gray gaps, and writing PNGs.
//! `convtt-data preview` (one row of a clip's frames), the prediction strips and GIFs of
//! `predict` ([`crate::eval::strip`]) and the plots ([`crate::eval::plot`]) all use these.

use std::path::Path;

use crate::error::{Error, Result};

/// Gap between frames and rows, in pixels.
pub const GAP: usize = 2;
/// Value of the gaps and of empty cells.
pub const GRAY: u8 = 128;

/// Lays out rows of 8-bit frames `[n_r, C, H, W]` (row r holds `n_r` frames) on a grid with
/// `GAP`-pixel gray separators; returns `(pixels [height, width, out_c], width, height,
/// out_c)` with `out_c` 3 for RGB input and 1 otherwise.
pub fn grid(rows: &[&[u8]], [c, h, w]: [usize; 3]) -> (Vec<u8>, usize, usize, usize) {
    let frame = c * h * w;
    let cols = rows
        .iter()
        .map(|r| r.len() / frame)
        .max()
        .unwrap_or(0)
        .max(1);
    let out_c = if c == 3 { 3 } else { 1 };
    let width = cols * w + (cols - 1) * GAP;
    let height = rows.len() * h + rows.len().saturating_sub(1) * GAP;
    let mut px = vec![GRAY; width * height * out_c];
    for (r, row) in rows.iter().enumerate() {
        for f in 0..row.len() / frame {
            let (x0, y0) = (f * (w + GAP), r * (h + GAP));
            for y in 0..h {
                for x in 0..w {
                    for k in 0..out_c {
                        px[((y0 + y) * width + x0 + x) * out_c + k] =
                            row[f * frame + (k * h + y) * w + x];
                    }
                }
            }
        }
    }
    (px, width, height, out_c)
}

/// Writes frames `[T, C, H, W]` (only the first `shape[0]` are used) side by side, with a
/// `GAP`-pixel gray gap, as an 8-bit gray (C = 1) or RGB (C = 3) PNG.
pub fn write_frames(path: &Path, clip: &[u8], [t, c, h, w]: [usize; 4]) -> Result<()> {
    let (px, width, height, out_c) = grid(&[&clip[..t * c * h * w]], [c, h, w]);
    write_png(path, &px, width, height, out_c)
}

/// Writes 8-bit pixels as a PNG ([`convtt_core::plot::write_png`], shared with the plots).
pub fn write_png(
    path: &Path,
    px: &[u8],
    width: usize,
    height: usize,
    channels: usize,
) -> Result<()> {
    convtt_core::plot::write_png(path, px, width, height, channels).map_err(io_error)
}

/// A core error with the worker's I/O variant kept as such (a PNG that cannot be written is an
/// I/O failure, not a data error).
pub(crate) fn io_error(e: convtt_core::Error) -> Error {
    match e {
        convtt_core::Error::Io { path, err } => Error::Io { path, err },
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_frames_and_gaps() {
        // Two 1-channel 2×2 frames in row 0, one in row 1.
        let a = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let b = [9u8, 10, 11, 12];
        let (px, width, height, c) = grid(&[&a, &b], [1, 2, 2]);
        assert_eq!((width, height, c), (2 * 2 + GAP, 2 * 2 + GAP, 1));
        let at = |x: usize, y: usize| px[y * width + x];
        assert_eq!([at(0, 0), at(1, 0), at(0, 1), at(1, 1)], [1, 2, 3, 4]);
        assert_eq!([at(4, 0), at(5, 1)], [5, 8]);
        assert_eq!(at(2, 0), GRAY);
        assert_eq!([at(0, 4), at(1, 5)], [9, 12]);
        // The empty cell of row 1 is gray.
        assert_eq!(at(5, 5), GRAY);
    }

    #[test]
    fn rgb_frames_stay_rgb() {
        let f: Vec<u8> = (0..12).collect(); // [C=3, H=2, W=2]
        let (px, width, _, c) = grid(&[&f], [3, 2, 2]);
        assert_eq!((width, c), (2, 3));
        // Pixel (0, 0) takes one value from each channel plane.
        assert_eq!(&px[..3], &[0, 4, 8]);
    }
}
