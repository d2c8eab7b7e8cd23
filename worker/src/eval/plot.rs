//! `<run>/plots/` (ARCHITECTURE §8): `loss.png` (train and validation loss against the step,
//! from `metrics.jsonl`), `valid-per-frame.png` (per-frame MSE and SSIM of the last validation)
//! and `prediction.png` (validation clip 0: input | truth | prediction).
//!
//! Rank 0 draws them at the end of training; `convtt-worker plot --run-dir R` redraws them from
//! the run's `config.toml`, `metrics.jsonl` and newest checkpoint. The chart plumbing (bitmap
//! backend, embedded font, PNG) is `convtt_core::plot`, shared with the launcher's sweep report.

use std::path::{Path, PathBuf};

use convtt_common::config::ValidConfig;
use convtt_common::model::Network;
use convtt_core::plot::{draw_legend, span, DrawResult};
use plotters::prelude::*;

use crate::checkpoint::Resume;
use crate::error::{Error, Result};

/// [`convtt_core::plot::render`] with the worker's error type.
fn render(path: &Path, size: (u32, u32), draw: impl FnOnce(&mut [u8]) -> DrawResult) -> Result<()> {
    convtt_core::plot::render(path, size, draw).map_err(crate::pictures::io_error)
}

/// What `metrics.jsonl` holds for the plots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// (step, mean training loss) of every `train` line.
    pub train: Vec<(f64, f64)>,
    /// (step, validation loss) of every `valid` line.
    pub valid: Vec<(f64, f64)>,
    /// The last `valid` line's per-frame curves.
    pub last_valid: Option<LastValid>,
}

/// Per-frame MSE and SSIM (paper preset) of one predictor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// Per-pixel MSE per predicted frame.
    pub mse: Vec<f64>,
    /// SSIM per predicted frame.
    pub ssim: Vec<f64>,
}

/// The last validation's per-frame curves: the model's, and the copy-last-frame and all-black
/// predictors' on the same clips (when the record has them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastValid {
    /// Its training step.
    pub step: u64,
    /// The model.
    pub model: Curves,
    /// Repeating the last input frame.
    pub copy_last: Option<Curves>,
    /// All-black frames.
    pub zeros: Option<Curves>,
}

/// The `per_frame` MSE and SSIM curves under `v`.
fn curves(v: &serde_json::Value) -> Option<Curves> {
    let frames = |k: &str| -> Option<Vec<f64>> {
        v.get("per_frame")?
            .get(k)?
            .as_array()?
            .iter()
            .map(serde_json::Value::as_f64)
            .collect()
    };
    Some(Curves {
        mse: frames("mse")?,
        ssim: frames("ssim")?,
    })
}

/// Reads the plot series from a `metrics.jsonl` text (lines that do not parse are skipped).
pub fn parse_metrics(text: &str) -> Series {
    let mut s = Series::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            tracing::debug!("metrics.jsonl: skipping a line that is not JSON");
            continue;
        };
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let (Some(step), Some(loss)) = (num("step"), num("loss")) else {
            continue;
        };
        match v.get("kind").and_then(serde_json::Value::as_str) {
            Some("train") => s.train.push((step, loss)),
            Some("valid") => {
                s.valid.push((step, loss));
                if let Some(model) = curves(&v) {
                    let baseline = |k: &str| v.get("baselines").and_then(|b| curves(b.get(k)?));
                    s.last_valid = Some(LastValid {
                        step: step as u64,
                        model,
                        copy_last: baseline("copy_last"),
                        zeros: baseline("zeros"),
                    });
                }
            }
            _ => {}
        }
    }
    s
}

