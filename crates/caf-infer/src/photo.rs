//! Photos in, one prediction per face out: faces found by caf-face's MTCNN,
//! given as boxes, or the whole picture.
//!
//! Each face is cropped as training crops a dataset's face box: the box grown
//! by a margin on every side ([`FaceBox::grown`]), then the checkpoint's
//! resize and centre crop.

use caf_data::FaceBox;
use caf_face::{Face, FaceDetector};
use image::RgbImage;
use rayon::prelude::*;

use crate::circumplex::Va;
use crate::predictor::{read_photo, ImageFile, InferError, Predictor};

/// The margin [`PhotoOptions::new`] grows detected and given boxes by:
/// MTCNN's box runs from the eyebrows to the chin, a face crop of the
/// datasets shows the whole head.
pub const DEFAULT_FACE_MARGIN: FaceMargin = FaceMargin(0.2);

/// The share of a face box's width (height) added on each side before
/// cropping: a finite number above −0.5, so the grown box keeps a positive size.
///
/// ```
/// use caf_infer::FaceMargin;
///
/// assert_eq!(FaceMargin::new(0.25).unwrap().get(), 0.25);
/// assert!(FaceMargin::new(-0.5).is_err() && FaceMargin::new(f32::NAN).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceMargin(f32);

impl FaceMargin {
    pub fn new(margin: f32) -> Result<Self, InferError> {
        if margin.is_finite() && margin > -0.5 {
            Ok(FaceMargin(margin))
        } else {
            Err(InferError::FaceMargin { margin })
        }
    }

    pub fn get(self) -> f32 {
        self.0
    }
}

/// How the faces of a photo are found. The modes that detect carry the
/// detector `D`, so a `FaceSearch<&FaceDetector>` always can run; the
/// same modes without a detector, [`FaceMode`], are what a user chooses by
/// name, and [`FaceMode::with`] gives them their detector when one is needed:
///
/// ```
/// use caf_infer::{FaceMode, FaceSearch};
///
/// let mode: FaceMode = "whole".parse().unwrap();
/// let search = mode.with(|| -> Result<(), String> { unreachable!("no detector is loaded for `whole`") });
/// assert!(matches!(search, Ok(FaceSearch::Whole)));
/// assert_eq!(FaceMode::NAMES, ["auto", "detect", "whole"]);
/// assert!("faces".parse::<FaceMode>().unwrap_err().contains("auto, detect, whole"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceSearch<D> {
    /// Detect every face; a photo where none is found is predicted whole.
    Auto(D),
    /// Detect every face; a photo where none is found has no prediction.
    Detect(D),
    /// The whole picture is one face (for photos that are face crops already).
    Whole,
}

/// A way of finding faces, by name, before its detector is loaded.
pub type FaceMode = FaceSearch<()>;

impl FaceMode {
    /// The modes' names, in the order of the variants.
    pub const NAMES: [&'static str; 3] = ["auto", "detect", "whole"];

    pub fn name(&self) -> &'static str {
        match self {
            FaceSearch::Auto(()) => Self::NAMES[0],
            FaceSearch::Detect(()) => Self::NAMES[1],
            FaceSearch::Whole => Self::NAMES[2],
        }
    }

    /// This mode with the detector `load` gives, called only for the modes that detect.
    pub fn with<D, E>(self, load: impl FnOnce() -> Result<D, E>) -> Result<FaceSearch<D>, E> {
        Ok(match self {
            FaceSearch::Auto(()) => FaceSearch::Auto(load()?),
            FaceSearch::Detect(()) => FaceSearch::Detect(load()?),
            FaceSearch::Whole => FaceSearch::Whole,
        })
    }
}

impl std::str::FromStr for FaceMode {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        [FaceSearch::Auto(()), FaceSearch::Detect(()), FaceSearch::Whole]
            .into_iter()
            .find(|mode| mode.name() == name)
            .ok_or_else(|| format!("unknown face mode `{name}` (known: {})", Self::NAMES.join(", ")))
    }
}

impl<D> FaceSearch<D> {
    /// The same mode, borrowing its detector.
    pub fn as_ref(&self) -> FaceSearch<&D> {
        match self {
            FaceSearch::Auto(detector) => FaceSearch::Auto(detector),
            FaceSearch::Detect(detector) => FaceSearch::Detect(detector),
            FaceSearch::Whole => FaceSearch::Whole,
        }
    }
}

