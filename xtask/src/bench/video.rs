//! `cargo xtask bench --video`: a video made here (two faces crossing over
//! a photo's background, 640×480 at 30 frames a second), decoded, then
//! predicted with faces searched in every frame and in one of N: frames a
//! second, and how well the tracks follow the two people; beside the same
//! frames predicted as photos, and with `--compare-torch`, beside the
//! Python pipeline of bench/torch_video_bench.py on the same video.

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use caf_face::FaceDetector;
use caf_infer::{FaceSearch, PhotoOptions, Predictor};
use caf_video::{
    predict_video, FaceTracks, FrameSchedule, Mp4Video, Mp4Writer, Rotation, TrackerSettings, VideoSource,
};
use candle_core::Device;
use image::imageops::{self, FilterType};
use image::RgbImage;
use rayon::prelude::*;
use serde_json::{json, Value};

use super::Bench;

/// bench/torch_video_bench.py, built in like the other PyTorch scripts.
const TORCH_VIDEO_BENCH: &str = include_str!("../../../bench/torch_video_bench.py");

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const FPS: f64 = 30.0;
const FACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/faces");

/// Where the two people are in frame `k` of `frames`: A walks right in
/// front, B left behind, crossing halfway; (x, y) of each face's corner.
fn positions(k: u32, frames: u32) -> [(i64, i64); 2] {
    let travel = f64::from(WIDTH - 150);
    let share = f64::from(k) / f64::from(frames.max(2) - 1);
    [((share * travel) as i64, 150), (((1.0 - share) * travel) as i64, 170)]
}

/// Writes the benchmark video: `frames` frames.
fn write_video(path: &Path, frames: u32) -> Result<()> {
    let open = |name: &str| -> Result<RgbImage> {
        let path = Path::new(FACES).join(name);
        caf_data::decode(&path).with_context(|| format!("the benchmark video is made from {}", path.display()))
    };
    let background = imageops::resize(&open("coffee.png")?, WIDTH, HEIGHT, FilterType::Triangle);
    let face = imageops::crop_imm(&open("astronaut.png")?, 150, 30, 150, 170).to_image();
    let face_a = imageops::resize(&face, 132, 150, FilterType::Triangle);
    let face_b = imageops::flip_horizontal(&imageops::resize(&face, 115, 130, FilterType::Triangle));
    let mut writer = Mp4Writer::create(path, WIDTH, HEIGHT, FPS, Rotation::None)?;
    for k in 0..frames {
        let [a, b] = positions(k, frames);
        let mut frame = background.clone();
        // B behind A: drawn first.
        imageops::replace(&mut frame, &face_b, b.0, b.1);
        imageops::replace(&mut frame, &face_a, a.0, a.1);
        writer.write_frame(&frame)?;
    }
    writer.finish()?;
    Ok(())
}

