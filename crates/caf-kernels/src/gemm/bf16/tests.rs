use super::*;
use crate::cpu::InstructionSet;

/// The paths this CPU can run.
fn paths() -> Vec<Bf16Path> {
    let mut paths = vec![Bf16Path::RoundedF32];
    #[cfg(target_arch = "x86_64")]
    if InstructionSet::detected() >= InstructionSet::Avx512Bf16 {
        paths.push(Bf16Path::Avx512Bf16);
    }
    #[cfg(target_arch = "x86_64")]
    if InstructionSet::detected() >= InstructionSet::AmxBf16 {
        paths.push(Bf16Path::AmxBf16);
    }
    paths
}

/// Values spread over a few binades, signs mixed, none a bf16 already.
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let x = ((i * 7919 + seed * 104_729) % 10_007) as f32 / 10_007.0;
            (x - 0.45) * (1.0 + (i % 5) as f32) * 1.000_123
        })
        .collect()
}

/// `a · b` in f64, each operand first passed through `round`.
fn reference(a: Matrix<f32>, b: Matrix<f32>, round: impl Fn(f32) -> f32) -> (Vec<f64>, Vec<f64>) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let (av, bv) = (a.to_vec(), b.to_vec());
    let mut sums = vec![0.0; m * n];
    let mut magnitudes = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let product = f64::from(round(av[i * k + p])) * f64::from(round(bv[p * n + j]));
                sums[i * n + j] += product;
                magnitudes[i * n + j] += product.abs();
            }
        }
    }
    (sums, magnitudes)
}

/// `a` packed each way this CPU can multiply it: each path's packing for
/// one call, the AVX512-BF16 path's kept packing, which multiplies ragged
/// column counts from row panels, those row panels for every product, and
/// the AMX path's packing with the
/// tiles' arithmetic emulated (which runs its blocking and write-back on
/// CPUs without AMX).
fn packings(a: Matrix<f32>) -> Vec<(String, Bf16Lhs)> {
    let mut packings: Vec<(String, Bf16Lhs)> = paths()
        .into_iter()
        .map(|path| (format!("{path:?}"), Bf16Lhs::on(path, a, Threads::All)))
        .collect();
    #[cfg(target_arch = "x86_64")]
    if InstructionSet::detected() >= InstructionSet::Avx512Bf16 {
        packings.push(("kept".into(), Bf16Lhs::kept(a)));
        packings.push(("row panels".into(), Bf16Lhs::row_panels(a)));
        packings.push(("emulated tiles".into(), Bf16Lhs::emulated_tiles(a)));
    }
    packings
}

/// Checks one product on every path: against the f64 product of the
/// rounded operands to f32's summing error, and against the f64 product of
/// the unrounded ones to bf16's (8 significant bits: each operand's
/// rounding is at most 2⁻⁸ of it, so a product's at most 2⁻⁷ (and a hair)
/// of it, plus the sums).
fn check(m: usize, n: usize, k: usize, transposed: bool, threads: Threads) {
    let a_values = values(m * k, 1);
    let b_values = values(k * n, 2);
    let a = if transposed {
        Matrix::row_major(&a_values, k, m).t()
    } else {
        Matrix::row_major(&a_values, m, k)
    };
    let b = if transposed {
        Matrix::row_major(&b_values, n, k).t()
    } else {
        Matrix::row_major(&b_values, k, n)
    };
    let (exact_rounded, magnitudes) = reference(a, b, round_to_bf16);
    let (exact, _) = reference(a, b, |x| x);
    for (path, lhs) in &packings(a) {
        for accumulate in [false, true] {
            let start = 0.25f32;
            let mut dst = vec![start; m * n];
            matmul_bf16_packed(&mut dst, accumulate, lhs, b, threads);
            let offset = if accumulate { f64::from(start) } else { 0.0 };
            for (index, &got) in dst.iter().enumerate() {
                let got = f64::from(got) - offset;
                let sum_error =
                    (k as f64 + 2.0) * f64::EPSILON.max(f64::from(f32::EPSILON)) * (magnitudes[index] + offset);
                let what = format!("{m}×{n}×{k}, {path:?}, transposed {transposed}, accumulate {accumulate}, {threads:?}, element {index}");
                assert!(
                    (got - exact_rounded[index]).abs() <= sum_error,
                    "{what}: {got} against {}",
                    exact_rounded[index]
                );
                let bf16_error = (2f64.powi(-7) + 2f64.powi(-16)) * magnitudes[index] + sum_error;
                assert!(
                    (got - exact[index]).abs() <= bf16_error,
                    "{what}: {got} against unrounded {}",
                    exact[index]
                );
            }
        }
    }
}

