//! The `convtt-data` commands: produce datasets (Moving-MNIST, `.npy`/`.npz`, frame folders),
//! and inspect, verify, preview and benchmark them. `src/bin/convtt-data.rs` is a thin shim
//! over [`run`] that maps errors to exit codes (2 usage, 5 data).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use convtt_common::dataset::{DatasetKind, DatasetManifest};

use super::import::frames::{self, Fit, FrameFolders};
use super::import::labels::{LabelArgs, Labels};
use super::import::npy::{ClipArray, Layout, Scale};
use super::loader::{Loader, LoaderOptions};
use super::mnist::{find_idx, MnistImages};
use super::moving_mnist::MovingMnist;
use super::sampler::DistributedSampler;
use super::writer::{DatasetSpec, DatasetWriter};
use super::{verify, Dataset};
use crate::{Error, Result};

/// convtt-data: builds, checks and inspects HDF5-sharded video datasets.
///
/// Exit codes: 0 done, 2 usage error, 5 data error (missing, truncated or corrupt input or
/// shard; nothing previously written is lost).
#[derive(Debug, Parser)]
#[command(name = "convtt-data", version, about, long_about = None)]
pub struct DataCli {
    /// What to do.
    #[command(subcommand)]
    pub command: DataCommand,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Generate Moving-MNIST (two 28×28 digits bouncing in 64×64 frames, the DDPAE rules).
    MovingMnist(MovingMnistArgs),
    /// Import a .npy array of clips (e.g. mnist_test_seq.npy: u8 [20, 10000, 64, 64], TNHW).
    ImportNpy(ImportNpyArgs),
    /// Import a .npz archive (array "data", [N, T, H, W, C], u8 or floats in [0, 1] or [0, 255]).
    ImportNpz(ImportNpzArgs),
    /// Import folders of PNG frames (one folder per video, KTH-style), optionally labelled.
    ImportFrames(ImportFramesArgs),
    /// Print a dataset's manifest (a labelled one's clips per class too) and check it against
    /// its files (headers and sizes).
    Inspect {
        /// Dataset directory.
        dir: PathBuf,
    },
    /// Read every clip and check every checksum; list every problem (exit 5 if any).
    Verify {
        /// Dataset directory.
        dir: PathBuf,
    },
    /// Write the frames of one clip side by side as a PNG strip.
    Preview(PreviewArgs),
    /// Measure loader throughput (clips/s, MB/s) for a list of thread counts.
    Bench(BenchArgs),
}

/// Where and how a new dataset is written.
#[derive(Debug, Args)]
pub struct OutArgs {
    /// Dataset directory to create.
    #[arg(long)]
    pub out: PathBuf,
    /// Clips per shard file.
    #[arg(long, default_value_t = 1000)]
    pub shard_clips: usize,
    /// Replace an existing dataset (the new one is built completely first).
    #[arg(long)]
    pub force: bool,
    /// Name recorded in dataset.toml (default: the directory name).
    #[arg(long)]
    pub name: Option<String>,
}

/// `moving-mnist` arguments.
#[derive(Debug, Args)]
pub struct MovingMnistArgs {
    /// Directory with MNIST idx files: t10k-images-idx3-ubyte[.gz] (test digits) and, if
    /// present, train-images-idx3-ubyte[.gz] (train/valid digits). Default: the bundled
    /// 10,000 test digits for every split.
    #[arg(long)]
    pub mnist: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: OutArgs,
    /// Training clips.
    #[arg(long, default_value_t = 10_000)]
    pub train: usize,
    /// Validation clips.
    #[arg(long, default_value_t = 3_000)]
    pub valid: usize,
    /// Test clips.
    #[arg(long, default_value_t = 5_000)]
    pub test: usize,
    /// Frames per clip.
    #[arg(long, default_value_t = 20)]
    pub frames: usize,
    /// Digits per clip.
    #[arg(long, default_value_t = 2)]
    pub digits: usize,
    /// Frame size (square, at least the digit size).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Digit size: MNIST's 28×28 digits resampled to N×N (area averaging), for small frames
    /// (e.g. `--size 32 --digit-size 14`: the paper's geometry at half the resolution).
    #[arg(long, default_value_t = 28, value_name = "N")]
    pub digit_size: usize,
    /// Seed: the same seed gives byte-identical shards.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Label every clip (a labelled dataset for activity recognition). `direction`: the
    /// quadrant of the first digit's initial velocity, 4 classes (right-down, left-down,
    /// left-up, right-up) in 2 groups (rightward, leftward); use `--digits 1` so the "first"
    /// digit is the only one.
    #[arg(long, value_parser = ["direction"])]
    pub labels: Option<String>,
}

