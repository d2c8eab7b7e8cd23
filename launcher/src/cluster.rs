//! Launcher ↔ launcher (ARCHITECTURE §2.3): one node alone, or an MPI world of launchers.
//!
//! MPI is driven by one dedicated thread (MPI is initialised there, with `Threading::Single`,
//! and never touched elsewhere); tokio talks to it over channels. Every MPI operation must be
//! entered by all launchers in the same order, while requests arrive asynchronously on each
//! node. So the thread runs *rounds*: each round all-gathers a small fixed-size status from
//! every node (attempt, failure/preempt flags, verdict, quit, and the keys of up to
//! [`MAX_PENDING`] operations this node is ready for), publishes it to the supervisor, then
//! executes the first operation (in node 0's order) that every node is ready for. Failure or
//! preemption anywhere is therefore seen everywhere within a round, and data operations can
//! never be entered in different orders.
//!
//! Reductions are deterministic: node partial sums are all-gathered and added in node order.

use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};
use crate::restart::Verdict;

/// Operations a node may have queued at once (in the status exchange).
pub const MAX_PENDING: usize = 8;
/// Pause between status rounds when there is nothing to do.
pub const ROUND: Duration = Duration::from_millis(50);

/// Which cross-node operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Sum of f32 node partials.
    Sum = 1,
    /// Bytes from node 0.
    Bcast = 2,
    /// Barrier.
    Barrier = 3,
    /// The NCCL id of an attempt (bytes from node 0).
    NcclId = 4,
}

/// Identifies one cross-node operation; equal on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpKey {
    /// What.
    pub kind: OpKind,
    /// Attempt number.
    pub attempt: u32,
    /// Worker collective sequence number (0 for the NCCL id).
    pub seq: u64,
}

/// What one node tells the others each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStatus {
    /// The attempt the node is in.
    pub attempt: u32,
    /// A failure happened in this attempt: everyone tears down.
    pub failed: bool,
    /// A preemption was requested: everyone checkpoints.
    pub preempt: bool,
    /// The node's verdict for `attempt`, once its workers are all gone.
    pub verdict: Option<Verdict>,
    /// 0 unknown, 1 the node planned its workers, 2 it could not.
    pub ready: u8,
    /// The node is done with MPI.
    pub quit: bool,
    /// In `attempt`, this global rank is being replaced from its peers' memory (peer
    /// recovery): every node follows into the same attempt.
    pub recovering: Option<u32>,
}

/// Why an operation across the nodes' launchers failed (it crosses from the MPI thread to the
/// agent hub, so it is a value, not a message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The MPI thread is gone (MPI failed, or this node left the world).
    #[error("the MPI thread stopped")]
    Stopped,
    /// The world shut down while the operation waited.
    #[error("the MPI world shut down")]
    ShutDown,
    /// The nodes contributed sums of different lengths.
    #[error("sum #{seq}: nodes contribute different lengths {lens:?}")]
    Lengths {
        /// The operation's sequence number.
        seq: u64,
        /// Each node's length, in node order.
        lens: Vec<u64>,
    },
    /// A broadcast on a single node had no data (a caller's bug).
    #[error("broadcast without data on node 0")]
    NoData,
    /// The MPI thread answered with another kind of reply (a bug).
    #[error("MPI thread: wrong reply to a {0}")]
    WrongReply(&'static str),
    /// The operation belongs to an attempt this node has left (a peer recovery moved on)
    /// and not every node was ready for it.
    #[error("the operation's attempt was superseded by a peer recovery")]
    Superseded,
}

/// `Result` of a cluster operation.
pub type ClusterResult<T> = std::result::Result<T, ClusterError>;

enum Payload {
    Sum(Vec<f32>),
    Bytes(Option<Vec<u8>>),
    None,
}

struct Request {
    key: OpKey,
    payload: Payload,
    reply: oneshot::Sender<ClusterResult<Reply>>,
}

enum Reply {
    Sum(Vec<f32>),
    Bytes(Vec<u8>),
    Done,
}

/// One node, or a handle on the MPI thread.
#[derive(Clone)]
pub enum Cluster {
    /// A single node: cross-node operations are identities.
    Single,
    /// Several launchers in an MPI world.
    Mpi(Arc<MpiLink>),
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cluster::Single => f.write_str("Single"),
            Cluster::Mpi(m) => write!(f, "Mpi(node {} of {})", m.rank, m.size),
        }
    }
}

