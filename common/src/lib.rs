//! convtt's shared library: the Conv-TT-LSTM and ConvLSTM models, the CTTD and metrics (all on
//! libtorch through tch), plus a re-export of [`convtt_core`] (configuration, formats, logging),
//! so `convtt_common::config` is the same module the launcher uses. It knows nothing about
//! processes.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
pub mod lpips;
pub mod metrics;
pub mod model;

pub use convtt_core::{checkpoint, config, dataset, fsutil, telemetry};
pub use error::{Error, Result};
