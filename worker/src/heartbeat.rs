//! What the launcher sees of a worker's progress. The training thread marks its phase, its
//! steps and every batch in a [`Tracker`] (a lock and a few stores: no I/O); a heartbeat thread
//! ([`Heartbeat`]) sends a snapshot every `launch.heartbeat_secs`. So a worker whose training
//! thread is stuck keeps sending heartbeats that show no progress — the launcher names the
//! rank, the phase and the step — while a worker that sends nothing at all is dead or frozen.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use convtt_core::protocol::{HeartbeatSender, Phase, Progress};

/// Steps whose compute time the straggler figure averages.
const WINDOW: usize = 10;

struct State {
    progress: Progress,
    compute: VecDeque<f32>,
}

impl Default for State {
    fn default() -> Self {
        State {
            // No loss yet (the progress line leaves it out until the first logged step).
            progress: Progress {
                loss: f32::NAN,
                ..Progress::default()
            },
            compute: VecDeque::new(),
        }
    }
}

/// The training thread's progress, shared with the heartbeat thread.
#[derive(Clone, Default)]
pub struct Tracker(Arc<Mutex<State>>);

/// This process's tracker. A worker has one training thread, and code deep in a phase (a
/// validation batch) marks progress without every signature carrying the tracker — like a
/// log, it is a beacon, not state the training depends on.
pub fn process() -> &'static Tracker {
    static TRACKER: std::sync::OnceLock<Tracker> = std::sync::OnceLock::new();
    TRACKER.get_or_init(Tracker::default)
}

impl Tracker {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The training thread enters `phase` (counts as progress).
    pub fn phase(&self, phase: Phase) {
        self.with(|s| {
            s.progress.phase = phase;
            s.progress.beat += 1;
        });
    }

    /// Progress inside a long phase (a validation batch, a batch fetched).
    pub fn beat(&self) {
        self.with(|s| s.progress.beat += 1);
    }

    /// A step is done: its number, where the run stands and its compute time (forward,
    /// backward and optimizer; no collective waits).
    pub fn step_done(&self, step: u64, total: u64, epoch: u64, compute_ms: f32) {
        self.with(|s| {
            let p = &mut s.progress;
            (p.step, p.total_steps, p.epoch) = (step, total, epoch as u32);
            p.beat += 1;
            s.compute.push_back(compute_ms);
            if s.compute.len() > WINDOW {
                s.compute.pop_front();
            }
            s.progress.compute_ms = s.compute.iter().sum::<f32>() / s.compute.len() as f32;
        });
    }

    /// The latest logged loss and throughput (every `train.log_every` steps).
    pub fn report(&self, loss: f64, samples_per_sec: f64) {
        self.with(|s| {
            s.progress.loss = loss as f32;
            s.progress.samples_per_sec = samples_per_sec as f32;
        });
    }

    /// Forgets the compute times (after a recovery the window starts again).
    pub fn reset_window(&self) {
        self.with(|s| s.compute.clear());
    }

    /// What the next heartbeat says.
    pub fn snapshot(&self) -> Progress {
        self.with(|s| s.progress)
    }
}

/// The heartbeat thread: a snapshot of the [`Tracker`] every period until dropped or until
/// the connection closes.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts sending `tracker`'s snapshots on `sender` every `period`.
    pub fn start(tracker: Tracker, sender: HeartbeatSender, period: Duration) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let tick = Duration::from_millis(50).min(period);
        let handle = std::thread::Builder::new()
            .name("convtt-heartbeat".into())
            .spawn(move || {
                let mut waited = period; // the first beat goes out at once
                while !flag.load(Ordering::Acquire) {
                    if waited >= period {
                        if sender.send(&tracker.snapshot()).is_err() {
                            return; // the connection is closed: the worker is leaving
                        }
                        waited = Duration::ZERO;
                    }
                    std::thread::sleep(tick);
                    waited += tick;
                }
            })
            .ok();
        Heartbeat { stop, handle }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_batches_are_progress_and_compute_is_a_window_mean() {
        let t = Tracker::default();
        assert!(
            t.snapshot().loss.is_nan(),
            "no loss before the first logged step"
        );
        t.phase(Phase::Data);
        t.beat();
        let before = t.snapshot();
        assert_eq!((before.phase, before.beat), (Phase::Data, 2));
        for k in 0..15 {
            t.step_done(k + 1, 100, 0, if k < 5 { 1000.0 } else { 10.0 });
        }
        let p = t.snapshot();
        assert_eq!((p.step, p.total_steps), (15, 100));
        assert_eq!(p.compute_ms, 10.0, "only the last {WINDOW} steps count");
        t.report(0.5, 12.0);
        assert_eq!(t.snapshot().loss, 0.5);
    }
}
