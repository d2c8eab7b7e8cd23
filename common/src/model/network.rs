//! The full network and its rollout (spec §3). Mirrors `ConvLSTMNet` in the reference
//! `code/convlstmnet.py`.
//!
//! Blocks b = 0 … B−1 of `layers_per_block` recurrent layers named `b{b}l{l}` with hidden widths
//! `block_widths[b]` (defaults 4 × 3, widths 32/48/48/32). Skips follow the reference's FIFO:
//! after block b its output is queued; from b ≥ `skip_stride` on the queue's head (the output of
//! block b − `skip_stride`) is concatenated after the current output. So block b's first layer
//! reads `[out_{b−1} | out_{b−1−stride}]` when b − 1 ≥ stride, and the 1×1 output head reads
//! `[out_{B−1} | out_{B−1−stride}]` when B − 1 ≥ stride (defaults: block 3 reads
//! `[out_2 | out_0]` = 80 channels, the head `[out_3 | out_1]` = 80). Optional output sigmoid.
//!
//! Rollout (spec §3.2): I + F − 1 steps from zero states; the output of step t predicts frame
//! t + 1. Step t reads ground-truth frame t for t < I and afterwards the previous prediction, or
//! with scheduled sampling `m·GT_t + (1 − m)·prediction_t` with m from a Bernoulli mask
//! `[B, F − 1]`. Fed-back predictions are not detached.

use std::collections::VecDeque;

use tch::{nn, Device, Kind, Tensor};

use super::compute::ComputeMode;
use super::conv::Conv;
use super::conv_lstm_cell::{ConvLstmCell, ConvLstmCellConfig};
use super::conv_tt_lstm_cell::{ConvTtLstmCell, ConvTtLstmCellConfig};
use super::state::{CellState, NetState};
use super::ttd_conv_lstm_cell::{TtdConvLstmCell, TtdConvLstmCellConfig};
use super::wavefront;
use crate::config::{CellKind, ModelConfig};
use crate::error::{Error, Result};

pub use convtt_core::summary::{layer_plan, LayerSpec};

/// One recurrent layer's cell.
#[derive(Debug)]
pub enum Cell {
    /// Conv-TT-LSTM.
    Tt(ConvTtLstmCell),
    /// ConvLSTM.
    Lstm(ConvLstmCell),
    /// ConvLSTM with a classic tensor-train weight.
    Ttd(TtdConvLstmCell),
}

impl Cell {
    /// The cell `cfg.cell` selects for `input` → `hidden` channels, registered under `p`.
    /// `cfg` must be validated (for `convlstm_ttd`, both channel counts must factorise).
    pub fn from_config(p: &nn::Path, cfg: &ModelConfig, input: i64, hidden: i64) -> Self {
        let k = cfg.filter_size as i64;
        match cfg.cell {
            CellKind::Convttlstm => Cell::Tt(ConvTtLstmCell::new(
                p,
                &ConvTtLstmCellConfig {
                    input_channels: input,
                    hidden_channels: hidden,
                    order: cfg.order,
                    steps: cfg.steps,
                    rank: cfg.rank as i64,
                    kernel: k,
                    init: cfg.init,
                    legacy_pointer_mod_order: cfg.legacy_pointer_mod_order,
                    tt_kernel: cfg.tt_kernel() as i64,
                },
            )),
            CellKind::Convlstm => Cell::Lstm(ConvLstmCell::new(
                p,
                &ConvLstmCellConfig {
                    input_channels: input,
                    hidden_channels: hidden,
                    kernel: k,
                    init: cfg.init,
                },
            )),
            CellKind::ConvlstmTtd => Cell::Ttd(TtdConvLstmCell::new(
                p,
                &TtdConvLstmCellConfig::factorised(
                    input,
                    hidden,
                    k,
                    &cfg.ttd_rank_list(),
                    cfg.init,
                )
                .expect("validated: every channel count factors into ttd_order factors"),
            )),
        }
    }

    /// See [`ConvTtLstmCell::step`] / [`ConvLstmCell::step`].
    pub fn step(&self, x: &Tensor, state: &CellState) -> (Tensor, CellState) {
        match self {
            Cell::Tt(c) => c.step(x, state),
            Cell::Lstm(c) => c.step(x, state),
            Cell::Ttd(c) => c.step(x, state),
        }
    }

    /// See `zero_state` of the cells.
    pub fn zero_state(&self, batch: i64, height: i64, width: i64, device: Device) -> CellState {
        match self {
            Cell::Tt(c) => c.zero_state(batch, height, width, device),
            Cell::Lstm(c) => c.zero_state(batch, height, width, device),
            Cell::Ttd(c) => c.zero_state(batch, height, width, device),
        }
    }

    /// Parameters in state_dict order, names prefixed.
    pub fn named_parameters(&self, prefix: &str) -> Vec<(String, Tensor)> {
        match self {
            Cell::Tt(c) => c.named_parameters(prefix),
            Cell::Lstm(c) => c.named_parameters(prefix),
            Cell::Ttd(c) => c.named_parameters(prefix),
        }
    }
}

