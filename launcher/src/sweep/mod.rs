//! `convtt-launch sweep …`: hyper-parameter sweeps over any config keys (the paper's S/N/C/M
//! grid), on this machine or as one Slurm job array.
//!
//! ```text
//! <sweep>/base.toml           the resolved base configuration (after --set)
//! <sweep>/manifest.toml       the plan: one [[trial]] per trial (index, id, overrides, size)
//! <sweep>/trials/<id>/        one run directory per trial (ARCHITECTURE §8) + status.toml
//! <sweep>/sweep.sbatch        the rendered job-array script (`sweep submit`)
//! <sweep>/slurm/              the array tasks' Slurm output
//! <sweep>/report.{csv,md,png} `sweep report`
//! ```
//!
//! Trials are identified by [`convtt_core::sweep::Trial::id`] (a hash of their overrides and
//! seed), so planning again (a bigger grid, another subset) keeps what already ran. Every trial
//! runs through [`task`]: a child `convtt-launch --config base.toml --run-dir <trial> --resume
//! auto --set …` with the trial's overrides; the task records `status.toml`, retries failures
//! within `sweep.max_retries`, forwards signals and exits 4 when the trial was preempted.
//! [`local`] runs tasks on this machine, [`slurm`] submits them as an array, [`report`] sums up.

pub mod asha;
pub mod local;
pub mod report;
pub mod slurm;
pub mod task;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use convtt_core::config::ValidConfig;
use convtt_core::fsutil::write_atomic;
use convtt_core::sweep::{plan, trial_config, Trial};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of `manifest.toml`'s layout.
pub const MANIFEST_VERSION: u32 = 1;

/// One planned trial, as `manifest.toml` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialEntry {
    /// Position in the plan: the Slurm array index.
    pub index: usize,
    /// Stable identity (hash of the overrides); the run directory is `trials/<id>`.
    pub id: String,
    /// Repeat number.
    pub repeat: usize,
    /// `train.seed`.
    pub seed: u64,
    /// `--set` overrides applied to `base.toml`.
    pub overrides: Vec<String>,
    /// The grid values, as text, in grid-key order (`train.seed` excluded).
    pub values: Vec<String>,
    /// Model parameters.
    pub parameters: i64,
    /// FLOPs (2 × MACs) to predict one frame of one sample, in GFLOP.
    pub gflop_per_frame: f64,
    /// FLOPs of one training step (forward + backward, global batch), in GFLOP.
    pub gflop_per_step: f64,
    /// Estimated memory of one of its workers, MiB: the activations kept for backward at the
    /// per-worker batch plus parameters, gradients and Adam's two moments (f32); libtorch's
    /// own footprint comes on top (the packing guard adds it).
    #[serde(default)]
    pub worker_mib: f64,
}

/// ASHA's parameters as the manifest records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AshaPlan {
    /// The rungs (steps), ascending, all below `max_steps`.
    pub rungs: Vec<u64>,
    /// η: 1/η of the trials at a rung go on.
    pub reduction_factor: u64,
    /// The steps of a trial never stopped.
    pub max_steps: u64,
}

/// `manifest.toml`: the sweep's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub format_version: u32,
    /// The config file the sweep was planned from.
    pub config: String,
    /// Grid keys (the columns of the trial tables).
    pub grid_keys: Vec<String>,
    /// `sweep.metric`.
    pub metric: String,
    /// `sweep.max_retries`.
    pub max_retries: u32,
    /// `sweep.array_parallel`.
    pub array_parallel: usize,
    /// Early stopping (`sweep.scheduler = "asha"`), when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asha: Option<AshaPlan>,
    /// The trials, by index.
    #[serde(rename = "trial", default)]
    pub trials: Vec<TrialEntry>,
}

/// A sweep directory and its files.
#[derive(Debug, Clone)]
pub struct SweepDir(pub PathBuf);

impl SweepDir {
    /// `base.toml`.
    pub fn base(&self) -> PathBuf {
        self.0.join("base.toml")
    }
    /// `manifest.toml`.
    pub fn manifest(&self) -> PathBuf {
        self.0.join("manifest.toml")
    }
    /// The run directory of trial `id`.
    pub fn trial(&self, id: &str) -> PathBuf {
        self.0.join("trials").join(id)
    }

