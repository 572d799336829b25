//! `cargo xtask predict`: valence and arousal for image files and folders.

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use caf_backbone::{HubOptions, Precision, RowFile, WeightSource};
use caf_data::FaceBoxes;
use caf_infer::{
    photo_annotation, DecodeLimits, DetectorConfig, FaceDetector, FaceMargin, FaceMode, FacePrediction, ImageFile,
    PhotoOptions, PhotoRow, Predictor, RowFormat, DEFAULT_FACE_MARGIN,
};
use clap::builder::TypedValueParser;
use image::RgbImage;

#[derive(clap::Args)]
pub struct Predict {
    /// Checkpoint: a .safetensors file written by training or import-torch, a folder written by
    /// export, or hf://owner/name/file (@revision optional)
    #[arg(long)]
    checkpoint: WeightSource,
    /// Image files and folders (searched recursively for .jpg, .jpeg, .png, .webp, .bmp, .tif, .tiff);
    /// or videos (.mp4, .mov, .m4v, H.264) and, with --fps, folders of numbered frames
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Read the folders given as videos: numbered frames (00001.jpg, …) at this many frames a second
    #[arg(long)]
    fps: Option<f64>,
    /// Videos: search for faces in one frame of this many; the frames between read each face at its
    /// box in the last searched frame (`source` = `carried`)
    #[arg(long, default_value_t = NonZeroUsize::MIN)]
    detect_every: NonZeroUsize,
    /// Time constant, in seconds, of the smoothed valence and arousal of a video's face tracks
    #[arg(long, default_value_t = caf_video::DEFAULT_TIME_CONSTANT_S)]
    smoothing: f64,
    /// Videos: --annotate writes numbered PNG frames into `<name>/` instead of `<name>.annotated.mp4`
    #[arg(long, requires = "annotate")]
    annotate_frames: bool,
    /// Videos: also write, per video, `<name>.svg` into this folder: valence and arousal over time per
    /// face track (raw and smoothed) and each track's path on the circumplex
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Videos: also write a JSON summary per face track here (duration, mean and spread of valence
    /// and arousal, share of frames per quadrant)
    #[arg(long)]
    tracks: Option<PathBuf>,
    /// Output format: `csv` (path,face,x,y,width,height,score,source,valence,arousal,intensity,quadrant,emotion,error)
    /// or `jsonl` (one JSON object per line, with the five landmarks)
    #[arg(long, default_value = "csv", value_parser = clap::builder::PossibleValuesParser::new(RowFormat::NAMES)
        .try_map(|name| name.parse::<RowFormat>()))]
    format: RowFormat,
    /// Write here instead of standard output
    #[arg(long)]
    out: Option<PathBuf>,
    /// Images decoded and predicted together
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// `cpu`, `cuda` or `cuda:N`
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision of the convolutions' products: f32, or bf16 (faster on CPUs with AVX512-BF16;
    /// readings differ from f32's by about 1 % of their range, docs/precision.md)
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// How faces are found: `auto` detects every face and predicts a photo without one whole;
    /// `detect` predicts detected faces only; `whole` takes every picture as one face crop
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(FaceMode::NAMES)
        .try_map(|name| name.parse::<FaceMode>()))]
    faces: FaceMode,
    /// Face boxes: a CSV of `path,x,y,width,height` or an AffectNet index; images match by path suffix,
    /// and a given box wins over detection
    #[arg(long)]
    boxes: Option<PathBuf>,
    /// Grow every face box (detected or given) by this share of its width and height on each side before cropping
    #[arg(long, default_value_t = DEFAULT_FACE_MARGIN.get())]
    face_margin: f32,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Refuse (with an error row) a picture that declares more pixels (width × height)
    #[arg(long, default_value_t = DecodeLimits::DEFAULT.max_pixels)]
    max_pixels: u64,
    /// Refuse (with an error row) an image file larger than this many bytes
    #[arg(long, default_value_t = DecodeLimits::DEFAULT.max_file_bytes)]
    max_file_bytes: u64,
    /// Refuse (with an error row) a picture carrying more EXIF bytes
    #[arg(long, default_value_t = DecodeLimits::DEFAULT.max_metadata_bytes)]
    max_metadata_bytes: u64,
    /// Also write, per photo, a PNG with every face's box and reading beside the circumplex (per
    /// video, `<name>.annotated.mp4`) into this folder
    #[arg(long)]
    annotate: Option<PathBuf>,
}

