//! `predict` on videos and frame folders: rows per face per frame, a
//! summary per track, an annotated video per input.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use caf_backbone::write_file_atomically;
use caf_infer::{path_annotation, DecodeLimits, FacePrediction, PhotoOptions, Predictor, RowFormat, Va};
use caf_video::{
    predict_video, write_video_header, write_video_row, FaceTracks, FrameFolder, FramePlace, FrameRow, FrameSchedule,
    Mp4Video, Mp4Writer, Rotation, TrackerSettings, VideoPlot, VideoSource,
};
use image::RgbImage;
use serde_json::json;

use super::RowSink;

/// How the videos of one `predict` call are read and written.
pub(super) struct VideoRun<'a> {
    pub predictor: &'a Predictor,
    pub options: &'a PhotoOptions<'a>,
    pub format: RowFormat,
    pub schedule: FrameSchedule,
    /// The frame rate of frame folders.
    pub fps: Option<f64>,
    pub smoothing_s: f64,
    pub limits: DecodeLimits,
    pub annotate: Option<&'a Path>,
    /// Annotate as numbered PNG frames instead of a video.
    pub annotate_frames: bool,
    pub plots: Option<&'a Path>,
    pub tracks: Option<&'a Path>,
}

/// Rows are written out once this many bytes are waiting.
const COMMIT_BYTES: usize = 1 << 16;

impl VideoRun<'_> {
    /// Predicts each video in turn into `sink`; returns how many videos or
    /// frames failed (each has its error row).
    pub(super) fn run(&self, videos: &[PathBuf], sink: &mut RowSink) -> Result<usize> {
        let mut out = Vec::new();
        write_video_header(self.format, &mut out);
        let mut failed = 0;
        let mut summaries = Vec::new();
        let mut names = FileNames::default();
        for path in videos {
            let mut source = match self.open(path) {
                Ok(source) => source,
                Err(error) => {
                    failed += 1;
                    let place = FramePlace {
                        video: path,
                        frame: 0,
                        time_s: f64::NAN,
                    };
                    let message = format!("{error:#}");
                    write_video_row(self.format, &mut out, place, FrameRow::Failed(&message));
                    summaries.push(json!({ "video": path.display().to_string(), "error": message }));
                    continue;
                }
            };
            // What this video's pictures are called: its name, made unique
            // when two videos of one call share it.
            let name = names.unique(stem(path));
            let mut tracks = FaceTracks::new(TrackerSettings::default(), self.smoothing_s)
                .context("--smoothing must be a number of seconds, 0 (no smoothing) or more")?;
            let mut annotated = AnnotatedVideo::new(self.annotate, self.annotate_frames, &name, source.fps())?;
            // Readings are gathered for a plot only when one is asked for.
            let mut plot = self.plots.map(|_| VideoPlot::new());
            let mut recent = RecentReadings::default();
            let (mut frames, mut failed_frames) = (0usize, 0usize);
            predict_video(
                self.predictor,
                self.options,
                &mut source,
                &mut tracks,
                self.schedule,
                |frame| -> Result<()> {
                    frames += 1;
                    let place = FramePlace {
                        video: path,
                        frame: frame.index,
                        time_s: frame.time_s,
                    };
                    match &frame.faces {
                        Ok(faces) if faces.is_empty() => {
                            write_video_row(self.format, &mut out, place, FrameRow::NoFace)
                        }
                        Ok(faces) => {
                            for face in faces {
                                write_video_row(self.format, &mut out, place, FrameRow::Face(face));
                            }
                        }
                        Err(error) => {
                            failed_frames += 1;
                            write_video_row(self.format, &mut out, place, FrameRow::Failed(&error.to_string()));
                        }
                    }
                    if let (Some(plot), Ok(faces)) = (&mut plot, &frame.faces) {
                        plot.add(frame.time_s, faces);
                    }
                    if let (Some(image), Ok(faces), true) = (frame.image, &frame.faces, annotated.wanted()) {
                        let paths = recent.follow(frame.time_s, faces);
                        // Each face numbered by its track, so a person keeps a number across frames.
                        let plain: Vec<_> = faces
                            .iter()
                            .map(|tracked| FacePrediction {
                                index: tracked.track as usize,
                                ..tracked.face
                            })
                            .collect();
                        annotated.write(&path_annotation(image, &plain, &paths))?;
                    }
                    if out.len() >= COMMIT_BYTES {
                        sink.commit(&mut out)?;
                    }
                    Ok(())
                },
            )?;
            annotated.finish()?;
            if let (Some(dir), Some(plot)) = (self.plots, &plot) {
                plot.write_svg(&dir.join(format!("{name}.svg")), &path.display().to_string())?;
            }
            failed += failed_frames;
            let summary = tracks.summaries();
            tracing::info!(
                video = %path.display(),
                frames,
                failed_frames,
                tracks = summary.len(),
                "video predicted"
            );
            summaries.push(json!({
                "video": path.display().to_string(),
                "frames": frames,
                "failed_frames": failed_frames,
                "tracks": summary,
            }));
            sink.commit(&mut out)?;
        }
        sink.commit(&mut out)?;
        if let Some(file) = self.tracks {
            let text = serde_json::to_string_pretty(&summaries).expect("plain numbers and words");
            write_file_atomically(file, text.as_bytes())?;
        }
        Ok(failed)
    }

    fn open(&self, path: &Path) -> Result<VideoSource> {
        if caf_video::is_video_file(path) {
            return Ok(VideoSource::File(Box::new(Mp4Video::open(path)?)));
        }
        let fps = self.fps.with_context(|| {
            format!(
                "{} is a folder: give its frame rate with --fps to read it as a video",
                path.display()
            )
        })?;
        Ok(VideoSource::folder(FrameFolder::open(path, fps)?, self.limits))
    }
}

