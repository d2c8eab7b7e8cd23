//! The agent channel between a worker and its node's launcher (ARCHITECTURE §2.2).
//!
//! # Framing
//! Every message is one frame: a `u32` little-endian body length, then the body. The body is a
//! one-byte tag followed by the fields in declaration order: integers little-endian, `f32`
//! little-endian IEEE-754 (bit-exact, NaN included), strings and byte strings as a `u32` length
//! plus the bytes, `f32` buffers as a `u32` element count plus the raw little-endian values.
//! No JSON: gradients cross this channel on CPU runs and must not be rounded or reformatted.
//!
//! # Conversation
//! The worker connects to `CONVTT_AGENT`, sends [`WorkerMsg::Hello`] and waits for
//! [`LauncherMsg::Welcome`]. After that it sends heartbeats whenever it likes, and requests
//! (collectives, NCCL id) one at a time, each answered by exactly one reply. The launcher may
//! send [`LauncherMsg::Preempt`] at any moment; the client records it without disturbing
//! the request in flight. A launcher-side failure (e.g. a peer that never joined a collective)
//! comes back as [`LauncherMsg::Failed`] naming the culprit.
//!
//! The launcher serves this with tokio (`launcher/src/agent.rs`) using [`WorkerMsg::decode`]
//! and [`LauncherMsg::encode`]; workers use the blocking [`AgentClient`].

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::env::{WorkerDevice, WorkerEnv};

/// Bumped whenever a message layout changes; the launcher refuses a mismatched hello.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest accepted frame body (1 GiB): a corrupt length fails loudly instead of allocating.
pub const MAX_FRAME: usize = 1 << 30;

/// Progress a worker reports with each heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Progress {
    /// Optimizer steps done.
    pub step: u64,
    /// Steps the run will take in total (0: unknown).
    pub total_steps: u64,
    /// Current epoch.
    pub epoch: u32,
    /// Latest training loss (NaN: none yet).
    pub loss: f32,
    /// Training throughput of this worker.
    pub samples_per_sec: f32,
}

/// Worker → launcher.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerMsg {
    /// First message on a connection.
    Hello {
        /// [`PROTOCOL_VERSION`] of the worker.
        version: u32,
        /// Global rank.
        rank: u32,
        /// Process id.
        pid: u32,
        /// CPU list the worker runs on.
        cpus: String,
        /// Device (`cpu` or `cuda:K`).
        device: String,
    },
    /// Liveness + progress. No reply.
    Heartbeat(Progress),
    /// Rank 0 publishes this attempt's NCCL unique id. No reply.
    NcclId(Vec<u8>),
    /// Ask for this attempt's NCCL unique id; answered by [`LauncherMsg::NcclId`].
    WantNcclId,
    /// Contribution to all-reduce-mean number `seq`; answered by [`LauncherMsg::AllReduced`].
    AllReduce {
        /// Collective sequence number (per worker, shared by every collective kind).
        seq: u64,
        /// This worker's values.
        data: Vec<f32>,
    },
    /// Join broadcast `seq` from rank 0 (whose `data` is the payload; others send nothing).
    Broadcast {
        /// Collective sequence number.
        seq: u64,
        /// The payload on rank 0, empty elsewhere.
        data: Vec<u8>,
    },
    /// Join barrier `seq`; answered by [`LauncherMsg::BarrierDone`].
    Barrier {
        /// Collective sequence number.
        seq: u64,
    },
    /// A checkpoint was committed (rank 0). No reply.
    CheckpointCommitted {
        /// Its step.
        step: u64,
        /// Its directory.
        path: String,
    },
    /// The worker is about to exit. No reply.
    Goodbye {
        /// The exit code it will return.
        code: i32,
        /// Why.
        reason: String,
    },
}

/// Launcher → worker.
#[derive(Debug, Clone, PartialEq)]
pub enum LauncherMsg {
    /// The hello was accepted.
    Welcome {
        /// The attempt number (as in `CONVTT_ATTEMPT`).
        attempt: u32,
        /// Workers over all nodes.
        world_size: u32,
    },
    /// This attempt's NCCL unique id.
    NcclId(Vec<u8>),
    /// Result of all-reduce-mean `seq`.
    AllReduced {
        /// Collective sequence number.
        seq: u64,
        /// The mean over all ranks.
        data: Vec<f32>,
    },
    /// Result of broadcast `seq`.
    Broadcasted {
        /// Collective sequence number.
        seq: u64,
        /// Rank 0's payload.
        data: Vec<u8>,
    },
    /// Every rank reached barrier `seq`.
    BarrierDone {
        /// Collective sequence number.
        seq: u64,
    },
    /// Commit a checkpoint now, then exit with code 4, within `deadline_ms`.
    Preempt {
        /// Milliseconds the launcher waits before it kills the worker.
        deadline_ms: u64,
    },
    /// The request in flight (or the whole attempt) failed; `msg` names the cause.
    Failed {
        /// What went wrong, naming the rank at fault where known.
        msg: String,
    },
}

