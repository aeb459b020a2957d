//! The op interface (backend/ops.rs) on the CPU: f32 arithmetic on host tensors (f16 inputs
//! upcast losslessly).

use super::gemm::{gemm, Mat};
use super::nn::{gelu, softmax_rows};
use super::{elementwise, nn, CpuBackend};
use crate::backend::ops::{shape, Backend, SelfAttention, BERT_MASK_FILL};
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, HostData, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// f32 values of a host tensor, borrowed when they already are f32.
fn values<'a>(t: &'a Tensor, op: &'static str) -> Result<Cow<'a, [f32]>> {
    match t.host()? {
        HostData::F32(v) => Ok(Cow::Borrowed(v)),
        HostData::F16(_) => Ok(Cow::Owned(t.to_f32_vec()?)),
        h => Err(Error::DType {
            op,
            expected: "f32 or f16",
            got: crate::tensor::host_dtype(h).name(),
        }),
    }
}

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        t.try_clone()
    }
    fn to_host(&self, t: &Tensor) -> Result<Tensor> {
        t.try_clone()
    }
    fn weight(&self, t: &Tensor) -> Result<Tensor> {
        match t.dtype() {
            DType::F32 | DType::F16 => t.to_f32(),
            _ => t.try_clone(),
        }
    }
    fn matmul(&self, a: &Tensor, b: &Tensor, b_transposed: bool) -> Result<Tensor> {
        let (m, k, n) = shape::matmul(a, b, b_transposed)?;
        let av = values(a, "matmul")?;
        let bv = values(b, "matmul")?;
        let bm = if b_transposed {
            Mat::transposed(&bv, k)
        } else {
            Mat::rows(&bv, n)
        };
        let mut c = vec![0.0f32; m * n];
        if !gemm(m, n, k, Mat::rows(&av, k), bm, &mut c, 1.0, false) {
            return Err(Error::shape("matmul", "gemm extents"));
        }
        Tensor::from_f32(&[m, n], c)
    }
    fn cast(&self, t: &Tensor, to: DType) -> Result<Tensor> {
        match (t.host()?, to) {
            (HostData::F32(v), DType::F16) => {
                Tensor::from_f16(t.shape(), elementwise::cast_f32_f16(v))
            }
            (HostData::F16(v), DType::F32) => {
                Tensor::from_f32(t.shape(), elementwise::cast_f16_f32(v))
            }
            (h, d) if crate::tensor::host_dtype(h) == d => t.try_clone(),
            (h, d) => Err(Error::Invalid(format!(
                "cast from {} to {} is not supported",
                crate::tensor::host_dtype(h).name(),
                d.name()
            ))),
        }
    }
    fn axpby(&self, alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor> {
        shape::same("axpby", a, b)?;
        match (a.host()?, b.host()?) {
            (HostData::F16(x), HostData::F16(y)) => {
                Tensor::from_f16(a.shape(), elementwise::axpby_f16(alpha, x, beta, y)?)
            }
            _ => {
                let (x, y) = (values(a, "axpby")?, values(b, "axpby")?);
                Tensor::from_f32(
                    a.shape(),
                    x.iter()
                        .zip(y.iter())
                        .map(|(p, q)| alpha * p + beta * q)
                        .collect(),
                )
            }
        }
    }
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let (rows, _, out, y_shape) = shape::linear(x, w, b)?;
        let bias = b.map(|b| values(b, "linear bias")).transpose()?;
        let y = nn::linear(
            &values(x, "linear")?,
            rows,
            &values(w, "linear weight")?,
            out,
            bias.as_deref(),
        )?;
        Tensor::from_f32(&y_shape, y)
    }
    fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
        let c = shape::layer_norm(x, w, b)?;
        let mut y = values(x, "layer_norm")?.into_owned();
        nn::layer_norm(
            &mut y,
            c,
            &values(w, "layer_norm")?,
            &values(b, "layer_norm")?,
            eps,
        )?;
        Tensor::from_f32(x.shape(), y)
    }
    fn clamp(&self, x: &Tensor, bound: f32) -> Result<Tensor> {
        let y = values(x, "clamp")?
            .iter()
            .map(|v| v.clamp(-bound, bound))
            .collect();
        Tensor::from_f32(x.shape(), y)
    }
    fn gelu(&self, x: &Tensor) -> Result<Tensor> {
        let y = values(x, "gelu")?.par_iter().map(|&v| gelu(v)).collect();
        Tensor::from_f32(x.shape(), y)
    }
    fn bert_embeddings(
        &self,
        ids: &Tensor,
        word: &Tensor,
        position: &Tensor,
        token_type0: &Tensor,
    ) -> Result<Tensor> {
        let (batch, t, h, vocab) = shape::bert_embeddings(ids, word, position, token_type0)?;
        let (word, position, tt) = (
            values(word, "bert_embeddings")?,
            values(position, "bert_embeddings")?,
            values(token_type0, "bert_embeddings")?,
        );
        let mut x = vec![0.0f32; batch * t * h];
        for (r, (row, &id)) in x.chunks_mut(h).zip(ids.i32s()?).enumerate() {
            let id = usize::try_from(id)
                .ok()
                .filter(|&i| i < vocab)
                .ok_or_else(|| {
                    Error::shape(
                        "bert_embeddings",
                        format!("token id {id} outside the vocabulary of {vocab}"),
                    )
                })?;
            let p = r % t;
            let wv = &word[id * h..(id + 1) * h];
            let pv = &position[p * h..(p + 1) * h];
            // HF order: (word + token_type) + position.
            for (((o, &a), &b), &c) in row.iter_mut().zip(wv).zip(tt.iter()).zip(pv) {
                *o = (a + b) + c;
            }
        }
        Tensor::from_f32(&[batch, t, h], x)
    }
    fn self_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        spec: SelfAttention,
    ) -> Result<Tensor> {
        let (batch, t, h, hd) = shape::self_attention(q, k, v, mask, spec.heads)?;
        let (q, k, v) = (
            values(q, "self_attention")?,
            values(k, "self_attention")?,
            values(v, "self_attention")?,
        );
        let mask = mask.i32s()?;
        let sqrt_hd = (hd as f32).sqrt();
        let mut ctx = vec![0.0f32; batch * t * h];
        let mut s = vec![0.0f32; t * t];
        let mut tmp = vec![0.0f32; t * hd];
        let bad = || Error::shape("self_attention", "gemm extents");
        for b in 0..batch {
            let base = b * t * h;
            let ext: Vec<f32> = mask[b * t..(b + 1) * t]
                .iter()
                .map(|&m| (1.0 - m as f32) * BERT_MASK_FILL)
                .collect();
            for head in 0..spec.heads {
                let off = base + head * hd;
                let qm = Mat {
                    data: &q[off..],
                    rs: h,
                    cs: 1,
                };
                let km = Mat {
                    data: &k[off..],
                    rs: 1,
                    cs: h,
                };
                if !gemm(t, t, hd, qm, km, &mut s, 1.0, false) {
                    return Err(bad());
                }
                for row in s.chunks_mut(t) {
                    for (x, &e) in row.iter_mut().zip(&ext) {
                        // HF divides after the product; GLIP then clamps before the mask.
                        let mut y = *x / sqrt_hd;
                        if let Some(c) = spec.clamp {
                            y = y.clamp(-c, c);
                        }
                        *x = y + e;
                    }
                }
                softmax_rows(&mut s, t);
                let vm = Mat {
                    data: &v[off..],
                    rs: h,
                    cs: 1,
                };
                if !gemm(t, hd, t, Mat::rows(&s, t), vm, &mut tmp, 1.0, false) {
                    return Err(bad());
                }
                for (j, src) in tmp.chunks(hd).enumerate() {
                    ctx[base + j * h + head * hd..base + j * h + (head + 1) * hd]
                        .copy_from_slice(src);
                }
            }
        }
        Tensor::from_f32(&[batch, t, h], ctx)
    }
    fn scale(&self, x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
        let y = values(x, "scale")?
            .iter()
            .map(|&v| alpha * v + beta)
            .collect();
        Tensor::from_f32(x.shape(), y)
    }
    fn add_channel_scaled(&self, a: &Tensor, g: &Tensor, b: &Tensor) -> Result<Tensor> {
        let c = shape::channel_scaled(a, g, b)?;
        let mut y = values(a, "add_channel_scaled")?.into_owned();
        let (g, b) = (
            values(g, "add_channel_scaled")?,
            values(b, "add_channel_scaled")?,
        );
        for (row, drow) in y.chunks_mut(c).zip(b.chunks(c)) {
            for ((x, &d), &gv) in row.iter_mut().zip(drow).zip(g.iter()) {
                *x += gv * d;
            }
        }
        Tensor::from_f32(a.shape(), y)
    }
    fn levels_to_tokens(&self, levels: &[&Tensor]) -> Result<Tensor> {
        let (b, c, n) = shape::levels(levels)?;
        let maps = levels
            .iter()
            .map(|t| values(t, "levels_to_tokens"))
            .collect::<Result<Vec<_>>>()?;
        let mut v = vec![0.0f32; b * n * c];
        for bi in 0..b {
            let mut pos = 0;
            for (t, data) in levels.iter().zip(&maps) {
                let hw = t.shape()[2] * t.shape()[3];
                let img = &data[bi * c * hw..(bi + 1) * c * hw];
                for ch in 0..c {
                    for (p, &x) in img[ch * hw..(ch + 1) * hw].iter().enumerate() {
                        v[(bi * n + pos + p) * c + ch] = x;
                    }
                }
                pos += hw;
            }
        }
        Tensor::from_f32(&[b, n, c], v)
    }
    fn tokens_to_levels(&self, x: &Tensor, sizes: &[(usize, usize)]) -> Result<Vec<Tensor>> {
        let (b, c) = shape::tokens(x, sizes)?;
        let n = x.shape()[1];
        let v = values(x, "tokens_to_levels")?;
        let mut out = Vec::with_capacity(sizes.len());
        let mut pos = 0;
        for &(h, w) in sizes {
            let hw = h * w;
            let mut m = vec![0.0f32; b * c * hw];
            for bi in 0..b {
                for p in 0..hw {
                    let src = &v[(bi * n + pos + p) * c..(bi * n + pos + p + 1) * c];
                    for (ch, &x) in src.iter().enumerate() {
                        m[(bi * c + ch) * hw + p] = x;
                    }
                }
            }
            pos += hw;
            out.push(Tensor::from_f32(&[b, c, h, w], m)?);
        }
        Ok(out)
    }
    fn bi_attn(
        &self,
        q: &Tensor,
        k: &Tensor,
        v_l: &Tensor,
        v_v: &Tensor,
        mask: &Tensor,
        heads: usize,
    ) -> Result<(Tensor, Tensor)> {
        let s = shape::bi_attn(q, k, v_l, v_v, mask, heads)?;
        let (o_v, o_t) = super::bi_attn::bi_attn(
            &s,
            &values(q, "bi_attn")?,
            &values(k, "bi_attn")?,
            &values(v_l, "bi_attn")?,
            &values(v_v, "bi_attn")?,
            mask.i32s()?,
        )?;
        Ok((
            Tensor::from_f32(q.shape(), o_v)?,
            Tensor::from_f32(k.shape(), o_t)?,
        ))
    }
}
