//! Numerical parity with torchvision, pinned without Python.
//!
//! `fixtures/make_parity_fixtures.py` filled torchvision's AlexNet and
//! ResNet-18 (and the reference regressor) with the deterministic weights of
//! `support/fill.rs`, ran them, and stored outputs and gradients; here the
//! same weights go into our models and must give the same numbers.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use caf_backbone::{Arch, VaNet};
use caf_e2e::compare::relative_error;
use caf_e2e::fill::{fill_varmap, input, unit_values};
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

fn fixtures() -> Result<HashMap<String, Tensor>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/torchvision_parity.safetensors");
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

fn model(arch: Arch) -> Result<(VaNet, VarMap)> {
    let varmap = VarMap::new();
    let net = VaNet::new(arch, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    fill_varmap(&varmap)?;
    Ok((net, varmap))
}

/// Asserts `max |ours − torch| ≤ tolerance · max |torch|` (normwise relative error).
fn assert_close(what: &str, ours: &Tensor, expected: &Tensor, tolerance: f64) -> Result<()> {
    assert_eq!(ours.dims(), expected.dims(), "{what}: shape");
    let relative = relative_error(ours, expected)?;
    println!("{what}: relative error {relative:.3e}");
    assert!(
        relative <= tolerance,
        "{what}: relative error {relative:.3e} > {tolerance:.0e}"
    );
    Ok(())
}

fn probe(name: &str, like: &Tensor) -> Result<Tensor> {
    let values = unit_values(name, like.elem_count())
        .into_iter()
        .map(|v| v - 0.5)
        .collect::<Vec<_>>();
    Ok(Tensor::from_vec(values, like.dims(), &Device::Cpu)?)
}

fn grad_of(varmap: &VarMap, grads: &candle_core::backprop::GradStore, name: &str) -> Tensor {
    let vars = varmap.data().lock().expect("varmap lock");
    let var: &Var = vars.get(name).unwrap_or_else(|| panic!("no variable {name}"));
    grads
        .get(var.as_tensor())
        .unwrap_or_else(|| panic!("no gradient for {name}"))
        .clone()
}

#[test]
fn alexnet_matches_torchvision_in_eval_mode() -> Result<()> {
    let expected = fixtures()?;
    let (net, varmap) = model(Arch::AlexNet)?;
    let features = net
        .encoder
        .forward_t(&input("input.alexnet", (2, 3, 112, 112))?, false)?;
    assert_close(
        "alexnet features at 112 (2×2 maps pooled up to 6×6)",
        &features,
        &expected["alexnet.features"],
        1e-4,
    )?;
    let va = net.regressor.forward_t(&features, false)?;
    assert_close("alexnet regressor", &va, &expected["alexnet.va"], 1e-4)?;
    let small = net.encoder.forward_t(&input("input.small", (1, 3, 64, 64))?, false)?;
    assert_close(
        "alexnet features at 64 (1×1 maps)",
        &small,
        &expected["alexnet.features_64"],
        1e-4,
    )?;

    let grads = (&features * probe("probe.alexnet", &features)?)?
        .sum_all()?
        .backward()?;
    for name in ["features.0.weight", "features.10.bias"] {
        let ours = grad_of(&varmap, &grads, &format!("encoder.{name}"));
        assert_close(
            &format!("alexnet gradient of {name}"),
            &ours,
            &expected[&format!("alexnet.grad.{name}")],
            1e-4,
        )?;
    }
    Ok(())
}

#[test]
fn resnet18_matches_torchvision_in_eval_and_train_mode() -> Result<()> {
    let expected = fixtures()?;
    let (net, varmap) = model(Arch::ResNet18)?;
    let x = input("input.resnet", (2, 3, 64, 64))?;
    let features = net.encoder.forward_t(&x, false)?;
    assert_close("resnet18 eval", &features, &expected["resnet18.eval"], 1e-4)?;
    assert_close(
        "resnet18 regressor",
        &net.regressor.forward_t(&features, false)?,
        &expected["resnet18.va"],
        1e-4,
    )?;

    let features = net.encoder.forward_t(&x, true)?;
    assert_close(
        "resnet18 train-mode BatchNorm",
        &features,
        &expected["resnet18.train"],
        1e-4,
    )?;
    let running = |name: &str| -> Tensor {
        varmap.data().lock().expect("varmap lock")[&format!("encoder.{name}")]
            .as_tensor()
            .clone()
    };
    assert_close(
        "bn1 running mean after one step",
        &running("bn1.running_mean"),
        &expected["resnet18.train.bn1.running_mean"],
        1e-4,
    )?;
    assert_close(
        "layer4.1.bn2 running var after one step",
        &running("layer4.1.bn2.running_var"),
        &expected["resnet18.train.layer4.1.bn2.running_var"],
        1e-4,
    )?;

    let grads = (&features * probe("probe.resnet18", &features)?)?
        .sum_all()?
        .backward()?;
    for name in ["conv1.weight", "layer4.1.bn2.weight"] {
        let ours = grad_of(&varmap, &grads, &format!("encoder.{name}"));
        assert_close(
            &format!("resnet18 gradient of {name}"),
            &ours,
            &expected[&format!("resnet18.grad.{name}")],
            1e-4,
        )?;
    }
    Ok(())
}
