//! `convtt-worker model-info`: parameters per layer and in total, MACs per predicted frame and
//! per training step, and an activation-memory estimate, from the configuration alone
//! (`convtt_common::model::summary`, whose counts the model's tests check against built
//! networks and spec §3.4–§3.6).

use serde_json::json;

use super::load_config;
use crate::cli::ModelInfoArgs;
use crate::error::{Error, Result};
use convtt_common::config::{CellKind, ValidConfig};
use convtt_common::model::{summarize, ModelSummary};

/// How the numbers are counted (printed with the table and in the JSON).
pub const RULES: [&str; 4] = [
    "parameters: every weight and bias element",
    "MACs per frame: multiply-accumulates of convolution weights (biases excluded) x H x W for \
     one recurrent step of one sample (the reference README's 'multiplications for one-step \
     prediction', spec 3.6); FLOPs ~ 2 x MACs",
    "training step: ~3 x forward (forward + backward) x (I + F - 1) steps x batch",
    "activation memory: f32 tensors autograd keeps per layer and step (conv inputs and outputs, \
     gates, C, tanh C, H) x H x W x (I + F - 1) x batch; an estimate, allocator overhead extra",
];

/// Runs the subcommand (prints to stdout).
pub fn run(args: &ModelInfoArgs) -> Result<()> {
    let cfg = load_config(&args.config)?;
    print!("{}", render(&cfg, args.batch, args.json)?);
    Ok(())
}

/// The summary for `cfg` (batch from `batch` or `data.batch_size`).
pub fn summary(cfg: &ValidConfig, batch: Option<usize>) -> Result<ModelSummary> {
    let batch = batch.unwrap_or(cfg.data.batch_size);
    if batch == 0 {
        return Err(Error::Usage("--batch must be at least 1".into()));
    }
    let steps = cfg.data.input_frames + cfg.data.future_frames - 1;
    Ok(summarize(
        &cfg.model,
        cfg.data.height as i64,
        cfg.data.width as i64,
        batch as i64,
        steps as i64,
    ))
}

/// The table (or JSON) text.
pub fn render(cfg: &ValidConfig, batch: Option<usize>, as_json: bool) -> Result<String> {
    let s = summary(cfg, batch)?;
    if as_json {
        let v = json!({ "model": &cfg.model, "summary": &s, "rules": RULES });
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).expect("serialisable")
        ));
    }
    let m = &cfg.model;
    let mut out = String::new();
    let cell = match m.cell {
        CellKind::Convttlstm => {
            format!(
                "Conv-TT-LSTM N={} M={} (window S={}) C={}",
                m.order,
                m.steps,
                m.window(),
                m.rank
            ) + &if m.tt_kernel() == m.filter_size {
                String::new()
            } else {
                format!(", TT filter size {}", m.tt_kernel())
            }
        }
        CellKind::Convlstm => "ConvLSTM".to_owned(),
        CellKind::ConvlstmTtd => format!(
            "ConvLSTM with a tensor-train weight (classic TTD) d={} ranks {:?}",
            m.ttd_order,
            m.ttd_rank_list()
        ),
    };
    out += &format!(
        "{cell}, k={}, blocks {:?} x {} layers, skip stride {}, {} image channel(s), {}x{} frames\n\n",
        m.filter_size, m.block_widths, m.layers_per_block, m.skip_stride, m.image_channels, s.height,
        s.width
    );
    out += &format!(
        "{:<8} {:>5} {:>5} {:>12} {:>12} {:>14}\n",
        "layer", "in", "out", "params", "MACs/pixel", "MMACs/frame"
    );
    let pixels = (s.height * s.width) as f64;
    for l in &s.layers {
        out += &format!(
            "{:<8} {:>5} {:>5} {:>12} {:>12} {:>14.1}\n",
            l.name,
            l.input_channels,
            l.output_channels,
            group(l.parameters),
            group(l.macs_per_pixel),
            l.macs_per_pixel as f64 * pixels / 1e6
        );
    }
    out += &format!(
        "{:<8} {:>5} {:>5} {:>12} {:>12} {:>14.1}\n\n",
        "total",
        "",
        "",
        group(s.total_parameters),
        group(s.macs_per_frame / (s.height * s.width)),
        s.macs_per_frame as f64 / 1e6
    );
    out += &format!(
        "per predicted frame (1 sample): {:.3} GMAC\n",
        s.macs_per_frame as f64 / 1e9
    );
    out += &format!(
        "per training step (batch {}, {} steps): {:.3} TMAC\n",
        s.batch,
        s.training_steps,
        s.macs_per_training_step as f64 / 1e12
    );
    out += &format!(
        "activation memory of a training step (estimate): {:.2} GiB\n\nCounting rules:\n",
        s.activation_bytes as f64 / (1u64 << 30) as f64
    );
    for r in RULES {
        out += &format!("- {r}\n");
    }
    Ok(out)
}

/// 2687281 → "2,687,281".
fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &[&str]) -> ValidConfig {
        convtt_common::config::parse("", None, extra).unwrap()
    }

    #[test]
    fn table_shows_layers_totals_and_rules() {
        let text = render(&cfg(&[]), Some(8), false).unwrap();
        for needle in [
            "b0l0",
            "b3l2",
            "output",
            "2,687,281",
            "2,684,880",
            "Counting rules",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        // 2,684,880 MACs/pixel × 64 × 64 = 10.997 GMAC.
        assert!(text.contains("10.997 GMAC"), "{text}");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(999), "999");
    }

    #[test]
    fn json_matches_the_summary() {
        let text = render(&cfg(&["model.cell=\"convlstm\""]), Some(4), true).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["summary"]["total_parameters"], 3_973_201);
        assert_eq!(v["summary"]["batch"], 4);
        assert_eq!(v["summary"]["layers"].as_array().unwrap().len(), 13);
        let macs = v["summary"]["macs_per_training_step"].as_i64().unwrap();
        assert_eq!(macs, 3 * 3_971_280 * 64 * 64 * 19 * 4);
        assert!(matches!(
            render(&cfg(&[]), Some(0), true),
            Err(Error::Usage(_))
        ));
    }
}
