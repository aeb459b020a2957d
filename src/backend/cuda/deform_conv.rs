//! Launch wrapper for kernels/deform_conv.cu (modulated deformable 3x3 convolution, fused
//! implicit GEMM on tensor cores). CPU twin: [`crate::backend::cpu::deform_conv`].
//!
//! Layouts (all device buffers): x [B, Cin, H, W] f16; offset f16, image b at
//! `b * offset_batch_stride`, read as [18, out_h, out_w]; mask f16 (already sigmoided), image b
//! at `b * mask_batch_stride`, read as [9, out_h, out_w]; weight [Cout, Cin·9] f16, i.e.
//! PyTorch's [Cout, Cin, 3, 3] flattened (no pre-transpose); bias [Cout] f32;
//! y [B, Cout, out_h, out_w] f16.

use super::params::GlipDeformConvParams;
use super::DeviceBuffer;
use super::{check_len, to_i32, CudaBackend};
use crate::backend::cpu::deform_conv::DeformConvShape;
use crate::error::{Error, Result};
use crate::kernels::names;
use cudarc::driver::LaunchConfig;
use half::f16;

const FAMILY: &str = "deform_conv";
/// Block tile of the kernel (DCN_BM x DCN_BN) and its thread count.
const TILE_O: usize = 64;
const TILE_P: usize = 64;
const THREADS: u32 = 128;

/// The kernel's parameter block for `s`, range-checked.
pub fn params(s: &DeformConvShape) -> Result<GlipDeformConvParams> {
    const OP: &str = "deform_conv_fwd_f16";
    s.validate(OP)?;
    let plane = s.in_h.saturating_mul(s.in_w);
    to_i32(OP, "in_h * in_w", plane)?;
    to_i32(OP, "in_channels * 9", s.in_channels.saturating_mul(9))?;
    Ok(GlipDeformConvParams {
        batch: to_i32(OP, "batch", s.batch)?,
        in_channels: to_i32(OP, "in_channels", s.in_channels)?,
        out_channels: to_i32(OP, "out_channels", s.out_channels)?,
        in_h: to_i32(OP, "in_h", s.in_h)?,
        in_w: to_i32(OP, "in_w", s.in_w)?,
        out_h: to_i32(OP, "out_h", s.out_h())?,
        out_w: to_i32(OP, "out_w", s.out_w())?,
        stride: to_i32(OP, "stride", s.stride)?,
        pad: 1,
        offset_batch_stride: s.offset_batch_stride as i64,
        mask_batch_stride: s.mask_batch_stride as i64,
    })
}

/// Grid (position tiles, channel tiles, batch) x 128 threads.
pub fn launch_config(s: &DeformConvShape) -> Result<LaunchConfig> {
    let gx = s.out_positions().div_ceil(TILE_P);
    let gy = s.out_channels.div_ceil(TILE_O);
    if gx > i32::MAX as usize || gy > 65_535 || s.batch > 65_535 {
        return Err(Error::shape(
            "deform_conv_fwd_f16",
            format!("grid ({gx}, {gy}, {}) out of range", s.batch),
        ));
    }
    Ok(LaunchConfig {
        grid_dim: (gx as u32, gy as u32, s.batch as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// y = modulated_deform_conv3x3(x, offset, mask, weight, bias) on the GPU (layouts above).
#[allow(clippy::too_many_arguments)]
pub fn deform_conv_fwd_f16(
    be: &CudaBackend,
    s: &DeformConvShape,
    x: &DeviceBuffer<f16>,
    offset: &DeviceBuffer<f16>,
    mask: &DeviceBuffer<f16>,
    weight: &DeviceBuffer<f16>,
    bias: &DeviceBuffer<f32>,
    y: &mut DeviceBuffer<f16>,
) -> Result<()> {
    const OP: &str = "deform_conv_fwd_f16";
    let p = params(s)?;
    let (lx, lo, lm, lw, ly) = s.required_lens();
    check_len(OP, "x", x.len(), lx)?;
    check_len(OP, "offset", offset.len(), lo)?;
    check_len(OP, "mask", mask.len(), lm)?;
    check_len(OP, "weight", weight.len(), lw)?;
    check_len(OP, "bias", bias.len(), s.out_channels)?;
    check_len(OP, "y", y.len(), ly)?;
    let cfg = launch_config(s)?;
    let f = be.function(FAMILY, names::GLIP_DEFORM_CONV_FWD_F16)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p)
        .arg(x)
        .arg(offset)
        .arg(mask)
        .arg(weight)
        .arg(bias)
        .arg(y);
    // SAFETY: every buffer holds at least the extent the kernel reads or writes for `p`
    // (required_lens, checked above: offsets/masks up to (B-1)·stride + 18|9·out_positions);
    // the kernel bounds-checks channel and position tails and clamps bilinear corners to
    // valid plane indices.
    unsafe { l.launch(cfg) }?;
    Ok(())
}
