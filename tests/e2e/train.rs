//! Training through the real launcher and workers on CPU: data parallelism, crash recovery,
//! preemption and resume, on a tiny generated Moving-MNIST set.

use std::process::{Command, Stdio};

use crate::util::*;

/// Adds `convtt-launch`'s arguments (after the program) for the tiny config in `run_dir`.
fn launcher_args<'a>(
    cmd: &'a mut Command,
    run_dir: &std::path::Path,
    overrides: &[String],
) -> &'a mut Command {
    cmd.args(["--quiet-workers", "--config"])
        .arg(repo().join("configs/tiny-cpu.toml"))
        .arg("--run-dir")
        .arg(run_dir)
        .args(set_args(overrides))
}

fn launch(run_dir: &std::path::Path, overrides: &[String], extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin("convtt-launch"));
    launcher_args(&mut cmd, run_dir, overrides).args(extra);
    cmd
}

fn worker_alone(run_dir: &std::path::Path, overrides: &[String]) -> Command {
    let mut cmd = Command::new(bin("convtt-worker"));
    cmd.arg("train")
        .arg("--config")
        .arg(repo().join("configs/tiny-cpu.toml"))
        .arg("--run-dir")
        .arg(run_dir)
        .args(set_args(overrides));
    cmd
}

#[test]
fn two_cpu_workers_match_one_worker_with_the_same_global_batch() {
    let dir = TempDir::new("dp");
    let ov = tiny_overrides(4);
    let two = dir.path().join("two");
    let out = run(&mut launch(&two, &ov, &["--cpu-workers", "2"]));
    assert_eq!(out.status.code(), Some(0), "launcher: {}", texts(&out).1);
    let one = dir.path().join("one");
    let out = run(&mut worker_alone(&one, &ov));
    assert_eq!(out.status.code(), Some(0), "worker: {}", texts(&out).1);

    let (a, b) = (train_losses(&two), train_losses(&one));
    assert_eq!(a.len(), 4);
    for (step, la) in &a {
        let lb = b[step];
        assert!(
            (la - lb).abs() <= 1e-5 * lb.abs().max(1.0),
            "step {step}: {la} vs {lb}"
        );
    }
    assert!(a[&4] < a[&1], "the loss goes down: {a:?}");
    let summary = |d: &std::path::Path| -> toml::Table {
        std::fs::read_to_string(d.join("summary.toml"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (sa, sb) = (summary(&two), summary(&one));
    let (va, vb) = (
        sa["valid"]["mse"].as_float().unwrap(),
        sb["valid"]["mse"].as_float().unwrap(),
    );
    assert!(
        (va - vb).abs() <= 1e-5 * vb,
        "validation after training differs: {va} vs {vb}"
    );
    // Logs per rank, the resolved config and the committed checkpoint are in the run dir.
    for f in [
        "config.toml",
        "logs/0-0.log",
        "logs/0-1.log",
        "checkpoints/LATEST",
    ] {
        assert!(two.join(f).exists(), "{f} missing");
    }
}

#[test]
fn a_killed_worker_restarts_from_the_last_checkpoint_and_continues_identically() {
    let dir = TempDir::new("kill");
    let ov = tiny_overrides(8);
    let reference = dir.path().join("reference");
    let out = run(&mut launch(&reference, &ov, &[]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "reference run: {}",
        texts(&out).1
    );

    let crashed = dir.path().join("crashed");
    // A grace period far longer than the test may take: the surviving worker, waiting in the
    // all-reduce for the dead one, must leave when the launcher tells it the attempt is
    // failing, not when SIGKILL ends the grace period.
    let mut crash_ov = ov.clone();
    crash_ov.push("launch.grace_secs=600".into());
    // The checkpoint restart itself (peer recovery has its own tests in recovery.rs).
    crash_ov.push("launch.recovery=\"checkpoint\"".into());
    let child = launch(&crashed, &crash_ov, &["--max-restarts", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(120, || latest_step(&crashed).is_some_and(|s| s >= 4)),
        "no checkpoint at step 4"
    );
    let workers = children_named(child.id(), "convtt-worker");
    assert!(!workers.is_empty(), "no worker processes found");
    let victim = workers[workers.len() - 1];
    assert!(Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the run completes after a restart: {stderr}"
    );
    assert!(
        stderr.contains("attempt 1"),
        "a second attempt ran: {stderr}"
    );
    assert!(
        !stderr.contains("after SIGTERM: SIGKILL"),
        "the survivor sat out the grace period: {stderr}"
    );

    let (a, b) = (train_losses(&crashed), train_losses(&reference));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (step, la) in &a {
        assert_eq!(
            *la, b[step],
            "step {step} differs from the uninterrupted run"
        );
    }
    assert!(
        no_process_mentions(&crashed),
        "a process of the run survived"
    );
}

/// True when no live process has the run directory on its command line.
fn no_process_mentions(run_dir: &std::path::Path) -> bool {
    let needle = run_dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .all(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            !String::from_utf8_lossy(&cmdline).contains(&needle)
        })
}

#[test]
fn sigterm_commits_a_checkpoint_exits_4_and_resume_continues() {
    let dir = TempDir::new("term");
    let run_dir = dir.path().join("run");
    let ov = tiny_overrides(400);
    let child = launch(&run_dir, &ov, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(120, || train_losses_len(&run_dir) >= 3),
        "training did not start"
    );
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped = latest_step(&run_dir).expect("a committed checkpoint");
    let logged = *train_losses(&run_dir).keys().max().unwrap();
    assert_eq!(stopped, logged, "the checkpoint is at the step reached");
    assert!(no_process_mentions(&run_dir));

    // Resume for two more steps: it continues at the checkpoint's step.
    let mut more = ov.clone();
    more.push(format!("train.max_steps={}", stopped + 2));
    let out = run(&mut launch(&run_dir, &more, &["--resume", "auto"]));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    assert_eq!(latest_step(&run_dir), Some(stopped + 2));
}

fn train_losses_len(run_dir: &std::path::Path) -> usize {
    if !run_dir.join("metrics.jsonl").exists() {
        return 0;
    }
    train_losses(run_dir).len()
}

#[test]
fn resuming_with_a_different_model_is_refused_naming_the_keys() {
    let dir = TempDir::new("mismatch");
    let run_dir = dir.path().join("run");
    let ov = tiny_overrides(2);
    let out = run(&mut worker_alone(&run_dir, &ov));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let mut other = ov.clone();
    other.push("model.rank=5".into());
    other.push("train.max_steps=4".into());
    let out = run(&mut worker_alone(&run_dir, &other));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("model.rank: 4 → 5"), "{stderr}");
    assert_eq!(
        latest_step(&run_dir),
        Some(2),
        "the existing checkpoint is untouched"
    );
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
    let dir = TempDir::new("corrupt");
    let run_dir = dir.path().join("run");
    let ov = tiny_overrides(4);
    let out = run(&mut worker_alone(&run_dir, &ov));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let shard = run_dir.join("checkpoints/step-00000004/shard-00000-of-00001.h5");
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&shard, bytes).unwrap();
    let mut more = ov.clone();
    more.push("train.max_steps=5".into());
    let out = run(&mut worker_alone(&run_dir, &more));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("checksum mismatch"),
        "warns about the bad one: {stderr}"
    );
    assert!(
        stderr.contains("resumed from") && stderr.contains("step-00000002"),
        "{stderr}"
    );
}

/// A tmpfs of `size`, unmounted when dropped.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    /// `None` (and a printed reason) where mounting is impossible (not root, no tmpfs).
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallFs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir));
        if out.status.success() {
            Some(SmallFs(dir.to_owned()))
        } else {
            println!(
                "SKIPPED: cannot mount a {size} tmpfs at {} ({}); the disk-full test needs root",
                dir.display(),
                texts(&out).1.trim()
            );
            None
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A full file system while checkpointing: exit 6 at once (never retried: the same write
/// would fail again), the message says so with the free and the needed space, the committed
/// checkpoint stays valid, the half-written one is removed, and the peer waiting in the
/// all-reduce leaves at once.
#[test]
fn a_full_disk_stops_the_run_with_exit_6_without_retries_and_keeps_the_checkpoints() {
    let dir = TempDir::new("diskfull");
    let Some(fs) = SmallFs::mount(&dir.path().join("fs"), "400k") else {
        return;
    };
    let run_dir = fs.0.join("run");
    let mut ov = tiny_overrides(40);
    ov.extend([
        "checkpoint.every_steps=2".into(),
        "train.valid_every=0".into(),
        "launch.grace_secs=600".into(),
    ]);
    let out = run(&mut launch(&run_dir, &ov, &["--max-restarts", "3"]));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    for want in [
        "No space left on device",
        "a checkpoint needs about",
        "the committed checkpoints are intact",
        "never retried",
    ] {
        assert!(stderr.contains(want), "lacks {want:?}: {stderr}");
    }
    assert!(!stderr.contains("attempt 1"), "no retry: {stderr}");
    assert!(!stderr.contains("after SIGTERM: SIGKILL"), "{stderr}");
    let committed = latest_step(&run_dir).expect("a checkpoint was committed before");
    let resumed = run(Command::new(bin("convtt-worker"))
        .args(["eval", "--config"])
        .arg(repo().join("configs/tiny-cpu.toml"))
        .args(set_args(&ov))
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["--split", "test", "--horizon", "2", "--json"])
        .arg(dir.path().join("eval.json")));
    let (eval_out, eval_err) = texts(&resumed);
    assert!(
        eval_out.contains(&format!("checkpoint step {committed}")),
        "the committed checkpoint still loads: {eval_out}{eval_err}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(run_dir.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `LATEST` naming a step whose manifest is gone (deleted by hand, a broken copy) is damage like
/// any other: a warning naming it, and the previous checkpoint.
#[test]
fn latest_without_a_manifest_is_skipped_with_a_warning_naming_it() {
    let dir = TempDir::new("nomanifest");
    let run_dir = dir.path().join("run");
    let ov = tiny_overrides(4);
    let out = run(&mut worker_alone(&run_dir, &ov));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    std::fs::remove_file(run_dir.join("checkpoints/step-00000004/manifest.toml")).unwrap();
    let mut more = ov.clone();
    more.push("train.max_steps=5".into());
    let out = run(&mut worker_alone(&run_dir, &more));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("names step-00000004 but")
            && stderr.contains("step-00000004 has no manifest.toml"),
        "{stderr}"
    );
    assert!(
        stderr.contains("resumed from") && stderr.contains("step-00000002"),
        "{stderr}"
    );
}

/// A checkpoint written before the trainer state was typed (fixture made with commit 9a4047b:
/// `[state]` assembled from string keys) still resumes; the same checkpoint without
/// `adam_steps` is refused as a data error naming the field, where the old reader took 0.
#[test]
fn a_checkpoint_of_the_untyped_state_format_resumes_and_a_missing_field_is_named() {
    let dir = TempDir::new("untyped");
    let fixture = repo().join("tests/e2e/fixtures/checkpoint-untyped-state/checkpoints");
    let copy = |run_dir: &std::path::Path| {
        let step = run_dir.join("checkpoints/step-00000003");
        std::fs::create_dir_all(&step).unwrap();
        for f in [
            "manifest.toml",
            "rank-00000.toml",
            "shard-00000-of-00001.h5",
        ] {
            std::fs::copy(fixture.join("step-00000003").join(f), step.join(f)).unwrap();
        }
        std::fs::copy(fixture.join("LATEST"), run_dir.join("checkpoints/LATEST")).unwrap();
    };
    // The fixture's model: tiny-cpu with these two overrides, trained 3 steps.
    let mut ov = tiny_overrides(5);
    ov.extend([
        "model.block_widths=[2, 2, 2, 2]".into(),
        "model.rank=2".into(),
    ]);
    ov.push("train.valid_every=0".into());
    let run_dir = dir.path().join("run");
    copy(&run_dir);
    let out = run(&mut worker_alone(&run_dir, &ov));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("resumed from") && stderr.contains("step-00000003"),
        "{stderr}"
    );
    assert_eq!(latest_step(&run_dir), Some(5));

    let broken = dir.path().join("broken");
    copy(&broken);
    let manifest = broken.join("checkpoints/step-00000003/manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("\nadam_steps = 3\n"), "{text}");
    std::fs::write(&manifest, text.replace("\nadam_steps = 3\n", "\n")).unwrap();
    let out = run(&mut worker_alone(&broken, &ov));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("adam_steps") && stderr.contains("manifest.toml"),
        "{stderr}"
    );
    assert_eq!(latest_step(&broken), Some(3), "nothing was written");
}

/// `mpirun -n 2 convtt-launch --cpu-workers 2`: two "nodes" of two workers on this machine.
pub(crate) fn mpirun_launch(run_dir: &std::path::Path, overrides: &[String]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["-n", "2", "--bind-to", "none", "--oversubscribe"])
        .arg(bin("convtt-launch"));
    launcher_args(&mut cmd, run_dir, overrides).args(["--cpu-workers", "2"]);
    cmd
}

