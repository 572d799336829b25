//! A model released in PyTorch's legacy format, imported, reading a photo:
//! the same valence and arousal as PyTorch on the same face.
//!
//! `tests/fixtures/make_photo_parity_fixture.py` ran facenet-pytorch's MTCNN
//! on `faces/astronaut.png`, cropped the face as caf-rs does and ran
//! torchvision's AlexNet with the reference regressor on it, all weights from
//! the deterministic fill that `caf_e2e::fill` repeats here.

use std::path::{Path, PathBuf};
use std::process::Command;

use caf_backbone::{Arch, VaNet};
use caf_e2e::fill::{named_tensors, strip_prefix, var_shapes};
use caf_e2e::torch_pickle::write_legacy_state_dict;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde_json::Value;

fn faces() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/faces")
}

fn run(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("run xtask");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

#[test]
fn a_legacy_model_imported_reads_a_photo_as_pytorch_does() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(faces().join("astronaut_va.json")).expect("fixture"))
            .expect("json");
    let number = |key: &str| expected[key].as_f64().expect(key);
    let dir = tempfile::tempdir().expect("tempdir");

    // The model as a release would ship it: two legacy-format state dicts.
    let varmap = VarMap::new();
    VaNet::new(
        Arch::AlexNet,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .expect("model");
    let tensors = named_tensors(&var_shapes(&varmap)).expect("tensors");
    let (encoder, regressor) = (dir.path().join("Encoder.t7"), dir.path().join("FC_layer.t7"));
    write_legacy_state_dict(&encoder, &strip_prefix(&tensors, "encoder.")).expect("encoder");
    write_legacy_state_dict(&regressor, &strip_prefix(&tensors, "regressor.")).expect("regressor");
    assert_eq!(
        &std::fs::read(&encoder).expect("read")[..4],
        b"\x80\x02\x8a\x0a",
        "not the legacy format"
    );

    let model = dir.path().join("model.safetensors");
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    let resize = number("resize").to_string();
    let image_size = number("image_size").to_string();
    run(&[
        "import-torch",
        "--arch",
        "alexnet",
        "--encoder",
        &path(&encoder),
        "--regressor",
        &path(&regressor),
        "--resize",
        &resize,
        "--image-size",
        &image_size,
        "--out",
        &path(&model),
    ]);

    let rows = run(&[
        "predict",
        "--checkpoint",
        &path(&model),
        "--format",
        "jsonl",
        &path(&faces().join("astronaut.png")),
    ]);
    let rows: Vec<Value> = rows
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["source"].as_str(), Some("detected"));
    // The same face box as facenet-pytorch's, to well under a pixel.
    let b = &row["box"];
    let ours = [
        b["x"].as_f64().unwrap(),
        b["y"].as_f64().unwrap(),
        b["width"].as_f64().unwrap(),
        b["height"].as_f64().unwrap(),
    ];
    let theirs = expected["box"].as_array().expect("box");
    let theirs = [
        theirs[0].as_f64().unwrap(),
        theirs[1].as_f64().unwrap(),
        theirs[2].as_f64().unwrap() - theirs[0].as_f64().unwrap(),
        theirs[3].as_f64().unwrap() - theirs[1].as_f64().unwrap(),
    ];
    for (o, t) in ours.iter().zip(&theirs) {
        assert!((o - t).abs() < 0.01, "box {ours:?} vs {theirs:?}");
    }
    for axis in ["valence", "arousal"] {
        let (got, want) = (row[axis].as_f64().expect(axis), number(axis));
        println!("{axis}: ours {got}, PyTorch {want}");
        assert!(
            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{axis}: ours {got}, PyTorch {want}"
        );
    }
}
