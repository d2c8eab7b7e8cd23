//! Spawns this node's workers, watches them, and applies the restart policy.
//!
//! One attempt: bind nothing new (the agent socket lives as long as the launcher), serve the
//! attempt on it, spawn every worker (own process group, `PR_SET_PDEATHSIG`, pinned), then
//! react to the first of:
//! * a worker exiting non-zero, an agent failure (hang, timeout) or another node failing →
//!   tear the group down (SIGTERM to every process group, `launch.grace_secs`, SIGKILL);
//! * a worker exiting 4, a signal to the launcher ([`Shutdown`]) or another node preempting →
//!   the preempt protocol: `preempt` over the agent socket to connected workers, SIGUSR1 to
//!   the ones not connected (a worker installs its handler before it connects), then a
//!   teardown once `launch.preempt_deadline_secs` has passed;
//! * every worker exiting 0 → done.
//!
//! Peer recovery (`launch.recovery = "peer"`, CPU workers on one node): a worker that dies
//! with a retryable exit while others are healthy is replaced in place — same rank, CPUs and
//! device, the next attempt number — and the agent hub moves a healthy peer's state into it
//! (see `agent.rs`); the group redoes the abandoned step and nothing is torn down. Any failure
//! while a recovery is under way (the replacement or a survivor dying, disagreeing state
//! checksums, the recovery's deadline) falls back to the checkpoint restart. Recoveries count
//! against `launch.max_restarts` like restarts.
//!
//! Exits of workers we are tearing down are collateral and never count as causes. When the
//! attempt is over every process group is gone; then [`restart::classify`] and, across nodes,
//! [`Cluster::agree`] give the verdict and [`restart::decide`] what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::task::JoinSet;
use tokio::time::Instant;

use tokio::sync::mpsc;

use crate::agent::{AgentEvent, AgentServer, Attempt as AgentSession, AttemptSpec};
use crate::child::{self, signal_group, signal_process, Child};
use crate::cluster::{Cluster, NodeStatus};
use crate::console::Console;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::restart::{self, Cause, Decision, Exit};
use crate::shutdown::{Shutdown, Stop};
use crate::straggler::{Change, Detector};

/// Appends one JSON line to `<run>/metrics.jsonl` (one `write` with `O_APPEND`, so it never
/// interleaves with rank 0's lines on a local file system).
fn append_record(run_dir: &std::path::Path, record: &serde_json::Value) {
    use std::io::Write as _;
    let path = convtt_core::RunDir::new(run_dir).metrics();
    let line = format!("{record}\n");
    let r = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = r {
        tracing::warn!("cannot append to {}: {e}", path.display());
    }
}

/// Runs the job on this node until it finishes, is preempted or gives up.
pub async fn run(
    plan: &Plan,
    cluster: &Cluster,
    mut shutdown: Shutdown,
    console: Arc<Console>,
) -> Result<()> {
    let server = AgentServer::bind(&plan.socket)?;
    let mut restarts = 0;
    let mut attempt = 0;
    loop {
        cluster.begin_attempt(attempt);
        let ended = run_attempt(
            plan,
            cluster,
            &server,
            (attempt, restarts),
            &mut shutdown,
            &console,
        )
        .await?;
        console.finish();
        // Peer recoveries inside the attempt used restarts and attempt numbers.
        restarts += ended.recoveries;
        attempt = ended.attempt;
        let mine = restart::classify(&ended.causes, ended.preempted);
        let verdict = cluster.agree(attempt, mine).await?;
        match restart::decide(verdict, restarts, &plan.timing.policy) {
            Decision::Finished => {
                tracing::info!(
                    "all {} workers finished (attempt {attempt})",
                    plan.world_size()
                );
                return Ok(());
            }
            Decision::Preempted => {
                return Err(Error::Preempted(format!(
                    "attempt {attempt} stopped after the preempt protocol; resume with \
                     `--resume auto` (Slurm: requeue on exit code 4){}",
                    ended.detail
                )));
            }
            Decision::GiveUp { code, reason } => {
                return Err(Error::GaveUp {
                    code,
                    reason,
                    detail: ended.detail,
                });
            }
            Decision::Restart {
                attempt: next,
                delay,
            } => {
                tracing::warn!(
                    "attempt {attempt} failed; restart {} of {} (attempt {next}, resuming from \
                     the newest valid checkpoint) in {:.1} s. Cause{}",
                    restarts + 1,
                    plan.timing.policy.max_restarts,
                    delay.as_secs_f64(),
                    ended.detail,
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.above(Stop::Run) => {
                        if cluster.num_nodes() == 1 {
                            return Err(Error::Preempted(format!(
                                "signal during the restart back-off after attempt {attempt}"
                            )));
                        }
                        // The other nodes start attempt `next`: join it, already preempting,
                        // so that every node reaches the same verdict.
                    }
                }
                restarts += 1;
                attempt = next;
            }
        }
    }
}

