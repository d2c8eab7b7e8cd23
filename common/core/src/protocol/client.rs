//! [`AgentClient`]: the worker's blocking end of the agent channel — connect and hello,
//! heartbeats, one request at a time, preemption recorded by a reader thread.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::codec::{perr, read_frame, write_frame, ProtocolError};
use super::messages::{LauncherMsg, Progress, WorkerMsg};
use super::PROTOCOL_VERSION;
use crate::env::{WorkerDevice, WorkerEnv};

/// Errors of [`AgentClient`]. A worker maps all of them to exit code 3 (peer failure: the
/// launcher restarts the group).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The socket could not be reached within the timeout.
    #[error("cannot connect to the launcher's agent socket {}: {err}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The last OS error.
        err: io::Error,
    },
    /// Reading from or writing to the socket failed.
    #[error("agent socket: {0}")]
    Io(#[from] io::Error),
    /// A malformed or unexpected message.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// No reply within the timeout.
    #[error("rank {rank}: no reply to {what} from the launcher within {secs:.1} s")]
    Timeout {
        /// This worker's rank.
        rank: u32,
        /// The request.
        what: String,
        /// The timeout.
        secs: f64,
    },
    /// The launcher reported a failure (typically naming the rank at fault).
    #[error("launcher: {0}")]
    Launcher(String),
    /// The launcher closed the connection.
    #[error("the launcher closed the agent connection")]
    Closed,
    /// A peer died and is being replaced: the request in flight will never complete. Go back
    /// to the recovery point and call [`AgentClient::standby`].
    #[error("rank {rank} was lost ({msg}); the group waits for its replacement")]
    PeerLost {
        /// The dead rank.
        rank: u32,
        /// How it died.
        msg: String,
    },
    /// A wrong call (e.g. a broadcast whose length differs from rank 0's).
    #[error("{0}")]
    Usage(String),
}

type Reply = Result<LauncherMsg, AgentError>;

/// How a peer recovery ended, as the launcher reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    /// The new attempt number.
    pub attempt: u32,
    /// The rank that was replaced.
    pub lost_rank: u32,
    /// How it died.
    pub cause: String,
    /// From its death to the resume.
    pub seconds: f64,
}

