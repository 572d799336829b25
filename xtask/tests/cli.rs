//! The `cargo xtask` binary as a user runs it.

use std::path::Path;
use std::process::Output;

use caf_backbone::{Arch, VaNet};
use caf_e2e::fill::{named_tensors, strip_prefix, var_shapes};
use caf_e2e::torch_pickle::write_state_dict;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

mod common;

use common::{text, xtask};

#[test]
fn without_arguments_it_lists_every_command_with_one_line_of_help() {
    let output = xtask::<&str>(&[]);
    let help = text(&output);
    for command in [
        "import-torch",
        "import-mtcnn",
        "inspect",
        "make-data",
        "train",
        "eval",
        "cv",
        "predict",
        "bench",
        "compare",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(command))
            .unwrap_or_else(|| panic!("{command} not listed:\n{help}"));
        assert!(
            line.trim_start().len() > command.len() + 10,
            "{command} has no help line:\n{help}"
        );
    }
}

fn write_reference_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let varmap = VarMap::new();
    VaNet::new(
        Arch::AlexNet,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .expect("model");
    let tensors = named_tensors(&var_shapes(&varmap)).expect("tensors");
    let part = |prefix: &str| strip_prefix(&tensors, prefix);
    let (encoder, regressor) = (dir.join("enc.t7"), dir.join("reg.t7"));
    write_state_dict(&encoder, &part("encoder.")).expect("encoder file");
    write_state_dict(&regressor, &part("regressor.")).expect("regressor file");
    (encoder, regressor)
}

#[test]
fn import_torch_then_inspect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (encoder, regressor) = write_reference_files(dir.path());
    let out = dir.path().join("model.safetensors");
    let output = xtask(&[
        "import-torch",
        "--arch",
        "alexnet",
        "--encoder",
        encoder.to_str().expect("utf-8"),
        "--regressor",
        regressor.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let output = xtask(&["inspect", out.to_str().expect("utf-8")]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("alexnet (crop 224, resize 256)"), "{report}");
    assert!(
        report.contains("encoder: 2469696 values") && report.contains("regressor: 590426 values"),
        "{report}"
    );

    // The wrong architecture is refused, naming the tensor and the file.
    let output = xtask(&[
        "import-torch",
        "--arch",
        "resnet18",
        "--encoder",
        encoder.to_str().expect("utf-8"),
        "--regressor",
        regressor.to_str().expect("utf-8"),
        "--out",
        dir.path().join("bad.safetensors").to_str().expect("utf-8"),
    ]);
    assert!(!output.status.success());
    let message = text(&output);
    assert!(message.contains("enc.t7") && message.contains("encoder."), "{message}");
}

/// Good PNG and JPEG files (one in a subfolder), and each kind of bad input.
fn write_prediction_inputs(dir: &Path) -> std::path::PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(images.join("sub")).expect("dirs");
    let face = image::RgbImage::from_fn(80, 64, |x, y| {
        image::Rgb([(3 * x) as u8, (4 * y) as u8, ((x * y) % 251) as u8])
    });
    face.save(images.join("a.png")).expect("png");
    face.save(images.join("sub/b.jpg")).expect("jpeg");
    let jpeg = std::fs::read(images.join("sub/b.jpg")).expect("read");
    std::fs::write(images.join("c-truncated.jpg"), &jpeg[..jpeg.len() / 3]).expect("write");
    std::fs::write(images.join("d-not-an-image.png"), "just text").expect("write");
    std::fs::write(images.join("e-empty.png"), b"").expect("write");
    image::RgbImage::new(9, 9).save(images.join("f-tiny.png")).expect("png");
    std::fs::write(images.join("notes.txt"), "ignored: not an image extension").expect("write");
    images
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8").to_string()
}

