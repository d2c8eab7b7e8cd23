//! `[data]`: which dataset, which splits, clip geometry and batching (ARCHITECTURE §4).

use serde::{Deserialize, Serialize};

use super::issues::{check, ConfigErrors};

/// Where training clips come from (`data.source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataSource {
    /// `"shards"`: every split is read from the HDF5 shards of `data.dataset`.
    #[default]
    Shards,
    /// `"moving-mnist-online"`: training clips are generated on the fly with the Moving-MNIST
    /// rules (fresh clips every epoch, deterministic from seed, epoch and clip index; two
    /// digits; `input_frames + future_frames` frames of `height`×`width`, which must be square
    /// and at least 28). An epoch has `max_train_clips` clips (10,000 when 0, like the DDPAE
    /// loader). Validation and test still read the shards of `data.dataset`.
    MovingMnistOnline,
}

/// `[data]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset directory (the one holding `dataset.toml`), relative to the working directory.
    pub dataset: String,
    /// Where training clips come from: `"shards"` (default) or `"moving-mnist-online"`
    /// (see [`DataSource`]).
    pub source: DataSource,
    /// For `source = "moving-mnist-online"`: a directory with MNIST idx files. Its
    /// `train-images-idx3-ubyte[.gz]` (60,000 digits) is used when present, else its
    /// `t10k-images-idx3-ubyte[.gz]`. Empty (default): the 10,000 MNIST test digits bundled in
    /// the binary.
    pub mnist_dir: String,
    /// Split used for training.
    pub train_split: String,
    /// Split used for validation.
    pub valid_split: String,
    /// Split used by `eval` unless told otherwise.
    pub test_split: String,
    /// Conditioning frames I.
    pub input_frames: usize,
    /// Predicted frames F during training and validation.
    pub future_frames: usize,
    /// Global batch size (all workers together); must divide by the number of workers.
    pub batch_size: usize,
    /// Frame height the model sees (must match the dataset).
    pub height: usize,
    /// Frame width the model sees (must match the dataset).
    pub width: usize,
    /// Use at most this many training clips (0: all), like the reference's `--train-samples`.
    pub max_train_clips: usize,
    /// Use at most this many validation clips (0: all).
    pub max_valid_clips: usize,
    /// Use at most this many test clips (0: all).
    pub max_test_clips: usize,
    /// Background threads that read and decode shards, per worker.
    pub loader_threads: usize,
    /// Batches prepared ahead of the training step, per worker.
    pub prefetch_batches: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "data/moving-mnist".into(),
            source: DataSource::Shards,
            mnist_dir: String::new(),
            train_split: "train".into(),
            valid_split: "valid".into(),
            test_split: "test".into(),
            input_frames: 10,
            future_frames: 10,
            batch_size: 8,
            height: 64,
            width: 64,
            max_train_clips: 0,
            max_valid_clips: 0,
            max_test_clips: 0,
            loader_threads: 2,
            prefetch_batches: 4,
        }
    }
}

impl DataConfig {
    /// Frames in one training clip (I + F).
    pub fn clip_frames(&self) -> usize {
        self.input_frames + self.future_frames
    }

    pub(crate) fn validate(&self, errs: &mut ConfigErrors) {
        check(
            errs,
            !self.dataset.trim().is_empty(),
            "data.dataset",
            || "must name a dataset directory (one holding dataset.toml)".into(),
        );
        for (key, v) in [
            ("data.train_split", &self.train_split),
            ("data.valid_split", &self.valid_split),
            ("data.test_split", &self.test_split),
        ] {
            let ok = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            check(errs, ok, key, || {
                format!("must be a split name of letters, digits, '-' or '_' (got {v:?})")
            });
        }
        check(errs, self.input_frames >= 1, "data.input_frames", || {
            "must be at least 1 (got 0)".into()
        });
        check(errs, self.future_frames >= 1, "data.future_frames", || {
            "must be at least 1 (got 0)".into()
        });
        check(errs, self.batch_size >= 1, "data.batch_size", || {
            "must be at least 1 (got 0)".into()
        });
        for (key, v) in [("data.height", self.height), ("data.width", self.width)] {
            check(errs, (1..=4096).contains(&v), key, || {
                format!("must be between 1 and 4096 pixels (got {v})")
            });
        }
        check(
            errs,
            self.loader_threads >= 1,
            "data.loader_threads",
            || "must be at least 1 (got 0)".into(),
        );
        if self.source == DataSource::MovingMnistOnline {
            check(errs, self.height == self.width, "data.source", || {
                format!(
                    "\"moving-mnist-online\" makes square frames: data.height and data.width \
                     must be equal (got {}x{})",
                    self.height, self.width
                )
            });
            check(errs, self.height >= 28, "data.height", || {
                format!(
                    "must be at least 28 (the MNIST digit size) with \"moving-mnist-online\" \
                     (got {})",
                    self.height
                )
            });
        } else {
            check(errs, self.mnist_dir.is_empty(), "data.mnist_dir", || {
                "is only used with data.source = \"moving-mnist-online\"".into()
            });
        }
        check(
            errs,
            self.prefetch_batches >= 1,
            "data.prefetch_batches",
            || "must be at least 1 (got 0)".into(),
        );
    }
}
