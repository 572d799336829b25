//! The MP4 reader and writer together: videos written here, read back,
//! and broken on purpose.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use crate::{Mp4Video, Mp4Writer, Rotation, VideoError};

/// Frame `k` of a test video: grey, with a white square moving right.
fn frame(k: u32, width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let square = x >= 4 + 3 * k && x < 20 + 3 * k && (8..24).contains(&y);
        if square {
            Rgb([250, 250, 250])
        } else {
            Rgb([40, 90, 140])
        }
    })
}

fn write_video(path: &Path, frames: u32, fps: f64, rotation: Rotation) {
    let mut writer = Mp4Writer::create(path, 96, 64, fps, rotation).expect("a writer");
    for k in 0..frames {
        writer.write_frame(&frame(k, 96, 64)).expect("a frame");
    }
    assert_eq!(writer.frames(), u64::from(frames));
    writer.finish().expect("finished");
}

fn read_all(path: &Path) -> (Vec<crate::DecodedFrame>, Vec<VideoError>) {
    let mut frames = Vec::new();
    let mut errors = Vec::new();
    for item in Mp4Video::open(path).expect("opens") {
        match item {
            Ok(frame) => frames.push(frame),
            Err(error) => errors.push(error),
        }
    }
    (frames, errors)
}

fn mean_difference(a: &RgbImage, b: &RgbImage) -> f64 {
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    total as f64 / a.as_raw().len() as f64
}

fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(name);
    (dir, path)
}

#[test]
fn a_written_video_reads_back_frame_by_frame_at_its_times() {
    let (_dir, path) = scratch("moving.mp4");
    write_video(&path, 12, 25.0, Rotation::None);
    let video = Mp4Video::open(&path).expect("opens");
    assert_eq!(video.len(), 12);
    assert!((video.duration_s() - 11.0 / 25.0).abs() < 1e-9);
    assert!((video.mean_fps().expect("a rate") - 25.0).abs() < 1e-6);
    let (frames, errors) = read_all(&path);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(frames.len(), 12);
    for (k, decoded) in frames.iter().enumerate() {
        assert_eq!(decoded.index, k);
        assert!(
            (decoded.time_s - k as f64 / 25.0).abs() < 1e-9,
            "frame {k} at {}",
            decoded.time_s
        );
        assert_eq!(decoded.image.dimensions(), (96, 64));
        // Lossy, but each frame is its own: nearer its source than the next frame's.
        let own = mean_difference(&decoded.image, &frame(k as u32, 96, 64));
        let next = mean_difference(&decoded.image, &frame(k as u32 + 2, 96, 64));
        assert!(
            own < 6.0 && own < next,
            "frame {k}: {own} from its source, {next} from another"
        );
    }
}

#[test]
fn a_rotated_video_is_turned_upright() {
    let (_dir, path) = scratch("portrait.mp4");
    write_video(&path, 2, 30.0, Rotation::Clockwise90);
    let video = Mp4Video::open(&path).expect("opens");
    assert_eq!(video.rotation(), Rotation::Clockwise90);
    let (frames, _) = read_all(&path);
    let upright = image::imageops::rotate90(&frame(0, 96, 64));
    assert_eq!(frames[0].image.dimensions(), (64, 96));
    assert!(mean_difference(&frames[0].image, &upright) < 6.0);
}

/// `[ftyp][mdat][moov]` as written, rearranged to `[ftyp][moov][mdat]` (as
/// a streaming-ready file is), the frame offset moved to match.
fn index_first(bytes: &[u8]) -> Vec<u8> {
    let ftyp_end = u32::from_be_bytes(bytes[0..4].try_into().expect("4")) as usize;
    let mdat_size = u64::from_be_bytes(bytes[ftyp_end + 8..ftyp_end + 16].try_into().expect("8")) as usize;
    let moov_start = ftyp_end + mdat_size;
    let mut moov = bytes[moov_start..].to_vec();
    let co64 = moov.windows(4).position(|w| w == b"co64").expect("a co64 box");
    let at = co64 + 4 + 8;
    let offset = u64::from_be_bytes(moov[at..at + 8].try_into().expect("8")) + moov.len() as u64;
    moov[at..at + 8].copy_from_slice(&offset.to_be_bytes());
    [&bytes[..ftyp_end], &moov[..], &bytes[ftyp_end..moov_start]].concat()
}