/// A frame that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent protocol: {0}")]
pub struct ProtocolError(pub String);

fn perr(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

// ----- encoding --------------------------------------------------------------------------------

struct Enc(Vec<u8>);

impl Enc {
    fn new(tag: u8) -> Self {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0; 4]); // the length, patched in `finish`
        v.push(tag);
        Enc(v)
    }
    fn u32(mut self, x: u32) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn i32(mut self, x: i32) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(mut self, x: u64) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn f32(mut self, x: f32) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn bytes(self, b: &[u8]) -> Self {
        let mut s = self.u32(u32::try_from(b.len()).expect("payload below 4 GiB"));
        s.0.extend_from_slice(b);
        s
    }
    fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
    fn f32s(self, xs: &[f32]) -> Self {
        let mut s = self.u32(u32::try_from(xs.len()).expect("buffer below 4 Gi elements"));
        s.0.reserve(xs.len() * 4);
        for x in xs {
            s.0.extend_from_slice(&x.to_le_bytes());
        }
        s
    }
    fn finish(mut self) -> Vec<u8> {
        let body = self.0.len() - 4;
        assert!(
            body <= MAX_FRAME,
            "agent frame of {body} bytes exceeds MAX_FRAME"
        );
        self.0[..4].copy_from_slice(&(body as u32).to_le_bytes());
        self.0
    }
}

struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(perr(format!("truncated {} message", self.what)));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32(&mut self) -> Result<f32, ProtocolError> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, ProtocolError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, ProtocolError> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| perr(format!("non-UTF-8 string in {} message", self.what)))
    }
    fn f32s(&mut self) -> Result<Vec<f32>, ProtocolError> {
        let n = self.u32()? as usize;
        let raw = self.take(
            n.checked_mul(4)
                .ok_or_else(|| perr("f32 count overflows"))?,
        )?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
    fn end<T>(self, v: T) -> Result<T, ProtocolError> {
        if self.buf.is_empty() {
            Ok(v)
        } else {
            Err(perr(format!(
                "{} trailing bytes after {} message",
                self.buf.len(),
                self.what
            )))
        }
    }
}

fn split_tag(body: &[u8]) -> Result<(u8, &[u8]), ProtocolError> {
    body.split_first()
        .map(|(t, rest)| (*t, rest))
        .ok_or_else(|| perr("empty frame"))
}

impl WorkerMsg {
    /// The whole frame (length prefix included).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            WorkerMsg::Hello {
                version,
                rank,
                pid,
                cpus,
                device,
            } => Enc::new(1)
                .u32(*version)
                .u32(*rank)
                .u32(*pid)
                .str(cpus)
                .str(device),
            WorkerMsg::Heartbeat(p) => Enc::new(2)
                .u64(p.step)
                .u64(p.total_steps)
                .u32(p.epoch)
                .f32(p.loss)
                .f32(p.samples_per_sec),
            WorkerMsg::NcclId(id) => Enc::new(3).bytes(id),
            WorkerMsg::WantNcclId => Enc::new(4),
            WorkerMsg::AllReduce { seq, data } => Enc::new(5).u64(*seq).f32s(data),
            WorkerMsg::Broadcast { seq, data } => Enc::new(6).u64(*seq).bytes(data),
            WorkerMsg::Barrier { seq } => Enc::new(7).u64(*seq),
            WorkerMsg::CheckpointCommitted { step, path } => Enc::new(8).u64(*step).str(path),
            WorkerMsg::Goodbye { code, reason } => Enc::new(9).i32(*code).str(reason),
        }
        .finish()
    }

    /// Decodes a frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<WorkerMsg, ProtocolError> {
        let (tag, rest) = split_tag(body)?;
        let mut d = Dec {
            buf: rest,
            what: "worker",
        };
        let msg = match tag {
            1 => WorkerMsg::Hello {
                version: d.u32()?,
                rank: d.u32()?,
                pid: d.u32()?,
                cpus: d.str()?,
                device: d.str()?,
            },
            2 => WorkerMsg::Heartbeat(Progress {
                step: d.u64()?,
                total_steps: d.u64()?,
                epoch: d.u32()?,
                loss: d.f32()?,
                samples_per_sec: d.f32()?,
            }),
            3 => WorkerMsg::NcclId(d.bytes()?),
            4 => WorkerMsg::WantNcclId,
            5 => WorkerMsg::AllReduce {
                seq: d.u64()?,
                data: d.f32s()?,
            },
            6 => WorkerMsg::Broadcast {
                seq: d.u64()?,
                data: d.bytes()?,
            },
            7 => WorkerMsg::Barrier { seq: d.u64()? },
            8 => WorkerMsg::CheckpointCommitted {
                step: d.u64()?,
                path: d.str()?,
            },
            9 => WorkerMsg::Goodbye {
                code: d.i32()?,
                reason: d.str()?,
            },
            t => return Err(perr(format!("unknown worker message tag {t}"))),
        };
        d.end(msg)
    }
}

