//! From an image file to upright RGB, within stated bounds: a file's bytes,
//! its declared pixels and its metadata are each checked against
//! [`DecodeLimits`] before anything the size of the picture is allocated.

use std::io::Read;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::sample::DataError;

/// Bounds on what decoding one image file may cost.
///
/// A file over a bound is refused with [`DataError::OverLimit`], which names
/// the file and the bound, before a buffer the size of the picture is
/// allocated: a photo that declares 30000×30000 pixels costs its header, not
/// 2.7 GB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width × height) a picture may declare. The default,
    /// 100 megapixels, passes a 4K frame (8.3 MP) and a 48 MP or 108 MP
    /// phone's binned photos, and bounds a decoded picture to 300 MB of RGB.
    pub max_pixels: u64,
    /// Most bytes an image file may hold (the whole file is read to decode it).
    pub max_file_bytes: u64,
    /// Most bytes of EXIF a picture may carry (a JPEG's is at most 64 KiB).
    pub max_metadata_bytes: u64,
}

impl DecodeLimits {
    /// The limits [`decode`] applies: 100 megapixels, 256 MiB files, 1 MiB of EXIF.
    pub const DEFAULT: DecodeLimits = DecodeLimits {
        max_pixels: 100_000_000,
        max_file_bytes: 256 << 20,
        max_metadata_bytes: 1 << 20,
    };

    /// Bytes the decoders may hold at once besides the file: the largest
    /// decoded pixel (RGBA, 16 bits a channel) over the pixel limit, plus
    /// the metadata limit for headers and working buffers.
    fn decoder_bytes(&self) -> u64 {
        self.max_pixels
            .saturating_mul(8)
            .saturating_add(self.max_metadata_bytes)
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits::DEFAULT
    }
}

/// Which of the [`DecodeLimits`] a file went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeLimit {
    /// [`DecodeLimits::max_pixels`].
    Pixels,
    /// [`DecodeLimits::max_file_bytes`].
    FileBytes,
    /// [`DecodeLimits::max_metadata_bytes`].
    MetadataBytes,
}

impl DecodeLimit {
    /// What the limit counts, as the error message says it.
    pub fn unit(&self) -> &'static str {
        match self {
            DecodeLimit::Pixels => "pixels",
            DecodeLimit::FileBytes => "bytes of file",
            DecodeLimit::MetadataBytes => "bytes of EXIF",
        }
    }

    /// Its field of [`DecodeLimits`]; `cargo xtask predict` takes it as an
    /// option of the same name (`--max-pixels`).
    pub fn setting(&self) -> &'static str {
        match self {
            DecodeLimit::Pixels => "max_pixels",
            DecodeLimit::FileBytes => "max_file_bytes",
            DecodeLimit::MetadataBytes => "max_metadata_bytes",
        }
    }
}

/// Decodes a JPEG, PNG, WebP, BMP or TIFF file (told by its content) to RGB
/// within [`DecodeLimits::DEFAULT`]; see [`decode_with_limits`].
pub fn decode(path: &Path) -> Result<RgbImage, DataError> {
    decode_with_limits(path, &DecodeLimits::DEFAULT)
}

/// Decodes a JPEG, PNG, WebP, BMP or TIFF file (told by its content) to RGB,
/// turned upright as its EXIF orientation says (a phone's sideways JPEG is
/// shown upright by every viewer, and is read upright here). A JPEG must be
/// complete: the decoder would fill a truncated one with grey rather than
/// fail. A file over one of `limits` is refused before its pixels are
/// allocated.
pub fn decode_with_limits(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, DataError> {
    let bytes = read_bounded(path, limits.max_file_bytes)?;
    decode_bytes(&bytes, path, limits)
}

/// Reads at most `max + 1` bytes of `path`: a file declared larger is
/// refused unread, and one that grows while it is read, or a device that
/// never ends, stops one byte past the limit.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let declared = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    if declared > max {
        return Err(DataError::OverLimit {
            path: path.to_path_buf(),
            limit: DecodeLimit::FileBytes,
            found: declared,
            allowed: max,
        });
    }
    // One byte past the limit is enough for decode_bytes to refuse a file
    // that grew after its size was read.
    let mut bytes = Vec::with_capacity(declared as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    Ok(bytes)
}

/// Decodes an image held in memory, as [`decode_with_limits`] decodes a
/// file; `source` names it in errors.
pub fn decode_bytes(bytes: &[u8], source: &Path, limits: &DecodeLimits) -> Result<RgbImage, DataError> {
    let bad = |message: String| DataError::Image {
        path: source.to_path_buf(),
        message,
    };
    let over = |limit, found, allowed| DataError::OverLimit {
        path: source.to_path_buf(),
        limit,
        found,
        allowed,
    };
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(over(DecodeLimit::FileBytes, bytes.len() as u64, limits.max_file_bytes));
    }
    if bytes.starts_with(&[0xFF, 0xD8]) && !jpeg_is_complete(bytes) {
        return Err(bad("truncated JPEG: no end-of-image marker after the last scan".into()));
    }
    if let Some(problem) = riff_chunk_past_end(bytes) {
        return Err(bad(problem));
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(source, e))?;
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.decoder_bytes());
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| bad(format!("cannot decode: {e}")))?;
    let (width, height) = decoder.dimensions();
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(over(DecodeLimit::Pixels, pixels, limits.max_pixels));
    }
    if pixels == 0 {
        return Err(bad("empty image".into()));
    }
    let orientation = orientation(&mut decoder, limits)
        .map_err(|found| over(DecodeLimit::MetadataBytes, found, limits.max_metadata_bytes))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| bad(format!("cannot decode: {e}")))?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

/// The picture's EXIF orientation; a missing or unreadable tag leaves the
/// image as stored. EXIF over the limit is refused rather than ignored, so
/// that a file's cost stays what the limits say; the error is the EXIF's size.
fn orientation(decoder: &mut impl ImageDecoder, limits: &DecodeLimits) -> Result<Orientation, u64> {
    if let Ok(Some(exif)) = decoder.exif_metadata() {
        if exif.len() as u64 > limits.max_metadata_bytes {
            return Err(exif.len() as u64);
        }
    }
    Ok(decoder.orientation().unwrap_or(Orientation::NoTransforms))
}

/// True when an end-of-image marker (`FF D9`) follows the last start-of-scan
/// (`FF DA`). Entropy-coded data never holds `FF D9` (a data `FF` is stuffed
/// as `FF 00`), and an EXIF thumbnail's markers all come before the main scans.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let marker = |code: u8| bytes.windows(2).rposition(|w| w == [0xFF, code]);
    match (marker(0xDA), marker(0xD9)) {
        (Some(scan), Some(end)) => end > scan,
        _ => false,
    }
}

/// For a WebP (a RIFF container), the first chunk whose declared size runs
/// past the file's end: the WebP decoder allocates a metadata chunk's
/// declared size before reading it, so a 100-byte file could claim 4 GiB.
fn riff_chunk_past_end(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WEBP" {
        return None;
    }
    let mut position = 12usize;
    // Each step moves past an 8-byte header, so the loop ends within the file.
    while bytes.len() - position >= 8 {
        let name = String::from_utf8_lossy(&bytes[position..position + 4]).into_owned();
        let header = &bytes[position + 4..position + 8];
        let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let start = position + 8;
        let present = bytes.len() - start;
        if size > present {
            return Some(format!(
                "WebP chunk `{name}` at byte {position} declares {size} bytes, but the file holds {present} after it"
            ));
        }
        position = start + size + (size & 1);
        if position >= bytes.len() {
            break;
        }
    }
    None
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
