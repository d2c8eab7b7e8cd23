//! Validated config + topology + environment → [`Plan`]: which workers this node runs, with
//! which rank, device, CPUs, environment and arguments. Building the slots is pure
//! ([`plan_slots`]); [`Plan::render`] is what the launcher prints at start and `doctor` shows.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use convtt_core::{WorkerDevice, WorkerEnv};

use crate::child::ChildSpec;
use crate::error::{Error, Result};
use crate::restart::Policy;
use crate::topology::{split_cpus, visible_gpus, CpuSet, Gpu, Topology};

/// One local worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Rank on this node.
    pub local_rank: u32,
    /// Global rank (`node_rank × local workers + local_rank`).
    pub rank: u32,
    /// Its device.
    pub device: WorkerDevice,
    /// Its GPU, on GPU runs.
    pub gpu: Option<Gpu>,
    /// CPUs it is pinned to.
    pub cpus: CpuSet,
    /// NUMA node its memory should prefer (when its CPUs are all on one node).
    pub mem_node: Option<u32>,
}

/// Inputs of [`plan_slots`].
#[derive(Debug, Clone)]
pub struct SlotInputs<'a> {
    /// The node.
    pub topo: &'a Topology,
    /// The launcher's own CPU mask.
    pub mask: &'a CpuSet,
    /// GPUs per node (0: CPU workers).
    pub gpus: usize,
    /// CPU workers when `gpus` is 0.
    pub cpu_workers: usize,
    /// `CUDA_VISIBLE_DEVICES`.
    pub cuda_visible: Option<&'a str>,
    /// `SLURM_STEP_GPUS`.
    pub slurm_gpus: Option<&'a [u32]>,
    /// This node's rank.
    pub node_rank: u32,
}

/// Plans this node's workers; notes are things worth printing (fallbacks taken).
pub fn plan_slots(inp: &SlotInputs<'_>) -> Result<(Vec<Slot>, Vec<String>)> {
    let n = if inp.gpus > 0 {
        inp.gpus
    } else {
        inp.cpu_workers
    };
    let (gpus, pools): (Vec<Option<Gpu>>, Vec<CpuSet>) = if inp.gpus > 0 {
        let visible = visible_gpus(inp.topo, inp.cuda_visible, inp.slurm_gpus)?;
        if inp.gpus > visible.len() {
            return Err(Error::Usage(format!(
                "--gpus {} but only {} GPU{} visible on this node (CUDA_VISIBLE_DEVICES={}, \
                 SLURM_STEP_GPUS={}, {} NVIDIA GPUs on the PCI bus)",
                inp.gpus,
                visible.len(),
                if visible.len() == 1 { " is" } else { "s are" },
                inp.cuda_visible.unwrap_or("unset"),
                inp.slurm_gpus.map_or("unset".into(), |g| format!("{g:?}")),
                inp.topo.gpus.len()
            )));
        }
        visible[..inp.gpus]
            .iter()
            .map(|&i| {
                let g = inp.topo.gpus[i].clone();
                let pool = g.local_cpus.clone().unwrap_or_else(|| inp.mask.clone());
                (Some(g), pool)
            })
            .unzip()
    } else {
        (vec![None; n], vec![inp.mask.clone(); n])
    };
    let (cpus, notes) = split_cpus(inp.topo, inp.mask, &pools)?;
    let slots = (0..n)
        .map(|i| {
            let nodes = inp.topo.nodes_of(&cpus[i]);
            Slot {
                local_rank: i as u32,
                rank: inp.node_rank * n as u32 + i as u32,
                device: if inp.gpus > 0 {
                    WorkerDevice::Cuda(i as u32)
                } else {
                    WorkerDevice::Cpu
                },
                gpu: gpus[i].clone(),
                cpus: cpus[i].clone(),
                mem_node: if nodes.len() == 1 {
                    nodes.first().copied()
                } else {
                    None
                },
            }
        })
        .collect();
    Ok((slots, notes))
}

