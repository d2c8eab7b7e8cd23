//! `convtt-launch sweep run --local [--parallel K]`: the sweep's trials on this machine, K at a
//! time, each in its own slot.
//!
//! Slots: CPU trials (`launch.gpus = 0`) split this process's CPU mask into K contiguous groups
//! of at least `launch.cpu_workers` CPUs, and each trial is pinned to its group (its launcher
//! then splits the group among its workers). GPU trials get `launch.gpus` GPUs each through
//! `CUDA_VISIBLE_DEVICES` (PCI order), K ≤ visible GPUs / `launch.gpus`; their launchers pin
//! workers to the GPUs' local CPUs.
//!
//! Resumable: finished trials are skipped, failed ones retried while `sweep.max_retries`
//! allows (`--retry-failed` resets the budget), preempted or interrupted ones resume from their
//! newest checkpoint. Every trial is a `convtt-launch sweep task` child whose output goes to
//! `<trial>/task.log`; the report is written at the end.

use tokio::task::JoinSet;

use super::task::{run_child, ChildCmd, Forwarder, State, TrialStatus};
use super::{report, write_plan, Manifest, Planned, SweepDir};
use crate::error::{Error, Result};
use crate::topology::{own_cpu_mask, visible_gpus, CpuSet, SysPaths, Topology};

/// Options of `sweep run --local`.
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// Trials at a time.
    pub parallel: usize,
    /// Reset the retry budget of failed trials.
    pub retry_failed: bool,
    /// `--worker` for the trials' launchers.
    pub worker: Option<std::path::PathBuf>,
    /// Run only these trials (`rerun`, `resume`), whatever the others' states.
    pub only: Option<Vec<usize>>,
}

/// What `sweep rerun` / `sweep resume` picks.
#[derive(Debug, Clone, Default)]
pub struct Pick {
    /// The failed trials (a fresh retry budget).
    pub failed: bool,
    /// The trials ASHA stopped (promoted).
    pub stopped: bool,
    /// Trials to promote, by id or index.
    pub promote: Vec<String>,
}

/// Marks the picked trials (fresh budget for failed ones, promotion for stopped or named ones)
/// and returns their indices.
pub fn pick_trials(dir: &SweepDir, m: &Manifest, pick: &Pick) -> Result<Vec<usize>> {
    for want in &pick.promote {
        if !m
            .trials
            .iter()
            .any(|t| &t.id == want || &t.index.to_string() == want)
        {
            return Err(Error::Usage(format!(
                "--promote {want}: no trial of {} has that id or index",
                dir.manifest().display()
            )));
        }
    }
    let mut out = Vec::new();
    for t in &m.trials {
        let run_dir = dir.trial(&t.id);
        let mut st = TrialStatus::read(&run_dir);
        let state = st.effective(&run_dir);
        let named = pick
            .promote
            .iter()
            .any(|w| w == &t.id || w == &t.index.to_string());
        if pick.failed && state == State::Failed {
            st.grant_rerun();
        } else if named || (pick.stopped && state == State::Stopped) {
            if state == State::Done {
                tracing::info!("trial {} ({}) is finished already", t.index, t.id);
                continue;
            }
            st.promoted = true;
            if state == State::Stopped {
                // Resumable from its checkpoint, as after a preemption.
                st.state = State::Preempted;
            }
        } else {
            continue;
        }
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
        st.write(&run_dir)?;
        out.push(t.index);
    }
    Ok(out)
}

/// `sweep rerun` / `sweep resume --promote`: exactly the picked trials, on this machine.
pub fn rerun(
    dir: &SweepDir,
    planned: &Planned,
    pick: &Pick,
    parallel: usize,
    worker: Option<std::path::PathBuf>,
) -> Result<()> {
    write_plan(dir, planned)?;
    let only = pick_trials(dir, &planned.manifest, pick)?;
    if only.is_empty() {
        eprintln!("sweep: no trial to run again");
        return Ok(());
    }
    eprintln!("sweep: running trials {only:?} again");
    let opts = LocalOptions {
        parallel,
        retry_failed: false,
        worker,
        only: Some(only),
    };
    run_local(dir, planned, &opts)
}

/// Where one trial runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slot {
    /// CPUs to pin the trial to.
    pub cpus: Option<CpuSet>,
    /// `CUDA_VISIBLE_DEVICES` for the trial.
    pub cuda_visible: Option<String>,
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.cpus, &self.cuda_visible) {
            (_, Some(g)) => write!(f, "GPUs {g}"),
            (Some(c), None) => write!(f, "CPUs {c}"),
            (None, None) => write!(f, "this machine"),
        }
    }
}

