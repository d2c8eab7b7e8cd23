//! Sweep planning (issue 7): a base configuration's `[sweep]` section → the trials.
//!
//! The grid is the cartesian product of `sweep.grid` (keys in sorted order, the last varying
//! fastest), filtered by `sweep.constraints`, optionally reduced to a seeded random subset of
//! `sweep.random_subset` points (kept in grid order), then repeated `sweep.repeats` times with
//! `train.seed = sweep.seed + r` (or, when the grid sets `train.seed`, that value + r).
//!
//! A trial's identity is [`Trial::id`]: eight hex digits of the SHA-256 of its overrides (seed
//! included). It does not depend on the trial's position, so a re-planned sweep (a grid with
//! one more value, a different subset) finds the trials it already ran.
//!
//! ```
//! let cfg = convtt_core::config::parse(
//!     "[sweep]\nconstraints = [\"model.steps >= model.order\"]\n\
//!      [sweep.grid]\n\"model.order\" = [1, 3]\n\"model.steps\" = [1, 3]\n",
//!     None,
//!     &[] as &[&str],
//! )?;
//! let trials = convtt_core::sweep::plan(&cfg)?;
//! assert_eq!(trials.len(), 3); // (N, M) = (1, 1), (1, 3), (3, 3)
//! assert_eq!(trials[2].overrides(), ["model.order=3", "model.steps=3", "train.seed=0"]);
//! # Ok::<(), convtt_core::config::ConfigErrors>(())
//! ```

use sha2::{Digest, Sha256};

use crate::config::{known_leaf_keys, ConfigErrors, Constraint, ValidConfig};

/// One point of the sweep: grid values and a training seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Position in the plan (0-based; the Slurm array index).
    pub index: usize,
    /// Stable identity: 8 hex digits of the SHA-256 of [`Trial::overrides`].
    pub id: String,
    /// `(dotted key, value)` for every grid key, in grid (sorted) order.
    pub values: Vec<(String, toml::Value)>,
    /// Repeat number (0 … repeats − 1).
    pub repeat: usize,
    /// `train.seed` of this trial.
    pub seed: u64,
}

impl Trial {
    /// The `--set` overrides that turn the base config into this trial's: the grid values and
    /// `train.seed`, sorted by key.
    pub fn overrides(&self) -> Vec<String> {
        let mut o: Vec<String> = self
            .values
            .iter()
            .filter(|(k, _)| k != "train.seed")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        o.push(format!("train.seed={}", self.seed));
        o.sort();
        o
    }

    /// The value this trial gives `key`, as text (`-` when the grid does not set it).
    pub fn value_text(&self, key: &str) -> String {
        if key == "train.seed" {
            return self.seed.to_string();
        }
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map_or_else(|| "-".into(), |(_, v)| v.to_string())
    }
}

