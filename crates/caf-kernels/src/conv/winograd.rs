//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray, 2016): each 2×2 output tile is `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`
//! for its 4×4 input tile `d`, so the channel sums become 16 matrix products
//! with 16 multiplications per tile instead of 36 (2.25 times fewer).
//!
//! All three passes use the same 16 products:
//! * forward: `M_ξ = U_ξ · V_ξ` (`U = G g Gᵀ`: out × in; `V = Bᵀ d B`: in × tiles);
//! * input gradient: a forward pass of the output gradient with the kernel
//!   turned 180° and its channels swapped, padded by `2 − padding`;
//! * weight gradient: `∂U_ξ = ∂M_ξ · V_ξᵀ` with `∂M = A ∂y Aᵀ`, then `Gᵀ ∂U G`.
//!
//! Tiles reaching past the output are computed and dropped (forward) or fed
//! zeros (weight gradient), which is what the 2×2 tiling costs on odd sides.

use rayon::prelude::*;

use super::Geometry;
use crate::gemm::{matmul, Element, Matrix, Threads};

/// Transformed values per tile: the 4×4 Winograd domain.
const POINTS: usize = 16;

/// Whether a convolution runs here: 3×3 kernel, stride 1, padding at most 2
/// (the input gradient's padding is `2 − padding`).
pub(super) fn applies(g: &Geometry) -> bool {
    g.kernel_h == 3 && g.kernel_w == 3 && g.stride == 1 && g.padding <= 2
}

/// The 2×2 tiling of a geometry's output.
#[derive(Clone, Copy)]
struct Tiling {
    rows: usize,
    cols: usize,
    /// Tiles of all images: the columns of every product.
    total: usize,
}

impl Tiling {
    fn new(g: &Geometry) -> Self {
        let (rows, cols) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2));
        Self {
            rows,
            cols,
            total: g.batch * rows * cols,
        }
    }

    fn per_image(&self) -> usize {
        self.rows * self.cols
    }
}

/// `Bᵀ d B` on a row-major 4×4 tile.
fn transform_input<T: Element>(d: [T; POINTS]) -> [T; POINTS] {
    let mut t = [T::ZERO; POINTS];
    for j in 0..4 {
        let (d0, d1, d2, d3) = (d[j], d[4 + j], d[8 + j], d[12 + j]);
        t[j] = d0 - d2;
        t[4 + j] = d1 + d2;
        t[8 + j] = d2 - d1;
        t[12 + j] = d1 - d3;
    }
    let mut v = [T::ZERO; POINTS];
    for i in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        v[4 * i] = t0 - t2;
        v[4 * i + 1] = t1 + t2;
        v[4 * i + 2] = t2 - t1;
        v[4 * i + 3] = t1 - t3;
    }
    v
}

/// `G g Gᵀ` on a row-major 3×3 kernel.
fn transform_kernel<T: Element>(k: [T; 9]) -> [T; POINTS] {
    let half = T::from_f64(0.5);
    let mut t = [T::ZERO; 12];
    for j in 0..3 {
        let (k0, k1, k2) = (k[j], k[3 + j], k[6 + j]);
        t[j] = k0;
        t[3 + j] = (k0 + k1 + k2) * half;
        t[6 + j] = (k0 - k1 + k2) * half;
        t[9 + j] = k2;
    }
    let mut u = [T::ZERO; POINTS];
    for i in 0..4 {
        let (t0, t1, t2) = (t[3 * i], t[3 * i + 1], t[3 * i + 2]);
        u[4 * i] = t0;
        u[4 * i + 1] = (t0 + t1 + t2) * half;
        u[4 * i + 2] = (t0 - t1 + t2) * half;
        u[4 * i + 3] = t2;
    }
    u
}

/// `Aᵀ m A`: a 4×4 product tile to its 2×2 output tile.
fn transform_output<T: Element>(m: [T; POINTS]) -> [T; 4] {
    let mut t = [T::ZERO; 8];
    for j in 0..4 {
        let (m0, m1, m2, m3) = (m[j], m[4 + j], m[8 + j], m[12 + j]);
        t[j] = m0 + m1 + m2;
        t[4 + j] = m1 - m2 - m3;
    }
    let mut y = [T::ZERO; 4];
    for i in 0..2 {
        let (t0, t1, t2, t3) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        y[2 * i] = t0 + t1 + t2;
        y[2 * i + 1] = t1 - t2 - t3;
    }
    y
}

/// `A e Aᵀ`: the adjoint of [`transform_output`], a 2×2 gradient tile to 4×4.
fn transform_output_adjoint<T: Element>(e: [T; 4]) -> [T; POINTS] {
    let mut t = [T::ZERO; 8];
    for j in 0..2 {
        let (e0, e1) = (e[j], e[2 + j]);
        t[j] = e0;
        t[2 + j] = e0 + e1;
        t[4 + j] = e0 - e1;
        t[6 + j] = T::ZERO - e1;
    }
    let mut m = [T::ZERO; POINTS];
    for i in 0..4 {
        let (t0, t1) = (t[2 * i], t[2 * i + 1]);
        m[4 * i] = t0;
        m[4 * i + 1] = t0 + t1;
        m[4 * i + 2] = t0 - t1;
        m[4 * i + 3] = T::ZERO - t1;
    }
    m
}

