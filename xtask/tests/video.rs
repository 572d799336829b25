//! `predict` on videos and frame folders, on a video this test makes: a
//! fixture face moving across a background.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use caf_backbone::Arch;
use caf_e2e::setups::seeded_checkpoint;
use caf_video::{Mp4Video, Mp4Writer, Rotation};
use image::{Rgb, RgbImage};
use serde_json::Value;

mod common;

use common::{text, xtask};

const FRAMES: u32 = 10;
const FPS: f64 = 10.0;

/// A seeded AlexNet at 64 px.
fn model(dir: &Path) -> PathBuf {
    seeded_checkpoint(dir, Arch::AlexNet, 3, 64, 72).expect("checkpoint")
}

/// The fixture astronaut's face, `width`×`height`.
fn fixture_face(width: u32, height: u32) -> RgbImage {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/faces/astronaut.png");
    let photo = image::open(fixture).expect("fixture").to_rgb8();
    let face = image::imageops::crop_imm(&photo, 150, 30, 150, 180).to_image();
    image::imageops::resize(&face, width, height, image::imageops::FilterType::Triangle)
}

/// The astronaut's face moving right across a 320×240 background.
fn write_moving_face(path: &Path) {
    let face = fixture_face(100, 120);
    let mut writer = Mp4Writer::create(path, 320, 240, FPS, Rotation::None).expect("writer");
    for k in 0..FRAMES {
        let mut frame = RgbImage::from_pixel(320, 240, Rgb([70, 80, 90]));
        image::imageops::overlay(&mut frame, &face, i64::from(10 + 8 * k), 60);
        writer.write_frame(&frame).expect("frame");
    }
    writer.finish().expect("finished");
}

fn rows(output: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

#[test]
fn a_video_s_faces_are_tracked_and_read_as_its_frames_are_as_photos() {
    let dir = tempfile::tempdir().expect("dir");
    let model = model(dir.path());
    let video = dir.path().join("walk.mp4");
    write_moving_face(&video);

    // The decoded frames, as photos and as a frame folder.
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).expect("dir");
    for frame in Mp4Video::open(&video).expect("opens") {
        let frame = frame.expect("decodes");
        frame
            .image
            .save(frames.join(format!("{:05}.png", frame.index + 1)))
            .expect("png");
    }

    let tracks = dir.path().join("tracks.json");
    let annotated = dir.path().join("annotated");
    let plots = dir.path().join("plots");
    let predict = |extra: &[&str]| {
        let mut args = vec!["predict", "--checkpoint", s(&model), "--format", "jsonl"];
        args.extend_from_slice(extra);
        xtask(&args)
    };
    let from_video = predict(&[
        s(&video),
        "--tracks",
        s(&tracks),
        "--annotate",
        s(&annotated),
        "--plots",
        s(&plots),
    ]);
    assert!(from_video.status.success(), "{}", text(&from_video));
    let video_rows = rows(&from_video);
    assert_eq!(video_rows.len(), FRAMES as usize, "one face a frame: {video_rows:?}");
    for (k, row) in video_rows.iter().enumerate() {
        assert_eq!(row["frame"], k);
        assert!((row["time_s"].as_f64().expect("time") - k as f64 / FPS).abs() < 1e-9);
        assert_eq!(row["track"], 0, "one person, one track: {row}");
        assert_eq!(row["source"], "detected");
    }

    // The same numbers as each decoded frame predicted as a photo.
    let as_photos = predict(&[s(&frames)]);
    assert!(as_photos.status.success(), "{}", text(&as_photos));
    let photo_rows: BTreeMap<String, Value> = rows(&as_photos)
        .into_iter()
        .map(|row| (row["path"].as_str().expect("path").to_string(), row))
        .collect();
    for (k, row) in video_rows.iter().enumerate() {
        let photo = &photo_rows[s(&frames.join(format!("{:05}.png", k + 1)))];
        for field in ["valence", "arousal", "box", "score"] {
            assert_eq!(row[field], photo[field], "frame {k}, {field}");
        }
    }

    // The folder read as a video at the same rate: the same rows.
    let from_folder = predict(&["--fps", "10", s(&frames)]);
    assert!(from_folder.status.success(), "{}", text(&from_folder));
    for (a, b) in video_rows.iter().zip(rows(&from_folder)) {
        for field in ["frame", "time_s", "track", "valence", "arousal", "smoothed"] {
            assert_eq!(a[field], b[field], "{field}");
        }
    }

    // Faces searched in one frame of three: the others read at the last box found.
    let sparse = predict(&["--detect-every", "3", s(&video)]);
    assert!(sparse.status.success(), "{}", text(&sparse));
    let sparse_rows = rows(&sparse);
    assert_eq!(sparse_rows.len(), FRAMES as usize);
    for (k, row) in sparse_rows.iter().enumerate() {
        assert_eq!(row["track"], 0, "{row}");
        if k % 3 == 0 {
            assert_eq!(row["source"], "detected");
            assert_eq!(row["valence"], video_rows[k]["valence"], "a searched frame as before");
        } else {
            assert_eq!(row["source"], "carried");
            assert_eq!(
                row["box"],
                video_rows[k - k % 3]["box"],
                "frame {k} reads frame {}'s box",
                k - k % 3
            );
            assert!(row["score"].is_null());
        }
    }

    // The smoothed reading lags the raw one: the first frame's is the raw one.
    assert_eq!(video_rows[0]["smoothed"]["valence"], video_rows[0]["valence"]);

    let summary: Value = serde_json::from_slice(&std::fs::read(&tracks).expect("tracks")).expect("json");
    let track = &summary[0]["tracks"][0];
    assert_eq!(summary[0]["frames"], FRAMES);
    assert_eq!(track["frames"], FRAMES);
    assert!((track["last_s"].as_f64().expect("last") - 0.9).abs() < 1e-9, "{track}");
    let shares: f64 = track["quadrants"]
        .as_object()
        .expect("quadrants")
        .values()
        .map(|v| v.as_f64().expect("share"))
        .sum();
    assert!((shares - 1.0).abs() < 1e-9);

    let svg = std::fs::read_to_string(plots.join("walk.svg")).expect("the plot");
    assert!(
        svg.contains("track 0") && !svg.contains("track 1"),
        "one track in the plot"
    );

    let copy = Mp4Video::open(&annotated.join("walk.annotated.mp4")).expect("the annotated video opens");
    assert_eq!(copy.count(), FRAMES as usize);
    let pngs = dir.path().join("pngs");
    let as_frames = predict(&["--annotate", s(&pngs), "--annotate-frames", s(&video)]);
    assert!(as_frames.status.success(), "{}", text(&as_frames));
    let written = std::fs::read_dir(pngs.join("walk")).expect("frames").count();
    assert_eq!(written, FRAMES as usize);
    assert!(pngs.join("walk/000009.png").exists());
}

