//! Command-line interface of `convtt-worker`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// convtt-worker: trains, evaluates and inspects Conv-TT-LSTM models. Normally started by
/// `convtt-launch`; started by hand it is a world of one.
#[derive(Debug, Parser)]
#[command(name = "convtt-worker", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A config file plus `--set` overrides (as `convtt-launch`'s `ConfigArgs`).
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The run configuration (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config key, e.g. `--set model.order=2` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Arguments of `forward`.
#[derive(Debug, Clone, Args)]
pub struct ForwardArgs {
    /// The model configuration (only `[model]` is used).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Weights in safetensors with the reference names (`module.` prefixes and the `code_opt/`
    /// preprocessing layout are accepted).
    #[arg(long, value_name = "FILE")]
    pub weights: PathBuf,
    /// Input frames: f32 `.npy` of shape [B, T, C, H, W]; all T frames condition the rollout.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Number of future frames F to predict.
    #[arg(long, value_name = "F")]
    pub future: usize,
    /// Output: f32 `.npy` of shape [B, F, C, H, W].
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Arguments of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The run configuration (model, data, optimizer) and its overrides.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed warm-up steps before them.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// `cpu` or `cuda` (default: `train.device`).
    #[arg(long)]
    pub device: Option<String>,
    /// The device's peak TFLOP/s, to report the achieved fraction.
    #[arg(long, value_name = "TFLOPS")]
    pub peak_tflops: Option<f64>,
    /// Inference instead of training: the evaluation rollout (I frames in, F predicted,
    /// no gradients) on training batches; samples/s are clips predicted per second.
    #[arg(long)]
    pub eval: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `model-info`.
#[derive(Debug, Clone, Args)]
pub struct ModelInfoArgs {
    /// The configuration (`[model]`, and `[data]` for frame size, batch and rollout length).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Batch size of the training-step figures (default: `data.batch_size`).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A model from a checkpoint: the config, the checkpoint and the run directory.
#[derive(Debug, Clone, Args)]
pub struct CheckpointArgs {
    /// The config and its overrides (`[model]` must match the checkpoint's).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// `auto` (newest valid checkpoint of the run directory) or a checkpoint directory.
    #[arg(long, default_value = "auto", value_name = "auto|DIR")]
    pub checkpoint: crate::checkpoint::Resume,
    /// Run directory (default: the parent of `--checkpoint DIR`'s `checkpoints/`, else the
    /// launcher's, else `launch.run_dir`).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// Arguments of `eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Config, checkpoint and run directory.
    #[command(flatten)]
    pub model: CheckpointArgs,
    /// The split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Future frames F to report (repeatable; default `train.eval_horizons`). One rollout of the
    /// longest is run; shorter horizons are its first frames.
    #[arg(long = "horizon", value_name = "F")]
    pub horizons: Vec<usize>,
    /// Evaluate at most this many clips (0: all; the incomplete last batch is dropped).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_clips: usize,
    /// Where to write the JSON report (default `<run>/eval-<split>.json`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Evaluate these weights instead of a checkpoint: a safetensors file under the reference
    /// parameter names (`export`'s output, the PyTorch baseline's, the reference's own).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
}

/// Arguments of `predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Config, checkpoint and run directory.
    #[command(flatten)]
    pub model: CheckpointArgs,
    /// The split the clip comes from.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Clip index in the split.
    #[arg(long, default_value_t = 0, value_name = "I")]
    pub clip: usize,
    /// Future frames to predict (default `data.future_frames`).
    #[arg(long, value_name = "F")]
    pub future: Option<usize>,
    /// The PNG strip: rows input | ground truth | prediction.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Also an animated GIF of the same clip: truth beside prediction, frame by frame.
    #[arg(long, value_name = "FILE")]
    pub gif: Option<PathBuf>,
}

/// Arguments of `export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Config, checkpoint and run directory.
    #[command(flatten)]
    pub model: CheckpointArgs,
    /// The safetensors file (reference parameter names).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train (normally started by convtt-launch; started by hand it is a world of one).
    Train {
        /// The config and its overrides.
        #[command(flatten)]
        config: ConfigArgs,
        /// Run directory (default: the launcher's, else `launch.run_dir`).
        #[arg(long, value_name = "DIR")]
        run_dir: Option<PathBuf>,
        /// `auto` (newest valid checkpoint of the run, if any), `no`, or a checkpoint directory.
        #[arg(long, default_value = "auto", value_name = "auto|no|PATH")]
        resume: crate::checkpoint::Resume,
    },
    /// Report libtorch, CUDA, cuDNN, NCCL, MPI, HDF5, NUMA nodes and this process's CPU mask.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 6 with the reasons when a GPU run could not start here.
        #[arg(long)]
        require_gpu: bool,
    },
    /// Predict F future frames from the frames of an .npy file with saved weights.
    Forward(ForwardArgs),
    /// Parameters per layer, MACs per frame and per training step, activation memory.
    ModelInfo(ModelInfoArgs),
    /// Time training steps: data wait, forward, backward, all-reduce, optimizer; samples/s,
    /// peak memory, achieved FLOP/s.
    Bench(BenchArgs),
    /// Evaluate a checkpoint: per-frame MSE, MAE, PSNR, SSIM over one or more horizons.
    Eval(EvalArgs),
    /// Write a PNG strip of one clip: input frames, ground truth, prediction.
    Predict(PredictArgs),
    /// Export a checkpoint's weights to safetensors with the reference parameter names.
    Export(ExportArgs),
    /// (Re)draw `<run>/plots/` from `metrics.jsonl` and the newest checkpoint.
    Plot {
        /// The run directory (its `config.toml` is used).
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
    },
}