impl LauncherMsg {
    /// The whole frame (length prefix included).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            LauncherMsg::Welcome {
                attempt,
                world_size,
            } => Enc::new(101).u32(*attempt).u32(*world_size),
            LauncherMsg::NcclId(id) => Enc::new(102).bytes(id),
            LauncherMsg::AllReduced { seq, data } => Enc::new(103).u64(*seq).f32s(data),
            LauncherMsg::Broadcasted { seq, data } => Enc::new(104).u64(*seq).bytes(data),
            LauncherMsg::BarrierDone { seq } => Enc::new(105).u64(*seq),
            LauncherMsg::Preempt { deadline_ms } => Enc::new(106).u64(*deadline_ms),
            LauncherMsg::Failed { msg } => Enc::new(107).str(msg),
        }
        .finish()
    }

    /// Decodes a frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<LauncherMsg, ProtocolError> {
        let (tag, rest) = split_tag(body)?;
        let mut d = Dec {
            buf: rest,
            what: "launcher",
        };
        let msg = match tag {
            101 => LauncherMsg::Welcome {
                attempt: d.u32()?,
                world_size: d.u32()?,
            },
            102 => LauncherMsg::NcclId(d.bytes()?),
            103 => LauncherMsg::AllReduced {
                seq: d.u64()?,
                data: d.f32s()?,
            },
            104 => LauncherMsg::Broadcasted {
                seq: d.u64()?,
                data: d.bytes()?,
            },
            105 => LauncherMsg::BarrierDone { seq: d.u64()? },
            106 => LauncherMsg::Preempt {
                deadline_ms: d.u64()?,
            },
            107 => LauncherMsg::Failed { msg: d.str()? },
            t => return Err(perr(format!("unknown launcher message tag {t}"))),
        };
        d.end(msg)
    }
}

/// Parses a frame length prefix, rejecting lengths above [`MAX_FRAME`].
pub fn frame_len(prefix: [u8; 4]) -> io::Result<usize> {
    let n = u32::from_le_bytes(prefix) as usize;
    if n > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("agent frame of {n} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    Ok(n)
}

/// Reads one frame body. `Ok(None)` on a clean end of stream before a frame starts.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut body = vec![0u8; frame_len(prefix)?];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Writes one already-encoded frame.
pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)?;
    w.flush()
}

// ----- blocking client -------------------------------------------------------------------------

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
    /// A wrong call (e.g. a broadcast whose length differs from rank 0's).
    #[error("{0}")]
    Usage(String),
}

type Reply = Result<LauncherMsg, AgentError>;