#[test]
fn two_mpi_nodes_of_two_workers_match_one_worker() {
    let dir = TempDir::new("mpi");
    let ov = tiny_overrides(3);
    let four = dir.path().join("four");
    let out = run(&mut mpirun_launch(&four, &ov));
    assert_eq!(out.status.code(), Some(0), "mpirun: {}", texts(&out).1);
    let one = dir.path().join("one");
    let out = run(&mut worker_alone(&one, &ov));
    assert_eq!(out.status.code(), Some(0), "worker: {}", texts(&out).1);
    let (a, b) = (train_losses(&four), train_losses(&one));
    assert_eq!(a.len(), 3);
    for (step, la) in &a {
        assert!(
            (la - b[step]).abs() <= 1e-5 * b[step].abs().max(1.0),
            "step {step}: {la} vs {}",
            b[step]
        );
    }
    for f in [
        "logs/0-0.log",
        "logs/0-1.log",
        "logs/1-2.log",
        "logs/1-3.log",
    ] {
        assert!(
            four.join(f).exists(),
            "{f} missing: each node logs its own ranks"
        );
    }
}

#[test]
fn a_worker_killed_on_one_mpi_node_restarts_both_nodes() {
    let dir = TempDir::new("mpikill");
    let run_dir = dir.path().join("run");
    let mut ov = tiny_overrides(6);
    // The checkpoint restart across nodes (peer recovery has its own test in recovery.rs).
    ov.push("launch.recovery=\"checkpoint\"".into());
    let child = mpirun_launch(&run_dir, &ov)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(120, || latest_step(&run_dir).is_some_and(|s| s >= 2)),
        "no checkpoint"
    );
    // Rank 3 lives on node 1: the worker of this run whose CONVTT_RANK is 3.
    let run_var = format!("CONVTT_RUN_DIR={}", run_dir.display());
    let victim = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find_map(|e| {
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let is_worker = String::from_utf8_lossy(&cmd).contains("convtt-worker");
            let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
            let rank3 = vars.contains(&&b"CONVTT_RANK=3"[..]);
            let ours = vars.contains(&run_var.as_bytes());
            (is_worker && rank3 && ours).then(|| e.file_name().to_string_lossy().into_owned())
        })
        .expect("worker rank 3");
    assert!(Command::new("kill")
        .args(["-9", &victim])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Both launchers started a second attempt.
    assert!(
        stderr.matches("attempt 1: started 2 workers").count() == 2,
        "{stderr}"
    );
    assert_eq!(latest_step(&run_dir), Some(6));
    assert!(no_process_mentions(&run_dir));
}