    /// Reads `manifest.toml`.
    pub fn read_manifest(&self) -> Result<Manifest> {
        let p = self.manifest();
        let text = std::fs::read_to_string(&p).map_err(|e| {
            Error::Usage(format!(
                "{}: {e}; plan the sweep first (`convtt-launch sweep run|submit --config …`)",
                p.display()
            ))
        })?;
        let m: Manifest = toml::from_str(&text)
            .map_err(|e| Error::Usage(format!("{}: {}", p.display(), e.message().trim())))?;
        if m.format_version != MANIFEST_VERSION {
            return Err(Error::Usage(format!(
                "{}: format_version {} (this convtt-launch reads {MANIFEST_VERSION})",
                p.display(),
                m.format_version
            )));
        }
        Ok(m)
    }
}

/// A planned sweep: the base configuration and its trials with their sizes.
#[derive(Debug)]
pub struct Planned {
    /// The resolved base configuration.
    pub base: ValidConfig,
    /// The manifest to write.
    pub manifest: Manifest,
}

/// Plans the sweep of `config` (+ `overrides`): every trial's configuration is validated and
/// sized with `convtt_core::summary` (the same formula as `convtt-worker model-info`, tested
/// against built networks), so no libtorch is needed.
pub fn plan_sweep(config: &Path, overrides: &[String]) -> Result<Planned> {
    let base = convtt_core::config::load(config, overrides)?;
    let with_source = |mut e: convtt_core::config::ConfigErrors| {
        e.source = Some(config.display().to_string());
        Error::Common(convtt_core::Error::Config(e))
    };
    let trials = plan(&base).map_err(with_source)?;
    let mut bad = convtt_core::config::ConfigErrors::default();
    let mut entries = Vec::new();
    for t in &trials {
        match trial_config(&base, t) {
            Ok(cfg) => entries.push(entry(t, &cfg)),
            Err(e) => {
                for issue in e.issues {
                    bad.push(
                        format!("trial {} ({})", t.index, t.overrides().join(" ")),
                        format!(
                            "{issue}; remove the point with a sweep.constraints entry or change \
                             sweep.grid"
                        ),
                    );
                }
            }
        }
    }
    if !bad.is_empty() {
        return Err(with_source(bad));
    }
    let manifest = Manifest {
        format_version: MANIFEST_VERSION,
        config: config.display().to_string(),
        grid_keys: base.sweep.grid.keys().cloned().collect(),
        metric: base.sweep.metric.clone(),
        max_retries: base.sweep.max_retries,
        array_parallel: base.sweep.array_parallel,
        asha: (base.sweep.scheduler == convtt_core::config::Scheduler::Asha).then(|| {
            let max_steps = match base.sweep.max_steps {
                0 => base.train.max_steps,
                m => m,
            };
            AshaPlan {
                rungs: base.sweep.rungs(max_steps),
                reduction_factor: base.sweep.reduction_factor,
                max_steps,
            }
        }),
        trials: entries,
    };
    Ok(Planned { base, manifest })
}

fn entry(t: &Trial, cfg: &ValidConfig) -> TrialEntry {
    let d = &cfg.data;
    let s = convtt_core::summary::summarize(
        &cfg.model,
        d.height as i64,
        d.width as i64,
        d.batch_size as i64,
        (d.input_frames + d.future_frames - 1) as i64,
    );
    let workers = match cfg.launch.gpus {
        0 => cfg.launch.cpu_workers.max(1),
        g => g,
    };
    let worker_mib = (s.activation_bytes as f64 / workers as f64
        + 16.0 * s.total_parameters as f64)
        / (1024.0 * 1024.0);
    TrialEntry {
        index: t.index,
        id: t.id.clone(),
        repeat: t.repeat,
        seed: t.seed,
        overrides: t.overrides(),
        values: t
            .values
            .iter()
            .filter(|(k, _)| k != "train.seed")
            .map(|(_, v)| v.to_string())
            .collect(),
        parameters: s.total_parameters,
        gflop_per_frame: 2.0 * s.macs_per_frame as f64 / 1e9,
        gflop_per_step: 2.0 * s.macs_per_training_step as f64 / 1e9,
        worker_mib,
    }
}

/// Writes `base.toml` and `manifest.toml` (atomically) into `dir`, creating it. A base that
/// differs from the one already there is allowed (trials keep their ids) but logged.
pub fn write_plan(dir: &SweepDir, planned: &Planned) -> Result<()> {
    std::fs::create_dir_all(dir.0.join("trials")).map_err(|e| Error::io(&dir.0, e))?;
    let base_text = planned.base.to_toml();
    if let Ok(old) = std::fs::read_to_string(dir.base()) {
        if old != base_text {
            tracing::warn!(
                "{}: the base configuration changed since the last plan; finished trials are \
                 kept, unfinished ones continue under the new base",
                dir.base().display()
            );
        }
    }
    write_atomic(&dir.base(), base_text.as_bytes())?;
    let text = toml::to_string_pretty(&planned.manifest).expect("a manifest serialises");
    write_atomic(&dir.manifest(), text.as_bytes())?;
    Ok(())
}

