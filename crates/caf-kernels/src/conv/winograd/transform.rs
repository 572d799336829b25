//! The matrices of Winograd's minimal filtering F(m×m, r×r) and the
//! sandwich products `L X Lᵀ` that move tiles in and out of its domain.
//!
//! The matrices come from Toom-Cook interpolation at the points 0, ±1, ±2
//! and ∞ (Lavin & Gray, 2016); each was checked by the 1-D identity
//! `Aᵀ[(G g) ⊙ (Bᵀ d)] = g ⋆ d` and is checked again in 2-D by the tests.

use std::ops::{Add, Mul};

use super::Variant;
use crate::gemm::Element;

/// F(m×m, r×r): tiles of `M×M` outputs from `N×N` inputs, `N = M + R − 1`.
///
/// An algorithm is a type and its matrices are associated constants, so
/// that every transform is compiled with them as literals: zero entries
/// drop out and ±1 entries become additions. Passed as data, they were
/// compared with zero and multiplied at run time, in every transform.
pub(crate) trait Algorithm<const M: usize, const R: usize, const N: usize> {
    /// For the tests' messages.
    #[cfg_attr(not(test), allow(dead_code))]
    const NAME: &'static str;
    /// Output transform `Aᵀ` (`M × N`).
    const AT: [[f64; N]; M];
    /// Kernel transform `G` (`N × R`).
    const G: [[f64; R]; N];
    /// Input transform `Bᵀ` (`N × N`).
    const BT: [[f64; N]; N];
    /// The same algorithm as a value.
    const VARIANT: Variant;

    /// The matrices in the element type, with the transposes the gradients
    /// need; inlined where it is called, so they stay compile-time constants.
    #[inline(always)]
    fn coefficients<T: Element>() -> Coefficients<T, M, R, N> {
        let t = T::from_f64;
        Coefficients {
            at: Self::AT.map(|row| row.map(t)),
            a: std::array::from_fn(|i| std::array::from_fn(|j| t(Self::AT[j][i]))),
            g: Self::G.map(|row| row.map(t)),
            gt: std::array::from_fn(|i| std::array::from_fn(|j| t(Self::G[j][i]))),
            bt: Self::BT.map(|row| row.map(t)),
        }
    }
}

/// F(2×2, 3×3): 16 multiplications for 4 outputs (36 direct).
pub(crate) struct F2x3;

impl Algorithm<2, 3, 4> for F2x3 {
    const NAME: &'static str = "F(2×2, 3×3)";
    const VARIANT: Variant = Variant::F2x3;
    const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
    const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
    const BT: [[f64; 4]; 4] = [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ];
}

const SIXTH: f64 = 1.0 / 6.0;
const TWELFTH: f64 = 1.0 / 12.0;
const TWENTY_FOURTH: f64 = 1.0 / 24.0;
const THIRD: f64 = 1.0 / 3.0;

