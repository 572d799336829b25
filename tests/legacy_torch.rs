//! PyTorch's legacy file format (before 1.6, or
//! `_use_new_zipfile_serialization=False`), as `torch.save` wrote the
//! fixtures (`tests/fixtures/make_legacy_fixtures.py`): every tensor kind,
//! nested state dicts, the shape of the authors' released regressor, and
//! damaged files refused without a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use caf_backbone::{read_tensors, TensorFormat};
use caf_e2e::torch_pickle::{write_view, Layout};
use candle_core::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// The fixtures' formula: `((i mod 1000) / 1000 − 0.5)` in f32, row-major.
fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 1000) as f32 / 1000.0 - 0.5).collect()
}

fn values(tensors: &HashMap<String, Tensor>, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let tensor = tensors.get(name).unwrap_or_else(|| panic!("{name} missing"));
    Ok((tensor.dims().to_vec(), tensor.flatten_all()?.to_vec1::<f32>()?))
}

#[test]
fn every_tensor_kind_reads_as_torch_saved_it() -> Result<()> {
    let path = fixture("legacy_state_dict.pt");
    assert_eq!(TensorFormat::detect(&path)?, TensorFormat::TorchLegacy);
    let tensors = read_tensors(&path, &Device::Cpu)?;
    assert_eq!(tensors.len(), 8);
    assert_eq!(values(&tensors, "conv.weight")?, (vec![4, 3, 3, 3], ramp(108)));
    assert_eq!(values(&tensors, "conv.bias")?, (vec![4], ramp(4)));
    let base = ramp(24);
    assert_eq!(values(&tensors, "base")?, (vec![6, 4], base.clone()));
    assert_eq!(values(&tensors, "rows_2_to_4")?, (vec![3, 4], base[8..20].to_vec()));
    let transposed: Vec<f32> = (0..4)
        .flat_map(|c| (0..6).map(move |r| (r, c)))
        .map(|(r, c)| base[r * 4 + c])
        .collect();
    assert_eq!(values(&tensors, "transposed")?, (vec![4, 6], transposed));
    assert_eq!(values(&tensors, "double")?, (vec![5], ramp(5)));
    let half: Vec<f32> = ramp(3).iter().map(|&v| half_round(v)).collect();
    assert_eq!(values(&tensors, "half")?, (vec![3], half));
    assert_eq!(values(&tensors, "bn.num_batches_tracked")?, (vec![], vec![7.0]));
    Ok(())
}

/// `v` rounded to f16 and back, as the half tensor was saved.
fn half_round(v: f32) -> f32 {
    Tensor::new(&[v], &Device::Cpu)
        .and_then(|t| t.to_dtype(candle_core::DType::F16))
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .expect("f16 round trip")[0]
}

#[test]
fn a_state_dict_nested_in_a_checkpoint_and_the_released_regressor_shape() -> Result<()> {
    let nested = read_tensors(&fixture("legacy_nested.pt"), &Device::Cpu)?;
    assert_eq!(values(&nested, "lin")?, (vec![2, 2], ramp(4)));
    let regressor = read_tensors(&fixture("legacy_fc_layer.t7"), &Device::Cpu)?;
    for (name, out_features, in_features) in [("lin0", 64, 9216), ("lin1", 8, 64), ("va_regressor", 2, 8)] {
        assert_eq!(
            values(&regressor, &format!("{name}.weight"))?,
            (vec![out_features, in_features], ramp(out_features * in_features))
        );
        assert_eq!(
            values(&regressor, &format!("{name}.bias"))?,
            (vec![out_features], ramp(out_features))
        );
    }
    Ok(())
}

