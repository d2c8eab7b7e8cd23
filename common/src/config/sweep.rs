//! `[sweep]`: a hyper-parameter grid over any config keys (the paper's S/N/C/M grid).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::issues::{check, ConfigErrors};

/// `[sweep]` section. Only `convtt-launch sweep …` reads it; a training run ignores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    /// Dotted config key → the values to try, e.g. `"model.order" = [1, 2, 3, 5]`.
    pub grid: BTreeMap<String, Vec<toml::Value>>,
    /// Conditions every trial must meet, e.g. `"model.steps >= model.order"`.
    pub constraints: Vec<String>,
    /// Run a seeded random subset of this many trials (0: the whole grid).
    pub random_subset: usize,
    /// Repeats of every trial with different seeds.
    pub repeats: usize,
    /// Seed of the random subset and of the repeats' training seeds.
    pub seed: u64,
    /// Validation metric the report ranks trials by.
    pub metric: String,
    /// Failed-trial retries before a trial is marked failed.
    pub max_retries: u32,
    /// Slurm array concurrency limit (`--array=0-N%K`).
    pub array_parallel: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            grid: BTreeMap::new(),
            constraints: Vec::new(),
            random_subset: 0,
            repeats: 1,
            seed: 0,
            metric: "valid.loss".into(),
            max_retries: 1,
            array_parallel: 4,
        }
    }
}

impl SweepConfig {
    pub(crate) fn validate(&self, errs: &mut ConfigErrors, known_keys: &[String]) {
        for (key, values) in &self.grid {
            let path = format!("sweep.grid.\"{key}\"");
            if key.starts_with("sweep.") || !known_keys.iter().any(|k| k == key) {
                let hint = super::suggest(key, known_keys.iter().map(String::as_str));
                errs.push(&path, format!("is not a config key a trial can set{hint}"));
            }
            check(errs, !values.is_empty(), &path, || {
                "must list at least one value".into()
            });
        }
        check(errs, self.repeats >= 1, "sweep.repeats", || {
            "must be at least 1 (got 0)".into()
        });
        check(
            errs,
            self.array_parallel >= 1,
            "sweep.array_parallel",
            || "must be at least 1 (got 0)".into(),
        );
        check(
            errs,
            super::checkpoint::RANKING_METRICS.contains(&self.metric.as_str()),
            "sweep.metric",
            || {
                format!(
                    "unknown metric {:?}; one of {}",
                    self.metric,
                    super::checkpoint::RANKING_METRICS.join(", ")
                )
            },
        );
    }
}
