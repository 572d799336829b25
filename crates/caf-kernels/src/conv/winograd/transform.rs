//! The matrices of Winograd's minimal filtering F(m×m, r×r) and the
//! sandwich products `L X Lᵀ` that move tiles in and out of its domain.
//!
//! The matrices come from Toom-Cook interpolation at the points 0, ±1, ±2
//! and ∞ (Lavin & Gray, 2016); each was checked by the 1-D identity
//! `Aᵀ[(G g) ⊙ (Bᵀ d)] = g ⋆ d` and is checked again in 2-D by the tests.

use std::marker::PhantomData;
use std::ops::{Add, Mul, Sub};

use super::Variant;
use crate::gemm::Element;

/// F(m×m, r×r): tiles of `M×M` outputs from `N×N` inputs, `N = M + R − 1`.
///
/// Each matrix and the transposes the gradients need are [`Transform`]s,
/// written out by [`transform!`] from their literal rows.
pub(crate) trait Algorithm<const M: usize, const R: usize, const N: usize> {
    /// For the tests' messages.
    #[cfg_attr(not(test), allow(dead_code))]
    const NAME: &'static str;
    /// The same algorithm as a value.
    const VARIANT: Variant;

    /// `Aᵀ` (`M × N`): a product tile to an output tile.
    type Output: Transform<M, N>;
    /// `A` (`N × M`): an output-gradient tile to a product-gradient tile.
    type OutputGradient: Transform<N, M>;
    /// `G` (`N × R`): a kernel to a transformed kernel.
    type Kernel: Transform<N, R>;
    /// `Gᵀ` (`R × N`): a transformed-kernel gradient to a kernel gradient.
    type KernelGradient: Transform<R, N>;
    /// `Bᵀ` (`N × N`): an input tile to a transformed tile.
    type Input: Transform<N, N>;
}

/// A matrix `L` (`P × Q`) of an algorithm.
pub(crate) trait Transform<const P: usize, const Q: usize> {
    /// `L`'s rows, for the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    const ROWS: [[f64; Q]; P];

    /// `L x`.
    fn apply<T: Element, V: Value<T>>(x: [V; Q]) -> [V; P];

    /// `L X Lᵀ` into `out` (overwritten): `L X`, each term adding a whole
    /// row of `X` in place, then `(L X) Lᵀ` by [`Self::apply`] on each of
    /// its rows. Always inlined, and writing in place: the tiles are
    /// kilobytes of lanes, which must not be copied through calls and
    /// return values.
    fn sandwich_into<T: Element, V: Value<T>>(x: &[[V; Q]; Q], out: &mut [[V; P]; P]);

    /// [`Self::sandwich_into`], returned: for the tests.
    #[cfg(test)]
    fn sandwich<T: Element, V: Value<T>>(x: &[[V; Q]; Q]) -> [[V; P]; P] {
        let mut out = [[V::default(); P]; P];
        Self::sandwich_into::<T, V>(x, &mut out);
        out
    }
}

/// `sum + c·x`, `c` a literal once inlined: nothing for a zero, an addition
/// or a subtraction for ±1.
#[inline(always)]
fn add_term<T: Element, V: Value<T>>(sum: V, x: V, c: f64) -> V {
    if c == 0.0 {
        sum
    } else if c == 1.0 {
        sum + x
    } else if c == -1.0 {
        sum - x
    } else {
        sum + x * T::from_f64(c)
    }
}

/// The sum of no terms: −0, the identity of addition (`−0 + x` is `x` for
/// every `x`, `+0` included), so the compiler drops the first addition.
#[inline(always)]
fn no_terms<T: Element, V: Value<T>>() -> V {
    V::default() * T::from_f64(-1.0)
}