/// A worker's blocking connection to its launcher's agent socket.
///
/// A background thread reads the launcher's messages: a [`LauncherMsg::Preempt`] only sets the
/// flag behind [`AgentClient::preempt_requested`]; every other message is the reply to the one
/// request in flight. Requests take `&mut self`, so there is never more than one.
pub struct AgentClient {
    stream: UnixStream,
    replies: mpsc::Receiver<Reply>,
    preempt: Arc<AtomicBool>,
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
        let (tx, replies) = mpsc::channel();
        let flag = preempt.clone();
        let reader = std::thread::Builder::new()
            .name("convtt-agent-reader".into())
            .spawn(move || reader_loop(&mut read_half, &tx, &flag))?;
        let mut client = AgentClient {
            stream,
            replies,
            preempt,
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
        let seq = self.next_seq();
        self.send(&WorkerMsg::AllReduce {
            seq,
            data: buf.to_vec(),
        })?;
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

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn send(&mut self, msg: &WorkerMsg) -> Result<(), AgentError> {
        write_frame(&mut self.stream, &msg.encode()).map_err(AgentError::Io)
    }

    fn reply(&mut self, what: &str) -> Result<LauncherMsg, AgentError> {
        match self.replies.recv_timeout(self.timeout) {
            Ok(Ok(LauncherMsg::Failed { msg })) => Err(AgentError::Launcher(msg)),
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

impl Drop for AgentClient {
    fn drop(&mut self) {
        // Shutting the socket down ends the reader thread's blocking read.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

fn unexpected(what: &str, got: &LauncherMsg) -> AgentError {
    AgentError::Protocol(perr(format!("unexpected reply to {what}: {got:?}")))
}

fn reader_loop(r: &mut UnixStream, tx: &mpsc::Sender<Reply>, preempt: &AtomicBool) {
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
                Ok(m) => Ok(m),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_worker(m: WorkerMsg) {
        let frame = m.encode();
        let body = read_frame(&mut &frame[..]).unwrap().unwrap();
        assert_eq!(WorkerMsg::decode(&body).unwrap(), m);
    }

    fn round_trip_launcher(m: LauncherMsg) {
        let frame = m.encode();
        let body = read_frame(&mut &frame[..]).unwrap().unwrap();
        assert_eq!(LauncherMsg::decode(&body).unwrap(), m);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip_worker(WorkerMsg::Hello {
            version: PROTOCOL_VERSION,
            rank: 3,
            pid: 4242,
            cpus: "0-3,64-67".into(),
            device: "cuda:1".into(),
        });
        round_trip_worker(WorkerMsg::Heartbeat(Progress {
            step: 10,
            total_steps: 100,
            epoch: 2,
            loss: 0.25,
            samples_per_sec: 123.5,
        }));
        round_trip_worker(WorkerMsg::NcclId((0..128).collect()));
        round_trip_worker(WorkerMsg::WantNcclId);
        round_trip_worker(WorkerMsg::AllReduce {
            seq: 7,
            data: vec![1.0, -0.0, f32::MAX],
        });
        round_trip_worker(WorkerMsg::Broadcast {
            seq: 8,
            data: vec![0, 255, 10],
        });
        round_trip_worker(WorkerMsg::Barrier { seq: 9 });
        round_trip_worker(WorkerMsg::CheckpointCommitted {
            step: 5,
            path: "ck/é".into(),
        });
        round_trip_worker(WorkerMsg::Goodbye {
            code: -9,
            reason: "done".into(),
        });
        round_trip_launcher(LauncherMsg::Welcome {
            attempt: 2,
            world_size: 16,
        });
        round_trip_launcher(LauncherMsg::NcclId(vec![1; 128]));
        round_trip_launcher(LauncherMsg::AllReduced {
            seq: 1,
            data: vec![],
        });
        round_trip_launcher(LauncherMsg::Broadcasted {
            seq: 2,
            data: vec![9],
        });
        round_trip_launcher(LauncherMsg::BarrierDone { seq: 3 });
        round_trip_launcher(LauncherMsg::Preempt {
            deadline_ms: 60_000,
        });
        round_trip_launcher(LauncherMsg::Failed {
            msg: "rank 2 timed out".into(),
        });
    }

    #[test]
    fn f32_payloads_are_bit_exact() {
        let data = vec![f32::NAN, f32::INFINITY, -f32::MIN_POSITIVE, 1e-45, 0.1];
        let frame = WorkerMsg::AllReduce {
            seq: 1,
            data: data.clone(),
        }
        .encode();
        // header: 4 length + 1 tag + 8 seq + 4 count, then raw little-endian values
        assert_eq!(frame.len(), 17 + 4 * data.len());
        assert_eq!(&frame[17..21], &f32::NAN.to_le_bytes());
        let body = read_frame(&mut &frame[..]).unwrap().unwrap();
        let WorkerMsg::AllReduce { data: back, .. } = WorkerMsg::decode(&body).unwrap() else {
            panic!("wrong message");
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&data));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert!(WorkerMsg::decode(&[]).is_err());
        assert!(WorkerMsg::decode(&[200])
            .unwrap_err()
            .0
            .contains("unknown worker message tag"));
        let frame = WorkerMsg::Barrier { seq: 1 }.encode();
        assert!(WorkerMsg::decode(&frame[4..frame.len() - 1])
            .unwrap_err()
            .0
            .contains("truncated"));
        let mut long = frame[4..].to_vec();
        long.push(0);
        assert!(WorkerMsg::decode(&long).unwrap_err().0.contains("trailing"));
        // a huge length prefix is refused before allocating
        let huge = (u32::MAX).to_le_bytes();
        assert!(read_frame(&mut &huge[..]).is_err());
        // a stream cut inside a frame is an error, at a boundary a clean end
        assert!(read_frame(&mut &frame[..3]).is_err());
        assert!(read_frame(&mut &[][..]).unwrap().is_none());
        // a count larger than the frame
        let mut lying = WorkerMsg::AllReduce {
            seq: 1,
            data: vec![1.0],
        }
        .encode()[4..]
            .to_vec();
        lying[9..13].copy_from_slice(&1000u32.to_le_bytes());
        assert!(WorkerMsg::decode(&lying).is_err());
    }
}
