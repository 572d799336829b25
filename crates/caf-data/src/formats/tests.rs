//! Small datasets in each layout, written to a temporary folder with real
//! PNG and JPEG files, including the rows each format must reject or exclude.

use std::path::Path;

use image::{Rgb, RgbImage};

use super::*;
use crate::sample::DataError;

fn write_image(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
    RgbImage::from_fn(24, 20, |x, y| Rgb([x as u8 * 10, y as u8 * 12, 90]))
        .save(path)
        .expect("image");
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
    std::fs::write(path, text).expect("write");
}

fn bad_rows(error: DataError) -> (usize, Vec<(usize, String)>) {
    match error {
        DataError::BadRows { count, first, .. } => (count, first.into_iter().map(|p| (p.line, p.message)).collect()),
        other => panic!("expected bad rows, got {other}"),
    }
}

#[test]
fn generic_csv_loads_with_and_without_subjects() {
    let dir = tempfile::tempdir().expect("dir");
    write_image(&dir.path().join("alice/1.png"));
    write_image(&dir.path().join("alice/2.jpg"));
    write_image(&dir.path().join("bob/1.png"));
    let csv = dir.path().join("labels.csv");
    write(
        &csv,
        "path,valence,arousal,subject\nalice/1.png,0.5,-0.25,A\nalice/2.jpg,-1,1,A\nbob/1.png,0,0,B\n",
    );
    let data = load_generic_csv(&csv, dir.path()).expect("load");
    assert_eq!(data.len(), 3);
    assert_eq!(data.subjects(), ["A", "B"]);
    assert_eq!((data.samples[0].valence, data.samples[0].arousal), (0.5, -0.25));
    // No header, no subject column: the folder is the subject.
    write(&csv, "alice/1.png,0.5,-0.25\nbob/1.png,0,0\n");
    let data = load_generic_csv(&csv, dir.path()).expect("load");
    assert_eq!(data.subjects(), ["alice", "bob"]);
}

#[test]
fn generic_csv_reports_every_bad_row_with_its_line() {
    let dir = tempfile::tempdir().expect("dir");
    write_image(&dir.path().join("a.png"));
    let csv = dir.path().join("labels.csv");
    write(
        &csv,
        "path,valence,arousal\na.png,0.1,0.2\nmissing.png,0.1,0.2\na.png,high,0.2\na.png,1.5,0\na.png,0.3\n",
    );
    let error = load_generic_csv(&csv, dir.path()).expect_err("bad rows");
    let message = error.to_string();
    let (count, rows) = bad_rows(error);
    assert_eq!(count, 4);
    let lines: Vec<usize> = rows.iter().map(|r| r.0).collect();
    assert_eq!(lines, [3, 4, 5, 6]);
    assert!(rows[0].1.contains("missing.png"), "{rows:?}");
    assert!(rows[1].1.contains("high"), "{rows:?}");
    assert!(rows[2].1.contains("outside"), "{rows:?}");
    assert!(rows[3].1.contains("found 2 field(s)"), "{rows:?}");
    assert!(
        message.contains("labels.csv") && message.contains("4 unusable row(s) of 5"),
        "{message}"
    );
    write(&csv, "path,valence,arousal\n");
    assert!(matches!(
        load_generic_csv(&csv, dir.path()),
        Err(DataError::Empty { .. })
    ));
    assert!(matches!(
        load_generic_csv(&dir.path().join("nope.csv"), dir.path()),
        Err(DataError::Io { .. })
    ));
}

const AFFECTNET_HEADER: &str =
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n";

#[test]
fn affectnet_excludes_uncertain_rows_and_crops_faces() {
    let dir = tempfile::tempdir().expect("dir");
    for name in ["1/a.jpg", "1/b.jpg", "2/c.png", "2/d.png"] {
        write_image(&dir.path().join("Manually_Annotated_Images").join(name));
    }
    let csv = dir.path().join("training.csv");
    write(
        &csv,
        &format!(
            "{AFFECTNET_HEADER}1/a.jpg,2,3,10,12,1.0;2.0;3.0,1,0.5,0.25\n1/b.jpg,0,0,20,20,,3,-2,-2\n2/c.png,0,0,20,20,,2,0.3,1.5\n2/d.png,1,1,8,8,,0,-0.75,0.1\n"
        ),
    );
    let root = dir.path().join("Manually_Annotated_Images");
    let data = load_affectnet(&csv, &root, Some(0.25)).expect("load");
    assert_eq!(data.len(), 2);
    assert_eq!(data.report.rows, 4);
    assert_eq!(data.report.excluded.values().sum::<usize>(), 2);
    assert!(data.report.to_string().contains("-2"), "{}", data.report);
    let face = data.samples[0].face.expect("face box");
    assert_eq!((face.x, face.y, face.width, face.height), (-0.5, 0.0, 15.0, 18.0));
    assert_eq!(data.samples[0].subject, "1/a.jpg");
    assert!(load_affectnet(&csv, &root, None)
        .expect("load")
        .samples
        .iter()
        .all(|s| s.face.is_none()));

    write(&csv, &format!("{AFFECTNET_HEADER}1/a.jpg,2,3,10,12,,1,0.5,0.25\n9/none.jpg,0,0,1,1,,1,0.1,0.1\n1/a.jpg,0,0,0,5,,1,0.1,0.1\n"));
    let (count, rows) = bad_rows(load_affectnet(&csv, &root, Some(0.1)).expect_err("bad rows"));
    assert_eq!(count, 2);
    assert_eq!((rows[0].0, rows[1].0), (3, 4));
    assert!(
        rows[0].1.contains("none.jpg") && rows[1].1.contains("empty"),
        "{rows:?}"
    );
    write(&csv, "path,valence,arousal\nx.png,0,0\n");
    assert!(load_affectnet(&csv, &root, None)
        .expect_err("wrong header")
        .to_string()
        .contains("subDirectory_filePath"));
}

