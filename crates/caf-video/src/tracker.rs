//! Faces linked into tracks across frames.

use caf_data::FaceBox;

/// A track's number: 0 for the first face seen, then in order of first appearance.
pub type TrackId = u32;

/// How faces are linked across frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerSettings {
    /// The least intersection over union between a face and a track's last
    /// box for the face to continue the track.
    pub min_overlap: f32,
    /// Frames a track may go without a face before it ends; a face that
    /// comes back later starts a new track.
    pub max_missed_frames: u32,
}

impl Default for TrackerSettings {
    /// 0.3 overlap; 15 missed frames (half a second at 30 frames a second).
    fn default() -> Self {
        Self {
            min_overlap: 0.3,
            max_missed_frames: 15,
        }
    }
}

/// Intersection over union of two boxes: 0 when they do not meet (or one
/// is empty or not a finite box), 1 when they are the same.
pub fn overlap(a: &FaceBox, b: &FaceBox) -> f32 {
    let (a_corners, b_corners) = (a.corners(), b.corners());
    if !a_corners.iter().chain(&b_corners).all(|v| v.is_finite()) {
        return 0.0;
    }
    let [ax1, ay1, ax2, ay2] = a_corners;
    let [bx1, by1, bx2, by2] = b_corners;
    let width = (ax2.min(bx2) - ax1.max(bx1)).max(0.0);
    let height = (ay2.min(by2) - ay1.max(by1)).max(0.0);
    let intersection = width * height;
    let union = a.area().max(0.0) + b.area().max(0.0) - intersection;
    if union > 0.0 && intersection.is_finite() {
        intersection / union
    } else {
        0.0
    }
}

#[derive(Debug, Clone)]
struct Track {
    id: TrackId,
    /// The centre of the last box matched.
    centre: [f32; 2],
    /// Width and height, averaged over the boxes matched: a face partly
    /// hidden for a frame shrinks its box for that frame only.
    size: [f32; 2],
    /// Pixels a frame the centre has moved, averaged over the moves seen.
    velocity: [f32; 2],
    /// Frames in which it was matched since it began.
    matched: u32,
    missed: u32,
}

/// The weight of a new box in the track's averaged velocity and size.
const NEWEST_WEIGHT: f32 = 0.3;

fn centre(face: &FaceBox) -> [f32; 2] {
    [face.x + face.width / 2.0, face.y + face.height / 2.0]
}

impl Track {
    fn new(id: TrackId, face: &FaceBox) -> Self {
        Self {
            id,
            centre: centre(face),
            size: [face.width, face.height],
            velocity: [0.0, 0.0],
            matched: 0,
            missed: 0,
        }
    }

    /// Where the face should be in the next frame: its averaged size,
    /// centred where its last centre moves at its velocity for each frame
    /// since it was seen.
    fn predicted(&self) -> FaceBox {
        let steps = (self.missed + 1) as f32;
        let [x, y] = [0, 1].map(|axis| self.centre[axis] + self.velocity[axis] * steps);
        let [width, height] = self.size;
        FaceBox {
            x: x - width / 2.0,
            y: y - height / 2.0,
            width,
            height,
        }
    }

    /// `face` continues the track.
    fn matched(&mut self, face: &FaceBox) {
        let steps = (self.missed + 1) as f32;
        let now = centre(face);
        let moved = [0, 1].map(|axis| (now[axis] - self.centre[axis]) / steps);
        let blend = |old: f32, new: f32| old + NEWEST_WEIGHT * (new - old);
        self.velocity = if self.matched == 0 {
            moved
        } else {
            [0, 1].map(|axis| blend(self.velocity[axis], moved[axis]))
        };
        self.size = [blend(self.size[0], face.width), blend(self.size[1], face.height)];
        if !self.velocity.iter().chain(&self.size).all(|v| v.is_finite()) {
            self.velocity = [0.0, 0.0];
            self.size = [face.width, face.height];
        }
        self.centre = now;
        self.matched += 1;
        self.missed = 0;
    }
}

/// The tracks alive so far; fed one frame's faces at a time.
#[derive(Debug, Clone)]
pub struct Tracker {
    settings: TrackerSettings,
    tracks: Vec<Track>,
    next_id: TrackId,
}

impl Tracker {
    pub fn new(settings: TrackerSettings) -> Self {
        Self {
            settings,
            tracks: Vec::new(),
            next_id: 0,
        }
    }

    /// The track of each face of the next frame, in the order given.
    ///
    /// A face is compared with where each live track should be now: a box
    /// of the track's averaged size, centred where its last centre moves on
    /// at its averaged velocity (so that two people who cross, one hiding
    /// the other for a few frames, keep their tracks).
    /// Pairs of a face and a live track are taken best overlap first (ties:
    /// the older track, then the earlier face), each face and track at most
    /// once; a face left over starts a track; a track left over misses this
    /// frame, and ends once it has missed more than
    /// [`TrackerSettings::max_missed_frames`].
    pub fn update(&mut self, faces: &[FaceBox]) -> Vec<TrackId> {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (t, track) in self.tracks.iter().enumerate() {
            let predicted = track.predicted();
            for (f, face) in faces.iter().enumerate() {
                let score = overlap(&predicted, face);
                if score >= self.settings.min_overlap && score > 0.0 {
                    pairs.push((score, t, f));
                }
            }
        }
        // Best overlap first; the tracks are kept oldest first, so ties go
        // to the older track, then to the earlier face.
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut face_track: Vec<Option<usize>> = vec![None; faces.len()];
        let mut track_taken = vec![false; self.tracks.len()];
        for (_, t, f) in pairs {
            if face_track[f].is_none() && !track_taken[t] {
                face_track[f] = Some(t);
                track_taken[t] = true;
            }
        }
        for (track, taken) in self.tracks.iter_mut().zip(&track_taken) {
            if !taken {
                track.missed += 1;
            }
        }
        let mut ids = Vec::with_capacity(faces.len());
        for (face, matched) in faces.iter().zip(face_track) {
            match matched {
                Some(t) => {
                    let track = &mut self.tracks[t];
                    track.matched(face);
                    ids.push(track.id);
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.tracks.push(Track::new(id, face));
                    ids.push(id);
                }
            }
        }
        let limit = self.settings.max_missed_frames;
        self.tracks.retain(|track| track.missed <= limit);
        ids
    }

