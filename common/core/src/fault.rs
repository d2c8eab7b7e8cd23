//! Fault injection for rehearsals and tests: `CONVTT_FAULT` makes a worker misbehave at a
//! chosen point, so every recovery path can be exercised with the real binaries.
//!
//! Off unless the variable is set. Its value is a comma-separated list of faults, each
//! `kind[:key=value]…`:
//!
//! | fault | effect |
//! |---|---|
//! | `kill:rank=1:step=25` | the worker SIGKILLs itself |
//! | `exit:rank=0:step=25:code=3` | the worker exits with `code` (default 3) |
//! | `hang:rank=1:step=30:phase=data` | the worker's training thread stops making progress (its heartbeat thread, if any, stays alive) |
//! | `slow:rank=1:ms=200` | the worker sleeps `ms` before each step from `step` on (default 0) |
//! | `diverge:rank=1:step=10` | the lowest bit of one parameter flips (state checksums then disagree) |
//!
//! Keys: `rank` (default: every rank), `step` (fires when the worker is about to take step
//! `step + 1`, i.e. `step` steps are done; default 0), `phase` (`data`: before the batch is
//! fetched; `forward`: before the step, the default; `validation`; `checkpoint`: before a
//! checkpoint commit; `recovery`: in a replacement, right after it installed its peer's
//! state; `allreduce`: right after the gradient was sent to the all-reduce, `kill`/`exit`
//! only), `attempt` (default 0: a restarted or replacement worker, whose attempt
//! number is higher, does not misbehave again).

use std::fmt;

/// The variable that holds the faults.
pub const VAR: &str = "CONVTT_FAULT";

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL itself.
    Kill,
    /// Exit with this code.
    Exit(i32),
    /// Stop making progress for good.
    Hang,
    /// Sleep this many milliseconds before each step.
    Slow(u64),
    /// Flip the lowest bit of one parameter.
    Diverge,
}

/// Where in the training loop a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the next batch is fetched.
    Data,
    /// Before the step's forward pass.
    Forward,
    /// At the start of a validation.
    Validation,
    /// Before a checkpoint is committed.
    Checkpoint,
    /// In a replacement worker, right after it installed a peer's state (rehearses the
    /// checksum check of peer recovery with `diverge`).
    Recovery,
    /// Right after this rank sent its gradient to the all-reduce, before the result (`kill`
    /// and `exit` only): the collective may complete without the sender.
    AllReduce,
}

impl Phase {
    /// The name used in `CONVTT_FAULT`, heartbeats and post-mortems.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Data => "data",
            Phase::Forward => "forward",
            Phase::Validation => "validation",
            Phase::Checkpoint => "checkpoint",
            Phase::Recovery => "recovery",
            Phase::AllReduce => "allreduce",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What it does.
    pub action: Action,
    /// The rank that misbehaves (`None`: every rank).
    pub rank: Option<u32>,
    /// Steps done when it fires (for `slow`: from then on).
    pub step: u64,
    /// Where it fires.
    pub phase: Phase,
    /// The attempt in which it fires.
    pub attempt: u32,
}

impl Fault {
    /// Whether this fault fires for `rank` in `attempt` at `phase` with `step` steps done.
    pub fn fires(&self, rank: u32, attempt: u32, phase: Phase, step: u64) -> bool {
        let here = self.rank.is_none_or(|r| r == rank) && self.attempt == attempt;
        let now = match self.action {
            Action::Slow(_) => step >= self.step,
            _ => step == self.step,
        };
        here && now && self.phase == phase
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.action {
            Action::Kill => "kill".to_owned(),
            Action::Exit(c) => format!("exit (code {c})"),
            Action::Hang => "hang".to_owned(),
            Action::Slow(ms) => format!("slow ({ms} ms per step)"),
            Action::Diverge => "diverge".to_owned(),
        };
        let rank = self
            .rank
            .map_or("every rank".to_owned(), |r| format!("rank {r}"));
        write!(
            f,
            "{kind} on {rank} at step {} in phase {} of attempt {}",
            self.step,
            self.phase.name(),
            self.attempt
        )
    }
}

/// Parses a `CONVTT_FAULT` value. The error names the fault and what is wrong with it.
pub fn parse(text: &str) -> Result<Vec<Fault>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_one)
        .collect()
}

/// The faults of `CONVTT_FAULT` in this process's environment (none when unset).
pub fn from_env() -> Result<Vec<Fault>, String> {
    match std::env::var(VAR) {
        Ok(v) => parse(&v).map_err(|e| format!("{VAR}={v:?}: {e}")),
        Err(_) => Ok(Vec::new()),
    }
}

