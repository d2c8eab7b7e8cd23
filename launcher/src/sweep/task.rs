//! One trial (`convtt-launch sweep task --sweep-dir D --index I`, also what `sweep run --local`
//! starts per trial): runs a child `convtt-launch` on the trial's run directory, records
//! `<trial>/status.toml`, retries failures within `sweep.max_retries` and maps the outcome to the
//! launcher's exit codes (0 done, 4 preempted → the Slurm script requeues the array task).
//!
//! Signals: the child runs in its own process group, so a terminal's Ctrl-C reaches only this
//! process, which forwards SIGINT/SIGTERM/SIGUSR1/SIGUSR2 to it (Slurm signals every process of
//! the step; the child launcher treats a repeated preemption signal as one). After a signal no
//! new attempt starts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use convtt_core::exit;
use convtt_core::fsutil::write_atomic;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use convtt_core::metric::Metric;

use super::{Manifest, SweepDir, TrialEntry};
use crate::error::{Error, Result};
use crate::restart::{classify_exit, Exit, Verdict};
use crate::sys::{self, PreExec};
use crate::topology::CpuSet;

/// Where a trial stands, as `<trial>/status.toml` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started (no status file).
    #[default]
    Pending,
    /// An attempt is running (or was killed without a chance to record its end).
    Running,
    /// Finished: `summary.toml` is there.
    Done,
    /// The last attempt failed.
    Failed,
    /// Preempted after a checkpoint; the next run resumes it.
    Preempted,
    /// Stopped early by ASHA at a rung (checkpoint kept; `sweep resume --promote` goes on).
    Stopped,
}

impl State {
    /// Lower-case name (as in `status.toml` and the report).
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
            State::Preempted => "preempted",
            State::Stopped => "stopped",
        }
    }
}

/// `<trial>/status.toml`, replaced atomically at every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TrialStatus {
    /// Where the trial stands.
    pub state: State,
    /// Attempts that ended (or are running), preemptions not counted.
    pub attempts: u32,
    /// Times the trial was preempted.
    pub preemptions: u32,
    /// Exit code of the last attempt (128 + n for signal n).
    pub exit_code: Option<i32>,
    /// Wall-clock seconds over all attempts.
    pub seconds: f64,
    /// Host of the last attempt.
    pub host: String,
    /// `JOB_TASK` of the last attempt under Slurm.
    pub slurm_job: Option<String>,
    /// ASHA: rungs passed (decided "continue").
    pub rungs_passed: usize,
    /// ASHA: the step it was stopped at.
    pub stopped_at: Option<u64>,
    /// Promoted past ASHA (`sweep resume --promote`, `sweep rerun --stopped`): trains to the
    /// end without pausing at rungs.
    pub promoted: bool,
    /// Attempts made before the last `rerun`/`--retry-failed`: the retry budget counts from
    /// there, while `attempts` keeps the total.
    pub attempts_before_rerun: u32,
}

impl TrialStatus {
    /// Reads `<dir>/status.toml` (default when missing or unreadable).
    pub fn read(dir: &Path) -> TrialStatus {
        std::fs::read_to_string(dir.join("status.toml"))
            .ok()
            .and_then(|t| toml::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Writes `<dir>/status.toml` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).expect("a status serialises");
        write_atomic(&dir.join("status.toml"), text.as_bytes())?;
        Ok(())
    }

    /// The state as the report shows it: `done` only with `summary.toml`.
    pub fn effective(&self, dir: &Path) -> State {
        match self.state {
            State::Done if !convtt_core::RunDir::new(dir).finished() => State::Failed,
            s => s,
        }
    }

    /// True when another attempt is allowed (`attempts ≤ max_retries` and a retryable code).
    pub fn can_retry(&self, max_retries: u32) -> bool {
        let retryable = match self.exit_code {
            Some(c) => !matches!(classify_exit(Exit::Code(c)), Verdict::Fatal { .. }),
            None => true,
        };
        retryable && self.attempts.saturating_sub(self.attempts_before_rerun) <= max_retries
    }

    /// A fresh retry budget: the last failure is forgotten (so a non-retryable exit code does
    /// not stop the rerun), the attempts so far stay counted.
    pub fn grant_rerun(&mut self) {
        self.attempts_before_rerun = self.attempts;
        self.exit_code = None;
        if self.state == State::Failed {
            self.state = State::Pending;
        }
    }
}

