//! The trainer as a value: the task and its flat parameter buffer, the schedules, the cursor,
//! the checkpoint in flight, the metrics log and the throughput window — and the loop that
//! moves them forward one step at a time.
//!
//! Rank roles: every rank loads its share of the data, computes gradients and steps (all ranks
//! hold identical parameters, checked every `train.param_check_every` steps); every rank writes
//! its checkpoint shard; only rank 0 commits checkpoints and writes `metrics.jsonl` and
//! `summary.toml`. Barriers surround checkpoint commits.

use std::collections::BTreeMap;
use std::time::Instant;

use convtt_common::config::ValidConfig;
use convtt_common::model::{scheduled_sampling_mask, ComputeMode, MaskRng};
use convtt_core::RunSummary;
use serde_json::json;
use tch::nn::VarStore;

use super::activity;
use super::faults::Faults;
use super::metrics_log::MetricsLog;
use super::optim::FlatParams;
use super::recovery::{self, Header, PeerState, Stage};
use super::save::{begin_save, check_space, finish_save, restore, Cursor, PendingSave};
use super::schedule::Schedules;
use super::step::{mask_seed, step_with_loss, train_step, StepOutcome};
use super::task::Task;
use super::validate::{mean, validate, Validation};
use crate::checkpoint::{self as ckpt, Resume};
use crate::data::{self, Batch, Loader};
use crate::dist::parameter_drift;
use crate::error::{Error, Result};
use crate::runtime::Runtime;
use convtt_core::fault::Phase;
use convtt_core::protocol::Phase as Beacon;

/// The data a run reads and how long it runs.
pub struct Plan {
    train: Loader,
    valid: Option<Loader>,
    steps_per_epoch: u64,
    /// Steps of the whole run (`train.epochs` × steps per epoch, capped by `train.max_steps`).
    total: u64,
}

/// Samples, loss and steps since the last progress line.
struct Window {
    since: Instant,
    samples: u64,
    loss_sum: f64,
    steps: u64,
}

impl Window {
    fn new() -> Self {
        Window {
            since: Instant::now(),
            samples: 0,
            loss_sum: 0.0,
            steps: 0,
        }
    }

    /// (samples per second, mean loss) since the last call, and a fresh window.
    fn take(&mut self) -> (f64, f64) {
        let secs = self.since.elapsed().as_secs_f64().max(1e-9);
        let out = (
            self.samples as f64 / secs,
            self.loss_sum / self.steps.max(1) as f64,
        );
        *self = Window::new();
        out
    }
}

/// One step's result with the schedules' values it used.
struct StepReport {
    outcome: StepOutcome,
    lr: f64,
    ss_ratio: f64,
}

/// Everything training changes, and the loop.
pub struct Trainer<'c> {
    cfg: &'c ValidConfig,
    task: Task,
    flat: FlatParams,
    sched: Schedules,
    cur: Cursor,
    /// Where the loop stands (what a recovery redoes).
    stage: Stage,
    /// At most one checkpoint in flight; it is committed at the next step boundary.
    pending: Option<PendingSave>,
    log: MetricsLog,
    window: Window,
    last_saved: u64,
    last_loss: f64,
    /// The last step asked for a preemption.
    preempt: bool,
    /// A checkpoint in flight was abandoned in a recovery: the next `Save` starts one.
    owe_checkpoint: bool,
    /// The current step's validation summary, for a checkpoint's manifest.
    valid_metrics: Option<BTreeMap<String, f64>>,
    /// Injected faults (`CONVTT_FAULT`), for rehearsals and tests.
    faults: Faults,
    _vs: VarStore,
}

/// The prediction strip of the first validation clip (inputs, ground truth, prediction) as a
/// PNG with its `[width, height, channels]`, for TensorBoard. A failure is a warning: the run
/// goes on without the image.
fn tensorboard_strip(
    cfg: &ValidConfig,
    net: &convtt_common::model::Network,
) -> Option<(Vec<u8>, [usize; 3])> {
    let d = &cfg.data;
    let clip = crate::eval::strip::ClipPrediction::new(net, d, &d.valid_split, 0, d.future_frames)
        .map_err(|e| tracing::warn!("TensorBoard image: {e}"))
        .ok()?;
    let (px, w, h, c) = clip.strip();
    let png = convtt_core::plot::encode_png(&px, w, h, c)
        .map_err(|e| tracing::warn!("TensorBoard image: {e}"))
        .ok()?;
    Some((png, [w, h, c]))
}

