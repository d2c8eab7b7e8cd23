//! Run configuration: TOML → raw typed sections → [`ValidConfig`] (ARCHITECTURE §6).
//!
//! Two stages, as in candle's `LlamaConfig::into_config`: [`parse`] turns text plus `--set`
//! overrides into a [`RunConfig`] while collecting *every* unknown key (with the closest valid
//! name) and every ill-typed value; [`RunConfig::validate`] then collects every semantic problem
//! with its dotted path. Nothing stops at the first mistake.
//!
//! ```
//! let cfg = convtt_core::config::parse("[model]\norder = 2\n", None, &["model.rank=4"])?;
//! assert_eq!(cfg.model.rank, 4);
//! assert_eq!(cfg.model.window(), 2); // M − N + 1 with the default M = 3
//! # Ok::<(), convtt_core::config::ConfigErrors>(())
//! ```

mod activity;
mod checkpoint;
mod data;
mod issues;
mod launch;
mod model;
mod optim;
mod sweep;
mod train;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use activity::{input_frames_for, ActivityConfig};
pub use checkpoint::{BestMode, CheckpointConfig, MetricMode};
pub use data::{DataConfig, DataSource};
pub use issues::{ConfigErrors, ConfigIssue};
pub use launch::{LaunchConfig, Recovery};
pub use model::{prime_factors, tt_factors, CellKind, InitScheme, ModelConfig};
pub use optim::{OptimConfig, Schedule};
pub use sweep::{CmpOp, Constraint, Operand, Scheduler, SweepConfig};
pub use train::{ChannelsLast, DeviceKind, LpipsPreset, Precision, TrainConfig};

use crate::error::{Error, Result};

/// The whole configuration of a run, as written in TOML (every key has a default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// `[model]`
    pub model: ModelConfig,
    /// `[data]`
    pub data: DataConfig,
    /// `[train]`
    pub train: TrainConfig,
    /// `[optim]`
    pub optim: OptimConfig,
    /// `[checkpoint]`
    pub checkpoint: CheckpointConfig,
    /// `[launch]`
    pub launch: LaunchConfig,
    /// `[sweep]`
    pub sweep: SweepConfig,
    /// `[activity]` (early activity recognition; off by default)
    pub activity: ActivityConfig,
}

/// A configuration that passed [`RunConfig::validate`]. Constructors may rely on it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig(RunConfig);

impl std::ops::Deref for ValidConfig {
    type Target = RunConfig;
    fn deref(&self) -> &RunConfig {
        &self.0
    }
}

impl ValidConfig {
    /// The raw configuration.
    pub fn into_inner(self) -> RunConfig {
        self.0
    }

