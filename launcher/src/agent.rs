//! The launcher side of the agent channel (ARCHITECTURE §2.2): a Unix socket per launcher,
//! served with tokio; framing and message types are `convtt_core::protocol`, shared with the
//! workers' blocking `AgentClient`.
//!
//! One *hub* task per attempt owns all state; connection tasks only decode frames and forward
//! them, so there are no locks. The hub:
//! * accepts `hello` from this node's ranks of this attempt (any other rank, a duplicate or a
//!   protocol mismatch is refused with `Failed`);
//! * completes CPU collectives when every local rank has contributed: all-reduce sums the
//!   contributions in ascending rank order (never arrival order, so results are bit-identical
//!   from run to run), adds other nodes' partials through [`Cluster`] and divides by the world
//!   size; broadcast takes rank 0's bytes; barrier just answers;
//! * relays the NCCL unique id of the attempt from rank 0 to every rank of every node;
//! * enforces every timeout (startup, heartbeat, collective, NCCL id) and reports the rank at
//!   fault as an [`AgentEvent::Failure`]; waiting ranks get `Failed` with the same message;
//! * runs a peer recovery ([`Attempt::peer_lost`]): the survivors are told `PeerLost` and
//!   come back in `Standby` with the checksum of their shared state; once they all agree, the
//!   lowest survivor donates its state to the replacement, which installs it and stands by
//!   with the same checksum; then every rank is told `Resume` and collectives start again
//!   from sequence 1. Disagreeing checksums or a recovery that does not complete in time are
//!   failures (the supervisor falls back to the checkpoint restart).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convtt_core::protocol::{
    fnv1a64, frame_len, LauncherMsg, Progress, WorkerMsg, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::cluster::{Cluster, ClusterResult, OpKey, OpKind};
use crate::error::{Error, Result};
use crate::postmortem::{Diagnosis, RankView};

/// What the supervisor learns from the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// A worker said hello.
    Hello {
        /// Rank.
        rank: u32,
        /// Its pid.
        pid: u32,
        /// Its CPUs.
        cpus: String,
        /// Its device.
        device: String,
    },
    /// A heartbeat.
    Progress {
        /// Rank.
        rank: u32,
        /// Its progress.
        progress: Progress,
    },
    /// A checkpoint was committed.
    Checkpoint {
        /// Step.
        step: u64,
        /// Directory.
        path: String,
    },
    /// A worker announced its exit.
    Goodbye {
        /// Rank.
        rank: u32,
        /// Exit code it announced.
        code: i32,
        /// Why.
        reason: String,
    },
    /// The attempt cannot go on (a timeout or protocol violation); the text names the rank.
    Failure(String),
    /// A hang or a timed-out collective, as the hub saw each rank; the `Failure` with the
    /// verdict follows (the supervisor writes the post-mortem in between).
    Stalled(Diagnosis),
    /// A peer recovery completed: every rank holds the same state and goes on.
    Recovered {
        /// The replaced rank.
        rank: u32,
        /// The step the group goes on from.
        step: u64,
        /// From the death to the resume.
        seconds: f64,
    },
}

/// Timing and layout of one attempt, as the hub needs it.
#[derive(Debug, Clone)]
pub struct AttemptSpec {
    /// Attempt number.
    pub attempt: u32,
    /// Workers over all nodes.
    pub world_size: u32,
    /// Global ranks of this node's workers.
    pub local_ranks: Vec<u32>,
    /// A worker that said hello must send something this often.
    pub heartbeat_timeout: Duration,
    /// A worker must say hello this soon after the attempt starts (`None`: not enforced).
    pub startup_timeout: Option<Duration>,
    /// Bound on every collective and on the NCCL id.
    pub collective_timeout: Duration,
}

/// The socket, bound once per launcher and served once per attempt.
///
/// Only this launcher's workers may talk to it: the socket lives in a directory only the user
/// can enter (made 0700 when the launcher creates it), is itself 0600, and every connection's
/// peer credentials (`SO_PEERCRED`) must show this user and a process the launcher spawned (or
/// one of their descendants) — anything else is dropped with a warning before it can say hello.
#[derive(Debug)]
pub struct AgentServer {
    listener: Arc<UnixListener>,
    path: PathBuf,
    /// The private directory bind created (removed with the socket).
    created_dir: Option<PathBuf>,
    admitted: Admitted,
}

/// The processes allowed to connect: the workers this launcher spawned.
type Admitted = Arc<std::sync::Mutex<BTreeSet<u32>>>;

impl AgentServer {
    /// Binds `path` (a stale socket file left by a dead launcher is replaced). A missing parent
    /// directory is created, mode 0700; the socket is made 0600.
    pub fn bind(path: &Path) -> Result<AgentServer> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = path.parent().unwrap_or(Path::new("."));
        let created_dir = if dir.exists() {
            None
        } else {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(dir, e))?;
            Some(dir.to_owned())
        };
        if path.exists() {
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| Error::io(path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(path, e))?;
        Ok(AgentServer {
            listener: Arc::new(listener),
            path: path.to_owned(),
            created_dir,
            admitted: Admitted::default(),
        })
    }

    /// Lets process `pid` (a spawned worker) and its descendants connect.
    pub fn admit(&self, pid: u32) {
        self.admitted.lock().expect("admitted lock").insert(pid);
    }

    /// The socket path (`CONVTT_AGENT`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves one attempt until the returned handle is dropped.
    pub fn serve(
        &self,
        spec: AttemptSpec,
        cluster: Cluster,
    ) -> (Attempt, mpsc::UnboundedReceiver<AgentEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let (hub_tx, hub_rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            self.listener.clone(),
            self.admitted.clone(),
            hub_tx.clone(),
        ));
        let hub = Hub::new(spec, cluster, events, hub_tx.clone());
        tasks.spawn(hub.run(hub_rx));
        (
            Attempt {
                hub: hub_tx,
                _tasks: tasks,
            },
            rx,
        )
    }
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(d) = &self.created_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A served attempt. Dropping it stops the hub and closes every connection.
#[derive(Debug)]
pub struct Attempt {
    hub: mpsc::UnboundedSender<HubIn>,
    _tasks: JoinSet<()>,
}

impl Attempt {
    /// Asks every connected worker (and every one that connects later) to checkpoint and exit 4.
    pub fn preempt(&self, deadline: Duration) {
        let _ = self.hub.send(HubIn::Preempt(deadline));
    }

    /// Rank `rank` died (`cause`) and a replacement is being started as attempt `attempt`:
    /// the other ranks abandon their step and stand by (peer recovery).
    pub fn peer_lost(&self, rank: u32, attempt: u32, cause: &str) {
        let _ = self.hub.send(HubIn::PeerLost {
            rank,
            attempt,
            cause: cause.to_owned(),
        });
    }

    /// The attempt is failing: every connected worker is told at once (`Failed` with `reason`),
    /// so one waiting in a collective or barrier — or in NCCL, whose watchdog sees the flag —
    /// stops and exits instead of sitting out the teardown's grace period.
    pub fn abort(&self, reason: &str) {
        let _ = self.hub.send(HubIn::Abort(reason.to_owned()));
    }
}

enum HubIn {
    Connected(u64, mpsc::UnboundedSender<LauncherMsg>),
    Msg(u64, WorkerMsg),
    Closed(u64, Option<String>),
    Preempt(Duration),
    Abort(String),
    PeerLost {
        rank: u32,
        attempt: u32,
        cause: String,
    },
    Remote(OpKey, ClusterResult<Remote>),
}

