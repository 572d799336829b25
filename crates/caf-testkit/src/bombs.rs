//! Image files that declare far more than they hold: small real pictures
//! whose headers are rewritten to claim a huge size, for tests that a
//! decoder refuses them before allocating what they claim.

use std::io::Cursor;

use image::{ImageFormat, RgbImage};

/// The side every bomb but the WebP declares: 30000 × 30000 = 900 megapixels.
pub const BOMB_SIDE: u32 = 30_000;

/// A WebP's side is 14 bits (up to 16384; the decoder reads 16384 as 0):
/// 16383 × 16383 = 268 megapixels.
pub const WEBP_BOMB_SIDE: u32 = 16_383;

fn encoded(format: ImageFormat) -> Vec<u8> {
    let picture = RgbImage::from_fn(16, 12, |x, y| image::Rgb([(x * 16) as u8, (y * 20) as u8, 90]));
    let mut bytes = Cursor::new(Vec::new());
    picture.write_to(&mut bytes, format).expect("encode a 16×12 picture");
    bytes.into_inner()
}

/// CRC-32 (IEEE), as PNG's chunks carry.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG chunk: length, type, data, CRC over type and data.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&chunk[4..]).to_be_bytes());
    chunk
}

/// A PNG whose header declares `BOMB_SIDE × BOMB_SIDE` (its data holds 16 × 12).
pub fn png() -> Vec<u8> {
    png_declaring(BOMB_SIDE)
}

/// A PNG whose header declares `side × side` (its data holds 16 × 12).
pub fn png_declaring(side: u32) -> Vec<u8> {
    let mut bytes = encoded(ImageFormat::Png);
    bytes[16..20].copy_from_slice(&side.to_be_bytes());
    bytes[20..24].copy_from_slice(&side.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// A real 16 × 12 PNG carrying an `eXIf` chunk of `exif_bytes` bytes (a
/// big-endian TIFF header, then zeros).
pub fn png_with_exif(exif_bytes: usize) -> Vec<u8> {
    let bytes = encoded(ImageFormat::Png);
    let mut exif = vec![0u8; exif_bytes.max(8)];
    exif[..8].copy_from_slice(b"MM\x00\x2a\x00\x00\x00\x08");
    // The signature (8 bytes) and IHDR (25) come first; eXIf goes before IDAT.
    let mut out = bytes[..33].to_vec();
    out.extend_from_slice(&png_chunk(b"eXIf", &exif));
    out.extend_from_slice(&bytes[33..]);
    out
}

/// A JPEG whose start-of-frame declares `BOMB_SIDE × BOMB_SIDE`.
pub fn jpeg() -> Vec<u8> {
    let mut bytes = encoded(ImageFormat::Jpeg);
    let frame = (0..bytes.len() - 9)
        .find(|&i| bytes[i] == 0xFF && matches!(bytes[i + 1], 0xC0..=0xC2))
        .expect("the encoder writes a start-of-frame");
    bytes[frame + 5..frame + 7].copy_from_slice(&(BOMB_SIDE as u16).to_be_bytes());
    bytes[frame + 7..frame + 9].copy_from_slice(&(BOMB_SIDE as u16).to_be_bytes());
    bytes
}

/// A lossless WebP whose header declares `WEBP_BOMB_SIDE × WEBP_BOMB_SIDE`.
pub fn webp() -> Vec<u8> {
    let mut bytes = encoded(ImageFormat::WebP);
    assert_eq!(&bytes[12..16], b"VP8L", "the encoder writes a lossless WebP");
    let mut header = u32::from_le_bytes([bytes[21], bytes[22], bytes[23], bytes[24]]);
    let side = WEBP_BOMB_SIDE - 1;
    header = (header & !0x0FFF_FFFF) | side | (side << 14);
    bytes[21..25].copy_from_slice(&header.to_le_bytes());
    bytes
}

/// A 16 × 12 WebP (extended format) whose `EXIF` chunk declares 3 GiB and
/// holds 8 bytes.
pub fn webp_with_huge_exif() -> Vec<u8> {
    let simple = encoded(ImageFormat::WebP);
    let image_chunk = &simple[12..];
    let mut vp8x = vec![0u8; 10];
    vp8x[0] = 0x08; // EXIF present
    vp8x[4..7].copy_from_slice(&(16u32 - 1).to_le_bytes()[..3]);
    vp8x[7..10].copy_from_slice(&(12u32 - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend_from_slice(b"VP8X");
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(&vp8x);
    body.extend_from_slice(image_chunk);
    body.extend_from_slice(b"EXIF");
    body.extend_from_slice(&(3u32 << 30).to_le_bytes());
    body.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08");
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A BMP whose header declares `BOMB_SIDE × BOMB_SIDE`.
pub fn bmp() -> Vec<u8> {
    let mut bytes = encoded(ImageFormat::Bmp);
    bytes[18..22].copy_from_slice(&(BOMB_SIDE as i32).to_le_bytes());
    bytes[22..26].copy_from_slice(&(BOMB_SIDE as i32).to_le_bytes());
    bytes
}

/// A TIFF whose first directory declares `BOMB_SIDE × BOMB_SIDE`, in one
/// strip (its rows per strip say so too, as a consistent file would).
pub fn tiff() -> Vec<u8> {
    let mut bytes = encoded(ImageFormat::Tiff);
    assert_eq!(&bytes[..4], b"II*\x00", "the encoder writes a little-endian TIFF");
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let directory = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let entries = u16_at(&bytes, directory) as usize;
    let mut patched = 0;
    for entry in (0..entries).map(|k| directory + 2 + 12 * k) {
        // ImageWidth, ImageLength, RowsPerStrip.
        if matches!(u16_at(&bytes, entry), 256 | 257 | 278) {
            let value = entry + 8;
            match u16_at(&bytes, entry + 2) {
                3 => bytes[value..value + 2].copy_from_slice(&(BOMB_SIDE as u16).to_le_bytes()),
                4 => bytes[value..value + 4].copy_from_slice(&BOMB_SIDE.to_le_bytes()),
                other => panic!("a size tag of TIFF type {other}"),
            }
            patched += 1;
        }
    }
    assert!(patched >= 2, "the TIFF has a width and a height");
    bytes
}

/// Every bomb, named by the file it would be: `(file name, bytes)`.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("bomb.png", png()),
        ("bomb.jpg", jpeg()),
        ("bomb.webp", webp()),
        ("bomb.bmp", bmp()),
        ("bomb.tiff", tiff()),
    ]
}
