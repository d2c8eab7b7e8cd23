//! `<run>/metrics.jsonl`: one JSON record per line (train, valid, eval, …), appended by rank 0
//! — and, for training runs with `train.tensorboard`, the same records as TensorBoard events
//! ([`convtt_core::tensorboard`]): one metrics path, two formats.

use std::io::Write as _;
use std::path::PathBuf;

use convtt_core::RunDir;

use crate::error::{storage_errno, Error, Result};
use convtt_core::tensorboard::EventWriter;

/// Appends JSON lines to `<run>/metrics.jsonl` (rank 0 only).
///
/// A line that cannot be written is a warning — unless the file system is full, over quota or
/// read-only: that is kept and [`MetricsLog::check`] turns it into the run's error (exit 6).
pub(crate) struct MetricsLog {
    file: Option<(PathBuf, std::fs::File)>,
    full: Option<Error>,
    tb: Option<EventWriter>,
}

impl MetricsLog {
    pub(crate) fn open(run: &RunDir, rank: usize) -> Result<Self> {
        if rank != 0 {
            return Ok(MetricsLog {
                file: None,
                full: None,
                tb: None,
            });
        }
        let path = run.metrics();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog {
            file: Some((path, f)),
            full: None,
            tb: None,
        })
    }

    /// [`MetricsLog::open`], plus TensorBoard event files in `<run>/tb/` on rank 0 when
    /// `tensorboard` (a training run).
    pub(crate) fn with_tensorboard(run: &RunDir, rank: usize, tensorboard: bool) -> Result<Self> {
        let mut log = Self::open(run, rank)?;
        if rank == 0 && tensorboard {
            log.tb = Some(EventWriter::open(&run.tensorboard())?);
        }
        Ok(log)
    }

    /// Whether TensorBoard events are written (rank 0 with `train.tensorboard`).
    pub(crate) fn has_tensorboard(&self) -> bool {
        self.tb.is_some()
    }

    /// A PNG image for TensorBoard at `step` (nothing without TensorBoard).
    pub(crate) fn image(&mut self, step: u64, tag: &str, png: Vec<u8>, dims: [usize; 3]) {
        if let Some(tb) = &mut self.tb {
            let r = tb.image(step, tag, png, dims);
            self.keep(r);
        }
    }

    /// A TensorBoard write's outcome: storage errors stop the run like the JSON log's; others
    /// are warnings.
    fn keep(&mut self, r: convtt_core::Result<()>) {
        let r = r.map_err(Error::from);
        match r {
            Ok(()) => {}
            Err(e) if e.storage_full() => {
                if self.full.is_none() {
                    self.full = Some(e);
                }
            }
            Err(e) => tracing::warn!("TensorBoard: {e}"),
        }
    }

    /// Appends record `v`, stamped with `"time"` (Unix seconds) unless it has one.
    pub(crate) fn write(&mut self, mut v: serde_json::Value) {
        if let Some(o) = v.as_object_mut() {
            o.entry("time").or_insert_with(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                serde_json::json!((now * 1e3).round() / 1e3)
            });
        }
        if let Some(tb) = &mut self.tb {
            let r = tb.record(&v);
            self.keep(r);
        }
        let Some((path, f)) = &mut self.file else {
            return;
        };
        match writeln!(f, "{v}") {
            Ok(()) => {}
            Err(e) if storage_errno(&e) => {
                if self.full.is_none() {
                    self.full = Some(Error::io(path.clone(), e));
                }
            }
            Err(e) => tracing::warn!("cannot append to {}: {e}", path.display()),
        }
    }

    /// The storage error a write met, if any (the training stops with it: exit 6).
    pub(crate) fn check(&mut self) -> Result<()> {
        match self.full.take() {
            Some(e) => Err(Error::Unavailable(format!(
                "{e}: the file system is full, over quota or read-only; free space (or move \
                 launch.run_dir), then resume with --resume auto"
            ))),
            None => Ok(()),
        }
    }
}
