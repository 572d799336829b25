//! Checkpoints and weight files: round trips, files written the way PyTorch
//! writes them, the reference model's import, and the errors a user can cause.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use caf_backbone::{
    import_torch_model, load_pretrained_encoder, read_tensors, save_checkpoint, Arch, CafNet, Checkpoint, Error,
    HubOptions, ModelSpec, VaNet, WeightSource,
};
use caf_backbone::{Precision, META_ARCH, META_IMAGE_SIZE, META_RESIZE};
use caf_e2e::fill::{fill_varmap, input, model_values, named_tensors, strip_prefix, var_shapes};
use caf_e2e::torch_pickle::write_state_dict;
use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};

fn filled_va_net(arch: Arch) -> Result<(VaNet, VarMap)> {
    let varmap = VarMap::new();
    let net = VaNet::new(arch, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    fill_varmap(&varmap)?;
    Ok((net, varmap))
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// Writes a safetensors file the way `safetensors.torch.save_file` does from a
/// PyTorch state dict: any order, int64 `num_batches_tracked`, string metadata.
fn write_like_pytorch(path: &Path, tensors: &HashMap<String, Tensor>, metadata: HashMap<String, String>) -> Result<()> {
    let mut all: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for name in tensors.keys().filter(|n| n.ends_with("running_mean")) {
        let counter = name.replace("running_mean", "num_batches_tracked");
        all.push((counter, Tensor::new(7i64, &Device::Cpu)?));
    }
    all.reverse();
    safetensors::serialize_to_file(all.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata), path)?;
    Ok(())
}

#[test]
fn checkpoint_round_trip_keeps_weights_metadata_and_predictions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for arch in Arch::ALL {
        let varmap = VarMap::new();
        let net = CafNet::new(arch, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
        fill_varmap(&varmap)?;
        let spec = ModelSpec {
            arch,
            image_size: 96,
            resize: 110,
        };
        let path = dir.path().join(format!("{arch}.safetensors"));
        let extra = HashMap::from([("caf.epoch".to_string(), "3".to_string())]);
        save_checkpoint(&path, &spec, &varmap, &extra)?;

        let checkpoint = Checkpoint::read(&path, &Device::Cpu)?;
        assert_eq!(checkpoint.spec, spec);
        assert_eq!(checkpoint.metadata["caf.epoch"], "3");
        let first = if arch == Arch::AlexNet {
            "encoder.features.0.weight"
        } else {
            "encoder.layer1.0.conv1.weight"
        };
        for name in [
            first,
            "regressor.lin0.weight",
            "regressor.va_regressor.bias",
            "critic.last_linear.weight",
            "critic.lin2.bias",
        ] {
            assert!(
                checkpoint.tensors.contains_key(name),
                "{arch}: {name} missing from the checkpoint"
            );
        }
        let x = input("input.small", (2, 3, 64, 64))?;
        let (reloaded, reloaded_vars) = checkpoint.caf_net(&Device::Cpu)?;
        assert_eq!(max_diff(&net.va.predict(&x)?, &reloaded.va.predict(&x)?)?, 0.0);
        assert_eq!(var_shapes(&reloaded_vars), var_shapes(&varmap));
        // `va_net` is frozen, and a frozen network may take other kernels
        // (Winograd from a kept transform) than a live one: compare like with like.
        assert_eq!(
            max_diff(
                &net.va.freeze(Precision::F32)?.predict(&x)?,
                &checkpoint.va_net(&Device::Cpu, Precision::F32)?.predict(&x)?
            )?,
            0.0
        );
        // No temporary file is left beside the checkpoint.
        assert_eq!(
            std::fs::read_dir(dir.path())?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
                .count(),
            0
        );
    }
    Ok(())
}

#[test]
fn checkpoint_written_like_pytorch_loads() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (net, varmap) = filled_va_net(Arch::ResNet18)?;
    let tensors = named_tensors(&var_shapes(&varmap))?;
    let path = dir.path().join("from_torch.safetensors");
    let metadata = HashMap::from([
        (META_ARCH.to_string(), "resnet18".to_string()),
        (META_IMAGE_SIZE.to_string(), "224".to_string()),
        (META_RESIZE.to_string(), "256".to_string()),
    ]);
    write_like_pytorch(&path, &tensors, metadata)?;
    let checkpoint = Checkpoint::read(&path, &Device::Cpu)?;
    assert_eq!(checkpoint.spec, ModelSpec::new(Arch::ResNet18));
    let x = input("input.small", (1, 3, 64, 64))?;
    assert_eq!(
        max_diff(
            &net.freeze(Precision::F32)?.predict(&x)?,
            &checkpoint.va_net(&Device::Cpu, Precision::F32)?.predict(&x)?
        )?,
        0.0
    );
    // It has no critic: training from it starts a fresh one.
    let (caf, _) = checkpoint.caf_net(&Device::Cpu)?;
    assert_eq!(max_diff(&net.predict(&x)?, &caf.va.predict(&x)?)?, 0.0);
    Ok(())
}

