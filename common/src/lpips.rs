//! LPIPS (Zhang et al. 2018), AlexNet backbone with the v0.1 linear heads (`net-lin`, `alex`),
//! as the reference evaluates it (spec §6.5), computed with tch from weights the user supplies
//! as ONE safetensors file (README "LPIPS weights" converts the published ones; nothing is
//! downloaded).
//!
//! Per image pair: (1) grayscale frames are repeated to three channels; (2) the input convention
//! ([`LpipsPreset`]): `reference` feeds the [0, 1] frames as they are where LPIPS expects
//! [−1, 1] (the reference calls `PerceptualLoss(...).forward(x, y)` with `normalize=False`),
//! `corrected` maps them to 2x − 1 first; (3) the scaling layer (x − shift) / scale per channel,
//! shift (−0.030, −0.088, −0.188), scale (0.458, 0.448, 0.450); (4) torchvision's AlexNet
//! `features` up to relu1 … relu5; (5) each feature map divided by its channel-wise L2 norm + 1e-10;
//! (6) squared difference, the layer's 1×1 linear head (no bias) → one channel, spatial mean;
//! (7) the sum over the five layers.
//!
//! File layout (the names of the two sources, so the conversion is a plain merge):
//!
//! | tensor | shape (AlexNet) | source |
//! |---|---|---|
//! | `features.{0,3,6,8,10}.{weight,bias}` | `[64,3,11,11]`, `[192,64,5,5]`, `[384,192,3,3]`, `[256,384,3,3]`, `[256,256,3,3]` | torchvision `alexnet(weights="IMAGENET1K_V1").state_dict()` |
//! | `lin{0…4}.model.1.weight` | `[1, C_l, 1, 1]` | `lpips` v0.1 `weights/v0.1/alex.pth` |
//!
//! Channel counts are read from the file (kernels, strides, pooling are AlexNet's), so tests use
//! a narrow random network. Every missing or inconsistent tensor is reported at once.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

pub use crate::config::LpipsPreset;

/// Names of the five feature convolutions in torchvision's `alexnet().features`.
const CONVS: [usize; 5] = [0, 3, 6, 8, 10];
/// (kernel, stride, padding) of those convolutions.
const GEOMETRY: [(i64, i64, i64); 5] = [(11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1)];
/// LPIPS's ScalingLayer.
const SHIFT: [f64; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f64; 3] = [0.458, 0.448, 0.450];

/// The LPIPS network: AlexNet feature convolutions and the five linear heads.
#[derive(Debug)]
pub struct Lpips {
    convs: Vec<(Tensor, Tensor)>,
    heads: Vec<Tensor>,
    preset: LpipsPreset,
}

