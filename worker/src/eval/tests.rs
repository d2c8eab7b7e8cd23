//! Evaluation, pictures and export on a tiny model trained once per test process (2 steps on a
//! generated 32×32 Moving-MNIST set in a temporary directory).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::*;
use crate::cli::ConfigArgs;
use crate::exit;

/// A run directory with a trained checkpoint, its dataset and the overrides that describe both.
struct Fixture {
    run: PathBuf,
    overrides: Vec<String>,
}

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/tiny-cpu.toml")
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("convtt-eval-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let ds = root.join("mmnist");
        let args = [
            "moving-mnist",
            "--out",
            ds.to_str().unwrap(),
            "--train",
            "8",
            "--valid",
            "4",
            "--test",
            "8",
            "--frames",
            "10",
            "--size",
            "32",
            "--seed",
            "3",
        ];
        crate::data::tool::run_args(&args).unwrap();
        let overrides: Vec<String> = [
            format!("data.dataset={}", ds.display()),
            "data.height=32".into(),
            "data.width=32".into(),
            "data.input_frames=4".into(),
            "data.future_frames=3".into(),
            "train.max_steps=2".into(),
            "train.eval_horizons=[2, 6]".into(),
            "model.block_widths=[4, 4, 4, 4]".into(),
        ]
        .into();
        let run = root.join("run");
        crate::train::run(crate::train::TrainArgs {
            config: config(),
            overrides: overrides.clone(),
            run_dir: Some(run.clone()),
            resume: Resume::No,
        })
        .unwrap();
        Fixture { run, overrides }
    })
}

fn checkpoint_args(extra: &[&str]) -> CheckpointArgs {
    let f = fixture();
    let mut overrides = f.overrides.clone();
    overrides.extend(extra.iter().map(|s| s.to_string()));
    CheckpointArgs {
        config: ConfigArgs {
            config: config(),
            overrides,
        },
        checkpoint: Resume::Auto,
        run_dir: Some(f.run.clone()),
    }
}

fn ctx(extra: &[&str]) -> Context {
    context(&checkpoint_args(extra)).unwrap()
}

/// (width, height, color type) of a PNG file.
fn png_info(path: &Path) -> (u32, u32, png::ColorType) {
    let (info, _) = png_read(path);
    (info.width, info.height, info.color_type)
}

fn png_read(path: &Path) -> (png::OutputInfo, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info, buf)
}

