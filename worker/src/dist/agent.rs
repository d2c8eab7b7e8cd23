//! The Agent backend (ARCHITECTURE §2.4): CPU collectives through the node's launcher, which
//! sums its workers' contributions in a fixed rank order (and across nodes over MPI), so results
//! are bit-identical on every rank and every run.

use convtt_core::AgentClient;
use tch::{Kind, Tensor};

use super::Collective;
use crate::error::{Error, Result};

/// Collectives over the launcher's agent socket.
pub struct Agent {
    client: Option<AgentClient>,
    rank: usize,
    world: usize,
    /// `CONVTT_FAULT` entries for the `allreduce` phase (rehearsals and tests).
    faults: Vec<convtt_core::fault::Fault>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("rank", &self.rank).finish()
    }
}

fn peer(e: convtt_core::AgentError) -> Error {
    match e {
        convtt_core::AgentError::PeerLost { .. } => Error::PeerLost(e.to_string()),
        e => Error::Peer(e.to_string()),
    }
}

impl Agent {
    /// Wraps a connected client.
    pub fn new(client: AgentClient) -> Self {
        let (rank, world) = (client.rank() as usize, client.world_size() as usize);
        // A malformed CONVTT_FAULT is reported by the trainer (exit 2); here it arms nothing.
        let faults = convtt_core::fault::from_env()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.phase == convtt_core::fault::Phase::AllReduce)
            .collect();
        Agent {
            client: Some(client),
            rank,
            world,
            faults,
        }
    }

    /// A world of one with no launcher behind it: there is no peer to exchange anything with,
    /// so only the NCCL backend's own collectives work (its CUDA test uses this).
    #[cfg(all(test, feature = "gpu-tests"))]
    pub(crate) fn world_of_one() -> Self {
        Agent {
            client: None,
            rank: 0,
            world: 1,
            faults: Vec::new(),
        }
    }

    /// An injected `allreduce`-phase fault: this rank dies (or exits) right after its gradient
    /// went out, at the step the training thread reports.
    fn fault_after_send(&self) {
        use convtt_core::fault::{Action, Phase};
        let Some(client) = &self.client else { return };
        let step = crate::heartbeat::process().snapshot().step;
        let (rank, attempt) = (self.rank as u32, client.attempt());
        for f in self
            .faults
            .iter()
            .filter(|f| f.fires(rank, attempt, Phase::AllReduce, step))
        {
            tracing::warn!(rank, step, "injected fault: {f}");
            match f.action {
                Action::Kill => crate::train::faults::kill_self(),
                Action::Exit(code) => std::process::exit(code),
                _ => {}
            }
        }
    }

    /// The launcher's abort flag (never set for a world of one without a launcher).
    pub(crate) fn abort_flag(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.client
            .as_ref()
            .map_or_else(Default::default, convtt_core::AgentClient::abort_flag)
    }

    /// The connection, for the NCCL id exchange (an error once goodbye closed it).
    pub(crate) fn client(&mut self) -> Result<&mut AgentClient> {
        self.client
            .as_mut()
            .ok_or_else(|| Error::Peer("the agent connection was already closed".into()))
    }
}

impl Collective for Agent {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_mean(&mut self, buf: &mut Tensor) -> Result<()> {
        let mut host = Vec::<f32>::try_from(buf.to_device(tch::Device::Cpu).to_kind(Kind::Float))?;
        let seq = self.client()?.start_all_reduce(&host).map_err(peer)?;
        self.fault_after_send();
        self.client()?
            .finish_all_reduce(seq, &mut host)
            .map_err(peer)?;
        let back = Tensor::from_slice(&host)
            .to_device(buf.device())
            .view(buf.size().as_slice());
        tch::no_grad(|| buf.copy_(&back));
        Ok(())
    }

    fn all_reduce_sum_f64(&mut self, values: &mut [f64]) -> Result<()> {
        // The channel carries f32: send each value as hi + lo (two f32 whose sum is the f64 to
        // ~1e-14 relative), average both halves, then scale back to a sum.
        let mut parts = Vec::with_capacity(values.len() * 2);
        for v in values.iter() {
            let hi = *v as f32;
            parts.push(hi);
            parts.push((*v - f64::from(hi)) as f32);
        }
        self.client()?.all_reduce_mean(&mut parts).map_err(peer)?;
        let n = self.world_size() as f64;
        for (v, p) in values.iter_mut().zip(parts.chunks(2)) {
            *v = (f64::from(p[0]) + f64::from(p[1])) * n;
        }
        Ok(())
    }

    fn broadcast(&mut self, buf: &mut Tensor) -> Result<()> {
        let mut host = Vec::<f32>::try_from(buf.to_device(tch::Device::Cpu).to_kind(Kind::Float))?;
        let mut bytes: Vec<u8> = host.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.client()?.broadcast(&mut bytes).map_err(peer)?;
        for (v, b) in host.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let back = Tensor::from_slice(&host)
            .to_device(buf.device())
            .view(buf.size().as_slice());
        tch::no_grad(|| buf.copy_(&back));
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        self.client()?.barrier().map_err(peer)
    }

    fn goodbye(&mut self, code: i32, reason: &str) {
        if let Some(client) = self.client.take() {
            if let Err(e) = client.goodbye(code, reason) {
                tracing::debug!("goodbye not delivered: {e}");
            }
        }
    }

    fn standby(
        &mut self,
        step: u64,
        checksum: u64,
        donate: &mut dyn FnMut() -> Vec<u8>,
    ) -> Result<convtt_core::protocol::Resumed> {
        self.client()?.standby(step, checksum, donate).map_err(peer)
    }

    fn fetch_state(&mut self) -> Result<Vec<u8>> {
        self.client()?.fetch_state().map_err(peer)
    }

    fn checkpoint_committed(&mut self, step: u64, path: &std::path::Path) -> Result<()> {
        self.client()?
            .checkpoint_committed(step, path)
            .map_err(peer)
    }
}
