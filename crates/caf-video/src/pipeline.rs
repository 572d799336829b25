//! A video's faces predicted frame by frame and followed over time: frames
//! are read in order, a few at a time predicted in parallel as `predict`'s
//! photos are, and handed back in order with their tracks.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use caf_infer::{DecodeLimits, FacePrediction, InferError, PhotoOptions, Predictor};
use image::RgbImage;
use rayon::prelude::*;

use crate::frames::FrameFolder;
use crate::timeline::{FaceTracks, TrackedFace};

#[cfg(feature = "mp4")]
use crate::mp4_read::{Mp4Video, VideoError};

/// Extensions read as video files.
pub const VIDEO_EXTENSIONS: [&str; 3] = ["mp4", "mov", "m4v"];

/// Whether `path` names a video file by its extension.
pub fn is_video_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(e)))
}

/// Why a frame of a video has no faces to report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The video file could not give the frame.
    #[cfg(feature = "mp4")]
    #[error(transparent)]
    Video(#[from] VideoError),
    /// A frame folder's image could not be read, or a frame not predicted.
    #[error(transparent)]
    Photo(#[from] InferError),
}

/// A video to read: an MP4/MOV file, or a folder of numbered frames at a
/// frame rate.
pub enum VideoSource {
    #[cfg(feature = "mp4")]
    File(Box<Mp4Video>),
    Folder {
        folder: FrameFolder,
        next: usize,
        limits: DecodeLimits,
    },
}

impl VideoSource {
    /// A folder of frames at `fps`, each read within `limits`.
    pub fn folder(folder: FrameFolder, limits: DecodeLimits) -> Self {
        Self::Folder {
            folder,
            next: 0,
            limits,
        }
    }

    /// Frames a second: a folder's given rate, a file's mean rate.
    pub fn fps(&self) -> Option<f64> {
        match self {
            #[cfg(feature = "mp4")]
            Self::File(video) => video.mean_fps(),
            Self::Folder { folder, .. } => Some(folder.fps()),
        }
    }

    /// Where the video is.
    pub fn path(&self) -> PathBuf {
        match self {
            #[cfg(feature = "mp4")]
            Self::File(video) => video.path().to_path_buf(),
            Self::Folder { folder, .. } => folder.dir().to_path_buf(),
        }
    }
}

/// One frame read: its place, its time, and its pixels or why it has none.
pub struct SourceFrame {
    /// In showing order, from 0; for a failed frame, the place it would have had.
    pub index: usize,
    pub time_s: f64,
    pub image: Result<RgbImage, FrameError>,
}

impl Iterator for VideoSource {
    type Item = SourceFrame;

    fn next(&mut self) -> Option<SourceFrame> {
        match self {
            #[cfg(feature = "mp4")]
            Self::File(video) => {
                let item = video.next()?;
                Some(match item {
                    Ok(frame) => SourceFrame {
                        index: frame.index,
                        time_s: frame.time_s,
                        image: Ok(frame.image),
                    },
                    Err(error) => SourceFrame {
                        index: video.shown(),
                        time_s: f64::NAN,
                        image: Err(error.into()),
                    },
                })
            }
            Self::Folder { folder, next, limits } => {
                let frame = folder.frame(*next)?;
                *next += 1;
                Some(SourceFrame {
                    index: frame.index,
                    time_s: frame.time_s,
                    image: caf_infer::read_photo(&frame.path, limits).map_err(FrameError::from),
                })
            }
        }
    }
}

/// A frame's outcome, handed back in order.
pub struct FrameFaces<'a> {
    pub index: usize,
    pub time_s: f64,
    /// The frame's pixels, when it could be read (to draw on, say).
    pub image: Option<&'a RgbImage>,
    /// Its faces with their tracks; empty when no face was found.
    pub faces: Result<Vec<TrackedFace>, FrameError>,
}

