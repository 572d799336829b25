//! Candidate boxes between MTCNN's stages: non-maximum suppression,
//! bounding-box regression, squaring, and the crop each box reads.
//!
//! Coordinates follow the original's conventions, kept for parity with
//! facenet-pytorch: boxes are `x1, y1, x2, y2` in f32 pixels, and each step
//! measures a side as the original does, `x2 − x1` or `x2 − x1 + 1`
//! ([`Sides`]).

use crate::resample::Region;

/// A box, its score, and the regression offsets the stage that scored it
/// proposed (fractions of the box's width and height).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub offsets: [f32; 4],
}

/// How a step measures a box's sides from its corners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sides {
    /// `x2 − x1`: P-Net's regression and torchvision's `nms`.
    AsGiven,
    /// `x2 − x1 + 1`: R-Net's and O-Net's regression, the final suppression.
    PlusOne,
}

impl Sides {
    fn extra(self) -> f32 {
        match self {
            Sides::AsGiven => 0.0,
            Sides::PlusOne => 1.0,
        }
    }
}

/// How a suppression measures the overlap of two boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// Intersection over union, sides `x2 − x1` (torchvision's `nms`).
    Union,
    /// Intersection over the smaller box, sides `x2 − x1 + 1` (the
    /// original's final suppression).
    Smaller,
}

impl Overlap {
    fn between(self, a: &Candidate, b: &Candidate) -> f32 {
        let extra = match self {
            Overlap::Union => Sides::AsGiven,
            Overlap::Smaller => Sides::PlusOne,
        }
        .extra();
        let area = |c: &Candidate| (c.x2 - c.x1 + extra) * (c.y2 - c.y1 + extra);
        let width = (a.x2.min(b.x2) - a.x1.max(b.x1) + extra).max(0.0);
        let height = (a.y2.min(b.y2) - a.y1.max(b.y1) + extra).max(0.0);
        let intersection = width * height;
        match self {
            Overlap::Union => intersection / (area(a) + area(b) - intersection),
            Overlap::Smaller => intersection / area(a).min(area(b)),
        }
    }
}

/// Greedy non-maximum suppression: keeps the best-scoring box, drops every
/// other whose overlap with it exceeds `threshold`, repeats. Returns the
/// indices of the survivors, best first.
pub(crate) fn suppress(candidates: &[Candidate], threshold: f32, overlap: Overlap) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    // A stable sort: equal scores keep their order, as torchvision's does.
    order.sort_by(|&a, &b| candidates[b].score.total_cmp(&candidates[a].score));
    let mut kept = Vec::new();
    let mut removed = vec![false; order.len()];
    for (rank, &i) in order.iter().enumerate() {
        if removed[rank] {
            continue;
        }
        kept.push(i);
        for (later, &j) in order.iter().enumerate().skip(rank + 1) {
            if !removed[later] && overlap.between(&candidates[i], &candidates[j]) > threshold {
                removed[later] = true;
            }
        }
    }
    kept
}

/// The candidates at `indices`, in that order.
pub(crate) fn pick(candidates: &[Candidate], indices: &[usize]) -> Vec<Candidate> {
    indices.iter().map(|&i| candidates[i]).collect()
}

impl Candidate {
    /// The box moved by its regression offsets, in units of its sides.
    pub fn regressed(&self, sides: Sides) -> Candidate {
        let width = self.x2 - self.x1 + sides.extra();
        let height = self.y2 - self.y1 + sides.extra();
        let [dx1, dy1, dx2, dy2] = self.offsets;
        Candidate {
            x1: self.x1 + dx1 * width,
            y1: self.y1 + dy1 * height,
            x2: self.x2 + dx2 * width,
            y2: self.y2 + dy2 * height,
            ..*self
        }
    }

