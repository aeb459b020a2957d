//! Launch wrappers for kernels/layout.cu: the gather and layout family (padding, NCHW ↔
//! rows, packing pyramid levels, Swin windows and patch merging, upsampling), f16 and f32.
//! Every wrapper checks that the largest index its map can compute lies inside the buffers
//! before the launch.

use super::memory::{DeviceBuffer, FloatElem};
use super::params::GlipLayoutParams;
use super::{check_len, launch_1d, to_i32, CudaBackend, InOut};
use crate::error::{Error, Result};
use crate::kernels::names;
use half::f16;

const FAMILY: &str = "layout";
const BLOCK: u32 = 256;

/// The kernels of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Pad,
    PlanesToRows,
    RowsToPlanes,
    CopyRows,
    WindowPartition,
    WindowMergeAdd,
    PatchMerge,
    UpsampleNearest,
    UpsampleBilinearAc,
    Im2col,
}

/// Element types the family is compiled for.
pub trait LayoutElem: FloatElem {
    #[doc(hidden)]
    fn kernel(k: KernelName) -> &'static str;
}

/// A kernel of the family, for [`LayoutElem::kernel`].
#[derive(Clone, Copy, Debug)]
pub struct KernelName(Kernel);

impl LayoutElem for f16 {
    fn kernel(k: KernelName) -> &'static str {
        match k.0 {
            Kernel::Pad => names::GLIP_LAYOUT_PAD_F16,
            Kernel::PlanesToRows => names::GLIP_LAYOUT_PLANES_TO_ROWS_F16,
            Kernel::RowsToPlanes => names::GLIP_LAYOUT_ROWS_TO_PLANES_F16,
            Kernel::CopyRows => names::GLIP_LAYOUT_COPY_ROWS_F16,
            Kernel::WindowPartition => names::GLIP_LAYOUT_WINDOW_PARTITION_F16,
            Kernel::WindowMergeAdd => names::GLIP_LAYOUT_WINDOW_MERGE_ADD_F16,
            Kernel::PatchMerge => names::GLIP_LAYOUT_PATCH_MERGE_F16,
            Kernel::UpsampleNearest => names::GLIP_LAYOUT_UPSAMPLE_NEAREST_F16,
            Kernel::UpsampleBilinearAc => names::GLIP_LAYOUT_UPSAMPLE_BILINEAR_AC_F16,
            Kernel::Im2col => names::GLIP_LAYOUT_IM2COL_F16,
        }
    }
}

impl LayoutElem for f32 {
    fn kernel(k: KernelName) -> &'static str {
        match k.0 {
            Kernel::Pad => names::GLIP_LAYOUT_PAD_F32,
            Kernel::PlanesToRows => names::GLIP_LAYOUT_PLANES_TO_ROWS_F32,
            Kernel::RowsToPlanes => names::GLIP_LAYOUT_ROWS_TO_PLANES_F32,
            Kernel::CopyRows => names::GLIP_LAYOUT_COPY_ROWS_F32,
            Kernel::WindowPartition => names::GLIP_LAYOUT_WINDOW_PARTITION_F32,
            Kernel::WindowMergeAdd => names::GLIP_LAYOUT_WINDOW_MERGE_ADD_F32,
            Kernel::PatchMerge => names::GLIP_LAYOUT_PATCH_MERGE_F32,
            Kernel::UpsampleNearest => names::GLIP_LAYOUT_UPSAMPLE_NEAREST_F32,
            Kernel::UpsampleBilinearAc => names::GLIP_LAYOUT_UPSAMPLE_BILINEAR_AC_F32,
            Kernel::Im2col => names::GLIP_LAYOUT_IM2COL_F32,
        }
    }
}

