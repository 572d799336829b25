//! `cargo xtask predict`: valence and arousal for image files and folders.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use caf_data::face_region;
use caf_data::FaceBoxes;
use caf_infer::{annotation, load, ImageFile, Predictor, Va};
use caf_train::parse_device;
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
    /// Images per forward pass
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// `cpu`, `cuda` or `cuda:N`
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Face boxes: a CSV of `path,x,y,width,height` or an AffectNet index; images match by path suffix
    #[arg(long)]
    boxes: Option<PathBuf>,
    /// Grow every face box by this share of its size on each side
    #[arg(long, default_value_t = 0.0)]
    face_margin: f32,
    /// Also write, per image, a PNG of the face beside the circumplex with the predicted point
    #[arg(long)]
    annotate: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// `path,valence,arousal,intensity,quadrant,emotion,error`
    Csv,
    /// One JSON object per line
    Jsonl,
}

const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

pub fn predict(args: Predict) -> Result<()> {
    anyhow::ensure!(args.batch > 0, "--batch must be positive");
    let device = parse_device(&args.device)?;
    let predictor = Predictor::from_checkpoint(&args.checkpoint, &device)?;
    let boxes = match &args.boxes {
        Some(file) => FaceBoxes::load(file, args.face_margin)?,
        None => FaceBoxes::default(),
    };
    let files: Vec<ImageFile> = collect_images(&args.paths)?
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
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    if args.format == Format::Csv {
        writeln!(out, "path,valence,arousal,intensity,quadrant,emotion,error")?;
    }
    let progress = indicatif::ProgressBar::new(files.len() as u64);
    let mut failed = 0;
    for (chunk_index, chunk) in files.chunks(args.batch).enumerate() {
        for (offset, (file, result)) in chunk.iter().zip(predictor.predict_files(chunk, args.batch)).enumerate() {
            let result = result.map_err(anyhow::Error::from).and_then(|va| {
                if let Some(dir) = &args.annotate {
                    write_annotation(dir, chunk_index * args.batch + offset, file, va)?;
                }
                Ok(va)
            });
            if result.is_err() {
                failed += 1;
            }
            write_row(&mut out, args.format, &file.path, &result)?;
        }
        out.flush()?;
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

/// Files as given (always tried, so a wrong one gets an error row) and image
/// files under folders, each folder sorted.
fn collect_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let before = files.len();
            walk(path, &mut files)?;
            if files.len() == before {
                bail!(
                    "{} holds no image (.{}); give image files or a folder of them",
                    path.display(),
                    IMAGE_EXTENSIONS.join(", .")
                );
            }
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk(&entry, files)?;
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            files.push(entry);
        }
    }
    Ok(())
}

fn write_annotation(dir: &Path, index: usize, file: &ImageFile, va: Va) -> Result<()> {
    let image = load(&file.path)?;
    let face = face_region(&image, file.face);
    let stem = file.path.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let target = dir.join(format!("{index:05}-{stem}.png"));
    annotation(&face, va)
        .save(&target)
        .with_context(|| format!("cannot write {}", target.display()))
}

fn write_row(out: &mut dyn Write, format: Format, path: &Path, result: &Result<Va>) -> Result<()> {
    let shown = path.display().to_string();
    match (format, result) {
        (Format::Csv, Ok(va)) => writeln!(
            out,
            "{},{:.6},{:.6},{:.6},{},{},",
            csv_field(&shown),
            va.valence,
            va.arousal,
            va.intensity(),
            va.quadrant().name(),
            va.emotion()
        )?,
        (Format::Csv, Err(error)) => writeln!(out, "{},,,,,,{}", csv_field(&shown), csv_field(&format!("{error:#}")))?,
        (Format::Jsonl, Ok(va)) => writeln!(
            out,
            "{}",
            json!({
                "path": shown,
                "valence": va.valence,
                "arousal": va.arousal,
                "intensity": va.intensity(),
                "quadrant": va.quadrant().name(),
                "emotion": va.emotion(),
            })
        )?,
        (Format::Jsonl, Err(error)) => writeln!(out, "{}", json!({ "path": shown, "error": format!("{error:#}") }))?,
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
