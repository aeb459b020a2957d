//! Launch wrappers for kernels/elementwise.cu.

use super::params::GlipElementwiseParams;
use super::DeviceBuffer;
use super::{check_len, launch_1d, CudaBackend};
use crate::error::Result;
use crate::kernels::names;
use half::f16;

const FAMILY: &str = "elementwise";
const BLOCK: u32 = 256;

fn params(n: usize, alpha: f32, beta: f32) -> GlipElementwiseParams {
    GlipElementwiseParams {
        n: n as i64,
        alpha,
        beta,
    }
}

/// y[n] f16 = x[n] f32 rounded to nearest even.
pub fn cast_f32_f16(
    be: &CudaBackend,
    x: &DeviceBuffer<f32>,
    y: &mut DeviceBuffer<f16>,
    n: usize,
) -> Result<()> {
    check_len("cast_f32_f16", "x", x.len(), n)?;
    check_len("cast_f32_f16", "y", y.len(), n)?;
    let f = be.function(FAMILY, names::GLIP_ELEMENTWISE_CAST_F32_F16)?;
    let p = params(n, 1.0, 0.0);
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(x).arg(y);
    // SAFETY: the kernel reads x[0..n) and writes y[0..n); both lengths were checked.
    unsafe { l.launch(launch_1d(n, BLOCK)) }?;
    Ok(())
}

/// y[n] f32 = x[n] f16.
pub fn cast_f16_f32(
    be: &CudaBackend,
    x: &DeviceBuffer<f16>,
    y: &mut DeviceBuffer<f32>,
    n: usize,
) -> Result<()> {
    check_len("cast_f16_f32", "x", x.len(), n)?;
    check_len("cast_f16_f32", "y", y.len(), n)?;
    let f = be.function(FAMILY, names::GLIP_ELEMENTWISE_CAST_F16_F32)?;
    let p = params(n, 1.0, 0.0);
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(x).arg(y);
    // SAFETY: the kernel reads x[0..n) and writes y[0..n); both lengths were checked.
    unsafe { l.launch(launch_1d(n, BLOCK)) }?;
    Ok(())
}

/// y = alpha*a + beta*b, all [n] f16.
pub fn axpby_f16(
    be: &CudaBackend,
    alpha: f32,
    a: &DeviceBuffer<f16>,
    beta: f32,
    b: &DeviceBuffer<f16>,
    y: &mut DeviceBuffer<f16>,
    n: usize,
) -> Result<()> {
    check_len("axpby_f16", "a", a.len(), n)?;
    check_len("axpby_f16", "b", b.len(), n)?;
    check_len("axpby_f16", "y", y.len(), n)?;
    let f = be.function(FAMILY, names::GLIP_ELEMENTWISE_AXPBY_F16)?;
    let p = params(n, alpha, beta);
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(a).arg(b).arg(y);
    // SAFETY: reads a, b and writes y over [0, n); all three lengths were checked.
    unsafe { l.launch(launch_1d(n, BLOCK)) }?;
    Ok(())
}

/// y = alpha*a + beta, [n] f16.
pub fn scale_f16(
    be: &CudaBackend,
    alpha: f32,
    a: &DeviceBuffer<f16>,
    beta: f32,
    y: &mut DeviceBuffer<f16>,
    n: usize,
) -> Result<()> {
    check_len("scale_f16", "a", a.len(), n)?;
    check_len("scale_f16", "y", y.len(), n)?;
    let f = be.function(FAMILY, names::GLIP_ELEMENTWISE_SCALE_F16)?;
    let p = params(n, alpha, beta);
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(a).arg(y);
    // SAFETY: reads a and writes y over [0, n); both lengths were checked.
    unsafe { l.launch(launch_1d(n, BLOCK)) }?;
    Ok(())
}

/// A unary activation of kernels/elementwise.cu.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Relu,
    /// clamp to [−bound, bound]
    Clamp(f32),
    HSigmoid,
    Gelu,
}

/// y = f(x), both [n] f16.
pub fn unary_f16(
    be: &CudaBackend,
    op: Unary,
    x: &DeviceBuffer<f16>,
    y: &mut DeviceBuffer<f16>,
    n: usize,
) -> Result<()> {
    check_len("unary_f16", "x", x.len(), n)?;
    check_len("unary_f16", "y", y.len(), n)?;
    let (name, alpha) = match op {
        Unary::Relu => (names::GLIP_ELEMENTWISE_RELU_F16, 0.0),
        Unary::Clamp(b) => (names::GLIP_ELEMENTWISE_CLAMP_F16, b),
        Unary::HSigmoid => (names::GLIP_ELEMENTWISE_H_SIGMOID_F16, 0.0),
        Unary::Gelu => (names::GLIP_ELEMENTWISE_GELU_F16, 0.0),
    };
    let f = be.function(FAMILY, name)?;
    let p = params(n, alpha, 0.0);
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(x).arg(y);
    // SAFETY: reads x and writes y over [0, n); both lengths were checked.
    unsafe { l.launch(launch_1d(n, BLOCK)) }?;
    Ok(())
}
