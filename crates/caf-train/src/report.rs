//! Plots of a run or an evaluation, as SVG files (plotters).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

use crate::breakdown::Band;
use crate::error::{Result, TrainError};
use crate::evaluate::Predictions;

fn plot_error<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> TrainError + '_ {
    move |e| TrainError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Series of a `metrics.jsonl`: training losses and critic statistics by
/// step, validation mean CCC by epoch.
#[derive(Debug, Default)]
struct Curves {
    loss_av: Vec<(f64, f64)>,
    loss_critic: Vec<(f64, f64)>,
    loss_adversarial: Vec<(f64, f64)>,
    mean_ccc: Vec<(f64, f64)>,
    /// Per critic statistic (`critic.*` of the train rows, plus
    /// `weak_critic_output` and `lambda`), by name.
    critic: std::collections::BTreeMap<&'static str, Vec<(f64, f64)>>,
}

/// The critic statistics plotted, as logged in the train rows.
const CRITIC_SERIES: [&str; 7] = [
    "d_ap",
    "d_an",
    "margin",
    "strong_weak_distance",
    "active_hinges",
    "weak_critic_output",
    "lambda",
];

fn read_curves(metrics: &Path) -> Result<Curves> {
    let text = std::fs::read_to_string(metrics).map_err(TrainError::file("read", metrics))?;
    let mut curves = Curves::default();
    for (number, line) in text.lines().enumerate() {
        let record: Value = serde_json::from_str(line)
            .map_err(|e| TrainError::malformed(metrics, format!("line {}: not JSON ({e})", number + 1)))?;
        let number_of = |key: &str| record[key].as_f64().filter(|v| v.is_finite());
        match record["kind"].as_str() {
            Some("train") => {
                let Some(step) = number_of("step") else { continue };
                for (series, key) in [
                    (&mut curves.loss_av, "loss_av"),
                    (&mut curves.loss_critic, "loss_critic"),
                    (&mut curves.loss_adversarial, "loss_adversarial"),
                ] {
                    if let Some(value) = number_of(key) {
                        series.push((step, value));
                    }
                }
                for key in CRITIC_SERIES {
                    let value = record["critic"][key]
                        .as_f64()
                        .or_else(|| record[key].as_f64())
                        .filter(|v| v.is_finite());
                    if let (Some(value), true) = (value, record["critic"].is_object()) {
                        curves.critic.entry(key).or_default().push((step, value));
                    }
                }
            }
            Some("validation") => {
                if let (Some(epoch), Some(ccc)) = (number_of("epoch"), number_of("mean_ccc")) {
                    curves.mean_ccc.push((epoch, ccc));
                }
            }
            _ => {}
        }
    }
    Ok(curves)
}

fn range(points: &[&[(f64, f64)]], axis: usize) -> std::ops::Range<f64> {
    let values = points
        .iter()
        .flat_map(|s| s.iter().map(move |p| if axis == 0 { p.0 } else { p.1 }));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad)..(hi + pad)
}

