//! The two parameterised layers every transformer part of GLIP uses (Swin, BERT, VLFuse):
//! Linear in PyTorch layout and LayerNorm, loaded from a [`WeightMap`] with shape checks.

use super::WeightMap;
use crate::backend::cpu::nn;
use crate::error::{Error, Result};

/// y = x·Wᵀ + b with W [out, in] (PyTorch layout).
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub out: usize,
    pub inp: usize,
}

impl Linear {
    /// `{key}.weight` [out, inp] and `{key}.bias` [out].
    pub fn load(w: &WeightMap, key: &str, out: usize, inp: usize) -> Result<Self> {
        let bias = Some(w.f32(&format!("{key}.bias"), &[out])?);
        Ok(Linear {
            weight: w.f32(&format!("{key}.weight"), &[out, inp])?,
            bias,
            out,
            inp,
        })
    }
    /// `{key}.weight` only (e.g. Swin's PatchMerging reduction).
    pub fn load_no_bias(w: &WeightMap, key: &str, out: usize, inp: usize) -> Result<Self> {
        Ok(Linear {
            weight: w.f32(&format!("{key}.weight"), &[out, inp])?,
            bias: None,
            out,
            inp,
        })
    }
    /// `rows` rows of `inp` values → `rows` rows of `out`.
    pub fn apply(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        nn::linear(x, rows, &self.weight, self.out, self.bias.as_deref())
    }
    /// As [`Linear::apply`], with the row count taken from the input length.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        if self.inp == 0 || !x.len().is_multiple_of(self.inp) {
            return Err(Error::shape(
                "Linear",
                format!("input length {} is not a multiple of {}", x.len(), self.inp),
            ));
        }
        self.apply(x, x.len() / self.inp)
    }
}

/// LayerNorm over the last dimension (biased variance, affine).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

impl LayerNorm {
    /// `{key}.weight` and `{key}.bias`, both [c].
    pub fn load(w: &WeightMap, key: &str, c: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.f32(&format!("{key}.weight"), &[c])?,
            bias: w.f32(&format!("{key}.bias"), &[c])?,
            eps,
        })
    }
    pub fn apply(&self, x: &mut [f32]) -> Result<()> {
        nn::layer_norm(x, self.weight.len(), &self.weight, &self.bias, self.eps)
    }
}
