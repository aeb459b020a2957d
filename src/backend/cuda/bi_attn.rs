//! Launch wrapper for kernels/bi_attn.cu (VLFuse's bi-directional cross-attention).

use super::params::GlipBiAttnParams;
use super::DeviceBuffer;
use super::{to_i32, CudaBackend};
use crate::backend::cpu::bi_attn::{BiAttnShape, CLAMP, TEXT_PAD_FILL};
use crate::error::{Error, Result};
use crate::kernels::names;
use cudarc::driver::LaunchConfig;
use half::f16;

const FAMILY: &str = "bi_attn";
/// The kernels run one thread per head channel.
pub const HEAD_DIM: usize = 256;
/// Query rows per block (BA_ROWS in the kernel).
const ROWS: usize = 16;
const BLOCK: u32 = HEAD_DIM as u32;

/// Image-axis chunks for the text → image direction: about 1024 positions each (22 at
/// GLIP-T's 22 400 positions), so the grid fills the GPU without a huge workspace.
pub fn default_img_splits(n_img: usize) -> usize {
    n_img.div_ceil(1024).clamp(1, 64)
}

/// f32 elements of the workspace for `img_splits` chunks:
/// (m, l: [B, heads, splits, T] each; acc: [B, heads, splits, T, 256]).
pub fn workspace_len(s: &BiAttnShape, img_splits: usize) -> usize {
    let rows = s.batch * s.heads * img_splits * s.n_txt;
    2 * rows + rows * HEAD_DIM
}

/// Caller-owned workspace for [`bi_attn_f16`]: the text->image partials (m, l, acc).
pub struct BiAttnWorkspace {
    pub img_splits: usize,
    pub m: DeviceBuffer<f32>,
    pub l: DeviceBuffer<f32>,
    pub acc: DeviceBuffer<f32>,
}

impl BiAttnWorkspace {
    pub fn new(be: &CudaBackend, s: &BiAttnShape, img_splits: usize) -> Result<Self> {
        let rows = s.batch * s.heads * img_splits * s.n_txt;
        Ok(BiAttnWorkspace {
            img_splits,
            m: be.alloc_scratch::<f32>(rows)?,
            l: be.alloc_scratch::<f32>(rows)?,
            acc: be.alloc_scratch::<f32>(rows * HEAD_DIM)?,
        })
    }
}

