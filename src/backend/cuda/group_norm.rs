//! Launch wrapper for kernels/group_norm.cu: GroupNorm over all pyramid levels of one GN
//! module, two launches (per-piece statistics, then combine + normalise) each covering every
//! level. CPU twin: [`crate::backend::cpu::group_norm::group_norm_levels`] (the same function
//! on levels packed in one buffer).
//!
//! Layouts: every level its own f16 buffers x, y = [B, C, hw_l], reached through the device
//! addresses in the parameter block; weight, bias [C] f32; workspace [pieces, 2] f32 (see
//! [`workspace_len`]).

use super::params::{GlipGroupNormLevel, GlipGroupNormParams};
use super::CudaBackend;
use super::DeviceBuffer;
use crate::backend::cpu::group_norm::GroupNormShape;
use crate::error::{Error, Result};
use crate::kernels::names;
use cudarc::driver::LaunchConfig;
use half::f16;

const FAMILY: &str = "group_norm";
/// Elements per piece (GN_CHUNK in the kernel) and threads per block (GN_THREADS).
const CHUNK: usize = 8192;
const THREADS: u32 = 256;
/// Levels one launch takes (the size of the parameter block's array).
pub const MAX_LEVELS: usize = 8;

/// One level of a launch: its input, its output (same length, not aliasing any input).
pub struct GnLevelBufs<'a> {
    pub x: &'a DeviceBuffer<f16>,
    pub y: &'a mut DeviceBuffer<f16>,
    /// H · W of the level.
    pub hw: usize,
}

/// Pieces (blocks of either launch) for levels of these H · W.
pub fn pieces(s: &GroupNormShape, hws: &[usize]) -> usize {
    let cpg = s.channels / s.groups.max(1);
    hws.iter()
        .map(|&hw| s.batch * s.groups * (cpg * hw).div_ceil(CHUNK))
        .sum()
}

/// f32 elements of the workspace the caller must pass.
pub fn workspace_len(s: &GroupNormShape, hws: &[usize]) -> usize {
    2 * pieces(s, hws)
}

/// The kernel's parameter block (without the level addresses), checked against the kernel's
/// requirements.
pub fn params(s: &GroupNormShape, hws: &[usize]) -> Result<GlipGroupNormParams> {
    const OP: &str = "group_norm_levels_f16";
    s.validate(OP)?;
    if hws.is_empty() || hws.len() > MAX_LEVELS {
        return Err(Error::shape(
            OP,
            format!("{} levels (1..={MAX_LEVELS} supported)", hws.len()),
        ));
    }
    let cpg = s.channels / s.groups;
    let mut p = GlipGroupNormParams {
        batch: i32::try_from(s.batch).map_err(|_| Error::shape(OP, "batch too large"))?,
        channels: i32::try_from(s.channels).map_err(|_| Error::shape(OP, "channels too large"))?,
        groups: i32::try_from(s.groups).map_err(|_| Error::shape(OP, "groups too large"))?,
        num_levels: hws.len() as i32,
        eps: s.eps,
        activation: s.activation as i32,
        ..Default::default()
    };
    for (i, &hw) in hws.iter().enumerate() {
        // half2 accesses: every slab must hold an even count.
        if !(cpg * hw).is_multiple_of(2) {
            return Err(Error::shape(
                OP,
                format!(
                    "level {i}: channels/groups * hw = {} must be even",
                    cpg * hw
                ),
            ));
        }
        if hw == 0 || cpg.saturating_mul(hw) > i32::MAX as usize {
            return Err(Error::shape(
                OP,
                format!("level {i}: hw {hw} out of range (channels/groups * hw must be < 2^31)"),
            ));
        }
        p.levels[i] = GlipGroupNormLevel {
            hw: hw as i32,
            ..Default::default()
        };
    }
    Ok(p)
}

/// y_l = GroupNorm(x_l) on every level, in one launch pair (layouts above); `workspace` holds
/// [`workspace_len`] f32.
pub fn group_norm_levels_f16(
    be: &CudaBackend,
    s: &GroupNormShape,
    levels: &mut [GnLevelBufs<'_>],
    weight: &DeviceBuffer<f32>,
    bias: &DeviceBuffer<f32>,
    workspace: &mut DeviceBuffer<f32>,
) -> Result<()> {
    const OP: &str = "group_norm_levels_f16";
    let hws: Vec<usize> = levels.iter().map(|l| l.hw).collect();
    let mut p = params(s, &hws)?;
    for (what, len, want) in [
        ("weight", weight.len(), s.channels),
        ("bias", bias.len(), s.channels),
        ("workspace", workspace.len(), workspace_len(s, &hws)),
    ] {
        super::check_len(OP, what, len, want)?;
    }
    for (i, l) in levels.iter().enumerate() {
        let want = s.batch * s.channels * l.hw;
        super::check_len(OP, &format!("level {i} x"), l.x.len(), want)?;
        super::check_len(OP, &format!("level {i} y"), l.y.len(), want)?;
        p.levels[i].x = be.device_address(l.x)?;
        p.levels[i].y = be.device_address(&*l.y)?;
    }
    for (i, a) in levels.iter().enumerate() {
        for (j, b) in levels.iter().enumerate() {
            // An output may not overlap any input (the kernels read x after others wrote y).
            let (ya, yb) = (p.levels[i].y, p.levels[i].y + 2 * a.y.len() as u64);
            let (xa, xb) = (p.levels[j].x, p.levels[j].x + 2 * b.x.len() as u64);
            if ya < xb && xa < yb {
                return Err(Error::shape(
                    OP,
                    format!("level {i}'s output overlaps level {j}'s input"),
                ));
            }
        }
        if p.levels[i].x % 4 != 0 || p.levels[i].y % 4 != 0 {
            return Err(Error::shape(
                OP,
                format!("level {i}: buffers not 4-byte aligned"),
            ));
        }
    }
    let n = pieces(s, &hws);
    if n == 0 || n > i32::MAX as usize {
        return Err(Error::shape(OP, format!("{n} pieces")));
    }
    let cfg = LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let stats = be.function(FAMILY, names::GLIP_GROUP_NORM_STATS_F16)?;
    let mut l = be.launch_builder(&stats);
    l.arg(&p).arg(&mut *workspace);
    for lv in levels.iter() {
        l.reaches(lv.x);
    }
    // SAFETY: every level's x holds B·C·hw_l elements at the address in `p` and workspace
    // 2 floats per piece (checked above); the kernel maps block i to piece i and touches only
    // that piece and partials[i].
    unsafe { l.launch(cfg) }?;
    let apply = be.function(FAMILY, names::GLIP_GROUP_NORM_APPLY_F16)?;
    let mut l = be.launch_builder(&apply);
    l.arg(&p).arg(&*workspace).arg(weight).arg(bias);
    for lv in levels.iter_mut() {
        l.reaches(lv.x);
        l.reaches_mut(&mut *lv.y);
    }
    // SAFETY: as above; every y has its x's extent and overlaps no x (checked), weight/bias
    // hold C floats. Same stream, so the partials are complete before this launch reads them.
    unsafe { l.launch(cfg) }?;
    Ok(())
}