/// Which split(s) the imported clips go to.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Put all clips of a bare input into this split.
    #[arg(long, conflicts_with = "fractions")]
    pub split: Option<String>,
    /// Divide a bare input into contiguous ranges, in file order, e.g.
    /// `train=0.8,valid=0.1,test=0.1` (fractions sum to at most 1).
    #[arg(long)]
    pub fractions: Option<String>,
    /// Dataset kind for dataset.toml (moving-mnist, kth, frames).
    #[arg(long)]
    pub kind: Option<DatasetKind>,
}

/// `import-npy` arguments.
#[derive(Debug, Args)]
pub struct ImportNpyArgs {
    /// Input file(s): `FILE`, or `SPLIT=FILE` for one split per file.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Axis order: TNHW (mnist_test_seq.npy), NTHW or NTHWC.
    #[arg(long)]
    pub layout: Layout,
    /// Float values: auto (maximum ≤ 1 → [0, 1]), unit ([0, 1]) or byte ([0, 255]).
    #[arg(long, default_value = "auto", value_parser = parse_scale)]
    pub scale: Scale,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub splits: SplitArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: OutArgs,
}

/// `import-npz` arguments.
#[derive(Debug, Args)]
pub struct ImportNpzArgs {
    /// Input file(s): `FILE`, or `SPLIT=FILE`.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Array inside the archive.
    #[arg(long, default_value = "data")]
    pub key: String,
    /// Axis order (NTHWC; a 4-axis array is read as [N, T, H, W]).
    #[arg(long, default_value = "NTHWC")]
    pub layout: Layout,
    /// Float values: auto, unit or byte.
    #[arg(long, default_value = "auto", value_parser = parse_scale)]
    pub scale: Scale,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub splits: SplitArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: OutArgs,
}

/// `import-frames` arguments.
#[derive(Debug, Args)]
pub struct ImportFramesArgs {
    /// Input folder(s): `DIR`, or `SPLIT=DIR` (e.g. `train=kth/train test=kth/test`).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Output frame size (square).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Store one gray channel (mean of R, G, B); the default.
    #[arg(long, conflicts_with = "rgb")]
    pub grayscale: bool,
    /// Store three RGB channels.
    #[arg(long)]
    pub rgb: bool,
    /// How a non-square frame becomes square: crop (centre) or stretch.
    #[arg(long, default_value = "crop", value_parser = parse_fit)]
    pub fit: Fit,
    /// Frames per clip.
    #[arg(long, default_value_t = 20)]
    pub clip_length: usize,
    /// Frames between clip starts (default: the clip length, i.e. non-overlapping).
    #[arg(long)]
    pub stride: Option<usize>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub splits: SplitArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: OutArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub labels: LabelArgs,
    /// A dataset protocol that sets the split, size, channels and clips itself: `kth` (one input
    /// folder holding the KTH action folders; persons 1–16 → train, 17–25 → test, gray,
    /// 160×120 centre-cropped to 120×120 and resized to 128×128, clips of 50 frames every 20
    /// frames in train and every 50 in test).
    #[arg(long, value_parser = parse_preset, conflicts_with_all = ["size", "grayscale", "rgb", "fit", "clip_length", "stride", "split", "fractions"])]
    pub preset: Option<FramesPreset>,
}

/// A fixed import protocol of `import-frames`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramesPreset {
    /// KTH actions as in the paper's line of work (spec §5.2, §6.6; research field notes §3).
    Kth,
}

/// The KTH preset: (split, persons, stride); clip length, size and channels in
/// [`KTH_CLIP_LENGTH`], [`KTH_SIZE`].
pub const KTH_SPLITS: [(&str, std::ops::RangeInclusive<u32>, usize); 2] =
    [("train", 1..=16, 20), ("test", 17..=25, 50)];
/// Frames per KTH clip: 10 input + 40 future frames, the longest protocol (10 → 40).
pub const KTH_CLIP_LENGTH: usize = 50;
/// KTH frame size after the centre crop to 120×120 (spec §6.6: the released model runs at 128).
pub const KTH_SIZE: usize = 128;

