//! Launch wrappers for kernels/reduce.cu: LayerNorm over rows and the global average pool,
//! one block per row / plane.

use super::memory::DeviceBuffer;
use super::params::GlipReduceParams;
use super::{check_len, CudaBackend};
use crate::error::{Error, Result};
use crate::kernels::names;
use cudarc::driver::LaunchConfig;
use half::f16;

const FAMILY: &str = "reduce";
/// Threads per block: RD_THREADS in reduce.cu.
const THREADS: u32 = 256;
/// Blocks at most; larger launches loop over rows.
const MAX_BLOCKS: usize = 65_535;

fn params(op: &'static str, rows: usize, width: usize, eps: f32) -> Result<GlipReduceParams> {
    if width == 0 {
        return Err(Error::shape(op, format!("{rows} rows of width 0")));
    }
    Ok(GlipReduceParams {
        rows: rows as i64,
        width: width as i64,
        eps,
        _pad: 0,
    })
}

fn grid(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// LayerNorm of x [rows, width] f16 with w, b [width] f32 → y f16.
pub fn layer_norm_f16(
    be: &CudaBackend,
    x: &DeviceBuffer<f16>,
    w: &DeviceBuffer<f32>,
    b: &DeviceBuffer<f32>,
    y: &mut DeviceBuffer<f16>,
    (rows, width): (usize, usize),
    eps: f32,
) -> Result<()> {
    let op = "layer_norm";
    let p = params(op, rows, width, eps)?;
    check_len(op, "x", x.len(), rows * width)?;
    check_len(op, "y", y.len(), rows * width)?;
    check_len(op, "weight", w.len(), width)?;
    check_len(op, "bias", b.len(), width)?;
    if rows == 0 {
        return Ok(());
    }
    let f = be.function(FAMILY, names::GLIP_REDUCE_LAYER_NORM_F16)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(x).arg(w).arg(b).arg(y);
    // SAFETY: rows · width elements of x and y, width of w and b, all checked.
    unsafe { l.launch(grid(rows)) }
}

/// The mean of each plane of x [planes, width] f16 → y [planes] f16.
pub fn avg_pool_f16(
    be: &CudaBackend,
    x: &DeviceBuffer<f16>,
    y: &mut DeviceBuffer<f16>,
    (planes, width): (usize, usize),
) -> Result<()> {
    let op = "avg_pool";
    let p = params(op, planes, width, 0.0)?;
    check_len(op, "x", x.len(), planes * width)?;
    check_len(op, "y", y.len(), planes)?;
    if planes == 0 {
        return Ok(());
    }
    let f = be.function(FAMILY, names::GLIP_REDUCE_AVG_POOL_F16)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(x).arg(y);
    // SAFETY: planes · width elements of x, planes of y, checked.
    unsafe { l.launch(grid(planes)) }
}
