//! Progress of long operations: a bar on a terminal, periodic log lines otherwise (batch jobs,
//! CI logs), and the elapsed time for the closing summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between log lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Progress of one operation counted in items (clips).
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    start: Instant,
    last_log: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts counting `total` items.
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>14} [{bar:40}] {pos}/{len} clips ({per_sec}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(label.clone());
            bar
        });
        let now = Instant::now();
        Self {
            label,
            total,
            done: 0,
            start: now,
            last_log: now,
            bar,
        }
    }

    /// Counts `n` more items.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                let rate = self.done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
                tracing::info!(
                    "{}: {}/{} clips ({:.0} clips/s)",
                    self.label,
                    self.done,
                    self.total,
                    rate
                );
            }
            None => {}
        }
    }

    /// Ends the bar and returns the elapsed time.
    pub fn finish(self) -> Duration {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.start.elapsed()
    }
}