/// `preview` arguments.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// Dataset directory.
    pub dir: PathBuf,
    /// Split.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Clip index in the split.
    #[arg(long, default_value_t = 0)]
    pub clip: usize,
    /// Show at most this many frames (0: all).
    #[arg(long, default_value_t = 0)]
    pub frames: usize,
    /// PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// `bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Dataset directory.
    pub dir: PathBuf,
    /// Split.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Loader thread counts to try, comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Clips per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Batches prefetched.
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    /// Read at most this many clips per run (0: the whole split).
    #[arg(long, default_value_t = 0)]
    pub clips: usize,
    /// Device the batches go to: cpu, cuda or cuda:K.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: tch::Device,
}

fn parse_scale(s: &str) -> std::result::Result<Scale, String> {
    match s {
        "auto" => Ok(Scale::Auto),
        "unit" => Ok(Scale::Unit),
        "byte" => Ok(Scale::Byte),
        _ => Err(format!("unknown scale {s:?} (auto, unit or byte)")),
    }
}

fn parse_preset(s: &str) -> std::result::Result<FramesPreset, String> {
    match s {
        "kth" => Ok(FramesPreset::Kth),
        _ => Err(format!("unknown preset {s:?} (kth)")),
    }
}

fn parse_fit(s: &str) -> std::result::Result<Fit, String> {
    match s {
        "crop" => Ok(Fit::Crop),
        "stretch" => Ok(Fit::Stretch),
        _ => Err(format!("unknown fit {s:?} (crop or stretch)")),
    }
}

fn parse_device(s: &str) -> std::result::Result<tch::Device, String> {
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|k| k.parse().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| format!("unknown device {s:?} (cpu, cuda or cuda:K)")),
    }
}

/// Runs one parsed command line.
pub fn run(cli: DataCli) -> Result<()> {
    match cli.command {
        DataCommand::MovingMnist(a) => moving_mnist(a),
        DataCommand::ImportNpy(a) => {
            let (layout, scale) = (a.layout, a.scale);
            import_arrays(&a.inputs, &a.splits, &a.out, "npy", |p| {
                ClipArray::open_npy(p, layout, scale)
            })
        }
        DataCommand::ImportNpz(a) => {
            let (layout, scale, key) = (a.layout, a.scale, a.key.clone());
            import_arrays(&a.inputs, &a.splits, &a.out, "npz", |p| {
                ClipArray::open_npz(p, &key, layout, scale)
            })
        }
        DataCommand::ImportFrames(a) => import_frames(a),
        DataCommand::Inspect { dir } => inspect(&dir),
        DataCommand::Verify { dir } => verify_cmd(&dir),
        DataCommand::Preview(a) => preview(a),
        DataCommand::Bench(a) => bench(a),
    }
}

fn dataset_name(out: &OutArgs) -> String {
    out.name.clone().unwrap_or_else(|| {
        out.out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

fn summary(out: &Path, m: &DatasetManifest, bytes: u64, start: Instant) {
    let clips: u64 = m.splits.values().map(|s| s.clips).sum();
    let shards: usize = m.splits.values().map(|s| s.shards.len()).sum();
    let raw = clips as f64 * m.clip_len() as f64;
    println!(
        "wrote {}: {clips} clips of {:?} in {shards} shard(s), {:.1} MB on disk ({:.1} MB \
         uncompressed), {:.1} s",
        out.display(),
        m.clip_shape,
        bytes as f64 / 1e6,
        raw / 1e6,
        start.elapsed().as_secs_f64()
    );
}

/// Stream number of a generated split (train, valid and test are fixed so that adding a split
/// never changes the others).
fn split_stream(name: &str) -> u64 {
    match name {
        "train" => 0,
        "valid" => 1,
        "test" => 2,
        _ => unreachable!("moving-mnist writes train, valid and test only"),
    }
}

/// The digits of the test split and of the train/valid splits: from `mnist` (the test file, and
/// the training file when present), else the bundled test digits for every split.
fn digit_sets(mnist: Option<&Path>) -> Result<(MnistImages, MnistImages)> {
    match mnist {
        None => {
            tracing::info!("using the bundled 10,000 MNIST test digits for every split");
            let t = MnistImages::bundled_test();
            Ok((t.clone(), t))
        }
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Error::Usage(format!(
                    "--mnist {}: no such directory",
                    dir.display()
                )));
            }
            let test_path = find_idx(dir, "t10k-images-idx3-ubyte").ok_or_else(|| Error::Data {
                path: dir.to_path_buf(),
                msg: "no t10k-images-idx3-ubyte[.gz] (the MNIST test digits)".into(),
            })?;
            let test = MnistImages::load(&test_path)?;
            let train = match find_idx(dir, "train-images-idx3-ubyte") {
                Some(p) => MnistImages::load(&p)?,
                None => {
                    tracing::warn!(
                        "{}: no train-images-idx3-ubyte[.gz]; train and valid clips use the test \
                         digits too",
                        dir.display()
                    );
                    test.clone()
                }
            };
            Ok((test, train))
        }
    }
}

