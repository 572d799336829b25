//! Writes `torch.save`-format files (zip archive with a protocol-2 pickle of
//! an `OrderedDict` of `_rebuild_tensor_v2` calls), the layout PyTorch ≥ 1.6
//! produces for a state dict of float32 tensors.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Tensor};
use zip::write::SimpleFileOptions;

fn global(out: &mut Vec<u8>, module: &str, name: &str) {
    out.push(b'c');
    out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
}

fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn int(out: &mut Vec<u8>, v: usize) {
    out.push(b'J');
    out.extend_from_slice(&(v as i32).to_le_bytes());
}

fn int_tuple(out: &mut Vec<u8>, values: &[usize]) {
    out.push(b'(');
    for &v in values {
        int(out, v);
    }
    out.push(b't');
}

fn empty_ordered_dict(out: &mut Vec<u8>) {
    global(out, "collections", "OrderedDict");
    out.push(b')');
    out.push(b'R');
}

/// Writes `tensors` (in the given order) as a PyTorch state dict at `path`.
pub fn write_state_dict(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut pickle = vec![0x80, 2];
    empty_ordered_dict(&mut pickle);
    pickle.push(b'(');
    let mut storages = Vec::new();
    for (key, (name, tensor)) in tensors.iter().enumerate() {
        let tensor = tensor.to_dtype(DType::F32)?.contiguous()?;
        let dims = tensor.dims().to_vec();
        let mut strides = vec![1usize; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1];
        }
        unicode(&mut pickle, name);
        global(&mut pickle, "torch._utils", "_rebuild_tensor_v2");
        pickle.push(b'(');
        pickle.push(b'(');
        unicode(&mut pickle, "storage");
        global(&mut pickle, "torch", "FloatStorage");
        unicode(&mut pickle, &key.to_string());
        unicode(&mut pickle, "cpu");
        int(&mut pickle, tensor.elem_count());
        pickle.push(b't');
        pickle.push(b'Q');
        int(&mut pickle, 0);
        int_tuple(&mut pickle, &dims);
        int_tuple(&mut pickle, &strides);
        pickle.push(0x89); // False: requires_grad
        empty_ordered_dict(&mut pickle);
        pickle.push(b't');
        pickle.push(b'R');
        let bytes: Vec<u8> = tensor
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        storages.push((key, bytes));
    }
    pickle.push(b'u');
    pickle.push(b'.');

    let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored)?;
    zip.write_all(&pickle)?;
    zip.start_file("archive/byteorder", stored)?;
    zip.write_all(b"little")?;
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), stored)?;
        zip.write_all(&bytes)?;
    }
    zip.start_file("archive/version", stored)?;
    zip.write_all(b"3\n")?;
    zip.finish()?;
    Ok(())
}