/// A validation's summary as a checkpoint manifest records it.
fn manifest_metrics(v: &Validation) -> BTreeMap<String, f64> {
    v.summary()
        .into_iter()
        .map(|(m, x)| (m.valid_name(), x))
        .collect()
}

impl<'c> Trainer<'c> {
    /// Prepares the run directory, builds the task (seeded), moves its parameters into one flat
    /// buffer, makes every rank start from rank 0's values and restores the checkpoint that
    /// `resume` names, if any. A replacement worker (peer recovery) instead takes the group's
    /// state from a healthy peer and stands by with it until the group resumes.
    pub fn new(cfg: &'c ValidConfig, rt: &mut Runtime, resume: &Resume) -> Result<Self> {
        let ckpt_root = rt.run.checkpoints();
        let replacing = rt.replacing();
        if rt.rank() == 0 {
            for d in [rt.run.path(), ckpt_root.as_path()] {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
            if !replacing {
                ckpt::remove_stale_tmp(&ckpt_root);
            }
            if !rt.run.config().exists() {
                convtt_common::fsutil::write_atomic(&rt.run.config(), cfg.to_toml().as_bytes())?;
            }
        }
        if !replacing {
            rt.coll.barrier()?;
        }
        tch::manual_seed(cfg.train.seed as i64);
        let vs = VarStore::new(rt.device);
        let task = Task::new(&vs, cfg)?;
        let mut flat = FlatParams::new(&vs);
        if !replacing {
            rt.coll.broadcast(&mut flat.params)?;
        }
        if rt.rank() == 0 {
            check_space(cfg, rt, flat.numel());
        }
        let faults = Faults::from_env(rt)?;
        let mut t = Trainer {
            cfg,
            task,
            flat,
            sched: Schedules::new(&cfg.optim),
            cur: Cursor::default(),
            stage: Stage::Top,
            pending: None,
            log: MetricsLog::with_tensorboard(&rt.run, rt.rank(), cfg.train.tensorboard)?,
            window: Window::new(),
            last_saved: 0,
            last_loss: f64::NAN,
            preempt: false,
            owe_checkpoint: false,
            valid_metrics: None,
            faults,
            _vs: vs,
        };
        if replacing {
            let bytes = rt.coll.fetch_state()?;
            t.install(rt, &bytes)?;
            let step = t.cur.step;
            t.faults.hit(rt, Phase::Recovery, step, &mut t.flat);
            tracing::info!(
                step = t.cur.step,
                stage = ?t.stage,
                "took the group's state from a peer ({} bytes)",
                bytes.len()
            );
            t.stand_by(rt)?;
        } else if let Some((dir, m)) = ckpt::resolve(&ckpt_root, resume)? {
            let (state, at) = restore(cfg, &dir, &m, &mut t.flat)?;
            t.sched = state.schedules;
            if let (Some(sc), Some(saved)) = (rt.scaler.as_mut(), state.loss_scale) {
                *sc = saved;
            }
            t.cur = at;
            t.last_saved = t.cur.step;
            tracing::info!(step = t.cur.step, "resumed from {}", dir.display());
        }
        Ok(t)
    }

    /// The loaders (training, and validation when the split has clips) and the run's length.
    pub fn plan(&self, rt: &Runtime) -> Result<Plan> {
        let cfg = self.cfg;
        let at = rt.placement();
        let data_cfg = self.task.data_config(cfg);
        let train = data::train_loader(&data_cfg, cfg.train.seed, at)?;
        let steps_per_epoch = train.steps() as u64;
        if steps_per_epoch == 0 {
            return Err(Error::Usage(format!(
                "{}: too few training clips for one batch of {} on each of {} workers",
                cfg.data.dataset,
                cfg.data.batch_size / at.world,
                at.world
            )));
        }
        let frames = self.task.valid_frames(cfg);
        let valid = match data::eval_loader(
            &data_cfg,
            &cfg.data.valid_split,
            cfg.data.max_valid_clips,
            frames,
            at,
        ) {
            Ok(l) if l.steps() > 0 => Some(l),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("no validation: {e}");
                None
            }
        };
        let mut total = cfg.train.epochs as u64 * steps_per_epoch;
        if cfg.train.max_steps > 0 {
            total = total.min(cfg.train.max_steps);
        }
        if rt.rank() == 0 {
            tracing::info!(
                world = at.world,
                steps_per_epoch,
                total_steps = total,
                params = self.flat.numel(),
                "training {} on {:?}",
                cfg.launch.name,
                rt.device
            );
        }
        Ok(Plan {
            train,
            valid,
            steps_per_epoch,
            total,
        })
    }

