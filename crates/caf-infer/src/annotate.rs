//! A picture for people who would rather look than read: the photo with
//! every face's box and reading, beside the circumplex with one numbered
//! point per face and the emotion words at their ticks.

use image::imageops::{self, FilterType};
use image::RgbImage;
use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, Rect, Stroke, Transform};

use crate::circumplex::{Va, EMOTIONS};
use crate::photo::{FaceOrigin, FacePrediction};
use crate::text::{draw_text, measure, Anchor};

/// Height of the picture, and side of the circumplex panel, in pixels.
pub const PANEL: u32 = 480;

/// Circle radius as a share of the panel's side: room for the words outside.
const RADIUS: f32 = 0.34;

const LABEL_SIZE: f32 = 17.0;

/// One colour per face, repeating after six.
const FACE_COLOURS: [[u8; 3]; 6] = [
    [220, 30, 30],
    [30, 90, 220],
    [20, 150, 60],
    [200, 120, 0],
    [150, 40, 170],
    [0, 150, 160],
];

fn colour(index: usize) -> [u8; 3] {
    FACE_COLOURS[index % FACE_COLOURS.len()]
}

/// The photo (scaled to [`PANEL`] px high) with each face's box and label
/// (`#index emotion V… A…`) in the face's colour, and on the right the
/// circumplex: unit circle, axes, quadrant tints, the words of [`EMOTIONS`]
/// at their ticks, and one numbered point per face.
pub fn photo_annotation(photo: &RgbImage, faces: &[FacePrediction]) -> RgbImage {
    path_annotation(photo, faces, &[])
}