/// How one attempt ended on this node.
#[derive(Debug, Default)]
struct Ended {
    /// The attempt number it ended with (peer recoveries raise it).
    attempt: u32,
    /// Peer recoveries that completed or were started.
    recoveries: u32,
    causes: Vec<Cause>,
    preempted: bool,
    /// The root failure and its stderr tail, for messages (starts with ": " when set).
    detail: String,
}

struct Worker {
    pid: Pid,
    connected: bool,
    goodbye: Option<String>,
}

/// What an event asks of the attempt: a failure to tear down for, or a preemption.
#[derive(Default)]
struct Reaction {
    fail: Option<(Cause, String)>,
    preempt: bool,
    /// Start a replacement for this rank (peer recovery).
    replace: Option<u32>,
}

impl Reaction {
    fn fail(cause: Cause, detail: String) -> Self {
        Reaction {
            fail: Some((cause, detail)),
            ..Reaction::default()
        }
    }

    fn preempt() -> Self {
        Reaction {
            preempt: true,
            ..Reaction::default()
        }
    }
}

/// One attempt on this node: its workers, the agent session serving them, and how far the
/// attempt has gone towards its end (a teardown, the SIGKILL after the grace period, a
/// preemption deadline). Each event of [`run_attempt`]'s loop is one method.
struct Attempt<'a> {
    plan: &'a Plan,
    cluster: &'a Cluster,
    number: u32,
    console: Arc<Console>,
    agent: AgentSession,
    workers: BTreeMap<u32, Worker>,
    alive: BTreeSet<u32>,
    ended: Ended,
    /// When the teardown's SIGTERM went out.
    teardown: Option<Instant>,
    /// The SIGKILL after the grace period went out.
    killed: bool,
    /// The preempt protocol's deadline.
    preempt_until: Option<Instant>,
    /// Restarts used before this attempt (the budget peer recoveries draw on too).
    restarts_before: u32,
    /// The rank being replaced from its peers' memory.
    recovering: Option<u32>,
    /// The post-mortem written for this attempt's hang, if any.
    postmortem: Option<std::path::PathBuf>,
    /// Who straggles.
    stragglers: Detector,
    /// The launcher's TensorBoard event file, once it has something to say.
    tensorboard: Option<convtt_core::tensorboard::EventWriter>,
}

type WorkerTasks = JoinSet<(u32, Exit, Vec<String>)>;

