//! Labels on annotated pictures, set in the Go font (BSD licence, shipped in
//! `fonts/` beside its notice) and rasterised with ab_glyph.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont};
use image::RgbImage;

const GO_REGULAR: &[u8] = include_bytes!("../fonts/Go-Regular.ttf");

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(GO_REGULAR).expect("the shipped Go font parses"))
}

/// Where a label sits relative to its anchor point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The anchor is the label's top-left corner.
    TopLeft,
    /// The anchor is the label's centre.
    Centre,
}

/// Each glyph of `text` at `size` pixels with its pen offset from the start
/// (advances and kerning), and where the pen ends: the text's width. The one
/// layout that both measuring and drawing use.
fn layout(text: &str, size: f32) -> (Vec<(GlyphId, f32)>, f32) {
    let scaled = font().as_scaled(PxScale::from(size));
    let mut glyphs = Vec::with_capacity(text.len());
    let mut pen = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(previous) = previous {
            pen += scaled.kern(previous, id);
        }
        previous = Some(id);
        glyphs.push((id, pen));
        pen += scaled.h_advance(id);
    }
    (glyphs, pen)
}

fn line_height(size: f32) -> f32 {
    let scaled = font().as_scaled(PxScale::from(size));
    scaled.ascent() - scaled.descent()
}

/// Width and height of `text` at `size` pixels.
pub(crate) fn measure(text: &str, size: f32) -> (f32, f32) {
    (layout(text, size).1, line_height(size))
}

/// Draws `text` at `size` pixels in `colour` onto `image`, blending by
/// coverage; what falls outside the image is clipped.
pub(crate) fn draw_text(
    image: &mut RgbImage,
    text: &str,
    (x, y): (f32, f32),
    anchor: Anchor,
    size: f32,
    colour: [u8; 3],
) {
    let (glyphs, width) = layout(text, size);
    let height = line_height(size);
    let (left, top) = match anchor {
        Anchor::TopLeft => (x, y),
        Anchor::Centre => (x - width / 2.0, y - height / 2.0),
    };
    let baseline = top + font().as_scaled(PxScale::from(size)).ascent();
    for (id, offset) in glyphs {
        let glyph = id.with_scale_and_position(PxScale::from(size), ab_glyph::point(left + offset, baseline));
        let Some(outlined) = font().outline_glyph(glyph) else {
            continue;
        };
        let bounds = outlined.px_bounds();
        outlined.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + gx as i64;
            let py = bounds.min.y as i64 + gy as i64;
            if px < 0 || py < 0 || px >= image.width() as i64 || py >= image.height() as i64 {
                return;
            }
            let pixel = image.get_pixel_mut(px as u32, py as u32);
            let alpha = coverage.clamp(0.0, 1.0);
            for (channel, &ink) in pixel.0.iter_mut().zip(&colour) {
                *channel = (*channel as f32 * (1.0 - alpha) + ink as f32 * alpha).round() as u8;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_inks_pixels_inside_its_measured_box_only() {
        let mut image = RgbImage::from_pixel(200, 60, image::Rgb([255, 255, 255]));
        let (width, height) = measure("happy 0.61", 20.0);
        assert!(
            width > 60.0 && width < 140.0 && height > 15.0 && height < 30.0,
            "{width} × {height}"
        );
        draw_text(&mut image, "happy 0.61", (10.0, 10.0), Anchor::TopLeft, 20.0, [0, 0, 0]);
        let mut inked = 0;
        for (x, y, pixel) in image.enumerate_pixels() {
            if pixel.0 != [255, 255, 255] {
                inked += 1;
                assert!(
                    (x as f32) >= 9.0 && (x as f32) <= 11.0 + width && (y as f32) >= 9.0 && (y as f32) <= 11.0 + height,
                    "ink at ({x}, {y}) outside the label"
                );
            }
        }
        assert!(inked > 100, "only {inked} pixels inked");
        // Clipped at the edges instead of panicking.
        draw_text(&mut image, "edge", (190.0, 55.0), Anchor::Centre, 30.0, [0, 0, 0]);
    }
}