    /// The resolved configuration as TOML (what `<run>/config.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.0).expect("a config always serialises")
    }

    /// SHA-256 (hex) of the `[model]` section: checkpoints record it, and resume refuses a
    /// checkpoint whose model differs.
    ///
    /// With `activity.enabled` the hash also covers the activity network's architecture keys
    /// ([`ActivityConfig::architecture`]); otherwise it is the hash of `[model]` alone, so
    /// configurations without `[activity]` keep their hashes.
    pub fn model_hash(&self) -> String {
        let mut text = toml::to_string(&self.0.model).expect("a model config always serialises");
        if self.0.activity.enabled {
            text.push_str("\n[activity]\n");
            text.push_str(
                &toml::to_string(&self.0.activity.architecture())
                    .expect("activity architecture serialises"),
            );
        }
        hex(&Sha256::digest(text.as_bytes()))
    }

    /// The model as checkpoint manifests record it: `[model]`, plus an `activity` table of the
    /// architecture keys when `activity.enabled`.
    pub fn model_table(&self) -> toml::Table {
        let mut t = toml::Table::try_from(&self.0.model).expect("model config serialises");
        if self.0.activity.enabled {
            t.insert(
                "activity".into(),
                toml::Value::Table(self.0.activity.architecture()),
            );
        }
        t
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl RunConfig {
    /// Checks every section and returns all problems at once.
    pub fn validate(self) -> std::result::Result<ValidConfig, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        self.model.validate(&mut errs);
        self.data.validate(&mut errs);
        self.train.validate(&mut errs);
        self.optim.validate(&mut errs);
        self.checkpoint.validate(&mut errs);
        self.launch.validate(&mut errs);
        self.sweep.validate(&mut errs, &known_leaf_keys());
        self.activity.validate(&mut errs);
        // Cross-section checks.
        if self.activity.enabled && self.model.cell == CellKind::ConvlstmTtd {
            errs.push(
                "model.cell",
                "\"convlstm_ttd\" is a video-prediction baseline; the activity network (activity.enabled) \
                 takes \"convttlstm\" or \"convlstm\"",
            );
        }
        if self.sweep.scheduler == Scheduler::Asha && self.sweep.grace_steps >= 1 {
            let every = self.train.valid_every;
            if every == 0 || !self.sweep.grace_steps.is_multiple_of(every) {
                errs.push(
                    "train.valid_every",
                    format!(
                        "must divide sweep.grace_steps ({}) for ASHA, so every rung has a \
                         validation to decide on (got {every})",
                        self.sweep.grace_steps
                    ),
                );
            }
            let max = match self.sweep.max_steps {
                0 => self.train.max_steps,
                m => m,
            };
            if max <= self.sweep.grace_steps {
                errs.push(
                    "sweep.max_steps",
                    format!(
                        "must exceed sweep.grace_steps ({}) (got {max}; 0 takes train.max_steps)",
                        self.sweep.grace_steps
                    ),
                );
            }
        }
        let (workers, what) = if self.launch.gpus > 0 {
            (self.launch.gpus, "launch.gpus")
        } else {
            (self.launch.cpu_workers, "launch.cpu_workers")
        };
        if self.data.batch_size > 0 && workers > 0 && !self.data.batch_size.is_multiple_of(workers)
        {
            errs.push(
                "data.batch_size",
                format!(
                    "must divide by {what} (got {} for {workers} workers per node)",
                    self.data.batch_size
                ),
            );
        }
        errs.into_result(ValidConfig(self))
    }
}

/// Reads `path`, applies `overrides` (`section.key=value`) and validates.
///
/// A missing or unreadable file is an [`Error::Io`]; every problem in the content is reported
/// together as [`Error::Config`].
pub fn load(path: &Path, overrides: &[impl AsRef<str>]) -> Result<ValidConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, Some(&path.display().to_string()), overrides).map_err(Error::Config)
}

/// Parses TOML text, applies `overrides` and validates. `source` names the file in messages.
pub fn parse(
    text: &str,
    source: Option<&str>,
    overrides: &[impl AsRef<str>],
) -> std::result::Result<ValidConfig, ConfigErrors> {
    let mut errs = ConfigErrors {
        source: source.map(str::to_owned),
        issues: Vec::new(),
    };
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            errs.push("(syntax)", toml_syntax_message(text, &e));
            return Err(errs);
        }
    };
    for o in overrides {
        if let Err(msg) = apply_override(&mut table, o.as_ref()) {
            errs.push(format!("--set {}", o.as_ref()), msg);
        }
    }
    let known = known_table();
    report_unknown(&table, &known, "", &mut errs);

    let section = |name: &str| table.get(name);
    let cfg = RunConfig {
        model: typed_section("model", section("model"), &known, &mut errs),
        data: typed_section("data", section("data"), &known, &mut errs),
        train: typed_section("train", section("train"), &known, &mut errs),
        optim: typed_section("optim", section("optim"), &known, &mut errs),
        checkpoint: typed_section("checkpoint", section("checkpoint"), &known, &mut errs),
        launch: typed_section("launch", section("launch"), &known, &mut errs),
        sweep: typed_section("sweep", section("sweep"), &known, &mut errs),
        activity: typed_section("activity", section("activity"), &known, &mut errs),
    };
    match cfg.validate() {
        Ok(valid) if errs.is_empty() => Ok(valid),
        Ok(_) => Err(errs),
        Err(more) => {
            errs.issues.extend(more.issues);
            Err(errs)
        }
    }
}

