//! The early-activity-recognition network (paper §4, "Early activity recognition"; issue 9):
//! an encoder–decoder video-prediction model with a classifier head.
//!
//! Per step t: frame `[B, C, H, W]` → encoder (two 3×3 stride-2 convolutions with ReLU:
//! `[B, E1, H/4, W/4]`) → `recurrent_layers` recurrent layers of `hidden_channels` (the cell of
//! `[model]`, with its filter size, order, steps, rank and initialisation) → decoder (two 4×4
//! stride-2 transposed convolutions, ReLU between: `[B, C, H, W]`, the prediction of frame
//! t + 1; sigmoid when `model.output_sigmoid`). The rollout is the prediction network's
//! (spec §3.2) with autoregressive feedback only: the first I frames are observed, then the
//! model feeds its own predictions for F − 1 more steps, so it never sees more than the first
//! I frames. The classifier (two 3×3 stride-2 convolutions with ReLU, a global spatial mean and
//! one fully-connected layer) reads the last recurrent layer's output at the last step and
//! returns class logits `[B, classes]`.
//!
//! Parameter names (the var-store paths; there is no reference implementation to follow):
//! `activity.encoder.{0,1}.{weight,bias}`, `activity.layers.l{i}.…` (the cell's own names, as
//! in the prediction network), `activity.decoder.{0,1}.{weight,bias}` (transposed: weight
//! `[in, out, 4, 4]`), `activity.classifier.{0,1}.{weight,bias}`,
//! `activity.classifier.fc.{weight,bias}` (`[classes, C2]`).

use tch::{nn, Device, Kind, Tensor};

use super::conv::Conv;
use super::init::{bias_init, weight_init};
use super::network::Cell;
use super::state::NetState;
use crate::config::{ActivityConfig, ModelConfig};
use crate::error::{Error, Result};

/// A strided convolution (encoder, classifier) or transposed convolution (decoder).
#[derive(Debug)]
struct Strided {
    weight: Tensor,
    bias: Tensor,
    transposed: bool,
}

impl Strided {
    fn conv(p: &nn::Path, out: i64, inp: i64, cfg: &ModelConfig) -> Self {
        let c = Conv::new(p, &[out, inp, 3, 3], cfg.init);
        Self {
            weight: c.weight,
            bias: c.bias,
            transposed: false,
        }
    }

    fn transposed(p: &nn::Path, inp: i64, out: i64, cfg: &ModelConfig) -> Self {
        // PyTorch's ConvTranspose2d stores [in, out, k, k] and takes its fan-in from dim 1.
        let dims = [inp, out, 4, 4];
        let weight = p.var("weight", &dims, weight_init(cfg.init, &dims));
        let bias = p.var("bias", &[out], bias_init(cfg.init, &dims));
        Self {
            weight,
            bias,
            transposed: true,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        if self.transposed {
            x.conv_transpose2d(
                &self.weight,
                Some(&self.bias),
                [2, 2],
                [1, 1],
                [0, 0],
                1,
                [1, 1],
            )
        } else {
            x.conv2d(&self.weight, Some(&self.bias), [2, 2], [1, 1], [1, 1], 1)
        }
    }

    fn named(&self, prefix: &str) -> [(String, Tensor); 2] {
        [
            (format!("{prefix}.weight"), self.weight.shallow_clone()),
            (format!("{prefix}.bias"), self.bias.shallow_clone()),
        ]
    }
}

/// What one forward call returns.
#[derive(Debug)]
pub struct ActivityOutput {
    /// The I + F − 1 next-frame predictions `[B, I + F − 1, C, H, W]`.
    pub frames: Tensor,
    /// Class logits `[B, classes]`.
    pub logits: Tensor,
}

/// The encoder–recurrent–decoder network with its classifier head (module docs).
#[derive(Debug)]
pub struct ActivityNetwork {
    encoder: [Strided; 2],
    layers: Vec<Cell>,
    decoder: [Strided; 2],
    classifier: [Strided; 2],
    fc_weight: Tensor,
    fc_bias: Tensor,
    output_sigmoid: bool,
    image_channels: i64,
}

impl ActivityNetwork {
    /// Registers every parameter under `p / "activity"`. Both configs must be validated.
    pub fn new(p: &nn::Path, model: &ModelConfig, act: &ActivityConfig) -> Self {
        let ap = p / "activity";
        let img = model.image_channels as i64;
        let [e0, e1] = [
            act.encoder_channels[0] as i64,
            act.encoder_channels[1] as i64,
        ];
        let hidden = act.hidden_channels as i64;
        let [c0, c1] = [
            act.classifier_channels[0] as i64,
            act.classifier_channels[1] as i64,
        ];
        let encoder = [
            Strided::conv(&(&ap / "encoder" / "0"), e0, img, model),
            Strided::conv(&(&ap / "encoder" / "1"), e1, e0, model),
        ];
        let lp = &ap / "layers";
        let layers = (0..act.recurrent_layers)
            .map(|i| {
                let input = if i == 0 { e1 } else { hidden };
                new_cell(&(&lp / format!("l{i}")), model, input, hidden)
            })
            .collect();
        let decoder = [
            Strided::transposed(&(&ap / "decoder" / "0"), hidden, e0, model),
            Strided::transposed(&(&ap / "decoder" / "1"), e0, img, model),
        ];
        let cp = &ap / "classifier";
        let classifier = [
            Strided::conv(&(&cp / "0"), c0, hidden, model),
            Strided::conv(&(&cp / "1"), c1, c0, model),
        ];
        // nn.Linear's default: uniform ±1/√fan_in for weight and bias.
        let fc_dims = [act.classes as i64, c1];
        let fp = &cp / "fc";
        let fc_weight = fp.var("weight", &fc_dims, weight_init(model.init, &fc_dims));
        let fc_bias = fp.var("bias", &[fc_dims[0]], bias_init(model.init, &fc_dims));
        Self {
            encoder,
            layers,
            decoder,
            classifier,
            fc_weight,
            fc_bias,
            output_sigmoid: model.output_sigmoid,
            image_channels: img,
        }
    }

