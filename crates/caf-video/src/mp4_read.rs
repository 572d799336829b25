//! Reading H.264 video from MP4 and MOV files: the index (`moov`) parsed by
//! Mozilla's mp4parse, each frame's bytes read from the file when its turn
//! comes and decoded by OpenH264, so memory holds one frame whatever the
//! video's length.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use image::RgbImage;
use mp4parse::unstable::{create_sample_table, CheckedInteger};
use mp4parse::{CodecType, SampleEntry, TrackType, VideoCodecSpecific};
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::OpenH264API;

use crate::avc::AvcConfig;

/// The largest index (`moov` box) read: a 10-hour 60-fps video's is a few MB.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// The most frames a video may hold (over 18 hours at 30 frames a second).
pub const MAX_VIDEO_FRAMES: usize = 2_000_000;
/// The largest encoded frame read.
pub const MAX_FRAME_BYTES: u64 = 32 << 20;

/// What to do when a video cannot be read: turn it into what caf-rs reads.
const CONVERT: &str = "caf-rs reads H.264 video in MP4 or MOV; convert it with \
    `ffmpeg -i IN -c:v libx264 -an OUT.mp4`, or cut it into numbered frames with \
    `ffmpeg -i IN frames/%06d.png` and predict the folder with --fps";

/// Why a video, or one of its frames, cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    #[error("cannot read the video {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is empty (0 bytes)", path.display())]
    Empty { path: PathBuf },
    #[error("{} is not an MP4 or MOV file, or is cut short: {what}. {CONVERT}", path.display())]
    NotMp4 { path: PathBuf, what: String },
    #[error("{} holds no video track. {CONVERT}", path.display())]
    NoVideo { path: PathBuf },
    #[error("{}'s video is {codec}, which caf-rs does not decode. {CONVERT}", path.display())]
    Codec { path: PathBuf, codec: String },
    #[error("{} has more than {limit} frames; cut it into parts", path.display())]
    TooLong { path: PathBuf, limit: usize },
    #[error(
        "{}: frame {sample} (in file order) lies past the end of the file ({end} bytes): the file is cut short; \
         the frames before it were read",
        path.display()
    )]
    Truncated { path: PathBuf, sample: usize, end: u64 },
    #[error("{}: frame {sample} (in file order) cannot be decoded: {message}", path.display())]
    Decode {
        path: PathBuf,
        sample: usize,
        message: String,
    },
}

/// How a video is turned for showing, from its track's matrix: a phone
/// held upright records sideways and says so here, as a photo does in its
/// EXIF orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    #[default]
    None,
    Clockwise90,
    Half,
    Clockwise270,
}

impl Rotation {
    /// The track matrix for this rotation (16.16 fixed point, the last
    /// column 2.30), as MP4 writes it.
    pub(crate) fn matrix(self) -> [i32; 9] {
        let one = 0x0001_0000;
        let (a, b, c, d) = match self {
            Self::None => (one, 0, 0, one),
            Self::Clockwise90 => (0, one, -one, 0),
            Self::Half => (-one, 0, 0, -one),
            Self::Clockwise270 => (0, -one, one, 0),
        };
        [a, b, 0, c, d, 0, 0, 0, 0x4000_0000]
    }

    /// The rotation a matrix holds; a matrix that also scales, shears or
    /// mirrors is read as its nearest rotation.
    fn of(a: i32, b: i32) -> Self {
        match (a.signum(), b.signum()) {
            (0, 1) => Self::Clockwise90,
            (-1, _) => Self::Half,
            (0, -1) => Self::Clockwise270,
            _ => Self::None,
        }
    }

    fn apply(self, frame: RgbImage) -> RgbImage {
        match self {
            Self::None => frame,
            Self::Clockwise90 => image::imageops::rotate90(&frame),
            Self::Half => image::imageops::rotate180(&frame),
            Self::Clockwise270 => image::imageops::rotate270(&frame),
        }
    }
}

/// One decoded frame: its place in showing order (from 0), its time in
/// seconds from the first frame, and its pixels, turned upright.
#[derive(Debug, Clone)]
pub struct DecodedFrame {
    pub index: usize,
    pub time_s: f64,
    pub image: RgbImage,
}

/// Where one encoded frame lies in the file.
struct SampleSpan {
    offset: u64,
    size: u64,
    key_frame: bool,
}

