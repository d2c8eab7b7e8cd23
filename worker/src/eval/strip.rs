//! Prediction strips: one PNG with three rows — the conditioning frames, the ground-truth
//! future and the model's prediction (clamped to [0, 1]) — separated by thin gray lines.
//! Pixels are written with the PNG code of `convtt-data preview` ([`write_png`]). The same
//! clip can also be written as an animated GIF: truth beside prediction, frame by frame.

use std::path::Path;

use convtt_common::config::DataConfig;
use convtt_common::model::{Network, Rollout};
use tch::{Kind, Tensor};

use crate::data::tool::{io_error, write_png};
use crate::data::Dataset;
use crate::error::{Error, Result};

/// Gap between frames and rows, in pixels.
pub const GAP: usize = 2;
/// Value of the gaps and of empty cells.
const GRAY: u8 = 128;
/// Height of the GIF's progress bar, in pixels.
const BAR: usize = 3;

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

/// One clip, ground truth and prediction, as 8-bit frames `[C, H, W]` each.
pub struct ClipPrediction {
    /// The `input + future` ground-truth frames.
    pub truth: Vec<u8>,
    /// The `future` predicted frames (clamped to [0, 1] before quantising).
    pub pred: Vec<u8>,
    /// Conditioning frames.
    pub input: usize,
    /// Frame shape `[C, H, W]`.
    pub shape: [usize; 3],
}

impl ClipPrediction {
    /// Predicts `future` frames of clip `clip` of `split`, conditioned on `data.input_frames`.
    pub fn new(
        net: &Network,
        data: &DataConfig,
        split: &str,
        clip: usize,
        future: usize,
    ) -> Result<Self> {
        let input = data.input_frames;
        if future == 0 {
            return Err(Error::Usage("--future must be at least 1".into()));
        }
        let ds = Dataset::open(Path::new(&data.dataset))?;
        let handle = ds.split(split)?;
        if clip >= handle.len() {
            return Err(Error::Usage(format!(
                "--clip {clip}, but split {split} of {} has {} clips",
                ds.root().display(),
                handle.len()
            )));
        }
        let [t, c, h, w] = handle.clip_shape();
        if t < input + future {
            return Err(Error::Usage(format!(
                "{}: clips hold {t} frames, but {input} input + {future} future frames are needed",
                ds.root().display()
            )));
        }
        let mut bytes = vec![0u8; t * c * h * w];
        handle.reader().read_clip(clip, &mut bytes)?;
        bytes.truncate((input + future) * c * h * w);
        let device = net.options().1;
        let frames = Tensor::from_slice(&bytes)
            .view([1, (input + future) as i64, c as i64, h as i64, w as i64])
            .to_kind(Kind::Float)
            .f_div_scalar(255.0)?
            .to_device(device);
        let pred = tch::no_grad(|| {
            net.forward(
                &frames.narrow(1, 0, input as i64),
                &Rollout::eval(input, future),
            )
        })?;
        let pred: Vec<u8> = Vec::try_from(
            (pred.clamp(0.0, 1.0) * 255.0)
                .round()
                .to_kind(Kind::Uint8)
                .to_device(tch::Device::Cpu)
                .flatten(0, -1),
        )?;
        Ok(Self {
            truth: bytes,
            pred,
            input,
            shape: [c, h, w],
        })
    }

    fn frame(&self) -> usize {
        self.shape.iter().product()
    }

    /// Writes the three-row strip (input | truth | prediction) as a PNG; returns its (width,
    /// height).
    pub fn write_strip(&self, path: &Path) -> Result<(usize, usize)> {
        let (frame, input) = (self.frame(), self.input);
        let rows: [&[u8]; 3] = [
            &self.truth[..input * frame],
            &self.truth[input * frame..],
            &self.pred,
        ];
        let (px, width, height, out_c) = grid(&rows, self.shape);
        write_png(path, &px, width, height, out_c)?;
        Ok((width, height))
    }

    /// The animation's frames: ground truth on the left; on the right what the model sees
    /// (the input frames while conditioning) and then its prediction; below both a progress
    /// bar, mid-grey while conditioning and white while predicting. Returns `(frames with their
    /// delay in 1/100 s, width, height, channels)`; the last frame is held for a second.
    pub fn animation(&self) -> (Vec<(Vec<u8>, u16)>, usize, usize, usize) {
        let (frame, input) = (self.frame(), self.input);
        let total = self.truth.len() / frame;
        let mut frames = Vec::with_capacity(total);
        let mut dims = (0, 0, 1);
        for t in 0..total {
            let truth = &self.truth[t * frame..(t + 1) * frame];
            let model = if t < input {
                truth
            } else {
                &self.pred[(t - input) * frame..(t - input + 1) * frame]
            };
            let pair = [truth, model].concat();
            let (mut px, width, height, c) = grid(&[&pair], self.shape);
            let mut bar = vec![0u8; (GAP + BAR) * width * c];
            bar[..GAP * width * c].fill(GRAY);
            let filled = (t + 1) * width / total;
            let shade = if t < input { GRAY } else { 255 };
            for y in GAP..GAP + BAR {
                bar[y * width * c..(y * width + filled) * c].fill(shade);
            }
            px.extend_from_slice(&bar);
            dims = (width, height + GAP + BAR, c);
            let delay = if t + 1 == total { 100 } else { 20 };
            frames.push((px, delay));
        }
        (frames, dims.0, dims.1, dims.2)
    }

    /// Writes [`Self::animation`] as a looping GIF; returns its (width, height).
    pub fn write_gif(&self, path: &Path) -> Result<(usize, usize)> {
        let (frames, width, height, c) = self.animation();
        convtt_core::plot::write_gif(path, &frames, width, height, c).map_err(io_error)?;
        Ok((width, height))
    }
}

/// Predicts `future` frames of clip `clip` of `split` (conditioned on `data.input_frames`
/// frames) and writes the three-row strip to `path`. Returns the image's (width, height).
pub fn prediction_strip(
    net: &Network,
    data: &DataConfig,
    split: &str,
    clip: usize,
    future: usize,
    path: &Path,
) -> Result<(usize, usize)> {
    ClipPrediction::new(net, data, split, clip, future)?.write_strip(path)
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
