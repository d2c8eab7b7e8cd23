//! One node's launch, end to end: Slurm and MPI context → topology → plan → run directory →
//! supervisor. Also `doctor`, which stops after the plan.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use convtt_core::config::ValidConfig;

use crate::cli::{count_overrides, RunArgs, WorkerCount};
use crate::cluster::{self, Cluster};
use crate::console::Console;
use crate::error::{Error, Result};
use crate::plan::{plan_slots, socket_path, Plan, SlotInputs, Timing};
use crate::shutdown::Shutdown;
use crate::slurm::{SlurmEnv, STRIP_FROM_WORKERS};
use crate::topology::{own_cpu_mask, SysPaths, Topology};

/// Where this launcher stands: node rank and count, and how it talks to the other nodes.
fn join_cluster(slurm: Option<&SlurmEnv>) -> Result<Cluster> {
    let by_mpi = cluster::started_by_mpi();
    let step_nodes = slurm.map_or(1, |s| s.num_nodes);
    if let Some(s) = slurm {
        if s.step_id.is_none() && s.job_nodes > 1 && !by_mpi {
            return Err(Error::Usage(format!(
                "this Slurm allocation has {} nodes but convtt-launch was started once, in the \
                 batch script; start one launcher per node: `srun --ntasks-per-node=1 --mpi=pmix \
                 convtt-launch …`",
                s.job_nodes
            )));
        }
        if step_nodes > 1 && !by_mpi {
            return Err(Error::Usage(format!(
                "srun started launchers on {step_nodes} nodes without an MPI plugin, so they \
                 cannot form a world; add `--mpi=pmix` (`srun --ntasks-per-node=1 --mpi=pmix \
                 convtt-launch …`)"
            )));
        }
    }
    if !by_mpi {
        return Ok(Cluster::Single);
    }
    let c = cluster::start_mpi()?;
    if c.num_nodes() == 1 && slurm.is_some_and(|s| s.job_nodes > 1) {
        return Err(Error::Usage(format!(
            "the Slurm allocation has {} nodes but the MPI world has one launcher; start one per \
             node with `srun --ntasks-per-node=1 --mpi=pmix convtt-launch …`",
            slurm.map_or(0, |s| s.job_nodes)
        )));
    }
    if slurm.is_some_and(|s| s.step_id.is_some()) && c.num_nodes() != step_nodes {
        return Err(Error::Usage(format!(
            "the MPI world has {} launchers but the Slurm step spans {step_nodes} nodes",
            c.num_nodes()
        )));
    }
    Ok(c)
}

/// The worker binary: `--worker`/`CONVTT_WORKER`, else `convtt-worker` beside this binary.
fn find_worker(given: Option<&Path>) -> Result<PathBuf> {
    let from_env = std::env::var_os("CONVTT_WORKER").map(PathBuf::from);
    let p = match given.map(Path::to_owned).or(from_env) {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| Error::io("/proc/self/exe", e))?
            .with_file_name("convtt-worker"),
    };
    if !p.is_file() {
        return Err(Error::Usage(format!(
            "worker binary {} not found (build it with `cargo build -p convtt-worker`, or pass \
             --worker PATH / set CONVTT_WORKER)",
            p.display()
        )));
    }
    Ok(p)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    Ok(cwd.join(p))
}

/// Writes `<run>/config.toml` atomically, with the writer every file of a run uses (every node
/// writes the same text).
fn write_config(run_dir: &Path, cfg: &ValidConfig) -> Result<PathBuf> {
    let run = convtt_core::RunDir::new(run_dir);
    let logs = run.logs();
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let path = run.config();
    convtt_core::fsutil::write_atomic(&path, cfg.to_toml().as_bytes())?;
    Ok(path)
}