/// How a video's frames are predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSchedule {
    /// Frames read, then predicted in parallel, at a time.
    pub chunk: NonZeroUsize,
    /// Faces are searched for in one frame of this many (frame indices
    /// 0, N, 2N, …); the frames between read each face at its box in the
    /// last searched frame ([`caf_infer::FaceOrigin::Carried`]). 1 searches
    /// every frame.
    pub detect_every: NonZeroUsize,
}

impl Default for FrameSchedule {
    /// 32 frames at a time, faces searched in every frame.
    fn default() -> Self {
        Self {
            chunk: NonZeroUsize::new(32).expect("not zero"),
            detect_every: NonZeroUsize::MIN,
        }
    }
}

/// Predicts every frame of `source` as `schedule` says, follows the faces
/// with `tracks`, and hands each frame to `each` in order. Frames that
/// fail are handed over with their error; an error of `each` stops the
/// video and is returned.
pub fn predict_video<E>(
    predictor: &Predictor,
    options: &PhotoOptions,
    source: &mut VideoSource,
    tracks: &mut FaceTracks,
    schedule: FrameSchedule,
    mut each: impl FnMut(FrameFaces) -> Result<(), E>,
) -> Result<(), E> {
    let every = schedule.detect_every.get();
    // The faces of the last frame searched, for the frames after it.
    let mut carried: Option<Vec<FacePrediction>> = None;
    loop {
        let frames: Vec<SourceFrame> = source.by_ref().take(schedule.chunk.get()).collect();
        if frames.is_empty() {
            return Ok(());
        }
        // Which frames are searched: every N-th, and any readable frame
        // before which no face search has been made.
        let mut searched_before = carried.is_some();
        let search: Vec<bool> = frames
            .iter()
            .map(|frame| {
                let search = frame.image.is_ok() && (frame.index % every == 0 || !searched_before);
                searched_before |= search;
                search
            })
            .collect();
        let mut predicted: Vec<Option<Result<Vec<FacePrediction>, FrameError>>> = frames
            .par_iter()
            .zip(&search)
            .map(|(frame, search)| match (&frame.image, search) {
                (Ok(image), true) => Some(predictor.predict_photo(image, None, options).map_err(FrameError::from)),
                _ => None,
            })
            .collect();
        // Each other frame reads the faces of the last search before it
        // that succeeded.
        let mut last: Option<&[FacePrediction]> = carried.as_deref();
        let sources: Vec<Option<&[FacePrediction]>> = predicted
            .iter()
            .map(|outcome| {
                if let Some(Ok(faces)) = outcome {
                    last = Some(faces.as_slice());
                }
                last
            })
            .collect();
        let again: Vec<Option<Result<Vec<FacePrediction>, FrameError>>> = frames
            .par_iter()
            .zip(&search)
            .zip(&sources)
            .map(|((frame, search), source)| match (&frame.image, search) {
                (Ok(image), false) => Some(
                    match source {
                        Some(faces) => predictor.predict_faces_again(image, faces, options.margin),
                        // Every search so far failed: search this one.
                        None => predictor.predict_photo(image, None, options),
                    }
                    .map_err(FrameError::from),
                ),
                _ => None,
            })
            .collect();
        let newest = predicted.iter().rev().find_map(|outcome| match outcome {
            Some(Ok(faces)) => Some(faces.clone()),
            _ => None,
        });
        if newest.is_some() {
            carried = newest;
        }
        for ((frame, outcome), again) in frames.into_iter().zip(predicted.iter_mut()).zip(again) {
            let faces = outcome.take().or(again);
            let (image, faces) = match frame.image {
                Ok(image) => {
                    let faces = faces
                        .unwrap_or_else(|| Ok(Vec::new()))
                        .map(|faces| tracks.follow(frame.time_s, faces));
                    (Some(image), faces)
                }
                Err(error) => (None, Err(error)),
            };
            each(FrameFaces {
                index: frame.index,
                time_s: frame.time_s,
                image: image.as_ref(),
                faces,
            })?;
        }
    }
}
