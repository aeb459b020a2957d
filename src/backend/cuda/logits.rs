//! Launch wrappers for kernels/logits.cu: text projection, dot-product logits with the fused
//! epilogue (÷ exp(log_scale), + token bias, ±50000 clamp), phrase MEAN of token sigmoids.

use super::params::GlipLogitsParams;
use super::DeviceBuffer;
use super::{check_len, launch_1d, to_i32, CudaBackend};
use crate::backend::cpu::logits::PositiveMapCsr;
use crate::error::{Error, Result};
use crate::kernels::names;
use cudarc::driver::LaunchConfig;
use half::f16;

const FAMILY: &str = "logits";
/// The text-projection kernel keeps one normalised row in shared memory.
pub const MAX_LANG_DIM: usize = 1024;

/// proj[rows, dim] = Linear(E / 2), tok_bias[rows] = E · bias_lang + bias0, with
/// E = hidden / max(‖hidden‖, 1e-12) per row; `rows` = batch · tokens.
/// hidden [rows, lang_dim] f16, w [dim, lang_dim] f16, bias [dim] f32, bias_lang [lang_dim] f32.
#[allow(clippy::too_many_arguments)]
pub fn text_proj_f16(
    be: &CudaBackend,
    rows: usize,
    lang_dim: usize,
    dim: usize,
    hidden: &DeviceBuffer<f16>,
    w: &DeviceBuffer<f16>,
    bias: &DeviceBuffer<f32>,
    bias_lang: &DeviceBuffer<f32>,
    bias0: f32,
    proj: &mut DeviceBuffer<f32>,
    tok_bias: &mut DeviceBuffer<f32>,
) -> Result<()> {
    const OP: &str = "logits text_proj";
    if lang_dim == 0 || lang_dim > MAX_LANG_DIM {
        return Err(Error::shape(
            OP,
            format!("lang_dim {lang_dim} outside 1..={MAX_LANG_DIM}"),
        ));
    }
    check_len(OP, "hidden", hidden.len(), rows * lang_dim)?;
    check_len(OP, "weight", w.len(), dim * lang_dim)?;
    check_len(OP, "bias", bias.len(), dim)?;
    check_len(OP, "bias_lang", bias_lang.len(), lang_dim)?;
    check_len(OP, "proj", proj.len(), rows * dim)?;
    check_len(OP, "tok_bias", tok_bias.len(), rows)?;
    if rows == 0 {
        return Ok(());
    }
    let p = GlipLogitsParams {
        batch: 1,
        n_pos: 0,
        n_txt: to_i32(OP, "rows", rows)?,
        dim: to_i32(OP, "dim", dim)?,
        lang_dim: to_i32(OP, "lang_dim", lang_dim)?,
        bias0,
        eps: crate::backend::cpu::logits::NORMALIZE_EPS,
        scale: 1.0,
        ..Default::default()
    };
    let f = be.function(FAMILY, names::GLIP_LOGITS_TEXT_PROJ_F16)?;
    let cfg = LaunchConfig {
        grid_dim: (to_i32(OP, "rows", rows)? as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = be.launch_builder(&f);
    l.arg(&p)
        .arg(hidden)
        .arg(w)
        .arg(bias)
        .arg(bias_lang)
        .arg(proj)
        .arg(tok_bias);
    // SAFETY: block r reads hidden[r*lang_dim..), all of w, bias, bias_lang and writes
    // proj[r*dim..(r+1)*dim) and tok_bias[r] for r < rows; every extent was checked above and
    // lang_dim fits the kernel's shared row.
    unsafe { l.launch(cfg) }?;
    Ok(())
}

/// Shape of one [`dot`] launch.
#[derive(Clone, Copy, Debug)]
pub struct DotShape {
    pub batch: usize,
    /// Positions of this launch (one level, or all levels of a packed buffer).
    pub n_pos: usize,
    pub n_txt: usize,
    /// Joint embedding size (256).
    pub dim: usize,
    /// Visual features as [B, dim, n_pos] (an NCHW level) instead of [B, n_pos, dim].
    pub channel_major: bool,
    /// Rows per image of the output buffer, and the first row this launch writes (so the
    /// levels can land in one packed [B, N, T] buffer).
    pub out_rows: usize,
    pub out_row0: usize,
}

/// out[b, out_row0 + p, t] = clamp((visual[b, p] · proj[b, t]) / scale + tok_bias[b, t], ±clamp).
/// visual f16, proj [B, T, dim] f32, tok_bias [B, T] f32, out [B, out_rows, T] f32.
#[allow(clippy::too_many_arguments)]
pub fn dot<V: DotVisual>(
    be: &CudaBackend,
    s: &DotShape,
    visual: &DeviceBuffer<V>,
    proj: &DeviceBuffer<f32>,
    tok_bias: &DeviceBuffer<f32>,
    scale: f32,
    clamp: f32,
    out: &mut DeviceBuffer<f32>,
) -> Result<()> {
    const OP: &str = "logits dot";
    if s.out_row0 + s.n_pos > s.out_rows {
        return Err(Error::shape(
            OP,
            format!(
                "rows {}..{} outside {} output rows",
                s.out_row0,
                s.out_row0 + s.n_pos,
                s.out_rows
            ),
        ));
    }
    check_len(OP, "visual", visual.len(), s.batch * s.n_pos * s.dim)?;
    check_len(OP, "proj", proj.len(), s.batch * s.n_txt * s.dim)?;
    check_len(OP, "tok_bias", tok_bias.len(), s.batch * s.n_txt)?;
    check_len(OP, "out", out.len(), s.batch * s.out_rows * s.n_txt)?;
    to_i32(OP, "size", s.batch * s.out_rows * s.n_txt)?;
    if s.batch == 0 || s.n_pos == 0 || s.n_txt == 0 {
        return Ok(());
    }
    let p = GlipLogitsParams {
        batch: to_i32(OP, "size", s.batch)?,
        n_pos: to_i32(OP, "size", s.n_pos)?,
        n_txt: to_i32(OP, "size", s.n_txt)?,
        dim: to_i32(OP, "size", s.dim)?,
        channel_major: s.channel_major as i32,
        out_rows: to_i32(OP, "size", s.out_rows)?,
        out_row0: to_i32(OP, "size", s.out_row0)?,
        scale,
        clamp,
        ..Default::default()
    };
    let cfg = dot_config(OP, s.n_pos.div_ceil(64), s)?;
    let f = be.function(FAMILY, V::DOT_KERNEL)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(visual).arg(proj).arg(tok_bias).arg(out);
    // SAFETY: the kernel reads visual[..batch*n_pos*dim), proj[..batch*n_txt*dim),
    // tok_bias[..batch*n_txt) and writes rows out_row0..out_row0+n_pos of each image's
    // [out_rows, n_txt] block, all guarded by bounds checks against the params checked above.
    unsafe { l.launch(cfg) }?;
    Ok(())
}

/// The dot kernels' launch: `tiles` 64-position tiles × 64-token tiles × images, 256 threads.
fn dot_config(op: &'static str, tiles: usize, s: &DotShape) -> Result<LaunchConfig> {
    let grid = (
        to_i32(op, "tiles", tiles)? as u32,
        s.n_txt.div_ceil(64) as u32,
        s.batch as u32,
    );
    if grid.1 > 65_535 || grid.2 > 65_535 {
        return Err(Error::shape(op, format!("grid {grid:?} too large")));
    }
    Ok(LaunchConfig {
        grid_dim: grid,
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Levels one grouped dot-product launch takes (the parameter block's array).
pub const MAX_DOT_LEVELS: usize = 8;

/// One level of [`dot_levels`]: its visual features [B, dim, n_pos] (NCHW) and its logits
/// [B, n_pos, T].
pub struct DotLevel<'a, V> {
    pub visual: &'a DeviceBuffer<V>,
    pub out: &'a mut DeviceBuffer<f32>,
    pub n_pos: usize,
}

/// [`dot`] of every level in one grouped launch (channel-major visual features; each level
/// writes its own [B, n_pos, T] buffer). `s.n_pos`, `out_rows`, `out_row0` are ignored.
#[allow(clippy::too_many_arguments)]
pub fn dot_levels<V: DotVisual>(
    be: &CudaBackend,
    s: &DotShape,
    levels: &mut [DotLevel<'_, V>],
    proj: &DeviceBuffer<f32>,
    tok_bias: &DeviceBuffer<f32>,
    scale: f32,
    clamp: f32,
) -> Result<()> {
    const OP: &str = "logits dot_levels";
    if levels.is_empty() || levels.len() > MAX_DOT_LEVELS {
        return Err(Error::shape(
            OP,
            format!("{} levels (1..={MAX_DOT_LEVELS})", levels.len()),
        ));
    }
    check_len(OP, "proj", proj.len(), s.batch * s.n_txt * s.dim)?;
    check_len(OP, "tok_bias", tok_bias.len(), s.batch * s.n_txt)?;
    if s.batch == 0 || s.n_txt == 0 {
        return Ok(());
    }
    let mut p = GlipLogitsParams {
        batch: to_i32(OP, "size", s.batch)?,
        n_txt: to_i32(OP, "size", s.n_txt)?,
        dim: to_i32(OP, "size", s.dim)?,
        channel_major: 1,
        num_levels: levels.len() as i32,
        scale,
        clamp,
        ..Default::default()
    };
    let mut tiles = 0usize;
    for (i, l) in levels.iter().enumerate() {
        let what = |x: &str| format!("level {i} {x}");
        check_len(
            OP,
            &what("visual"),
            l.visual.len(),
            s.batch * l.n_pos * s.dim,
        )?;
        check_len(OP, &what("out"), l.out.len(), s.batch * l.n_pos * s.n_txt)?;
        to_i32(OP, "size", s.batch * l.n_pos * s.n_txt.max(s.dim))?;
        p.levels[i].visual = be.device_address(l.visual)?;
        p.levels[i].out = be.device_address(&*l.out)?;
        p.levels[i].n_pos = to_i32(OP, "positions", l.n_pos)?;
        p.levels[i].first_tile = to_i32(OP, "tiles", tiles)?;
        tiles += l.n_pos.div_ceil(64);
    }
    if tiles == 0 {
        return Ok(());
    }
    let cfg = dot_config(OP, tiles, s)?;
    let f = be.function(FAMILY, V::DOT_LEVELS_KERNEL)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(proj).arg(tok_bias);
    for lv in levels.iter_mut() {
        l.reaches(lv.visual);
        l.reaches_mut(&mut *lv.out);
    }
    // SAFETY: block x belongs to the level whose tiles cover it (first_tile ascending); it
    // reads that level's visual[..batch*n_pos*dim), proj[..batch*n_txt*dim),
    // tok_bias[..batch*n_txt) and writes rows of its tile in that level's [B, n_pos, T]
    // output, all guarded by n_pos / n_txt / dim, whose extents were checked above.
    unsafe { l.launch(cfg) }?;
    Ok(())
}

/// A positive map on the device: for every label column the entry owning it (−1 if none;
/// the last entry wins for a repeated label, as GLIP's loop overwrites), and the entries'
/// token ranges.
pub struct DevicePositiveMap {
    pub num_labels: usize,
    pub n_txt: usize,
    col_entry: DeviceBuffer<i32>,
    offsets: DeviceBuffer<i32>,
    tokens: DeviceBuffer<i32>,
}

impl DevicePositiveMap {
    pub fn upload(
        be: &CudaBackend,
        map: &PositiveMapCsr,
        num_labels: usize,
        n_txt: usize,
    ) -> Result<Self> {
        const OP: &str = "positive map";
        let mut col_entry = vec![-1i32; num_labels];
        for (i, &label) in map.labels.iter().enumerate() {
            let c = (label as usize).checked_sub(1).filter(|&c| c < num_labels);
            let c = c.ok_or_else(|| {
                Error::shape(OP, format!("label {label} outside 1..={num_labels}"))
            })?;
            col_entry[c] = to_i32(OP, "i", i)?;
        }
        // The kernel reads tokens[offsets[e]..offsets[e + 1]] unchecked: the ranges must be
        // ordered and inside `tokens` (the fields are public, so a map may be hand-built).
        let ranges_ok = map.offsets.windows(2).all(|w| w[0] <= w[1])
            && map.offsets.last().is_some_and(|&o| o <= map.tokens.len());
        if map.tokens.iter().any(|&t| t >= n_txt)
            || map.offsets.len() != map.labels.len() + 1
            || !ranges_ok
        {
            return Err(Error::shape(
                OP,
                format!("tokens beyond {n_txt} or malformed offsets"),
            ));
        }
        let offsets: Vec<i32> = map
            .offsets
            .iter()
            .map(|&o| to_i32(OP, "o", o))
            .collect::<Result<_>>()?;
        let mut tokens: Vec<i32> = map.tokens.iter().map(|&t| t as i32).collect();
        if tokens.is_empty() {
            tokens.push(0); // cudarc cannot allocate 0 elements portably; never read
        }
        Ok(DevicePositiveMap {
            num_labels,
            n_txt,
            col_entry: be.upload_i32(&col_entry)?,
            offsets: be.upload_i32(&offsets)?,
            tokens: be.upload_i32(&tokens)?,
        })
    }
}

/// scores[rows, num_labels] = per label column, the mean of sigmoid(logits[row, t]) over the
/// column's tokens (0 for columns of no label). logits [rows, n_txt] f32.
pub fn phrase_mean_f32(
    be: &CudaBackend,
    rows: usize,
    logits: &DeviceBuffer<f32>,
    map: &DevicePositiveMap,
    scores: &mut DeviceBuffer<f32>,
) -> Result<()> {
    const OP: &str = "logits phrase_mean";
    check_len(OP, "logits", logits.len(), rows * map.n_txt)?;
    check_len(OP, "scores", scores.len(), rows * map.num_labels)?;
    let p = GlipLogitsParams {
        batch: 1,
        n_pos: to_i32(OP, "rows", rows)?,
        n_txt: to_i32(OP, "size", map.n_txt)?,
        num_labels: to_i32(OP, "size", map.num_labels)?,
        ..Default::default()
    };
    let n = rows * map.num_labels;
    if n == 0 {
        return Ok(());
    }
    let f = be.function(FAMILY, names::GLIP_LOGITS_PHRASE_MEAN_F32)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p)
        .arg(logits)
        .arg(&map.col_entry)
        .arg(&map.offsets)
        .arg(&map.tokens)
        .arg(scores);
    // SAFETY: thread (r, c) reads logits row r at the map's tokens (< n_txt, checked when the
    // map was uploaded) and writes scores[r*num_labels + c]; both extents were checked.
    unsafe { l.launch(launch_1d(n, 256)) }?;
    Ok(())
}

/// The visual operand types of [`dot`]: f16 activations, or f32 features.
pub trait DotVisual: super::FloatElem {
    const DOT_KERNEL: &'static str;
    const DOT_LEVELS_KERNEL: &'static str;
}
impl DotVisual for f16 {
    const DOT_KERNEL: &'static str = names::GLIP_LOGITS_DOT_F16;
    const DOT_LEVELS_KERNEL: &'static str = names::GLIP_LOGITS_DOT_LEVELS_F16;
}
impl DotVisual for f32 {
    const DOT_KERNEL: &'static str = names::GLIP_LOGITS_DOT_F32;
    const DOT_LEVELS_KERNEL: &'static str = names::GLIP_LOGITS_DOT_LEVELS_F32;
}
