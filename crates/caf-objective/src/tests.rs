//! Expected values come from `crates/caf-objective/tests/reference_values.py` (numpy and torch in
//! float64, written from docs/method.md's formulas; its output is committed at the
//! bottom of that file) or are worked out by hand in the comments.

use candle_core::{DType, Device, Result, Tensor};

use super::*;
use caf_testkit::{check_gradient, distinct_values};

fn t(values: &[[f64; 2]]) -> Result<Tensor> {
    Tensor::from_vec(values.concat(), (values.len(), 2), &Device::Cpu)
}

fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

fn vector(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.to_vec1::<f64>()
}

fn assert_close(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

const PRED: [[f64; 2]; 5] = [[0.1, 0.5], [0.4, -0.2], [-0.3, 0.3], [0.8, 0.1], [-0.5, -0.6]];
const LABEL: [[f64; 2]; 5] = [[0.2, 0.4], [0.5, -0.1], [-0.4, 0.0], [0.6, 0.3], [-0.2, -0.7]];

#[test]
fn va_loss_matches_the_independent_computation() -> Result<()> {
    for dtype in [DType::F64, DType::F32] {
        let loss = va_loss(&t(&PRED)?.to_dtype(dtype)?, &t(&LABEL)?.to_dtype(dtype)?)?;
        // The ε terms shift PCC and CCC by about ε²/(2σ²σ²) ≈ 2e-7 here.
        let tolerance = if dtype == DType::F64 { 1e-6 } else { 1e-5 };
        assert_close("total", scalar(&loss.total)?, 0.44762958409142567, tolerance);
        for (got, want) in vector(&loss.rmse)?.into_iter().zip([0.1788854382, 0.1788854382]) {
            assert_close("rmse", got, want, tolerance);
        }
        for (got, want) in vector(&loss.pcc)?.into_iter().zip([0.934573931409, 0.898395721925]) {
            assert_close("pcc", got, want, tolerance);
        }
        for (got, want) in vector(&loss.ccc)?.into_iter().zip([0.913978494624, 0.893617021277]) {
            assert_close("ccc", got, want, tolerance);
        }
    }
    Ok(())
}

#[test]
fn va_loss_is_finite_on_zero_variance_batches() -> Result<()> {
    // All labels equal, all predictions equal (and the same): RMSE 0 (√ε² = 1e-6 each),
    // PCC 0, CCC 0 → L_AV = 1 + 2e-6.
    let same = t(&[[0.3, -0.2]; 4])?;
    let loss = va_loss(&same, &same)?;
    assert_close("constant, exact", scalar(&loss.total)?, 1.0 + 2e-6, 1e-9);
    // Constant predictions against varied labels: PCC = CCC = 0, L_AV = RMSE_v + RMSE_a + 1.
    let constant = t(&[[0.0, 0.0]; 5])?;
    let loss = va_loss(&constant, &t(&LABEL)?)?;
    let rmse: f64 = vector(&loss.rmse)?.iter().sum();
    assert_close("constant predictions", scalar(&loss.total)?, rmse + 1.0, 1e-9);
    for x in [&same, &constant] {
        check_gradient(|p| Ok(va_loss(p, &x.to_dtype(DType::F64)?)?.total), x, 1e-5)?;
    }
    // A single sample has zero variance on both sides too.
    let one = va_loss(&t(&[[0.5, 0.5]])?, &t(&[[0.1, -0.1]])?)?;
    assert!(scalar(&one.total)?.is_finite());
    Ok(())
}

#[test]
fn va_loss_gradient_matches_finite_differences() -> Result<()> {
    let labels = t(&LABEL)?;
    check_gradient(|p| Ok(va_loss(p, &labels)?.total), &t(&PRED)?, 1e-6)?;
    check_gradient(|p| Ok(va_loss(p, &labels)?.rmse), &t(&PRED)?, 1e-6)?;
    check_gradient(|p| Ok(va_loss(p, &labels)?.ccc), &t(&PRED)?, 1e-6)?;
    Ok(())
}

#[test]
fn va_loss_rejects_bad_shapes() {
    let a = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).expect("tensor");
    let b = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).expect("tensor");
    assert!(va_loss(&a, &b).is_err());
    assert!(va_loss(&b, &b).is_err());
}

#[test]
fn mutual_information_matches_the_reference_formula() -> Result<()> {
    let x = Tensor::new(&[[0.3f64, -0.2, 1.0], [2.0, 0.5, -1.5]], &Device::Cpu)?;
    let y = Tensor::new(&[[0.1f64, 0.4, 0.9], [1.5, -0.5, -2.0]], &Device::Cpu)?;
    let mi = vector(&mutual_information(&x, &y)?)?;
    assert_close("mi row 0", mi[0], 1.224302174685, 1e-9);
    assert_close("mi row 1", mi[1], 0.690908628409, 1e-9);
    // Where the reference's exponentials underflow (NaN), the closed form stays exact:
    // x = 29, y = 30: (2·29·30 − 29² + 1)/0.4 − log cosh(150) = 2250 − 150 + ln 2.
    let far = mutual_information(
        &Tensor::new(&[[29f64]], &Device::Cpu)?,
        &Tensor::new(&[[30f64]], &Device::Cpu)?,
    )?;
    assert_close("mi far", vector(&far)?[0], 2100.0 + std::f64::consts::LN_2, 1e-12);
    check_gradient(|x| mutual_information(x, &y), &x, 1e-6)?;
    check_gradient(|y| mutual_information(&x, y), &y, 1e-6)?;
    Ok(())
}