/// Sizes of one launch (the fields of `GlipLayoutParams`, host-side).
#[derive(Clone, Copy, Debug, Default)]
struct Sizes {
    n: usize,
    src_rows: usize,
    dst_rows: usize,
    row0: usize,
    batch: usize,
    channels: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    window: usize,
    shift: usize,
    scale_h: f32,
    scale_w: f32,
    ksize: usize,
    stride: usize,
    pad: usize,
    cols: usize,
}

impl Sizes {
    fn params(&self, op: &'static str) -> Result<GlipLayoutParams> {
        let i64_of = |what: &str, v: usize| {
            i64::try_from(v).map_err(|_| Error::shape(op, format!("{what} = {v} overflows")))
        };
        Ok(GlipLayoutParams {
            n: i64_of("elements", self.n)?,
            src_rows: i64_of("source rows", self.src_rows)?,
            dst_rows: i64_of("destination rows", self.dst_rows)?,
            row0: i64_of("first row", self.row0)?,
            batch: to_i32(op, "batch", self.batch)?,
            channels: to_i32(op, "channels", self.channels)?,
            h: to_i32(op, "h", self.h)?,
            w: to_i32(op, "w", self.w)?,
            oh: to_i32(op, "oh", self.oh)?,
            ow: to_i32(op, "ow", self.ow)?,
            window: to_i32(op, "window", self.window)?,
            shift: to_i32(op, "shift", self.shift)?,
            scale_h: self.scale_h,
            scale_w: self.scale_w,
            ksize: to_i32(op, "kernel size", self.ksize)?,
            stride: to_i32(op, "stride", self.stride)?,
            pad: to_i32(op, "pad", self.pad)?,
            cols: to_i32(op, "columns", self.cols)?,
        })
    }
}

/// One launch of `k` over `s.n` outputs (nothing to do for none), x (and `extra`, the
/// windows of a merge) read, y written; the callers checked every buffer's length.
fn launch<T: LayoutElem>(
    be: &CudaBackend,
    op: &'static str,
    k: Kernel,
    s: &Sizes,
    xy: InOut<'_, T>,
    extra: Option<&DeviceBuffer<T>>,
) -> Result<()> {
    if s.n == 0 {
        return Ok(());
    }
    let p = s.params(op)?;
    let f = be.function(FAMILY, T::kernel(KernelName(k)))?;
    let mut l = be.launch_builder(&f);
    l.arg(&p).input(&xy);
    if let Some(e) = extra {
        l.arg(e);
    }
    l.output(xy);
    // SAFETY: every caller checked x (and the windows) against the largest source index of
    // its map and y against the largest destination index, for these sizes.
    unsafe { l.launch(launch_1d(s.n, BLOCK)) }
}

