//! A video's faces over time: each frame's faces linked to tracks, each
//! track's readings smoothed and summarised. Fed one frame at a time, so a
//! file, a frame folder and a live camera are used alike.

use std::collections::{BTreeMap, HashMap};

use caf_infer::{FacePrediction, Quadrant, Va};
use serde::Serialize;

use crate::smoothing::Smoother;
use crate::tracker::{TrackId, Tracker, TrackerSettings};

/// A face of a frame, with its track and its track's smoothed reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrackedFace {
    /// `predict`'s fields for the face in this frame.
    #[serde(flatten)]
    pub face: FacePrediction,
    pub track: TrackId,
    /// The track's valence and arousal through its [`Smoother`].
    pub smoothed: Va,
}

/// Mean and standard deviation (population) of one axis of a track.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
}

/// One track over the whole video: when it was seen, and its readings'
/// spread and quadrants (raw readings, one per frame it was seen in).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackSummary {
    pub track: TrackId,
    pub first_s: f64,
    pub last_s: f64,
    /// Frames it was seen in.
    pub frames: u64,
    pub valence: Spread,
    pub arousal: Spread,
    /// Share of its frames in each quadrant, by name (`positive-high`, …).
    pub quadrants: BTreeMap<&'static str, f64>,
}

impl TrackSummary {
    /// `last_s − first_s`.
    pub fn duration_s(&self) -> f64 {
        self.last_s - self.first_s
    }
}

/// Running sums of one track (Welford's for the spread).
#[derive(Debug, Clone)]
struct Running {
    first_s: f64,
    last_s: f64,
    frames: u64,
    mean: [f64; 2],
    squares: [f64; 2],
    quadrants: [u64; 4],
}

const QUADRANTS: [Quadrant; 4] = [
    Quadrant::PositiveHigh,
    Quadrant::NegativeHigh,
    Quadrant::NegativeLow,
    Quadrant::PositiveLow,
];

impl Running {
    fn new(time_s: f64) -> Self {
        Self {
            first_s: time_s,
            last_s: time_s,
            frames: 0,
            mean: [0.0; 2],
            squares: [0.0; 2],
            quadrants: [0; 4],
        }
    }

    fn add(&mut self, time_s: f64, va: Va) {
        self.last_s = self.last_s.max(time_s);
        self.frames += 1;
        for (axis, value) in [va.valence, va.arousal].into_iter().enumerate() {
            let value = f64::from(value);
            let delta = value - self.mean[axis];
            self.mean[axis] += delta / self.frames as f64;
            self.squares[axis] += delta * (value - self.mean[axis]);
        }
        let quadrant = va.quadrant();
        if let Some(place) = QUADRANTS.iter().position(|q| *q == quadrant) {
            self.quadrants[place] += 1;
        }
    }

    fn summary(&self, track: TrackId) -> TrackSummary {
        let frames = self.frames.max(1) as f64;
        let spread = |axis: usize| Spread {
            mean: self.mean[axis],
            std: (self.squares[axis] / frames).max(0.0).sqrt(),
        };
        TrackSummary {
            track,
            first_s: self.first_s,
            last_s: self.last_s,
            frames: self.frames,
            valence: spread(0),
            arousal: spread(1),
            quadrants: QUADRANTS
                .iter()
                .zip(self.quadrants)
                .map(|(quadrant, count)| (quadrant.name(), count as f64 / frames))
                .collect(),
        }
    }
}

/// The tracks of one video (or one live connection): a [`Tracker`], a
/// [`Smoother`] per live track, and every track's running summary.
#[derive(Debug, Clone)]
pub struct FaceTracks {
    tracker: Tracker,
    time_constant_s: f64,
    smoothers: HashMap<TrackId, Smoother>,
    running: BTreeMap<TrackId, Running>,
}

impl FaceTracks {
    /// `None` unless `time_constant_s` is a valid [`Smoother`] constant.
    pub fn new(settings: TrackerSettings, time_constant_s: f64) -> Option<Self> {
        Smoother::new(time_constant_s)?;
        Some(Self {
            tracker: Tracker::new(settings),
            time_constant_s,
            smoothers: HashMap::new(),
            running: BTreeMap::new(),
        })
    }