fn approx_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(1.0)
        }
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| approx_eq(a, b)),
        (Object(x), Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| approx_eq(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn eval_metrics_are_finite_and_short_horizons_are_prefixes_of_the_long_rollout() {
    let mut c = ctx(&[]);
    let long = evaluate(&mut c, &Resume::Auto, "test", &[2, 6], 0).unwrap();
    assert_eq!((long.input_frames, long.future_frames), (4, 6));
    assert_eq!(long.samples, 8);
    assert_eq!(long.step, 2);
    let p = &long.per_frame;
    for v in [
        &p.mse,
        &p.mse_x1e3,
        &p.sse,
        &p.mae,
        &p.psnr,
        &p.ssim,
        &p.ssim_wang2004,
    ] {
        assert_eq!(v.len(), 6);
        assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
    }
    assert!(long.loss.is_finite());
    // 32×32 pixels: the per-frame sum is 1024 × the per-pixel mean.
    assert!((p.sse[0] - 1024.0 * p.mse[0]).abs() < 1e-9 * p.sse[0].max(1.0));
    assert_eq!(long.horizons.len(), 2);
    assert_eq!(long.horizons[0], p.horizon(4, 2));
    assert!((long.horizons[1].mse - train::mean(&p.mse)).abs() < 1e-15);
    // A separate 2-frame rollout gives the long rollout's first two frames.
    let short = evaluate(&mut c, &Resume::Auto, "test", &[2], 0).unwrap();
    assert_eq!(short.per_frame.mse.len(), 2);
    for (a, b) in [
        (&short.per_frame.mse, &p.mse),
        (&short.per_frame.ssim, &p.ssim),
        (&short.per_frame.psnr, &p.psnr),
    ] {
        for i in 0..2 {
            assert!(
                (a[i] - b[i]).abs() <= 1e-6 * b[i].abs().max(1e-3),
                "{a:?} vs {b:?}"
            );
        }
    }
    // The default horizons come from train.eval_horizons; a cap limits the clips.
    let capped = evaluate(&mut c, &Resume::Auto, "test", &[], 4).unwrap();
    assert_eq!(capped.samples, 4);
    assert_eq!(
        capped
            .horizons
            .iter()
            .map(|h| h.future_frames)
            .collect::<Vec<_>>(),
        [2, 6]
    );
    assert!(capped.table().contains("4 → 6"));
}

#[test]
fn a_horizon_longer_than_the_clips_is_a_usage_error_naming_the_dataset() {
    let mut c = ctx(&[]);
    let e = evaluate(&mut c, &Resume::Auto, "test", &[7], 0).unwrap_err();
    assert_eq!(e.exit_code(), exit::CONFIG);
    let msg = e.to_string();
    assert!(
        msg.contains("mmnist") && msg.contains("10 frames") && msg.contains("11"),
        "{msg}"
    );
}

#[test]
fn a_checkpoint_of_another_model_is_refused_with_the_differing_keys() {
    let mut c = ctx(&["model.rank=2"]);
    let e = evaluate(&mut c, &Resume::Auto, "test", &[2], 0).unwrap_err();
    assert_eq!(e.exit_code(), exit::CONFIG);
    let msg = e.to_string();
    assert!(
        msg.contains("refusing to evaluate") && msg.contains("model.rank"),
        "{msg}"
    );
}

#[test]
fn eval_writes_a_json_report_that_round_trips_and_a_metrics_line() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let args = EvalArgs {
        model: checkpoint_args(&[]),
        split: "test".into(),
        horizons: vec![3],
        max_clips: 0,
        json: Some(json.clone()),
        weights: None,
    };
    run_eval(&args).unwrap();
    let text = std::fs::read_to_string(&json).unwrap();
    let report: EvalReport = serde_json::from_str(&text).unwrap();
    assert_eq!(report.kind, "eval");
    assert_eq!(report.horizons[0].future_frames, 3);
    assert_eq!(report.conventions, Conventions::default());
    let again = serde_json::to_string_pretty(&report).unwrap();
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&text).unwrap(),
        serde_json::from_str(&again).unwrap(),
    );
    assert!(approx_eq(&a, &b));
    let log = std::fs::read_to_string(fixture().run.join("metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "eval")
        .collect();
    assert!(evals
        .iter()
        .any(|v| v["horizons"][0]["future_frames"] == 3 && v["step"] == 2));
}

/// `--weights` (here: the checkpoint exported under the reference names) evaluates to the
/// checkpoint's own numbers, and every report carries the copy-last and all-zeros predictors,
/// computed from the clips alone: identical whoever the model is.
#[test]
fn eval_of_exported_weights_matches_the_checkpoint_and_reports_the_trivial_predictors() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    run_export(&ExportArgs {
        model: checkpoint_args(&[]),
        out: weights.clone(),
    })
    .unwrap();
    let from_ckpt = evaluate(&mut ctx(&[]), &Resume::Auto, "test", &[2, 3], 0).unwrap();
    let source = ModelSource::Weights(weights.clone());
    let from_file = evaluate_source(&mut ctx(&[]), &source, "test", &[2, 3], 0).unwrap();
    assert_eq!(from_file.per_frame, from_ckpt.per_frame);
    assert_eq!(from_file.checkpoint, weights.display().to_string());
    assert_eq!(from_file.step, 0);
    let names: Vec<&str> = from_ckpt
        .baselines
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(names, ["copy_last", "zeros"]);
    assert_eq!(from_file.baselines, from_ckpt.baselines);
    for b in &from_ckpt.baselines {
        assert_eq!(b.horizons.len(), 2);
        assert_eq!(b.per_frame.mse.len(), 3);
        assert!(b.horizons.iter().all(|h| h.mse > 0.0 && h.ssim.is_finite()));
    }
    // All-black frames score the mean energy of the truth; PSNR and SSIM far below copy-last.
    let (copy, zeros) = (&from_ckpt.baselines[0], &from_ckpt.baselines[1]);
    assert!(zeros.horizons[0].mse > copy.horizons[0].mse);
    let table = from_ckpt.table();
    assert!(
        table.contains("  copy last") && table.contains("  zeros"),
        "{table}"
    );
    // A file that is not safetensors is a data error naming it.
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not safetensors").unwrap();
    let e = evaluate_source(
        &mut ctx(&[]),
        &ModelSource::Weights(bad.clone()),
        "test",
        &[2],
        0,
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), exit::DATA, "{e}");
    assert!(e.to_string().contains("bad.safetensors"), "{e}");
}

