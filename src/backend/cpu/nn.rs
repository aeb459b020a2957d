//! CPU glue ops in f32 used by the model: linear, conv2d (im2col + GEMM), layer norm,
//! softmax, activations, resampling. Layouts: NCHW for maps, row-major [rows, C] for tokens.

use super::gemm::{gemm, Mat};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// y[rows, out] = x[rows, in] · w[out, in]ᵀ + b[out] (PyTorch Linear layout).
pub fn linear(
    x: &[f32],
    rows: usize,
    w: &[f32],
    out: usize,
    b: Option<&[f32]>,
) -> Result<Vec<f32>> {
    if out == 0 || !w.len().is_multiple_of(out) {
        return Err(Error::shape(
            "linear",
            format!("weight len {} not divisible by out {out}", w.len()),
        ));
    }
    let inp = w.len() / out;
    if x.len() != rows * inp {
        return Err(Error::shape(
            "linear",
            format!("x len {} != rows {rows} * in {inp}", x.len()),
        ));
    }
    let mut y = vec![0.0f32; rows * out];
    if let Some(b) = b {
        if b.len() != out {
            return Err(Error::shape(
                "linear",
                format!("bias len {} != out {out}", b.len()),
            ));
        }
        for r in y.chunks_mut(out) {
            r.copy_from_slice(b);
        }
    }
    if !gemm(
        rows,
        out,
        inp,
        Mat::rows(x, inp),
        Mat::transposed(w, inp),
        &mut y,
        1.0,
        b.is_some(),
    ) {
        return Err(Error::shape("linear", "gemm extents"));
    }
    Ok(y)
}

/// 2-D convolution, groups = 1, square kernel `k`, NCHW. w: [cout, cin, k, k].
/// Returns (y, oh, ow).
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    n: usize,
    cin: usize,
    h: usize,
    w_: usize,
    weight: &[f32],
    cout: usize,
    k: usize,
    bias: Option<&[f32]>,
    stride: usize,
    pad: usize,
) -> Result<(Vec<f32>, usize, usize)> {
    if x.len() != n * cin * h * w_ || weight.len() != cout * cin * k * k || stride == 0 {
        return Err(Error::shape(
            "conv2d",
            format!(
                "x {} (n {n} c {cin} h {h} w {w_}), weight {} (cout {cout} k {k})",
                x.len(),
                weight.len()
            ),
        ));
    }
    if h + 2 * pad < k || w_ + 2 * pad < k {
        return Err(Error::shape(
            "conv2d",
            format!("input {h}x{w_} smaller than kernel {k}"),
        ));
    }
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (w_ + 2 * pad - k) / stride + 1;
    let kk = cin * k * k;
    let npos = oh * ow;
    let mut y = vec![0.0f32; n * cout * npos];
    for b in 0..n {
        let xb = &x[b * cin * h * w_..(b + 1) * cin * h * w_];
        let yb = &mut y[b * cout * npos..(b + 1) * cout * npos];
        if let Some(bias) = bias {
            for (o, row) in yb.chunks_mut(npos).enumerate() {
                row.fill(bias[o]);
            }
        }
        if k == 1 && stride == 1 && pad == 0 {
            // 1x1: y[cout, hw] = W[cout, cin] · x[cin, hw]
            if !gemm(
                cout,
                npos,
                cin,
                Mat::rows(weight, cin),
                Mat::rows(xb, npos),
                yb,
                1.0,
                bias.is_some(),
            ) {
                return Err(Error::shape("conv2d", "gemm extents"));
            }
            continue;
        }
        // im2col: cols[(c, ky, kx), pos]
        let mut cols = vec![0.0f32; kk * npos];
        cols.par_chunks_mut(npos)
            .enumerate()
            .for_each(|(row, dst)| {
                let c = row / (k * k);
                let ky = (row / k) % k;
                let kx = row % k;
                let src = &xb[c * h * w_..(c + 1) * h * w_];
                for oy in 0..oh {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    let drow = &mut dst[oy * ow..(oy + 1) * ow];
                    if iy < 0 || iy >= h as isize {
                        drow.fill(0.0);
                        continue;
                    }
                    let srow = &src[iy as usize * w_..(iy as usize + 1) * w_];
                    for (ox, d) in drow.iter_mut().enumerate() {
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        *d = if ix < 0 || ix >= w_ as isize {
                            0.0
                        } else {
                            srow[ix as usize]
                        };
                    }
                }
            });
        if !gemm(
            cout,
            npos,
            kk,
            Mat::rows(weight, kk),
            Mat::rows(&cols, npos),
            yb,
            1.0,
            bias.is_some(),
        ) {
            return Err(Error::shape("conv2d", "gemm extents"));
        }
    }
    Ok((y, oh, ow))
}

