//! On-the-fly Moving-MNIST training clips (`data.source = "moving-mnist-online"`), as the
//! DDPAE/OpenSTL loaders do: every epoch sees fresh clips. Clip `i` of epoch `e` is a pure
//! function of `(seed, e, i)`; with the distributed sampler deciding which `i` a rank reads,
//! a rank's stream is determined by `(seed, epoch, rank)` and does not depend on thread count.

use std::path::Path;
use std::sync::Arc;

use super::loader::ClipSource;
use super::mnist::{find_idx, MnistImages};
use super::moving_mnist::MovingMnist;
use crate::{Error, Result};

/// Stream tag of online clips: keeps them apart from the streams of generated splits.
const ONLINE_STREAM: u64 = 0x4F4E_4C49_0000_0000;

/// Clips per online epoch when `data.max_train_clips` is 0 (the DDPAE loader's fixed length).
pub const DEFAULT_EPOCH_CLIPS: usize = 10_000;

/// Generates Moving-MNIST clips `[frames, 1, size, size]` per epoch.
#[derive(Debug, Clone)]
pub struct OnlineMovingMnist {
    digits: Arc<MnistImages>,
    frames: usize,
    size: usize,
    digits_per_clip: usize,
    seed: u64,
}

impl OnlineMovingMnist {
    /// A generator over `digits`.
    pub fn new(digits: Arc<MnistImages>, frames: usize, size: usize, seed: u64) -> Result<Self> {
        if size < digits.rows.max(digits.cols) {
            return Err(Error::Usage(format!(
                "frames of {size}×{size} cannot hold {}×{} digits",
                digits.rows, digits.cols
            )));
        }
        Ok(Self {
            digits,
            frames,
            size,
            digits_per_clip: 2,
            seed,
        })
    }

    /// `[T, C, H, W]` of the clips.
    pub fn clip_shape(&self) -> [usize; 4] {
        [self.frames, 1, self.size, self.size]
    }
}

impl ClipSource for OnlineMovingMnist {
    fn read_clip(&mut self, epoch: u64, index: usize, out: &mut [u8]) -> Result<()> {
        MovingMnist::new(&self.digits, self.frames, self.size, self.digits_per_clip).generate(
            self.seed,
            ONLINE_STREAM | epoch,
            index as u64,
            out,
        );
        Ok(())
    }
}

/// Training digits for online generation: `<dir>/train-images-idx3-ubyte[.gz]` when present,
/// else `<dir>/t10k-images-idx3-ubyte[.gz]`; an empty `dir` means the bundled test digits.
pub fn training_digits(dir: &str) -> Result<MnistImages> {
    if dir.is_empty() {
        tracing::info!("moving-mnist-online: using the 10,000 bundled MNIST test digits");
        return Ok(MnistImages::bundled_test());
    }
    let d = Path::new(dir);
    let path = find_idx(d, "train-images-idx3-ubyte")
        .or_else(|| {
            tracing::warn!(
                "{dir}: no train-images-idx3-ubyte[.gz]; generating from the MNIST test digits"
            );
            find_idx(d, "t10k-images-idx3-ubyte")
        })
        .ok_or_else(|| Error::Data {
            path: d.to_owned(),
            msg: "no MNIST images file (train-images-idx3-ubyte[.gz] or \
                  t10k-images-idx3-ubyte[.gz])"
                .into(),
        })?;
    MnistImages::load(&path)
}