#[test]
fn broken_checkpoints_name_the_tensor_and_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_, varmap) = filled_va_net(Arch::AlexNet)?;
    let mut tensors = named_tensors(&var_shapes(&varmap))?;
    let spec_meta = |arch: &str| {
        HashMap::from([
            (META_ARCH.to_string(), arch.to_string()),
            (META_IMAGE_SIZE.to_string(), "224".to_string()),
            (META_RESIZE.to_string(), "256".to_string()),
        ])
    };

    let unknown = dir.path().join("unknown.safetensors");
    write_like_pytorch(&unknown, &tensors, spec_meta("vgg16"))?;
    let err = Checkpoint::read(&unknown, &Device::Cpu).expect_err("unknown arch");
    assert!(matches!(err, Error::UnknownArch { .. }), "{err}");
    assert!(
        err.to_string().contains("unknown.safetensors") && err.to_string().contains("vgg16"),
        "{err}"
    );

    let wrong_arch = dir.path().join("wrong_arch.safetensors");
    write_like_pytorch(&wrong_arch, &tensors, spec_meta("resnet18"))?;
    let err = Checkpoint::read(&wrong_arch, &Device::Cpu)?
        .va_net(&Device::Cpu, Precision::F32)
        .expect_err("alexnet tensors, resnet18 metadata");
    assert!(matches!(err, Error::MissingTensor { .. }), "{err}");
    assert!(
        err.to_string().contains("wrong_arch.safetensors") && err.to_string().contains("encoder."),
        "{err}"
    );

    tensors.insert(
        "encoder.features.3.weight".into(),
        Tensor::zeros((192, 64, 3, 3), DType::F32, &Device::Cpu)?,
    );
    let wrong_shape = dir.path().join("wrong_shape.safetensors");
    write_like_pytorch(&wrong_shape, &tensors, spec_meta("alexnet"))?;
    let err = Checkpoint::read(&wrong_shape, &Device::Cpu)?
        .va_net(&Device::Cpu, Precision::F32)
        .expect_err("wrong shape");
    let message = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{message}");
    assert!(
        message.contains("encoder.features.3.weight")
            && message.contains("[192, 64, 5, 5]")
            && message.contains("wrong_shape"),
        "{message}"
    );

    tensors.remove("regressor.lin1.weight");
    tensors.insert(
        "encoder.features.3.weight".into(),
        Tensor::zeros((192, 64, 5, 5), DType::F32, &Device::Cpu)?,
    );
    let missing = dir.path().join("missing.safetensors");
    write_like_pytorch(&missing, &tensors, spec_meta("alexnet"))?;
    let err = Checkpoint::read(&missing, &Device::Cpu)?
        .va_net(&Device::Cpu, Precision::F32)
        .expect_err("missing tensor");
    assert!(
        err.to_string().contains("regressor.lin1.weight") && err.to_string().contains("missing.safetensors"),
        "{err}"
    );

    let no_meta = dir.path().join("no_meta.safetensors");
    write_like_pytorch(&no_meta, &tensors, HashMap::new())?;
    let err = Checkpoint::read(&no_meta, &Device::Cpu).expect_err("no metadata");
    assert!(
        err.to_string().contains("caf.arch") && err.to_string().contains("no_meta"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint at all")?;
    let err = Checkpoint::read(&garbage, &Device::Cpu).expect_err("garbage");
    assert!(err.to_string().contains("garbage.safetensors"), "{err}");
    Ok(())
}

#[test]
fn pretrained_encoders_load_from_torchvision_names_ignoring_classifiers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for arch in Arch::ALL {
        let (reference, ref_vars) = filled_va_net(arch)?;
        // torchvision / timm names: no `encoder.` prefix, plus a classifier to ignore.
        let mut torchvision: HashMap<String, Tensor> = named_tensors(&var_shapes(&ref_vars))?
            .into_iter()
            .filter_map(|(name, t)| name.strip_prefix("encoder.").map(|n| (n.to_string(), t)))
            .collect();
        let classifier = if arch == Arch::AlexNet {
            "classifier.6.weight"
        } else {
            "fc.weight"
        };
        torchvision.insert(classifier.into(), Tensor::zeros((1000, 7), DType::F32, &Device::Cpu)?);

        let safetensors_file = dir.path().join(format!("{arch}.safetensors"));
        write_like_pytorch(&safetensors_file, &torchvision, HashMap::new())?;
        let pth_file = dir.path().join(format!("{arch}.pth"));
        let mut ordered: Vec<(String, Tensor)> = torchvision.into_iter().collect();
        ordered.sort_by(|a, b| a.0.cmp(&b.0));
        write_state_dict(&pth_file, &ordered)?;

        for file in [&safetensors_file, &pth_file] {
            let varmap = VarMap::new();
            let net = VaNet::new(arch, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
            let source: WeightSource = file.to_string_lossy().parse().map_err(anyhow::Error::msg)?;
            let count = load_pretrained_encoder(&varmap, arch, &source, &HubOptions::default(), &Device::Cpu)?;
            let expected = var_shapes(&varmap)
                .iter()
                .filter(|(n, _)| n.starts_with("encoder."))
                .count();
            assert_eq!(count, expected, "{arch} from {}", file.display());
            let x = input("input.small", (1, 3, 64, 64))?;
            let ours = net.encoder.forward_t(&x, false)?;
            let theirs = reference.encoder.forward_t(&x, false)?;
            assert_eq!(max_diff(&ours, &theirs)?, 0.0, "{arch} from {}", file.display());
        }
    }
    Ok(())
}

#[test]
fn real_torch_save_files_are_read_without_python() -> Result<()> {
    for file in ["resnet18_regressor.pth", "resnet18_regressor_wrapped.pth"] {
        let tensors = read_tensors(&fixture(file), &Device::Cpu)?;
        let mut names: Vec<_> = tensors.keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "lin0.bias",
                "lin0.weight",
                "lin1.bias",
                "lin1.weight",
                "va_regressor.bias",
                "va_regressor.weight"
            ],
            "{file}"
        );
        for (name, tensor) in &tensors {
            let expected = model_values(&format!("regressor.{name}"), tensor.dims());
            assert_eq!(tensor.flatten_all()?.to_vec1::<f32>()?, expected, "{file}: {name}");
        }
    }
    Ok(())
}

