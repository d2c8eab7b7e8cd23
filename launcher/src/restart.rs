//! The restart policy: a pure function from how an attempt ended to what happens next
//! (ARCHITECTURE §3). No I/O, no clocks: the supervisor feeds it and obeys it.
//!
//! Exit codes: 0 done · 2 configuration (never retried) · 3 peer/collective (retried) ·
//! 4 preempted (the launcher exits 4 so Slurm can requeue) · 5 data (never retried) ·
//! 6 unavailable (never retried) · 101 panic (retried within the budget) · killed by a signal
//! (retried) · anything else (retried within the budget: an unknown failure is treated as
//! transient once it has a budget to burn).

use std::time::Duration;

use convtt_core::exit;

/// How one worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It returned this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Why an attempt stopped before every worker finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A worker exited non-zero on its own (not during our teardown).
    Exited {
        /// Its global rank.
        rank: u32,
        /// How.
        exit: Exit,
    },
    /// The launcher gave up on a live worker or collective (heartbeat, startup or collective
    /// timeout, protocol violation); the message names the rank. Retried like exit 3.
    Hung(String),
    /// Another node's launcher reported a failure in this attempt. Retried like exit 3.
    PeerNode(u32),
}

/// What an attempt amounts to, before the restart budget is applied. Ordered by severity:
/// combining the verdicts of several nodes keeps the most severe ([`Verdict::combine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Every worker exited 0.
    Finished,
    /// A retryable failure; `code` is what the launcher exits with when the budget is spent.
    Retry {
        /// Exit code for give-up.
        code: i32,
    },
    /// Preempted: workers were asked to checkpoint and exit 4.
    Preempted,
    /// A failure that no restart fixes.
    Fatal {
        /// The launcher's exit code.
        code: i32,
    },
}

impl Verdict {
    /// The more severe of two verdicts (used for consensus over nodes).
    pub fn combine(self, other: Verdict) -> Verdict {
        self.max(other)
    }

    /// A compact encoding for the MPI status exchange: `(kind << 32) | code as u32`,
    /// with 0 meaning "no verdict yet".
    pub fn encode(self) -> u64 {
        let (kind, code): (u64, i32) = match self {
            Verdict::Finished => (1, 0),
            Verdict::Retry { code } => (2, code),
            Verdict::Preempted => (3, exit::PREEMPTED),
            Verdict::Fatal { code } => (4, code),
        };
        (kind << 32) | u64::from(code as u32)
    }

    /// Inverse of [`Verdict::encode`]; `None` for 0 or garbage.
    pub fn decode(v: u64) -> Option<Verdict> {
        let code = (v & 0xffff_ffff) as u32 as i32;
        match v >> 32 {
            1 => Some(Verdict::Finished),
            2 => Some(Verdict::Retry { code }),
            3 => Some(Verdict::Preempted),
            4 => Some(Verdict::Fatal { code }),
            _ => None,
        }
    }
}

/// What the supervisor does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The job is done: exit 0.
    Finished,
    /// Start attempt `attempt` after `delay`.
    Restart {
        /// The next attempt number (`CONVTT_ATTEMPT`).
        attempt: u32,
        /// Back-off before spawning.
        delay: Duration,
    },
    /// The launcher exits 4 (requeue).
    Preempted,
    /// The launcher exits with `code`.
    GiveUp {
        /// Exit code.
        code: i32,
        /// Why, for the error message.
        reason: String,
    },
}

/// The restart budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Restarts allowed over the whole run (`--max-restarts`).
    pub max_restarts: u32,
    /// Back-off before the first restart; doubles each time, capped at [`MAX_DELAY`].
    pub base_delay: Duration,
}

/// Cap of the restart back-off.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Classifies one exit code or signal.
pub fn classify_exit(e: Exit) -> Verdict {
    match e {
        Exit::Code(exit::OK) => Verdict::Finished,
        Exit::Code(c @ (exit::CONFIG | exit::DATA | exit::UNAVAILABLE)) => {
            Verdict::Fatal { code: c }
        }
        Exit::Code(exit::PREEMPTED) => Verdict::Preempted,
        Exit::Code(c) => Verdict::Retry { code: c },
        Exit::Signal(s) => Verdict::Retry { code: 128 + s },
    }
}

/// The verdict of one node's attempt. `causes` are the failures seen before teardown started
/// (exits of workers we killed ourselves are collateral and not passed in); `preempted` is
/// true when the preempt protocol ran (a signal to the launcher, a worker exiting 4, or
/// another node's request).
pub fn classify(causes: &[Cause], preempted: bool) -> Verdict {
    let mut v = if preempted {
        Verdict::Preempted
    } else {
        Verdict::Finished
    };
    for c in causes {
        let one = match c {
            Cause::Exited { exit, .. } => classify_exit(*exit),
            Cause::Hung(_) | Cause::PeerNode(_) => Verdict::Retry { code: exit::PEER },
        };
        // During a preemption, a retryable failure does not turn the requeue into a restart.
        v = match (v, one) {
            (Verdict::Preempted, Verdict::Retry { .. }) => Verdict::Preempted,
            (a, b) => a.combine(b),
        };
    }
    v
}