/// `Gᵀ u G`: the adjoint of [`transform_kernel`], 4×4 back to a 3×3 kernel.
fn transform_kernel_adjoint<T: Element>(u: [T; POINTS]) -> [T; 9] {
    let half = T::from_f64(0.5);
    let mut t = [T::ZERO; 12];
    for j in 0..4 {
        let (u0, u1, u2, u3) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
        t[j] = u0 + (u1 + u2) * half;
        t[4 + j] = (u1 - u2) * half;
        t[8 + j] = (u1 + u2) * half + u3;
    }
    let mut k = [T::ZERO; 9];
    for i in 0..3 {
        let (t0, t1, t2, t3) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        k[3 * i] = t0 + (t1 + t2) * half;
        k[3 * i + 1] = (t1 - t2) * half;
        k[3 * i + 2] = (t1 + t2) * half + t3;
    }
    k
}

/// `V` of every input channel: `[channel][ξ][tile]`, channels in parallel.
fn input_tiles<T: Element>(x: &[T], g: &Geometry, tiling: Tiling) -> Vec<T> {
    let plane = g.height * g.width;
    let mut v = vec![T::ZERO; g.channels * POINTS * tiling.total];
    v.par_chunks_mut(POINTS * tiling.total)
        .enumerate()
        .for_each(|(c, v_c)| {
            for b in 0..g.batch {
                let image = &x[(b * g.channels + c) * plane..][..plane];
                for ty in 0..tiling.rows {
                    for tx in 0..tiling.cols {
                        let mut d = [T::ZERO; POINTS];
                        for i in 0..4 {
                            let Some(iy) = (2 * ty + i).checked_sub(g.padding).filter(|&r| r < g.height) else {
                                continue;
                            };
                            let row = &image[iy * g.width..(iy + 1) * g.width];
                            for j in 0..4 {
                                if let Some(&value) = (2 * tx + j).checked_sub(g.padding).and_then(|ix| row.get(ix)) {
                                    d[4 * i + j] = value;
                                }
                            }
                        }
                        let tile = b * tiling.per_image() + ty * tiling.cols + tx;
                        for (xi, value) in transform_input(d).into_iter().enumerate() {
                            v_c[xi * tiling.total + tile] = value;
                        }
                    }
                }
            }
        });
    v
}

/// `U` of a weight (`out × in × 3 × 3`): `[out][ξ][in]`, output channels in parallel.
fn kernel_tiles<T: Element>(weight: &[T], out_channels: usize, channels: usize) -> Vec<T> {
    let mut u = vec![T::ZERO; out_channels * POINTS * channels];
    u.par_chunks_mut(POINTS * channels).enumerate().for_each(|(o, u_o)| {
        for c in 0..channels {
            let k: [T; 9] = std::array::from_fn(|i| weight[(o * channels + c) * 9 + i]);
            for (xi, value) in transform_kernel(k).into_iter().enumerate() {
                u_o[xi * channels + c] = value;
            }
        }
    });
    u
}

/// The 16 products `dst_ξ = a_ξ · b_ξ`, each single-threaded, in parallel over ξ;
/// `dst` is `[ξ][a.rows][b.cols]`.
fn products<'a, T: Element>(
    dst: &mut [T],
    a: impl Fn(usize) -> Matrix<'a, T> + Sync,
    b: impl Fn(usize) -> Matrix<'a, T> + Sync,
) {
    let len = dst.len() / POINTS;
    dst.par_chunks_mut(len)
        .enumerate()
        .for_each(|(xi, dst)| matmul(dst, false, a(xi), b(xi), Threads::One));
}

/// The convolution of `x` with a 3×3 `weight`, plus `bias`.
pub(super) fn forward<T: Element>(x: &[T], weight: &[T], bias: Option<&[T]>, g: &Geometry) -> Vec<T> {
    let tiling = Tiling::new(g);
    let (k, c, p) = (g.out_channels, g.channels, tiling.total);
    let v = input_tiles(x, g, tiling);
    let u = kernel_tiles(weight, k, c);
    let mut m = vec![T::ZERO; POINTS * k * p];
    products(
        &mut m,
        |xi| Matrix::strided(&u[xi * c..], k, c, POINTS * c, 1),
        |xi| Matrix::strided(&v[xi * p..], c, p, POINTS * p, 1),
    );
    let mut y = vec![T::ZERO; g.batch * g.output_len()];
    y.par_chunks_mut(g.positions())
        .enumerate()
        .for_each(|(plane, y_plane)| {
            let (b, o) = (plane / k, plane % k);
            let shift = bias.map_or(T::ZERO, |bias| bias[o]);
            for ty in 0..tiling.rows {
                for tx in 0..tiling.cols {
                    let tile = b * tiling.per_image() + ty * tiling.cols + tx;
                    let tile_m: [T; POINTS] = std::array::from_fn(|xi| m[(xi * k + o) * p + tile]);
                    let out = transform_output(tile_m);
                    for i in 0..2 {
                        let oy = 2 * ty + i;
                        for j in 0..2 {
                            let ox = 2 * tx + j;
                            if oy < g.out_h && ox < g.out_w {
                                y_plane[oy * g.out_w + ox] = out[2 * i + j] + shift;
                            }
                        }
                    }
                }
            }
        });
    y
}