#[test]
fn reference_model_imports_into_a_working_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (reference, ref_vars) = filled_va_net(Arch::AlexNet)?;
    let tensors = named_tensors(&var_shapes(&ref_vars))?;
    let part = |prefix: &str| strip_prefix(&tensors, prefix);
    // The released reference files: `features.*` and `lin0.*`, `lin1.*`, `va_regressor.*`.
    let encoder_file = dir.path().join("alexnet_enc.t7");
    let regressor_file = dir.path().join("alexnet_reg.t7");
    write_state_dict(&encoder_file, &part("encoder."))?;
    write_state_dict(&regressor_file, &part("regressor."))?;

    let out = dir.path().join("imported.safetensors");
    let spec = ModelSpec::new(Arch::AlexNet);
    import_torch_model(&spec, &encoder_file, &regressor_file, &out)?;
    let checkpoint = Checkpoint::read(&out, &Device::Cpu)?;
    assert_eq!(checkpoint.spec, spec);
    let x = input("input.alexnet", (2, 3, 112, 112))?;
    assert_eq!(
        max_diff(
            &reference.freeze(Precision::F32)?.predict(&x)?,
            &checkpoint.va_net(&Device::Cpu, Precision::F32)?.predict(&x)?
        )?,
        0.0
    );

    // Swapping the files is refused with the tensor and the file named.
    let err = import_torch_model(
        &spec,
        &regressor_file,
        &encoder_file,
        &dir.path().join("bad.safetensors"),
    )
    .expect_err("swapped files");
    assert!(
        err.to_string().contains("encoder.features.0.") && err.to_string().contains("alexnet_reg.t7"),
        "{err}"
    );
    assert!(!dir.path().join("bad.safetensors").exists());
    Ok(())
}