/// [`photo_annotation`], with a path on the circumplex per `(index, readings)`
/// in `paths`, oldest first, drawn in the colour of the face of that index
/// under the points (a video frame's faces with their recent readings).
pub fn path_annotation(photo: &RgbImage, faces: &[FacePrediction], paths: &[(usize, Vec<Va>)]) -> RgbImage {
    let scale = PANEL as f32 / photo.height().max(1) as f32;
    let width = ((photo.width() as f32 * scale).round() as u32).clamp(1, 4 * PANEL);
    let scale_x = width as f32 / photo.width().max(1) as f32;
    let shown = imageops::resize(photo, width, PANEL, FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(width + PANEL, PANEL, image::Rgb([255, 255, 255]));
    imageops::replace(&mut canvas, &shown, 0, 0);
    imageops::replace(&mut canvas, &circumplex_panel(faces, paths), width as i64, 0);

    let mut labels = Vec::new();
    if let Some(mut pixmap) = pixmap_of(&canvas) {
        for face in faces {
            let b = face.face;
            let (x, y, w, h) = (b.x * scale_x, b.y * scale, b.width * scale_x, b.height * scale);
            let label = label(face);
            let (text_w, text_h) = measure(&label, LABEL_SIZE);
            let framed = matches!(
                face.origin,
                FaceOrigin::Detected | FaceOrigin::Given | FaceOrigin::Carried
            );
            if framed {
                stroke_rect(&mut pixmap, (x, y, w, h), colour(face.index), 3.0);
            }
            // Above the box when there is room, else inside its top edge.
            let top = if framed && y - text_h - 6.0 >= 0.0 {
                y - text_h - 6.0
            } else {
                y.max(0.0) + 4.0
            };
            let left = x.clamp(0.0, (width as f32 - text_w - 6.0).max(0.0));
            fill_rect(
                &mut pixmap,
                (left, top, text_w + 6.0, text_h + 4.0),
                [255, 255, 255],
                210,
            );
            labels.push((label, (left + 3.0, top + 2.0), colour(face.index)));
        }
        canvas = rgb_of(&pixmap);
    }
    for (label, at, ink) in labels {
        draw_text(&mut canvas, &label, at, Anchor::TopLeft, LABEL_SIZE, ink);
    }
    canvas
}

fn label(face: &FacePrediction) -> String {
    let va = face.va;
    let reading = format!("{} V{:+.2} A{:+.2}", va.emotion(), va.valence, va.arousal);
    match face.origin {
        FaceOrigin::Detected | FaceOrigin::Given | FaceOrigin::Carried => format!("#{} {reading}", face.index),
        FaceOrigin::Whole => format!("whole picture: {reading}"),
        FaceOrigin::NoFaceFound => format!("no face found, whole picture: {reading}"),
    }
}

fn circumplex_panel(faces: &[FacePrediction], paths: &[(usize, Vec<Va>)]) -> RgbImage {
    let side = PANEL as f32;
    let Some(mut pixmap) = Pixmap::new(PANEL, PANEL) else {
        return RgbImage::from_pixel(PANEL, PANEL, image::Rgb([255, 255, 255]));
    };
    pixmap.fill(Color::WHITE);
    let centre = side / 2.0;
    let radius = side * RADIUS;
    // Plane coordinates (valence right, arousal up) to pixels.
    let at = |v: f32, a: f32| (centre + v * radius, centre - a * radius);
    let (left, top) = at(-1.0, 1.0);
    fill_rect(&mut pixmap, (centre, top, radius, radius), [255, 200, 120], 70);
    fill_rect(&mut pixmap, (left, top, radius, radius), [230, 90, 90], 60);
    fill_rect(&mut pixmap, (left, centre, radius, radius), [110, 140, 230], 60);
    fill_rect(&mut pixmap, (centre, centre, radius, radius), [120, 200, 140], 60);

    let mut outline = PathBuilder::new();
    outline.push_circle(centre, centre, radius);
    let (x0, y0) = at(-1.1, 0.0);
    let (x1, _) = at(1.1, 0.0);
    outline.move_to(x0, y0);
    outline.line_to(x1, y0);
    let (_, ya) = at(0.0, 1.1);
    let (_, yb) = at(0.0, -1.1);
    outline.move_to(centre, ya);
    outline.line_to(centre, yb);
    for (_, degrees) in EMOTIONS {
        let (c, s) = (degrees.to_radians().cos(), degrees.to_radians().sin());
        let (xi, yi) = at(0.92 * c, 0.92 * s);
        let (xo, yo) = at(1.08 * c, 1.08 * s);
        outline.move_to(xi, yi);
        outline.line_to(xo, yo);
    }
    if let Some(path) = outline.finish() {
        let thin = Stroke {
            width: 1.5,
            ..Stroke::default()
        };
        pixmap.stroke_path(&path, &paint([90, 90, 90], 255), &thin, Transform::identity(), None);
    }

    let on_panel = |va: &Va| {
        let (v, a) = (va.valence.clamp(-1.2, 1.2), va.arousal.clamp(-1.2, 1.2));
        (v.is_finite() && a.is_finite()).then(|| at(v, a))
    };
    for (index, readings) in paths {
        let mut line = PathBuilder::new();
        for (k, (x, y)) in readings.iter().filter_map(on_panel).enumerate() {
            if k == 0 {
                line.move_to(x, y);
            } else {
                line.line_to(x, y);
            }
        }
        if let Some(path) = line.finish() {
            let stroke = Stroke {
                width: 2.5,
                ..Stroke::default()
            };
            pixmap.stroke_path(&path, &paint(colour(*index), 170), &stroke, Transform::identity(), None);
        }
    }

    let mut points = Vec::new();
    for face in faces {
        let shown = Va {
            valence: face.va.valence.clamp(-1.2, 1.2),
            arousal: face.va.arousal.clamp(-1.2, 1.2),
        };
        if !(shown.valence.is_finite() && shown.arousal.is_finite()) {
            continue;
        }
        let (x, y) = at(shown.valence, shown.arousal);
        if let Some(dot) = PathBuilder::from_circle(x, y, 7.0) {
            let ink = colour(face.index);
            pixmap.fill_path(&dot, &paint(ink, 255), FillRule::Winding, Transform::identity(), None);
            let ring = Stroke {
                width: 2.0,
                ..Stroke::default()
            };
            pixmap.stroke_path(&dot, &paint([0, 0, 0], 255), &ring, Transform::identity(), None);
            points.push((face.index, (x, y), ink));
        }
    }

    let mut panel = rgb_of(&pixmap);
    let grey = [70, 70, 70];
    for (word, degrees) in EMOTIONS {
        let (c, s) = (degrees.to_radians().cos(), degrees.to_radians().sin());
        let (wx, wy) = at(1.12 * c, 1.12 * s);
        let (text_w, _) = measure(word, LABEL_SIZE);
        // Push the word outward by half its width so it clears the tick.
        draw_text(
            &mut panel,
            word,
            (wx + c * text_w / 2.0, wy),
            Anchor::Centre,
            LABEL_SIZE,
            grey,
        );
    }
    let (vx, vy) = at(1.1, 0.0);
    draw_text(
        &mut panel,
        "valence",
        (vx - 58.0, vy + 6.0),
        Anchor::TopLeft,
        LABEL_SIZE - 2.0,
        grey,
    );
    let (ax, ay) = at(0.0, 1.1);
    draw_text(
        &mut panel,
        "arousal",
        (ax + 6.0, ay),
        Anchor::TopLeft,
        LABEL_SIZE - 2.0,
        grey,
    );
    for (index, (x, y), ink) in points {
        draw_text(
            &mut panel,
            &index.to_string(),
            (x + 10.0, y - 22.0),
            Anchor::TopLeft,
            LABEL_SIZE,
            ink,
        );
    }
    panel
}

fn paint([r, g, b]: [u8; 3], alpha: u8) -> Paint<'static> {
    let mut paint = Paint::default();
    paint.set_color_rgba8(r, g, b, alpha);
    paint.anti_alias = true;
    paint
}

fn fill_rect(pixmap: &mut Pixmap, (x, y, w, h): (f32, f32, f32, f32), rgb: [u8; 3], alpha: u8) {
    if let Some(rect) = Rect::from_xywh(x, y, w, h) {
        pixmap.fill_rect(rect, &paint(rgb, alpha), Transform::identity(), None);
    }
}