/// Implements [`Transform`] for `$type` from the literal rows of its matrix.
///
/// Every sum is written out with its coefficients as literals, and so is
/// every loop over the rows of `L`: zero terms drop out and ±1 terms are
/// additions and subtractions however the compiler unrolls the rest. Kept
/// as arrays and indexed in loops, the coefficients were loaded and
/// compared with zero at run time wherever a loop stayed rolled; and a loop
/// over the rows of a tile of lanes was vectorised across the rows, with
/// scatters.
macro_rules! transform {
    ($type:ty, $p:literal by $q:literal, [$([$($c:expr),* $(,)?]),* $(,)?]) => {
        impl Transform<$p, $q> for $type {
            const ROWS: [[f64; $q]; $p] = [$([$($c),*]),*];

            #[inline(always)]
            fn apply<T: Element, V: Value<T>>(x: [V; $q]) -> [V; $p] {
                [$({
                    let mut sum = no_terms::<T, V>();
                    let mut column = 0;
                    $(
                        sum = add_term::<T, V>(sum, x[column], $c);
                        column += 1;
                    )*
                    let _ = column;
                    sum
                }),*]
            }

            #[inline(always)]
            fn sandwich_into<T: Element, V: Value<T>>(x: &[[V; $q]; $q], out: &mut [[V; $p]; $p]) {
                let mut left = [[no_terms::<T, V>(); $q]; $p];
                let mut row = 0;
                $(
                    let mut column = 0;
                    $(
                        V::add_row_term(&mut left[row], &x[column], $c);
                        column += 1;
                    )*
                    let _ = column;
                    row += 1;
                )*
                let _ = row;
                // One statement per row of `L` (its coefficients only count them).
                let mut row = 0;
                $(
                    let _ = stringify!($($c)*);
                    out[row] = Self::apply::<T, V>(left[row]);
                    row += 1;
                )*
                let _ = row;
            }
        }
    };
}

/// The matrices of algorithm `A` as [`Transform`]s, one type each.
pub(crate) struct Output<A>(PhantomData<A>);
pub(crate) struct OutputGradient<A>(PhantomData<A>);
pub(crate) struct Kernel<A>(PhantomData<A>);
pub(crate) struct KernelGradient<A>(PhantomData<A>);
pub(crate) struct Input<A>(PhantomData<A>);

/// An algorithm's type and its [`Transform`]s, from their matrices: `A`
/// and `Gᵀ` are written out too (the tests check they are the transposes).
macro_rules! algorithm {
    (
        $(#[$doc:meta])*
        $name:ident, $title:literal, ($m:literal, $r:literal, $n:literal),
        at: $at:tt,
        a: $a:tt,
        g: $g:tt,
        gt: $gt:tt,
        bt: $bt:tt $(,)?
    ) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl Algorithm<$m, $r, $n> for $name {
            const NAME: &'static str = $title;
            const VARIANT: Variant = Variant::$name;
            type Output = Output<$name>;
            type OutputGradient = OutputGradient<$name>;
            type Kernel = Kernel<$name>;
            type KernelGradient = KernelGradient<$name>;
            type Input = Input<$name>;
        }

        transform!(Output<$name>, $m by $n, $at);
        transform!(OutputGradient<$name>, $n by $m, $a);
        transform!(Kernel<$name>, $n by $r, $g);
        transform!(KernelGradient<$name>, $r by $n, $gt);
        transform!(Input<$name>, $n by $n, $bt);
    };
}

algorithm! {
    /// F(2×2, 3×3): 16 multiplications for 4 outputs (36 direct).
    F2x3, "F(2×2, 3×3)", (2, 3, 4),
    at: [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]],
    a: [[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]],
    g: [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]],
    gt: [[1.0, 0.5, 0.5, 0.0], [0.0, 0.5, -0.5, 0.0], [0.0, 0.5, 0.5, 1.0]],
    bt: [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ],
}