    /// Trains to the end of `plan`: steps, progress lines, parameter checks, validation,
    /// checkpoints; a preemption commits a checkpoint and ends with [`Error::Preempted`].
    ///
    /// When a peer dies and the launcher replaces it ([`Error::PeerLost`]), the stage in
    /// flight is abandoned, this rank stands by with its state ([`Trainer::stand_by`]) and the
    /// loop goes on from the same stage once the group is whole again.
    pub fn run(&mut self, rt: &mut Runtime, plan: &Plan) -> Result<()> {
        // This (the training) thread computes as `[train]` says (precision, fused update, cuDNN).
        let _compute = ComputeMode::for_config(&self.cfg.train, &self.cfg.model, rt.device).enter();
        loop {
            match self.advance(rt, plan) {
                Err(Error::PeerLost(why)) => {
                    tracing::warn!(step = self.cur.step, stage = ?self.stage, "{why}");
                    self.abandon_pending();
                    self.stand_by(rt)?;
                }
                done => return done,
            }
        }
    }

    /// Runs the loop's stages from `self.stage` to the end of training. A stage is left (the
    /// next one set) only once its work is done, so an error leaves the stage to redo.
    fn advance(&mut self, rt: &mut Runtime, plan: &Plan) -> Result<()> {
        let mut batches = None;
        loop {
            let next = match self.stage {
                Stage::Top => {
                    let going =
                        self.cur.epoch < self.cfg.train.epochs as u64 && self.cur.step < plan.total;
                    if going {
                        Stage::Step
                    } else {
                        Stage::Finish
                    }
                }
                Stage::Step => {
                    rt.tracker.phase(Beacon::Data);
                    self.faults
                        .hit(rt, Phase::Data, self.cur.step, &mut self.flat);
                    let (epoch, skip) = (self.cur.epoch, self.cur.batches_done as usize);
                    let it = batches.get_or_insert_with(|| plan.train.epoch(epoch).skip(skip));
                    match it.next() {
                        None => Stage::EndEpoch,
                        Some(batch) => {
                            let batch = batch?;
                            let report = self.step(rt, batch, plan)?;
                            self.progress(rt, &report, plan.total);
                            self.log.check()?;
                            self.preempt = report.outcome.preempt;
                            self.valid_metrics = None;
                            Stage::Check
                        }
                    }
                }
                Stage::Check => {
                    self.check_parameters(rt)?;
                    Stage::Validate
                }
                Stage::Validate => {
                    let every = self.cfg.train.valid_every;
                    if let Some(v) = &plan.valid {
                        if every > 0 && self.cur.step.is_multiple_of(every) {
                            self.faults
                                .hit(rt, Phase::Validation, self.cur.step, &mut self.flat);
                            let valid = self.validate(rt, v)?;
                            self.valid_metrics = Some(manifest_metrics(&valid));
                        }
                    }
                    Stage::Commit
                }
                Stage::Commit => {
                    self.commit_pending(rt)?;
                    Stage::Save
                }
                Stage::Save => {
                    let every = self.cfg.checkpoint.every_steps;
                    let due = every > 0 && self.cur.step.is_multiple_of(every);
                    if due || self.preempt || self.owe_checkpoint {
                        self.start_checkpoint(rt);
                    }
                    if self.preempt {
                        self.commit_pending(rt)?;
                        self.log
                            .write(json!({"kind": "preempt", "step": self.cur.step,
                            "attempt": rt.attempt()}));
                        return Err(Error::Preempted(self.cur.step));
                    }
                    // Stop mid-epoch at the step limit; at an epoch's last batch the epoch
                    // ends normally.
                    if self.cur.step >= plan.total && self.cur.batches_done < plan.steps_per_epoch {
                        Stage::Finish
                    } else {
                        Stage::Step
                    }
                }
                Stage::EndEpoch => {
                    self.end_epoch(rt, plan)?;
                    batches = None;
                    Stage::Top
                }
                Stage::Finish => return self.finish(rt, plan),
            };
            self.stage = next;
        }
    }

