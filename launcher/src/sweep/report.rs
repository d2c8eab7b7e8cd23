//! `convtt-launch sweep report`: every trial's summary in one table — `<sweep>/report.csv`
//! (all columns), `<sweep>/report.md` (ranked by the metric, best marked, failed and pending
//! trials listed with their state) — and `<sweep>/report.png`, the paper's bubble chart: the
//! metric against the parameter count, bubble area ∝ FLOPs per frame, one colour per value of
//! the first grid key, the best trial ringed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use convtt_core::config::MetricMode;
use convtt_core::fsutil::write_atomic;
use convtt_core::metric::{self, ranking_names, Metric};
use convtt_core::plot::{draw_legend, render, span};
use convtt_core::{RunDir, RunSummary};
use plotters::prelude::*;

use super::asha::{valid_series, ValidPoint};
use super::task::{State, TrialStatus};
use super::{human_count, short_key, Manifest, SweepDir, TrialEntry};
use crate::error::{Error, Result};

/// The validation metrics of `summary.toml`'s `[valid]` table the report shows, in order.
pub const VALID_METRICS: &[Metric] = metric::RANKING;

/// One trial's line of the report.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// The plan entry.
    pub trial: &'a TrialEntry,
    /// Its state.
    pub state: State,
    /// Its status file.
    pub status: TrialStatus,
    /// Steps trained (`summary.toml`).
    pub steps: Option<i64>,
    /// `[valid]` values in [`VALID_METRICS`] order.
    pub valid: Vec<Option<f64>>,
    /// The ranking metric.
    pub metric: Option<f64>,
}

/// Reads every trial's `status.toml` and `summary.toml`.
pub fn collect<'a>(dir: &SweepDir, m: &'a Manifest, metric: Metric) -> Vec<Row<'a>> {
    m.trials
        .iter()
        .map(|t| {
            let run = dir.trial(&t.id);
            let status = TrialStatus::read(&run);
            let state = status.effective(&run);
            let summary = RunSummary::read(&RunDir::new(&run)).unwrap_or_else(|e| {
                tracing::warn!("trial {}: {e}", t.id);
                None
            });
            let valid_of = |m: Metric| summary.as_ref()?.valid(m);
            let valid = VALID_METRICS.iter().map(|&m| valid_of(m)).collect();
            Row {
                trial: t,
                state,
                steps: summary.as_ref().map(|s| s.steps as i64),
                metric: if state == State::Done {
                    valid_of(metric)
                } else {
                    None
                },
                valid,
                status,
            }
        })
        .collect()
}

