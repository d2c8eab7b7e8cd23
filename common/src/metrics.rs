//! Video-prediction metrics (ARCHITECTURE §7, reference spec §6): per predicted frame, summed
//! over samples so that ranks can add their sums and divide by the global count.
//!
//! Predictions are clamped to [0, 1] first, as the reference's `code/` and `eval_paper/` do.
//! SSIM comes in two presets:
//! - [`SsimPreset::Paper`]: scikit-image defaults as the reference called them — 7×7 uniform
//!   window, sample covariance (N/(N−1), N = 49), data range L = 2 (the float dtype range), mean
//!   over the image with 3 pixels cropped from every border;
//! - [`SsimPreset::Wang2004`]: Gaussian window 11×11, σ = 1.5, population covariance, L = 1, mean
//!   with 5 pixels cropped (scikit-image's `gaussian_weights=True, data_range=1`).
//!
//! LPIPS (AlexNet, v0.1 heads; [`crate::lpips`]) is added per batch by
//! [`FrameMetrics::add_lpips`] when weights are configured.
//!
//! Cropping `(win − 1)/2` pixels equals evaluating the filters only where the window fits, so
//! both presets use "valid" convolutions and the border handling never matters.

use tch::{Kind, Tensor};

use crate::lpips::Lpips;
use crate::{Error, Result};

/// PSNR of a frame with zero error is infinite; it is reported as this value (dB) instead, so
/// averages stay finite. (MSE is floored at 1e-10.)
pub const PSNR_CAP_DB: f64 = 100.0;

/// The SSIM convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsimPreset {
    /// 7×7 box window, sample covariance, L = 2, 3-pixel crop (the reference's evaluation).
    Paper,
    /// Gaussian 11×11 window, σ = 1.5, L = 1 (Wang et al. 2004).
    Wang2004,
}

impl SsimPreset {
    fn window(self) -> Tensor {
        match self {
            SsimPreset::Paper => {
                Tensor::full([1, 1, 7, 7], 1.0 / 49.0, (Kind::Double, tch::Device::Cpu))
            }
            SsimPreset::Wang2004 => {
                let g: Vec<f64> = (-5..=5)
                    .map(|i| (-(i * i) as f64 / (2.0 * 1.5 * 1.5)).exp())
                    .collect();
                let s: f64 = g.iter().sum();
                let g = Tensor::from_slice(&g.iter().map(|v| v / s).collect::<Vec<_>>());
                g.view([11, 1])
                    .matmul(&g.view([1, 11]))
                    .view([1, 1, 11, 11])
            }
        }
    }

    fn params(self) -> (f64, f64) {
        // (data range L, covariance normalisation)
        match self {
            SsimPreset::Paper => (2.0, 49.0 / 48.0),
            SsimPreset::Wang2004 => (1.0, 1.0),
        }
    }
}

/// Mean SSIM per image of `x` and `y`, both `[N, C, H, W]` (any float kind); channels are
/// averaged. Returns `[N]` in f64.
///
/// # Shapes
/// `[N, C, H, W] × [N, C, H, W] -> [N]`; H and W must be at least the window size.
pub fn ssim(x: &Tensor, y: &Tensor, preset: SsimPreset) -> Result<Tensor> {
    let size = x.size();
    if size.len() != 4 || size != y.size() {
        return Err(Error::Shape(format!(
            "ssim needs two [N, C, H, W] tensors of one shape, got {:?} and {:?}",
            size,
            y.size()
        )));
    }
    let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
    let win = preset.window().to_device(x.device());
    let k = win.size()[2];
    if h < k || w < k {
        return Err(Error::Shape(format!(
            "ssim needs frames of at least {k}×{k}, got {h}×{w}"
        )));
    }
    let (l, cov_norm) = preset.params();
    let (c1, c2) = ((0.01 * l) * (0.01 * l), (0.03 * l) * (0.03 * l));
    let x = x.to_kind(Kind::Double).reshape([n * c, 1, h, w]);
    let y = y.to_kind(Kind::Double).reshape([n * c, 1, h, w]);
    let filt = |t: &Tensor| t.conv2d(&win, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
    let (ux, uy) = (filt(&x), filt(&y));
    let uxx = filt(&(&x * &x));
    let uyy = filt(&(&y * &y));
    let uxy = filt(&(&x * &y));
    let vx = (uxx - &ux * &ux) * cov_norm;
    let vy = (uyy - &uy * &uy) * cov_norm;
    let vxy = (uxy - &ux * &uy) * cov_norm;
    let num = (&ux * &uy * 2.0 + c1) * (vxy * 2.0 + c2);
    let den = (&ux * &ux + &uy * &uy + c1) * (vx + vy + c2);
    Ok((num / den)
        .reshape([n, -1])
        .mean_dim(1, false, Kind::Double))
}

/// Per-frame metric sums over the samples of one batch. Adding two of these (from two batches or
/// two ranks) and dividing by `samples` gives the per-frame means.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameMetrics {
    /// Samples the sums cover.
    pub samples: u64,
    /// Σ over samples of the per-pixel mean squared error, per frame.
    pub mse: Vec<f64>,
    /// Σ over samples of the per-frame pixel *sum* of squared errors (OpenSTL's MSE), per frame.
    pub sse: Vec<f64>,
    /// Σ over samples of the per-pixel mean absolute error, per frame.
    pub mae: Vec<f64>,
    /// Σ over samples of PSNR (dB, peak 1), per frame.
    pub psnr: Vec<f64>,
    /// Σ over samples of SSIM, paper preset, per frame.
    pub ssim_paper: Vec<f64>,
    /// Σ over samples of SSIM, Wang 2004 preset, per frame.
    pub ssim_wang: Vec<f64>,
    /// Σ over samples of LPIPS, per frame; empty unless computed ([`Self::add_lpips`]).
    pub lpips: Vec<f64>,
}

