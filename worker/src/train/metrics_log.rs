//! `<run>/metrics.jsonl`: one JSON record per line (train, valid, eval, …), appended by rank 0.

use std::io::Write as _;
use std::path::PathBuf;

use convtt_core::RunDir;

use crate::error::{storage_errno, Error, Result};

/// Appends JSON lines to `<run>/metrics.jsonl` (rank 0 only).
///
/// A line that cannot be written is a warning — unless the file system is full, over quota or
/// read-only: that is kept and [`MetricsLog::check`] turns it into the run's error (exit 6).
pub(crate) struct MetricsLog {
    file: Option<(PathBuf, std::fs::File)>,
    full: Option<Error>,
}

impl MetricsLog {
    pub(crate) fn open(run: &RunDir, rank: usize) -> Result<Self> {
        if rank != 0 {
            return Ok(MetricsLog {
                file: None,
                full: None,
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
        })
    }

    pub(crate) fn write(&mut self, v: serde_json::Value) {
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
