//! The `cargo xtask` binary as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

use caf_backbone::{Arch, VaNet};
use caf_e2e::fill::{named_tensors, strip_prefix, var_shapes};
use caf_e2e::torch_pickle::write_state_dict;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("run xtask")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn without_arguments_it_lists_every_command_with_one_line_of_help() {
    let output = xtask(&[]);
    let help = text(&output);
    for command in ["import-torch", "inspect"] {
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