impl Lpips {
    /// Loads `path` (layout in the module docs) onto `device` as f32.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file and every missing or mis-shaped tensor; I/O errors.
    pub fn load(path: &Path, preset: LpipsPreset, device: Device) -> Result<Self> {
        std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let file = Tensor::read_safetensors(path)
            .map_err(|e| Error::format(path, format!("not a readable safetensors file: {e}")))?;
        let get = |name: &str| {
            file.iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.to_kind(Kind::Float).to_device(device))
        };
        let mut problems = Vec::new();
        let mut convs = Vec::new();
        let mut heads = Vec::new();
        let mut in_ch = 3;
        for (l, (&idx, &(k, _, _))) in CONVS.iter().zip(&GEOMETRY).enumerate() {
            let (wn, bn) = (
                format!("features.{idx}.weight"),
                format!("features.{idx}.bias"),
            );
            let hn = format!("lin{l}.model.1.weight");
            let (Some(w), Some(b), Some(h)) = (get(&wn), get(&bn), get(&hn)) else {
                for n in [&wn, &bn, &hn] {
                    if get(n).is_none() {
                        problems.push(format!("missing tensor `{n}`"));
                    }
                }
                break;
            };
            let out = w.size()[0];
            if w.size() != [out, in_ch, k, k] {
                problems.push(format!(
                    "tensor `{wn}` has shape {:?}, expected [C, {in_ch}, {k}, {k}]",
                    w.size()
                ));
            }
            if b.size() != [out] {
                problems.push(format!(
                    "tensor `{bn}` has shape {:?}, expected [{out}]",
                    b.size()
                ));
            }
            if h.size() != [1, out, 1, 1] {
                problems.push(format!(
                    "tensor `{hn}` has shape {:?}, expected [1, {out}, 1, 1]",
                    h.size()
                ));
            }
            convs.push((w, b));
            heads.push(h);
            in_ch = out;
        }
        if !problems.is_empty() {
            return Err(Error::format(
                path,
                format!(
                    "not LPIPS AlexNet v0.1 weights (README \"LPIPS weights\" shows how to \
                     convert them): {}",
                    problems.join("; ")
                ),
            ));
        }
        Ok(Self {
            convs,
            heads,
            preset,
        })
    }

    /// The input convention in use.
    pub fn preset(&self) -> LpipsPreset {
        self.preset
    }

    /// relu1 … relu5 of the scaled input.
    ///
    /// # Shapes
    /// `[N, 3, H, W]` → five `[N, C_l, h_l, w_l]`
    pub fn features(&self, x: &Tensor) -> Vec<Tensor> {
        let opts = (Kind::Float, x.device());
        let shift = Tensor::from_slice(&SHIFT).to_kind(opts.0).to_device(opts.1);
        let scale = Tensor::from_slice(&SCALE).to_kind(opts.0).to_device(opts.1);
        let mut h = (x - shift.view([1, 3, 1, 1])) / scale.view([1, 3, 1, 1]);
        let mut out = Vec::with_capacity(5);
        for (l, ((w, b), &(_, stride, pad))) in self.convs.iter().zip(&GEOMETRY).enumerate() {
            if l == 1 || l == 2 {
                h = h.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
            }
            h = h
                .conv2d(w, Some(b), [stride, stride], [pad, pad], [1, 1], 1)
                .relu();
            out.push(h.shallow_clone());
        }
        out
    }

    /// LPIPS distance of every pair of frames.
    ///
    /// # Shapes
    /// `[N, C, H, W] × [N, C, H, W]`, C = 1 or 3, values in [0, 1] → `[N]`
    ///
    /// # Errors
    /// [`Error::Shape`] for other shapes, channel counts or frames too small for AlexNet
    /// (at least 31×31).
    pub fn distance(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let size = x.size();
        if size.len() != 4 || size != y.size() || !(size[1] == 1 || size[1] == 3) {
            return Err(Error::Shape(format!(
                "LPIPS needs two [N, 1 or 3, H, W] batches of one shape, got {size:?} and {:?}",
                y.size()
            )));
        }
        if size[2] < 31 || size[3] < 31 {
            return Err(Error::Shape(format!(
                "LPIPS (AlexNet) needs frames of at least 31×31, got {}×{}",
                size[2], size[3]
            )));
        }
        let prep = |t: &Tensor| {
            let t = t
                .to_kind(Kind::Float)
                .expand([size[0], 3, size[2], size[3]], false);
            match self.preset {
                LpipsPreset::Reference => t,
                LpipsPreset::Corrected => t * 2.0 - 1.0,
            }
        };
        let (fx, fy) = (self.features(&prep(x)), self.features(&prep(y)));
        let normalise = |f: &Tensor| {
            let norm = f.square().sum_dim_intlist(1, true, Kind::Float).sqrt();
            f / (norm + 1e-10)
        };
        let mut total = Tensor::zeros([size[0]], (Kind::Float, x.device()));
        for ((a, b), head) in fx.iter().zip(&fy).zip(&self.heads) {
            let d = (normalise(a) - normalise(b)).square();
            let v = d
                .conv2d(head, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1)
                .mean_dim([1, 2, 3].as_slice(), false, Kind::Float);
            total += v;
        }
        Ok(total)
    }
}

