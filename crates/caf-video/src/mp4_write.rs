//! Writing H.264 video in MP4: frames encoded by OpenH264 as they come,
//! their bytes streamed to the file, the index (`moov`) written at the end.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use image::RgbImage;
use openh264::encoder::{Encoder, EncoderConfig, FrameRate, QpRange, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::OpenH264API;

use crate::avc::{sample_from_annex_b, AvcConfig};
use crate::mp4_read::Rotation;

/// Ticks per second of the written timeline: 90 kHz, the video clock of
/// MPEG, divides the common frame rates (25, 30, 29.97 → 3003 ticks).
const TIMESCALE: u32 = 90_000;

/// Why a video could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoWriteError {
    #[error("cannot write the video {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot encode frame {frame} of {}: {message}", path.display())]
    Encode { path: PathBuf, frame: u64, message: String },
    #[error(
        "frame {frame} of {} is {got_width}×{got_height}, the video's frames are {width}×{height}",
        path.display()
    )]
    FrameSize {
        path: PathBuf,
        frame: u64,
        width: u32,
        height: u32,
        got_width: u32,
        got_height: u32,
    },
    #[error(
        "a video's frames must be 16 to 4096 pixels wide and high with even sides, and its frame rate \
         0.1 to 1000 a second; got {width}×{height} at {fps}"
    )]
    Shape { width: u32, height: u32, fps: f64 },
}

/// An H.264 MP4 being written, one frame at a time; [`Mp4Writer::finish`]
/// writes its index. A writer dropped unfinished leaves a file no player
/// reads (the frames without their index).
pub struct Mp4Writer {
    path: PathBuf,
    out: BufWriter<File>,
    encoder: Encoder,
    width: u32,
    height: u32,
    frame_ticks: u32,
    rotation: Rotation,
    /// Where the `mdat` box starts, to write its size at the end.
    mdat_start: u64,
    written: u64,
    sizes: Vec<u32>,
    key_frames: Vec<u32>,
    config: Option<Vec<u8>>,
    yuv: YUVBuffer,
}

