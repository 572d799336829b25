//! A folder of numbered frames read as a video.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use caf_infer::IMAGE_EXTENSIONS;

/// The most frames a folder may hold (over three days at 30 frames a second).
pub const MAX_FRAMES: usize = 10_000_000;

/// Why a folder cannot be read as a video.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameFolderError {
    #[error("cannot read the frame folder {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: no frames (images named by their number, such as 00001.jpg)", dir.display())]
    Empty { dir: PathBuf },
    #[error(
        "{}: {} has no frame number at the end of its name; a frame folder holds images named by their number \
         (00001.jpg or frame_00001.png), nothing else",
        dir.display(),
        file.display()
    )]
    Unnumbered { dir: PathBuf, file: PathBuf },
    #[error("{}: two frames numbered {number}: {} and {}", dir.display(), first.display(), second.display())]
    Duplicate {
        dir: PathBuf,
        number: u64,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{}: more than {limit} frames; cut the video into parts", dir.display())]
    TooMany { dir: PathBuf, limit: usize },
    #[error("the frame rate must be a positive number of frames a second, not {0}")]
    FrameRate(f64),
}

/// One frame of a video: its place among the frames read (from 0), its
/// number in the folder, its time, and its file.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFrame {
    pub index: usize,
    pub number: u64,
    /// Seconds from the first frame: `(number − first number) / fps`, so a
    /// gap in the numbering is a gap in time.
    pub time_s: f64,
    pub path: PathBuf,
}

/// The frames of a folder in numeric order (`9.jpg` before `10.jpg`), at a
/// given frame rate.
#[derive(Debug, Clone)]
pub struct FrameFolder {
    dir: PathBuf,
    fps: f64,
    frames: Vec<(u64, PathBuf)>,
}

impl FrameFolder {
    /// Lists `dir`'s images (by extension, as `predict` finds photos:
    /// [`IMAGE_EXTENSIONS`]; other files are left alone, subfolders too).
    /// Every image must end its name in a number, no two the same.
    pub fn open(dir: &Path, fps: f64) -> Result<Self, FrameFolderError> {
        if !(fps.is_finite() && fps > 0.0) {
            return Err(FrameFolderError::FrameRate(fps));
        }
        let io = |source| FrameFolderError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut numbered: BTreeMap<u64, PathBuf> = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let is_image = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(e)));
            if !is_image || path.is_dir() {
                continue;
            }
            let Some(number) = frame_number(&path) else {
                return Err(FrameFolderError::Unnumbered {
                    dir: dir.to_path_buf(),
                    file: path,
                });
            };
            if let Some(first) = numbered.get(&number) {
                let (first, second) = if *first < path {
                    (first.clone(), path)
                } else {
                    (path, first.clone())
                };
                return Err(FrameFolderError::Duplicate {
                    dir: dir.to_path_buf(),
                    number,
                    first,
                    second,
                });
            }
            numbered.insert(number, path);
            if numbered.len() > MAX_FRAMES {
                return Err(FrameFolderError::TooMany {
                    dir: dir.to_path_buf(),
                    limit: MAX_FRAMES,
                });
            }
        }
        if numbered.is_empty() {
            return Err(FrameFolderError::Empty { dir: dir.to_path_buf() });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            fps,
            frames: numbered.into_iter().collect(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// How many frames the folder holds.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Numbers missing between the first frame and the last.
    pub fn missing(&self) -> u64 {
        let (first, last) = (self.frames[0].0, self.frames[self.frames.len() - 1].0);
        last - first + 1 - self.frames.len() as u64
    }

    /// The frames in numeric order.
    pub fn frames(&self) -> impl Iterator<Item = VideoFrame> + '_ {
        (0..self.frames.len()).filter_map(|index| self.frame(index))
    }

    /// The `index`-th frame in numeric order.
    pub fn frame(&self, index: usize) -> Option<VideoFrame> {
        let first = self.frames[0].0;
        let (number, path) = self.frames.get(index)?;
        Some(VideoFrame {
            index,
            number: *number,
            time_s: (number - first) as f64 / self.fps,
            path: path.clone(),
        })
    }
}

/// The number at the end of a file's stem: `00012` → 12, `frame_0003` → 3;
/// `None` without one (or with more than 19 digits).
pub fn frame_number(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let digits = &stem[stem.trim_end_matches(|c: char| c.is_ascii_digit()).len()..];
    // Up to 19 digits, every number fits in a u64.
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("dir");
        for name in names {
            std::fs::write(dir.path().join(name), b"frame").expect("write");
        }
        dir
    }

    #[test]
    fn frames_come_in_numeric_order_and_time_follows_the_numbers() {
        let dir = folder(&["10.jpg", "9.jpg", "frame_11.png", "notes.txt"]);
        std::fs::create_dir(dir.path().join("sub")).expect("subfolder");
        let video = FrameFolder::open(dir.path(), 10.0).expect("a video");
        let frames: Vec<_> = video.frames().map(|f| (f.index, f.number, f.time_s)).collect();
        assert_eq!(frames, vec![(0, 9, 0.0), (1, 10, 0.1), (2, 11, 0.2)]);
        assert_eq!(video.missing(), 0);
    }

    #[test]
    fn a_gap_in_the_numbering_is_a_gap_in_time() {
        let dir = folder(&["00001.jpg", "00002.jpg", "00005.jpg"]);
        let video = FrameFolder::open(dir.path(), 25.0).expect("a video");
        assert_eq!(video.missing(), 2);
        let times: Vec<f64> = video.frames().map(|f| f.time_s).collect();
        assert_eq!(times, vec![0.0, 0.04, 0.16]);
    }

    #[test]
    fn what_is_not_a_frame_folder_is_refused_by_name() {
        let message = |names: &[&str], fps: f64| {
            let dir = folder(names);
            FrameFolder::open(dir.path(), fps).expect_err("refused").to_string()
        };
        assert!(message(&["cover.jpg", "1.jpg"], 30.0).contains("cover.jpg"));
        let duplicate = message(&["1.jpg", "001.png"], 30.0);
        assert!(duplicate.contains("two frames numbered 1"), "{duplicate}");
        assert!(message(&["notes.txt"], 30.0).contains("no frames"));
        assert!(message(&["1.jpg"], 0.0).contains("frame rate"));
        assert!(message(&["1.jpg"], f64::NAN).contains("frame rate"));
        let missing = FrameFolder::open(Path::new("/no/such/folder"), 30.0).expect_err("refused");
        assert!(missing.to_string().contains("/no/such/folder"));
    }

    #[test]
    fn frame_numbers_are_the_name_s_last_digits() {
        assert_eq!(frame_number(Path::new("a/00012.jpg")), Some(12));
        assert_eq!(frame_number(Path::new("frame_0003.png")), Some(3));
        assert_eq!(frame_number(Path::new("frame.png")), None);
        // Longer than a u64 holds: the last 19 digits would misnumber it, so refused.
        assert_eq!(frame_number(Path::new("123456789012345678901234.png")), None);
    }
}
