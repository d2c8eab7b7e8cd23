//! The shutdown token: signals to the launcher become a level that only rises.
//!
//! SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 start the preempt protocol ([`Stop::Preempt`]: workers
//! commit a checkpoint and exit 4, the launcher exits 4). Slurm sends SIGTERM at the time limit
//! (then SIGKILL after KillWait) and the `--signal` of sbatch/srun before it; either way
//! the job is requeued from a fresh checkpoint. A second SIGINT ([`Stop::Now`]: Ctrl-C twice
//! at a terminal) tears the workers down at once.
//!
//! The supervisor takes a [`Shutdown`] as an argument, so tests trigger it by hand.

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// How far the shutdown has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Keep running.
    Run,
    /// Checkpoint and exit 4.
    Preempt,
    /// Tear down now.
    Now,
}

/// The receiving side, handed to the supervisor.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<Stop>);

/// The triggering side.
#[derive(Debug)]
pub struct Trigger(watch::Sender<Stop>);

impl Trigger {
    /// Raises the level (never lowers it).
    pub fn raise(&self, to: Stop) {
        self.0.send_if_modified(|s| {
            if to > *s {
                *s = to;
                true
            } else {
                false
            }
        });
    }
}

impl Shutdown {
    /// A token and its trigger.
    pub fn manual() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(Stop::Run);
        (Trigger(tx), Shutdown(rx))
    }

    /// A token driven by the launcher's signals (needs a tokio runtime).
    pub fn from_signals() -> Result<Shutdown> {
        let (trigger, shutdown) = Shutdown::manual();
        let mut signals = Signals::install()?;
        tokio::spawn(async move {
            let mut interrupts = 0;
            loop {
                let sig = signals.recv().await;
                if sig == Signal::SIGINT {
                    interrupts += 1;
                }
                if interrupts >= 2 {
                    tracing::warn!("second SIGINT: tearing the workers down now");
                    trigger.raise(Stop::Now);
                } else {
                    tracing::warn!(
                        "{sig}: preempting (workers checkpoint and exit 4; Ctrl-C again to stop now)"
                    );
                    trigger.raise(Stop::Preempt);
                }
            }
        });
        Ok(shutdown)
    }

    /// The current level.
    pub fn level(&self) -> Stop {
        *self.0.borrow()
    }

    /// Waits until the level rises above `seen`, and returns it. Pending forever once the
    /// trigger is gone.
    pub async fn above(&mut self, seen: Stop) -> Stop {
        loop {
            let now = *self.0.borrow_and_update();
            if now > seen {
                return now;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// This process's SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 as one stream (the launcher's shutdown
/// token and the sweep task's forwarder both listen to these four).
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening (needs a tokio runtime).
    pub(crate) fn install() -> Result<Signals> {
        let mk = |k: SignalKind, name: &str| {
            signal(k).map_err(|e| Error::Internal(format!("cannot handle {name}: {e}")))
        };
        Ok(Signals {
            term: mk(SignalKind::terminate(), "SIGTERM")?,
            int: mk(SignalKind::interrupt(), "SIGINT")?,
            usr1: mk(SignalKind::user_defined1(), "SIGUSR1")?,
            usr2: mk(SignalKind::user_defined2(), "SIGUSR2")?,
        })
    }

    /// The next of the four signals to arrive.
    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.usr1.recv() => Signal::SIGUSR1,
            _ = self.usr2.recv() => Signal::SIGUSR2,
            _ = self.int.recv() => Signal::SIGINT,
        }
    }
}