impl FrameMetrics {
    /// Metrics of `pred` against `truth`, both `[B, F, C, H, W]` in [0, 1] (`pred` is clamped).
    ///
    /// # Shapes
    /// `[B, F, C, H, W] × [B, F, C, H, W]`; frames at least 11×11 for the Wang preset.
    pub fn compute(pred: &Tensor, truth: &Tensor) -> Result<Self> {
        let size = pred.size();
        if size.len() != 5 || size != truth.size() {
            return Err(Error::Shape(format!(
                "metrics need prediction and truth of one [B, F, C, H, W] shape, got {:?} and {:?}",
                size,
                truth.size()
            )));
        }
        let (b, f) = (size[0], size[1]);
        let pred = pred.to_kind(Kind::Double).clamp(0.0, 1.0);
        let truth = truth.to_kind(Kind::Double);
        let diff = &pred - &truth;
        let flat = |t: Tensor| t.reshape([b, f, -1]);
        let mse = flat(diff.square()).mean_dim(2, false, Kind::Double); // [B, F]
        let sse = flat(diff.square()).sum_dim_intlist(2, false, Kind::Double);
        let mae = flat(diff.abs()).mean_dim(2, false, Kind::Double);
        let psnr = mse.clamp_min(1e-10).log10() * -10.0;
        let frames = |t: &Tensor| t.reshape([b * f, size[2], size[3], size[4]]);
        let ssim_p = ssim(&frames(&pred), &frames(&truth), SsimPreset::Paper)?.reshape([b, f]);
        let ssim_w = ssim(&frames(&pred), &frames(&truth), SsimPreset::Wang2004)?.reshape([b, f]);
        let per_frame = |t: &Tensor| -> Vec<f64> {
            Vec::<f64>::try_from(t.sum_dim_intlist(0, false, Kind::Double)).expect("f64 vector")
        };
        Ok(FrameMetrics {
            samples: b as u64,
            mse: per_frame(&mse),
            sse: per_frame(&sse),
            mae: per_frame(&mae),
            psnr: per_frame(&psnr.clamp_max(PSNR_CAP_DB)),
            ssim_paper: per_frame(&ssim_p),
            ssim_wang: per_frame(&ssim_w),
            lpips: Vec::new(),
        })
    }

    /// Fills [`Self::lpips`] for the batch these metrics were computed from (`pred` clamped to
    /// [0, 1] first, as for every metric).
    ///
    /// # Shapes
    /// `[B, F, C, H, W] × [B, F, C, H, W]`, C = 1 or 3, H, W ≥ 31
    pub fn add_lpips(&mut self, net: &Lpips, pred: &Tensor, truth: &Tensor) -> Result<()> {
        let size = pred.size();
        if size.len() != 5 || size != truth.size() {
            return Err(Error::Shape(format!(
                "LPIPS needs prediction and truth of one [B, F, C, H, W] shape, got {:?} and {:?}",
                size,
                truth.size()
            )));
        }
        let (b, f) = (size[0], size[1]);
        let frames = |t: &Tensor| t.reshape([b * f, size[2], size[3], size[4]]);
        let d = net
            .distance(&frames(&pred.clamp(0.0, 1.0)), &frames(truth))?
            .to_kind(Kind::Double)
            .reshape([b, f])
            .sum_dim_intlist(0, false, Kind::Double);
        self.lpips = Vec::<f64>::try_from(d.to_device(tch::Device::Cpu)).expect("f64 vector");
        Ok(())
    }