/// A recurrent layer: its place in the network and its cell.
#[derive(Debug)]
pub struct Layer {
    /// Name and channels.
    pub spec: LayerSpec,
    /// The cell.
    pub cell: Cell,
}

/// How inputs after the conditioning frames are chosen.
#[derive(Debug)]
pub enum Feedback {
    /// Always the previous prediction (evaluation, or scheduled-sampling ratio ≤ 1e-6).
    Autoregressive,
    /// Scheduled sampling with a 0/1 mask `[B, F − 1]`: 1 takes the ground-truth frame, 0 the
    /// previous prediction.
    Mixed(Tensor),
}

/// What one forward call computes.
#[derive(Debug)]
pub struct Rollout {
    /// Conditioning frames I (≥ 1).
    pub input_frames: usize,
    /// Future frames F (≥ 1).
    pub future_frames: usize,
    /// How many of the last outputs to return (1 … I + F − 1).
    pub output_frames: usize,
    /// Input choice after the conditioning frames.
    pub feedback: Feedback,
    /// With a scheduled-sampling mask: how many of its leading columns are 1 for every sample,
    /// when the caller knows (`None`: read from the mask, which copies a device mask to the
    /// host — not allowed while a CUDA graph is being captured). See
    /// [`teacher_forced_prefix`].
    pub teacher_forced: Option<usize>,
}

impl Rollout {
    /// Evaluation: I frames in, the F predicted future frames out, pure autoregression.
    pub fn eval(input_frames: usize, future_frames: usize) -> Self {
        Self {
            input_frames,
            future_frames,
            output_frames: future_frames,
            feedback: Feedback::Autoregressive,
            teacher_forced: None,
        }
    }

    /// Training: all I + F − 1 next-frame predictions out; `mask` from
    /// [`scheduled_sampling_mask`] (`None`: pure autoregression).
    pub fn training(input_frames: usize, future_frames: usize, mask: Option<Tensor>) -> Self {
        Self {
            input_frames,
            future_frames,
            output_frames: (input_frames + future_frames).saturating_sub(1),
            feedback: mask.map_or(Feedback::Autoregressive, Feedback::Mixed),
            teacher_forced: None,
        }
    }

    /// The same rollout, told how many leading mask columns are all ones (see
    /// [`Rollout::teacher_forced`]).
    pub fn with_teacher_forced(self, columns: usize) -> Self {
        Self {
            teacher_forced: Some(columns),
            ..self
        }
    }

    /// Recurrent steps I + F − 1.
    pub fn steps(&self) -> usize {
        (self.input_frames + self.future_frames).saturating_sub(1)
    }

    /// How many leading steps take the ground-truth frame for every sample: the conditioning
    /// frames, then the steps whose scheduled-sampling mask is 1 throughout the batch (from
    /// [`Rollout::teacher_forced`] when set, else read from the mask).
    pub fn known_steps(&self) -> usize {
        match &self.feedback {
            Feedback::Mixed(m) => {
                self.input_frames
                    + self
                        .teacher_forced
                        .unwrap_or_else(|| teacher_forced_prefix(m))
            }
            Feedback::Autoregressive => self.input_frames,
        }
    }

    /// Frames the input tensor must hold: I, or I + F − 1 with scheduled sampling.
    pub fn frames_needed(&self) -> usize {
        match self.feedback {
            Feedback::Autoregressive => self.input_frames,
            Feedback::Mixed(_) => self.steps(),
        }
    }
}

/// SplitMix64: a tiny seeded generator for scheduled-sampling masks, so a training run's masks
/// depend only on its seed and not on libtorch's global generator or the device.
#[derive(Debug, Clone)]
pub struct MaskRng(u64);

impl MaskRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The reference's teacher-forcing mask: Bernoulli(`ratio`) of shape `[batch, F − 1]` (f32, CPU),
/// or `None` when `ratio ≤ 1e-6` (teacher forcing off).
pub fn scheduled_sampling_mask(
    rng: &mut MaskRng,
    batch: usize,
    future_frames: usize,
    ratio: f64,
) -> Option<Tensor> {
    if ratio <= 1e-6 {
        return None;
    }
    let n = batch * future_frames.saturating_sub(1);
    let v: Vec<f32> = (0..n)
        .map(|_| if rng.next_f64() < ratio { 1.0 } else { 0.0 })
        .collect();
    Some(Tensor::from_slice(&v).reshape([batch as i64, future_frames as i64 - 1]))
}

/// The Conv-TT-LSTM / ConvLSTM video-prediction network.
#[derive(Debug)]
pub struct Network {
    layers: Vec<Layer>,
    head: Conv,
    cfg: ModelConfig,
}

