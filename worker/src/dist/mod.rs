//! Collectives inside the worker (ARCHITECTURE §2.4): one trait, three backends. This module
//! holds the trait and the world-of-one backend; the Agent (CPU, through the launcher) and NCCL
//! backends plug in behind the same trait.

mod agent;
mod nccl;

pub use agent::Agent;
pub use nccl::Nccl;
use tch::{Kind, Tensor};

use crate::error::Result;

/// Collective operations over all ranks of a run.
pub trait Collective {
    /// This process's global rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Replaces `buf` (f32, contiguous) with the element-wise mean over ranks.
    fn all_reduce_mean(&mut self, buf: &mut Tensor) -> Result<()>;
    /// Replaces `values` with the element-wise sum over ranks (metric sums; f64 precision).
    fn all_reduce_sum_f64(&mut self, values: &mut [f64]) -> Result<()>;
    /// Replaces `buf` on every rank with rank 0's.
    fn broadcast(&mut self, buf: &mut Tensor) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<()>;
    /// Tells the supervisor why this worker is about to exit with `code` (best effort).
    fn goodbye(&mut self, _code: i32, _reason: &str) {}
    /// Peer recovery: this rank holds the shared state at its recovery point (`step`,
    /// `checksum`); returns when the launcher resumes the group. `donate` serialises the
    /// state when this rank is chosen as the donor. Only the agent backend supports it.
    fn standby(
        &mut self,
        _step: u64,
        _checksum: u64,
        _donate: &mut dyn FnMut() -> Vec<u8>,
    ) -> Result<convtt_core::protocol::Resumed> {
        Err(crate::error::Error::Peer(
            "peer recovery needs the agent backend (CPU workers under convtt-launch)".into(),
        ))
    }
    /// Peer recovery, in the replacement: the group's shared state from a healthy peer.
    fn fetch_state(&mut self) -> Result<Vec<u8>> {
        Err(crate::error::Error::Peer(
            "peer recovery needs the agent backend (CPU workers under convtt-launch)".into(),
        ))
    }
    /// Rank 0: tells the supervisor a checkpoint was committed.
    fn checkpoint_committed(&mut self, _step: u64, _path: &std::path::Path) -> Result<()> {
        Ok(())
    }
}

/// A world of one: every operation is the identity.
#[derive(Debug, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_mean(&mut self, _buf: &mut Tensor) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _buf: &mut Tensor) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Checks that every rank holds the same parameters: each rank compares a fingerprint of its
/// flat buffer (Σp, Σp², Σ i·p in f64) with the mean over ranks. Cheap: three sums and one
/// small all-reduce. Returns the largest relative deviation seen by this rank.
pub fn parameter_drift(coll: &mut dyn Collective, flat: &Tensor) -> Result<f64> {
    let p = flat.to_kind(Kind::Double);
    let idx = Tensor::arange(p.size()[0], (Kind::Double, p.device())) / p.size()[0].max(1) as f64;
    let mine = [
        p.sum(Kind::Double).double_value(&[]),
        p.square().sum(Kind::Double).double_value(&[]),
        (&p * idx).sum(Kind::Double).double_value(&[]),
    ];
    let mut mean = mine;
    coll.all_reduce_sum_f64(&mut mean)?;
    let n = coll.world_size() as f64;
    Ok(mine
        .iter()
        .zip(mean)
        .map(|(a, s)| (a - s / n).abs() / a.abs().max(1e-12))
        .fold(0.0, f64::max))
}
