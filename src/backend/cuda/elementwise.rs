//! Launch wrappers for kernels/elementwise.cu.

use super::params::GlipElementwiseParams;
use super::{check_len, launch_1d, to_i32, CudaBackend};
use super::{DeviceBuffer, InOut};
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
        ..Default::default()
    }
}

/// The parameters of a broadcast over `n` elements: `inner` elements per factor (image or
/// plane), `channels` of a per-channel vector.
fn broadcast(
    op: &'static str,
    n: usize,
    inner: usize,
    channels: usize,
) -> Result<GlipElementwiseParams> {
    if inner == 0 || channels == 0 {
        return Err(crate::error::Error::shape(
            op,
            format!("{n} elements in groups of {inner}, {channels} channels"),
        ));
    }
    Ok(GlipElementwiseParams {
        n: n as i64,
        inner: inner as i64,
        channels: to_i32(op, "channels", channels)?,
        ..Default::default()
    })
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

/// y = alpha*a + beta*b, all [n] f16 (`ay`: a and y, or a updated in place).
pub fn axpby_f16(
    be: &CudaBackend,
    alpha: f32,
    ay: InOut<'_, f16>,
    beta: f32,
    b: &DeviceBuffer<f16>,
    n: usize,
) -> Result<()> {
    let (la, ly) = ay.lens();
    check_len("axpby_f16", "a", la, n)?;
    check_len("axpby_f16", "b", b.len(), n)?;
    check_len("axpby_f16", "y", ly, n)?;
    let f = be.function(FAMILY, names::GLIP_ELEMENTWISE_AXPBY_F16)?;
    let p = params(n, alpha, beta);
    let mut l = be.launch_builder(&f);
    l.arg(&p).input(&ay).arg(b).output(ay);
    // SAFETY: reads a, b and writes y over [0, n); all three lengths were checked.
    unsafe { l.launch(launch_1d(n, BLOCK)) }?;
    Ok(())
}

/// y = alpha*a + beta, [n] f16 (`ay`: a and y, or a updated in place).
pub fn scale_f16(
    be: &CudaBackend,
    alpha: f32,
    ay: InOut<'_, f16>,
    beta: f32,
    n: usize,
) -> Result<()> {
    let (la, ly) = ay.lens();
    check_len("scale_f16", "a", la, n)?;
    check_len("scale_f16", "y", ly, n)?;
    let f = be.function(FAMILY, names::GLIP_ELEMENTWISE_SCALE_F16)?;
    let p = params(n, alpha, beta);
    let mut l = be.launch_builder(&f);
    l.arg(&p).input(&ay).output(ay);
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

/// y = f(x), both [n] f16 (`xy`: x and y, or x updated in place).
pub fn unary_f16(be: &CudaBackend, op: Unary, xy: InOut<'_, f16>, n: usize) -> Result<()> {
    let (lx, ly) = xy.lens();
    check_len("unary_f16", "x", lx, n)?;
    check_len("unary_f16", "y", ly, n)?;
    let (name, alpha) = match op {
        Unary::Relu => (names::GLIP_ELEMENTWISE_RELU_F16, 0.0),
        Unary::Clamp(b) => (names::GLIP_ELEMENTWISE_CLAMP_F16, b),
        Unary::HSigmoid => (names::GLIP_ELEMENTWISE_H_SIGMOID_F16, 0.0),
        Unary::Gelu => (names::GLIP_ELEMENTWISE_GELU_F16, 0.0),
    };
    let f = be.function(FAMILY, name)?;
    let p = params(n, alpha, 0.0);
    let mut l = be.launch_builder(&f);
    l.arg(&p).input(&xy).output(xy);
    // SAFETY: reads x and writes y over [0, n); both lengths were checked.
    unsafe { l.launch(launch_1d(n, BLOCK)) }?;
    Ok(())
}

/// y[i] = x[i] · a[i / per_image], x [N·per_image] f16, a [N] f16 (`xy`: x and y, or x
/// updated in place).
pub fn scale_images_f16(
    be: &CudaBackend,
    xy: InOut<'_, f16>,
    a: &DeviceBuffer<f16>,
    images: usize,
    per_image: usize,
) -> Result<()> {
    let op = "scale_images";
    let n = images * per_image;
    let (lx, ly) = xy.lens();
    check_len(op, "x", lx, n)?;
    check_len(op, "a", a.len(), images)?;
    check_len(op, "y", ly, n)?;
    if n == 0 {
        return Ok(());
    }
    let p = broadcast(op, n, per_image, 1)?;
    let f = be.function(FAMILY, names::GLIP_ELEMENTWISE_SCALE_IMAGES_F16)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).input(&xy).arg(a).output(xy);
    // SAFETY: x and y hold n elements, a one per image: i / per_image < images.
    unsafe { l.launch(launch_1d(n, BLOCK)) }
}

/// y = a + g ⊙ b, a, b, y [rows·C] f16, g [C] f32 (`ay`: a and y, or a updated in place).
pub fn add_channel_scaled_f16(
    be: &CudaBackend,
    ay: InOut<'_, f16>,
    g: &DeviceBuffer<f32>,
    b: &DeviceBuffer<f16>,
    n: usize,
    channels: usize,
) -> Result<()> {
    let op = "add_channel_scaled";
    let (la, ly) = ay.lens();
    for (what, len) in [("a", la), ("b", b.len()), ("y", ly)] {
        check_len(op, what, len, n)?;
    }
    check_len(op, "gamma", g.len(), channels)?;
    if n == 0 {
        return Ok(());
    }
    let p = broadcast(op, n, 1, channels)?;
    let f = be.function(FAMILY, names::GLIP_ELEMENTWISE_ADD_CHANNEL_SCALED_F16)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).input(&ay).arg(g).arg(b).output(ay);
    // SAFETY: a, b, y hold n elements, g the channels (indexed i % channels).
    unsafe { l.launch(launch_1d(n, BLOCK)) }
}

