//! Backends: the CPU reference (f32 arithmetic) and CUDA (f16 storage, f32 accumulation).
//!
//! Every op exists on the CPU; the CPU twin of a kernel family is the reference its parity
//! test compares against, and the fallback when there is no GPU.

pub mod cpu;
pub mod cuda;

use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

/// The operations the executor needs from a device. Tensors passed in must live on the
/// backend's device (the CPU backend takes host tensors).
pub trait Backend {
    fn device(&self) -> Device;
    /// Copy a host tensor onto this backend's device (dtype kept).
    fn upload(&self, t: &Tensor) -> Result<Tensor>;
    /// Copy a tensor of this backend back to the host.
    fn to_host(&self, t: &Tensor) -> Result<Tensor>;
    /// Row-major `a[m, k] · b[k, n]`, or `a · b[n, k]ᵀ` with `b_transposed`.
    /// CPU: f32 out; CUDA: f16 in and out with f32 accumulation.
    fn matmul(&self, a: &Tensor, b: &Tensor, b_transposed: bool) -> Result<Tensor>;
    /// Convert between f32 and f16 (round to nearest even).
    fn cast(&self, t: &Tensor, to: DType) -> Result<Tensor>;
    /// `alpha * a + beta * b` elementwise.
    fn axpby(&self, alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor>;
}

/// (m, k, n) of a matmul, checking that the inner dimensions agree.
pub(crate) fn matmul_dims(
    a: &Tensor,
    b: &Tensor,
    b_transposed: bool,
) -> Result<(usize, usize, usize)> {
    let [m, k] = a.dims::<2>("matmul")?;
    let [b0, b1] = b.dims::<2>("matmul")?;
    let (kb, n) = if b_transposed { (b1, b0) } else { (b0, b1) };
    if k != kb {
        return Err(Error::shape(
            "matmul",
            format!(
                "a {:?} b {:?} transposed={b_transposed}",
                a.shape(),
                b.shape()
            ),
        ));
    }
    Ok((m, k, n))
}