#[test]
fn a_file_cut_short_keeps_the_frames_before_the_cut_and_then_says_so() {
    let (dir, path) = scratch("whole.mp4");
    write_video(&path, 10, 25.0, Rotation::None);
    let bytes = index_first(&std::fs::read(&path).expect("read"));
    let whole = dir.path().join("index-first.mp4");
    std::fs::write(&whole, &bytes).expect("write");
    let (frames, errors) = read_all(&whole);
    assert_eq!((frames.len(), errors.len()), (10, 0), "{errors:?}");

    let cut = dir.path().join("cut.mp4");
    // The last frame loses its last byte.
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).expect("write");
    let (frames, errors) = read_all(&cut);
    assert_eq!(frames.len(), 9);
    assert_eq!(errors.len(), 1);
    assert!(matches!(errors[0], VideoError::Truncated { .. }), "{}", errors[0]);
    assert!(errors[0].to_string().contains("cut short"), "{}", errors[0]);

    // Written index-last and cut: no index at all.
    let cut_index = dir.path().join("no-index.mp4");
    let original = std::fs::read(&path).expect("read");
    std::fs::write(&cut_index, &original[..original.len() / 2]).expect("write");
    let message = Mp4Video::open(&cut_index).err().expect("refused").to_string();
    assert!(message.contains("cut short") && message.contains("ffmpeg"), "{message}");
}

#[test]
fn what_is_not_h264_in_mp4_is_refused_by_name() {
    let (dir, path) = scratch("video.mp4");
    write_video(&path, 2, 25.0, Rotation::None);
    let refused = |name: &str, bytes: &[u8]| {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).expect("write");
        Mp4Video::open(&file).err().expect("refused")
    };
    assert!(matches!(refused("empty.mp4", b""), VideoError::Empty { .. }));
    let text = refused("notes.mp4", b"these are not the frames you are looking for");
    assert!(matches!(text, VideoError::NotMp4 { .. }), "{text}");

    let mut hevc = std::fs::read(&path).expect("read");
    // The sample entry, not the brand in `ftyp`.
    let entry = hevc.windows(4).rposition(|w| w == b"avc1").expect("an avc1 entry");
    hevc[entry..entry + 4].copy_from_slice(b"hvc1");
    let config = hevc.windows(4).rposition(|w| w == b"avcC").expect("an avcC record");
    hevc[config..config + 4].copy_from_slice(b"hvcC");
    let codec = refused("hevc.mp4", &hevc);
    assert!(matches!(codec, VideoError::Codec { .. }), "{codec}");
    assert!(codec.to_string().contains("`hvc1`"), "{codec}");
    assert!(codec.to_string().contains("libx264"), "{codec}");
}

#[test]
fn every_prefix_and_a_scribbled_frame_are_errors_not_panics() {
    let (dir, path) = scratch("video.mp4");
    write_video(&path, 4, 25.0, Rotation::None);
    let bytes = index_first(&std::fs::read(&path).expect("read"));
    let file = dir.path().join("broken.mp4");
    let step = (bytes.len() / 97).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        std::fs::write(&file, &bytes[..cut]).expect("write");
        if let Ok(video) = Mp4Video::open(&file) {
            let _ = video.count();
        }
    }
    // Bytes of the frames overwritten: each bad frame is an error item, not a panic.
    let mut scribbled = bytes.clone();
    let frames_start = bytes.windows(4).rposition(|w| w == b"mdat").expect("mdat") + 12;
    let len = scribbled.len();
    for (i, byte) in scribbled[frames_start + (len - frames_start) / 3..]
        .iter_mut()
        .enumerate()
    {
        *byte = (i * 37 % 251) as u8;
    }
    std::fs::write(&file, &scribbled).expect("write");
    let _ = Mp4Video::open(&file).expect("the index is whole").count();
}

#[test]
fn a_stream_with_b_frames_comes_out_in_showing_order() {
    // x264, High profile, two B-frames between references: the file's
    // order of frames is not the order they are shown in.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bframes.mp4");
    let (frames, errors) = read_all(&path);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(frames.len(), 12);
    // Frame k: a white 16×16 square at x = 4 + 6k on grey (make_bframes_fixture.py).
    let source = |k: usize| {
        RgbImage::from_fn(96, 64, |x, y| {
            let inside = (8..24).contains(&y) && x as usize >= 4 + 6 * k && (x as usize) < 20 + 6 * k;
            if inside {
                Rgb([250, 250, 250])
            } else {
                Rgb([40, 90, 140])
            }
        })
    };
    for (k, decoded) in frames.iter().enumerate() {
        assert!(
            (decoded.time_s - k as f64 / 25.0).abs() < 1e-6,
            "frame {k} at {}",
            decoded.time_s
        );
        let own = mean_difference(&decoded.image, &source(k));
        for other in [k.wrapping_sub(1), k + 1].into_iter().filter(|o| *o < 12) {
            let theirs = mean_difference(&decoded.image, &source(other));
            assert!(own < theirs, "frame {k} looks like frame {other}: {own} vs {theirs}");
        }
    }
}