impl Network {
    /// Registers every layer under `p / "layers" / "b{b}l{l}"` and the head under
    /// `p / "layers" / "output"`, so variable names equal the reference state_dict keys
    /// (spec §9). `cfg` must be validated.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let lp = p / "layers";
        let (plan, head_in) = layer_plan(cfg);
        let layers = plan
            .into_iter()
            .map(|spec| {
                let cp = &lp / spec.name.as_str();
                let cell = Cell::from_config(&cp, cfg, spec.input_channels, spec.hidden_channels);
                Layer { spec, cell }
            })
            .collect();
        let head = Conv::new(
            &(&lp / "output"),
            &[cfg.image_channels as i64, head_in, 1, 1],
            cfg.init,
        );
        Self {
            layers,
            head,
            cfg: cfg.clone(),
        }
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The recurrent layers in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Every parameter with its reference name (`layers.b0l0.…`, …, `layers.output.bias`), in
    /// the reference state_dict order.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for layer in &self.layers {
            out.extend(
                layer
                    .cell
                    .named_parameters(&format!("layers.{}.", layer.spec.name)),
            );
        }
        out.extend(self.head.named("layers.output"));
        out
    }

    /// Device and dtype of the parameters.
    pub fn options(&self) -> (Kind, Device) {
        (self.head.weight.kind(), self.head.weight.device())
    }

    /// All-zero states for a sequence's first step.
    pub fn zero_state(&self, batch: i64, height: i64, width: i64) -> NetState {
        let device = self.options().1;
        NetState {
            cells: self
                .layers
                .iter()
                .map(|l| l.cell.zero_state(batch, height, width, device))
                .collect(),
        }
    }

    /// One time step through all layers, skips and the head.
    ///
    /// # Shapes
    /// `x`: `[B, C, H, W]` → prediction of the next frame `[B, C, H, W]`
    pub fn step(&self, x: &Tensor, state: &NetState) -> (Tensor, NetState) {
        let _span = tracing::trace_span!("network_step").entered();
        let mut next = Vec::with_capacity(self.layers.len());
        let y = self.walk(x.shallow_clone(), |li, input| {
            let (h, s) = self.layers[li].cell.step(input, &state.cells[li]);
            next.push(s);
            h
        });
        (y, NetState { cells: next })
    }

    /// The network's wiring: `layer(i, input)` computes recurrent layer i's output from its
    /// input, in layer order; the skips between blocks and the head (with the optional
    /// sigmoid) are applied here. Any leading axis works, so the fast path passes several time
    /// steps stacked along the batch axis.
    ///
    /// # Shapes
    /// `x`: `[N, C, H, W]` → `[N, C, H, W]`; `layer` maps `[N, Cin_i, H, W]` → `[N, Ch_i, H, W]`
    pub(crate) fn walk(
        &self,
        x: Tensor,
        mut layer: impl FnMut(usize, &Tensor) -> Tensor,
    ) -> Tensor {
        let mut queue: VecDeque<Tensor> = VecDeque::new();
        let mut input = x;
        let mut li = 0;
        for b in 0..self.cfg.block_widths.len() {
            for _ in 0..self.cfg.layers_per_block {
                input = layer(li, &input);
                li += 1;
            }
            queue.push_back(input.shallow_clone());
            if b >= self.cfg.skip_stride {
                let skip = queue
                    .pop_front()
                    .expect("the queue holds more than skip_stride outputs");
                input = Tensor::cat(&[&input, &skip], 1);
            }
        }
        let y = self.head.forward(&input);
        if self.cfg.output_sigmoid {
            y.sigmoid()
        } else {
            y
        }
    }

    /// Runs a rollout (spec §3.2) from zero states. `frames` is moved to the parameters' device
    /// and dtype.
    ///
    /// # Shapes
    /// `frames`: `[B, T, C, H, W]` with T ≥ I (or ≥ I + F − 1 with scheduled sampling) →
    /// `[B, O, C, H, W]`, O = `rollout.output_frames`
    ///
    /// # Errors
    /// [`Error::Shape`] when `frames`, the rollout lengths or the mask do not fit.
    pub fn forward(&self, frames: &Tensor, rollout: &Rollout) -> Result<Tensor> {
        let _span = tracing::trace_span!("network_forward").entered();
        let (inputs, dims) = RolloutInputs::new(self, frames, rollout)?;
        let fast = ComputeMode::current()
            .fast_path()
            .then(|| wavefront::rollout(self, &inputs, rollout, dims))
            .flatten();
        let outputs = match fast {
            Some(outputs) => outputs,
            None => {
                let (b, h, w) = dims;
                let mut state = self.zero_state(b, h, w);
                let mut outputs: Vec<Tensor> = Vec::with_capacity(rollout.steps());
                for t in 0..rollout.steps() {
                    let x = inputs.at(t, outputs.last());
                    let (y, next) = self.step(&x, &state);
                    outputs.push(y);
                    state = next;
                }
                outputs
            }
        };
        let first = outputs.len() - rollout.output_frames;
        Ok(Tensor::stack(&outputs[first..], 1))
    }

    pub(crate) fn check_rollout(&self, frames: &Tensor, r: &Rollout) -> Result<(i64, i64, i64)> {
        let size = frames.size();
        let [b, t, c, h, w] = size[..] else {
            return Err(Error::Shape(format!(
                "frames must be [B, T, C, H, W], got {size:?}"
            )));
        };
        let fail = |msg: String| Err(Error::Shape(msg));
        if !frames.is_floating_point() {
            return fail(format!(
                "frames must be floating point, got {:?}",
                frames.kind()
            ));
        }
        if c != self.cfg.image_channels as i64 {
            return fail(format!(
                "frames have {c} channels, the model expects {}",
                self.cfg.image_channels
            ));
        }
        if b < 1 || h < 1 || w < 1 {
            return fail(format!("frames must not be empty, got {size:?}"));
        }
        if r.input_frames < 1 || r.future_frames < 1 {
            return fail(format!(
                "need at least one input and one future frame (got I = {}, F = {})",
                r.input_frames, r.future_frames
            ));
        }
        if r.output_frames < 1 || r.output_frames > r.steps() {
            return fail(format!(
                "output_frames must be in 1 … {} (got {})",
                r.steps(),
                r.output_frames
            ));
        }
        if (t as usize) < r.frames_needed() {
            return fail(format!(
                "the rollout needs {} input frames, got T = {t}",
                r.frames_needed()
            ));
        }
        if let Feedback::Mixed(m) = &r.feedback {
            let want = [b, r.future_frames as i64 - 1];
            if m.size() != want {
                return fail(format!(
                    "scheduled-sampling mask must be {want:?}, got {:?}",
                    m.size()
                ));
            }
        }
        Ok((b, h, w))
    }
}