enum Remote {
    Sum(Vec<f32>),
    Bytes(Vec<u8>),
    Done,
}

async fn accept_loop(
    listener: Arc<UnixListener>,
    admitted: Admitted,
    hub: mpsc::UnboundedSender<HubIn>,
) {
    // Connection tasks live in this JoinSet: aborting the accept loop closes them all.
    let mut conns = JoinSet::new();
    let mut next = 0u64;
    let uid = nix::unistd::geteuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("agent socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = stream.peer_cred().map(|c| (c.uid(), c.pid()));
        let allowed = admitted.lock().expect("admitted lock").clone();
        if let Err(why) = admissible(peer, uid, &allowed, parent_pid) {
            tracing::warn!("agent socket: refused a connection: {why}");
            drop(stream);
            continue;
        }
        next += 1;
        conns.spawn(connection(next, stream, hub.clone()));
        while conns.try_join_next().is_some() {}
    }
}

/// Whether a peer with credentials `peer` (uid, pid) may connect: this user's, and a process in
/// `admitted` or a descendant of one (`parent` gives a pid's parent).
fn admissible(
    peer: std::io::Result<(u32, Option<i32>)>,
    uid: u32,
    admitted: &BTreeSet<u32>,
    parent: impl Fn(u32) -> Option<u32>,
) -> std::result::Result<(), String> {
    let (peer_uid, pid) = peer.map_err(|e| format!("no peer credentials ({e})"))?;
    let pid = pid
        .and_then(|p| u32::try_from(p).ok())
        .ok_or("the peer's pid is unknown")?;
    if peer_uid != uid {
        return Err(format!(
            "pid {pid} runs as uid {peer_uid}, this launcher as {uid}"
        ));
    }
    let mut p = pid;
    for _ in 0..32 {
        if admitted.contains(&p) {
            return Ok(());
        }
        match parent(p) {
            Some(q) if q > 1 && q != p => p = q,
            _ => break,
        }
    }
    Err(format!(
        "pid {pid} is not a worker this launcher started (nor a child of one)"
    ))
}

/// The parent of `pid` from `/proc/<pid>/stat`.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid …: comm may hold spaces and parentheses; the last ')' ends it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

async fn connection(id: u64, stream: UnixStream, hub: mpsc::UnboundedSender<HubIn>) {
    let (mut r, mut w) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<LauncherMsg>();
    if hub.send(HubIn::Connected(id, tx)).is_err() {
        return;
    }
    let writer = async move {
        while let Some(m) = rx.recv().await {
            if w.write_all(&m.encode()).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        loop {
            let mut prefix = [0u8; 4];
            match r.read_exact(&mut prefix).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => return Some(e.to_string()),
            }
            let n = match frame_len(prefix) {
                Ok(n) => n,
                Err(e) => return Some(e.to_string()),
            };
            let mut body = vec![0u8; n];
            if let Err(e) = r.read_exact(&mut body).await {
                return Some(e.to_string());
            }
            match WorkerMsg::decode(&body) {
                Ok(m) => {
                    if hub.send(HubIn::Msg(id, m)).is_err() {
                        return None;
                    }
                }
                Err(e) => return Some(e.to_string()),
            }
        }
    };
    // The reader ends the connection; the writer ends when the hub drops its sender.
    let err = tokio::select! {
        e = reader => e,
        () = writer => None,
    };
    let _ = hub.send(HubIn::Closed(id, err));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AllReduce,
    Broadcast,
    Barrier,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AllReduce => "all_reduce",
            Kind::Broadcast => "broadcast",
            Kind::Barrier => "barrier",
        }
    }
}

struct Op {
    kind: Kind,
    /// The attempt it belongs to (its key across nodes).
    attempt: u32,
    started: Instant,
    parts: BTreeMap<u32, Vec<u8>>,
    floats: BTreeMap<u32, Vec<f32>>,
    remote: bool,
}

struct RankState {
    conn: Option<u64>,
    hello: bool,
    last_seen: Instant,
    /// When its process was started (the startup timeout counts from here).
    since: Instant,
    /// Its last heartbeat's progress.
    progress: Progress,
    /// When that progress last changed (the phase or the beat).
    progressed: Instant,
}

/// Sequence numbers of the recovery's own operations across nodes (collectives count from 1
/// after a resume and never reach them): node 0's survivors' (step, checksum) to compare with,
/// and the barrier before everyone resumes.
const RECOVERY_AGREE: u64 = u64::MAX - 1;
const RECOVERY_JOIN: u64 = u64::MAX;

/// A dead rank being replaced from its peers' memory.
struct Recovery {
    lost: u32,
    cause: String,
    started: Instant,
    /// Rank → (step, checksum) of every rank standing by.
    standby: BTreeMap<u32, (u64, u64)>,
    /// The replacement asked for the state.
    wants_state: bool,
    /// The donor was asked for it.
    asked: bool,
    /// Survivors not told `PeerLost` yet: they wait in an operation across nodes that every
    /// node had joined before the death, whose result (or cancellation) comes first — so every
    /// node's survivors end the same step the same way.
    untold: BTreeSet<u32>,
    /// The group's (step, checksum), once every node's survivors agreed on it.
    agreed: Option<(u64, u64)>,
    /// The agreement across nodes is under way.
    agreeing: bool,
    /// The barrier before the resume is under way.
    joining: bool,
}

struct Hub {
    spec: AttemptSpec,
    cluster: Cluster,
    events: mpsc::UnboundedSender<AgentEvent>,
    me: mpsc::UnboundedSender<HubIn>,
    conns: HashMap<u64, (mpsc::UnboundedSender<LauncherMsg>, Option<u32>)>,
    ranks: BTreeMap<u32, RankState>,
    ops: BTreeMap<u64, Op>,
    nccl_id: Option<Vec<u8>>,
    nccl_waiters: BTreeSet<u32>,
    nccl_since: Option<Instant>,
    nccl_remote: bool,
    preempt: Option<Duration>,
    failed: bool,
    recovery: Option<Recovery>,
}

