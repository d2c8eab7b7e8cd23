//! `convtt-worker forward`: an evaluation rollout (spec §3.2–§3.3) on frames from an `.npy`
//! file with saved weights; every input frame conditions the model, then F frames are predicted
//! autoregressively and written as `.npy` `[B, F, C, H, W]`.

use std::path::Path;

use tch::{nn, Device, Kind, Tensor};

use super::{load_config, parse_device};
use crate::cli::ForwardArgs;
use crate::error::{Error, Result};
use crate::npy::{self, NpyF32};
use convtt_common::config::ModelConfig;
use convtt_common::model::{import_safetensors, Network, Rollout};

/// Runs the subcommand.
pub fn run(args: &ForwardArgs) -> Result<()> {
    let cfg = load_config(&args.config)?;
    let device = parse_device(&args.device)?;
    if args.future == 0 {
        return Err(Error::Usage("--future must be at least 1".into()));
    }
    let input = npy::read(&args.input)?;
    let out = predict(
        &cfg.model,
        &args.weights,
        &input,
        &args.input,
        args.future,
        device,
    )?;
    npy::write(&args.out, &out)?;
    tracing::info!(
        "wrote {} predicted frames {:?} to {}",
        args.future,
        out.shape,
        args.out.display()
    );
    Ok(())
}

/// Loads `weights` into the model of `model`, conditions on every frame of `input`
/// (`[B, T, C, H, W]`) and returns the `future` predicted frames `[B, F, C, H, W]`.
/// `input_path` names the input in errors.
pub fn predict(
    model: &ModelConfig,
    weights: &Path,
    input: &NpyF32,
    input_path: &Path,
    future: usize,
    device: Device,
) -> Result<NpyF32> {
    let shape = &input.shape;
    let bad = |msg: String| Error::Data {
        path: input_path.to_owned(),
        msg,
    };
    if shape.len() != 5 {
        return Err(bad(format!(
            "input must be [B, T, C, H, W], got shape {shape:?}"
        )));
    }
    if shape.contains(&0) {
        return Err(bad(format!("input has an empty dimension: {shape:?}")));
    }
    if shape[2] != model.image_channels {
        return Err(bad(format!(
            "input has {} channels (dimension 2 of {shape:?}), the model expects {}",
            shape[2], model.image_channels
        )));
    }
    let vs = nn::VarStore::new(device);
    let net = Network::new(&vs.root(), model);
    import_safetensors(&net, weights)?;
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let frames = Tensor::from_slice(&input.data)
        .reshape(&dims)
        .to_device(device);
    let rollout = Rollout::eval(shape[1], future);
    let y = tch::no_grad(|| net.forward(&frames, &rollout))?;
    let y = y.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let out_shape: Vec<usize> = y.size().iter().map(|&d| d as usize).collect();
    let data = Vec::<f32>::try_from(&y.reshape([-1]))?;
    Ok(NpyF32 {
        shape: out_shape,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ConfigArgs;
    use convtt_common::model::export_safetensors;
    use std::path::PathBuf;

    const CONFIG: &str = "[model]\nfilter_size = 3\norder = 2\nsteps = 3\nrank = 2\n\
                          block_widths = [3, 4]\nlayers_per_block = 1\nskip_stride = 1\n";

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("convtt-forward-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn setup(name: &str) -> (ForwardArgs, Tensor, Network, nn::VarStore) {
        let d = dir();
        let config = d.join(format!("{name}.toml"));
        std::fs::write(&config, CONFIG).unwrap();
        let cfg = convtt_common::config::parse(CONFIG, None, &[] as &[&str]).unwrap();
        tch::manual_seed(12);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs.root(), &cfg.model);
        let weights = d.join(format!("{name}.safetensors"));
        export_safetensors(&net, &weights).unwrap();
        let frames = Tensor::rand([2, 4, 1, 6, 5], (Kind::Float, Device::Cpu));
        let input = d.join(format!("{name}-in.npy"));
        let data = Vec::<f32>::try_from(&frames.reshape([-1])).unwrap();
        npy::write(
            &input,
            &NpyF32 {
                shape: vec![2, 4, 1, 6, 5],
                data,
            },
        )
        .unwrap();
        let args = ForwardArgs {
            config: ConfigArgs {
                config,
                overrides: vec![],
            },
            weights,
            input,
            future: 3,
            out: d.join(format!("{name}-out.npy")),
            device: "cpu".into(),
        };
        (args, frames, net, vs)
    }

    #[test]
    fn forward_writes_the_models_eval_rollout() {
        let (args, frames, net, _vs) = setup("ok");
        run(&args).unwrap();
        let out = npy::read(&args.out).unwrap();
        assert_eq!(out.shape, [2, 3, 1, 6, 5]);
        let want = net.forward(&frames, &Rollout::eval(4, 3)).unwrap();
        let got = Tensor::from_slice(&out.data).reshape([2, 3, 1, 6, 5]);
        assert!((got - want).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn forward_errors_map_to_exit_codes() {
        let (args, ..) = setup("bad");
        // Wrong channel count in the input: a data error (5).
        let two_channels = NpyF32 {
            shape: vec![1, 2, 2, 3, 3],
            data: vec![0.0; 36],
        };
        npy::write(&args.input, &two_channels).unwrap();
        let err = run(&args).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit::DATA, "{err}");
        assert!(err.to_string().contains("channels"));
        // Weights for another model (--set changes the rank): a format error naming tensors (5).
        let mut other = args.clone();
        other.input = dir().join("bad-other-in.npy");
        npy::write(
            &other.input,
            &NpyF32 {
                shape: vec![1, 2, 1, 3, 3],
                data: vec![0.0; 18],
            },
        )
        .unwrap();
        other.config.overrides = vec!["model.rank=3".into()];
        let err = run(&other).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit::DATA, "{err}");
        assert!(
            err.to_string().contains("layers.b0l0.layers.0.weight"),
            "{err}"
        );
        // Usage errors (2).
        let zero = ForwardArgs {
            future: 0,
            ..args.clone()
        };
        assert_eq!(run(&zero).unwrap_err().exit_code(), crate::exit::CONFIG);
        let bad_set = ForwardArgs {
            config: ConfigArgs {
                overrides: vec!["model.order=9".into()],
                ..args.config.clone()
            },
            ..args.clone()
        };
        assert_eq!(run(&bad_set).unwrap_err().exit_code(), crate::exit::CONFIG);
        // A missing weights file (5).
        let missing = ForwardArgs {
            weights: dir().join("nope.safetensors"),
            ..args
        };
        assert_eq!(run(&missing).unwrap_err().exit_code(), crate::exit::DATA);
    }
}
