//! The configuration and environment commands, run as a user would: from another directory
//! with nothing exported.

use crate::util::{bare, bin, repo, run, texts, TempDir};

#[test]
fn check_prints_the_resolved_config_from_an_empty_environment() {
    let cfg = repo().join("configs/tiny-cpu.toml");
    let out = run(bare(&bin("convtt-launch"))
        .arg("check")
        .arg("--config")
        .arg(&cfg));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let resolved: toml::Table = stdout.parse().expect("check prints TOML");
    assert_eq!(resolved["model"]["order"].as_integer(), Some(2));
    assert_eq!(resolved["launch"]["cpu_workers"].as_integer(), Some(2));
}

#[test]
fn check_applies_overrides() {
    let cfg = repo().join("configs/tiny-cpu.toml");
    let out = run(bare(&bin("convtt-launch"))
        .args(["check", "--config"])
        .arg(&cfg)
        .args(["--set", "model.rank=6", "--set", "data.dataset=/data/x"]));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let resolved: toml::Table = stdout.parse().unwrap();
    assert_eq!(resolved["model"]["rank"].as_integer(), Some(6));
    assert_eq!(resolved["data"]["dataset"].as_str(), Some("/data/x"));
}

#[test]
fn check_lists_five_mistakes_in_three_sections_and_exits_2() {
    let dir = TempDir::new("check");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[model]\nordr = 2\norder = 5\n[data]\nbatch_size = \"big\"\n\
         [optim]\nlearning_rate = -1.0\nbeta1 = 1.5\n",
    )
    .unwrap();
    let out = run(bare(&bin("convtt-launch"))
        .args(["check", "--config"])
        .arg(&cfg));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stdout.is_empty(), "nothing resolved is printed: {stdout}");
    assert!(
        stderr.contains("bad.toml: 5 configuration problems"),
        "{stderr}"
    );
    for field in [
        "model.ordr",
        "model.order",
        "data.batch_size",
        "optim.learning_rate",
        "optim.beta1",
    ] {
        assert!(
            stderr.contains(&format!("  {field}: ")),
            "no line for {field}: {stderr}"
        );
    }
    assert!(stderr.contains("did you mean `order`"), "{stderr}");
}

#[test]
fn check_names_a_missing_file_and_exits_2() {
    let out = run(bare(&bin("convtt-launch")).args(["check", "--config", "/nonexistent/x.toml"]));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("/nonexistent/x.toml: No such file"),
        "{stderr}"
    );
}

#[test]
fn launcher_does_not_link_libtorch() {
    let out = run(std::process::Command::new("readelf")
        .arg("-d")
        .arg(bin("convtt-launch")));
    let (stdout, _) = texts(&out);
    assert!(out.status.success(), "readelf failed");
    assert!(
        !stdout.contains("libtorch"),
        "convtt-launch links libtorch:\n{stdout}"
    );
}

#[test]
fn doctor_reports_every_component_from_an_empty_environment() {
    let out = run(bare(&bin("convtt-worker")).args(["doctor", "--json"]));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("doctor --json is JSON");
    assert!(report["libtorch_version"]
        .as_str()
        .is_some_and(|v| v.starts_with("2.11.0")));
    assert!(
        report["hdf5"].as_str().is_some_and(|v| v.starts_with("1.")),
        "{report}"
    );
    assert!(
        report["mpi"].as_str().is_some_and(|v| v.contains("MPI")),
        "{report}"
    );
    assert!(
        report["numa_nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty()),
        "{report}"
    );
    assert!(
        report["cpu_mask"].as_str().is_some_and(|m| m != "unknown"),
        "{report}"
    );
}

#[test]
fn doctor_require_gpu_fails_exactly_when_a_gpu_run_cannot_start() {
    let out = run(bare(&bin("convtt-worker")).args(["doctor", "--json", "--require-gpu"]));
    let (stdout, stderr) = texts(&out);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("doctor --json is JSON");
    let gpu_ready = report["cuda_available"] == true
        && report["cuda_devices"].as_i64() > Some(0)
        && report["nccl"].get("Ok").is_some();
    if gpu_ready {
        assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    } else {
        assert_eq!(out.status.code(), Some(6), "stderr: {stderr}");
        assert!(stderr.contains("a GPU run cannot start here"), "{stderr}");
        if report["cuda_available"] == false {
            assert!(stderr.contains("CUDA is not available"), "{stderr}");
        }
    }
}