fn moving_mnist(a: MovingMnistArgs) -> Result<()> {
    let start = Instant::now();
    if a.digit_size < 4 || a.digit_size > 28 || a.size < a.digit_size {
        return Err(Error::Usage(format!(
            "--digit-size must be 4 to 28 and --size at least the digit size (got {}, {})",
            a.digit_size, a.size
        )));
    }
    if a.frames == 0 || a.digits == 0 {
        return Err(Error::Usage(format!(
            "--frames and --digits must be at least 1 (got {}, {})",
            a.frames, a.digits
        )));
    }
    let mut source = BTreeMap::new();
    let (test_digits, train_digits) = digit_sets(a.mnist.as_deref())?;
    let (test_digits, train_digits) = (
        test_digits.resized(a.digit_size),
        train_digits.resized(a.digit_size),
    );
    source.insert(
        "generator".into(),
        "convtt-data moving-mnist (DDPAE rules)".into(),
    );
    source.insert("seed".into(), a.seed.to_string());
    source.insert("digits".into(), a.digits.to_string());
    if let Some(l) = &a.labels {
        source.insert("labels".into(), l.clone());
    }
    source.insert("train_valid_digits".into(), train_digits.origin.clone());
    source.insert("test_digits".into(), test_digits.origin.clone());
    let spec = DatasetSpec {
        name: dataset_name(&a.out),
        kind: DatasetKind::MovingMnist,
        clip_shape: [a.frames, 1, a.size, a.size],
        description: format!(
            "Moving-MNIST: {} digits of {}x{} in {}x{} frames, {} frames per clip",
            a.digits, a.digit_size, a.digit_size, a.size, a.size, a.frames
        ),
        source,
    };
    let mut w = DatasetWriter::create(&a.out.out, spec, a.out.shard_clips, a.out.force)?;
    if a.labels.is_some() {
        use super::moving_mnist::{DIRECTION_CLASSES, DIRECTION_GROUPS};
        w.set_classes(
            DIRECTION_CLASSES.iter().map(|c| c.to_string()).collect(),
            DIRECTION_GROUPS
                .iter()
                .map(|(c, g)| (c.to_string(), g.to_string()))
                .collect(),
        )?;
    }
    for (split, n, digits) in [
        ("train", a.train, &train_digits),
        ("valid", a.valid, &train_digits),
        ("test", a.test, &test_digits),
    ] {
        let g = MovingMnist::new(digits, a.frames, a.size, a.digits);
        let stream = split_stream(split);
        if a.labels.is_some() {
            // Labels are cheap to get again: generate each clip once for its label (into a
            // scratch buffer) and once more when the writer asks for it.
            let mut scratch = vec![0u8; g.clip_len()];
            let labels: Vec<i64> = (0..n as u64)
                .map(|i| g.generate_labelled(a.seed, stream, i, &mut scratch))
                .collect();
            w.write_labelled_split(split, &labels, |i, buf| {
                g.generate(a.seed, stream, i as u64, buf);
                Ok(())
            })?;
        } else {
            w.write_split(split, n, |i, buf| {
                g.generate(a.seed, stream, i as u64, buf);
                Ok(())
            })?;
        }
    }
    let (m, bytes) = w.finish()?;
    summary(&a.out.out, &m, bytes, start);
    Ok(())
}

/// Parses `SPLIT=PATH` / `PATH` inputs into `(split or None, path)`.
fn parse_inputs(inputs: &[String]) -> Result<Vec<(Option<String>, PathBuf)>> {
    let parsed: Vec<_> = inputs
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if convtt_common::dataset::valid_split_name(k) => {
                (Some(k.to_owned()), PathBuf::from(v))
            }
            _ => (None, PathBuf::from(s)),
        })
        .collect();
    let bare = parsed.iter().filter(|(s, _)| s.is_none()).count();
    if bare > 1 || (bare == 1 && parsed.len() > 1) {
        return Err(Error::Usage(
            "give one input FILE, or SPLIT=FILE for each input (e.g. train=a.npy test=b.npy)"
                .into(),
        ));
    }
    for (_, p) in &parsed {
        if !p.exists() {
            return Err(Error::Data {
                path: p.clone(),
                msg: "no such file or directory".into(),
            });
        }
    }
    Ok(parsed)
}

