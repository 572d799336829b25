use super::*;
use caf_testkit::{check_gradient, distinct_values};
use candle_core::{DType, Device, Var, D};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

/// Distinct values, so every window has a unique maximum.
fn distinct_input(shape: (usize, usize, usize, usize), dtype: DType) -> Result<Tensor> {
    distinct_values(shape)?.to_dtype(dtype)
}

const WINDOWS: [MaxPool2dConfig; 7] = [
    MaxPool2dConfig {
        kernel: 3,
        stride: 2,
        padding: 0,
        ceil_mode: false,
    },
    MaxPool2dConfig {
        kernel: 3,
        stride: 2,
        padding: 1,
        ceil_mode: false,
    },
    MaxPool2dConfig {
        kernel: 2,
        stride: 2,
        padding: 0,
        ceil_mode: false,
    },
    MaxPool2dConfig {
        kernel: 3,
        stride: 1,
        padding: 1,
        ceil_mode: false,
    },
    MaxPool2dConfig {
        kernel: 3,
        stride: 2,
        padding: 0,
        ceil_mode: true,
    },
    MaxPool2dConfig {
        kernel: 2,
        stride: 2,
        padding: 0,
        ceil_mode: true,
    },
    MaxPool2dConfig {
        kernel: 3,
        stride: 2,
        padding: 1,
        ceil_mode: true,
    },
];

