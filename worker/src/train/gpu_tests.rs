//! CUDA-only training tests (`cargo test -p convtt-worker --features gpu-tests`): mixed precision
//! (bf16 and fp16 with dynamic loss scaling) trains the tiny config to within 2% of the f32 loss
//! after the same steps on the same data, and CUDA graphs replay the eager step's results.

use std::path::{Path, PathBuf};

use super::*;

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

/// A generated Moving-MNIST set and the tiny config in a temporary directory. The config
/// travels inside the binary: the GPU kit runs these tests far from the repository.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    assert!(tch::Cuda::is_available(), "gpu-tests needs a CUDA device");
    let root = tempfile::tempdir().unwrap();
    let ds = root.path().join("mmnist");
    let args = [
        "moving-mnist",
        "--out",
        ds.to_str().unwrap(),
        "--train",
        "64",
        "--valid",
        "8",
        "--test",
        "8",
        "--seed",
        "5",
    ];
    crate::data::tool::run_args(&args).unwrap();
    let config = root.path().join("tiny-cpu.toml");
    std::fs::write(&config, include_str!("../../../configs/tiny-cpu.toml")).unwrap();
    (root, ds, config)
}

/// Trains `steps` steps on CUDA in `<root>/<name>` with `extra` overrides; the losses.
fn train(
    root: &Path,
    ds: &Path,
    config: &Path,
    name: &str,
    steps: u64,
    extra: &[&str],
) -> Vec<f64> {
    let dir = root.join(name);
    let mut overrides = vec![
        format!("data.dataset={}", ds.display()),
        "train.device=\"cuda\"".into(),
        format!("train.max_steps={steps}"),
        "train.log_every=1".into(),
        "train.valid_every=0".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    super::run(TrainArgs {
        config: config.to_owned(),
        overrides,
        run_dir: Some(dir.clone()),
        resume: Resume::No,
    })
    .unwrap();
    let l = losses(&dir);
    assert_eq!(l.len(), steps as usize, "{name}");
    l
}

#[test]
fn mixed_precision_tracks_f32_on_cuda() {
    let (root, ds, config) = setup();
    let run = |precision: &str| {
        let p = format!("train.precision=\"{precision}\"");
        let l = train(root.path(), &ds, &config, precision, 30, &[&p]);
        l[l.len() - 5..].iter().sum::<f64>() / 5.0
    };
    let f32_loss = run("f32");
    for p in ["bf16", "fp16"] {
        let l = run(p);
        assert!(
            (l - f32_loss).abs() <= 0.02 * f32_loss,
            "{p}: mean loss of the last 5 steps {l} vs f32 {f32_loss}"
        );
    }
}

/// `train.cuda_graphs`: two eager warm-up steps, a capture, then replays give the eager run's
/// losses step by step (deterministic cuDNN, exact f32), also across a change of the
/// scheduled-sampling mask's teacher-forced prefix (a second graph key).
#[test]
fn cuda_graph_steps_match_eager_steps() {
    let (root, ds, config) = setup();
    let common = [
        "train.deterministic=true",
        "train.tf32=false",
        "optim.ss_schedule=\"step\"",
        "optim.ss_ratio_start=0.6",
    ];
    let eager = train(root.path(), &ds, &config, "eager", 12, &common);
    let mut with = common.to_vec();
    with.push("train.cuda_graphs=true");
    let graphed = train(root.path(), &ds, &config, "graphed", 12, &with);
    for (step, (a, b)) in eager.iter().zip(&graphed).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1e-3),
            "step {}: eager loss {a} vs CUDA-graph loss {b}",
            step + 1
        );
    }
}