/// Learning curves (training losses; validation mean CCC) from `metrics.jsonl`.
pub fn learning_curves(metrics: &Path, out: &Path) -> Result<()> {
    let curves = read_curves(metrics)?;
    let err = plot_error(out);
    let root = SVGBackend::new(out, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let (top, bottom) = root.split_vertically(420);
    line_panel(
        &top,
        "training losses",
        &[
            ("L_AV", &curves.loss_av, BLUE),
            ("L_c (critic)", &curves.loss_critic, RED),
            ("L_adv", &curves.loss_adversarial, GREEN),
        ],
        &err,
    )?;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("validation mean CCC (valence, arousal)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(range(&[&curves.mean_ccc], 0), range(&[&curves.mean_ccc], 1))
        .map_err(&err)?;
    chart.configure_mesh().x_desc("epoch").draw().map_err(&err)?;
    chart
        .draw_series(LineSeries::new(curves.mean_ccc.iter().copied(), BLACK))
        .map_err(&err)?;
    chart
        .draw_series(curves.mean_ccc.iter().map(|&p| Circle::new(p, 3, BLACK.filled())))
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

/// The colour of a label intensity band in plots.
fn band_colour(band: Band) -> RGBColor {
    match band {
        Band::Weak => RGBColor(230, 120, 0),
        Band::Medium => RGBColor(0, 150, 90),
        Band::Strong => RGBColor(40, 60, 220),
    }
}

type Series<'a> = (&'a str, &'a [(f64, f64)], RGBColor);

/// One panel of line series sharing axes, with a legend.
fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    series: &[Series],
    err: &impl Fn(DrawingAreaErrorKind<DB::ErrorType>) -> TrainError,
) -> Result<()> {
    let all: Vec<&[(f64, f64)]> = series.iter().map(|l| l.1).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(range(&all, 0), range(&all, 1))
        .map_err(err)?;
    chart.configure_mesh().x_desc("iteration").draw().map_err(err)?;
    for &(name, points, color) in series {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// What the critic and the adversary did over a CAF run, from
/// `metrics.jsonl`: the critic's distances and margin, the share of active
/// hinges and the weak samples' critic output, and λ. `None` when the run
/// logged no critic phase (the baseline).
pub fn critic_curves(metrics: &Path, out: &Path) -> Result<Option<PathBuf>> {
    let curves = read_curves(metrics)?;
    if curves.critic.is_empty() {
        return Ok(None);
    }
    let err = plot_error(out);
    let root = SVGBackend::new(out, (900, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let panels = root.split_evenly((3, 1));
    let get = |key: &str| curves.critic.get(key).map(Vec::as_slice).unwrap_or(&[]);
    line_panel(
        &panels[0],
        "critic: mean squared distances and margin",
        &[
            ("d_ap (strong–strong)", get("d_ap"), BLUE),
            ("‖s − w‖² (strong–weak)", get("strong_weak_distance"), RED),
            ("margin m", get("margin"), BLACK),
            ("d_an (hinge)", get("d_an"), MAGENTA),
        ],
        &err,
    )?;
    line_panel(
        &panels[1],
        "share of active hinges; mean critic output of weak samples",
        &[
            ("active hinges", get("active_hinges"), RED),
            ("weak critic output", get("weak_critic_output"), GREEN),
        ],
        &err,
    )?;
    line_panel(
        &panels[2],
        "Lagrange multiplier λ",
        &[("λ", get("lambda"), BLACK)],
        &err,
    )?;
    root.present().map_err(&err)?;
    Ok(Some(out.to_path_buf()))
}

/// True and predicted (valence, arousal) on the circumplex, side by side,
/// each point coloured by its label's intensity band.
pub fn circumplex(predictions: &Predictions, title: &str, out: &Path) -> Result<()> {
    let err = plot_error(out);
    let root = SVGBackend::new(out, (1000, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(&err)?;
    let (left, right) = root.split_horizontally(500);
    for (area, points, name) in [
        (left, &predictions.labels, "labels"),
        (right, &predictions.predicted, "predictions"),
    ] {
        let mut chart = ChartBuilder::on(&area)
            .caption(name, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(-1.1f64..1.1f64, -1.1f64..1.1f64)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("valence")
            .y_desc("arousal")
            .disable_mesh()
            .draw()
            .map_err(&err)?;
        let circle = (0..=180).map(|i| {
            let angle = i as f64 / 180.0 * std::f64::consts::TAU;
            (angle.cos(), angle.sin())
        });
        chart
            .draw_series(LineSeries::new(circle, BLACK.mix(0.5)))
            .map_err(&err)?;
        chart
            .draw_series(LineSeries::new([(-1.0, 0.0), (1.0, 0.0)], BLACK.mix(0.3)))
            .map_err(&err)?;
        chart
            .draw_series(LineSeries::new([(0.0, -1.0), (0.0, 1.0)], BLACK.mix(0.3)))
            .map_err(&err)?;
        for band in Band::ALL {
            let colour = band_colour(band);
            chart
                .draw_series(
                    points
                        .iter()
                        .zip(&predictions.labels)
                        .filter(|(_, label)| Band::of(**label) == band)
                        .map(|(p, _)| Circle::new((p[0] as f64, p[1] as f64), 2, colour.mix(0.6).filled())),
                )
                .map_err(&err)?
                .label(band.name())
                .legend(move |(x, y)| Circle::new((x + 6, y), 3, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(&err)?;
    }
    root.present().map_err(&err)?;
    Ok(())
}

/// Both plots of a finished run under `<output>/report/`; returns their paths.
pub fn run_report(output: &Path, predictions: &Predictions) -> Result<Vec<PathBuf>> {
    let folder = output.join("report");
    std::fs::create_dir_all(&folder).map_err(TrainError::file("create", &folder))?;
    let (curves, scatter) = (folder.join("learning_curves.svg"), folder.join("circumplex.svg"));
    learning_curves(&output.join("metrics.jsonl"), &curves)?;
    circumplex(
        predictions,
        "validation: true vs predicted valence and arousal",
        &scatter,
    )?;
    let mut written = vec![curves, scatter];
    written.extend(critic_curves(
        &output.join("metrics.jsonl"),
        &folder.join("critic.svg"),
    )?);
    Ok(written)
}
