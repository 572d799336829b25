//! `--precision bf16` on real photos, and every CPU path forced on this
//! machine with `CAF_CPU_CAP`: bf16 readings stay within a stated distance of
//! f32's, each instruction set gives what the others give, and a bad cap is
//! an error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use caf_backbone::Arch;
use caf_kernels::{InstructionSet, CPU_CAP_VARIABLE};
use serde_json::Value;

/// The largest distance between a bf16 reading and the f32 one, on the
/// [-1, 1] scale of valence and arousal, that docs/precision.md states; two
/// bf16 paths (which differ in the order of their f32 sums, and so in which
/// activations round up to the next bf16) are held to it too.
const BF16_TOLERANCE: f64 = 0.02;
/// The largest distance between two instruction sets' f32 readings: the
/// portable, AVX2 and AVX-512 kernels do the same arithmetic in the same order.
const F32_PATH_TOLERANCE: f64 = 1e-6;

fn faces() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/faces")
}

fn xtask(args: &[&str], cap: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.args(args).env_remove(CPU_CAP_VARIABLE);
    if let Some(cap) = cap {
        command.env(CPU_CAP_VARIABLE, cap);
    }
    command.output().expect("run xtask")
}

/// Valence and arousal of every face `predict` finds in the fixture photos.
fn readings(checkpoint: &Path, precision: &str, cap: Option<&str>) -> Vec<[f64; 2]> {
    let photos = faces();
    let out = checkpoint.with_file_name(format!("{precision}-{}.jsonl", cap.unwrap_or("detected")));
    let output = xtask(
        &[
            "predict",
            "--checkpoint",
            checkpoint.to_str().expect("path"),
            "--precision",
            precision,
            "--format",
            "jsonl",
            "--out",
            out.to_str().expect("path"),
            photos.join("astronaut.png").to_str().expect("path"),
            photos.join("coffee.png").to_str().expect("path"),
            photos.join("group.png").to_str().expect("path"),
        ],
        cap,
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::read_to_string(&out)
        .expect("predictions")
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("a JSON row");
            [
                row["valence"].as_f64().expect("valence"),
                row["arousal"].as_f64().expect("arousal"),
            ]
        })
        .collect()
}

fn largest_distance(a: &[[f64; 2]], b: &[[f64; 2]]) -> f64 {
    assert_eq!(a.len(), b.len(), "the same faces");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| [(x[0] - y[0]).abs(), (x[1] - y[1]).abs()])
        .fold(0.0, f64::max)
}

/// The instruction sets this CPU can run, by their cap names.
fn caps() -> Vec<&'static str> {
    InstructionSet::ALL
        .into_iter()
        .filter(|set| *set <= InstructionSet::detected())
        .map(InstructionSet::name)
        .collect()
}

#[test]
fn bf16_readings_stay_near_f32_and_every_cpu_path_agrees() {
    let dir = tempfile::tempdir().expect("tempdir");
    for arch in [Arch::AlexNet, Arch::ResNet18] {
        let checkpoint = caf_e2e::setups::seeded_checkpoint(dir.path(), arch, 5, 224, 256).expect("checkpoint");
        let f32 = readings(&checkpoint, "f32", None);
        let bf16 = readings(&checkpoint, "bf16", None);
        assert!(f32.len() >= 5, "{arch}: the fixtures' faces ({})", f32.len());
        let apart = largest_distance(&bf16, &f32);
        eprintln!("{arch}: bf16 readings within {apart:.5} of f32's");
        assert!(apart <= BF16_TOLERANCE, "{arch}: bf16 {apart} from f32");
        assert!(
            apart > 0.0,
            "{arch}: bf16 readings equal to f32's: were the products rounded?"
        );
        for cap in caps() {
            let forced_f32 = readings(&checkpoint, "f32", Some(cap));
            let forced_bf16 = readings(&checkpoint, "bf16", Some(cap));
            assert!(
                largest_distance(&forced_f32, &f32) <= F32_PATH_TOLERANCE,
                "{arch}: f32 with {cap} differs from the detected set's"
            );
            assert!(
                largest_distance(&forced_bf16, &bf16) <= BF16_TOLERANCE,
                "{arch}: bf16 with {cap} differs from the detected set's"
            );
        }
    }
}

#[test]
fn a_bad_cpu_cap_is_an_error_that_names_the_variable() {
    let output = xtask(&["inspect", "no-such-checkpoint.safetensors"], Some("avx9"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CAF_CPU_CAP=`avx9`") && stderr.contains("portable"),
        "{stderr}"
    );
}
