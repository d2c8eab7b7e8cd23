//! `convtt-launch sweep submit`: renders `slurm/sweep.sbatch` for the sweep's unfinished trials
//! (one array task per trial, `--array=<indices>%<sweep.array_parallel>`), writes it to
//! `<sweep>/sweep.sbatch` and submits it with `sbatch --parsable`.

use std::path::{Path, PathBuf};
use std::process::Command;

use convtt_core::exit;
use convtt_core::fsutil::write_atomic;

use super::task::{State, TrialStatus};
use super::{write_plan, Manifest, Planned, SweepDir};
use crate::error::{Error, Result};

/// The template shipped in `slurm/sweep.sbatch` (compiled in, so the binary works anywhere).
pub const TEMPLATE: &str = include_str!("../../../slurm/sweep.sbatch");

/// Options of `sweep submit`.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// A template other than the built-in `slurm/sweep.sbatch`.
    pub template: Option<PathBuf>,
    /// Only write `<sweep>/sweep.sbatch`.
    pub dry_run: bool,
    /// Extra `sbatch` options (before the script: they override its directives).
    pub sbatch_args: Vec<String>,
    /// `--cpus-per-task` of every array task (default: the trial's workers, 8 per GPU).
    pub cpus_per_task: Option<usize>,
    /// Resubmit failed trials whose retry budget is spent (their budget is reset).
    pub retry_failed: bool,
    /// Only the failed trials (`submit --failed`), each with a fresh retry budget.
    pub only_failed: bool,
    /// `--worker` for the trials' launchers.
    pub worker: Option<PathBuf>,
}

