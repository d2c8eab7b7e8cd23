//! Parameter, FLOP and activation-memory accounting from a [`ModelConfig`] alone (spec §2.2,
//! §3.4–§3.6), for `convtt-worker model-info`, `convtt-launch sweep plan` (which must not link
//! libtorch, hence this lives in convtt-core) and sanity checks. Pure arithmetic; the tests check
//! it against the spec's tables here and against built networks in `convtt-common`
//! (`model::network` tests).
//!
//! Counting rules:
//! * Parameters: every weight and bias element.
//! * MACs (multiply-accumulates) per predicted frame and sample: convolution weight elements
//!   (biases excluded) × H × W, summed over all convolutions of one recurrent step, which is the
//!   reference README's "multiplications for one-step prediction per sample" as reconstructed in
//!   spec §3.6 (the README's own numbers are ≈ 2.4 % lower; that rule is unknown).
//! * Training step: ≈ 3 × forward (forward + backward ≈ 2 × forward) over I + F − 1 recurrent
//!   steps × batch.
//! * Activation memory: the f32 tensors autograd keeps per layer and step (concatenated
//!   convolution inputs, convolution outputs, gate activations, C, tanh C, H), × H × W ×
//!   (I + F − 1) × batch. An estimate: libtorch's allocator and workspace come on top.

use serde::Serialize;

use crate::config::{CellKind, ModelConfig};

/// Position and channel counts of one recurrent layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    /// `b{block}l{layer}`.
    pub name: String,
    /// Block index.
    pub block: usize,
    /// Layer index within the block.
    pub index: usize,
    /// Input channels Cin.
    pub input_channels: i64,
    /// Hidden channels Ch.
    pub hidden_channels: i64,
}

/// The recurrent layers in order and the output head's input channels, per the skip rule in
/// the module docs (the reference constructor's channel arithmetic).
pub fn layer_plan(cfg: &ModelConfig) -> (Vec<LayerSpec>, i64) {
    let w: Vec<i64> = cfg.block_widths.iter().map(|&w| w as i64).collect();
    let stride = cfg.skip_stride;
    let mut layers = Vec::new();
    for (b, &width) in w.iter().enumerate() {
        for l in 0..cfg.layers_per_block {
            let input_channels = if l > 0 {
                width
            } else if b == 0 {
                cfg.image_channels as i64
            } else if b > stride {
                w[b - 1] + w[b - 1 - stride]
            } else {
                w[b - 1]
            };
            layers.push(LayerSpec {
                name: format!("b{b}l{l}"),
                block: b,
                index: l,
                input_channels,
                hidden_channels: width,
            });
        }
    }
    let last = w.len() - 1;
    let head = if last >= stride {
        w[last] + w[last - stride]
    } else {
        w[last]
    };
    (layers, head)
}

/// Accounting for one recurrent layer (or the head).
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    /// `b{b}l{l}` or `output`.
    pub name: String,
    /// Input channels.
    pub input_channels: i64,
    /// Output (hidden) channels.
    pub output_channels: i64,
    /// Weights and biases.
    pub parameters: i64,
    /// Weight elements (biases excluded) = MACs per pixel per step.
    pub macs_per_pixel: i64,
    /// f32 elements kept for backward per pixel per step (estimate).
    pub activations_per_pixel: i64,
}

/// Whole-model accounting for one frame size, batch and rollout.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Recurrent layers, then `output`.
    pub layers: Vec<LayerSummary>,
    /// Σ parameters.
    pub total_parameters: i64,
    /// Frame height.
    pub height: i64,
    /// Frame width.
    pub width: i64,
    /// MACs to predict one frame of one sample (one recurrent step).
    pub macs_per_frame: i64,
    /// Batch size of the training-step figures.
    pub batch: i64,
    /// Recurrent steps of a training rollout, I + F − 1.
    pub training_steps: i64,
    /// ≈ 3 × `macs_per_frame` × steps × batch.
    pub macs_per_training_step: i64,
    /// Estimated bytes of activations kept for backward in one training step (f32).
    pub activation_bytes: i64,
}

/// Parameters of one recurrent layer.
pub fn layer_parameters(cfg: &ModelConfig, l: &LayerSpec) -> i64 {
    layer_weights(cfg, l) + layer_biases(cfg, l)
}

fn layer_weights(cfg: &ModelConfig, l: &LayerSpec) -> i64 {
    let (cin, ch, k2) = (
        l.input_channels,
        l.hidden_channels,
        (cfg.filter_size * cfg.filter_size) as i64,
    );
    match cfg.cell {
        CellKind::Convlstm => (cin + ch) * 4 * ch * k2,
        CellKind::Convttlstm => {
            let (n, c, s) = (cfg.order as i64, cfg.rank as i64, cfg.window() as i64);
            (n - 1) * c * c * k2 + (cin + c) * 4 * ch * k2 + n * c * ch * k2 * s
        }
    }
}

fn layer_biases(cfg: &ModelConfig, l: &LayerSpec) -> i64 {
    let ch = l.hidden_channels;
    match cfg.cell {
        CellKind::Convlstm => 4 * ch,
        CellKind::Convttlstm => {
            let (n, c) = (cfg.order as i64, cfg.rank as i64);
            (n - 1) * c + 4 * ch + n * c
        }
    }
}