#[test]
fn bench_reports_the_step_breakdown() {
    let ov = tiny_overrides(1);
    let out = run(Command::new(bin("convtt-worker"))
        .args([
            "bench",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--json",
            "--peak-tflops",
            "1",
            "--config",
        ])
        .arg(repo().join("configs/tiny-cpu.toml"))
        .args(set_args(&ov[..1])));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("bench --json is JSON");
    let phases: f64 = [
        "data_wait_ms",
        "forward_ms",
        "backward_ms",
        "allreduce_ms",
        "optimizer_ms",
    ]
    .iter()
    .map(|k| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}")))
    .sum();
    let step = r["step_ms"].as_f64().unwrap();
    assert!(
        step > 0.0 && (phases - step).abs() <= 1e-6 * step.max(1.0),
        "{r}"
    );
    assert!(r["forward_ms"].as_f64().unwrap() > 0.0 && r["backward_ms"].as_f64().unwrap() > 0.0);
    assert!(r["samples_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["peak_host_mib"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["achieved_gflops"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["fraction_of_peak"].as_f64().is_some(), "{r}");
    assert_eq!(r["steps"].as_u64(), Some(2));
}

/// `train.activation_checkpointing = true` trains through the recomputing backward: the same
/// losses and validation as the plain path (scheduled sampling on, so predictions are fed back).
#[test]
fn activation_checkpointing_trains_like_the_plain_path() {
    let dir = TempDir::new("ckpt-act");
    let mut ov = tiny_overrides(3);
    ov.push("optim.ss_ratio_start=0.5".into());
    let plain = dir.path().join("plain");
    let out = run(&mut worker_alone(&plain, &ov));
    assert_eq!(out.status.code(), Some(0), "worker: {}", texts(&out).1);
    ov.push("train.activation_checkpointing=true".into());
    let recomputed = dir.path().join("recomputed");
    let out = run(&mut worker_alone(&recomputed, &ov));
    assert_eq!(out.status.code(), Some(0), "worker: {}", texts(&out).1);
    let (a, b) = (train_losses(&plain), train_losses(&recomputed));
    assert_eq!(a.len(), 3);
    for (step, la) in &a {
        let lb = b[step];
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs().max(1.0),
            "step {step}: {la} vs {lb}"
        );
    }
    assert!(a[&3] != a[&1], "training moved: {a:?}");
}

/// `train.precision = "bf16"` (convolutions in bfloat16, master weights f32) trains to within
/// 2% of the f32 loss after the same steps on the same data; `"fp16"` on a CPU is refused as a
/// config error (exit 2) before anything is written.
#[test]
fn bf16_training_tracks_f32_and_fp16_on_cpu_is_refused() {
    let dir = TempDir::new("precision");
    // Two epochs of the tiny set (16 clips, batch 4).
    let steps = 8;
    let mut ov = tiny_overrides(steps);
    ov.push("checkpoint.every_steps=100".into());
    let f32_run = dir.path().join("f32");
    let out = run(&mut worker_alone(&f32_run, &ov));
    assert_eq!(out.status.code(), Some(0), "f32: {}", texts(&out).1);
    let bf16_run = dir.path().join("bf16");
    let mut ov_bf16 = ov.clone();
    ov_bf16.push("train.precision=\"bf16\"".into());
    let out = run(&mut worker_alone(&bf16_run, &ov_bf16));
    assert_eq!(out.status.code(), Some(0), "bf16: {}", texts(&out).1);

    let (a, b) = (train_losses(&f32_run), train_losses(&bf16_run));
    assert_eq!(b.len(), steps as usize);
    // Mean of the last three steps: one batch's noise does not decide.
    let tail = |l: &std::collections::BTreeMap<u64, f64>| {
        (steps - 2..=steps).map(|s| l[&s]).sum::<f64>() / 3.0
    };
    let (la, lb) = (tail(&a), tail(&b));
    assert!(
        (la - lb).abs() <= 0.02 * la,
        "bf16 loss {lb} vs f32 {la} after {steps} steps"
    );
    assert!(b[&steps] < b[&1], "bf16 loss goes down: {b:?}");
    assert_ne!(a, b, "bf16 must actually compute differently from f32");
    eprintln!("last-3-step mean loss: f32 {la:.5}, bf16 {lb:.5}");

    let mut ov_fp16 = ov;
    ov_fp16.push("train.precision=\"fp16\"".into());
    let fp16_run = dir.path().join("fp16");
    let out = run(&mut worker_alone(&fp16_run, &ov_fp16));
    let err = texts(&out).1;
    assert_eq!(out.status.code(), Some(2), "fp16 on CPU: {err}");
    assert!(err.contains("bf16"), "the error suggests bf16: {err}");
    assert!(!fp16_run.join("checkpoints").exists());
}
