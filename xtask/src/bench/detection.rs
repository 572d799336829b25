//! `cargo xtask bench --detection`: MTCNN face detection on photos of
//! 640×480 and 1920×1080 with one face and with several, optionally beside
//! facenet-pytorch's MTCNN on the same files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use caf_face::FaceDetector;
use candle_core::Device;
use image::imageops::{self, FilterType};
use image::RgbImage;
use serde_json::{json, Value};

use super::{run_python_bench, Bench, Timing};

/// The public-domain and CC0 photos of the detection tests.
const FACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/faces");

/// bench/torch_detect_bench.py, built in like torch_bench.py.
const TORCH_DETECT_BENCH: &str = include_str!("../../../bench/torch_detect_bench.py");

/// A pasted face: x, y and height in shares of the photo's height, and
/// whether it is mirrored.
type Pasted = (f32, f32, f32, bool);

/// The benchmark photos: name, width, height and faces.
const PHOTOS: [(&str, u32, u32, &[Pasted]); 4] = [
    ("640x480-one-face", 640, 480, &[(0.45, 0.2, 0.5, false)]),
    ("640x480-four-faces", 640, 480, FOUR),
    ("1920x1080-one-face", 1920, 1080, &[(0.8, 0.25, 0.45, false)]),
    ("1920x1080-four-faces", 1920, 1080, FOUR),
];

const FOUR: &[Pasted] = &[
    (0.05, 0.1, 0.45, false),
    (0.55, 0.45, 0.3, true),
    (0.95, 0.1, 0.2, false),
    (1.05, 0.6, 0.14, true),
];

/// Writes the benchmark photos into `dir`: the coffee photo as background,
/// the astronaut's face pasted at the given places and sizes.
pub(super) fn write_photos(dir: &Path) -> Result<Vec<(String, PathBuf, RgbImage)>> {
    let open = |name: &str| -> Result<RgbImage> {
        let path = Path::new(FACES).join(name);
        caf_data::decode(&path).with_context(|| format!("the benchmark photos are made from {}", path.display()))
    };
    let background = open("coffee.png")?;
    let face = imageops::crop_imm(&open("astronaut.png")?, 150, 30, 150, 170).to_image();
    let mut photos = Vec::new();
    for (name, width, height, faces) in PHOTOS {
        let mut photo = imageops::resize(&background, width, height, FilterType::Triangle);
        for &(x, y, side, mirrored) in faces {
            let face_h = (side * height as f32) as u32;
            let face_w = face_h * 150 / 170;
            let mut patch = imageops::resize(&face, face_w, face_h, FilterType::Triangle);
            if mirrored {
                imageops::flip_horizontal_in_place(&mut patch);
            }
            let at = |share: f32| (share * height as f32) as i64;
            imageops::replace(&mut photo, &patch, at(x), at(y));
        }
        let path = dir.join(format!("{name}.png"));
        photo
            .save(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        photos.push((name.to_string(), path, photo));
    }
    Ok(photos)
}

pub(super) fn bench_detection(args: &Bench, device: &Device, threads: usize, scratch: &Path) -> Result<Value> {
    let detector = FaceDetector::builtin(device)?;
    let photos = write_photos(scratch)?;
    let mut ours = serde_json::Map::new();
    for (name, _, photo) in &photos {
        let faces = detector.detect(photo)?.len();
        let timing = Timing::measure(args, device, || {
            detector.detect(photo)?;
            Ok(())
        })?;
        ours.insert(name.clone(), json!({ "faces": faces, "timing": timing }));
    }
    let mut report = json!({
        "caf_rs": env!("CARGO_PKG_VERSION"),
        "device": args.device,
        "threads": threads,
        "detection": ours,
    });
    if args.compare_torch {
        let paths: Vec<&Path> = photos.iter().map(|(_, path, _)| path.as_path()).collect();
        report["torch"] = run_torch_detection(args, threads, scratch, &paths)?;
    }
    Ok(report)
}

fn run_torch_detection(args: &Bench, threads: usize, scratch: &Path, photos: &[&Path]) -> Result<Value> {
    let mut script_args = vec![
        "--device".to_string(),
        args.device.clone(),
        "--threads".to_string(),
        threads.to_string(),
    ];
    script_args.extend(photos.iter().map(|p| p.display().to_string()));
    let script = ("torch_detect_bench.py", TORCH_DETECT_BENCH);
    run_python_bench(
        args,
        scratch,
        script,
        &script_args,
        "torch, torchvision and facenet-pytorch",
    )
}

pub(super) fn print_detection(report: &Value) {
    println!(
        "caf-rs face detection (MTCNN, minimum face 20 px), {}, {} threads: median of at least {} runs",
        report["device"].as_str().unwrap_or("?"),
        report["threads"],
        report["runs_at_least"]
    );
    println!(
        "{:<22} {:>6} {:>11} {:>12} {:>12} {:>8}",
        "photo", "faces", "caf-rs", "torch faces", "torch", "ratio"
    );
    for (name, ours) in report["detection"].as_object().into_iter().flatten() {
        let Some(timing) = Timing::from_json(&ours["timing"]) else {
            continue;
        };
        let theirs = &report["torch"]["detection"][name.as_str()];
        let (torch_faces, torch_ms, ratio) = match Timing::from_json(&theirs["timing"]) {
            Some(t) => (
                theirs["faces"].to_string(),
                format!("{:.1} ms", 1e3 * t.median_s),
                format!("{:.2}", t.median_s / timing.median_s),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        println!(
            "{:<22} {:>6} {:>8.1} ms {:>12} {:>12} {:>8}",
            name,
            ours["faces"],
            1e3 * timing.median_s,
            torch_faces,
            torch_ms,
            ratio
        );
    }
}
