//! `cargo xtask predict`: valence and arousal for image files and folders.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use caf_backbone::{HubOptions, RowFile, WeightSource};
use caf_data::FaceBoxes;
use caf_infer::{
    photo_annotation, DecodeLimits, DetectorConfig, FaceDetector, FacePrediction, FaceSearch, ImageFile, PhotoOptions,
    Predictor, DEFAULT_FACE_MARGIN,
};
use image::RgbImage;
use serde_json::json;

#[derive(clap::Args)]
pub struct Predict {
    /// Checkpoint (.safetensors) written by training or import-torch
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files and folders (searched recursively for .jpg, .jpeg, .png, .webp, .bmp, .tif, .tiff)
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// Write here instead of standard output
    #[arg(long)]
    out: Option<PathBuf>,
    /// Images decoded and predicted together
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// `cpu`, `cuda` or `cuda:N`
    #[arg(long, default_value = "cpu")]
    device: String,
    /// How faces are found: `auto` detects every face and predicts a photo without one whole;
    /// `detect` predicts detected faces only; `whole` takes every picture as one face crop
    #[arg(long, value_enum, default_value_t = Faces::Auto)]
    faces: Faces,
    /// Face boxes: a CSV of `path,x,y,width,height` or an AffectNet index; images match by path suffix,
    /// and a given box wins over detection
    #[arg(long)]
    boxes: Option<PathBuf>,
    /// Grow every face box (detected or given) by this share of its width and height on each side before cropping
    #[arg(long, default_value_t = DEFAULT_FACE_MARGIN)]
    face_margin: f32,
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
    /// Refuse (with an error row) a picture that declares more pixels (width × height)
    #[arg(long, default_value_t = DecodeLimits::DEFAULT.max_pixels)]
    max_pixels: u64,
    /// Refuse (with an error row) an image file larger than this many bytes
    #[arg(long, default_value_t = DecodeLimits::DEFAULT.max_file_bytes)]
    max_file_bytes: u64,
    /// Refuse (with an error row) a picture carrying more EXIF bytes
    #[arg(long, default_value_t = DecodeLimits::DEFAULT.max_metadata_bytes)]
    max_metadata_bytes: u64,
    /// Also write, per photo, a PNG with every face's box and reading beside the circumplex
    #[arg(long)]
    annotate: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Faces {
    Auto,
    Detect,
    Whole,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// `path,face,x,y,width,height,score,source,valence,arousal,intensity,quadrant,emotion,error`
    Csv,
    /// One JSON object per line
    Jsonl,
}

const CSV_HEADER: &str = "path,face,x,y,width,height,score,source,valence,arousal,intensity,quadrant,emotion,error";

pub fn predict(args: Predict) -> Result<()> {
    anyhow::ensure!(args.batch > 0, "--batch must be positive");
    anyhow::ensure!(
        args.face_margin.is_finite() && args.face_margin > -0.5,
        "--face-margin must be a number above -0.5 (got {})",
        args.face_margin
    );
    let device = caf_infer::parse_device(&args.device)?;
    let predictor = Predictor::from_checkpoint(&args.checkpoint, &device)?.with_decode_limits(DecodeLimits {
        max_pixels: args.max_pixels,
        max_file_bytes: args.max_file_bytes,
        max_metadata_bytes: args.max_metadata_bytes,
    });
    let load_detector = || -> Result<FaceDetector> {
        let detector = match &args.detector {
            Some(source) => FaceDetector::load(source, &HubOptions::from_env(), &device)?,
            None => FaceDetector::builtin(&device)?,
        };
        let config = DetectorConfig {
            min_face_size: args.min_face_size,
            max_detection_side: args.max_detection_side,
            ..*detector.config()
        };
        Ok(detector.with_config(config)?)
    };
    let detector;
    let search = match args.faces {
        Faces::Whole => FaceSearch::Whole,
        Faces::Auto => {
            detector = load_detector()?;
            FaceSearch::Auto(&detector)
        }
        Faces::Detect => {
            detector = load_detector()?;
            FaceSearch::Detect(&detector)
        }
    };
    let options = PhotoOptions {
        search,
        margin: args.face_margin,
    };
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
    if let Some(dir) = &args.annotate {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut sink = RowSink::open(args.out.as_deref())?;
    let mut out: Vec<u8> = Vec::new();
    if args.format == Format::Csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
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
                Ok(faces) if faces.is_empty() => write_no_face(&mut out, args.format, &file.path)?,
                Ok(faces) => {
                    for face in faces {
                        write_face(&mut out, args.format, &file.path, face)?;
                    }
                }
                Err(error) => {
                    failed += 1;
                    write_error(&mut out, args.format, &file.path, error)?;
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

/// Name written in the `source` column for a photo where `detect` found no face.
const NO_FACE: &str = "no-face-found";

fn write_face(out: &mut dyn Write, format: Format, path: &Path, face: &FacePrediction) -> Result<()> {
    let shown = path.display().to_string();
    let va = face.va;
    let b = face.face;
    match format {
        Format::Csv => writeln!(
            out,
            "{},{},{:.2},{:.2},{:.2},{:.2},{},{},{:.6},{:.6},{:.6},{},{},",
            csv_field(&shown),
            face.index,
            b.x,
            b.y,
            b.width,
            b.height,
            face.score.map(|s| format!("{s:.6}")).unwrap_or_default(),
            face.origin.name(),
            va.valence,
            va.arousal,
            va.intensity(),
            va.quadrant().name(),
            va.emotion()
        )?,
        Format::Jsonl => writeln!(
            out,
            "{}",
            json!({
                "path": shown,
                "face": face.index,
                "box": { "x": b.x, "y": b.y, "width": b.width, "height": b.height },
                "score": face.score,
                "landmarks": face.landmarks,
                "source": face.origin.name(),
                "valence": va.valence,
                "arousal": va.arousal,
                "intensity": va.intensity(),
                "quadrant": va.quadrant().name(),
                "emotion": va.emotion(),
            })
        )?,
    }
    Ok(())
}

fn write_no_face(out: &mut dyn Write, format: Format, path: &Path) -> Result<()> {
    let shown = path.display().to_string();
    match format {
        Format::Csv => writeln!(out, "{},,,,,,,{NO_FACE},,,,,,", csv_field(&shown))?,
        Format::Jsonl => writeln!(out, "{}", json!({ "path": shown, "source": NO_FACE }))?,
    }
    Ok(())
}

fn write_error(out: &mut dyn Write, format: Format, path: &Path, error: &anyhow::Error) -> Result<()> {
    let shown = path.display().to_string();
    match format {
        Format::Csv => writeln!(
            out,
            "{},,,,,,,,,,,,,{}",
            csv_field(&shown),
            csv_field(&format!("{error:#}"))
        )?,
        Format::Jsonl => writeln!(out, "{}", json!({ "path": shown, "error": format!("{error:#}") }))?,
    }
    Ok(())
}

/// Quotes a CSV field when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