#[test]
fn forward_matches_candle_and_composition() -> Result<()> {
    for shape in [(1, 1, 7, 9), (2, 3, 13, 10), (1, 2, 3, 3)] {
        let x = distinct_input(shape, DType::F32)?;
        for config in WINDOWS {
            let ours = max_pool2d(&x, config)?;
            let composed = max_pool2d_composed(&x, config)?;
            assert_eq!(ours.dims(), composed.dims(), "{config:?} {shape:?}");
            assert_eq!(max_abs_diff(&ours, &composed)?, 0.0, "{config:?} {shape:?}");
            if config.padding == 0 && !config.ceil_mode {
                let candle = x.max_pool2d_with_stride(config.kernel, config.stride)?;
                assert_eq!(max_abs_diff(&ours, &candle)?, 0.0, "{config:?} {shape:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn hand_computed_overlapping_windows() -> Result<()> {
    // 1×1×3×5 input, 3×3 windows with stride 2: two windows, columns 0..3 and 2..5.
    let x = Tensor::new(
        &[[[[1f32, 5., 2., 0., 3.], [4., 0., 9., 1., 1.], [0., 6., 2., 8., 7.]]]],
        &Device::Cpu,
    )?;
    let config = MaxPool2dConfig {
        kernel: 3,
        stride: 2,
        padding: 0,
        ceil_mode: false,
    };
    let y = max_pool2d(&x, config)?;
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [9., 9.]);
    // Both windows share the 9: its gradient is the sum of both outputs' gradients.
    let var = Var::from_tensor(&x)?;
    let weights = Tensor::new(&[[[[2f32, 3.]]]], &Device::Cpu)?;
    let grads = (max_pool2d(var.as_tensor(), config)? * weights)?
        .sum_all()?
        .backward()?;
    let grad = grads.get(var.as_tensor()).expect("gradient of the input");
    let expected = [[0f32, 0., 0., 0., 0.], [0., 0., 5., 0., 0.], [0., 0., 0., 0., 0.]];
    assert_eq!(grad.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?, expected);
    Ok(())
}

#[test]
fn ties_send_the_gradient_to_the_first_maximum() -> Result<()> {
    let config = MaxPool2dConfig {
        kernel: 2,
        stride: 2,
        padding: 0,
        ceil_mode: false,
    };
    for composed in [false, true] {
        let var = Var::from_tensor(&Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu)?)?;
        let y = if composed {
            max_pool2d_composed(var.as_tensor(), config)?
        } else {
            max_pool2d(var.as_tensor(), config)?
        };
        let grads = y.sum_all()?.backward()?;
        let grad = grads
            .get(var.as_tensor())
            .expect("gradient")
            .squeeze(0)?
            .squeeze(0)?
            .to_vec2::<f32>()?;
        // Not 1/k² everywhere (candle's stock gradient): all of it on each window's first cell.
        let expected = [[1f32, 0., 1., 0.], [0., 0., 0., 0.], [1., 0., 1., 0.], [0., 0., 0., 0.]];
        assert_eq!(grad, expected, "composed = {composed}");
    }
    Ok(())
}

/// A NaN anywhere in a window wins, whichever row and column it is in, with
/// places kept (training) or not.
#[test]
fn nan_propagates() -> Result<()> {
    let config = MaxPool2dConfig {
        kernel: 2,
        stride: 2,
        padding: 0,
        ceil_mode: false,
    };
    for at in 0..4 {
        let mut values = [1f32, 3., 4., 2.];
        values[at] = f32::NAN;
        let x = Tensor::new(&values, &Device::Cpu)?.reshape((1, 1, 2, 2))?;
        assert!(
            max_pool2d(&x, config)?.flatten_all()?.to_vec1::<f32>()?[0].is_nan(),
            "NaN at {at}"
        );
        let tracked = Var::from_tensor(&x)?;
        let pooled = max_pool2d(tracked.as_tensor(), config)?;
        assert!(
            pooled.flatten_all()?.to_vec1::<f32>()?[0].is_nan(),
            "NaN at {at}, training"
        );
    }
    Ok(())
}

/// Of two NaNs in a window, the gradient goes to the first in row-major
/// order, as of two equal maxima, also when the later one lies in an
/// earlier column (the window's columns are searched before its row).
#[test]
fn the_first_of_two_nans_takes_the_gradient() -> Result<()> {
    let config = MaxPool2dConfig {
        kernel: 3,
        stride: 3,
        padding: 0,
        ceil_mode: false,
    };
    for (first, second) in [(2, 6), (1, 3), (5, 7)] {
        let mut values = [0f32; 9];
        values[first] = f32::NAN;
        values[second] = f32::NAN;
        let x = Var::from_tensor(&Tensor::new(&values, &Device::Cpu)?.reshape((1, 1, 3, 3))?)?;
        let grads = max_pool2d(x.as_tensor(), config)?.sum_all()?.backward()?;
        let gradient = grads.get(&x).expect("x is tracked").flatten_all()?.to_vec1::<f32>()?;
        let expected: Vec<f32> = (0..9).map(|i| if i == first { 1.0 } else { 0.0 }).collect();
        assert_eq!(gradient, expected, "NaNs at {first} and {second}");
    }
    Ok(())
}

fn check(f: impl Fn(&Tensor) -> Result<Tensor>, shape: (usize, usize, usize, usize)) -> Result<()> {
    check_gradient(f, &distinct_input(shape, DType::F64)?, 1e-6)
}

#[test]
fn max_pool_gradient_matches_finite_differences() -> Result<()> {
    for config in WINDOWS {
        for shape in [(1, 1, 5, 7), (2, 2, 6, 5)] {
            check(|x| max_pool2d(x, config), shape)?;
            check(|x| max_pool2d_composed(x, config), shape)?;
        }
    }
    Ok(())
}

#[test]
fn windows_that_do_not_fit_are_errors() {
    let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).expect("tensor");
    let config = MaxPool2dConfig {
        kernel: 3,
        stride: 2,
        padding: 0,
        ceil_mode: false,
    };
    let err = max_pool2d(&x, config).expect_err("2×2 input is smaller than a 3×3 window");
    assert!(err.to_string().contains("smaller than"), "{err}");
}

/// Our op and the composition on `x`: the largest difference of their
/// outputs, and of the input gradients of `Σ y · weights` (the weights
/// narrowed to the output's size).
fn differences_from_composition(x: &Var, config: MaxPool2dConfig, weights: &Tensor) -> Result<(f64, f64)> {
    let (ours, composed) = (
        max_pool2d(x.as_tensor(), config)?,
        max_pool2d_composed(x.as_tensor(), config)?,
    );
    let weights = weights.narrow(2, 0, ours.dim(2)?)?.narrow(3, 0, ours.dim(3)?)?;
    let gradient = |y: &Tensor| -> Result<Tensor> {
        let grads = (y * &weights)?.sum_all()?.backward()?;
        Ok(grads.get(x.as_tensor()).expect("gradient of the input").clone())
    };
    Ok((
        max_abs_diff(&ours, &composed)?,
        max_abs_diff(&gradient(&ours)?, &gradient(&composed)?)?,
    ))
}

/// Inputs full of ties (as after a ReLU: many zeros), on odd shapes and every
/// window: values and gradients equal the composition's, which picks each
/// window's first maximum with `argmax`; the inference op gives the same values.
#[test]
fn ties_on_every_window_match_the_composition() -> Result<()> {
    for shape in [(2, 3, 9, 11), (1, 2, 7, 6), (3, 1, 3, 5)] {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let levels: Vec<f32> = (0..n).map(|i| ((i * 7919 % 13) / 5) as f32).collect();
        let x = Var::from_tensor(&Tensor::from_vec(levels, shape, &Device::Cpu)?)?;
        let weights = distinct_input(shape, DType::F32)?;
        for config in WINDOWS {
            let (values, gradients) = differences_from_composition(&x, config, &weights)?;
            assert_eq!(values, 0.0, "{config:?} {shape:?}");
            let (ours, inference) = (
                max_pool2d(x.as_tensor(), config)?,
                max_pool2d(&x.as_tensor().detach(), config)?,
            );
            assert_eq!(max_abs_diff(&ours, &inference)?, 0.0, "{config:?} {shape:?}");
            // Where windows overlap, their gradients are added in another
            // order; a gradient sent to the wrong cell would be off by a weight.
            assert!(gradients < 1e-5, "{config:?} {shape:?}");
        }
    }
    Ok(())
}

/// Inputs so small that every window is clipped by the padding.
#[test]
fn every_window_clipped() -> Result<()> {
    let config = MaxPool2dConfig {
        kernel: 3,
        stride: 2,
        padding: 1,
        ceil_mode: false,
    };
    for shape in [(1, 2, 1, 1), (2, 1, 2, 2), (1, 1, 1, 3)] {
        let x = Var::from_tensor(&distinct_input(shape, DType::F32)?)?;
        let ones = Tensor::ones(shape, DType::F32, &Device::Cpu)?;
        let (values, gradients) = differences_from_composition(&x, config, &ones)?;
        assert_eq!(values, 0.0, "{shape:?}");
        assert_eq!(gradients, 0.0, "{shape:?}");
    }
    Ok(())
}

#[test]
fn ceil_mode_keeps_the_window_over_the_edge_as_pytorch_does() -> Result<()> {
    let config = |kernel, stride, padding| MaxPool2dConfig {
        kernel,
        stride,
        padding,
        ceil_mode: true,
    };
    // torch.nn.MaxPool2d(k, s, p, ceil_mode=True) output sides.
    assert_eq!(config(3, 2, 0).output_len(10)?, 5); // floor mode: 4
    assert_eq!(config(2, 2, 0).output_len(5)?, 3); // floor mode: 2
    assert_eq!(config(3, 2, 0).output_len(9)?, 4); // whole windows only: the same
                                                   // A window that would start in the far padding is dropped: 3×3/3 with
                                                   // padding 1 over 5 rounds up to 3 windows, but the third would start at
                                                   // 6 = 5 + 1, in the far padding, so 2 remain.
    assert_eq!(config(3, 3, 1).output_len(5)?, 2);
    // Values: 1×1×3×5, 2×2/2: the last column and row pool what they cover.
    let x = Tensor::new(
        &[[[[1f32, 5., 2., 0., 3.], [4., 0., 9., 1., -1.], [0., 6., 2., 8., 7.]]]],
        &Device::Cpu,
    )?;
    let y = max_pool2d(&x, config(2, 2, 0))?;
    assert_eq!(y.dims(), [1, 1, 2, 3]);
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [5., 9., 3., 6., 8., 7.]);
    // The gradient goes to each window's maximum, the overhanging ones included.
    let x = Var::from_tensor(&x)?;
    let grads = max_pool2d(&x, config(2, 2, 0))?.sum_all()?.backward()?;
    let expected = [[0f32, 1., 0., 0., 1.], [0., 0., 1., 0., 0.], [0., 1., 0., 1., 1.]];
    assert_eq!(
        grads
            .get(&x)
            .expect("gradient")
            .squeeze(0)?
            .squeeze(0)?
            .to_vec2::<f32>()?,
        expected
    );
    Ok(())
}

