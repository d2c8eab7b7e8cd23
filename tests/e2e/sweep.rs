//! `convtt-launch sweep`: plan, a local sweep with finished and failed trials (report, plot,
//! resume skips), an interrupted trial resuming from its checkpoint, and a real single-node
//! Slurm cluster running a sweep as a job array and a training job through `slurm/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::*;

/// Tiny-config overrides for sweep trials: `steps` steps, one CPU worker, validation at the end.
fn trial_overrides(steps: u64) -> Vec<String> {
    let mut o = tiny_overrides(steps);
    // The tiny set is 4 steps an epoch (16 clips, batch 4): enough epochs for `steps`.
    o.push(format!("train.epochs={}", steps.div_ceil(4)));
    o.push("launch.cpu_workers=1".into());
    o.push(format!("train.valid_every={steps}"));
    o
}

fn sweep_cmd(sub: &str, dir: &Path, overrides: &[String]) -> Command {
    let mut cmd = Command::new(bin("convtt-launch"));
    cmd.args(["sweep", sub, "--config"])
        .arg(repo().join("configs/tiny-cpu.toml"))
        .arg("--sweep-dir")
        .arg(dir)
        .args(set_args(overrides));
    cmd
}

/// `report.csv` as (header, rows) of fields.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).expect("report.csv");
    let mut lines = text
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect::<Vec<_>>());
    let head = lines.next().expect("a header");
    (head, lines.collect())
}

fn col(head: &[String], name: &str) -> usize {
    head.iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {head:?}"))
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn sweep_plan_prints_the_papers_grid_with_sizes() {
    let out = run(Command::new(bin("convtt-launch"))
        .args(["sweep", "plan", "--config"])
        .arg(repo().join("configs/sweep-sncm.toml")));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2 + 48 + 1, "{stdout}");
    for h in [
        "filter_size",
        "order",
        "rank",
        "steps",
        "params",
        "GFLOP/step",
    ] {
        assert!(lines[0].contains(h), "{h} in {}", lines[0]);
    }
    assert!(lines[50].starts_with("48 trials"), "{}", lines[50]);
    // A bad constraint is a configuration error naming the entry.
    let out = run(Command::new(bin("convtt-launch"))
        .args(["sweep", "plan", "--config"])
        .arg(repo().join("configs/sweep-sncm.toml"))
        .args([
            "--set",
            "sweep.constraints=[\"model.stepz >= model.order\"]",
        ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        texts(&out).1.contains("sweep.constraints[0]"),
        "{}",
        texts(&out).1
    );
}

/// Four trials, two of which point at a dataset that does not exist: the good ones train, the
/// bad ones fail with exit 5 (never retried), the report ranks and marks them and plots the
/// finished ones; running again skips everything.
#[test]
fn local_sweep_reports_finished_and_failed_trials_and_skips_them_on_rerun() {
    let dir = TempDir::new("sweep-local");
    let sweep = dir.path().join("sweep");
    let mut ov = trial_overrides(2);
    ov.push("sweep.grid.\"model.rank\"=[2, 4]".into());
    ov.push(format!(
        "sweep.grid.\"data.dataset\"=[\"{}\", \"{}\"]",
        tiny_dataset().display(),
        dir.path().join("missing-dataset").display()
    ));
    ov.push("sweep.max_retries=2".into());
    let out = run(sweep_cmd("run", &sweep, &ov).args(["--local", "--parallel", "2"]));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "2 trials fail: {stderr}");
    assert!(stderr.contains("2 trial(s) failed"), "{stderr}");

    let (head, rows) = read_csv(&sweep.join("report.csv"));
    assert_eq!(rows.len(), 4);
    let (state, loss, exit, attempts, best) = (
        col(&head, "state"),
        col(&head, "valid.loss"),
        col(&head, "exit_code"),
        col(&head, "attempts"),
        col(&head, "best"),
    );
    let dataset = col(&head, "data.dataset");
    let mut done = 0;
    for r in &rows {
        if r[dataset].contains("missing-dataset") {
            assert_eq!(r[state], "failed", "{r:?}");
            assert_eq!(r[exit], "5", "a data error: {r:?}");
            assert_eq!(r[attempts], "1", "data errors are not retried: {r:?}");
        } else {
            assert_eq!(r[state], "done", "{r:?}");
            assert!(r[loss].parse::<f64>().unwrap() > 0.0, "{r:?}");
            done += 1;
        }
    }
    assert_eq!(done, 2);
    assert_eq!(rows.iter().filter(|r| r[best] == "true").count(), 1);
    let md = std::fs::read_to_string(sweep.join("report.md")).unwrap();
    assert!(
        md.contains("**1 (best)**") && md.contains("**failed** (exit 5"),
        "{md}"
    );
    assert!(is_png(&sweep.join("report.png")));

    // Again: nothing runs (the finished trials' metrics stay as they were).
    let id = &rows.iter().find(|r| r[state] == "done").unwrap()[1];
    let metrics = sweep.join("trials").join(id).join("metrics.jsonl");
    let before = std::fs::read_to_string(&metrics).unwrap();
    let out = run(sweep_cmd("run", &sweep, &ov).args(["--local", "--parallel", "2"]));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("2 finished, 2 failed without retries left, 0 to run"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&metrics).unwrap(), before);

    // `sweep report` alone, ranked by another metric.
    let out = run(Command::new(bin("convtt-launch"))
        .args(["sweep", "report", "--metric", "valid.psnr", "--sweep-dir"])
        .arg(&sweep));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout
        .contains("ranked by `valid.psnr` (higher is better): 2 done, 0 stopped early, 2 failed"));
}

