//! The built-in dataset: synthetic people showing valence and arousal.
//!
//! Real valence–arousal datasets cannot be redistributed, so this one is
//! generated, deterministically from a seed, and written to disk as PNG files
//! plus a generic CSV, so the same loader path as for real data reads it.
//!
//! Every subject has an identity (face shape, skin tone, hair, eye spacing
//! and size, mouth width, brow thickness, background) and a personal
//! expressive style: a gain (some people barely move their face) and a
//! resting expression (an offset). The face shows
//! `clamp(offset + gain · (v, a))`: valence curves the mouth and colours the
//! cheeks, arousal opens the eyes and the mouth and raises the brows. Each
//! image adds nuisance: small rotation, scale and shift, lighting and pixel
//! noise. Recognising (v, a) across people therefore means undoing each
//! person's style: the person-dependence CAF addresses.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;
use tiny_skia::{Color, FillRule, LineCap, Paint, PathBuilder, Pixmap, Rect, Stroke, Transform};

use crate::sample::DataError;
use caf_rng::Rng;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticConfig {
    pub subjects: usize,
    pub images_per_subject: usize,
    /// Side of the square images, in pixels.
    pub size: u32,
    pub seed: u64,
    /// Write JPEG (quality 90) instead of PNG, e.g. to measure JPEG decoding.
    pub jpeg: bool,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            subjects: 40,
            images_per_subject: 60,
            size: 128,
            seed: 0,
            jpeg: false,
        }
    }
}

/// File name of the label CSV inside the output folder.
pub const LABELS_CSV: &str = "labels.csv";

/// The range each person's gain is drawn from, uniformly.
const GAIN: (f64, f64) = (0.25, 1.2);
/// The range each coordinate of each person's offset is drawn from, uniformly.
const OFFSET: (f64, f64) = (-0.3, 0.3);

mod ceiling;
pub use ceiling::{ceiling, AxisCeiling, Ceiling};

/// A subject's looks and expressive style.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Person {
    pub face_width: f32,
    pub face_height: f32,
    pub skin: [u8; 3],
    pub hair: [u8; 3],
    /// Hair volume above the face, as a fraction of the face height.
    pub hair_height: f32,
    pub eye_spacing: f32,
    pub eye_size: f32,
    pub mouth_width: f32,
    pub brow_thickness: f32,
    pub background: [u8; 3],
    /// How strongly the person shows emotion (0.25: barely; 1.2: vividly).
    pub gain: f32,
    /// Resting expression added to every shown (valence, arousal).
    pub offset: [f32; 2],
}

impl Person {
    /// The person of subject `subject` for a seed.
    pub fn new(seed: u64, subject: usize) -> Self {
        let mut rng = Rng::derive(seed, &[subject as u64, 0xfe]);
        let mut r = |lo: f64, hi: f64| rng.uniform(lo, hi) as f32;
        let skin_tone = r(0.0, 1.0);
        let skin = [
            lerp(250.0, 110.0, skin_tone),
            lerp(215.0, 70.0, skin_tone),
            lerp(185.0, 45.0, skin_tone),
        ];
        let hair_shade = r(0.0, 1.0);
        let hair = [
            lerp(30.0, 200.0, hair_shade),
            lerp(20.0, 150.0, hair_shade * hair_shade),
            lerp(15.0, 60.0, hair_shade),
        ];
        Person {
            face_width: r(0.24, 0.33),
            face_height: r(0.31, 0.40),
            skin,
            hair,
            hair_height: r(0.05, 0.35),
            eye_spacing: r(0.20, 0.30),
            eye_size: r(0.035, 0.055),
            mouth_width: r(0.08, 0.15),
            brow_thickness: r(0.008, 0.03),
            background: [r(40.0, 230.0) as u8, r(40.0, 230.0) as u8, r(40.0, 230.0) as u8],
            gain: r(GAIN.0, GAIN.1),
            offset: [r(OFFSET.0, OFFSET.1), r(OFFSET.0, OFFSET.1)],
        }
    }

    /// The expression the face shows for a label.
    pub fn shown(&self, valence: f32, arousal: f32) -> [f32; 2] {
        [
            (self.offset[0] + self.gain * valence).clamp(-1.0, 1.0),
            (self.offset[1] + self.gain * arousal).clamp(-1.0, 1.0),
        ]
    }
}