/// `(split, first clip, clip count)` ranges for an input of `n` clips.
fn assign(
    split: &Option<String>,
    args: &SplitArgs,
    n: usize,
) -> Result<Vec<(String, usize, usize)>> {
    if let Some(s) = split {
        if args.split.is_some() || args.fractions.is_some() {
            return Err(Error::Usage(
                "SPLIT=FILE inputs take no --split or --fractions".into(),
            ));
        }
        return Ok(vec![(s.clone(), 0, n)]);
    }
    if let Some(s) = &args.split {
        return Ok(vec![(s.clone(), 0, n)]);
    }
    let Some(f) = &args.fractions else {
        return Err(Error::Usage(
            "say where the clips go: --split NAME, --fractions train=0.8,test=0.2 or SPLIT=FILE"
                .into(),
        ));
    };
    fraction_ranges(f, n)
}

/// Contiguous ranges for `name=fraction,…` over `n` clips (boundaries rounded down).
fn fraction_ranges(spec: &str, n: usize) -> Result<Vec<(String, usize, usize)>> {
    let bad = |m: String| Error::Usage(format!("--fractions {spec:?}: {m}"));
    let mut out = Vec::new();
    let mut acc = 0.0f64;
    let mut start = 0usize;
    for part in spec.split(',') {
        let (name, frac) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not NAME=FRACTION")))?;
        let frac: f64 = frac
            .trim()
            .parse()
            .map_err(|_| bad(format!("{frac:?} is not a number")))?;
        if !(0.0..=1.0).contains(&frac) {
            return Err(bad(format!("{frac} is not in [0, 1]")));
        }
        acc += frac;
        if acc > 1.0 + 1e-9 {
            return Err(bad("fractions sum to more than 1".into()));
        }
        let end = ((acc * n as f64) + 1e-9).floor() as usize;
        out.push((name.trim().to_owned(), start, end.min(n) - start));
        start = end.min(n);
    }
    Ok(out)
}

fn import_arrays(
    inputs: &[String],
    split_args: &SplitArgs,
    out: &OutArgs,
    what: &str,
    open: impl Fn(&Path) -> Result<ClipArray>,
) -> Result<()> {
    let start = Instant::now();
    let inputs = parse_inputs(inputs)?;
    let arrays: Vec<(Option<String>, ClipArray)> = inputs
        .into_iter()
        .map(|(s, p)| Ok((s, open(&p)?)))
        .collect::<Result<_>>()?;
    let shape = arrays[0].1.clip_shape;
    for (_, a) in &arrays {
        if a.clip_shape != shape {
            return Err(Error::Data {
                path: a.path().to_owned(),
                msg: format!(
                    "clips are {:?} but {} has {shape:?}",
                    a.clip_shape,
                    arrays[0].1.path().display()
                ),
            });
        }
    }
    let mut plan = Vec::new();
    for (k, (s, a)) in arrays.iter().enumerate() {
        for (name, first, n) in assign(s, split_args, a.clips)? {
            plan.push((name, k, first, n));
        }
    }
    let mut source = BTreeMap::new();
    for (k, (_, a)) in arrays.iter().enumerate() {
        source.insert(format!("input{k}"), a.path().display().to_string());
    }
    source.insert("importer".into(), format!("convtt-data import-{what}"));
    let spec = DatasetSpec {
        name: dataset_name(out),
        kind: split_args.kind.unwrap_or(DatasetKind::MovingMnist),
        clip_shape: shape,
        description: format!("imported from .{what}"),
        source,
    };
    let mut w = DatasetWriter::create(&out.out, spec, out.shard_clips, out.force)?;
    for (name, k, first, n) in plan {
        let a = &arrays[k].1;
        w.write_split(&name, n, |i, buf| a.read_clip(first + i, buf))?;
    }
    let (m, bytes) = w.finish()?;
    summary(&out.out, &m, bytes, start);
    Ok(())
}

/// The frame folders an `import-frames` reads, scanned into clips: which clips of which
/// folder go to which split, the label of every video (when labelled) and the provenance.
#[derive(Default)]
struct FrameImport {
    scanned: Vec<FrameFolders>,
    video_labels: Vec<Vec<i64>>,
    /// (split, folder index, first clip, clips).
    plan: Vec<(String, usize, usize, usize)>,
    source: BTreeMap<String, String>,
}