/// `runs/sweep-{launch.name}` unless `--sweep-dir` says otherwise.
pub fn default_dir(base: &ValidConfig, given: Option<&Path>) -> SweepDir {
    SweepDir(given.map_or_else(
        || PathBuf::from(format!("runs/sweep-{}", base.launch.name)),
        Path::to_owned,
    ))
}

/// Short column title of a dotted key (`model.filter_size` → `filter_size`).
pub fn short_key(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// Human-readable parameter count (`19.2k`, `3.26M`).
pub fn human_count(n: i64) -> String {
    let x = n as f64;
    if x >= 1e6 {
        format!("{:.3}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        n.to_string()
    }
}

/// Pads columns to a fixed-width text table (first row = header, a rule under it).
pub fn text_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:>w$}", w = width[c]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if i == 0 {
            let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "{}", rule.join("  "));
        }
    }
    out
}

/// The `sweep plan` table: index, id, seed, grid values, parameters and FLOPs.
pub fn plan_table(m: &Manifest) -> String {
    let mut rows = vec![{
        let mut h = vec!["#".to_owned(), "id".into(), "seed".into()];
        h.extend(m.grid_keys.iter().map(|k| short_key(k).to_owned()));
        h.extend(["params".into(), "GFLOP/frame".into(), "GFLOP/step".into()]);
        h
    }];
    for t in &m.trials {
        let mut r = vec![t.index.to_string(), t.id.clone(), t.seed.to_string()];
        r.extend(t.values.iter().cloned());
        r.extend([
            human_count(t.parameters),
            format!("{:.3}", t.gflop_per_frame),
            format!("{:.1}", t.gflop_per_step),
        ]);
        rows.push(r);
    }
    text_table(&rows)
}

/// Prints `text` to stdout; a closed pipe (`… | head`) is not an error.
pub fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::warn!("cannot write to stdout: {e}");
        }
    }
}

/// `convtt-launch sweep plan`: prints the trial table; writes nothing.
pub fn cmd_plan(config: &Path, overrides: &[String]) -> Result<()> {
    let planned = plan_sweep(config, overrides)?;
    let m = &planned.manifest;
    let total: f64 = m.trials.iter().map(|t| t.gflop_per_step).sum();
    let text = format!(
        "{}{} trials (grid keys: {}; constraints: {}; repeats {}); {:.1} TFLOP per training step \
         summed over the trials\n",
        plan_table(m),
        m.trials.len(),
        if m.grid_keys.is_empty() {
            "none".into()
        } else {
            m.grid_keys.join(", ")
        },
        if planned.base.sweep.constraints.is_empty() {
            "none".into()
        } else {
            planned.base.sweep.constraints.join(", ")
        },
        planned.base.sweep.repeats,
        total / 1e3,
    );
    print_out(&text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_table_and_manifest_round_trip() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let planned = plan_sweep(&repo.join("configs/sweep-sncm.toml"), &[]).unwrap();
        let m = &planned.manifest;
        assert_eq!(m.trials.len(), 48);
        assert_eq!(
            m.grid_keys,
            [
                "model.filter_size",
                "model.order",
                "model.rank",
                "model.steps"
            ]
        );
        // The released model (S 5, N 3, C 8, M 3): 2.687M parameters (spec §3.4).
        let released = m
            .trials
            .iter()
            .find(|t| t.values == ["5", "3", "8", "3"])
            .unwrap();
        assert_eq!(
            released.parameters,
            convtt_core::summary::total_parameters(&Default::default())
        );
        assert!((released.parameters as f64 / 1e6 - 2.687).abs() < 0.0005);
        let text = toml::to_string_pretty(m).unwrap();
        assert_eq!(&toml::from_str::<Manifest>(&text).unwrap(), m);
        let table = plan_table(m);
        assert_eq!(table.lines().count(), 2 + 48);
        assert!(table.lines().next().unwrap().contains("filter_size"));
    }

    #[test]
    fn a_grid_point_the_model_refuses_names_the_trial() {
        let dir = std::env::temp_dir().join(format!("convtt-sweep-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.toml");
        std::fs::write(
            &p,
            "[sweep.grid]\n\"model.order\" = [1, 5]\n\"model.steps\" = [3]\n",
        )
        .unwrap();
        let e = plan_sweep(&p, &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("trial 1 (model.order=5"), "{msg}");
        assert!(msg.contains("sweep.constraints"), "{msg}");
        assert_eq!(e.exit_code(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