    /// One optimizer step on `batch` with this step's learning rate and sampling ratio.
    fn step(&mut self, rt: &mut Runtime, batch: Batch, plan: &Plan) -> Result<StepReport> {
        // Compute time: from here to the end of the step, less the all-reduce's wall time (an
        // injected `slow` fault counts as compute, as a slow rank's own work would).
        let started = Instant::now();
        self.faults
            .hit(rt, Phase::Forward, self.cur.step, &mut self.flat);
        let cfg = self.cfg;
        let (rank, world) = (rt.rank(), rt.world());
        let lr = self.sched.lr_at(&cfg.optim, self.cur.step, plan.total);
        let ss_ratio = self
            .sched
            .ss_ratio_at(&cfg.optim, self.cur.step, plan.total);
        let clips = batch.clips;
        let mut rng = MaskRng::new(mask_seed(cfg.train.seed, self.cur.step, rank));
        let mask = scheduled_sampling_mask(
            &mut rng,
            clips.size()[0] as usize,
            cfg.data.future_frames,
            ss_ratio,
        );
        // A pause (the sweep's early stopping) ends the run like a preemption, after this
        // step's validation and checkpoint.
        let pause = cfg.train.pause_at_step;
        let stop = rt.preempt_requested() || (pause > 0 && self.cur.step + 1 == pause);
        let flat = &mut self.flat;
        let outcome = match &self.task {
            Task::Predict(net) => train_step(net, flat, cfg, rt, &clips, mask, lr, stop, None)?,
            Task::Activity(a, labels) => {
                // Autoregressive after the observed frames: no scheduled sampling, so the
                // model never sees frames beyond the input ratio.
                let y = activity::batch_labels(&labels.train, &batch.indices)?;
                step_with_loss(flat, cfg, rt, || a.loss(&clips, &y), lr, stop, None)?
            }
        };
        let samples = (cfg.data.batch_size / world * world) as u64;
        self.cur.step += 1;
        self.cur.batches_done += 1;
        self.cur.samples_seen += samples;
        self.last_loss = outcome.loss;
        let epoch = self.cur.epoch;
        let compute = started.elapsed().as_secs_f64() - outcome.allreduce_secs;
        let ms = (compute.max(0.0) * 1000.0) as f32;
        rt.tracker.step_done(self.cur.step, plan.total, epoch, ms);
        self.window.samples += samples;
        self.window.loss_sum += outcome.loss;
        self.window.steps += 1;
        Ok(StepReport {
            outcome,
            lr,
            ss_ratio,
        })
    }

    /// Every `train.log_every` steps (and at the last): the progress line, the `train` record
    /// and the heartbeat carrying the progress to the launcher.
    fn progress(&mut self, rt: &mut Runtime, r: &StepReport, total: u64) {
        let step = self.cur.step;
        if !step.is_multiple_of(self.cfg.train.log_every) && step != total {
            return;
        }
        let (sps, loss) = self.window.take();
        let epoch = self.cur.epoch;
        if rt.rank() == 0 {
            tracing::info!(
                step,
                epoch,
                loss = format!("{loss:.5}"),
                lr = format!("{:.3e}", r.lr),
                ss_ratio = format!("{:.3}", r.ss_ratio),
                samples_per_s = format!("{sps:.1}"),
                "train {step}/{total}"
            );
        }
        self.log
            .write(json!({"kind": "train", "step": step, "epoch": epoch,
            "loss": loss, "lr": r.lr, "ss_ratio": r.ss_ratio, "samples_per_s": sps}));
        rt.tracker.report(loss, sps);
    }

    /// Every `train.param_check_every` steps in a world of several: parameters still agree.
    fn check_parameters(&self, rt: &mut Runtime) -> Result<()> {
        let every = self.cfg.train.param_check_every;
        if every == 0 || !self.cur.step.is_multiple_of(every) || rt.world() < 2 {
            return Ok(());
        }
        let drift = parameter_drift(rt.coll.as_mut(), &self.flat.params)?;
        if drift > 1e-5 {
            return Err(Error::Peer(format!(
                "rank {}: parameters differ from the other ranks' mean by {drift:.2e} \
                 (relative) at step {}",
                rt.rank(),
                self.cur.step
            )));
        }
        Ok(())
    }

