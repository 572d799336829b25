//! caf-face against facenet-pytorch's MTCNN on photos that may be
//! redistributed (tests/fixtures/faces, made by make_mtcnn_fixtures.py):
//! the same faces, boxes with IoU ≥ 0.95, landmarks within 2 px.

use std::path::{Path, PathBuf};

use caf_face::{DetectorConfig, Face, FaceDetector};
use candle_core::Device;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/faces")
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let width = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let height = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: [f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let intersection = width * height;
    intersection / (area(a) + area(b) - intersection)
}

struct Expected {
    bbox: [f32; 4],
    probability: f32,
    landmarks: [[f32; 2]; 5],
}

fn expected(photo: &str) -> Vec<Expected> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    let entry = &all[photo];
    let number = |v: &Value| v.as_f64().unwrap() as f32;
    let boxes = entry["boxes"].as_array().unwrap();
    (0..boxes.len())
        .map(|i| Expected {
            bbox: std::array::from_fn(|k| number(&boxes[i][k])),
            probability: number(&entry["probabilities"][i]),
            landmarks: std::array::from_fn(|p| std::array::from_fn(|k| number(&entry["landmarks"][i][p][k]))),
        })
        .collect()
}

fn detect(photo: &str) -> Vec<Face> {
    let image = image::open(fixtures().join(photo)).unwrap().to_rgb8();
    FaceDetector::builtin(&Device::Cpu).unwrap().detect(&image).unwrap()
}

fn check_parity(photo: &str) {
    let faces = detect(photo);
    let expected = expected(photo);
    assert_eq!(faces.len(), expected.len(), "{photo}: {faces:?}");
    for want in &expected {
        let got = faces
            .iter()
            .max_by(|a, b| iou(a.bbox.corners(), want.bbox).total_cmp(&iou(b.bbox.corners(), want.bbox)))
            .unwrap();
        let overlap = iou(got.bbox.corners(), want.bbox);
        assert!(
            overlap >= 0.95,
            "{photo}: box {:?} vs facenet-pytorch's {:?} (IoU {overlap})",
            got.bbox,
            want.bbox
        );
        for (p, (g, w)) in got.landmarks.iter().zip(&want.landmarks).enumerate() {
            let distance = ((g[0] - w[0]).powi(2) + (g[1] - w[1]).powi(2)).sqrt();
            assert!(
                distance <= 2.0,
                "{photo}: landmark {p} at {g:?}, facenet-pytorch's at {w:?}"
            );
        }
        assert!(
            (got.score - want.probability).abs() < 1e-3,
            "{photo}: score {} vs {}",
            got.score,
            want.probability
        );
    }
}

#[test]
fn one_face_matches_facenet_pytorch() {
    check_parity("astronaut.png");
}

#[test]
fn every_face_of_a_group_matches_facenet_pytorch() {
    check_parity("group.png");
    // Largest first, as facenet-pytorch orders them.
    let faces = detect("group.png");
    assert!(faces.windows(2).all(|w| w[0].bbox.area() >= w[1].bbox.area()));
}

#[test]
fn a_photo_without_a_face_has_none() {
    assert_eq!(expected("coffee.png").len(), 0);
    check_parity("coffee.png");
}

#[test]
fn a_photo_over_the_detection_side_is_searched_shrunk_and_answered_in_its_own_pixels() {
    let image = image::open(fixtures().join("astronaut.png")).unwrap().to_rgb8();
    let (width, height) = image.dimensions();
    let side = width.max(height) / 2;
    let detector = FaceDetector::builtin(&Device::Cpu)
        .unwrap()
        .with_config(DetectorConfig {
            max_detection_side: side,
            ..DetectorConfig::default()
        })
        .unwrap();
    let faces = detector.detect(&image).unwrap();
    // The same as searching a half-size copy by hand and scaling its answer up.
    let small = image::imageops::thumbnail(&image, width / 2, height / 2);
    let by_hand = detector.detect(&small).unwrap();
    assert_eq!(faces.len(), by_hand.len());
    let (sx, sy) = (
        width as f32 / small.width() as f32,
        height as f32 / small.height() as f32,
    );
    for (face, small_face) in faces.iter().zip(&by_hand) {
        assert_eq!(face.score, small_face.score);
        assert_eq!(face.bbox, small_face.bbox.scaled(sx, sy));
    }
    // And still facenet-pytorch's face, within the halved resolution.
    let want = &expected("astronaut.png")[0];
    let overlap = iou(faces[0].bbox.corners(), want.bbox);
    assert!(
        overlap >= 0.85,
        "box {:?} vs {:?} (IoU {overlap})",
        faces[0].bbox,
        want.bbox
    );
}
