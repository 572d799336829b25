//! The HTTP API: its routes, how a request's image and settings are read,
//! and the live stream.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use caf_infer::{FaceMargin, FaceMode, DEFAULT_FACE_MARGIN};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::service::{FaceSettings, PhotoPredictions, Service};
use crate::stream::read_frames;

/// The web page, served as it is: no build step, no external script or font.
const PAGE: &str = include_str!("page.html");

/// Every route of the API, over `service`.
pub fn router(service: Arc<Service>) -> Router {
    let limit = service.options().max_body_bytes;
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(health))
        .route("/v1/model", get(model))
        .route("/v1/predict", post(predict))
        .route("/v1/stream", get(stream))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(service)
}

/// Serves `service` on `listener` until `shutdown` completes; requests in
/// flight then finish before this returns.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(service))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE)).into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The [`crate::ModelInfo`], and the precision the model runs in.
async fn model(State(service): State<Arc<Service>>) -> Json<serde_json::Value> {
    let mut info = serde_json::to_value(service.info()).unwrap_or_default();
    info["precision"] = serde_json::json!(service.precision().name());
    Json(info)
}

async fn not_found(request: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "no such route: {} {}; the API is POST /v1/predict, GET /v1/stream, GET /v1/model, GET /healthz",
            request.method(),
            request.uri().path()
        ),
        retry_after: None,
    }
}

/// `?faces=auto|detect|whole&face_margin=0.2`, as `predict`'s options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaceQuery {
    faces: Option<String>,
    face_margin: Option<f32>,
}

fn face_settings(query: Result<Query<FaceQuery>, QueryRejection>) -> Result<FaceSettings, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; the options are faces (auto, detect, whole) and face_margin (a number above -0.5)",
            rejection.body_text()
        ))
    })?;
    let mode = match query.faces.as_deref() {
        None => FaceMode::Auto(()),
        Some(name) => name.parse().map_err(ApiError::bad_request)?,
    };
    let margin = match query.face_margin {
        None => DEFAULT_FACE_MARGIN,
        Some(margin) => FaceMargin::new(margin).map_err(|e| ApiError::bad_request(e.to_string()))?,
    };
    Ok(FaceSettings { mode, margin })
}

/// `POST /v1/predict`: the image is the body, or the `image` file of a form.
async fn predict(
    State(service): State<Arc<Service>>,
    query: Result<Query<FaceQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<PhotoPredictions>, ApiError> {
    let faces = face_settings(query)?;
    let limit = service.options().max_body_bytes;
    let bytes = image_bytes(request, limit).await?;
    Ok(Json(service.predict(bytes, faces).await?))
}

/// A body the limit refused, or one that could not be read.
fn unreadable(status: StatusCode, text: String, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!("the body is larger than this server's limit of {limit} bytes"))
    } else {
        ApiError {
            status,
            message: format!("the body could not be read: {text}"),
            retry_after: None,
        }
    }
}

async fn image_bytes(request: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("multipart/form-data"));
    if !is_form {
        let bytes = Bytes::from_request(request, &())
            .await
            .map_err(|rejection| unreadable(rejection.status(), rejection.body_text(), limit))?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "the request has no body: send the image's bytes, or a form with an `image` file",
            ));
        }
        return Ok(bytes.to_vec());
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|rejection| unreadable(rejection.status(), rejection.body_text(), limit))?;
    let broken = |error: axum::extract::multipart::MultipartError| unreadable(error.status(), error.body_text(), limit);
    while let Some(field) = form.next_field().await.map_err(broken)? {
        if field.name() == Some("image") || field.file_name().is_some() {
            return Ok(field.bytes().await.map_err(broken)?.to_vec());
        }
    }
    Err(ApiError::bad_request(
        "the form holds no file: send the image in a field named `image`",
    ))
}

/// `GET /v1/stream`: a WebSocket; each binary message is a frame (JPEG or
/// PNG), answered by one text message as JSON: the frame's number, its
/// faces with their tracks and smoothed readings. The connection's tracks
/// live as long as the connection.
async fn stream(
    State(service): State<Arc<Service>>,
    query: Result<Query<FaceQuery>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let faces = face_settings(query)?;
    let limit = service.options().max_body_bytes;
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| read_frames(socket, service, faces)))
}
