//! Reading tensors from safetensors files, and checking a checkpoint's keys against a model.

use crate::error::{Error, Result};
use crate::model::WeightMap;
use crate::tensor::Tensor;
use half::f16;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

fn werr(path: &Path, msg: impl Into<String>) -> Error {
    Error::Weights {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Convert one safetensors view to a host tensor: F16/BF16/F32/F64 → f32 (f16 → f32 is
/// exact), I64/I32 → i32 (range-checked), U8/BOOL → u8.
pub fn view_to_tensor(
    path: &Path,
    name: &str,
    v: &safetensors::tensor::TensorView,
) -> Result<Tensor> {
    let shape = v.shape().to_vec();
    let b = v.data();
    let t = match v.dtype() {
        Dtype::F32 => Tensor::from_f32(
            &shape,
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => Tensor::from_f32(
            &shape,
            b.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Tensor::from_f32(
            &shape,
            b.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::F64 => Tensor::from_f32(
            &shape,
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
        ),
        Dtype::I64 => {
            let mut out = Vec::with_capacity(b.len() / 8);
            for c in b.chunks_exact(8) {
                let x = i64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                out.push(i32::try_from(x).map_err(|_| {
                    werr(
                        path,
                        format!("tensor `{name}`: i64 value {x} out of i32 range"),
                    )
                })?);
            }
            Tensor::from_i32(&shape, out)
        }
        Dtype::I32 => Tensor::from_i32(
            &shape,
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::U8 | Dtype::BOOL => Tensor::from_u8(&shape, b.to_vec()),
        other => {
            return Err(werr(
                path,
                format!("tensor `{name}`: unsupported dtype {other:?}"),
            ))
        }
    };
    t.map_err(|e| werr(path, format!("tensor `{name}`: {e}")))
}

/// Every tensor of a safetensors file, floats as f32.
pub fn read_safetensors_all(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes =
        crate::limits::read_file(path, crate::limits::MAX_WEIGHTS_FILE_BYTES, "weights file")?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| werr(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = HashMap::new();
    for (name, v) in st.tensors() {
        out.insert(name.clone(), view_to_tensor(path, &name, &v)?);
    }
    Ok(out)
}

/// The weights of a safetensors file with GLIP's state_dict key names, as a [`WeightMap`]
/// (f16/bf16/f32/f64 floats → f32, i64 buffers → i32). A `module.` prefix is removed when
/// *all* keys carry it (GLIP's rule for DistributedDataParallel checkpoints). PyTorch `.pth`
/// files are refused with a pointer to `glip convert` (or load them with
/// [`crate::pth::load_pth_weights`]).
pub fn load_weights(path: &Path) -> Result<WeightMap> {
    let bytes =
        crate::limits::read_file(path, crate::limits::MAX_WEIGHTS_FILE_BYTES, "weights file")?;
    if !crate::pth::looks_like_safetensors(&bytes)
        && (bytes.starts_with(b"PK") || bytes.first() == Some(&0x80))
    {
        return Err(werr(
            path,
            format!(
                "this is a PyTorch checkpoint, not a safetensors file: convert it once with `glip convert {} -o <out>.safetensors`",
                path.display()
            ),
        ));
    }
    if bytes.len() < 8 {
        return Err(werr(
            path,
            format!("not a safetensors file: only {} bytes", bytes.len()),
        ));
    }
    let header_len = u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ]);
    if bytes.get(8) != Some(&b'{') {
        return Err(werr(
            path,
            "not a safetensors file (no JSON header after the 8-byte length)",
        ));
    }
    if header_len > (bytes.len() - 8) as u64 {
        return Err(werr(path, format!("truncated safetensors file: the header claims {header_len} bytes, the file has {} after the length", bytes.len() - 8)));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        let hint = match e {
            safetensors::SafeTensorError::MetadataIncompleteBuffer
            | safetensors::SafeTensorError::InvalidOffset(_) => " (truncated file?)",
            _ => "",
        };
        werr(path, format!("corrupt safetensors file: {e}{hint}"))
    })?;
    let mut entries: Vec<(String, Tensor)> = Vec::with_capacity(st.len());
    for (name, v) in st.tensors() {
        let t = view_to_tensor(path, &name, &v)?;
        entries.push((name, t));
    }
    crate::pth::strip_module_prefix(&mut entries);
    Ok(WeightMap::new(
        path.display().to_string(),
        entries.into_iter().collect(),
    ))
}

/// One line on the non-finite (NaN or infinite) values among the float weights, if any:
/// such weights load and run, but give NaN scores and so no detections, without a word.
pub fn nonfinite_summary(w: &WeightMap) -> Option<String> {
    let mut bad: Vec<(&String, usize)> = w
        .tensors
        .iter()
        .filter_map(|(k, t)| {
            let n = match t.host().ok()? {
                crate::tensor::HostData::F32(v) => v.iter().filter(|x| !x.is_finite()).count(),
                crate::tensor::HostData::F16(v) => v.iter().filter(|x| !x.is_finite()).count(),
                _ => 0,
            };
            (n > 0).then_some((k, n))
        })
        .collect();
    if bad.is_empty() {
        return None;
    }
    bad.sort();
    let total: usize = bad.iter().map(|(_, n)| n).sum();
    let names: Vec<String> = bad
        .iter()
        .take(5)
        .map(|(k, n)| format!("{k} ({n})"))
        .collect();
    Some(format!(
        "{}: {total} non-finite (NaN/inf) weight values in {} tensors: {}{}; detections will be wrong or missing",
        w.source,
        bad.len(),
        names.join(", "),
        if bad.len() > 5 { ", …" } else { "" }
    ))
}

/// Keys a GLIP checkpoint may carry that the runtime never reads: recomputable buffers
/// (`*.relative_position_index`, `rpn.anchor_generator.cell_anchors.*`,
/// `*embeddings.position_ids`) and BERT pooler weights (GLIP has no pooler;
/// mmdetection's converter drops them too).
pub fn glip_ignorable(key: &str) -> bool {
    key.ends_with(".relative_position_index")
        || key.contains("anchor_generator.cell_anchors.")
        || key == "embeddings.position_ids"
        || key.ends_with(".embeddings.position_ids")
        || key.starts_with("pooler.")
        || key.contains(".pooler.")
}

/// How many keys of each kind a [`validate_keys`] error spells out before "… and N more".
const LIST_LIMIT: usize = 12;

/// Check `w` against the model's expected keys and shapes. Every problem is collected into ONE
/// error: missing keys, keys with the wrong shape (got vs expected) and unexpected keys, each
/// list sorted, counted and cut after a few entries. Keys for which `allowed_extra` is true may
/// be present without being expected, and may be absent although expected (ignorable buffers
/// such as [`glip_ignorable`]'s); when present and expected their shape is still checked.
pub fn validate_keys(
    w: &WeightMap,
    expected: &[(String, Vec<usize>)],
    allowed_extra: impl Fn(&str) -> bool,
) -> Result<()> {
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    let mut want: std::collections::HashSet<&str> =
        std::collections::HashSet::with_capacity(expected.len());
    for (k, shape) in expected {
        want.insert(k.as_str());
        match w.tensors.get(k) {
            None if allowed_extra(k) => {}
            None => missing.push(format!("{k} {shape:?}")),
            Some(t) if t.shape() != shape.as_slice() => {
                misshaped.push(format!("{k}: got {:?}, expected {shape:?}", t.shape()))
            }
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<String> = w
        .tensors
        .iter()
        .filter(|(k, _)| !want.contains(k.as_str()) && !allowed_extra(k))
        .map(|(k, t)| format!("{k} {:?}", t.shape()))
        .collect();
    if missing.is_empty() && misshaped.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    missing.sort();
    misshaped.sort();
    unexpected.sort();
    let mut msg = format!(
        "weights do not match the model: {} missing, {} with the wrong shape, {} unexpected (of {} expected keys, {} in the file)",
        missing.len(),
        misshaped.len(),
        unexpected.len(),
        expected.len(),
        w.tensors.len()
    );
    for (title, list) in [
        ("missing", &missing),
        ("wrong shape", &misshaped),
        ("unexpected", &unexpected),
    ] {
        if list.is_empty() {
            continue;
        }
        msg.push_str(&format!("\n  {title} ({}):", list.len()));
        for item in list.iter().take(LIST_LIMIT) {
            msg.push_str("\n    ");
            msg.push_str(item);
        }
        if list.len() > LIST_LIMIT {
            msg.push_str(&format!("\n    … and {} more", list.len() - LIST_LIMIT));
        }
    }
    Err(Error::Weights {
        path: w.source.clone(),
        msg,
    })
}
