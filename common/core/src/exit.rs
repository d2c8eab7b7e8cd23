//! Exit codes shared by `convtt-worker`, `convtt-data` and `convtt-launch` (ARCHITECTURE §3).
//!
//! They are an interface: the launcher's restart policy (`launcher/src/restart.rs`) is a pure
//! function of them, and Slurm scripts requeue on [`PREEMPTED`].

/// Finished.
pub const OK: i32 = 0;
/// Configuration or usage error: never retried.
pub const CONFIG: i32 = 2;
/// Peer or collective failure: retried.
pub const PEER: i32 = 3;
/// Preempted after a committed checkpoint: requeue.
pub const PREEMPTED: i32 = 4;
/// Data error (bad shard): never retried.
pub const DATA: i32 = 5;
/// A missing runtime requirement (e.g. `doctor --require-gpu` without a usable GPU).
pub const UNAVAILABLE: i32 = 6;
/// A Rust panic (a bug): retried within the restart budget.
pub const PANIC: i32 = 101;
