//! What every worker command (train, eval, bench, …) runs in: the validated config, and beside
//! it the runtime — where this worker stands in the job (rank, launcher environment, run
//! directory), what it computes on (device, threads), its collectives and its preemption flags.
//!
//! The two are separate fields of [`Context`] so a command borrows the config immutably while
//! it uses the collectives mutably (`let Context { cfg, rt } = ctx;`), with no copy of the
//! config.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use convtt_common::config::{Precision, ValidConfig};
use convtt_core::{AgentClient, RunDir, WorkerDevice, WorkerEnv};
use tch::Device;

use crate::dist::{Agent, Collective, Nccl, Single};
use crate::error::{Error, Result};
use crate::heartbeat::{Heartbeat, Tracker};
use crate::train::optim::LossScaler;

/// The validated config and the runtime of one worker command.
pub struct Context {
    /// The resolved configuration (never mutated).
    pub cfg: ValidConfig,
    /// Everything else.
    pub rt: Runtime,
}

/// Where this worker stands in the job and what it computes on.
pub struct Runtime {
    /// The launcher's environment (None for a world of one started by hand).
    pub env: Option<WorkerEnv>,
    /// The run directory.
    pub run: RunDir,
    /// The device.
    pub device: Device,
    /// Collectives.
    pub coll: Box<dyn Collective>,
    /// Set by signals: checkpoint, then exit 4.
    preempt: Arc<AtomicBool>,
    /// Set by the launcher's preempt message (the agent client's flag), when launched.
    agent_preempt: Option<Arc<AtomicBool>>,
    /// Dynamic loss scaling (`train.precision = "fp16"` only).
    pub scaler: Option<LossScaler>,
    /// The training thread's phase and progress, which the heartbeat thread reports.
    pub tracker: Tracker,
    _heartbeat: Option<Heartbeat>,
}

impl Context {
    /// Loads the config, reads the launcher's environment, picks the device, sets the thread
    /// count and connects the collectives.
    pub fn new(config: &Path, overrides: &[String], run_dir: Option<PathBuf>) -> Result<Self> {
        let cfg = convtt_common::config::load(config, overrides)?;
        let rt = Runtime::new(&cfg, run_dir)?;
        Ok(Context { cfg, rt })
    }
}

