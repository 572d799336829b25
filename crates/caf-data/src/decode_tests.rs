//! Decoding: EXIF orientation applied, and every supported format read.

use image::{ImageFormat, Rgb, RgbImage};

use super::{decode, decode_bytes, decode_with_limits, DecodeLimit, DecodeLimits};
use crate::sample::DataError;

/// 32×16: top-left red, top-right green, bottom-left blue, bottom-right white.
fn quadrants() -> RgbImage {
    RgbImage::from_fn(32, 16, |x, y| match (x < 16, y < 8) {
        (true, true) => Rgb([255, 0, 0]),
        (false, true) => Rgb([0, 255, 0]),
        (true, false) => Rgb([0, 0, 255]),
        (false, false) => Rgb([255, 255, 255]),
    })
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
        std::fs::write(
            &path,
            caf_testkit::pictures::jpeg_with_orientation(&quadrants(), orientation),
        )
        .expect("write");
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

/// A picture of the given size with a gradient, so JPEG has something to code.
fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
    })
}

#[test]
fn truncated_jpegs_are_refused_and_complete_ones_decode() {
    let dir = tempfile::tempdir().expect("dir");
    let whole = dir.path().join("whole.jpg");
    gradient(40, 30).save(&whole).expect("jpeg");
    assert_eq!(decode(&whole).expect("decode").dimensions(), (40, 30));
    let bytes = std::fs::read(&whole).expect("read");
    let mut trailer = bytes.clone();
    trailer.extend_from_slice(b"camera trailer");
    for (name, content, complete) in [
        ("cut.jpg", &bytes[..bytes.len() * 2 / 3], false),
        ("no-eoi.jpg", &bytes[..bytes.len() - 2], false),
        ("trailer.jpg", &trailer[..], true),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        match decode(&path) {
            Ok(_) => assert!(complete, "{name} decoded"),
            Err(e) => {
                assert!(!complete, "{name}: {e}");
                assert!(
                    e.to_string().contains("truncated JPEG") && e.to_string().contains(name),
                    "{e}"
                );
            }
        }
    }
}

#[test]
fn every_format_declaring_a_huge_size_is_refused_with_the_limit() {
    let dir = tempfile::tempdir().expect("dir");
    for (name, bytes) in caf_testkit::bombs::all() {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).expect("write");
        let error = decode(&path).expect_err(name);
        assert!(
            matches!(
                error,
                DataError::OverLimit {
                    limit: DecodeLimit::Pixels,
                    allowed: 100_000_000,
                    ..
                }
            ),
            "{name}: {error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(name)
                && message.contains("over the limit of 100000000 pixels")
                && message.contains("`max_pixels` (predict's --max-pixels)"),
            "{message}"
        );
    }
}

#[test]
fn the_pixel_limit_is_width_times_height_inclusive() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("a.png");
    gradient(40, 30).save(&path).expect("png");
    let exactly = DecodeLimits {
        max_pixels: 1200,
        ..DecodeLimits::DEFAULT
    };
    assert_eq!(
        decode_with_limits(&path, &exactly).expect("at the limit").dimensions(),
        (40, 30)
    );
    let under = DecodeLimits {
        max_pixels: 1199,
        ..DecodeLimits::DEFAULT
    };
    let error = decode_with_limits(&path, &under).expect_err("one pixel over");
    assert!(
        matches!(
            error,
            DataError::OverLimit {
                found: 1200,
                allowed: 1199,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_file_over_the_byte_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("a.png");
    gradient(40, 30).save(&path).expect("png");
    let size = std::fs::metadata(&path).expect("size").len();
    let limits = DecodeLimits {
        max_file_bytes: size - 1,
        ..DecodeLimits::DEFAULT
    };
    let error = decode_with_limits(&path, &limits).expect_err("over");
    assert!(
        matches!(error, DataError::OverLimit { limit: DecodeLimit::FileBytes, found, .. } if found == size),
        "{error}"
    );
    assert!(error.to_string().contains("--max-file-bytes"), "{error}");
    let error = decode_bytes(&std::fs::read(&path).expect("read"), &path, &limits).expect_err("bytes over");
    assert!(
        matches!(
            error,
            DataError::OverLimit {
                limit: DecodeLimit::FileBytes,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn exif_over_the_limit_is_refused_and_under_it_decodes() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("exif.png");
    std::fs::write(&path, caf_testkit::bombs::png_with_exif(2 << 20)).expect("write");
    let error = decode(&path).expect_err("2 MiB of EXIF");
    assert!(
        matches!(
            error,
            DataError::OverLimit {
                limit: DecodeLimit::MetadataBytes,
                found: 2097152,
                allowed: 1048576,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("bytes of EXIF"), "{error}");
    std::fs::write(&path, caf_testkit::bombs::png_with_exif(1000)).expect("write");
    assert_eq!(decode(&path).expect("1000 bytes of EXIF").dimensions(), (16, 12));
}

#[test]
fn a_webp_chunk_declaring_more_than_the_file_holds_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("exif.webp");
    std::fs::write(&path, caf_testkit::bombs::webp_with_huge_exif()).expect("write");
    let message = decode(&path).expect_err("3 GiB EXIF").to_string();
    assert!(
        message.contains("exif.webp") && message.contains("`EXIF`") && message.contains("declares 3221225472 bytes"),
        "{message}"
    );
}
