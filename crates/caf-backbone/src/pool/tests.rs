use super::*;
use caf_testkit::{check_gradient, distinct_values};

fn check(f: impl Fn(&Tensor) -> Result<Tensor>, shape: (usize, usize, usize, usize)) -> Result<()> {
    check_gradient(f, &distinct_values(shape)?.to_dtype(DType::F64)?, 1e-6)
}

fn distinct_input(shape: (usize, usize, usize, usize), dtype: DType) -> Result<Tensor> {
    distinct_values(shape)?.to_dtype(dtype)
}

#[test]
fn adaptive_pool_upsamples_2x2_to_6x6_like_torchvision() -> Result<()> {
    let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
    let y = adaptive_avg_pool2d(&x, (6, 6))?
        .squeeze(0)?
        .squeeze(0)?
        .to_vec2::<f32>()?;
    let row = |a: f32, b: f32| vec![a, a, a, b, b, b];
    let expected = vec![
        row(1., 2.),
        row(1., 2.),
        row(1., 2.),
        row(3., 4.),
        row(3., 4.),
        row(3., 4.),
    ];
    assert_eq!(y, expected);
    Ok(())
}

#[test]
fn adaptive_pool_overlapping_windows_by_hand() -> Result<()> {
    // in 5 → out 3: windows 0..2, 1..4, 3..5.
    let x = Tensor::new(&[[[[1f32, 2., 3., 4., 5.]]]], &Device::Cpu)?;
    let y = adaptive_avg_pool2d(&x, (1, 3))?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(y, [1.5, 3.0, 4.5]);
    // 13 → 6 on both axes against a direct loop over torchvision's windows.
    let x = distinct_input((2, 3, 13, 13), DType::F32)?;
    let y = adaptive_avg_pool2d(&x, (6, 6))?;
    let data = x.flatten_all()?.to_vec1::<f32>()?;
    let out = y.flatten_all()?.to_vec1::<f32>()?;
    let window = |i: usize| (i * 13 / 6, ((i + 1) * 13).div_ceil(6));
    for plane in 0..6 {
        for i in 0..6 {
            for j in 0..6 {
                let ((y0, y1), (x0, x1)) = (window(i), window(j));
                let mut sum = 0f64;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        sum += data[plane * 169 + yy * 13 + xx] as f64;
                    }
                }
                let mean = sum / ((y1 - y0) * (x1 - x0)) as f64;
                let got = out[plane * 36 + i * 6 + j] as f64;
                assert!((got - mean).abs() < 1e-6, "plane {plane} ({i},{j}): {got} vs {mean}");
            }
        }
    }
    Ok(())
}

#[test]
fn adaptive_and_global_pool_gradients_match_finite_differences() -> Result<()> {
    check(|x| adaptive_avg_pool2d(x, (6, 6)), (1, 2, 2, 3))?;
    check(|x| adaptive_avg_pool2d(x, (3, 2)), (2, 1, 7, 5))?;
    check(|x| global_avg_pool(x)?.unsqueeze(2)?.unsqueeze(3), (2, 3, 3, 4))?;
    Ok(())
}
