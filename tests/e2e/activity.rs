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

/// Writes `frames` gray 8×6 PNG frames into `root/<video>/00001.png …` for each video.
fn write_videos(root: &Path, videos: &[&str], frames: usize) {
    for (k, v) in videos.iter().enumerate() {
        let d = root.join(v);
        std::fs::create_dir_all(&d).unwrap();
        for t in 0..frames {
            let px = vec![(k * 40 + t * 5) as u8; 8 * 6];
            let w = std::io::BufWriter::new(
                std::fs::File::create(d.join(format!("{:05}.png", t + 1))).unwrap(),
            );
            let mut enc = png::Encoder::new(w, 8, 6);
            enc.set_color(png::ColorType::Grayscale);
            enc.write_header().unwrap().write_image_data(&px).unwrap();
        }
    }
}

fn data_cmd(args: &[&str]) -> Output {
    run(bare(&bin("convtt-data")).args(args))
}

fn shard_labels(shard: &Path) -> Vec<i64> {
    let f = hdf5::File::open(shard).unwrap();
    f.dataset("labels").unwrap().read_raw::<i64>().unwrap()
}

#[test]
fn import_frames_with_csv_and_ssv2_labels() {
    let tmp = TempDir::new("labels");
    let p = |s: &str| tmp.path().join(s);
    let s = |q: &Path| q.to_str().unwrap().to_owned();

    // KTH-style CSV: 4 frames per video, clips of 2 → 2 clips per video.
    write_videos(&p("kth/train"), &["v1", "v2", "v3"], 4);
    write_videos(&p("kth/valid"), &["v4"], 4);
    std::fs::write(
        p("kth.csv"),
        "clip,label\nv1,walking\nv2,boxing\nv3,walking\nv4,boxing\n",
    )
    .unwrap();
    std::fs::write(p("groups.csv"), "walking,legs\n").unwrap();
    let common = ["--size", "4", "--clip-length", "2"];
    let mut args = vec![
        format!("train={}", s(&p("kth/train"))),
        format!("valid={}", s(&p("kth/valid"))),
        "--labels".into(),
        s(&p("kth.csv")),
        "--groups".into(),
        s(&p("groups.csv")),
        "--out".into(),
        s(&p("kth-ds")),
    ];
    args.extend(common.iter().map(|a| a.to_string()));
    let mut cmd = bare(&bin("convtt-data"));
    let o = run(cmd.arg("import-frames").args(&args));
    assert_eq!(o.status.code(), Some(0), "{}", texts(&o).1);
    let o = data_cmd(&["inspect", &s(&p("kth-ds"))]);
    let out = texts(&o).0;
    assert_eq!(o.status.code(), Some(0), "{}", texts(&o).1);
    assert!(
        out.contains("classes     2 in 2 group(s): boxing, walking"),
        "{out}"
    );
    assert!(
        out.contains("labels      train: boxing 2, walking 4"),
        "{out}"
    );
    assert!(out.contains("labels      valid: boxing 2"), "{out}");
    let o = data_cmd(&["verify", &s(&p("kth-ds"))]);
    assert_eq!(o.status.code(), Some(0), "{}", texts(&o).0);
    assert!(texts(&o).0.contains("no problems found"));
    assert_eq!(
        shard_labels(&p("kth-ds/train/shard-00000.h5")),
        [1, 1, 0, 0, 1, 1]
    );
    let m = std::fs::read_to_string(p("kth-ds/dataset.toml")).unwrap();
    assert!(m.contains("walking = \"legs\""), "{m}");

    // Something-Something V2: the split files, the template → index file, and a video the
    // label files do not list (left out with --skip-unlabelled).
    write_videos(&p("ssv2"), &["78687", "42326", "1420", "999"], 2);
    std::fs::write(
        p("something-something-v2-labels.json"),
        r#"{"Holding something next to something": "0",
            "Putting something, so it falls": "1",
            "Spreading something onto something": "2"}"#,
    )
    .unwrap();
    std::fs::write(
        p("something-something-v2-train.json"),
        r#"[{"id": "78687", "label": "holding potato next to vase",
             "template": "Holding [something] next to [something]", "placeholders": ["potato", "vase"]},
            {"id": "42326", "label": "spreading margarine onto bread",
             "template": "Spreading [something] onto [something]", "placeholders": ["margarine", "bread"]}]"#,
    )
    .unwrap();
    std::fs::write(
        p("something-something-v2-validation.json"),
        r#"[{"id": "1420", "label": "putting a pen, so it falls",
             "template": "Putting [something], so it falls", "placeholders": ["a pen"]}]"#,
    )
    .unwrap();
    let ssv2 = |extra: &[&str], out: &str| {
        let mut a = vec![
            "import-frames".to_owned(),
            s(&p("ssv2")),
            "--split".into(),
            "train".into(),
            "--labels".into(),
            s(&p("something-something-v2-train.json")),
            "--labels".into(),
            s(&p("something-something-v2-validation.json")),
            "--rgb".into(),
            "--out".into(),
            s(&p(out)),
        ];
        a.extend(common.iter().chain(extra).map(|x| x.to_string()));
        run(bare(&bin("convtt-data")).args(&a))
    };
    let names = s(&p("something-something-v2-labels.json"));
    let o = ssv2(&["--label-names", &names, "--skip-unlabelled"], "ssv2-ds");
    assert_eq!(o.status.code(), Some(0), "{}", texts(&o).1);
    let o = data_cmd(&["inspect", &s(&p("ssv2-ds"))]);
    let out = texts(&o).0;
    assert!(
        out.contains(
            "classes     3 in 3 group(s): Holding something next to something, Putting \
             something, so it falls, Spreading something onto something"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "labels      train: Holding something next to something 1, Putting something, so \
             it falls 1, Spreading something onto something 1"
        ),
        "{out}"
    );
    assert!(out.contains("split       train: 3 clips"), "{out}");
    // Videos in path order: 1420, 42326, 78687 (999 left out).
    assert_eq!(shard_labels(&p("ssv2-ds/train/shard-00000.h5")), [1, 2, 0]);
    let o = data_cmd(&["verify", &s(&p("ssv2-ds"))]);
    assert_eq!(o.status.code(), Some(0), "{}", texts(&o).0);

    // Label problems: exit 5, the file, the line or entry and the fix; nothing written.
    let refused = |o: &Output, out: &str, want: &[&str]| {
        let err = texts(o).1;
        assert_eq!(o.status.code(), Some(5), "{err}");
        for w in want {
            assert!(err.contains(w), "{w:?} not in: {err}");
        }
        assert!(!p(out).exists());
    };
    let o = ssv2(&["--label-names", &names], "bad1");
    refused(
        &o,
        "bad1",
        &[
            "999",
            "something-something-v2-train.json",
            "--skip-unlabelled",
        ],
    );
    std::fs::write(p("classes.txt"), "Holding something next to something\n").unwrap();
    let o = ssv2(&["--classes", &s(&p("classes.txt"))], "bad2");
    refused(
        &o,
        "bad2",
        &[
            "something-something-v2-train.json: entry 1 (id 42326): class \"Spreading something \
             onto something\"",
            "classes.txt",
            "--skip-other-classes",
        ],
    );
    // … unless the other classes are left out on purpose (SSv2's 41-class subset); the
    // unlisted video 999 still needs --skip-unlabelled.
    let subset = |extra: &[&str], out: &str| {
        let mut a = vec!["--classes", "", "--skip-other-classes"];
        let list = s(&p("classes.txt"));
        a[1] = &list;
        a.extend(extra);
        ssv2(&a, out)
    };
    refused(
        &subset(&[], "subset"),
        "subset",
        &["video \"999\" has no label"],
    );
    let o = subset(&["--skip-unlabelled"], "subset");
    assert_eq!(o.status.code(), Some(0), "{}", texts(&o).1);
    assert_eq!(shard_labels(&p("subset/train/shard-00000.h5")), [0]);
    std::fs::write(p("dup.csv"), "v1,walking\nv2,boxing\nv1,boxing\n").unwrap();
    std::fs::write(p("bad.json"), "[{\"id\": \"1\", \"template\": ").unwrap();
    std::fs::write(p("groups-bad.csv"), "walking,legs\nwalkng,legs\n").unwrap();
    for (flags, want) in [
        (
            vec!["--labels", "dup.csv"],
            "dup.csv: line 3: clip \"v1\" is already labelled at",
        ),
        (vec!["--labels", "bad.json"], "bad.json: not valid JSON"),
        (
            vec!["--labels", "kth.csv", "--groups", "groups-bad.csv"],
            "groups-bad.csv: line 2: class \"walkng\" is not one of the 2 classes (did you mean \
             \"walking\"?)",
        ),
    ] {
        let mut a = vec![
            "import-frames".to_owned(),
            s(&p("kth/train")),
            "--split".into(),
            "train".into(),
            "--out".into(),
            s(&p("bad3")),
        ];
        a.extend(common.iter().map(|x| x.to_string()));
        for f in flags {
            a.push(if f.starts_with("--") {
                f.into()
            } else {
                s(&p(f))
            });
        }
        let o = run(bare(&bin("convtt-data")).args(&a));
        refused(&o, "bad3", &[want]);
    }
}