/// `0-3,7,9-10`: indices (sorted) as a Slurm array range list.
pub fn array_ranges(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            indices[i].to_string()
        } else {
            format!("{}-{}", indices[i], indices[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Quotes `s` for a POSIX shell (single quotes unless it is plainly safe).
pub fn sh_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Fills `{{name}}` placeholders; an unknown or unfilled placeholder is an error naming it.
pub fn render(template: &str, vars: &[(&str, String)], source: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| Error::Usage(format!("{source}: an unclosed `{{{{` placeholder")))?;
        let name = after[..end].trim();
        let value = vars.iter().find(|(k, _)| *k == name).ok_or_else(|| {
            Error::Usage(format!(
                "{source}: unknown placeholder {{{{{name}}}}}; known: {}",
                vars.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ))
        })?;
        out.push_str(&value.1);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    Ok(cwd.join(p))
}

/// Writes the plan and the rendered script; submits it unless `dry_run`. Prints the job id.
pub fn submit(dir: &SweepDir, planned: &Planned, opts: &SubmitOptions) -> Result<()> {
    let dir = SweepDir(absolute(&dir.0)?);
    write_plan(&dir, planned)?;
    let m = &planned.manifest;
    let todo = unfinished(&dir, m, opts)?;
    if todo.is_empty() {
        println!(
            "all {} trials of {} are finished (or failed without retries left: \
             --retry-failed); nothing to submit",
            m.trials.len(),
            dir.0.display()
        );
        return Ok(());
    }
    let script = script(&dir, planned, opts, &todo)?;
    let path = dir.0.join("sweep.sbatch");
    write_atomic(&path, script.as_bytes())?;
    let logs = dir.0.join("slurm");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    eprintln!(
        "sweep: {} of {} trials to run as array {}; script {}",
        todo.len(),
        m.trials.len(),
        array_ranges(&todo),
        path.display()
    );
    if opts.dry_run {
        println!("{}", path.display());
        return Ok(());
    }
    let job = sbatch(&path, &opts.sbatch_args)?;
    let record = dir.0.join("submissions.log");
    let mut old = std::fs::read_to_string(&record).unwrap_or_default();
    old.push_str(&format!("{job} {}\n", array_ranges(&todo)));
    write_atomic(&record, old.as_bytes())?;
    println!("{job}");
    eprintln!(
        "sweep: submitted array job {job}; `squeue -j {job}` to watch, `convtt-launch sweep \
         report --sweep-dir {}` for results",
        dir.0.display()
    );
    Ok(())
}

/// The indices of the trials still to run (failed ones without retries left too, with a fresh
/// budget, with `retry_failed`); with `only_failed`, only the failed ones.
fn unfinished(dir: &SweepDir, m: &Manifest, opts: &SubmitOptions) -> Result<Vec<usize>> {
    let mut todo = Vec::new();
    for t in &m.trials {
        let run_dir = dir.trial(&t.id);
        let mut st = TrialStatus::read(&run_dir);
        let state = st.effective(&run_dir);
        if opts.only_failed {
            if state == State::Failed {
                // A dry run changes nothing on disk.
                if !opts.dry_run {
                    st.grant_rerun();
                    st.write(&run_dir)?;
                }
                todo.push(t.index);
            }
            continue;
        }
        let retry_failed = opts.retry_failed;
        match state {
            State::Done | State::Stopped => {}
            State::Failed if !st.can_retry(m.max_retries) => {
                if retry_failed {
                    if !opts.dry_run {
                        st.grant_rerun();
                        st.write(&run_dir)?;
                    }
                    todo.push(t.index);
                }
            }
            _ => todo.push(t.index),
        }
    }
    Ok(todo)
}

/// The sbatch script of the array over `todo`: the template (`--template` or
/// `slurm/sweep.sbatch`) with its variables filled in.
fn script(
    dir: &SweepDir,
    planned: &Planned,
    opts: &SubmitOptions,
    todo: &[usize],
) -> Result<String> {
    let (m, launch) = (&planned.manifest, &planned.base.launch);
    // Packs of K trials per array task (launch.trials_per_gpu): CPU trials split the task's
    // CPUs, GPU trials share its GPUs.
    let k = launch.trials_per_gpu.max(1);
    let cpus = opts.cpus_per_task.unwrap_or(if launch.gpus > 0 {
        8 * launch.gpus
    } else {
        launch.cpu_workers.max(1) * k
    });
    let (template, source) = match &opts.template {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?,
            p.display().to_string(),
        ),
        None => (TEMPLATE.to_owned(), "slurm/sweep.sbatch".to_owned()),
    };
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let worker_arg = match &opts.worker {
        Some(w) => format!(
            " --worker {}",
            sh_quote(&absolute(w)?.display().to_string())
        ),
        None => String::new(),
    };
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let gpus_directive = if launch.gpus > 0 {
        format!("#SBATCH --gpus-per-task={}", launch.gpus)
    } else {
        "# (CPU trials: no GPUs requested)".into()
    };
    // With packs the array runs over pack numbers and the script maps each to its trials.
    let (array, packs, task_index) = if k > 1 {
        let packs: Vec<String> = todo
            .chunks(k)
            .map(|c| {
                let ids: Vec<String> = c.iter().map(usize::to_string).collect();
                format!("\"{}\"", ids.join(","))
            })
            .collect();
        (
            format!("0-{}%{}", packs.len() - 1, m.array_parallel),
            format!("PACKS=({})  # trials of each array task", packs.join(" ")),
            "\"${PACKS[$SLURM_ARRAY_TASK_ID]}\"".to_owned(),
        )
    } else {
        (
            format!("{}%{}", array_ranges(todo), m.array_parallel),
            "# (one trial per array task)".to_owned(),
            "\"$SLURM_ARRAY_TASK_ID\"".to_owned(),
        )
    };
    let vars = [
        ("job_name", format!("sweep-{}", launch.name)),
        ("array", array),
        ("packs", packs),
        ("task_index", task_index),
        ("cpus_per_task", cpus.to_string()),
        ("gpus_directive", gpus_directive),
        ("workdir", sh_quote(&cwd.display().to_string())),
        ("sweep_dir", sh_quote(&dir.0.display().to_string())),
        ("launch", sh_quote(&exe.display().to_string())),
        ("worker_arg", worker_arg),
    ];
    render(&template, &vars, &source)
}

/// Submits `script` with `sbatch --parsable`; returns the job id.
fn sbatch(script: &Path, extra: &[String]) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(extra)
        .arg(script)
        .output()
        .map_err(|e| Error::GaveUp {
            code: exit::UNAVAILABLE,
            reason: format!("cannot run sbatch ({e})"),
            detail: "; is Slurm installed here? `--dry-run` writes the script without it".into(),
        })?;
    if !out.status.success() {
        return Err(Error::GaveUp {
            code: 1,
            reason: format!("sbatch {} failed ({})", script.display(), out.status),
            detail: format!(": {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.trim().split(';').next().unwrap_or("").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_ranges_compress_runs() {
        assert_eq!(array_ranges(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_ranges(&[0, 2, 3, 4, 7, 9, 10]), "0,2-4,7,9-10");
        assert_eq!(array_ranges(&[5]), "5");
        assert_eq!(array_ranges(&[]), "");
    }

    #[test]
    fn quoting_and_rendering() {
        assert_eq!(sh_quote("/a/b-c_1.toml"), "/a/b-c_1.toml");
        assert_eq!(sh_quote("/a b/it's"), r"'/a b/it'\''s'");
        let r = render(
            "x={{a}} y={{ b }}",
            &[("a", "1".into()), ("b", "2".into())],
            "t",
        )
        .unwrap();
        assert_eq!(r, "x=1 y=2");
        let e = render("{{c}}", &[("a", "1".into())], "t").unwrap_err();
        assert!(e.to_string().contains("unknown placeholder {{c}}"), "{e}");
        assert!(render("{{a", &[("a", "1".into())], "t").is_err());
    }

    #[test]
    fn the_shipped_template_renders_completely() {
        let vars: Vec<(&str, String)> = [
            "job_name",
            "array",
            "cpus_per_task",
            "gpus_directive",
            "workdir",
            "sweep_dir",
            "launch",
            "worker_arg",
            "packs",
            "task_index",
        ]
        .into_iter()
        .map(|k| (k, format!("<{k}>")))
        .collect();
        let s = render(TEMPLATE, &vars, "slurm/sweep.sbatch").unwrap();
        assert!(s.contains("#SBATCH --array=<array>"));
        assert!(s.contains("#SBATCH --requeue"));
        assert!(s.contains("#SBATCH --signal=USR2@"));
        assert!(s.contains("sweep task --sweep-dir"));
        assert!(s.contains("--index <task_index>") && s.contains("\n<packs>\n"));
        assert!(s.contains("scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\""));
        assert!(!s.contains("{{"));
    }
}