/// Whether `paths` are videos (files by extension; folders when a frame
/// rate is given) or photos; a mix is refused, as their rows differ.
fn are_videos(paths: &[PathBuf], fps: Option<f64>) -> Result<bool> {
    let is_video = |path: &PathBuf| caf_video::is_video_file(path) || (fps.is_some() && path.is_dir());
    let videos = paths.iter().filter(|path| is_video(path)).count();
    if videos > 0 && videos < paths.len() {
        let photo = paths.iter().find(|path| !is_video(path)).expect("counted");
        bail!(
            "{} is not a video{} while other inputs are: predict videos and photos in separate calls (their rows differ)",
            photo.display(),
            if fps.is_some() { " or a frame folder" } else { "" }
        );
    }
    if let Some(fps) = fps {
        anyhow::ensure!(
            fps.is_finite() && fps > 0.0,
            "--fps must be a positive number of frames a second"
        );
    }
    Ok(videos > 0)
}

mod video;

pub fn predict(args: Predict) -> Result<()> {
    anyhow::ensure!(args.batch > 0, "--batch must be positive");
    let margin = FaceMargin::new(args.face_margin).context("--face-margin")?;
    let device = caf_infer::parse_device(&args.device)?;
    let checkpoint = args.checkpoint.checkpoint_file(&HubOptions::from_env())?;
    let predictor = Predictor::from_checkpoint(&checkpoint, &device)?
        .with_precision(args.precision)?
        .with_decode_limits(DecodeLimits {
            max_pixels: args.max_pixels,
            max_file_bytes: args.max_file_bytes,
            max_metadata_bytes: args.max_metadata_bytes,
        });
    let search = args.faces.with(|| args.detector.load(&device))?;
    let options = PhotoOptions {
        search: search.as_ref(),
        margin,
    };
    let videos = are_videos(&args.paths, args.fps)?;
    if let Some(dir) = &args.annotate {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if videos {
        if let Some(dir) = &args.plots {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        anyhow::ensure!(
            args.boxes.is_none(),
            "--boxes gives faces of photos; a video's faces are detected in every frame"
        );
        let run = video::VideoRun {
            predictor: &predictor,
            options: &options,
            format: args.format,
            schedule: caf_video::FrameSchedule {
                chunk: NonZeroUsize::new(args.batch).expect("checked above"),
                detect_every: args.detect_every,
            },
            fps: args.fps,
            smoothing_s: args.smoothing,
            limits: *predictor.decode_limits(),
            annotate: args.annotate.as_deref(),
            annotate_frames: args.annotate_frames,
            plots: args.plots.as_deref(),
            tracks: args.tracks.as_deref(),
        };
        let mut sink = RowSink::open(args.out.as_deref())?;
        let failed = run.run(&args.paths, &mut sink)?;
        if failed > 0 {
            bail!("{failed} video(s) or frame(s) could not be predicted (see their error rows)");
        }
        return Ok(());
    }
    anyhow::ensure!(
        args.tracks.is_none(),
        "--tracks summarises the face tracks of videos; no video was given"
    );
    let boxes = match &args.boxes {
        Some(file) => FaceBoxes::load(file, 0.0)?,
        None => FaceBoxes::default(),
    };
    let files: Vec<ImageFile> = caf_infer::find_images(&args.paths)?
        .into_iter()
        .map(|path| ImageFile {
            face: boxes.get(&path),
            path,
        })
        .collect();
    if args.boxes.is_some() {
        let boxed = files.iter().filter(|f| f.face.is_some()).count();
        tracing::info!(boxed, images = files.len(), "face boxes matched");
    }
    let mut sink = RowSink::open(args.out.as_deref())?;
    let format = args.format;
    let mut out: Vec<u8> = Vec::new();
    format.write_header(&mut out);
    let progress = indicatif::ProgressBar::new(files.len() as u64);
    let mut failed = 0;
    for (chunk_index, chunk) in files.chunks(args.batch).enumerate() {
        let results =
            predictor.predict_photo_files_with(chunk, &options, |offset, photo, faces| match &args.annotate {
                Some(dir) => write_annotation(
                    dir,
                    chunk_index * args.batch + offset,
                    &chunk[offset].path,
                    photo,
                    faces,
                ),
                None => Ok(()),
            });
        for (file, result) in chunk.iter().zip(results) {
            match &result {
                Ok(faces) if faces.is_empty() => format.write(&mut out, &file.path, PhotoRow::NoFace),
                Ok(faces) => {
                    for face in faces {
                        format.write(&mut out, &file.path, PhotoRow::Face(face));
                    }
                }
                Err(error) => {
                    failed += 1;
                    format.write(&mut out, &file.path, PhotoRow::Failed(&format!("{error:#}")));
                }
            }
        }
        sink.commit(&mut out)?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    if failed > 0 {
        bail!(
            "{failed} of {} image(s) could not be predicted (see their error rows)",
            files.len()
        );
    }
    Ok(())
}

/// Which face detector to load and how it searches: shared by `predict` and `serve`.
#[derive(clap::Args)]
pub struct DetectorArgs {
    /// Face detector weights (a safetensors file or hf://owner/name/file); the built-in MTCNN weights by default
    #[arg(long)]
    detector: Option<WeightSource>,
    /// Smallest face side, in pixels, the detector looks for
    #[arg(long, default_value_t = DetectorConfig::default().min_face_size)]
    min_face_size: f64,
    /// Longest side the face detector searches; larger photos are shrunk to it for detection
    /// and faces are cropped from the full photo
    #[arg(long, default_value_t = DetectorConfig::default().max_detection_side)]
    max_detection_side: u32,
}

impl DetectorArgs {
    pub fn load(&self, device: &candle_core::Device) -> Result<FaceDetector> {
        let detector = match &self.detector {
            Some(source) => FaceDetector::load(source, &HubOptions::from_env(), device)?,
            None => FaceDetector::builtin(device)?,
        };
        let config = DetectorConfig {
            min_face_size: self.min_face_size,
            max_detection_side: self.max_detection_side,
            ..*detector.config()
        };
        Ok(detector.with_config(config)?)
    }
}

/// Where prediction rows go: standard output, or a file that holds whole
/// rows only ([`RowFile`]). Rows are written a chunk at a time; a chunk that
/// fails part-way (a full disk) is cut off again, so every row in the file
/// is whole, and the error names the file.
enum RowSink {
    Stdout,
    File(RowFile),
}

impl RowSink {
    fn open(path: Option<&Path>) -> Result<Self> {
        Ok(match path {
            Some(path) => RowSink::File(RowFile::create(path)?),
            None => RowSink::Stdout,
        })
    }

    /// Writes and empties `rows`.
    fn commit(&mut self, rows: &mut Vec<u8>) -> Result<()> {
        match self {
            RowSink::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(rows).and_then(|()| stdout.flush())?;
            }
            RowSink::File(file) => {
                let (kept, path) = (file.len(), file.path().to_path_buf());
                file.append(rows).with_context(|| {
                    format!(
                        "cannot write predictions to {} (the {kept} bytes of rows before are kept whole)",
                        path.display()
                    )
                })?;
            }
        }
        rows.clear();
        Ok(())
    }
}

fn write_annotation(dir: &Path, index: usize, path: &Path, photo: &RgbImage, faces: &[FacePrediction]) -> Result<()> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let target = dir.join(format!("{index:05}-{stem}.png"));
    photo_annotation(photo, faces)
        .save(&target)
        .with_context(|| format!("cannot write {}", target.display()))
}