    /// Adds another batch's (or rank's) sums. Frame counts must agree.
    pub fn add(&mut self, other: &FrameMetrics) {
        assert_eq!(self.mse.len(), other.mse.len(), "frame counts differ");
        self.samples += other.samples;
        for (a, b) in self.fields_mut().into_iter().zip(other.fields()) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }

    /// All sums in one flat vector (for an all-reduce), frames innermost; see [`Self::from_flat`].
    pub fn to_flat(&self) -> Vec<f64> {
        let mut v = vec![self.samples as f64];
        self.fields()
            .into_iter()
            .for_each(|f| v.extend_from_slice(f));
        v
    }

    /// Inverse of [`Self::to_flat`] (LPIPS present when `v` holds seven per-frame vectors).
    pub fn from_flat(v: &[f64], frames: usize) -> Self {
        let with_lpips = v.len() == 1 + 7 * frames;
        let part = |i: usize| v[1 + i * frames..1 + (i + 1) * frames].to_vec();
        FrameMetrics {
            samples: v[0].round() as u64,
            mse: part(0),
            sse: part(1),
            mae: part(2),
            psnr: part(3),
            ssim_paper: part(4),
            ssim_wang: part(5),
            lpips: if with_lpips { part(6) } else { Vec::new() },
        }
    }

    fn fields(&self) -> [&Vec<f64>; 7] {
        [
            &self.mse,
            &self.sse,
            &self.mae,
            &self.psnr,
            &self.ssim_paper,
            &self.ssim_wang,
            &self.lpips,
        ]
    }

    fn fields_mut(&mut self) -> [&mut Vec<f64>; 7] {
        [
            &mut self.mse,
            &mut self.sse,
            &mut self.mae,
            &mut self.psnr,
            &mut self.ssim_paper,
            &mut self.ssim_wang,
            &mut self.lpips,
        ]
    }

    /// Per-frame means (sums divided by the sample count).
    pub fn means(&self) -> FrameMetrics {
        let n = self.samples.max(1) as f64;
        let mut m = self.clone();
        m.fields_mut()
            .into_iter()
            .for_each(|f| f.iter_mut().for_each(|x| *x /= n));
        m
    }
}

/// The two trivial predictors every evaluation is compared with (their metrics on the same
/// clips and frames as the model's): repeating the last conditioning frame, and an all-zeros
/// (black) frame. No LPIPS for them.
#[derive(Debug, Clone, PartialEq)]
pub struct TrivialBaselines {
    /// Every future frame = the last input frame.
    pub copy_last: FrameMetrics,
    /// Every future frame = 0.
    pub zeros: FrameMetrics,
}

impl TrivialBaselines {
    /// Their metric sums on one batch.
    ///
    /// # Shapes
    /// `last_input`: `[B, C, H, W]`, `truth`: `[B, F, C, H, W]`
    pub fn compute(last_input: &Tensor, truth: &Tensor) -> Result<Self> {
        let copy = last_input.unsqueeze(1).expand_as(truth);
        Ok(TrivialBaselines {
            copy_last: FrameMetrics::compute(&copy, truth)?,
            zeros: FrameMetrics::compute(&truth.zeros_like(), truth)?,
        })
    }

    /// Adds another batch's (or rank's) sums.
    pub fn add(&mut self, other: &TrivialBaselines) {
        self.copy_last.add(&other.copy_last);
        self.zeros.add(&other.zeros);
    }

    /// Length of [`Self::to_flat`] for `frames` frames.
    pub fn flat_len(frames: usize) -> usize {
        2 * (1 + 6 * frames)
    }

    /// Both sums in one flat vector (copy-last first), for an all-reduce.
    pub fn to_flat(&self) -> Vec<f64> {
        let mut v = self.copy_last.to_flat();
        v.extend(self.zeros.to_flat());
        v
    }

