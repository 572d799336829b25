//! Decoding: EXIF orientation applied, and every supported format read.

use image::{ImageFormat, Rgb, RgbImage};

use super::decode;

/// 32×16: top-left red, top-right green, bottom-left blue, bottom-right white.
fn quadrants() -> RgbImage {
    RgbImage::from_fn(32, 16, |x, y| match (x < 16, y < 8) {
        (true, true) => Rgb([255, 0, 0]),
        (false, true) => Rgb([0, 255, 0]),
        (true, false) => Rgb([0, 0, 255]),
        (false, false) => Rgb([255, 255, 255]),
    })
}

/// A JPEG of `image` with an EXIF APP1 segment holding one Orientation tag.
fn jpeg_with_orientation(image: &RgbImage, orientation: u16) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 100)
        .encode_image(image)
        .expect("encode");
    // TIFF header (little endian, IFD at 8), one entry: 0x0112 SHORT 1 = orientation.
    let mut tiff = b"II*\x00\x08\x00\x00\x00\x01\x00".to_vec();
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The colour of the quadrant around (x, y), rounded away from JPEG's noise.
fn colour(image: &RgbImage, x: u32, y: u32) -> [u8; 3] {
    image.get_pixel(x, y).0.map(|c| if c > 127 { 255 } else { 0 })
}

/// Colours of the four quadrants: top-left, top-right, bottom-left, bottom-right.
type Corners = [[u8; 3]; 4];

/// Colours at the four corners' quadrant centres.
fn corners(image: &RgbImage) -> Corners {
    let (w, h) = image.dimensions();
    let (l, r, t, b) = (w / 4, 3 * w / 4, h / 4, 3 * h / 4);
    [
        colour(image, l, t),
        colour(image, r, t),
        colour(image, l, b),
        colour(image, r, b),
    ]
}

#[test]
fn every_exif_orientation_is_turned_upright() {
    const RED: [u8; 3] = [255, 0, 0];
    const GREEN: [u8; 3] = [0, 255, 0];
    const BLUE: [u8; 3] = [0, 0, 255];
    const WHITE: [u8; 3] = [255, 255, 255];
    // What a viewer shows for each tag (EXIF 2.3): the stored image is
    // turned by the tag's transform.
    let expected: [(u16, (u32, u32), Corners); 8] = [
        (1, (32, 16), [RED, GREEN, BLUE, WHITE]),
        (2, (32, 16), [GREEN, RED, WHITE, BLUE]),
        (3, (32, 16), [WHITE, BLUE, GREEN, RED]),
        (4, (32, 16), [BLUE, WHITE, RED, GREEN]),
        (5, (16, 32), [RED, BLUE, GREEN, WHITE]),
        (6, (16, 32), [BLUE, RED, WHITE, GREEN]),
        (7, (16, 32), [WHITE, GREEN, BLUE, RED]),
        (8, (16, 32), [GREEN, WHITE, RED, BLUE]),
    ];
    let dir = tempfile::tempdir().expect("dir");
    for (orientation, size, colours) in expected {
        let path = dir.path().join(format!("o{orientation}.jpg"));
        std::fs::write(&path, jpeg_with_orientation(&quadrants(), orientation)).expect("write");
        let image = decode(&path).expect("decode");
        assert_eq!(image.dimensions(), size, "orientation {orientation}");
        assert_eq!(corners(&image), colours, "orientation {orientation}");
    }
}

#[test]
fn webp_bmp_and_tiff_decode_like_png() {
    let dir = tempfile::tempdir().expect("dir");
    let original = quadrants();
    for (name, format) in [
        ("a.png", ImageFormat::Png),
        ("a.webp", ImageFormat::WebP),
        ("a.bmp", ImageFormat::Bmp),
        ("a.tiff", ImageFormat::Tiff),
    ] {
        let path = dir.path().join(name);
        original.save_with_format(&path, format).expect("save");
        assert_eq!(decode(&path).expect(name), original, "{name}");
    }
}