fn stroke_rect(pixmap: &mut Pixmap, (x, y, w, h): (f32, f32, f32, f32), rgb: [u8; 3], width: f32) {
    if let Some(rect) = Rect::from_xywh(x, y, w, h) {
        let path = PathBuilder::from_rect(rect);
        let stroke = Stroke {
            width,
            ..Stroke::default()
        };
        pixmap.stroke_path(&path, &paint(rgb, 255), &stroke, Transform::identity(), None);
    }
}

/// An opaque pixmap holding `image`.
fn pixmap_of(image: &RgbImage) -> Option<Pixmap> {
    let mut pixmap = Pixmap::new(image.width(), image.height())?;
    for (out, pixel) in pixmap.data_mut().chunks_exact_mut(4).zip(image.pixels()) {
        out.copy_from_slice(&[pixel[0], pixel[1], pixel[2], 255]);
    }
    Some(pixmap)
}

/// An opaque pixmap's pixels (premultiplied RGBA with alpha 255 is plain RGB).
fn rgb_of(pixmap: &Pixmap) -> RgbImage {
    let rgb: Vec<u8> = pixmap.data().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    RgbImage::from_raw(pixmap.width(), pixmap.height(), rgb)
        .unwrap_or_else(|| RgbImage::new(pixmap.width(), pixmap.height()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use caf_data::FaceBox;

    fn face(index: usize, x: f32, valence: f32, arousal: f32) -> FacePrediction {
        FacePrediction {
            index,
            face: FaceBox {
                x,
                y: 100.0,
                width: 60.0,
                height: 80.0,
            },
            score: Some(0.99),
            landmarks: None,
            origin: FaceOrigin::Detected,
            va: Va { valence, arousal },
        }
    }

    fn close(a: [u8; 3], b: [u8; 3]) -> bool {
        a.iter().zip(&b).all(|(x, y)| (*x as i32 - *y as i32).abs() < 40)
    }

    #[test]
    fn every_face_gets_its_box_and_its_point_in_its_colour() {
        // A 400×240 grey photo: shown at twice its size (480 px high).
        let photo = RgbImage::from_pixel(400, 240, image::Rgb([128, 128, 128]));
        let faces = [face(0, 40.0, 0.5, -0.5), face(1, 250.0, -0.6, 0.4)];
        let picture = photo_annotation(&photo, &faces);
        assert_eq!(picture.dimensions(), (800 + PANEL, PANEL));
        // Each box's left edge, halfway down, in the face's colour.
        for f in &faces {
            let (x, y) = ((f.face.x * 2.0) as u32, ((f.face.y + 40.0) * 2.0) as u32);
            let pixel = picture.get_pixel(x, y).0;
            assert!(
                close(pixel, colour(f.index)),
                "face {}: {pixel:?} at ({x}, {y})",
                f.index
            );
        }
        // Each point where its reading lies, and nothing at the mirror image.
        let centre = 800.0 + PANEL as f32 / 2.0;
        let radius = PANEL as f32 * RADIUS;
        for f in &faces {
            let x = centre + f.va.valence * radius;
            let y = PANEL as f32 / 2.0 - f.va.arousal * radius;
            let pixel = picture.get_pixel(x as u32, y as u32).0;
            assert!(close(pixel, colour(f.index)), "point {}: {pixel:?}", f.index);
            let mirrored = picture.get_pixel((2.0 * centre - x) as u32, y as u32).0;
            assert!(!close(mirrored, colour(f.index)), "mirror of {}: {mirrored:?}", f.index);
        }
        // Words are drawn: dark ink near the "happy" tick (10°), right of the circle.
        let (c, s) = (10f32.to_radians().cos(), 10f32.to_radians().sin());
        let (wx, wy) = (centre + 1.12 * c * radius, PANEL as f32 / 2.0 - 1.12 * s * radius);
        let inked = (0..50)
            .flat_map(|dx| (-8..8).map(move |dy| (wx as i64 + dx, wy as i64 + dy)))
            .filter(|&(x, y)| picture.get_pixel(x as u32, y as u32).0.iter().all(|&v| v < 140))
            .count();
        assert!(inked > 20, "the word `happy` is missing ({inked} dark pixels)");
    }

    #[test]
    fn a_face_s_recent_readings_are_a_path_in_its_colour() {
        let photo = RgbImage::from_pixel(400, 240, image::Rgb([128, 128, 128]));
        let now = face(2, 40.0, 0.6, 0.0);
        // From (-0.6, 0) to (0.6, 0): a line along the valence axis.
        let path: Vec<Va> = (0..=12)
            .map(|k| Va {
                valence: -0.6 + 0.1 * k as f32,
                arousal: 0.0,
            })
            .collect();
        let centre = 800.0 + PANEL as f32 / 2.0;
        let radius = PANEL as f32 * RADIUS;
        let probe = |picture: &RgbImage| picture.get_pixel((centre - 0.3 * radius) as u32, PANEL / 2).0;
        let with_path = path_annotation(&photo, &[now], &[(2, path)]);
        assert!(close(probe(&with_path), colour(2)), "{:?}", probe(&with_path));
        let without = photo_annotation(&photo, &[now]);
        assert!(!close(probe(&without), colour(2)), "{:?}", probe(&without));
    }
}
