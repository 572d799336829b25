//! # caf-serve
//!
//! caf-rs as a service: an HTTP API and a web page over one model and one
//! face detector, loaded once and shared by every request (axum on tokio).
//! Predictions run on a fixed set of inference threads fed by a bounded
//! queue, so the async threads never run the model; a full queue is
//! answered at once with 503 and `Retry-After`.
//!
//! * `POST /v1/predict` — an image (the raw body, or the `image` file of a
//!   multipart form), `?faces=auto|detect|whole&face_margin=0.2` as
//!   `cargo xtask predict`'s options → `{"width", "height", "faces": […]}`,
//!   each face in `predict`'s JSON fields;
//! * `GET /v1/stream` — a WebSocket for live video: each binary message is a
//!   frame, each answer a reading of it, every face with its track on the
//!   connection and its track's smoothed reading (caf-video);
//! * `GET /v1/model`, `GET /healthz`, and the page at `/`.
//!
//! Untrusted requests: bodies past [`ServeOptions::max_body_bytes`] are
//! refused with 413, and so is a picture whose header declares more pixels
//! than [`ServeOptions::decode_limits`] allow (before its pixels are
//! decoded); a body that is not an image is a 400; errors are
//! `{"error": "…"}`. Images are held in memory for their request and never
//! stored.

mod error;
mod pool;
mod routes;
mod service;
mod stream;
mod thread;

pub use error::ApiError;
pub use routes::{router, serve};
pub use service::{FaceSettings, ModelInfo, PhotoPredictions, ServeOptions, Service};
pub use thread::ServerThread;