/// Replaces the sha256 and size of `shard` in `dataset/dataset.toml` after editing the shard,
/// so the only problem left is the one under test.
fn reseal(dataset: &Path, rel: &str) {
    let (sha, bytes) = convtt_core::fsutil::sha256_io(&dataset.join(rel)).unwrap();
    let path = dataset.join("dataset.toml");
    let mut m: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let (split, _) = rel.split_once('/').unwrap();
    let shards = m["splits"][split]["shards"].as_array_mut().unwrap();
    let e = shards
        .iter_mut()
        .find(|e| e["path"].as_str() == Some(rel))
        .unwrap()
        .as_table_mut()
        .unwrap();
    e.insert("sha256".into(), sha.into());
    e.insert("bytes".into(), (bytes as i64).into());
    std::fs::write(&path, toml::to_string(&m).unwrap()).unwrap();
}

#[test]
fn damaged_labels_are_refused_by_verify_and_training() {
    let tmp = TempDir::new("bad-labels");
    let data = tmp.path().join("labelled");
    make_data(&data, true);
    let rel = "train/shard-00000.h5";
    let shard = data.join(rel);
    let check = |want: &str, run_name: &str| {
        let o = run(bare(&bin("convtt-data")).arg("verify").arg(&data));
        let out = texts(&o).0;
        assert_eq!(o.status.code(), Some(5), "{out}");
        assert!(
            out.contains(want) && out.contains("shard-00000.h5"),
            "{out}"
        );
        assert!(!out.contains("sha256"), "only the label problem: {out}");
        let o = worker("train", &tmp.path().join(run_name), &data, &[]);
        let err = texts(&o).1;
        assert_eq!(o.status.code(), Some(5), "{err}");
        assert!(err.contains(want) && err.contains(rel), "{err}");
    };

    // A label outside 0 … 3 (4 classes), written in place.
    {
        let f = hdf5::File::open_rw(&shard).unwrap();
        let ds = f.dataset("labels").unwrap();
        let mut l = ds.read_raw::<i64>().unwrap();
        l[5] = 7;
        ds.write(&l[..]).unwrap();
    }
    reseal(&data, rel);
    check(
        "label 7 of clip 5 (shard-local) is outside the 4 classes 0 … 3",
        "run-range",
    );

    // No labels dataset at all.
    hdf5::File::open_rw(&shard)
        .unwrap()
        .unlink("labels")
        .unwrap();
    reseal(&data, rel);
    check(
        "no \"labels\" dataset, but dataset.toml lists 4 classes",
        "run-missing",
    );
}