fn layer_activations(cfg: &ModelConfig, l: &LayerSpec) -> i64 {
    let (cin, ch) = (l.input_channels, l.hidden_channels);
    // z (4Ch), the four gate activations (4Ch), C, tanh C, H.
    let lstm = 4 * ch + 4 * ch + 3 * ch;
    match cfg.cell {
        CellKind::Convlstm => (cin + ch) + lstm,
        CellKind::Convttlstm => {
            let (n, c, s) = (cfg.order as i64, cfg.rank as i64, cfg.window() as i64);
            // Window concatenations, U_l, core outputs and sums, [X | T].
            n * s * ch + n * c + 2 * (n - 1) * c + (cin + c) + lstm
        }
    }
}

/// Σ parameters of the network built from `cfg`.
pub fn total_parameters(cfg: &ModelConfig) -> i64 {
    summarize(cfg, 1, 1, 1, 1).total_parameters
}

/// Accounting for frames of `height` × `width`, a training batch and I + F − 1 = `steps`.
pub fn summarize(
    cfg: &ModelConfig,
    height: i64,
    width: i64,
    batch: i64,
    steps: i64,
) -> ModelSummary {
    let (plan, head_in) = layer_plan(cfg);
    let mut layers: Vec<LayerSummary> = plan
        .iter()
        .map(|l| LayerSummary {
            name: l.name.clone(),
            input_channels: l.input_channels,
            output_channels: l.hidden_channels,
            parameters: layer_parameters(cfg, l),
            macs_per_pixel: layer_weights(cfg, l),
            activations_per_pixel: layer_activations(cfg, l),
        })
        .collect();
    let img = cfg.image_channels as i64;
    let sigmoid = if cfg.output_sigmoid { img } else { 0 };
    layers.push(LayerSummary {
        name: "output".into(),
        input_channels: head_in,
        output_channels: img,
        parameters: head_in * img + img,
        macs_per_pixel: head_in * img,
        activations_per_pixel: head_in + img + sigmoid,
    });
    let pixels = height * width;
    let macs_per_frame = layers.iter().map(|l| l.macs_per_pixel).sum::<i64>() * pixels;
    let act: i64 = layers.iter().map(|l| l.activations_per_pixel).sum();
    ModelSummary {
        total_parameters: layers.iter().map(|l| l.parameters).sum(),
        layers,
        height,
        width,
        macs_per_frame,
        batch,
        training_steps: steps,
        macs_per_training_step: 3 * macs_per_frame * steps * batch,
        activation_bytes: act * pixels * steps * batch * 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tt(order: usize, steps: usize, rank: usize) -> ModelConfig {
        ModelConfig {
            order,
            steps,
            rank,
            ..ModelConfig::default()
        }
    }

    /// Spec §3.4 grid (k = 5, one channel), in millions rounded to three decimals.
    #[test]
    fn parameter_grid_of_spec_3_4() {
        let grid = [
            (1, 1, [2.216, 2.456, 2.937]),
            (1, 3, [2.312, 2.648, 3.321]),
            (1, 5, [2.408, 2.840, 3.705]),
            (2, 3, [2.365, 2.764, 3.590]),
            (2, 5, [2.557, 3.148, 4.358]),
            (3, 3, [2.322, 2.687, 3.475]),
            (3, 5, [2.610, 3.263, 4.627]),
            (3, 7, [2.898, 3.839, 5.779]),
            (5, 5, [2.428, 2.918, 4.013]),
            (5, 7, [2.908, 3.878, 5.933]),
        ];
        for (n, m, row) in grid {
            for (rank, want) in [4, 8, 16].into_iter().zip(row) {
                let got = total_parameters(&tt(n, m, rank)) as f64 / 1e6;
                assert!(
                    (got - want).abs() < 0.0005 + 1e-9,
                    "N={n} M={m} C={rank}: {got:.4}M vs {want}M"
                );
            }
        }
    }

    /// Spec §3.5 per-layer table.
    #[test]
    fn per_layer_counts_of_spec_3_5() {
        let by_name = |cfg: &ModelConfig| -> Vec<i64> {
            summarize(cfg, 1, 1, 1, 1)
                .layers
                .iter()
                .map(|l| l.parameters)
                .collect()
        };
        let lstm = ModelConfig {
            cell: CellKind::Convlstm,
            ..ModelConfig::default()
        };
        let (a, b, c, d, e) = (105_728, 204_928, 384_192, 460_992, 358_528);
        assert_eq!(by_name(&lstm), [a, b, b, c, d, d, d, d, d, e, b, b, 81]);
        let (a, b, c, d, e) = (51_368, 150_568, 224_232, 301_032, 304_168);
        assert_eq!(
            by_name(&tt(3, 3, 8)),
            [a, b, b, c, d, d, d, d, d, e, b, b, 81]
        );
        let (a, b, c, d, e) = (89_768, 188_968, 281_832, 358_632, 342_568);
        assert_eq!(
            by_name(&tt(3, 5, 8)),
            [a, b, b, c, d, d, d, d, d, e, b, b, 81]
        );
    }

    /// Spec §3.6: weight multiplications per pixel 3,971,280 (ConvLSTM) and 2,684,880 (TT);
    /// × 4096 at 64×64.
    #[test]
    fn macs_of_spec_3_6() {
        let lstm = ModelConfig {
            cell: CellKind::Convlstm,
            ..ModelConfig::default()
        };
        let s = summarize(&lstm, 64, 64, 8, 19);
        assert_eq!(s.macs_per_frame, 3_971_280 * 4096);
        assert_eq!(s.macs_per_training_step, 3 * 3_971_280 * 4096 * 19 * 8);
        assert_eq!(
            summarize(&tt(3, 3, 8), 64, 64, 1, 1).macs_per_frame,
            2_684_880 * 4096
        );
    }
}
