//! `cargo xtask train` as a batch job runs it: output to files, killed
//! (`kill -9`) part-way and resumed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caf_backbone::Checkpoint;
use candle_core::Device;
use serde_json::Value;

mod common;

use common::tiny_settings;

fn rows(metrics: &Path) -> Vec<Value> {
    std::fs::read_to_string(metrics)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[test]
fn a_killed_run_resumes_without_duplicate_rows_and_logs_progress_off_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = tiny_settings(dir.path());
    let metrics = dir.path().join("run/metrics.jsonl");
    let stderr_path = dir.path().join("stderr.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("train")
        .args(&settings)
        .args(["--set", "epochs=1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start xtask train");

    // Kill it once it has validated an epoch (so a checkpoint exists) and
    // logged two more iterations past it.
    let started = Instant::now();
    loop {
        let log = rows(&metrics);
        let validated = log
            .iter()
            .filter(|r| r["kind"] == "validation")
            .filter_map(|r| r["step"].as_u64())
            .max();
        let beyond = validated.map(|v| log.iter().filter(|r| r["step"].as_u64() > Some(v)).count());
        if beyond.is_some_and(|n| n >= 2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint within 5 minutes:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        assert!(child.try_wait().expect("poll").is_none(), "training ended by itself");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("step 1, epoch 1/1000 batch 1/4, ") && l.contains("images/s, eta ")),
        "no progress line off a terminal:\n{stderr}"
    );

    let last = dir.path().join("run/last.safetensors");
    let saved = Checkpoint::read(&last, &Device::Cpu).expect("last checkpoint");
    let number = |key: &str| saved.metadata[key].parse::<u64>().expect("number");
    let (step, epoch) = (number("caf.train.step"), number("caf.train.epoch"));
    assert!(
        rows(&metrics).iter().any(|r| r["step"].as_u64() > Some(step)),
        "the killed run wrote past its checkpoint"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["train", "--resume", last.to_str().expect("utf-8")])
        .args(["--set", &format!("epochs={}", epoch + 1)])
        .output()
        .expect("resume");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let log = rows(&metrics);
    let train_steps: Vec<u64> = log
        .iter()
        .filter(|r| r["kind"] == "train")
        .filter_map(|r| r["step"].as_u64())
        .collect();
    let final_step = *train_steps.last().expect("train rows");
    assert_eq!(
        train_steps,
        (1..=final_step).collect::<Vec<_>>(),
        "each iteration logged once, in order"
    );
    let epochs: Vec<u64> = log
        .iter()
        .filter(|r| r["kind"] == "validation")
        .filter_map(|r| r["epoch"].as_u64())
        .collect();
    assert_eq!(epochs, (1..=epoch + 1).collect::<Vec<_>>(), "each epoch validated once");
}