/// Seconds of a track's smoothed readings drawn as its path on the
/// annotated frames' circumplex.
const PATH_SECONDS: f64 = 3.0;

/// Each track's smoothed readings over the last [`PATH_SECONDS`].
#[derive(Default)]
struct RecentReadings {
    tracks: std::collections::HashMap<u32, std::collections::VecDeque<(f64, Va)>>,
}

impl RecentReadings {
    /// Adds the frame's faces; the paths of its tracks, oldest reading first.
    fn follow(&mut self, time_s: f64, faces: &[caf_video::TrackedFace]) -> Vec<(usize, Vec<Va>)> {
        for readings in self.tracks.values_mut() {
            while readings.front().is_some_and(|(t, _)| time_s - t > PATH_SECONDS) {
                readings.pop_front();
            }
        }
        self.tracks.retain(|_, readings| !readings.is_empty());
        faces
            .iter()
            .map(|face| {
                let readings = self.tracks.entry(face.track).or_default();
                readings.push_back((time_s, face.smoothed));
                (face.track as usize, readings.iter().map(|(_, va)| *va).collect())
            })
            .collect()
    }
}

/// The names given to the videos of one call, each used once: a second
/// `clip` becomes `clip-2`.
#[derive(Default)]
struct FileNames {
    used: std::collections::HashSet<String>,
}

impl FileNames {
    fn unique(&mut self, name: &str) -> String {
        let mut candidate = name.to_string();
        let mut n = 1;
        while !self.used.insert(candidate.clone()) {
            n += 1;
            candidate = format!("{name}-{n}");
        }
        candidate
    }
}

/// A video's name without its extension, for the files written beside it.
fn stem(video: &Path) -> &str {
    video.file_stem().and_then(|s| s.to_str()).unwrap_or("video")
}

/// The annotated copy of one video, when asked for:
/// `<dir>/<stem>.annotated.mp4`, or numbered PNG frames in `<dir>/<stem>/`.
enum AnnotatedVideo {
    None,
    Mp4 {
        path: PathBuf,
        fps: f64,
        writer: Option<Box<Mp4Writer>>,
    },
    Frames {
        dir: PathBuf,
        next: usize,
    },
}

impl AnnotatedVideo {
    fn new(dir: Option<&Path>, as_frames: bool, name: &str, fps: Option<f64>) -> Result<Self> {
        let Some(dir) = dir else {
            return Ok(Self::None);
        };
        if as_frames {
            let dir = dir.join(name);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            return Ok(Self::Frames { dir, next: 0 });
        }
        Ok(Self::Mp4 {
            path: dir.join(format!("{name}.annotated.mp4")),
            fps: fps.unwrap_or(30.0),
            writer: None,
        })
    }

    fn wanted(&self) -> bool {
        !matches!(self, Self::None)
    }

    fn write(&mut self, frame: &RgbImage) -> Result<()> {
        match self {
            Self::None => Ok(()),
            Self::Frames { dir, next } => {
                let path = dir.join(format!("{next:06}.png"));
                *next += 1;
                frame
                    .save(&path)
                    .with_context(|| format!("cannot write {}", path.display()))
            }
            Self::Mp4 { path, fps, writer } => {
                // H.264 frames have even sides.
                let (width, height) = (frame.width() & !1, frame.height() & !1);
                let writer = match writer {
                    Some(writer) => writer,
                    None => writer.insert(Box::new(Mp4Writer::create(path, width, height, *fps, Rotation::None)?)),
                };
                writer.write_frame(&image::imageops::crop_imm(frame, 0, 0, width, height).to_image())?;
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<()> {
        if let Self::Mp4 {
            writer: Some(writer), ..
        } = self
        {
            writer.finish()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::FileNames;

    #[test]
    fn two_videos_of_one_name_write_two_files() {
        let mut names = FileNames::default();
        let given: Vec<String> = ["clip", "clip", "clip-2", "talk", "clip"]
            .iter()
            .map(|name| names.unique(name))
            .collect();
        assert_eq!(given, ["clip", "clip-2", "clip-2-2", "talk", "clip-3"]);
    }
}