impl FrameImport {
    fn add(&mut self, mut f: FrameFolders, labels: Option<&Labels>) -> Result<usize> {
        if let Some(l) = labels {
            self.video_labels.push(l.apply(&mut f)?);
        }
        self.scanned.push(f);
        Ok(self.scanned.len() - 1)
    }

    /// `--preset kth`: one root folder, split by person (KTH_SPLITS).
    fn kth(root: &Path, clip_length: usize, labels: Option<&Labels>) -> Result<Self> {
        let mut im = FrameImport::default();
        for (name, persons, stride) in KTH_SPLITS {
            let mut f = FrameFolders::scan(root, clip_length, stride)?;
            f.retain_persons(root, &persons)?;
            tracing::info!(
                "{}: {name}: persons {}–{}: {} videos, {} clips",
                root.display(),
                persons.start(),
                persons.end(),
                f.videos.len(),
                f.clips.len()
            );
            // Labels leave out videos, so the clips to split are counted after they apply.
            let k = im.add(f, labels)?;
            let n = im.scanned[k].clips.len();
            im.plan.push((name.to_owned(), k, 0, n));
        }
        im.source
            .insert("input0".into(), root.display().to_string());
        im.source.insert(
            "protocol".into(),
            "kth: persons 1-16 train (stride 20), 17-25 test (stride 50)".into(),
        );
        Ok(im)
    }

    /// Inputs `[SPLIT=]DIR`, split by `--splits` where no split is named.
    fn inputs(
        inputs: &[(Option<String>, PathBuf)],
        splits: &SplitArgs,
        (clip_length, stride): (usize, usize),
        labels: Option<&Labels>,
    ) -> Result<Self> {
        let mut im = FrameImport::default();
        for (s, p) in inputs {
            let f = FrameFolders::scan(p, clip_length, stride)?;
            tracing::info!(
                "{}: {} videos, {} clips",
                p.display(),
                f.videos.len(),
                f.clips.len()
            );
            let k = im.add(f, labels)?;
            let n = im.scanned[k].clips.len();
            for (name, first, n) in assign(s, splits, n)? {
                im.plan.push((name, k, first, n));
            }
            im.source
                .insert(format!("input{k}"), p.display().to_string());
        }
        Ok(im)
    }
}

/// How frames become clip frames, for `dataset.toml`'s provenance.
fn frames_description(
    clip_length: usize,
    stride: Option<usize>,
    fit: Fit,
    size: usize,
    channels: usize,
) -> String {
    format!(
        "clip_length {clip_length}, stride {}, {} to {size}x{size}, {}",
        stride.map_or_else(|| "per split".to_owned(), |s| s.to_string()),
        if fit == Fit::Crop {
            "centre crop"
        } else {
            "stretch"
        },
        if channels == 1 {
            "gray (mean of RGB)"
        } else {
            "RGB"
        }
    )
}

fn import_frames(a: ImportFramesArgs) -> Result<()> {
    let start = Instant::now();
    if a.size == 0 || a.clip_length == 0 || a.stride == Some(0) {
        return Err(Error::Usage(
            "--size, --clip-length and --stride must be at least 1".into(),
        ));
    }
    let kth = a.preset == Some(FramesPreset::Kth);
    let channels = if a.rgb { 3 } else { 1 };
    let (size, fit, clip_length) = if kth {
        (KTH_SIZE, Fit::Crop, KTH_CLIP_LENGTH)
    } else {
        (a.size, a.fit, a.clip_length)
    };
    let stride = a.stride.unwrap_or(clip_length);
    let inputs = parse_inputs(&a.inputs)?;
    let labels = Labels::load(&a.labels)?;
    let mut im = if kth {
        let [(None, root)] = &inputs[..] else {
            return Err(Error::Usage(
                "--preset kth takes one input folder (the one holding boxing/, walking/, …), \
                 not SPLIT=DIR"
                    .into(),
            ));
        };
        FrameImport::kth(root, clip_length, labels.as_ref())?
    } else {
        FrameImport::inputs(&inputs, &a.splits, (clip_length, stride), labels.as_ref())?
    };
    im.source
        .insert("importer".into(), "convtt-data import-frames".into());
    if labels.is_some() {
        let files: Vec<String> = a
            .labels
            .labels
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        im.source.insert("labels".into(), files.join(", "));
    }
    let how = frames_description(clip_length, (!kth).then_some(stride), fit, size, channels);
    im.source.insert("frames".into(), how);
    let spec = DatasetSpec {
        name: dataset_name(&a.out),
        kind: a.splits.kind.unwrap_or(if kth {
            DatasetKind::Kth
        } else {
            DatasetKind::Frames
        }),
        clip_shape: [clip_length, channels, size, size],
        description: "imported from PNG frame folders".into(),
        source: std::mem::take(&mut im.source),
    };
    let mut w = DatasetWriter::create(&a.out.out, spec, a.out.shard_clips, a.out.force)?;
    if let Some(l) = &labels {
        w.set_classes(l.classes.clone(), l.groups.clone())?;
    }
    for (name, k, first, n) in std::mem::take(&mut im.plan) {
        let f = &im.scanned[k];
        let fill = clip_filler(f, first, channels, size, fit);
        match labels {
            Some(_) => {
                let l: Vec<i64> = f.clips[first..first + n]
                    .iter()
                    .map(|&(v, _)| im.video_labels[k][v])
                    .collect();
                w.write_labelled_split(&name, &l, fill)?;
            }
            None => w.write_split(&name, n, fill)?,
        }
    }
    let (m, bytes) = w.finish()?;
    summary(&a.out.out, &m, bytes, start);
    Ok(())
}

