//! Launch wrapper for kernels/group_norm.cu: GroupNorm over all pyramid levels of one GN
//! module, two launches (per-piece statistics, then combine + normalise) each covering every
//! level. CPU twin: [`crate::backend::cpu::group_norm::group_norm_levels`].
//!
//! Layouts: x, y packed f16 buffers, level l = [B, C, hw_l] at element `levels[l].offset`;
//! weight, bias [C] f32; workspace [pieces, 2] f32 (see [`workspace_len`]).

use super::params::{GlipGroupNormLevel, GlipGroupNormParams};
use super::CudaBackend;
use super::DeviceBuffer;
use crate::backend::cpu::group_norm::{GnLevel, GroupNormShape};
use crate::error::{Error, Result};
use crate::kernels::names;
use cudarc::driver::LaunchConfig;
use half::f16;

const FAMILY: &str = "group_norm";
/// Elements per piece (GN_CHUNK in the kernel) and threads per block (GN_THREADS).
const CHUNK: usize = 8192;
const THREADS: u32 = 256;
const MAX_LEVELS: usize = 8;

/// Pieces (blocks of either launch) for this call.
pub fn pieces(s: &GroupNormShape, levels: &[GnLevel]) -> usize {
    let cpg = s.channels / s.groups.max(1);
    levels
        .iter()
        .map(|l| s.batch * s.groups * (cpg * l.hw).div_ceil(CHUNK))
        .sum()
}

/// f32 elements of the workspace the caller must pass.
pub fn workspace_len(s: &GroupNormShape, levels: &[GnLevel]) -> usize {
    2 * pieces(s, levels)
}

/// The kernel's parameter block, checked against the kernel's requirements.
pub fn params(s: &GroupNormShape, levels: &[GnLevel]) -> Result<GlipGroupNormParams> {
    const OP: &str = "group_norm_levels_f16";
    s.validate(OP)?;
    if levels.is_empty() || levels.len() > MAX_LEVELS {
        return Err(Error::shape(
            OP,
            format!("{} levels (1..={MAX_LEVELS} supported)", levels.len()),
        ));
    }
    let cpg = s.channels / s.groups;
    let mut p = GlipGroupNormParams {
        batch: i32::try_from(s.batch).map_err(|_| Error::shape(OP, "batch too large"))?,
        channels: i32::try_from(s.channels).map_err(|_| Error::shape(OP, "channels too large"))?,
        groups: i32::try_from(s.groups).map_err(|_| Error::shape(OP, "groups too large"))?,
        num_levels: levels.len() as i32,
        eps: s.eps,
        activation: s.activation as i32,
        ..Default::default()
    };
    for (i, l) in levels.iter().enumerate() {
        // half2 accesses: every slab must start on an even element and hold an even count.
        if !l.offset.is_multiple_of(2) || !(cpg * l.hw).is_multiple_of(2) {
            return Err(Error::shape(
                OP,
                format!(
                    "level {i}: offset {} must be even and channels/groups * hw = {} even",
                    l.offset,
                    cpg * l.hw
                ),
            ));
        }
        if l.hw == 0 || cpg.saturating_mul(l.hw) > i32::MAX as usize {
            return Err(Error::shape(
                OP,
                format!(
                    "level {i}: hw {} out of range (channels/groups * hw must be < 2^31)",
                    l.hw
                ),
            ));
        }
        p.levels[i] = GlipGroupNormLevel {
            offset: l.offset as i64,
            hw: l.hw as i32,
            _pad: 0,
        };
    }
    Ok(p)
}

/// y = GroupNorm(x) on every level (layouts above); `workspace` holds [`workspace_len`] f32.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_levels_f16(
    be: &CudaBackend,
    s: &GroupNormShape,
    levels: &[GnLevel],
    x: &DeviceBuffer<f16>,
    weight: &DeviceBuffer<f32>,
    bias: &DeviceBuffer<f32>,
    workspace: &mut DeviceBuffer<f32>,
    y: &mut DeviceBuffer<f16>,
) -> Result<()> {
    const OP: &str = "group_norm_levels_f16";
    let p = params(s, levels)?;
    let end = levels
        .iter()
        .map(|l| l.offset + s.batch * s.channels * l.hw)
        .max()
        .unwrap_or(0);
    for (what, len, want) in [
        ("x", x.len(), end),
        ("y", y.len(), end),
        ("weight", weight.len(), s.channels),
        ("bias", bias.len(), s.channels),
        ("workspace", workspace.len(), workspace_len(s, levels)),
    ] {
        super::check_len(OP, what, len, want)?;
    }
    let n = pieces(s, levels);
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
    l.arg(&p).arg(x).arg(&mut *workspace);
    // SAFETY: x holds every level's extent and workspace 2 floats per piece (checked above);
    // the kernel maps block i to piece i and touches only that piece and partials[i].
    unsafe { l.launch(cfg) }?;
    let apply = be.function(FAMILY, names::GLIP_GROUP_NORM_APPLY_F16)?;
    let mut l = be.launch_builder(&apply);
    l.arg(&p)
        .arg(x)
        .arg(&*workspace)
        .arg(weight)
        .arg(bias)
        .arg(y);
    // SAFETY: as above; y has the same extent as x and weight/bias hold C floats. Same stream,
    // so the partials are complete before this launch reads them.
    unsafe { l.launch(cfg) }?;
    Ok(())
}