/// Every truncation and every single-bit flip of a legacy file: an error
/// naming the file, or tensors, and never a panic.
#[test]
fn damaged_legacy_files_are_refused_without_a_panic() -> Result<()> {
    let bytes = std::fs::read(fixture("legacy_state_dict.pt"))?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("damaged.pt");
    let mut refused = 0usize;
    let mut attempt = |data: &[u8]| -> Result<()> {
        std::fs::write(&path, data)?;
        match read_tensors(&path, &Device::Cpu) {
            Ok(_) => {}
            Err(error) => {
                refused += 1;
                assert!(error.to_string().contains("damaged.pt"), "{error}");
            }
        }
        Ok(())
    };
    for length in 0..bytes.len() {
        attempt(&bytes[..length])?;
    }
    for position in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[position] ^= 1 << bit;
            attempt(&flipped)?;
        }
    }
    // Every truncation is refused; most flips are too (a flip inside a
    // tensor's data changes a value, not the structure).
    assert!(refused > bytes.len(), "only {refused} of the damaged files refused");
    Ok(())
}

/// Files a fuzzer or a careful reader would make: each refused with a
/// message naming the file, none taking the process down.
#[test]
fn crafted_legacy_files_are_refused_naming_what_is_wrong() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("crafted.pt");
    // 24 bytes: the magic number, then a "format version" that is a list
    // appended to itself.
    let mut recursive = caf_e2e_magic();
    recursive.extend_from_slice(b"\x80\x02]q\x00h\x00a.");
    assert_eq!(recursive.len(), 24);
    std::fs::write(&path, &recursive)?;
    let message = read_tensors(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(
        message.contains("crafted.pt") && message.contains("recursive structure"),
        "{message}"
    );
    // A million nested tuples.
    let mut deep = caf_e2e_magic();
    deep.extend_from_slice(b"\x80\x02K\x01");
    deep.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    deep.push(b'.');
    std::fs::write(&path, &deep)?;
    let message = read_tensors(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(message.contains("nested more than 64 deep"), "{message}");
    // A stride of 0 makes 2^40 elements of a one-element storage.
    for layout in [Layout::Legacy, Layout::Zip] {
        write_view(&path, layout, &[1 << 20, 1 << 20], &[0, 0], &[1.0])?;
        let message = read_tensors(&path, &Device::Cpu).unwrap_err().to_string();
        assert!(
            message.contains("crafted.pt") && message.contains("repeats elements"),
            "{layout:?}: {message}"
        );
        // A transposed (non-contiguous) view of its own storage still reads.
        write_view(&path, layout, &[2, 3], &[1, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])?;
        let tensors = read_tensors(&path, &Device::Cpu)?;
        assert_eq!(
            tensors["w"].to_vec2::<f32>()?,
            [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]],
            "{layout:?}"
        );
    }
    Ok(())
}

/// The legacy format's first pickle, the magic number.
fn caf_e2e_magic() -> Vec<u8> {
    let mut magic = vec![0x80, 2, 0x8a, 10];
    magic.extend_from_slice(&0x1950a86a20f9469cfc6c_u128.to_le_bytes()[..10]);
    magic.push(b'.');
    magic
}

/// The same damage fed to the zip reader and to the safetensors path.
#[test]
fn damaged_zip_and_safetensors_files_are_refused_without_a_panic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let safetensors = dir.path().join("small.safetensors");
    let tensors = HashMap::from([("w".to_string(), Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?)]);
    candle_core::safetensors::save(&tensors, &safetensors)?;
    for source in [fixture("resnet18_regressor.pth"), safetensors] {
        let bytes = std::fs::read(&source)?;
        let path = dir.path().join(source.file_name().expect("name"));
        let step = (bytes.len() / 400).max(1);
        for length in (0..bytes.len()).step_by(step) {
            std::fs::write(&path, &bytes[..length])?;
            let _ = read_tensors(&path, &Device::Cpu);
        }
        for position in (0..bytes.len()).step_by(step) {
            for bit in [0, 3, 7] {
                let mut flipped = bytes.clone();
                flipped[position] ^= 1 << bit;
                std::fs::write(&path, &flipped)?;
                let _ = read_tensors(&path, &Device::Cpu);
            }
        }
    }
    Ok(())
}