async fn run_attempt(
    plan: &Plan,
    cluster: &Cluster,
    server: &AgentServer,
    (attempt, restarts): (u32, u32),
    shutdown: &mut Shutdown,
    console: &Arc<Console>,
) -> Result<Ended> {
    let (mut a, mut tasks, mut events) = Attempt::start(plan, cluster, server, attempt, console)?;
    a.restarts_before = restarts;
    // Start from `Run`: a level raised before this attempt (during the back-off or the
    // consensus) must still preempt it.
    let mut seen = Stop::Run;
    let mut global = cluster.watch();
    while !a.alive.is_empty() {
        let reaction = tokio::select! {
            Some(joined) = tasks.join_next() => {
                let (rank, exit, tail) =
                    joined.map_err(|e| Error::Internal(format!("the task watching a worker: {e}")))?;
                a.on_exit(rank, exit, &tail)
            }
            Some(ev) = events.recv() => a.on_agent_event(ev),
            level = shutdown.above(seen) => {
                seen = level;
                a.on_signal(level)
            }
            changed = next_nodes(&mut global) => a.on_nodes(changed, &mut global),
            () = tokio::time::sleep_until(a.timer()) => {
                a.on_timer();
                Reaction::default()
            }
        };
        if let Some(rank) = reaction.replace {
            if let Err(e) = a.spawn_replacement(rank, server, &mut tasks) {
                let msg = format!("cannot start a replacement for rank {rank}: {e}");
                a.react(Reaction::fail(Cause::Hung(msg.clone()), format!(": {msg}")));
            }
        }
        a.react(reaction);
    }
    Ok(a.finish().await)
}

/// The next change of the nodes' statuses (never, on a single node).
async fn next_nodes(
    global: &mut Option<tokio::sync::watch::Receiver<Vec<NodeStatus>>>,
) -> std::result::Result<Vec<NodeStatus>, tokio::sync::watch::error::RecvError> {
    match global.as_mut() {
        Some(rx) => rx.changed().await.map(|()| rx.borrow_and_update().clone()),
        None => std::future::pending().await,
    }
}

impl<'a> Attempt<'a> {
    /// Serves the attempt on the agent socket and spawns every worker of this node.
    fn start(
        plan: &'a Plan,
        cluster: &'a Cluster,
        server: &AgentServer,
        number: u32,
        console: &Arc<Console>,
    ) -> Result<(Self, WorkerTasks, mpsc::UnboundedReceiver<AgentEvent>)> {
        let t = &plan.timing;
        let (agent, events) = server.serve(
            AttemptSpec {
                attempt: number,
                world_size: plan.world_size(),
                local_ranks: plan.slots.iter().map(|s| s.rank).collect(),
                heartbeat_timeout: t.heartbeat_timeout,
                startup_timeout: t.startup_timeout,
                collective_timeout: t.collective_timeout,
            },
            cluster.clone(),
        );
        // Each task owns one Child: when the set is dropped (also on cancellation) the tasks
        // are aborted and every Child's drop kills its process group.
        let mut tasks = WorkerTasks::new();
        let mut workers = BTreeMap::new();
        for slot in &plan.slots {
            let mut child = Child::spawn(&plan.child_spec(slot, number), console.clone())?;
            server.admit(child.pid().as_raw() as u32);
            tracing::debug!(rank = slot.rank, pid = child.pid().as_raw(), cpus = %slot.cpus, "spawned");
            let worker = Worker {
                pid: child.pid(),
                connected: false,
                goodbye: None,
            };
            workers.insert(slot.rank, worker);
            tasks.spawn(async move {
                let exit = child.wait().await;
                (child.rank(), exit, child.tail())
            });
        }
        tracing::info!(
            "attempt {number}: started {} workers ({} → {})",
            workers.len(),
            plan.worker.display(),
            plan.args(number).join(" ")
        );
        let attempt = Attempt {
            plan,
            cluster,
            number,
            console: console.clone(),
            agent,
            alive: workers.keys().copied().collect(),
            workers,
            ended: Ended {
                attempt: number,
                ..Ended::default()
            },
            teardown: None,
            killed: false,
            preempt_until: None,
            restarts_before: 0,
            recovering: None,
            postmortem: None,
            stragglers: Detector::new(t.straggler_ratio, plan.slots.len()),
            tensorboard: None,
        };
        Ok((attempt, tasks, events))
    }

    /// When the next timed step is due: the SIGKILL after the grace period, or the end of the
    /// preempt deadline.
    fn timer(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(86_400);
        match (self.teardown, self.killed, self.preempt_until) {
            (Some(t0), false, _) => t0 + self.plan.timing.grace,
            (None, _, Some(p)) => p,
            _ => far,
        }
    }

