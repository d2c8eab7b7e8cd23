//! Training: schedules, the optimizer on a flat parameter buffer, and the loop.
//!
//! Rank roles: every rank loads data, computes gradients and steps; only rank 0 validates
//! configuration, writes metric logs and commits checkpoints (all ranks write their shards).

pub mod optim;
pub mod schedule;
