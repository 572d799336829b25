//! From an image file to a normalised `3×H×W` f32 array, as torchvision's
//! `Resize(resize)`, `RandomCrop(crop)` / `CenterCrop(crop)`,
//! `RandomHorizontalFlip()`, `ColorJitter`, `ToTensor()`, `Normalize(mean, std)`.

use std::borrow::Cow;

use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::decode::decode;
use crate::sample::{DataError, FaceBox, Sample};
use caf_rng::Rng;

/// ImageNet channel means and standard deviations (RGB).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Sizes and normalisation shared by training and evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// The shorter side is resized to this (antialiased bilinear, as PIL).
    pub resize: u32,
    /// Side of the square crop.
    pub crop: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// ImageNet normalisation with the given sizes (the paper: 256, 224).
    pub fn imagenet(resize: u32, crop: u32) -> Result<Self, DataError> {
        if crop == 0 || resize < crop {
            return Err(DataError::Invalid(format!(
                "resize {resize} must be at least the crop {crop} (> 0)"
            )));
        }
        Ok(Self {
            resize,
            crop,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        })
    }

    /// Values per image: `3 × crop × crop`.
    pub fn image_len(&self) -> usize {
        3 * (self.crop as usize) * (self.crop as usize)
    }
}

/// Random photometric changes, as torchvision's `ColorJitter(b, c, s)`
/// (factors drawn uniformly from `[1 − x, 1 + x]`, applied in the order
/// brightness, contrast, saturation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
}

/// Training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Random crop position (otherwise the centre).
    pub random_crop: bool,
    /// Mirror with probability ½.
    pub horizontal_flip: bool,
    pub color_jitter: Option<ColorJitter>,
}

impl Augment {
    /// The paper's training augmentation: random crop and horizontal flip.
    pub fn paper() -> Self {
        Self {
            random_crop: true,
            horizontal_flip: true,
            color_jitter: None,
        }
    }
}

/// Reads and prepares one sample: evaluation preprocessing when `augment`
/// is `None`, otherwise training augmentation drawn from `rng`.
pub fn load_sample(
    sample: &Sample,
    preprocess: &Preprocess,
    augment: Option<(&Augment, &mut Rng)>,
) -> Result<Vec<f32>, DataError> {
    let image = decode(&sample.path)?;
    Ok(prepare(&image, sample.face, preprocess, augment))
}

/// The part of `image` the network sees before resizing: the face box
/// clipped to the image, or the whole image without a box (or when nothing
/// of the box is inside).
pub fn face_region(image: &RgbImage, face: Option<FaceBox>) -> Cow<'_, RgbImage> {
    match face.and_then(|f| clamp_box(f, image.width(), image.height())) {
        Some((x, y, w, h)) => Cow::Owned(imageops::crop_imm(image, x, y, w, h).to_image()),
        None => Cow::Borrowed(image),
    }
}

/// Crops to the face (if any), resizes, crops, augments and normalises.
pub fn prepare(
    image: &RgbImage,
    face: Option<FaceBox>,
    preprocess: &Preprocess,
    augment: Option<(&Augment, &mut Rng)>,
) -> Vec<f32> {
    let image = face_region(image, face);
    let (width, height) = resized_size(image.width(), image.height(), preprocess.resize);
    let resized = imageops::resize(&*image, width, height, FilterType::Triangle);
    let crop = preprocess.crop;
    let (mut x0, mut y0) = (centre(width, crop), centre(height, crop));
    let mut flip = false;
    let mut jitter = [1f32; 3];
    if let Some((augment, rng)) = augment {
        if augment.random_crop {
            x0 = rng.below((width - crop + 1) as usize) as u32;
            y0 = rng.below((height - crop + 1) as usize) as u32;
        }
        flip = augment.horizontal_flip && rng.chance(0.5);
        if let Some(c) = augment.color_jitter {
            let mut factor = |x: f32| rng.uniform((1.0 - x as f64).max(0.0), 1.0 + x as f64) as f32;
            jitter = [factor(c.brightness), factor(c.contrast), factor(c.saturation)];
        }
    }
    let mut rgb = vec![0f32; 3 * (crop * crop) as usize];
    for y in 0..crop {
        for x in 0..crop {
            let source_x = if flip { x0 + crop - 1 - x } else { x0 + x };
            let pixel = resized.get_pixel(source_x, y0 + y);
            let at = 3 * (y * crop + x) as usize;
            for c in 0..3 {
                rgb[at + c] = pixel[c] as f32 / 255.0;
            }
        }
    }
    if jitter != [1.0; 3] {
        apply_jitter(&mut rgb, jitter);
    }
    to_normalised_chw(&rgb, crop as usize, preprocess)
}

/// torchvision's `Resize(int)`: the shorter side becomes `target`, the longer
/// keeps the aspect ratio (truncated).
fn resized_size(width: u32, height: u32, target: u32) -> (u32, u32) {
    if width <= height {
        (
            target,
            ((target as u64 * height as u64) / width as u64).max(target as u64) as u32,
        )
    } else {
        (
            ((target as u64 * width as u64) / height as u64).max(target as u64) as u32,
            target,
        )
    }
}

/// torchvision's centre-crop offset: `round((size − crop) / 2)`.
fn centre(size: u32, crop: u32) -> u32 {
    ((size - crop) as f64 / 2.0).round() as u32
}

