use super::*;

const NONE: &[&str] = &[];

fn issues(text: &str, overrides: &[&str]) -> Vec<ConfigIssue> {
    parse(text, Some("test.toml"), overrides)
        .expect_err("config should be rejected")
        .issues
}

#[test]
fn empty_config_is_the_paper_default() {
    let cfg = parse("", None, NONE).unwrap();
    assert_eq!(cfg.model.cell, CellKind::Convttlstm);
    assert_eq!(
        (cfg.model.order, cfg.model.steps, cfg.model.rank),
        (3, 3, 8)
    );
    assert_eq!(cfg.model.filter_size, 5);
    assert_eq!(cfg.model.window(), 1);
    assert_eq!(cfg.model.block_widths, vec![32, 48, 48, 32]);
}

#[test]
fn every_preset_in_configs_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load(&path, NONE).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "expected the four presets, found {n}");
}

#[test]
fn five_mistakes_in_three_sections_give_five_messages() {
    let text = r#"
[model]
ordr = 2            # unknown key (typo)
order = 5           # > steps
[data]
batch_size = "big"  # wrong type
[optim]
learning_rate = -1.0
beta1 = 1.5
"#;
    let found = issues(text, NONE);
    let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(found.len(), 5, "{found:#?}");
    for want in [
        "model.ordr",
        "model.order",
        "data.batch_size",
        "optim.learning_rate",
        "optim.beta1",
    ] {
        assert!(paths.contains(&want), "no issue for {want}: {paths:?}");
    }
    let typo = found.iter().find(|i| i.path == "model.ordr").unwrap();
    assert!(typo.msg.contains("did you mean `order`"), "{}", typo.msg);
}

#[test]
fn order_above_steps_names_both_keys() {
    let found = issues("[model]\norder = 5\nsteps = 3\n", NONE);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].to_string(),
        "model.order: must be ≤ model.steps (got 5 > 3)"
    );
}

#[test]
fn unknown_section_suggests_the_closest() {
    let found = issues("[modle]\norder = 2\n", NONE);
    assert_eq!(found[0].path, "modle");
    assert!(
        found[0].msg.contains("did you mean `model`"),
        "{}",
        found[0].msg
    );
}

#[test]
fn every_ill_typed_key_is_reported_not_just_the_first() {
    let found = issues(
        "[train]\nepochs = \"x\"\nseed = -3\ndevice = \"tpu\"\n",
        NONE,
    );
    let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths.len(), 3, "{found:#?}");
    assert!(paths.contains(&"train.epochs") && paths.contains(&"train.seed"));
    let device = found.iter().find(|i| i.path == "train.device").unwrap();
    assert!(
        device.msg.contains("cpu"),
        "lists the valid variants: {}",
        device.msg
    );
}

#[test]
fn overrides_take_toml_values_or_bare_strings() {
    let cfg = parse(
        "[model]\norder = 3\n",
        None,
        &[
            "model.order=2",
            "data.dataset=/tmp/x y",
            "model.block_widths=[8, 8]",
        ],
    )
    .unwrap();
    assert_eq!(cfg.model.order, 2);
    assert_eq!(cfg.data.dataset, "/tmp/x y");
    assert_eq!(cfg.model.block_widths, vec![8, 8]);
}

#[test]
fn a_sweep_grid_entry_can_be_set_with_a_quoted_key() {
    let cfg = parse(
        "",
        None,
        &[
            "sweep.grid.\"model.rank\"=[2, 4]",
            "sweep.grid.\"model.order\" = [1]",
        ],
    )
    .unwrap();
    let keys: Vec<&String> = cfg.sweep.grid.keys().collect();
    assert_eq!(keys, ["model.order", "model.rank"]);
    assert_eq!(cfg.sweep.grid["model.rank"].len(), 2);
}

#[test]
fn bad_overrides_are_reported_with_the_flag() {
    let found = issues("", &["model.order", "modle.order=2", "model.rank=zero"]);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(found[0].path, "--set model.order");
    assert_eq!(found[1].path, "modle");
    assert_eq!(found[2].path, "model.rank");
}

#[test]
fn syntax_errors_give_the_line() {
    let found = issues("[model]\norder = = 3\n", NONE);
    assert_eq!(found.len(), 1);
    assert!(found[0].msg.contains("line 2"), "{}", found[0].msg);
}

#[test]
fn display_lists_every_issue_under_the_file_name() {
    let err = parse("[model]\nrank = 0\nsteps = 0\n", Some("x.toml"), NONE).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("x.toml: 2 configuration problems"),
        "{text}"
    );
    assert!(
        text.contains("\n  model.rank: ") && text.contains("\n  model.steps: "),
        "{text}"
    );
}