/// The tokio side of the MPI thread.
pub struct MpiLink {
    rank: u32,
    size: u32,
    requests: Mutex<std_mpsc::Sender<Request>>,
    status: Arc<Mutex<NodeStatus>>,
    global: watch::Receiver<Vec<NodeStatus>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Cluster {
    /// This node's rank.
    pub fn node_rank(&self) -> u32 {
        match self {
            Cluster::Single => 0,
            Cluster::Mpi(m) => m.rank,
        }
    }

    /// Number of nodes.
    pub fn num_nodes(&self) -> u32 {
        match self {
            Cluster::Single => 1,
            Cluster::Mpi(m) => m.size,
        }
    }

    /// Element-wise sum of every node's `data`, added in node order.
    pub async fn sum(&self, key: OpKey, data: Vec<f32>) -> ClusterResult<Vec<f32>> {
        match self {
            Cluster::Single => Ok(data),
            Cluster::Mpi(m) => match m.request(key, Payload::Sum(data)).await? {
                Reply::Sum(v) => Ok(v),
                _ => Err(ClusterError::WrongReply("sum")),
            },
        }
    }

    /// Node 0's bytes on every node (`data` is `Some` on node 0).
    pub async fn bcast(&self, key: OpKey, data: Option<Vec<u8>>) -> ClusterResult<Vec<u8>> {
        match self {
            Cluster::Single => data.ok_or(ClusterError::NoData),
            Cluster::Mpi(m) => match m.request(key, Payload::Bytes(data)).await? {
                Reply::Bytes(v) => Ok(v),
                _ => Err(ClusterError::WrongReply("broadcast")),
            },
        }
    }

    /// Waits for every node.
    pub async fn barrier(&self, key: OpKey) -> ClusterResult<()> {
        match self {
            Cluster::Single => Ok(()),
            Cluster::Mpi(m) => m.request(key, Payload::None).await.map(|_| ()),
        }
    }

    /// Updates what this node tells the others.
    pub fn report(&self, f: impl FnOnce(&mut NodeStatus)) {
        if let Cluster::Mpi(m) = self {
            f(&mut m.status.lock().expect("status lock"));
        }
    }

    /// Every node's latest status (`None` on a single node).
    pub fn watch(&self) -> Option<watch::Receiver<Vec<NodeStatus>>> {
        match self {
            Cluster::Single => None,
            Cluster::Mpi(m) => Some(m.global.clone()),
        }
    }

    /// Agrees that every node could plan its workers; an error names the nodes that could not.
    pub async fn agree_ready(&self, ok: bool) -> Result<()> {
        let Cluster::Mpi(m) = self else { return Ok(()) };
        self.report(|s| s.ready = if ok { 1 } else { 2 });
        let mut rx = m.global.clone();
        loop {
            let all = rx.borrow_and_update().clone();
            if all.len() == m.size as usize && all.iter().all(|s| s.ready != 0) {
                let bad: Vec<usize> = all
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.ready == 2)
                    .map(|(i, _)| i)
                    .collect();
                return if bad.is_empty() {
                    Ok(())
                } else {
                    Err(Error::Usage(format!(
                        "nodes {bad:?} could not plan their workers (see their logs)"
                    )))
                };
            }
            rx.changed()
                .await
                .map_err(|_| Error::Mpi("the MPI thread stopped".into()))?;
        }
    }

    /// Consensus on how attempt `attempt` ended: the most severe verdict over all nodes.
    pub async fn agree(&self, attempt: u32, mine: Verdict) -> Result<Verdict> {
        let Cluster::Mpi(m) = self else {
            return Ok(mine);
        };
        self.report(|s| {
            s.attempt = attempt;
            s.verdict = Some(mine);
        });
        let mut rx = m.global.clone();
        loop {
            let all = rx.borrow_and_update().clone();
            if all.len() == m.size as usize
                && all
                    .iter()
                    .all(|s| s.attempt == attempt && s.verdict.is_some())
            {
                return Ok(all
                    .iter()
                    .filter_map(|s| s.verdict)
                    .fold(mine, Verdict::combine));
            }
            rx.changed()
                .await
                .map_err(|_| Error::Mpi("the MPI thread stopped".into()))?;
        }
    }