    /// Every parameter with its name, in registration order.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, e) in self.encoder.iter().enumerate() {
            out.extend(e.named(&format!("activity.encoder.{i}")));
        }
        for (i, l) in self.layers.iter().enumerate() {
            out.extend(l.named_parameters(&format!("activity.layers.l{i}.")));
        }
        for (i, d) in self.decoder.iter().enumerate() {
            out.extend(d.named(&format!("activity.decoder.{i}")));
        }
        for (i, c) in self.classifier.iter().enumerate() {
            out.extend(c.named(&format!("activity.classifier.{i}")));
        }
        out.push((
            "activity.classifier.fc.weight".into(),
            self.fc_weight.shallow_clone(),
        ));
        out.push((
            "activity.classifier.fc.bias".into(),
            self.fc_bias.shallow_clone(),
        ));
        out
    }

    /// Device and dtype of the parameters.
    pub fn options(&self) -> (Kind, Device) {
        (self.fc_weight.kind(), self.fc_weight.device())
    }

    /// The class logits of a last-layer hidden state `[B, hidden, H/4, W/4]`.
    fn classify(&self, h: &Tensor) -> Tensor {
        let x = self.classifier[0].forward(h).relu();
        let x = self.classifier[1].forward(&x).relu();
        let pooled = x.mean_dim([2i64, 3].as_slice(), false, x.kind());
        pooled.linear(&self.fc_weight, Some(&self.fc_bias))
    }

    /// Observes the first `input_frames` frames of `frames` `[B, T ≥ I, C, H, W]`, predicts
    /// `future_frames` more autoregressively and classifies.
    ///
    /// # Shapes
    /// → frames `[B, I + F − 1, C, H, W]` (the output of step t predicts frame t + 1), logits
    /// `[B, classes]`
    ///
    /// # Errors
    /// [`Error::Shape`] for a wrong rank, channel count, too few frames, zero I or F, or a frame
    /// size not divisible by 4.
    pub fn forward(
        &self,
        frames: &Tensor,
        input_frames: usize,
        future_frames: usize,
    ) -> Result<ActivityOutput> {
        let size = frames.size();
        let [b, t, c, h, w] = size[..] else {
            return Err(Error::Shape(format!(
                "frames must be [B, T, C, H, W], got {size:?}"
            )));
        };
        if c != self.image_channels {
            return Err(Error::Shape(format!(
                "frames have {c} channels, the model expects {}",
                self.image_channels
            )));
        }
        if input_frames < 1 || future_frames < 1 || (t as usize) < input_frames {
            return Err(Error::Shape(format!(
                "need 1 ≤ I ≤ T and F ≥ 1 (got I = {input_frames}, F = {future_frames}, T = {t})"
            )));
        }
        if h % 4 != 0 || w % 4 != 0 || h < 4 || w < 4 {
            return Err(Error::Shape(format!(
                "the activity network halves the frame twice: height and width must be \
                 multiples of 4 (got {h}×{w})"
            )));
        }
        let (kind, device) = self.options();
        let frames = frames.to_device(device).to_kind(kind);
        let mut state = NetState {
            cells: self
                .layers
                .iter()
                .map(|l| l.zero_state(b, h / 4, w / 4, device))
                .collect(),
        };
        let steps = input_frames + future_frames - 1;
        let mut outputs: Vec<Tensor> = Vec::with_capacity(steps);
        let mut last_hidden = None;
        for step in 0..steps {
            let x = if step < input_frames {
                frames.select(1, step as i64)
            } else {
                outputs.last().expect("step ≥ I ≥ 1").shallow_clone()
            };
            let mut z = self.encoder[0].forward(&x).relu();
            z = self.encoder[1].forward(&z).relu();
            let mut next = Vec::with_capacity(self.layers.len());
            for (layer, s) in self.layers.iter().zip(&state.cells) {
                let (hh, ns) = layer.step(&z, s);
                next.push(ns);
                z = hh;
            }
            state = NetState { cells: next };
            let mut y = self.decoder[0].forward(&z).relu();
            y = self.decoder[1].forward(&y);
            if self.output_sigmoid {
                y = y.sigmoid();
            }
            outputs.push(y);
            last_hidden = Some(z);
        }
        let logits = self.classify(&last_hidden.expect("at least one step"));
        Ok(ActivityOutput {
            frames: Tensor::stack(&outputs, 1),
            logits,
        })
    }
}

