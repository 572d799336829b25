//! # caf-video
//!
//! Valence and arousal over time: what a video needs beyond one photo.
//!
//! * [`Tracker`] links the faces found in each frame into tracks: a face is
//!   matched to the track whose last box it overlaps most (intersection
//!   over union, at least [`TrackerSettings::min_overlap`]), a track
//!   survives [`TrackerSettings::max_missed_frames`] frames without a match,
//!   and ids are numbered from 0 in order of first appearance.
//! * [`Smoother`] is a causal filter of a track's readings with a time
//!   constant in seconds: it reads only the past, so it serves a live
//!   camera as well as a file.
//! * [`FaceTracks`] puts the two together for a video or a live
//!   connection: each frame's faces in, each face's track and smoothed
//!   reading out, and a [`TrackSummary`] per track.
//! * [`FrameFolder`] reads a folder of numbered frames (AFEW-VA's,
//!   Aff-Wild2's) as a video at a given frame rate.
//! * [`Mp4Video`] decodes the H.264 video of an MP4 or MOV file a frame
//!   at a time (feature `mp4`, on by default), and [`Mp4Writer`] writes
//!   one.
//!
//! Each is fed one frame at a time: a caller with frames of its own (a
//! camera) uses them as a file's frames are used.
//!
//! ```
//! use caf_data::FaceBox;
//! use caf_video::{Tracker, TrackerSettings};
//!
//! let mut tracker = Tracker::new(TrackerSettings::default());
//! let face = |x: f32| FaceBox { x, y: 10.0, width: 50.0, height: 60.0 };
//! assert_eq!(tracker.update(&[face(0.0), face(200.0)]), vec![0, 1]);
//! // Listed in the other order and moved a little: the same people.
//! assert_eq!(tracker.update(&[face(205.0), face(4.0)]), vec![1, 0]);
//! ```

#[cfg(feature = "mp4")]
mod avc;
mod frames;
#[cfg(feature = "mp4")]
mod mp4_read;
#[cfg(feature = "mp4")]
mod mp4_write;
mod pipeline;
mod plot;
mod rows;
mod smoothing;
mod timeline;
mod tracker;

pub use frames::{frame_number, FrameFolder, FrameFolderError, VideoFrame};
#[cfg(feature = "mp4")]
pub use mp4_read::{DecodedFrame, Mp4Video, Rotation, VideoError, MAX_FRAME_BYTES, MAX_INDEX_BYTES, MAX_VIDEO_FRAMES};
#[cfg(feature = "mp4")]
pub use mp4_write::{Mp4Writer, VideoWriteError};
pub use pipeline::{
    is_video_file, predict_video, FrameError, FrameFaces, FrameSchedule, SourceFrame, VideoSource, VIDEO_EXTENSIONS,
};
pub use plot::{PlotError, VideoPlot, MAX_PLOT_POINTS};
pub use rows::{write_video_header, write_video_row, FramePlace, FrameRow, VIDEO_CSV_HEADER};
pub use smoothing::{Smoother, DEFAULT_TIME_CONSTANT_S};
pub use timeline::{FaceTracks, Spread, TrackSummary, TrackedFace};
pub use tracker::{overlap, TrackId, Tracker, TrackerSettings};

#[cfg(all(test, feature = "mp4"))]
mod mp4_tests;