/// Planes [P, h, w] zero-padded at the bottom and right to [P, oh, ow].
pub fn pad<T: LayoutElem>(
    be: &CudaBackend,
    x: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Result<()> {
    let op = "pad_to_multiple";
    if oh < h || ow < w {
        return Err(Error::shape(op, format!("{h}x{w} padded to {oh}x{ow}")));
    }
    check_len(op, "x", x.len(), planes * h * w)?;
    check_len(op, "y", y.len(), planes * oh * ow)?;
    let s = Sizes {
        n: planes * oh * ow,
        h,
        w,
        oh,
        ow,
        ..Sizes::default()
    };
    launch(be, op, Kernel::Pad, &s, InOut::Apart(x, y), None)
}

/// Planes [B, C, h·w] → rows [B, dst_rows, C] starting at `row0` (NCHW → NHWC, one pyramid
/// level into the packed token sequence).
pub fn planes_to_rows<T: LayoutElem>(
    be: &CudaBackend,
    x: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    dims: (usize, usize, usize, usize),
    dst_rows: usize,
    row0: usize,
) -> Result<()> {
    transpose(be, Kernel::PlanesToRows, x, y, dims, dst_rows, row0)
}

/// Rows [B, src_rows, C] from `row0` → planes [B, C, h·w] (NHWC → NCHW, one pyramid level
/// out of the packed token sequence).
pub fn rows_to_planes<T: LayoutElem>(
    be: &CudaBackend,
    x: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    dims: (usize, usize, usize, usize),
    src_rows: usize,
    row0: usize,
) -> Result<()> {
    transpose(be, Kernel::RowsToPlanes, x, y, dims, src_rows, row0)
}

/// Planes ↔ rows: `rows` is the packed side's rows per image, h·w of them from `row0`.
fn transpose<T: LayoutElem>(
    be: &CudaBackend,
    k: Kernel,
    x: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    (batch, c, h, w): (usize, usize, usize, usize),
    rows: usize,
    row0: usize,
) -> Result<()> {
    let to_rows = k == Kernel::PlanesToRows;
    let op = if to_rows {
        "planes_to_rows"
    } else {
        "rows_to_planes"
    };
    if row0 + h * w > rows {
        return Err(Error::shape(
            op,
            format!("rows {row0}..{} of {rows}", row0 + h * w),
        ));
    }
    let (planes, packed) = (batch * c * h * w, batch * rows * c);
    let (nx, ny) = if to_rows {
        (planes, packed)
    } else {
        (packed, planes)
    };
    check_len(op, "x", x.len(), nx)?;
    check_len(op, "y", y.len(), ny)?;
    let s = Sizes {
        n: planes,
        src_rows: if to_rows { 0 } else { rows },
        dst_rows: if to_rows { rows } else { 0 },
        row0,
        batch,
        channels: c,
        h,
        w,
        ..Sizes::default()
    };
    launch(be, op, k, &s, InOut::Apart(x, y), None)
}

/// `rows` rows of C per image from [B, src_rows, C] (src_rows 0: image 0 for every image)
/// into [B, dst_rows, C] at `row0`: a copy (B 1), repeat_batch, one part of
/// concat_positions.
#[allow(clippy::too_many_arguments)]
pub fn copy_rows<T: LayoutElem>(
    be: &CudaBackend,
    x: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    (batch, rows, c): (usize, usize, usize),
    src_rows: usize,
    dst_rows: usize,
    row0: usize,
) -> Result<()> {
    let op = "copy_rows";
    if row0 + rows > dst_rows || (src_rows != 0 && src_rows < rows) {
        return Err(Error::shape(
            op,
            format!("{rows} rows from {src_rows} into rows {row0}.. of {dst_rows}"),
        ));
    }
    let src_images = if src_rows == 0 { 1 } else { batch };
    check_len(op, "x", x.len(), src_images * src_rows.max(rows) * c)?;
    check_len(op, "y", y.len(), batch * dst_rows * c)?;
    let s = Sizes {
        n: batch * rows * c,
        src_rows,
        dst_rows,
        row0,
        batch,
        channels: c,
        ..Sizes::default()
    };
    launch(be, op, Kernel::CopyRows, &s, InOut::Apart(x, y), None)
}

/// The sizes of a Swin window gather over tokens [B, h, w, C] (`n` output elements) on the
/// padded grid (Hp, Wp) of ops.rs's `WindowGrid`, with (Hp, Wp).
fn window_sizes(
    op: &'static str,
    (batch, h, w, c): (usize, usize, usize, usize),
    window: usize,
    shift: usize,
    n: impl FnOnce(usize, usize) -> usize,
) -> Result<(Sizes, usize, usize)> {
    if window == 0 || shift >= window {
        return Err(Error::shape(op, format!("window {window} shift {shift}")));
    }
    let g = crate::backend::ops::WindowGrid::new(h, w, window);
    let s = Sizes {
        n: n(g.hp, g.wp),
        batch,
        channels: c,
        h,
        w,
        oh: g.hp,
        ow: g.wp,
        window,
        shift,
        ..Sizes::default()
    };
    Ok((s, g.hp, g.wp))
}

/// Tokens [B, h, w, C] → windows [B·nW, M², C] (zero-padded grid, rolled by −shift).
pub fn window_partition<T: LayoutElem>(
    be: &CudaBackend,
    x: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    dims: (usize, usize, usize, usize),
    window: usize,
    shift: usize,
) -> Result<()> {
    let op = "window_partition";
    let (batch, h, w, c) = dims;
    let (s, hp, wp) = window_sizes(op, dims, window, shift, |hp, wp| batch * hp * wp * c)?;
    check_len(op, "x", x.len(), batch * h * w * c)?;
    check_len(op, "y", y.len(), batch * hp * wp * c)?;
    launch(
        be,
        op,
        Kernel::WindowPartition,
        &s,
        InOut::Apart(x, y),
        None,
    )
}

/// y = x + the windows [B·nW, M², C] rolled back and cropped, tokens [B, h, w, C].
pub fn window_merge_add<T: LayoutElem>(
    be: &CudaBackend,
    xy: InOut<'_, T>,
    windows: &DeviceBuffer<T>,
    dims: (usize, usize, usize, usize),
    window: usize,
    shift: usize,
) -> Result<()> {
    let op = "window_merge_add";
    let (batch, h, w, c) = dims;
    let (s, hp, wp) = window_sizes(op, dims, window, shift, |_, _| batch * h * w * c)?;
    let (lx, ly) = xy.lens();
    check_len(op, "x", lx, batch * h * w * c)?;
    check_len(op, "windows", windows.len(), batch * hp * wp * c)?;
    check_len(op, "y", ly, batch * h * w * c)?;
    launch(be, op, Kernel::WindowMergeAdd, &s, xy, Some(windows))
}

/// Swin's PatchMerging gather [B, h, w, C] → [B, ⌈h/2⌉, ⌈w/2⌉, 4C].
pub fn patch_merge<T: LayoutElem>(
    be: &CudaBackend,
    x: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    (batch, h, w, c): (usize, usize, usize, usize),
) -> Result<()> {
    let op = "patch_merge_gather";
    let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
    check_len(op, "x", x.len(), batch * h * w * c)?;
    check_len(op, "y", y.len(), batch * oh * ow * 4 * c)?;
    let s = Sizes {
        n: batch * oh * ow * 4 * c,
        batch,
        channels: c,
        h,
        w,
        oh,
        ow,
        ..Sizes::default()
    };
    launch(be, op, Kernel::PatchMerge, &s, InOut::Apart(x, y), None)
}

/// How [`upsample`] resamples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// `mode="nearest"`
    Nearest,
    /// `mode="bilinear", align_corners=True`
    BilinearAlignCorners,
}

