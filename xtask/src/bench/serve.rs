//! `cargo xtask bench --serve`: the HTTP service under load on loopback.
//! Concurrent clients post the detection benchmark's photos for a bounded
//! time: requests per second, latency percentiles, errors, resident memory
//! over the run; and the same photos through `predict`'s library path, to
//! show what the service costs on top.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use caf_face::FaceDetector;
use caf_infer::{FaceSearch, ImageFile, PhotoOptions, Predictor};
use caf_serve::{ModelInfo, ServeOptions, ServerThread, Service};
use candle_core::Device;
use serde_json::{json, Value};

use super::detection::write_photos;
use super::Bench;

/// At most this many clients: each is a thread of the benchmark.
const MAX_CLIENTS: usize = 64;
/// At most this long under load.
const MAX_SECONDS: f64 = 600.0;

/// The 640×480 benchmark photos (one face, four faces), as the clients post them.
fn photos(scratch: &Path) -> Result<Vec<(String, std::path::PathBuf, Vec<u8>)>> {
    write_photos(scratch)?
        .into_iter()
        .filter(|(name, _, _)| name.starts_with("640x480"))
        .map(|(name, path, _)| {
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok((name, path, bytes))
        })
        .collect()
}

pub(super) fn bench_serve(args: &Bench, device: &Device, threads: usize, scratch: &Path) -> Result<Value> {
    ensure!(
        (1..=MAX_CLIENTS).contains(&args.clients),
        "--clients must be 1 to {MAX_CLIENTS}"
    );
    ensure!(
        args.serve_seconds.is_finite() && args.serve_seconds >= 10.0 && args.serve_seconds <= MAX_SECONDS,
        "--serve-seconds must be 10 to {MAX_SECONDS} (memory is compared over the first and last 10 s)"
    );
    let checkpoint = scratch.join("served.safetensors");
    let spec = super::seeded_deployed_checkpoint(args, &checkpoint)?;
    let arch = spec.arch;
    let photos = photos(scratch)?;

    // predict's path on the same photos: batches of 32 files, read and
    // predicted in parallel.
    let predictor = Predictor::from_checkpoint(&checkpoint, device)?;
    let detector = FaceDetector::builtin(device)?;
    let files: Vec<ImageFile> = (0..32)
        .map(|i| ImageFile {
            path: photos[i % photos.len()].1.clone(),
            face: None,
        })
        .collect();
    let time_cli = |seconds: f64| -> Result<(usize, f64)> {
        let options = PhotoOptions::new(FaceSearch::Auto(&detector));
        let started = Instant::now();
        let mut photos = 0usize;
        while started.elapsed().as_secs_f64() < seconds {
            for result in predictor.predict_photo_files(&files, &options) {
                result?;
            }
            photos += files.len();
        }
        Ok((photos, started.elapsed().as_secs_f64()))
    };

    // The service, on loopback, with room in its queue for every client.
    let defaults = ServeOptions::default();
    let options = ServeOptions {
        queue: defaults.queue.max(args.clients),
        ..defaults
    };
    let info = ModelInfo {
        architecture: arch.name().into(),
        input_size: spec.image_size,
        resize: spec.resize,
        source: "a seeded benchmark model".into(),
        training: None,
    };
    let service = Service::new(
        Predictor::from_checkpoint(&checkpoint, device)?,
        FaceDetector::builtin(device)?,
        info,
        options.clone(),
    );
    let mut server = ServerThread::start(std::net::TcpListener::bind("127.0.0.1:0")?, service)?;
    let addr = server.addr();

    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(photos.iter().map(|(_, _, bytes)| bytes.clone()).collect());
    // One untimed request per photo: the first touches every buffer.
    for body in bodies.iter() {
        let (status, _) = post(addr, body)?;
        ensure!(status == 200, "the warm-up request was answered {status}");
    }
    // The allocator reaches its working set under load, not from one
    // request at a time: a first load, not measured, so that the memory
    // compared below is the service's steady state.
    tracing::info!(clients = args.clients, seconds = WARM_UP_S, %addr, "warming the service up");
    let warm_up = load(addr, &bodies, args.clients, WARM_UP_S);
    ensure!(
        warm_up.errors.is_empty(),
        "the warm-up load failed: {:?}",
        warm_up.errors.first()
    );
    tracing::info!(clients = args.clients, seconds = args.serve_seconds, %addr, "loading the service");
    let done = Arc::new(AtomicBool::new(false));
    let memory = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                samples.push((started.elapsed().as_secs_f64(), resident_mib().unwrap_or(f64::NAN)));
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        })
    };
    let Load {
        mut latencies,
        mut errors,
        seconds: elapsed,
    } = load(addr, &bodies, args.clients, args.serve_seconds);
    done.store(true, Ordering::Relaxed);
    let samples = memory.join().expect("the memory thread");

    // Throughput beside predict's, in alternating slices, so that a machine
    // whose speed drifts (a shared one does, by a fifth within a minute)
    // weighs on both alike.
    tracing::info!(
        rounds = COMPARISON_ROUNDS,
        slice_s = COMPARISON_SLICE_S,
        "alternating predict's library path and the service"
    );
    let (mut cli_photos, mut cli_seconds, mut served, mut served_seconds) = (0, 0.0, 0, 0.0);
    for _ in 0..COMPARISON_ROUNDS {
        let (photos, seconds) = time_cli(COMPARISON_SLICE_S)?;
        cli_photos += photos;
        cli_seconds += seconds;
        let slice = load(addr, &bodies, args.clients, COMPARISON_SLICE_S);
        served += slice.latencies.len();
        served_seconds += slice.seconds;
        errors.extend(slice.errors);
    }
    server.shut_down()?;
    let cli_rate = cli_photos as f64 / cli_seconds;
    let served_rate = served as f64 / served_seconds;

    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let at = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(at).copied().unwrap_or(f64::NAN)
    };
    let window_mean = |from: f64, to: f64| {
        let inside: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, mib)| *mib)
            .collect();
        inside.iter().sum::<f64>() / inside.len().max(1) as f64
    };
    let rate = latencies.len() as f64 / elapsed;
    let error_count = errors.len();
    errors.truncate(10);
    Ok(json!({
        "caf_rs": env!("CARGO_PKG_VERSION"),
        "device": args.device,
        "threads": threads,
        "machine": super::machine(),
        "model": { "arch": arch.name(), "image_size": spec.image_size, "resize": spec.resize },
        "photos": photos.iter().map(|(name, _, _)| name.clone()).collect::<Vec<_>>(),
        "faces": "auto (detected)",
        "server": { "workers": options.workers, "queue": options.queue },
        "clients": args.clients,
        "seconds": elapsed,
        "requests": latencies.len(),
        "errors": error_count,
        "first_errors": errors,
        "requests_per_s": rate,
        "latency_s": { "p50": percentile(0.5), "p90": percentile(0.9), "p99": percentile(0.99), "max": latencies.last() },
        "warm_up_s": WARM_UP_S,
        "resident_mib": {
            "by_tenth": (0..10)
                .map(|tenth| window_mean(elapsed * tenth as f64 / 10.0, elapsed * (tenth + 1) as f64 / 10.0))
                .collect::<Vec<f64>>(),
            "first_10_s": window_mean(0.0, 10.0),
            "last_10_s": window_mean(elapsed - 10.0, elapsed),
            "peak": samples.iter().map(|(_, mib)| *mib).fold(f64::NAN, f64::max),
        },
        "alternating": {
            "rounds": COMPARISON_ROUNDS,
            "slice_s": COMPARISON_SLICE_S,
            "cli_photos_per_s": cli_rate,
            "service_requests_per_s": served_rate,
        },
        "service_vs_cli": served_rate / cli_rate,
    }))
}