/// The face box clipped to the image, or `None` when nothing of it is inside.
fn clamp_box(face: FaceBox, width: u32, height: u32) -> Option<(u32, u32, u32, u32)> {
    let x0 = face.x.max(0.0).floor() as u32;
    let y0 = face.y.max(0.0).floor() as u32;
    let x1 = ((face.x + face.width).min(width as f32).ceil() as u32).min(width);
    let y1 = ((face.y + face.height).min(height as f32).ceil() as u32).min(height);
    (x1 > x0 + 1 && y1 > y0 + 1).then(|| (x0, y0, x1 - x0, y1 - y0))
}

/// Brightness, contrast (around the mean grey level), saturation (towards
/// each pixel's grey), clamped to [0, 1], on interleaved RGB.
fn apply_jitter(rgb: &mut [f32], [brightness, contrast, saturation]: [f32; 3]) {
    let grey = |p: &[f32]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    for v in rgb.iter_mut() {
        *v = (*v * brightness).clamp(0.0, 1.0);
    }
    let mean = rgb.chunks(3).map(grey).sum::<f32>() / (rgb.len() / 3) as f32;
    for v in rgb.iter_mut() {
        *v = ((*v - mean) * contrast + mean).clamp(0.0, 1.0);
    }
    for pixel in rgb.chunks_mut(3) {
        let g = grey(pixel);
        for v in pixel.iter_mut() {
            *v = ((*v - g) * saturation + g).clamp(0.0, 1.0);
        }
    }
}

fn to_normalised_chw(rgb: &[f32], side: usize, preprocess: &Preprocess) -> Vec<f32> {
    let plane = side * side;
    let mut chw = vec![0f32; 3 * plane];
    for (i, pixel) in rgb.chunks(3).enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = (pixel[c] - preprocess.mean[c]) / preprocess.std[c];
        }
    }
    chw
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
        })
    }

    #[test]
    fn sizes_follow_torchvision() {
        assert_eq!(resized_size(640, 480, 256), (341, 256));
        assert_eq!(resized_size(480, 640, 256), (256, 341));
        assert_eq!(resized_size(100, 100, 256), (256, 256));
        assert_eq!(centre(341, 224), 59); // round(58.5) = 59 (half away from zero)
        assert_eq!(centre(256, 224), 16);
    }

    #[test]
    fn evaluation_is_deterministic_and_normalised() {
        let preprocess = Preprocess {
            resize: 40,
            crop: 32,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let image = RgbImage::from_pixel(80, 60, Rgb([255, 0, 51]));
        let out = prepare(&image, None, &preprocess, None);
        assert_eq!(out.len(), preprocess.image_len());
        let plane = 32 * 32;
        assert!(out[..plane].iter().all(|&v| (v - 1.0).abs() < 1e-6));
        assert!(out[plane..2 * plane].iter().all(|&v| v.abs() < 1e-6));
        assert!(out[2 * plane..].iter().all(|&v| (v - 0.2).abs() < 1e-6));
        let imagenet = Preprocess::imagenet(40, 32).expect("sizes");
        let normalised = prepare(&image, None, &imagenet, None);
        assert!((normalised[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!(Preprocess::imagenet(20, 32).is_err());
    }

    #[test]
    fn flips_mirror_and_crops_stay_inside() {
        let preprocess = Preprocess {
            resize: 48,
            crop: 48,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let image = gradient(48, 48);
        let plain = prepare(&image, None, &preprocess, None);
        let flip_only = Augment {
            random_crop: false,
            horizontal_flip: true,
            color_jitter: None,
        };
        let mut rng = Rng::new(0);
        let mut flipped = None;
        for _ in 0..20 {
            let out = prepare(&image, None, &preprocess, Some((&flip_only, &mut rng)));
            if out != plain {
                flipped = Some(out);
                break;
            }
        }
        let flipped = flipped.expect("a flip within 20 draws");
        for y in 0..48 {
            for x in 0..48 {
                assert_eq!(flipped[y * 48 + x], plain[y * 48 + 47 - x]);
            }
        }
        let small = Preprocess {
            resize: 48,
            crop: 40,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let jitter = Augment {
            random_crop: true,
            horizontal_flip: true,
            color_jitter: Some(ColorJitter {
                brightness: 0.4,
                contrast: 0.4,
                saturation: 0.4,
            }),
        };
        for seed in 0..20 {
            let out = prepare(&image, None, &small, Some((&jitter, &mut Rng::new(seed))));
            assert_eq!(out.len(), small.image_len());
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn face_boxes_crop_before_resizing() {
        // Left half red, right half blue: a box on the right half gives blue only.
        let image = RgbImage::from_fn(100, 50, |x, _| if x < 50 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) });
        let preprocess = Preprocess {
            resize: 16,
            crop: 16,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let face = FaceBox {
            x: 55.0,
            y: 5.0,
            width: 40.0,
            height: 40.0,
        };
        let out = prepare(&image, Some(face), &preprocess, None);
        assert!(out[..256].iter().all(|&v| v == 0.0) && out[512..].iter().all(|&v| v == 1.0));
        // A box entirely outside the image leaves the image whole.
        assert_eq!(
            clamp_box(
                FaceBox {
                    x: 200.0,
                    y: 0.0,
                    width: 10.0,
                    height: 10.0
                },
                100,
                50
            ),
            None
        );
    }
}