#[test]
fn clamp_and_relu_follow_pytorch_at_the_bounds() -> Result<()> {
    let x = Tensor::new(&[-1f64, 0.0, 1.0, 2.5, 3.0], &Device::Cpu)?;
    let var = candle_core::Var::from_tensor(&x)?;
    let grads = clamp_inclusive(var.as_tensor(), 0.0, 2.5)?.sum_all()?.backward()?;
    let g = vector(grads.get(var.as_tensor()).expect("gradient"))?;
    assert_eq!(g, [0.0, 1.0, 1.0, 1.0, 0.0]);
    assert_eq!(vector(&clamp_inclusive(&x, 0.0, 2.5)?)?, [0.0, 0.0, 1.0, 2.5, 2.5]);
    let grads = relu(var.as_tensor())?.sum_all()?.backward()?;
    assert_eq!(
        vector(grads.get(var.as_tensor()).expect("gradient"))?,
        [0.0, 0.0, 1.0, 1.0, 1.0]
    );
    Ok(())
}

#[test]
fn adaptive_neighbourhood_sizes_match_the_independent_rule() {
    let points = [
        0.0, 0.0, 0.1, 0.0, 0.2, 0.1, 1.0, 1.0, 1.1, 0.9, 0.9, 1.2, 0.15, 0.05, 1.05, 1.1,
    ];
    let labels = [true, true, true, false, false, false, true, false];
    let all: Vec<usize> = (0..8).collect();
    assert_eq!(adaptive_neighbourhood_sizes(&points, 2, &labels, &all), [2; 8]);
    // Alternating labels on a line: no size is decisive at the ends (k = all 5 others);
    // inside, the two equidistant neighbours share a label (k = 2).
    let line = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    let alternating = [true, false, true, false, true, false];
    assert_eq!(
        adaptive_neighbourhood_sizes(&line, 1, &alternating, &(0..6).collect::<Vec<_>>()),
        [5, 2, 2, 2, 2, 5]
    );
    // Neighbours labelled 1,0,1,1,1,1: 5/6 − ½ > 0.7/√6 first at k = 6.
    let line = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let labels = [false, true, false, true, true, true, true];
    assert_eq!(adaptive_neighbourhood_sizes(&line, 1, &labels, &[0]), [6]);
    // A single pair: one neighbour, never decisive (½ ≤ 0.7), so k = 1.
    assert_eq!(adaptive_neighbourhood_sizes(&[0.0, 1.0], 1, &[true, false], &[0]), [1]);
    assert_eq!(margin_offset(1), 0.7);
}

#[test]
fn adaptive_ks_take_strong_then_weak_rows() -> Result<()> {
    let strong = Tensor::new(&[[0f32, 0.0], [0.1, 0.0], [0.2, 0.1]], &Device::Cpu)?;
    let weak = Tensor::new(&[[1f32, 1.0], [1.1, 0.9], [0.9, 1.2]], &Device::Cpu)?;
    assert_eq!(adaptive_ks(&strong, &weak)?, [2, 2, 2]);
    Ok(())
}

fn critic_inputs() -> Result<(Tensor, Tensor)> {
    let strong = Tensor::new(&[[0.9f64, 0.2], [0.7, 0.4], [1.1, -0.1]], &Device::Cpu)?;
    let weak = Tensor::new(&[[0.1f64, 0.0], [-0.2, 0.3], [0.0, -0.4]], &Device::Cpu)?;
    Ok((strong, weak))
}

#[test]
fn critic_loss_matches_the_independent_computation() -> Result<()> {
    let (strong, weak) = critic_inputs()?;
    let loss = critic_loss(&strong, &weak, &[2, 1, 5], 0.3)?;
    assert_close("loss", scalar(&loss.loss)?, 0.7900213732010976, 1e-9);
    assert_close("constraint", scalar(&loss.constraint)?, 0.8268704250588026, 1e-9);
    for (got, want) in vector(&loss.d_ap)?.into_iter().zip([0.13, 0.0, 0.13]) {
        assert_close("d_ap", got, want, 1e-9);
    }
    for (got, want) in vector(&loss.d_an)?
        .into_iter()
        .zip([0.0, 0.872889499252, 0.492992263371])
    {
        assert_close("d_an", got, want, 1e-9);
    }
    for (got, want) in vector(&loss.margin)?
        .into_iter()
        .zip([1.069973373152, 1.692889499252, 1.502992263371])
    {
        assert_close("margin", got, want, 1e-9);
    }
    Ok(())
}