/// The inputs of a rollout's steps, on the parameters' device and dtype: step t takes the
/// ground-truth frame while conditioning, then the previous prediction — or, with scheduled
/// sampling, the mix of both that the mask picks per sample. Shared by [`Network::forward`]
/// and the recomputing backward pass, so both feed the cells alike.
pub(crate) struct RolloutInputs {
    frames: Tensor,
    mask: Option<Tensor>,
    input_frames: usize,
    batch: i64,
}

impl RolloutInputs {
    /// Checks `frames` against the rollout; returns the inputs and `(B, H, W)`.
    pub(crate) fn new(
        net: &Network,
        frames: &Tensor,
        rollout: &Rollout,
    ) -> Result<(Self, (i64, i64, i64))> {
        let (b, h, w) = net.check_rollout(frames, rollout)?;
        let (kind, device) = net.options();
        let mask = match &rollout.feedback {
            Feedback::Mixed(m) => Some(m.to_device(device).to_kind(kind)),
            Feedback::Autoregressive => None,
        };
        let inputs = RolloutInputs {
            frames: frames.to_device(device).to_kind(kind),
            mask,
            input_frames: rollout.input_frames,
            batch: b,
        };
        Ok((inputs, (b, h, w)))
    }

    /// The inputs of the first `steps` steps, which must all be known
    /// ([`Rollout::known_steps`]), time-major along the batch axis.
    ///
    /// # Shapes
    /// → `[steps · B, C, H, W]` (step t's samples at rows t·B … t·B + B − 1)
    pub(crate) fn known_sequence(&self, steps: usize) -> Tensor {
        let f = self.frames.narrow(1, 0, steps as i64).transpose(0, 1);
        let size = f.size();
        f.reshape([size[0] * size[1], size[2], size[3], size[4]])
    }

    /// The input of step `t`, given the previous step's prediction (needed once t ≥ I).
    pub(crate) fn at(&self, t: usize, prev: Option<&Tensor>) -> Tensor {
        if t < self.input_frames {
            return self.frames.select(1, t as i64);
        }
        let prev = prev.expect("t ≥ I ≥ 1 has a previous prediction");
        match &self.mask {
            None => prev.shallow_clone(),
            Some(m) => {
                let m = m
                    .select(1, (t - self.input_frames) as i64)
                    .view([self.batch, 1, 1, 1]);
                self.frames.select(1, t as i64) * &m + prev * (1.0 - &m)
            }
        }
    }
}