impl Runtime {
    fn new(cfg: &ValidConfig, run_dir: Option<PathBuf>) -> Result<Self> {
        let env = WorkerEnv::from_env().map_err(|e| Error::Usage(e.to_string()))?;
        let run_dir = run_dir
            .or_else(|| env.as_ref().map(|e| e.run_dir.clone()))
            .unwrap_or_else(|| PathBuf::from(cfg.launch.resolved_run_dir()));
        let device = pick_device(cfg, env.as_ref())?;
        let fp16 = cfg.train.precision == Precision::Fp16;
        if fp16 && !device.is_cuda() {
            return Err(Error::Unavailable(
                "train.precision = \"fp16\" on CPU: libtorch's f16 convolutions on CPU are \
                 about 100x slower than f32; use \"bf16\" (or \"f32\") on CPU"
                    .into(),
            ));
        }
        let scaler = fp16.then(LossScaler::default);
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(cfg.train.cudnn_benchmark && !cfg.train.deterministic);
        }
        set_threads(cfg.train.threads);
        let preempt = Arc::new(AtomicBool::new(false));
        install_signals(&preempt)?;
        let mut agent_preempt = None;
        let tracker = crate::heartbeat::process().clone();
        let mut heartbeat = None;
        let coll: Box<dyn Collective> = match &env {
            None => Box::new(Single),
            Some(e) => {
                let timeout = Duration::from_secs_f64(cfg.launch.collective_timeout_secs + 30.0);
                let client =
                    AgentClient::from_env(e, timeout).map_err(|e| Error::Peer(e.to_string()))?;
                agent_preempt = Some(client.preempt_flag());
                let period = Duration::from_secs_f64(cfg.launch.heartbeat_secs);
                heartbeat = Some(Heartbeat::start(
                    tracker.clone(),
                    client.heartbeat_sender(),
                    period,
                ));
                let agent = Agent::new(client);
                match device {
                    // GPU workers all-reduce with NCCL; the agent still carries the id,
                    // barriers, metric sums and heartbeats.
                    Device::Cuda(k) => Box::new(Nccl::connect(agent, k, timeout)?),
                    _ => Box::new(agent),
                }
            }
        };
        Ok(Runtime {
            env,
            run: RunDir::new(run_dir),
            device,
            coll,
            preempt,
            agent_preempt,
            scaler,
            tracker,
            _heartbeat: heartbeat,
        })
    }

    /// A signal or the launcher asked this worker to checkpoint and stop.
    pub fn preempt_requested(&self) -> bool {
        self.preempt.load(Ordering::Acquire)
            || self
                .agent_preempt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// This worker's rank.
    pub fn rank(&self) -> usize {
        self.coll.rank()
    }

    /// Workers in the job.
    pub fn world(&self) -> usize {
        self.coll.world_size()
    }

    /// The launcher's attempt number (0 when started by hand).
    pub fn attempt(&self) -> u32 {
        self.env.as_ref().map_or(0, |e| e.attempt)
    }

    /// A peer recovery moved the group to attempt `attempt` (the names of the checkpoint
    /// directories being written follow it, on every rank alike).
    pub fn set_attempt(&mut self, attempt: u32) {
        if let Some(e) = self.env.as_mut() {
            e.attempt = attempt;
        }
    }

    /// This worker replaces a dead one: its state comes from a peer (`CONVTT_RECOVER=1`).
    pub fn replacing(&self) -> bool {
        self.env.as_ref().is_some_and(|e| e.recover)
    }

    /// Where and on which slice of the data this worker reads.
    pub fn placement(&self) -> crate::data::Placement {
        crate::data::Placement {
            world: self.world(),
            rank: self.rank(),
            device: self.device,
        }
    }
}

fn pick_device(cfg: &ValidConfig, env: Option<&WorkerEnv>) -> Result<Device> {
    use convtt_common::config::DeviceKind;
    let cuda = |k: usize| {
        if tch::Cuda::is_available() && (k as i64) < tch::Cuda::device_count() {
            Ok(Device::Cuda(k))
        } else {
            Err(Error::Unavailable(format!(
                "CUDA device {k} is not available (run `convtt-worker doctor --require-gpu`)"
            )))
        }
    };
    match (cfg.train.device, env.map(|e| e.device)) {
        (DeviceKind::Cpu, _) => Ok(Device::Cpu),
        (_, Some(WorkerDevice::Cuda(k))) => cuda(k as usize),
        (DeviceKind::Cuda, _) => cuda(0),
        (DeviceKind::Auto, _) => Ok(Device::Cpu),
    }
}

/// Intra-op threads: the configured number, else one per CPU of this process's mask (so two
/// workers pinned to one core each do not oversubscribe).
fn set_threads(configured: usize) {
    let n = if configured > 0 {
        configured
    } else {
        crate::doctor::cpu_count(&crate::doctor::cpu_mask())
            .unwrap_or(1)
            .max(1)
    };
    tch::set_num_threads(n as i32);
}

fn install_signals(flag: &Arc<AtomicBool>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let err = |e: std::io::Error| Error::Internal(format!("cannot install signal handlers: {e}"));
    for sig in [SIGTERM, SIGUSR1, SIGUSR2] {
        signal_hook::flag::register(sig, flag.clone()).map_err(err)?;
    }
    // First SIGINT: preempt (checkpoint, exit 4). Second: exit at once (130).
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, flag.clone()).map_err(err)?;
    signal_hook::flag::register(SIGINT, flag.clone()).map_err(err)?;
    Ok(())
}