/// Forwards this process's SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 to registered children.
#[derive(Debug, Clone, Default)]
pub struct Forwarder {
    pids: Arc<Mutex<BTreeSet<i32>>>,
    signalled: Arc<AtomicBool>,
}

impl Forwarder {
    /// Starts forwarding (needs a tokio runtime).
    pub fn install() -> Result<Forwarder> {
        let f = Forwarder::default();
        let mut signals = crate::shutdown::Signals::install()?;
        let g = f.clone();
        tokio::spawn(async move {
            loop {
                let sig = signals.recv().await;
                g.signalled.store(true, Ordering::SeqCst);
                let pids: Vec<i32> = g.pids.lock().expect("pid set").iter().copied().collect();
                tracing::warn!("{sig}: passing it on to {} running trial(s)", pids.len());
                for p in pids {
                    let _ = kill(Pid::from_raw(p), sig);
                }
            }
        });
        Ok(f)
    }

    /// True once a signal arrived.
    pub fn signalled(&self) -> bool {
        self.signalled.load(Ordering::SeqCst)
    }
}

/// A child process to run under a [`Forwarder`].
#[derive(Debug, Clone, Default)]
pub struct ChildCmd {
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Variables to set.
    pub env: Vec<(String, String)>,
    /// Variables to remove.
    pub env_remove: Vec<String>,
    /// CPUs to pin it to.
    pub cpus: Option<CpuSet>,
    /// File for its stdout and stderr (appended), else inherited.
    pub log: Option<PathBuf>,
}

/// Runs `c` to completion in its own process group, forwarding signals; returns its exit code
/// (128 + n when signal n killed it).
pub async fn run_child(c: &ChildCmd, fwd: &Forwarder) -> Result<i32> {
    let mut cmd = tokio::process::Command::new(&c.program);
    cmd.args(&c.args)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    for k in &c.env_remove {
        cmd.env_remove(k);
    }
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
    if let Some(log) = &c.log {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(log, e))?;
        let g = f.try_clone().map_err(|e| Error::io(log, e))?;
        cmd.stdout(f).stderr(g);
    }
    let cpus = match &c.cpus {
        None => None,
        Some(set) => {
            let mut n = nix::sched::CpuSet::new();
            for &cpu in &set.0 {
                n.set(cpu as usize)
                    .map_err(|e| Error::Usage(format!("CPU {cpu}: {e}")))?;
            }
            Some(n)
        }
    };
    sys::install(
        &mut cmd,
        PreExec {
            cpus,
            mem_node: None,
            parent: nix::unistd::getpid(),
        },
    );
    let mut child = cmd.spawn().map_err(|err| Error::Spawn {
        rank: 0,
        program: c.program.clone(),
        err,
    })?;
    let pid = child.id().map(|p| p as i32);
    if let Some(p) = pid {
        fwd.pids.lock().expect("pid set").insert(p);
    }
    let status = child.wait().await;
    if let Some(p) = pid {
        fwd.pids.lock().expect("pid set").remove(&p);
    }
    let status = status.map_err(|e| Error::io(&c.program, e))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Variables a trial's launcher must not inherit: it is a single-node launcher, not a member
/// of the MPI world (if any) that started this task.
pub fn mpi_env_names() -> Vec<String> {
    std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .filter(|k| ["OMPI_", "PMIX_", "PMI_"].iter().any(|p| k.starts_with(p)))
        .collect()
}

/// `convtt-launch sweep task`: runs trial `index` of the sweep in `dir` to an outcome.
pub fn cmd_task(dir: &SweepDir, index: usize, worker: Option<&Path>) -> Result<()> {
    let m = dir.read_manifest()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the tokio runtime: {e}")))?;
    let code = rt.block_on(async {
        let fwd = Forwarder::install()?;
        run_trial(dir, &m, index, worker, &fwd).await
    })?;
    match code {
        exit::OK => Ok(()),
        exit::PREEMPTED => Err(Error::Preempted(format!(
            "trial {index} checkpointed; requeue the task (or run the sweep again) to resume it"
        ))),
        c => Err(Error::GaveUp {
            code: c,
            reason: format!("trial {index} failed (exit code {c})"),
            detail: format!(
                "; its run directory is {}",
                dir.trial(&m.trials[index].id).display()
            ),
        }),
    }
}