/// The number of leading columns of a scheduled-sampling mask `[B, F − 1]` that are 1 for
/// every sample (those steps read the ground-truth frame: `GT·1 + prediction·0`).
pub fn teacher_forced_prefix(mask: &Tensor) -> usize {
    let all_ones = mask.eq(1.0).all_dim(0, false).to_device(Device::Cpu);
    let cols = Vec::<bool>::try_from(&all_ones).unwrap_or_default();
    cols.iter().take_while(|&&one| one).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::summary;
    use crate::model::testing::{check_gradients, max_abs_diff};

    fn released() -> ModelConfig {
        ModelConfig::default()
    }

    fn convlstm() -> ModelConfig {
        ModelConfig {
            cell: CellKind::Convlstm,
            ..ModelConfig::default()
        }
    }

    fn tiny(widths: &[usize], stride: usize) -> ModelConfig {
        ModelConfig {
            filter_size: 3,
            order: 2,
            steps: 3,
            rank: 2,
            block_widths: widths.to_vec(),
            layers_per_block: 1,
            skip_stride: stride,
            ..ModelConfig::default()
        }
    }

    fn names_and_shapes(cfg: &ModelConfig) -> (Vec<(String, Vec<i64>)>, nn::VarStore) {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs.root(), cfg);
        let named = net
            .named_parameters()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect();
        (named, vs)
    }

    /// The full state_dict table of spec §9.3, generated from its rule: per layer
    /// (Cin, Ch) from §3.1, TT tensors in the order layers.0–2 then layers_.0–2.
    fn expected_released_table() -> Vec<(String, Vec<i64>)> {
        let cin_ch = [
            ("b0l0", 1, 32),
            ("b0l1", 32, 32),
            ("b0l2", 32, 32),
            ("b1l0", 32, 48),
            ("b1l1", 48, 48),
            ("b1l2", 48, 48),
            ("b2l0", 48, 48),
            ("b2l1", 48, 48),
            ("b2l2", 48, 48),
            ("b3l0", 80, 32),
            ("b3l1", 32, 32),
            ("b3l2", 32, 32),
        ];
        let mut t = Vec::new();
        for (lid, cin, ch) in cin_ch {
            for l in 0..2 {
                t.push((format!("layers.{lid}.layers.{l}.weight"), vec![8, 8, 5, 5]));
                t.push((format!("layers.{lid}.layers.{l}.bias"), vec![8]));
            }
            t.push((
                format!("layers.{lid}.layers.2.weight"),
                vec![4 * ch, cin + 8, 5, 5],
            ));
            t.push((format!("layers.{lid}.layers.2.bias"), vec![4 * ch]));
            for l in 0..3 {
                t.push((
                    format!("layers.{lid}.layers_.{l}.weight"),
                    vec![8, ch, 5, 5, 1],
                ));
                t.push((format!("layers.{lid}.layers_.{l}.bias"), vec![8]));
            }
        }
        t.push(("layers.output.weight".into(), vec![1, 80, 1, 1]));
        t.push(("layers.output.bias".into(), vec![1]));
        t
    }

    fn row(name: &str, shape: &[i64]) -> (String, Vec<i64>) {
        (name.to_owned(), shape.to_vec())
    }

    #[test]
    fn released_config_state_dict_names_shapes_and_total() {
        let (got, vs) = names_and_shapes(&released());
        assert_eq!(got.len(), 146);
        assert_eq!(got, expected_released_table());
        // Literal rows copied from spec §9.3.
        for r in [
            row("layers.b0l0.layers.2.weight", &[128, 9, 5, 5]),
            row("layers.b0l1.layers.2.weight", &[128, 40, 5, 5]),
            row("layers.b1l0.layers.2.weight", &[192, 40, 5, 5]),
            row("layers.b1l1.layers.2.weight", &[192, 56, 5, 5]),
            row("layers.b3l0.layers.2.weight", &[128, 88, 5, 5]),
            row("layers.b1l0.layers_.2.weight", &[8, 48, 5, 5, 1]),
            row("layers.b3l2.layers_.0.weight", &[8, 32, 5, 5, 1]),
            row("layers.output.weight", &[1, 80, 1, 1]),
        ] {
            assert!(got.contains(&r), "missing {r:?}");
        }
        let total: i64 = got.iter().map(|(_, s)| s.iter().product::<i64>()).sum();
        assert_eq!(total, 2_687_281);
        // The var store holds exactly these names (sorted list equality).
        let mut vs_rows: Vec<(String, Vec<i64>)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect();
        vs_rows.sort();
        let mut sorted = got;
        sorted.sort();
        assert_eq!(vs_rows, sorted);
    }

    #[test]
    fn convlstm_state_dict_names_shapes_and_total() {
        let (got, vs) = names_and_shapes(&convlstm());
        let cin_ch = [
            ("b0l0", 1, 32),
            ("b0l1", 32, 32),
            ("b0l2", 32, 32),
            ("b1l0", 32, 48),
            ("b1l1", 48, 48),
            ("b1l2", 48, 48),
            ("b2l0", 48, 48),
            ("b2l1", 48, 48),
            ("b2l2", 48, 48),
            ("b3l0", 80, 32),
            ("b3l1", 32, 32),
            ("b3l2", 32, 32),
        ];
        let mut want = Vec::new();
        for (lid, cin, ch) in cin_ch {
            want.push((
                format!("layers.{lid}.conv.weight"),
                vec![4 * ch, cin + ch, 5, 5],
            ));
            want.push((format!("layers.{lid}.conv.bias"), vec![4 * ch]));
        }
        want.push(row("layers.output.weight", &[1, 80, 1, 1]));
        want.push(row("layers.output.bias", &[1]));
        assert_eq!(got.len(), 26);
        assert_eq!(got, want);
        // Literal rows from spec §9.4.
        for r in [
            row("layers.b0l0.conv.weight", &[128, 33, 5, 5]),
            row("layers.b1l0.conv.weight", &[192, 80, 5, 5]),
            row("layers.b3l0.conv.weight", &[128, 112, 5, 5]),
            row("layers.b3l2.conv.bias", &[128]),
        ] {
            assert!(got.contains(&r), "missing {r:?}");
        }
        let total: i64 = got.iter().map(|(_, s)| s.iter().product::<i64>()).sum();
        assert_eq!(total, 3_973_201);
        assert_eq!(vs.variables().len(), 26);
    }

    /// Spec §3.4 first table, built for real (the grid uses the formula, see `summary`).
    #[test]
    fn built_parameter_totals_match_spec_3_4() {
        let cases = [
            (
                ModelConfig {
                    steps: 5,
                    ..released()
                },
                3_263_281,
            ),
            (
                ModelConfig {
                    image_channels: 3,
                    ..convlstm()
                },
                3_979_763,
            ),
            (
                ModelConfig {
                    image_channels: 3,
                    ..released()
                },
                2_693_843,
            ),
            (
                ModelConfig {
                    filter_size: 3,
                    ..convlstm()
                },
                1_431_633,
            ),
            (
                ModelConfig {
                    filter_size: 3,
                    ..released()
                },
                969_009,
            ),
        ];
        for (cfg, want) in cases {
            let vs = nn::VarStore::new(Device::Cpu);
            let _net = Network::new(&vs.root(), &cfg);
            let got: i64 = vs
                .trainable_variables()
                .iter()
                .map(|t| t.numel() as i64)
                .sum();
            assert_eq!(got, want, "{cfg:?}");
            assert_eq!(summary::total_parameters(&cfg), want);
        }
    }

    /// `convtt-launch sweep plan` counts parameters with `convtt_core::summary` (no libtorch):
    /// the formula equals the built network across the paper's S/N/C/M grid corners, the
    /// ConvLSTM baseline and narrow, unusual layouts.
    #[test]
    fn summary_formula_equals_built_networks_across_the_sncm_grid() {
        let narrow = |s: usize, n: usize, c: usize, m: usize| ModelConfig {
            filter_size: s,
            order: n,
            rank: c,
            steps: m,
            block_widths: vec![8, 8, 8, 8],
            layers_per_block: 1,
            ..released()
        };
        let mut cases = vec![
            narrow(3, 1, 4, 1),
            narrow(3, 2, 8, 3),
            narrow(5, 3, 16, 5),
            narrow(5, 5, 4, 5),
            narrow(3, 5, 16, 5),
            ModelConfig {
                image_channels: 3,
                block_widths: vec![6, 10, 4],
                skip_stride: 1,
                ..narrow(5, 2, 8, 3)
            },
            ModelConfig {
                cell: CellKind::Convlstm,
                ..narrow(3, 1, 4, 1)
            },
        ];
        cases.push(ModelConfig {
            filter_size: 3,
            order: 1,
            rank: 16,
            steps: 5,
            ..released()
        });
        for cfg in cases {
            let vs = nn::VarStore::new(Device::Cpu);
            let _net = Network::new(&vs.root(), &cfg);
            let built: i64 = vs
                .trainable_variables()
                .iter()
                .map(|t| t.numel() as i64)
                .sum();
            assert_eq!(summary::total_parameters(&cfg), built, "{cfg:?}");
        }
    }

    /// Unusual block counts and strides: the channel plan agrees with the runtime queue (a
    /// mismatch would make a convolution fail), and the head's skip appears only when
    /// B − 1 ≥ stride.
    #[test]
    fn skip_rule_generalises() {
        for (widths, stride, head_in) in [
            (vec![2, 3, 4, 5, 6], 1, 6 + 5),
            (vec![2, 3, 4], 2, 4 + 2),
            (vec![2, 3], 2, 3),
            (vec![3], 1, 3),
        ] {
            let cfg = tiny(&widths, stride);
            assert_eq!(layer_plan(&cfg).1, head_in);
            let vs = nn::VarStore::new(Device::Cpu);
            let net = Network::new(&vs.root(), &cfg);
            let y = net.forward(
                &Tensor::rand([1, 2, 1, 4, 4], (Kind::Float, Device::Cpu)),
                &Rollout::eval(2, 2),
            );
            assert_eq!(y.unwrap().size(), [1, 2, 1, 4, 4]);
        }
        let (plan, _) = layer_plan(&tiny(&[2, 3, 4, 5, 6], 1));
        let cin: Vec<i64> = plan.iter().map(|l| l.input_channels).collect();
        assert_eq!(cin, [1, 2, 3 + 2, 4 + 3, 5 + 4]);
    }

    /// A 10→30 rollout starts with the 10→10 rollout (spec §3.3); O = I + F − 1 returns the
    /// conditioning-phase predictions first.
    #[test]
    fn long_rollouts_extend_short_ones() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs.root(), &tiny(&[3, 3, 3], 1));
        let frames = Tensor::rand([2, 10, 1, 6, 6], (Kind::Float, Device::Cpu));
        let short = net.forward(&frames, &Rollout::eval(4, 3)).unwrap();
        let long = net.forward(&frames, &Rollout::eval(4, 9)).unwrap();
        assert_eq!(long.size(), [2, 9, 1, 6, 6]);
        assert!(long.narrow(1, 0, 3).equal(&short));
        let all = net
            .forward(
                &frames,
                &Rollout {
                    output_frames: 6,
                    ..Rollout::eval(4, 3)
                },
            )
            .unwrap();
        assert!(all.narrow(1, 3, 3).equal(&short));
    }

    /// An all-ones mask is teacher forcing (inputs = ground truth), an all-zeros mask equals
    /// autoregression, and a mixed mask switches per sample.
    #[test]
    fn scheduled_sampling_mask_selects_per_sample() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs.root(), &tiny(&[3, 3], 1));
        let opts = (Kind::Float, Device::Cpu);
        let frames = Tensor::rand([2, 6, 1, 5, 5], opts);
        let (i, f) = (3, 4);
        let ones = Tensor::ones([2, 3], opts);
        let forced = net
            .forward(&frames, &Rollout::training(i, f, Some(ones)))
            .unwrap();
        // Teacher forcing = an eval rollout with O = I + F − 1 where every frame is an input.
        let gt = net
            .forward(
                &frames,
                &Rollout {
                    output_frames: 6,
                    ..Rollout::eval(6, 1)
                },
            )
            .unwrap();
        assert!(max_abs_diff(&forced, &gt) < 1e-6);
        let zeros = Tensor::zeros([2, 3], opts);
        let free = net
            .forward(&frames, &Rollout::training(i, f, Some(zeros)))
            .unwrap();
        let auto = net
            .forward(&frames, &Rollout::training(i, f, None))
            .unwrap();
        assert!(max_abs_diff(&free, &auto) < 1e-6);
        assert!(max_abs_diff(&free, &forced) > 1e-4);
        // Sample 0 forced, sample 1 free.
        let mixed_mask = Tensor::from_slice(&[1f32, 1.0, 1.0, 0.0, 0.0, 0.0]).reshape([2, 3]);
        let mixed = net
            .forward(&frames, &Rollout::training(i, f, Some(mixed_mask)))
            .unwrap();
        assert!(max_abs_diff(&mixed.get(0), &forced.get(0)) < 1e-6);
        assert!(max_abs_diff(&mixed.get(1), &auto.get(1)) < 1e-6);
    }

    /// Outputs and every parameter's gradient of one rollout, under `mode`.
    fn rollout_and_gradients(
        net: &Network,
        vs: &nn::VarStore,
        frames: &Tensor,
        rollout: &Rollout,
        mode: ComputeMode,
    ) -> (Tensor, Vec<(String, Tensor)>) {
        let _g = mode.enter();
        for mut p in vs.trainable_variables() {
            p.zero_grad();
        }
        let out = net.forward(frames, rollout).unwrap();
        // A loss that weighs every output element differently.
        let probe = Tensor::linspace(-1.0, 2.0, out.numel() as i64, (out.kind(), out.device()))
            .view(out.size().as_slice());
        (&out * probe).sum(out.kind()).backward();
        let mut grads: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.grad().copy()))
            .collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        (out.detach(), grads)
    }

    /// The fast path (wavefront, split gate convolution, fused preprocessing, channels-last,
    /// each alone and all together) computes the reference path's outputs and gradients to
    /// 1e-5 relative, for Conv-TT-LSTM (windows S = 1 and S > 1, the masked `tt_kernel`, the
    /// legacy pointer) and ConvLSTM, in evaluation, teacher forcing, scheduled sampling whose
    /// first columns are all ones (the wavefront covers them) and pure autoregression.
    #[test]
    fn fast_path_equals_the_reference_path() {
        let tt = |order, steps, tt_filter: usize, legacy| ModelConfig {
            order,
            steps,
            tt_filter_size: tt_filter,
            legacy_pointer_mod_order: legacy,
            ..tiny(&[3, 4, 3], 1)
        };
        let configs = [
            tt(2, 3, 0, false),
            tt(3, 3, 0, false),
            tt(2, 4, 1, true),
            ModelConfig {
                cell: CellKind::Convlstm,
                layers_per_block: 2,
                ..tiny(&[3, 4, 3], 1)
            },
        ];
        let opts = (Kind::Float, Device::Cpu);
        let (i, f) = (3, 5);
        let mixed = [1f32, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0];
        let rollouts = || {
            [
                Rollout::eval(i, f),
                Rollout::training(i, f, Some(Tensor::ones([2, 4], opts))),
                Rollout::training(i, f, Some(Tensor::from_slice(&mixed).reshape([2, 4]))),
                Rollout::training(i, f, None),
            ]
        };
        let fast = |wavefront, fused_tt, channels_last| ComputeMode {
            wavefront,
            fused_tt,
            channels_last,
            fused_cell_update: true,
            ..ComputeMode::REFERENCE
        };
        let modes = [
            fast(true, false, false),
            fast(false, true, false),
            fast(false, false, true),
            fast(true, true, true),
        ];
        for cfg in &configs {
            tch::manual_seed(5);
            let vs = nn::VarStore::new(Device::Cpu);
            let net = Network::new(&vs.root(), cfg);
            let frames = Tensor::rand([2, (i + f) as i64, 1, 7, 6], opts);
            for r in rollouts() {
                let (want, want_g) =
                    rollout_and_gradients(&net, &vs, &frames, &r, ComputeMode::REFERENCE);
                for mode in modes {
                    let (got, got_g) = rollout_and_gradients(&net, &vs, &frames, &r, mode);
                    let rel = |a: &Tensor, b: &Tensor| {
                        max_abs_diff(a, b) / b.abs().max().double_value(&[]).max(1e-30)
                    };
                    let e = rel(&got, &want);
                    assert!(e < 1e-5, "{mode:?} {cfg:?}: outputs differ by {e}");
                    for ((name, g), (_, wg)) in got_g.iter().zip(&want_g) {
                        let e = rel(g, wg);
                        assert!(e < 1e-5, "{mode:?} {cfg:?}: ∂/∂{name} differs by {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn mask_rng_is_deterministic_and_follows_the_ratio() {
        let draw = |seed| scheduled_sampling_mask(&mut MaskRng::new(seed), 8, 10, 0.3).unwrap();
        assert!(draw(5).equal(&draw(5)));
        assert!(!draw(5).equal(&draw(6)));
        assert_eq!(draw(5).size(), [8, 9]);
        assert!(scheduled_sampling_mask(&mut MaskRng::new(1), 8, 10, 1e-7).is_none());
        let all = scheduled_sampling_mask(&mut MaskRng::new(1), 4, 5, 1.0).unwrap();
        assert_eq!(all.sum(Kind::Float).double_value(&[]), 16.0);
        let big = scheduled_sampling_mask(&mut MaskRng::new(2), 100, 101, 0.3).unwrap();
        let mean = big.mean(Kind::Float).double_value(&[]);
        assert!((mean - 0.3).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn bad_inputs_are_shape_errors() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs.root(), &tiny(&[2], 1));
        let opts = (Kind::Float, Device::Cpu);
        let cases = [
            (
                Tensor::zeros([1, 3, 4, 4], opts),
                Rollout::eval(2, 1),
                "[B, T, C, H, W]",
            ),
            (
                Tensor::zeros([1, 3, 2, 4, 4], opts),
                Rollout::eval(2, 1),
                "channels",
            ),
            (
                Tensor::zeros([1, 1, 1, 4, 4], opts),
                Rollout::eval(2, 1),
                "needs 2 input frames",
            ),
            (
                Tensor::zeros([1, 2, 1, 4, 4], opts),
                Rollout::training(2, 3, Some(Tensor::ones([1, 2], opts))),
                "needs 4",
            ),
            (
                Tensor::zeros([1, 4, 1, 4, 4], opts),
                Rollout::training(2, 3, Some(Tensor::ones([2, 2], opts))),
                "mask",
            ),
            (
                Tensor::zeros([1, 4, 1, 4, 4], opts),
                Rollout::eval(2, 0),
                "at least one",
            ),
            (
                Tensor::zeros([1, 4, 1, 4, 4], opts),
                Rollout::training(0, 0, None),
                "at least one",
            ),
            (
                Tensor::zeros([1, 4, 1, 4, 4], (Kind::Int, Device::Cpu)),
                Rollout::eval(2, 1),
                "floating",
            ),
        ];
        for (frames, rollout, want) in cases {
            let err = net.forward(&frames, &rollout).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    /// Finite differences through the whole network with autoregressive feedback: gradients
    /// flow through fed-back predictions (a detach would break this check).
    #[test]
    fn network_gradients_match_finite_differences_through_feedback() {
        tch::manual_seed(6);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let cfg = ModelConfig {
            output_sigmoid: true,
            ..tiny(&[2, 2], 1)
        };
        let net = Network::new(&vs.root(), &cfg);
        vs.double();
        let opts = (Kind::Double, Device::Cpu);
        let frames = Tensor::rand([1, 2, 1, 4, 4], opts);
        let probe = Tensor::randn([1, 1, 1, 4, 4], opts);
        // Only the last output, which depends on the parameters also through two fed-back
        // predictions.
        let loss = || {
            let y = net
                .forward(
                    &frames,
                    &Rollout {
                        output_frames: 1,
                        ..Rollout::eval(2, 3)
                    },
                )
                .unwrap();
            (y * &probe).sum(Kind::Double)
        };
        let params: Vec<Tensor> = net.named_parameters().into_iter().map(|(_, t)| t).collect();
        check_gradients(&params, loss, 2);
        // The same loss with detached feedback has a different gradient for the head weight.
        let mut head_w = params[params.len() - 2].shallow_clone();
        head_w.zero_grad();
        loss().backward();
        let g_full = head_w.grad().copy();
        head_w.zero_grad();
        let mut state = net.zero_state(1, 4, 4);
        let mut y = Tensor::zeros([1, 1, 4, 4], opts);
        for t in 0..4 {
            let x = if t < 2 {
                frames.select(1, t)
            } else {
                y.detach()
            };
            let (out, next) = net.step(&x, &state);
            y = out;
            state = next;
        }
        (y.unsqueeze(1) * &probe).sum(Kind::Double).backward();
        assert!(max_abs_diff(&g_full, &head_w.grad()) > 1e-8);
    }
}