/// Order of the report: finished trials by metric (best first), then the others by index.
pub fn ranked<'a>(rows: &'a [Row<'a>], mode: MetricMode) -> Vec<&'a Row<'a>> {
    let mut v: Vec<&Row> = rows.iter().collect();
    v.sort_by(|a, b| match (a.metric, b.metric) {
        (Some(x), Some(y)) => mode.cmp_best_first(x, y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.trial.index.cmp(&b.trial.index),
    });
    v
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x:.6}"))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `report.csv`: one line per trial in index order, every column.
pub fn csv(m: &Manifest, rows: &[Row], best: Option<usize>) -> String {
    let mut head: Vec<String> = ["index", "id", "state", "best", "seed"]
        .map(String::from)
        .to_vec();
    head.extend(m.grid_keys.iter().cloned());
    head.extend(
        [
            "parameters",
            "gflop_per_frame",
            "gflop_per_step",
            "steps",
            "attempts",
            "preemptions",
            "exit_code",
            "seconds",
        ]
        .map(String::from),
    );
    head.extend(VALID_METRICS.iter().map(Metric::valid_name));
    let mut out = head
        .iter()
        .map(|s| csv_field(s))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for r in rows {
        let t = r.trial;
        let mut f = vec![
            t.index.to_string(),
            t.id.clone(),
            r.state.name().into(),
            (best == Some(t.index)).to_string(),
            t.seed.to_string(),
        ];
        f.extend(t.values.iter().cloned());
        f.extend([
            t.parameters.to_string(),
            format!("{:.6}", t.gflop_per_frame),
            format!("{:.6}", t.gflop_per_step),
            r.steps.map_or_else(String::new, |s| s.to_string()),
            r.status.attempts.to_string(),
            r.status.preemptions.to_string(),
            r.status
                .exit_code
                .map_or_else(String::new, |c| c.to_string()),
            format!("{:.1}", r.status.seconds),
        ]);
        f.extend(r.valid.iter().map(|v| opt(*v)));
        out += &(f.iter().map(|s| csv_field(s)).collect::<Vec<_>>().join(",") + "\n");
    }
    out
}

/// `report.md`: the ranked table.
pub fn markdown(m: &Manifest, rows: &[Row], metric: &str, mode: MetricMode) -> String {
    let order = ranked(rows, mode);
    let mut out = String::new();
    let counts = |s: State| rows.iter().filter(|r| r.state == s).count();
    let _ = writeln!(
        out,
        "Sweep of {} trials, ranked by `{metric}` ({} is better): {} done, {} stopped early, {} \
         failed, {} running, {} preempted, {} pending.\n",
        rows.len(),
        if mode == MetricMode::Max {
            "higher"
        } else {
            "lower"
        },
        counts(State::Done),
        counts(State::Stopped),
        counts(State::Failed),
        counts(State::Running),
        counts(State::Preempted),
        counts(State::Pending),
    );
    let mut head = vec!["rank".to_owned(), "#".into(), "id".into(), "state".into()];
    head.extend(m.grid_keys.iter().map(|k| short_key(k).to_owned()));
    head.extend(["seed".into(), "params".into(), "GFLOP/frame".into()]);
    head.push(format!("**{metric}**"));
    head.extend(
        VALID_METRICS
            .iter()
            .map(Metric::valid_name)
            .filter(|k| k != metric),
    );
    head.extend(["steps".into(), "time (s)".into()]);
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let _ = writeln!(out, "|{}", head.iter().map(|_| "---|").collect::<String>());
    let mut rank = 0;
    for r in order {
        let t = r.trial;
        let rank_text = if r.metric.is_some() {
            rank += 1;
            if rank == 1 {
                "**1 (best)**".to_owned()
            } else {
                rank.to_string()
            }
        } else {
            "–".into()
        };
        let state = match r.state {
            State::Failed => format!(
                "**failed** (exit {}, {} attempt{})",
                r.status.exit_code.unwrap_or(1),
                r.status.attempts,
                if r.status.attempts == 1 { "" } else { "s" }
            ),
            State::Stopped => format!(
                "stopped at step {} (ASHA)",
                r.status.stopped_at.unwrap_or(0)
            ),
            s if r.status.promoted => format!("{} (promoted)", s.name()),
            s => s.name().into(),
        };
        let mut f = vec![rank_text, t.index.to_string(), format!("`{}`", t.id), state];
        f.extend(t.values.iter().cloned());
        f.extend([
            t.seed.to_string(),
            human_count(t.parameters),
            format!("{:.4}", t.gflop_per_frame),
        ]);
        f.push(
            r.metric
                .map_or_else(|| "–".into(), |v| format!("**{v:.5}**")),
        );
        for (m, v) in VALID_METRICS.iter().zip(&r.valid) {
            if m.valid_name() != metric {
                f.push(v.map_or_else(|| "–".into(), |v| format!("{v:.5}")));
            }
        }
        f.push(r.steps.map_or_else(|| "–".into(), |s| s.to_string()));
        f.push(format!("{:.1}", r.status.seconds));
        let _ = writeln!(out, "| {} |", f.join(" | "));
    }
    out
}

/// The rungs of an ASHA sweep: per rung, who recorded what and who went on or stopped
/// (empty without ASHA).
pub fn asha_markdown(dir: &SweepDir, m: &Manifest) -> Result<String> {
    let Some(a) = &m.asha else {
        return Ok(String::new());
    };
    let mut out = format!(
        "\n### Early stopping (ASHA: rungs at steps {:?}, η = {}, {} steps for a trial never \
         stopped)\n\n| rung | step | recorded | went on | stopped |\n|---|---|---|---|---|\n",
        a.rungs, a.reduction_factor, a.max_steps
    );
    for (k, step) in a.rungs.iter().enumerate() {
        let recs = super::asha::read_rung(dir, k)?;
        let list = |d: super::asha::Decision| {
            let v: Vec<String> = recs
                .iter()
                .filter(|r| r.decision == d)
                .map(|r| format!("#{} ({:.5}, rank {}/{})", r.index, r.value, r.rank, r.seen))
                .collect();
            if v.is_empty() {
                "–".to_owned()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(
            out,
            "| {k} | {step} | {} | {} | {} |",
            recs.len(),
            list(super::asha::Decision::Continue),
            list(super::asha::Decision::Stop)
        );
    }
    Ok(out)
}

/// `report-curves.png`: every trial's validation metric against steps (a stopped trial's
/// curve ends at its rung), and the best value found so far against the sweep's wall time.
/// Writes nothing and returns false when no trial has validated yet.
pub fn curves_chart(dir: &SweepDir, m: &Manifest, metric: Metric, path: &Path) -> Result<bool> {
    let series: Vec<(usize, Vec<ValidPoint>)> = m
        .trials
        .iter()
        .map(|t| {
            let series = valid_series(&dir.trial(&t.id), metric).unwrap_or_default();
            (t.index, series)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    let mut events: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, s)| s.iter().filter_map(|&(_, v, t)| Some((t?, v))))
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let t0 = events.first().map_or(0.0, |e| e.0);
    let mut best: Vec<(f64, f64)> = Vec::new();
    // A step function: the best value holds until a better one is recorded.
    for (t, v) in &events {
        let h = (t - t0) / 3600.0;
        match best.last().copied() {
            Some((_, b)) if !metric.mode.better(*v, b) => {}
            Some((_, b)) => {
                best.push((h, b));
                best.push((h, *v));
            }
            None => best.push((h, *v)),
        }
    }
    if let (Some(&(_, b)), Some(&(t, _))) = (best.last(), events.last()) {
        best.push(((t - t0) / 3600.0, b));
    }
    let xs = span(
        series
            .iter()
            .flat_map(|(_, s)| s.iter().map(|p| p.0 as f64)),
        1.0,
    );
    let ys = span(series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)), 1.0);
    let ts = span(best.iter().map(|p| p.0), 1.0);
    let bs = span(best.iter().map(|p| p.1), 1.0);
    let name = metric.valid_name();
    let size = (1200, 500);
    render(path, size, |buf| {
        let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(660);
        let mut chart = ChartBuilder::on(&left)
            .caption(format!("Learning curves: {name}"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xs, ys)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(name.as_str())
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE)
            .draw()?;
        for (i, (index, s)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    s.iter().map(|p| (p.0 as f64, p.1)),
                    color.stroke_width(2),
                ))?
                .label(format!("#{index}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color));
            chart.draw_series(
                s.iter()
                    .map(|p| Circle::new((p.0 as f64, p.1), 3, color.filled())),
            )?;
        }
        draw_legend(&mut chart, 12)?;
        let mut chart = ChartBuilder::on(&right)
            .caption("Best so far over the sweep's wall time", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(ts, bs)?;
        chart
            .configure_mesh()
            .x_desc("hours since the first validation")
            .y_desc(name.as_str())
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE)
            .draw()?;
        chart.draw_series(LineSeries::new(best.iter().copied(), BLACK.stroke_width(2)))?;
        root.present()?;
        Ok(())
    })?;
    Ok(true)
}

/// Worker-hours spent against what every trial trained to its end would have cost, at each
/// trial's own measured speed (ASHA sweeps only; empty otherwise).
pub fn budget_markdown(dir: &SweepDir, m: &Manifest, rows: &[Row]) -> String {
    let Some(a) = &m.asha else {
        return String::new();
    };
    let base = convtt_core::config::load(&dir.base(), &[] as &[&str]).ok();
    let (units, what) = match &base {
        Some(b) if b.launch.gpus > 0 => (b.launch.gpus as f64, "GPU"),
        Some(b) => (b.launch.cpu_workers.max(1) as f64, "CPU-worker"),
        None => (1.0, "worker"),
    };
    let (mut spent, mut full) = (0.0, 0.0);
    for r in rows {
        let steps = match r.state {
            State::Stopped => r.status.stopped_at,
            _ => r.steps.map(|s| s as u64),
        };
        let hours = r.status.seconds * units / 3600.0;
        spent += hours;
        full += match steps {
            Some(s) if s > 0 => hours * a.max_steps as f64 / s as f64,
            _ => hours,
        };
    }
    format!(
        "\n{what}-hours spent: {spent:.4}; every trial trained to {} steps at its own measured \
         speed: {full:.4} ({:.0} % saved by early stopping).\n",
        a.max_steps,
        if full > 0.0 {
            100.0 * (1.0 - spent / full)
        } else {
            0.0
        }
    )
}

/// `report.png`: metric against parameters, bubble area ∝ GFLOP per frame.
pub fn bubble_chart(
    path: &Path,
    m: &Manifest,
    rows: &[Row],
    metric: &str,
    best: Option<usize>,
) -> Result<()> {
    let done: Vec<&Row> = rows.iter().filter(|r| r.metric.is_some()).collect();
    let xs = span(done.iter().map(|r| r.trial.parameters as f64 / 1e6), 1.0);
    let ys = span(done.iter().filter_map(|r| r.metric), 4.0);
    let fmax = done
        .iter()
        .map(|r| r.trial.gflop_per_frame)
        .fold(0.0f64, f64::max)
        .max(1e-12);
    // One colour per value of the first grid key.
    let key = m.grid_keys.first().map(|k| (0usize, k.clone()));
    let mut groups: Vec<String> = Vec::new();
    for r in &done {
        let g = key
            .as_ref()
            .map_or_else(String::new, |(i, _)| r.trial.values[*i].clone());
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    let size = (900, 560);
    render(path, size, |buf| {
        let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Sweep: {metric} vs parameters (bubble area ~ FLOPs per frame)"),
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(46)
            .y_label_area_size(78)
            .build_cartesian_2d(xs, ys)?;
        chart
            .configure_mesh()
            .x_desc("parameters (millions)")
            .y_desc(metric)
            .label_style(("sans-serif", 14))
            .light_line_style(WHITE)
            .draw()?;
        for (gi, g) in groups.iter().enumerate() {
            let color = palette[gi % palette.len()];
            let members: Vec<&&Row> = done
                .iter()
                .filter(|r| key.as_ref().is_none_or(|(i, _)| &r.trial.values[*i] == g))
                .collect();
            let radius = |r: &Row| (4.0 + 18.0 * (r.trial.gflop_per_frame / fmax).sqrt()) as i32;
            let series = chart.draw_series(members.iter().map(|r| {
                Circle::new(
                    (r.trial.parameters as f64 / 1e6, r.metric.unwrap_or(0.0)),
                    radius(r),
                    color.mix(0.45).filled(),
                )
            }))?;
            if let Some((_, k)) = &key {
                let label = format!("{} = {g}", short_key(k));
                series
                    .label(label)
                    .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
            }
            chart.draw_series(members.iter().map(|r| {
                Text::new(
                    format!("#{}", r.trial.index),
                    (r.trial.parameters as f64 / 1e6, r.metric.unwrap_or(0.0)),
                    ("sans-serif", 12),
                )
            }))?;
        }
        if let Some(b) = best.and_then(|b| done.iter().find(|r| r.trial.index == b)) {
            chart.draw_series(std::iter::once(Circle::new(
                (b.trial.parameters as f64 / 1e6, b.metric.unwrap_or(0.0)),
                26,
                BLACK.stroke_width(2),
            )))?;
        }
        if key.is_some() {
            draw_legend(&mut chart, 14)?;
        }
        root.present()?;
        Ok(())
    })?;
    Ok(())
}

/// What [`write_report`] wrote.
#[derive(Debug)]
pub struct ReportFiles {
    /// `report.csv`.
    pub csv: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.png`, when at least one trial finished.
    pub plot: Option<PathBuf>,
    /// `report-curves.png`, when at least one trial validated.
    pub curves: Option<PathBuf>,
    /// The Markdown text.
    pub text: String,
    /// Index of the best trial.
    pub best: Option<usize>,
}

impl ReportFiles {
    /// One line naming the files.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "sweep report: {}, {}",
            self.csv.display(),
            self.markdown.display()
        );
        match &self.plot {
            Some(p) => s += &format!(", {}", p.display()),
            None => s += " (no plot: no trial has finished)",
        }
        if let Some(c) = &self.curves {
            s += &format!(", {}", c.display());
        }
        s
    }
}

/// Writes `report.csv`, `report.md` and (when a trial finished) `report.png` into the sweep.
pub fn write_report(dir: &SweepDir, m: &Manifest, metric: &str) -> Result<ReportFiles> {
    let Some(ranking) = Metric::ranking(metric) else {
        return Err(Error::Usage(format!(
            "unknown metric {metric:?}; one of {}",
            ranking_names().join(", ")
        )));
    };
    let mode = ranking.mode;
    let rows = collect(dir, m, ranking);
    let best = ranked(&rows, mode)
        .first()
        .filter(|r| r.metric.is_some())
        .map(|r| r.trial.index);
    let csv_path = dir.0.join("report.csv");
    write_atomic(&csv_path, csv(m, &rows, best).as_bytes())?;
    let text = markdown(m, &rows, metric, mode)
        + &asha_markdown(dir, m)?
        + &budget_markdown(dir, m, &rows);
    let md_path = dir.0.join("report.md");
    write_atomic(&md_path, text.as_bytes())?;
    let plot = if best.is_some() {
        let p = dir.0.join("report.png");
        bubble_chart(&p, m, &rows, metric, best)?;
        Some(p)
    } else {
        None
    };
    let curves = dir.0.join("report-curves.png");
    let curves = curves_chart(dir, m, ranking, &curves)?.then_some(curves);
    Ok(ReportFiles {
        csv: csv_path,
        markdown: md_path,
        plot,
        curves,
        text,
        best,
    })
}

/// `convtt-launch sweep report`: writes the files and prints the Markdown table.
pub fn cmd_report(dir: &SweepDir, metric: Option<&str>) -> Result<()> {
    let m = dir.read_manifest()?;
    let metric = metric.unwrap_or(&m.metric).to_owned();
    let files = write_report(dir, &m, &metric)?;
    super::print_out(&files.text);
    eprintln!("{}", files.describe());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: usize, params: i64) -> TrialEntry {
        TrialEntry {
            index,
            id: format!("id{index}"),
            repeat: 0,
            seed: 0,
            overrides: vec![],
            values: vec![(index % 2 + 1).to_string()],
            parameters: params,
            gflop_per_frame: params as f64 * 1e-6,
            gflop_per_step: 1.0,
            worker_mib: 1.0,
        }
    }

    /// A real sweep directory with finished, failed and pending trials: the report ranks,
    /// marks and plots them.
    #[test]
    fn report_ranks_marks_and_plots() {
        let dir = SweepDir(
            std::env::temp_dir().join(format!("convtt-sweep-report-{}", std::process::id())),
        );
        let _ = std::fs::remove_dir_all(&dir.0);
        let m = Manifest {
            format_version: 1,
            config: "c.toml".into(),
            grid_keys: vec!["model.order".into()],
            metric: "valid.loss".into(),
            max_retries: 0,
            array_parallel: 2,
            asha: None,
            trials: (0..4).map(|i| entry(i, 1000 * (i as i64 + 1))).collect(),
        };
        let finish = |i: usize, loss: f64, psnr: f64| {
            let run = dir.trial(&m.trials[i].id);
            std::fs::create_dir_all(&run).unwrap();
            // Accuracy rises with PSNR here: ranked by accuracy, trial 0 must come first.
            let accuracy = psnr / 20.0;
            std::fs::write(
                RunDir::new(&run).summary(),
                format!("steps = 3\nepochs_completed = 1\nsamples_seen = 12\nfinal_train_loss = 0.1\n[valid]\nloss = {loss}\nmse = 0.1\nmae = 0.2\npsnr = {psnr}\nssim = 0.5\naccuracy = {accuracy}\n"),
            )
            .unwrap();
            TrialStatus {
                state: State::Done,
                attempts: 1,
                exit_code: Some(0),
                seconds: 2.0,
                ..TrialStatus::default()
            }
            .write(&run)
            .unwrap();
        };
        finish(0, 0.9, 10.0);
        finish(2, 0.5, 9.0);
        let run = dir.trial("id1");
        std::fs::create_dir_all(&run).unwrap();
        TrialStatus {
            state: State::Failed,
            attempts: 1,
            exit_code: Some(3),
            ..TrialStatus::default()
        }
        .write(&run)
        .unwrap();
        let files = write_report(&dir, &m, "valid.loss").unwrap();
        assert_eq!(files.best, Some(2));
        let csv = std::fs::read_to_string(&files.csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("index,id,state,best,seed,model.order,parameters"));
        assert!(lines[1].starts_with("0,id0,done,false,"), "{}", lines[1]);
        assert!(lines[2].starts_with("1,id1,failed,false,"), "{}", lines[2]);
        assert!(lines[3].starts_with("2,id2,done,true,"), "{}", lines[3]);
        assert!(lines[4].starts_with("3,id3,pending,false,"), "{}", lines[4]);
        let md = std::fs::read_to_string(&files.markdown).unwrap();
        let body: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
        assert!(body[0].starts_with("| **1 (best)** | 2 |"), "{md}");
        assert!(body[1].starts_with("| 2 | 0 |"), "{md}");
        assert!(body[2].contains("**failed** (exit 3, 1 attempt)"), "{md}");
        assert!(body[3].contains("| pending |"), "{md}");
        assert!(md.contains("2 done, 0 stopped early, 1 failed, 0 running, 0 preempted, 1 pending"));
        let png = std::fs::read(files.plot.unwrap()).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        // By PSNR (higher is better) trial 0 wins.
        assert_eq!(write_report(&dir, &m, "valid.psnr").unwrap().best, Some(0));
        // Regression: the mode was guessed from the name's suffix, so a sweep ranked by
        // accuracy put the worst trial first.
        let files = write_report(&dir, &m, "valid.accuracy").unwrap();
        assert_eq!(files.best, Some(0));
        let md = std::fs::read_to_string(&files.markdown).unwrap();
        let body: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
        assert!(body[0].starts_with("| **1 (best)** | 0 |"), "{md}");
        assert!(body[0].contains("**0.50000**"), "{md}");
        assert!(write_report(&dir, &m, "valid.lpips").is_err());
        std::fs::remove_dir_all(&dir.0).unwrap();
    }
}
