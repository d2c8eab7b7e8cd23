//! End-to-end tests: the real `convtt-launch`, `convtt-worker` and `convtt-data` binaries in
//! child processes. One test binary for the whole suite (each binary links libtorch; this one
//! does not, it only starts them). Build the binaries first: `cargo build --workspace --bins`.

/// Locating binaries, temp dirs, running commands.
mod util;

/// `convtt-launch check` and `convtt-worker doctor`, also from an empty environment.
mod cli;

/// `convtt-worker model-info` and `forward` on hand-written weights and frames.
mod model;

/// Training through the launcher: data parallelism, kill -9 recovery, SIGTERM preemption and
/// resume, refusal of a mismatched checkpoint, fallback from a corrupt one.
mod train;

/// Peer recovery: a killed worker replaced from its peer's memory (no step lost, bitwise the
/// same parameters) and the fallbacks to the checkpoint restart.
mod recovery;

/// TensorBoard event files read back by the `tensorboard` package: scalars, images, text, a
/// resume, a truncated file.
mod tensorboard;

/// `convtt-data`: generation, import, inspect/verify/preview/bench, exit codes, h5py interop.
mod data;

/// `convtt-worker eval`, `predict`, `export` and `plot` after a 6-step training run.
mod eval;

/// Early activity recognition: labelled data → launch → checkpoint → eval, label errors.
mod activity;
/// `convtt-launch sweep`: plan, local sweeps (report, plot, skip, failure marking, resume after
/// an interruption) and a real single-node Slurm cluster running a job array and a training job.
mod sweep;

/// The relocatable GPU kit: built, unpacked away from the build tree, `gpu-check --cpu-smoke`
/// from an empty environment.
mod kit;