/// Planes [P, h, w] → [P, oh, ow] (F.interpolate to an explicit size).
pub fn upsample<T: LayoutElem>(
    be: &CudaBackend,
    mode: Resample,
    x: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Result<()> {
    let op = "upsample";
    if h == 0 || w == 0 {
        return Err(Error::shape(op, "empty input"));
    }
    check_len(op, "x", x.len(), planes * h * w)?;
    check_len(op, "y", y.len(), planes * oh * ow)?;
    // The scales exactly as the CPU twins compute them (backend/cpu/ops.rs, nn.rs).
    let (k, scale_h, scale_w) = match mode {
        Resample::Nearest => (
            Kernel::UpsampleNearest,
            h as f32 / oh as f32,
            w as f32 / ow as f32,
        ),
        Resample::BilinearAlignCorners => {
            let ac = |i: usize, o: usize| {
                if o > 1 {
                    (i as f32 - 1.0) / (o as f32 - 1.0)
                } else {
                    0.0
                }
            };
            (Kernel::UpsampleBilinearAc, ac(h, oh), ac(w, ow))
        }
    };
    let s = Sizes {
        n: planes * oh * ow,
        h,
        w,
        oh,
        ow,
        scale_h,
        scale_w,
        ..Sizes::default()
    };
    launch(be, op, k, &s, InOut::Apart(x, y), None)
}

/// A k×k convolution's geometry on an NCHW input (PyTorch's output size rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeometry {
    /// (oh, ow), or an error for a kernel larger than the padded input or stride 0.
    pub fn out_hw(&self) -> Result<(usize, usize)> {
        let (hp, wp) = (self.h + 2 * self.pad, self.w + 2 * self.pad);
        if self.stride == 0 || self.k == 0 || hp < self.k || wp < self.k {
            return Err(Error::shape(
                "conv2d",
                format!(
                    "input {}x{} (pad {}) for kernel {} stride {}",
                    self.h, self.w, self.pad, self.k, self.stride
                ),
            ));
        }
        Ok((
            (hp - self.k) / self.stride + 1,
            (wp - self.k) / self.stride + 1,
        ))
    }
    /// cin·k² (the GEMM's reduction length).
    pub fn taps(&self) -> usize {
        self.cin * self.k * self.k
    }
    /// The column matrix's row width: taps rounded up to the GEMM's 16-byte rows.
    pub fn cols(&self) -> usize {
        self.taps().div_ceil(8) * 8
    }
}

