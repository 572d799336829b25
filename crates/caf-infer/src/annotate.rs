//! A picture for people who would rather look than read: the face beside
//! the circumplex, with the predicted point.

use image::imageops::{self, FilterType};
use image::RgbImage;
use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, Rect, Stroke, Transform};

use crate::circumplex::{Va, EMOTIONS};

/// Height of the picture, and side of the circumplex panel, in pixels.
pub const PANEL: u32 = 256;

/// The face (scaled to [`PANEL`] px high) on the left, the circumplex on the
/// right: unit circle, axes, quadrant tints (warm for positive valence),
/// a tick for every word of [`EMOTIONS`], and the point in red.
pub fn annotation(face: &RgbImage, va: Va) -> RgbImage {
    let width = ((face.width() as f32 * PANEL as f32 / face.height().max(1) as f32).round() as u32).clamp(1, 4 * PANEL);
    let face = imageops::resize(face, width, PANEL, FilterType::Triangle);
    let panel = circumplex_panel(va);
    let mut out = RgbImage::from_pixel(width + PANEL, PANEL, image::Rgb([255, 255, 255]));
    imageops::replace(&mut out, &face, 0, 0);
    imageops::replace(&mut out, &panel, width as i64, 0);
    out
}

fn circumplex_panel(va: Va) -> RgbImage {
    let side = PANEL as f32;
    let Some(mut pixmap) = Pixmap::new(PANEL, PANEL) else {
        return RgbImage::from_pixel(PANEL, PANEL, image::Rgb([255, 255, 255]));
    };
    pixmap.fill(Color::WHITE);
    let centre = side / 2.0;
    let radius = side * 0.42;
    // Plane coordinates (valence right, arousal up) to pixels.
    let at = |v: f32, a: f32| (centre + v * radius, centre - a * radius);
    let paint = |r: u8, g: u8, b: u8, alpha: u8| {
        let mut paint = Paint::default();
        paint.set_color_rgba8(r, g, b, alpha);
        paint.anti_alias = true;
        paint
    };
    let fill_rect = |pixmap: &mut Pixmap, x: f32, y: f32, w: f32, h: f32, p: &Paint| {
        if let Some(rect) = Rect::from_xywh(x, y, w, h) {
            pixmap.fill_rect(rect, p, Transform::identity(), None);
        }
    };
    let (left, top) = at(-1.0, 1.0);
    fill_rect(&mut pixmap, centre, top, radius, radius, &paint(255, 200, 120, 70));
    fill_rect(&mut pixmap, left, top, radius, radius, &paint(230, 90, 90, 60));
    fill_rect(&mut pixmap, left, centre, radius, radius, &paint(110, 140, 230, 60));
    fill_rect(&mut pixmap, centre, centre, radius, radius, &paint(120, 200, 140, 60));

    let grey = paint(90, 90, 90, 255);
    let thin = Stroke {
        width: 1.5,
        ..Stroke::default()
    };
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
        pixmap.stroke_path(&path, &grey, &thin, Transform::identity(), None);
    }

    let shown = Va {
        valence: va.valence.clamp(-1.2, 1.2),
        arousal: va.arousal.clamp(-1.2, 1.2),
    };
    if shown.valence.is_finite() && shown.arousal.is_finite() {
        let (x, y) = at(shown.valence, shown.arousal);
        if let Some(dot) = PathBuilder::from_circle(x, y, 7.0) {
            pixmap.fill_path(
                &dot,
                &paint(220, 30, 30, 255),
                FillRule::Winding,
                Transform::identity(),
                None,
            );
            let ring = Stroke {
                width: 2.0,
                ..Stroke::default()
            };
            pixmap.stroke_path(&dot, &paint(0, 0, 0, 255), &ring, Transform::identity(), None);
        }
    }
    // Opaque background, so premultiplied RGBA is plain RGB.
    let rgb: Vec<u8> = pixmap.data().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    RgbImage::from_raw(PANEL, PANEL, rgb).unwrap_or_else(|| RgbImage::new(PANEL, PANEL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_point_is_drawn_where_the_prediction_lies() {
        let face = RgbImage::from_pixel(100, 128, image::Rgb([0, 255, 0]));
        let picture = annotation(
            &face,
            Va {
                valence: 0.5,
                arousal: -0.5,
            },
        );
        assert_eq!(picture.dimensions(), (200 + PANEL, PANEL));
        assert_eq!(picture.get_pixel(10, 10).0, [0, 255, 0]);
        let centre = 200.0 + PANEL as f32 / 2.0;
        let radius = PANEL as f32 * 0.42;
        let (x, y) = (centre + 0.5 * radius, PANEL as f32 / 2.0 + 0.5 * radius);
        let red = picture.get_pixel(x as u32, y as u32).0;
        assert!(red[0] > 200 && red[1] < 60 && red[2] < 60, "{red:?}");
        let mirrored = picture.get_pixel((2.0 * centre - x) as u32, y as u32).0;
        assert!(mirrored[0] < 200 || mirrored[1] > 60, "{mirrored:?}");
    }
}
