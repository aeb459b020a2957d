//! GLIP-T, module by module, written once over the op interface (`crate::backend::ops`).
//!
//! Every module is built from a [`vars::Vars`] walk (GLIP's state_dict key names under a
//! prefix, each tensor's shape checked), so a wrong checkpoint fails with the keys' names;
//! [`WeightMap`] holds a checkpoint's host tensors.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

pub mod bert;
pub mod config;
pub mod dyconv;
pub mod fpn;
pub mod glip;
pub mod head;
pub mod layers;
pub mod postprocess;
pub mod swin;
pub mod vars;
pub mod vlfuse;

/// Named host tensors (floats as f32), as read from a safetensors file.
#[derive(Default)]
pub struct WeightMap {
    /// Where the tensors came from, for error messages.
    pub source: String,
    pub tensors: HashMap<String, Tensor>,
}

impl WeightMap {
    pub fn new(source: impl Into<String>, tensors: HashMap<String, Tensor>) -> Self {
        WeightMap {
            source: source.into(),
            tensors,
        }
    }

    fn err(&self, msg: String) -> Error {
        Error::Weights {
            path: self.source.clone(),
            msg,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The tensor `key`, which must exist and have exactly `shape`.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<&Tensor> {
        let t = self.tensors.get(key).ok_or_else(|| {
            self.err(format!("missing tensor `{key}` (expected shape {shape:?})"))
        })?;
        if t.shape() != shape {
            return Err(self.err(format!(
                "tensor `{key}` has shape {:?}, expected {shape:?}",
                t.shape()
            )));
        }
        Ok(t)
    }

    /// The tensor `key` as an owned f32 vector, checking its shape and that it holds floats
    /// (integers of the same byte size would otherwise be converted, silently wrong).
    pub fn f32(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.get(key, shape)?;
        self.check_float(key, t)?;
        t.to_f32_vec()
    }

    /// An error unless `t` (the tensor `key`) holds floats.
    pub(crate) fn check_float(&self, key: &str, t: &Tensor) -> Result<()> {
        match t.dtype() {
            crate::tensor::DType::F32 | crate::tensor::DType::F16 => Ok(()),
            other => Err(self.err(format!(
                "tensor `{key}` is stored as {}, expected floating-point weights",
                other.name()
            ))),
        }
    }

    /// A scalar parameter stored as a 1-element tensor (shape [1] or []).
    pub fn scalar(&self, key: &str) -> Result<f32> {
        let t = self
            .tensors
            .get(key)
            .ok_or_else(|| self.err(format!("missing tensor `{key}` (expected a scalar)")))?;
        if t.numel() != 1 {
            return Err(self.err(format!(
                "tensor `{key}` has shape {:?}, expected a scalar",
                t.shape()
            )));
        }
        self.check_float(key, t)?;
        t.to_f32_vec()?
            .first()
            .copied()
            .ok_or_else(|| self.err(format!("tensor `{key}` is empty")))
    }
}

/// One NCHW feature map in f32 (a pyramid level, an image batch).
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// [n, c, h, w] row-major.
    pub data: Vec<f32>,
}

impl FeatureMap {
    pub fn new(n: usize, c: usize, h: usize, w: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != n * c * h * w {
            return Err(Error::shape(
                "FeatureMap::new",
                format!(
                    "[{n}, {c}, {h}, {w}] needs {} values, got {}",
                    n * c * h * w,
                    data.len()
                ),
            ));
        }
        Ok(FeatureMap { n, c, h, w, data })
    }
    pub fn zeros(n: usize, c: usize, h: usize, w: usize) -> Self {
        FeatureMap {
            n,
            c,
            h,
            w,
            data: vec![0.0; n * c * h * w],
        }
    }
    /// From a 4-D host tensor (any float dtype).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let [n, c, h, w] = t.dims::<4>("FeatureMap::from_tensor")?;
        FeatureMap::new(n, c, h, w, t.to_f32_vec()?)
    }
    pub fn to_tensor(&self) -> Result<Tensor> {
        Tensor::from_f32(&[self.n, self.c, self.h, self.w], self.data.clone())
    }
    pub fn hw(&self) -> usize {
        self.h * self.w
    }
    /// The [c, h, w] slice of image `b`.
    pub fn image(&self, b: usize) -> &[f32] {
        let s = self.c * self.h * self.w;
        &self.data[b * s..(b + 1) * s]
    }
}

#[cfg(test)]
mod tests {
    /// The model is written once over the op interface: no module of it names a backend
    /// (the device is the caller's run-time choice, `backend::select`).
    #[test]
    fn no_model_module_names_a_backend() {
        let sources = [
            ("bert.rs", include_str!("bert.rs")),
            ("config.rs", include_str!("config.rs")),
            ("dyconv.rs", include_str!("dyconv.rs")),
            ("fpn.rs", include_str!("fpn.rs")),
            ("glip.rs", include_str!("glip.rs")),
            ("head.rs", include_str!("head.rs")),
            ("layers.rs", include_str!("layers.rs")),
            ("mod.rs", include_str!("mod.rs")),
            ("postprocess.rs", include_str!("postprocess.rs")),
            ("swin.rs", include_str!("swin.rs")),
            ("vars.rs", include_str!("vars.rs")),
            ("vlfuse.rs", include_str!("vlfuse.rs")),
        ];
        let banned = [
            concat!("backend::", "cpu"),
            concat!("backend::", "cuda"),
            concat!("Cpu", "Backend"),
            concat!("Cuda", "Backend"),
        ];
        for (file, src) in sources {
            for b in banned {
                assert!(!src.contains(b), "src/model/{file} names `{b}`");
            }
        }
        // Every module of the directory is in the list above.
        let listed = sources.len();
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/model"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(listed, on_disk, "a model module is missing from this test");
    }
}
