//! `cargo xtask serve`: the model as an HTTP service (caf-serve).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use caf_backbone::{Checkpoint, HubOptions, Precision, WeightSource};
use caf_infer::{DecodeLimits, Predictor};
use caf_serve::{ModelInfo, ServeOptions, Service};
use caf_train::Provenance;

use crate::predict::DetectorArgs;

#[derive(clap::Args)]
pub struct Serve {
    /// Checkpoint: a .safetensors file, a folder written by export, or hf://owner/name/file (@revision optional)
    #[arg(long)]
    checkpoint: WeightSource,
    /// Address to listen on; the default answers this machine only. Another address (0.0.0.0 for
    /// every network) lets anyone who can reach it send images
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// `cpu`, `cuda` or `cuda:N`
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision of the convolutions' products: f32, or bf16 (faster on CPUs with AVX512-BF16;
    /// readings differ from f32's by about 1 % of their range, docs/precision.md)
    #[arg(long, default_value = "f32")]
    precision: Precision,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Requests predicted at once (default: one per core)
    #[arg(long)]
    workers: Option<usize>,
    /// Requests that may wait for a place; more are answered 503 with Retry-After (default: 2 per place)
    #[arg(long)]
    queue: Option<usize>,
    /// Largest request body (an upload or one stream frame), in bytes
    #[arg(long, default_value_t = ServeOptions::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Refuse (413) a picture that declares more pixels (width × height)
    #[arg(long, default_value_t = ServeOptions::default().decode_limits.max_pixels)]
    max_pixels: u64,
    /// Longest a request may wait and run, in seconds, before it is answered 503
    #[arg(long, default_value_t = ServeOptions::default().request_timeout.as_secs_f64())]
    timeout: f64,
}

pub fn serve(args: Serve) -> Result<()> {
    anyhow::ensure!(
        args.timeout.is_finite() && args.timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    let device = caf_infer::parse_device(&args.device)?;
    let file = args.checkpoint.checkpoint_file(&HubOptions::from_env())?;
    let checkpoint = Checkpoint::read(&file, &device)?;
    let training =
        Provenance::of(&checkpoint)?.map(|provenance| serde_json::to_value(provenance).expect("plain fields"));
    let info = ModelInfo {
        architecture: checkpoint.spec.arch.name().to_string(),
        input_size: checkpoint.spec.image_size,
        resize: checkpoint.spec.resize,
        source: args.checkpoint.to_string(),
        training,
    };
    let predictor = Predictor::new(&checkpoint, &device)?.with_precision(args.precision)?;
    drop(checkpoint);
    let detector = args.detector.load(&device)?;
    let defaults = ServeOptions::default();
    let workers = args.workers.unwrap_or(defaults.workers);
    anyhow::ensure!(workers > 0, "--workers must be at least 1");
    let options = ServeOptions {
        max_body_bytes: args.max_body_bytes,
        decode_limits: DecodeLimits {
            max_pixels: args.max_pixels,
            max_file_bytes: args.max_body_bytes as u64,
            ..defaults.decode_limits
        },
        workers,
        queue: args.queue.unwrap_or(2 * workers),
        request_timeout: Duration::from_secs_f64(args.timeout),
        ..defaults
    };
    let service = Service::new(predictor, detector, info, options);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {} (is another server using it? try --addr 127.0.0.1:8081)", args.addr))?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "listening beyond this machine: anyone who can reach this address can send images");
        }
        tracing::info!(checkpoint = %args.checkpoint, "serving on http://{addr}/ (Ctrl-C stops it, after the requests in flight)");
        caf_serve::serve(listener, service, async {
            if tokio::signal::ctrl_c().await.is_err() {
                // No signal handler: serve until killed.
                std::future::pending::<()>().await;
            }
            tracing::info!("stopping: finishing the requests in flight");
        })
        .await
        .context("the server stopped with an error")
    })
}
