//! Weights I/O in safetensors with the reference state_dict names (spec §9), so exported files
//! load into the PyTorch reference with `load_state_dict` (see `docs/python.md`) and reference
//! weights converted to safetensors load here.
//!
//! Import accepts:
//! * keys with or without the `module.` prefix of DataParallel/DDP-wrapped models;
//! * the preprocessing weights `layers_.{l}.weight` in the `code/` / `eval_paper/` 5-D layout
//!   `[C, Ch, k, k, S]` or the `code_opt/` 4-D layout `[C, S·Ch, k, k]` (spec §2.4);
//! * any floating dtype (converted to the model's).
//!
//! Every missing, unexpected, duplicated or mis-shaped tensor is reported at once in one
//! [`Error::Format`] naming the file; nothing is modified unless the whole file fits.

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

use super::conv::to_conv3d_layout;
use super::network::Network;
use crate::error::{Error, Result};

/// Writes every parameter of `net` (on CPU, `code/` layout) under its reference name.
pub fn export_safetensors(net: &Network, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = net
        .named_parameters()
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&named, path)
        .map_err(|e| Error::format(path, format!("cannot write safetensors: {e}")))
}

/// Loads `path` into `net`'s parameters (see the module docs for what is accepted).
pub fn import_safetensors(net: &Network, path: &Path) -> Result<()> {
    std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let file = Tensor::read_safetensors(path)
        .map_err(|e| Error::format(path, format!("not a readable safetensors file: {e}")))?;
    let mut problems = Vec::new();
    let mut source: BTreeMap<String, (String, Tensor)> = BTreeMap::new();
    for (key, t) in file {
        let name = key.strip_prefix("module.").unwrap_or(&key).to_owned();
        if let Some((other, _)) = source.get(&name) {
            problems.push(format!("tensors `{other}` and `{key}` both give `{name}`"));
            continue;
        }
        source.insert(name, (key, t));
    }
    let mut assignments = Vec::new();
    for (name, var) in net.named_parameters() {
        let Some((key, src)) = source.remove(&name) else {
            problems.push(format!("missing tensor `{name}` {:?}", var.size()));
            continue;
        };
        if !src.is_floating_point() {
            problems.push(format!(
                "tensor `{key}` has dtype {:?}, expected a float type",
                src.kind()
            ));
            continue;
        }
        let (want, got) = (var.size(), src.size());
        let src = if got == want {
            src
        } else if want.len() == 5 && got == [want[0], want[4] * want[1], want[2], want[3]] {
            to_conv3d_layout(&src, want[4])
        } else {
            let alt = if want.len() == 5 {
                format!(" or {:?}", [want[0], want[4] * want[1], want[2], want[3]])
            } else {
                String::new()
            };
            problems.push(format!(
                "tensor `{key}` has shape {got:?}, expected {want:?}{alt}"
            ));
            continue;
        };
        assignments.push((var, src));
    }
    for (key, t) in source.values() {
        problems.push(format!(
            "unexpected tensor `{key}` {:?} (not a parameter of this model)",
            t.size()
        ));
    }
    if !problems.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "weights do not fit the configured model: {}",
                problems.join("; ")
            ),
        ));
    }
    tch::no_grad(|| -> Result<()> {
        for (var, src) in assignments {
            let src = src.f_to_kind(var.kind())?.f_to_device(var.device())?;
            var.shallow_clone().f_copy_(&src)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::model::conv::to_conv2d_layout;
    use std::path::PathBuf;
    use tch::{nn, Device};

    fn tiny() -> ModelConfig {
        ModelConfig {
            filter_size: 3,
            order: 2,
            steps: 3,
            rank: 2,
            block_widths: vec![3, 4],
            layers_per_block: 2,
            skip_stride: 1,
            ..ModelConfig::default()
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("convtt-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn network(seed: i64) -> (nn::VarStore, Network) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs.root(), &tiny());
        (vs, net)
    }

    fn assert_same(a: &Network, b: &Network) {
        for ((na, ta), (nb, tb)) in a.named_parameters().iter().zip(b.named_parameters()) {
            assert_eq!(na, &nb);
            assert!(ta.equal(&tb), "{na} differs");
        }
    }

    #[test]
    fn export_then_import_round_trips_with_reference_names() {
        let (_va, a) = network(1);
        let (_vb, b) = network(2);
        let path = temp("round.safetensors");
        export_safetensors(&a, &path).unwrap();
        let mut names: Vec<String> = Tensor::read_safetensors(&path)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        let mut want: Vec<String> = a.named_parameters().into_iter().map(|(n, _)| n).collect();
        want.sort();
        assert_eq!(names, want);
        assert!(names.contains(&"layers.b1l0.layers_.1.weight".to_owned()));
        import_safetensors(&b, &path).unwrap();
        assert_same(&a, &b);
    }

    /// A DDP-style file with `module.` keys and `code_opt/` 4-D preprocessing weights.
    #[test]
    fn import_accepts_module_prefix_and_code_opt_layout() {
        let (_va, a) = network(3);
        let (_vb, b) = network(4);
        let named: Vec<(String, Tensor)> = a
            .named_parameters()
            .into_iter()
            .map(|(n, t)| {
                let t = if t.dim() == 5 {
                    to_conv2d_layout(&t).contiguous()
                } else {
                    t
                };
                (format!("module.{n}"), t)
            })
            .collect();
        assert!(named
            .iter()
            .any(|(_, t)| t.dim() == 4 && t.size()[1] == 2 * 3));
        let path = temp("ddp.safetensors");
        Tensor::write_safetensors(&named, &path).unwrap();
        import_safetensors(&b, &path).unwrap();
        assert_same(&a, &b);
    }

    #[test]
    fn import_reports_missing_extra_and_misshaped_tensors_by_name() {
        let (_va, a) = network(5);
        let (_vb, b) = network(6);
        let before: Vec<Tensor> = b
            .named_parameters()
            .into_iter()
            .map(|(_, t)| t.copy())
            .collect();
        let mut named = a.named_parameters();
        named.retain(|(n, _)| n != "layers.b0l1.layers.0.bias");
        for (n, t) in named.iter_mut() {
            if n == "layers.b1l1.layers.1.weight" {
                *t = Tensor::zeros([2, 2], (tch::Kind::Float, Device::Cpu));
            }
        }
        named.push((
            "layers.b9l9.conv.weight".into(),
            Tensor::zeros([1], (tch::Kind::Float, Device::Cpu)),
        ));
        let path = temp("bad.safetensors");
        Tensor::write_safetensors(&named, &path).unwrap();
        let err = import_safetensors(&b, &path).unwrap_err();
        assert!(matches!(err, Error::Format { .. }));
        let msg = err.to_string();
        for needle in [
            "bad.safetensors",
            "missing tensor `layers.b0l1.layers.0.bias`",
            "tensor `layers.b1l1.layers.1.weight` has shape [2, 2]",
            "unexpected tensor `layers.b9l9.conv.weight`",
        ] {
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
        // Nothing was modified.
        for ((_, t), old) in b.named_parameters().iter().zip(before) {
            assert!(t.equal(&old));
        }
        let missing = import_safetensors(&b, &temp("absent.safetensors")).unwrap_err();
        assert!(
            matches!(missing, Error::Core(convtt_core::Error::Io { .. })),
            "{missing}"
        );
        std::fs::write(temp("garbage.safetensors"), b"not safetensors").unwrap();
        let garbage = import_safetensors(&b, &temp("garbage.safetensors")).unwrap_err();
        assert!(matches!(garbage, Error::Format { .. }), "{garbage}");
    }
}