#[test]
fn predict_writes_a_three_row_strip() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("strip.png");
    run_predict(&PredictArgs {
        model: checkpoint_args(&[]),
        split: "test".into(),
        clip: 5,
        future: Some(6),
        out: out.clone(),
        gif: Some(dir.path().join("clip.gif")),
    })
    .unwrap();
    // 6 columns (the longer of 4 inputs and 6 futures) and 3 rows of 32×32 with 2-pixel gaps.
    let g = crate::pictures::GAP as u32;
    assert_eq!(
        png_info(&out),
        (6 * 32 + 5 * g, 3 * 32 + 2 * g, png::ColorType::Grayscale)
    );
    // The GIF: 4 + 6 frames of truth | model side by side, a gap, then the 3-pixel bar.
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let file = std::fs::File::open(dir.path().join("clip.gif")).unwrap();
    let mut dec = opts.read_info(file).unwrap();
    let (w, h) = (2 * 32 + g as usize, 32 + g as usize + 3);
    assert_eq!((dec.width() as usize, dec.height() as usize), (w, h));
    let mut frames = Vec::new();
    while let Some(f) = dec.read_next_frame().unwrap() {
        frames.push(f.buffer.chunks_exact(4).map(|p| p[0]).collect::<Vec<u8>>());
    }
    assert_eq!(frames.len(), 10);
    // While conditioning both panels show the input frame; the bar grows frame by frame.
    let left = |f: &[u8]| {
        (0..32)
            .flat_map(|y| f[y * w..y * w + 32].to_vec())
            .collect::<Vec<_>>()
    };
    let right = |f: &[u8]| {
        (0..32)
            .flat_map(|y| f[y * w + w - 32..(y + 1) * w].to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(left(&frames[0]), right(&frames[0]));
    // From frame 4 on: truth beside prediction, the same pixels as the strip's rows 2 and 3.
    let (info, strip) = png_read(&out);
    let sw = info.width as usize;
    let cell = |row: usize, col: usize| {
        let (x0, y0) = (col * (32 + g as usize), row * (32 + g as usize));
        (0..32)
            .flat_map(|y| strip[(y0 + y) * sw + x0..(y0 + y) * sw + x0 + 32].to_vec())
            .collect::<Vec<_>>()
    };
    for k in [0, 5] {
        assert_eq!(left(&frames[4 + k]), cell(1, k));
        assert_eq!(right(&frames[4 + k]), cell(2, k));
    }
    assert_eq!(left(&frames[2]), cell(0, 2));
    let bar = |f: &[u8]| f[(h - 1) * w..].iter().filter(|&&v| v > 0).count();
    assert!(bar(&frames[0]) < bar(&frames[5]) && bar(&frames[9]) == w);
    assert_eq!(frames[9][(h - 1) * w], 255);
    assert_eq!(frames[3][(h - 1) * w], 128);
    let e = run_predict(&PredictArgs {
        model: checkpoint_args(&[]),
        split: "test".into(),
        clip: 8,
        future: None,
        out,
        gif: None,
    })
    .unwrap_err();
    assert_eq!(e.exit_code(), exit::CONFIG);
}

#[test]
fn export_then_import_gives_the_same_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.safetensors");
    run_export(&ExportArgs {
        model: checkpoint_args(&[]),
        out: out.clone(),
    })
    .unwrap();
    let c = ctx(&[]);
    let loaded = load_model(&c.cfg, c.rt.run.path(), &Resume::Auto, Device::Cpu, "test").unwrap();
    tch::manual_seed(11);
    let vs = VarStore::new(Device::Cpu);
    let fresh = Network::new(&vs.root(), &c.cfg.model);
    convtt_common::model::import_safetensors(&fresh, &out).unwrap();
    let x = tch::Tensor::rand([2, 4, 1, 32, 32], (tch::Kind::Float, Device::Cpu));
    let r = || convtt_common::model::Rollout::eval(4, 3);
    let (a, b) = tch::no_grad(|| {
        (
            loaded.net.forward(&x, &r()).unwrap(),
            fresh.forward(&x, &r()).unwrap(),
        )
    });
    assert_eq!(a.size(), [2, 3, 1, 32, 32]);
    assert_eq!((a - b).abs().max().double_value(&[]), 0.0);
}