/// Where a prediction's face came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceOrigin {
    /// Found by the detector.
    Detected,
    /// A box given with the photo (`--boxes`).
    Given,
    /// The whole picture, as asked ([`FaceSearch::Whole`]).
    Whole,
    /// The whole picture, because the detector found no face ([`FaceSearch::Auto`]).
    NoFaceFound,
    /// A box found in an earlier frame of a video, read again in this one
    /// ([`Predictor::predict_faces_again`]).
    Carried,
}

impl FaceOrigin {
    /// The name written in predict's output.
    pub fn name(&self) -> &'static str {
        match self {
            FaceOrigin::Detected => "detected",
            FaceOrigin::Given => "given",
            FaceOrigin::Whole => "whole",
            FaceOrigin::NoFaceFound => "whole-no-face-found",
            FaceOrigin::Carried => "carried",
        }
    }
}

/// One face of a photo and what the model reads from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FacePrediction {
    /// Place in the photo's list: detected faces largest first.
    pub index: usize,
    /// The face's box in photo pixels before the margin (the whole photo for
    /// whole-picture predictions).
    pub face: FaceBox,
    /// The detector's probability, for detected faces.
    pub score: Option<f32>,
    /// Eyes, nose and mouth corners, for detected faces.
    pub landmarks: Option<[[f32; 2]; 5]>,
    pub origin: FaceOrigin,
    pub va: Va,
}

/// How [`Predictor::predict_photo`] finds and crops faces.
#[derive(Clone, Copy)]
pub struct PhotoOptions<'a> {
    pub search: FaceSearch<&'a FaceDetector>,
    /// Share of a box's width (height) added on each side before cropping.
    pub margin: FaceMargin,
}

impl<'a> PhotoOptions<'a> {
    /// `search` with the default margin, [`DEFAULT_FACE_MARGIN`].
    pub fn new(search: FaceSearch<&'a FaceDetector>) -> Self {
        PhotoOptions {
            search,
            margin: DEFAULT_FACE_MARGIN,
        }
    }
}

/// A face to crop and predict, before its prediction.
struct Located {
    face: FaceBox,
    detection: Option<Face>,
    origin: FaceOrigin,
}

fn whole(photo: &RgbImage) -> FaceBox {
    FaceBox {
        x: 0.0,
        y: 0.0,
        width: photo.width() as f32,
        height: photo.height() as f32,
    }
}

fn locate(
    photo: &RgbImage,
    given: Option<FaceBox>,
    search: FaceSearch<&FaceDetector>,
) -> Result<Vec<Located>, InferError> {
    let one = |face, origin| {
        vec![Located {
            face,
            detection: None,
            origin,
        }]
    };
    if let Some(face) = given {
        return Ok(one(face, FaceOrigin::Given));
    }
    let (detector, whole_when_none) = match search {
        FaceSearch::Whole => return Ok(one(whole(photo), FaceOrigin::Whole)),
        FaceSearch::Auto(detector) => (detector, true),
        FaceSearch::Detect(detector) => (detector, false),
    };
    let faces = detector.detect(photo)?;
    if faces.is_empty() && whole_when_none {
        return Ok(one(whole(photo), FaceOrigin::NoFaceFound));
    }
    Ok(faces
        .into_iter()
        .map(|detection| Located {
            face: detection.bbox,
            detection: Some(detection),
            origin: FaceOrigin::Detected,
        })
        .collect())
}

impl Predictor {
    /// Finds the faces of `photo` (or takes `given`, which wins over
    /// detection) and predicts each. An empty list means that
    /// [`FaceSearch::Detect`] found no face.
    pub fn predict_photo(
        &self,
        photo: &RgbImage,
        given: Option<FaceBox>,
        options: &PhotoOptions,
    ) -> Result<Vec<FacePrediction>, InferError> {
        let located = locate(photo, given, options.search)?;
        self.predict_located(photo, located, options.margin)
    }

    /// Reads `photo` at the boxes of `faces`, predicted in another picture
    /// of the same size (an earlier frame of a video), without searching
    /// for faces: each keeps its index and box; a box the detector found
    /// becomes [`FaceOrigin::Carried`] with no score or landmarks (they
    /// were the other picture's), a whole-picture one stays as it was.
    pub fn predict_faces_again(
        &self,
        photo: &RgbImage,
        faces: &[FacePrediction],
        margin: FaceMargin,
    ) -> Result<Vec<FacePrediction>, InferError> {
        let located = faces
            .iter()
            .map(|face| match face.origin {
                FaceOrigin::Whole | FaceOrigin::NoFaceFound => Located {
                    face: whole(photo),
                    detection: None,
                    origin: face.origin,
                },
                FaceOrigin::Detected | FaceOrigin::Given | FaceOrigin::Carried => Located {
                    face: face.face,
                    detection: None,
                    origin: FaceOrigin::Carried,
                },
            })
            .collect();
        self.predict_located(photo, located, margin)
    }

