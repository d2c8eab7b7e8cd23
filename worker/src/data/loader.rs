//! The batch loader: background threads read (or generate) clips in sampler order and hand
//! `[B, T, C, H, W]` batches to the training loop, `prefetch` batches ahead.
//!
//! Thread `j` of `N` prepares batches `j, j + N, j + 2N, …` into its own bounded channel and
//! the consumer takes batch `b` from channel `b mod N`, so batches arrive in sampler order
//! whatever the thread count and results do not depend on it. Each thread opens its own shard
//! handles (HDF5 is opened inside the process and thread that reads, never across fork).
//!
//! On CPU, threads convert u8 → f32 in [0, 1] themselves. On CUDA, threads place the u8 batch
//! in pinned host memory; the consumer copies it with a non-blocking host→device copy (4× fewer
//! bytes than f32) and converts on the GPU, on the current stream, so the copy overlaps host
//! work and is ordered before the conversion.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use tch::{Device, Kind, Tensor};

use super::dataset::{SplitHandle, SplitReader};
use super::sampler::DistributedSampler;
use crate::{Error, Result};

/// Something that produces clip `index` of `epoch` (shards ignore the epoch; the online
/// generator draws fresh clips per epoch). One per loader thread.
pub trait ClipSource: Send {
    /// Writes clip `index` (`T·C·H·W` bytes of the source's full clip) into `out`.
    fn read_clip(&mut self, epoch: u64, index: usize, out: &mut [u8]) -> Result<()>;
}

impl ClipSource for SplitReader {
    fn read_clip(&mut self, _epoch: u64, index: usize, out: &mut [u8]) -> Result<()> {
        SplitReader::read_clip(self, index, out)
    }
}

/// Makes a [`ClipSource`] inside a loader thread.
pub type SourceFactory = Arc<dyn Fn() -> Result<Box<dyn ClipSource>> + Send + Sync>;

/// How the loader batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderOptions {
    /// Clips per batch on this rank.
    pub batch_size: usize,
    /// Background threads.
    pub threads: usize,
    /// Batches prepared ahead (in total over the threads; at least one per thread).
    pub prefetch: usize,
    /// Leading frames of each clip to use (≤ the clip's T), e.g. input + future frames.
    pub frames: usize,
    /// Where batches go.
    pub device: Device,
}

/// One batch.
#[derive(Debug)]
pub struct Batch {
    /// `[B, T, C, H, W]` f32 in [0, 1] on the loader's device.
    pub clips: Tensor,
    /// Split-wide indices of the clips, in batch order.
    pub indices: Vec<usize>,
}

/// Batches of one rank, epoch by epoch.
pub struct Loader {
    factory: SourceFactory,
    clip_shape: [usize; 4],
    sampler: DistributedSampler,
    opts: LoaderOptions,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("clip_shape", &self.clip_shape)
            .field("sampler", &self.sampler)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// A loader over any clip source of clips shaped `clip_shape = [T, C, H, W]`.
    pub fn new(
        factory: SourceFactory,
        clip_shape: [usize; 4],
        sampler: DistributedSampler,
        opts: LoaderOptions,
    ) -> Result<Self> {
        if opts.frames == 0 || opts.frames > clip_shape[0] {
            return Err(Error::Usage(format!(
                "{} frames per clip requested but the clips have {}",
                opts.frames, clip_shape[0]
            )));
        }
        if opts.batch_size == 0 || opts.threads == 0 {
            return Err(Error::Usage(
                "batch size and loader threads must be at least 1".into(),
            ));
        }
        Ok(Self {
            factory,
            clip_shape,
            sampler,
            opts,
        })
    }

    /// A loader over the shards of a split.
    pub fn for_split(
        split: &SplitHandle,
        sampler: DistributedSampler,
        opts: LoaderOptions,
    ) -> Result<Self> {
        let handle = split.clone();
        let factory: SourceFactory =
            Arc::new(move || Ok(Box::new(handle.reader()) as Box<dyn ClipSource>));
        Self::new(factory, split.clip_shape(), sampler, opts)
    }

    /// Steps (batches) per epoch; the same on every rank.
    pub fn steps(&self) -> usize {
        self.sampler.steps(self.opts.batch_size)
    }

    /// The sampler.
    pub fn sampler(&self) -> &DistributedSampler {
        &self.sampler
    }

