//! `[sweep]`: a hyper-parameter grid over any config keys (the paper's S/N/C/M grid).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::issues::{check, ConfigErrors};
use super::MetricMode;
use crate::metric::{ranking_names, Metric};

/// A comparison operator of a [`Constraint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// One side of a [`Constraint`]: a config key or a literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A dotted config key, e.g. `model.order`.
    Key(String),
    /// A literal value.
    Value(toml::Value),
}

/// A parsed `sweep.constraints` entry, `A OP B`.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// Left side.
    pub left: Operand,
    /// The comparison.
    pub op: CmpOp,
    /// Right side.
    pub right: Operand,
}

impl Constraint {
    /// Parses `A OP B`; keys must be among `known_keys`.
    pub fn parse(text: &str, known_keys: &[String]) -> Result<Constraint, String> {
        const OPS: [(&str, CmpOp); 6] = [
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ];
        let form = "write `A OP B` with OP one of >=, <=, >, <, ==, != and A, B config keys \
                    (model.steps) or literals (3, 1.5, true, \"x\")";
        let (at, sym, op) = OPS
            .iter()
            .filter_map(|(sym, op)| text.find(sym).map(|at| (at, *sym, *op)))
            .min_by_key(|(at, sym, _)| (*at, std::cmp::Reverse(sym.len())))
            .ok_or_else(|| format!("{text:?} has no comparison; {form}"))?;
        let operand = |side: &str| -> Result<Operand, String> {
            let side = side.trim();
            if side.is_empty() {
                return Err(format!("{text:?} lacks a side of `{sym}`; {form}"));
            }
            if let Some(v) = format!("v = {side}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
            {
                return Ok(Operand::Value(v));
            }
            if known_keys.iter().any(|k| k == side) {
                return Ok(Operand::Key(side.to_owned()));
            }
            let hint = super::suggest(side, known_keys.iter().map(String::as_str));
            Err(format!(
                "{side:?} in {text:?} is not a config key{hint} nor a literal"
            ))
        };
        Ok(Constraint {
            left: operand(&text[..at])?,
            op,
            right: operand(&text[at + sym.len()..])?,
        })
    }

    /// Whether the constraint holds, with keys resolved by `lookup`. Numbers compare as
    /// numbers; other values only with `==`/`!=`; an unknown key or mixed types do not hold.
    pub fn holds(&self, lookup: impl Fn(&str) -> Option<toml::Value>) -> bool {
        let value = |o: &Operand| match o {
            Operand::Key(k) => lookup(k),
            Operand::Value(v) => Some(v.clone()),
        };
        let (Some(a), Some(b)) = (value(&self.left), value(&self.right)) else {
            return false;
        };
        let num = |v: &toml::Value| match v {
            toml::Value::Integer(i) => Some(*i as f64),
            toml::Value::Float(f) => Some(*f),
            _ => None,
        };
        let ord = match (num(&a), num(&b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ if a == b => Some(std::cmp::Ordering::Equal),
            _ => None,
        };
        use std::cmp::Ordering::*;
        match (self.op, ord) {
            (CmpOp::Eq, o) => o == Some(Equal),
            (CmpOp::Ne, o) => o != Some(Equal) && (o.is_some() || a != b),
            (_, None) => false,
            (CmpOp::Ge, Some(o)) => o != Less,
            (CmpOp::Le, Some(o)) => o != Greater,
            (CmpOp::Gt, Some(o)) => o == Greater,
            (CmpOp::Lt, Some(o)) => o == Less,
        }
    }
}

/// How a sweep spends its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Every trial trains to its end.
    #[default]
    None,
    /// Asynchronous successive halving (ASHA, Li et al. 2020): trials pause at rungs
    /// `grace_steps · reduction_factor^k`; one whose metric there is not in the best
    /// 1/`reduction_factor` of the values recorded at that rung so far stops.
    Asha,
}

/// `[sweep]` section. Only `convtt-launch sweep …` reads it; a training run ignores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    /// Dotted config key → the values to try, e.g. `"model.order" = [1, 2, 3, 5]`.
    pub grid: BTreeMap<String, Vec<toml::Value>>,
    /// Conditions every trial must meet, e.g. `"model.steps >= model.order"`: `A OP B` with OP
    /// one of `>=`, `<=`, `>`, `<`, `==`, `!=` and A, B config keys or literals (numbers,
    /// `true`/`false`, quoted strings). See [`Constraint`].
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
    /// `none` or `asha` (early stopping across trials).
    pub scheduler: Scheduler,
    /// ASHA: the first rung (steps); `train.valid_every` must divide it.
    pub grace_steps: u64,
    /// ASHA: rungs grow by this factor, and 1/this of the trials at a rung go on (≥ 2).
    pub reduction_factor: u64,
    /// ASHA: the steps a trial that is never stopped trains (its `train.max_steps`; 0: the
    /// base config's `train.max_steps`).
    pub max_steps: u64,
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
            scheduler: Scheduler::None,
            grace_steps: 0,
            reduction_factor: 3,
            max_steps: 0,
        }
    }
}