    /// Inverse of [`Self::to_flat`].
    pub fn from_flat(v: &[f64], frames: usize) -> Self {
        let half = v.len() / 2;
        TrivialBaselines {
            copy_last: FrameMetrics::from_flat(&v[..half], frames),
            zeros: FrameMetrics::from_flat(&v[half..], frames),
        }
    }

    /// The per-frame means.
    pub fn means(&self) -> Self {
        TrivialBaselines {
            copy_last: self.copy_last.means(),
            zeros: self.zeros.means(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(shape: &[i64], seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::rand(shape, (Kind::Double, tch::Device::Cpu))
    }

    /// SSIM written out with loops, exactly as scikit-image defines it.
    fn naive_ssim(x: &[Vec<f64>], y: &[Vec<f64>], preset: SsimPreset) -> f64 {
        let win: Vec<Vec<f64>> = {
            let w = preset.window();
            let k = w.size()[2] as usize;
            let flat = Vec::<f64>::try_from(w.flatten(0, -1)).unwrap();
            flat.chunks(k).map(<[f64]>::to_vec).collect()
        };
        let (l, cov_norm) = preset.params();
        let (c1, c2) = ((0.01 * l).powi(2), (0.03 * l).powi(2));
        let k = win.len();
        let (h, w) = (x.len(), x[0].len());
        let mut total = 0.0;
        let mut count = 0.0;
        for i in 0..=h - k {
            for j in 0..=w - k {
                let mut s = [0.0f64; 5];
                for a in 0..k {
                    for b in 0..k {
                        let (xv, yv, wv) = (x[i + a][j + b], y[i + a][j + b], win[a][b]);
                        s[0] += wv * xv;
                        s[1] += wv * yv;
                        s[2] += wv * xv * xv;
                        s[3] += wv * yv * yv;
                        s[4] += wv * xv * yv;
                    }
                }
                let vx = cov_norm * (s[2] - s[0] * s[0]);
                let vy = cov_norm * (s[3] - s[1] * s[1]);
                let vxy = cov_norm * (s[4] - s[0] * s[1]);
                total += (2.0 * s[0] * s[1] + c1) * (2.0 * vxy + c2)
                    / ((s[0] * s[0] + s[1] * s[1] + c1) * (vx + vy + c2));
                count += 1.0;
            }
        }
        total / count
    }

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        let w = t.size()[1] as usize;
        Vec::<f64>::try_from(t.flatten(0, -1))
            .unwrap()
            .chunks(w)
            .map(<[f64]>::to_vec)
            .collect()
    }

    #[test]
    fn ssim_matches_a_direct_computation_in_both_presets() {
        let x = rand(&[2, 1, 16, 14], 1);
        let y = (&x * 0.7 + rand(&[2, 1, 16, 14], 2) * 0.3).clamp(0.0, 1.0);
        for preset in [SsimPreset::Paper, SsimPreset::Wang2004] {
            let got = Vec::<f64>::try_from(ssim(&x, &y, preset).unwrap()).unwrap();
            for (i, g) in got.iter().enumerate() {
                let want = naive_ssim(
                    &rows(&x.get(i as i64).get(0)),
                    &rows(&y.get(i as i64).get(0)),
                    preset,
                );
                assert!(
                    (g - want).abs() < 1e-12,
                    "{preset:?} sample {i}: {g} vs {want}"
                );
            }
        }
    }

    #[test]
    fn windows_are_a_7x7_box_and_a_normalised_sigma_1_5_gaussian() {
        let bx = SsimPreset::Paper.window();
        assert_eq!(bx.size(), [1, 1, 7, 7]);
        assert!((bx.max().double_value(&[]) - 1.0 / 49.0).abs() < 1e-15);
        assert!((bx.min().double_value(&[]) - 1.0 / 49.0).abs() < 1e-15);
        let g = SsimPreset::Wang2004.window().view([11, 11]);
        assert!((g.sum(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-12);
        let ratio = g.double_value(&[5, 5]) / g.double_value(&[5, 0]);
        assert!((ratio - (25.0f64 / 4.5).exp()).abs() < 1e-9, "{ratio}");
        assert!((g.double_value(&[0, 3]) - g.double_value(&[3, 0])).abs() < 1e-15);
    }

    #[test]
    fn ssim_of_identical_frames_is_one_and_channels_are_averaged() {
        let x = rand(&[3, 3, 12, 12], 3);
        for preset in [SsimPreset::Paper, SsimPreset::Wang2004] {
            let s = Vec::<f64>::try_from(ssim(&x, &x, preset).unwrap()).unwrap();
            assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-12), "{s:?}");
        }
        // A 3-channel pair whose channels differ by different amounts averages the channels.
        let y = x.copy();
        let _ = y.narrow(1, 0, 1).fill_(0.0);
        let mixed = f64::try_from(ssim(&x, &y, SsimPreset::Paper).unwrap().get(0)).unwrap();
        let ch0 = f64::try_from(
            ssim(&x.narrow(1, 0, 1), &y.narrow(1, 0, 1), SsimPreset::Paper)
                .unwrap()
                .get(0),
        )
        .unwrap();
        assert!((mixed - (ch0 + 2.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn frame_metrics_clamp_predictions_and_sum_over_samples() {
        let truth = Tensor::full([2, 3, 1, 12, 12], 0.5, (Kind::Float, tch::Device::Cpu));
        let pred = Tensor::full([2, 3, 1, 12, 12], 1.7, (Kind::Float, tch::Device::Cpu)); // → 1.0
        let m = FrameMetrics::compute(&pred, &truth).unwrap();
        assert_eq!(m.samples, 2);
        for f in 0..3 {
            assert!((m.mse[f] - 2.0 * 0.25).abs() < 1e-12);
            assert!((m.sse[f] - 2.0 * 0.25 * 144.0).abs() < 1e-9);
            assert!((m.mae[f] - 2.0 * 0.5).abs() < 1e-12);
            assert!((m.psnr[f] - 2.0 * 10.0 * (1.0f64 / 0.25).log10()).abs() < 1e-9);
        }
        let exact = FrameMetrics::compute(&truth, &truth).unwrap();
        assert_eq!(exact.psnr, vec![2.0 * PSNR_CAP_DB; 3]);
    }

    #[test]
    fn sums_from_two_halves_equal_the_whole() {
        let truth = rand(&[4, 2, 1, 12, 12], 5);
        let pred = rand(&[4, 2, 1, 12, 12], 6);
        let whole = FrameMetrics::compute(&pred, &truth).unwrap();
        let mut a = FrameMetrics::compute(&pred.narrow(0, 0, 1), &truth.narrow(0, 0, 1)).unwrap();
        let b = FrameMetrics::compute(&pred.narrow(0, 1, 3), &truth.narrow(0, 1, 3)).unwrap();
        a.add(&b);
        let back = FrameMetrics::from_flat(&a.to_flat(), 2);
        assert_eq!(back.samples, 4);
        for (x, y) in back.to_flat().iter().zip(whole.to_flat()) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let a = rand(&[2, 1, 12, 12], 1);
        assert!(ssim(&a, &rand(&[2, 1, 12, 13], 1), SsimPreset::Paper).is_err());
        assert!(ssim(
            &rand(&[1, 1, 6, 6], 1),
            &rand(&[1, 1, 6, 6], 1),
            SsimPreset::Paper
        )
        .is_err());
        assert!(FrameMetrics::compute(&a, &a).is_err());
    }

    /// Copy-last repeats the last input frame (exact when the truth does not move) and zeros
    /// scores the truth's own energy; both survive the flat round trip of the all-reduce.
    #[test]
    fn trivial_baselines_are_exact_and_round_trip() {
        let opts = (Kind::Double, tch::Device::Cpu);
        let still = rand(&[2, 1, 1, 16, 16], 4);
        let truth = still.expand([2, 3, 1, 16, 16], false).contiguous();
        let b = TrivialBaselines::compute(&still.select(1, 0), &truth).unwrap();
        assert!(
            b.copy_last.mse.iter().all(|&v| v == 0.0),
            "{:?}",
            b.copy_last.mse
        );
        let energy: f64 = (0..2)
            .map(|i| {
                truth
                    .get(i)
                    .get(0)
                    .square()
                    .mean(Kind::Double)
                    .double_value(&[])
            })
            .sum();
        assert!((b.zeros.mse[0] - energy).abs() < 1e-12);
        assert_eq!(b.zeros.samples, 2);
        let flat = b.to_flat();
        assert_eq!(flat.len(), TrivialBaselines::flat_len(3));
        assert_eq!(TrivialBaselines::from_flat(&flat, 3), b);
        let _ = Tensor::zeros([1], opts);
    }
}
