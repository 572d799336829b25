//! One function per reader. File-based readers get the bytes as a file in
//! a scratch folder kept per thread (set `TMPDIR=/dev/shm` when fuzzing).

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use caf_data::DecodeLimits;
use candle_core::Device;

/// A reader of outside bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An image file of any supported format, EXIF included.
    Image,
    /// A caf-rs checkpoint: safetensors with `caf.*` metadata.
    Checkpoint,
    /// PyTorch's legacy (pre-1.6) format.
    TorchLegacy,
    /// PyTorch's zip format.
    TorchZip,
    /// An AffectNet index (CSV).
    AffectNet,
    /// An AFEW-VA clip annotation (JSON).
    AfewVa,
    /// An Aff-Wild2 video annotation (text).
    AffWild2,
    /// A generic `path,valence,arousal,subject` CSV.
    GenericCsv,
    /// A face-box CSV for predict's `--boxes`.
    FaceBoxes,
    /// A training configuration (TOML).
    Config,
    /// An MP4/MOV video: its index, then its first frames decoded (H.264,
    /// OpenH264).
    Video,
}

impl Target {
    pub const ALL: [Target; 11] = [
        Target::Image,
        Target::Checkpoint,
        Target::TorchLegacy,
        Target::TorchZip,
        Target::AffectNet,
        Target::AfewVa,
        Target::AffWild2,
        Target::GenericCsv,
        Target::FaceBoxes,
        Target::Config,
        Target::Video,
    ];

    /// The name of its fuzz target and corpus folder.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Image => "image",
            Target::Checkpoint => "checkpoint",
            Target::TorchLegacy => "torch_legacy",
            Target::TorchZip => "torch_zip",
            Target::AffectNet => "affectnet",
            Target::AfewVa => "afew_va",
            Target::AffWild2 => "aff_wild2",
            Target::GenericCsv => "generic_csv",
            Target::FaceBoxes => "face_boxes",
            Target::Config => "config",
            Target::Video => "video",
        }
    }
}

/// Limits small enough that a fuzzer's inputs decode quickly; what is
/// checked is that they hold, not where they sit.
const FUZZ_LIMITS: DecodeLimits = DecodeLimits {
    max_pixels: 1 << 20,
    max_file_bytes: 1 << 20,
    max_metadata_bytes: 64 << 10,
};

/// Frames of a video decoded per input.
const VIDEO_FRAMES: usize = 8;

thread_local! {
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// Runs `f` on the scratch folder emptied, with `data` written at `relative`.
fn with_file<T>(relative: &str, data: &[u8], f: impl FnOnce(&Path, &Path) -> T) -> T {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let dir = scratch.get_or_insert_with(|| tempfile::tempdir().expect("a scratch folder"));
        let root: PathBuf = dir.path().to_path_buf();
        for entry in std::fs::read_dir(&root).expect("scratch folder").flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
        let file = root.join(relative);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("scratch subfolder");
        }
        std::fs::write(&file, data).expect("scratch file");
        f(&root, &file)
    })
}

/// Feeds `data` to `target`'s reader. Returns whether the reader accepted
/// it; every refusal must come back as an error, never as a panic.
pub fn run(target: Target, data: &[u8]) -> bool {
    match target {
        Target::Image => caf_data::decode_bytes(data, Path::new("fuzz-input"), &FUZZ_LIMITS).is_ok(),
        Target::Checkpoint => with_file("model.safetensors", data, |_, file| {
            caf_backbone::Checkpoint::read(file, &Device::Cpu).is_ok()
        }),
        Target::TorchLegacy | Target::TorchZip => {
            let wanted = if target == Target::TorchZip {
                caf_backbone::TensorFormat::TorchZip
            } else {
                caf_backbone::TensorFormat::TorchLegacy
            };
            with_file("weights.pth", data, |_, file| {
                // Only the format the target is about; the others have targets of their own.
                caf_backbone::TensorFormat::detect(file).ok() == Some(wanted)
                    && caf_backbone::read_tensors(file, &Device::Cpu).is_ok()
            })
        }
        Target::AffectNet => with_file("training.csv", data, |root, file| {
            caf_data::load_affectnet(file, root, Some(0.1)).is_ok()
        }),
        Target::AfewVa => with_file("001/001.json", data, |root, _| caf_data::load_afew_va(root).is_ok()),
        Target::AffWild2 => with_file("annotations/video_left.txt", data, |root, _| {
            caf_data::load_aff_wild2(&root.join("annotations"), &root.join("frames")).is_ok()
        }),
        Target::GenericCsv => with_file("labels.csv", data, |root, file| {
            caf_data::load_generic_csv(file, root).is_ok()
        }),
        Target::FaceBoxes => with_file("boxes.csv", data, |_, file| {
            caf_data::FaceBoxes::load(file, 0.2).is_ok()
        }),
        Target::Video => with_file("video.mp4", data, |_, file| match caf_video::Mp4Video::open(file) {
            // Frames until the first error, as predict reads them: at most
            // a few, so that an input runs quickly.
            Ok(video) => video.take(VIDEO_FRAMES).all(|frame| frame.is_ok()),
            Err(_) => false,
        }),
        Target::Config => match std::str::from_utf8(data) {
            Ok(text) => caf_train::TrainConfig::from_toml(text, "fuzz input", &[]).is_ok(),
            Err(_) => false,
        },
    }
}
