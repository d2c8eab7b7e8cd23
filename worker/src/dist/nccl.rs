//! The NCCL backend (ARCHITECTURE §2.4): GPU collectives through `libnccl`, loaded at run time
//! by cudarc (the build needs no CUDA). Rank 0 makes the unique id of each attempt and the
//! launchers relay it over the agent socket; a watchdog thread polls the communicator for
//! asynchronous errors and enforces the collective timeout — on either it aborts the
//! communicator and ends the process with exit code 3, so the launcher restarts the group with a
//! fresh id. Small host-side reductions (metric sums) and barriers go through the agent.
//!
//! This file holds the worker's NCCL `unsafe`; every block says why it is sound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::nccl::{result, sys};
use tch::{Device, Kind, Tensor};

use super::{Agent, Collective};
use crate::error::{Error, Result};

/// A communicator handle that the watchdog thread may use to poll and abort.
#[derive(Clone, Copy)]
struct CommHandle(sys::ncclComm_t);

// SAFETY: NCCL documents ncclCommGetAsyncError and ncclCommAbort as callable from another
// thread while the owning thread is blocked in (or waiting for) a collective; that is the only
// use the watchdog makes of the handle.
unsafe impl Send for CommHandle {}

impl CommHandle {
    /// The raw handle (a method, so closures capture the whole `Send` wrapper).
    fn ptr(self) -> sys::ncclComm_t {
        self.0
    }
}

/// NCCL collectives for GPU workers.
pub struct Nccl {
    agent: Agent,
    comm: CommHandle,
    device: Device,
    timeout: Duration,
    /// The launcher said the attempt is failing (a peer died): the watchdog aborts at once.
    aborted: Arc<AtomicBool>,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nccl")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn nccl_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Peer(format!("NCCL {what} failed: {e:?}"))
}

impl Nccl {
    /// Creates this attempt's communicator on CUDA device `ordinal`: rank 0 makes the unique id
    /// and sends it through the launcher; the other ranks receive it.
    pub fn connect(mut agent: Agent, ordinal: usize, timeout: Duration) -> Result<Nccl> {
        Self::check_prerequisites()?;
        // Make `ordinal` the current device of this thread (NCCL uses the current device).
        let _ctx = cudarc::driver::CudaContext::new(ordinal)
            .map_err(|e| Error::Unavailable(format!("CUDA device {ordinal}: {e:?}")))?;
        let aborted = agent.abort_flag();
        Self::init(&mut agent, ordinal).map(|comm| Nccl {
            agent,
            comm,
            device: Device::Cuda(ordinal),
            timeout,
            aborted,
        })
    }

    /// The CUDA driver and libnccl must both load (cudarc panics on a missing driver, so this
    /// is checked before any driver call).
    pub fn check_prerequisites() -> Result<()> {
        if !crate::sys::cuda_driver_present() {
            return Err(Error::Unavailable(
                "the NCCL backend needs the CUDA driver (libcuda.so), which is not installed"
                    .into(),
            ));
        }
        if !crate::sys::nccl_present() {
            return Err(Error::Unavailable(
                "libnccl.so not found: install the nvidia-nccl wheel beside torch or put NCCL \
                 on LD_LIBRARY_PATH (see `convtt-worker doctor`)"
                    .into(),
            ));
        }
        Ok(())
    }