#[test]
fn products_match_an_f64_reference_around_the_register_and_vector_widths() {
    let sides = [1, 15, 16, 17, 31, 32, 33, 63, 64, 65];
    for &m in &sides {
        for &n in &sides {
            for &k in &sides {
                check(m, n, k, false, Threads::One);
            }
        }
    }
}

/// Shapes where a kept operand's products take the row panels (columns no
/// multiple of 16, inner dimension from 64), around their 64-row panels,
/// 6-column blocks and inner blocks (the sums parked between them: many
/// columns cut 520 deep in three, 49 columns 2733 deep in two, the last
/// block odd; also past one block of columns), split and not.
#[test]
fn kept_operands_match_an_f64_reference_on_ragged_columns() {
    for (m, n, k) in [
        (1, 1, 64),
        (63, 49, 129),
        (64, 7, 256),
        (65, 25, 257),
        (130, 241, 600),
        (17, 24, 65),
        (65, 1545, 520),
        (65, 49, 2733),
    ] {
        check(m, n, k, false, Threads::One);
        check(m, n, k, true, Threads::All);
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
    pool.install(|| {
        // By rows (two panels), by columns, and by uneven rows.
        for (m, n, k) in [(128, 49, 300), (65, 97, 200), (129, 7, 200)] {
            check(m, n, k, false, Threads::All);
        }
    });
}

#[test]
fn transposed_views_and_split_products_match_an_f64_reference() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("a pool");
    pool.install(|| {
        // Split by columns, by rows, and not at all; inner blocks of KC and a
        // remainder; rows packed 16 at a time ending 9 and 12 rows into the
        // last 16 (a second panel partly filled).
        for (m, n, k) in [
            (33, 400, 65),
            (200, 17, 31),
            (7, 9, 5),
            (20, 150, 600),
            (129, 1600, 3),
            (25, 40, 70),
            (44, 50, 600),
        ] {
            check(m, n, k, false, Threads::All);
            check(m, n, k, true, Threads::All);
        }
    });
    check(17, 65, 300, true, Threads::One);
}

#[test]
fn an_empty_inner_dimension_writes_zeros_or_leaves_the_sum() {
    for path in paths().into_iter().filter(|p| *p == Bf16Path::AmxBf16) {
        let empty: [f32; 0] = [];
        let mut dst = vec![1.0f32; 6];
        matmul_bf16_on(
            path,
            &mut dst,
            true,
            Matrix::row_major(&empty, 2, 0),
            Matrix::row_major(&empty, 0, 3),
            Threads::One,
        );
        assert_eq!(dst, [1.0; 6]);
        matmul_bf16_on(
            path,
            &mut dst,
            false,
            Matrix::row_major(&empty, 2, 0),
            Matrix::row_major(&empty, 0, 3),
            Threads::One,
        );
        assert_eq!(dst, [0.0; 6]);
    }
}

