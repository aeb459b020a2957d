//! Launch wrappers for kernels/attention.cu: BERT self-attention and Swin window attention,
//! flash-style (online softmax): on tensor cores for head widths 16, 32 and 64 on sm_80+,
//! else one warp per (sequence, head, query).

use super::memory::DeviceBuffer;
use super::params::GlipAttnParams;
use super::{check_len, to_i32, CudaBackend};
use crate::backend::ops::{BERT_MASK_FILL, SWIN_SHIFT_MASK};
use crate::error::{Error, Result};
use crate::kernels::names;
use cudarc::driver::LaunchConfig;
use half::f16;

const FAMILY: &str = "attention";
/// Warps per block (AT_WARPS) and the largest head width (AT_MAX_DIM) of attention.cu.
const WARPS: usize = 4;
pub const MAX_HEAD_DIM: usize = 128;
const MAX_BLOCKS: usize = 65_535 * 8;
/// The tensor-core kernels' head widths and queries per block (AT_TC_ROWS).
const TC_HEAD_DIMS: [usize; 3] = [16, 32, 64];
const TC_ROWS: usize = 64;

/// The extents of one attention launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// BERT: the batch; Swin: B·nW windows.
    pub seqs: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn params(&self, op: &'static str, ld: usize, offs: [usize; 3]) -> Result<GlipAttnParams> {
        if self.head_dim == 0 || self.head_dim > MAX_HEAD_DIM || self.tokens == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "head width {} (the kernel takes 1..={MAX_HEAD_DIM}), {} tokens",
                    self.head_dim, self.tokens
                ),
            ));
        }
        Ok(GlipAttnParams {
            seqs: to_i32(op, "sequences", self.seqs)?,
            tokens: to_i32(op, "tokens", self.tokens)?,
            heads: to_i32(op, "heads", self.heads)?,
            head_dim: to_i32(op, "head width", self.head_dim)?,
            ld: to_i32(op, "row stride", ld)?,
            q_off: to_i32(op, "q offset", offs[0])?,
            k_off: to_i32(op, "k offset", offs[1])?,
            v_off: to_i32(op, "v offset", offs[2])?,
            out_ld: to_i32(op, "output width", self.width())?,
            ..Default::default()
        })
    }
    /// The tensor-core launch, when this shape and device take it: head width 16, 32 or 64
    /// (GLIP-T's BERT 64, Swin 32), sm_80+ (or the emulated device), grid within limits.
    fn tc_grid(&self, be: &CudaBackend) -> Option<LaunchConfig> {
        let sm80 = be.is_emulated() || be.compute_capability().is_ok_and(|(major, _)| major >= 8);
        let fits = self.heads <= 65_535 && self.seqs <= 65_535;
        (sm80 && fits && TC_HEAD_DIMS.contains(&self.head_dim)).then(|| LaunchConfig {
            grid_dim: (
                self.tokens.div_ceil(TC_ROWS) as u32,
                self.heads as u32,
                self.seqs as u32,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        })
    }
    fn grid(&self) -> LaunchConfig {
        let rows = self.seqs * self.heads * self.tokens;
        LaunchConfig {
            grid_dim: (rows.div_ceil(WARPS).clamp(1, MAX_BLOCKS) as u32, 1, 1),
            block_dim: ((WARPS * 32) as u32, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// BERT self-attention: q, k, v [seqs, T, heads·hd] f16, key mask [seqs, T] i32 → out.
/// `clamp` is GLIP's bound on the scaled scores (BertEncoderLayer), if any.
#[allow(clippy::too_many_arguments)]
pub fn self_attention_f16(
    be: &CudaBackend,
    s: &AttnShape,
    q: &DeviceBuffer<f16>,
    k: &DeviceBuffer<f16>,
    v: &DeviceBuffer<f16>,
    mask: &DeviceBuffer<i32>,
    clamp: Option<f32>,
    out: &mut DeviceBuffer<f16>,
) -> Result<()> {
    let op = "self_attention";
    let mut p = s.params(op, s.width(), [0, 0, 0])?;
    p.scale = (s.head_dim as f32).sqrt();
    p.clamp = clamp.unwrap_or(0.0);
    p.mask_fill = BERT_MASK_FILL;
    let n = s.seqs * s.tokens * s.width();
    for (what, len) in [
        ("q", q.len()),
        ("k", k.len()),
        ("v", v.len()),
        ("out", out.len()),
    ] {
        check_len(op, what, len, n)?;
    }
    check_len(op, "mask", mask.len(), s.seqs * s.tokens)?;
    if n == 0 {
        return Ok(());
    }
    let (name, cfg) = match s.tc_grid(be) {
        Some(cfg) => (names::GLIP_ATTENTION_SELF_TC_F16, cfg),
        None => (names::GLIP_ATTENTION_SELF_F16, s.grid()),
    };
    let f = be.function(FAMILY, name)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(q).arg(k).arg(v).arg(mask).arg(out);
    // SAFETY: q, k, v, out hold seqs·T rows of heads·hd, the mask seqs·T entries; both
    // kernels index rows < seqs·T (the tensor-core one zero-fills its tiles past T) and
    // columns < heads·hd (hd ≤ MAX_HEAD_DIM checked; the tensor-core one only for 16/32/64).
    unsafe { l.launch(cfg) }
}

/// Swin window attention: qkv [seqs, M², 3C] f16 → out [seqs, M², C], relative position bias
/// [heads, M², M²] f16, region ids [nW, M²] i32 for shifted blocks (`windows` = nW), q
/// scaled by hd^−½ before the product.
pub fn window_attention_f16(
    be: &CudaBackend,
    s: &AttnShape,
    qkv: &DeviceBuffer<f16>,
    bias: &DeviceBuffer<f16>,
    region_ids: Option<(&DeviceBuffer<i32>, usize)>,
    out: &mut DeviceBuffer<f16>,
) -> Result<()> {
    let op = "window_attention";
    let c = s.width();
    let mut p = s.params(op, 3 * c, [0, c, 2 * c])?;
    p.scale = (s.head_dim as f32).powf(-0.5);
    p.shift_mask = SWIN_SHIFT_MASK;
    let rows = s.seqs * s.tokens;
    check_len(op, "qkv", qkv.len(), rows * 3 * c)?;
    check_len(op, "out", out.len(), rows * c)?;
    check_len(op, "bias", bias.len(), s.heads * s.tokens * s.tokens)?;
    // Without a shift the ids are never read: any buffer stands in for the argument.
    let none;
    let ids = match region_ids {
        Some((ids, windows)) => {
            if windows == 0 || !s.seqs.is_multiple_of(windows) {
                return Err(Error::shape(
                    op,
                    format!("{} windows in groups of {windows}", s.seqs),
                ));
            }
            check_len(op, "region ids", ids.len(), windows * s.tokens)?;
            p.num_windows = to_i32(op, "windows", windows)?;
            ids
        }
        None => {
            none = be.alloc_scratch::<i32>(1)?;
            &none
        }
    };
    if rows == 0 {
        return Ok(());
    }
    let (name, cfg) = match s.tc_grid(be) {
        Some(cfg) => (names::GLIP_ATTENTION_WINDOW_TC_F16, cfg),
        None => (names::GLIP_ATTENTION_WINDOW_F16, s.grid()),
    };
    let f = be.function(FAMILY, name)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(qkv).arg(bias).arg(ids).arg(out);
    // SAFETY: qkv holds seqs·M² rows of 3C, out seqs·M² rows of C, the bias heads·M²·M²
    // (query rows past M² read row M² − 1); the ids (read only when num_windows > 0) nW·M²
    // with seqs a multiple of nW.
    unsafe { l.launch(cfg) }
}
