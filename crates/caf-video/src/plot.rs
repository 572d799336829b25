//! A video's readings as a picture: valence and arousal over time per track
//! (raw and smoothed), and each track's smoothed path on the circumplex, in
//! one SVG file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::timeline::TrackedFace;
use crate::tracker::TrackId;

/// Points kept per track: past this, every other point is dropped and then
/// only every other new one kept, so a long video's plot stays this size.
pub const MAX_PLOT_POINTS: usize = 20_000;

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the plot {}: {message}", path.display())]
pub struct PlotError {
    pub path: PathBuf,
    pub message: String,
}

/// One reading of a track: time, raw valence and arousal, smoothed valence and arousal.
type Point = [f64; 5];

#[derive(Debug, Clone, Default)]
struct Series {
    points: Vec<Point>,
    /// Keep one reading in `stride`.
    stride: usize,
    seen: usize,
}

impl Series {
    fn add(&mut self, point: Point) {
        self.stride = self.stride.max(1);
        if self.seen.is_multiple_of(self.stride) {
            if self.points.len() == MAX_PLOT_POINTS {
                let kept: Vec<Point> = self.points.iter().step_by(2).copied().collect();
                self.points = kept;
                self.stride *= 2;
            }
            if self.seen.is_multiple_of(self.stride) {
                self.points.push(point);
            }
        }
        self.seen += 1;
    }
}

/// Each track's readings over a video, gathered frame by frame.
#[derive(Debug, Clone, Default)]
pub struct VideoPlot {
    tracks: BTreeMap<TrackId, Series>,
}

impl VideoPlot {
    pub fn new() -> Self {
        Self::default()
    }

    /// The faces of the frame at `time_s`.
    pub fn add(&mut self, time_s: f64, faces: &[TrackedFace]) {
        for face in faces {
            let (raw, smoothed) = (face.face.va, face.smoothed);
            self.tracks.entry(face.track).or_default().add([
                time_s,
                f64::from(raw.valence),
                f64::from(raw.arousal),
                f64::from(smoothed.valence),
                f64::from(smoothed.arousal),
            ]);
        }
    }

    /// Tracks with at least one reading.
    pub fn tracks(&self) -> usize {
        self.tracks.len()
    }

    /// Writes the SVG: valence and arousal over time on the left (thin:
    /// raw, thick: smoothed; a colour per track), the smoothed paths on
    /// the circumplex on the right.
    pub fn write_svg(&self, path: &Path, title: &str) -> Result<(), PlotError> {
        let error = |e: &dyn std::fmt::Display| PlotError {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let root = SVGBackend::new(path, (1300, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| error(&e))?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(|e| error(&e))?;
        let (left, right) = root.split_horizontally(820);
        let (valence_area, arousal_area) = left.split_vertically(260);
        let end = self
            .tracks
            .values()
            .flat_map(|s| s.points.last().map(|p| p[0]))
            .fold(0.0f64, f64::max)
            .max(1e-3);
        let range = self.value_range();
        for (area, axis, name) in [(&valence_area, 1usize, "valence"), (&arousal_area, 2, "arousal")] {
            let mut chart = ChartBuilder::on(area)
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..end, -range..range)
                .map_err(|e| error(&e))?;
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .y_desc(name)
                .draw()
                .map_err(|e| error(&e))?;
            for (track, series) in &self.tracks {
                let colour = Palette99::pick(*track as usize);
                let raw = series.points.iter().map(|p| (p[0], p[axis]));
                let smoothed = series.points.iter().map(|p| (p[0], p[axis + 2]));
                chart
                    .draw_series(LineSeries::new(raw, colour.mix(0.35).stroke_width(1)))
                    .map_err(|e| error(&e))?;
                chart
                    .draw_series(LineSeries::new(smoothed, colour.stroke_width(3)))
                    .map_err(|e| error(&e))?
                    .label(format!("track {track}"))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(3)));
            }
            if !self.tracks.is_empty() {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| error(&e))?;
            }
        }
        let mut circle = ChartBuilder::on(&right)
            .margin(20)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(-range..range, -range..range)
            .map_err(|e| error(&e))?;
        circle
            .configure_mesh()
            .x_desc("valence")
            .y_desc("arousal")
            .draw()
            .map_err(|e| error(&e))?;
        let unit = (0..=120).map(|k| {
            let angle = k as f64 / 120.0 * std::f64::consts::TAU;
            (angle.cos(), angle.sin())
        });
        circle
            .draw_series(LineSeries::new(unit, BLACK.mix(0.3)))
            .map_err(|e| error(&e))?;
        for (track, series) in &self.tracks {
            let colour = Palette99::pick(*track as usize);
            let path_points = series.points.iter().map(|p| (p[3], p[4]));
            circle
                .draw_series(LineSeries::new(path_points, colour.stroke_width(2)))
                .map_err(|e| error(&e))?;
            if let Some(last) = series.points.last() {
                circle
                    .draw_series(std::iter::once(Circle::new((last[3], last[4]), 5, colour.filled())))
                    .map_err(|e| error(&e))?;
            }
        }
        root.present().map_err(|e| error(&e))
    }

    /// The axes' half-range: 1, or more when a reading lies outside the unit circle.
    fn value_range(&self) -> f64 {
        self.tracks
            .values()
            .flat_map(|s| s.points.iter())
            .flat_map(|p| p[1..].iter().copied())
            .filter(|v| v.is_finite())
            .fold(1.0f64, |range, v| range.max(v.abs()))
            * 1.05
    }
}

#[cfg(test)]
mod tests {
    use caf_data::FaceBox;
    use caf_infer::{FaceOrigin, FacePrediction, Va};

    use super::*;

    fn face(track: TrackId, valence: f32) -> TrackedFace {
        let va = Va {
            valence,
            arousal: -valence,
        };
        TrackedFace {
            face: FacePrediction {
                index: 0,
                face: FaceBox {
                    x: 0.0,
                    y: 0.0,
                    width: 10.0,
                    height: 10.0,
                },
                score: None,
                landmarks: None,
                origin: FaceOrigin::Detected,
                va,
            },
            track,
            smoothed: va,
        }
    }

    #[test]
    fn a_long_track_keeps_a_bounded_evenly_spaced_series() {
        let mut series = Series::default();
        for k in 0..(5 * MAX_PLOT_POINTS) {
            series.add([k as f64, 0.0, 0.0, 0.0, 0.0]);
        }
        assert!(series.points.len() <= MAX_PLOT_POINTS);
        assert!(series.points.len() > MAX_PLOT_POINTS / 4);
        let steps: std::collections::BTreeSet<u64> =
            series.points.windows(2).map(|w| (w[1][0] - w[0][0]) as u64).collect();
        assert_eq!(steps.len(), 1, "evenly spaced: {steps:?}");
        assert_eq!(series.points[0][0], 0.0);
    }

    #[test]
    fn the_svg_has_a_line_per_track() {
        let mut plot = VideoPlot::new();
        for k in 0..30 {
            let t = k as f64 / 10.0;
            plot.add(t, &[face(0, 0.5), face(1, -0.3 + 0.01 * k as f32)]);
        }
        assert_eq!(plot.tracks(), 2);
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("plot.svg");
        plot.write_svg(&path, "test").expect("written");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.contains("track 0") && svg.contains("track 1"), "{}", &svg[..200]);
        assert!(svg.contains("valence") && svg.contains("arousal"));
    }
}
