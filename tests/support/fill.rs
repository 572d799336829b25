//! Deterministic tensor values shared with `tests/fixtures/make_parity_fixtures.py`.
//!
//! Every value is a pure function of the tensor's name and the element index
//! (a 32-bit integer hash), so Python and Rust produce bit-identical weights
//! without committing them.

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

/// FNV-1a hash of the name: the per-tensor seed.
pub fn name_seed(name: &str) -> u32 {
    name.bytes()
        .fold(0x811c9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

fn mix(mut x: u32) -> u32 {
    x = (x ^ (x >> 16)).wrapping_mul(0x7feb_352d);
    x = (x ^ (x >> 15)).wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// Uniform values in [0, 1) for element `0..n` of the tensor called `name`.
pub fn unit_values(name: &str, n: usize) -> Vec<f32> {
    let seed = name_seed(name);
    (0..n)
        .map(|i| {
            let x = seed.wrapping_add((i as u32).wrapping_mul(0x9e37_79b9));
            (mix(x) as f64 / 4_294_967_296.0) as f32
        })
        .collect()
}

/// The value of every element of a model tensor, by the role its name gives it.
pub fn model_values(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let u = unit_values(name, n);
    let scaled = |f: &dyn Fn(f32) -> f32| u.iter().map(|&v| f(v)).collect::<Vec<f32>>();
    let is_norm = name.contains("bn") || name.contains("downsample.1");
    if name.ends_with("running_var") {
        scaled(&|v| 0.5 + v)
    } else if name.ends_with("running_mean") {
        scaled(&|v| (v - 0.5) * 0.2)
    } else if is_norm && name.ends_with("weight") {
        scaled(&|v| 0.5 + v)
    } else if name.ends_with("bias") {
        scaled(&|v| (v - 0.5) * 0.2)
    } else {
        let fan_in: usize = shape.iter().skip(1).product();
        let bound = (6.0 / fan_in as f32).sqrt();
        scaled(&|v| (2.0 * v - 1.0) * bound)
    }
}

/// Input images in [-1, 1), as the fixture generator makes them.
pub fn input(name: &str, shape: (usize, usize, usize, usize)) -> Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let values = unit_values(name, n)
        .into_iter()
        .map(|v| 2.0 * v - 1.0)
        .collect::<Vec<_>>();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Sets every variable of `varmap` to its deterministic value.
pub fn fill_varmap(varmap: &VarMap) -> Result<()> {
    for (name, var) in varmap.data().lock().expect("varmap lock").iter() {
        let values = model_values(name, var.dims());
        var.set(&Tensor::from_vec(values, var.dims(), var.device())?)?;
    }
    Ok(())
}

/// Deterministic tensors for the given names and shapes (for writing files).
pub fn named_tensors(shapes: &[(String, Vec<usize>)]) -> Result<HashMap<String, Tensor>> {
    shapes
        .iter()
        .map(|(name, shape)| {
            Ok((
                name.clone(),
                Tensor::from_vec(model_values(name, shape), shape.as_slice(), &Device::Cpu)?,
            ))
        })
        .collect()
}

/// Names and shapes of a model's variables, sorted by name.
pub fn var_shapes(varmap: &VarMap) -> Vec<(String, Vec<usize>)> {
    let vars = varmap.data().lock().expect("varmap lock");
    let mut shapes: Vec<_> = vars
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    shapes.sort();
    shapes
}

/// The tensors whose names start with `prefix`, renamed without it and sorted
/// by name, as a state dict of that part would be written.
pub fn strip_prefix(tensors: &HashMap<String, Tensor>, prefix: &str) -> Vec<(String, Tensor)> {
    let mut part: Vec<(String, Tensor)> = tensors
        .iter()
        .filter_map(|(name, t)| name.strip_prefix(prefix).map(|n| (n.to_string(), t.clone())))
        .collect();
    part.sort_by(|a, b| a.0.cmp(&b.0));
    part
}
