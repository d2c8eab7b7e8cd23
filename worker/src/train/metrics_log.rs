//! `<run>/metrics.jsonl`: one JSON record per line (train, valid, eval, …), appended by rank 0.

use std::io::Write as _;

use convtt_core::RunDir;

use crate::error::{Error, Result};

/// Appends JSON lines to `<run>/metrics.jsonl` (rank 0 only).
pub(crate) struct MetricsLog(Option<std::fs::File>);

impl MetricsLog {
    pub(crate) fn open(run: &RunDir, rank: usize) -> Result<Self> {
        if rank != 0 {
            return Ok(MetricsLog(None));
        }
        let path = run.metrics();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog(Some(f)))
    }

    pub(crate) fn write(&mut self, v: serde_json::Value) {
        if let Some(f) = &mut self.0 {
            if let Err(e) = writeln!(f, "{v}") {
                tracing::warn!("cannot append to metrics.jsonl: {e}");
            }
        }
    }
}
