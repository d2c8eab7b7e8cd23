//! The messages of the agent channel, worker → launcher and launcher → worker.

/// Where a worker's training thread is, reported with every heartbeat (the launcher names
/// the phase of a hang with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Connecting, building the model, opening the data.
    #[default]
    Startup,
    /// Waiting for the next batch.
    Data,
    /// The forward pass and the loss.
    Forward,
    /// The backward pass.
    Backward,
    /// The gradient all-reduce (waiting for the other ranks).
    AllReduce,
    /// Clipping and the optimizer update.
    Optimizer,
    /// Validation.
    Validation,
    /// Writing this rank's checkpoint shard.
    CheckpointWrite,
    /// Committing a checkpoint (barriers, verification).
    CheckpointCommit,
    /// Standing by in a peer recovery.
    Recovery,
    /// After the last step: final validation, checkpoint, summary, plots.
    Finish,
}

impl Phase {
    /// Every phase, in wire order.
    pub const ALL: [Phase; 11] = [
        Phase::Startup,
        Phase::Data,
        Phase::Forward,
        Phase::Backward,
        Phase::AllReduce,
        Phase::Optimizer,
        Phase::Validation,
        Phase::CheckpointWrite,
        Phase::CheckpointCommit,
        Phase::Recovery,
        Phase::Finish,
    ];

    /// Its name in messages and post-mortems.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Startup => "startup",
            Phase::Data => "data loading",
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::AllReduce => "all-reduce",
            Phase::Optimizer => "optimizer",
            Phase::Validation => "validation",
            Phase::CheckpointWrite => "checkpoint write",
            Phase::CheckpointCommit => "checkpoint commit",
            Phase::Recovery => "peer recovery",
            Phase::Finish => "finish",
        }
    }

    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        Phase::ALL.iter().position(|p| *p == self).unwrap_or(0) as u8
    }

    /// From the wire byte (an unknown byte reads as `Startup`).
    pub fn from_u8(b: u8) -> Phase {
        Phase::ALL.get(b as usize).copied().unwrap_or_default()
    }
}

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
    /// Where the training thread is.
    pub phase: Phase,
    /// Bumped at every phase change and every batch: the launcher tells a hang (no progress)
    /// from a dead worker (no heartbeat) with it.
    pub beat: u64,
    /// Mean compute time of the last steps (forward, backward, optimizer; collective waits
    /// excluded), milliseconds; 0 until a step was timed. Straggler detection compares it.
    pub compute_ms: f32,
}

/// Worker → launcher.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerMsg {
    /// First message on a connection.
    Hello {
        /// [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION) of the worker.
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
    /// Peer recovery: this worker holds the group's shared state at its recovery point (a
    /// survivor after [`LauncherMsg::PeerLost`], or a replacement once it installed
    /// [`LauncherMsg::State`]). Answered by [`LauncherMsg::SendState`] (the donor only), then
    /// [`LauncherMsg::Resume`] — or `Failed`.
    Standby {
        /// Optimizer steps done at the recovery point.
        step: u64,
        /// FNV-1a 64 of the serialised shared state; every rank's must agree.
        checksum: u64,
    },
    /// The donor's shared state, asked for by [`LauncherMsg::SendState`]. No reply.
    State {
        /// FNV-1a 64 of `data`.
        checksum: u64,
        /// The serialised state.
        data: Vec<u8>,
    },
    /// A replacement asks for the shared state; answered by [`LauncherMsg::State`].
    WantState,
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
    /// A peer died and is being replaced: abandon the step in flight (its collectives will
    /// never complete), go back to the recovery point and send [`WorkerMsg::Standby`].
    PeerLost {
        /// The dead rank.
        rank: u32,
        /// How it died.
        msg: String,
    },
    /// You are the donor: send your shared state ([`WorkerMsg::State`]).
    SendState,
    /// The donor's shared state, for a replacement.
    State {
        /// FNV-1a 64 of `data`.
        checksum: u64,
        /// The serialised state.
        data: Vec<u8>,
    },
    /// Every rank holds the same state: go on from the recovery point. Collective sequence
    /// numbers start again from 1.
    Resume {
        /// The new attempt number.
        attempt: u32,
        /// The rank that was replaced.
        lost_rank: u32,
        /// How it died.
        cause: String,
        /// Milliseconds from the death to this message.
        millis: u64,
    },
}