    /// A worker exited. Exits of workers being torn down are collateral, never causes.
    fn on_exit(&mut self, rank: u32, exit: Exit, tail: &[String]) -> Reaction {
        self.alive.remove(&rank);
        let w = &self.workers[&rank];
        match exit {
            Exit::Code(0) => tracing::info!(rank, "worker finished"),
            _ if self.teardown.is_some() => tracing::debug!(rank, "worker stopped: {exit}"),
            Exit::Code(convtt_core::exit::PREEMPTED) => {
                tracing::warn!(rank, "worker exited 4 (preempted)");
                return Reaction::preempt();
            }
            _ if self.may_recover(rank, exit) => return self.recover(rank, exit, tail),
            _ => {
                let mut d = format!(": rank {rank} (pid {}) failed with {exit}", w.pid);
                if let Some(lost) = self.recovering {
                    d += &format!(" while rank {lost} was being recovered from its peers");
                }
                if let Some(g) = &w.goodbye {
                    d += &format!(" ({g})");
                }
                if tail.is_empty() {
                    d += "; it wrote nothing to stderr";
                } else {
                    d += &format!("; its last stderr lines:\n    {}", tail.join("\n    "));
                }
                return Reaction::fail(Cause::Exited { rank, exit }, d);
            }
        }
        Reaction::default()
    }

    /// A message of the agent hub: a worker connected, progressed, said goodbye or committed a
    /// checkpoint, or the hub saw a failure (a hang, a timeout).
    fn on_agent_event(&mut self, ev: AgentEvent) -> Reaction {
        match ev {
            AgentEvent::Hello {
                rank,
                pid,
                cpus,
                device,
            } => {
                tracing::debug!(rank, pid, %cpus, %device, "worker connected");
                if let Some(w) = self.workers.get_mut(&rank) {
                    w.connected = true;
                }
            }
            AgentEvent::Progress { rank, progress } => {
                let p = self.plan;
                self.console
                    .progress(rank, progress, p.slots.len(), p.num_nodes);
                for change in self.stragglers.update(rank, f64::from(progress.compute_ms)) {
                    self.on_straggler(change, progress.step);
                }
            }
            AgentEvent::Goodbye { rank, code, reason } => {
                tracing::info!(rank, code, "worker says goodbye: {reason}");
                if let Some(w) = self.workers.get_mut(&rank) {
                    w.goodbye = Some(format!("it said: {reason}"));
                }
            }
            AgentEvent::Checkpoint { .. } => {}
            AgentEvent::Recovered {
                rank,
                step,
                seconds,
            } => {
                tracing::warn!(
                    "rank {rank} recovered from its peers' memory in {seconds:.2} s; the group \
                     goes on from step {step} (attempt {}): no step lost",
                    self.number
                );
                self.recovering = None;
                self.cluster.report(|s| s.recovering = None);
            }
            AgentEvent::Stalled(diagnosis) if self.teardown.is_none() => {
                self.write_postmortem(&diagnosis);
            }
            AgentEvent::Stalled(_) => {}
            AgentEvent::Failure(msg) if self.teardown.is_none() => {
                let mut detail = format!(": {msg}");
                if let Some(p) = &self.postmortem {
                    detail += &format!(" (post-mortem: {})", p.display());
                }
                return Reaction::fail(Cause::Hung(msg), detail);
            }
            AgentEvent::Failure(_) => {}
        }
        Reaction::default()
    }

    /// Whether rank `rank`, which just died with `exit`, can be replaced from its peers'
    /// memory: peer recovery is on, the workers are CPU workers, the rank
    /// had joined, others are alive, nothing else is going on (teardown, preemption, another
    /// recovery) and the restart budget has room.
    fn may_recover(&self, rank: u32, exit: Exit) -> bool {
        let p = self.plan;
        let cpu = p
            .slots
            .iter()
            .all(|s| s.device == convtt_core::WorkerDevice::Cpu);
        cpu && matches!(restart::classify_exit(exit), restart::Verdict::Retry { .. })
            && self.workers[&rank].connected
            && !self.alive.is_empty()
            && self.may_follow()
    }