/// A reference model imported from PyTorch state dicts, 64-px crops.
fn imported_model(dir: &Path) -> std::path::PathBuf {
    let (encoder, regressor) = write_reference_files(dir);
    let model = dir.join("model.safetensors");
    let output = xtask(&[
        "import-torch",
        "--arch",
        "alexnet",
        "--encoder",
        &path(&encoder),
        "--regressor",
        &path(&regressor),
        "--image-size",
        "64",
        "--resize",
        "72",
        "--out",
        &path(&model),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    model
}

#[test]
fn predict_an_imported_reference_model_with_bad_files_among_good_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = imported_model(dir.path());
    let images = write_prediction_inputs(dir.path());
    let annotated = dir.path().join("annotated");

    let output = xtask(&[
        "predict",
        "--checkpoint",
        &path(&model),
        "--format",
        "jsonl",
        "--batch",
        "4",
        "--annotate",
        &path(&annotated),
        &path(&images),
    ]);
    assert!(!output.status.success(), "bad files must fail the run");
    assert!(text(&output).contains("4 of 6 image(s)"), "{}", text(&output));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    let names: Vec<String> = rows
        .iter()
        .map(|r| {
            Path::new(r["path"].as_str().expect("path"))
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "a.png",
            "c-truncated.jpg",
            "d-not-an-image.png",
            "e-empty.png",
            "f-tiny.png",
            "b.jpg"
        ]
    );
    for row in &rows[1..5] {
        let error = row["error"].as_str().expect("error row");
        assert!(error.contains(row["path"].as_str().expect("path")), "{error}");
    }
    assert!(rows[4]["error"].as_str().expect("tiny").contains("9×9 px"));

    // The command prints what the library predicts, exactly.
    let predictor = caf_infer::Predictor::from_checkpoint(&model, &Device::Cpu).expect("predictor");
    for row in [&rows[0], &rows[5]] {
        let file = caf_infer::ImageFile {
            path: row["path"].as_str().expect("path").into(),
            face: None,
        };
        let va = predictor.predict_files(&[file], 1).remove(0).expect("prediction");
        assert_eq!(row["valence"].as_f64().expect("valence") as f32, va.valence);
        assert_eq!(row["arousal"].as_f64().expect("arousal") as f32, va.arousal);
        assert_eq!(row["emotion"].as_str(), Some(va.emotion()));
        assert_eq!(row["quadrant"].as_str(), Some(va.quadrant().name()));
    }
    let pictures = std::fs::read_dir(&annotated).expect("annotations").count();
    assert_eq!(pictures, 2);

    // CSV, good files only: success, a header and one row each.
    let output = xtask(&[
        "predict",
        "--checkpoint",
        &path(&model),
        &path(&images.join("a.png")),
        &path(&images.join("sub")),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let csv = String::from_utf8_lossy(&output.stdout).to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "path,face,x,y,width,height,score,source,valence,arousal,intensity,quadrant,emotion,error"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    // The test pictures hold no face: each is predicted whole, and says so.
    for line in &lines[1..] {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 14, "{csv}");
        assert_eq!(
            (fields[1], fields[2], fields[7], fields[13]),
            ("0", "0.00", "whole-no-face-found", ""),
            "{csv}"
        );
    }

    // A folder without an image is an error naming it, not an empty success.
    let empty = dir.path().join("no-images");
    std::fs::create_dir_all(&empty).expect("dir");
    std::fs::write(empty.join("notes.txt"), "not an image").expect("write");
    let output = xtask(&["predict", "--checkpoint", &path(&model), &path(&empty)]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("no-images") && text(&output).contains("holds no image"),
        "{}",
        text(&output)
    );
}

#[test]
fn predict_answers_an_image_bomb_with_an_error_row_and_predicts_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = imported_model(dir.path());
    let images = dir.path().join("photos");
    std::fs::create_dir_all(&images).expect("dir");
    std::fs::write(images.join("a-bomb.png"), caf_testkit::bombs::png()).expect("bomb");
    std::fs::copy(faces_fixture("astronaut.png"), images.join("b-astronaut.png")).expect("photo");
    let output = xtask(&[
        "predict",
        "--checkpoint",
        &path(&model),
        "--format",
        "jsonl",
        &path(&images),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("1 of 2 image(s)"), "{}", text(&output));
    let rows = jsonl_rows(&output);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let error = rows[0]["error"].as_str().expect("the bomb's error row");
    assert!(
        error.contains("a-bomb.png") && error.contains("900000000 pixels, over the limit of 100000000 pixels"),
        "{error}"
    );
    assert_eq!(rows[1]["source"].as_str(), Some("detected"), "{:?}", rows[1]);

    // A lower limit refuses the genuine photo too, naming the option.
    let output = xtask(&[
        "predict",
        "--checkpoint",
        &path(&model),
        "--format",
        "jsonl",
        "--max-pixels",
        "1000",
        &path(&images),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let rows = jsonl_rows(&output);
    let error = rows[1]["error"].as_str().expect("over the lowered limit");
    assert!(
        error.contains("over the limit of 1000 pixels") && error.contains("--max-pixels"),
        "{error}"
    );
}

fn faces_fixture(name: &str) -> String {
    path(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/faces")
            .join(name),
    )
}

fn jsonl_rows(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect()
}

#[test]
fn predict_gives_one_row_per_face_and_marks_photos_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = imported_model(dir.path());
    let annotated = dir.path().join("annotated");
    let (group, coffee) = (faces_fixture("group.png"), faces_fixture("coffee.png"));
    let run = |faces: &str, extra: &[&str]| {
        let mut args = vec![
            "predict",
            "--checkpoint",
            model.to_str().expect("utf-8"),
            "--format",
            "jsonl",
            "--faces",
            faces,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&group, &coffee]);
        let output = xtask(&args);
        assert!(output.status.success(), "{}", text(&output));
        jsonl_rows(&output)
    };

    // auto: the group's three faces, largest first, then the coffee photo whole.
    let rows = run("auto", &["--annotate", &path(&annotated)]);
    assert_eq!(rows.len(), 4, "{rows:?}");
    let widths: Vec<f64> = rows[..3]
        .iter()
        .map(|r| r["box"]["width"].as_f64().expect("width"))
        .collect();
    assert!(widths.windows(2).all(|w| w[0] > w[1]), "{widths:?}");
    for (i, row) in rows[..3].iter().enumerate() {
        assert_eq!(
            (row["face"].as_u64(), row["source"].as_str()),
            (Some(i as u64), Some("detected"))
        );
        assert!(
            row["score"].as_f64().expect("score") > 0.99 && row["landmarks"].as_array().expect("landmarks").len() == 5
        );
    }
    assert_eq!(rows[3]["source"].as_str(), Some("whole-no-face-found"));
    assert_eq!(rows[3]["box"]["width"].as_f64(), Some(600.0));
    assert_eq!(std::fs::read_dir(&annotated).expect("annotations").count(), 2);

    // Each face's reading is the library's on the box grown by the default margin.
    let predictor = caf_infer::Predictor::from_checkpoint(&model, &Device::Cpu).expect("predictor");
    let photo = caf_infer::read_photo(Path::new(&group), &caf_infer::DecodeLimits::DEFAULT).expect("group");
    for row in &rows[..3] {
        let b = &row["box"];
        let face = caf_data::FaceBox {
            x: b["x"].as_f64().expect("x") as f32,
            y: b["y"].as_f64().expect("y") as f32,
            width: b["width"].as_f64().expect("w") as f32,
            height: b["height"].as_f64().expect("h") as f32,
        };
        let va = predictor
            .predict_images(&[(&photo, Some(face.grown(caf_infer::DEFAULT_FACE_MARGIN.get())))])
            .expect("crop")[0];
        assert_eq!(row["valence"].as_f64().expect("valence") as f32, va.valence);
        assert_eq!(row["arousal"].as_f64().expect("arousal") as f32, va.arousal);
    }

    // detect: the same faces, and a row saying the coffee photo has none.
    let rows = run("detect", &[]);
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3]["source"].as_str(), Some("no-face-found"));
    assert!(rows[3].get("valence").is_none());

    // whole: one row per photo, as before detection existed.
    let rows = run("whole", &[]);
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r["source"].as_str() == Some("whole") && r["score"].is_null()));

    // A detector file that is not one is refused, naming it.
    let bogus = dir.path().join("detector.safetensors");
    std::fs::write(&bogus, "not weights").expect("write");
    let output = xtask(&[
        "predict",
        "--checkpoint",
        &path(&model),
        "--detector",
        &path(&bogus),
        &group,
    ]);
    assert!(
        !output.status.success() && text(&output).contains("detector.safetensors"),
        "{}",
        text(&output)
    );
}

