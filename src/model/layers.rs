//! The two parameterised layers every transformer part of GLIP uses (Swin, BERT, VLFuse):
//! Linear in PyTorch layout and LayerNorm. [`Linear`] and [`LayerNorm`] hold backend tensors
//! from a [`Vars`] walk and run through the op interface; `HostLinear`/`HostLayerNorm` are the
//! f32 host versions the modules not yet moved onto the interface still use.

use super::vars::{Init, Vars};
use super::WeightMap;
use crate::backend::cpu::nn;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// y = x·Wᵀ + b with W [out, in] (PyTorch layout), on the backend.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// `{vars}weight` [out, inp] and `{vars}bias` [out].
    pub fn new(vars: &Vars, out: usize, inp: usize) -> Result<Self> {
        Ok(Linear {
            weight: vars.get("weight", &[out, inp], Init::FanIn)?,
            bias: Some(vars.get("bias", &[out], Init::Small)?),
        })
    }
    /// `{vars}weight` only (e.g. Swin's PatchMerging reduction).
    pub fn no_bias(vars: &Vars, out: usize, inp: usize) -> Result<Self> {
        Ok(Linear {
            weight: vars.get("weight", &[out, inp], Init::FanIn)?,
            bias: None,
        })
    }
    /// x […, inp] → […, out].
    pub fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        be.linear(x, &self.weight, self.bias.as_ref())
    }
}

/// A 2-D convolution with bias, square kernel, NCHW, on the backend.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2d {
    /// `{vars}weight` [cout, cin, k, k] and `{vars}bias` [cout].
    pub fn new(
        vars: &Vars,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        Ok(Conv2d {
            weight: vars.get("weight", &[cout, cin, k, k], Init::FanIn)?,
            bias: vars.get("bias", &[cout], Init::Small)?,
            stride,
            pad,
        })
    }
    pub fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        be.conv2d(x, &self.weight, Some(&self.bias), self.stride, self.pad)
    }
}

/// LayerNorm over the last dimension (biased variance, affine), on the backend.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    /// `{vars}weight` and `{vars}bias`, both [c].
    pub fn new(vars: &Vars, c: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm {
            weight: vars.get("weight", &[c], Init::Ones)?,
            bias: vars.get("bias", &[c], Init::Small)?,
            eps,
        })
    }
    pub fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        be.layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// y = x·Wᵀ + b with W [out, in] (PyTorch layout), f32 on the host.
#[derive(Clone, Debug)]
pub struct HostLinear {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub out: usize,
    pub inp: usize,
}

impl HostLinear {
    /// `{key}.weight` [out, inp] and `{key}.bias` [out].
    pub fn load(w: &WeightMap, key: &str, out: usize, inp: usize) -> Result<Self> {
        let bias = Some(w.f32(&format!("{key}.bias"), &[out])?);
        Ok(HostLinear {
            weight: w.f32(&format!("{key}.weight"), &[out, inp])?,
            bias,
            out,
            inp,
        })
    }
    /// `{key}.weight` only (e.g. Swin's PatchMerging reduction).
    pub fn load_no_bias(w: &WeightMap, key: &str, out: usize, inp: usize) -> Result<Self> {
        Ok(HostLinear {
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
    /// As [`HostLinear::apply`], with the row count taken from the input length.
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

/// LayerNorm over the last dimension (biased variance, affine), f32 on the host.
#[derive(Clone, Debug)]
pub struct HostLayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

impl HostLayerNorm {
    /// `{key}.weight` and `{key}.bias`, both [c].
    pub fn load(w: &WeightMap, key: &str, c: usize, eps: f32) -> Result<Self> {
        Ok(HostLayerNorm {
            weight: w.f32(&format!("{key}.weight"), &[c])?,
            bias: w.f32(&format!("{key}.bias"), &[c])?,
            eps,
        })
    }
    pub fn apply(&self, x: &mut [f32]) -> Result<()> {
        nn::layer_norm(x, self.weight.len(), &self.weight, &self.bias, self.eps)
    }
}
