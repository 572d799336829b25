//! Writers meeting a full disk or a kill part-way: the file-size limit of
//! the process (`ulimit -f`) makes every write past it fail as a full disk
//! does (`SIGXFSZ` ignored: EFBIG), or kills the process in the middle of a
//! write (`SIGXFSZ` left to its default). The previous checkpoint must
//! still load and resume, every row already written must stay whole, and
//! the error must name the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use caf_backbone::Checkpoint;
use candle_core::Device;
use serde_json::Value;

mod common;

use common::{text, tiny_settings, xtask};

/// How a write past the limit ends.
#[derive(Clone, Copy)]
enum PastTheLimit {
    /// The write fails (EFBIG), as on a full disk.
    Fails,
    /// The process is killed (SIGXFSZ) in the middle of the write.
    Kills,
}

/// `xtask args…` with files limited to `blocks` × 512 bytes (dash's unit).
fn xtask_limited(blocks: u64, past: PastTheLimit, args: &[String]) -> Output {
    let trap = match past {
        PastTheLimit::Fails => "trap '' XFSZ; ",
        PastTheLimit::Kills => "",
    };
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{trap}ulimit -f {blocks}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("run xtask under a file-size limit")
}

fn resume(last: &Path, epochs: u64) -> Vec<String> {
    vec![
        "train".into(),
        "--resume".into(),
        last.display().to_string(),
        "--set".into(),
        format!("epochs={epochs}"),
    ]
}

/// Every line of `path` is a whole JSON row.
fn whole_rows(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("metrics");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a torn last row in {}",
        path.display()
    );
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("a broken row `{line}`: {e}")))
        .collect()
}

fn leftovers(folder: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(folder)
        .expect("run folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".tmp-"))
        })
        .collect()
}

fn step_of(checkpoint: &Path) -> u64 {
    Checkpoint::read(checkpoint, &Device::Cpu)
        .expect("the checkpoint loads")
        .metadata["caf.train.step"]
        .parse()
        .expect("step")
}

#[test]
fn a_full_disk_or_a_kill_while_writing_leaves_the_last_checkpoint_resumable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    let last = run.join("last.safetensors");
    let metrics = run.join("metrics.jsonl");

    let mut first = vec!["train".to_string()];
    first.extend(tiny_settings(dir.path()));
    first.extend(["--set".into(), "epochs=1".into()]);
    let output = xtask(&first);
    assert!(output.status.success(), "{}", text(&output));
    let saved = std::fs::read(&last).expect("last checkpoint");
    let saved_step = step_of(&last);

    // 1. The disk fills while the next checkpoint is written (2048 blocks =
    //    1 MiB: the metrics fit, the checkpoint does not).
    let output = xtask_limited(2048, PastTheLimit::Fails, &resume(&last, 2));
    assert!(!output.status.success(), "training went on past a failed checkpoint");
    let message = text(&output);
    assert!(
        message.contains(".safetensors") && message.contains("File too large"),
        "the error names neither the file nor what happened:\n{message}"
    );
    assert_eq!(
        std::fs::read(&last).expect("last"),
        saved,
        "the last checkpoint changed"
    );
    assert!(
        leftovers(&run).is_empty(),
        "temporary files left: {:?}",
        leftovers(&run)
    );
    whole_rows(&metrics);

    // 2. The disk fills while a metrics row is written: the rows before it
    //    stay whole and the error names the metrics file. The resumed run
    //    first cuts the log back to the checkpoint's step, then has less than
    //    512 bytes of room: a row or two.
    let kept: u64 = std::fs::read_to_string(&metrics)
        .expect("metrics")
        .lines()
        .filter(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|row| row["step"].as_u64())
                .is_some_and(|step| step <= saved_step)
        })
        .map(|line| line.len() as u64 + 1)
        .sum();
    let output = xtask_limited(kept / 512 + 1, PastTheLimit::Fails, &resume(&last, 2));
    assert!(!output.status.success());
    let message = text(&output);
    assert!(
        message.contains("cannot write a metrics row to") && message.contains("File too large"),
        "{message}"
    );
    whole_rows(&metrics);
    assert_eq!(std::fs::read(&last).expect("last"), saved);

    // 3. The process is killed in the middle of writing the checkpoint.
    let output = xtask_limited(2048, PastTheLimit::Kills, &resume(&last, 2));
    assert!(!output.status.success(), "not killed:\n{}", text(&output));
    assert_eq!(
        std::fs::read(&last).expect("last"),
        saved,
        "a kill tore the last checkpoint"
    );
    assert_eq!(step_of(&last), saved_step);

    // Then, with room again, the run resumes from the checkpoint and logs
    // each iteration once.
    let output = xtask(&resume(&last, 2));
    assert!(output.status.success(), "{}", text(&output));
    assert!(step_of(&last) > saved_step);
    let steps: Vec<u64> = whole_rows(&metrics)
        .iter()
        .filter(|r| r["kind"] == "train")
        .filter_map(|r| r["step"].as_u64())
        .collect();
    assert_eq!(steps, (1..=*steps.last().expect("rows")).collect::<Vec<_>>());
}

#[test]
fn predictions_on_a_full_disk_keep_whole_rows_and_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).expect("dir");
    for i in 0..12u32 {
        let photo = image::RgbImage::from_fn(40, 40, |x, y| image::Rgb([(x * i) as u8, (y * 3) as u8, i as u8 * 20]));
        photo.save(photos.join(format!("{i:02}.png"))).expect("png");
    }
    let model = dir.path().join("model.safetensors");
    let spec = caf_backbone::ModelSpec {
        image_size: 64,
        resize: 64,
        ..caf_backbone::ModelSpec::new(caf_backbone::Arch::AlexNet)
    };
    let varmap = candle_nn::VarMap::new();
    caf_backbone::VaNet::new(
        spec.arch,
        candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu),
    )
    .expect("model");
    caf_backbone::save_checkpoint(&model, &spec, &varmap, &Default::default()).expect("checkpoint");
    let out = dir.path().join("predictions.csv");
    let args: Vec<String> = [
        "predict",
        "--checkpoint",
        model.to_str().expect("utf-8"),
        "--faces",
        "whole",
        "--batch",
        "2",
        "--out",
        out.to_str().expect("utf-8"),
        photos.to_str().expect("utf-8"),
    ]
    .map(String::from)
    .to_vec();
    // 2 blocks: the header and a few rows fit, the twelfth does not.
    let output = xtask_limited(2, PastTheLimit::Fails, &args);
    assert!(!output.status.success());
    let message = text(&output);
    assert!(
        message.contains("predictions.csv") && message.contains("File too large"),
        "{message}"
    );
    let csv = std::fs::read_to_string(&out).expect("predictions");
    assert!(csv.ends_with('\n'), "a torn row:\n{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines.len() >= 3, "nothing kept:\n{csv}");
    for line in &lines {
        assert_eq!(line.split(',').count(), 14, "not a whole row: {line}");
    }
}
