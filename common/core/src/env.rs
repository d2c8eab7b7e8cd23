//! The launcher → worker environment contract (ARCHITECTURE §2.1).
//!
//! `convtt-launch` sets these variables for every worker it spawns; the worker reads them with
//! [`WorkerEnv::from_env`]. Both sides use the names below, so they cannot drift apart.
//! A worker started by hand without any of them is a world of one ([`WorkerEnv::from_env`]
//! returns `Ok(None)`).

use std::path::PathBuf;

/// Global rank of the worker, `0..CONVTT_WORLD_SIZE`.
pub const RANK: &str = "CONVTT_RANK";
/// Number of workers over all nodes.
pub const WORLD_SIZE: &str = "CONVTT_WORLD_SIZE";
/// Rank of the worker on its node, `0..CONVTT_LOCAL_WORLD_SIZE`.
pub const LOCAL_RANK: &str = "CONVTT_LOCAL_RANK";
/// Number of workers on this node.
pub const LOCAL_WORLD_SIZE: &str = "CONVTT_LOCAL_WORLD_SIZE";
/// Index of this node, `0..CONVTT_NUM_NODES`.
pub const NODE_RANK: &str = "CONVTT_NODE_RANK";
/// Number of nodes (launchers).
pub const NUM_NODES: &str = "CONVTT_NUM_NODES";
/// `cpu` or `cuda:K` (K is a CUDA ordinal in the worker's own `CUDA_VISIBLE_DEVICES` space).
pub const DEVICE: &str = "CONVTT_DEVICE";
/// Path of the launcher's agent socket (Unix domain).
pub const AGENT: &str = "CONVTT_AGENT";
/// The run directory.
pub const RUN_DIR: &str = "CONVTT_RUN_DIR";
/// Attempt number: 0 for the first start, +1 per restart of the worker group.
pub const ATTEMPT: &str = "CONVTT_ATTEMPT";
/// The CPU list the worker was pinned to (e.g. `0-3,64-67`), for its logs.
pub const CPUS: &str = "CONVTT_CPUS";

/// `1` in a worker the launcher started to replace a dead one of a running group: it takes the
/// shared training state from a healthy peer instead of a checkpoint (peer recovery). Optional:
/// absent means `0`.
pub const RECOVER: &str = "CONVTT_RECOVER";

/// Every variable of the contract, in documentation order ([`RECOVER`] is optional and not
/// among them).
pub const ALL: [&str; 11] = [
    RANK,
    WORLD_SIZE,
    LOCAL_RANK,
    LOCAL_WORLD_SIZE,
    NODE_RANK,
    NUM_NODES,
    DEVICE,
    AGENT,
    RUN_DIR,
    ATTEMPT,
    CPUS,
];

/// This machine's host name (`localhost` when the kernel does not say).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The device a worker computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerDevice {
    /// The CPU.
    Cpu,
    /// CUDA ordinal K.
    Cuda(u32),
}

impl std::fmt::Display for WorkerDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerDevice::Cpu => f.write_str("cpu"),
            WorkerDevice::Cuda(k) => write!(f, "cuda:{k}"),
        }
    }
}

impl std::str::FromStr for WorkerDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "cpu" {
            return Ok(WorkerDevice::Cpu);
        }
        s.strip_prefix("cuda:")
            .and_then(|k| k.parse().ok())
            .map(WorkerDevice::Cuda)
            .ok_or_else(|| format!("expected `cpu` or `cuda:K`, got {s:?}"))
    }
}

/// What the launcher told a worker about its place in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEnv {
    /// Global rank.
    pub rank: u32,
    /// Workers over all nodes.
    pub world_size: u32,
    /// Rank on this node.
    pub local_rank: u32,
    /// Workers on this node.
    pub local_world_size: u32,
    /// This node's index.
    pub node_rank: u32,
    /// Number of nodes.
    pub num_nodes: u32,
    /// Device to compute on.
    pub device: WorkerDevice,
    /// Agent socket of the node's launcher.
    pub agent: PathBuf,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Attempt number (0, 1, … per restart).
    pub attempt: u32,
    /// The CPU list the worker is pinned to (informational).
    pub cpus: String,
    /// A replacement of a dead worker: its state comes from a peer ([`RECOVER`]).
    pub recover: bool,
}

/// A missing or malformed contract variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("launcher environment: {var}: {msg}")]
pub struct EnvError {
    /// The variable.
    pub var: &'static str,
    /// What is wrong with it.
    pub msg: String,
}

