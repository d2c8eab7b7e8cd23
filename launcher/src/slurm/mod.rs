//! What Slurm tells a launcher about its place in the job (orchestrators.md §1c).
//!
//! The model is one launcher per node: `srun --ntasks-per-node=1 convtt-launch …`. Node rank
//! and count come from the step (`SLURM_PROCID`, `SLURM_STEP_NUM_NODES`); more than one launcher
//! on a node (`SLURM_LOCALID > 0`) is refused, since its workers would fight the first
//! launcher's over the same GPUs (NCCL "Duplicate GPU detected").

pub mod nodelist;

use crate::error::{Error, Result};

/// The Slurm variables a launcher uses. Absent entirely outside Slurm.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlurmEnv {
    /// `SLURM_JOB_ID`.
    pub job_id: String,
    /// `SLURM_STEP_ID` (or `SLURM_STEPID`); `None` in the batch script itself.
    pub step_id: Option<String>,
    /// `SLURM_ARRAY_JOB_ID`, for array jobs.
    pub array_job_id: Option<String>,
    /// `SLURM_ARRAY_TASK_ID`, for array jobs.
    pub array_task_id: Option<String>,
    /// Node index of this launcher within the step (`SLURM_PROCID`, = `SLURM_NODEID` with one
    /// task per node); 0 outside a step.
    pub node_rank: u32,
    /// Nodes of the step (`SLURM_STEP_NUM_NODES`), else of the job (`SLURM_JOB_NUM_NODES`,
    /// `SLURM_NNODES`).
    pub num_nodes: u32,
    /// Nodes of the whole allocation (`SLURM_JOB_NUM_NODES`).
    pub job_nodes: u32,
    /// Hosts of the step (or job), expanded.
    pub nodes: Vec<String>,
    /// `SLURM_STEP_GPUS` (or `SLURM_JOB_GPUS`): physical GPU indices, when Slurm manages GPUs.
    pub gpus: Option<Vec<u32>>,
    /// `SLURM_CPUS_PER_TASK`, when set.
    pub cpus_per_task: Option<u32>,
}

impl SlurmEnv {
    /// Reads the process environment; `Ok(None)` outside Slurm.
    pub fn from_env() -> Result<Option<SlurmEnv>> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`SlurmEnv::from_env`] through `get` (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<SlurmEnv>> {
        let Some(job_id) = get("SLURM_JOB_ID").or_else(|| get("SLURM_JOBID")) else {
            return Ok(None);
        };
        let first = |keys: &[&'static str]| -> Option<(&'static str, String)> {
            keys.iter().find_map(|k| get(k).map(|v| (*k, v)))
        };
        let num =
            |keys: &[&'static str]| -> Result<Option<u32>> {
                match first(keys) {
                    None => Ok(None),
                    Some((k, v)) => v.trim().parse().map(Some).map_err(|_| {
                        Error::Usage(format!("{k}={v:?} is not a non-negative integer"))
                    }),
                }
            };
        let step_id = get("SLURM_STEP_ID").or_else(|| get("SLURM_STEPID"));
        let local_id = num(&["SLURM_LOCALID"])?.unwrap_or(0);
        let in_step = step_id.is_some();
        let job_nodes = num(&["SLURM_JOB_NUM_NODES", "SLURM_NNODES"])?.unwrap_or(1);
        let (node_rank, num_nodes) = if in_step {
            (
                num(&["SLURM_PROCID"])?.unwrap_or(0),
                num(&[
                    "SLURM_STEP_NUM_NODES",
                    "SLURM_JOB_NUM_NODES",
                    "SLURM_NNODES",
                ])?
                .unwrap_or(1),
            )
        } else {
            (0, job_nodes)
        };
        if in_step && local_id > 0 {
            return Err(Error::Usage(format!(
                "SLURM_LOCALID={local_id}: more than one convtt-launch runs on this node; start \
                 exactly one per node (`srun --ntasks-per-node=1 convtt-launch …`): the launcher \
                 itself spawns one worker per GPU"
            )));
        }
        if in_step {
            if let Some(ntasks) = num(&["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"])? {
                if ntasks != num_nodes {
                    return Err(Error::Usage(format!(
                        "the Slurm step has {ntasks} tasks on {num_nodes} nodes; start exactly one \
                         convtt-launch per node (`srun --ntasks-per-node=1 …`)"
                    )));
                }
            }
        }
        if node_rank >= num_nodes.max(1) {
            return Err(Error::Usage(format!(
                "SLURM_PROCID={node_rank} is not below the step's {num_nodes} nodes"
            )));
        }
        let nodelist = first(&[
            "SLURM_STEP_NODELIST",
            "SLURM_JOB_NODELIST",
            "SLURM_NODELIST",
        ])
        .map(|(_, v)| v)
        .unwrap_or_default();
        let nodes = nodelist::expand(&nodelist).map_err(|e| Error::Usage(e.to_string()))?;
        let gpus = match first(&["SLURM_STEP_GPUS", "SLURM_JOB_GPUS"]) {
            None => None,
            Some((k, v)) => Some(
                v.split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse())
                    .collect::<std::result::Result<Vec<u32>, _>>()
                    .map_err(|_| Error::Usage(format!("{k}={v:?}: expected GPU indices")))?,
            ),
        };
        Ok(Some(SlurmEnv {
            job_id,
            step_id,
            array_job_id: get("SLURM_ARRAY_JOB_ID"),
            array_task_id: get("SLURM_ARRAY_TASK_ID"),
            node_rank,
            num_nodes: num_nodes.max(1),
            job_nodes: job_nodes.max(1),
            nodes,
            gpus,
            cpus_per_task: num(&["SLURM_CPUS_PER_TASK"])?,
        }))
    }

    /// A short tag naming this job step, unique among runs sharing a node: `j123.0`,
    /// `j123_7.0` for array task 7, `j123.batch` in the batch script.
    pub fn tag(&self) -> String {
        let job = match (&self.array_job_id, &self.array_task_id) {
            (Some(a), Some(t)) => format!("{a}_{t}"),
            _ => self.job_id.clone(),
        };
        format!("j{job}.{}", self.step_id.as_deref().unwrap_or("batch"))
    }

    /// The host name of node `rank`, when the node list is known.
    pub fn host(&self, rank: u32) -> Option<&str> {
        self.nodes.get(rank as usize).map(String::as_str)
    }
}