/// Seconds of load before the measured load.
const WARM_UP_S: f64 = 10.0;

/// Slices of each in the throughput comparison, and their length.
const COMPARISON_ROUNDS: usize = 10;
const COMPARISON_SLICE_S: f64 = 5.0;

/// What the clients of one load saw: each answered request's latency, each
/// failure, and how long the load took (its last requests answered).
struct Load {
    latencies: Vec<f64>,
    errors: Vec<String>,
    seconds: f64,
}

/// `clients` threads posting `bodies` in turn until `seconds` have passed.
fn load(addr: SocketAddr, bodies: &Arc<Vec<Vec<u8>>>, clients: usize, seconds: f64) -> Load {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = Vec::new();
                let mut turn = client;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match post(addr, &bodies[turn % bodies.len()]) {
                        Ok((200, _)) => latencies.push(sent.elapsed().as_secs_f64()),
                        Ok((status, body)) => errors.push(format!("{status}: {body}")),
                        Err(error) => errors.push(format!("{error:#}")),
                    }
                    turn += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut load = Load {
        latencies: Vec::new(),
        errors: Vec::new(),
        seconds: 0.0,
    };
    for thread in threads {
        let (mut latencies, mut errors) = thread.join().expect("a client thread");
        load.latencies.append(&mut latencies);
        load.errors.append(&mut errors);
    }
    load.seconds = started.elapsed().as_secs_f64();
    load
}

