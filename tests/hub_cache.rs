//! Loading from the Hugging Face Hub with no network: the test builds a cache
//! in hf-hub's on-disk layout and the loader must find the file there, both
//! through an explicit cache directory and through `HF_HOME` + `HF_HUB_OFFLINE`.
//!
//! One test function, in its own test binary, because it sets process
//! environment variables.

use anyhow::Result;
use caf_backbone::{load_pretrained_encoder, Arch, HubFile, HubOptions, VaNet, WeightSource};
use caf_e2e::fill::{fill_varmap, input, named_tensors, strip_prefix, var_shapes};
use caf_e2e::hub::{write_cache, COMMIT};
use candle_core::{DType, Device, ModuleT};
use candle_nn::{VarBuilder, VarMap};

fn resnet_weights() -> Result<Vec<u8>> {
    let varmap = VarMap::new();
    VaNet::new(
        Arch::ResNet18,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    // Values of our `encoder.*` names, stored under timm's (torchvision's) names.
    let encoder = strip_prefix(&named_tensors(&var_shapes(&varmap))?, "encoder.");
    let bytes = safetensors::serialize(encoder.iter().map(|(k, v)| (k.as_str(), v)), None)?;
    Ok(bytes)
}

#[test]
fn hub_files_resolve_from_the_cache_without_network() -> Result<()> {
    let home = tempfile::tempdir()?;
    let cache = home.path().join("hub");
    let bytes = resnet_weights()?;
    write_cache(&cache, "timm/resnet18.a1_in1k", "model.safetensors", &bytes)?;

    // Explicit cache directory, offline.
    let file = HubFile {
        repo: "timm/resnet18.a1_in1k".into(),
        file: "model.safetensors".into(),
        revision: None,
    };
    let explicit = HubOptions {
        cache_dir: Some(cache.clone()),
        offline: true,
    };
    let path = file.resolve(&explicit)?;
    assert_eq!(std::fs::read(&path)?, bytes);
    assert!(path.starts_with(&cache), "{}", path.display());
    // A pinned commit resolves too.
    let pinned = HubFile {
        revision: Some(COMMIT.into()),
        ..file.clone()
    };
    assert_eq!(std::fs::read(pinned.resolve(&explicit)?)?, bytes);

    // The environment route: HF_HOME/hub is the cache, HF_HUB_OFFLINE=1 forbids the network.
    std::env::remove_var("HF_HUB_CACHE");
    std::env::remove_var("HUGGINGFACE_HUB_CACHE");
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let from_env = HubOptions::from_env();
    assert!(from_env.offline);
    let source: WeightSource = "hf://timm/resnet18.a1_in1k/model.safetensors"
        .parse()
        .map_err(anyhow::Error::msg)?;
    let varmap = VarMap::new();
    let net = VaNet::new(
        Arch::ResNet18,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let loaded = load_pretrained_encoder(&varmap, Arch::ResNet18, &source, &from_env, &Device::Cpu)?;
    assert_eq!(loaded, loaded_encoder_count(&varmap));
    let x = input("input.small", (1, 3, 64, 64))?;
    let reference_vars = VarMap::new();
    let reference = VaNet::new(
        Arch::ResNet18,
        VarBuilder::from_varmap(&reference_vars, DType::F32, &Device::Cpu),
    )?;
    fill_varmap(&reference_vars)?;
    let difference = (net.encoder.forward_t(&x, false)? - reference.encoder.forward_t(&x, false)?)?;
    assert_eq!(difference.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?, 0.0);

    // A file the cache lacks: an error that says where it looked and what to do.
    let missing: WeightSource = "hf://timm/resnet18.a1_in1k/pytorch_model.bin"
        .parse()
        .map_err(anyhow::Error::msg)?;
    let err =
        load_pretrained_encoder(&varmap, Arch::ResNet18, &missing, &from_env, &Device::Cpu).expect_err("not cached");
    let message = err.to_string();
    assert!(
        message.contains("pytorch_model.bin")
            && message.contains("HF_HUB_OFFLINE")
            && message.contains(&home.path().display().to_string()),
        "{message}"
    );
    Ok(())
}

fn loaded_encoder_count(varmap: &VarMap) -> usize {
    varmap
        .data()
        .lock()
        .expect("varmap lock")
        .keys()
        .filter(|n| n.starts_with("encoder."))
        .count()
}