/// One recurrent layer of `[model]`'s cell kind.
fn new_cell(p: &nn::Path, cfg: &ModelConfig, input: i64, hidden: i64) -> Cell {
    Cell::from_config(p, cfg, input, hidden)
}

/// Cross-entropy of logits `[B, K]` against class indices `[B]` (mean over the batch).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.log_softmax(-1, Kind::Float).nll_loss(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CellKind;
    use crate::model::testing::check_gradients;

    fn tiny() -> (ModelConfig, ActivityConfig) {
        let model = ModelConfig {
            filter_size: 3,
            order: 2,
            steps: 2,
            rank: 2,
            ..ModelConfig::default()
        };
        let act = ActivityConfig {
            enabled: true,
            classes: 3,
            encoder_channels: vec![2, 3],
            recurrent_layers: 2,
            hidden_channels: 3,
            classifier_channels: vec![2, 2],
            ..ActivityConfig::default()
        };
        (model, act)
    }

    #[test]
    fn names_shapes_and_outputs() {
        tch::manual_seed(0);
        let (model, act) = tiny();
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ActivityNetwork::new(&vs.root(), &model, &act);
        let named = net.named_parameters();
        let mut from_vs: Vec<String> = vs.variables().into_keys().collect();
        from_vs.sort();
        let mut ours: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
        ours.sort();
        assert_eq!(ours, from_vs, "every variable is named once");
        let shape = |n: &str| named.iter().find(|(k, _)| k == n).unwrap().1.size();
        assert_eq!(shape("activity.encoder.0.weight"), [2, 1, 3, 3]);
        assert_eq!(shape("activity.decoder.0.weight"), [3, 2, 4, 4]);
        assert_eq!(shape("activity.decoder.1.bias"), [1]);
        assert_eq!(shape("activity.classifier.fc.weight"), [3, 2]);
        assert!(ours.iter().any(|n| n.starts_with("activity.layers.l1.")));
        let frames = Tensor::rand([2, 6, 1, 8, 12], (Kind::Float, Device::Cpu));
        let out = net.forward(&frames, 3, 2).unwrap();
        assert_eq!(out.frames.size(), [2, 4, 1, 8, 12]);
        assert_eq!(out.logits.size(), [2, 3]);
        // Frames after the first I do not matter: the model never sees them.
        let other = Tensor::cat(&[frames.narrow(1, 0, 3), frames.narrow(1, 3, 3) * 0.5], 1);
        let again = net.forward(&other, 3, 2).unwrap();
        assert!(again.logits.equal(&out.logits));
        assert!(again.frames.equal(&out.frames));
        for (i, f, msg) in [(0, 2, "need 1"), (7, 2, "need 1"), (3, 0, "need 1")] {
            let e = net.forward(&frames, i, f).unwrap_err().to_string();
            assert!(e.contains(msg), "{e}");
        }
        let odd = Tensor::rand([1, 3, 1, 6, 8], (Kind::Float, Device::Cpu));
        let e = net.forward(&odd, 2, 1).unwrap_err().to_string();
        assert!(e.contains("multiples of 4"), "{e}");
    }

    /// Finite differences of λ·prediction + cross-entropy through encoder, recurrence,
    /// decoder feedback and the classifier.
    #[test]
    fn gradients_match_finite_differences() {
        tch::manual_seed(2);
        let (mut model, act) = tiny();
        model.cell = CellKind::Convlstm;
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = ActivityNetwork::new(&vs.root(), &model, &act);
        vs.double();
        let opts = (Kind::Double, Device::Cpu);
        let frames = Tensor::rand([2, 4, 1, 4, 4], opts);
        let labels = Tensor::from_slice(&[2i64, 0]);
        let loss = || {
            let out = net.forward(&frames, 2, 2).unwrap();
            let target = frames.narrow(1, 1, 3);
            let d = &out.frames - &target;
            d.square().mean(Kind::Double) * 0.5
                + out.logits.log_softmax(-1, Kind::Double).nll_loss(&labels)
        };
        let params: Vec<Tensor> = net.named_parameters().into_iter().map(|(_, t)| t).collect();
        check_gradients(&params, loss, 2);
    }
}