impl Hub {
    fn new(
        spec: AttemptSpec,
        cluster: Cluster,
        events: mpsc::UnboundedSender<AgentEvent>,
        me: mpsc::UnboundedSender<HubIn>,
    ) -> Hub {
        let now = Instant::now();
        let ranks = spec
            .local_ranks
            .iter()
            .map(|&r| {
                (
                    r,
                    RankState {
                        conn: None,
                        hello: false,
                        last_seen: now,
                        since: now,
                        progress: Progress::default(),
                        progressed: now,
                    },
                )
            })
            .collect();
        Hub {
            spec,
            cluster,
            events,
            me,
            conns: HashMap::new(),
            ranks,
            ops: BTreeMap::new(),
            nccl_id: None,
            nccl_waiters: BTreeSet::new(),
            nccl_since: None,
            nccl_remote: false,
            preempt: None,
            failed: false,
            recovery: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<HubIn>) {
        let tick = (self.spec.collective_timeout / 4)
            .min(self.spec.heartbeat_timeout / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut timer = tokio::time::interval(tick);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => self.handle(m),
                    None => return,
                },
                _ = timer.tick() => self.check_timeouts(),
            }
        }
    }

    fn send_conn(&self, conn: u64, msg: LauncherMsg) {
        if let Some((tx, _)) = self.conns.get(&conn) {
            let _ = tx.send(msg);
        }
    }

    fn send_rank(&self, rank: u32, msg: LauncherMsg) {
        if let Some(c) = self.ranks.get(&rank).and_then(|r| r.conn) {
            self.send_conn(c, msg);
        }
    }

    fn fail(&mut self, msg: String) {
        tracing::error!("{msg}");
        self.failed = true;
        // Ranks standing by in a recovery wait for nothing else: tell them at once.
        if self.recovery.take().is_some() {
            let failed = LauncherMsg::Failed { msg: msg.clone() };
            for r in self.ranks.keys().copied().collect::<Vec<_>>() {
                self.send_rank(r, failed.clone());
            }
        }
        let _ = self.events.send(AgentEvent::Failure(msg));
    }

    fn handle(&mut self, m: HubIn) {
        match m {
            HubIn::Connected(id, tx) => {
                self.conns.insert(id, (tx, None));
            }
            HubIn::Closed(id, err) => {
                if let Some((_, Some(rank))) = self.conns.remove(&id) {
                    if let Some(r) = self.ranks.get_mut(&rank).filter(|r| r.conn == Some(id)) {
                        r.conn = None;
                    }
                    // Not a failure by itself: a worker killed with unread data in its socket
                    // resets the connection, and its exit is what the supervisor acts on; a
                    // live worker whose connection broke fails its next request (exit 3).
                    if let Some(e) = err {
                        tracing::warn!(rank, "agent connection broken: {e}");
                    }
                }
            }
            HubIn::PeerLost {
                rank,
                attempt,
                cause,
            } => self.peer_lost(rank, attempt, cause),
            HubIn::Abort(reason) => {
                self.failed = true;
                self.ops.clear();
                let msg = LauncherMsg::Failed { msg: reason };
                for r in self.ranks.keys().copied().collect::<Vec<_>>() {
                    self.send_rank(r, msg.clone());
                }
            }
            HubIn::Preempt(deadline) => {
                self.preempt = Some(deadline);
                let msg = LauncherMsg::Preempt {
                    deadline_ms: deadline.as_millis() as u64,
                };
                for r in self.ranks.keys().copied().collect::<Vec<_>>() {
                    self.send_rank(r, msg.clone());
                }
            }
            HubIn::Msg(id, msg) => self.message(id, msg),
            HubIn::Remote(key, res) => self.remote_done(key, res),
        }
    }

    /// One message of connection `conn`: a hello first, then the messages of its rank.
    fn message(&mut self, conn: u64, msg: WorkerMsg) {
        let rank = self.conns.get(&conn).and_then(|c| c.1);
        if let WorkerMsg::Hello {
            version,
            rank: r,
            pid,
            cpus,
            device,
        } = msg
        {
            return self.hello(conn, rank.is_some(), version, r, (pid, cpus, device));
        }
        let Some(r) = rank else {
            let msg = "say hello first".into();
            return self.send_conn(conn, LauncherMsg::Failed { msg });
        };
        if let Some(st) = self.ranks.get_mut(&r) {
            st.last_seen = Instant::now();
        }
        match msg {
            WorkerMsg::Hello { .. } => unreachable!("handled above"),
            WorkerMsg::Heartbeat(progress) => {
                if let Some(st) = self.ranks.get_mut(&r) {
                    if (progress.beat, progress.phase) != (st.progress.beat, st.progress.phase) {
                        st.progressed = Instant::now();
                    }
                    st.progress = progress;
                }
                let _ = self.events.send(AgentEvent::Progress { rank: r, progress });
            }
            WorkerMsg::CheckpointCommitted { step, path } => {
                tracing::info!(rank = r, step, "checkpoint committed: {path}");
                let _ = self.events.send(AgentEvent::Checkpoint { step, path });
            }
            WorkerMsg::Goodbye { code, reason } => {
                let event = AgentEvent::Goodbye {
                    rank: r,
                    code,
                    reason,
                };
                let _ = self.events.send(event);
            }
            WorkerMsg::NcclId(id) => self.nccl_published(r, id),
            WorkerMsg::WantNcclId => self.nccl_wanted(r),
            // During a recovery no collective can complete: the rank was told `PeerLost`,
            // which answers this request.
            WorkerMsg::AllReduce { .. }
            | WorkerMsg::Broadcast { .. }
            | WorkerMsg::Barrier { .. }
                if self.recovery.is_some() => {}
            WorkerMsg::Standby { step, checksum } => self.standby(r, step, checksum),
            WorkerMsg::WantState => self.state_wanted(r),
            WorkerMsg::State { checksum, data } => self.state_donated(r, checksum, data),
            WorkerMsg::AllReduce { seq, data } => {
                self.contribute(r, seq, Kind::AllReduce, Vec::new(), data)
            }
            WorkerMsg::Broadcast { seq, data } => {
                self.contribute(r, seq, Kind::Broadcast, data, Vec::new())
            }
            WorkerMsg::Barrier { seq } => {
                self.contribute(r, seq, Kind::Barrier, Vec::new(), Vec::new())
            }
        }
    }

    /// Rank `r` says hello on `conn` (which already greeted when `greeted`): refused (and the
    /// attempt failed) when the protocol differs or the rank is not expected here, else
    /// welcomed — and told to preempt at once if a preemption is under way.
    fn hello(
        &mut self,
        conn: u64,
        greeted: bool,
        version: u32,
        r: u32,
        (pid, cpus, device): (u32, String, String),
    ) {
        if let Some(msg) = self.refusal(greeted, version, r) {
            self.send_conn(conn, LauncherMsg::Failed { msg: msg.clone() });
            return self.fail(msg);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.1 = Some(r);
        }
        let st = self.ranks.get_mut(&r).expect("refusal checked the rank");
        st.conn = Some(conn);
        st.hello = true;
        st.last_seen = Instant::now();
        st.progressed = st.last_seen;
        st.progress = Progress::default();
        let welcome = LauncherMsg::Welcome {
            attempt: self.spec.attempt,
            world_size: self.spec.world_size,
        };
        self.send_conn(conn, welcome);
        if let Some(d) = self.preempt {
            let deadline_ms = d.as_millis() as u64;
            self.send_conn(conn, LauncherMsg::Preempt { deadline_ms });
        }
        let hello = AgentEvent::Hello {
            rank: r,
            pid,
            cpus,
            device,
        };
        let _ = self.events.send(hello);
    }

    /// Why a hello of rank `r` must be refused, if it must.
    fn refusal(&self, greeted: bool, version: u32, r: u32) -> Option<String> {
        if version != PROTOCOL_VERSION {
            return Some(format!(
                "rank {r}: agent protocol version {version}, launcher speaks {PROTOCOL_VERSION} \
                 (worker and launcher binaries are from different builds)"
            ));
        }
        if greeted {
            return Some(format!("rank {r}: second hello on one connection"));
        }
        match self.ranks.get(&r) {
            None => Some(format!(
                "rank {r} is not a worker of this node in attempt {} (local ranks {:?})",
                self.spec.attempt, self.spec.local_ranks
            )),
            Some(st) if st.hello => Some(format!("rank {r} said hello twice")),
            Some(_) => None,
        }
    }

    fn nccl_key(&self) -> OpKey {
        OpKey {
            kind: OpKind::NcclId,
            attempt: self.spec.attempt,
            seq: 0,
        }
    }

    fn nccl_published(&mut self, rank: u32, id: Vec<u8>) {
        if rank != 0 {
            let msg = format!("rank {rank} published an NCCL id; only rank 0 may");
            self.send_rank(rank, LauncherMsg::Failed { msg: msg.clone() });
            return self.fail(msg);
        }
        if self.cluster.num_nodes() > 1 && !self.nccl_remote {
            self.nccl_remote = true;
            let (cluster, me, key, bytes) = (
                self.cluster.clone(),
                self.me.clone(),
                self.nccl_key(),
                id.clone(),
            );
            tokio::spawn(async move {
                let r = cluster.bcast(key, Some(bytes)).await.map(Remote::Bytes);
                let _ = me.send(HubIn::Remote(key, r));
            });
        }
        self.set_nccl_id(id);
    }

    fn set_nccl_id(&mut self, id: Vec<u8>) {
        for w in std::mem::take(&mut self.nccl_waiters) {
            self.send_rank(w, LauncherMsg::NcclId(id.clone()));
        }
        self.nccl_since = None;
        self.nccl_id = Some(id);
    }

    fn nccl_wanted(&mut self, rank: u32) {
        if let Some(id) = &self.nccl_id {
            return self.send_rank(rank, LauncherMsg::NcclId(id.clone()));
        }
        self.nccl_waiters.insert(rank);
        self.nccl_since.get_or_insert_with(Instant::now);
        let rank0_here = self.spec.local_ranks.contains(&0);
        if !rank0_here && !self.nccl_remote {
            self.nccl_remote = true;
            let (cluster, me, key) = (self.cluster.clone(), self.me.clone(), self.nccl_key());
            tokio::spawn(async move {
                let r = cluster.bcast(key, None).await.map(Remote::Bytes);
                let _ = me.send(HubIn::Remote(key, r));
            });
        }
    }

    fn contribute(&mut self, rank: u32, seq: u64, kind: Kind, bytes: Vec<u8>, floats: Vec<f32>) {
        let attempt = self.spec.attempt;
        let op = self.ops.entry(seq).or_insert_with(|| Op {
            kind,
            attempt,
            started: Instant::now(),
            parts: BTreeMap::new(),
            floats: BTreeMap::new(),
            remote: false,
        });
        if op.kind != kind {
            let msg = format!(
                "collective #{seq}: rank {rank} called {} while others called {} (ranks must issue \
                 the same collectives in the same order)",
                kind.name(),
                op.kind.name()
            );
            return self.fail_op(seq, msg);
        }
        if op.parts.contains_key(&rank) || op.floats.contains_key(&rank) {
            return self.fail_op(
                seq,
                format!("collective #{seq}: rank {rank} contributed twice"),
            );
        }
        op.parts.insert(rank, bytes);
        op.floats.insert(rank, floats);
        if op.parts.len() == self.spec.local_ranks.len() {
            self.local_complete(seq);
        }
    }

    fn fail_op(&mut self, seq: u64, msg: String) {
        if let Some(op) = self.ops.remove(&seq) {
            for r in op.parts.keys() {
                self.send_rank(*r, LauncherMsg::Failed { msg: msg.clone() });
            }
        }
        self.fail(msg);
    }

    /// Every local rank contributed to `seq`: combine locally, then across nodes.
    fn local_complete(&mut self, seq: u64) {
        let op = self.ops.get_mut(&seq).expect("op exists");
        let key_kind;
        let local: std::result::Result<Remote, String> = match op.kind {
            Kind::AllReduce => {
                key_kind = OpKind::Sum;
                let mut it = op.floats.iter();
                let (&r0, first) = it.next().expect("at least one rank");
                let mut sum = first.clone();
                let mut bad = None;
                // Fixed order: ascending rank (BTreeMap), whatever the arrival order was.
                for (&r, v) in it {
                    if v.len() != sum.len() {
                        bad = Some(format!(
                            "all_reduce #{seq}: rank {r} sent {} values, rank {r0} sent {}",
                            v.len(),
                            sum.len()
                        ));
                        break;
                    }
                    for (s, x) in sum.iter_mut().zip(v) {
                        *s += *x;
                    }
                }
                match bad {
                    Some(m) => Err(m),
                    None => Ok(Remote::Sum(sum)),
                }
            }
            Kind::Broadcast => {
                key_kind = OpKind::Bcast;
                Ok(Remote::Bytes(op.parts.get(&0).cloned().unwrap_or_default()))
            }
            Kind::Barrier => {
                key_kind = OpKind::Barrier;
                Ok(Remote::Done)
            }
        };
        let local = match local {
            Ok(l) => l,
            Err(m) => return self.fail_op(seq, m),
        };
        if self.cluster.num_nodes() == 1 {
            return self.finish_op(seq, Ok(local));
        }
        op.remote = true;
        let key = OpKey {
            kind: key_kind,
            attempt: self.spec.attempt,
            seq,
        };
        let node0 = self.cluster.node_rank() == 0;
        let (cluster, me) = (self.cluster.clone(), self.me.clone());
        tokio::spawn(async move {
            let r = match local {
                Remote::Sum(v) => cluster.sum(key, v).await.map(Remote::Sum),
                Remote::Bytes(b) => cluster
                    .bcast(key, node0.then_some(b))
                    .await
                    .map(Remote::Bytes),
                Remote::Done => cluster.barrier(key).await.map(|()| Remote::Done),
            };
            let _ = me.send(HubIn::Remote(key, r));
        });
    }

    fn remote_done(&mut self, key: OpKey, res: ClusterResult<Remote>) {
        let pending_of_old = |h: &Hub| {
            key.kind != OpKind::NcclId
                && h.ops
                    .get(&key.seq)
                    .is_some_and(|op| op.attempt == key.attempt)
        };
        if key.attempt != self.spec.attempt && !pending_of_old(self) {
            return; // an operation of an attempt a peer recovery left behind
        }
        if matches!(key.seq, RECOVERY_AGREE | RECOVERY_JOIN) && key.kind != OpKind::NcclId {
            return self.recovery_step_done(key.seq, res);
        }
        match key.kind {
            OpKind::NcclId => match res {
                Ok(Remote::Bytes(id)) => {
                    if self.nccl_id.is_none() {
                        self.set_nccl_id(id);
                    }
                }
                Ok(_) => {}
                Err(e) => self.fail(format!("relaying the NCCL id between nodes failed: {e}")),
            },
            _ => self.finish_op(key.seq, res),
        }
    }

    fn finish_op(&mut self, seq: u64, res: ClusterResult<Remote>) {
        let Some(op) = self.ops.remove(&seq) else {
            return;
        };
        let reply = match res {
            Ok(Remote::Sum(mut v)) => {
                let n = self.spec.world_size as f32;
                for x in &mut v {
                    *x /= n;
                }
                LauncherMsg::AllReduced { seq, data: v }
            }
            Ok(Remote::Bytes(data)) => LauncherMsg::Broadcasted { seq, data },
            Ok(Remote::Done) => LauncherMsg::BarrierDone { seq },
            Err(e) if self.recovery.is_some() => {
                // Cancelled because a recovery superseded it: its ranks stand by like the rest.
                tracing::debug!("{} #{seq} across nodes dropped: {e}", op.kind.name());
                return self.tell_untold(&op);
            }
            Err(e) => {
                let msg = format!("{} #{seq} across nodes failed: {e}", op.kind.name());
                for r in op.parts.keys() {
                    self.send_rank(*r, LauncherMsg::Failed { msg: msg.clone() });
                }
                return self.fail(msg);
            }
        };
        for r in op.parts.keys() {
            self.send_rank(*r, reply.clone());
        }
        self.tell_untold(&op);
    }

    /// After `op` ended during a recovery: its ranks not yet told of the loss are told now
    /// (their next request, or the one in flight, gets the `PeerLost`).
    fn tell_untold(&mut self, op: &Op) {
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        let msg = LauncherMsg::PeerLost {
            rank: rec.lost,
            msg: rec.cause.clone(),
        };
        let now: Vec<u32> = op
            .parts
            .keys()
            .copied()
            .filter(|r| rec.untold.remove(r))
            .collect();
        for r in now {
            self.send_rank(r, msg.clone());
        }
    }

    fn check_timeouts(&mut self) {
        let now = Instant::now();
        // Collectives.
        let late: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| now.duration_since(op.started) > self.spec.collective_timeout)
            .map(|(s, _)| *s)
            .collect();
        for seq in late {
            let op = &self.ops[&seq];
            let missing = self.local_ranks_without(|r| op.parts.contains_key(r));
            let waiting: Vec<u32> = op.parts.keys().copied().collect();
            let what = if missing.is_empty() {
                "other nodes did not join".to_owned()
            } else {
                format!("{} sent nothing", ranks(&missing))
            };
            let views = self.views(now);
            let culprits: String = views
                .iter()
                .filter(|v| missing.contains(&v.rank))
                .map(|v| {
                    format!(
                        "; rank {} is in {} at step {}, no progress for {:.0} s",
                        v.rank,
                        v.phase.name(),
                        v.step,
                        v.no_progress_secs
                    )
                })
                .collect();
            let msg = format!(
                "{} #{seq} timed out after {:.1} s: {what} ({} waiting){culprits}",
                op.kind.name(),
                self.spec.collective_timeout.as_secs_f64(),
                ranks(&waiting),
            );
            let _ = self.events.send(AgentEvent::Stalled(Diagnosis {
                verdict: msg.clone(),
                ranks: views,
            }));
            self.fail_op(seq, msg);
        }
        // The NCCL id.
        if let Some(t) = self.nccl_since {
            if now.duration_since(t) > self.spec.collective_timeout {
                let msg = format!(
                    "rank 0 did not publish the NCCL id of attempt {} within {:.1} s (ranks {} waiting)",
                    self.spec.attempt,
                    self.spec.collective_timeout.as_secs_f64(),
                    join(&self.nccl_waiters.iter().copied().collect::<Vec<_>>())
                );
                for w in std::mem::take(&mut self.nccl_waiters) {
                    self.send_rank(w, LauncherMsg::Failed { msg: msg.clone() });
                }
                self.nccl_since = None;
                self.fail(msg);
            }
        }
        if self.failed {
            return; // one failure tears the attempt down; don't pile on
        }
        // A recovery has its own deadline; ranks standing by send no heartbeats.
        if let Some(rec) = &self.recovery {
            let limit = self.recovery_timeout();
            if now.duration_since(rec.started) > limit {
                let missing = self.local_ranks_without(|r| rec.standby.contains_key(r));
                let msg = format!(
                    "peer recovery of rank {} did not complete within {:.1} s (not standing by: \
                     {})",
                    rec.lost,
                    limit.as_secs_f64(),
                    ranks(&missing)
                );
                self.fail(msg);
            }
            return;
        }
        // Startup and heartbeats. A rank blocked in a collective is covered by its timeout.
        let busy: BTreeSet<u32> = self
            .ops
            .values()
            .flat_map(|op| op.parts.keys().copied())
            .collect();
        let mut problems = Vec::new();
        let mut stuck = Vec::new();
        for (&r, st) in &self.ranks {
            if !st.hello {
                if let Some(limit) = self.spec.startup_timeout {
                    if now.duration_since(st.since) > limit {
                        problems.push(format!(
                            "rank {r} did not connect to the agent socket within {:.1} s of its start",
                            limit.as_secs_f64()
                        ));
                    }
                }
            } else if st.conn.is_some() && !busy.contains(&r) && !self.nccl_waiters.contains(&r) {
                // Liveness first (no heartbeat at all), then progress (heartbeats that show
                // the training thread has not moved).
                let silent = now.duration_since(st.last_seen);
                if silent > self.spec.heartbeat_timeout {
                    problems.push(format!(
                        "rank {r} sent no heartbeat for {:.1} s: its process is frozen or its \
                         heartbeat thread died",
                        silent.as_secs_f64()
                    ));
                } else if now.duration_since(st.progressed) > self.spec.heartbeat_timeout {
                    stuck.push(r);
                }
            }
        }
        if !stuck.is_empty() {
            let ranks = self.views(now);
            let verdict = Diagnosis::verdict_for(&stuck, &ranks);
            let _ = self.events.send(AgentEvent::Stalled(Diagnosis {
                verdict: verdict.clone(),
                ranks,
            }));
            return self.fail(format!("hang: {verdict}"));
        }
        if let Some(p) = problems.into_iter().next() {
            self.fail(p);
        }
    }
}

