use super::*;
use crate::pool::MaxPool2dConfig;
use caf_testkit::{check_gradient, distinct_values, probe_like};
use candle_core::{DType, Var};

/// Odd geometries: non-square inputs, strides, padding, batch 1, 1×1 kernels
/// (with strides 2 and 3: subsampled, odd sides and a side the stride
/// divides), AlexNet's 11×11/4 stem, enough images to run in parallel over images, and
/// 3×3 stride-1 kernels (the Winograd path) with padding 0 to 2, odd sides,
/// a single output position and rows longer than one SIMD chunk of tiles.
pub(super) const CASES: [(&[usize], &[usize], Conv2dParams); 15] = [
    (&[1, 2, 7, 9], &[3, 2, 3, 3], Conv2dParams { stride: 2, padding: 1 }),
    (&[2, 3, 8, 5], &[4, 3, 5, 5], Conv2dParams { stride: 1, padding: 2 }),
    (&[1, 3, 23, 19], &[2, 3, 11, 11], Conv2dParams { stride: 4, padding: 2 }),
    (&[3, 4, 5, 6], &[5, 4, 1, 1], Conv2dParams { stride: 1, padding: 0 }),
    (&[2, 4, 7, 6], &[3, 4, 1, 1], Conv2dParams { stride: 2, padding: 0 }),
    (&[3, 2, 8, 9], &[2, 2, 1, 1], Conv2dParams { stride: 3, padding: 0 }),
    (&[5, 2, 6, 7], &[3, 2, 3, 2], Conv2dParams { stride: 1, padding: 1 }),
    (&[9, 3, 9, 8], &[4, 3, 3, 3], Conv2dParams { stride: 2, padding: 0 }),
    (&[1, 1, 2, 3], &[2, 1, 3, 3], Conv2dParams { stride: 3, padding: 1 }),
    (&[2, 3, 7, 6], &[4, 3, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
    (&[1, 2, 5, 8], &[3, 2, 3, 3], Conv2dParams { stride: 1, padding: 0 }),
    (&[3, 2, 4, 5], &[2, 2, 3, 3], Conv2dParams { stride: 1, padding: 2 }),
    (&[1, 1, 1, 1], &[2, 1, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
    (&[9, 5, 6, 6], &[7, 5, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
    (&[2, 2, 5, 37], &[3, 2, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
];

/// ResNet-18's max pooling after its stem.
pub(super) const RESNET_POOL: MaxPool2dConfig = MaxPool2dConfig {
    kernel: 3,
    stride: 2,
    padding: 1,
    ceil_mode: false,
};

/// AlexNet's max poolings.
pub(super) const ALEXNET_POOL: MaxPool2dConfig = MaxPool2dConfig {
    padding: 0,
    ..RESNET_POOL
};

/// Deterministic values in [-1, 1] for the kernels' own f64 comparisons.
pub(super) fn values(len: usize, seed: f64) -> Vec<f64> {
    (0..len).map(|i| ((i as f64 + seed) * 0.618).sin()).collect()
}

/// Every element of `ours` within 1e-12 of `reference`'s largest magnitude.
pub(super) fn assert_close(ours: &[f64], reference: &[f64], what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}");
    let scale = reference.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert!((a - b).abs() <= 1e-12 * scale, "{what}: element {i}: {a} against {b}");
    }
}

fn candle_conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: Conv2dParams) -> Result<Tensor> {
    let y = x.conv2d(w, p.padding, p.stride, 1, 1)?;
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

/// candle 0.11's conv2d backward takes the output padding of its transposed
/// convolution from the height alone, so its input gradient has the wrong
/// width when the two sides leave different stride remainders; those cases
/// are checked against finite differences only.
fn candle_backward_supports(input: &[usize], weight: &[usize], p: Conv2dParams) -> bool {
    let remainder = |side: usize, kernel: usize| (side + 2 * p.padding - kernel) % p.stride;
    remainder(input[2], weight[2]) == remainder(input[3], weight[3])
}

/// The largest difference relative to `b`'s largest value; infinite when
/// `a` holds a NaN or an infinity (which candle's `max_all` would pass over).
fn max_relative_difference(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    if !a
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .iter()
        .all(|v| v.is_finite())
    {
        return Ok(f64::INFINITY);
    }
    let scale = b.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.max(1e-12);
    Ok((a - b)?.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? / scale)
}

/// The dtypes and bias settings each case runs with.
const VARIANTS: [(DType, bool); 3] = [(DType::F32, false), (DType::F32, true), (DType::F64, true)];

/// Input, weight and bias variables of a case, in `dtype`.
fn operands(input: &[usize], weight: &[usize], dtype: DType) -> Result<(Var, Var, Var)> {
    Ok((
        Var::from_tensor(&distinct_values(input)?.to_dtype(dtype)?)?,
        Var::from_tensor(&(distinct_values(weight)? * 0.7)?.to_dtype(dtype)?)?,
        Var::from_tensor(&(distinct_values(weight[0])? * 0.3)?.to_dtype(dtype)?)?,
    ))
}

#[test]
fn forward_and_all_gradients_match_candles_reference_ops() -> Result<()> {
    for (input, weight, params) in CASES {
        for (dtype, with_bias) in VARIANTS {
            let (x, w, b) = operands(input, weight, dtype)?;
            let bias = with_bias.then_some(b.as_tensor());
            let ours = conv2d(&x, &w, bias, params)?;
            let reference = candle_conv(&x, &w, bias, params)?;
            let tolerance = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            let what = format!("{input:?} * {weight:?} {params:?} {dtype:?} bias {with_bias}");
            assert!(
                max_relative_difference(&ours, &reference)? < tolerance,
                "forward {what}"
            );
            if !candle_backward_supports(input, weight, params) {
                continue;
            }
            let probe = probe_like(ours.shape())?.to_dtype(dtype)?;
            let ours = (ours * &probe)?.sum_all()?.backward()?;
            let reference = (reference * &probe)?.sum_all()?.backward()?;
            let vars: &[(&Var, &str)] = if with_bias {
                &[(&x, "input"), (&w, "weight"), (&b, "bias")]
            } else {
                &[(&x, "input"), (&w, "weight")]
            };
            for (var, name) in vars {
                let (a, b) = (
                    ours.get(var).expect("our gradient"),
                    reference.get(var).expect("candle's"),
                );
                assert!(max_relative_difference(a, b)? < tolerance, "{name} gradient {what}");
            }
        }
    }
    Ok(())
}

/// The fused ReLU gives what the ReLU after the convolution gives: the same
/// output and the same gradients, bit for bit (the same kernels, the same mask).
#[test]
fn conv2d_relu_matches_relu_after_conv2d() -> Result<()> {
    let mut clipped = 0;
    for (input, weight, params) in CASES {
        for (dtype, with_bias) in VARIANTS {
            let (x, w, b) = operands(input, weight, dtype)?;
            let bias = with_bias.then_some(b.as_tensor());
            let fused = conv2d_relu(&x, &w, bias, params)?;
            let composed = crate::relu(&conv2d(&x, &w, bias, params)?)?;
            let what = format!("{input:?} * {weight:?} {params:?} {dtype:?} bias {with_bias}");
            let flat = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>();
            assert_eq!(flat(&fused)?, flat(&composed)?, "forward {what}");
            clipped += flat(&fused)?.iter().filter(|&&v| v == 0.0).count();
            let probe = probe_like(fused.shape())?.to_dtype(dtype)?;
            let fused = (fused * &probe)?.sum_all()?.backward()?;
            let composed = (composed * &probe)?.sum_all()?.backward()?;
            let vars: &[&Var] = if with_bias { &[&x, &w, &b] } else { &[&x, &w] };
            for var in vars {
                let (a, b) = (fused.get(var).expect("fused"), composed.get(var).expect("composed"));
                assert_eq!(flat(a)?, flat(b)?, "gradient {what}");
            }
        }
    }
    assert!(
        clipped > 100,
        "only {clipped} outputs were clipped: the ReLU was hardly tested"
    );
    Ok(())
}

/// The fused residual sum gives what [`crate::add_relu`] after the
/// convolution gives: the same output and the same gradients of the input,
/// the weight and the residual, bit for bit (the same sums, added in the
/// same order); a bias in the graph takes the two operations and gets its
/// gradient.
#[test]
fn conv2d_add_relu_matches_add_relu_after_conv2d() -> Result<()> {
    let mut clipped = 0;
    for (input, weight, params) in CASES {
        for (dtype, with_bias) in VARIANTS {
            let (x, w, b) = operands(input, weight, dtype)?;
            let output = conv2d(&x, &w, None, params)?;
            let residual = Var::from_tensor(&(probe_like(output.shape())?.to_dtype(dtype)? * 0.5)?)?;
            let flat = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>();
            for bias_in_graph in [false, true] {
                let detached = b.as_tensor().detach();
                let bias = match (with_bias, bias_in_graph) {
                    (false, _) => None,
                    (true, true) => Some(b.as_tensor()),
                    (true, false) => Some(&detached),
                };
                let what =
                    format!("{input:?} * {weight:?} {params:?} {dtype:?} bias {with_bias} in graph {bias_in_graph}");
                let fused = conv2d_add_relu(&x, &w, bias, params, &residual)?;
                let composed = crate::add_relu(&conv2d(&x, &w, bias, params)?, &residual)?;
                assert_eq!(flat(&fused)?, flat(&composed)?, "forward {what}");
                clipped += flat(&fused)?.iter().filter(|&&v| v == 0.0).count();
                let probe = probe_like(fused.shape())?.to_dtype(dtype)?;
                let fused = (fused * &probe)?.sum_all()?.backward()?;
                let composed = (composed * &probe)?.sum_all()?.backward()?;
                let mut vars = vec![(&x, "input"), (&w, "weight"), (&residual, "residual")];
                if with_bias && bias_in_graph {
                    vars.push((&b, "bias"));
                }
                for (var, name) in vars {
                    let (a, b) = (fused.get(var).expect("fused"), composed.get(var).expect("composed"));
                    assert_eq!(flat(a)?, flat(b)?, "{name} gradient {what}");
                }
            }
        }
    }
    assert!(
        clipped > 100,
        "only {clipped} outputs were clipped: the ReLU was hardly tested"
    );
    Ok(())
}

/// A frozen bf16 weight's fused residual sum (on the AMX tiles where the CPU
/// has them) gives what the convolution and then [`crate::add_relu`] give,
/// bit for bit; a residual of another shape is refused, named.
#[test]
fn frozen_bf16_conv2d_add_relu_matches_add_relu_after_conv2d() -> Result<()> {
    let cases: [(&[usize], &[usize], Conv2dParams); 3] = [
        (&[5, 32, 9, 7], &[32, 32, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
        (&[1, 64, 6, 6], &[64, 64, 3, 3], Conv2dParams { stride: 1, padding: 1 }),
        (&[4, 32, 8, 9], &[64, 32, 1, 1], Conv2dParams { stride: 2, padding: 0 }),
    ];
    on_two_workers(|| {
        for (input, weight, params) in cases {
            let (x, w, b) = operands(input, weight, DType::F32)?;
            let w = (w.as_tensor() / (weight[1] * weight[2] * weight[3]) as f64)?;
            let frozen = FrozenWeight::with_precision(&w, Precision::Bf16)?;
            let bias = b.as_tensor().detach();
            let unfused = conv2d(&x.as_tensor().detach(), &frozen, Some(&bias), params)?;
            let residual = ((probe_like(unfused.shape())?.to_dtype(DType::F32)? - 1.0)? * 0.2)?;
            let fused = conv2d_add_relu(&x.as_tensor().detach(), &frozen, Some(&bias), params, &residual)?;
            let composed = crate::add_relu(&unfused, &residual)?;
            let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            let what = format!("{input:?} * {weight:?} {params:?}");
            assert_eq!(flat(&fused)?, flat(&composed)?, "{what}");
            let fused = flat(&fused)?;
            assert!(fused.contains(&0.0) && fused.iter().any(|&v| v > 0.0), "{what}");
            let wrong = residual.narrow(3, 0, 1)?;
            let error = conv2d_add_relu(&x, &frozen, Some(&bias), params, &wrong)
                .unwrap_err()
                .to_string();
            assert!(error.contains("residual") && error.contains("output shape"), "{error}");
        }
        Ok(())
    })
}

/// The fused pooling gives what [`crate::max_pool2d`] after
/// [`conv2d_relu`] gives, bit for bit, with ResNet-18's and AlexNet's
/// pooling and a small overlapping one; with a gradient asked for it runs
/// the two operations and the gradients flow.
#[test]
fn conv2d_relu_max_pool2d_matches_the_pool_after_conv2d_relu() -> Result<()> {
    let pools = [(3, 2, 1), (3, 2, 0), (2, 1, 0)].map(|(kernel, stride, padding)| MaxPool2dConfig {
        kernel,
        stride,
        padding,
        ceil_mode: false,
    });
    let mut pooled = 0;
    for (input, weight, params) in CASES {
        for (dtype, with_bias) in VARIANTS {
            let (x, w, b) = operands(input, weight, dtype)?;
            let output = conv2d(&x, &w, None, params)?;
            for pool in pools {
                let (_, _, h, w_out) = output.dims4()?;
                if pool.output_len(h).is_err() || pool.output_len(w_out).is_err() {
                    continue;
                }
                let what = format!("{input:?} * {weight:?} {params:?} {dtype:?} bias {with_bias} {pool:?}");
                let flat = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>();
                let (xd, wd, bd) = (x.as_tensor().detach(), w.as_tensor().detach(), b.as_tensor().detach());
                let bias = with_bias.then_some(&bd);
                let fused = conv2d_relu_max_pool2d(&xd, &wd, bias, params, pool)?;
                let composed = crate::max_pool2d(&conv2d_relu(&xd, &wd, bias, params)?, pool)?;
                assert_eq!(fused.dims(), composed.dims(), "{what}");
                assert_eq!(flat(&fused)?, flat(&composed)?, "{what}");
                pooled += 1;
                let bias = with_bias.then_some(b.as_tensor());
                let live = conv2d_relu_max_pool2d(&x, &w, bias, params, pool)?;
                assert_eq!(flat(&live)?, flat(&composed)?, "with a gradient asked for: {what}");
                let grads = live.sum_all()?.backward()?;
                assert!(grads.get(&x).is_some() && grads.get(&w).is_some(), "{what}");
            }
        }
    }
    assert!(pooled > 40, "only {pooled} cases pooled");
    Ok(())
}

/// A frozen bf16 weight's fused pooling (on the AMX tiles where the CPU has
/// them: each worker's images pooled from its own buffer, or at batch 1
/// after the whole output) gives what [`crate::max_pool2d`] after
/// [`conv2d_relu`] gives, bit for bit: ResNet-18's stem and pooling (its
/// columns folded, and on an output that takes several bands),
/// AlexNet's, and 3×3 layers with chunks of images and rows of several
/// vectors.
#[test]
fn frozen_bf16_conv2d_relu_max_pool2d_matches_the_pool_after_conv2d_relu() -> Result<()> {
    let (resnet, alexnet) = (RESNET_POOL, ALEXNET_POOL);
    let cases: [(&[usize], &[usize], Conv2dParams, MaxPool2dConfig); 7] = [
        // A stem's output of over 1 MiB an image: several bands.
        (
            &[1, 3, 130, 128],
            &[64, 3, 7, 7],
            Conv2dParams { stride: 2, padding: 3 },
            resnet,
        ),
        (
            &[5, 3, 30, 26],
            &[64, 3, 7, 7],
            Conv2dParams { stride: 2, padding: 3 },
            resnet,
        ),
        (
            &[4, 32, 21, 40],
            &[32, 32, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
            resnet,
        ),
        (
            &[6, 64, 13, 13],
            &[192, 64, 5, 5],
            Conv2dParams { stride: 1, padding: 2 },
            alexnet,
        ),
        (
            &[9, 32, 11, 12],
            &[64, 32, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
            resnet,
        ),
        (
            &[1, 64, 9, 9],
            &[32, 64, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
            alexnet,
        ),
        (
            &[4, 32, 14, 14],
            &[32, 32, 3, 3],
            Conv2dParams { stride: 2, padding: 1 },
            resnet,
        ),
    ];
    on_two_workers(|| {
        for (input, weight, params, pool) in cases {
            let x = distinct_values(input)?.to_dtype(DType::F32)?;
            let fan_in = (weight[1] * weight[2] * weight[3]) as f64;
            let w = ((distinct_values(weight)? / fan_in)? * 4.0)?.to_dtype(DType::F32)?;
            let bias = (distinct_values(weight[0])? * 0.1)?.to_dtype(DType::F32)?;
            let frozen = FrozenWeight::with_precision(&w, Precision::Bf16)?;
            let fused = conv2d_relu_max_pool2d(&x, &frozen, Some(&bias), params, pool)?;
            let composed = crate::max_pool2d(&conv2d_relu(&x, &frozen, Some(&bias), params)?, pool)?;
            let what = format!("{input:?} * {weight:?} {params:?} {pool:?}");
            assert_eq!(fused.dims(), composed.dims(), "{what}");
            let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            let fused = flat(&fused)?;
            assert_eq!(fused, flat(&composed)?, "{what}");
            assert!(fused.contains(&0.0) && fused.iter().any(|&v| v > 0.0), "{what}");
        }
        Ok(())
    })
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    for (input, weight, params) in CASES {
        let x = distinct_values(input)?;
        let w = (distinct_values(weight)? * 0.7)?;
        let b = (distinct_values(weight[0])? * 0.3)?;
        check_gradient(|x| conv2d(x, &w, Some(&b), params), &x, 1e-6)?;
        check_gradient(|w| conv2d(&x, w, None, params), &w, 1e-6)?;
        check_gradient(|b| conv2d(&x, &w, Some(b), params), &b, 1e-6)?;
    }
    Ok(())
}

#[test]
fn an_input_outside_the_graph_gets_no_gradient() -> Result<()> {
    let image = distinct_values((2, 3, 6, 6))?.to_dtype(DType::F32)?;
    let w = Var::from_tensor(&distinct_values((4, 3, 3, 3))?.to_dtype(DType::F32)?)?;
    let grads = conv2d(&image, &w, None, Conv2dParams { stride: 1, padding: 1 })?
        .sum_all()?
        .backward()?;
    assert!(grads.get(&image).is_none());
    assert_eq!(grads.get(&w).expect("weight gradient").dims(), [4, 3, 3, 3]);
    Ok(())
}

#[test]
fn non_contiguous_inputs_are_accepted() -> Result<()> {
    let x = distinct_values((2, 6, 5, 3))?.permute((0, 3, 2, 1))?; // 2×3×5×6, strided
    let w = distinct_values((4, 3, 3, 3))?;
    let params = Conv2dParams { stride: 1, padding: 1 };
    let difference = max_relative_difference(&conv2d(&x, &w, None, params)?, &candle_conv(&x, &w, None, params)?)?;
    assert!(difference < 1e-12);
    Ok(())
}

#[test]
fn bad_shapes_are_refused_with_the_shapes_named() -> Result<()> {
    let x = distinct_values((1, 3, 8, 8))?;
    let params = Conv2dParams { stride: 1, padding: 0 };
    let error = conv2d(&x, &distinct_values((4, 2, 3, 3))?, None, params).expect_err("channel mismatch");
    assert!(error.to_string().contains("3 channels"), "{error}");
    let error = conv2d(&x, &distinct_values((4, 3, 9, 9))?, None, params).expect_err("kernel too large");
    assert!(error.to_string().contains("smaller than the 9×9 kernel"), "{error}");
    let error = conv2d(&x.squeeze(0)?, &distinct_values((4, 3, 3, 3))?, None, params).expect_err("3-D input");
    assert!(error.to_string().contains("B×C×H×W"), "{error}");
    let error = conv2d(&x, &distinct_values((4, 3, 3, 3))?.to_dtype(DType::F32)?, None, params).expect_err("dtypes");
    assert!(error.to_string().contains("all be f32 or all f64"), "{error}");
    let w = distinct_values((4, 3, 3, 3))?;
    let error = conv2d(&x, &w, Some(&distinct_values(3)?), params).expect_err("bias length");
    assert!(error.to_string().contains("must have 4 values"), "{error}");
    Ok(())
}

/// One frozen weight meets a single 28×28 map, which F(2×2, 3×3) runs, and
/// a batch of three, which F(4×4, 3×3) runs (on two workers): it keeps both
/// transforms, each computing what the live weight computes.
#[test]
fn a_frozen_weight_keeps_a_transform_per_variant() -> Result<()> {
    on_two_workers(|| {
        let params = Conv2dParams { stride: 1, padding: 1 };
        let (_, w, _) = operands(&[1, 64, 28, 28], &[64, 64, 3, 3], DType::F32)?;
        let w = (w.as_tensor() / 576.0)?;
        let frozen = FrozenWeight::new(&w)?;
        let mut kept = Vec::new();
        for (batch, variant) in [(1, winograd::Variant::F2x3), (3, winograd::Variant::F4x3)] {
            let (x, _, _) = operands(&[batch, 64, 28, 28], &[64, 64, 3, 3], DType::F32)?;
            let (ours, live) = (conv2d(&x, &frozen, None, params)?, conv2d(&x, &w, None, params)?);
            assert!(max_relative_difference(&ours, &live)? < 1e-5, "batch {batch}");
            kept.push(variant);
            assert_eq!(frozen.kept().winograd_kept(), kept, "batch {batch}");
        }
        Ok(())
    })
}

/// A frozen weight computes what the live one computes, forward and input
/// gradient, in f32 and f64: on single 13×13 and 27×27 maps, where only the
/// kept kernel transform sends them to Winograd (on two workers), on a batch
/// that runs there anyway, and on layers that never do (nothing kept). The
/// 128-channel 13×13 map (24 tiles a worker), the 7×7 one (49 columns) and
/// the strided layer (20 columns) multiply f32 from the weight's packed
/// operands where the CPU has AVX-512.
#[test]
fn frozen_weights_compute_what_live_ones_do() -> Result<()> {
    let cases: [(&[usize], &[usize], Conv2dParams, bool); 6] = [
        (
            &[1, 64, 13, 13],
            &[96, 64, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
            true,
        ),
        (
            &[1, 128, 13, 13],
            &[96, 128, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
            true,
        ),
        (
            &[1, 32, 7, 7],
            &[80, 32, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
            false,
        ),
        (
            &[1, 64, 27, 27],
            &[64, 64, 5, 5],
            Conv2dParams { stride: 1, padding: 2 },
            true,
        ),
        (
            &[4, 64, 7, 9],
            &[64, 64, 3, 3],
            Conv2dParams { stride: 1, padding: 0 },
            true,
        ),
        (
            &[1, 3, 23, 19],
            &[2, 3, 11, 11],
            Conv2dParams { stride: 4, padding: 2 },
            false,
        ),
    ];
    on_two_workers(|| {
        for (input, weight, params, winograd) in cases {
            for (dtype, with_bias) in VARIANTS {
                let (x, w, b) = operands(input, weight, dtype)?;
                let w = Var::from_tensor(&(w.as_tensor() / (weight[1] * weight[2]) as f64)?)?;
                let bias = with_bias.then_some(b.as_tensor());
                let frozen = FrozenWeight::new(&w)?;
                let what = format!("{input:?} * {weight:?} {params:?} {dtype:?} bias {with_bias}");
                let tolerance = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
                let live = conv2d(&x, &w, bias, params)?;
                let first = conv2d(&x, &frozen, bias, params)?;
                assert_eq!(frozen.kept().has_winograd(), winograd, "transform kept: {what}");
                let second = conv2d_relu(&x, &frozen, bias, params)?;
                assert!(max_relative_difference(&first, &live)? < tolerance, "forward {what}");
                assert!(
                    max_relative_difference(&second, &live.relu()?)? < tolerance,
                    "forward with the kept transform and ReLU {what}"
                );
                let probe = probe_like(live.shape())?.to_dtype(dtype)?;
                let live_grads = (live * &probe)?.sum_all()?.backward()?;
                let frozen_grads = (first * &probe)?.sum_all()?.backward()?;
                let (a, b) = (
                    frozen_grads.get(&x).expect("input gradient through the frozen weight"),
                    live_grads.get(&x).expect("live input gradient"),
                );
                assert!(max_relative_difference(a, b)? < tolerance, "input gradient {what}");
                assert!(
                    frozen_grads.get(frozen.tensor()).is_none(),
                    "frozen weight has no gradient: {what}"
                );
            }
        }
        Ok(())
    })
}

/// Freezing copies: changing the original weight in place afterwards (what
/// an optimiser step does) changes neither the frozen weight nor what it
/// computes with its kept transform.
#[test]
fn a_frozen_weight_ignores_later_changes_to_the_original() -> Result<()> {
    on_two_workers(a_frozen_weight_ignores_changes)
}

fn a_frozen_weight_ignores_changes() -> Result<()> {
    let params = Conv2dParams { stride: 1, padding: 1 };
    let (x, w, _) = operands(&[1, 64, 13, 13], &[64, 64, 3, 3], DType::F64)?;
    let frozen = FrozenWeight::new(&w)?;
    let before = conv2d(&x, &frozen, None, params)?;
    w.set(&(w.as_tensor() * 3.0)?)?;
    let after = conv2d(&x, &frozen, None, params)?;
    assert_eq!(
        before.flatten_all()?.to_vec1::<f64>()?,
        after.flatten_all()?.to_vec1::<f64>()?
    );
    let changed = conv2d(&x, &w, None, params)?;
    assert!(max_relative_difference(&changed, &(before * 3.0)?)? < 1e-12);
    assert!(FrozenWeight::new(&Tensor::zeros((2, 3), DType::F32, &candle_core::Device::Cpu)?).is_err());
    Ok(())
}

/// Runs `f` on a pool of two workers, the CI machine's: which path a
/// geometry takes depends on the number of workers.
fn on_two_workers(f: impl FnOnce() -> Result<()> + Send) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .map_err(candle_core::Error::wrap)?
        .install(f)
}

/// Convolutions with one frozen weight called from many rayon tasks at once
/// (a caller predicting inside `par_iter`) all finish. The task that makes
/// the kept transform must not, waiting inside a parallel loop of its own,
/// take up another task that then waits on the same transform: with the
/// transform made in parallel, a third to a half of these rounds hung.
#[test]
fn a_frozen_weight_serves_concurrent_calls_from_rayon_tasks() -> Result<()> {
    const ROUNDS: usize = 10;
    let params = Conv2dParams { stride: 1, padding: 1 };
    // 27×27: enough tiles for eight workers to take the kept transform.
    let (x, w, _) = operands(&[1, 256, 27, 27], &[256, 256, 3, 3], DType::F32)?;
    let x = x.as_tensor().detach();
    let expected = conv2d(&x, &w, None, params)?;
    let frozen = (0..ROUNDS).map(|_| FrozenWeight::new(&w)).collect::<Result<Vec<_>>>()?;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = rayon::ThreadPoolBuilder::new()
            .num_threads(8)
            .build()
            .map_err(candle_core::Error::wrap)
            .and_then(|pool| {
                pool.install(|| {
                    frozen.iter().try_for_each(|frozen| {
                        (0..128u64).into_par_iter().try_for_each(|task| {
                            // Staggered, so that some workers are free to
                            // steal while one makes the transform.
                            std::thread::sleep(std::time::Duration::from_micros(37 * (task % 13)));
                            let y = conv2d(&x, frozen, None, params)?;
                            match max_relative_difference(&y, &expected)? < 1e-5 {
                                true => Ok(()),
                                false => candle_core::bail!("a concurrent call computed something else"),
                            }
                        })
                    })
                })
            });
        done.send(outcome).ok()
    });
    match finished.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(outcome) => outcome,
        Err(_) => panic!("concurrent calls on a frozen weight did not finish within 60 s"),
    }
}

#[test]
fn window_sides_follow_the_output_rule() {
    assert_eq!(window_output(224, 11, 4, 2), Some(55));
    assert_eq!(window_output(55, 3, 2, 0), Some(27));
    assert_eq!(window_output(2, 3, 2, 0), None);
    assert_eq!(window_output(1, 3, 2, 1), Some(1));
}

/// A bf16 frozen weight's convolution, on every route (Winograd with the
/// kept transform, bands, whole images, pointwise), against the f64
/// convolution: within `factor · 2⁻⁷` of `|x| * |w|` at each element (2⁻⁷
/// bounds the rounding of one product of two bf16 operands; Winograd's
/// transforms round sums of several inputs and weights, hence `factor`).
/// The outputs must also differ from f32's: the products really are bf16.
#[test]
fn bf16_frozen_weights_stay_within_bf16_rounding_of_f64() -> Result<()> {
    /// Input, weight, parameters, the route taken, and the error's factor.
    type Case = (&'static [usize], &'static [usize], Conv2dParams, &'static str, f64);
    let cases: [Case; 7] = [
        (
            &[1, 64, 13, 13],
            &[96, 64, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
            "winograd",
            4.0,
        ),
        (
            // A map F(4×4, 3×3) takes.
            &[1, 64, 48, 48],
            &[64, 64, 3, 3],
            Conv2dParams { stride: 1, padding: 1 },
            "winograd",
            4.0,
        ),
        (
            &[2, 64, 27, 27],
            &[64, 64, 5, 5],
            Conv2dParams { stride: 1, padding: 2 },
            "winograd",
            4.0,
        ),
        (
            &[1, 3, 99, 99],
            &[64, 3, 11, 11],
            Conv2dParams { stride: 4, padding: 2 },
            "banded",
            1.0,
        ),
        (
            &[3, 3, 23, 19],
            &[5, 3, 11, 11],
            Conv2dParams { stride: 4, padding: 2 },
            "whole images",
            1.0,
        ),
        (
            &[2, 33, 5, 7],
            &[17, 33, 1, 1],
            Conv2dParams { stride: 1, padding: 0 },
            "pointwise",
            1.0,
        ),
        (
            &[1, 65, 7, 7],
            &[31, 65, 3, 3],
            Conv2dParams { stride: 2, padding: 1 },
            "whole images",
            1.0,
        ),
    ];
    on_two_workers(|| {
        for (input, weight, params, route, factor) in cases {
            let x = distinct_values(input)?;
            let w = (distinct_values(weight)? / (weight[1] * weight[2]) as f64)?;
            let bias = distinct_values(&[weight[0]])?;
            let (x32, w32, bias32) = (
                x.to_dtype(DType::F32)?,
                w.to_dtype(DType::F32)?,
                bias.to_dtype(DType::F32)?,
            );
            let what = format!("{input:?} * {weight:?} {params:?} ({route})");
            let bf16 = FrozenWeight::with_precision(&w32, Precision::Bf16)?;
            let ours = conv2d(&x32, &bf16, Some(&bias32), params)?.to_dtype(DType::F64)?;
            // On AMX the shapes whose channels fill the tiles run on them
            // directly, with no transform kept.
            let on_tiles = crate::gemm::convolves_on_tiles(&Geometry::new(input, weight, params)?.conv_shape());
            assert_eq!(
                bf16.kept().has_winograd(),
                route.starts_with("winograd") && !on_tiles,
                "{what}"
            );
            assert_eq!(
                bf16.kept().winograd_kept().contains(&winograd::Variant::F4x3),
                input[2] == 48 && !on_tiles,
                "{what}"
            );
            let exact = candle_conv(&x, &w, Some(&bias), params)?;
            let magnitude = candle_conv(&x.abs()?, &w.abs()?, None, params)?;
            let bound = ((magnitude * (factor * 2f64.powi(-7)))? + 1e-6)?;
            let excess = ((ours.clone() - &exact)?.abs()? - bound)?
                .max_all()?
                .to_scalar::<f64>()?;
            assert!(excess <= 0.0, "{what}: beyond bf16 rounding by {excess:e}");
            let f32 = conv2d(&x32, &FrozenWeight::new(&w32)?, Some(&bias32), params)?.to_dtype(DType::F64)?;
            let apart = (ours - f32)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(
                apart > 1e-5,
                "{what}: bf16 and f32 agree to {apart:e}: were the products rounded?"
            );
        }
        Ok(())
    })
}

#[test]
fn bf16_weights_must_be_f32() -> Result<()> {
    let w = distinct_values(&[2, 1, 3, 3])?;
    let error = FrozenWeight::with_precision(&w, Precision::Bf16).expect_err("an f64 weight");
    assert!(
        error.to_string().contains("bf16 products need an f32 weight"),
        "{error}"
    );
    assert!(FrozenWeight::with_precision(&w, Precision::F32).is_ok());
    Ok(())
}

/// Under [`crate::autocast`] bf16, a trainable weight's convolution rounds
/// the operands of all three passes: the output and both gradients stay
/// within bf16's rounding of the f64 ones (relative to each one's largest
/// value), and differ from f32's.
#[test]
fn autocast_bf16_rounds_the_forward_pass_and_both_gradients() -> Result<()> {
    let mut cases: Vec<(&[usize], &[usize], Conv2dParams)> = CASES.to_vec();
    // Winograd's gradients (images enough for two workers), bands, AlexNet's 5×5.
    cases.push((&[4, 64, 7, 9], &[64, 64, 3, 3], Conv2dParams { stride: 1, padding: 1 }));
    cases.push((
        &[4, 64, 13, 13],
        &[48, 64, 5, 5],
        Conv2dParams { stride: 1, padding: 2 },
    ));
    cases.push((
        &[1, 3, 99, 99],
        &[64, 3, 11, 11],
        Conv2dParams { stride: 4, padding: 2 },
    ));
    on_two_workers(|| {
        for &(input, weight, params) in &cases {
            let what = format!("{input:?} * {weight:?} {params:?}");
            let (x, w, b) = operands(input, weight, DType::F64)?;
            let run = |dtype: DType, precision: Precision| -> Result<Vec<Tensor>> {
                let (x, w, b) = (
                    Var::from_tensor(&x.as_tensor().to_dtype(dtype)?)?,
                    Var::from_tensor(&w.as_tensor().to_dtype(dtype)?)?,
                    Var::from_tensor(&b.as_tensor().to_dtype(dtype)?)?,
                );
                let y = crate::autocast(precision, || conv2d(&x, &w, Some(&b), params))?;
                let grads = (&y * probe_like(y.shape())?.to_dtype(dtype)?)?.sum_all()?.backward()?;
                let gradient = |v: &Var| grads.get(v).expect("a gradient").to_dtype(DType::F64);
                Ok(vec![
                    y.to_dtype(DType::F64)?,
                    gradient(&x)?,
                    gradient(&w)?,
                    gradient(&b)?,
                ])
            };
            let exact = run(DType::F64, Precision::F32)?;
            let f32 = run(DType::F32, Precision::F32)?;
            let bf16 = run(DType::F32, Precision::Bf16)?;
            // The f64 run ignores the setting: bf16 products are for f32 weights.
            let f64_autocast = run(DType::F64, Precision::Bf16)?;
            for (i, pass) in ["output", "input gradient", "weight gradient"].into_iter().enumerate() {
                let error = max_relative_difference(&bf16[i], &exact[i])?;
                assert!(error < 2f64.powi(-5), "{what} {pass}: {error:e} from f64");
                let apart = max_relative_difference(&bf16[i], &f32[i])?;
                assert!(
                    apart > 1e-5,
                    "{what} {pass}: bf16 {apart:e} from f32: were the products rounded?"
                );
                assert_eq!(
                    max_relative_difference(&f64_autocast[i], &exact[i])?,
                    0.0,
                    "{what} {pass} in f64"
                );
            }
            // The bias gradient sums the output gradient: no product to round.
            assert!(
                max_relative_difference(&bf16[3], &exact[3])? < 1e-5,
                "{what} bias gradient"
            );
        }
        Ok(())
    })
}