    fn init(agent: &mut Agent, ordinal: usize) -> Result<CommHandle> {
        let (rank, world) = (agent.rank(), agent.world_size());
        let id = if rank == 0 {
            let id = result::get_uniqueid().map_err(|e| nccl_err("get_uniqueid", e))?;
            if world > 1 {
                let bytes: Vec<u8> = id.internal.iter().map(|c| *c as u8).collect();
                agent
                    .client()?
                    .send_nccl_id(&bytes)
                    .map_err(|e| Error::Peer(e.to_string()))?;
            }
            id
        } else {
            let bytes = agent
                .client()?
                .recv_nccl_id()
                .map_err(|e| Error::Peer(e.to_string()))?;
            if bytes.len() != 128 {
                return Err(Error::Peer(format!(
                    "NCCL id of {} bytes, expected 128",
                    bytes.len()
                )));
            }
            let mut id = sys::ncclUniqueId { internal: [0; 128] };
            for (d, s) in id.internal.iter_mut().zip(&bytes) {
                *d = *s as std::ffi::c_char;
            }
            id
        };
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; `id` is the 128-byte id every rank received for
        // this attempt; rank and world come from the launcher and are consistent on all ranks.
        unsafe { result::comm_init_rank(&mut comm, world as i32, id, rank as i32) }
            .map_err(|e| nccl_err("comm_init_rank", e))?;
        tracing::info!(rank, world, "NCCL communicator ready on cuda:{ordinal}");
        Ok(CommHandle(comm))
    }

    /// Runs `op` (which enqueues one collective on the default stream), then waits for the
    /// device under the watchdog.
    fn guarded(
        &self,
        what: &'static str,
        op: impl FnOnce(sys::ncclComm_t) -> Result<()>,
    ) -> Result<()> {
        let done = Arc::new(AtomicBool::new(false));
        let watchdog = spawn_watchdog(
            self.comm,
            what,
            self.timeout,
            done.clone(),
            self.aborted.clone(),
        );
        let res = op(self.comm.0);
        if res.is_ok() {
            if let Device::Cuda(k) = self.device {
                tch::Cuda::synchronize(k as i64);
            }
        }
        done.store(true, Ordering::Release);
        let _ = watchdog.join();
        res
    }
}