    /// Starts attempt `attempt` on this node (clears the per-attempt flags).
    pub fn begin_attempt(&self, attempt: u32) {
        self.report(|s| {
            *s = NodeStatus {
                attempt,
                ready: s.ready,
                ..NodeStatus::default()
            };
        });
    }

    /// Leaves the MPI world once every node has left (MPI_Finalize), joining the thread.
    pub fn finish(&self) {
        if let Cluster::Mpi(m) = self {
            self.report(|s| s.quit = true);
            if let Some(t) = m.thread.lock().expect("thread lock").take() {
                let _ = t.join();
            }
        }
    }
}

impl MpiLink {
    async fn request(&self, key: OpKey, payload: Payload) -> ClusterResult<Reply> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .lock()
            .expect("request lock")
            .send(Request {
                key,
                payload,
                reply: tx,
            })
            .map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)?
    }
}

/// True when this process was started as part of an MPI job (mpirun, or srun with PMI/PMIx).
pub fn started_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"]
        .iter()
        .any(|k| std::env::var_os(k).is_some())
}

/// Initialises MPI on its own thread and returns the link (rank, size).
pub fn start_mpi() -> Result<Cluster> {
    let (init_tx, init_rx) = std_mpsc::channel();
    let (req_tx, req_rx) = std_mpsc::channel::<Request>();
    let status = Arc::new(Mutex::new(NodeStatus::default()));
    let (global_tx, global_rx) = watch::channel(Vec::new());
    let st = status.clone();
    let thread = std::thread::Builder::new()
        .name("convtt-mpi".into())
        .spawn(move || mpi_thread(init_tx, req_rx, st, global_tx))
        .map_err(|e| Error::Mpi(format!("cannot start the MPI thread: {e}")))?;
    let (rank, size) = init_rx
        .recv()
        .map_err(|_| Error::Mpi("MPI initialisation failed".into()))??;
    Ok(Cluster::Mpi(Arc::new(MpiLink {
        rank,
        size,
        requests: Mutex::new(req_tx),
        status,
        global: global_rx,
        thread: Mutex::new(Some(thread)),
    })))
}

const HEAD: usize = 6;
const WIDTH: usize = HEAD + 4 * MAX_PENDING;

fn encode_status(s: &NodeStatus, pending: &[(OpKey, u64)]) -> [u64; WIDTH] {
    let mut v = [0u64; WIDTH];
    v[0] = u64::from(s.attempt);
    v[1] = u64::from(s.failed) | u64::from(s.preempt) << 1 | u64::from(s.quit) << 2;
    v[2] = s.verdict.map_or(0, Verdict::encode);
    v[3] = u64::from(s.ready);
    v[4] = pending.len().min(MAX_PENDING) as u64;
    v[5] = s.recovering.map_or(0, |r| u64::from(r) + 1);
    for (i, (k, len)) in pending.iter().take(MAX_PENDING).enumerate() {
        let b = HEAD + 4 * i;
        v[b] = k.kind as u64;
        v[b + 1] = u64::from(k.attempt);
        v[b + 2] = k.seq;
        v[b + 3] = *len;
    }
    v
}

fn decode_status(v: &[u64]) -> (NodeStatus, Vec<(u64, u64, u64, u64)>) {
    let s = NodeStatus {
        attempt: v[0] as u32,
        failed: v[1] & 1 != 0,
        preempt: v[1] & 2 != 0,
        quit: v[1] & 4 != 0,
        verdict: Verdict::decode(v[2]),
        ready: v[3] as u8,
        recovering: v[5].checked_sub(1).map(|r| r as u32),
    };
    let n = (v[4] as usize).min(MAX_PENDING);
    let keys = (0..n)
        .map(|i| {
            let b = HEAD + 4 * i;
            (v[b], v[b + 1], v[b + 2], v[b + 3])
        })
        .collect();
    (s, keys)
}

fn payload_len(p: &Payload) -> u64 {
    match p {
        Payload::Sum(v) => v.len() as u64,
        _ => 0,
    }
}