/// A worker's blocking connection to its launcher's agent socket.
///
/// A background thread reads the launcher's messages: a [`LauncherMsg::Preempt`] only sets the
/// flag behind [`AgentClient::preempt_requested`]; every other message is the reply to the one
/// request in flight. Requests take `&mut self`, so there is never more than one.
pub struct AgentClient {
    /// The writing end, shared with [`HeartbeatSender`]s (one frame at a time).
    stream: Arc<Mutex<UnixStream>>,
    replies: mpsc::Receiver<Reply>,
    preempt: Arc<AtomicBool>,
    /// Set when the launcher said the attempt failed (`Failed`, also unsolicited).
    aborted: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    rank: u32,
    attempt: u32,
    world_size: u32,
    seq: u64,
    timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("rank", &self.rank)
            .field("attempt", &self.attempt)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Connects to `path` (retrying while the socket is not there yet, up to `timeout`), says
    /// hello and waits for the welcome. `timeout` also bounds every later reply; pass a bit
    /// more than the launcher's `launch.collective_timeout_secs` so the launcher, which knows
    /// which rank is missing, reports first.
    pub fn connect(
        path: &Path,
        rank: u32,
        device: WorkerDevice,
        cpus: &str,
        timeout: Duration,
    ) -> Result<AgentClient, AgentError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(err) if start.elapsed() >= timeout => {
                    return Err(AgentError::Connect {
                        path: path.to_owned(),
                        err,
                    })
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(err) => {
                    return Err(AgentError::Connect {
                        path: path.to_owned(),
                        err,
                    })
                }
            }
        };
        stream.set_write_timeout(Some(timeout))?;
        let mut read_half = stream.try_clone()?;
        let preempt = Arc::new(AtomicBool::new(false));
        let aborted = Arc::new(AtomicBool::new(false));
        let (tx, replies) = mpsc::channel();
        let (flag, abort) = (preempt.clone(), aborted.clone());
        let reader = std::thread::Builder::new()
            .name("convtt-agent-reader".into())
            .spawn(move || reader_loop(&mut read_half, &tx, &flag, &abort))?;
        let mut client = AgentClient {
            stream: Arc::new(Mutex::new(stream)),
            replies,
            preempt,
            aborted,
            reader: Some(reader),
            rank,
            attempt: 0,
            world_size: 0,
            seq: 0,
            timeout,
        };
        client.send(&WorkerMsg::Hello {
            version: PROTOCOL_VERSION,
            rank,
            pid: std::process::id(),
            cpus: cpus.to_owned(),
            device: device.to_string(),
        })?;
        match client.reply("hello")? {
            LauncherMsg::Welcome {
                attempt,
                world_size,
            } => {
                client.attempt = attempt;
                client.world_size = world_size;
                Ok(client)
            }
            other => Err(unexpected("hello", &other)),
        }
    }

    /// Connects as described by the launcher's environment ([`WorkerEnv`]).
    pub fn from_env(env: &WorkerEnv, timeout: Duration) -> Result<AgentClient, AgentError> {
        Self::connect(&env.agent, env.rank, env.device, &env.cpus, timeout)
    }

    /// This worker's global rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The attempt number the launcher confirmed.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Workers over all nodes.
    pub fn world_size(&self) -> u32 {
        self.world_size
    }

    /// Changes the reply timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Reports liveness and progress (no reply).
    pub fn heartbeat(&mut self, progress: &Progress) -> Result<(), AgentError> {
        self.send(&WorkerMsg::Heartbeat(*progress))
    }

    /// Replaces `buf` by its element-wise mean over every rank of the job. The launcher sums
    /// in a fixed rank order, so the result is bit-identical across runs and ranks.
    pub fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<(), AgentError> {
        let seq = self.start_all_reduce(buf)?;
        self.finish_all_reduce(seq, buf)
    }

    /// The first half of [`AgentClient::all_reduce_mean`]: sends this rank's contribution and
    /// returns the collective's sequence number.
    pub fn start_all_reduce(&mut self, buf: &[f32]) -> Result<u64, AgentError> {
        let seq = self.next_seq();
        self.send(&WorkerMsg::AllReduce {
            seq,
            data: buf.to_vec(),
        })?;
        Ok(seq)
    }

    /// The second half: waits for the mean of collective `seq` and writes it into `buf`.
    pub fn finish_all_reduce(&mut self, seq: u64, buf: &mut [f32]) -> Result<(), AgentError> {
        match self.reply("all_reduce_mean")? {
            LauncherMsg::AllReduced { seq: s, data } if s == seq && data.len() == buf.len() => {
                buf.copy_from_slice(&data);
                Ok(())
            }
            LauncherMsg::AllReduced { seq: s, data } => Err(AgentError::Protocol(perr(format!(
                "all_reduce #{seq}: got reply #{s} with {} values for {}",
                data.len(),
                buf.len()
            )))),
            other => Err(unexpected("all_reduce_mean", &other)),
        }
    }

    /// Broadcasts rank 0's `buf` into every other rank's `buf` (same length everywhere).
    pub fn broadcast(&mut self, buf: &mut [u8]) -> Result<(), AgentError> {
        let seq = self.next_seq();
        let data = if self.rank == 0 {
            buf.to_vec()
        } else {
            Vec::new()
        };
        self.send(&WorkerMsg::Broadcast { seq, data })?;
        match self.reply("broadcast")? {
            LauncherMsg::Broadcasted { seq: s, data } if s == seq => {
                if data.len() != buf.len() {
                    return Err(AgentError::Usage(format!(
                        "broadcast #{seq}: rank 0 sent {} bytes, rank {} expected {}",
                        data.len(),
                        self.rank,
                        buf.len()
                    )));
                }
                buf.copy_from_slice(&data);
                Ok(())
            }
            other => Err(unexpected("broadcast", &other)),
        }
    }

    /// Waits until every rank of the job reached this barrier.
    pub fn barrier(&mut self) -> Result<(), AgentError> {
        let seq = self.next_seq();
        self.send(&WorkerMsg::Barrier { seq })?;
        match self.reply("barrier")? {
            LauncherMsg::BarrierDone { seq: s } if s == seq => Ok(()),
            other => Err(unexpected("barrier", &other)),
        }
    }

    /// Rank 0: publishes this attempt's NCCL unique id (the launchers relay it everywhere).
    pub fn send_nccl_id(&mut self, id: &[u8]) -> Result<(), AgentError> {
        self.send(&WorkerMsg::NcclId(id.to_vec()))
    }

    /// Ranks other than 0: waits for this attempt's NCCL unique id.
    pub fn recv_nccl_id(&mut self) -> Result<Vec<u8>, AgentError> {
        self.send(&WorkerMsg::WantNcclId)?;
        match self.reply("recv_nccl_id")? {
            LauncherMsg::NcclId(id) => Ok(id),
            other => Err(unexpected("recv_nccl_id", &other)),
        }
    }

    /// Rank 0: a checkpoint was committed (no reply).
    pub fn checkpoint_committed(&mut self, step: u64, path: &Path) -> Result<(), AgentError> {
        self.send(&WorkerMsg::CheckpointCommitted {
            step,
            path: path.display().to_string(),
        })
    }

    /// Peer recovery: this worker holds the shared state at the recovery point (`step`,
    /// `checksum`). Waits until the launcher resumes the group; when this worker is chosen as
    /// the donor, `donate` gives the serialised state (its checksum must be `checksum`).
    /// Collective sequence numbers start again afterwards.
    pub fn standby(
        &mut self,
        step: u64,
        checksum: u64,
        donate: &mut dyn FnMut() -> Vec<u8>,
    ) -> Result<Resumed, AgentError> {
        self.send(&WorkerMsg::Standby { step, checksum })?;
        loop {
            match self.reply("standby")? {
                LauncherMsg::SendState => {
                    let data = donate();
                    self.send(&WorkerMsg::State { checksum, data })?;
                }
                LauncherMsg::Resume {
                    attempt,
                    lost_rank,
                    cause,
                    millis,
                } => {
                    self.attempt = attempt;
                    self.seq = 0;
                    return Ok(Resumed {
                        attempt,
                        lost_rank,
                        cause,
                        seconds: millis as f64 / 1000.0,
                    });
                }
                // A loss announced while this worker was already on its way to standby.
                LauncherMsg::PeerLost { .. } => {}
                other => return Err(unexpected("standby", &other)),
            }
        }
    }

    /// A replacement worker: the shared state of the group, from a healthy peer, checked
    /// against the checksum the donor announced.
    pub fn fetch_state(&mut self) -> Result<Vec<u8>, AgentError> {
        self.send(&WorkerMsg::WantState)?;
        match self.reply("fetch_state")? {
            LauncherMsg::State { checksum, data } => {
                let got = super::fnv1a64(&data);
                if got != checksum {
                    return Err(AgentError::Protocol(perr(format!(
                        "the peer state arrived with checksum {got:016x}, the donor announced \
                         {checksum:016x}"
                    ))));
                }
                Ok(data)
            }
            other => Err(unexpected("fetch_state", &other)),
        }
    }

    /// Says why the worker is about to exit with `code`, and closes the connection.
    pub fn goodbye(mut self, code: i32, reason: &str) -> Result<(), AgentError> {
        self.send(&WorkerMsg::Goodbye {
            code,
            reason: reason.to_owned(),
        })
    }

    /// True once the launcher asked for a checkpoint-then-exit-4 (never reset).
    pub fn preempt_requested(&self) -> bool {
        self.preempt.load(Ordering::Acquire)
    }

    /// The flag behind [`AgentClient::preempt_requested`], for a training loop (or a SIGUSR1
    /// handler, the launcher's fallback) to share.
    pub fn preempt_flag(&self) -> Arc<AtomicBool> {
        self.preempt.clone()
    }

    /// Set once the launcher said the attempt is failing: a wait outside this channel (an NCCL
    /// collective) watches it to give up at once.
    pub fn abort_flag(&self) -> Arc<AtomicBool> {
        self.aborted.clone()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn send(&mut self, msg: &WorkerMsg) -> Result<(), AgentError> {
        send_on(&self.stream, msg)
    }

    /// A handle that sends heartbeats on this connection from another thread (a heartbeat
    /// thread keeps reporting while the training thread is busy or stuck).
    pub fn heartbeat_sender(&self) -> HeartbeatSender {
        HeartbeatSender {
            stream: self.stream.clone(),
        }
    }

    fn reply(&mut self, what: &str) -> Result<LauncherMsg, AgentError> {
        match self.replies.recv_timeout(self.timeout) {
            Ok(Ok(LauncherMsg::Failed { msg })) => Err(AgentError::Launcher(msg)),
            Ok(Ok(LauncherMsg::PeerLost { rank, msg })) if what != "standby" => {
                Err(AgentError::PeerLost { rank, msg })
            }
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(AgentError::Timeout {
                rank: self.rank,
                what: what.to_owned(),
                secs: self.timeout.as_secs_f64(),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(AgentError::Closed),
        }
    }
}

/// Sends heartbeats on an [`AgentClient`]'s connection from another thread.
#[derive(Debug, Clone)]
pub struct HeartbeatSender {
    stream: Arc<Mutex<UnixStream>>,
}

impl HeartbeatSender {
    /// Sends one heartbeat (an error once the connection is closed).
    pub fn send(&self, progress: &Progress) -> Result<(), AgentError> {
        send_on(&self.stream, &WorkerMsg::Heartbeat(*progress))
    }
}

fn send_on(stream: &Mutex<UnixStream>, msg: &WorkerMsg) -> Result<(), AgentError> {
    let frame = msg.encode();
    let mut s = stream
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    write_frame(&mut *s, &frame).map_err(AgentError::Io)
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        // Shutting the socket down ends the reader thread's blocking read (and makes every
        // heartbeat sender's next send fail).
        if let Ok(s) = self.stream.lock() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

fn unexpected(what: &str, got: &LauncherMsg) -> AgentError {
    AgentError::Protocol(perr(format!("unexpected reply to {what}: {got:?}")))
}

fn reader_loop(
    r: &mut UnixStream,
    tx: &mpsc::Sender<Reply>,
    preempt: &AtomicBool,
    aborted: &AtomicBool,
) {
    loop {
        let reply = match read_frame(r) {
            Ok(None) => Err(AgentError::Closed),
            Ok(Some(body)) => match LauncherMsg::decode(&body) {
                Ok(LauncherMsg::Preempt { deadline_ms }) => {
                    tracing::warn!(
                        deadline_ms,
                        "launcher requests preemption: checkpoint, exit 4"
                    );
                    preempt.store(true, Ordering::Release);
                    continue;
                }
                Ok(m) => {
                    if matches!(m, LauncherMsg::Failed { .. }) {
                        aborted.store(true, Ordering::Release);
                    }
                    Ok(m)
                }
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        };
        let stop = reply.is_err();
        if tx.send(reply).is_err() || stop {
            return;
        }
    }
}