#[test]
fn rounding_is_to_nearest_even_and_keeps_infinities_and_nans() {
    assert_eq!(round_to_bf16(1.0), 1.0);
    // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties go to the even 1.
    assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
    assert_eq!(round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2.0 * 2f32.powi(-7));
    assert_eq!(
        round_to_bf16(-1.0 - 2f32.powi(-8) - 2f32.powi(-20)),
        -1.0 - 2f32.powi(-7)
    );
    assert_eq!(round_to_bf16(f32::MAX), f32::INFINITY);
    assert_eq!(round_to_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
    assert!(round_to_bf16(f32::NAN).is_nan());
    assert_eq!(round_to_bf16(-1e-40).to_bits(), (-0.0f32).to_bits());
}

/// The branch-free rounding gives the bits of the rounding written case
/// by case (below): ties, carries into the exponent and to infinity, zeros
/// and subnormals of both signs, NaNs, and a run of ordinary values.
#[test]
fn rounding_in_f32_keeps_the_bf16_bits() {
    // NaNs made quiet, subnormals a zero of their sign, everything else
    // to nearest, ties to even.
    let case_by_case = |x: f32| -> u32 {
        let bits = x.to_bits();
        let half = if x.is_nan() {
            (bits >> 16) as u16 | 0x0040
        } else if x.is_subnormal() {
            (bits >> 16) as u16 & 0x8000
        } else {
            (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
        };
        u32::from(half) << 16
    };
    let mut values = vec![
        0.0f32,
        -0.0,
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        -1.0 - 2f32.powi(-8) - 2f32.powi(-20),
        2.0 - 2f32.powi(-23),
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7F80_0001),
        1e-40,
        -1e-40,
        f32::MIN_POSITIVE,
    ];
    values.extend((0..100_000).map(|i| (i as f32 * 0.7391).sin() * 3f32.powi(i % 40 - 20)));
    let want: Vec<u32> = values.iter().map(|&v| case_by_case(v)).collect();
    let got: Vec<u32> = values.iter().map(|&v| round_to_bf16(v).to_bits()).collect();
    let differ = want.iter().zip(&got).position(|(a, b)| a != b);
    assert!(differ.is_none(), "value {differ:?}");
}

/// The scalar rounding (used when packing strided views) and the vector
/// conversion of the AVX512-BF16 path agree on every kind of value.
#[cfg(target_arch = "x86_64")]
#[test]
fn scalar_and_vector_rounding_agree() {
    if InstructionSet::detected() < InstructionSet::Avx512Bf16 {
        eprintln!("this CPU has no AVX512-BF16: only the rounded-f32 path runs here");
        return;
    }
    let specials = [
        0.0,
        -0.0,
        1.0,
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-40,
        -1e-40,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        3.4e38,
        65504.0,
        -7.3e-12,
    ];
    let values: Vec<f32> = specials
        .iter()
        .copied()
        .chain(values(4096, 3))
        .chain((0..4096).map(|i| f32::from_bits(0x3F80_0000 + i * 97)))
        .collect();
    // A 1×len row times a len×1 column of ones, one element at a time, reads the vector rounding back.
    for &x in &values {
        let column = [x];
        let one = [1.0f32];
        let mut dst = [0.0f32];
        matmul_bf16_on(
            Bf16Path::Avx512Bf16,
            &mut dst,
            false,
            Matrix::row_major(&one, 1, 1),
            Matrix::row_major(&column, 1, 1),
            Threads::One,
        );
        let expected = round_to_bf16(x);
        assert!(
            // (A zero's sign is lost to the zero the sum starts from.)
            dst[0] == expected || (dst[0].is_nan() && expected.is_nan()),
            "{x:e} ({:#010x}): vector {:e}, scalar {expected:e}",
            x.to_bits(),
            dst[0]
        );
    }
}

/// A transposed view's panels (packed 16 columns at a time through a
/// transposition) are the panels of the same values copied row-major first,
/// bit for bit, on ragged sizes around 16 columns and 32 rows, in panels of
/// 48 and 32 columns with padded pair rows.
#[cfg(target_arch = "x86_64")]
#[test]
fn transposed_views_pack_as_their_row_major_copies() {
    if InstructionSet::detected() < InstructionSet::Avx512Bf16 {
        eprintln!("this CPU has no AVX512-BF16: the packing of the vdpbf16ps and tile paths does not run here");
        return;
    }
    fn both<const WIDTH: usize>(
        rows: usize,
        cols: usize,
        inner: std::ops::Range<usize>,
        columns: std::ops::Range<usize>,
    ) {
        let stored = values(rows * cols, 5);
        // `b` is rows × cols, stored transposed (cols × rows, row-major).
        let b = Matrix::row_major(&stored, cols, rows).t();
        let copied = b.to_vec();
        let pair_rows = inner.len().div_ceil(2).next_multiple_of(16);
        let (mut from_view, mut from_copy, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
        // SAFETY: the CPU has AVX512-BF16 (checked above).
        unsafe {
            avx512::pack_b_view::<WIDTH>(
                b,
                inner.clone(),
                columns.clone(),
                pair_rows,
                &mut from_view,
                &mut scratch,
            );
            avx512::pack_b_view::<WIDTH>(
                Matrix::row_major(&copied, rows, cols),
                inner.clone(),
                columns.clone(),
                pair_rows,
                &mut from_copy,
                &mut scratch,
            );
        }
        assert_eq!(
            from_view, from_copy,
            "{rows}×{cols}, rows {inner:?}, columns {columns:?}, panels of {WIDTH}"
        );
    }
    for (rows, cols) in [(1, 1), (31, 15), (32, 16), (33, 17), (65, 47), (70, 49), (100, 100)] {
        both::<48>(rows, cols, 0..rows, 0..cols);
        both::<32>(rows, cols, 0..rows, 0..cols);
        both::<48>(rows, cols, rows / 3..rows, cols / 2..cols);
        both::<32>(rows, cols, rows / 2..rows, cols / 3..cols);
    }
}

/// A product after one whose right operand held infinities and NaNs, on
/// the same thread's packing buffers: the padding of the inner dimension
/// (the AMX path pads 88 inner columns, 44 pairs, to 48) is zeroed again,
/// not left stale from the first product's 512-deep block.
#[test]
fn stale_packing_buffers_do_not_leak_into_the_next_product() {
    let (m, n) = (33, 40);
    let (first_k, k) = (512, 88);
    let first_a = values(m * first_k, 5);
    let poisoned: Vec<f32> = (0..first_k * n)
        .map(|i| [f32::INFINITY, f32::NAN, f32::NEG_INFINITY][i % 3])
        .collect();
    let a_values = values(m * k, 3);
    let a = Matrix::row_major(&a_values, m, k);
    let b_values = values(k * n, 4);
    let b = Matrix::row_major(&b_values, k, n);
    let (exact, magnitudes) = reference(a, b, round_to_bf16);
    let firsts = packings(Matrix::row_major(&first_a, m, first_k));
    for ((path, first), (_, lhs)) in firsts.iter().zip(&packings(a)) {
        let mut dst = vec![0.0; m * n];
        matmul_bf16_packed(
            &mut dst,
            false,
            first,
            Matrix::row_major(&poisoned, first_k, n),
            Threads::One,
        );
        matmul_bf16_packed(&mut dst, false, lhs, b, Threads::One);
        for (index, &got) in dst.iter().enumerate() {
            let bound = (k as f64 + 2.0) * f64::from(f32::EPSILON) * magnitudes[index];
            assert!(
                (f64::from(got) - exact[index]).abs() <= bound,
                "{path}: element {index} is {got} after a product with NaNs, against {}",
                exact[index]
            );
        }
    }
}

/// A thread's tile scope is one at a time: a second one inside the first
/// would release the tiles under the first's remaining runs. Closed, the
/// thread may open another.
#[test]
fn tile_scopes_do_not_nest_on_a_thread() {
    use super::amx::{TileKernel, TileScope};
    // SAFETY: the emulation configures nothing.
    let outer = unsafe { TileScope::enter(TileKernel::Emulated) };
    // SAFETY: as above.
    let nested = std::panic::catch_unwind(|| drop(unsafe { TileScope::enter(TileKernel::Emulated) }));
    assert!(nested.is_err(), "a scope inside an open one");
    drop(outer);
    // SAFETY: as above.
    drop(unsafe { TileScope::enter(TileKernel::Emulated) });
}
