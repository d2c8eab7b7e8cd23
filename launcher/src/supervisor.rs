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

use crate::agent::{AgentEvent, AgentServer, AttemptSpec};
use crate::child::{self, signal_group, signal_process, Child};
use crate::cluster::Cluster;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::restart::{self, Cause, Decision, Exit};
use crate::shutdown::{Shutdown, Stop};

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
        let ended = run_attempt(plan, cluster, &server, attempt, &mut shutdown, &console).await?;
        console.finish();
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

async fn run_attempt(
    plan: &Plan,
    cluster: &Cluster,
    server: &AgentServer,
    attempt: u32,
    shutdown: &mut Shutdown,
    console: &Arc<Console>,
) -> Result<Ended> {
    let t = &plan.timing;
    let (agent, mut events) = server.serve(
        AttemptSpec {
            attempt,
            world_size: plan.world_size(),
            local_ranks: plan.slots.iter().map(|s| s.rank).collect(),
            heartbeat_timeout: t.heartbeat_timeout,
            startup_timeout: t.startup_timeout,
            collective_timeout: t.collective_timeout,
        },
        cluster.clone(),
    );
    // Each task owns one Child: when the set is dropped (also on cancellation) the tasks are
    // aborted and every Child's drop kills its process group.
    let mut set: JoinSet<(u32, Exit, Vec<String>)> = JoinSet::new();
    let mut workers: BTreeMap<u32, Worker> = BTreeMap::new();
    for slot in &plan.slots {
        let mut child = Child::spawn(&plan.child_spec(slot, attempt), console.clone())?;
        tracing::debug!(rank = slot.rank, pid = child.pid().as_raw(), cpus = %slot.cpus, "spawned");
        workers.insert(
            slot.rank,
            Worker {
                pid: child.pid(),
                connected: false,
                goodbye: None,
            },
        );
        set.spawn(async move {
            let exit = child.wait().await;
            (child.rank(), exit, child.tail())
        });
    }
    tracing::info!(
        "attempt {attempt}: started {} workers ({} → {})",
        workers.len(),
        plan.worker.display(),
        plan.args(attempt).join(" ")
    );

    let mut ended = Ended::default();
    let mut alive: BTreeSet<u32> = workers.keys().copied().collect();
    let mut teardown: Option<Instant> = None;
    let mut killed = false;
    let mut preempt_until: Option<Instant> = None;
    // Start from `Run`: a level raised before this attempt (during the back-off or the
    // consensus) must still preempt it.
    let mut seen = Stop::Run;
    let mut global = cluster.watch();
    let far = || Instant::now() + Duration::from_secs(86_400);

    let start_teardown = |alive: &BTreeSet<u32>, workers: &BTreeMap<u32, Worker>| {
        for r in alive {
            signal_group(workers[r].pid, Signal::SIGTERM);
        }
        Some(Instant::now())
    };

    while !alive.is_empty() {
        let timer = match (teardown, killed, preempt_until) {
            (Some(t0), false, _) => t0 + t.grace,
            (None, _, Some(p)) => p,
            _ => far(),
        };
        let mut preempt_now = false;
        let mut fail: Option<(Cause, String)> = None;
        tokio::select! {
            Some(joined) = set.join_next() => {
                let (rank, exit, tail) = joined.map_err(|e| Error::Usage(format!("worker task: {e}")))?;
                alive.remove(&rank);
                let w = &workers[&rank];
                match exit {
                    Exit::Code(0) => tracing::info!(rank, "worker finished"),
                    _ if teardown.is_some() => tracing::debug!(rank, "worker stopped: {exit}"),
                    Exit::Code(convtt_core::exit::PREEMPTED) => {
                        tracing::warn!(rank, "worker exited 4 (preempted)");
                        preempt_now = true;
                    }
                    _ => {
                        let mut d = format!(": rank {rank} (pid {}) failed with {exit}", w.pid);
                        if let Some(g) = &w.goodbye {
                            d += &format!(" ({g})");
                        }
                        if tail.is_empty() {
                            d += "; it wrote nothing to stderr";
                        } else {
                            d += &format!("; its last stderr lines:\n    {}", tail.join("\n    "));
                        }
                        fail = Some((Cause::Exited { rank, exit }, d));
                    }
                }
            }
            Some(ev) = events.recv() => match ev {
                AgentEvent::Hello { rank, pid, cpus, device } => {
                    tracing::debug!(rank, pid, %cpus, %device, "worker connected");
                    if let Some(w) = workers.get_mut(&rank) { w.connected = true; }
                }
                AgentEvent::Progress { rank, progress } => {
                    console.progress(rank, progress, plan.slots.len(), plan.num_nodes);
                }
                AgentEvent::Goodbye { rank, code, reason } => {
                    tracing::info!(rank, code, "worker says goodbye: {reason}");
                    if let Some(w) = workers.get_mut(&rank) { w.goodbye = Some(format!("it said: {reason}")); }
                }
                AgentEvent::Checkpoint { .. } => {}
                AgentEvent::Failure(msg) => {
                    if teardown.is_none() {
                        fail = Some((Cause::Hung(msg.clone()), format!(": {msg}")));
                    }
                }
            },
            level = shutdown.above(seen) => {
                seen = level;
                match level {
                    Stop::Preempt => preempt_now = true,
                    Stop::Now => {
                        ended.preempted = true;
                        if teardown.is_none() { teardown = start_teardown(&alive, &workers); }
                    }
                    Stop::Run => {}
                }
            }
            changed = async {
                match global.as_mut() {
                    Some(rx) => rx.changed().await.map(|()| rx.borrow_and_update().clone()),
                    None => std::future::pending().await,
                }
            } => {
                match changed {
                    Ok(nodes) => {
                        let me = cluster.node_rank() as usize;
                        for (i, s) in nodes.iter().enumerate() {
                            if i == me || s.attempt != attempt { continue; }
                            if s.failed && teardown.is_none() && fail.is_none() {
                                fail = Some((Cause::PeerNode(i as u32), format!(": node {i} failed")));
                            }
                            if s.preempt { preempt_now = true; }
                        }
                    }
                    Err(_) => {
                        global = None;
                        if teardown.is_none() {
                            fail = Some((Cause::Hung("the MPI thread stopped".into()), ": the MPI thread stopped".into()));
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(timer) => {
                if teardown.is_some() {
                    for r in &alive {
                        tracing::warn!(rank = *r, "still alive {:.1} s after SIGTERM: SIGKILL", t.grace.as_secs_f64());
                        signal_group(workers[r].pid, Signal::SIGKILL);
                    }
                    killed = true;
                } else {
                    tracing::warn!(
                        "workers {:?} did not exit within the preempt deadline of {:.1} s: tearing down",
                        alive, t.preempt_deadline.as_secs_f64()
                    );
                    teardown = start_teardown(&alive, &workers);
                }
            }
        }
        if let Some((cause, detail)) = fail {
            if ended.causes.is_empty() {
                ended.detail = detail;
            }
            ended.causes.push(cause);
            cluster.report(|s| s.failed = true);
            if teardown.is_none() {
                teardown = start_teardown(&alive, &workers);
            }
        }
        if preempt_now && !ended.preempted {
            ended.preempted = true;
            cluster.report(|s| s.preempt = true);
            if teardown.is_none() {
                tracing::warn!(
                    "preempting: workers commit a checkpoint and exit 4 within {:.1} s",
                    t.preempt_deadline.as_secs_f64()
                );
                agent.preempt(t.preempt_deadline);
                for r in &alive {
                    if !workers[r].connected {
                        signal_process(workers[r].pid, Signal::SIGUSR1);
                    }
                }
                preempt_until = Some(Instant::now() + t.preempt_deadline);
            }
        }
    }
    // Every leader is reaped and each Child's drop killed its group; make sure of stragglers
    // that changed nothing about their group (a helper that ignored SIGTERM), and wait until
    // they are gone: nothing of this attempt may outlive it.
    let groups: Vec<Pid> = workers.values().map(|w| w.pid).collect();
    child::kill_groups_and_wait(&groups, Duration::from_secs(5)).await;
    drop(agent);
    Ok(ended)
}

#[cfg(test)]
mod tests;