    /// Whether this node can take part in a peer recovery (its own, or another node's).
    fn may_follow(&self) -> bool {
        let used = self.restarts_before + self.ended.recoveries;
        self.plan.timing.peer_recovery
            && self.teardown.is_none()
            && !self.ended.preempted
            && self.recovering.is_none()
            && used < self.plan.timing.policy.max_restarts
    }

    /// Another node replaces global rank `rank` (its status shows the next attempt with
    /// `recovering`): this node's workers stand by too, in the same attempt — or, when this
    /// node cannot take part, it fails that attempt so every node falls back to the checkpoint.
    fn follow(&mut self, node: usize, rank: u32) -> Reaction {
        let can = self.may_follow();
        // Attempt numbers (and the restarts they count) stay equal on every node, whether this
        // node takes part or not.
        self.number += 1;
        self.ended.attempt = self.number;
        self.ended.recoveries += 1;
        let number = self.number;
        if !can {
            self.cluster.report(|s| s.attempt = number);
            let msg = format!("node {node} replaces rank {rank}, but this node cannot take part");
            return Reaction::fail(Cause::PeerNode(node as u32), format!(": {msg}"));
        }
        self.recovering = Some(rank);
        self.cluster.report(|s| {
            s.attempt = number;
            s.recovering = Some(rank);
        });
        tracing::warn!(
            "node {node} replaces rank {rank} from its peers' memory: this node's workers stand \
             by (attempt {number})"
        );
        self.agent
            .peer_lost(rank, number, &format!("lost on node {node}"));
        Reaction::default()
    }

    /// Starts the peer recovery of `rank`: the next attempt number, the hub told, and a
    /// replacement asked of [`run_attempt`].
    fn recover(&mut self, rank: u32, exit: Exit, tail: &[String]) -> Reaction {
        let pid = self.workers[&rank].pid;
        self.number += 1;
        self.ended.attempt = self.number;
        self.ended.recoveries += 1;
        self.recovering = Some(rank);
        let number = self.number;
        self.cluster.report(|s| {
            s.attempt = number;
            s.recovering = Some(rank);
        });
        let used = self.restarts_before + self.ended.recoveries;
        let last = tail
            .last()
            .map_or(String::new(), |l| format!(" (last stderr line: {l})"));
        tracing::warn!(
            "rank {rank} (pid {pid}) failed with {exit}{last}; replacing it from its peers' \
             memory as attempt {} (restart {used} of {})",
            self.number,
            self.plan.timing.policy.max_restarts
        );
        self.agent.peer_lost(rank, self.number, &exit.to_string());
        Reaction {
            replace: Some(rank),
            ..Reaction::default()
        }
    }

    /// Spawns the replacement of `rank` (same slot, `CONVTT_RECOVER=1`).
    fn spawn_replacement(
        &mut self,
        rank: u32,
        server: &AgentServer,
        tasks: &mut WorkerTasks,
    ) -> Result<()> {
        let slot = self
            .plan
            .slots
            .iter()
            .find(|s| s.rank == rank)
            .ok_or_else(|| Error::Internal(format!("no slot for rank {rank}")))?;
        let mut child = Child::spawn(
            &self.plan.replacement_spec(slot, self.number),
            self.console.clone(),
        )?;
        server.admit(child.pid().as_raw() as u32);
        self.workers.insert(
            rank,
            Worker {
                pid: child.pid(),
                connected: false,
                goodbye: None,
            },
        );
        self.alive.insert(rank);
        tasks.spawn(async move {
            let exit = child.wait().await;
            (child.rank(), exit, child.tail())
        });
        Ok(())
    }

