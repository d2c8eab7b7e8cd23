//! Data: the HDF5 dataset format (ARCHITECTURE §4), producers and the training-side loader.
//!
//! - [`shard`]: one HDF5 shard (`clips`: u8 `[n, T, C, H, W]`, one clip per deflated chunk);
//! - [`writer`]: atomic dataset directories (temp dir → rename, `dataset.toml` last);
//! - [`dataset`]: opening a dataset against its manifest, random clip access, `verify`;
//! - [`sampler`]: the distributed sampler (pure, property-tested);
//! - [`loader`]: background prefetch into `[B, T, C, H, W]` f32 tensors;
//! - [`moving_mnist`], [`mnist`], [`online`]: Moving-MNIST generation (files and on the fly);
//! - [`import`]: `.npy`/`.npz` arrays and PNG frame folders;
//! - [`tool`]: the `convtt-data` commands.
//!
//! The manifest types themselves live in `convtt_common::dataset` (no HDF5 needed there).

pub mod dataset;
pub mod import;
pub mod loader;
pub mod mnist;
pub mod moving_mnist;
pub mod online;
mod progress;
pub mod rng;
pub mod sampler;
pub mod shard;
pub mod tool;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

use convtt_common::config::{DataConfig, DataSource};

pub use dataset::{verify, Dataset, SplitHandle, SplitReader, VerifyReport};
pub use loader::{Batch, ClipSource, EpochIter, Loader, LoaderOptions, SourceFactory};
pub use sampler::DistributedSampler;
pub use shard::init_hdf5_env;

use crate::{Error, Result};

/// This process's place in the job, for the loaders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Workers in the job.
    pub world: usize,
    /// This worker's rank.
    pub rank: usize,
    /// Where batches go.
    pub device: tch::Device,
}

fn options(cfg: &DataConfig, at: Placement, frames: usize) -> Result<LoaderOptions> {
    if !cfg.batch_size.is_multiple_of(at.world) {
        return Err(Error::Usage(format!(
            "data.batch_size {} does not divide by {} workers",
            cfg.batch_size, at.world
        )));
    }
    Ok(LoaderOptions {
        batch_size: cfg.batch_size / at.world,
        threads: cfg.loader_threads,
        prefetch: cfg.prefetch_batches,
        frames,
        device: at.device,
    })
}

fn open_split(cfg: &DataConfig, split: &str, frames: usize) -> Result<SplitHandle> {
    let ds = Dataset::open(Path::new(&cfg.dataset))?;
    let [t, _, h, w] = ds.manifest().clip_shape;
    if (h, w) != (cfg.height, cfg.width) || t < frames {
        return Err(Error::Usage(format!(
            "{}: clips are {t} frames of {h}×{w}, but the configuration wants {frames} frames of \
             {}×{} (data.height, data.width, data.input_frames + data.future_frames)",
            ds.root().display(),
            cfg.height,
            cfg.width
        )));
    }
    ds.split(split)
}

/// The training loader of `[data]`: shuffled shards of `train_split`, or online Moving-MNIST.
pub fn train_loader(cfg: &DataConfig, seed: u64, at: Placement) -> Result<Loader> {
    let frames = cfg.clip_frames();
    let opts = options(cfg, at, frames)?;
    match cfg.source {
        DataSource::Shards => {
            let split = open_split(cfg, &cfg.train_split, frames)?;
            let s = DistributedSampler::new(
                split.len(),
                cfg.max_train_clips,
                at.world,
                at.rank,
                seed,
                true,
            );
            Loader::for_split(&split, s, opts)
        }
        DataSource::MovingMnistOnline => {
            let digits = Arc::new(online::training_digits(&cfg.mnist_dir)?);
            let generator = online::OnlineMovingMnist::new(digits, frames, cfg.height, seed)?;
            let n = if cfg.max_train_clips == 0 {
                online::DEFAULT_EPOCH_CLIPS
            } else {
                cfg.max_train_clips
            };
            let shape = generator.clip_shape();
            let factory: SourceFactory =
                Arc::new(move || Ok(Box::new(generator.clone()) as Box<dyn ClipSource>));
            Loader::new(
                factory,
                shape,
                DistributedSampler::new(n, 0, at.world, at.rank, seed, true),
                opts,
            )
        }
    }
}

/// An evaluation loader over `split` in index order, at most `cap` clips (0: all), using the
/// first `frames` frames of each clip. With several workers the last `< world` clips are
/// dropped so every rank runs the same number of steps.
pub fn eval_loader(
    cfg: &DataConfig,
    split: &str,
    cap: usize,
    frames: usize,
    at: Placement,
) -> Result<Loader> {
    let opts = options(cfg, at, frames)?;
    let handle = open_split(cfg, split, frames)?;
    let s = DistributedSampler::new(handle.len(), cap, at.world, at.rank, 0, false);
    Loader::for_split(&handle, s, opts)
}

#[cfg(test)]
mod tests;