pub(super) fn bench_video(args: &Bench, device: &Device, threads: usize, scratch: &Path) -> Result<Value> {
    ensure!(
        args.video_seconds.is_finite() && (1.0..=600.0).contains(&args.video_seconds),
        "--video-seconds must be 1 to 600"
    );
    let frames = (args.video_seconds * FPS).round() as u32;
    let video = scratch.join("crossing.mp4");
    let started = Instant::now();
    write_video(&video, frames)?;
    let encode_s = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&video)?.len();

    // Resident memory while decoding, sampled every 30 frames.
    let started = Instant::now();
    let mut decoded = 0usize;
    let mut resident = Vec::new();
    let mut next_sample = 0;
    for frame in Mp4Video::open(&video)? {
        frame?;
        if decoded == next_sample {
            resident.push(super::serve::resident_mib().unwrap_or(f64::NAN));
            next_sample += 30;
        }
        decoded += 1;
    }
    let decode_s = started.elapsed().as_secs_f64();
    let tenth = (resident.len() / 10).max(1);
    let mean = |samples: &[f64]| samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    ensure!(decoded == frames as usize, "decoded {decoded} frames of {frames}");

    let checkpoint = scratch.join("video-model.safetensors");
    let spec = super::seeded_deployed_checkpoint(args, &checkpoint)?;
    let arch = spec.arch;
    let predictor = Predictor::from_checkpoint(&checkpoint, device)?;
    let detector = FaceDetector::builtin(device)?;
    let options = PhotoOptions::new(FaceSearch::Detect(&detector));

    let mut schedules = Vec::new();
    for every in [1usize, 5, 15] {
        let schedule = FrameSchedule {
            detect_every: NonZeroUsize::new(every).expect("not zero"),
            ..FrameSchedule::default()
        };
        let mut source = VideoSource::File(Box::new(Mp4Video::open(&video)?));
        let mut tracks = FaceTracks::new(TrackerSettings::default(), caf_video::DEFAULT_TIME_CONSTANT_S)
            .expect("a valid time constant");
        // Per track, how many of its faces lie on each person.
        let mut on_person: std::collections::BTreeMap<u32, [usize; 2]> = Default::default();
        let (mut faces, mut failed) = (0usize, 0usize);
        let started = Instant::now();
        predict_video(
            &predictor,
            &options,
            &mut source,
            &mut tracks,
            schedule,
            |frame| -> Result<()> {
                let people = positions(frame.index as u32, frames);
                match &frame.faces {
                    Ok(found) => {
                        for face in found {
                            faces += 1;
                            let centre = face.face.face.x + face.face.face.width / 2.0;
                            // The faces' centres: A is 132 px wide, B 115.
                            let centres = [people[0].0 as f32 + 66.0, people[1].0 as f32 + 57.5];
                            let nearest = usize::from((centre - centres[1]).abs() < (centre - centres[0]).abs());
                            on_person.entry(face.track).or_default()[nearest] += 1;
                        }
                    }
                    Err(_) => failed += 1,
                }
                Ok(())
            },
        )?;
        let seconds = started.elapsed().as_secs_f64();
        // A track's faces on the person it mostly follows; the rest are
        // faces given to the wrong person's track.
        let misassigned: usize = on_person
            .values()
            .map(|counts| counts.iter().min().copied().unwrap_or(0))
            .sum();
        schedules.push(json!({
            "detect_every": every,
            "seconds": seconds,
            "frames_per_s": frames as f64 / seconds,
            "faces": faces,
            "failed_frames": failed,
            "tracks": on_person.len(),
            "faces_on_the_other_person_s_track": misassigned,
        }));
    }

    // The same frames as photos, decoded beforehand, searched each.
    let images: Vec<RgbImage> = Mp4Video::open(&video)?
        .map(|f| f.map(|f| f.image))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let photo_faces: usize = images
        .par_iter()
        .map(|image| predictor.predict_photo(image, None, &options).map(|faces| faces.len()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .sum();
    let photos_s = started.elapsed().as_secs_f64();

    let torch = match args.compare_torch {
        false => Value::Null,
        true => {
            let script_args: Vec<String> = vec![
                video.display().to_string(),
                "--threads".into(),
                threads.to_string(),
                "--arch".into(),
                arch.name().into(),
                "--size".into(),
                spec.image_size.to_string(),
                "--resize".into(),
                spec.resize.to_string(),
                "--device".into(),
                args.device.clone(),
            ];
            let mut torch = super::run_python_bench(
                args,
                scratch,
                ("torch_video_bench.py", TORCH_VIDEO_BENCH),
                &script_args,
                "torch, torchvision, facenet-pytorch and opencv-python-headless",
            )?;
            // Frames a second, ours over theirs, schedule by schedule.
            for (ours, theirs) in schedules
                .iter()
                .zip(torch["predict"].as_array_mut().into_iter().flatten())
            {
                let ratio = ours["frames_per_s"].as_f64().unwrap_or(f64::NAN)
                    / theirs["frames_per_s"].as_f64().unwrap_or(f64::NAN);
                theirs["caf_rs_over_torch"] = json!(ratio);
            }
            torch
        }
    };

    Ok(json!({
        "torch": torch,
        "caf_rs": env!("CARGO_PKG_VERSION"),
        "device": args.device,
        "threads": threads,
        "machine": super::machine(),
        "model": { "arch": arch.name(), "image_size": spec.image_size, "resize": spec.resize },
        "video": {
            "width": WIDTH, "height": HEIGHT, "fps": FPS, "frames": frames, "bytes": bytes,
            "content": "two copies of tests/fixtures/faces/astronaut.png's face crossing over coffee.png, one hiding the other halfway",
        },
        "encode_frames_per_s": frames as f64 / encode_s,
        "decode_frames_per_s": frames as f64 / decode_s,
        "decode_resident_mib": {
            "first_tenth": mean(&resident[..tenth.min(resident.len())]),
            "last_tenth": mean(&resident[resident.len().saturating_sub(tenth)..]),
            "peak": resident.iter().copied().fold(f64::NAN, f64::max),
        },
        "predict": schedules,
        "as_photos": { "frames_per_s": frames as f64 / photos_s, "faces": photo_faces },
    }))
}

pub(super) fn print_video(report: &Value) {
    let video = &report["video"];
    println!(
        "caf-rs video: {} frames of {}×{} at {} fps ({} bytes, H.264), {} on {} ({} threads)",
        video["frames"],
        video["width"],
        video["height"],
        video["fps"],
        video["bytes"],
        report["model"]["arch"].as_str().unwrap_or("?"),
        report["machine"]["cpu"].as_str().unwrap_or("?"),
        report["threads"],
    );
    let rate = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "encode {:.0} frames/s, decode {:.0} frames/s (resident memory {:.0} MiB over the first tenth of the frames, {:.0} over the last); the decoded frames as photos: {:.1} frames/s",
        rate(&report["encode_frames_per_s"]),
        rate(&report["decode_frames_per_s"]),
        rate(&report["decode_resident_mib"]["first_tenth"]),
        rate(&report["decode_resident_mib"]["last_tenth"]),
        rate(&report["as_photos"]["frames_per_s"]),
    );
    let torch = report["torch"]["predict"].as_array();
    for (k, run) in report["predict"].as_array().into_iter().flatten().enumerate() {
        let beside = match torch.and_then(|runs| runs.get(k)) {
            Some(theirs) => format!(
                "; PyTorch pipeline {:.1} frames/s, caf-rs {:.2}×",
                rate(&theirs["frames_per_s"]),
                rate(&theirs["caf_rs_over_torch"])
            ),
            None => String::new(),
        };
        println!(
            "faces searched every {:>2} frame(s): {:6.1} frames/s, {} faces, {} tracks, {} faces on the other person's track{beside}",
            run["detect_every"],
            rate(&run["frames_per_s"]),
            run["faces"],
            run["tracks"],
            run["faces_on_the_other_person_s_track"],
        );
    }
    if !report["torch"].is_null() {
        println!(
            "PyTorch pipeline (OpenCV decoding): decode {:.0} frames/s",
            rate(&report["torch"]["decode_frames_per_s"])
        );
    }
}