#[test]
fn predict_refuses_a_checkpoint_of_another_architecture_or_with_missing_tensors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let varmap = VarMap::new();
    VaNet::new(
        Arch::AlexNet,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .expect("model");
    let mut tensors = caf_backbone::varmap_tensors(&varmap);
    let image = dir.path().join("face.png");
    image::RgbImage::new(64, 64).save(&image).expect("png");
    let as_resnet = dir.path().join("as-resnet.safetensors");
    let spec = |arch| caf_backbone::ModelSpec {
        arch,
        image_size: 64,
        resize: 72,
    };
    caf_backbone::write_tensors(&as_resnet, &spec(Arch::ResNet18), &tensors, &Default::default()).expect("write");
    tensors.retain(|(name, _)| name != "regressor.lin1.weight");
    let incomplete = dir.path().join("incomplete.safetensors");
    caf_backbone::write_tensors(&incomplete, &spec(Arch::AlexNet), &tensors, &Default::default()).expect("write");
    for (checkpoint, tensor) in [
        (&as_resnet, "`resnet18` architecture"),
        (&incomplete, "regressor.lin1.weight"),
    ] {
        let output = xtask(&[
            "predict",
            "--checkpoint",
            checkpoint.to_str().expect("utf-8"),
            image.to_str().expect("utf-8"),
        ]);
        assert!(!output.status.success());
        let message = text(&output);
        let file = checkpoint.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(message.contains(file) && message.contains(tensor), "{message}");
    }
}