    /// A rank became a straggler (or stopped being one): the warning, the `straggler` record
    /// in `<run>/metrics.jsonl` and the progress line's note. Nothing else is done.
    fn on_straggler(&mut self, change: Change, step: u64) {
        let p = self.plan;
        match change {
            Change::Flagged {
                rank,
                compute_ms,
                median_ms,
                ratio,
            } => {
                let slot = p.slots.iter().find(|s| s.rank == rank);
                let (cpus, device) = slot.map_or((String::new(), String::new()), |s| {
                    (s.cpus.to_string(), s.device.to_string())
                });
                tracing::warn!(
                    "straggler: rank {rank} on {} (cpus {cpus}, {device}) computes {compute_ms:.0} \
                     ms per step, {ratio:.2}× the median {median_ms:.0} ms of this node's ranks \
                     (launch.straggler_ratio = {}); reported only",
                    p.host,
                    p.timing.straggler_ratio
                );
                let record = serde_json::json!({"kind": "straggler", "step": step, "rank": rank,
                    "host": p.host, "cpus": cpus, "device": device, "compute_ms": compute_ms,
                    "median_ms": median_ms, "ratio": ratio, "attempt": self.number});
                append_record(&p.run_dir, &record);
                self.tensorboard_event(&record);
            }
            Change::Cleared { rank } => {
                tracing::info!("rank {rank} is no longer a straggler");
            }
        }
        let note: String = self
            .stragglers
            .flagged()
            .iter()
            .map(|r| format!(" · straggler r{r}"))
            .collect();
        self.console.set_note(note);
    }

    /// The launcher's own TensorBoard file in `<run>/tb/` (opened at its first event), for the
    /// events only it sees. A failure is a warning.
    fn tensorboard_event(&mut self, record: &serde_json::Value) {
        if !self.plan.tensorboard {
            return;
        }
        if self.tensorboard.is_none() {
            let dir = convtt_core::RunDir::new(&self.plan.run_dir).tensorboard();
            match convtt_core::tensorboard::EventWriter::open(&dir) {
                Ok(w) => self.tensorboard = Some(w),
                Err(e) => return tracing::warn!("TensorBoard: {e}"),
            }
        }
        if let Some(Err(e)) = self.tensorboard.as_mut().map(|w| w.record(record)) {
            tracing::warn!("TensorBoard: {e}");
        }
    }

    /// Before anything is killed: `<run>/postmortem-a<attempt>.txt` and `.json` with the hub's
    /// verdict, every rank's phase and step, and the native stacks of this node's workers.
    fn write_postmortem(&mut self, diagnosis: &crate::postmortem::Diagnosis) {
        let pids = self
            .alive
            .iter()
            .map(|r| (*r, self.workers[r].pid.as_raw() as u32))
            .collect();
        let budget = Duration::from_secs(60);
        match crate::postmortem::write(&self.plan.run_dir, self.number, diagnosis, &pids, budget) {
            Ok(path) => {
                tracing::error!("{} (post-mortem: {})", diagnosis.verdict, path.display());
                self.postmortem = Some(path);
            }
            Err(e) => tracing::warn!("cannot write the post-mortem: {e}"),
        }
    }

    /// The launcher received a signal: preempt, or (a second SIGINT) stop now.
    fn on_signal(&mut self, level: Stop) -> Reaction {
        match level {
            Stop::Preempt => return Reaction::preempt(),
            Stop::Now => {
                self.ended.preempted = true;
                self.start_teardown("the launcher was told to stop now");
            }
            Stop::Run => {}
        }
        Reaction::default()
    }