fn grid(x: usize, y: usize, z: usize) -> Result<LaunchConfig> {
    if z > 65_535 || y > 65_535 {
        return Err(Error::shape(
            "bi_attn_f16",
            format!("grid ({x}, {y}, {z}) exceeds the CUDA limits"),
        ));
    }
    Ok(LaunchConfig {
        grid_dim: (
            to_i32("bi_attn_f16", "grid x", x)? as u32,
            y as u32,
            z as u32,
        ),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Both attention directions (see `cpu::bi_attn::bi_attn` for the math and layouts):
/// q, v_v: [B, N_img, heads*256] f16; k_l, v_l: [B, T, heads*256] f16; mask: [B, T] i32;
/// o_v: [B, N_img, heads*256] f16; o_t: [B, T, heads*256] f16. Three launches on the
/// backend's stream (image → text; text → image partials; merge), no host sync.
#[allow(clippy::too_many_arguments)]
pub fn bi_attn_f16(
    be: &CudaBackend,
    s: &BiAttnShape,
    q: &DeviceBuffer<f16>,
    k_l: &DeviceBuffer<f16>,
    v_l: &DeviceBuffer<f16>,
    v_v: &DeviceBuffer<f16>,
    mask: &DeviceBuffer<i32>,
    ws: &mut BiAttnWorkspace,
    o_v: &mut DeviceBuffer<f16>,
    o_t: &mut DeviceBuffer<f16>,
) -> Result<()> {
    if s.head_dim != HEAD_DIM {
        return Err(Error::shape(
            "bi_attn_f16",
            format!("head_dim {} (the kernel needs {HEAD_DIM})", s.head_dim),
        ));
    }
    if s.n_img == 0 || s.n_txt == 0 || s.batch == 0 {
        return Err(Error::shape("bi_attn_f16", format!("empty problem {s:?}")));
    }
    let (img, txt) = (s.img_len(), s.txt_len());
    let bufs = [
        ("q", q.len(), img),
        ("v_v", v_v.len(), img),
        ("k_l", k_l.len(), txt),
        ("v_l", v_l.len(), txt),
        ("o_v", o_v.len(), img),
        ("o_t", o_t.len(), txt),
        ("mask", mask.len(), s.batch * s.n_txt),
    ];
    for (name, got, need) in bufs {
        if got < need {
            return Err(Error::shape(
                "bi_attn_f16",
                format!("{name} has {got} elements, {need} needed for {s:?}"),
            ));
        }
    }
    let splits = ws.img_splits;
    if splits == 0 || splits > s.n_img {
        return Err(Error::shape(
            "bi_attn_f16",
            format!("img_splits {splits} must be in 1..={}", s.n_img),
        ));
    }
    let rows = s.batch * s.heads * splits * s.n_txt;
    if ws.m.len() < rows || ws.l.len() < rows || ws.acc.len() < rows * HEAD_DIM {
        return Err(Error::shape(
            "bi_attn_f16",
            format!(
                "workspace has {} f32, {} needed",
                ws.m.len() + ws.l.len() + ws.acc.len(),
                workspace_len(s, splits)
            ),
        ));
    }
    let p = GlipBiAttnParams {
        batch: to_i32("bi_attn_f16", "batch", s.batch)?,
        heads: to_i32("bi_attn_f16", "heads", s.heads)?,
        head_dim: to_i32("bi_attn_f16", "head_dim", s.head_dim)?,
        n_img: to_i32("bi_attn_f16", "n_img", s.n_img)?,
        n_txt: to_i32("bi_attn_f16", "n_txt", s.n_txt)?,
        img_splits: to_i32("bi_attn_f16", "img_splits", splits)?,
        clamp: CLAMP,
        text_pad_fill: TEXT_PAD_FILL,
    };
    let (ws_m, ws_l, acc) = (&mut ws.m, &mut ws.l, &mut ws.acc);

    let f_img = be.function(FAMILY, names::GLIP_BI_ATTN_IMG_F16)?;
    let mut l = be.launch_builder(&f_img);
    l.arg(&p).arg(q).arg(k_l).arg(v_l).arg(mask).arg(o_v);
    // SAFETY: the kernel reads q [B, N_img, C], k_l/v_l [B, T, C], mask [B, T] and writes
    // o_v [B, N_img, C], C = heads*256; every length was checked above.
    unsafe { l.launch(grid(s.n_img.div_ceil(ROWS), s.heads, s.batch)?) }?;

    let f_part = be.function(FAMILY, names::GLIP_BI_ATTN_TXT_PARTIAL_F16)?;
    let mut l = be.launch_builder(&f_part);
    l.arg(&p)
        .arg(q)
        .arg(k_l)
        .arg(v_v)
        .arg(&mut *ws_m)
        .arg(&mut *ws_l)
        .arg(&mut *acc);
    // SAFETY: reads q/v_v [B, N_img, C], k_l [B, T, C]; writes the m, l ([B, heads, splits, T])
    // and acc ([B, heads, splits, T, 256]) views, whose sizes were checked (workspace_len).
    unsafe { l.launch(grid(s.n_txt.div_ceil(ROWS), s.heads, s.batch * splits)?) }?;

    let f_merge = be.function(FAMILY, names::GLIP_BI_ATTN_TXT_MERGE_F16)?;
    let mut l = be.launch_builder(&f_merge);
    l.arg(&p).arg(&*ws_m).arg(&*ws_l).arg(&*acc).arg(o_t);
    // SAFETY: reads the workspace views written above, writes o_t [B, T, C] (length checked).
    unsafe { l.launch(grid(s.n_txt, s.heads, s.batch)?) }?;
    Ok(())
}
