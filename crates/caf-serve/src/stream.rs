//! The live stream: one connection's frames in, readings out, with the
//! connection's face tracks and smoothed readings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use caf_infer::FacePrediction;
use caf_video::{Smoother, TrackId, Tracker, TrackerSettings, DEFAULT_TIME_CONSTANT_S};
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
    #[serde(skip_serializing_if = "Option::is_none")]
    faces: Option<Vec<StreamFace>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// A face of a stream frame: `/v1/predict`'s fields, its track on this
/// connection, and its track's smoothed reading.
#[derive(Serialize)]
struct StreamFace {
    #[serde(flatten)]
    face: FacePrediction,
    track: TrackId,
    smoothed: Smoothed,
}

#[derive(Serialize)]
struct Smoothed {
    valence: f32,
    arousal: f32,
}

/// What one connection remembers: its tracks and each track's smoother,
/// dropped with the connection.
struct Tracks {
    started: Instant,
    tracker: Tracker,
    smoothers: HashMap<TrackId, Smoother>,
}

impl Tracks {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            tracker: Tracker::new(TrackerSettings::default()),
            smoothers: HashMap::new(),
        }
    }

    /// Links `faces` (of a frame that arrived now) to tracks and smooths each
    /// track's reading in the frames' arrival time.
    fn follow(&mut self, faces: Vec<FacePrediction>) -> Vec<StreamFace> {
        let time_s = self.started.elapsed().as_secs_f64();
        let boxes: Vec<_> = faces.iter().map(|face| face.face).collect();
        let tracks = self.tracker.update(&boxes);
        let live = self.tracker.live();
        self.smoothers.retain(|track, _| live.contains(track));
        faces
            .into_iter()
            .zip(tracks)
            .map(|(face, track)| {
                let smoother = self
                    .smoothers
                    .entry(track)
                    .or_insert_with(|| Smoother::new(DEFAULT_TIME_CONSTANT_S).expect("a valid constant"));
                let [valence, arousal] = smoother.update(time_s, [face.va.valence, face.va.arousal]);
                StreamFace {
                    face,
                    track,
                    smoothed: Smoothed { valence, arousal },
                }
            })
            .collect()
    }
}

/// Reads frames from `socket` until it closes, answering each in order.
pub(crate) async fn read_frames(mut socket: WebSocket, service: Arc<Service>, faces: FaceSettings) {
    let mut frame = 0u64;
    let mut tracks = Tracks::new();
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
                        reading.faces = Some(tracks.follow(predictions.faces));
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