#[test]
fn sweep_grid_keys_must_be_config_keys() {
    let found = issues(
        "[sweep.grid]\n\"model.ordr\" = [1, 2]\n\"model.rank\" = [4, 8]\n",
        NONE,
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].msg.contains("did you mean `model.order`"),
        "{}",
        found[0].msg
    );
}

#[test]
fn batch_must_divide_among_workers() {
    let found = issues("[data]\nbatch_size = 5\n[launch]\ncpu_workers = 2\n", NONE);
    assert_eq!(found[0].path, "data.batch_size");
}

#[test]
fn resolved_config_round_trips_and_model_hash_tracks_only_the_model() {
    let a = parse("", None, NONE).unwrap();
    let again = parse(&a.to_toml(), None, NONE).unwrap();
    assert_eq!(a, again);
    let b = parse("[train]\nseed = 7\n", None, NONE).unwrap();
    let c = parse("[model]\nrank = 4\n", None, NONE).unwrap();
    assert_eq!(a.model_hash(), b.model_hash());
    assert_ne!(a.model_hash(), c.model_hash());
}

#[test]
fn missing_file_names_the_path() {
    let err = load(Path::new("/nonexistent/cfg.toml"), NONE).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/cfg.toml: "),
        "{err}"
    );
}

#[test]
fn data_source_online_is_validated() {
    let cfg = parse("[data]\nsource = \"moving-mnist-online\"\n", None, NONE).unwrap();
    assert_eq!(cfg.data.source, DataSource::MovingMnistOnline);
    assert_eq!(
        parse("", None, NONE).unwrap().data.source,
        DataSource::Shards
    );
    let found = issues(
        "[data]\nsource = \"moving-mnist-online\"\nheight = 16\n",
        NONE,
    );
    let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, ["data.source", "data.height"], "{found:#?}");
    let found = issues("[data]\nmnist_dir = \"mnist\"\n", NONE);
    assert_eq!(found[0].path, "data.mnist_dir");
    let found = issues("[data]\nsource = \"online\"\n", NONE);
    assert_eq!(found[0].path, "data.source", "{found:#?}");
}

#[test]
fn activity_keys_hash_only_when_enabled_and_only_the_architecture() {
    // The hash of a config without [activity] is the hash of [model] alone (as before the
    // section existed), whatever the disabled section says.
    let plain = parse("", None, NONE).unwrap();
    let model_only = {
        let text = toml::to_string(&plain.model).unwrap();
        hex(&Sha256::digest(text.as_bytes()))
    };
    assert_eq!(plain.model_hash(), model_only);
    let off = parse("[activity]\nhidden_channels = 7\n", None, NONE).unwrap();
    assert_eq!(off.model_hash(), model_only);
    assert!(!plain.model_table().contains_key("activity"));

    let on = |extra: &[&str]| {
        let mut o = vec!["activity.enabled=true", "activity.classes=4"];
        o.extend_from_slice(extra);
        parse("", None, &o).unwrap()
    };
    let base = on(&[]);
    assert_ne!(base.model_hash(), model_only);
    assert!(base.model_table()["activity"]
        .as_table()
        .unwrap()
        .contains_key("recurrent_layers"));
    // Training keys leave the hash alone; architecture keys change it.
    assert_eq!(
        on(&[
            "activity.prediction_weight=0.5",
            "activity.input_ratio=0.25"
        ])
        .model_hash(),
        base.model_hash()
    );
    assert_ne!(on(&["activity.classes=5"]).model_hash(), base.model_hash());
    assert_ne!(
        on(&["activity.recurrent_layers=2"]).model_hash(),
        base.model_hash()
    );
}

#[test]
fn activity_mistakes_name_their_keys() {
    let got = issues(
        "[activity]\nenabled = true\nencoder_channels = [8]\ninput_ratio = 1.5\neval_ratios = [0.5, 0]\nprediction_weight = -1\n",
        NONE,
    );
    let keys: Vec<&str> = got.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        keys,
        [
            "activity.classes",
            "activity.encoder_channels",
            "activity.prediction_weight",
            "activity.input_ratio",
            "activity.eval_ratios[1]"
        ],
        "{got:?}"
    );
    assert!(got[0].msg.contains("class list"), "{got:?}");
    assert_eq!(input_frames_for(0.25, 20), 5);
    assert_eq!(input_frames_for(0.5, 20), 10);
    assert_eq!(input_frames_for(0.01, 20), 1);
}