/// Eight hex digits of the SHA-256 of the overrides, one per line.
pub fn trial_id(overrides: &[String]) -> String {
    let mut h = Sha256::new();
    for o in overrides {
        h.update(o.as_bytes());
        h.update(b"\n");
    }
    h.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// splitmix64: the subset's random stream (small, portable, stable across releases).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `k` of `0..n` chosen by a seeded partial Fisher–Yates shuffle, in increasing order.
pub fn random_subset(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut state = seed;
    let k = k.min(n);
    for i in 0..k {
        let j = i + (splitmix64(&mut state) % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    let mut out = idx[..k].to_vec();
    out.sort_unstable();
    out
}

/// The base configuration's value of a dotted `section.key`.
fn base_value(base: &toml::Table, key: &str) -> Option<toml::Value> {
    let (section, k) = key.split_once('.')?;
    base.get(section)?.as_table()?.get(k).cloned()
}

/// Expands `cfg.sweep` into trials. Errors (with `sweep.…` paths) when the constraints leave
/// nothing or a grid lists a value twice.
pub fn plan(cfg: &ValidConfig) -> Result<Vec<Trial>, ConfigErrors> {
    let sweep = &cfg.sweep;
    let mut errs = ConfigErrors::default();
    let known = known_leaf_keys();
    let constraints: Vec<Constraint> = sweep
        .constraints
        .iter()
        .filter_map(|c| Constraint::parse(c, &known).ok())
        .collect();
    for (key, values) in &sweep.grid {
        for (i, v) in values.iter().enumerate() {
            if values[..i].contains(v) {
                errs.push(
                    format!("sweep.grid.\"{key}\""),
                    format!("lists {v} twice (the trials would be identical)"),
                );
            }
        }
    }
    let base = toml::Table::try_from(&**cfg).expect("a config always serialises");
    // Cartesian product, the last key varying fastest.
    let keys: Vec<&String> = sweep.grid.keys().collect();
    let mut points: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for k in &keys {
        points = points
            .into_iter()
            .flat_map(|p| {
                sweep.grid[*k].iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(((*k).clone(), v.clone()));
                    q
                })
            })
            .collect();
    }
    let total = points.len();
    points.retain(|p| {
        let lookup = |key: &str| {
            p.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .or_else(|| base_value(&base, key))
        };
        constraints.iter().all(|c| c.holds(lookup))
    });
    if points.is_empty() {
        errs.push(
            "sweep.constraints",
            format!("no trial of the {total}-point grid meets every constraint"),
        );
    }
    if sweep.random_subset > 0 && sweep.random_subset < points.len() {
        let keep = random_subset(points.len(), sweep.random_subset, sweep.seed);
        points = keep.into_iter().map(|i| points[i].clone()).collect();
    }
    let mut trials = Vec::new();
    for p in points {
        let seed0 = p
            .iter()
            .find(|(k, _)| k == "train.seed")
            .and_then(|(_, v)| v.as_integer())
            .map_or(sweep.seed, |s| s as u64);
        for r in 0..sweep.repeats {
            let mut t = Trial {
                index: trials.len(),
                id: String::new(),
                values: p.clone(),
                repeat: r,
                seed: seed0 + r as u64,
            };
            t.id = trial_id(&t.overrides());
            trials.push(t);
        }
    }
    errs.into_result(trials)
}

/// A trial's resolved configuration: the base with the trial's overrides, validated (e.g. a
/// grid point with `model.order > model.steps` that no constraint removed is an error here).
pub fn trial_config(base: &ValidConfig, trial: &Trial) -> Result<ValidConfig, ConfigErrors> {
    crate::config::parse(&base.to_toml(), None, &trial.overrides())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper() -> ValidConfig {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/sweep-sncm.toml"
        ))
        .unwrap();
        crate::config::parse(&text, None, &[] as &[&str]).unwrap()
    }

    #[test]
    fn the_papers_grid_has_48_trials_with_m_at_least_n() {
        let trials = plan(&paper()).unwrap();
        // S 2 × C 3 × (N, M) pairs with M ≥ N: (1,1) (1,3) (1,5) (2,3) (2,5) (3,3) (3,5) (5,5).
        assert_eq!(trials.len(), 48);
        for t in &trials {
            let n = t.value_text("model.order").parse::<u32>().unwrap();
            let m = t.value_text("model.steps").parse::<u32>().unwrap();
            assert!(m >= n, "{t:?}");
            trial_config(&paper(), t).unwrap();
        }
        assert_eq!(
            trials[0].overrides(),
            [
                "model.filter_size=3",
                "model.order=1",
                "model.rank=4",
                "model.steps=1",
                "train.seed=0"
            ]
        );
        let ids: std::collections::BTreeSet<_> = trials.iter().map(|t| &t.id).collect();
        assert_eq!(ids.len(), 48, "ids are unique");
        assert!(trials.iter().enumerate().all(|(i, t)| t.index == i));
    }

    #[test]
    fn ids_are_stable_across_replans_and_subsets_are_seeded() {
        let full = plan(&paper()).unwrap();
        let sub = |seed: u64| {
            let mut cfg = paper().into_inner();
            cfg.sweep.random_subset = 5;
            cfg.sweep.seed = seed;
            plan(&cfg.validate().unwrap()).unwrap()
        };
        let a = sub(7);
        assert_eq!(a.len(), 5);
        assert_eq!(a, sub(7), "same seed, same subset");
        assert_ne!(
            a.iter().map(|t| &t.values).collect::<Vec<_>>(),
            sub(8).iter().map(|t| &t.values).collect::<Vec<_>>()
        );
        // A subset trial with seed 7 differs from the full grid's seed-0 trial, but the same
        // overrides always give the same id.
        for t in &a {
            assert_eq!(t.id, trial_id(&t.overrides()));
            assert_eq!(t.seed, 7);
        }
        let again = plan(&paper()).unwrap();
        assert_eq!(
            full.iter().map(|t| &t.id).collect::<Vec<_>>(),
            again.iter().map(|t| &t.id).collect::<Vec<_>>()
        );
        assert_eq!(trial_id(&["a=1".into()]), trial_id(&["a=1".into()]));
        assert_ne!(trial_id(&["a=1".into()]), trial_id(&["a=2".into()]));
    }

    #[test]
    fn repeats_get_consecutive_seeds_and_distinct_ids() {
        let cfg = crate::config::parse(
            "[sweep]\nrepeats = 3\nseed = 10\n[sweep.grid]\n\"model.rank\" = [4, 8]\n",
            None,
            &[] as &[&str],
        )
        .unwrap();
        let t = plan(&cfg).unwrap();
        let got: Vec<(String, u64, usize)> = t
            .iter()
            .map(|t| (t.value_text("model.rank"), t.seed, t.repeat))
            .collect();
        let want: Vec<(String, u64, usize)> = [
            ("4", 10, 0),
            ("4", 11, 1),
            ("4", 12, 2),
            ("8", 10, 0),
            ("8", 11, 1),
            ("8", 12, 2),
        ]
        .iter()
        .map(|(a, b, c)| (a.to_string(), *b, *c))
        .collect();
        assert_eq!(got, want);
        assert_eq!(
            t.iter()
                .map(|t| &t.id)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            6
        );
    }

    #[test]
    fn an_empty_grid_is_one_trial_and_impossible_constraints_are_errors() {
        let cfg = crate::config::parse("", None, &[] as &[&str]).unwrap();
        let t = plan(&cfg).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].overrides(), ["train.seed=0"]);
        let cfg = crate::config::parse(
            "[sweep]\nconstraints = [\"model.rank > 100\"]\n[sweep.grid]\n\"model.rank\" = [4, 4]\n",
            None,
            &[] as &[&str],
        )
        .unwrap();
        let e = plan(&cfg).unwrap_err();
        let paths: Vec<&str> = e.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["sweep.grid.\"model.rank\"", "sweep.constraints"],
            "{e}"
        );
    }

    #[test]
    fn a_grid_point_that_breaks_validation_is_reported_by_trial_config() {
        let cfg = crate::config::parse(
            "[sweep.grid]\n\"model.order\" = [5]\n\"model.steps\" = [3]\n",
            None,
            &[] as &[&str],
        )
        .unwrap();
        let t = plan(&cfg).unwrap();
        let e = trial_config(&cfg, &t[0]).unwrap_err();
        assert!(e.to_string().contains("model.order"), "{e}");
    }
}
