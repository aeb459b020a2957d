//! The CPU backend: f32 arithmetic (f16 inputs upcast losslessly), rayon threads.
//! Each kernel family's CPU twin lives in a module named like its `kernels/<family>.cu`.

pub mod bi_attn;
pub mod deform_conv;
pub mod elementwise;
pub mod gemm;
pub mod group_norm;
pub mod logits;
pub mod nms;
pub mod nn;

use super::{matmul_dims, Backend};
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, HostData, Tensor};

#[derive(Default, Clone, Copy, Debug)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        t.try_clone()
    }
    fn to_host(&self, t: &Tensor) -> Result<Tensor> {
        t.try_clone()
    }
    fn matmul(&self, a: &Tensor, b: &Tensor, b_transposed: bool) -> Result<Tensor> {
        let (m, k, n) = matmul_dims(a, b, b_transposed)?;
        let av = a.to_f32_vec()?;
        let bv = b.to_f32_vec()?;
        let bm = if b_transposed {
            gemm::Mat::transposed(&bv, k)
        } else {
            gemm::Mat::rows(&bv, n)
        };
        let mut c = vec![0.0f32; m * n];
        if !gemm::gemm(m, n, k, gemm::Mat::rows(&av, k), bm, &mut c, 1.0, false) {
            return Err(Error::shape("matmul", "gemm extents"));
        }
        Tensor::from_f32(&[m, n], c)
    }
    fn cast(&self, t: &Tensor, to: DType) -> Result<Tensor> {
        match (t.host()?, to) {
            (HostData::F32(v), DType::F16) => {
                Tensor::from_f16(t.shape(), elementwise::cast_f32_f16(v))
            }
            (HostData::F16(v), DType::F32) => {
                Tensor::from_f32(t.shape(), elementwise::cast_f16_f32(v))
            }
            (h, d) if crate::tensor::host_dtype(h) == d => t.try_clone(),
            (h, d) => Err(Error::Invalid(format!(
                "cast from {} to {} is not supported",
                crate::tensor::host_dtype(h).name(),
                d.name()
            ))),
        }
    }
    fn axpby(&self, alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor> {
        if a.shape() != b.shape() {
            return Err(Error::shape(
                "axpby",
                format!("{:?} vs {:?}", a.shape(), b.shape()),
            ));
        }
        match (a.host()?, b.host()?) {
            (HostData::F16(x), HostData::F16(y)) => {
                Tensor::from_f16(a.shape(), elementwise::axpby_f16(alpha, x, beta, y)?)
            }
            _ => {
                let (x, y) = (a.to_f32_vec()?, b.to_f32_vec()?);
                Tensor::from_f32(
                    a.shape(),
                    x.iter()
                        .zip(&y)
                        .map(|(p, q)| alpha * p + beta * q)
                        .collect(),
                )
            }
        }
    }
}
