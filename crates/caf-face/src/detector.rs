//! The three-stage cascade: P-Net over an image pyramid proposes boxes,
//! R-Net refines them on 24×24 crops, O-Net scores them on 48×48 crops and
//! places the landmarks. Each stage ends in non-maximum suppression.

use std::collections::HashMap;

use caf_data::FaceBox;
use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::boxes::{pick, suppress, Candidate, Overlap, Sides};
use crate::error::{Error, Result};
use crate::nets::{CropScores, NamedTensors, ONet, PNet, RNet};
use rayon::prelude::*;

use crate::resample::{area_resample_into, Region, Rows};

/// P-Net's window: each output cell looks at a 12×12 patch, 2 pixels apart.
const CELL: usize = 12;
const CELL_STRIDE: usize = 2;

/// The detector's settings; the defaults are facenet-pytorch's (and the
/// original MTCNN's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Smallest face side searched for, in pixels (the pyramid's first scale
    /// maps it to P-Net's 12-pixel window).
    pub min_face_size: f64,
    /// Score a box must reach at P-Net (≥), R-Net and O-Net (>).
    pub thresholds: [f32; 3],
    /// Ratio between successive pyramid scales.
    pub pyramid_factor: f64,
    /// Longest side, in pixels, the cascade looks at: a larger photo is
    /// shrunk to it (area average) for detection, and its faces are given
    /// in the full photo's pixels. This bounds detection's time and memory
    /// whatever the photo's size; the smallest face found in such a photo
    /// grows by the same factor.
    pub max_detection_side: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            min_face_size: 20.0,
            thresholds: [0.6, 0.7, 0.7],
            pyramid_factor: 0.709,
            max_detection_side: 4096,
        }
    }
}

impl DetectorConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.min_face_size.is_finite() && self.min_face_size > 0.0) {
            return Err(Error::Config(format!(
                "the smallest face size must be a positive number of pixels, got {}",
                self.min_face_size
            )));
        }
        if let Some(t) = self.thresholds.iter().find(|t| !(0.0..1.0).contains(*t)) {
            return Err(Error::Config(format!(
                "thresholds are probabilities in [0, 1), got {t} in {:?}",
                self.thresholds
            )));
        }
        if !(self.pyramid_factor > 0.0 && self.pyramid_factor < 1.0) {
            return Err(Error::Config(format!(
                "the pyramid factor must lie strictly between 0 and 1, got {}",
                self.pyramid_factor
            )));
        }
        if (self.max_detection_side as usize) < CELL {
            return Err(Error::Config(format!(
                "the longest side searched must be at least P-Net's {CELL}-pixel window, got {}",
                self.max_detection_side
            )));
        }
        Ok(())
    }

    /// The pyramid's scales for a photo: from 12 / `min_face_size`, each
    /// `pyramid_factor` times the last, while the shorter side still covers
    /// P-Net's window.
    pub(crate) fn scales(&self, width: usize, height: usize) -> Vec<f64> {
        let first = CELL as f64 / self.min_face_size;
        let mut shorter = width.min(height) as f64 * first;
        let mut scale = first;
        let mut scales = Vec::new();
        while shorter >= CELL as f64 {
            scales.push(scale);
            scale *= self.pyramid_factor;
            shorter *= self.pyramid_factor;
        }
        scales
    }
}

/// A detected face: its box, O-Net's probability that it is a face, and
/// five landmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    /// In pixels of the photo; a box may reach past the photo's edges.
    pub bbox: FaceBox,
    /// Probability that the box holds a face, in (threshold, 1].
    pub score: f32,
    /// `(x, y)` of the left eye, right eye, nose, left and right mouth
    /// corners (left and right as seen in the photo).
    pub landmarks: [[f32; 2]; 5],
}

/// MTCNN with its weights, on one device.
pub struct FaceDetector {
    pnet: PNet,
    rnet: RNet,
    onet: ONet,
    config: DetectorConfig,
    device: Device,
}

impl FaceDetector {
    pub(crate) fn from_tensors(tensors: &HashMap<String, Tensor>, source_name: &str, device: &Device) -> Result<Self> {
        let named = |prefix| NamedTensors {
            tensors,
            prefix,
            source_name,
        };
        Ok(FaceDetector {
            pnet: PNet::load(&named("pnet"))?,
            rnet: RNet::load(&named("rnet"))?,
            onet: ONet::load(&named("onet"))?,
            config: DetectorConfig::default(),
            device: device.clone(),
        })
    }

