//! Image bombs cost their own bytes, not what they declare: the most bytes
//! held at once while each is refused, measured by this binary's allocator.
//! One test in the binary, so that no other test's allocations count.

use caf_data::{decode, decode_bytes, DataError, DecodeLimits};
use caf_testkit::{bombs, PeakAllocator};

#[global_allocator]
static ALLOCATOR: PeakAllocator = PeakAllocator::new();

/// A bomb may cost a few times its file's bytes (the file, a decoder's copy
/// of a chunk, the chunk handed out) and the decoders' fixed tables.
fn bound(file_bytes: usize) -> usize {
    4 * file_bytes + (4 << 20)
}

#[test]
fn bombs_are_refused_within_a_small_bounded_allocation() {
    let dir = tempfile::tempdir().expect("dir");
    let mut files = bombs::all();
    files.push(("huge-exif.png", bombs::png_with_exif(2 << 20)));
    files.push(("huge-exif.webp", bombs::webp_with_huge_exif()));
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).expect("write");
        let (result, peak) = ALLOCATOR.peak_during(|| decode(&path));
        let error = result.expect_err(name);
        assert!(
            matches!(error, DataError::OverLimit { .. } | DataError::Image { .. }),
            "{name}: {error}"
        );
        eprintln!("{name}: {} bytes, {peak} bytes held at once while refused", bytes.len());
        assert!(
            peak < bound(bytes.len()),
            "{name}: {peak} bytes held at once while refusing it"
        );
        let (result, peak) = ALLOCATOR.peak_during(|| decode_bytes(&bytes, &path, &DecodeLimits::DEFAULT));
        assert!(result.is_err(), "{name} from memory");
        assert!(peak < bound(bytes.len()), "{name} from memory: {peak} bytes");
    }
    // The measure itself: a genuine 4000 × 3000 PNG holds its 36 MB of RGB.
    let path = dir.path().join("genuine.png");
    image::RgbImage::new(4000, 3000).save(&path).expect("png");
    let (result, peak) = ALLOCATOR.peak_during(|| decode(&path));
    assert_eq!(result.expect("genuine").dimensions(), (4000, 3000));
    assert!(peak >= 36_000_000, "{peak} bytes for a 36 MB picture");
}
