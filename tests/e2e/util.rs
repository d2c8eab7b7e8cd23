//! Shared helpers: where the binaries are, unique temp dirs, and running a command to completion.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a workspace binary in the same profile directory as this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// A fresh, empty directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("convtt-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command to completion and returns its output (stdout and stderr captured).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// A command with an empty environment except `PATH=/usr/bin:/bin`, run from `/tmp`.
pub fn bare(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/tmp");
    cmd
}

/// stdout and stderr as text, for assertions and failure messages.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small Moving-MNIST dataset (16 train, 4 valid, 4 test clips of 10 frames, 64×64) made once
/// per test process with the real `convtt-data`, shared by the training tests.
pub fn tiny_dataset() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("convtt-e2e-data-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        moving_mnist(&dir, &["--seed", "3", "--shard-clips", "8"]);
        dir
    })
    .clone()
}

/// Writes a 16/4/4-clip, 10-frame Moving MNIST dataset to `out` with the real `convtt-data`
/// (`extra`: more of its flags), failing the test with its stderr if it fails.
pub fn moving_mnist(out: &Path, extra: &[&str]) {
    let result = run(bare(&bin("convtt-data"))
        .args([
            "moving-mnist",
            "--train",
            "16",
            "--valid",
            "4",
            "--test",
            "4",
        ])
        .args(["--frames", "10"])
        .args(extra)
        .arg("--out")
        .arg(out));
    assert!(
        result.status.success(),
        "convtt-data moving-mnist failed: {}",
        texts(&result).1
    );
}

/// Overrides that make `configs/tiny-cpu.toml` train `steps` steps on [`tiny_dataset`],
/// logging and checkpointing often.
pub fn tiny_overrides(steps: u64) -> Vec<String> {
    [
        format!("data.dataset={}", tiny_dataset().display()),
        format!("train.max_steps={steps}"),
        "train.log_every=1".into(),
        "checkpoint.every_steps=2".into(),
        "checkpoint.keep_last=10".into(),
    ]
    .to_vec()
}

/// `--set k=v` pairs for a command line.
pub fn set_args(overrides: &[String]) -> Vec<String> {
    overrides
        .iter()
        .flat_map(|o| ["--set".to_owned(), o.clone()])
        .collect()
}

/// The last logged training loss of every step in `<run>/metrics.jsonl` (a restarted run logs
/// some steps twice; the later line wins).
pub fn train_losses(run_dir: &Path) -> std::collections::BTreeMap<u64, f64> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics.jsonl");
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        if v["kind"] == "train" {
            out.insert(v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap());
        }
    }
    out
}

/// The committed checkpoint named by `<run>/checkpoints/LATEST`, as a step number.
pub fn latest_step(run_dir: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(run_dir.join("checkpoints/LATEST")).ok()?;
    s.trim().strip_prefix("step-")?.parse().ok()
}

/// Pids of the live children of `pid` whose command name is `name`.
pub fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let comm = comm.split_once(" (").map_or("", |c| c.1);
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        let state = rest.split_whitespace().next().unwrap_or("");
        if ppid == Some(pid) && name.starts_with(comm) && state != "Z" {
            out.push(child);
        }
    }
    out
}

/// Polls `cond` every 100 ms for up to `secs` seconds.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// The Python interpreter of the project venv (`CONVTT_VENV` or `<repo>/.venv`).
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("CONVTT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    venv.join("bin/python")
}

/// `convtt-launch` on `configs/tiny-cpu.toml` in `run_dir` with `overrides`, workers' output to
/// their log files only, and `CONVTT_FAULT` set to `fault` (or removed).
pub fn launch_tiny(run_dir: &Path, overrides: &[String], fault: Option<&str>) -> Command {
    let mut cmd = Command::new(bin("convtt-launch"));
    cmd.args(["--quiet-workers", "--config"])
        .arg(repo().join("configs/tiny-cpu.toml"))
        .arg("--run-dir")
        .arg(run_dir)
        .args(set_args(overrides))
        .env_remove("CONVTT_FAULT");
    if let Some(f) = fault {
        cmd.env("CONVTT_FAULT", f);
    }
    cmd
}