    /// Starts reading `epoch`; the threads stop when the iterator is dropped.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let b = self.opts.batch_size;
        let steps = self.steps();
        let indices: Arc<Vec<usize>> = Arc::new(self.sampler.indices(epoch));
        let threads = self.opts.threads.min(steps.max(1));
        let depth = self.opts.prefetch.div_ceil(threads).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let [_, c, h, w] = self.clip_shape;
        let full = self.clip_shape.iter().product::<usize>();
        let used = self.opts.frames * c * h * w;
        let shape = [
            b as i64,
            self.opts.frames as i64,
            c as i64,
            h as i64,
            w as i64,
        ];
        let mut receivers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for j in 0..threads {
            let (tx, rx) = sync_channel::<Result<Batch>>(depth);
            receivers.push(rx);
            let (factory, indices, stop) = (self.factory.clone(), indices.clone(), stop.clone());
            let device = self.opts.device;
            let spawned = std::thread::Builder::new()
                .name(format!("loader-{j}"))
                .spawn(move || {
                    // Batch conversion is small; a team of its own would slow the training
                    // thread's every parallel region (see the function).
                    crate::sys::torch_single_thread_here();
                    let mut source = match factory() {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let mut clip = vec![0u8; full];
                    for k in (j..steps).step_by(threads) {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let ids = indices[k * b..(k + 1) * b].to_vec();
                        let mut bytes = Vec::with_capacity(b * used);
                        let mut res = Ok(());
                        for &i in &ids {
                            res = source.read_clip(epoch, i, &mut clip);
                            if res.is_err() {
                                break;
                            }
                            bytes.extend_from_slice(&clip[..used]);
                        }
                        let batch =
                            res.and_then(|()| host_batch(&bytes, shape, device))
                                .map(|clips| Batch {
                                    clips,
                                    indices: ids,
                                });
                        let failed = batch.is_err();
                        // A send error means the consumer is gone: stop quietly.
                        if tx.send(batch).is_err() || failed {
                            return;
                        }
                    }
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Without this thread the epoch cannot be produced in order.
                    let (tx, rx) = sync_channel(1);
                    let _ = tx.send(Err(Error::Io {
                        path: "loader thread".into(),
                        err: e,
                    }));
                    receivers[j] = rx;
                }
            }
        }
        EpochIter {
            receivers,
            handles,
            stop,
            next: 0,
            steps,
            device: self.opts.device,
            done: false,
        }
    }
}

/// The host side of a batch: f32 in [0, 1] on CPU; pinned u8 for CUDA.
fn host_batch(bytes: &[u8], shape: [i64; 5], device: Device) -> Result<Tensor> {
    if device.is_cuda() {
        let t = Tensor::f_from_slice(bytes)?.f_view(shape)?;
        Ok(t.f_pin_memory(device)?)
    } else {
        // Division, not multiplication by 1/255, so CPU and GPU batches are bit-identical.
        let f: Vec<f32> = bytes.iter().map(|&v| f32::from(v) / 255.0).collect();
        Ok(Tensor::f_from_slice(&f)?.f_view(shape)?)
    }
}

/// The batches of one epoch, in sampler order.
pub struct EpochIter {
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: usize,
    steps: usize,
    device: Device,
    done: bool,
}

impl std::fmt::Debug for EpochIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochIter")
            .field("next", &self.next)
            .field("steps", &self.steps)
            .finish()
    }
}

impl EpochIter {
    /// Batches in this epoch.
    pub fn steps(&self) -> usize {
        self.steps
    }

    fn to_device(&self, batch: Batch) -> Result<Batch> {
        if !self.device.is_cuda() {
            return Ok(batch);
        }
        let on = batch
            .clips
            .f_to_device_(self.device, Kind::Uint8, true, false)?;
        let clips = on.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?;
        Ok(Batch {
            clips,
            indices: batch.indices,
        })
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done || self.next >= self.steps {
            return None;
        }
        let rx = &self.receivers[self.next % self.receivers.len()];
        self.next += 1;
        let got = match rx.recv() {
            Ok(b) => b,
            Err(_) => Err(Error::Io {
                path: "loader thread".into(),
                err: std::io::Error::other("a loader thread ended early (panicked?)"),
            }),
        };
        let out = got.and_then(|b| self.to_device(b));
        if out.is_err() {
            self.done = true;
        }
        Some(out)
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers wakes threads blocked on a full channel.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
