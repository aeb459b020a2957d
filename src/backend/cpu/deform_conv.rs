//! CPU twin of kernels/deform_conv.cu: modulated deformable convolution (DCNv2), 3x3 kernel,
//! padding 1, dilation 1, groups 1, one deformable group, NCHW, f32.
//!
//! Sampling follows torchvision's `deform_conv2d` / mmcv / GLIP's CUDA op exactly: for output
//! (oy, ox) and tap k = 3i + j, the point is (oy·s − 1 + i + Δy, ox·s − 1 + j + Δx) with
//! Δy = offset channel 2k and Δx = channel 2k + 1; the bilinear sample is 0 unless
//! −1 < y < H and −1 < x < W, and corners outside the map count as 0; the column value is the
//! sample times mask channel k.
//!
//! GLIP's coarser-level branch reads the current level's offset/mask buffer of each image as
//! if it were `[18, out_h, out_w]` (spec §3.5.3, §8.1), so offset and mask are addressed with
//! an explicit per-image stride rather than a shape.
//!
//! Method: the bilinear corner indices and weights (mask folded in) depend only on (tap,
//! position), so they are computed once and reused for every input channel; the deformable
//! im2col then feeds the crate's GEMM, in chunks of positions to bound the workspace.

use super::gemm::{gemm, Mat};
use crate::error::{Error, Result};
use rayon::prelude::*;

pub use crate::backend::ops::DEFORM_TAPS as TAPS;
const PAD: usize = 1;
/// Positions per im2col chunk: bounds the column buffer to cin·9·CHUNK floats.
const CHUNK: usize = 4096;

/// Geometry of one modulated deformable 3x3 convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeformConvShape {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    /// 1 or 2.
    pub stride: usize,
    /// Elements between image b and b+1 in the offset buffer. `18 * out_h * out_w` for a
    /// plain call; the real per-image size of the (larger) current level's buffer for GLIP's
    /// coarser-level branch.
    pub offset_batch_stride: usize,
    /// Same for the mask buffer (9 channels).
    pub mask_batch_stride: usize,
}

impl DeformConvShape {
    /// A plain call: offset [B, 18, out_h, out_w], mask [B, 9, out_h, out_w].
    pub fn new(
        batch: usize,
        in_channels: usize,
        out_channels: usize,
        in_h: usize,
        in_w: usize,
        stride: usize,
    ) -> Self {
        let mut s = DeformConvShape {
            batch,
            in_channels,
            out_channels,
            in_h,
            in_w,
            stride,
            offset_batch_stride: 0,
            mask_batch_stride: 0,
        };
        let np = s.out_h() * s.out_w();
        s.offset_batch_stride = 2 * TAPS * np;
        s.mask_batch_stride = TAPS * np;
        s
    }

    /// GLIP's coarser-level branch: offset/mask come from a level of `(src_h, src_w)` ([B, 18,
    /// src_h, src_w] and [B, 9, src_h, src_w]) and are read as if they had the output's size.
    pub fn with_offset_source(mut self, src_h: usize, src_w: usize) -> Self {
        self.offset_batch_stride = 2 * TAPS * src_h * src_w;
        self.mask_batch_stride = TAPS * src_h * src_w;
        self
    }

    pub fn out_h(&self) -> usize {
        conv_out(self.in_h, self.stride)
    }
    pub fn out_w(&self) -> usize {
        conv_out(self.in_w, self.stride)
    }
    pub fn out_positions(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Element counts (x, offset, mask, weight, y) the buffers must hold at least.
    pub fn required_lens(&self) -> (usize, usize, usize, usize, usize) {
        let np = self.out_positions();
        let b1 = self.batch.saturating_sub(1);
        (
            self.batch * self.in_channels * self.in_h * self.in_w,
            b1 * self.offset_batch_stride + 2 * TAPS * np,
            b1 * self.mask_batch_stride + TAPS * np,
            self.out_channels * self.in_channels * TAPS,
            self.batch * self.out_channels * np,
        )
    }

    /// Checks the geometry itself (not buffer lengths).
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if self.batch == 0
            || self.in_channels == 0
            || self.out_channels == 0
            || self.in_h == 0
            || self.in_w == 0
        {
            return Err(Error::shape(op, format!("empty extent in {self:?}")));
        }
        if self.stride != 1 && self.stride != 2 {
            return Err(Error::shape(
                op,
                format!("stride {} (only 1 and 2 are supported)", self.stride),
            ));
        }
        let np = self.out_positions();
        if self.batch > 1
            && (self.offset_batch_stride < 2 * TAPS * np || self.mask_batch_stride < TAPS * np)
        {
            return Err(Error::shape(
                op,
                format!(
                    "per-image offset/mask strides {}/{} are smaller than one image's read extent {}/{}",
                    self.offset_batch_stride,
                    self.mask_batch_stride,
                    2 * TAPS * np,
                    TAPS * np
                ),
            ));
        }
        Ok(())
    }
}