fn lerp(a: f32, b: f32, t: f32) -> u8 {
    (a + (b - a) * t).round().clamp(0.0, 255.0) as u8
}

/// A label inside the unit circle, denser near neutral: radius `u^1.3`.
pub fn draw_label(rng: &mut Rng) -> [f32; 2] {
    let radius = rng.unit().powf(1.3) * 0.99;
    let angle = rng.uniform(0.0, std::f64::consts::TAU);
    [(radius * angle.cos()) as f32, (radius * angle.sin()) as f32]
}

/// Per-image nuisance.
#[derive(Debug, Clone, Copy)]
struct Nuisance {
    rotation_degrees: f32,
    scale: f32,
    shift: [f32; 2],
    brightness: f32,
    light_slope: f32,
    noise: f32,
}

impl Nuisance {
    fn draw(rng: &mut Rng) -> Self {
        Self {
            rotation_degrees: rng.uniform(-7.0, 7.0) as f32,
            scale: rng.uniform(0.92, 1.08) as f32,
            shift: [rng.uniform(-0.04, 0.04) as f32, rng.uniform(-0.04, 0.04) as f32],
            brightness: rng.uniform(0.8, 1.2) as f32,
            light_slope: rng.uniform(-0.15, 0.15) as f32,
            noise: 4.0,
        }
    }
}

fn paint(rgb: [u8; 3], alpha: u8) -> Paint<'static> {
    let mut paint = Paint::default();
    paint.set_color_rgba8(rgb[0], rgb[1], rgb[2], alpha);
    paint.anti_alias = true;
    paint
}

fn oval(cx: f32, cy: f32, rx: f32, ry: f32) -> Option<tiny_skia::Path> {
    PathBuilder::from_oval(Rect::from_xywh(cx - rx, cy - ry, 2.0 * rx, 2.0 * ry)?)
}

/// Draws one face in unit coordinates (the transform maps them to pixels).
fn draw_face(pixmap: &mut Pixmap, person: &Person, [v, a]: [f32; 2], transform: Transform) {
    let fill = |pixmap: &mut Pixmap, path: Option<tiny_skia::Path>, paint: &Paint| {
        if let Some(path) = path {
            pixmap.fill_path(&path, paint, FillRule::Winding, transform, None);
        }
    };
    let (fw, fh) = (person.face_width, person.face_height);
    let (cx, cy) = (0.5, 0.53);
    fill(
        pixmap,
        oval(
            cx,
            cy - fh * (0.35 + person.hair_height * 0.5),
            fw * 1.08,
            fh * (0.55 + person.hair_height),
        ),
        &paint(person.hair, 255),
    );
    fill(pixmap, oval(cx, cy, fw, fh), &paint(person.skin, 255));
    let cheek = (v.max(0.0) * 150.0) as u8;
    for side in [-1.0, 1.0] {
        fill(
            pixmap,
            oval(cx + side * fw * 0.55, cy + fh * 0.3, fw * 0.2, fh * 0.12),
            &paint([230, 90, 110], cheek),
        );
    }
    let eye_y = cy - fh * 0.15;
    let openness = 0.25 + 0.75 * (0.5 + 0.5 * a);
    let brow_lift = person.eye_size * (1.2 + 1.1 * a);
    for side in [-1.0f32, 1.0] {
        let ex = cx + side * person.eye_spacing * 0.5;
        fill(
            pixmap,
            oval(ex, eye_y, person.eye_size * 1.3, person.eye_size * openness),
            &paint([250, 250, 250], 255),
        );
        let pupil = person.eye_size * 0.6;
        fill(
            pixmap,
            oval(ex, eye_y, pupil, pupil.min(person.eye_size * openness)),
            &paint([35, 25, 20], 255),
        );
        // Brows tilt down towards the nose for negative valence.
        let inner_drop = -v * person.eye_size * 0.6;
        let mut brow = PathBuilder::new();
        brow.move_to(
            ex - side * person.eye_size * 1.5,
            eye_y - brow_lift - person.eye_size + inner_drop,
        );
        brow.line_to(ex + side * person.eye_size * 1.5, eye_y - brow_lift - person.eye_size);
        if let Some(path) = brow.finish() {
            let stroke = Stroke {
                width: person.brow_thickness,
                line_cap: LineCap::Round,
                ..Stroke::default()
            };
            pixmap.stroke_path(&path, &paint(person.hair, 255), &stroke, transform, None);
        }
    }
    let mouth_y = cy + fh * 0.5;
    let half = person.mouth_width * (1.0 + 0.2 * v.max(0.0));
    let curve = 0.09 * v;
    let opening = 0.004 + 0.07 * a.max(0.0) + 0.02 * v.max(0.0);
    let mut mouth = PathBuilder::new();
    mouth.move_to(cx - half, mouth_y - curve * 0.4);
    mouth.quad_to(cx, mouth_y + curve - opening * 0.3, cx + half, mouth_y - curve * 0.4);
    mouth.quad_to(cx, mouth_y + curve + opening, cx - half, mouth_y - curve * 0.4);
    mouth.close();
    fill(pixmap, mouth.finish(), &paint([120, 30, 40], 255));
}

