//! GLIP-T, module by module, on the CPU backend (f32 arithmetic).
//!
//! Every module is built from a [`WeightMap`] (GLIP's state_dict key names) and a key
//! prefix, checking each tensor's shape when it is built, so a wrong checkpoint fails
//! early with the key's name.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Named host tensors (floats as f32), as read from a safetensors file.
#[derive(Default)]
pub struct WeightMap {
    /// Where the tensors came from, for error messages.
    pub source: String,
    pub tensors: HashMap<String, Tensor>,
}

impl WeightMap {
    pub fn new(source: impl Into<String>, tensors: HashMap<String, Tensor>) -> Self {
        WeightMap { source: source.into(), tensors }
    }

    fn err(&self, msg: String) -> Error {
        Error::Weights { path: self.source.clone(), msg }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The tensor `key`, which must exist and have exactly `shape`.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<&Tensor> {
        let t = self.tensors.get(key).ok_or_else(|| self.err(format!("missing tensor `{key}` (expected shape {shape:?})")))?;
        if t.shape() != shape {
            return Err(self.err(format!("tensor `{key}` has shape {:?}, expected {shape:?}", t.shape())));
        }
        Ok(t)
    }

    /// The tensor `key` as an owned f32 vector, checking its shape.
    pub fn f32(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.get(key, shape)?.to_f32_vec()
    }

    /// A scalar parameter stored as a 1-element tensor (shape [1] or []).
    pub fn scalar(&self, key: &str) -> Result<f32> {
        let t = self.tensors.get(key).ok_or_else(|| self.err(format!("missing tensor `{key}` (expected a scalar)")))?;
        if t.numel() != 1 {
            return Err(self.err(format!("tensor `{key}` has shape {:?}, expected a scalar", t.shape())));
        }
        Ok(t.to_f32_vec()?[0])
    }
}