/// The pooling of a ReLU's output (no NaN) that a fused convolution runs
/// in each worker gives the general kernel's values, bit for bit, for every
/// window of [`WINDOWS`] on planes one vector wide and less, and several:
/// ties (zeros) included, and padding that never wins.
#[test]
fn pooling_a_relus_output_matches_the_general_kernel() -> Result<()> {
    for config in WINDOWS {
        for (h, w) in [(3, 3), (5, 16), (7, 17), (9, 33), (12, 40), (4, 1)] {
            let (Ok(out_h), Ok(out_w)) = (config.output_len(h), config.output_len(w)) else {
                continue;
            };
            let planes = 3;
            // A ReLU's output: half the values zeros, the rest distinct.
            let input: Vec<f32> = distinct_values((planes, h, w))?
                .to_dtype(DType::F32)?
                .relu()?
                .flatten_all()?
                .to_vec1()?;
            let (_, g) = PoolGeometry::new(config, &[1, planes, h, w])?;
            let (general, _) = g.forward_keeping(false, planes, &input);
            let mut fused = vec![f32::NAN; planes * out_h * out_w];
            g.pool_relu_planes_here(&input, &mut fused);
            assert_eq!(fused, general, "{config:?} {h}×{w}");
        }
    }
    Ok(())
}

/// The same pooling of a convolution's output before its ReLU (negative
/// values, negative zeros and NaNs among them) gives the general kernel's
/// values on the ReLU's output, bit for bit: the ReLU applied to the
/// maxima, NaN read as the ReLU's 0.
#[test]
fn pooling_before_the_relu_matches_pooling_after_it() -> Result<()> {
    for config in WINDOWS {
        for (h, w) in [(3, 3), (5, 16), (7, 17), (9, 33), (12, 40), (4, 1)] {
            let (Ok(out_h), Ok(out_w)) = (config.output_len(h), config.output_len(w)) else {
                continue;
            };
            let planes = 3;
            let mut input: Vec<f32> = distinct_values((planes, h, w))?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            for (i, value) in input.iter_mut().enumerate() {
                match i % 7 {
                    3 => *value = f32::NAN,
                    5 => *value = -0.0,
                    _ => {}
                }
            }
            let relu: Vec<f32> = input.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect();
            let (_, g) = PoolGeometry::new(config, &[1, planes, h, w])?;
            let (general, _) = g.forward_keeping(false, planes, &relu);
            let mut fused = vec![f32::NAN; planes * out_h * out_w];
            g.pool_relu_planes_here(&input, &mut fused);
            let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fused), bits(&general), "{config:?} {h}×{w}");
        }
    }
    Ok(())
}
