//! Reading tensors from safetensors files.

use crate::error::{Error, Result};
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
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| werr(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = HashMap::new();
    for (name, v) in st.tensors() {
        out.insert(name.clone(), view_to_tensor(path, &name, &v)?);
    }
    Ok(out)
}