#[test]
fn an_exported_model_on_the_hub_predicts_as_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = imported_model(dir.path());
    let export = dir.path().join("export");
    // An imported model has no run to evaluate for its card: say so, or ask for --no-eval.
    let refused = xtask(&["export", "--checkpoint", &path(&model), "--out", &path(&export)]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("--no-eval"), "{}", text(&refused));
    let exported = xtask(&[
        "export",
        "--checkpoint",
        &path(&model),
        "--out",
        &path(&export),
        "--no-eval",
        "--license",
        "mit",
    ]);
    assert!(exported.status.success(), "{}", text(&exported));
    for file in ["model.safetensors", "config.json", "README.md"] {
        assert!(export.join(file).is_file(), "{file} not written");
    }

    // The exported weights, placed in a Hub cache, read as hf://… with the network forbidden.
    let home = dir.path().join("hf-home");
    let weights = std::fs::read(export.join("model.safetensors")).expect("weights");
    caf_e2e::hub::write_cache(&home.join("hub"), "someone/caf-va", "model.safetensors", &weights).expect("cache");
    let predict = |checkpoint: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "predict",
                "--checkpoint",
                checkpoint,
                "--format",
                "jsonl",
                &faces_fixture("group.png"),
            ])
            .env("HF_HOME", &home)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("HF_HUB_CACHE")
            .env_remove("HUGGINGFACE_HUB_CACHE")
            .output()
            .expect("run xtask")
    };
    let original = predict(&path(&model));
    assert!(original.status.success(), "{}", text(&original));
    let rows = jsonl_rows(&original);
    assert!(rows.len() >= 2, "{}", text(&original));
    for checkpoint in ["hf://someone/caf-va/model.safetensors", &path(&export)] {
        let output = predict(checkpoint);
        assert!(output.status.success(), "{checkpoint}: {}", text(&output));
        assert_eq!(output.stdout, original.stdout, "{checkpoint}");
    }
    let missing = predict("hf://someone/caf-va/other.safetensors");
    assert!(!missing.status.success());
    assert!(text(&missing).contains("HF_HUB_OFFLINE"), "{}", text(&missing));
}