    /// The square of side max(width, height) centred on the box.
    pub fn squared(&self) -> Candidate {
        let width = self.x2 - self.x1;
        let height = self.y2 - self.y1;
        let side = width.max(height);
        let x1 = self.x1 + width * 0.5 - side * 0.5;
        let y1 = self.y1 + height * 0.5 - side * 0.5;
        Candidate {
            x1,
            y1,
            x2: x1 + side,
            y2: y1 + side,
            ..*self
        }
    }

    /// The pixels the next stage reads for this box: its corners truncated
    /// to whole pixels (1-based, inclusive, as the original) and clipped to
    /// the photo; `None` when nothing of the box is inside.
    pub fn crop(&self, width: usize, height: usize) -> Option<Region> {
        let x = (self.x1.trunc() as i64).max(1);
        let y = (self.y1.trunc() as i64).max(1);
        let ex = (self.x2.trunc() as i64).min(width as i64);
        let ey = (self.y2.trunc() as i64).min(height as i64);
        (ex > x - 1 && ey > y - 1).then(|| Region {
            x0: (x - 1) as usize,
            y0: (y - 1) as usize,
            x1: ex as usize,
            y1: ey as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(x1: f32, y1: f32, x2: f32, y2: f32, score: f32) -> Candidate {
        Candidate {
            x1,
            y1,
            x2,
            y2,
            score,
            offsets: [0.0; 4],
        }
    }

    #[test]
    fn suppression_keeps_the_best_of_each_overlapping_group() {
        let candidates = vec![
            boxed(0.0, 0.0, 10.0, 10.0, 0.8),
            boxed(1.0, 1.0, 11.0, 11.0, 0.9), // IoU with the first 81/119 = 0.68
            boxed(20.0, 20.0, 30.0, 30.0, 0.7),
        ];
        assert_eq!(suppress(&candidates, 0.5, Overlap::Union), [1, 2]);
        // Under a threshold of 0.7 both overlapping boxes stay, best first.
        assert_eq!(suppress(&candidates, 0.7, Overlap::Union), [1, 0, 2]);
    }

    #[test]
    fn overlap_measures_follow_the_original() {
        let big = boxed(0.0, 0.0, 9.0, 9.0, 1.0);
        let inside = boxed(2.0, 2.0, 4.0, 4.0, 0.5);
        // Smaller-box overlap, sides + 1: the small box lies wholly inside → 1.
        assert_eq!(Overlap::Smaller.between(&big, &inside), 1.0);
        // Union, sides as given: 4 / 81.
        assert!((Overlap::Union.between(&big, &inside) - 4.0 / 81.0).abs() < 1e-7);
        assert_eq!(suppress(&[inside, big], 0.7, Overlap::Smaller), [1]);
    }

    #[test]
    fn regression_squaring_and_crops() {
        let mut c = boxed(10.0, 20.0, 29.0, 59.0, 1.0); // 20 × 40 measured + 1
        c.offsets = [0.125, -0.25, 0.0, 0.5];
        let r = c.regressed(Sides::PlusOne);
        assert_eq!((r.x1, r.y1, r.x2, r.y2), (12.5, 10.0, 29.0, 79.0));
        // P-Net's regression measures 19 × 39.
        let r = c.regressed(Sides::AsGiven);
        assert_eq!((r.x1, r.y1, r.x2, r.y2), (12.375, 10.25, 29.0, 78.5));
        let s = boxed(10.0, 20.0, 30.0, 60.0, 1.0).squared();
        assert_eq!((s.x1, s.y1, s.x2, s.y2), (0.0, 20.0, 40.0, 60.0));
        // Crops are truncated, clipped to the photo, and start one pixel before x1.
        let crop = boxed(-5.7, 3.9, 50.2, 200.0, 1.0).crop(40, 100).unwrap();
        assert_eq!(
            crop,
            Region {
                x0: 0,
                y0: 2,
                x1: 40,
                y1: 100
            }
        );
        assert_eq!(boxed(45.0, 3.0, 60.0, 9.0, 1.0).crop(40, 100), None);
    }
}