/// Timeouts and the restart budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// SIGTERM → SIGKILL grace.
    pub grace: Duration,
    /// Heartbeat timeout.
    pub heartbeat_timeout: Duration,
    /// Hello deadline after spawn (`None`: not enforced).
    pub startup_timeout: Option<Duration>,
    /// Collective timeout.
    pub collective_timeout: Duration,
    /// Preempt deadline.
    pub preempt_deadline: Duration,
    /// Restart budget.
    pub policy: Policy,
    /// `launch.recovery = "peer"`: replace a dead worker from its peers' memory when possible.
    pub peer_recovery: bool,
    /// `launch.straggler_ratio` (0: off).
    pub straggler_ratio: f64,
}

impl Timing {
    /// From the `[launch]` section.
    pub fn from_config(l: &convtt_core::config::LaunchConfig) -> Timing {
        let s = Duration::from_secs_f64;
        Timing {
            grace: s(l.grace_secs),
            heartbeat_timeout: s(l.heartbeat_timeout_secs),
            startup_timeout: (l.startup_timeout_secs > 0.0).then(|| s(l.startup_timeout_secs)),
            collective_timeout: s(l.collective_timeout_secs),
            preempt_deadline: s(l.preempt_deadline_secs),
            peer_recovery: l.recovery == convtt_core::config::Recovery::Peer,
            straggler_ratio: l.straggler_ratio,
            policy: Policy {
                max_restarts: l.max_restarts,
                base_delay: s(l.restart_delay_secs),
            },
        }
    }
}

/// Everything the supervisor needs for this node.
#[derive(Debug, Clone)]
pub struct Plan {
    /// This node's rank.
    pub node_rank: u32,
    /// Number of nodes.
    pub num_nodes: u32,
    /// Host name (for the plan printout).
    pub host: String,
    /// Job tag (Slurm job/step, or `local`).
    pub tag: String,
    /// The local workers.
    pub slots: Vec<Slot>,
    /// The launcher's CPU mask.
    pub mask: CpuSet,
    /// Run directory (absolute).
    pub run_dir: PathBuf,
    /// The agent socket.
    pub socket: PathBuf,
    /// The worker program.
    pub worker: PathBuf,
    /// Arguments before the `--resume` flag (e.g. `train --config <run>/config.toml`).
    pub worker_args: Vec<String>,
    /// `--resume` of the first attempt (later attempts always resume `auto`).
    pub resume: Option<String>,
    /// Variables set in every worker.
    pub extra_env: Vec<(String, String)>,
    /// Variables removed from every worker.
    pub env_remove: Vec<String>,
    /// Timeouts and budget.
    pub timing: Timing,
    /// Fallbacks taken while planning.
    pub notes: Vec<String>,
    /// Forward worker output to the terminal.
    pub echo: bool,
    /// `train.tensorboard`: the launcher's events (stragglers) go to `<run>/tb/` too.
    pub tensorboard: bool,
}

impl Plan {
    /// Workers over all nodes (every node runs the same number).
    pub fn world_size(&self) -> u32 {
        self.slots.len() as u32 * self.num_nodes
    }

    /// The worker's environment contract for `slot` in `attempt`.
    pub fn worker_env(&self, slot: &Slot, attempt: u32) -> WorkerEnv {
        WorkerEnv {
            rank: slot.rank,
            world_size: self.world_size(),
            local_rank: slot.local_rank,
            local_world_size: self.slots.len() as u32,
            node_rank: self.node_rank,
            num_nodes: self.num_nodes,
            device: slot.device,
            agent: self.socket.clone(),
            run_dir: self.run_dir.clone(),
            attempt,
            cpus: slot.cpus.to_string(),
            recover: false,
        }
    }

    /// The worker's arguments in `attempt`: restarts resume from the newest valid checkpoint.
    pub fn args(&self, attempt: u32) -> Vec<String> {
        let mut a = self.worker_args.clone();
        match (attempt, &self.resume) {
            (0, None) => {}
            (0, Some(r)) => a.extend(["--resume".into(), r.clone()]),
            _ => a.extend(["--resume".into(), "auto".into()]),
        }
        a
    }

