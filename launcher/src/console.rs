//! The terminal: worker lines with rank prefixes, and one progress line for the whole job.
//!
//! On a terminal the progress line is redrawn in place (`\r`, clear line) and every other line
//! is printed above it; elsewhere (Slurm output files) progress becomes a plain log line every
//! [`PLAIN_EVERY`].

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use convtt_core::Progress;

/// How often progress is logged when stderr is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(30);

/// Shared access to the launcher's stderr.
#[derive(Debug)]
pub struct Console {
    tty: bool,
    echo: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    bar: Option<String>,
    last_plain: Option<Instant>,
    ranks: BTreeMap<u32, Progress>,
    rate: Option<(Instant, u64)>,
    steps_per_sec: Option<f64>,
    /// Appended to the progress line (stragglers).
    note: String,
}

impl Console {
    /// A console on stderr; `echo` forwards worker output lines to it.
    pub fn new(echo: bool) -> Console {
        Console {
            tty: std::io::stderr().is_terminal(),
            echo,
            state: Mutex::default(),
        }
    }

    /// A console that prints nothing from workers (tests).
    pub fn quiet() -> Console {
        Console {
            tty: false,
            echo: false,
            state: Mutex::default(),
        }
    }

    /// Prints one worker line with its prefix (above the progress line).
    pub fn worker_line(&self, prefix: &str, line: &str) {
        if !self.echo {
            return;
        }
        let st = self.state.lock().expect("console lock");
        let mut err = std::io::stderr().lock();
        if self.tty && st.bar.is_some() {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{prefix} {line}");
        if let (true, Some(bar)) = (self.tty, &st.bar) {
            let _ = write!(err, "{bar}");
        }
        let _ = err.flush();
    }

    /// Sets what the progress line ends with (e.g. ` · straggler r1 ×1.6`; empty for nothing).
    pub fn set_note(&self, note: String) {
        self.state.lock().expect("console lock").note = note;
    }

    /// Records a rank's progress and redraws (or periodically logs) the job line.
    pub fn progress(&self, rank: u32, p: Progress, local_workers: usize, num_nodes: u32) {
        let mut st = self.state.lock().expect("console lock");
        st.ranks.insert(rank, p);
        let Some(lead) = st.ranks.values().next().copied() else {
            return;
        };
        let now = Instant::now();
        match st.rate {
            Some((t0, s0))
                if lead.step > s0 && now.duration_since(t0) >= Duration::from_secs(2) =>
            {
                let r = (lead.step - s0) as f64 / now.duration_since(t0).as_secs_f64();
                st.steps_per_sec = Some(st.steps_per_sec.map_or(r, |old| 0.7 * old + 0.3 * r));
                st.rate = Some((now, lead.step));
            }
            None => st.rate = Some((now, lead.step)),
            _ => {}
        }
        let node_rate: f32 = st.ranks.values().map(|p| p.samples_per_sec).sum();
        let rate = node_rate * num_nodes as f32 * (local_workers.max(1) as f32)
            / st.ranks.len().max(1) as f32;
        let line = format_line(&lead, rate, st.steps_per_sec) + &st.note;
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            st.bar = Some(line);
        } else if st
            .last_plain
            .is_none_or(|t| now.duration_since(t) >= PLAIN_EVERY)
        {
            st.last_plain = Some(now);
            tracing::info!("{line}");
        }
    }

    /// Ends the progress line (before a summary or an error).
    pub fn finish(&self) {
        let mut st = self.state.lock().expect("console lock");
        if self.tty && st.bar.take().is_some() {
            eprintln!();
        }
        st.ranks.clear();
        st.rate = None;
    }
}

/// `step 1200/5000 · epoch 3 · loss 0.0123 · 850 samples/s · ETA 1h02m`.
pub fn format_line(p: &Progress, samples_per_sec: f32, steps_per_sec: Option<f64>) -> String {
    let mut s = if p.total_steps > 0 {
        format!("step {}/{}", p.step, p.total_steps)
    } else {
        format!("step {}", p.step)
    };
    s += &format!(" · epoch {}", p.epoch);
    if p.loss.is_finite() {
        s += &format!(" · loss {:.4}", p.loss);
    }
    s += &format!(" · {samples_per_sec:.0} samples/s");
    if let (Some(r), true) = (steps_per_sec, p.total_steps > p.step) {
        if r > 0.0 {
            let secs = ((p.total_steps - p.step) as f64 / r) as u64;
            s += &format!(" · ETA {}", human(secs));
        }
    }
    s
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_reads_well() {
        let p = Progress {
            step: 1200,
            total_steps: 5000,
            epoch: 3,
            loss: 0.01234,
            ..Progress::default()
        };
        assert_eq!(
            format_line(&p, 850.0, Some(1.0)),
            "step 1200/5000 · epoch 3 · loss 0.0123 · 850 samples/s · ETA 1h03m"
        );
        let p = Progress {
            loss: f32::NAN,
            total_steps: 0,
            ..p
        };
        assert_eq!(
            format_line(&p, 10.0, None),
            "step 1200 · epoch 3 · 10 samples/s"
        );
    }
}