/// The `convtt-launch` child that trains trial `t` in `run_dir` (resuming its newest
/// checkpoint), with no MPI variables: a trial is one node.
fn launcher_child(
    dir: &SweepDir,
    t: &TrialEntry,
    run_dir: &Path,
    worker: Option<&Path>,
    extra: &[String],
) -> Result<ChildCmd> {
    let program = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let mut args = vec![
        "--quiet-workers".to_owned(),
        "--config".into(),
        dir.base().display().to_string(),
        "--run-dir".into(),
        run_dir.display().to_string(),
        "--resume".into(),
        "auto".into(),
    ];
    for o in t.overrides.iter().chain(extra) {
        args.push("--set".into());
        args.push(o.clone());
    }
    if let Some(w) = worker {
        args.push("--worker".into());
        args.push(w.display().to_string());
    }
    Ok(ChildCmd {
        program,
        args,
        env_remove: mpi_env_names(),
        ..ChildCmd::default()
    })
}

/// Runs one trial with retries; returns the exit code the task ends with.
pub async fn run_trial(
    dir: &SweepDir,
    m: &Manifest,
    index: usize,
    worker: Option<&Path>,
    fwd: &Forwarder,
) -> Result<i32> {
    let t = m.trials.get(index).ok_or_else(|| {
        Error::Usage(format!(
            "trial index {index} is out of range: {} has {} trials (0–{})",
            dir.manifest().display(),
            m.trials.len(),
            m.trials.len().saturating_sub(1)
        ))
    })?;
    let run_dir = dir.trial(&t.id);
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let mut st = TrialStatus::read(&run_dir);
    match st.effective(&run_dir) {
        State::Done => {
            tracing::info!("trial {index} ({}) is finished already", t.id);
            return Ok(exit::OK);
        }
        State::Stopped => {
            tracing::info!(
                "trial {index} ({}) was stopped by ASHA at step {}; `convtt-launch sweep resume \
                 --promote {}` trains it on",
                t.id,
                st.stopped_at.unwrap_or(0),
                t.id
            );
            return Ok(exit::OK);
        }
        _ => {}
    }
    if st.state == State::Failed && !st.can_retry(m.max_retries) {
        let code = st.exit_code.unwrap_or(1);
        tracing::error!(
            "trial {index} ({}) failed {} time(s), last with exit code {code}, and has no retries \
             left (sweep.max_retries = {}); `convtt-launch sweep run --local --retry-failed` \
             tries again",
            t.id,
            st.attempts,
            m.max_retries
        );
        return Ok(if code == exit::OK { 1 } else { code });
    }
    let slurm_job = match (
        std::env::var("SLURM_ARRAY_JOB_ID"),
        std::env::var("SLURM_ARRAY_TASK_ID"),
    ) {
        (Ok(j), Ok(k)) => Some(format!("{j}_{k}")),
        _ => std::env::var("SLURM_JOB_ID").ok(),
    };
    let metric = Metric::ranking(&m.metric).ok_or_else(|| {
        Error::Usage(format!(
            "{}: unknown sweep metric {:?}",
            dir.manifest().display(),
            m.metric
        ))
    })?;
    loop {
        // ASHA: train to the next rung (pausing there) unless promoted or past the last.
        let asha = m.asha.as_ref().filter(|_| !st.promoted);
        let pause = asha.and_then(|a| a.rungs.get(st.rungs_passed).copied());
        // A promoted trial keeps ASHA's step budget, without the pauses.
        let mut extra = Vec::new();
        if let Some(a) = &m.asha {
            extra.push(format!("train.max_steps={}", a.max_steps));
        }
        if let Some(p) = pause {
            extra.push(format!("train.pause_at_step={p}"));
        }
        let child = launcher_child(dir, t, &run_dir, worker, &extra)?;
        st.attempts += 1;
        st.state = State::Running;
        st.host = convtt_core::env::hostname();
        st.slurm_job = slurm_job.clone();
        st.write(&run_dir)?;
        tracing::info!(
            "trial {index} ({}), attempt {}: {}",
            t.id,
            st.attempts,
            t.overrides.join(" ")
        );
        let start = Instant::now();
        let code = run_child(&child, fwd).await?;
        st.seconds += start.elapsed().as_secs_f64();
        st.exit_code = Some(code);
        let verdict = classify_exit(Exit::Code(code));
        if let (Verdict::Preempted, Some(step), Some(a)) = (&verdict, pause, asha) {
            if !fwd.signalled() {
                // Paused at rung `rungs_passed`: decide from the rung's records.
                st.attempts -= 1;
                let rung = st.rungs_passed;
                let Some(value) = super::asha::metric_at(&run_dir, metric, step)? else {
                    st.state = State::Failed;
                    st.write(&run_dir)?;
                    tracing::error!(
                        "trial {index} ({}) paused at step {step} without a validation there \
                         ({} in its metrics.jsonl); train.valid_every must divide every rung",
                        t.id,
                        m.metric
                    );
                    return Ok(1);
                };
                let rec = super::asha::decide(
                    dir,
                    rung,
                    (index, &t.id),
                    step,
                    value,
                    (a.reduction_factor, metric.mode),
                )?;
                tracing::info!(
                    "trial {index} ({}) at rung {rung} (step {step}): {} = {value:.6}, rank {} \
                     of {} → {:?}",
                    t.id,
                    m.metric,
                    rec.rank,
                    rec.seen,
                    rec.decision
                );
                if rec.decision == super::asha::Decision::Stop {
                    st.state = State::Stopped;
                    st.stopped_at = Some(step);
                    st.write(&run_dir)?;
                    return Ok(exit::OK);
                }
                st.rungs_passed = rung + 1;
                st.write(&run_dir)?;
                continue;
            }
        }
        st.state = match verdict {
            Verdict::Finished if convtt_core::RunDir::new(&run_dir).finished() => State::Done,
            Verdict::Finished => State::Failed,
            Verdict::Preempted => {
                st.attempts -= 1;
                st.preemptions += 1;
                State::Preempted
            }
            _ => State::Failed,
        };
        st.write(&run_dir)?;
        match st.state {
            State::Done => return Ok(exit::OK),
            State::Preempted => return Ok(exit::PREEMPTED),
            _ => {}
        }
        let code = if code == exit::OK { 1 } else { code };
        if fwd.signalled() {
            // Stopped from outside (e.g. Ctrl-C twice): not a failure to retry now.
            return Ok(code);
        }
        if !st.can_retry(m.max_retries) {
            tracing::error!(
                "trial {index} ({}) failed with exit code {code} after {} attempt(s); see {}/logs",
                t.id,
                st.attempts,
                run_dir.display()
            );
            return Ok(code);
        }
        tracing::warn!(
            "trial {index} ({}) failed with exit code {code}; retrying ({} of {} retries left)",
            t.id,
            m.max_retries + 1 - st.attempts,
            m.max_retries
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_budget_rules() {
        let dir = std::env::temp_dir().join(format!("convtt-sweep-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(TrialStatus::read(&dir), TrialStatus::default());
        let st = TrialStatus {
            state: State::Done,
            attempts: 1,
            exit_code: Some(0),
            host: "h".into(),
            ..TrialStatus::default()
        };
        st.write(&dir).unwrap();
        assert_eq!(TrialStatus::read(&dir), st);
        // Done without summary.toml is not done.
        assert_eq!(st.effective(&dir), State::Failed);
        std::fs::write(dir.join("summary.toml"), "steps = 1\n").unwrap();
        assert_eq!(st.effective(&dir), State::Done);
        let failed = |attempts, code| TrialStatus {
            state: State::Failed,
            attempts,
            exit_code: Some(code),
            ..TrialStatus::default()
        };
        assert!(failed(1, 3).can_retry(1));
        assert!(!failed(2, 3).can_retry(1), "budget spent");
        assert!(
            !failed(1, exit::CONFIG).can_retry(5),
            "config errors are never retried"
        );
        assert!(!failed(1, exit::DATA).can_retry(5));
        assert!(failed(1, 137).can_retry(1), "killed: retried");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