/// Toom-Cook's input transform at 0, ±1, ±2, ∞ (F(2×2, 5×5)'s).
const BT6: [[f64; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

/// F(2×2, 5×5): 36 multiplications for 4 outputs (100 direct).
pub(crate) struct F2x5;

impl Algorithm<2, 5, 6> for F2x5 {
    const NAME: &'static str = "F(2×2, 5×5)";
    const VARIANT: Variant = Variant::F2x5;
    const AT: [[f64; 6]; 2] = [[1.0, 1.0, 1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, 2.0, -2.0, 1.0]];
    const G: [[f64; 5]; 6] = [
        [0.25, 0.0, 0.0, 0.0, 0.0],
        [-SIXTH, -SIXTH, -SIXTH, -SIXTH, -SIXTH],
        [-SIXTH, SIXTH, -SIXTH, SIXTH, -SIXTH],
        [TWENTY_FOURTH, TWELFTH, SIXTH, THIRD, 2.0 * THIRD],
        [TWENTY_FOURTH, -TWELFTH, SIXTH, -THIRD, 2.0 * THIRD],
        [0.0, 0.0, 0.0, 0.0, 1.0],
    ];
    const BT: [[f64; 6]; 6] = BT6;
}

/// F(4×4, 3×3): 36 multiplications for 16 outputs (144 direct), by
/// interpolation at 0, ±1, 2, −1/2 and ∞: a pair of reciprocal points in
/// place of ±2 halves the rounding error in f32 (Barabasz et al., 2020;
/// `f32_rounding_stays_within_1e_5` in the parent module).
pub(crate) struct F4x3;

impl Algorithm<4, 3, 6> for F4x3 {
    const NAME: &'static str = "F(4×4, 3×3)";
    const VARIANT: Variant = Variant::F4x3;
    const AT: [[f64; 6]; 4] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -0.5, 0.0],
        [0.0, 1.0, 1.0, 4.0, 0.25, 0.0],
        [0.0, 1.0, -1.0, 8.0, -0.125, 1.0],
    ];
    const G: [[f64; 3]; 6] = [
        [1.0, 0.0, 0.0],
        [-THIRD, -THIRD, -THIRD],
        [THIRD, -THIRD, THIRD],
        [1.0 / 15.0, 2.0 / 15.0, 4.0 / 15.0],
        [-16.0 / 15.0, 8.0 / 15.0, -4.0 / 15.0],
        [0.0, 0.0, 1.0],
    ];
    const BT: [[f64; 6]; 6] = [
        [1.0, 1.5, -2.0, -1.5, 1.0, 0.0],
        [0.0, -1.0, -2.5, -0.5, 1.0, 0.0],
        [0.0, 1.0, 0.5, -2.5, 1.0, 0.0],
        [0.0, -0.5, -1.0, 0.5, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 1.0, 1.5, -2.0, -1.5, 1.0],
    ];
}

/// An algorithm's matrices in the element type, with the transposes the
/// gradients need.
pub(crate) struct Coefficients<T, const M: usize, const R: usize, const N: usize> {
    /// `Aᵀ`: product tile → output tile.
    pub(crate) at: [[T; N]; M],
    /// `A`: output-gradient tile → product-gradient tile.
    pub(crate) a: [[T; M]; N],
    /// `G`: kernel → transformed kernel.
    pub(crate) g: [[T; R]; N],
    /// `Gᵀ`: transformed-kernel gradient → kernel gradient.
    pub(crate) gt: [[T; N]; R],
    /// `Bᵀ`: input tile → transformed tile.
    pub(crate) bt: [[T; N]; N],
}

/// What the transforms compute on: one value, or [`Lanes`] of consecutive
/// tiles (so the compiler vectorises them).
pub(crate) trait Value<T>: Copy + Default + Add<Output = Self> + Mul<T, Output = Self> {}

impl<T: Element> Value<T> for T {}

/// Tiles transformed together, one per SIMD lane.
pub(crate) const LANES: usize = 16;

/// One value per tile of a chunk of consecutive tiles.
#[derive(Clone, Copy)]
pub(crate) struct Lanes<T>(pub(crate) [T; LANES]);

impl<T: Element> Default for Lanes<T> {
    fn default() -> Self {
        Self([T::ZERO; LANES])
    }
}

impl<T: Element> Add for Lanes<T> {
    type Output = Self;
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        Self(std::array::from_fn(|j| self.0[j] + other.0[j]))
    }
}

impl<T: Element> Mul<T> for Lanes<T> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, factor: T) -> Self {
        Self(self.0.map(|v| v * factor))
    }
}

impl<T: Element> Value<T> for Lanes<T> {}

impl<T: Element> Lanes<T> {
    /// Sets every lane from the first [`LANES`] of `values`.
    #[inline(always)]
    pub(crate) fn load_all(&mut self, values: &[T]) {
        self.0.copy_from_slice(&values[..LANES]);
    }

    /// Writes every lane to the first [`LANES`] of `out`.
    #[inline(always)]
    pub(crate) fn store_all(&self, out: &mut [T]) {
        out[..LANES].copy_from_slice(&self.0);
    }
}

/// `L X Lᵀ` for a `P × Q` matrix `L` and a `Q × Q` tile `X` (zero entries
/// of `L` skipped), returned: for the tests; the kernels write in place.
#[cfg(test)]
#[inline(always)]
pub(crate) fn sandwich<T: Element, V: Value<T>, const P: usize, const Q: usize>(
    l: &[[T; Q]; P],
    x: &[[V; Q]; Q],
) -> [[V; P]; P] {
    let mut out = [[V::default(); P]; P];
    sandwich_into(l, x, &mut out);
    out
}