fn toml_syntax_message(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_owned();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("invalid TOML at line {line}: {msg}")
        }
        None => format!("invalid TOML: {msg}"),
    }
}

/// Applies one `a.b.c=value` override. The value is read as TOML (`3`, `true`, `[1, 2]`,
/// `"text"`); anything that is not valid TOML is taken as a bare string.
fn apply_override(table: &mut toml::Table, spec: &str) -> std::result::Result<(), String> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| "expected section.key=value".to_owned())?;
    let key = key.trim();
    let parts = split_key(key);
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("expected section.key=value, got key {key:?}"));
    }
    let raw = raw.trim();
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p:?} is a value, not a section"))?;
    }
    cur.insert(parts[parts.len() - 1].clone(), value);
    Ok(())
}

/// Splits a dotted key at the dots outside double quotes and unquotes the parts, so a sweep
/// grid entry can be set: `sweep.grid."model.rank"` → `sweep`, `grid`, `model.rank`.
fn split_key(key: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in key.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts.into_iter().map(|p| p.trim().to_owned()).collect()
}

/// The default configuration as a TOML table: the schema of known keys.
fn known_table() -> toml::Table {
    toml::Table::try_from(RunConfig::default()).expect("the default config serialises")
}

/// Every settable `section.key` (for sweep grids and suggestions).
pub fn known_leaf_keys() -> Vec<String> {
    let mut out = Vec::new();
    for (section, v) in known_table() {
        if let Some(t) = v.as_table() {
            for (k, v) in t {
                if !v.is_table() {
                    out.push(format!("{section}.{k}"));
                }
            }
        }
    }
    out
}

fn report_unknown(given: &toml::Table, known: &toml::Table, prefix: &str, errs: &mut ConfigErrors) {
    for (k, v) in given {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match known.get(k) {
            None => {
                let what = if prefix.is_empty() { "section" } else { "key" };
                let hint = suggest(k, known.keys().map(String::as_str));
                let valid = known.keys().cloned().collect::<Vec<_>>().join(", ");
                errs.push(path, format!("unknown {what}{hint} (valid: {valid})"));
            }
            // A known table with no fixed keys (e.g. `sweep.grid`) is free-form.
            Some(toml::Value::Table(kt)) if !kt.is_empty() => match v.as_table() {
                Some(gt) => report_unknown(gt, kt, &path, errs),
                None => errs.push(path, format!("must be a table: write [{k}] above its keys")),
            },
            Some(_) => {}
        }
    }
}

/// Deserializes one section, checking every key on its own so that every ill-typed value is
/// reported (serde stops at the first). Unknown keys were reported already and are skipped.
fn typed_section<T: DeserializeOwned + Default>(
    name: &str,
    given: Option<&toml::Value>,
    known: &toml::Table,
    errs: &mut ConfigErrors,
) -> T {
    let Some(toml::Value::Table(given)) = given else {
        return T::default();
    };
    let known = known.get(name).and_then(toml::Value::as_table);
    let mut good = toml::Table::new();
    for (k, v) in given {
        if !known.is_some_and(|t| t.contains_key(k)) {
            continue;
        }
        let one = toml::Table::from_iter([(k.clone(), v.clone())]);
        match toml::Value::Table(one).try_into::<T>() {
            Ok(_) => {
                good.insert(k.clone(), v.clone());
            }
            Err(e) => errs.push(format!("{name}.{k}"), type_message(&e, v)),
        }
    }
    toml::Value::Table(good).try_into().unwrap_or_else(|e| {
        errs.push(name, e.message().trim().to_owned());
        T::default()
    })
}

fn type_message(e: &toml::de::Error, v: &toml::Value) -> String {
    let msg = e
        .message()
        .lines()
        .next()
        .unwrap_or("invalid value")
        .trim()
        .to_owned();
    format!("{msg} (got {v})")
}

/// " (did you mean `x`?)" for the closest candidate, or "" when nothing is close.
pub(crate) fn suggest<'a>(given: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (strsim::jaro_winkler(given, c), c))
        .filter(|(score, _)| *score >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