    /// How to spawn `slot` in `attempt`.
    pub fn child_spec(&self, slot: &Slot, attempt: u32) -> ChildSpec {
        let mut env: Vec<(String, String)> = self.extra_env.clone();
        env.extend(
            self.worker_env(slot, attempt)
                .to_vars()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v)),
        );
        ChildSpec {
            rank: slot.rank,
            label: format!("[r{}]", slot.rank),
            program: self.worker.clone(),
            args: self.args(attempt),
            env,
            env_remove: self.env_remove.clone(),
            cpus: Some(slot.cpus.clone()),
            mem_node: slot.mem_node,
            log: convtt_core::RunDir::new(&self.run_dir).worker_log(self.node_rank, slot.rank),
            header: format!(
                "==== convtt attempt {attempt} · node {} ({}) · rank {} · {} · cpus {} ====",
                self.node_rank, self.host, slot.rank, slot.device, slot.cpus
            ),
        }
    }

    /// The spec of a worker that replaces `slot`'s dead one in a running group (peer
    /// recovery, `CONVTT_RECOVER=1`): same rank, CPUs and device, the new attempt number.
    pub fn replacement_spec(&self, slot: &Slot, attempt: u32) -> ChildSpec {
        let mut spec = self.child_spec(slot, attempt);
        for (k, v) in &mut spec.env {
            if k == convtt_core::env::RECOVER {
                *v = "1".into();
            }
        }
        spec.header = spec.header.replacen("attempt", "attempt (replacement)", 1);
        spec
    }

    /// The plan as printed at start.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "node {} of {} ({}, {}): {} worker{} of {} · launcher CPUs {} · run dir {}",
            self.node_rank,
            self.num_nodes,
            self.host,
            self.tag,
            self.slots.len(),
            if self.slots.len() == 1 { "" } else { "s" },
            self.world_size(),
            self.mask,
            self.run_dir.display()
        );
        let _ = writeln!(
            s,
            "  {:>5} {:>5} {:>8} {:>14} {:>5} {:>5}  cpus",
            "rank", "local", "device", "pci", "numa", "mem"
        );
        for sl in &self.slots {
            let (pci, numa) = match &sl.gpu {
                Some(g) => (g.pci.clone(), g.numa.map_or("-".into(), |n| n.to_string())),
                None => ("-".into(), "-".into()),
            };
            let _ = writeln!(
                s,
                "  {:>5} {:>5} {:>8} {:>14} {:>5} {:>5}  {}",
                sl.rank,
                sl.local_rank,
                sl.device.to_string(),
                pci,
                numa,
                sl.mem_node.map_or("-".into(), |n| n.to_string()),
                sl.cpus
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }
}

