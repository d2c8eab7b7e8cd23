//! convtt's shared library: the Conv-TT-LSTM and ConvLSTM models, the CTTD and metrics (all on
//! libtorch through tch), plus a re-export of [`convtt_core`] (configuration, formats, logging),
//! so `convtt_common::config` is the same module the launcher uses. It knows nothing about
//! processes.
//!
//! | module | holds |
//! |---|---|
//! | [`model`] | one file per concept: `conv.rs`, `conv_lstm_cell.rs`, `conv_tt_lstm_cell.rs`, `cttd.rs`, `ttd_conv_lstm_cell.rs`, `network.rs` (wiring and rollout), `state.rs`, `init.rs`, `compute.rs` (precision, cuDNN flags), `recompute.rs` (activation checkpointing), `io.rs` (reference weights), `activity.rs`; golden tests in `golden.rs` |
//! | [`metrics`] | per-frame MSE, MAE, PSNR, SSIM (two presets) and the trivial predictors |
//! | [`lpips`] | LPIPS (AlexNet, v0.1 heads) |
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
pub mod lpips;
pub mod metrics;
pub mod model;

pub use convtt_core::{checkpoint, config, dataset, fsutil, telemetry};
pub use error::{Error, Result};