fn worker_env_changes() -> (Vec<(String, String)>, Vec<String>) {
    let mut set = vec![("CUDA_DEVICE_ORDER".to_owned(), "PCI_BUS_ID".to_owned())];
    if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
        set.push(("HDF5_USE_FILE_LOCKING".into(), "FALSE".into()));
    }
    // Workers are not MPI ranks or Slurm tasks: an MPI library in the worker must start as a
    // singleton, which it cannot do while it sees the launcher's step/world variables.
    let mut remove: Vec<String> = STRIP_FROM_WORKERS.iter().map(|s| s.to_string()).collect();
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if ["OMPI_", "PMIX_", "PMI_"].iter().any(|p| k.starts_with(p)) {
            remove.push(k.into_owned());
        }
    }
    (set, remove)
}

struct Context {
    slurm: Option<SlurmEnv>,
    topo: Topology,
    mask: crate::topology::CpuSet,
    host: String,
}

impl Context {
    fn read() -> Result<Context> {
        Ok(Context {
            slurm: SlurmEnv::from_env()?,
            topo: Topology::read(&SysPaths::default()),
            mask: own_cpu_mask()?,
            host: convtt_core::env::hostname(),
        })
    }

    fn tag(&self) -> String {
        self.slurm
            .as_ref()
            .map_or_else(|| "local".into(), SlurmEnv::tag)
    }

    fn slots(
        &self,
        cfg: &ValidConfig,
        node_rank: u32,
    ) -> Result<(Vec<crate::plan::Slot>, Vec<String>)> {
        let cvd = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        plan_slots(&SlotInputs {
            topo: &self.topo,
            mask: &self.mask,
            gpus: cfg.launch.gpus,
            cpu_workers: cfg.launch.cpu_workers,
            cuda_visible: cvd.as_deref(),
            slurm_gpus: self.slurm.as_ref().and_then(|s| s.gpus.as_deref()),
            node_rank,
        })
    }
}