/// The input gradient: the output gradient convolved with the kernel turned
/// 180° and transposed (in ↔ out), padded by `2 − padding`.
pub(super) fn input_gradient<T: Element>(dy: &[T], weight: &[T], g: &Geometry) -> Vec<T> {
    let (k, c) = (g.out_channels, g.channels);
    let mut turned = vec![T::ZERO; weight.len()];
    for o in 0..k {
        for i in 0..c {
            for tap in 0..9 {
                turned[(i * k + o) * 9 + tap] = weight[(o * c + i) * 9 + (8 - tap)];
            }
        }
    }
    let transposed = Geometry {
        channels: k,
        height: g.out_h,
        width: g.out_w,
        out_channels: c,
        padding: 2 - g.padding,
        out_h: g.height,
        out_w: g.width,
        ..*g
    };
    forward(dy, &turned, None, &transposed)
}

/// The weight gradient `Gᵀ (Σ_tiles (A ∂y Aᵀ) ⊙ (Bᵀ d B)) G`.
pub(super) fn weight_gradient<T: Element>(dy: &[T], x: &[T], g: &Geometry) -> Vec<T> {
    let tiling = Tiling::new(g);
    let (k, c, p) = (g.out_channels, g.channels, tiling.total);
    let v = input_tiles(x, g, tiling);
    let mut dm = vec![T::ZERO; k * POINTS * p];
    dm.par_chunks_mut(POINTS * p).enumerate().for_each(|(o, dm_o)| {
        for b in 0..g.batch {
            let plane = &dy[(b * k + o) * g.positions()..][..g.positions()];
            for ty in 0..tiling.rows {
                for tx in 0..tiling.cols {
                    let e: [T; 4] = std::array::from_fn(|q| {
                        let (oy, ox) = (2 * ty + q / 2, 2 * tx + q % 2);
                        if oy < g.out_h && ox < g.out_w {
                            plane[oy * g.out_w + ox]
                        } else {
                            T::ZERO
                        }
                    });
                    let tile = b * tiling.per_image() + ty * tiling.cols + tx;
                    for (xi, value) in transform_output_adjoint(e).into_iter().enumerate() {
                        dm_o[xi * p + tile] = value;
                    }
                }
            }
        }
    });
    let mut du = vec![T::ZERO; POINTS * k * c];
    products(
        &mut du,
        |xi| Matrix::strided(&dm[xi * p..], k, p, POINTS * p, 1),
        |xi| Matrix::strided(&v[xi * p..], c, p, POINTS * p, 1).t(),
    );
    let mut dw = vec![T::ZERO; k * c * 9];
    dw.par_chunks_mut(c * 9).enumerate().for_each(|(o, dw_o)| {
        for i in 0..c {
            let u: [T; POINTS] = std::array::from_fn(|xi| du[(xi * k + o) * c + i]);
            dw_o[i * 9..(i + 1) * 9].copy_from_slice(&transform_kernel_adjoint(u));
        }
    });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + seed) * 0.731).sin()).collect()
    }

    /// The adjoint transforms satisfy `⟨T a, b⟩ = ⟨a, Tᵀ b⟩`.
    #[test]
    fn adjoint_transforms_are_adjoint() {
        let k: [f64; 9] = std::array::from_fn(|i| values(9, 1.0)[i]);
        let u: [f64; 16] = std::array::from_fn(|i| values(16, 2.0)[i]);
        let lhs: f64 = transform_kernel(k).iter().zip(&u).map(|(a, b)| a * b).sum();
        let rhs: f64 = k.iter().zip(&transform_kernel_adjoint(u)).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");

        let m: [f64; 16] = std::array::from_fn(|i| values(16, 3.0)[i]);
        let e: [f64; 4] = std::array::from_fn(|i| values(4, 4.0)[i]);
        let lhs: f64 = transform_output(m).iter().zip(&e).map(|(a, b)| a * b).sum();
        let rhs: f64 = m.iter().zip(&transform_output_adjoint(e)).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
    }

    /// One tile: `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` is the 2×2 valid correlation of `d` with `g`.
    #[test]
    fn one_tile_is_a_3x3_correlation() {
        let d: [f64; 16] = std::array::from_fn(|i| values(16, 5.0)[i]);
        let k: [f64; 9] = std::array::from_fn(|i| values(9, 6.0)[i]);
        let (v, u) = (transform_input(d), transform_kernel(k));
        let y = transform_output(std::array::from_fn(|i| v[i] * u[i]));
        for oy in 0..2 {
            for ox in 0..2 {
                let direct: f64 = (0..9).map(|t| d[(oy + t / 3) * 4 + ox + t % 3] * k[t]).sum();
                assert!((y[2 * oy + ox] - direct).abs() < 1e-12);
            }
        }
    }
}