/// SIGTERM to `sweep run` preempts the running trial after a checkpoint (exit 4); the next run
/// resumes it from that checkpoint and finishes.
#[test]
fn an_interrupted_local_sweep_resumes_its_trial_from_the_checkpoint() {
    let dir = TempDir::new("sweep-resume");
    let sweep = dir.path().join("sweep");
    // Enough steps that the signal lands before the end even on a fast machine.
    let ov = trial_overrides(12);
    let child = sweep_cmd("run", &sweep, &ov)
        .arg("--local")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start convtt-launch sweep run");
    let trial_dir = || -> Option<PathBuf> {
        std::fs::read_dir(sweep.join("trials"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .next()
    };
    let started = wait_for(240, || trial_dir().and_then(|d| latest_step(&d)).is_some());
    assert!(started, "no checkpoint within 240 s");
    let run_dir = trial_dir().unwrap();
    nix_kill(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "preempted: {stderr}");
    let status: toml::Table = std::fs::read_to_string(run_dir.join("status.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(status["state"].as_str(), Some("preempted"), "{status}");
    let at = latest_step(&run_dir).unwrap();
    assert!(at < 12, "interrupted before the end (step {at})");

    let out = run(sweep_cmd("run", &sweep, &ov).arg("--local"));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let status: toml::Table = std::fs::read_to_string(run_dir.join("status.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(status["state"].as_str(), Some("done"));
    assert_eq!(status["preemptions"].as_integer(), Some(1));
    assert_eq!(status["attempts"].as_integer(), Some(1));
    let mut log = String::new();
    for e in std::fs::read_dir(run_dir.join("logs")).unwrap().flatten() {
        log += &std::fs::read_to_string(e.path()).unwrap_or_default();
    }
    assert!(
        log.contains("resumed from") && log.contains(&format!("step-{at:08}")),
        "the second run resumes from step {at}: {log}"
    );
    let losses = train_losses(&run_dir);
    assert_eq!(losses.keys().copied().max(), Some(12));
}

fn nix_kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// A single-node Slurm cluster on localhost (`.ci/slurm-cluster.sh`), stopped on drop.
struct SlurmCluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl SlurmCluster {
    /// Starts the cluster, or says why it cannot.
    fn start(dir: &Path) -> Result<SlurmCluster, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root: the test cluster runs slurmctld and slurmd as root".into());
        }
        let out = Command::new("bash")
            .arg(repo().join(".ci/slurm-cluster.sh"))
            .arg("start")
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run .ci/slurm-cluster.sh: {e}"))?;
        let cluster = SlurmCluster {
            dir: dir.to_owned(),
            conf: dir.join("slurm.conf"),
        };
        if !out.status.success() {
            return Err(format!(
                ".ci/slurm-cluster.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(cluster)
    }

    /// A Slurm client command against this cluster.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// Waits until none of `jobs` is queued or running.
    fn wait_jobs(&self, jobs: &[String], secs: u64) -> bool {
        wait_for(secs, || {
            let out = self
                .cmd("squeue")
                .args(["-h", "-o", "%i %T", "-j", &jobs.join(",")])
                .output();
            out.is_ok_and(|o| o.status.success() && o.stdout.iter().all(u8::is_ascii_whitespace))
        })
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join(".ci/slurm-cluster.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// Starts a cluster, or reports loudly why not: a skip, unless `CONVTT_REQUIRE_SLURM=1`
/// (set by `.ci/test.sh`), where it is a failure.
fn cluster_or_skip(test: &str, dir: &Path) -> Option<SlurmCluster> {
    match SlurmCluster::start(dir) {
        Ok(c) => Some(c),
        Err(reason) => {
            if std::env::var("CONVTT_REQUIRE_SLURM").as_deref() == Ok("1") {
                panic!("CONVTT_REQUIRE_SLURM=1 but Slurm cannot start: {reason}");
            }
            eprintln!("\n*** SKIPPED: {test}: Slurm cannot start here: {reason} ***\n");
            None
        }
    }
}

/// The real thing: a 4-trial sweep as a job array of two tasks packing two trials each
/// (`sweep submit` → `slurm/sweep.sbatch` → `srun convtt-launch sweep task --index 0,1`) and a
/// one-run training job (`slurm/train.sbatch`) on a single-node Slurm cluster; then the report.
#[test]
fn slurm_runs_a_sweep_job_array_and_a_training_job_through_the_templates() {
    let dir = TempDir::new("slurm");
    let Some(cluster) = cluster_or_skip(
        "slurm_runs_a_sweep_job_array_and_a_training_job_through_the_templates",
        &dir.path().join("cluster"),
    ) else {
        return;
    };
    let sweep = dir.path().join("sweep");
    let mut ov = trial_overrides(2);
    ov.push("sweep.grid.\"model.rank\"=[2, 4]".into());
    ov.push("sweep.grid.\"model.order\"=[1, 2]".into());
    // Two trials packed into each array task, splitting its two CPUs.
    ov.push("launch.trials_per_gpu=2".into());
    let out = run(sweep_cmd("submit", &sweep, &ov)
        .env("SLURM_CONF", &cluster.conf)
        .arg("--sbatch-arg=--time=10"));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "sweep submit: {stderr}");
    let array_job = stdout.trim().to_owned();
    assert!(array_job.parse::<u64>().is_ok(), "a job id: {stdout:?}");
    let script = std::fs::read_to_string(sweep.join("sweep.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-1%4")
            && script.contains("PACKS=(\"0,1\" \"2,3\")")
            && script.contains("#SBATCH --cpus-per-task=2"),
        "{script}"
    );

    // One training run through slurm/train.sbatch, on the same cluster.
    let run_dir = dir.path().join("train-run");
    let mut train_ov = trial_overrides(2);
    train_ov.push(format!("launch.run_dir=\"{}\"", run_dir.display()));
    let check = run(Command::new(bin("convtt-launch"))
        .args(["check", "--config"])
        .arg(repo().join("configs/tiny-cpu.toml"))
        .args(set_args(&train_ov)));
    assert_eq!(check.status.code(), Some(0), "{}", texts(&check).1);
    let config = dir.path().join("train.toml");
    std::fs::write(&config, &check.stdout).unwrap();
    let out = run(cluster
        .cmd("sbatch")
        .args([
            "--parsable",
            "--gpus-per-node=0",
            "--cpus-per-task=1",
            "--time=10",
        ])
        .arg(format!("--output={}/train-%j.out", dir.path().display()))
        .arg(format!("--chdir={}", dir.path().display()))
        .env("CONFIG", &config)
        .env("GPUS", "0")
        .env("LAUNCH", bin("convtt-launch"))
        .arg(repo().join("slurm/train.sbatch")));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "sbatch train.sbatch: {stderr}");
    let train_job = stdout.trim().split(';').next().unwrap().to_owned();

    let finished = cluster.wait_jobs(&[array_job.clone(), train_job.clone()], 400);
    let logs = || {
        let mut s = String::new();
        for d in [sweep.join("slurm"), dir.path().to_owned()] {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.path().extension().is_some_and(|x| x == "out") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    s += &format!("\n== {}\n", e.path().display());
                    s += &tail.into_iter().rev().collect::<Vec<_>>().join("\n");
                }
            }
        }
        // A step that fails to launch says why only in the daemons' logs.
        for d in ["slurmd", "slurmctld"] {
            let path = dir.path().join("cluster/log").join(format!("{d}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            s += &format!("\n== {}\n", path.display());
            s += &tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        }
        s
    };
    assert!(finished, "jobs still queued after 400 s:{}", logs());

    let out = run(Command::new(bin("convtt-launch"))
        .args(["sweep", "report", "--sweep-dir"])
        .arg(&sweep));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("4 done, 0 stopped early, 0 failed, 0 running, 0 preempted, 0 pending"),
        "{stdout}{}",
        logs()
    );
    let (head, rows) = read_csv(&sweep.join("report.csv"));
    let job = col(&head, "state");
    assert!(rows.iter().all(|r| r[job] == "done"));
    assert!(is_png(&sweep.join("report.png")));
    // Trials 0, 1 ran in array task 0, trials 2, 3 in task 1.
    for r in &rows {
        let status =
            std::fs::read_to_string(sweep.join("trials").join(&r[1]).join("status.toml")).unwrap();
        let pack = r[0].parse::<usize>().unwrap() / 2;
        assert!(
            status.contains(&format!("slurm_job = \"{array_job}_{pack}\"")),
            "{status}"
        );
    }
    assert!(
        run_dir.join("summary.toml").is_file(),
        "train.sbatch trained the run:{}",
        logs()
    );
    assert_eq!(train_losses(&run_dir).len(), 2);
}

/// The ASHA spec of the tests: 6 learning rates of the tiny config, rungs at steps 1 and 2
/// (η = 2), 4 steps for a trial never stopped, validation every step.
fn asha_overrides() -> Vec<String> {
    let mut ov = trial_overrides(4);
    ov.extend([
        "train.valid_every=1".to_owned(),
        "sweep.grid.\"optim.learning_rate\"=[1e-4, 3e-2, 3e-4, 1e-2, 1e-3, 3e-3]".into(),
        "sweep.scheduler=\"asha\"".into(),
        "sweep.grace_steps=1".into(),
        "sweep.reduction_factor=2".into(),
        "sweep.max_steps=4".into(),
        "sweep.array_parallel=1".into(),
    ]);
    ov
}

/// One ASHA rung record: (trial index, step, value, decision).
fn rung_records(sweep: &Path, rung: usize) -> Vec<(usize, u64, f64, String)> {
    let d = sweep.join("asha").join(format!("rung-{rung}"));
    let mut out: Vec<(usize, u64, f64, String)> = std::fs::read_dir(&d)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let t: toml::Table = std::fs::read_to_string(e.path()).unwrap().parse().unwrap();
            (
                t["index"].as_integer().unwrap() as usize,
                t["step"].as_integer().unwrap() as u64,
                t["value"].as_float().unwrap(),
                t["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort_by_key(|r| r.0);
    out
}

/// `valid` loss of trial `id` at `step`, from its own metrics.jsonl.
fn valid_loss_at(sweep: &Path, id: &str, step: u64) -> Option<f64> {
    let text = std::fs::read_to_string(sweep.join("trials").join(id).join("metrics.jsonl")).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "valid" && r["step"].as_u64() == Some(step))
        .filter_map(|r| r["loss"].as_f64())
        .next_back()
}

/// Checks a finished ASHA sweep against the rule replayed here from the recorded values (each
/// the trial's own validation loss at the rung step), trials in index order; returns the
/// indices of the stopped trials.
fn check_asha(sweep: &Path) -> Vec<usize> {
    let (head, rows) = read_csv(&sweep.join("report.csv"));
    let (state, id) = (col(&head, "state"), col(&head, "id"));
    let ids: std::collections::BTreeMap<usize, String> = rows
        .iter()
        .map(|r| (r[0].parse::<usize>().unwrap(), r[id].clone()))
        .collect();
    let mut alive: Vec<usize> = ids.keys().copied().collect();
    let mut stopped = Vec::new();
    for (rung, step) in [(0usize, 1u64), (1, 2)] {
        let recs = rung_records(sweep, rung);
        assert_eq!(
            recs.iter().map(|r| r.0).collect::<Vec<_>>(),
            alive,
            "exactly the trials still going record at rung {rung}"
        );
        let mut seen: Vec<f64> = Vec::new();
        let mut next = Vec::new();
        for (index, at, value, decision) in recs {
            assert_eq!(at, step);
            let own = valid_loss_at(sweep, &ids[&index], step).expect("a validation at the rung");
            assert_eq!(
                value, own,
                "trial {index}: the value is its own validation loss"
            );
            seen.push(value);
            let better = seen.iter().filter(|&&v| v < value).count();
            let keep = seen.len().div_ceil(2);
            let want = if better < keep { "continue" } else { "stop" };
            assert_eq!(decision, want, "trial {index} at rung {rung}: {seen:?}");
            if want == "continue" {
                next.push(index);
            } else {
                stopped.push(index);
            }
        }
        alive = next;
    }
    for r in &rows {
        let index: usize = r[0].parse().unwrap();
        let want = if stopped.contains(&index) {
            "stopped"
        } else {
            "done"
        };
        assert_eq!(r[state], want, "{r:?}");
    }
    assert!(
        !stopped.is_empty() && !alive.is_empty(),
        "{stopped:?} {alive:?}"
    );
    stopped.sort();
    stopped
}

/// The local ASHA sweep of [`asha_overrides`], run once for the tests that need it (it takes a
/// minute or two): its directory and the stopped trials as [`check_asha`] verified them.
fn local_asha_sweep() -> &'static (PathBuf, Vec<usize>) {
    static SWEEP: std::sync::OnceLock<(PathBuf, Vec<usize>)> = std::sync::OnceLock::new();
    SWEEP.get_or_init(|| {
        // Kept for the whole test process (tiny_dataset's directory lives as long).
        let dir = TempDir::new("sweep-asha");
        let sweep = dir.path().join("sweep");
        std::mem::forget(dir);
        let out = run(sweep_cmd("run", &sweep, &asha_overrides()).args(["--local"]));
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let stopped = check_asha(&sweep);
        (sweep, stopped)
    })
}

/// ASHA on this machine, trials one at a time: the stopped set is what the rule gives for the
/// trials' own validation losses; the report shows the rungs; a stopped trial promoted later
/// trains on from its checkpoint to the end.
#[test]
fn a_local_asha_sweep_stops_the_trials_the_rule_names_and_a_promoted_one_trains_on() {
    let (sweep, stopped) = local_asha_sweep();
    let (sweep, stopped) = (sweep.clone(), stopped.clone());
    let ov = asha_overrides();
    let md = std::fs::read_to_string(sweep.join("report.md")).unwrap();
    assert!(md.contains("Early stopping (ASHA"), "{md}");
    assert!(
        md.contains(&format!("{} stopped early", stopped.len())),
        "{md}"
    );
    assert!(md.contains("stopped at step 1 (ASHA)") || md.contains("stopped at step 2 (ASHA)"));

    // Promote the first stopped trial: it resumes from its rung checkpoint and finishes.
    let (head, rows) = read_csv(&sweep.join("report.csv"));
    let id = rows
        .iter()
        .find(|r| r[0] == stopped[0].to_string())
        .unwrap()[col(&head, "id")]
    .clone();
    let trial = sweep.join("trials").join(&id);
    let paused_at = train_losses(&trial).keys().max().copied().unwrap();
    let out = run(sweep_cmd("resume", &sweep, &ov).args(["--promote", &id]));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let losses = train_losses(&trial);
    assert_eq!(losses.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    let status = std::fs::read_to_string(trial.join("status.toml")).unwrap();
    assert!(status.contains("state = \"done\"") && status.contains("promoted = true"));
    // Resumed from the rung checkpoint: no step before the pause was trained twice.
    let text = std::fs::read_to_string(trial.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "train")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        [1, 2, 3, 4],
        "paused at {paused_at}, every step once"
    );
}

/// `sweep rerun --failed` runs exactly the failed trials again (here after the missing
/// dataset appeared), counting their attempts on; `sweep submit --failed` writes an array over
/// only them.
#[test]
fn rerun_failed_reruns_exactly_the_failed_trials() {
    let dir = TempDir::new("sweep-rerun");
    let sweep = dir.path().join("sweep");
    let late = dir.path().join("late-dataset");
    let mut ov = trial_overrides(1);
    ov.push(format!(
        "sweep.grid.\"data.dataset\"=[\"{}\", \"{}\"]",
        tiny_dataset().display(),
        late.display()
    ));
    ov.push("sweep.max_retries=0".into());
    let out = run(sweep_cmd("run", &sweep, &ov).args(["--local"]));
    assert_eq!(out.status.code(), Some(1), "{}", texts(&out).1);
    let (head, rows) = read_csv(&sweep.join("report.csv"));
    let (state, id) = (col(&head, "state"), col(&head, "id"));
    let good = rows.iter().find(|r| r[state] == "done").unwrap()[id].clone();
    let bad = rows.iter().find(|r| r[state] == "failed").unwrap()[id].clone();
    let good_metrics = sweep.join("trials").join(&good).join("metrics.jsonl");
    let before = std::fs::read_to_string(&good_metrics).unwrap();

    // An array over only the failed one.
    let out = run(sweep_cmd("submit", &sweep, &ov).args(["--failed", "--dry-run"]));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let script = std::fs::read_to_string(sweep.join("sweep.sbatch")).unwrap();
    let bad_index = rows.iter().find(|r| r[id] == bad).unwrap()[0].clone();
    assert!(
        script.contains(&format!("#SBATCH --array={bad_index}-{bad_index}%"))
            || script.contains(&format!("#SBATCH --array={bad_index}%")),
        "{script}"
    );

    std::os::unix::fs::symlink(tiny_dataset(), &late).unwrap();
    let out = run(sweep_cmd("rerun", &sweep, &ov).arg("--failed"));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("running trials [{bad_index}] again")),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&good_metrics).unwrap(), before);
    let status =
        std::fs::read_to_string(sweep.join("trials").join(&bad).join("status.toml")).unwrap();
    assert!(
        status.contains("state = \"done\"") && status.contains("attempts = 2"),
        "{status}"
    );
}

/// The same ASHA spec as a Slurm job array (one task at a time) on the real single-node
/// cluster stops the same trials as the local run.
#[test]
fn a_slurm_asha_sweep_stops_the_same_trials_as_the_local_one() {
    let dir = TempDir::new("slurm-asha");
    let Some(cluster) = cluster_or_skip(
        "a_slurm_asha_sweep_stops_the_same_trials_as_the_local_one",
        &dir.path().join("cluster"),
    ) else {
        return;
    };
    let ov = asha_overrides();
    let want = local_asha_sweep().1.clone();

    let sweep = dir.path().join("sweep");
    let out = run(sweep_cmd("submit", &sweep, &ov)
        .env("SLURM_CONF", &cluster.conf)
        .arg("--sbatch-arg=--time=10"));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "sweep submit: {stderr}");
    let job = stdout.trim().to_owned();
    assert!(
        cluster.wait_jobs(&[job], 500),
        "the ASHA array is still queued"
    );
    let out = run(Command::new(bin("convtt-launch"))
        .args(["sweep", "report", "--sweep-dir"])
        .arg(&sweep));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    assert_eq!(check_asha(&sweep), want);
}