    /// Crops and predicts each located face, in order.
    fn predict_located(
        &self,
        photo: &RgbImage,
        located: Vec<Located>,
        margin: FaceMargin,
    ) -> Result<Vec<FacePrediction>, InferError> {
        let inputs: Vec<Vec<f32>> = located
            .par_iter()
            .map(|l| self.input(photo, Some(l.face.grown(margin.get()))))
            .collect();
        let predictions = self.predict_inputs(&inputs)?;
        Ok(located
            .into_iter()
            .zip(predictions)
            .enumerate()
            .map(|(index, (l, va))| FacePrediction {
                index,
                face: l.face,
                score: l.detection.map(|d| d.score),
                landmarks: l.detection.map(|d| d.landmarks),
                origin: l.origin,
                va,
            })
            .collect())
    }

    /// Decodes each file within the predictor's [`DecodeLimits`](caf_data::DecodeLimits)
    /// and predicts its faces; every file gets its own result, so an
    /// unreadable one, or one over a limit, fails alone. Files are taken a
    /// thread at a time, so at most one decoded photo per thread is held.
    pub fn predict_photo_files(
        &self,
        files: &[ImageFile],
        options: &PhotoOptions,
    ) -> Vec<Result<Vec<FacePrediction>, InferError>> {
        self.predict_photo_files_with(files, options, |_, _, _| Ok::<(), InferError>(()))
    }

