//! Writes `torch.save`-format files of a state dict of float32 tensors: a
//! protocol-2 pickle of an `OrderedDict` of `_rebuild_tensor_v2` calls, in
//! the zip archive PyTorch ≥ 1.6 writes ([`write_state_dict`]) or in the
//! legacy stream of older versions ([`write_legacy_state_dict`]).

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

/// Which persistent id a storage gets: the zip format's 5-tuple or the
/// legacy format's 6-tuple (with its `view_metadata`, `None`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    Zip,
    Legacy,
}

/// One saved tensor: how it views its own storage.
struct View {
    name: String,
    size: Vec<usize>,
    stride: Vec<usize>,
    storage: Vec<f32>,
}

fn contiguous_views(tensors: &[(String, Tensor)]) -> Result<Vec<View>> {
    tensors
        .iter()
        .map(|(name, tensor)| {
            let tensor = tensor.to_dtype(DType::F32)?.contiguous()?;
            let size = tensor.dims().to_vec();
            let mut stride = vec![1usize; size.len()];
            for i in (0..size.len().saturating_sub(1)).rev() {
                stride[i] = stride[i + 1] * size[i + 1];
            }
            Ok(View {
                name: name.clone(),
                size,
                stride,
                storage: tensor.flatten_all()?.to_vec1::<f32>()?,
            })
        })
        .collect()
}

/// Each storage's key and little-endian bytes.
type Storages = Vec<(usize, Vec<u8>)>;

/// The state dict's pickle and its storages.
fn state_dict_pickle(views: &[View], layout: Layout) -> (Vec<u8>, Storages) {
    let mut pickle = vec![0x80, 2];
    empty_ordered_dict(&mut pickle);
    pickle.push(b'(');
    let mut storages = Vec::new();
    for (key, view) in views.iter().enumerate() {
        unicode(&mut pickle, &view.name);
        global(&mut pickle, "torch._utils", "_rebuild_tensor_v2");
        pickle.push(b'(');
        pickle.push(b'(');
        unicode(&mut pickle, "storage");
        global(&mut pickle, "torch", "FloatStorage");
        unicode(&mut pickle, &key.to_string());
        unicode(&mut pickle, "cpu");
        int(&mut pickle, view.storage.len());
        if layout == Layout::Legacy {
            pickle.push(b'N');
        }
        pickle.push(b't');
        pickle.push(b'Q');
        int(&mut pickle, 0);
        int_tuple(&mut pickle, &view.size);
        int_tuple(&mut pickle, &view.stride);
        pickle.push(0x89); // False: requires_grad
        empty_ordered_dict(&mut pickle);
        pickle.push(b't');
        pickle.push(b'R');
        storages.push((key, view.storage.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    pickle.push(b'u');
    pickle.push(b'.');
    (pickle, storages)
}

/// Writes one tensor `w` that views `storage` with the given size and
/// stride, which need not be contiguous (nor sensible: for tests of what a
/// reader refuses).
pub fn write_view(path: &Path, layout: Layout, size: &[usize], stride: &[usize], storage: &[f32]) -> Result<()> {
    let view = View {
        name: "w".into(),
        size: size.to_vec(),
        stride: stride.to_vec(),
        storage: storage.to_vec(),
    };
    let (pickle, storages) = state_dict_pickle(&[view], layout);
    match layout {
        Layout::Zip => write_zip(path, &pickle, storages),
        Layout::Legacy => write_legacy(path, &pickle, storages),
    }
}

/// Writes `tensors` (in the given order) as a PyTorch state dict at `path`.
pub fn write_state_dict(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let (pickle, storages) = state_dict_pickle(&contiguous_views(tensors)?, Layout::Zip);
    write_zip(path, &pickle, storages)
}

fn write_zip(path: &Path, pickle: &[u8], storages: Storages) -> Result<()> {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored)?;
    zip.write_all(pickle)?;
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

/// Writes `tensors` as `torch.save(..., _use_new_zipfile_serialization=False)`
/// does: the magic number, the format version (1001) and the system info,
/// each a pickle, then the state dict's pickle, the list of storage keys, and
/// each storage as its element count (u64) followed by its bytes.
pub fn write_legacy_state_dict(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let (pickle, storages) = state_dict_pickle(&contiguous_views(tensors)?, Layout::Legacy);
    write_legacy(path, &pickle, storages)
}

fn write_legacy(path: &Path, pickle: &[u8], storages: Storages) -> Result<()> {
    let mut out = vec![0x80, 2, 0x8a, 10];
    out.extend_from_slice(&0x1950a86a20f9469cfc6c_u128.to_le_bytes()[..10]);
    out.push(b'.');
    out.extend_from_slice(&[0x80, 2]);
    int(&mut out, 1001);
    out.push(b'.');
    out.extend_from_slice(&[0x80, 2, b'}', b'(']);
    unicode(&mut out, "protocol_version");
    int(&mut out, 1001);
    unicode(&mut out, "little_endian");
    out.push(0x88); // True
    out.extend_from_slice(b"u.");
    out.extend_from_slice(pickle);
    out.extend_from_slice(&[0x80, 2, b']', b'(']);
    for (key, _) in &storages {
        unicode(&mut out, &key.to_string());
    }
    out.extend_from_slice(b"e.");
    for (_, bytes) in &storages {
        out.extend_from_slice(&((bytes.len() / 4) as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    std::fs::write(path, out)?;
    Ok(())
}