/// Splits `mask` into `k` contiguous groups of at least `per_trial` CPUs (fewer groups when
/// the mask is too small); the remainder goes to the first groups.
pub fn cpu_slots(mask: &CpuSet, k: usize, per_trial: usize) -> Vec<Slot> {
    let cpus: Vec<u32> = mask.0.iter().copied().collect();
    let k = k.min(cpus.len() / per_trial.max(1)).max(1);
    let (each, extra) = (cpus.len() / k, cpus.len() % k);
    let mut out = Vec::new();
    let mut at = 0;
    for i in 0..k {
        let n = each + usize::from(i < extra);
        out.push(Slot {
            cpus: Some(CpuSet(cpus[at..at + n].iter().copied().collect())),
            cuda_visible: None,
        });
        at += n;
    }
    out
}

/// `k` slots of `per_trial` GPUs each from the visible GPUs (PCI-order indices), `share`
/// trials on each group (`launch.trials_per_gpu`): group g's trials take slots g, g + groups, ….
pub fn gpu_slots(visible: &[usize], k: usize, per_trial: usize, share: usize) -> Result<Vec<Slot>> {
    let fit = visible.len() / per_trial;
    if fit == 0 {
        return Err(Error::Usage(format!(
            "each trial needs launch.gpus = {per_trial} GPUs but {} are visible",
            visible.len()
        )));
    }
    Ok((0..k.min(fit * share.max(1)))
        .map(|j| j % fit)
        .map(|i| Slot {
            cpus: None,
            cuda_visible: Some(
                visible[i * per_trial..(i + 1) * per_trial]
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        })
        .collect())
}

/// `sweep task --index I,J,…` (an array task packing `launch.trials_per_gpu` trials): runs
/// those trials at once on this task's CPUs or GPUs, as `sweep run --local` does; exits like a
/// task (0 when all finished or stopped, 4 when one was preempted: requeue).
pub fn run_pack(
    dir: &SweepDir,
    indices: &[usize],
    worker: Option<std::path::PathBuf>,
) -> Result<()> {
    let m = dir.read_manifest()?;
    if let Some(bad) = indices.iter().find(|&&i| i >= m.trials.len()) {
        return Err(Error::Usage(format!(
            "trial index {bad} is out of range: {} has {} trials",
            dir.manifest().display(),
            m.trials.len()
        )));
    }
    let base = convtt_core::config::load(&dir.base(), &[] as &[&str])?;
    let planned = Planned { base, manifest: m };
    let slots = slots(&planned, indices.len())?;
    let opts = LocalOptions {
        parallel: indices.len(),
        retry_failed: false,
        worker,
        only: Some(indices.to_vec()),
    };
    let (queue, _, _) = queue_trials(dir, &planned.manifest, &opts)?;
    tracing::info!("packed task: trials {queue:?} on {}", describe(&slots));
    let ran = run_queue(dir, &planned.manifest, &slots, queue, &opts)?;
    verdict(dir, &planned.manifest, ran, opts.only.as_deref())
}

/// The slots, for a log line.
fn describe(slots: &[Slot]) -> String {
    slots
        .iter()
        .map(Slot::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn slots(planned: &Planned, parallel: usize) -> Result<Vec<Slot>> {
    let launch = &planned.base.launch;
    if launch.gpus > 0 {
        let topo = Topology::read(&SysPaths::default());
        let cvd = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let visible = visible_gpus(&topo, cvd.as_deref(), None)?;
        let slots = gpu_slots(&visible, parallel, launch.gpus, launch.trials_per_gpu)?;
        let sharing = slots.len().div_ceil((visible.len() / launch.gpus).max(1));
        if sharing > 1 {
            let total = gpu_memory_mib(visible[0]);
            memory_guard(
                planned,
                sharing,
                total,
                1024.0,
                "GPU",
                "launch.trials_per_gpu",
            )?;
        }
        Ok(slots)
    } else {
        let slots = cpu_slots(&own_cpu_mask()?, parallel, launch.cpu_workers);
        if slots.len() > 1 {
            // Every worker of every trial in host memory, libtorch's ~0.6 GiB each.
            let workers = slots.len() * launch.cpu_workers.max(1);
            memory_guard(
                planned,
                workers,
                host_available_mib(),
                600.0,
                "host",
                "--parallel",
            )?;
        }
        Ok(slots)
    }
}

/// Refuses to pack `n` workers of the sweep's largest trial into `available` MiB (when
/// known), each needing its estimated memory plus `overhead` MiB; the message gives the
/// figures and the knob.
fn memory_guard(
    planned: &Planned,
    n: usize,
    available: Option<f64>,
    overhead: f64,
    what: &str,
    knob: &str,
) -> Result<()> {
    let Some(available) = available else {
        return Ok(());
    };
    let Some(big) = planned
        .manifest
        .trials
        .iter()
        .max_by(|a, b| a.worker_mib.total_cmp(&b.worker_mib))
    else {
        return Ok(());
    };
    let need = n as f64 * (big.worker_mib + overhead);
    if need > available {
        return Err(Error::Usage(format!(
            "{n} workers at once need about {need:.0} MiB of {what} memory (trial {} needs \
             {:.0} MiB of activations, parameters and optimizer state per worker, plus \
             {overhead:.0} MiB for libtorch), but {available:.0} MiB are available: lower \
             {knob} or data.batch_size",
            big.index, big.worker_mib
        )));
    }
    tracing::info!(
        "packing {n} workers: about {need:.0} of {available:.0} MiB of {what} memory (estimate)"
    );
    Ok(())
}

/// `MemAvailable` of /proc/meminfo, MiB.
fn host_available_mib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Total memory of GPU `index` (PCI order) from `nvidia-smi`, MiB; `None` without it.
fn gpu_memory_mib(index: usize) -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.total",
            "--format=csv,noheader,nounits",
            &format!("--id={index}"),
        ])
        .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Runs the sweep locally; `Ok` when every trial finished.
pub fn run_local(dir: &SweepDir, planned: &Planned, opts: &LocalOptions) -> Result<()> {
    write_plan(dir, planned)?;
    let m = &planned.manifest;
    let slots = slots(planned, opts.parallel.max(1))?;
    let (queue, done, exhausted) = queue_trials(dir, m, opts)?;
    tracing::info!(
        "sweep {}: {} trials, {done} finished, {} failed without retries left, {} to run on {} \
         slot(s): {}",
        dir.0.display(),
        m.trials.len(),
        exhausted.len(),
        queue.len(),
        slots.len(),
        describe(&slots)
    );
    let ran = run_queue(dir, m, &slots, queue, opts)?;
    let files = report::write_report(dir, m, &m.metric)?;
    eprintln!("{}", files.describe());
    verdict(dir, m, ran, opts.only.as_deref())
}

/// The trials to run (failed ones again with `--retry-failed`, their attempts reset), the
/// number already finished, and the failed ones without retries left.
fn queue_trials(
    dir: &SweepDir,
    m: &Manifest,
    opts: &LocalOptions,
) -> Result<(Vec<usize>, usize, Vec<usize>)> {
    let mut queue = Vec::new();
    let (mut done, mut exhausted) = (0, Vec::new());
    for t in &m.trials {
        let run_dir = dir.trial(&t.id);
        let mut st = TrialStatus::read(&run_dir);
        let picked = opts.only.as_ref().is_none_or(|o| o.contains(&t.index));
        match st.effective(&run_dir) {
            _ if !picked => {}
            State::Done | State::Stopped => done += 1,
            State::Failed if opts.retry_failed => {
                st.grant_rerun();
                std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
                st.write(&run_dir)?;
                queue.push(t.index);
            }
            State::Failed if !st.can_retry(m.max_retries) => exhausted.push(t.index),
            _ => queue.push(t.index),
        }
    }
    Ok((queue, done, exhausted))
}

/// Runs `queue` on `slots` (on a runtime of its own), one `sweep task` child per trial and
/// slot, until the queue is empty or a signal stops new starts; returns how many trials ran.
fn run_queue(
    dir: &SweepDir,
    m: &Manifest,
    slots: &[Slot],
    queue: Vec<usize>,
    opts: &LocalOptions,
) -> Result<usize> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the tokio runtime: {e}")))?;
    rt.block_on(async {
        let program = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
        let fwd = Forwarder::install()?;
        let mut free: Vec<usize> = (0..slots.len()).rev().collect();
        let mut pending = queue.into_iter();
        let mut running = JoinSet::new();
        let mut ran = 0;
        loop {
            while !fwd.signalled() && !free.is_empty() {
                let Some(index) = pending.next() else { break };
                let slot = free.pop().expect("a free slot");
                let child = trial_child(dir, m, index, &slots[slot], opts, &program)?;
                let fwd = fwd.clone();
                running.spawn(async move {
                    let start = std::time::Instant::now();
                    let code = run_child(&child, &fwd).await;
                    (index, slot, code, start.elapsed())
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (index, slot, code, took) =
                joined.map_err(|e| Error::Internal(format!("the task running a trial: {e}")))?;
            free.push(slot);
            let code = code?;
            let what = match code {
                0 => "finished".to_owned(),
                4 => "preempted (resumes on the next run)".to_owned(),
                c => format!("failed (exit code {c})"),
            };
            eprintln!(
                "sweep: trial {index} ({}) {what} after {:.1} s",
                m.trials[index].id,
                took.as_secs_f64()
            );
            ran += 1;
        }
        Ok(ran)
    })
}

/// The `convtt-launch sweep task` child of trial `index` on slot `s` (its CPUs, its GPUs).
fn trial_child(
    dir: &SweepDir,
    m: &Manifest,
    index: usize,
    s: &Slot,
    opts: &LocalOptions,
    program: &std::path::Path,
) -> Result<ChildCmd> {
    let t = &m.trials[index];
    let run_dir = dir.trial(&t.id);
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let mut args = vec![
        "sweep".to_owned(),
        "task".into(),
        "--sweep-dir".into(),
        dir.0.display().to_string(),
        "--index".into(),
        index.to_string(),
    ];
    if let Some(w) = &opts.worker {
        args.extend(["--worker".into(), w.display().to_string()]);
    }
    let mut env = Vec::new();
    if let Some(g) = &s.cuda_visible {
        env.push(("CUDA_VISIBLE_DEVICES".to_owned(), g.clone()));
        env.push(("CUDA_DEVICE_ORDER".to_owned(), "PCI_BUS_ID".to_owned()));
    }
    let log = run_dir.join("task.log");
    eprintln!(
        "sweep: trial {index} ({}) started on {s}: {}  [log {}]",
        t.id,
        t.overrides.join(" "),
        log.display()
    );
    Ok(ChildCmd {
        program: program.to_owned(),
        args,
        env,
        cpus: s.cpus.clone(),
        log: Some(log),
        ..ChildCmd::default()
    })
}

/// `Ok` when every trial (of `only`, when given) is done or stopped early; a failure naming the
/// failed ones, or a preemption when some are unfinished (run again to resume them).
fn verdict(dir: &SweepDir, m: &Manifest, ran: usize, only: Option<&[usize]>) -> Result<()> {
    let (mut failed, mut unfinished) = (Vec::new(), 0);
    for t in &m.trials {
        if only.is_some_and(|o| !o.contains(&t.index)) {
            continue;
        }
        let run_dir = dir.trial(&t.id);
        let st = TrialStatus::read(&run_dir);
        match st.effective(&run_dir) {
            State::Done | State::Stopped => {}
            State::Failed if !st.can_retry(m.max_retries) => failed.push(t.index),
            _ => unfinished += 1,
        }
    }
    if !failed.is_empty() {
        return Err(Error::GaveUp {
            code: 1,
            reason: format!(
                "{} trial(s) failed: {failed:?} (ran {ran} this time; each trial's task.log and \
                 logs/ say why)",
                failed.len()
            ),
            detail: String::new(),
        });
    }
    if unfinished > 0 {
        return Err(Error::Preempted(format!(
            "{unfinished} trial(s) unfinished; run the same command again to resume them"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_slots_split_the_mask_evenly() {
        let mask = CpuSet::parse("0-5").unwrap();
        let s = cpu_slots(&mask, 4, 1);
        let got: Vec<String> = s
            .iter()
            .map(|s| s.cpus.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(got, ["0-1", "2-3", "4", "5"]);
        let s = cpu_slots(&mask, 4, 2);
        assert_eq!(s.len(), 3, "each trial needs 2 CPUs");
        let s = cpu_slots(&CpuSet::parse("3").unwrap(), 2, 2);
        assert_eq!(s.len(), 1, "always at least one slot");
    }

    #[test]
    fn gpu_slots_hand_out_disjoint_groups() {
        let s = gpu_slots(&[0, 1, 2, 3, 4], 8, 2, 1).unwrap();
        let got: Vec<&str> = s
            .iter()
            .map(|s| s.cuda_visible.as_deref().unwrap())
            .collect();
        assert_eq!(got, ["0,1", "2,3"]);
        assert!(gpu_slots(&[0], 1, 2, 1).is_err());
        // Two trials per GPU: each GPU twice, spread over the GPUs first.
        let s = gpu_slots(&[0, 1], 8, 1, 2).unwrap();
        let got: Vec<&str> = s
            .iter()
            .map(|s| s.cuda_visible.as_deref().unwrap())
            .collect();
        assert_eq!(got, ["0", "1", "0", "1"]);
    }
}
