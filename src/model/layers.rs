//! The parameterised layers GLIP's modules share: Linear in PyTorch layout, Conv2d and
//! LayerNorm, holding backend tensors from a [`Vars`] walk and running through the op
//! interface.

use super::vars::{Init, Vars};
use crate::backend::Backend;
use crate::error::Result;
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