fn mpi_thread(
    init: std_mpsc::Sender<Result<(u32, u32)>>,
    requests: std_mpsc::Receiver<Request>,
    status: Arc<Mutex<NodeStatus>>,
    global: watch::Sender<Vec<NodeStatus>>,
) {
    use mpi::traits::*;

    let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Single) else {
        let _ = init.send(Err(Error::Mpi("MPI was already initialised".into())));
        return;
    };
    let world = universe.world();
    let (rank, size) = (world.rank() as u32, world.size() as u32);
    let _ = init.send(Ok((rank, size)));
    let mut pending: Vec<Request> = Vec::new();
    loop {
        while let Ok(r) = requests.try_recv() {
            pending.push(r);
        }
        let me = *status.lock().expect("status lock");
        let keys: Vec<(OpKey, u64)> = pending
            .iter()
            .map(|r| (r.key, payload_len(&r.payload)))
            .collect();
        let send = encode_status(&me, &keys);
        let mut all = vec![0u64; WIDTH * size as usize];
        world.all_gather_into(&send[..], &mut all[..]);
        let decoded: Vec<_> = all.chunks_exact(WIDTH).map(decode_status).collect();
        let statuses: Vec<NodeStatus> = decoded.iter().map(|(s, _)| *s).collect();
        let everyone_quit = statuses.iter().all(|s| s.quit);
        let _ = global.send(statuses);
        if everyone_quit {
            break;
        }
        // The first of node 0's ready operations that every node is ready for.
        let ready = decoded[0].1.iter().find(|k0| {
            decoded
                .iter()
                .all(|(_, ks)| ks.iter().any(|k| (k.0, k.1, k.2) == (k0.0, k0.1, k0.2)))
        });
        let ready = ready.copied();
        // Operations of attempts this node has left (a peer recovery) that not every node is
        // ready for will never complete: answer them, freeing their slots.
        pending.retain_mut(|r| {
            let key = (r.key.kind as u64, u64::from(r.key.attempt), r.key.seq);
            let stale = r.key.attempt < me.attempt && ready.is_none_or(|k| (k.0, k.1, k.2) != key);
            if stale {
                let (tx, _) = oneshot::channel();
                let _ = std::mem::replace(&mut r.reply, tx).send(Err(ClusterError::Superseded));
            }
            !stale
        });
        let Some((kind, attempt, seq, _)) = ready else {
            std::thread::sleep(ROUND);
            continue;
        };
        let idx = pending
            .iter()
            .position(|r| {
                (r.key.kind as u64, u64::from(r.key.attempt), r.key.seq) == (kind, attempt, seq)
            })
            .expect("a key listed by this node is pending here");
        let req = pending.remove(idx);
        let lens: Vec<u64> = decoded
            .iter()
            .map(|(_, ks)| {
                ks.iter()
                    .find(|k| (k.0, k.1, k.2) == (kind, attempt, seq))
                    .map_or(0, |k| k.3)
            })
            .collect();
        let reply = match req.payload {
            Payload::Sum(data) => {
                if lens.iter().any(|&l| l != data.len() as u64) {
                    Err(ClusterError::Lengths { seq, lens })
                } else {
                    let n = data.len();
                    let mut gathered = vec![0f32; n * size as usize];
                    world.all_gather_into(&data[..], &mut gathered[..]);
                    let mut out = vec![0f32; n];
                    for part in gathered.chunks_exact(n.max(1)).take(size as usize) {
                        for (o, x) in out.iter_mut().zip(part) {
                            *o += *x;
                        }
                    }
                    Ok(Reply::Sum(out))
                }
            }
            Payload::Bytes(data) => {
                let root = world.process_at_rank(0);
                let mut len = data.as_ref().map_or(0u64, |d| d.len() as u64);
                root.broadcast_into(&mut len);
                let mut buf = data.unwrap_or_else(|| vec![0u8; len as usize]);
                buf.resize(len as usize, 0);
                root.broadcast_into(&mut buf[..]);
                Ok(Reply::Bytes(buf))
            }
            Payload::None => {
                world.barrier();
                Ok(Reply::Done)
            }
        };
        let _ = req.reply.send(reply);
    }
    for r in pending {
        let _ = r.reply.send(Err(ClusterError::ShutDown));
    }
    drop(universe);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_the_fixed_width_encoding() {
        let s = NodeStatus {
            attempt: 3,
            failed: true,
            preempt: false,
            verdict: Some(Verdict::Retry { code: 137 }),
            ready: 1,
            quit: true,
            recovering: Some(3),
        };
        let key = OpKey {
            kind: OpKind::Sum,
            attempt: 3,
            seq: 99,
        };
        let v = encode_status(&s, &[(key, 1234)]);
        let (back, keys) = decode_status(&v);
        assert_eq!(back, s);
        assert_eq!(keys, vec![(1, 3, 99, 1234)]);
    }
}
