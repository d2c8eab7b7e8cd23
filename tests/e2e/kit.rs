//! The relocatable GPU kit (`.ci/gpu-kit.sh`, README "GPU kit"): built from this checkout with
//! the suite's own debug build, unpacked far from the build tree and run from an empty
//! environment, with this machine's torch standing in for a GPU machine's.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{repo, run, texts, TempDir};

/// The torch the build links (`.libtorch`, kept by .ci/setup.sh) and the python that holds it.
fn machine_torch() -> (PathBuf, PathBuf) {
    let torch = std::fs::canonicalize(repo().join(".libtorch"))
        .expect(".libtorch: run bash .ci/setup.sh first");
    let venv = std::env::var_os("CONVTT_VENV").map_or_else(|| repo().join(".venv"), PathBuf::from);
    (torch, venv.join("bin/python"))
}

/// `cmd` with nothing of this process's environment but a minimal PATH and a HOME.
fn empty_env<'a>(cmd: &'a mut Command, home: &Path) -> &'a mut Command {
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
}

fn build_kit(out: &Path) -> PathBuf {
    let o = run(Command::new("bash")
        .arg(repo().join(".ci/gpu-kit.sh"))
        .arg(out)
        .args(["--profile", "dev"])
        .current_dir(repo()));
    let (_, err) = texts(&o);
    assert!(o.status.success(), "gpu-kit.sh failed:\n{err}");
    let archive = out.join("convtt-kit.tar.gz");
    let mib = std::fs::metadata(&archive).unwrap().len() as f64 / 1048576.0;
    assert!(mib <= 48.0, "the kit is {mib:.1} MiB, over 48");
    archive
}

#[test]
fn the_gpu_kit_runs_its_cpu_smoke_from_an_empty_environment() {
    let tmp = TempDir::new("kit");
    let archive = build_kit(&tmp.path().join("build"));
    // Unpacked elsewhere; the build directory it came from is deleted first.
    let unpacked = tmp.path().join("machine");
    std::fs::create_dir_all(&unpacked).unwrap();
    let o = run(Command::new("tar")
        .arg("-C")
        .arg(&unpacked)
        .arg("-xzf")
        .arg(&archive));
    assert!(o.status.success(), "{:?}", texts(&o));
    std::fs::remove_dir_all(tmp.path().join("build")).unwrap();
    let kit = unpacked.join("convtt-kit");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    // Nothing in a binary points into this checkout: RUNPATH is the kit's own lib/.
    for dir in ["bin", "tests"] {
        for entry in std::fs::read_dir(kit.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let o = run(Command::new("readelf").arg("-d").arg(&path));
            let (dynamic, _) = texts(&o);
            let runpath: Vec<&str> = dynamic
                .lines()
                .filter(|l| l.contains("RUNPATH") || l.contains("RPATH"))
                .collect();
            assert_eq!(runpath.len(), 1, "{}: {runpath:?}", path.display());
            assert!(
                runpath[0].contains("[$ORIGIN/../lib]"),
                "{}: {}",
                path.display(),
                runpath[0]
            );
        }
    }

    let (torch, python) = machine_torch();
    let results = tmp.path().join("results");
    let o = run(empty_env(&mut Command::new(kit.join("gpu-check")), &home)
        .env("CONVTT_LIBTORCH", &torch)
        .env("CONVTT_PYTHON", &python)
        .args(["--cpu-smoke", "--out"])
        .arg(&results)
        .current_dir(tmp.path()));
    let (out, err) = texts(&o);
    assert!(
        o.status.success(),
        "gpu-check --cpu-smoke failed:\n{out}\n{err}"
    );
    let summary: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(results.join("summary.json")).unwrap())
            .unwrap();
    let status = |stage: &str| {
        summary
            .iter()
            .find(|r| r["stage"] == stage)
            .unwrap_or_else(|| panic!("no stage {stage} in {summary:?}"))
    };
    for stage in ["environment", "doctor", "cpu-run", "baseline-cpu"] {
        assert_eq!(
            status(stage)["status"],
            "passed",
            "{stage}: {}",
            status(stage)
        );
    }
    let env = &status("environment")["figures"];
    assert_eq!(env["libtorch"], torch.display().to_string());
    assert!(env["gpu_tests"].as_u64().unwrap() >= 10, "{env}");
    assert_eq!(status("cpu-run")["figures"]["bitwise_equal"], true);
    // The GPU stages are named and skipped, never passed.
    for r in &summary {
        if r["needs_gpu"] == true {
            assert_eq!(r["status"], "skipped", "{r}");
            assert_eq!(r["detail"], "skipped: no GPU", "{r}");
        }
    }
    assert_eq!(summary.iter().filter(|r| r["needs_gpu"] == true).count(), 6);
    let table = std::fs::read_to_string(results.join("summary.md")).unwrap();
    assert!(
        table.contains("| gpu-tests | correctness | skipped |"),
        "{table}"
    );
    assert!(
        !results.join("work").exists(),
        "work files are removed by default"
    );

    // No usable torch: a clear error naming the fix, exit 6, from the kit's environment script.
    let o = run(empty_env(&mut Command::new(kit.join("convtt-env")), &home)
        .env("CONVTT_LIBTORCH", tmp.path().join("no-torch-here"))
        .arg("true"));
    let (_, err) = texts(&o);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains("CONVTT_LIBTORCH"), "{err}");
    // A torch of another version than the kit's is refused, naming both.
    let fake = tmp.path().join("torch-2.10");
    std::fs::create_dir_all(fake.join("lib")).unwrap();
    std::os::unix::fs::symlink(
        torch.join("lib/libtorch_cpu.so"),
        fake.join("lib/libtorch_cpu.so"),
    )
    .unwrap();
    std::fs::write(fake.join("version.py"), "__version__ = '2.10.0+cu128'\n").unwrap();
    let o = run(empty_env(&mut Command::new(kit.join("convtt-env")), &home)
        .env("CONVTT_LIBTORCH", &fake)
        .arg("true"));
    let (_, err) = texts(&o);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains("2.11.0") && err.contains("2.10.0"), "{err}");
}