    /// [`Predictor::predict_photo_files`], handing `each` the file's place
    /// in `files`, its decoded photo and its faces while the photo is still
    /// held (to draw them, say, without decoding the file again). An error
    /// of `each` becomes that file's result.
    pub fn predict_photo_files_with<E: From<InferError> + Send>(
        &self,
        files: &[ImageFile],
        options: &PhotoOptions,
        each: impl Fn(usize, &RgbImage, &[FacePrediction]) -> Result<(), E> + Sync,
    ) -> Vec<Result<Vec<FacePrediction>, E>> {
        files
            .par_iter()
            .enumerate()
            .map(|(index, file)| {
                let photo = read_photo(&file.path, self.decode_limits())?;
                let faces = self.predict_photo(&photo, file.face, options)?;
                each(index, &photo, &faces)?;
                Ok(faces)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::checkpoint;
    use candle_core::Device;

    fn grey(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([120 + (x % 7) as u8, 128, 130 + (y % 5) as u8])
        })
    }

    fn setup() -> (tempfile::TempDir, Predictor, FaceDetector) {
        let dir = tempfile::tempdir().expect("dir");
        let predictor = Predictor::from_checkpoint(&checkpoint(dir.path()), &Device::Cpu).expect("load");
        let detector = FaceDetector::builtin(&Device::Cpu).expect("detector");
        (dir, predictor, detector)
    }

    #[test]
    fn faces_read_again_keep_their_boxes_and_lose_what_was_the_other_picture_s() {
        let (_dir, predictor, _) = setup();
        let photo = grey(90, 70);
        let margin = DEFAULT_FACE_MARGIN;
        let found = |x: f32, origin: FaceOrigin| FacePrediction {
            index: 0,
            face: FaceBox {
                x,
                y: 5.0,
                width: 40.0,
                height: 50.0,
            },
            score: Some(0.9),
            landmarks: Some([[1.0, 2.0]; 5]),
            origin,
            va: Va {
                valence: 9.0,
                arousal: 9.0,
            },
        };
        let earlier = [found(3.0, FaceOrigin::Detected), found(0.0, FaceOrigin::NoFaceFound)];
        let again = predictor.predict_faces_again(&photo, &earlier, margin).expect("read");
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].origin, FaceOrigin::Carried);
        assert_eq!(again[0].face, earlier[0].face);
        assert_eq!((again[0].score, again[0].landmarks), (None, None));
        assert_eq!(again[1].origin, FaceOrigin::NoFaceFound);
        assert_eq!(again[1].face, whole(&photo));
        // Read in this picture, as a given box is.
        let options = PhotoOptions::new(FaceSearch::Whole);
        let given = predictor
            .predict_photo(&photo, Some(earlier[0].face), &options)
            .expect("given");
        assert_eq!(again[0].va, given[0].va);
        assert_ne!(again[0].va.valence, 9.0);
    }

    #[test]
    fn a_photo_without_a_face_is_predicted_whole_in_auto_and_not_at_all_in_detect() {
        let (_dir, predictor, detector) = setup();
        let photo = grey(90, 70);
        let options = PhotoOptions::new(FaceSearch::Auto(&detector));
        let auto = predictor.predict_photo(&photo, None, &options).expect("auto");
        assert_eq!(auto.len(), 1);
        assert_eq!(auto[0].origin, FaceOrigin::NoFaceFound);
        assert_eq!(auto[0].face, whole(&photo));
        assert_eq!(auto[0].score, None);
        // The whole picture grown by the margin is the whole picture once clamped.
        let expected = predictor.predict_images(&[(&photo, None)]).expect("whole")[0];
        assert_eq!(auto[0].va, expected);

        let detect = PhotoOptions::new(FaceSearch::Detect(&detector));
        assert!(predictor
            .predict_photo(&photo, None, &detect)
            .expect("detect")
            .is_empty());
    }

    #[test]
    fn a_given_box_wins_and_is_cropped_with_the_margin() {
        let (_dir, predictor, detector) = setup();
        let photo = RgbImage::from_fn(120, 100, |x, y| {
            image::Rgb([(2 * x) as u8, (3 * y) as u8, ((x * y) % 200) as u8])
        });
        let given = FaceBox {
            x: 30.0,
            y: 20.0,
            width: 40.0,
            height: 50.0,
        };
        for (name, search) in [
            ("auto", FaceSearch::Auto(&detector)),
            ("detect", FaceSearch::Detect(&detector)),
            ("whole", FaceSearch::Whole),
        ] {
            let options = PhotoOptions {
                search,
                margin: FaceMargin::new(0.25).expect("a margin"),
            };
            let faces = predictor.predict_photo(&photo, Some(given), &options).expect("given");
            assert_eq!(faces.len(), 1);
            assert_eq!((faces[0].origin, faces[0].face), (FaceOrigin::Given, given));
            let grown = FaceBox {
                x: 20.0,
                y: 7.5,
                width: 60.0,
                height: 75.0,
            };
            let expected = predictor.predict_images(&[(&photo, Some(grown))]).expect("crop")[0];
            assert_eq!(faces[0].va, expected, "{name}");
        }
    }

    #[test]
    fn whole_needs_no_detector() {
        let (_dir, predictor, _) = setup();
        let photo = grey(64, 64);
        let faces = predictor
            .predict_photo(&photo, None, &PhotoOptions::new(FaceSearch::Whole))
            .expect("whole");
        assert_eq!((faces.len(), faces[0].origin), (1, FaceOrigin::Whole));
        assert_eq!(faces[0].face, whole(&photo));
    }

    #[test]
    fn each_file_is_handed_over_with_its_own_photo_and_its_error_is_its_result() {
        let (dir, predictor, _) = setup();
        let files: Vec<ImageFile> = [(40u32, 30u32), (50, 60), (70, 20)]
            .iter()
            .enumerate()
            .map(|(i, &(w, h))| {
                let path = dir.path().join(format!("{i}.png"));
                grey(w, h).save(&path).expect("png");
                ImageFile { path, face: None }
            })
            .collect();
        #[derive(Debug, PartialEq)]
        enum Drawing {
            Prediction(String),
            Failed(usize),
        }
        impl From<InferError> for Drawing {
            fn from(error: InferError) -> Self {
                Drawing::Prediction(error.to_string())
            }
        }
        let seen = std::sync::Mutex::new(Vec::new());
        let results =
            predictor.predict_photo_files_with(&files, &PhotoOptions::new(FaceSearch::Whole), |index, photo, faces| {
                seen.lock()
                    .expect("lock")
                    .push((index, photo.dimensions(), faces.len()));
                if index == 1 {
                    return Err(Drawing::Failed(index));
                }
                Ok(())
            });
        let mut seen = seen.into_inner().expect("lock");
        seen.sort();
        assert_eq!(seen, [(0, (40, 30), 1), (1, (50, 60), 1), (2, (70, 20), 1)]);
        assert!(results[0].is_ok() && results[2].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err(), &Drawing::Failed(1));
    }
}
