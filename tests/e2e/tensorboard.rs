//! TensorBoard event files, read back by the real `tensorboard` package of the project venv:
//! a run, a resume that recomputes steps the first event file already holds (each step must
//! appear once), a peer recovery as a text event, and an event file cut mid-record.

use std::process::Command;

use crate::util::*;

/// What TensorBoard's `EventAccumulator` finds in a directory: per tag, the steps.
const READ: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0, "tensors": 0})
acc.Reload()
tags = acc.Tags()
out = {
    "scalars": {t: [e.step for e in acc.Scalars(t)] for t in tags["scalars"]},
    "images": {t: [[e.step, e.width, e.height, len(e.encoded_image_string)] for e in acc.Images(t)]
               for t in tags["images"]},
    "tensors": {t: [[e.step, e.tensor_proto.string_val[0].decode()] for e in acc.Tensors(t)]
                for t in tags["tensors"]},
    "loss": {str(e.step): e.value for e in acc.Scalars("train/loss")} if "train/loss" in tags["scalars"] else {},
}
print(json.dumps(out))
"#;

pub(crate) fn tensorboard_reads(dir: &std::path::Path) -> serde_json::Value {
    let out = run(Command::new(venv_python()).args(["-c", READ]).arg(dir));
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "tensorboard could not read {}: {stderr} (run .ci/setup.sh: it installs tensorboard into \
         the project venv)",
        dir.display()
    );
    serde_json::from_str(&stdout).expect("the reader prints JSON")
}

fn launch(run_dir: &std::path::Path, overrides: &[String], fault: Option<&str>) -> Command {
    let mut cmd = launch_tiny(run_dir, overrides, fault);
    cmd.args(["--resume", "auto"]);
    cmd
}

#[test]
fn tensorboard_reads_scalars_images_and_text_each_step_once_across_a_resume() {
    let dir = TempDir::new("tb");
    let run_dir = dir.path().join("run");
    let mut ov = tiny_overrides(6);
    ov.extend([
        "checkpoint.every_steps=4".to_owned(),
        "train.valid_every=2".to_owned(),
    ]);
    let out = run(&mut launch(&run_dir, &ov, None));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    // The final checkpoint (step 6) goes: the resume starts from step 4 and recomputes 5 and 6,
    // which the first event file already holds.
    std::fs::remove_dir_all(run_dir.join("checkpoints/step-00000006")).unwrap();
    ov[1] = "train.max_steps=8".into();
    let out = run(&mut launch(&run_dir, &ov, Some("kill:rank=1:step=7")));
    let stderr = texts(&out).1;
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let log = std::fs::read_to_string(run_dir.join("logs/0-0.log")).unwrap();
    assert!(
        log.contains("resumed from") && log.contains("step-00000004"),
        "{log}"
    );

    let tb = run_dir.join("tb");
    let files: Vec<_> = std::fs::read_dir(&tb).unwrap().flatten().collect();
    assert_eq!(files.len(), 2, "one event file per start");
    let got = tensorboard_reads(&tb);
    let steps = |kind: &str, tag: &str| -> Vec<u64> {
        got[kind][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {kind} {tag}: {got}"))
            .iter()
            .map(|e| e.as_u64().or_else(|| e[0].as_u64()).unwrap())
            .collect()
    };
    assert_eq!(steps("scalars", "train/loss"), (1..=8).collect::<Vec<_>>());
    assert_eq!(steps("scalars", "train/lr"), (1..=8).collect::<Vec<_>>());
    // Validations at 2, 4, 6, 8 (and the final one at 8 is the same step: written once).
    assert_eq!(steps("scalars", "valid/mse"), vec![2, 4, 6, 8]);
    assert_eq!(
        steps("scalars", "valid_per_frame/mse/t+5"),
        vec![2, 4, 6, 8]
    );
    assert_eq!(
        steps("scalars", "valid_baseline/copy_last/mse"),
        vec![2, 4, 6, 8]
    );
    assert_eq!(steps("images", "valid/prediction"), vec![2, 4, 6, 8]);
    let img = &got["images"]["valid/prediction"][0];
    assert!(
        img[1].as_u64().unwrap() > 64 && img[3].as_u64().unwrap() > 100,
        "{img}"
    );
    let text = &got["tensors"]["events/recovery"];
    assert_eq!(text[0][0], 7, "{text}");
    assert!(text[0][1].as_str().unwrap().contains("rank 1"), "{text}");
    // The same losses as metrics.jsonl (the later line of a recomputed step).
    let losses = train_losses(&run_dir);
    for (step, loss) in &losses {
        let tb_loss = got["loss"][step.to_string()].as_f64().unwrap();
        assert!(
            (tb_loss - loss).abs() <= 1e-6 * loss.abs().max(1.0),
            "step {step}"
        );
    }

    // An event file cut mid-record (a kill mid-write) still loads up to its last whole record.
    let cut = dir.path().join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    let mut first: Vec<_> = files.iter().map(|f| f.path()).collect();
    first.sort();
    let bytes = std::fs::read(&first[0]).unwrap();
    let name = first[0].file_name().unwrap();
    std::fs::write(cut.join(name), &bytes[..bytes.len() - 9]).unwrap();
    let got = tensorboard_reads(&cut);
    let loss = got["scalars"]["train/loss"].as_array().unwrap().len();
    assert_eq!(loss, 6, "the first run's six losses: {got}");
}