impl WorkerEnv {
    /// Reads the contract from the process environment.
    ///
    /// `Ok(None)` when none of the variables is set (a worker started by hand: a world of
    /// one); an error naming the variable when only some are set or one is malformed.
    pub fn from_env() -> Result<Option<WorkerEnv>, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`WorkerEnv::from_env`], reading variables through `get` (for tests).
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<WorkerEnv>, EnvError> {
        if ALL.iter().all(|k| get(k).is_none()) {
            return Ok(None);
        }
        let text = |var: &'static str| {
            get(var).ok_or_else(|| EnvError {
                var,
                msg: "not set (the launcher sets every CONVTT_* variable; a worker started by \
                      hand must set none of them)"
                    .into(),
            })
        };
        let num = |var: &'static str| -> Result<u32, EnvError> {
            let v = text(var)?;
            v.trim().parse().map_err(|_| EnvError {
                var,
                msg: format!("expected a non-negative integer, got {v:?}"),
            })
        };
        let env = WorkerEnv {
            rank: num(RANK)?,
            world_size: num(WORLD_SIZE)?,
            local_rank: num(LOCAL_RANK)?,
            local_world_size: num(LOCAL_WORLD_SIZE)?,
            node_rank: num(NODE_RANK)?,
            num_nodes: num(NUM_NODES)?,
            device: text(DEVICE)?
                .parse()
                .map_err(|msg| EnvError { var: DEVICE, msg })?,
            agent: PathBuf::from(text(AGENT)?),
            run_dir: PathBuf::from(text(RUN_DIR)?),
            attempt: num(ATTEMPT)?,
            cpus: text(CPUS)?,
            recover: match get(RECOVER).as_deref().map(str::trim) {
                None | Some("" | "0") => false,
                Some("1") => true,
                Some(v) => {
                    return Err(EnvError {
                        var: RECOVER,
                        msg: format!("expected 0 or 1, got {v:?}"),
                    })
                }
            },
        };
        env.check()?;
        Ok(Some(env))
    }

    fn check(&self) -> Result<(), EnvError> {
        let bad = |var, msg: String| Err(EnvError { var, msg });
        if self.world_size == 0 {
            return bad(WORLD_SIZE, "must be at least 1".into());
        }
        if self.rank >= self.world_size {
            return bad(
                RANK,
                format!(
                    "{} is not below {WORLD_SIZE}={}",
                    self.rank, self.world_size
                ),
            );
        }
        if self.local_world_size == 0 || self.local_world_size > self.world_size {
            return bad(
                LOCAL_WORLD_SIZE,
                format!(
                    "{} must be in 1..={}",
                    self.local_world_size, self.world_size
                ),
            );
        }
        if self.local_rank >= self.local_world_size {
            return bad(
                LOCAL_RANK,
                format!(
                    "{} is not below {LOCAL_WORLD_SIZE}={}",
                    self.local_rank, self.local_world_size
                ),
            );
        }
        if self.num_nodes == 0 || self.node_rank >= self.num_nodes {
            return bad(
                NODE_RANK,
                format!(
                    "{} is not below {NUM_NODES}={}",
                    self.node_rank, self.num_nodes
                ),
            );
        }
        Ok(())
    }

    /// The variables as `(name, value)` pairs, in [`ALL`] order, then [`RECOVER`] (what the
    /// launcher sets).
    pub fn to_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            (RANK, self.rank.to_string()),
            (WORLD_SIZE, self.world_size.to_string()),
            (LOCAL_RANK, self.local_rank.to_string()),
            (LOCAL_WORLD_SIZE, self.local_world_size.to_string()),
            (NODE_RANK, self.node_rank.to_string()),
            (NUM_NODES, self.num_nodes.to_string()),
            (DEVICE, self.device.to_string()),
            (AGENT, self.agent.display().to_string()),
            (RUN_DIR, self.run_dir.display().to_string()),
            (ATTEMPT, self.attempt.to_string()),
            (CPUS, self.cpus.clone()),
            (RECOVER, u8::from(self.recover).to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn sample() -> WorkerEnv {
        WorkerEnv {
            rank: 5,
            world_size: 8,
            local_rank: 1,
            local_world_size: 4,
            node_rank: 1,
            num_nodes: 2,
            device: WorkerDevice::Cuda(1),
            agent: "/tmp/convtt-agent.sock".into(),
            run_dir: "runs/x".into(),
            attempt: 2,
            cpus: "8-15".into(),
            recover: true,
        }
    }

    fn lookup(vars: &[(&'static str, String)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn round_trips_through_variables() {
        let env = sample();
        let back = WorkerEnv::from_lookup(lookup(&env.to_vars())).unwrap();
        assert_eq!(back, Some(env));
    }

    #[test]
    fn no_variables_is_a_world_of_one() {
        assert_eq!(WorkerEnv::from_lookup(|_| None).unwrap(), None);
    }

    #[test]
    fn a_missing_variable_is_named() {
        let mut vars = sample().to_vars();
        vars.retain(|(k, _)| *k != ATTEMPT);
        let err = WorkerEnv::from_lookup(lookup(&vars)).unwrap_err();
        assert_eq!(err.var, ATTEMPT);
        assert!(err.to_string().contains("CONVTT_ATTEMPT: not set"), "{err}");
    }

    #[test]
    fn malformed_values_are_named() {
        let mut vars = sample().to_vars();
        vars.iter_mut().find(|(k, _)| *k == DEVICE).unwrap().1 = "gpu0".into();
        let err = WorkerEnv::from_lookup(lookup(&vars)).unwrap_err();
        assert_eq!(err.var, DEVICE);

        let mut vars = sample().to_vars();
        vars.iter_mut().find(|(k, _)| *k == RANK).unwrap().1 = "8".into();
        let err = WorkerEnv::from_lookup(lookup(&vars)).unwrap_err();
        assert_eq!(err.var, RANK);
        assert!(
            err.to_string().contains("not below CONVTT_WORLD_SIZE=8"),
            "{err}"
        );
    }

    #[test]
    fn device_parses() {
        assert_eq!("cpu".parse::<WorkerDevice>(), Ok(WorkerDevice::Cpu));
        assert_eq!("cuda:3".parse::<WorkerDevice>(), Ok(WorkerDevice::Cuda(3)));
        assert!("cuda:".parse::<WorkerDevice>().is_err());
    }
}