/// Output extent of a 3x3, pad 1 convolution.
pub fn conv_out(n: usize, stride: usize) -> usize {
    (n + 2 * PAD - 3) / stride.max(1) + 1
}

fn check_len(op: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got < want {
        return Err(Error::shape(
            op,
            format!("{what}: {got} elements, at least {want} needed"),
        ));
    }
    Ok(())
}

/// The four bilinear corners of one sampling point: flat indices into an [H, W] plane and
/// their weights times the mask. Corners outside the map get index 0 and weight 0.
#[derive(Clone, Copy, Default)]
struct Corners {
    idx: [u32; 4],
    w: [f32; 4],
}

/// torchvision's `bilinear_interpolate` rule, mask folded into the weights.
fn corners(h: usize, w: usize, y: f32, x: f32, mask: f32) -> Corners {
    let (hf, wf) = (h as f32, w as f32);
    if !(y > -1.0 && y < hf && x > -1.0 && x < wf) {
        return Corners::default();
    }
    let y0 = y.floor();
    let x0 = x.floor();
    let (ly, lx) = (y - y0, x - x0);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    let (y0, x0) = (y0 as i64, x0 as i64);
    let (y1, x1) = (y0 + 1, x0 + 1);
    let (hi, wi) = (h as i64, w as i64);
    let mut c = Corners::default();
    let pts = [
        (y0, x0, hy * hx),
        (y0, x1, hy * lx),
        (y1, x0, ly * hx),
        (y1, x1, ly * lx),
    ];
    for (n, (py, px, wt)) in pts.into_iter().enumerate() {
        if py >= 0 && px >= 0 && py < hi && px < wi {
            c.idx[n] = (py * wi + px) as u32;
            c.w[n] = wt * mask;
        }
    }
    c
}