#[test]
fn training_leaves_plots_and_plot_redraws_them() {
    let plots = fixture().run.join("plots");
    let expect = [
        ("loss.png", (800, 480)),
        ("valid-per-frame.png", (960, 420)),
        (
            "prediction.png",
            (
                4 * 32 + 3 * crate::pictures::GAP as u32,
                3 * 32 + 2 * crate::pictures::GAP as u32,
            ),
        ),
    ];
    for (name, size) in expect {
        let (w, h, _) = png_info(&plots.join(name));
        assert_eq!((w, h), size, "{name}");
    }
    let before = std::fs::metadata(plots.join("loss.png"))
        .unwrap()
        .modified()
        .unwrap();
    plot::run(&fixture().run).unwrap();
    let after = std::fs::metadata(plots.join("loss.png"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(after >= before);
    for (name, _) in expect {
        png_info(&plots.join(name));
    }
}

#[test]
fn metrics_lines_become_plot_series() {
    let text = r#"{"kind":"train","step":10,"loss":0.5}
not json
{"kind":"valid","step":10,"loss":0.4,"per_frame":{"mse":[0.1,0.2],"ssim":[0.9,0.8]},"baselines":{"zeros":{"per_frame":{"mse":[0.3,0.3],"ssim":[0.2,0.2]}}}}
{"kind":"train","step":20,"loss":0.3}
{"kind":"eval","step":20,"loss":0.1}
"#;
    let s = plot::parse_metrics(text);
    assert_eq!(s.train, [(10.0, 0.5), (20.0, 0.3)]);
    assert_eq!(s.valid, [(10.0, 0.4)]);
    let last = s.last_valid.unwrap();
    assert_eq!(last.step, 10);
    assert_eq!(
        last.model,
        plot::Curves {
            mse: vec![0.1, 0.2],
            ssim: vec![0.9, 0.8]
        }
    );
    assert_eq!(last.copy_last, None);
    assert_eq!(last.zeros.unwrap().mse, [0.3, 0.3]);
}

#[test]
fn checkpoint_paths_imply_their_run_directory() {
    let mut a = CheckpointArgs {
        config: ConfigArgs {
            config: config(),
            overrides: vec![],
        },
        checkpoint: Resume::Path("/r/x/checkpoints/step-00000002".into()),
        run_dir: None,
    };
    assert_eq!(implied_run_dir(&a), Some(PathBuf::from("/r/x")));
    a.checkpoint = Resume::Path("/elsewhere/step-2".into());
    assert_eq!(implied_run_dir(&a), None);
    a.run_dir = Some("/given".into());
    assert_eq!(implied_run_dir(&a), Some(PathBuf::from("/given")));
}

#[test]
fn eval_reports_lpips_per_frame_and_horizon_with_its_preset() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("lpips.safetensors");
    convtt_common::lpips::write_random_weights(&weights, [4, 6, 5, 3, 2], 1).unwrap();
    let set = format!("train.lpips_weights={}", weights.display());
    let mut values = Vec::new();
    for preset in ["reference", "corrected"] {
        let mut c = ctx(&[&set, &format!("train.lpips_preset={preset}")]);
        let r = evaluate(&mut c, &Resume::Auto, "test", &[2, 6], 0).unwrap();
        let per_frame = r.per_frame.lpips.clone().expect("LPIPS per frame");
        assert_eq!(per_frame.len(), 6);
        assert!(
            per_frame.iter().all(|v| v.is_finite() && *v > 0.0),
            "{per_frame:?}"
        );
        let h2 = r.horizons[0].lpips.expect("LPIPS of the horizon");
        assert!((h2 - (per_frame[0] + per_frame[1]) / 2.0).abs() < 1e-12);
        assert!(r.conventions.lpips.contains(&format!("preset {preset}")));
        assert!(r.table().contains("LPIPS"));
        values.push(r.horizons[1].lpips.unwrap());
    }
    assert!(
        (values[0] - values[1]).abs() > 1e-6,
        "presets differ: {values:?}"
    );
    // Without weights there is no LPIPS and the report says why.
    let r = evaluate(&mut ctx(&[]), &Resume::Auto, "test", &[2], 0).unwrap();
    assert!(r.per_frame.lpips.is_none() && r.horizons[0].lpips.is_none());
    assert!(r.conventions.lpips.contains("not computed"));
    // A missing weights file is an error naming it.
    let missing = format!(
        "train.lpips_weights={}",
        dir.path().join("nope.safetensors").display()
    );
    let e = evaluate(&mut ctx(&[&missing]), &Resume::Auto, "test", &[2], 0).unwrap_err();
    assert!(e.to_string().contains("nope.safetensors"), "{e}");
}