algorithm! {
    /// F(2×2, 5×5): 36 multiplications for 4 outputs (100 direct), by
    /// Toom-Cook's interpolation at 0, ±1, ±2, ∞.
    F2x5, "F(2×2, 5×5)", (2, 5, 6),
    at: [[1.0, 1.0, 1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, 2.0, -2.0, 1.0]],
    a: [[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [1.0, 2.0], [1.0, -2.0], [0.0, 1.0]],
    g: [
        [0.25, 0.0, 0.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 3.0, 2.0 / 3.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, -1.0 / 3.0, 2.0 / 3.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],
    ],
    gt: [
        [0.25, -1.0 / 6.0, -1.0 / 6.0, 1.0 / 24.0, 1.0 / 24.0, 0.0],
        [0.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 12.0, -1.0 / 12.0, 0.0],
        [0.0, -1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 0.0],
        [0.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 3.0, -1.0 / 3.0, 0.0],
        [0.0, -1.0 / 6.0, -1.0 / 6.0, 2.0 / 3.0, 2.0 / 3.0, 1.0],
    ],
    bt: [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
}

algorithm! {
    /// F(4×4, 3×3): 36 multiplications for 16 outputs (144 direct), by
    /// interpolation at 0, ±1, 2, −1/2 and ∞: a pair of reciprocal points in
    /// place of ±2 halves the rounding error in f32 (Barabasz et al., 2020;
    /// `f32_rounding_stays_within_1e_5` in the parent module).
    F4x3, "F(4×4, 3×3)", (4, 3, 6),
    at: [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -0.5, 0.0],
        [0.0, 1.0, 1.0, 4.0, 0.25, 0.0],
        [0.0, 1.0, -1.0, 8.0, -0.125, 1.0],
    ],
    a: [
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0, 1.0],
        [1.0, -1.0, 1.0, -1.0],
        [1.0, 2.0, 4.0, 8.0],
        [1.0, -0.5, 0.25, -0.125],
        [0.0, 0.0, 0.0, 1.0],
    ],
    g: [
        [1.0, 0.0, 0.0],
        [-1.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0],
        [1.0 / 3.0, -1.0 / 3.0, 1.0 / 3.0],
        [1.0 / 15.0, 2.0 / 15.0, 4.0 / 15.0],
        [-16.0 / 15.0, 8.0 / 15.0, -4.0 / 15.0],
        [0.0, 0.0, 1.0],
    ],
    gt: [
        [1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0 / 15.0, -16.0 / 15.0, 0.0],
        [0.0, -1.0 / 3.0, -1.0 / 3.0, 2.0 / 15.0, 8.0 / 15.0, 0.0],
        [0.0, -1.0 / 3.0, 1.0 / 3.0, 4.0 / 15.0, -4.0 / 15.0, 1.0],
    ],
    bt: [
        [1.0, 1.5, -2.0, -1.5, 1.0, 0.0],
        [0.0, -1.0, -2.5, -0.5, 1.0, 0.0],
        [0.0, 1.0, 0.5, -2.5, 1.0, 0.0],
        [0.0, -0.5, -1.0, 0.5, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 1.0, 1.5, -2.0, -1.5, 1.0],
    ],
}

/// What the transforms compute on: one value, or [`Lanes`] of consecutive
/// tiles (so the compiler vectorises them).
pub(crate) trait Value<T: Element>:
    Copy + Default + Add<Output = Self> + Sub<Output = Self> + Mul<T, Output = Self>
{
    /// `sum += c·x` for rows of values, in place ([`add_term`] for each).
    #[inline(always)]
    fn add_row_term<const W: usize>(sum: &mut [Self; W], x: &[Self; W], c: f64) {
        if c != 0.0 {
            for (sum, &x) in sum.iter_mut().zip(x) {
                *sum = add_term::<T, Self>(*sum, x, c);
            }
        }
    }
}

impl<T: Element> Value<T> for T {}

/// Tiles transformed together, one per SIMD lane.
pub(crate) const LANES: usize = 16;

/// One value per tile of a chunk of consecutive tiles.
#[derive(Clone, Copy)]
#[repr(transparent)]
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

impl<T: Element> Sub for Lanes<T> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        Self(std::array::from_fn(|j| self.0[j] - other.0[j]))
    }
}

impl<T: Element> Mul<T> for Lanes<T> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, factor: T) -> Self {
        Self(self.0.map(|v| v * factor))
    }
}

impl<T: Element> Value<T> for Lanes<T> {
    /// One loop over the rows' values end to end: a loop over the lanes
    /// values themselves was vectorised across them, with scatters.
    #[inline(always)]
    fn add_row_term<const W: usize>(sum: &mut [Self; W], x: &[Self; W], c: f64) {
        if c != 0.0 {
            for (sum, &x) in Self::flat_mut(sum).iter_mut().zip(Self::flat(x)) {
                *sum = add_term::<T, T>(*sum, x, c);
            }
        }
    }
}

impl<T: Element> Lanes<T> {
    /// The values of `row`, lane by lane.
    #[inline(always)]
    fn flat<const W: usize>(row: &[Self; W]) -> &[T] {
        // SAFETY: `Lanes<T>` is a transparent `[T; LANES]`, so `W` of them
        // are `W · LANES` values of `T` end to end, borrowed as `row` is.
        unsafe { std::slice::from_raw_parts(row.as_ptr().cast::<T>(), W * LANES) }
    }