#[test]
fn afew_va_scales_labels_and_uses_the_actor() {
    let dir = tempfile::tempdir().expect("dir");
    for frame in ["00000", "00001", "00002"] {
        write_image(&dir.path().join(format!("001/{frame}.png")));
    }
    write_image(&dir.path().join("002/00000.png"));
    write(
        &dir.path().join("001/001.json"),
        r#"{"actor": "Tom", "video_id": "001", "frames": {"00000": {"valence": 5, "arousal": -10, "landmarks": []}, "00001": {"valence": 0, "arousal": 3}, "00002": {"valence": 11, "arousal": 0}}}"#,
    );
    write(
        &dir.path().join("002/002.json"),
        r#"{"actor": "Ann", "frames": {"00000": {"valence": -4, "arousal": 2}}}"#,
    );
    write(&dir.path().join("README.txt"), "not a clip");
    let data = load_afew_va(dir.path()).expect("load");
    assert_eq!(data.len(), 3);
    assert_eq!(data.report.excluded.values().sum::<usize>(), 1);
    assert_eq!(
        (
            data.samples[0].valence,
            data.samples[0].arousal,
            data.samples[0].subject.as_str()
        ),
        (0.5, -1.0, "Tom")
    );
    assert_eq!(data.subjects(), ["Ann", "Tom"]);

    write(
        &dir.path().join("002/002.json"),
        r#"{"actor": "Ann", "frames": {"00000": {"valence": -4, "arousal": 2}, "00007": {"valence": 1, "arousal": 1}}}"#,
    );
    write(&dir.path().join("003/003.json"), "{ not json");
    let error = load_afew_va(dir.path()).expect_err("bad clips");
    let message = error.to_string();
    assert!(message.contains("00007") && message.contains("003.json"), "{message}");
}

#[test]
fn aff_wild2_skips_invalid_and_missing_frames() {
    let dir = tempfile::tempdir().expect("dir");
    let (annotations, frames) = (dir.path().join("annotations"), dir.path().join("cropped_aligned"));
    for frame in [1, 2, 4] {
        write_image(&frames.join(format!("12-24-1920x1080_left/{frame:05}.jpg")));
    }
    write_image(&frames.join("7-30_right/00001.png"));
    write(
        &annotations.join("12-24-1920x1080_left.txt"),
        "valence,arousal\n0.1,0.2\n-5,-5\n0.3,0.3\n-0.4,0.9\n",
    );
    write(&annotations.join("7-30_right.txt"), "valence,arousal\n0.5,-0.5\n");
    let data = load_aff_wild2(&annotations, &frames).expect("load");
    assert_eq!(data.len(), 3);
    assert_eq!(data.report.rows, 5);
    assert_eq!(data.report.excluded.len(), 2, "{}", data.report);
    assert_eq!(data.subjects(), ["12-24-1920x1080", "7-30"]);
    assert!(data.samples[1].path.ends_with("00004.jpg"));

    write(&annotations.join("7-30_right.txt"), "valence,arousal\n0.5,x\n2,0\n");
    let (count, rows) = bad_rows(load_aff_wild2(&annotations, &frames).expect_err("bad lines"));
    assert_eq!(count, 2);
    assert_eq!((rows[0].0, rows[1].0), (2, 3));
}

#[test]
fn dataset_specs_dispatch() {
    let dir = tempfile::tempdir().expect("dir");
    write_image(&dir.path().join("x.png"));
    write(&dir.path().join("l.csv"), "x.png,0.2,0.1,S\n");
    let spec = DatasetSpec::Generic {
        csv: dir.path().join("l.csv"),
        root: dir.path().to_path_buf(),
    };
    assert_eq!(spec.load().expect("load").len(), 1);
}

#[test]
fn an_over_long_line_ends_the_index_with_a_row_problem() {
    let dir = tempfile::tempdir().expect("dir");
    write_image(&dir.path().join("ann/1.png"));
    let long = "x".repeat(super::MAX_LINE_BYTES + 10);
    let csv = dir.path().join("labels.csv");
    write(
        &csv,
        &format!("ann/1.png,0.5,0.5,ann\n{long},0.1,0.1,bob\nann/1.png,0.2,0.2,ann\n"),
    );
    let (count, problems) = bad_rows(load_generic_csv(&csv, dir.path()).unwrap_err());
    assert_eq!(count, 1, "{problems:?}");
    assert!(problems[0].1.contains("longer than 65536 bytes"), "{problems:?}");

    let boxes = dir.path().join("boxes.csv");
    write(&boxes, &format!("path,x,y,width,height\na.jpg,1,2,3,4\n{long}\n"));
    let message = FaceBoxes::load(&boxes, 0.0).unwrap_err().to_string();
    assert!(message.contains("longer than 65536 bytes"), "{message}");

    let affectnet = dir.path().join("training.csv");
    write(&affectnet, &format!("{AFFECTNET_HEADER}{long}\n"));
    let message = load_affectnet(&affectnet, dir.path(), None).unwrap_err().to_string();
    assert!(message.contains("longer than 65536 bytes"), "{message}");
}
