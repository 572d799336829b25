//! The rows written for a video: one per face per frame (with its track and
//! smoothed reading), one for a frame without a face, one for a frame that
//! failed; as CSV or JSON lines, in the formats of `predict`'s photo rows.

use std::io::Write;
use std::path::Path;

use caf_infer::{csv_field, RowFormat, NO_FACE};
use serde_json::json;

use crate::timeline::TrackedFace;

/// The columns of a video's CSV row.
pub const VIDEO_CSV_HEADER: &str = "video,frame,time_s,track,face,x,y,width,height,score,source,valence,arousal,\
smoothed_valence,smoothed_arousal,intensity,quadrant,emotion,error";

/// What one row says about a frame.
#[derive(Debug, Clone, Copy)]
pub enum FrameRow<'a> {
    Face(&'a TrackedFace),
    /// The face search found no face in the frame.
    NoFace,
    /// The frame could not be read or predicted; the message says why.
    Failed(&'a str),
}

/// Where a row's frame is.
#[derive(Debug, Clone, Copy)]
pub struct FramePlace<'a> {
    pub video: &'a Path,
    pub frame: usize,
    /// Seconds from the first frame; not a number for a frame that failed
    /// before its time was known.
    pub time_s: f64,
}

/// Appends what a video's rows start with: the CSV header line, or nothing.
pub fn write_video_header(format: RowFormat, out: &mut Vec<u8>) {
    if format == RowFormat::Csv {
        out.extend_from_slice(VIDEO_CSV_HEADER.as_bytes());
        out.push(b'\n');
    }
}

/// Appends one row, with its line break.
pub fn write_video_row(format: RowFormat, out: &mut Vec<u8>, place: FramePlace, row: FrameRow) {
    let video = place.video.display().to_string();
    let time = if place.time_s.is_finite() {
        format!("{:.6}", place.time_s)
    } else {
        String::new()
    };
    let json_time = place.time_s.is_finite().then_some(place.time_s);
    // Writing into a Vec cannot fail.
    let _ = match (format, row) {
        (RowFormat::Csv, FrameRow::Face(tracked)) => {
            let (face, smoothed) = (&tracked.face, tracked.smoothed);
            let (b, va) = (face.face, face.va);
            writeln!(
                out,
                "{},{},{time},{},{},{:.2},{:.2},{:.2},{:.2},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{},{},",
                csv_field(&video),
                place.frame,
                tracked.track,
                face.index,
                b.x,
                b.y,
                b.width,
                b.height,
                face.score.map(|s| format!("{s:.6}")).unwrap_or_default(),
                face.origin.name(),
                va.valence,
                va.arousal,
                smoothed.valence,
                smoothed.arousal,
                va.intensity(),
                va.quadrant().name(),
                va.emotion()
            )
        }
        (RowFormat::Csv, FrameRow::NoFace) => {
            writeln!(
                out,
                "{},{},{time},,,,,,,,{NO_FACE},,,,,,,,",
                csv_field(&video),
                place.frame
            )
        }
        (RowFormat::Csv, FrameRow::Failed(message)) => writeln!(
            out,
            "{},{},{time},,,,,,,,,,,,,,,,{}",
            csv_field(&video),
            place.frame,
            csv_field(message)
        ),
        (RowFormat::Jsonl, FrameRow::Face(tracked)) => {
            let row = JsonFrameRow {
                video: &video,
                frame: place.frame,
                time_s: json_time,
                face: tracked,
            };
            let line = serde_json::to_string(&row).expect("a face is plain numbers and words");
            writeln!(out, "{line}")
        }
        (RowFormat::Jsonl, FrameRow::NoFace) => writeln!(
            out,
            "{}",
            json!({ "video": video, "frame": place.frame, "time_s": json_time, "source": NO_FACE })
        ),
        (RowFormat::Jsonl, FrameRow::Failed(message)) => writeln!(
            out,
            "{}",
            json!({ "video": video, "frame": place.frame, "time_s": json_time, "error": message })
        ),
    };
}

#[derive(serde::Serialize)]
struct JsonFrameRow<'a> {
    video: &'a str,
    frame: usize,
    time_s: Option<f64>,
    #[serde(flatten)]
    face: &'a TrackedFace,
}

#[cfg(test)]
mod tests {
    use caf_data::FaceBox;
    use caf_infer::{FaceOrigin, FacePrediction, Va};

    use super::*;

    fn tracked() -> TrackedFace {
        TrackedFace {
            face: FacePrediction {
                index: 0,
                face: FaceBox {
                    x: 1.0,
                    y: 2.0,
                    width: 30.0,
                    height: 40.0,
                },
                score: Some(0.5),
                landmarks: None,
                origin: FaceOrigin::Detected,
                va: Va {
                    valence: 0.5,
                    arousal: -0.25,
                },
            },
            track: 3,
            smoothed: Va {
                valence: 0.25,
                arousal: -0.125,
            },
        }
    }

    #[test]
    fn every_csv_row_has_the_header_s_columns() {
        let columns = VIDEO_CSV_HEADER.split(',').count();
        let mut place = FramePlace {
            video: Path::new("ab.mp4"),
            frame: 7,
            time_s: 0.28,
        };
        let face = tracked();
        for row in [FrameRow::Face(&face), FrameRow::NoFace, FrameRow::Failed("a bad frame")] {
            let mut out = Vec::new();
            write_video_row(RowFormat::Csv, &mut out, place, row);
            let line = String::from_utf8(out).expect("utf-8");
            assert_eq!(line.trim_end_matches('\n').split(',').count(), columns, "{line}");
        }
        place.video = Path::new("a,b.mp4");
        let mut out = Vec::new();
        write_video_row(RowFormat::Csv, &mut out, place, FrameRow::Face(&face));
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "\"a,b.mp4\",7,0.280000,3,0,1.00,2.00,30.00,40.00,0.500000,detected,0.500000,-0.250000,\
             0.250000,-0.125000,0.559017,positive-low,content,\n"
        );
    }

    #[test]
    fn json_rows_carry_the_track_and_the_smoothed_reading() {
        let mut out = Vec::new();
        let place = FramePlace {
            video: Path::new("v.mp4"),
            frame: 2,
            time_s: 0.08,
        };
        write_video_row(RowFormat::Jsonl, &mut out, place, FrameRow::Face(&tracked()));
        let row: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(row["video"], "v.mp4");
        assert_eq!(row["frame"], 2);
        assert_eq!(row["track"], 3);
        assert_eq!(row["smoothed"]["valence"], 0.25);
        assert_eq!(row["valence"], 0.5);
    }
}