/// DyReLU's application on NCHW x [B, C, hw] with z [B, 4C] f16 (`xy`: x and y, or x
/// updated in place).
pub fn dyrelu_apply_f16(
    be: &CudaBackend,
    xy: InOut<'_, f16>,
    z: &DeviceBuffer<f16>,
    (batch, c, hw): (usize, usize, usize),
) -> Result<()> {
    let op = "dyrelu_apply";
    let n = batch * c * hw;
    let (lx, ly) = xy.lens();
    check_len(op, "x", lx, n)?;
    check_len(op, "z", z.len(), batch * 4 * c)?;
    check_len(op, "y", ly, n)?;
    if n == 0 {
        return Ok(());
    }
    let p = broadcast(op, n, hw, c)?;
    let f = be.function(FAMILY, names::GLIP_ELEMENTWISE_DYRELU_APPLY_F16)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).input(&xy).arg(z).output(xy);
    // SAFETY: x, y hold n elements; z row b < batch holds 4C coefficients.
    unsafe { l.launch(launch_1d(n, BLOCK)) }
}

/// om [B, 3·taps, hw] → off [B, 2·taps, hw] and sigmoid(mask) [B, taps, hw], f16.
pub fn split_offset_mask_f16(
    be: &CudaBackend,
    om: &DeviceBuffer<f16>,
    off: &mut DeviceBuffer<f16>,
    mask: &mut DeviceBuffer<f16>,
    (batch, taps, hw): (usize, usize, usize),
) -> Result<()> {
    let op = "split_offset_mask";
    let n = batch * 3 * taps * hw;
    check_len(op, "om", om.len(), n)?;
    check_len(op, "offsets", off.len(), batch * 2 * taps * hw)?;
    check_len(op, "mask", mask.len(), batch * taps * hw)?;
    if n == 0 {
        return Ok(());
    }
    let p = broadcast(op, n, hw, 3 * taps)?;
    let f = be.function(FAMILY, names::GLIP_ELEMENTWISE_SPLIT_OFFSET_MASK_F16)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(om).arg(off).arg(mask);
    // SAFETY: om holds n elements; each goes to the offset (2 taps planes per image) or the
    // mask (taps planes per image) buffer, both checked.
    unsafe { l.launch(launch_1d(n, BLOCK)) }
}
