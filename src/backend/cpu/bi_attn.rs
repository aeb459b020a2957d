//! CPU twin of kernels/bi_attn.cu: GLIP's bi-directional cross-attention
//! (BiMultiHeadAttention, `utils/fuse_helper.py:171-303`) per head, in f32.
//!
//! Layouts are token-major with heads side by side in the channel axis, exactly what the
//! projection GEMMs produce, so no transpose is needed: head `h` of `q` is the column block
//! `[h*d, (h+1)*d)` of q[B, N_img, heads*d].

use super::gemm::{gemm, Mat};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// GLIP's clamp on the attention logits (CLAMP_MIN_FOR_UNDERFLOW / CLAMP_MAX_FOR_OVERFLOW):
/// the one ±50000 of backend/ops.rs.
pub const CLAMP: f32 = crate::backend::ops::GLIP_CLAMP;
/// `masked_fill(mask == 0, -9e15)` on the 0/1 text mask; real tokens keep the value 1.
pub const TEXT_PAD_FILL: f32 = -9e15;
/// What GLIP adds to the logits of a real token (the unfilled 0/1 mask value).
pub const TEXT_REAL_ADD: f32 = 1.0;

/// Problem size of one bi-attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BiAttnShape {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Image positions over all pyramid levels.
    pub n_img: usize,
    /// Text tokens.
    pub n_txt: usize,
}

impl BiAttnShape {
    pub fn channels(&self) -> usize {
        self.heads * self.head_dim
    }
    pub fn img_len(&self) -> usize {
        self.batch * self.n_img * self.channels()
    }
    pub fn txt_len(&self) -> usize {
        self.batch * self.n_txt * self.channels()
    }
    /// Checks every buffer against this shape.
    pub fn check(
        &self,
        op: &'static str,
        q: usize,
        k_l: usize,
        v_l: usize,
        v_v: usize,
        mask: usize,
    ) -> Result<()> {
        if self.heads == 0 || self.head_dim == 0 || self.n_txt == 0 {
            return Err(Error::shape(op, format!("degenerate shape {self:?}")));
        }
        let (img, txt) = (self.img_len(), self.txt_len());
        let want = [
            ("q", q, img),
            ("k_l", k_l, txt),
            ("v_l", v_l, txt),
            ("v_v", v_v, img),
            ("mask", mask, self.batch * self.n_txt),
        ];
        for (name, got, need) in want {
            if got != need {
                return Err(Error::shape(
                    op,
                    format!("{name} has {got} elements, {need} needed for {self:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// Bi-directional cross-attention, both directions, all heads.
///
/// * q: [B, N_img, heads*d], already scaled by 1/sqrt(d) (GLIP scales v_proj's output)
/// * k_l, v_l: [B, T, heads*d] (text keys and text values)
/// * v_v: [B, N_img, heads*d] (image values)
/// * mask: [B, T], non-zero = real token
///
/// Returns (o_v [B, N_img, heads*d], o_t [B, T, heads*d]):
/// A = clamp(q·k_lᵀ, ±50000);
/// o_v = softmax_T(A + (1 | −9e15)) · v_l (image → text, pad keys masked as GLIP does);
/// o_t = softmax_N(clamp(Aᵀ − rowmax, ±50000)) · v_v (text → image, no mask).
pub fn bi_attn(
    s: &BiAttnShape,
    q: &[f32],
    k_l: &[f32],
    v_l: &[f32],
    v_v: &[f32],
    mask: &[i32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    s.check(
        "bi_attn",
        q.len(),
        k_l.len(),
        v_l.len(),
        v_v.len(),
        mask.len(),
    )?;
    let (n, t, d, hd) = (s.n_img, s.n_txt, s.head_dim, s.channels());
    let mut o_v = vec![0.0f32; s.img_len()];
    let mut o_t = vec![0.0f32; s.txt_len()];
    let mut a = vec![0.0f32; n * t];
    let mut e = vec![0.0f32; n * t];
    let mut tmp_v = vec![0.0f32; n * d];
    let mut tmp_t = vec![0.0f32; t * d];
    let bad = |what: &str| Error::shape("bi_attn", format!("gemm extents ({what})"));
    for b in 0..s.batch {
        let img0 = b * n * hd;
        let txt0 = b * t * hd;
        let m = &mask[b * t..(b + 1) * t];
        for h in 0..s.heads {
            let qh = &q[img0 + h * d..];
            let kh = &k_l[txt0 + h * d..];
            // A[n, t] = Q_h · K_hᵀ
            let q_view = Mat {
                data: qh,
                rs: hd,
                cs: 1,
            };
            let kt_view = Mat {
                data: kh,
                rs: 1,
                cs: hd,
            };
            if n > 0 && !gemm(n, t, d, q_view, kt_view, &mut a, 1.0, false) {
                return Err(bad("logits"));
            }
            a.par_iter_mut().for_each(|x| *x = x.clamp(-CLAMP, CLAMP));

            // Text → image: per text row (a column of A) max over all image positions.
            let mut colmax = vec![f32::NEG_INFINITY; t];
            for row in a.chunks(t) {
                for (cm, &x) in colmax.iter_mut().zip(row) {
                    *cm = cm.max(x);
                }
            }
            e.par_chunks_mut(t)
                .zip(a.par_chunks(t))
                .for_each(|(er, ar)| {
                    for j in 0..t {
                        er[j] = (ar[j] - colmax[j]).clamp(-CLAMP, CLAMP).exp();
                    }
                });
            let mut colsum = vec![0.0f32; t];
            for row in e.chunks(t) {
                for (cs, &x) in colsum.iter_mut().zip(row) {
                    *cs += x;
                }
            }
            // tmp_t[t, d] = Eᵀ · V_v,h, then divided by the row sums.
            let vv_view = Mat {
                data: &v_v[img0 + h * d..],
                rs: hd,
                cs: 1,
            };
            if n == 0 {
                tmp_t.fill(0.0);
            } else if !gemm(
                t,
                d,
                n,
                Mat {
                    data: &e,
                    rs: 1,
                    cs: t,
                },
                vv_view,
                &mut tmp_t,
                1.0,
                false,
            ) {
                return Err(bad("text->image values"));
            }
            for (j, row) in tmp_t.chunks(d).enumerate() {
                let inv = 1.0 / colsum[j];
                let dst = &mut o_t[txt0 + j * hd + h * d..txt0 + j * hd + (h + 1) * d];
                for (o, &x) in dst.iter_mut().zip(row) {
                    *o = x * inv;
                }
            }

            // Image → text: A + M then softmax over the tokens (in place in A).
            a.par_chunks_mut(t).for_each(|row| {
                for (x, &mk) in row.iter_mut().zip(m) {
                    *x += if mk != 0 {
                        TEXT_REAL_ADD
                    } else {
                        TEXT_PAD_FILL
                    };
                }
            });
            super::nn::softmax_rows(&mut a, t);
            let vl_view = Mat {
                data: &v_l[txt0 + h * d..],
                rs: hd,
                cs: 1,
            };
            if n > 0 && !gemm(n, d, t, Mat::rows(&a, t), vl_view, &mut tmp_v, 1.0, false) {
                return Err(bad("image->text values"));
            }
            o_v[img0..img0 + n * hd]
                .par_chunks_mut(hd)
                .zip(tmp_v.par_chunks(d))
                .for_each(|(dst, src)| {
                    dst[h * d..(h + 1) * d].copy_from_slice(src);
                });
        }
    }
    Ok((o_v, o_t))
}