    /// The ids of the tracks still alive, oldest first.
    pub fn live(&self) -> Vec<TrackId> {
        self.tracks.iter().map(|track| track.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32) -> FaceBox {
        FaceBox {
            x,
            y,
            width: 40.0,
            height: 50.0,
        }
    }

    #[test]
    fn overlap_is_intersection_over_union() {
        let a = face(0.0, 0.0);
        assert_eq!(overlap(&a, &a), 1.0);
        assert_eq!(overlap(&a, &face(100.0, 0.0)), 0.0);
        // Half across: 20×50 shared of 60×50.
        assert!((overlap(&a, &face(20.0, 0.0)) - 1.0 / 3.0).abs() < 1e-6);
        let empty = FaceBox { width: 0.0, ..a };
        assert_eq!(overlap(&empty, &empty), 0.0);
        let nan = FaceBox { x: f32::NAN, ..a };
        assert_eq!(overlap(&nan, &a), 0.0);
    }

    #[test]
    fn two_faces_crossing_keep_their_ids() {
        let mut tracker = Tracker::new(TrackerSettings::default());
        // Face A moves right, face B left, 10 px a frame; they cross at x = 100.
        let mut seen = Vec::new();
        for step in 0..21 {
            let a = face(step as f32 * 10.0, 0.0);
            let b = face(200.0 - step as f32 * 10.0, 8.0);
            // The detector lists them in whatever order it likes.
            let ids = if step % 2 == 0 {
                tracker.update(&[a, b])
            } else {
                tracker.update(&[b, a]).into_iter().rev().collect()
            };
            seen.push(ids);
        }
        assert!(seen.iter().all(|ids| ids == &vec![0, 1]), "{seen:?}");
    }

    #[test]
    fn two_people_crossing_keep_their_tracks_while_one_hides_the_other() {
        let mut tracker = Tracker::new(TrackerSettings::default());
        // A moves right in front, B left behind it, 10 px a frame: while
        // their boxes meet, only A is found.
        let mut seen = Vec::new();
        for step in 0..21 {
            let (xa, xb) = (step as f32 * 10.0, 200.0 - step as f32 * 10.0);
            let (a, b) = (face(xa, 0.0), face(xb, 4.0));
            let ids = if (xa - xb).abs() < 40.0 {
                tracker.update(&[a])
            } else {
                tracker.update(&[a, b])
            };
            seen.push(ids);
        }
        let hidden = seen.iter().filter(|ids| ids.len() == 1).count();
        assert!(hidden >= 3, "B is hidden for a few frames");
        for ids in &seen {
            let expected: &[TrackId] = if ids.len() == 1 { &[0] } else { &[0, 1] };
            assert_eq!(ids, expected, "{seen:?}");
        }
    }

    #[test]
    fn a_track_survives_a_short_occlusion_and_not_a_long_one() {
        let settings = TrackerSettings {
            max_missed_frames: 3,
            ..TrackerSettings::default()
        };
        let mut tracker = Tracker::new(settings);
        assert_eq!(tracker.update(&[face(0.0, 0.0)]), vec![0]);
        for _ in 0..3 {
            assert_eq!(tracker.update(&[]), Vec::<TrackId>::new());
        }
        assert_eq!(tracker.live(), vec![0]);
        assert_eq!(
            tracker.update(&[face(2.0, 0.0)]),
            vec![0],
            "back within 3 frames: the same track"
        );
        for _ in 0..4 {
            tracker.update(&[]);
        }
        assert_eq!(tracker.live(), Vec::<TrackId>::new());
        assert_eq!(tracker.update(&[face(2.0, 0.0)]), vec![1], "back after 4: a new track");
    }

    #[test]
    fn ids_follow_first_appearance_and_a_far_face_is_new() {
        let mut tracker = Tracker::new(TrackerSettings::default());
        assert_eq!(tracker.update(&[face(0.0, 0.0)]), vec![0]);
        assert_eq!(tracker.update(&[face(300.0, 0.0), face(1.0, 0.0)]), vec![1, 0]);
        // A face that jumps beyond any overlap is someone new.
        assert_eq!(tracker.update(&[face(600.0, 0.0), face(301.0, 0.0)]), vec![2, 1]);
        // Two faces both overlapping one track: the better overlap keeps it.
        let mut tracker = Tracker::new(TrackerSettings::default());
        tracker.update(&[face(0.0, 0.0)]);
        assert_eq!(tracker.update(&[face(15.0, 0.0), face(2.0, 0.0)]), vec![1, 0]);
    }
}