/// Modulated deformable 3x3 convolution, f32.
///
/// * `x`: [B, cin, in_h, in_w]
/// * `offset`: image b at `b * offset_batch_stride`, read as [18, out_h, out_w] (2k = Δy, 2k+1 = Δx)
/// * `mask`: image b at `b * mask_batch_stride`, read as [9, out_h, out_w], already sigmoided
/// * `weight`: [cout, cin, 3, 3]; `bias`: [cout]
///
/// Returns y: [B, cout, out_h, out_w].
pub fn modulated_deform_conv3x3(
    s: &DeformConvShape,
    x: &[f32],
    offset: &[f32],
    mask: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    const OP: &str = "modulated_deform_conv3x3";
    s.validate(OP)?;
    let (lx, lo, lm, lw, ly) = s.required_lens();
    check_len(OP, "x", x.len(), lx)?;
    check_len(OP, "offset", offset.len(), lo)?;
    check_len(OP, "mask", mask.len(), lm)?;
    if weight.len() != lw {
        return Err(Error::shape(
            OP,
            format!(
                "weight has {} elements, [cout {}, cin {}, 3, 3] needs {lw}",
                weight.len(),
                s.out_channels,
                s.in_channels
            ),
        ));
    }
    if let Some(b) = bias {
        if b.len() != s.out_channels {
            return Err(Error::shape(
                OP,
                format!("bias has {} elements, cout is {}", b.len(), s.out_channels),
            ));
        }
    }
    let (cin, cout, h, w) = (s.in_channels, s.out_channels, s.in_h, s.in_w);
    let (oh, ow) = (s.out_h(), s.out_w());
    let np = oh * ow;
    let plane = h * w;
    let kk = cin * TAPS;
    let mut y = vec![0.0f32; ly];
    let chunk = CHUNK.min(np);
    let mut cols = vec![0.0f32; kk * chunk];
    let mut tmp = vec![0.0f32; cout * chunk];
    let mut coef = vec![Corners::default(); TAPS * chunk];
    for b in 0..s.batch {
        let xb = &x[b * cin * plane..(b + 1) * cin * plane];
        let ob = &offset[b * s.offset_batch_stride..];
        let mb = &mask[b * s.mask_batch_stride..];
        let yb = &mut y[b * cout * np..(b + 1) * cout * np];
        let mut p0 = 0;
        while p0 < np {
            let n = chunk.min(np - p0);
            // Sampling coefficients of every (tap, position) in the chunk.
            coef[..TAPS * n]
                .par_chunks_mut(n)
                .enumerate()
                .for_each(|(k, row)| {
                    let (i, j) = ((k / 3) as f32, (k % 3) as f32);
                    for (q, c) in row.iter_mut().enumerate() {
                        let p = p0 + q;
                        let (oy, ox) = (p / ow, p % ow);
                        let dy = ob[2 * k * np + p];
                        let dx = ob[(2 * k + 1) * np + p];
                        let m = mb[k * np + p];
                        let py = (oy * s.stride) as f32 - PAD as f32 + i + dy;
                        let px = (ox * s.stride) as f32 - PAD as f32 + j + dx;
                        *c = corners(h, w, py, px, m);
                    }
                });
            // Deformable im2col: cols[(c, k), q].
            let coef_ref = &coef;
            cols[..kk * n]
                .par_chunks_mut(n)
                .enumerate()
                .for_each(|(r, dst)| {
                    let (c, k) = (r / TAPS, r % TAPS);
                    let src = &xb[c * plane..(c + 1) * plane];
                    for (d, cf) in dst.iter_mut().zip(&coef_ref[k * n..(k + 1) * n]) {
                        let mut v = 0.0f32;
                        for t in 0..4 {
                            v += cf.w[t] * src[cf.idx[t] as usize];
                        }
                        *d = v;
                    }
                });
            if !gemm(
                cout,
                n,
                kk,
                Mat::rows(weight, kk),
                Mat::rows(&cols[..kk * n], n),
                &mut tmp[..cout * n],
                1.0,
                false,
            ) {
                return Err(Error::shape(OP, "gemm extents"));
            }
            for o in 0..cout {
                let bo = bias.map_or(0.0, |bb| bb[o]);
                let dst = &mut yb[o * np + p0..o * np + p0 + n];
                for (d, v) in dst.iter_mut().zip(&tmp[o * n..(o + 1) * n]) {
                    *d = v + bo;
                }
            }
            p0 += n;
        }
    }
    Ok(y)
}

