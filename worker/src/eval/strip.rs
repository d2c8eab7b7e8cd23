//! Prediction strips: one PNG with three rows — the conditioning frames, the ground-truth
//! future and the model's prediction (clamped to [0, 1]) — separated by thin gray lines.
//! Pixels are laid out and written by [`crate::pictures`], as `convtt-data preview`'s. The same
//! clip can also be written as an animated GIF: truth beside prediction, frame by frame.

use std::path::Path;

use convtt_common::config::DataConfig;
use convtt_common::model::{Network, Rollout};
use tch::{Kind, Tensor};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::pictures::{grid, io_error, write_png, GAP, GRAY};

/// Height of the GIF's progress bar, in pixels.
const BAR: usize = 3;

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
        let (px, width, height, out_c) = self.strip();
        write_png(path, &px, width, height, out_c)?;
        Ok((width, height))
    }

    /// The three-row strip's pixels: (pixels, width, height, channels).
    pub fn strip(&self) -> (Vec<u8>, usize, usize, usize) {
        let (frame, input) = (self.frame(), self.input);
        let rows: [&[u8]; 3] = [
            &self.truth[..input * frame],
            &self.truth[input * frame..],
            &self.pred,
        ];
        grid(&rows, self.shape)
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