impl Hub {
    /// This node's ranks for which `has` does not hold, ascending.
    fn local_ranks_without(&self, has: impl Fn(&u32) -> bool) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .spec
            .local_ranks
            .iter()
            .copied()
            .filter(|r| !has(r))
            .collect();
        v.sort_unstable();
        v
    }

    /// Every local rank as the hub sees it now (phase, step, silence, the collective it waits
    /// in), for a diagnosis.
    fn views(&self, now: Instant) -> Vec<RankView> {
        self.ranks
            .iter()
            .map(|(&rank, st)| {
                let waiting_in = self
                    .ops
                    .iter()
                    .find(|(_, op)| op.parts.contains_key(&rank))
                    .map(|(seq, op)| format!("{} #{seq}", op.kind.name()))
                    .or_else(|| {
                        self.nccl_waiters
                            .contains(&rank)
                            .then(|| "the NCCL id exchange".to_owned())
                    });
                RankView {
                    rank,
                    phase: st.progress.phase,
                    step: st.progress.step,
                    no_progress_secs: now.duration_since(st.progressed).as_secs_f64(),
                    silent_secs: now.duration_since(st.last_seen).as_secs_f64(),
                    waiting_in,
                }
            })
            .collect()
    }

    /// The time a peer recovery may take: the replacement's start-up plus the state transfer.
    fn recovery_timeout(&self) -> Duration {
        self.spec
            .startup_timeout
            .unwrap_or(self.spec.collective_timeout)
            .max(self.spec.collective_timeout)
    }

    /// The supervisor replaces `rank`: tell every other rank, forget the collectives in flight
    /// (they can never complete) and wait for the standbys.
    fn peer_lost(&mut self, rank: u32, attempt: u32, cause: String) {
        tracing::warn!(rank, attempt, "peer recovery: {cause}");
        self.spec.attempt = attempt;
        // Collectives still gathering locally can never complete; one whose local part is done
        // and which waits on the other nodes completes (or is cancelled) the same way on every
        // node: its ranks are told only then.
        self.ops.retain(|_, op| op.remote);
        let untold: BTreeSet<u32> = self
            .ops
            .values()
            .flat_map(|op| op.parts.keys().copied())
            .filter(|&r| r != rank)
            .collect();
        let now = Instant::now();
        if let Some(st) = self.ranks.get_mut(&rank) {
            st.hello = false;
            st.conn = None;
            st.since = now;
        }
        let msg = LauncherMsg::PeerLost {
            rank,
            msg: cause.clone(),
        };
        let tell: Vec<u32> = self
            .ranks
            .keys()
            .copied()
            .filter(|&r| r != rank && !untold.contains(&r))
            .collect();
        for r in tell {
            self.send_rank(r, msg.clone());
        }
        self.recovery = Some(Recovery {
            lost: rank,
            cause,
            started: now,
            standby: BTreeMap::new(),
            wants_state: false,
            asked: false,
            untold,
            agreed: None,
            agreeing: false,
            joining: false,
        });
    }

    fn standby(&mut self, rank: u32, step: u64, checksum: u64) {
        let Some(rec) = self.recovery.as_mut() else {
            let msg = format!("rank {rank} stood by for a peer recovery, but none is under way");
            self.send_rank(rank, LauncherMsg::Failed { msg: msg.clone() });
            return self.fail(msg);
        };
        rec.standby.insert(rank, (step, checksum));
        self.advance_recovery();
    }

    fn state_wanted(&mut self, rank: u32) {
        match self.recovery.as_mut() {
            Some(rec) if rec.lost == rank => rec.wants_state = true,
            _ => {
                let msg = format!("rank {rank} asked for a peer's state, but it replaces no one");
                self.send_rank(rank, LauncherMsg::Failed { msg: msg.clone() });
                return self.fail(msg);
            }
        }
        self.advance_recovery();
    }

    fn state_donated(&mut self, rank: u32, checksum: u64, data: Vec<u8>) {
        let Some(rec) = self.recovery.as_ref() else {
            return self.fail(format!("rank {rank} sent its state outside a recovery"));
        };
        let got = fnv1a64(&data);
        let announced = rec.standby.get(&rank).map(|s| s.1);
        if got != checksum || announced != Some(checksum) {
            return self.fail(format!(
                "peer recovery of rank {}: the state donated by rank {rank} has checksum \
                 {got:016x}, {checksum:016x} was announced",
                rec.lost
            ));
        }
        tracing::info!(
            rank,
            bytes = data.len(),
            "peer recovery: state donated to rank {}",
            rec.lost
        );
        let lost = rec.lost;
        self.send_rank(lost, LauncherMsg::State { checksum, data });
    }

    /// The recovery's steps, each taken once the one before is done: every local survivor
    /// stands by with the same state → the nodes agree on it (node 0's survivors' state, over
    /// MPI; at once on one node) → the donor hands it to the replacement (on the dead rank's
    /// node) → the replacement stands by with it → a barrier of the nodes → resume.
    fn advance_recovery(&mut self) {
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        let survivors: Vec<u32> = self
            .spec
            .local_ranks
            .iter()
            .copied()
            .filter(|&r| r != rec.lost)
            .collect();
        if !survivors.iter().all(|r| rec.standby.contains_key(r)) {
            return;
        }
        let Some(&donor) = survivors.first() else {
            let msg = format!(
                "peer recovery of rank {}: no healthy worker on this node to take its state from",
                rec.lost
            );
            return self.fail(msg);
        };
        let want = rec.standby[&donor];
        if let Some(&r) = survivors.iter().find(|r| rec.standby[*r] != want) {
            let got = rec.standby[&r];
            let msg = format!(
                "peer recovery of rank {}: the survivors' states disagree (rank {donor}: step {} \
                 checksum {:016x}; rank {r}: step {} checksum {:016x})",
                rec.lost, want.0, want.1, got.0, got.1
            );
            return self.fail(msg);
        }
        let Some(agreed) = rec.agreed else {
            if !rec.agreeing {
                rec.agreeing = true;
                let mut bytes = want.0.to_le_bytes().to_vec();
                bytes.extend_from_slice(&want.1.to_le_bytes());
                let node0 = self.cluster.node_rank() == 0;
                self.remote(OpKind::Bcast, RECOVERY_AGREE, node0.then_some(bytes));
            }
            return;
        };
        if agreed != want {
            let msg = format!(
                "peer recovery of rank {}: node 0's survivors stand at step {} checksum {:016x}, \
                 this node's at step {} checksum {:016x}",
                rec.lost, agreed.0, agreed.1, want.0, want.1
            );
            return self.fail(msg);
        }
        if self.spec.local_ranks.contains(&rec.lost) {
            if rec.wants_state && !rec.asked {
                rec.asked = true;
                return self.send_rank(donor, LauncherMsg::SendState);
            }
            let Some(&mine) = rec.standby.get(&rec.lost) else {
                return;
            };
            if mine != want {
                let msg = format!(
                    "peer recovery of rank {}: after installing the donated state it stands at \
                     step {} checksum {:016x}, the group at step {} checksum {:016x}",
                    rec.lost, mine.0, mine.1, want.0, want.1
                );
                return self.fail(msg);
            }
        }
        if !rec.joining {
            rec.joining = true;
            self.remote(OpKind::Barrier, RECOVERY_JOIN, None);
        }
    }

    /// Starts the recovery's operation `seq` across the nodes; its result comes back as a
    /// `Remote` message.
    fn remote(&self, kind: OpKind, seq: u64, bytes: Option<Vec<u8>>) {
        let key = OpKey {
            kind,
            attempt: self.spec.attempt,
            seq,
        };
        let (cluster, me) = (self.cluster.clone(), self.me.clone());
        tokio::spawn(async move {
            let r = match kind {
                OpKind::Barrier => cluster.barrier(key).await.map(|()| Remote::Done),
                _ => cluster.bcast(key, bytes).await.map(Remote::Bytes),
            };
            let _ = me.send(HubIn::Remote(key, r));
        });
    }

    /// A recovery operation across the nodes is done.
    fn recovery_step_done(&mut self, seq: u64, res: ClusterResult<Remote>) {
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        match (seq, res) {
            (RECOVERY_AGREE, Ok(Remote::Bytes(b))) if b.len() == 16 => {
                let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
                rec.agreed = Some((word(0), word(8)));
                self.advance_recovery();
            }
            (RECOVERY_JOIN, Ok(Remote::Done)) => self.resume(),
            (_, Err(e)) => {
                let lost = rec.lost;
                self.fail(format!(
                    "peer recovery of rank {lost} across nodes failed: {e}"
                ));
            }
            (_, Ok(_)) => {
                let lost = rec.lost;
                self.fail(format!(
                    "peer recovery of rank {lost}: a malformed agreement between nodes"
                ));
            }
        }
    }

    /// Every node is ready: every local rank goes on (collectives count from 1 again).
    fn resume(&mut self) {
        let Some(rec) = self.recovery.take() else {
            return;
        };
        let seconds = rec.started.elapsed().as_secs_f64();
        let step = rec.agreed.map_or(0, |a| a.0);
        let resume = LauncherMsg::Resume {
            attempt: self.spec.attempt,
            lost_rank: rec.lost,
            cause: rec.cause.clone(),
            millis: (seconds * 1000.0) as u64,
        };
        let now = Instant::now();
        for st in self.ranks.values_mut() {
            st.last_seen = now;
            st.progressed = now;
        }
        for r in self.spec.local_ranks.clone() {
            self.send_rank(r, resume.clone());
        }
        let _ = self.events.send(AgentEvent::Recovered {
            rank: rec.lost,
            step,
            seconds,
        });
    }
}