/// Fills clip `i` (from clip `first` of `f`) into a buffer `[T, C, H, W]`; the decoded frames of
/// the current video are kept, so overlapping clips decode each frame once.
fn clip_filler(
    f: &FrameFolders,
    first: usize,
    channels: usize,
    size: usize,
    fit: Fit,
) -> impl FnMut(usize, &mut [u8]) -> Result<()> + '_ {
    let frame_len = channels * size * size;
    let mut cache: (usize, BTreeMap<usize, Vec<u8>>) = (usize::MAX, BTreeMap::new());
    move |i: usize, buf: &mut [u8]| {
        let (v, s) = f.clips[first + i];
        if cache.0 != v {
            cache = (v, BTreeMap::new());
        }
        for t in 0..f.clip_length {
            let idx = s + t;
            let frame = match cache.1.entry(idx) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let img = frames::decode_png(&f.videos[v].1[idx])?;
                    e.insert(frames::to_clip_frame(&img, channels, size, fit))
                }
            };
            buf[t * frame_len..(t + 1) * frame_len].copy_from_slice(frame);
        }
        cache.1.retain(|&j, _| j > s);
        Ok(())
    }
}

fn inspect(dir: &Path) -> Result<()> {
    let m = DatasetManifest::load(dir)?;
    println!("dataset     {}", dir.display());
    println!("name        {}", m.name);
    println!("kind        {}", m.kind.as_str());
    println!(
        "clip shape  {:?} [T, C, H, W], {} values {:?}",
        m.clip_shape, m.dtype, m.value_range
    );
    if !m.description.is_empty() {
        println!("description {}", m.description);
    }
    for (k, v) in &m.source {
        println!("source      {k} = {v}");
    }
    if m.is_labelled() {
        println!(
            "classes     {} in {} group(s): {}",
            m.classes.len(),
            m.group_names().len(),
            m.classes.join(", ")
        );
    }
    for (name, s) in &m.splits {
        let bytes: u64 = s.shards.iter().map(|e| e.bytes).sum();
        let raw = s.clips as f64 * m.clip_len() as f64;
        println!(
            "split       {name}: {} clips, {} shard(s), {:.1} MB ({:.1}x compression)",
            s.clips,
            s.shards.len(),
            bytes as f64 / 1e6,
            raw / bytes.max(1) as f64
        );
    }
    let ds = Dataset::open(dir)?;
    if m.is_labelled() {
        for name in m.splits.keys() {
            let mut counts = vec![0usize; m.classes.len()];
            for l in ds.split(name)?.labels(m.classes.len())? {
                counts[l as usize] += 1;
            }
            let shown: Vec<String> = m
                .classes
                .iter()
                .zip(&counts)
                .filter(|(_, &n)| n > 0)
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            println!("labels      {name}: {}", shown.join(", "));
        }
    }
    println!("files       consistent with dataset.toml (run `verify` to read every clip)");
    Ok(())
}

