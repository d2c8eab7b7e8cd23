//! One supervised worker process: its own process group, `PR_SET_PDEATHSIG`, CPU pinning
//! before `exec`, stdout and stderr drained concurrently (a full pipe would block the worker:
//! ripgrep's `process.rs` deadlock note) into the rank's log file and the terminal, and a ring
//! buffer of the last stderr lines for the error message when it dies.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use crate::console::Console;
use crate::error::{Error, Result};
use crate::restart::Exit;
use crate::sys::{self, PreExec};
use crate::topology::CpuSet;

/// Stderr lines kept for the error message of a dead worker.
pub const TAIL_LINES: usize = 20;

/// How to start one worker.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Global rank (for messages).
    pub rank: u32,
    /// Prefix of its lines on the terminal, e.g. `[r3]`.
    pub label: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables to set.
    pub env: Vec<(String, String)>,
    /// Variables to remove.
    pub env_remove: Vec<String>,
    /// CPUs to pin to.
    pub cpus: Option<CpuSet>,
    /// NUMA node to prefer for memory.
    pub mem_node: Option<u32>,
    /// Log file (appended).
    pub log: PathBuf,
    /// A header line written to the log before the child's output.
    pub header: String,
}

/// A running worker. Dropping it kills its whole process group.
#[derive(Debug)]
pub struct Child {
    rank: u32,
    pid: Pid,
    child: tokio::process::Child,
    drains: Vec<JoinHandle<()>>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Child {
    /// Spawns the worker as the leader of a new process group.
    pub fn spawn(spec: &ChildSpec, console: Arc<Console>) -> Result<Child> {
        let log = open_log(spec)?;
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for k in &spec.env_remove {
            cmd.env_remove(k);
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let cpus = match &spec.cpus {
            None => None,
            Some(set) => {
                let mut c = nix::sched::CpuSet::new();
                for &cpu in &set.0 {
                    c.set(cpu as usize).map_err(|e| Error::Spawn {
                        rank: spec.rank,
                        program: spec.program.clone(),
                        err: std::io::Error::from_raw_os_error(e as i32),
                    })?;
                }
                Some(c)
            }
        };
        sys::install(
            &mut cmd,
            PreExec {
                cpus,
                mem_node: spec.mem_node,
                parent: nix::unistd::getpid(),
            },
        );
        let mut child = cmd.spawn().map_err(|err| Error::Spawn {
            rank: spec.rank,
            program: spec.program.clone(),
            err,
        })?;
        let pid = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let log = Arc::new(Mutex::new(log));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let drains = vec![
            tokio::spawn(drain(
                out,
                log.clone(),
                None,
                console.clone(),
                spec.label.clone(),
            )),
            tokio::spawn(drain(
                err,
                log,
                Some(tail.clone()),
                console,
                spec.label.clone(),
            )),
        ];
        Ok(Child {
            rank: spec.rank,
            pid,
            child,
            drains,
            tail,
        })
    }

    /// Global rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Process id (also the process group id).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the process to exit, then for its output to be drained (bounded: a
    /// grandchild that inherited the pipes could hold them open).
    pub async fn wait(&mut self) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        let status = match self.child.wait().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(rank = self.rank, "waiting for the worker failed: {e}");
                return Exit::Signal(libc::SIGKILL);
            }
        };
        for d in &mut self.drains {
            let _ = tokio::time::timeout(Duration::from_secs(2), d).await;
        }
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Signal(0),
        }
    }

    /// The last stderr lines.
    pub fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .expect("tail lock")
            .iter()
            .cloned()
            .collect()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // kill_on_drop covers the leader; this covers everything it started.
        let _ = killpg(self.pid, Signal::SIGKILL);
    }
}

/// Sends `sig` to a worker's process group; false when the group no longer exists.
pub fn signal_group(pgid: Pid, sig: Signal) -> bool {
    killpg(pgid, sig).is_ok()
}

/// Live (non-zombie) processes whose process group is one of `pgids`, read from /proc.
pub fn group_members(pgids: &[Pid]) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …; comm may hold spaces, so split after the last ')'.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let pgrp = f.get(2).and_then(|g| g.parse::<i32>().ok());
        if f.first() != Some(&"Z") && pgrp.is_some_and(|g| pgids.contains(&Pid::from_raw(g))) {
            out.push(Pid::from_raw(pid));
        }
    }
    out
}

/// SIGKILLs the process groups `pgids` and waits until none of their processes is alive (a
/// killed process still runs until the kernel has torn it down, which takes a while on a busy
/// machine), so that nothing of an attempt outlives it. Gives up after `limit` and returns the
/// survivors (a process stuck in uninterruptible sleep), having logged them.
pub async fn kill_groups_and_wait(pgids: &[Pid], limit: Duration) -> Vec<Pid> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        for g in pgids {
            let _ = killpg(*g, Signal::SIGKILL);
        }
        let left = group_members(pgids);
        if left.is_empty() {
            return left;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(
                "processes {left:?} of the run are still alive {:.1} s after SIGKILL",
                limit.as_secs_f64()
            );
            return left;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `sig` to the worker process only (not the helpers it started).
pub fn signal_process(pid: Pid, sig: Signal) -> bool {
    kill(pid, sig).is_ok()
}

fn open_log(spec: &ChildSpec) -> Result<File> {
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| Error::io(&spec.log, e))?;
    writeln!(f, "{}", spec.header).map_err(|e| Error::io(&spec.log, e))?;
    Ok(f)
}

async fn drain(
    stream: impl AsyncRead + Unpin,
    log: Arc<Mutex<File>>,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    console: Arc<Console>,
    label: String,
) {
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{line}");
        }
        console.worker_line(&label, line);
        if let Some(t) = &tail {
            let mut t = t.lock().expect("tail lock");
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line.to_owned());
        }
    }
}