/// Direct (slow, obviously correct) evaluation of the same function, for tests.
pub fn modulated_deform_conv3x3_naive(
    s: &DeformConvShape,
    x: &[f32],
    offset: &[f32],
    mask: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    const OP: &str = "modulated_deform_conv3x3_naive";
    s.validate(OP)?;
    let (lx, lo, lm, lw, ly) = s.required_lens();
    check_len(OP, "x", x.len(), lx)?;
    check_len(OP, "offset", offset.len(), lo)?;
    check_len(OP, "mask", mask.len(), lm)?;
    check_len(OP, "weight", weight.len(), lw)?;
    let (cin, cout, h, w) = (s.in_channels, s.out_channels, s.in_h as i64, s.in_w as i64);
    let (oh, ow) = (s.out_h(), s.out_w());
    let np = oh * ow;
    let mut y = vec![0.0f32; ly];
    let at = |b: usize, c: usize, yy: i64, xx: i64| -> f32 {
        if yy < 0 || xx < 0 || yy >= h || xx >= w {
            0.0
        } else {
            x[((b * cin + c) as i64 * h * w + yy * w + xx) as usize]
        }
    };
    for b in 0..s.batch {
        for o in 0..cout {
            for p in 0..np {
                let (oy, ox) = (p / ow, p % ow);
                let mut acc = bias.map_or(0.0, |bb| bb[o]) as f64;
                for k in 0..TAPS {
                    let dy = offset[b * s.offset_batch_stride + 2 * k * np + p];
                    let dx = offset[b * s.offset_batch_stride + (2 * k + 1) * np + p];
                    let m = mask[b * s.mask_batch_stride + k * np + p];
                    let py = (oy * s.stride) as f32 - 1.0 + (k / 3) as f32 + dy;
                    let px = (ox * s.stride) as f32 - 1.0 + (k % 3) as f32 + dx;
                    if !(py > -1.0 && py < h as f32 && px > -1.0 && px < w as f32) {
                        continue;
                    }
                    let (y0, x0) = (py.floor() as i64, px.floor() as i64);
                    let (ly_, lx_) = (py - y0 as f32, px - x0 as f32);
                    for c in 0..cin {
                        let v = (1.0 - ly_) * (1.0 - lx_) * at(b, c, y0, x0)
                            + (1.0 - ly_) * lx_ * at(b, c, y0, x0 + 1)
                            + ly_ * (1.0 - lx_) * at(b, c, y0 + 1, x0)
                            + ly_ * lx_ * at(b, c, y0 + 1, x0 + 1);
                        acc += (weight[(o * cin + c) * TAPS + k] * v * m) as f64;
                    }
                }
                y[(b * cout + o) * np + p] = acc as f32;
            }
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, Rng};

    fn case(
        batch: usize,
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        stride: usize,
        src: Option<(usize, usize)>,
    ) {
        let mut s = DeformConvShape::new(batch, cin, cout, h, w, stride);
        if let Some((sh, sw)) = src {
            s = s.with_offset_source(sh, sw);
        }
        let mut rng = Rng::new(11);
        let (lx, lo, lm, lw, _) = s.required_lens();
        let x = rng.normal_vec(lx, 1.0);
        // Large offsets so that many points fall outside and on the -1 < p < size border.
        let off = rng.normal_vec(lo, 3.0);
        let m = rng.uniform_vec(lm, 0.0, 1.0);
        let wt = rng.normal_vec(lw, 0.2);
        let b = rng.normal_vec(cout, 0.5);
        let got = modulated_deform_conv3x3(&s, &x, &off, &m, &wt, Some(&b)).expect("fast path");
        let want =
            modulated_deform_conv3x3_naive(&s, &x, &off, &m, &wt, Some(&b)).expect("naive path");
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-4, "max diff {d} for {s:?}");
    }

    #[test]
    fn matches_naive_stride1() {
        case(2, 5, 7, 6, 9, 1, None);
    }
    #[test]
    fn matches_naive_stride2() {
        case(2, 4, 3, 9, 8, 2, None);
    }
    #[test]
    fn matches_naive_offset_source() {
        case(2, 3, 4, 3, 5, 1, Some((6, 10)));
    }

    #[test]
    fn integer_offsets_shift_exactly() -> crate::Result<()> {
        // Offset (0, +1) on every tap with mask 1 equals a plain conv of the input shifted left.
        let s = DeformConvShape::new(1, 1, 1, 4, 5, 1);
        let x: Vec<f32> = (0..20).map(|v| v as f32).collect();
        let mut off = vec![0.0f32; 18 * 20];
        for k in 0..9 {
            off[(2 * k + 1) * 20..(2 * k + 2) * 20].fill(1.0);
        }
        let m = vec![1.0f32; 9 * 20];
        let mut wt = vec![0.0f32; 9];
        wt[4] = 1.0; // centre tap only: y(oy, ox) = x(oy, ox + 1), 0 past the right edge
        let y = modulated_deform_conv3x3(&s, &x, &off, &m, &wt, None)?;
        for oy in 0..4 {
            for ox in 0..5 {
                let want = if ox + 1 < 5 { x[oy * 5 + ox + 1] } else { 0.0 };
                assert_eq!(y[oy * 5 + ox], want);
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_short_offset() {
        let s = DeformConvShape::new(2, 1, 1, 4, 4, 1);
        let (lx, lo, lm, lw, _) = s.required_lens();
        let r = modulated_deform_conv3x3(
            &s,
            &vec![0.0; lx],
            &vec![0.0; lo - 1],
            &vec![0.0; lm],
            &vec![0.0; lw],
            None,
        );
        assert!(r.is_err());
    }
}