/// LayerNorm over the last dimension `c` (biased variance), in place.
pub fn layer_norm(x: &mut [f32], c: usize, w: &[f32], b: &[f32], eps: f32) -> Result<()> {
    if c == 0 || !x.len().is_multiple_of(c) || w.len() != c || b.len() != c {
        return Err(Error::shape(
            "layer_norm",
            format!("x {} c {c} w {} b {}", x.len(), w.len(), b.len()),
        ));
    }
    x.par_chunks_mut(c).for_each(|row| {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            *v = ((*v as f64 - mean) * inv) as f32 * w[i] + b[i];
        }
    });
    Ok(())
}

/// Softmax over contiguous rows of length `n`, in place (max-subtracted, f32).
pub fn softmax_rows(x: &mut [f32], n: usize) {
    if n == 0 {
        return;
    }
    x.par_chunks_mut(n).for_each(|row| {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        let inv = 1.0 / s;
        for v in row.iter_mut() {
            *v *= inv;
        }
    });
}

/// Exact (erf) GELU, as nn.GELU / HF "gelu". Inlined into the caller's loop, which then
/// vectorises (see [`erf`]).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// h_sigmoid(x) = ReLU6(x + 3) / 6 (GLIP's vldyhead / dyrelu).
pub fn h_sigmoid(x: f32) -> f32 {
    (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// erf(x) for the exact GELU, within 1.5e-7 absolute of the true value (1.25e-7 measured
/// by the unit test below: two f32 spacings below 1), in f32 with no branch and no library
/// call, so that a loop over it vectorises: Swin-T alone calls GELU ~1.2e8 times per
/// 800×1344 frame, and the f64 evaluation with libm's `exp` it replaced took 4 % of a frame. Below |x| = 1 the Maclaurin series to x²¹
/// (truncation < 1.3e-9; the erfc form below loses up to 3.3e-7 to cancellation there), above
/// it the erfc Chebyshev fit of Numerical Recipes (§6.2, fractional error < 1.2e-7) with
/// [`exp_le0`] for its exponential.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let z2 = z * z;
    let series = z
        * (std::f32::consts::FRAC_2_SQRT_PI
            + z2 * (-0.376_126_4
                + z2 * (0.112_837_92
                    + z2 * (-0.026_866_17
                        + z2 * (5.223_977_6e-3
                            + z2 * (-8.548_327e-4
                                + z2 * (1.205_533_3e-4
                                    + z2 * (-1.492_565e-5
                                        + z2 * (1.646_211_4e-6
                                            + z2 * (-1.636_584_5e-7 + z2 * 1.480_719_3e-8))))))))));
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    let tail = 1.0 - t * exp_le0(-z2 + p);
    // Both are computed and one is kept: a select, not a branch, in the vectorised loop.
    (if z < 1.0 { series } else { tail }).copysign(x)
}

/// e^y for y ≤ ~0 (it is used with y ≤ 3e-8), relative error < 2e-7; e^-87 for any y below
/// -87 (where f32's normal range ends; erf then no longer sees it): y = n·ln 2 + r with |r| ≤ ln 2 / 2, the Cephes degree-6 polynomial
/// for e^r, and 2^n put into the exponent bits. Branch-free (see [`erf`]).
#[inline(always)]
fn exp_le0(y: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a library call.
    const ROUND: f32 = 12_582_912.0;
    let y = y.max(-87.0);
    let n = (y * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n is an integer in [-126, 0]: 2^n is a normal f32 with exponent field n + 127. Added
    // to 2^23 (spacing 1), n + 127 is the low bits of the sum's mantissa; shifted into the
    // exponent field, the sum's own exponent bits fall off the top. (An `as i32` cast would
    // saturate lane by lane and stop the loop from vectorising.)
    e * f32::from_bits((n + 8_388_735.0).to_bits() << 23)
}

/// Bilinear resize with align_corners=True (F.upsample_bilinear), one [h, w] plane.
pub fn upsample_bilinear_align_corners(
    x: &[f32],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let mut y = vec![0.0f32; oh * ow];
    let sy = if oh > 1 {
        (h as f32 - 1.0) / (oh as f32 - 1.0)
    } else {
        0.0
    };
    let sx = if ow > 1 {
        (w as f32 - 1.0) / (ow as f32 - 1.0)
    } else {
        0.0
    };
    for oy in 0..oh {
        let fy = oy as f32 * sy;
        let y0 = (fy.floor() as usize).min(h - 1);
        let y1 = (y0 + 1).min(h - 1);
        let ly = fy - y0 as f32;
        for ox in 0..ow {
            let fx = ox as f32 * sx;
            let x0 = (fx.floor() as usize).min(w - 1);
            let x1 = (x0 + 1).min(w - 1);
            let lx = fx - x0 as f32;
            let v00 = x[y0 * w + x0];
            let v01 = x[y0 * w + x1];
            let v10 = x[y1 * w + x0];
            let v11 = x[y1 * w + x1];
            y[oy * ow + ox] =
                (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11);
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_1_5e7_of_libm() {
        let mut worst = 0.0f64;
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf(x) as f64 - libm::erf(x as f64)).abs());
        }
        println!("max |erf - libm::erf| over [-10, 10] = {worst:e}");
        assert!(worst < 1.5e-7, "max |erf - libm::erf| = {worst:e}");
        assert_eq!(erf(-2.0), -erf(2.0));
        assert_eq!(erf(0.0), 0.0);
        for x in [9.0f32, 30.0, 1e30, f32::INFINITY] {
            assert_eq!((erf(x), erf(-x)), (1.0, -1.0), "erf(±{x})");
        }
        assert!(erf(f32::NAN).is_nan());
    }

    #[test]
    fn exp_le0_is_within_2e7_relative_of_libm() {
        let mut worst = 0.0f64;
        for i in 0..=870_000 {
            let y = -(i as f32) * 1e-4;
            let want = libm::exp(y as f64);
            worst = worst.max(((exp_le0(y) as f64 - want) / want).abs());
        }
        println!("max relative error of exp_le0 over [-87, 0] = {worst:e}");
        assert!(worst < 2e-7, "{worst:e}");
        // Far below the range: e^-87, not 0 through a broken exponent field, nor NaN.
        for y in [-87.0f32, -1000.0, f32::NEG_INFINITY] {
            let e = exp_le0(y);
            assert!(e > 1e-38 && e < 2e-38, "exp_le0({y}) = {e:e}");
        }
    }

    #[test]
    fn gelu_is_within_1_5e7_times_x_of_the_f64_formula() {
        // The error scale of 0.5·x·(1 + erf) with erf in f32: |x| times erf's (the sum with 1
        // keeps erf's absolute error; in the negative tail that is most of the value, as in
        // PyTorch's f32 GELU).
        let mut worst = 0.0f64;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            let xd = x as f64;
            let want = 0.5 * xd * (1.0 + libm::erf(xd / std::f64::consts::SQRT_2));
            worst = worst.max((gelu(x) as f64 - want).abs() / xd.abs().max(1.0));
        }
        println!("max |GELU - f64 GELU| / max(|x|, 1) = {worst:e}");
        assert!(worst < 1.5e-7, "{worst:e}");
    }

    #[test]
    fn conv2d_matches_direct_sum() -> crate::Result<()> {
        // 1 x 2 x 5 x 4 input, 3 outputs, k 3, stride 2, pad 1: compare with a direct loop.
        let (n, cin, h, w, cout, k, s, p) = (1, 2, 5, 4, 3, 3, 2, 1);
        let x: Vec<f32> = (0..n * cin * h * w)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let wt: Vec<f32> = (0..cout * cin * k * k)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.2)
            .collect();
        let b = [0.5f32, -0.25, 0.0];
        let (y, oh, ow) = conv2d(&x, n, cin, h, w, &wt, cout, k, Some(&b), s, p)?;
        for o in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[o];
                    for c in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                                    acc += wt[((o * cin + c) * k + ky) * k + kx]
                                        * x[(c * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                    }
                    assert!((y[(o * oh + oy) * ow + ox] - acc).abs() < 1e-5);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn linear_matches_direct_sum() -> crate::Result<()> {
        let x: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect(); // [2, 3]
        let w: Vec<f32> = (0..12).map(|i| (i % 5) as f32 - 2.0).collect(); // [4, 3]
        let b = [1.0f32, 2.0, 3.0, 4.0];
        let y = linear(&x, 2, &w, 4, Some(&b))?;
        for r in 0..2 {
            for o in 0..4 {
                let want: f32 = b[o] + (0..3).map(|i| x[r * 3 + i] * w[o * 3 + i]).sum::<f32>();
                assert!((y[r * 4 + o] - want).abs() < 1e-6);
            }
        }
        Ok(())
    }
}
