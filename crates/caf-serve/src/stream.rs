//! The live stream: one connection's frames in, readings out, with the
//! connection's face tracks and smoothed readings.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use caf_video::{FaceTracks, TrackedFace, TrackerSettings, DEFAULT_TIME_CONSTANT_S};
use serde::Serialize;

use crate::service::{FaceSettings, Service};

/// One reading of the live stream: the frame's number on this connection
/// (from 1) and the picture's size and faces, or why it has none.
#[derive(Serialize)]
struct StreamReading {
    frame: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    /// `/v1/predict`'s faces, each with its track on this connection and
    /// its track's smoothed reading.
    #[serde(skip_serializing_if = "Option::is_none")]
    faces: Option<Vec<TrackedFace>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// Reads frames from `socket` until it closes, answering each in order.
pub(crate) async fn read_frames(mut socket: WebSocket, service: Arc<Service>, faces: FaceSettings) {
    let mut frame = 0u64;
    // Frames are timed by their arrival: the connection's own clock.
    let started = Instant::now();
    let mut tracks =
        FaceTracks::new(TrackerSettings::default(), DEFAULT_TIME_CONSTANT_S).expect("the default constant is valid");
    while let Some(Ok(message)) = socket.recv().await {
        let mut reading = StreamReading {
            frame,
            width: None,
            height: None,
            faces: None,
            error: None,
            retry_after: None,
        };
        match message {
            Message::Binary(bytes) => {
                frame += 1;
                reading.frame = frame;
                match service.predict(bytes.to_vec(), faces).await {
                    Ok(predictions) => {
                        reading.width = Some(predictions.width);
                        reading.height = Some(predictions.height);
                        let time_s = started.elapsed().as_secs_f64();
                        reading.faces = Some(tracks.follow(time_s, predictions.faces));
                    }
                    Err(error) => {
                        reading.error = Some(error.message);
                        reading.retry_after = error.retry_after;
                    }
                }
            }
            Message::Text(_) => {
                reading.error = Some("send each frame as a binary message holding a JPEG or PNG".into());
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        }
        let text = serde_json::to_string(&reading).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        if socket.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
}