/// The agent socket path for this launcher: `agent.sock` in a private directory (0700, made by
/// [`crate::agent::AgentServer::bind`]) under `$XDG_RUNTIME_DIR`, else `$TMPDIR`, else `/tmp`,
/// named for the job step, node and process, so several runs (sweeps, `mpirun -n 2` on one
/// machine) never collide; short enough for `sun_path`.
pub fn socket_path(tag: &str, node_rank: u32) -> PathBuf {
    let name = format!("convtt-{tag}-n{node_rank}-{}", std::process::id());
    let base = ["XDG_RUNTIME_DIR", "TMPDIR"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .find(|d| d.is_dir())
        .unwrap_or_else(|| "/tmp".into());
    let p = base.join(&name).join("agent.sock");
    if p.as_os_str().len() < 100 {
        p
    } else {
        PathBuf::from("/tmp").join(name).join("agent.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::fake::FakeTree;
    use crate::topology::SysPaths;

    fn four_gpus() -> (FakeTree, SysPaths) {
        let t = FakeTree::new("plan");
        t.cpus(2, 4); // CPUs 0-15, node 0: 0-3,8-11; node 1: 4-7,12-15
        t.pci("0000:1a:00.0", "0x10de", "0x030200", 1, Some("4-7,12-15"));
        t.pci("0000:3b:00.0", "0x10de", "0x030200", 0, Some("0-3,8-11"));
        t.pci("0000:88:00.0", "0x10de", "0x030200", 1, Some("4-7,12-15"));
        t.pci("0000:af:00.0", "0x10de", "0x030200", 0, Some("0-3,8-11"));
        let p = t.paths();
        (t, p)
    }

    #[test]
    fn gpu_slots_follow_cuda_ordinals_and_numa() {
        let (_t, p) = four_gpus();
        let topo = Topology::read(&p);
        let mask = CpuSet::parse("0-15").unwrap();
        let inp = SlotInputs {
            topo: &topo,
            mask: &mask,
            gpus: 2,
            cpu_workers: 1,
            cuda_visible: Some("2,1"),
            slurm_gpus: None,
            node_rank: 1,
        };
        let (slots, _) = plan_slots(&inp).unwrap();
        assert_eq!(slots.len(), 2);
        assert_eq!((slots[0].rank, slots[1].rank), (2, 3));
        assert_eq!(slots[0].device, WorkerDevice::Cuda(0));
        assert_eq!(slots[0].gpu.as_ref().unwrap().pci, "0000:88:00.0");
        assert_eq!(slots[0].cpus.to_string(), "4-7,12-15");
        assert_eq!(slots[0].mem_node, Some(1));
        assert_eq!(slots[1].cpus.to_string(), "0-3,8-11");
        assert_eq!(slots[1].mem_node, Some(0));
    }

    #[test]
    fn more_gpus_than_visible_is_a_usage_error() {
        let (_t, p) = four_gpus();
        let topo = Topology::read(&p);
        let mask = CpuSet::parse("0-15").unwrap();
        let inp = SlotInputs {
            topo: &topo,
            mask: &mask,
            gpus: 3,
            cpu_workers: 1,
            cuda_visible: None,
            slurm_gpus: Some(&[0, 3]),
            node_rank: 0,
        };
        let e = plan_slots(&inp).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains("--gpus 3 but only 2 GPUs are visible"),
            "{e}"
        );
    }

    #[test]
    fn the_worker_env_and_arguments() {
        let (_t, p) = four_gpus();
        let topo = Topology::read(&p);
        let mask = CpuSet::parse("0-15").unwrap();
        let inp = SlotInputs {
            topo: &topo,
            mask: &mask,
            gpus: 0,
            cpu_workers: 2,
            cuda_visible: None,
            slurm_gpus: None,
            node_rank: 0,
        };
        let (slots, _) = plan_slots(&inp).unwrap();
        let plan = Plan {
            node_rank: 0,
            num_nodes: 2,
            host: "h".into(),
            tag: "local".into(),
            slots,
            mask,
            run_dir: "/runs/x".into(),
            socket: "/tmp/s.sock".into(),
            worker: "/bin/convtt-worker".into(),
            worker_args: vec![
                "train".into(),
                "--config".into(),
                "/runs/x/config.toml".into(),
            ],
            resume: Some("/ck/step-1".into()),
            extra_env: vec![],
            env_remove: vec![],
            timing: Timing::from_config(&Default::default()),
            notes: vec![],
            echo: false,
            tensorboard: false,
        };
        assert_eq!(plan.world_size(), 4);
        let env = plan.worker_env(&plan.slots[1], 2);
        assert_eq!(
            (env.rank, env.local_rank, env.world_size, env.attempt),
            (1, 1, 4, 2)
        );
        assert_eq!(env.cpus, "4-7,12-15");
        assert_eq!(plan.args(0)[3..], ["--resume", "/ck/step-1"]);
        assert_eq!(plan.args(1)[3..], ["--resume", "auto"]);
        let spec = plan.child_spec(&plan.slots[1], 0);
        assert_eq!(spec.log, PathBuf::from("/runs/x/logs/0-1.log"));
        assert!(plan.render().contains("node 0 of 2"));
    }
}