/// Tick labels of a step axis: whole numbers without decimals.
fn step_label(x: &f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// `loss.png`: training loss (line) and validation loss (line and points) against the step.
pub fn loss_plot(path: &Path, s: &Series) -> Result<()> {
    render(path, (800, 480), |buf| {
        let root = BitMapBackend::with_buffer(buf, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let all = || s.train.iter().chain(&s.valid);
        let xs = span(all().map(|p| p.0), 1.0);
        let ys = span(all().map(|p| p.1), 5.0);
        let mut chart = ChartBuilder::on(&root)
            .caption("Loss (L1 + L2)", ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(xs, ys)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .x_label_formatter(&step_label)
            .label_style(("sans-serif", 14))
            .light_line_style(WHITE)
            .draw()?;
        let blue = BLUE.stroke_width(2);
        chart.draw_series(LineSeries::new(s.train.iter().copied(), blue))?;
        // Points too while they are few (a single logged step draws no line).
        let few = if s.train.len() <= 60 {
            &s.train[..]
        } else {
            &[]
        };
        chart
            .draw_series(few.iter().map(|&p| Circle::new(p, 2, BLUE.filled())))?
            .label("train")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue));
        let red = RED.stroke_width(2);
        chart.draw_series(LineSeries::new(s.valid.iter().copied(), red))?;
        chart
            .draw_series(s.valid.iter().map(|&p| Circle::new(p, 3, RED.filled())))?
            .label("validation")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
        draw_legend(&mut chart, 15)?;
        root.present()?;
        Ok(())
    })
}

/// `valid-per-frame.png`: per-frame MSE ×10³ and SSIM (paper preset) of one validation, with
/// the copy-last-frame and all-black predictors as reference lines.
pub fn per_frame_plot(path: &Path, v: &LastValid) -> Result<()> {
    render(path, (960, 420), |buf| {
        let root = BitMapBackend::with_buffer(buf, (960, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(
            &format!("Validation at step {}, per predicted frame", v.step),
            ("sans-serif", 20),
        )?;
        let (left, right) = root.split_horizontally(480);
        let mse = |c: &Curves| c.mse.iter().map(|x| x * 1e3).collect::<Vec<f64>>();
        let ssim = |c: &Curves| c.ssim.clone();
        let pick = |f: &dyn Fn(&Curves) -> Vec<f64>| -> Vec<(&'static str, Vec<f64>, RGBColor)> {
            let mut lines = vec![("model", f(&v.model), BLUE)];
            if let Some(c) = &v.copy_last {
                lines.push(("copy last frame", f(c), RGBColor(0, 140, 60)));
            }
            if let Some(c) = &v.zeros {
                lines.push(("all black", f(c), RGBColor(90, 90, 90)));
            }
            lines
        };
        let panels = [
            (left, "MSE ×10³", pick(&mse)),
            (right, "SSIM (paper preset)", pick(&ssim)),
        ];
        for (area, name, lines) in panels {
            frame_panel(&area, name, &lines)?;
        }
        root.present()?;
        Ok(())
    })
}

/// One panel of [`per_frame_plot`]: `lines` (label, values per frame, colour), the first thick
/// with points.
fn frame_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    name: &str,
    lines: &[(&'static str, Vec<f64>, RGBColor)],
) -> DrawResult {
    let n = lines[0].1.len().max(1) as i32;
    let all = lines.iter().flat_map(|l| l.1.iter().copied());
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0..n + 1, span(all, 5.0))?;
    chart
        .configure_mesh()
        .x_desc("predicted frame")
        .y_desc(name)
        .x_labels((n as usize + 2).min(16))
        .label_style(("sans-serif", 14))
        .light_line_style(WHITE)
        .draw()?;
    for (i, (label, values, color)) in lines.iter().enumerate() {
        let points: Vec<(i32, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i32 + 1, v))
            .collect();
        let style = color.stroke_width(if i == 0 { 2 } else { 1 });
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        if i == 0 {
            let c = *color;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        }
    }
    draw_legend(&mut chart, 15)
}

/// Draws every plot it can into `<run>/plots/`: the curves from `metrics.jsonl` and, given a
/// network, the prediction strip of validation clip 0. Returns the files written.
pub fn write_plots(
    run_dir: &Path,
    cfg: &ValidConfig,
    net: Option<&Network>,
) -> Result<Vec<PathBuf>> {
    let run = convtt_core::RunDir::new(run_dir);
    let dir = run.plots();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let metrics = run.metrics();
    let text = match std::fs::read_to_string(&metrics) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(&metrics, e)),
    };
    let series = parse_metrics(&text);
    let mut written = Vec::new();
    if !series.train.is_empty() || !series.valid.is_empty() {
        let p = dir.join("loss.png");
        loss_plot(&p, &series)?;
        written.push(p);
    }
    if let Some(last) = &series.last_valid {
        let p = dir.join("valid-per-frame.png");
        per_frame_plot(&p, last)?;
        written.push(p);
    }
    if let Some(net) = net {
        let p = dir.join("prediction.png");
        let d = &cfg.data;
        super::strip::prediction_strip(net, d, &d.valid_split, 0, d.future_frames, &p)?;
        written.push(p);
    }
    Ok(written)
}

/// Rank 0 at the end of training: draws the plots; a failure is a warning, not a failed run.
///
/// A plot that cannot be drawn is a warning, unless the file system is full, over quota or
/// read-only: that ends the run with exit 6 (everything else is saved by then).
pub fn after_training(run_dir: &Path, cfg: &ValidConfig, net: Option<&Network>) -> Result<()> {
    match write_plots(run_dir, cfg, net) {
        Ok(files) => tracing::info!(
            "plots: {}",
            files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) if e.storage_full() => {
            return Err(Error::Unavailable(format!(
                "{e}: the file system is full, over quota or read-only (the checkpoints and \
                 summary are saved; `convtt-worker plot --run-dir {}` draws the plots later)",
                run_dir.display()
            )))
        }
        Err(e) => tracing::warn!("cannot draw the plots: {e}"),
    }
    Ok(())
}

/// `convtt-worker plot --run-dir R`: uses `R/config.toml` and the newest valid checkpoint (the
/// prediction strip is skipped, with a warning, when there is none).
pub fn run(run_dir: &Path) -> Result<()> {
    let config = convtt_core::RunDir::new(run_dir).config();
    let cfg = convtt_common::config::load(&config, &[] as &[String])?;
    let loaded = match super::load_model(&cfg, run_dir, &Resume::Auto, tch::Device::Cpu, "plot") {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("no prediction strip: {e}");
            None
        }
    };
    for p in write_plots(run_dir, &cfg, loaded.as_ref().map(|l| &l.net))? {
        println!("wrote {}", p.display());
    }
    Ok(())
}