/// `rank 1` or `ranks 1, 2`.
fn ranks(v: &[u32]) -> String {
    format!("rank{} {}", if v.len() > 1 { "s" } else { "" }, join(v))
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::thread;

    use convtt_core::protocol::AgentClient;
    use convtt_core::{AgentError, WorkerDevice};

    use super::*;

    fn socket(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "convtt-agent-test-{tag}-{}.sock",
            std::process::id()
        ))
    }

    fn spec(n: u32, timeout_ms: u64) -> AttemptSpec {
        AttemptSpec {
            attempt: 3,
            world_size: n,
            local_ranks: (0..n).collect(),
            heartbeat_timeout: Duration::from_secs(60),
            startup_timeout: None,
            collective_timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn client(path: &Path, rank: u32) -> AgentClient {
        AgentClient::connect(path, rank, WorkerDevice::Cpu, "0", Duration::from_secs(20)).unwrap()
    }

    /// Runs `body(rank, client)` on `n` std threads against a real hub; returns their results
    /// and the hub's events, collected until `until` holds for them. The hub handles a client's
    /// last messages after the client's thread may have returned, so the events are awaited
    /// (bounded by a generous deadline), never sampled.
    fn with_clients<T: Send + 'static>(
        tag: &str,
        spec: AttemptSpec,
        until: impl Fn(&[AgentEvent]) -> bool,
        body: impl Fn(u32, AgentClient) -> T + Send + Sync + 'static,
    ) -> (Vec<T>, Vec<AgentEvent>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let path = socket(tag);
        let n = spec.local_ranks.len() as u32;
        let server = rt.block_on(async { AgentServer::bind(&path) }).unwrap();
        // The clients here are threads of this test process.
        server.admit(std::process::id());
        let (attempt, mut events) = rt.block_on(async { server.serve(spec, Cluster::Single) });
        let body = Arc::new(body);
        let handles: Vec<_> = (0..n)
            .map(|r| {
                let (p, b) = (path.clone(), body.clone());
                thread::spawn(move || b(r, client(&p, r)))
            })
            .collect();
        let out = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut evs = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !until(&evs) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rt.block_on(async { tokio::time::timeout(left, events.recv()).await }) {
                Ok(Some(e)) => evs.push(e),
                _ => panic!("the hub's events never satisfied the test: {evs:?}"),
            }
        }
        while let Ok(e) = events.try_recv() {
            evs.push(e);
        }
        drop(attempt);
        drop(server);
        (out, evs)
    }

    #[test]
    fn all_reduce_mean_sums_in_rank_order_whatever_the_arrival_order() {
        // Values chosen so that f32 addition order matters: 1e8 + 1 == 1e8 in f32.
        let contrib = [
            vec![1e8f32, 1.0],
            vec![1.0, 2.0],
            vec![-1e8, 3.0],
            vec![1.0, 4.0],
        ];
        let c = contrib.clone();
        let (res, _) = with_clients(
            "ar",
            spec(4, 10_000),
            |_| true,
            move |r, mut cl| {
                // Later ranks arrive first.
                thread::sleep(Duration::from_millis(60 * (3 - r as u64)));
                let mut buf = c[r as usize].clone();
                cl.all_reduce_mean(&mut buf).unwrap();
                let mut second = vec![r as f32; 3];
                cl.all_reduce_mean(&mut second).unwrap();
                (cl.attempt(), cl.world_size(), buf, second)
            },
        );
        // Rank order: ((1e8 + 1) + -1e8) + 1 = 1 in f32 (arrival order would give 2).
        let want0 = (((contrib[0][0] + contrib[1][0]) + contrib[2][0]) + contrib[3][0]) / 4.0;
        assert_eq!(want0, 0.25);
        for (attempt, world, buf, second) in &res {
            assert_eq!((*attempt, *world), (3, 4));
            assert_eq!(buf[0].to_bits(), want0.to_bits());
            assert_eq!(buf[1], 2.5);
            assert_eq!(second, &vec![1.5; 3]);
        }
    }

    #[test]
    fn broadcast_barrier_and_nccl_id_relay() {
        let goodbyes = |evs: &[AgentEvent]| {
            evs.iter()
                .filter(|e| matches!(e, AgentEvent::Goodbye { .. }))
                .count()
                == 3
        };
        let (res, events) = with_clients("bc", spec(3, 10_000), goodbyes, |r, mut cl| {
            let mut buf = if r == 0 { *b"hello" } else { [0u8; 5] };
            cl.broadcast(&mut buf).unwrap();
            cl.barrier().unwrap();
            let id = if r == 0 {
                let id: Vec<u8> = (0..128).collect();
                cl.send_nccl_id(&id).unwrap();
                id
            } else {
                cl.recv_nccl_id().unwrap()
            };
            cl.heartbeat(&Progress {
                step: 7,
                ..Progress::default()
            })
            .unwrap();
            cl.barrier().unwrap();
            cl.goodbye(0, "done").unwrap();
            (buf, id)
        });
        for (buf, id) in &res {
            assert_eq!(buf, b"hello");
            assert_eq!(id, &(0..128).collect::<Vec<u8>>());
        }
        let hellos = events
            .iter()
            .filter(|e| matches!(e, AgentEvent::Hello { .. }))
            .count();
        assert_eq!(hellos, 3);
        assert!(events
            .iter()
            .any(|e| matches!(e, AgentEvent::Progress { progress, .. } if progress.step == 7)));
        assert!(events
            .iter()
            .filter(|e| matches!(e, AgentEvent::Goodbye { .. }))
            .all(|e| matches!(e, AgentEvent::Goodbye { code: 0, .. })));
        assert!(
            !events.iter().any(|e| matches!(e, AgentEvent::Failure(_))),
            "{events:?}"
        );
    }

    #[test]
    fn a_rank_that_never_contributes_times_out_by_name() {
        let failed = |evs: &[AgentEvent]| evs.iter().any(|e| matches!(e, AgentEvent::Failure(_)));
        let (res, events) = with_clients("to", spec(3, 300), failed, |r, mut cl| {
            if r == 2 {
                // Alive but never joins the collective; wait for the others' verdict.
                thread::sleep(Duration::from_millis(900));
                return None;
            }
            let mut buf = vec![1.0f32];
            Some(cl.all_reduce_mean(&mut buf).unwrap_err())
        });
        for e in res.iter().take(2) {
            let e = e.as_ref().unwrap();
            assert!(matches!(e, AgentError::Launcher(_)), "{e:?}");
            let text = e.to_string();
            assert!(text.contains("all_reduce #1 timed out"), "{text}");
            assert!(text.contains("rank 2 sent nothing"), "{text}");
        }
        let failure = events.iter().find_map(|e| match e {
            AgentEvent::Failure(m) => Some(m.clone()),
            _ => None,
        });
        assert!(failure.unwrap().contains("rank 2 sent nothing"));
    }

    #[test]
    fn the_client_times_out_on_a_silent_launcher_and_sees_preempt() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let path = socket("pre");
        let server = rt.block_on(async { AgentServer::bind(&path) }).unwrap();
        // The clients here are threads of this test process.
        server.admit(std::process::id());
        let (attempt, _events) =
            rt.block_on(async { server.serve(spec(2, 60_000), Cluster::Single) });
        let mut cl =
            AgentClient::connect(&path, 1, WorkerDevice::Cpu, "0", Duration::from_millis(300))
                .unwrap();
        assert!(!cl.preempt_requested());
        attempt.preempt(Duration::from_secs(5));
        // Rank 0 never joins: the client's own timeout bounds the wait and names the rank.
        let e = cl.barrier().unwrap_err();
        assert!(matches!(e, AgentError::Timeout { rank: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("rank 1: no reply to barrier"), "{e}");
        assert!(cl.preempt_requested());
        // Connecting to a socket that never appears fails within the timeout.
        let e = AgentClient::connect(
            &socket("none"),
            0,
            WorkerDevice::Cpu,
            "0",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(e, AgentError::Connect { .. }), "{e:?}");
    }

    #[test]
    fn strangers_are_refused() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let path = socket("str");
        let server = rt.block_on(async { AgentServer::bind(&path) }).unwrap();
        // The clients here are threads of this test process.
        server.admit(std::process::id());
        let (_attempt, mut events) =
            rt.block_on(async { server.serve(spec(2, 60_000), Cluster::Single) });
        let e = AgentClient::connect(&path, 7, WorkerDevice::Cpu, "0", Duration::from_secs(5))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("rank 7 is not a worker of this node"),
            "{e}"
        );
        let _one = client(&path, 1);
        let e = AgentClient::connect(&path, 1, WorkerDevice::Cpu, "0", Duration::from_secs(5))
            .unwrap_err();
        assert!(e.to_string().contains("rank 1 said hello twice"), "{e}");
        let ev = rt.block_on(async { events.recv().await }).unwrap();
        assert!(matches!(ev, AgentEvent::Failure(_)), "{ev:?}");
    }

    /// A process the launcher did not start is dropped before it can say hello, however well
    /// it speaks the protocol; the socket is 0600 in a 0700 directory made for it.
    #[test]
    fn processes_the_launcher_did_not_start_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("convtt-agent-priv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("agent.sock");
        let server = rt.block_on(async { AgentServer::bind(&path) }).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&path)), (0o700, 0o600));
        let (_attempt, _events) =
            rt.block_on(async { server.serve(spec(2, 60_000), Cluster::Single) });
        // Nobody admitted: this test process is a stranger.
        let e = AgentClient::connect(&path, 1, WorkerDevice::Cpu, "0", Duration::from_secs(5))
            .unwrap_err();
        assert!(!matches!(e, AgentError::Connect { .. }), "{e:?}");
        drop(server);
        assert!(!dir.exists(), "the private directory goes with the socket");
    }

    #[test]
    fn admission_needs_this_user_and_a_spawned_process_or_its_descendant() {
        let admitted: BTreeSet<u32> = [100].into_iter().collect();
        // 300 → 200 → 100 (spawned) → 1.
        let parent = |p: u32| match p {
            300 => Some(200),
            200 => Some(100),
            100 | 999 => Some(1),
            _ => None,
        };
        let ok = |uid, pid| admissible(Ok((uid, pid)), 1000, &admitted, parent);
        assert!(ok(1000, Some(100)).is_ok());
        assert!(ok(1000, Some(300)).is_ok(), "a descendant of a worker");
        let e = ok(1000, Some(999)).unwrap_err();
        assert!(e.contains("pid 999 is not a worker"), "{e}");
        let e = ok(0, Some(100)).unwrap_err();
        assert!(e.contains("uid 0"), "{e}");
        assert!(ok(1000, None).is_err());
        let no_cred = admissible(Err(std::io::Error::other("x")), 1000, &admitted, parent);
        assert!(no_cred.unwrap_err().contains("no peer credentials"));
    }

    /// A survivor's attempt after the resume and its first all-reduce, or its error.
    type Survivor = std::result::Result<(u32, Vec<f32>), String>;
    /// The replacement's received state and attempt, or its error.
    type Replacement = std::result::Result<(Vec<u8>, u32), String>;

    /// A peer recovery through the real hub: ranks 0 and 1 wait in an all-reduce rank 2 never
    /// joins; rank 2 is declared lost; the survivors stand by with `checksums`, a replacement
    /// rank 2 asks for the state. Returns the survivors' and the replacement's outcomes and the
    /// hub's events.
    fn recovery(tag: &str, checksums: [u64; 2]) -> (Vec<Survivor>, Replacement, Vec<AgentEvent>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let path = socket(tag);
        let server = rt.block_on(async { AgentServer::bind(&path) }).unwrap();
        server.admit(std::process::id());
        let (attempt, mut events) =
            rt.block_on(async { server.serve(spec(3, 30_000), Cluster::Single) });
        let survivors: Vec<_> = (0..2u32)
            .map(|r| {
                let p = path.clone();
                thread::spawn(move || {
                    let mut cl = client(&p, r);
                    let mut buf = vec![r as f32; 2];
                    match cl.all_reduce_mean(&mut buf) {
                        Err(AgentError::PeerLost { rank: 2, .. }) => {}
                        other => return Err(format!("expected PeerLost, got {other:?}")),
                    }
                    let mut donate = || b"state".to_vec();
                    let resumed = cl
                        .standby(7, checksums[r as usize], &mut donate)
                        .map_err(|e| e.to_string())?;
                    // Sequence numbers start again: a fresh all-reduce of all three ranks.
                    let mut buf = vec![r as f32; 2];
                    cl.all_reduce_mean(&mut buf).map_err(|e| e.to_string())?;
                    Ok((resumed.attempt, buf))
                })
            })
            .collect();
        // Both survivors are in the all-reduce once their hellos are in and a moment passed.
        let mut evs = Vec::new();
        while evs
            .iter()
            .filter(|e| matches!(e, AgentEvent::Hello { .. }))
            .count()
            < 2
        {
            evs.push(rt.block_on(events.recv()).unwrap());
        }
        thread::sleep(Duration::from_millis(300));
        attempt.peer_lost(2, 4, "killed by signal 9");
        let p = path.clone();
        let replacement = thread::spawn(move || {
            let mut cl = client(&p, 2);
            let state = cl.fetch_state().map_err(|e| e.to_string())?;
            let sum = fnv1a64(&state);
            let resumed = cl
                .standby(7, sum, &mut Vec::new)
                .map_err(|e| e.to_string())?;
            let mut buf = vec![2.0f32; 2];
            cl.all_reduce_mean(&mut buf).map_err(|e| e.to_string())?;
            Ok((state, resumed.attempt))
        });
        let out: Vec<_> = survivors.into_iter().map(|h| h.join().unwrap()).collect();
        let rep = replacement.join().unwrap();
        while let Ok(Some(e)) = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        }) {
            evs.push(e);
        }
        drop(attempt);
        drop(server);
        (out, rep, evs)
    }

    #[test]
    fn a_lost_rank_is_replaced_with_the_donors_state_and_collectives_start_again() {
        let sum = fnv1a64(b"state");
        let (survivors, replacement, events) = recovery("peer", [sum, sum]);
        for s in &survivors {
            let (attempt, buf) = s.as_ref().unwrap();
            assert_eq!(*attempt, 4);
            assert_eq!(buf, &vec![1.0, 1.0], "(0 + 1 + 2) / 3");
        }
        let (state, attempt) = replacement.unwrap();
        assert_eq!((state.as_slice(), attempt), (&b"state"[..], 4));
        assert!(events.iter().any(|e| matches!(
            e,
            AgentEvent::Recovered {
                rank: 2,
                step: 7,
                ..
            }
        )));
    }

    #[test]
    fn survivors_whose_states_disagree_fail_the_recovery() {
        let sum = fnv1a64(b"state");
        let (survivors, replacement, events) = recovery("peer-bad", [sum, sum ^ 1]);
        for s in &survivors {
            let e = s.as_ref().unwrap_err();
            assert!(e.contains("the survivors' states disagree"), "{e}");
        }
        assert!(replacement.is_err());
        assert!(events
            .iter()
            .any(|e| matches!(e, AgentEvent::Failure(m) if m.contains("rank 0: step 7 checksum"))));
    }
}
