//! `convtt-worker model-info` and `forward`, run as a user would, with hand-written weights and
//! input files (the byte formats are written here independently of the worker's code).

use std::path::Path;

use crate::util::{bare, bin, run, texts, TempDir};

/// A safetensors file of f32 tensors: u64 header length, JSON header, raw little-endian data.
fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            (*name).to_owned(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [start, data.len()] }),
        );
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// A version-1.0 `.npy` of f32 values.
fn write_npy(path: &Path, shape: &[usize], values: &[f32]) {
    std::fs::write(path, convtt_core::npy::f32_bytes(shape, values)).unwrap();
}

/// One ConvLSTM layer of width 2 with 1×1 kernels; all weights zero, head bias 0.25: every
/// gate is σ(0) = 0.5 and g = 0, so C = H = 0 and every predicted pixel is exactly 0.25.
const TINY: &str = "[model]\ncell = \"convlstm\"\nfilter_size = 1\nblock_widths = [2]\n\
                    layers_per_block = 1\nskip_stride = 1\n";

fn tiny_weights(path: &Path) {
    write_safetensors(
        path,
        &[
            ("layers.b0l0.conv.weight", vec![8, 3, 1, 1], vec![0.0; 24]),
            ("layers.b0l0.conv.bias", vec![8], vec![0.0; 8]),
            ("layers.output.weight", vec![1, 2, 1, 1], vec![0.0; 2]),
            ("layers.output.bias", vec![1], vec![0.25]),
        ],
    );
}

#[test]
fn forward_predicts_future_frames_from_npy_and_safetensors() {
    let dir = TempDir::new("forward");
    let (cfg, weights, input, output) = (
        dir.path().join("tiny.toml"),
        dir.path().join("w.safetensors"),
        dir.path().join("x.npy"),
        dir.path().join("y.npy"),
    );
    std::fs::write(&cfg, TINY).unwrap();
    tiny_weights(&weights);
    write_npy(&input, &[2, 3, 1, 4, 5], &[0.7; 120]);
    let out = run(bare(&bin("convtt-worker"))
        .args(["forward", "--future", "6", "--config"])
        .arg(&cfg)
        .arg("--weights")
        .arg(&weights)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&output));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let bytes = std::fs::read(&output).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]);
    assert!(
        header.contains("'descr': '<f4'") && header.contains("(2, 6, 1, 4, 5)"),
        "{header}"
    );
    let values: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(values.len(), 2 * 6 * 20);
    assert!(values.iter().all(|&v| v == 0.25), "{values:?}");
}

#[test]
fn forward_rejects_bad_files_with_exit_5_and_bad_usage_with_exit_2() {
    let dir = TempDir::new("forward-bad");
    let (cfg, weights, input) = (
        dir.path().join("tiny.toml"),
        dir.path().join("w.safetensors"),
        dir.path().join("x.npy"),
    );
    std::fs::write(&cfg, TINY).unwrap();
    tiny_weights(&weights);
    write_npy(&input, &[1, 2, 3, 4, 4], &[0.0; 96]); // 3 channels, the model has 1
    let forward = |extra: &[&str]| {
        let out = run(bare(&bin("convtt-worker"))
            .args(["forward", "--out", "/tmp/unused.npy", "--config"])
            .arg(&cfg)
            .arg("--weights")
            .arg(&weights)
            .arg("--input")
            .arg(&input)
            .args(extra));
        (out.status.code(), texts(&out).1)
    };
    let (code, stderr) = forward(&["--future", "2"]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("x.npy") && stderr.contains("3 channels"),
        "{stderr}"
    );
    write_npy(&input, &[1, 2, 1, 4, 4], &[0.0; 32]);
    let (code, stderr) = forward(&["--future", "2", "--set", "model.filter_size=3"]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("w.safetensors") && stderr.contains("layers.b0l0.conv.weight"),
        "{stderr}"
    );
    let (code, stderr) = forward(&["--future", "2", "--device", "tpu"]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, stderr) = forward(&["--future", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn model_info_reports_the_released_model() {
    let out = run(bare(&bin("convtt-worker"))
        .args(["model-info", "--json", "--batch", "2", "--config"])
        .arg(crate::util::repo().join("configs/mmnist.toml"))
        .args([
            "--set",
            "model.cell=\"convttlstm\"",
            "--set",
            "model.order=3",
            "--set",
            "model.steps=3",
        ])
        .args(["--set", "model.rank=8", "--set", "model.filter_size=5"]));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("model-info --json is JSON");
    assert_eq!(v["summary"]["total_parameters"], 2_687_281);
    assert_eq!(v["summary"]["batch"], 2);
    assert!(v["rules"].as_array().is_some_and(|r| r.len() == 4));
}

/// Every preset in `configs/` (the paper's rows, ablations, baselines) passes `convtt-launch
/// check` and `convtt-worker model-info`, and the paper presets have the documented sizes.
#[test]
fn every_preset_passes_check_and_model_info() {
    let dir = crate::util::repo().join("configs");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let check = run(bare(&bin("convtt-launch"))
            .arg("check")
            .arg("--config")
            .arg(&path));
        assert_eq!(
            check.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            texts(&check).1
        );
        let info = run(bare(&bin("convtt-worker"))
            .args(["model-info", "--json", "--config"])
            .arg(&path));
        let (stdout, stderr) = texts(&info);
        assert_eq!(info.status.code(), Some(0), "{}: {stderr}", path.display());
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        seen.push((name, v["summary"]["total_parameters"].as_i64().unwrap()));
    }
    for (name, params) in [
        ("mmnist", 2_687_281),
        ("mmnist-convlstm", 3_973_201),
        ("kth", 2_687_281),
        ("kth-convlstm", 3_973_201),
        ("mmnist-convlstm-ttd", 2_679_393),
        ("ablation-tt-1x1", 2_005_297),
        ("ablation-order1", 2_648_497),
        ("ablation-order3-5x5", 2_687_281),
    ] {
        assert!(
            seen.contains(&(name.to_owned(), params)),
            "{name}: expected {params} parameters in {seen:?}"
        );
    }
}