/// Where the two people of the crossing video are in frame `k`: A walks
/// right in front, B left behind; their faces overlap in the middle frames.
fn crossing(k: u32) -> [i64; 2] {
    [20 + 14 * i64::from(k), 380 - 14 * i64::from(k)]
}

const CROSSING_FRAMES: u32 = 26;

#[test]
fn two_people_crossing_keep_their_tracks_through_the_crossing() {
    let dir = tempfile::tempdir().expect("dir");
    let model = model(dir.path());
    let video = dir.path().join("crossing.mp4");
    let (front, behind) = (
        fixture_face(100, 120),
        image::imageops::flip_horizontal(&fixture_face(90, 108)),
    );
    let mut writer = Mp4Writer::create(&video, 480, 240, FPS, Rotation::None).expect("writer");
    for k in 0..CROSSING_FRAMES {
        let [a, b] = crossing(k);
        let mut frame = RgbImage::from_pixel(480, 240, Rgb([70, 80, 90]));
        image::imageops::overlay(&mut frame, &behind, b, 70);
        image::imageops::overlay(&mut frame, &front, a, 60);
        writer.write_frame(&frame).expect("frame");
    }
    writer.finish().expect("finished");

    let output = xtask(&[
        "predict",
        "--checkpoint",
        s(&model),
        "--format",
        "jsonl",
        "--faces",
        "detect",
        s(&video),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    // Each face's track, and which person it is by where its centre lies.
    let mut person_tracks: [BTreeMap<u64, usize>; 2] = Default::default();
    let mut hidden_frames = 0;
    let mut frames_seen: BTreeMap<u64, usize> = BTreeMap::new();
    for row in rows(&output) {
        if row["source"] != "detected" {
            continue;
        }
        let frame = row["frame"].as_u64().expect("frame");
        *frames_seen.entry(frame).or_default() += 1;
        let [a, b] = crossing(frame as u32);
        let centre = row["box"]["x"].as_f64().expect("x") + row["box"]["width"].as_f64().expect("width") / 2.0;
        let person = usize::from((centre - (b + 45) as f64).abs() < (centre - (a + 50) as f64).abs());
        *person_tracks[person]
            .entry(row["track"].as_u64().expect("track"))
            .or_default() += 1;
    }
    for faces in frames_seen.values() {
        if *faces == 1 {
            hidden_frames += 1;
        }
    }
    assert!(
        hidden_frames >= 2,
        "one face hides the other in a few frames ({frames_seen:?})"
    );
    assert_eq!(
        (person_tracks[0].len(), person_tracks[1].len()),
        (1, 1),
        "each person one track, before and after the crossing: {person_tracks:?}"
    );
    assert_ne!(person_tracks[0].keys().next(), person_tracks[1].keys().next());
}

#[test]
fn a_broken_video_costs_its_own_row_and_the_others_are_read() {
    let dir = tempfile::tempdir().expect("dir");
    let model = model(dir.path());
    let (good, empty) = (dir.path().join("good.mp4"), dir.path().join("empty.mp4"));
    write_moving_face(&good);
    std::fs::write(&empty, b"").expect("write");
    let output = xtask(&[
        "predict",
        "--checkpoint",
        s(&model),
        "--format",
        "jsonl",
        s(&empty),
        s(&good),
    ]);
    assert!(!output.status.success());
    let rows = rows(&output);
    assert!(
        rows[0]["error"].as_str().expect("an error row").contains("empty"),
        "{}",
        rows[0]
    );
    assert_eq!(rows.len(), 1 + FRAMES as usize);
    assert!(text(&output).contains("could not be predicted"));

    // Photos and videos in one call are refused by name.
    let photo = dir.path().join("a.png");
    RgbImage::from_pixel(64, 64, Rgb([1, 2, 3])).save(&photo).expect("png");
    let mixed = xtask(&["predict", "--checkpoint", s(&model), s(&good), s(&photo)]);
    assert!(!mixed.status.success());
    assert!(text(&mixed).contains("separate calls"), "{}", text(&mixed));
}

#[test]
fn eval_on_a_video_dataset_scores_the_smoothed_predictions_beside_the_raw_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let model = model(dir.path());
    let (annotations, frames) = (dir.path().join("annotations"), dir.path().join("frames"));
    for video in ["clip_a", "clip_b"] {
        std::fs::create_dir_all(frames.join(video)).expect("dirs");
        std::fs::create_dir_all(&annotations).expect("dirs");
        let mut labels = String::from("valence,arousal\n");
        for k in 0..8u32 {
            labels.push_str(&format!("{},{}\n", 0.1 * k as f32 - 0.4, 0.3 - 0.05 * k as f32));
            RgbImage::from_fn(72, 72, |x, y| Rgb([(x * 3 + k * 20) as u8, (y * 3) as u8, 90]))
                .save(frames.join(video).join(format!("{:05}.png", k + 1)))
                .expect("png");
        }
        std::fs::write(annotations.join(format!("{video}.txt")), labels).expect("labels");
    }
    let eval = |smoothing: &str| {
        let json = dir.path().join(format!("eval-{smoothing}.json"));
        let output = xtask(&[
            "eval",
            "--checkpoint",
            s(&model),
            "--format",
            "aff-wild2",
            "--annotations",
            s(&annotations),
            "--frames",
            s(&frames),
            "--smoothing",
            smoothing,
            "--json",
            s(&json),
        ]);
        assert!(output.status.success(), "{}", text(&output));
        assert!(
            text(&output).contains("smoothed per video (2 videos"),
            "{}",
            text(&output)
        );
        let record: Value = serde_json::from_slice(&std::fs::read(&json).expect("eval.json")).expect("json");
        record
    };
    let smoothed = eval("0.5");
    assert_eq!(smoothed["smoothed"]["videos"], 2);
    assert_eq!(smoothed["smoothed"]["fps"], 30.0);
    assert_ne!(smoothed["smoothed"]["metrics"], smoothed["metrics"]);
    // No smoothing: the raw metrics again.
    let raw = eval("0");
    let rmse = |record: &Value, at: &str| record[at]["valence"]["rmse"].as_f64().expect("rmse");
    let smoothed_rmse = raw["smoothed"]["metrics"]["valence"]["rmse"].as_f64().expect("rmse");
    assert!((smoothed_rmse - rmse(&raw, "metrics")).abs() < 1e-9, "{raw}");
}