    /// The same detector with other settings; refused when out of range.
    pub fn with_config(mut self, config: DetectorConfig) -> Result<Self> {
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Every face in `photo`, largest box first. A photo smaller than the
    /// smallest face size holds none; one longer than
    /// [`DetectorConfig::max_detection_side`] is searched shrunk to it.
    pub fn detect(&self, photo: &RgbImage) -> Result<Vec<Face>> {
        let (width, height) = photo.dimensions();
        let longer = width.max(height);
        let side = self.config.max_detection_side;
        if longer <= side {
            return self.detect_as_given(photo);
        }
        let shrink = |length: u32| ((length as u64 * side as u64) / longer as u64).max(1) as u32;
        let small = image::imageops::thumbnail(photo, shrink(width), shrink(height));
        let (sx, sy) = (
            width as f32 / small.width() as f32,
            height as f32 / small.height() as f32,
        );
        Ok(self
            .detect_as_given(&small)?
            .into_iter()
            .map(|face| Face {
                bbox: face.bbox.scaled(sx, sy),
                score: face.score,
                landmarks: face.landmarks.map(|[x, y]| [x * sx, y * sy]),
            })
            .collect())
    }

    /// The cascade on `photo` at its own size.
    fn detect_as_given(&self, photo: &RgbImage) -> Result<Vec<Face>> {
        let proposals = self.propose(photo)?;
        let refined = self.refine(photo, proposals)?;
        let mut faces = self.output(photo, refined)?;
        faces.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
        Ok(faces)
    }

    /// Stage 1: P-Net over the pyramid, suppression per scale (IoU 0.5) and
    /// over all scales (0.7), then P-Net's regression and squaring.
    fn propose(&self, photo: &RgbImage) -> Result<Vec<Candidate>> {
        let (width, height) = (photo.width() as usize, photo.height() as usize);
        let mut all = Vec::new();
        for scale in self.config.scales(width, height) {
            let scaled_h = (height as f64 * scale + 1.0) as usize;
            let scaled_w = (width as f64 * scale + 1.0) as usize;
            let mut planes = vec![0f32; 3 * scaled_h * scaled_w];
            area_resample_into(
                photo,
                Region::whole(photo),
                (scaled_h, scaled_w),
                &mut planes,
                Rows::Parallel,
            );
            let input = Tensor::from_vec(planes, (1, 3, scaled_h, scaled_w), &self.device)?;
            let maps = self.pnet.forward(&input)?;
            let probability = maps.probability.to_vec2::<f32>()?;
            let regression = maps.regression.to_vec3::<f32>()?;
            let scale = scale as f32;
            let mut found = Vec::new();
            for (row, scores) in probability.iter().enumerate() {
                for (column, &score) in scores.iter().enumerate() {
                    if score < self.config.thresholds[0] {
                        continue;
                    }
                    let corner = |cell: usize| ((CELL_STRIDE * cell + 1) as f32 / scale).floor();
                    let far = |cell: usize| ((CELL_STRIDE * cell + CELL) as f32 / scale).floor();
                    found.push(Candidate {
                        x1: corner(column),
                        y1: corner(row),
                        x2: far(column),
                        y2: far(row),
                        score,
                        offsets: std::array::from_fn(|k| regression[k][row][column]),
                    });
                }
            }
            let kept = suppress(&found, 0.5, Overlap::Union);
            all.extend(pick(&found, &kept));
        }
        let kept = suppress(&all, 0.7, Overlap::Union);
        Ok(pick(&all, &kept)
            .iter()
            .map(|c| c.regressed(Sides::AsGiven).squared())
            .collect())
    }

    /// Stage 2: R-Net on 24×24 crops, threshold, suppression (IoU 0.7),
    /// R-Net's regression and squaring.
    fn refine(&self, photo: &RgbImage, proposals: Vec<Candidate>) -> Result<Vec<Candidate>> {
        let Some((boxes, scores)) = self.score_crops(photo, proposals, 24, |x| self.rnet.forward(x))? else {
            return Ok(Vec::new());
        };
        let (passed, _) = self.passing(&boxes, &scores, self.config.thresholds[1])?;
        let kept = suppress(&passed, 0.7, Overlap::Union);
        Ok(pick(&passed, &kept)
            .iter()
            .map(|c| c.regressed(Sides::PlusOne).squared())
            .collect())
    }

    /// Stage 3: O-Net on 48×48 crops, threshold, landmarks, O-Net's
    /// regression, suppression by overlap of the smaller box (0.7).
    fn output(&self, photo: &RgbImage, refined: Vec<Candidate>) -> Result<Vec<Face>> {
        let Some((boxes, scores)) = self.score_crops(photo, refined, 48, |x| self.onet.forward(x))? else {
            return Ok(Vec::new());
        };
        let landmarks = match &scores.landmarks {
            Some(landmarks) => landmarks.to_vec2::<f32>()?,
            None => unreachable!("O-Net always places landmarks"),
        };
        let (passed, crop_indices) = self.passing(&boxes, &scores, self.config.thresholds[2])?;
        // Landmarks are placed in the box O-Net saw, before its regression.
        let points: Vec<[[f32; 2]; 5]> = passed
            .iter()
            .zip(&crop_indices)
            .map(|(b, &i)| {
                let (l, width, height) = (&landmarks[i], b.x2 - b.x1 + 1.0, b.y2 - b.y1 + 1.0);
                std::array::from_fn(|k| [width * l[k] + b.x1 - 1.0, height * l[k + 5] + b.y1 - 1.0])
            })
            .collect();
        let regressed: Vec<Candidate> = passed.iter().map(|c| c.regressed(Sides::PlusOne)).collect();
        let kept = suppress(&regressed, 0.7, Overlap::Smaller);
        Ok(kept
            .into_iter()
            .map(|i| {
                let c = regressed[i];
                Face {
                    bbox: FaceBox::from_corners([c.x1, c.y1, c.x2, c.y2]),
                    score: c.score,
                    landmarks: points[i],
                }
            })
            .collect())
    }

    /// Crops every candidate that overlaps the photo, resamples it to
    /// `side × side` and runs `network` on the batch. Returns the boxes that
    /// were cropped with the network's scores, or `None` for no crop.
    fn score_crops(
        &self,
        photo: &RgbImage,
        candidates: Vec<Candidate>,
        side: usize,
        network: impl Fn(&Tensor) -> Result<CropScores>,
    ) -> Result<Option<(Vec<Candidate>, CropScores)>> {
        let (width, height) = (photo.width() as usize, photo.height() as usize);
        let cropped: Vec<(Candidate, Region)> = candidates
            .into_iter()
            .filter_map(|c| c.crop(width, height).map(|region| (c, region)))
            .collect();
        if cropped.is_empty() {
            return Ok(None);
        }
        let crop_len = 3 * side * side;
        let mut batch = vec![0f32; cropped.len() * crop_len];
        batch
            .par_chunks_mut(crop_len)
            .zip(&cropped)
            .for_each(|(out, (_, region))| area_resample_into(photo, *region, (side, side), out, Rows::Sequential));
        let input = Tensor::from_vec(batch, (cropped.len(), 3, side, side), &self.device)?;
        let scores = network(&input)?;
        Ok(Some((cropped.into_iter().map(|(c, _)| c).collect(), scores)))
    }

    /// The boxes whose new score exceeds `threshold`, carrying that score and
    /// the stage's regression offsets, and each one's index among `boxes`.
    fn passing(
        &self,
        boxes: &[Candidate],
        scores: &CropScores,
        threshold: f32,
    ) -> Result<(Vec<Candidate>, Vec<usize>)> {
        let probability = scores.probability.to_vec1::<f32>()?;
        let regression = scores.regression.to_vec2::<f32>()?;
        Ok(boxes
            .iter()
            .zip(probability)
            .zip(regression)
            .enumerate()
            .filter(|(_, ((_, p), _))| *p > threshold)
            .map(|(i, ((b, score), offsets))| {
                let passed = Candidate {
                    score,
                    offsets: [offsets[0], offsets[1], offsets[2], offsets[3]],
                    ..*b
                };
                (passed, i)
            })
            .unzip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_starts_at_the_smallest_face_and_stops_at_the_window() {
        let config = DetectorConfig::default();
        let scales = config.scales(640, 480);
        assert_eq!(scales[0], 12.0 / 20.0);
        for pair in scales.windows(2) {
            assert!((pair[1] / pair[0] - 0.709).abs() < 1e-12);
        }
        let last = scales[scales.len() - 1];
        assert!(480.0 * last >= 12.0 && 480.0 * last * 0.709 < 12.0, "{scales:?}");
        // A photo smaller than the smallest face gets no scale at all.
        assert!(config.scales(19, 300).is_empty());
    }

    #[test]
    fn settings_out_of_range_are_refused_with_the_value() {
        let bad = [
            DetectorConfig {
                min_face_size: 0.0,
                ..Default::default()
            },
            DetectorConfig {
                thresholds: [0.6, 1.5, 0.7],
                ..Default::default()
            },
            DetectorConfig {
                pyramid_factor: 1.0,
                ..Default::default()
            },
            DetectorConfig {
                max_detection_side: 11,
                ..Default::default()
            },
        ];
        for config in bad {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.starts_with("face detector: "), "{message}");
        }
        DetectorConfig::default().validate().unwrap();
    }
}