/// One request on its own connection: the status and the body.
fn post(addr: SocketAddr, body: &[u8]) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).context("cannot connect to the service")?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let head = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no response head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("no status")?;
    Ok((status, body.chars().take(200).collect()))
}

/// Resident memory of this process now (Linux), in MiB.
pub(super) fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub(super) fn print_serve(report: &Value) {
    let ms = |v: &Value| v.as_f64().map_or("–".into(), |s| format!("{:.0} ms", 1e3 * s));
    println!(
        "caf-rs serve under load: {} clients for {:.0} s on {} ({} threads, {} inference workers, {})",
        report["clients"],
        report["seconds"].as_f64().unwrap_or(0.0),
        report["device"].as_str().unwrap_or("?"),
        report["threads"],
        report["server"]["workers"],
        report["machine"]["cpu"].as_str().unwrap_or("?"),
    );
    println!(
        "requests {}   errors {}   {:.2} requests/s   latency p50 {}  p90 {}  p99 {}",
        report["requests"],
        report["errors"],
        report["requests_per_s"].as_f64().unwrap_or(f64::NAN),
        ms(&report["latency_s"]["p50"]),
        ms(&report["latency_s"]["p90"]),
        ms(&report["latency_s"]["p99"]),
    );
    println!(
        "resident memory after {} s of warm-up: {:.0} MiB over the first 10 s, {:.0} MiB over the last 10 s (peak {:.0} MiB); by tenth of the run: {}",
        report["warm_up_s"],
        report["resident_mib"]["first_10_s"].as_f64().unwrap_or(f64::NAN),
        report["resident_mib"]["last_10_s"].as_f64().unwrap_or(f64::NAN),
        report["resident_mib"]["peak"].as_f64().unwrap_or(f64::NAN),
        report["resident_mib"]["by_tenth"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|mib| format!("{:.0}", mib.as_f64().unwrap_or(f64::NAN)))
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!(
        "alternating {} × {} s: predict's library path {:.2} photos/s, the service {:.2} requests/s: {:.2}×",
        report["alternating"]["rounds"],
        report["alternating"]["slice_s"],
        report["alternating"]["cli_photos_per_s"].as_f64().unwrap_or(f64::NAN),
        report["alternating"]["service_requests_per_s"]
            .as_f64()
            .unwrap_or(f64::NAN),
        report["service_vs_cli"].as_f64().unwrap_or(f64::NAN),
    );
    for error in report["first_errors"].as_array().into_iter().flatten() {
        println!("error: {error}");
    }
}