impl SweepConfig {
    /// Whether a larger [`SweepConfig::metric`] is better (PSNR, SSIM, accuracy) or a smaller
    /// one: the metric's own direction ([`crate::metric`]).
    pub fn metric_mode(&self) -> MetricMode {
        Metric::ranking(&self.metric).map_or(MetricMode::Min, |m| m.mode)
    }

    /// ASHA's rungs for trials of `max_steps` steps: `grace · η^k` below `max_steps`.
    pub fn rungs(&self, max_steps: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut r = self.grace_steps;
        while self.scheduler == Scheduler::Asha && r >= 1 && r < max_steps {
            out.push(r);
            r = r.saturating_mul(self.reduction_factor.max(2));
        }
        out
    }

    pub(crate) fn validate(&self, errs: &mut ConfigErrors, known_keys: &[String]) {
        if self.scheduler == Scheduler::Asha {
            check(errs, self.grace_steps >= 1, "sweep.grace_steps", || {
                "must be at least 1 with scheduler = \"asha\" (the first rung, in steps)".into()
            });
            check(
                errs,
                self.reduction_factor >= 2,
                "sweep.reduction_factor",
                || format!("must be at least 2 (got {})", self.reduction_factor),
            );
        }
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
        for (i, c) in self.constraints.iter().enumerate() {
            if let Err(msg) = Constraint::parse(c, known_keys) {
                errs.push(format!("sweep.constraints[{i}]"), msg);
            }
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
            Metric::ranking(&self.metric).is_some(),
            "sweep.metric",
            || {
                format!(
                    "unknown metric {:?}; one of {}",
                    self.metric,
                    ranking_names().join(", ")
                )
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        crate::config::known_leaf_keys()
    }

    #[test]
    fn constraints_parse_and_evaluate() {
        let c = Constraint::parse("model.steps >= model.order", &keys()).unwrap();
        assert_eq!(c.op, CmpOp::Ge);
        let at = |n: i64, m: i64| {
            move |k: &str| match k {
                "model.order" => Some(toml::Value::Integer(n)),
                "model.steps" => Some(toml::Value::Integer(m)),
                _ => None,
            }
        };
        assert!(c.holds(at(3, 3)) && c.holds(at(1, 5)) && !c.holds(at(5, 3)));
        let c = Constraint::parse("model.rank<8", &keys()).unwrap();
        assert!(c.holds(|_| Some(toml::Value::Integer(4))));
        assert!(!c.holds(|_| Some(toml::Value::Float(8.0))));
        let c = Constraint::parse("model.cell != \"convlstm\"", &keys()).unwrap();
        assert!(c.holds(|_| Some(toml::Value::String("convttlstm".into()))));
        assert!(!c.holds(|_| Some(toml::Value::String("convlstm".into()))));
        let c = Constraint::parse("model.output_sigmoid == true", &keys()).unwrap();
        assert!(!c.holds(|_| Some(toml::Value::Boolean(false))));
    }

    #[test]
    fn bad_constraints_name_the_problem() {
        let e = Constraint::parse("model.steps => model.order", &keys()).unwrap_err();
        assert!(
            e.contains("lacks a side") || e.contains("not a config key"),
            "{e}"
        );
        let e = Constraint::parse("model.stepz >= model.order", &keys()).unwrap_err();
        assert!(e.contains("did you mean `model.steps`"), "{e}");
        let e = Constraint::parse("model.steps", &keys()).unwrap_err();
        assert!(e.contains("no comparison"), "{e}");
        let errs = crate::config::parse(
            "[sweep]\nconstraints = [\"model.steps >= model.order\", \"model.x < 3\"]\n",
            None,
            &[] as &[&str],
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs}");
        assert_eq!(errs.issues[0].path, "sweep.constraints[1]");
    }

    #[test]
    fn metric_direction() {
        let mode = |m: &str| {
            SweepConfig {
                metric: m.into(),
                ..SweepConfig::default()
            }
            .metric_mode()
        };
        assert_eq!(mode("valid.loss"), MetricMode::Min);
        assert_eq!(mode("valid.psnr"), MetricMode::Max);
        assert_eq!(mode("valid.ssim"), MetricMode::Max);
        assert_eq!(mode("valid.mse"), MetricMode::Min);
        // The bug this replaced guessed from the name's suffix: accuracy was minimised.
        assert_eq!(mode("valid.accuracy"), MetricMode::Max);
    }
}
