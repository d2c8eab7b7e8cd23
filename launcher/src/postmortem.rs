//! A hung run's post-mortem: before the launcher kills anything it writes
//! `<run>/postmortem-a<attempt>.txt` and `.json` — per rank the phase, the step, the seconds
//! since its last progress and the collective it waits in, the native stack of every thread
//! of every worker of this node, and a one-sentence verdict naming the culprit.
//!
//! Stacks come from `eu-stack` (elfutils), else `gdb -batch`, else `/proc/<pid>/task/*`
//! (each thread's name, state and kernel wait channel) when neither tool is installed or
//! allowed to attach.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use convtt_core::protocol::Phase;
use serde_json::json;

/// One rank as the agent hub last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RankView {
    /// Global rank.
    pub rank: u32,
    /// The phase of its last heartbeat.
    pub phase: Phase,
    /// Its steps done.
    pub step: u64,
    /// Seconds since its progress last changed.
    pub no_progress_secs: f64,
    /// Seconds since its last message of any kind.
    pub silent_secs: f64,
    /// The collective it has joined and waits in (e.g. `all_reduce #61`).
    pub waiting_in: Option<String>,
}

/// What the hub concluded: the verdict sentence and every local rank's view.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    /// One sentence naming the culprit ("rank 1 stuck in data loading at step 30 for 95 s;
    /// rank 0 waiting in all_reduce #61").
    pub verdict: String,
    /// This node's ranks.
    pub ranks: Vec<RankView>,
}