/// Writes a randomly initialised LPIPS network with feature channels `channels` in the file
/// layout [`Lpips::load`] reads: for checking the pipeline (tests, smoke runs) without the
/// published weights. Its distances mean nothing.
pub fn write_random_weights(path: &Path, channels: [i64; 5], seed: i64) -> Result<()> {
    tch::manual_seed(seed);
    let opts = (Kind::Float, Device::Cpu);
    let mut named = Vec::new();
    let mut cin = 3;
    for (l, (&idx, &(k, _, _))) in CONVS.iter().zip(&GEOMETRY).enumerate() {
        let c = channels[l];
        let fan = (cin * k * k) as f64;
        named.push((
            format!("features.{idx}.weight"),
            Tensor::randn([c, cin, k, k], opts) / fan.sqrt(),
        ));
        named.push((
            format!("features.{idx}.bias"),
            Tensor::randn([c], opts) * 0.1,
        ));
        named.push((
            format!("lin{l}.model.1.weight"),
            Tensor::rand([1, c, 1, 1], opts),
        ));
        cin = c;
    }
    Tensor::write_safetensors(&named, path)
        .map_err(|e| Error::format(path, format!("cannot write safetensors: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn random_weights(path: &Path, seed: i64) {
        write_random_weights(path, [4, 6, 5, 3, 2], seed).unwrap();
    }

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("convtt-lpips-{}-{name}", std::process::id()))
    }

    /// The distance written out directly: AlexNet by hand from the file's tensors, the
    /// channel norm as an explicit square root of a sum, the head as a weighted channel sum,
    /// the spatial mean as sum / (h·w).
    fn direct(path: &Path, x: &Tensor, y: &Tensor, corrected: bool) -> Vec<f64> {
        let file: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .unwrap()
            .into_iter()
            .collect();
        let feats = |img: &Tensor| -> Vec<Tensor> {
            let mut t = img.repeat([1, 3, 1, 1]);
            if corrected {
                t = t * 2.0 - 1.0;
            }
            let shift = Tensor::from_slice(&[-0.030f32, -0.088, -0.188]).view([1, 3, 1, 1]);
            let scale = Tensor::from_slice(&[0.458f32, 0.448, 0.450]).view([1, 3, 1, 1]);
            let mut h = (t - shift) / scale;
            let conv = |h: &Tensor, i: usize, s: i64, p: i64| {
                h.conv2d(
                    &file[&format!("features.{i}.weight")],
                    Some(&file[&format!("features.{i}.bias")]),
                    [s, s],
                    [p, p],
                    [1, 1],
                    1,
                )
                .clamp_min(0.0)
            };
            let mut out = Vec::new();
            h = conv(&h, 0, 4, 2);
            out.push(h.shallow_clone());
            h = conv(
                &h.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false),
                3,
                1,
                2,
            );
            out.push(h.shallow_clone());
            h = conv(
                &h.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false),
                6,
                1,
                1,
            );
            out.push(h.shallow_clone());
            h = conv(&h, 8, 1, 1);
            out.push(h.shallow_clone());
            out.push(conv(&h, 10, 1, 1));
            out
        };
        let (fx, fy) = (feats(x), feats(y));
        let n = x.size()[0];
        (0..n)
            .map(|i| {
                let mut sum = 0.0;
                for l in 0..5 {
                    let (a, b) = (fx[l].get(i), fy[l].get(i)); // [C, h, w]
                    let na = a
                        .pow_tensor_scalar(2)
                        .sum_dim_intlist(0, false, Kind::Float)
                        .sqrt()
                        + 1e-10;
                    let nb = b
                        .pow_tensor_scalar(2)
                        .sum_dim_intlist(0, false, Kind::Float)
                        .sqrt()
                        + 1e-10;
                    let d = (a / na - b / nb).pow_tensor_scalar(2);
                    let w = file[&format!("lin{l}.model.1.weight")].view([-1, 1, 1]);
                    let per_pixel = (d * w).sum_dim_intlist(0, false, Kind::Float);
                    let (hh, ww) = (per_pixel.size()[0], per_pixel.size()[1]);
                    sum += per_pixel.sum(Kind::Double).double_value(&[]) / (hh * ww) as f64;
                }
                sum
            })
            .collect()
    }

    #[test]
    fn lpips_equals_the_direct_computation_for_both_presets() {
        let path = temp("w.safetensors");
        random_weights(&path, 1);
        tch::manual_seed(2);
        let x = Tensor::rand([3, 1, 40, 36], (Kind::Float, Device::Cpu));
        let y = Tensor::rand([3, 1, 40, 36], (Kind::Float, Device::Cpu));
        for (preset, corrected) in [
            (LpipsPreset::Reference, false),
            (LpipsPreset::Corrected, true),
        ] {
            let net = Lpips::load(&path, preset, Device::Cpu).unwrap();
            let got =
                Vec::<f64>::try_from(net.distance(&x, &y).unwrap().to_kind(Kind::Double)).unwrap();
            let want = direct(&path, &x, &y, corrected);
            assert_eq!(got.len(), 3);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5 * w.abs(), "{preset:?}: {g} vs {w}");
                assert!(*w > 0.0);
            }
            let zero = net.distance(&x, &x).unwrap();
            assert!(zero.abs().max().double_value(&[]) < 1e-7);
        }
        // The presets differ: `corrected` is `reference` applied to 2x − 1.
        let r = Lpips::load(&path, LpipsPreset::Reference, Device::Cpu).unwrap();
        let c = Lpips::load(&path, LpipsPreset::Corrected, Device::Cpu).unwrap();
        let a = c.distance(&x, &y).unwrap();
        let b = r.distance(&(&x * 2.0 - 1.0), &(&y * 2.0 - 1.0)).unwrap();
        assert!((&a - &b).abs().max().double_value(&[]) < 1e-6);
        assert!(
            (&a - r.distance(&x, &y).unwrap())
                .abs()
                .max()
                .double_value(&[])
                > 1e-4
        );
        let _ = std::fs::remove_file(&path);
    }

    /// Layer weighting: each head scales its layer's term linearly; zeroing all but one head
    /// leaves that layer's term, and the five terms add up to the distance.
    #[test]
    fn heads_weight_their_layers_linearly() {
        let path = temp("heads.safetensors");
        random_weights(&path, 3);
        let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let full = Lpips::load(&path, LpipsPreset::Reference, Device::Cpu).unwrap();
        let total = full.distance(&x, &y).unwrap();
        let mut parts = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        for l in 0..5 {
            let net = Lpips::load(&path, LpipsPreset::Reference, Device::Cpu).unwrap();
            let net = Lpips {
                heads: net
                    .heads
                    .iter()
                    .enumerate()
                    .map(|(j, h)| if j == l { h * 2.0 } else { h.zeros_like() })
                    .collect(),
                ..net
            };
            parts += net.distance(&x, &y).unwrap() / 2.0;
        }
        assert!((&parts - &total).abs().max().double_value(&[]) < 1e-6);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bad_files_and_shapes_are_reported() {
        let path = temp("bad.safetensors");
        Tensor::write_safetensors(
            &[(
                "features.0.weight",
                Tensor::zeros([4, 1, 11, 11], (Kind::Float, Device::Cpu)),
            )],
            &path,
        )
        .unwrap();
        let err = Lpips::load(&path, LpipsPreset::Reference, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing tensor `features.0.bias`"), "{err}");
        assert!(
            err.contains("missing tensor `lin0.model.1.weight`"),
            "{err}"
        );
        let _ = std::fs::remove_file(&path);
        random_weights(&path, 1);
        let net = Lpips::load(&path, LpipsPreset::Reference, Device::Cpu).unwrap();
        let small = Tensor::rand([1, 1, 16, 16], (Kind::Float, Device::Cpu));
        assert!(net.distance(&small, &small).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