#[test]
fn critic_loss_single_pair_and_errors() -> Result<()> {
    // n = 1: s_0 is its own mirror (d_ap = 0); d_an = relu(clamp(MI) + 0.7 − ‖s − w‖²).
    let s = Tensor::new(&[[0.5f64, 0.5]], &Device::Cpu)?;
    let w = Tensor::new(&[[0.0f64, 0.0]], &Device::Cpu)?;
    let loss = critic_loss(&s, &w, &[1], 0.0)?;
    // MI = mean((2xy − x² + 1)/0.4 − log cosh 5y) over y = 0: (1 − 0.25)/0.4 = 1.875.
    assert_close("margin", vector(&loss.margin)?[0], 1.875 + 0.7, 1e-12);
    assert_close("d_an", vector(&loss.d_an)?[0], 2.575 - 0.5, 1e-12);
    assert_eq!(vector(&loss.d_ap)?, [0.0]);
    assert!(critic_loss(&s, &w, &[], 0.0).is_err());
    assert!(critic_loss(&s, &Tensor::zeros((2, 2), DType::F64, &Device::Cpu)?, &[1], 0.0).is_err());
    Ok(())
}

#[test]
fn critic_and_adversarial_gradients_match_finite_differences() -> Result<()> {
    let (strong, weak) = critic_inputs()?;
    for lambda in [0.0, 0.3] {
        check_gradient(|s| Ok(critic_loss(s, &weak, &[2, 1, 5], lambda)?.loss), &strong, 1e-6)?;
        check_gradient(|w| Ok(critic_loss(&strong, w, &[2, 1, 5], lambda)?.loss), &weak, 1e-6)?;
    }
    let larger = distinct_values((6, 16))?;
    let other = (distinct_values((6, 16))? * 0.7)?.affine(1.0, 0.1)?;
    check_gradient(
        |s| Ok(critic_loss(s, &other, &[1, 2, 3, 4, 5, 6], 0.1)?.loss),
        &larger,
        1e-6,
    )?;
    check_gradient(adversarial_loss, &larger, 1e-9)?;
    assert_close(
        "adversarial",
        scalar(&adversarial_loss(&t(&[[1.0, 3.0], [-2.0, 6.0]])?)?)?,
        -0.2,
        1e-12,
    );
    Ok(())
}

#[test]
fn lagrange_multiplier_moves_by_rho_times_the_constraint() {
    let mut lambda = LagrangeMultiplier::default();
    assert_eq!(lambda.value, 0.0);
    assert!(lambda.update(0.8268704250588026));
    assert_close("lambda", lambda.value, 0.8268704250588026e-6, 1e-12);
    assert!(!lambda.update(f64::NAN));
    assert_close("unchanged", lambda.value, 0.8268704250588026e-6, 1e-12);
}

#[test]
fn metrics_match_numpy_and_stream_in_any_split() {
    let labels = [0.2f32, -0.5, 0.0, 0.7, -0.1, 0.4, 0.9];
    let predictions = [0.1f32, -0.3, 0.2, 0.5, 0.0, 0.3, 0.6];
    let pairs: Vec<([f32; 2], [f32; 2])> = labels
        .iter()
        .zip(&predictions)
        .map(|(&y, &p)| ([p, p], [y, y]))
        .collect();
    let mut whole = VaMetrics::new();
    for (p, y) in &pairs {
        whole.push(*p, *y);
    }
    let summary = whole.summary();
    for axis in [summary.valence, summary.arousal] {
        assert_close("rmse", axis.rmse, 0.18516401995451032, 1e-6);
        // Signs: (+,+) (−,−) (0,+) (+,+) (−,0) (+,+) (+,+): 5 of 7 agree.
        assert_close("sagr", axis.sagr, 5.0 / 7.0, 1e-12);
        assert_close("pcc", axis.pcc, 0.973259269957074, 1e-6);
        assert_close("ccc", axis.ccc, 0.8775510204081631, 1e-6);
    }
    // Merged partial accumulators give the same numbers.
    let mut left = VaMetrics::new();
    let mut right = VaMetrics::new();
    for (i, (p, y)) in pairs.iter().enumerate() {
        if i < 3 { &mut left } else { &mut right }.push(*p, *y);
    }
    left.merge(&right);
    let merged = left.summary();
    assert_eq!(merged.count, 7);
    assert_close("merged pcc", merged.valence.pcc, summary.valence.pcc, 1e-12);
    assert_close("merged ccc", merged.arousal.ccc, summary.arousal.ccc, 1e-12);
    assert_close("merged rmse", merged.valence.rmse, summary.valence.rmse, 1e-12);
    assert!(summary.to_string().contains("valence") && summary.to_string().contains("0.9733"));
}

#[test]
fn metrics_edge_cases() {
    assert!(VaMetrics::new().summary().valence.rmse.is_nan());
    let mut constant = VaMetrics::new();
    for _ in 0..4 {
        constant.push([0.5, 0.5], [0.5, -0.5]);
    }
    let s = constant.summary();
    assert_eq!(s.valence.rmse, 0.0);
    assert!(
        s.valence.pcc.is_nan() && s.valence.ccc.is_nan(),
        "undefined for a constant set"
    );
    assert_eq!(s.arousal.ccc, 0.0, "constant but different: cov 0, finite denominator");
    assert_eq!(s.arousal.sagr, 0.0);
}