/// An MP4 or MOV file's H.264 video, decoded a frame at a time in showing
/// order. The frames' times come from the file's index, so a variable
/// frame rate is kept. A frame that cannot be read is an error item; a
/// frame past the end of a cut-short file ends the video after its error.
pub struct Mp4Video {
    path: PathBuf,
    file: BufReader<File>,
    file_bytes: u64,
    config: AvcConfig,
    rotation: Rotation,
    samples: Vec<SampleSpan>,
    /// Every frame's time, in showing order.
    times_s: Vec<f64>,
    decoder: Decoder,
    next_sample: usize,
    shown: usize,
    ready: VecDeque<RgbImage>,
    encoded: Vec<u8>,
    annex_b: Vec<u8>,
    finished: bool,
}

impl Mp4Video {
    /// Reads `path`'s index; frames are read and decoded as they are asked for.
    pub fn open(path: &Path) -> Result<Self, VideoError> {
        let io = |source| VideoError::Io {
            path: path.to_path_buf(),
            source,
        };
        let not_mp4 = |what: String| VideoError::NotMp4 {
            path: path.to_path_buf(),
            what,
        };
        let mut file = BufReader::new(File::open(path).map_err(io)?);
        let file_bytes = file.get_ref().metadata().map_err(io)?.len();
        if file_bytes == 0 {
            return Err(VideoError::Empty {
                path: path.to_path_buf(),
            });
        }
        let index = read_index(&mut file, file_bytes).map_err(io)?.map_err(not_mp4)?;
        let context = mp4parse::read_mp4(&mut Cursor::new(&index[..]))
            .map_err(|e| not_mp4(format!("its index cannot be read ({e:?})")))?;
        let track = context
            .tracks
            .iter()
            .find(|t| t.track_type == TrackType::Video)
            .ok_or_else(|| VideoError::NoVideo {
                path: path.to_path_buf(),
            })?;
        let entry = track
            .stsd
            .as_ref()
            .and_then(|stsd| stsd.descriptions.first())
            .ok_or_else(|| not_mp4("its video track has no sample description".into()))?;
        let codec = |codec: String| VideoError::Codec {
            path: path.to_path_buf(),
            codec,
        };
        let config = match entry {
            SampleEntry::Video(video) => match (&video.codec_type, &video.codec_specific) {
                (CodecType::H264, VideoCodecSpecific::AVCConfig(record)) => {
                    AvcConfig::parse(record).map_err(not_mp4)?
                }
                (CodecType::H264, _) => return Err(not_mp4("its H.264 track has no avcC record".into())),
                (other, _) => return Err(codec(format!("{other:?}"))),
            },
            _ => {
                let names = video_entry_names(&index);
                let named = match names.as_slice() {
                    [] => "in a format not named in its index".to_string(),
                    names => format!("`{}`", names.join("`, `")),
                };
                return Err(codec(named));
            }
        };
        if listed_frames(track) > MAX_VIDEO_FRAMES as u64 {
            return Err(VideoError::TooLong {
                path: path.to_path_buf(),
                limit: MAX_VIDEO_FRAMES,
            });
        }
        let table = create_sample_table(track, CheckedInteger(0))
            .ok_or_else(|| not_mp4("its video track's frame table is incomplete or inconsistent".into()))?;
        let timescale = track
            .timescale
            .map(|t| t.0)
            .filter(|t| *t > 0)
            .ok_or_else(|| not_mp4("its video track has no time scale".into()))?;
        let mut samples = Vec::with_capacity(table.len());
        let mut ticks = Vec::with_capacity(table.len());
        for indice in table.iter() {
            let (start, end) = (indice.start_offset.0, indice.end_offset.0);
            samples.push(SampleSpan {
                offset: start,
                size: end.saturating_sub(start),
                key_frame: indice.sync,
            });
            ticks.push(indice.start_composition.0);
        }
        ticks.sort_unstable();
        let first = ticks.first().copied().unwrap_or(0);
        let times_s = ticks
            .iter()
            .map(|t| t.saturating_sub(first) as f64 / timescale as f64)
            .collect();
        let rotation = track
            .tkhd
            .as_ref()
            .map_or(Rotation::None, |tkhd| Rotation::of(tkhd.matrix.a, tkhd.matrix.b));
        // Not flushed after each frame: OpenH264 holds the pictures of a
        // stream with B-frames until they are due, and hands them out in
        // showing order; the rest come out at the end (`flush`).
        let decoder_config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder =
            Decoder::with_api_config(OpenH264API::from_source(), decoder_config).map_err(|e| VideoError::Decode {
                path: path.to_path_buf(),
                sample: 0,
                message: format!("the decoder cannot start: {e}"),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            file_bytes,
            config,
            rotation,
            samples,
            times_s,
            decoder,
            next_sample: 0,
            shown: 0,
            ready: VecDeque::new(),
            encoded: Vec::new(),
            annex_b: Vec::new(),
            finished: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames the index lists.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The video's length, first frame to last.
    pub fn duration_s(&self) -> f64 {
        self.times_s.last().copied().unwrap_or(0.0)
    }

    /// Frames a second over the whole video (the first to the last frame).
    pub fn mean_fps(&self) -> Option<f64> {
        (self.len() > 1 && self.duration_s() > 0.0).then(|| (self.len() - 1) as f64 / self.duration_s())
    }

    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// Frames handed out so far.
    pub fn shown(&self) -> usize {
        self.shown
    }

    /// Feeds the next encoded frame to the decoder; a decoded picture goes
    /// to `ready`.
    fn decode_next(&mut self) -> Result<(), VideoError> {
        let sample = self.next_sample;
        self.next_sample += 1;
        let span = &self.samples[sample];
        let past_end = span
            .offset
            .checked_add(span.size)
            .is_none_or(|end| end > self.file_bytes);
        if past_end {
            self.finished = true;
            return Err(VideoError::Truncated {
                path: self.path.clone(),
                sample,
                end: self.file_bytes,
            });
        }
        let decode_error = |message: String| VideoError::Decode {
            path: self.path.clone(),
            sample,
            message,
        };
        if span.size > MAX_FRAME_BYTES {
            return Err(decode_error(format!(
                "it is {} bytes, more than the {MAX_FRAME_BYTES} a frame may hold",
                span.size
            )));
        }
        self.encoded.resize(span.size as usize, 0);
        let read = self
            .file
            .seek(SeekFrom::Start(span.offset))
            .and_then(|_| self.file.read_exact(&mut self.encoded));
        read.map_err(|source| VideoError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.annex_b.clear();
        if sample == 0 || span.key_frame {
            self.config.write_parameter_sets(&mut self.annex_b);
        }
        self.config
            .write_sample(&self.encoded, &mut self.annex_b)
            .map_err(decode_error)?;
        let decoded = self
            .decoder
            .decode(&self.annex_b)
            .map_err(|e| decode_error(e.to_string()))?;
        if let Some(picture) = decoded {
            self.ready.push_back(to_rgb(&picture));
        }
        Ok(())
    }

    /// What the decoder still holds once every frame was fed.
    fn flush(&mut self) -> Result<(), VideoError> {
        self.finished = true;
        let remaining = self.decoder.flush_remaining().map_err(|e| VideoError::Decode {
            path: self.path.clone(),
            sample: self.samples.len().saturating_sub(1),
            message: e.to_string(),
        })?;
        let pictures: Vec<RgbImage> = remaining.iter().map(to_rgb).collect();
        self.ready.extend(pictures);
        Ok(())
    }
}

impl Iterator for Mp4Video {
    type Item = Result<DecodedFrame, VideoError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(picture) = self.ready.pop_front() {
                let index = self.shown;
                self.shown += 1;
                // More pictures than the index lists: the last time goes on.
                let time_s = self.times_s.get(index).or(self.times_s.last()).copied().unwrap_or(0.0);
                return Some(Ok(DecodedFrame {
                    index,
                    time_s,
                    image: self.rotation.apply(picture),
                }));
            }
            if self.finished {
                return None;
            }
            let step = if self.next_sample < self.samples.len() {
                self.decode_next()
            } else {
                self.flush()
            };
            if let Err(error) = step {
                return Some(Err(error));
            }
        }
    }
}

/// The four-letter names of the sample entries in an index that are not
/// sound (`hvc1` for HEVC, `vp09`, `apcn` for ProRes, …), to name a codec
/// the parser does not know.
fn video_entry_names(index: &[u8]) -> Vec<String> {
    const SOUND: [&[u8; 4]; 9] = [
        b"mp4a", b"Opus", b"ac-3", b"ec-3", b"fLaC", b"alac", b"lpcm", b"sowt", b"twos",
    ];
    let mut names: Vec<String> = index
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"stsd")
        .filter_map(|(at, _)| index.get(at + 16..at + 20))
        .filter(|name| name.iter().all(|b| b.is_ascii_graphic() || *b == b' '))
        .filter(|name| !SOUND.iter().any(|sound| &sound[..] == *name))
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    names.dedup();
    names
}

/// Frames a track's index lists: the larger of its size table's length and
/// the count its chunk table gives (which a constant frame size leaves as
/// the only count), so the frame table is never built past the limit.
fn listed_frames(track: &mp4parse::Track) -> u64 {
    let sizes = track.stsz.as_ref().map_or(0, |stsz| stsz.sample_sizes.len() as u64);
    let (Some(stsc), Some(stco)) = (&track.stsc, &track.stco) else {
        return sizes;
    };
    let chunks = stco.offsets.len() as u64;
    let entries = stsc.samples.as_slice();
    let mut chunked = 0u64;
    for (i, entry) in entries.iter().enumerate() {
        let first = u64::from(entry.first_chunk.max(1));
        let next = entries
            .get(i + 1)
            .map_or(chunks + 1, |next| u64::from(next.first_chunk))
            .min(chunks + 1);
        let frames = next
            .saturating_sub(first)
            .saturating_mul(u64::from(entry.samples_per_chunk));
        chunked = chunked.saturating_add(frames);
    }
    sizes.max(chunked)
}

fn to_rgb(picture: &openh264::decoder::DecodedYUV<'_>) -> RgbImage {
    use openh264::formats::YUVSource;
    let (width, height) = picture.dimensions();
    let mut rgb = vec![0u8; width * height * 3];
    picture.write_rgb8(&mut rgb);
    RgbImage::from_raw(width as u32, height as u32, rgb).expect("width × height × 3 bytes")
}

/// The `moov` box of a file, found among the top-level boxes without
/// reading the others (the frames' `mdat` can be most of the file). The
/// outer error is the file's; the inner says why it is not an MP4.
fn read_index(file: &mut (impl Read + Seek), file_bytes: u64) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut at = 0u64;
    while at < file_bytes {
        file.seek(SeekFrom::Start(at))?;
        let mut head = [0u8; 8];
        if file_bytes - at < 8 || file.read_exact(&mut head).is_err() {
            return Ok(Err(format!("a box header at byte {at} is cut short")));
        }
        let kind = [head[4], head[5], head[6], head[7]];
        let mut size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let mut header = 8;
        if size == 1 {
            let mut large = [0u8; 8];
            if file.read_exact(&mut large).is_err() {
                return Ok(Err(format!("a box header at byte {at} is cut short")));
            }
            size = u64::from_be_bytes(large);
            header = 16;
        } else if size == 0 {
            size = file_bytes - at;
        }
        if at == 0
            && !matches!(
                &kind,
                b"ftyp" | b"moov" | b"mdat" | b"free" | b"skip" | b"wide" | b"pnot"
            )
        {
            return Ok(Err(format!(
                "it does not start with an MP4 box (its first bytes read {:?})",
                String::from_utf8_lossy(&head)
            )));
        }
        if size < header {
            return Ok(Err(format!(
                "the box at byte {at} declares {size} bytes, less than its header"
            )));
        }
        if &kind == b"moov" {
            if size > MAX_INDEX_BYTES {
                return Ok(Err(format!(
                    "its index is {size} bytes, more than the {MAX_INDEX_BYTES} read"
                )));
            }
            if at + size > file_bytes {
                return Ok(Err(format!(
                    "its index (at byte {at}, {size} bytes) runs past the end of the file ({file_bytes} bytes)"
                )));
            }
            let mut index = vec![0u8; size as usize];
            file.seek(SeekFrom::Start(at))?;
            file.read_exact(&mut index)?;
            return Ok(Ok(index));
        }
        at = at.saturating_add(size);
    }
    Ok(Err(
        "it has no index (`moov` box): a recording stopped before it was finished has none".into(),
    ))
}