    /// Validates on `loader`, logs the line and writes the `valid` record.
    fn validate(&mut self, rt: &mut Runtime, loader: &Loader) -> Result<Validation> {
        rt.tracker.phase(Beacon::Validation);
        let cfg = self.cfg;
        let (input, future) = (cfg.data.input_frames, cfg.data.future_frames);
        let v = match &self.task {
            Task::Predict(net) => validate(net, loader, rt.coll.as_mut(), input, future)?,
            Task::Activity(a, labels) => {
                let (loss, frames, scores) =
                    activity::validate(a, cfg, loader, &labels.valid, rt.coll.as_mut())?;
                Validation {
                    loss,
                    frames,
                    baselines: None,
                    activity: Some(scores),
                    forward_seconds: 0.0,
                }
            }
        };
        if rt.rank() == 0 {
            let f = &v.frames;
            tracing::info!(
                step = self.cur.step,
                loss = format!("{:.5}", v.loss),
                mse_x1e3 = format!("{:.3}", mean(&f.mse) * 1e3),
                psnr = format!("{:.2}", mean(&f.psnr)),
                ssim = format!("{:.4}", mean(&f.ssim_paper)),
                "valid"
            );
            if let Some(a) = &v.activity {
                tracing::info!(
                    step = self.cur.step,
                    accuracy = format!("{:.4}", a.accuracy),
                    cross_entropy = format!("{:.4}", a.cross_entropy),
                    "valid activity"
                );
            }
        }
        self.log.write(v.record(self.cur.step, self.cur.epoch));
        if let (true, Task::Predict(net)) = (self.log.has_tensorboard(), &self.task) {
            if let Some((png, dims)) = tensorboard_strip(self.cfg, net) {
                self.log.image(self.cur.step, "valid/prediction", png, dims);
            }
        }
        Ok(v)
    }

    /// Starts a checkpoint of the current state (committed at the next step boundary), with
    /// the current step's validation summary in its manifest.
    fn start_checkpoint(&mut self, rt: &Runtime) {
        rt.tracker.phase(Beacon::CheckpointWrite);
        let (cfg, flat, sched, cur) = (self.cfg, &self.flat, &self.sched, &self.cur);
        let metrics = self.valid_metrics.clone().unwrap_or_default();
        self.pending = Some(begin_save(cfg, rt, flat, sched, cur, metrics));
        self.last_saved = self.cur.step;
        self.owe_checkpoint = false;
    }

