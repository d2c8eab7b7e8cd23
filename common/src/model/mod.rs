//! The Conv-TT-LSTM and ConvLSTM video-prediction models (spec §2–§3, §9), built on tch.
//!
//! | Module | Concept | Reference (NVlabs/conv-tt-lstm) |
//! |---|---|---|
//! | [`state`] | explicit recurrent state: ring of M hidden states, pointer, cell state | `hidden_states`, `hidden_pointer`, `cell_states` attributes |
//! | [`conv_lstm_cell`] | ConvLSTM cell | `code/convlstmcell.py` `ConvLSTMCell` |
//! | [`cttd`] | convolutional tensor-train module; recursive and explicit-kernel evaluation | first loop of `ConvTTLSTMCell.forward` |
//! | [`conv_tt_lstm_cell`] | Conv-TT-LSTM cell | `code/convlstmcell.py` `ConvTTLSTMCell` |
//! | [`ttd_conv_lstm_cell`] | ConvLSTM with a classic tensor-train weight (paper §5) | — (Garipov et al. 2016) |
//! | [`network`] | 4 × 3 layers, skips, 1×1 head, rollout, scheduled sampling | `code/convlstmnet.py` `ConvLSTMNet` |
//! | `wavefront`, `fast_cell` | the rollout's fast path: layer by layer over the known steps, split gate convolution, fused TT preprocessing, channels-last (switches in [`ComputeMode`]) | — (issue 17) |
//! | [`recompute`] | activation checkpointing: backward by per-step recomputation | `code_opt/` `--use-checkpointing` |
//! | [`init`] | PyTorch-default and Xavier initialisation | `nn.Conv*.reset_parameters`, `eval_paper/` |
//! | [`io`] | safetensors export/import with reference names | `state_dict()` / `load_state_dict` |
//! | [`summary`] | parameters, MACs, activation memory | spec §3.4–§3.6 |
//! | [`activity`] | encoder–decoder activity-recognition network and classifier (issue 9) | — (paper §4; no reference code) |
//!
//! Module tree → parameter path → reference name (tch joins path components with '.', so the
//! var-store names ARE the reference keys):
//!
//! | Rust | Var-store path / reference key | Shape |
//! |---|---|---|
//! | TT cell core l < N−1 | `layers.b{b}l{l}.layers.{l}.{weight,bias}` | `[C, C, k, k]` |
//! | TT gate conv | `layers.b{b}l{l}.layers.{N−1}.{weight,bias}` | `[4Ch, Cin + C, k, k]` |
//! | TT preprocessing l | `layers.b{b}l{l}.layers_.{l}.{weight,bias}` | `[C, Ch, k, k, S]` |
//! | ConvLSTM conv | `layers.b{b}l{l}.conv.{weight,bias}` | `[4Ch, Cin + Ch, k, k]` |
//! | Classic-TTD ConvLSTM | `layers.b{b}l{l}.conv.cores.{0…d}`, `….conv.bias` | `[k, k, r_1]`, `[r_i, c_i, s_i, r_{i+1}]` |
//! | Output head | `layers.output.{weight,bias}` | `[C_img, ·, 1, 1]` |
//!
//! Building a model on CPU:
//!
//! ```
//! use convtt_common::config::ModelConfig;
//! use convtt_common::model::{Network, Rollout};
//! use tch::{nn, Device, Kind, Tensor};
//!
//! tch::manual_seed(0);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let cfg = ModelConfig { block_widths: vec![4, 4], layers_per_block: 1, skip_stride: 1, ..Default::default() };
//! let net = Network::new(&vs.root(), &cfg);
//! let frames = Tensor::rand([1, 3, 1, 8, 8], (Kind::Float, Device::Cpu));
//! let future = net.forward(&frames, &Rollout::eval(3, 2))?;
//! assert_eq!(future.size(), [1, 2, 1, 8, 8]);
//! # Ok::<(), convtt_common::Error>(())
//! ```

pub mod activity;
pub mod compute;
mod conv;
pub mod conv_lstm_cell;
pub mod conv_tt_lstm_cell;
pub mod cttd;
mod fast_cell;
pub mod init;
pub mod io;
pub mod network;
pub mod recompute;
pub mod state;
pub mod ttd_conv_lstm_cell;
mod wavefront;
pub use convtt_core::summary;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod testing;

pub use activity::{cross_entropy, ActivityNetwork, ActivityOutput};
pub use compute::{ComputeGuard, ComputeMode, CudnnFlags};
pub use conv::{to_conv2d_layout, to_conv3d_layout, Conv};
pub use conv_lstm_cell::{ConvLstmCell, ConvLstmCellConfig};
pub use conv_tt_lstm_cell::{ConvTtLstmCell, ConvTtLstmCellConfig};
pub use cttd::Cttd;
pub use io::{export_safetensors, import_safetensors};
pub use network::{
    layer_plan, scheduled_sampling_mask, teacher_forced_prefix, Feedback, LayerSpec, MaskRng,
    Network, Rollout,
};
pub use recompute::backward_recomputed;
pub use state::{CellState, NetState};
pub use summary::{summarize, LayerSummary, ModelSummary};
pub use ttd_conv_lstm_cell::{TtConv, TtdConvLstmCell, TtdConvLstmCellConfig};