    /// The faces of the frame at `time_s` (seconds, not decreasing from
    /// frame to frame), each with its track and smoothed reading, in the
    /// order given. A track's smoother ends with the track.
    pub fn follow(&mut self, time_s: f64, faces: Vec<FacePrediction>) -> Vec<TrackedFace> {
        let boxes: Vec<_> = faces.iter().map(|face| face.face).collect();
        let tracks = self.tracker.update(&boxes);
        let live = self.tracker.live();
        self.smoothers.retain(|track, _| live.contains(track));
        let constant = self.time_constant_s;
        faces
            .into_iter()
            .zip(tracks)
            .map(|(face, track)| {
                let smoother = self
                    .smoothers
                    .entry(track)
                    .or_insert_with(|| Smoother::new(constant).expect("checked in new"));
                let [valence, arousal] = smoother.update(time_s, [face.va.valence, face.va.arousal]);
                self.running
                    .entry(track)
                    .or_insert_with(|| Running::new(time_s))
                    .add(time_s, face.va);
                TrackedFace {
                    face,
                    track,
                    smoothed: Va { valence, arousal },
                }
            })
            .collect()
    }

    /// Every track seen so far, in id order.
    pub fn summaries(&self) -> Vec<TrackSummary> {
        self.running
            .iter()
            .map(|(track, running)| running.summary(*track))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use caf_data::FaceBox;
    use caf_infer::FaceOrigin;

    use super::*;

    fn face(x: f32, valence: f32, arousal: f32) -> FacePrediction {
        FacePrediction {
            index: 0,
            face: FaceBox {
                x,
                y: 0.0,
                width: 40.0,
                height: 50.0,
            },
            score: Some(0.99),
            landmarks: None,
            origin: FaceOrigin::Detected,
            va: Va { valence, arousal },
        }
    }

    #[test]
    fn tracks_are_smoothed_and_summarised_apart() {
        let mut tracks = FaceTracks::new(TrackerSettings::default(), 0.5).expect("valid");
        // Two people: A steady at (0.5, 0.5); B alternating between (-0.4, -0.2) and (-0.2, -0.4).
        for frame in 0..10 {
            let t = frame as f64 / 10.0;
            let b = if frame % 2 == 0 {
                face(300.0, -0.4, -0.2)
            } else {
                face(300.0, -0.2, -0.4)
            };
            let followed = tracks.follow(t, vec![b, face(0.0, 0.5, 0.5)]);
            assert_eq!(followed.iter().map(|f| f.track).collect::<Vec<_>>(), vec![0, 1]);
            assert_eq!(
                followed[1].smoothed,
                Va {
                    valence: 0.5,
                    arousal: 0.5
                },
                "a steady reading stays"
            );
        }
        let summaries = tracks.summaries();
        assert_eq!(summaries.len(), 2);
        let (b, a) = (&summaries[0], &summaries[1]);
        assert_eq!((b.frames, b.first_s, b.duration_s()), (10, 0.0, 0.9));
        assert!(
            (b.valence.mean + 0.3).abs() < 1e-6 && (b.valence.std - 0.1).abs() < 1e-6,
            "{b:?}"
        );
        assert!((a.arousal.mean - 0.5).abs() < 1e-6 && a.arousal.std < 1e-6, "{a:?}");
        assert_eq!(b.quadrants["negative-low"], 1.0);
        assert_eq!(a.quadrants["positive-high"], 1.0);
        assert_eq!(a.quadrants["negative-low"], 0.0);
        assert!(FaceTracks::new(TrackerSettings::default(), -1.0).is_none());
    }

    #[test]
    fn a_new_track_starts_its_smoothing_afresh() {
        let settings = TrackerSettings {
            max_missed_frames: 0,
            ..TrackerSettings::default()
        };
        let mut tracks = FaceTracks::new(settings, 10.0).expect("valid");
        tracks.follow(0.0, vec![face(0.0, 1.0, 1.0)]);
        tracks.follow(0.1, vec![]);
        // The same place, after the track ended: a new track, its first reading taken as it is.
        let again = tracks.follow(0.2, vec![face(0.0, -1.0, -1.0)]);
        assert_eq!(again[0].track, 1);
        assert_eq!(
            again[0].smoothed,
            Va {
                valence: -1.0,
                arousal: -1.0
            }
        );
    }
}