/// `convtt-launch …`: runs the job on this node.
pub fn launch(args: RunArgs) -> Result<()> {
    let config = args
        .config
        .clone()
        .ok_or_else(|| Error::Usage("--config FILE is required".into()))?;
    let cfg = convtt_core::config::load(&config, &args.all_overrides())?;
    let ctx = Context::read()?;
    let cluster = join_cluster(ctx.slurm.as_ref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("convtt-launch")
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the tokio runtime: {e}")))?;
    let result = rt.block_on(async {
        let planned = plan_node(&args, &cfg, &ctx, &cluster);
        // Every node must learn whether all could plan, or the others would wait forever.
        let agreed = cluster.agree_ready(planned.is_ok()).await;
        let plan = planned?;
        agreed?;
        eprint!("{}", plan.render());
        let shutdown = Shutdown::from_signals()?;
        let console = Arc::new(Console::new(plan.echo));
        crate::supervisor::run(&plan, &cluster, shutdown, console).await
    });
    cluster.finish();
    // The runtime's threads spawned the workers (PR_SET_PDEATHSIG): they are all gone by now.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

fn plan_node(args: &RunArgs, cfg: &ValidConfig, ctx: &Context, cluster: &Cluster) -> Result<Plan> {
    let node_rank = cluster.node_rank();
    let (slots, notes) = ctx.slots(cfg, node_rank)?;
    let worker = find_worker(args.worker.as_deref())?;
    let run_dir = absolute(Path::new(&cfg.launch.resolved_run_dir()))?;
    let config_path = write_config(&run_dir, cfg)?;
    let (extra_env, env_remove) = worker_env_changes();
    let tag = ctx.tag();
    Ok(Plan {
        node_rank,
        num_nodes: cluster.num_nodes(),
        host: ctx.host.clone(),
        socket: socket_path(&tag, node_rank),
        tag,
        slots,
        mask: ctx.mask.clone(),
        run_dir,
        worker,
        worker_args: vec![
            "train".into(),
            "--config".into(),
            config_path.display().to_string(),
        ],
        resume: args.resume.clone(),
        extra_env,
        env_remove,
        timing: Timing::from_config(&cfg.launch),
        notes,
        echo: !args.quiet_workers,
        tensorboard: cfg.train.tensorboard,
    })
}

/// `convtt-launch doctor`: topology, context and the plan; starts nothing (not even MPI).
pub fn doctor(count: &WorkerCount, config: Option<&Path>, overrides: &[String]) -> Result<()> {
    let ctx = Context::read()?;
    let mut o = overrides.to_vec();
    o.extend(count_overrides(count));
    let cfg = match config {
        Some(c) => convtt_core::config::load(c, &o)?,
        None => {
            if count.gpus.is_none() && count.cpu_workers.is_none() && !ctx.topo.gpus.is_empty() {
                let cvd = std::env::var("CUDA_VISIBLE_DEVICES").ok();
                let n = crate::topology::visible_gpus(
                    &ctx.topo,
                    cvd.as_deref(),
                    ctx.slurm.as_ref().and_then(|s| s.gpus.as_deref()),
                )
                .map_or(0, |v| v.len());
                o.push(format!("launch.gpus={n}"));
            }
            convtt_core::config::parse("", None, &o)
                .map_err(|e| Error::Common(convtt_core::Error::Config(e)))?
        }
    };
    println!("host          {}", ctx.host);
    println!("launcher CPUs {} ({} CPUs)", ctx.mask, ctx.mask.len());
    let nodes: std::collections::BTreeSet<u32> = ctx.topo.cpu_node.values().copied().collect();
    println!(
        "NUMA nodes    {}",
        if nodes.is_empty() {
            "unknown".into()
        } else {
            format!("{nodes:?}")
        }
    );
    println!("cores         {} physical cores", ctx.topo.cores.len());
    println!(
        "GPUs          {} NVIDIA GPU(s) on the PCI bus, in bus order:",
        ctx.topo.gpus.len()
    );
    for (i, g) in ctx.topo.gpus.iter().enumerate() {
        println!(
            "  {i}: {} numa {} minor {} {} local CPUs {}",
            g.pci,
            g.numa.map_or("-".into(), |n| n.to_string()),
            g.minor.map_or("-".into(), |n| n.to_string()),
            g.uuid.as_deref().unwrap_or("-"),
            g.local_cpus.as_ref().map_or("-".into(), |c| c.to_string()),
        );
    }
    println!(
        "CUDA_VISIBLE_DEVICES {}",
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "(unset)".into())
    );
    match &ctx.slurm {
        None => println!("Slurm         no (one node)"),
        Some(s) => println!(
            "Slurm         job {} ({}), node {} of {} ({} in the allocation), hosts {:?}, GPUs {:?}",
            s.job_id, s.tag(), s.node_rank, s.num_nodes, s.job_nodes, s.nodes, s.gpus
        ),
    }
    println!(
        "MPI           {}",
        if cluster::started_by_mpi() {
            "started by mpirun/srun: a run joins the MPI world"
        } else {
            "no (single node)"
        }
    );
    let node_rank = ctx.slurm.as_ref().map_or(0, |s| s.node_rank);
    let num_nodes = ctx.slurm.as_ref().map_or(1, |s| s.num_nodes);
    let (slots, notes) = ctx.slots(&cfg, node_rank)?;
    let tag = ctx.tag();
    let plan = Plan {
        node_rank,
        num_nodes,
        host: ctx.host.clone(),
        socket: socket_path(&tag, node_rank),
        tag,
        slots,
        mask: ctx.mask.clone(),
        run_dir: absolute(Path::new(&cfg.launch.resolved_run_dir()))?,
        worker: PathBuf::new(),
        worker_args: vec![],
        resume: None,
        extra_env: vec![],
        env_remove: vec![],
        timing: Timing::from_config(&cfg.launch),
        notes,
        echo: false,
        tensorboard: false,
    };
    println!("plan:");
    print!("{}", plan.render());
    Ok(())
}