/// Polls the communicator every 50 ms until `done`; on an asynchronous error, after `timeout`,
/// or when the launcher says the attempt is failing (`aborted`), aborts it and exits the process
/// with code 3 (the launcher restarts the group).
fn spawn_watchdog(
    comm: CommHandle,
    what: &'static str,
    timeout: Duration,
    done: Arc<AtomicBool>,
    aborted: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        while !done.load(Ordering::Acquire) {
            let mut state = sys::ncclResult_t::ncclSuccess;
            // SAFETY: see `CommHandle`: polling the async error from another thread is allowed.
            let polled = unsafe { sys::ncclCommGetAsyncError(comm.ptr(), &mut state) };
            let failed = polled != sys::ncclResult_t::ncclSuccess
                || !matches!(
                    state,
                    sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress
                );
            let late = start.elapsed() > timeout;
            let told = aborted.load(Ordering::Acquire);
            if failed || late || told {
                let why = if failed {
                    format!("asynchronous error {state:?}")
                } else if told {
                    "the launcher says the attempt is failing".to_owned()
                } else {
                    format!("no completion within {:.0} s", timeout.as_secs_f64())
                };
                tracing::error!("NCCL {what}: {why}; aborting the communicator (exit 3)");
                // SAFETY: aborting from another thread is the documented way to unblock a hung
                // collective; the process exits right after, so the handle is never used again.
                let _ = unsafe { result::comm_abort(comm.ptr()) };
                std::process::exit(crate::exit::PEER);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.agent.rank()
    }

    fn world_size(&self) -> usize {
        self.agent.world_size()
    }

    fn all_reduce_mean(&mut self, buf: &mut Tensor) -> Result<()> {
        if buf.device() != self.device || buf.kind() != Kind::Float || !buf.is_contiguous() {
            return Err(Error::Usage(format!(
                "NCCL all-reduce needs a contiguous f32 tensor on {:?} (got {:?} {:?})",
                self.device,
                buf.kind(),
                buf.device()
            )));
        }
        let ptr = buf.data_ptr();
        let n = buf.numel();
        self.guarded("all_reduce", |comm| {
            // SAFETY: `ptr` addresses `n` contiguous f32 on this communicator's device and stays
            // alive (borrowed by `buf`) until `guarded` has synchronized the device. In-place
            // all-reduce (send = receive buffer) is allowed by NCCL. Stream null = the legacy
            // default stream libtorch uses, so the collective is ordered after the backward pass.
            unsafe {
                result::all_reduce(
                    ptr,
                    ptr,
                    n,
                    sys::ncclDataType_t::ncclFloat32,
                    sys::ncclRedOp_t::ncclAvg,
                    comm,
                    std::ptr::null_mut(),
                )
            }
            .map(|_| ())
            .map_err(|e| nccl_err("all_reduce", e))
        })
    }

    fn all_reduce_sum_f64(&mut self, values: &mut [f64]) -> Result<()> {
        self.agent.all_reduce_sum_f64(values)
    }

    fn broadcast(&mut self, buf: &mut Tensor) -> Result<()> {
        let mut on = buf.to_device(self.device).to_kind(Kind::Float).contiguous();
        let ptr = on.data_ptr();
        let n = on.numel();
        self.guarded("broadcast", |comm| {
            // SAFETY: as in `all_reduce_mean`; `on` outlives the synchronization.
            unsafe {
                result::broadcast(
                    ptr,
                    ptr,
                    n,
                    sys::ncclDataType_t::ncclFloat32,
                    0,
                    comm,
                    std::ptr::null_mut(),
                )
            }
            .map(|_| ())
            .map_err(|e| nccl_err("broadcast", e))
        })?;
        on = on.to_device(buf.device()).to_kind(buf.kind());
        tch::no_grad(|| buf.copy_(&on));
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        self.agent.barrier()
    }

    fn goodbye(&mut self, code: i32, reason: &str) {
        self.agent.goodbye(code, reason)
    }

    fn checkpoint_committed(&mut self, step: u64, path: &std::path::Path) -> Result<()> {
        self.agent.checkpoint_committed(step, path)
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // SAFETY: the communicator was created by comm_init_rank and no collective is in flight
        // (every collective is synchronized before `guarded` returns).
        let _ = unsafe { result::comm_destroy(self.comm.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_cuda_driver_the_backend_refuses_with_a_clear_error() {
        if crate::sys::cuda_driver_present() {
            // A GPU machine: connecting needs a launcher; the gpu-tests runs exercise it.
            assert!(
                crate::sys::nccl_present(),
                "a GPU machine must find libnccl.so"
            );
            return;
        }
        let msg = match Nccl::check_prerequisites() {
            Err(e) => e.to_string(),
            Ok(()) => panic!("NCCL prerequisites reported present without a CUDA driver"),
        };
        assert!(msg.contains("CUDA driver"), "{msg}");
    }

    /// The backend as a world of one on CUDA device 0: a real communicator, an all-reduce of
    /// a tensor's memory (the mean over one rank is the tensor) and a broadcast of a CPU tensor
    /// through the device.
    #[cfg(feature = "gpu-tests")]
    #[test]
    fn nccl_world_of_one_all_reduces_and_broadcasts_on_cuda() {
        assert!(tch::Cuda::is_available(), "gpu-tests needs a CUDA device");
        let mut nccl = Nccl::connect(Agent::world_of_one(), 0, Duration::from_secs(60))
            .expect("NCCL communicator of one rank");
        let cuda = (Kind::Float, Device::Cuda(0));
        let mut buf = Tensor::arange(4099, cuda) * 0.25 - 7.0;
        let want = Vec::<f32>::try_from(buf.to_device(Device::Cpu)).unwrap();
        nccl.all_reduce_mean(&mut buf).unwrap();
        let got = Vec::<f32>::try_from(buf.to_device(Device::Cpu)).unwrap();
        assert_eq!(got, want, "the mean over one rank is the tensor itself");
        let mut host = Tensor::from_slice(&[1.5f32, -2.0, 3.25]);
        nccl.broadcast(&mut host).unwrap();
        assert_eq!(Vec::<f32>::try_from(host).unwrap(), vec![1.5, -2.0, 3.25]);
        let e = nccl
            .all_reduce_mean(&mut Tensor::ones([3], (Kind::Float, Device::Cpu)))
            .unwrap_err();
        assert!(e.to_string().contains("contiguous f32 tensor"), "{e}");
    }
}