/// Variables removed from every worker's environment: an OpenMPI singleton inside an srun step
/// aborts when it sees them (spike pitfall 11), and workers are not Slurm tasks.
pub const STRIP_FROM_WORKERS: [&str; 2] = ["SLURM_STEP_ID", "SLURM_STEPID"];

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Option<SlurmEnv>> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SlurmEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn outside_slurm_there_is_nothing() {
        assert_eq!(env(&[("HOME", "/root")]).unwrap(), None);
    }

    #[test]
    fn a_step_with_one_task_per_node() {
        let s = env(&[
            ("SLURM_JOB_ID", "4242"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "2"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_STEP_NUM_NODES", "4"),
            ("SLURM_STEP_NUM_TASKS", "4"),
            ("SLURM_JOB_NUM_NODES", "4"),
            ("SLURM_STEP_NODELIST", "gpu[01-03],gpu07"),
            ("SLURM_STEP_GPUS", "0,1,2,3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((s.node_rank, s.num_nodes), (2, 4));
        assert_eq!(s.host(2), Some("gpu03"));
        assert_eq!(s.host(3), Some("gpu07"));
        assert_eq!(s.gpus, Some(vec![0, 1, 2, 3]));
        assert_eq!(s.tag(), "j4242.0");
    }

    #[test]
    fn array_tasks_and_batch_scripts_get_distinct_tags() {
        let s = env(&[
            ("SLURM_JOB_ID", "100"),
            ("SLURM_ARRAY_JOB_ID", "99"),
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_JOB_NUM_NODES", "1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.tag(), "j99_7.batch");
        assert_eq!((s.node_rank, s.num_nodes), (0, 1));
    }

    #[test]
    fn two_launchers_on_one_node_are_refused() {
        let e = env(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_STEPID", "0"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_NUM_NODES", "1"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("SLURM_LOCALID=1"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = env(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_STEP_NUM_NODES", "2"),
            ("SLURM_STEP_NUM_TASKS", "16"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--ntasks-per-node=1"), "{e}");
    }

    #[test]
    fn the_batch_script_of_a_multi_node_job_is_one_launcher_for_all_nodes() {
        let s = env(&[("SLURM_JOB_ID", "1"), ("SLURM_JOB_NUM_NODES", "2")])
            .unwrap()
            .unwrap();
        // Not an error here: the caller refuses it because no MPI world spans the nodes.
        assert_eq!((s.num_nodes, s.step_id.as_deref()), (2, None));
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let e = env(&[("SLURM_JOB_ID", "1"), ("SLURM_JOB_GPUS", "0,x")]).unwrap_err();
        assert!(e.to_string().contains("SLURM_JOB_GPUS"), "{e}");
        let e = env(&[("SLURM_JOB_ID", "1"), ("SLURM_JOB_NODELIST", "n[1-")]).unwrap_err();
        assert!(e.to_string().contains("hostlist"), "{e}");
    }
}
