//! The messages of the agent channel, worker → launcher and launcher → worker.

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
