//! Small valid inputs for each target, from which a fuzzer starts: the
//! committed corpora in `fuzz/corpus/<target>` began as these
//! (`cargo run -p caf-fuzz --example write-seeds`).

use std::collections::HashMap;
use std::io::Cursor;

use caf_backbone::{Arch, ModelSpec};
use candle_core::{Device, Tensor};
use image::{ImageFormat, RgbImage};

use crate::Target;

fn picture() -> RgbImage {
    RgbImage::from_fn(12, 8, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 30) as u8, ((x * y) % 256) as u8])
    })
}

fn encoded(format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    picture().write_to(&mut bytes, format).expect("encode");
    bytes.into_inner()
}

fn scratch_file(write: impl FnOnce(&std::path::Path)) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("seed");
    write(&path);
    std::fs::read(&path).expect("read seed")
}

fn small_tensors() -> Vec<(String, Tensor)> {
    let device = Device::Cpu;
    vec![
        (
            "regressor.fc.weight".to_string(),
            Tensor::new(&[[0.5f32, -1.0, 2.0], [0.25, 0.0, -0.5]], &device).expect("tensor"),
        ),
        (
            "regressor.fc.bias".to_string(),
            Tensor::new(&[0.1f32, -0.1], &device).expect("tensor"),
        ),
    ]
}

/// The seeds of `target`, each `(name, bytes)`.
pub fn seeds(target: Target) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        Target::Image => vec![
            ("a.png", encoded(ImageFormat::Png)),
            ("a.jpg", encoded(ImageFormat::Jpeg)),
            ("exif.jpg", caf_testkit::pictures::jpeg_with_orientation(&picture(), 6)),
            ("a.webp", encoded(ImageFormat::WebP)),
            ("a.bmp", encoded(ImageFormat::Bmp)),
            ("a.tiff", encoded(ImageFormat::Tiff)),
        ],
        Target::Checkpoint => vec![(
            "model.safetensors",
            scratch_file(|path| {
                let spec = ModelSpec::new(Arch::AlexNet);
                let extra = HashMap::from([("caf.config".to_string(), "epochs = 2\n".to_string())]);
                caf_backbone::write_tensors(path, &spec, &small_tensors(), &extra).expect("checkpoint");
            }),
        )],
        Target::TorchLegacy => vec![(
            "legacy.pt",
            scratch_file(|path| {
                caf_e2e::torch_pickle::write_legacy_state_dict(path, &small_tensors()).expect("legacy file")
            }),
        )],
        Target::TorchZip => vec![(
            "zip.pth",
            scratch_file(|path| caf_e2e::torch_pickle::write_state_dict(path, &small_tensors()).expect("zip file")),
        )],
        Target::AffectNet => vec![(
            "training.csv",
            b"subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n\
              1/a.jpg,2,3,10,12,1.0;2.0;3.0,1,0.5,0.25\n2/d.png,1,1,8,8,,0,-0.75,0.1\n1/b.jpg,0,0,20,20,,3,-2,-2\n"
                .to_vec(),
        )],
        Target::AfewVa => vec![(
            "001.json",
            br#"{"actor": "Tom", "video_id": "001", "frames": {"00000": {"valence": 5, "arousal": -10, "landmarks": [[1.0, 2.0]]}, "00001": {"valence": 0, "arousal": 3}}}"#
                .to_vec(),
        )],
        Target::AffWild2 => vec![("video_left.txt", b"valence,arousal\n0.5,-0.25\n-5,-5\n0.1,0.2\n".to_vec())],
        Target::GenericCsv => vec![(
            "labels.csv",
            b"path,valence,arousal,subject\nann/1.png,0.5,-0.5,ann\nbob/2.jpg,-1,1,bob\n".to_vec(),
        )],
        Target::FaceBoxes => vec![
            ("boxes.csv", b"path,x,y,width,height\nphotos/a.jpg,10,12,40,48\nb.png,0,0,5,5\n".to_vec()),
            (
                "affectnet.csv",
                b"subDirectory_filePath,face_x,face_y,face_width,face_height\n1/a.jpg,2,3,10,12\n".to_vec(),
            ),
        ],
        Target::Video => vec![
            (
                "moving.mp4",
                scratch_file(|path| {
                    let mut writer = caf_video::Mp4Writer::create(path, 32, 16, 10.0, caf_video::Rotation::Clockwise90)
                        .expect("a writer");
                    for k in 0..3 {
                        let frame = RgbImage::from_fn(32, 16, |x, y| image::Rgb([(x * 8 + k * 30) as u8, (y * 16) as u8, 90]));
                        writer.write_frame(&frame).expect("a frame");
                    }
                    writer.finish().expect("finished");
                }),
            ),
            (
                "bframes.mp4",
                std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../caf-video/tests/fixtures/bframes.mp4"))
                    .expect("caf-video's B-frame fixture"),
            ),
        ],
        Target::Config => vec![(
            "config.toml",
            caf_train::TrainConfig::default()
                .to_toml()
                .expect("the default config as TOML")
                .into_bytes(),
        )],
    }
}

/// The legacy format's first pickle, the magic number.
fn legacy_magic() -> Vec<u8> {
    let mut magic = vec![0x80, 2, 0x8a, 10];
    magic.extend_from_slice(&0x1950a86a20f9469cfc6c_u128.to_le_bytes()[..10]);
    magic.push(b'.');
    magic
}

/// Inputs that once took a reader down, each `(file name, bytes)`: the
/// replay test runs them on every test run.
pub fn regressions(target: Target) -> Vec<(&'static str, Vec<u8>)> {
    let stride_zero = |layout| {
        scratch_file(|path| {
            caf_e2e::torch_pickle::write_view(path, layout, &[1 << 20, 1 << 20], &[0, 0], &[1.0]).expect("a view")
        })
    };
    match target {
        Target::TorchLegacy => {
            // A list appended to itself: a stack overflow when printed.
            let mut recursive = legacy_magic();
            recursive.extend_from_slice(b"\x80\x02]q\x00h\x00a.");
            // 100 000 nested tuples: a stack overflow when dropped.
            let mut deep = legacy_magic();
            deep.extend_from_slice(b"\x80\x02K\x01");
            deep.extend(std::iter::repeat_n(0x85u8, 100_000));
            deep.push(b'.');
            vec![
                ("self-appended-list.pt", recursive),
                ("nested-100000-deep.pt", deep),
                ("stride-zero.pt", stride_zero(caf_e2e::torch_pickle::Layout::Legacy)),
            ]
        }
        Target::TorchZip => vec![("stride-zero.pth", stride_zero(caf_e2e::torch_pickle::Layout::Zip))],
        _ => Vec::new(),
    }
}