impl Diagnosis {
    /// The verdict for ranks `stuck` (no progress, not in a collective) given every view.
    pub fn verdict_for(stuck: &[u32], ranks: &[RankView]) -> String {
        let mut parts: Vec<String> = Vec::new();
        for r in ranks.iter().filter(|r| stuck.contains(&r.rank)) {
            parts.push(format!(
                "rank {} stuck in {} at step {} for {:.0} s",
                r.rank,
                r.phase.name(),
                r.step,
                r.no_progress_secs
            ));
        }
        let mut waiting: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for r in ranks.iter().filter(|r| !stuck.contains(&r.rank)) {
            if let Some(w) = &r.waiting_in {
                waiting.entry(w.as_str()).or_default().push(r.rank);
            }
        }
        for (what, rs) in waiting {
            parts.push(format!(
                "{} {} waiting in {what}",
                if rs.len() > 1 { "ranks" } else { "rank" },
                rs.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// How the stacks were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    EuStack,
    Gdb,
    Proc,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::EuStack => "eu-stack",
            Tool::Gdb => "gdb",
            Tool::Proc => "/proc (no eu-stack or gdb: kernel wait channels only)",
        }
    }
}

/// Writes the post-mortem of `attempt` into `run_dir` with the stacks of `pids` (rank →
/// pid); returns the text file's path. Taking stacks is bounded (`budget` in all).
pub fn write(
    run_dir: &Path,
    attempt: u32,
    diagnosis: &Diagnosis,
    pids: &BTreeMap<u32, u32>,
    budget: Duration,
) -> std::io::Result<PathBuf> {
    let start = Instant::now();
    let mut stacks = BTreeMap::new();
    let mut tool = Tool::Proc;
    for (&rank, &pid) in pids {
        let left = budget.saturating_sub(start.elapsed());
        let (t, text) = stack_of(pid, left);
        tool = t;
        stacks.insert(rank, text);
    }
    let mut txt = format!(
        "convtt post-mortem · attempt {attempt} · {}\n\nverdict: {}\n\n",
        chrono_like_now(),
        diagnosis.verdict
    );
    txt += "rank  pid      phase               step  no progress  silent  waiting in\n";
    for r in &diagnosis.ranks {
        txt += &format!(
            "{:>4}  {:<7}  {:<18} {:>5}  {:>9.1} s  {:>4.1} s  {}\n",
            r.rank,
            pids.get(&r.rank).map_or("-".into(), u32::to_string),
            r.phase.name(),
            r.step,
            r.no_progress_secs,
            r.silent_secs,
            r.waiting_in.as_deref().unwrap_or("-")
        );
    }
    txt += &format!("\nstacks ({}):\n", tool.name());
    for (rank, s) in &stacks {
        txt += &format!(
            "\n==== rank {rank} (pid {}) ====\n{s}\n",
            pids.get(rank).copied().unwrap_or(0)
        );
    }
    let ranks: Vec<_> = diagnosis
        .ranks
        .iter()
        .map(|r| {
            json!({"rank": r.rank, "pid": pids.get(&r.rank), "phase": r.phase.name(),
                "step": r.step, "no_progress_secs": r.no_progress_secs,
                "silent_secs": r.silent_secs, "waiting_in": r.waiting_in,
                "stack": stacks.get(&r.rank)})
        })
        .collect();
    let doc = json!({"attempt": attempt, "verdict": diagnosis.verdict,
        "stack_tool": tool.name(), "ranks": ranks});
    let base = run_dir.join(format!("postmortem-a{attempt}"));
    let txt_path = base.with_extension("txt");
    convtt_core::fsutil::write_atomic(&txt_path, txt.as_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let json_text = serde_json::to_string_pretty(&doc).expect("json");
    convtt_core::fsutil::write_atomic(&base.with_extension("json"), json_text.as_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(txt_path)
}

/// UTC time as `YYYY-MM-DD HH:MM:SS` without a date crate.
fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The native stacks of every thread of `pid`, with the tool that took them.
fn stack_of(pid: u32, budget: Duration) -> (Tool, String) {
    let p = pid.to_string();
    let per_tool = budget.min(Duration::from_secs(30));
    if let Some(out) = run_bounded(Command::new("eu-stack").args(["-p", &p]), per_tool) {
        return (Tool::EuStack, out);
    }
    let mut gdb = Command::new("gdb");
    gdb.args(["-batch", "-nx", "-p", &p, "-ex", "thread apply all bt"]);
    if let Some(out) = run_bounded(&mut gdb, per_tool) {
        return (Tool::Gdb, out);
    }
    (Tool::Proc, proc_threads(pid))
}

/// Runs `cmd` for at most `limit`; its stdout when it succeeded with some output.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Option<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let end = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = reader.join().ok()?;
    (status?.success() && !text.trim().is_empty()).then_some(text)
}

/// Each thread's name, state and kernel wait channel from `/proc`.
fn proc_threads(pid: u32) -> String {
    let mut out = String::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    for t in tasks.into_iter().flatten().flatten() {
        let path = t.path();
        let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
        let stat = read("stat");
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("?")
            .to_owned();
        out += &format!(
            "TID {} ({}): state {state}, wchan {}\n",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan").trim()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(rank: u32, phase: Phase, waiting: Option<&str>) -> RankView {
        RankView {
            rank,
            phase,
            step: 30,
            no_progress_secs: 95.2,
            silent_secs: 0.4,
            waiting_in: waiting.map(str::to_owned),
        }
    }

    #[test]
    fn the_verdict_names_the_culprit_its_phase_and_the_waiting_ranks() {
        let ranks = [
            view(0, Phase::AllReduce, Some("all_reduce #61")),
            view(1, Phase::Data, None),
            view(2, Phase::AllReduce, Some("all_reduce #61")),
            view(3, Phase::AllReduce, Some("all_reduce #61")),
        ];
        assert_eq!(
            Diagnosis::verdict_for(&[1], &ranks),
            "rank 1 stuck in data loading at step 30 for 95 s; ranks 0, 2, 3 waiting in \
             all_reduce #61"
        );
    }

    /// A real process (a sleeping child): the files are written, the table and a stack are
    /// in them.
    #[test]
    fn a_post_mortem_holds_the_table_and_the_stacks() {
        let dir = std::env::temp_dir().join(format!("convtt-pm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let d = Diagnosis {
            verdict: "rank 1 stuck in data loading at step 30 for 95 s".into(),
            ranks: vec![view(1, Phase::Data, None)],
        };
        let pids = BTreeMap::from([(1, child.id())]);
        let path = write(&dir, 2, &d, &pids, Duration::from_secs(20)).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let txt = std::fs::read_to_string(&path).unwrap();
        assert!(path.ends_with("postmortem-a2.txt"));
        assert!(
            txt.contains("verdict: rank 1 stuck in data loading"),
            "{txt}"
        );
        assert!(
            txt.contains(&format!("==== rank 1 (pid {}) ====", child.id())),
            "{txt}"
        );
        // eu-stack and /proc list "TID n"; gdb lists "Thread n".
        assert!(
            txt.contains("TID") || txt.contains("Thread "),
            "a stack or thread list: {txt}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("postmortem-a2.json")).unwrap())
                .unwrap();
        assert_eq!(json["ranks"][0]["phase"], "data loading");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