    /// [`Self::flat`], mutable.
    #[inline(always)]
    fn flat_mut<const W: usize>(row: &mut [Self; W]) -> &mut [T] {
        // SAFETY: as in `flat`, borrowed mutably as `row` is.
        unsafe { std::slice::from_raw_parts_mut(row.as_mut_ptr().cast::<T>(), W * LANES) }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const A: usize, const B: usize>(seed: f64) -> [[f64; B]; A] {
        std::array::from_fn(|i| std::array::from_fn(|j| ((i * B + j) as f64 + seed).sin()))
    }

    fn transposed<const A: usize, const B: usize>(matrix: &[[f64; B]; A]) -> [[f64; A]; B] {
        std::array::from_fn(|i| std::array::from_fn(|j| matrix[j][i]))
    }

    /// The `L X Lᵀ` of a tile, entry by entry from `L`'s rows.
    fn reference_sandwich<const P: usize, const Q: usize>(l: &[[f64; Q]; P], x: &[[f64; Q]; Q]) -> [[f64; P]; P] {
        std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                (0..Q)
                    .flat_map(|a| (0..Q).map(move |b| (a, b)))
                    .map(|(a, b)| l[i][a] * x[a][b] * l[j][b])
                    .sum()
            })
        })
    }

    /// `L` applied as a function and as a sandwich equals its rows.
    fn check_transform<L: Transform<P, Q>, const P: usize, const Q: usize>(name: &str) {
        for j in 0..Q {
            let unit: [f64; Q] = std::array::from_fn(|i| f64::from(u8::from(i == j)));
            for (i, value) in L::apply::<f64, f64>(unit).into_iter().enumerate() {
                assert_eq!(value, L::ROWS[i][j], "{name} at ({i}, {j})");
            }
        }
        let x: [[f64; Q]; Q] = values(0.25);
        let (ours, reference) = (L::sandwich::<f64, f64>(&x), reference_sandwich(&L::ROWS, &x));
        for (i, (ours, reference)) in ours.iter().flatten().zip(reference.iter().flatten()).enumerate() {
            assert!(
                (ours - reference).abs() < 1e-12,
                "{name} sandwich at {i}: {ours} vs {reference}"
            );
        }
    }

    /// One tile: `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` is the valid 2-D correlation of `d`
    /// with `g`, and the gradients' matrices are the transposes of the forward ones.
    fn check<A: Algorithm<M, R, N>, const M: usize, const R: usize, const N: usize>() {
        check_transform::<A::Output, M, N>(A::NAME);
        check_transform::<A::OutputGradient, N, M>(A::NAME);
        check_transform::<A::Kernel, N, R>(A::NAME);
        check_transform::<A::KernelGradient, R, N>(A::NAME);
        check_transform::<A::Input, N, N>(A::NAME);
        assert_eq!(A::OutputGradient::ROWS, transposed(&A::Output::ROWS), "{}: A", A::NAME);
        assert_eq!(A::KernelGradient::ROWS, transposed(&A::Kernel::ROWS), "{}: Gᵀ", A::NAME);
        let d: [[f64; N]; N] = values(0.5);
        let g: [[f64; R]; R] = values(1.5);
        let (v, u) = (A::Input::sandwich::<f64, f64>(&d), A::Kernel::sandwich::<f64, f64>(&g));
        let product: [[f64; N]; N] = std::array::from_fn(|i| std::array::from_fn(|j| v[i][j] * u[i][j]));
        let y = A::Output::sandwich::<f64, f64>(&product);
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
    }

    #[test]
    fn every_algorithm_computes_a_correlation_and_its_transposes() {
        check::<F2x3, 2, 3, 4>();
        check::<F2x5, 2, 5, 6>();
        check::<F4x3, 4, 3, 6>();
    }

    #[test]
    fn lanes_transform_like_single_tiles() {
        let tiles: [[[f32; 6]; 6]; LANES] = std::array::from_fn(|t| {
            std::array::from_fn(|i| std::array::from_fn(|j| (t * 36 + i * 6 + j) as f32 * 0.01))
        });
        let lanes: [[Lanes<f32>; 6]; 6] =
            std::array::from_fn(|i| std::array::from_fn(|j| Lanes(std::array::from_fn(|t| tiles[t][i][j]))));
        let together = Input::<F2x5>::sandwich::<f32, Lanes<f32>>(&lanes);
        for (t, tile) in tiles.iter().enumerate() {
            let alone = Input::<F2x5>::sandwich::<f32, f32>(tile);
            for i in 0..6 {
                for j in 0..6 {
                    assert_eq!(together[i][j].0[t], alone[i][j]);
                }
            }
        }
    }
}