impl Mp4Writer {
    /// Starts `path` for frames of `width`×`height` (even, 16 to 4096) at
    /// `fps` frames a second, to be shown turned by `rotation`.
    pub fn create(path: &Path, width: u32, height: u32, fps: f64, rotation: Rotation) -> Result<Self, VideoWriteError> {
        let even = |side: u32| (16..=4096).contains(&side) && side.is_multiple_of(2);
        if !(even(width) && even(height) && fps.is_finite() && (0.1..=1000.0).contains(&fps)) {
            return Err(VideoWriteError::Shape { width, height, fps });
        }
        let io = |source| VideoWriteError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Every frame is kept (no rate control, which would skip frames to
        // hold a bit rate), at a fixed quality where faces stay sharp.
        let config = EncoderConfig::new()
            .rate_control_mode(RateControlMode::Off)
            .qp(QpRange::new(20, 26))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .skip_frames(false);
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| VideoWriteError::Encode {
                path: path.to_path_buf(),
                frame: 0,
                message: e.to_string(),
            })?;
        let mut out = BufWriter::new(File::create(path).map_err(io)?);
        write_box(&mut out, b"ftyp", |b| {
            b.extend_from_slice(b"isom");
            b.extend_from_slice(&0x200u32.to_be_bytes());
            for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
                b.extend_from_slice(brand);
            }
        })
        .map_err(io)?;
        let mdat_start = out.stream_position().map_err(io)?;
        // A 64-bit size, written at the end.
        out.write_all(&1u32.to_be_bytes()).map_err(io)?;
        out.write_all(b"mdat").map_err(io)?;
        out.write_all(&0u64.to_be_bytes()).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            encoder,
            width,
            height,
            frame_ticks: (f64::from(TIMESCALE) / fps).round().max(1.0) as u32,
            rotation,
            mdat_start,
            written: 0,
            sizes: Vec::new(),
            key_frames: Vec::new(),
            config: None,
            yuv: YUVBuffer::new(width as usize, height as usize),
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.sizes.len() as u64
    }

    /// Encodes and writes the next frame.
    pub fn write_frame(&mut self, frame: &RgbImage) -> Result<(), VideoWriteError> {
        let index = self.frames();
        if frame.dimensions() != (self.width, self.height) {
            return Err(VideoWriteError::FrameSize {
                path: self.path.clone(),
                frame: index,
                width: self.width,
                height: self.height,
                got_width: frame.width(),
                got_height: frame.height(),
            });
        }
        self.yuv.read_rgb8(RgbSliceU8::new(
            frame.as_raw(),
            (self.width as usize, self.height as usize),
        ));
        let encoded = self.encoder.encode(&self.yuv).map_err(|e| VideoWriteError::Encode {
            path: self.path.clone(),
            frame: index,
            message: e.to_string(),
        })?;
        let sample = sample_from_annex_b(&encoded.to_vec());
        if let (None, Some(sps), Some(pps)) = (&self.config, &sample.sps, &sample.pps) {
            self.config = Some(AvcConfig::record(sps, pps));
        }
        if sample.key_frame {
            self.key_frames.push(index as u32 + 1);
        }
        self.out
            .write_all(&sample.bytes)
            .map_err(|source| VideoWriteError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.written += sample.bytes.len() as u64;
        self.sizes.push(sample.bytes.len() as u32);
        Ok(())
    }

    /// Writes the index and closes the file.
    pub fn finish(mut self) -> Result<(), VideoWriteError> {
        let io = |source| VideoWriteError::Io {
            path: self.path.clone(),
            source,
        };
        let Some(config) = self.config.take() else {
            return Err(VideoWriteError::Encode {
                path: self.path.clone(),
                frame: 0,
                message: "no frame was written".into(),
            });
        };
        let moov = self.moov(&config);
        self.out.write_all(&moov).map_err(io)?;
        self.out.seek(SeekFrom::Start(self.mdat_start + 8)).map_err(io)?;
        self.out.write_all(&(16 + self.written).to_be_bytes()).map_err(io)?;
        let file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)
    }

    /// The index: one track, every sample in one chunk after the `mdat` header.
    fn moov(&self, config: &[u8]) -> Vec<u8> {
        let frames = self.sizes.len() as u32;
        let duration = u64::from(frames) * u64::from(self.frame_ticks);
        let (width, height) = (self.width, self.height);
        let matrix = self.rotation.matrix();
        let mut moov = Vec::new();
        let _ = write_box(&mut moov, b"moov", |moov| {
            full_box(moov, b"mvhd", 0, 0, |b| {
                b.extend_from_slice(&[0; 8]); // creation, modification
                b.extend_from_slice(&TIMESCALE.to_be_bytes());
                b.extend_from_slice(&(duration as u32).to_be_bytes());
                b.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
                b.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
                b.extend_from_slice(&[0; 10]);
                put_matrix(b, Rotation::None.matrix());
                b.extend_from_slice(&[0; 24]);
                b.extend_from_slice(&2u32.to_be_bytes()); // next track id
            });
            nest(moov, b"trak", |trak| {
                full_box(trak, b"tkhd", 0, 3, |b| {
                    b.extend_from_slice(&[0; 8]);
                    b.extend_from_slice(&1u32.to_be_bytes()); // track id
                    b.extend_from_slice(&[0; 4]);
                    b.extend_from_slice(&(duration as u32).to_be_bytes());
                    b.extend_from_slice(&[0; 8]);
                    b.extend_from_slice(&[0; 8]); // layer, group, volume, reserved
                    put_matrix(b, matrix);
                    b.extend_from_slice(&(width << 16).to_be_bytes());
                    b.extend_from_slice(&(height << 16).to_be_bytes());
                });
                nest(trak, b"mdia", |mdia| {
                    full_box(mdia, b"mdhd", 0, 0, |b| {
                        b.extend_from_slice(&[0; 8]);
                        b.extend_from_slice(&TIMESCALE.to_be_bytes());
                        b.extend_from_slice(&(duration as u32).to_be_bytes());
                        b.extend_from_slice(&0x55c4u16.to_be_bytes()); // "und"
                        b.extend_from_slice(&[0; 2]);
                    });
                    full_box(mdia, b"hdlr", 0, 0, |b| {
                        b.extend_from_slice(&[0; 4]);
                        b.extend_from_slice(b"vide");
                        b.extend_from_slice(&[0; 12]);
                        b.extend_from_slice(b"caf-rs\0");
                    });
                    nest(mdia, b"minf", |minf| {
                        full_box(minf, b"vmhd", 0, 1, |b| b.extend_from_slice(&[0; 8]));
                        nest(minf, b"dinf", |dinf| {
                            full_box(dinf, b"dref", 0, 0, |b| {
                                b.extend_from_slice(&1u32.to_be_bytes());
                                full_box(b, b"url ", 0, 1, |_| {});
                            });
                        });
                        nest(minf, b"stbl", |stbl| {
                            full_box(stbl, b"stsd", 0, 0, |b| {
                                b.extend_from_slice(&1u32.to_be_bytes());
                                nest(b, b"avc1", |e| {
                                    e.extend_from_slice(&[0; 6]);
                                    e.extend_from_slice(&1u16.to_be_bytes()); // data reference
                                    e.extend_from_slice(&[0; 16]);
                                    e.extend_from_slice(&(width as u16).to_be_bytes());
                                    e.extend_from_slice(&(height as u16).to_be_bytes());
                                    e.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi
                                    e.extend_from_slice(&0x0048_0000u32.to_be_bytes());
                                    e.extend_from_slice(&[0; 4]);
                                    e.extend_from_slice(&1u16.to_be_bytes()); // frames per sample
                                    e.extend_from_slice(&[0; 32]); // compressor name
                                    e.extend_from_slice(&0x0018u16.to_be_bytes()); // depth
                                    e.extend_from_slice(&(-1i16).to_be_bytes());
                                    nest(e, b"avcC", |c| c.extend_from_slice(config));
                                });
                            });
                            full_box(stbl, b"stts", 0, 0, |b| {
                                b.extend_from_slice(&1u32.to_be_bytes());
                                b.extend_from_slice(&frames.to_be_bytes());
                                b.extend_from_slice(&self.frame_ticks.to_be_bytes());
                            });
                            full_box(stbl, b"stss", 0, 0, |b| {
                                b.extend_from_slice(&(self.key_frames.len() as u32).to_be_bytes());
                                for key in &self.key_frames {
                                    b.extend_from_slice(&key.to_be_bytes());
                                }
                            });
                            full_box(stbl, b"stsc", 0, 0, |b| {
                                for word in [1u32, 1, frames, 1] {
                                    b.extend_from_slice(&word.to_be_bytes());
                                }
                            });
                            full_box(stbl, b"stsz", 0, 0, |b| {
                                b.extend_from_slice(&0u32.to_be_bytes());
                                b.extend_from_slice(&frames.to_be_bytes());
                                for size in &self.sizes {
                                    b.extend_from_slice(&size.to_be_bytes());
                                }
                            });
                            full_box(stbl, b"co64", 0, 0, |b| {
                                b.extend_from_slice(&1u32.to_be_bytes());
                                b.extend_from_slice(&(self.mdat_start + 16).to_be_bytes());
                            });
                        });
                    });
                });
            });
        });
        moov
    }
}

/// Writes a box of `kind` whose body `fill` builds.
fn write_box(out: &mut impl Write, kind: &[u8; 4], fill: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
    let mut body = Vec::new();
    fill(&mut body);
    out.write_all(&((body.len() + 8) as u32).to_be_bytes())?;
    out.write_all(kind)?;
    out.write_all(&body)
}

/// A box inside a box being built.
fn nest(out: &mut Vec<u8>, kind: &[u8; 4], fill: impl FnOnce(&mut Vec<u8>)) {
    // Writing to a Vec cannot fail.
    let _ = write_box(out, kind, fill);
}

/// A box with a version and flags.
fn full_box(out: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32, fill: impl FnOnce(&mut Vec<u8>)) {
    nest(out, kind, |b| {
        b.extend_from_slice(&((u32::from(version) << 24) | flags).to_be_bytes());
        fill(b);
    });
}

fn put_matrix(out: &mut Vec<u8>, matrix: [i32; 9]) {
    for value in matrix {
        out.extend_from_slice(&value.to_be_bytes());
    }
}