/// Renders one image of `person` showing the label, with the nuisance of `rng`.
pub fn render(person: &Person, label: [f32; 2], size: u32, rng: &mut Rng) -> Result<RgbImage, DataError> {
    let nuisance = Nuisance::draw(rng);
    let mut pixmap =
        Pixmap::new(size, size).ok_or_else(|| DataError::Invalid(format!("cannot draw {size}×{size} images")))?;
    let [r, g, b] = person.background;
    pixmap.fill(Color::from_rgba8(r, g, b, 255));
    let s = size as f32;
    let transform = Transform::from_scale(s, s)
        .pre_translate(0.5 + nuisance.shift[0], 0.5 + nuisance.shift[1])
        .pre_rotate(nuisance.rotation_degrees)
        .pre_scale(nuisance.scale, nuisance.scale)
        .pre_translate(-0.5, -0.5);
    draw_face(&mut pixmap, person, person.shown(label[0], label[1]), transform);
    let mut image = RgbImage::new(size, size);
    for (i, pixel) in image.pixels_mut().enumerate() {
        let (x, rgba) = ((i as u32 % size) as f32 / s - 0.5, &pixmap.data()[4 * i..4 * i + 3]);
        let light = nuisance.brightness * (1.0 + nuisance.light_slope * x);
        for c in 0..3 {
            let value = rgba[c] as f32 * light + nuisance.noise * rng.normal() as f32;
            pixel[c] = value.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(image)
}

fn write_image(image: &RgbImage, path: &Path, jpeg: bool) -> Result<(), DataError> {
    let cannot_write = |e: image::ImageError| DataError::Image {
        path: path.to_path_buf(),
        message: format!("cannot write: {e}"),
    };
    if !jpeg {
        return image.save(path).map_err(cannot_write);
    }
    let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90)
        .encode_image(image)
        .map_err(cannot_write)
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticReport {
    /// The generic CSV (`path,valence,arousal,subject`).
    pub csv: PathBuf,
    /// Root the CSV's paths are relative to.
    pub root: PathBuf,
    pub images: usize,
}

/// Writes the dataset under `out`: `images/sNNN/NNNN.png` (or `.jpg`) and [`LABELS_CSV`].
/// The same config gives byte-identical files.
pub fn generate(out: &Path, config: &SyntheticConfig) -> Result<SyntheticReport, DataError> {
    if config.subjects == 0 || config.images_per_subject == 0 || config.size < 16 {
        return Err(DataError::Invalid(format!(
            "synthetic dataset: need ≥ 1 subject, ≥ 1 image each and size ≥ 16, got {config:?}"
        )));
    }
    let images_dir = out.join("images");
    let rows: Vec<Result<String, DataError>> = (0..config.subjects * config.images_per_subject)
        .into_par_iter()
        .map(|n| {
            let (subject, image) = (n / config.images_per_subject, n % config.images_per_subject);
            let person = Person::new(config.seed, subject);
            let mut rng = Rng::derive(config.seed, &[subject as u64, image as u64, 0x1a]);
            let label = draw_label(&mut rng);
            let extension = if config.jpeg { "jpg" } else { "png" };
            let relative = format!("images/s{subject:03}/{image:04}.{extension}");
            let folder = images_dir.join(format!("s{subject:03}"));
            std::fs::create_dir_all(&folder).map_err(|e| DataError::io(&folder, e))?;
            let path = out.join(&relative);
            let rendered = render(&person, label, config.size, &mut rng)?;
            write_image(&rendered, &path, config.jpeg)?;
            Ok(format!("{relative},{:.6},{:.6},s{subject:03}\n", label[0], label[1]))
        })
        .collect();
    let csv = out.join(LABELS_CSV);
    let mut file = std::fs::File::create(&csv).map_err(|e| DataError::io(&csv, e))?;
    let mut text = String::from("path,valence,arousal,subject\n");
    for row in rows {
        text.push_str(&row?);
    }
    file.write_all(text.as_bytes()).map_err(|e| DataError::io(&csv, e))?;
    Ok(SyntheticReport {
        csv,
        root: out.to_path_buf(),
        images: config.subjects * config.images_per_subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::load_generic_csv;

    #[test]
    fn generates_a_loadable_deterministic_dataset() {
        let config = SyntheticConfig {
            subjects: 3,
            images_per_subject: 4,
            size: 48,
            seed: 5,
            jpeg: false,
        };
        let (a, b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let report = generate(a.path(), &config).expect("generate");
        generate(b.path(), &config).expect("generate");
        assert_eq!(report.images, 12);
        assert_eq!(
            std::fs::read(&report.csv).expect("csv"),
            std::fs::read(b.path().join(LABELS_CSV)).expect("csv")
        );
        let image = "images/s002/0003.png";
        assert_eq!(
            std::fs::read(a.path().join(image)).expect("png"),
            std::fs::read(b.path().join(image)).expect("png")
        );
        let dataset = load_generic_csv(&report.csv, &report.root).expect("load");
        assert_eq!(dataset.len(), 12);
        assert_eq!(dataset.subjects(), ["s000", "s001", "s002"]);
        assert!(dataset.samples.iter().all(|s| s.valence.hypot(s.arousal) < 1.0));
        let other = tempfile::tempdir().expect("dir");
        generate(other.path(), &SyntheticConfig { seed: 6, ..config }).expect("generate");
        assert_ne!(
            std::fs::read(report.csv).expect("csv"),
            std::fs::read(other.path().join(LABELS_CSV)).expect("csv")
        );
    }

    #[test]
    fn writes_decodable_jpeg_when_asked() {
        let dir = tempfile::tempdir().expect("dir");
        let config = SyntheticConfig {
            subjects: 1,
            images_per_subject: 2,
            size: 40,
            seed: 1,
            jpeg: true,
        };
        let report = generate(dir.path(), &config).expect("generate");
        let dataset = load_generic_csv(&report.csv, &report.root).expect("load");
        let path = &dataset.samples[1].path;
        assert_eq!(path.extension().and_then(|e| e.to_str()), Some("jpg"));
        assert_eq!(
            image::ImageFormat::from_path(path).expect("format"),
            image::ImageFormat::Jpeg
        );
        assert_eq!(crate::decode(path).expect("decode").dimensions(), (40, 40));
    }

    #[test]
    fn expression_follows_the_label_and_the_persons_style() {
        let person = Person::new(0, 0);
        let mut rng = Rng::new(1);
        let happy = render(&person, [0.9, 0.3], 64, &mut rng.clone()).expect("render");
        let sad = render(&person, [-0.9, 0.3], 64, &mut rng).expect("render");
        assert_ne!(happy, sad);
        let calm = Person { gain: 0.0, ..person };
        assert_eq!(
            calm.shown(0.9, 0.9),
            calm.shown(-0.9, -0.9),
            "gain 0 shows only the resting face"
        );
        let mut labels = Rng::new(3);
        let radii: Vec<f32> = (0..2000)
            .map(|_| {
                let [v, a] = draw_label(&mut labels);
                v.hypot(a)
            })
            .collect();
        let near = radii.iter().filter(|&&r| r < 0.5).count();
        assert!(radii.iter().all(|&r| r < 1.0));
        assert!(near > 1000, "denser near neutral: {near} of 2000 within radius 0.5");
    }
}