    /// Another node's status changed: it failed or preempts (this attempt only).
    fn on_nodes(
        &mut self,
        changed: std::result::Result<Vec<NodeStatus>, tokio::sync::watch::error::RecvError>,
        global: &mut Option<tokio::sync::watch::Receiver<Vec<NodeStatus>>>,
    ) -> Reaction {
        let Ok(nodes) = changed else {
            *global = None;
            if self.teardown.is_some() {
                return Reaction::default();
            }
            let msg = "the MPI thread stopped";
            return Reaction::fail(Cause::Hung(msg.into()), format!(": {msg}"));
        };
        let me = self.cluster.node_rank() as usize;
        // Another node moved on to the next attempt to replace a rank: follow it.
        let follow = nodes.iter().enumerate().find_map(|(i, s)| {
            (i != me && s.attempt == self.number + 1)
                .then_some(s.recovering.map(|r| (i, r)))
                .flatten()
        });
        if let Some((node, rank)) = follow {
            return self.follow(node, rank);
        }
        let mut r = Reaction::default();
        for (i, s) in nodes.iter().enumerate() {
            if i == me || s.attempt != self.number {
                continue;
            }
            if s.failed && self.teardown.is_none() && r.fail.is_none() {
                r.fail = Some((Cause::PeerNode(i as u32), format!(": node {i} failed")));
            }
            r.preempt |= s.preempt;
        }
        r
    }

    /// The timer ran out: SIGKILL what outlived the grace period, or end the preempt deadline
    /// with a teardown.
    fn on_timer(&mut self) {
        let t = &self.plan.timing;
        if self.teardown.is_some() {
            for r in &self.alive {
                tracing::warn!(
                    rank = *r,
                    "still alive {:.1} s after SIGTERM: SIGKILL",
                    t.grace.as_secs_f64()
                );
                signal_group(self.workers[r].pid, Signal::SIGKILL);
            }
            self.killed = true;
        } else {
            tracing::warn!(
                "workers {:?} did not exit within the preempt deadline of {:.1} s: tearing down",
                self.alive,
                t.preempt_deadline.as_secs_f64()
            );
            self.start_teardown("the preempt deadline passed");
        }
    }

    /// Acts on a reaction: a failure is recorded, told to the other nodes and tears the group
    /// down; a preemption starts the preempt protocol (once).
    fn react(&mut self, r: Reaction) {
        if let Some((cause, detail)) = r.fail {
            let first = detail.lines().next().unwrap_or("").trim_start_matches(": ");
            let reason = format!("attempt {} is failing: {first}", self.number);
            if self.ended.causes.is_empty() {
                self.ended.detail = detail;
            }
            self.ended.causes.push(cause);
            self.cluster.report(|s| s.failed = true);
            self.start_teardown(&reason);
        }
        if r.preempt && !self.ended.preempted {
            self.ended.preempted = true;
            self.cluster.report(|s| s.preempt = true);
            if self.teardown.is_none() {
                self.start_preempt();
            }
        }
    }

    /// `preempt` over the agent socket to connected workers, SIGUSR1 to the ones not
    /// connected (a worker installs its handler before it connects), and a deadline.
    fn start_preempt(&mut self) {
        let deadline = self.plan.timing.preempt_deadline;
        tracing::warn!(
            "preempting: workers commit a checkpoint and exit 4 within {:.1} s",
            deadline.as_secs_f64()
        );
        self.agent.preempt(deadline);
        for r in &self.alive {
            if !self.workers[r].connected {
                signal_process(self.workers[r].pid, Signal::SIGUSR1);
            }
        }
        self.preempt_until = Some(Instant::now() + deadline);
    }

    /// The teardown (once): every connected worker is told through the agent at once, so one
    /// waiting in a collective or barrier leaves instead of sitting out the grace period; then
    /// SIGTERM to every live worker's process group, and SIGKILL after the grace.
    fn start_teardown(&mut self, reason: &str) {
        if self.teardown.is_some() {
            return;
        }
        self.agent.abort(reason);
        for r in &self.alive {
            signal_group(self.workers[r].pid, Signal::SIGTERM);
        }
        self.teardown = Some(Instant::now());
    }

    /// Every leader is reaped and each Child's drop killed its group; make sure of stragglers
    /// that changed nothing about their group (a helper that ignored SIGTERM), and wait until
    /// they are gone: nothing of this attempt may outlive it.
    async fn finish(self) -> Ended {
        let groups: Vec<Pid> = self.workers.values().map(|w| w.pid).collect();
        child::kill_groups_and_wait(&groups, Duration::from_secs(5)).await;
        drop(self.agent);
        self.ended
    }
}

#[cfg(test)]
mod tests;
