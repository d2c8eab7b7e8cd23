//! Early activity recognition end to end: a labelled Moving-MNIST set from `convtt-data`,
//! training of the activity network by `convtt-launch` with two CPU workers, a committed
//! checkpoint whose manifest records the activity architecture, `eval`'s per-group table and
//! JSON report, and the exit codes of label problems.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::{bare, bin, repo, run, texts, TempDir};

fn make_data(out: &Path, labels: bool) {
    let mut cmd = bare(&bin("convtt-data"));
    cmd.arg("moving-mnist")
        .arg("--out")
        .arg(out)
        .args(["--digits", "1", "--size", "32", "--frames", "12"])
        .args([
            "--train", "48", "--valid", "16", "--test", "32", "--seed", "3",
        ]);
    if labels {
        cmd.args(["--labels", "direction"]);
    }
    let o = run(&mut cmd);
    assert_eq!(o.status.code(), Some(0), "convtt-data: {}", texts(&o).1);
}

/// Small, fast overrides of configs/activity-mmnist.toml.
fn sets(dataset: &Path) -> Vec<String> {
    [
        format!("data.dataset={}", dataset.display()),
        "data.batch_size=8".into(),
        "train.epochs=1".into(),
        "train.max_steps=4".into(),
        "activity.hidden_channels=8".into(),
        "activity.encoder_channels=[4, 8]".into(),
        "activity.classifier_channels=[8, 8]".into(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_owned(), s])
    .collect()
}

fn config() -> std::path::PathBuf {
    repo().join("configs/activity-mmnist.toml")
}

fn worker(sub: &str, run_dir: &Path, dataset: &Path, extra: &[&str]) -> Output {
    let mut cmd = bare(&bin("convtt-worker"));
    cmd.arg(sub)
        .arg("--config")
        .arg(config())
        .arg("--run-dir")
        .arg(run_dir)
        .args(sets(dataset))
        .args(extra);
    run(&mut cmd)
}

#[test]
fn labelled_data_launch_checkpoint_eval() {
    let tmp = TempDir::new("activity");
    let data = tmp.path().join("labelled");
    make_data(&data, true);
    let manifest = std::fs::read_to_string(data.join("dataset.toml")).unwrap();
    assert!(manifest.contains("classes = ["), "{manifest}");
    assert!(manifest.contains("rightward"), "{manifest}");

    let run_dir = tmp.path().join("run");
    let mut cmd = Command::new(bin("convtt-launch"));
    cmd.args(["--quiet-workers", "--cpu-workers", "2", "--config"])
        .arg(config())
        .arg("--run-dir")
        .arg(&run_dir)
        .args(sets(&data));
    let o = run(&mut cmd);
    assert_eq!(o.status.code(), Some(0), "launch: {}", texts(&o).1);

    // The checkpoint records the activity architecture in its model table.
    let ckpt = run_dir.join("checkpoints/step-00000004");
    let m = std::fs::read_to_string(ckpt.join("manifest.toml")).unwrap();
    assert!(m.contains("[model.activity]"), "{m}");
    assert!(m.contains("activity.classifier.fc.weight"), "{m}");
    // Validation logged accuracies per ratio.
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let valid: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "valid")
        .collect();
    assert!(!valid.is_empty());
    let acc = valid[0]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{acc}");

    let o = worker("eval", &run_dir, &data, &["--split", "test"]);
    let (out, err) = texts(&o);
    assert_eq!(o.status.code(), Some(0), "eval: {err}");
    assert!(out.contains("input ratio"), "{out}");
    assert!(
        out.contains("rightward") && out.contains("leftward"),
        "{out}"
    );
    assert!(
        out.contains("25% (I=3)") && out.contains("50% (I=6)"),
        "{out}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("eval-test.json")).unwrap())
            .unwrap();
    assert_eq!(report["kind"], "eval-activity");
    assert_eq!(report["step"], 4);
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 2);
    for r in ratios {
        let clips = r["clips"].as_u64().unwrap();
        assert_eq!(clips, 32);
        let groups = r["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        let sum: u64 = groups.iter().map(|g| g["clips"].as_u64().unwrap()).sum();
        assert_eq!(sum, clips);
        let correct: u64 = groups.iter().map(|g| g["correct"].as_u64().unwrap()).sum();
        assert_eq!(correct, r["correct"].as_u64().unwrap());
        assert!((r["accuracy"].as_f64().unwrap() - correct as f64 / 32.0).abs() < 1e-12);
    }

    // predict/export are for prediction runs: a clear usage error.
    let o = worker(
        "export",
        &run_dir,
        &data,
        &["--out", tmp.path().join("w.safetensors").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", texts(&o).1);
    assert!(texts(&o).1.contains("activity"), "{}", texts(&o).1);

    // A class count other than the dataset's is refused (exit 2), naming the key; so is
    // evaluating a checkpoint of another class count.
    let o = worker(
        "train",
        &tmp.path().join("run3"),
        &data,
        &["--set", "activity.classes=5"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        texts(&o).1.contains("activity.classes = 5 but"),
        "{}",
        texts(&o).1
    );
    let o = worker("eval", &run_dir, &data, &["--set", "activity.classes=5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(texts(&o).1.contains("classes = 5"), "{}", texts(&o).1);

    // An unlabelled dataset has no class list: exit 2 saying how to make a labelled one.
    let plain = tmp.path().join("plain");
    make_data(&plain, false);
    let o = worker("train", &tmp.path().join("run2"), &plain, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", texts(&o).1);
    assert!(texts(&o).1.contains("no class list"), "{}", texts(&o).1);
}