fn verify_cmd(dir: &Path) -> Result<()> {
    let start = Instant::now();
    let rep = verify(dir);
    println!(
        "verified {}: {} shard(s), {} clips read, {:.1} MB hashed, {:.1} s",
        dir.display(),
        rep.shards,
        rep.clips,
        rep.bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    if rep.problems.is_empty() {
        println!("no problems found");
        return Ok(());
    }
    for p in &rep.problems {
        println!("problem: {p}");
    }
    Err(Error::Data {
        path: dir.to_owned(),
        msg: format!("{} problem(s) found (listed above)", rep.problems.len()),
    })
}

fn preview(a: PreviewArgs) -> Result<()> {
    let ds = Dataset::open(&a.dir)?;
    let split = ds.split(&a.split)?;
    if a.clip >= split.len() {
        return Err(Error::Usage(format!(
            "--clip {} but split {} has {} clips",
            a.clip,
            a.split,
            split.len()
        )));
    }
    let [t, c, h, w] = split.clip_shape();
    let mut clip = vec![0u8; t * c * h * w];
    split.reader().read_clip(a.clip, &mut clip)?;
    let shown = if a.frames == 0 { t } else { a.frames.min(t) };
    crate::pictures::write_frames(&a.out, &clip, [shown, c, h, w])?;
    println!("wrote {} ({shown} frames of {}x{})", a.out.display(), h, w);
    Ok(())
}

/// Runs `convtt-data ARGS` in-process (tests).
#[cfg(test)]
pub(crate) fn run_args(args: &[&str]) -> Result<()> {
    use clap::Parser;
    run(
        DataCli::try_parse_from(std::iter::once("convtt-data").chain(args.iter().copied()))
            .expect("valid command line"),
    )
}

fn bench(a: BenchArgs) -> Result<()> {
    let ds = Dataset::open(&a.dir)?;
    let split = ds.split(&a.split)?;
    let shape = split.clip_shape();
    let clip_bytes = shape.iter().product::<usize>() as f64;
    let disk: u64 = ds.manifest().splits[&a.split]
        .shards
        .iter()
        .map(|s| s.bytes)
        .sum();
    let disk_per_clip = disk as f64 / split.len() as f64;
    if a.device.is_cuda() {
        // Only here: loading libtorch's CUDA backend costs most of a second at start-up.
        if let Err(e) = crate::torch_runtime::load_cuda_backend() {
            return Err(Error::Unavailable(format!("--device cuda: {e}")));
        }
        if !tch::Cuda::is_available() {
            return Err(Error::Unavailable(
                "--device cuda but CUDA is not available".into(),
            ));
        }
    }
    println!(
        "bench {} split {}: {} clips of {:?}, batch {}, prefetch {}, device {:?}",
        a.dir.display(),
        a.split,
        split.len(),
        shape,
        a.batch,
        a.prefetch,
        a.device
    );
    println!("threads  clips   seconds  clips/s  MB/s (u8)  MB/s (on disk)");
    for &threads in &a.threads {
        let sampler = DistributedSampler::new(split.len(), a.clips, 1, 0, 0, true);
        let opts = LoaderOptions {
            batch_size: a.batch,
            threads: threads.max(1),
            prefetch: a.prefetch,
            frames: shape[0],
            device: a.device,
        };
        let loader = Loader::for_split(&split, sampler, opts)?;
        let start = Instant::now();
        let mut clips = 0usize;
        let mut checksum = 0.0f64;
        for batch in loader.epoch(0) {
            let b = batch?;
            clips += b.indices.len();
            // Touch the data so nothing is optimised away; a device sync for CUDA timing.
            checksum += b.clips.f_mean(tch::Kind::Float)?.f_double_value(&[])?;
        }
        if let tch::Device::Cuda(k) = a.device {
            tch::Cuda::synchronize(k as i64);
        }
        let s = start.elapsed().as_secs_f64();
        tracing::debug!("mean of batch means {checksum}");
        println!(
            "{threads:>7}  {clips:>5}  {s:>8.2}  {:>7.0}  {:>9.1}  {:>14.1}",
            clips as f64 / s,
            clips as f64 * clip_bytes / s / 1e6,
            clips as f64 * disk_per_clip / s / 1e6
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_make_contiguous_ranges() {
        let r = fraction_ranges("train=0.8,valid=0.1,test=0.1", 10).unwrap();
        assert_eq!(
            r,
            vec![
                ("train".into(), 0, 8),
                ("valid".into(), 8, 1),
                ("test".into(), 9, 1)
            ]
        );
        let r = fraction_ranges("train=0.5", 5).unwrap();
        assert_eq!(r, vec![("train".into(), 0, 2)]);
        assert!(fraction_ranges("train=0.8,test=0.3", 10).is_err());
        assert!(fraction_ranges("train", 10).is_err());
    }
}