    /// Commits the checkpoint in flight, if any.
    fn commit_pending(&mut self, rt: &mut Runtime) -> Result<()> {
        if let Some(p) = self.pending.take() {
            rt.tracker.phase(Beacon::CheckpointCommit);
            self.faults
                .hit(rt, Phase::Checkpoint, self.cur.step, &mut self.flat);
            if let Err(e) = finish_save(self.cfg, rt, p) {
                if matches!(e, Error::PeerLost(_)) {
                    // Taken but not committed: the group must write another one.
                    self.owe_checkpoint = true;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// A peer died: the checkpoint in flight can never be completed (the replacement cannot
    /// write the dead rank's shard of it), so its writer is waited for and its directory left
    /// for rank 0 to sweep; the group owes a checkpoint of its current state instead.
    fn abandon_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            p.abandon();
            self.owe_checkpoint = true;
        }
    }

    /// The shared state at the current stage (see [`recovery`](super::recovery)).
    fn peer_state(&self, rt: &Runtime) -> PeerState {
        let header = Header {
            format: recovery::FORMAT,
            numel: self.flat.numel(),
            stage: self.stage,
            step: self.cur.step,
            epoch: self.cur.epoch,
            batches_done: self.cur.batches_done,
            samples_seen: self.cur.samples_seen,
            adam_steps: self.flat.adam_steps,
            schedules: self.sched.clone(),
            loss_scale: rt.scaler.clone(),
            last_saved: self.last_saved,
            last_loss: self.last_loss,
            preempt: self.preempt,
            owe_checkpoint: self.owe_checkpoint,
            valid_metrics: self.valid_metrics.clone(),
        };
        PeerState::encode(&header, &self.flat)
    }

    /// Installs a peer's state (a replacement worker).
    fn install(&mut self, rt: &mut Runtime, bytes: &[u8]) -> Result<()> {
        let (h, bufs) = PeerState::decode(bytes)?;
        let layout = self.flat.layout.clone();
        self.flat.restore(
            &layout,
            &bufs,
            h.adam_steps,
            std::path::Path::new("peer state"),
        )?;
        self.cur = h.cursor();
        self.stage = h.stage;
        self.sched = h.schedules;
        rt.scaler = h.loss_scale;
        self.last_saved = h.last_saved;
        self.last_loss = h.last_loss;
        self.preempt = h.preempt;
        self.owe_checkpoint = h.owe_checkpoint;
        self.valid_metrics = h.valid_metrics;
        Ok(())
    }

    /// Peer recovery: stands by with this rank's state until the launcher resumes the group
    /// (donating the state when asked); rank 0 then records the recovery.
    fn stand_by(&mut self, rt: &mut Runtime) -> Result<()> {
        rt.tracker.phase(Beacon::Recovery);
        let state = self.peer_state(rt);
        let mut bytes = Some(state.bytes);
        let mut donate = || bytes.take().unwrap_or_default();
        let step = self.cur.step;
        let resumed = rt
            .coll
            .standby(step, state.checksum, &mut donate)
            .map_err(|e| match e {
                // A second loss while standing by cannot be recovered from here.
                Error::PeerLost(m) => Error::Peer(m),
                e => e,
            })?;
        self.recovered(rt, &resumed);
        Ok(())
    }

    /// After a resume: the log line, the `recovery` record (rank 0), the abandoned
    /// checkpoint's directory swept (rank 0), a fresh throughput window.
    fn recovered(&mut self, rt: &mut Runtime, r: &convtt_core::protocol::Resumed) {
        tracing::info!(
            step = self.cur.step,
            stage = ?self.stage,
            attempt = r.attempt,
            "rank {} was replaced ({}); the group goes on after {:.2} s",
            r.lost_rank,
            r.cause,
            r.seconds
        );
        rt.set_attempt(r.attempt);
        if rt.rank() == 0 {
            ckpt::remove_abandoned_tmp(&rt.run.checkpoints(), r.attempt);
            self.log
                .write(json!({"kind": "recovery", "step": self.cur.step,
                "rank": r.lost_rank, "cause": r.cause, "seconds": r.seconds,
                "attempt": r.attempt, "stage": format!("{:?}", self.stage).to_lowercase(),
                "mode": "peer"}));
        }
        self.window = Window::new();
        rt.tracker.reset_window();
    }

    /// End of an epoch: validation (when `train.valid_every` is 0) and the schedules' epoch
    /// update.
    fn end_epoch(&mut self, rt: &mut Runtime, plan: &Plan) -> Result<()> {
        let v = match &plan.valid {
            Some(v) if self.cfg.train.valid_every == 0 => Some(self.validate(rt, v)?),
            _ => None,
        };
        let loss = v.as_ref().map(|v| v.loss);
        if let Some(v) = &v {
            self.valid_metrics = Some(manifest_metrics(v));
        }
        self.sched
            .end_epoch(&self.cfg.optim, self.cur.epoch as usize, loss);
        self.cur.epoch += 1;
        self.cur.batches_done = 0;
        Ok(())
    }

    /// The end of training: the pending checkpoint, a final validation, a final checkpoint
    /// unless the last step was saved, and (rank 0) `summary.toml` and the plots.
    fn finish(&mut self, rt: &mut Runtime, plan: &Plan) -> Result<()> {
        rt.tracker.phase(Beacon::Finish);
        self.commit_pending(rt)?;
        let valid = match &plan.valid {
            Some(v) => Some(self.validate(rt, v)?),
            None => None,
        };
        if let Some(v) = &valid {
            self.valid_metrics = Some(manifest_metrics(v));
        }
        if self.last_saved != self.cur.step || self.owe_checkpoint {
            self.start_checkpoint(rt);
            self.commit_pending(rt)?;
        }
        if rt.rank() != 0 {
            return Ok(());
        }
        RunSummary {
            steps: self.cur.step,
            epochs_completed: self.cur.epoch,
            samples_seen: self.cur.samples_seen,
            final_train_loss: self.last_loss,
            valid: valid
                .iter()
                .flat_map(Validation::summary)
                .map(|(m, x)| (m.key.to_owned(), x))
                .collect(),
        }
        .write(&rt.run)?;
        let run_dir = rt.run.path();
        let net = match &self.task {
            Task::Predict(net) => Some(net),
            Task::Activity(..) => None,
        };
        crate::eval::plot::after_training(run_dir, self.cfg, net)?;
        tracing::info!(
            step = self.cur.step,
            "training finished: {}",
            run_dir.display()
        );
        Ok(())
    }
}
