//! convtt's shared library: configuration and validation, the Conv-TT-LSTM / ConvLSTM models
//! (behind the default `model` feature, which links libtorch), the CTTD, metrics and the
//! on-disk formats. It knows nothing about processes; the launcher builds it without `model`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod dataset;
mod error;
pub mod telemetry;

pub use error::{Error, Result};
