//! Mixed precision on CUDA (`cargo test -p convtt-worker --features gpu-tests`): bf16 and fp16
//! (with dynamic loss scaling) train the tiny config to within 2% of the f32 loss after the
//! same steps on the same data.

use std::path::Path;

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

#[test]
fn mixed_precision_tracks_f32_on_cuda() {
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
    // The config travels inside the binary: the GPU kit runs this test far from the repository.
    let config = root.path().join("tiny-cpu.toml");
    std::fs::write(&config, include_str!("../../../configs/tiny-cpu.toml")).unwrap();
    let run = |precision: &str| {
        let dir = root.path().join(precision);
        super::run(TrainArgs {
            config: config.clone(),
            overrides: vec![
                format!("data.dataset={}", ds.display()),
                "train.device=\"cuda\"".into(),
                format!("train.precision=\"{precision}\""),
                "train.max_steps=30".into(),
                "train.log_every=1".into(),
                "train.valid_every=0".into(),
            ],
            run_dir: Some(dir.clone()),
            resume: Resume::No,
        })
        .unwrap();
        let l = losses(&dir);
        assert_eq!(l.len(), 30, "{precision}");
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