/// x [B, cin, h, w] → the column matrix [B·oh·ow, g.cols()] (zero-padded columns).
pub fn im2col<T: LayoutElem>(
    be: &CudaBackend,
    x: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    g: &ConvGeometry,
) -> Result<()> {
    let op = "im2col";
    let (oh, ow) = g.out_hw()?;
    let rows = g.batch * oh * ow;
    check_len(op, "x", x.len(), g.batch * g.cin * g.h * g.w)?;
    check_len(op, "y", y.len(), rows * g.cols())?;
    let s = Sizes {
        n: rows * g.cols(),
        batch: g.batch,
        channels: g.cin,
        h: g.h,
        w: g.w,
        oh,
        ow,
        ksize: g.k,
        stride: g.stride,
        pad: g.pad,
        cols: g.cols(),
        ..Sizes::default()
    };
    launch(be, op, Kernel::Im2col, &s, InOut::Apart(x, y), None)
}

/// BERT embeddings: ids [rows] i32 (every id < vocab, checked by the caller against the
/// table), word [vocab, H] and position [≥ T, H] f16, token type 0 [H] f32 → y [rows, H] f16
/// with position `row % tokens`.
#[allow(clippy::too_many_arguments)]
pub fn embed_f16(
    be: &CudaBackend,
    ids: &DeviceBuffer<i32>,
    word: &DeviceBuffer<f16>,
    position: &DeviceBuffer<f16>,
    token_type0: &DeviceBuffer<f32>,
    y: &mut DeviceBuffer<f16>,
    (rows, tokens, hidden, vocab): (usize, usize, usize, usize),
) -> Result<()> {
    let op = "bert_embeddings";
    check_len(op, "ids", ids.len(), rows)?;
    check_len(op, "word", word.len(), vocab * hidden)?;
    check_len(op, "position", position.len(), tokens * hidden)?;
    check_len(op, "token_type", token_type0.len(), hidden)?;
    check_len(op, "y", y.len(), rows * hidden)?;
    let n = rows * hidden;
    if n == 0 {
        return Ok(());
    }
    let p = Sizes {
        n,
        channels: hidden,
        h: tokens,
        ..Sizes::default()
    }
    .params(op)?;
    let f = be.function(FAMILY, names::GLIP_LAYOUT_EMBED_F16)?;
    let mut l = be.launch_builder(&f);
    l.arg(&p)
        .arg(ids)
        .arg(word)
        .arg(position)
        .arg(token_type0)
        .arg(y);
    // SAFETY: ids < vocab (the caller's check), so word rows stay in [0, vocab); positions
    // row % tokens < tokens; every other index is below the checked lengths.
    unsafe { l.launch(launch_1d(n, BLOCK)) }
}