fn parse_one(text: &str) -> Result<Fault, String> {
    let mut parts = text.split(':');
    let kind = parts.next().unwrap_or_default();
    let mut keys = std::collections::BTreeMap::new();
    for p in parts {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected key=value, got {p:?}"))?;
        let allowed = ["rank", "step", "phase", "attempt", "code", "ms"];
        if !allowed.contains(&k) {
            return Err(format!(
                "{text:?}: unknown key {k:?} (keys: {})",
                allowed.join(", ")
            ));
        }
        keys.insert(k, v);
    }
    let num = |k: &str| -> Result<Option<u64>, String> {
        keys.get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{text:?}: {k} must be a non-negative integer, got {v:?}"))
            })
            .transpose()
    };
    let action = match kind {
        "kill" => Action::Kill,
        "exit" => {
            let code = keys.get("code").map_or(Ok(3), |v| {
                v.parse::<i32>()
                    .map_err(|_| format!("{text:?}: code must be an integer, got {v:?}"))
            })?;
            Action::Exit(code)
        }
        "hang" => Action::Hang,
        "slow" => Action::Slow(num("ms")?.ok_or_else(|| format!("{text:?}: slow needs ms=N"))?),
        "diverge" => Action::Diverge,
        other => {
            return Err(format!(
                "unknown fault {other:?} (kill, exit, hang, slow, diverge)"
            ))
        }
    };
    let phase = match keys.get("phase").copied() {
        None | Some("forward") => Phase::Forward,
        Some("data") => Phase::Data,
        Some("validation") => Phase::Validation,
        Some("checkpoint") => Phase::Checkpoint,
        Some("recovery") => Phase::Recovery,
        Some("allreduce") => Phase::AllReduce,
        Some(p) => {
            return Err(format!(
                "{text:?}: unknown phase {p:?} (data, forward, allreduce, validation, \
                 checkpoint, recovery)"
            ))
        }
    };
    let rank = num("rank")?
        .map(|r| u32::try_from(r).map_err(|_| format!("{text:?}: rank {r} is too large")))
        .transpose()?;
    let attempt = num("attempt")?.unwrap_or(0);
    Ok(Fault {
        action,
        rank,
        step: num("step")?.unwrap_or(0),
        phase,
        attempt: u32::try_from(attempt).map_err(|_| format!("{text:?}: attempt too large"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_forms_parse() {
        let f = parse("kill:rank=1:step=25, exit:rank=0:step=25:code=7,hang:rank=1:step=30:phase=data,slow:rank=1:ms=200,diverge:step=3:attempt=1").unwrap();
        assert_eq!(f.len(), 5);
        assert_eq!(f[0].action, Action::Kill);
        assert_eq!(
            (f[0].rank, f[0].step, f[0].phase),
            (Some(1), 25, Phase::Forward)
        );
        assert_eq!(f[1].action, Action::Exit(7));
        assert_eq!((f[2].action, f[2].phase), (Action::Hang, Phase::Data));
        assert_eq!((f[3].action, f[3].step), (Action::Slow(200), 0));
        assert_eq!((f[4].rank, f[4].attempt), (None, 1));
        assert_eq!(parse("exit:step=2").unwrap()[0].action, Action::Exit(3));
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("explode:rank=1", "unknown fault \"explode\""),
            ("kill:rank=x", "rank must be a non-negative integer"),
            ("kill:rnak=1", "unknown key \"rnak\""),
            ("kill:rank", "expected key=value"),
            ("hang:phase=lunch", "unknown phase \"lunch\""),
            ("slow:rank=1", "slow needs ms=N"),
            ("exit:code=x", "code must be an integer"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn a_fault_fires_once_where_it_is_aimed_and_slow_keeps_firing() {
        let k = parse("kill:rank=1:step=5").unwrap()[0];
        assert!(k.fires(1, 0, Phase::Forward, 5));
        assert!(!k.fires(0, 0, Phase::Forward, 5));
        assert!(!k.fires(1, 1, Phase::Forward, 5), "not in a later attempt");
        assert!(!k.fires(1, 0, Phase::Data, 5));
        assert!(!k.fires(1, 0, Phase::Forward, 6));
        let s = parse("slow:ms=10:step=3").unwrap()[0];
        assert!(!s.fires(2, 0, Phase::Forward, 2));
        assert!(s.fires(2, 0, Phase::Forward, 3) && s.fires(0, 0, Phase::Forward, 90));
    }
}