/// Applies the budget: `restarts_used` restarts happened so far in this run, and the attempt
/// that just ended was number `restarts_used` (attempt numbers count restarts).
pub fn decide(v: Verdict, restarts_used: u32, policy: &Policy) -> Decision {
    match v {
        Verdict::Finished => Decision::Finished,
        Verdict::Preempted => Decision::Preempted,
        Verdict::Fatal { code } => Decision::GiveUp {
            code,
            reason: format!("a worker failed with exit code {code}, which is never retried"),
        },
        Verdict::Retry { .. } if restarts_used < policy.max_restarts => {
            let factor = 1u32.checked_shl(restarts_used.min(16)).unwrap_or(u32::MAX);
            let delay = policy.base_delay.saturating_mul(factor).min(MAX_DELAY);
            Decision::Restart {
                attempt: restarts_used + 1,
                delay,
            }
        }
        Verdict::Retry { code } => Decision::GiveUp {
            code,
            reason: format!(
                "restart budget spent ({} of {} restarts used)",
                restarts_used, policy.max_restarts
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        max_restarts: 2,
        base_delay: Duration::from_secs(1),
    };

    fn exited(rank: u32, code: i32) -> Cause {
        Cause::Exited {
            rank,
            exit: Exit::Code(code),
        }
    }

    #[test]
    fn each_exit_code_maps_as_documented() {
        let d = |c: &[Cause]| decide(classify(c, false), 0, &P);
        assert_eq!(d(&[]), Decision::Finished);
        assert!(matches!(
            d(&[exited(0, 2)]),
            Decision::GiveUp { code: 2, .. }
        ));
        assert!(matches!(
            d(&[exited(0, 3)]),
            Decision::Restart { attempt: 1, .. }
        ));
        assert_eq!(d(&[exited(0, 4)]), Decision::Preempted);
        assert!(matches!(
            d(&[exited(0, 5)]),
            Decision::GiveUp { code: 5, .. }
        ));
        assert!(matches!(
            d(&[exited(0, 6)]),
            Decision::GiveUp { code: 6, .. }
        ));
        assert!(matches!(d(&[exited(0, 101)]), Decision::Restart { .. }));
        assert!(matches!(d(&[exited(0, 1)]), Decision::Restart { .. }));
        let killed = Cause::Exited {
            rank: 1,
            exit: Exit::Signal(9),
        };
        assert!(matches!(d(&[killed]), Decision::Restart { .. }));
        assert!(matches!(
            d(&[Cause::Hung("rank 1 silent".into())]),
            Decision::Restart { .. }
        ));
        assert!(matches!(d(&[Cause::PeerNode(1)]), Decision::Restart { .. }));
    }

    #[test]
    fn the_budget_bounds_retries_and_the_last_code_is_kept() {
        let v = classify(&[exited(3, 101)], false);
        assert!(matches!(
            decide(v, 1, &P),
            Decision::Restart { attempt: 2, .. }
        ));
        assert_eq!(
            decide(v, 2, &P),
            Decision::GiveUp {
                code: 101,
                reason: "restart budget spent (2 of 2 restarts used)".into()
            }
        );
        let killed = classify(
            &[Cause::Exited {
                rank: 0,
                exit: Exit::Signal(9),
            }],
            false,
        );
        assert!(matches!(
            decide(killed, 2, &P),
            Decision::GiveUp { code: 137, .. }
        ));
    }

    #[test]
    fn never_retried_codes_win_over_retryable_ones() {
        let v = classify(&[exited(0, 3), exited(1, 5), exited(2, 101)], false);
        assert!(matches!(decide(v, 0, &P), Decision::GiveUp { code: 5, .. }));
        // ... even during a preemption: a requeue would fail the same way
        let v = classify(&[exited(0, 2)], true);
        assert!(matches!(decide(v, 0, &P), Decision::GiveUp { code: 2, .. }));
    }

    #[test]
    fn a_preemption_is_not_turned_into_a_restart() {
        assert_eq!(decide(classify(&[], true), 0, &P), Decision::Preempted);
        // a worker missed the deadline and was killed: still a requeue
        let killed = Cause::Exited {
            rank: 0,
            exit: Exit::Signal(9),
        };
        assert_eq!(
            decide(classify(&[killed], true), 0, &P),
            Decision::Preempted
        );
        assert_eq!(
            decide(classify(&[exited(0, 4), exited(1, 3)], false), 9, &P),
            Decision::Preempted
        );
    }

    #[test]
    fn back_off_doubles_and_is_capped() {
        let p = Policy {
            max_restarts: 100,
            base_delay: Duration::from_secs(1),
        };
        let delay = |used| match decide(Verdict::Retry { code: 3 }, used, &p) {
            Decision::Restart { delay, .. } => delay,
            d => panic!("{d:?}"),
        };
        assert_eq!(delay(0), Duration::from_secs(1));
        assert_eq!(delay(1), Duration::from_secs(2));
        assert_eq!(delay(3), Duration::from_secs(8));
        assert_eq!(delay(40), MAX_DELAY);
    }

    #[test]
    fn verdicts_combine_by_severity_and_round_trip() {
        let all = [
            Verdict::Finished,
            Verdict::Retry { code: 3 },
            Verdict::Retry { code: 137 },
            Verdict::Preempted,
            Verdict::Fatal { code: 2 },
            Verdict::Retry { code: -1 },
        ];
        for v in all {
            assert_eq!(Verdict::decode(v.encode()), Some(v));
        }
        assert_eq!(Verdict::decode(0), None);
        assert_eq!(
            Verdict::Finished.combine(Verdict::Retry { code: 3 }),
            Verdict::Retry { code: 3 }
        );
        assert_eq!(
            Verdict::Preempted.combine(Verdict::Fatal { code: 5 }),
            Verdict::Fatal { code: 5 }
        );
    }
}