/// `L X Lᵀ` into `out` (overwritten). Always inlined, and writing in
/// place: the tiles are kilobytes of lanes, which must not be copied through
/// calls and return values.
#[inline(always)]
pub(crate) fn sandwich_into<T: Element, V: Value<T>, const P: usize, const Q: usize>(
    l: &[[T; Q]; P],
    x: &[[V; Q]; Q],
    out: &mut [[V; P]; P],
) {
    let mut left = [[V::default(); Q]; P];
    for (row, coefficients) in left.iter_mut().zip(l) {
        for (x_row, &c) in x.iter().zip(coefficients) {
            if c != T::ZERO {
                for (out, &value) in row.iter_mut().zip(x_row) {
                    *out = *out + value * c;
                }
            }
        }
    }
    for (out_row, left_row) in out.iter_mut().zip(&left) {
        for (out, coefficients) in out_row.iter_mut().zip(l) {
            let mut sum = V::default();
            for (&value, &c) in left_row.iter().zip(coefficients) {
                if c != T::ZERO {
                    sum = sum + value * c;
                }
            }
            *out = sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const A: usize, const B: usize>(seed: f64) -> [[f64; B]; A] {
        std::array::from_fn(|i| std::array::from_fn(|j| ((i * B + j) as f64 + seed).sin()))
    }

    fn dot<const A: usize, const B: usize>(x: &[[f64; B]; A], y: &[[f64; B]; A]) -> f64 {
        x.iter().flatten().zip(y.iter().flatten()).map(|(a, b)| a * b).sum()
    }

    /// One tile: `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` is the valid 2-D correlation of `d`
    /// with `g`, and the gradient transforms are the adjoints of the forward ones.
    fn check<A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>() {
        let c = A::coefficients::<f64>();
        let d: [[f64; N]; N] = values(0.5);
        let g: [[f64; R]; R] = values(1.5);
        let (v, u) = (sandwich(&c.bt, &d), sandwich(&c.g, &g));
        let product: [[f64; N]; N] = std::array::from_fn(|i| std::array::from_fn(|j| v[i][j] * u[i][j]));
        let y = sandwich(&c.at, &product);
        for (oy, row) in y.iter().enumerate() {
            for (ox, &value) in row.iter().enumerate() {
                let direct: f64 = (0..R * R).map(|t| d[oy + t / R][ox + t % R] * g[t / R][t % R]).sum();
                assert!(
                    (value - direct).abs() < 1e-11,
                    "{} at ({oy}, {ox}): {value} vs {direct}",
                    A::NAME
                );
            }
        }
        let e: [[f64; M]; M] = values(2.5);
        let lhs = dot(&sandwich(&c.at, &product), &e);
        let rhs = dot(&product, &sandwich(&c.a, &e));
        assert!((lhs - rhs).abs() < 1e-9, "{}: output adjoint", A::NAME);
        let w: [[f64; N]; N] = values(3.5);
        let (lhs, rhs) = (dot(&sandwich(&c.g, &g), &w), dot(&g, &sandwich(&c.gt, &w)));
        assert!((lhs - rhs).abs() < 1e-9, "{}: kernel adjoint", A::NAME);
    }

    #[test]
    fn every_algorithm_computes_a_correlation_and_its_adjoints() {
        check::<F2x3, 2, 3, 4>();
        check::<F2x5, 2, 5, 6>();
        check::<F4x3, 4, 3, 6>();
    }

    #[test]
    fn lanes_transform_like_single_tiles() {
        let c = F2x5::coefficients::<f32>();
        let tiles: [[[f32; 6]; 6]; LANES] = std::array::from_fn(|t| {
            std::array::from_fn(|i| std::array::from_fn(|j| (t * 36 + i * 6 + j) as f32 * 0.01))
        });
        let lanes: [[Lanes<f32>; 6]; 6] =
            std::array::from_fn(|i| std::array::from_fn(|j| Lanes(std::array::from_fn(|t| tiles[t][i][j]))));
        let together = sandwich(&c.bt, &lanes);
        for (t, tile) in tiles.iter().enumerate() {
            let alone = sandwich(&c.bt, tile);
            for i in 0..6 {
                for j in 0..6 {
                    assert_eq!(together[i][j].0[t], alone[i][j]);
                }
            }
        }
    }
}
