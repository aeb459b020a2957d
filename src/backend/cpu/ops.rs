//! The op interface (backend/ops.rs) on the CPU: f32 arithmetic on host tensors (f16 inputs
//! upcast losslessly).

use super::gemm::{gemm, Mat};
use super::nn::{gelu, softmax_rows};
use super::{elementwise, nn, CpuBackend};
use crate::backend::atss::{AtssConfig, Candidate, Level, PositiveMapCsr};
use crate::backend::ops::{
    shape, Backend, SelfAttention, WindowGrid, BERT_MASK_FILL, SWIN_SHIFT_MASK,
};
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

/// x as an owned f32 host tensor (f16 converted), to be updated in place.
fn owned_f32(x: Tensor) -> Result<Tensor> {
    match x.dtype() {
        DType::F32 => Ok(x),
        _ => x.to_f32(),
    }
}

/// f(v) for every element, in place, in parallel: chunks of 16 Ki values, each a plain loop
/// the compiler can vectorise (a branch-free `f` such as GELU's).
fn map_in_place(x: Tensor, f: impl Fn(f32) -> f32 + Sync) -> Result<Tensor> {
    let mut x = owned_f32(x)?;
    x.f32s_mut()?.par_chunks_mut(1 << 14).for_each(|c| {
        for v in c {
            *v = f(*v);
        }
    });
    Ok(x)
}

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn activation_dtype(&self) -> DType {
        DType::F32
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
    fn clamp(&self, x: Tensor, bound: f32) -> Result<Tensor> {
        map_in_place(x, |v| v.clamp(-bound, bound))
    }
    fn gelu(&self, x: Tensor) -> Result<Tensor> {
        map_in_place(x, gelu)
    }
    fn duplicate(&self, x: &Tensor) -> Result<Tensor> {
        x.try_clone()
    }
    fn repeat_batch(&self, x: &Tensor, times: usize) -> Result<Tensor> {
        let shape = shape::repeat_batch(x, times)?;
        let v = values(x, "repeat_batch")?;
        Tensor::from_f32(&shape, v.repeat(times))
    }
    fn add(&self, a: Tensor, b: &Tensor) -> Result<Tensor> {
        shape::same("add", &a, b)?;
        let mut a = owned_f32(a)?;
        let b = values(b, "add")?;
        a.f32s_mut()?
            .par_iter_mut()
            .zip(b.par_iter())
            .for_each(|(x, y)| *x += *y);
        Ok(a)
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
    fn scale(&self, x: Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
        map_in_place(x, |v| alpha * v + beta)
    }
    fn add_channel_scaled(&self, a: Tensor, g: &Tensor, b: &Tensor) -> Result<Tensor> {
        let c = shape::channel_scaled(&a, g, b)?;
        let mut a = owned_f32(a)?;
        let (g, b) = (
            values(g, "add_channel_scaled")?,
            values(b, "add_channel_scaled")?,
        );
        a.f32s_mut()?
            .par_chunks_mut(c)
            .zip(b.par_chunks(c))
            .for_each(|(row, drow)| {
                for ((x, &d), &gv) in row.iter_mut().zip(drow).zip(g.iter()) {
                    *x += gv * d;
                }
            });
        Ok(a)
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
    fn conv2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride: usize,
        pad: usize,
    ) -> Result<Tensor> {
        let (cout, k) = shape::conv2d(x, w, b)?;
        let (n, c, h, wd) = shape::nchw("conv2d", x)?;
        let bias = b.map(|b| values(b, "conv2d bias")).transpose()?;
        let (y, oh, ow) = nn::conv2d(
            &values(x, "conv2d")?,
            n,
            c,
            h,
            wd,
            &values(w, "conv2d weight")?,
            cout,
            k,
            bias.as_deref(),
            stride,
            pad,
        )?;
        Tensor::from_f32(&[n, cout, oh, ow], y)
    }
    fn upsample_nearest(&self, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
        let (n, c, h, w) = shape::nchw("upsample_nearest", x)?;
        if h == 0 || w == 0 {
            return Err(Error::shape("upsample_nearest", "empty input"));
        }
        // src = min(floor(dst · in/out), in − 1) with the scale in f32, as PyTorch does for
        // an explicit output size.
        let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
        let src_y: Vec<usize> = (0..oh)
            .map(|o| ((o as f32 * sy).floor() as usize).min(h - 1))
            .collect();
        let src_x: Vec<usize> = (0..ow)
            .map(|o| ((o as f32 * sx).floor() as usize).min(w - 1))
            .collect();
        let v = values(x, "upsample_nearest")?;
        let mut data = vec![0.0f32; n * c * oh * ow];
        for (plane, dst) in data.chunks_mut((oh * ow).max(1)).enumerate() {
            let src = &v[plane * h * w..(plane + 1) * h * w];
            for (oy, &iy) in src_y.iter().enumerate() {
                for (ox, &ix) in src_x.iter().enumerate() {
                    dst[oy * ow + ox] = src[iy * w + ix];
                }
            }
        }
        Tensor::from_f32(&[n, c, oh, ow], data)
    }
    fn upsample_bilinear_ac(&self, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
        let (n, c, h, w) = shape::nchw("upsample_bilinear_ac", x)?;
        let v = values(x, "upsample_bilinear_ac")?;
        let mut data = Vec::with_capacity(n * c * oh * ow);
        for plane in v.chunks((h * w).max(1)) {
            data.extend(nn::upsample_bilinear_align_corners(plane, h, w, oh, ow));
        }
        Tensor::from_f32(&[n, c, oh, ow], data)
    }
    fn relu(&self, x: Tensor) -> Result<Tensor> {
        map_in_place(x, |v| v.max(0.0))
    }
    fn h_sigmoid(&self, x: Tensor) -> Result<Tensor> {
        map_in_place(x, nn::h_sigmoid)
    }
    fn avg_pool(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = shape::nchw("avg_pool", x)?;
        let hw = h * w;
        if hw == 0 {
            return Err(Error::shape("avg_pool", "empty map"));
        }
        let y = values(x, "avg_pool")?
            .chunks(hw)
            .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32)
            .collect();
        Tensor::from_f32(&[n, c], y)
    }
    fn scale_images(&self, x: Tensor, a: &Tensor) -> Result<Tensor> {
        let n = shape::per_image("scale_images", &x, a)?;
        let per = x.numel() / n;
        let a = values(a, "scale_images")?;
        let mut x = owned_f32(x)?;
        for (img, &f) in x.f32s_mut()?.chunks_mut(per.max(1)).zip(a.iter()) {
            img.par_iter_mut().for_each(|v| *v *= f);
        }
        Ok(x)
    }
    fn split_offset_mask(&self, om: &Tensor) -> Result<(Tensor, Tensor)> {
        use super::deform_conv::TAPS;
        let (n, c, h, w) = shape::nchw("split_offset_mask", om)?;
        if c != 3 * TAPS {
            return Err(Error::shape(
                "split_offset_mask",
                format!("{c} channels, expected {}", 3 * TAPS),
            ));
        }
        let hw = h * w;
        let v = values(om, "split_offset_mask")?;
        let mut off = Vec::with_capacity(n * 2 * TAPS * hw);
        let mut mask = Vec::with_capacity(n * TAPS * hw);
        for img in v.chunks((3 * TAPS * hw).max(1)) {
            off.extend_from_slice(&img[..2 * TAPS * hw]);
            mask.extend(img[2 * TAPS * hw..].iter().map(|&v| nn::sigmoid(v)));
        }
        Ok((
            Tensor::from_f32(&[n, 2 * TAPS, h, w], off)?,
            Tensor::from_f32(&[n, TAPS, h, w], mask)?,
        ))
    }
    fn deform_conv3x3(
        &self,
        x: &Tensor,
        offset: &Tensor,
        mask: &Tensor,
        w: &Tensor,
        b: &Tensor,
        stride: usize,
        offset_src: (usize, usize),
    ) -> Result<Tensor> {
        use super::deform_conv::{modulated_deform_conv3x3, DeformConvShape};
        let (n, c, h, wd) = shape::nchw("deform_conv3x3", x)?;
        let [cout, ..] = w.dims::<4>("deform_conv3x3 weight")?;
        let s = DeformConvShape::new(n, c, cout, h, wd, stride)
            .with_offset_source(offset_src.0, offset_src.1);
        let y = modulated_deform_conv3x3(
            &s,
            &values(x, "deform_conv3x3")?,
            &values(offset, "deform_conv3x3 offset")?,
            &values(mask, "deform_conv3x3 mask")?,
            &values(w, "deform_conv3x3 weight")?,
            Some(&values(b, "deform_conv3x3 bias")?),
        )?;
        Tensor::from_f32(&[n, cout, s.out_h(), s.out_w()], y)
    }
    fn group_norm(
        &self,
        xs: &[&Tensor],
        w: &Tensor,
        b: &Tensor,
        groups: usize,
        eps: f32,
    ) -> Result<Vec<Tensor>> {
        use super::group_norm::{group_norm, GroupNormShape};
        let (n, c) = shape::group_norm(xs, w, b)?;
        let s = GroupNormShape {
            groups,
            eps,
            ..GroupNormShape::glip(n, c)
        };
        let (wv, bv) = (values(w, "group_norm")?, values(b, "group_norm")?);
        xs.iter()
            .map(|x| {
                let (_, _, h, wd) = shape::nchw("group_norm", x)?;
                let mut y = vec![0.0f32; x.numel()];
                group_norm(&s, h * wd, &values(x, "group_norm")?, &wv, &bv, &mut y)?;
                Tensor::from_f32(x.shape(), y)
            })
            .collect()
    }
    fn dyrelu_apply(&self, x: Tensor, z: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = shape::nchw("dyrelu_apply", &x)?;
        if z.shape() != [n, 4 * c] {
            return Err(Error::shape(
                "dyrelu_apply",
                format!("coefficients {:?} for {:?}", z.shape(), x.shape()),
            ));
        }
        let hw = (h * w).max(1);
        let z = values(z, "dyrelu_apply")?;
        let mut x = owned_f32(x)?;
        x.f32s_mut()?
            .par_chunks_mut(hw)
            .enumerate()
            .for_each(|(i, plane)| {
                let (b, ch) = (i / c, i % c);
                let zb = &z[b * 4 * c..(b + 1) * 4 * c];
                // Split order a1, b1, a2, b2 (dyrelu.py:88-95).
                let a1 = (zb[ch] - 0.5) * 2.0 + 1.0;
                let b1 = zb[c + ch] - 0.5;
                let a2 = (zb[2 * c + ch] - 0.5) * 2.0;
                let b2 = zb[3 * c + ch] - 0.5;
                for v in plane.iter_mut() {
                    *v = (*v * a1 + b1).max(*v * a2 + b2);
                }
            });
        Ok(x)
    }
    fn text_projection(
        &self,
        lang: &Tensor,
        w: &Tensor,
        b: &Tensor,
        bias_lang: &Tensor,
        bias0: f32,
    ) -> Result<(Tensor, Tensor)> {
        let (bt, t, _, dim) = shape::text_projection(lang, w, b, bias_lang)?;
        let (proj, tb) = super::logits::text_projection(
            &values(lang, "text_projection")?,
            bt * t,
            &values(w, "text_projection")?,
            &values(b, "text_projection")?,
            &values(bias_lang, "text_projection")?,
            bias0,
        )?;
        Ok((
            Tensor::from_f32(&[bt, t, dim], proj)?,
            Tensor::from_f32(&[bt, t], tb)?,
        ))
    }
    fn dot_logits(
        &self,
        vs: &[&Tensor],
        proj: &Tensor,
        tok_bias: &Tensor,
        scale: f32,
        clamp: f32,
    ) -> Result<Vec<Tensor>> {
        let (b, t, dim) = shape::dot_logits_levels(vs, proj, tok_bias)?;
        let (pv, tv) = (values(proj, "dot_logits")?, values(tok_bias, "dot_logits")?);
        vs.iter()
            .map(|v| {
                let hw = v.numel() / (b * dim).max(1);
                let y = super::logits::dot_logits(
                    &values(v, "dot_logits")?,
                    super::logits::VisualLayout::ChannelMajor,
                    &pv,
                    &tv,
                    b,
                    hw,
                    t,
                    dim,
                    scale,
                    clamp,
                )?;
                Tensor::from_f32(&[b, hw, t], y)
            })
            .collect()
    }
    fn concat_positions(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let (b, n, c) = shape::concat_positions(parts)?;
        let vals = parts
            .iter()
            .map(|t| values(t, "concat_positions"))
            .collect::<Result<Vec<_>>>()?;
        let mut v = Vec::with_capacity(b * n * c);
        for bi in 0..b {
            for (t, data) in parts.iter().zip(&vals) {
                let rows = t.shape()[1] * c;
                v.extend_from_slice(&data[bi * rows..(bi + 1) * rows]);
            }
        }
        Tensor::from_f32(&[b, n, c], v)
    }
    fn phrase_scores(
        &self,
        logits: &Tensor,
        map: &PositiveMapCsr,
        num_labels: usize,
    ) -> Result<Tensor> {
        let (b, n, t) = shape::phrase_scores(logits, map, num_labels)?;
        let v = super::logits::phrase_mean(logits.f32s()?, b * n, t, map, num_labels)?;
        Tensor::from_f32(&[b, n, num_labels], v)
    }
    fn atss_postprocess(
        &self,
        scores: &Tensor,
        centerness: &Tensor,
        bbox_reg: &Tensor,
        levels: &[Level],
        image_hw: &[(f32, f32)],
        cfg: &AtssConfig,
    ) -> Result<Vec<Vec<Candidate>>> {
        let (_, _, num_labels) = shape::atss(scores, centerness, bbox_reg, levels, image_hw)?;
        let inputs = super::nms::PackedInputs {
            scores: scores.f32s()?,
            centerness: centerness.f32s()?,
            bbox_reg: bbox_reg.f32s()?,
            num_labels,
            levels,
        };
        super::nms::postprocess(&inputs, image_hw, cfg)
    }
    fn pad_to_multiple(&self, x: &Tensor, m: usize) -> Result<Tensor> {
        let (n, c, h, w) = shape::nchw("pad_to_multiple", x)?;
        if m == 0 {
            return Err(Error::shape("pad_to_multiple", "multiple 0"));
        }
        let (hp, wp) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        if (hp, wp) == (h, w) {
            return Tensor::from_f32(x.shape(), values(x, "pad_to_multiple")?.into_owned());
        }
        let v = values(x, "pad_to_multiple")?;
        let mut y = vec![0.0f32; n * c * hp * wp];
        for plane in 0..n * c {
            for r in 0..h {
                y[(plane * hp + r) * wp..(plane * hp + r) * wp + w]
                    .copy_from_slice(&v[(plane * h + r) * w..(plane * h + r + 1) * w]);
            }
        }
        Tensor::from_f32(&[n, c, hp, wp], y)
    }
    fn nchw_to_nhwc(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = shape::nchw("nchw_to_nhwc", x)?;
        let v = values(x, "nchw_to_nhwc")?;
        let hw = h * w;
        let mut t = vec![0.0f32; n * hw * c];
        t.par_chunks_mut(c.max(1)).enumerate().for_each(|(i, row)| {
            let (b, p) = (i / hw.max(1), i % hw.max(1));
            for (ch, o) in row.iter_mut().enumerate() {
                *o = v[(b * c + ch) * hw + p];
            }
        });
        Tensor::from_f32(&[n, h, w, c], t)
    }
    fn nhwc_to_nchw(&self, x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = shape::nhwc("nhwc_to_nchw", x)?;
        let v = values(x, "nhwc_to_nchw")?;
        let hw = h * w;
        let mut y = vec![0.0f32; n * c * hw];
        y.par_chunks_mut(hw).enumerate().for_each(|(i, plane)| {
            let (b, ch) = (i / c, i % c);
            for (p, o) in plane.iter_mut().enumerate() {
                *o = v[(b * hw + p) * c + ch];
            }
        });
        Tensor::from_f32(&[n, c, h, w], y)
    }
    fn window_partition(&self, x: &Tensor, window: usize, shift: usize) -> Result<Tensor> {
        let (b, h, w, c) = shape::nhwc("window_partition", x)?;
        let g = WindowGrid::new(h, w, window);
        let (nw, mm) = (g.num_windows(), window * window);
        let v = values(x, "window_partition")?;
        // Padding is zeros after the LN (spec §8.14): unwritten slots stay 0.
        let mut win = vec![0.0f32; b * nw * mm * c];
        win.par_chunks_mut(mm * c)
            .enumerate()
            .for_each(|(wi, wbuf)| {
                let (img, wl) = (wi / nw, wi % nw);
                let base = img * h * w;
                for (t, dst) in wbuf.chunks_mut(c).enumerate() {
                    let (r, col) = g.source(wl, t, shift);
                    if r < h && col < w {
                        let s = (base + r * w + col) * c;
                        dst.copy_from_slice(&v[s..s + c]);
                    }
                }
            });
        Tensor::from_f32(&[b * nw, mm, c], win)
    }
    fn window_merge_add(
        &self,
        x: Tensor,
        windows: &Tensor,
        window: usize,
        shift: usize,
    ) -> Result<Tensor> {
        let (b, h, w, c) = shape::nhwc("window_merge_add", &x)?;
        let g = WindowGrid::new(h, w, window);
        let (nw, mm) = (g.num_windows(), window * window);
        if windows.shape() != [b * nw, mm, c] {
            return Err(Error::shape(
                "window_merge_add",
                format!("windows {:?} for tokens {:?}", windows.shape(), x.shape()),
            ));
        }
        let win = values(windows, "window_merge_add")?;
        let mut x = owned_f32(x)?;
        let y = x.f32s_mut()?;
        // Each valid token is the image of exactly one window slot (the roll is a
        // permutation of the padded grid): gather per token row, in parallel.
        y.par_chunks_mut(c).enumerate().for_each(|(i, row)| {
            let (img, p) = (i / (h * w), i % (h * w));
            let (r, col) = (p / w, p % w);
            // Inverse of WindowGrid::source: shifted position of (r, col).
            let rs = (r + g.hp - shift % g.hp) % g.hp;
            let cs = (col + g.wp - shift % g.wp) % g.wp;
            let nww = g.wp / window;
            let wl = (rs / window) * nww + cs / window;
            let t = (rs % window) * window + cs % window;
            let src = &win[((img * nw + wl) * mm + t) * c..((img * nw + wl) * mm + t + 1) * c];
            for (d, s) in row.iter_mut().zip(src) {
                *d += *s;
            }
        });
        Ok(x)
    }
    fn window_attention(
        &self,
        qkv: &Tensor,
        rel_bias: &Tensor,
        region_ids: Option<&Tensor>,
        heads: usize,
    ) -> Result<Tensor> {
        let (nw, mm, c) = shape::window_attention(qkv, rel_bias, region_ids, heads)?;
        let nw_all = qkv.shape()[0];
        let qkv = values(qkv, "window_attention")?;
        let rel = values(rel_bias, "window_attention")?;
        let ids = region_ids.map(|r| r.i32s()).transpose()?;
        let hd = c / heads;
        let scale = (hd as f32).powf(-0.5);
        let mut out = vec![0.0f32; nw_all * mm * c];
        // Per window and head, two small GEMMs (one thread each: the windows are the parallel
        // loop) that read k and v straight from the window's qkv rows (stride 3c).
        out.par_chunks_mut(mm * c)
            .enumerate()
            .try_for_each(|(wi, obuf)| -> Result<()> {
                let wq = &qkv[wi * mm * 3 * c..(wi + 1) * mm * 3 * c];
                let ids = ids.map(|r| &r[(wi % nw) * mm..(wi % nw + 1) * mm]);
                let mut q = vec![0.0f32; mm * hd];
                let mut s = vec![0.0f32; mm * mm];
                let mut o = vec![0.0f32; mm * hd];
                for head in 0..heads {
                    let off = head * hd;
                    for (t, dst) in q.chunks_exact_mut(hd).enumerate() {
                        // q is scaled before the product, as swint.py:122.
                        let src = &wq[t * 3 * c + off..t * 3 * c + off + hd];
                        for (d, &x) in dst.iter_mut().zip(src) {
                            *d = x * scale;
                        }
                    }
                    // s[i, j] = q[i] · k[j]; kᵀ[d, j] is wq[j·3c + c + off + d].
                    let kt = Mat {
                        data: &wq[c + off..],
                        rs: 1,
                        cs: 3 * c,
                    };
                    if !gemm(mm, mm, hd, Mat::rows(&q, hd), kt, &mut s, 1.0, false) {
                        return Err(Error::shape("window_attention", "gemm extents"));
                    }
                    let bias = &rel[head * mm * mm..(head + 1) * mm * mm];
                    for (i, (row, brow)) in s
                        .chunks_exact_mut(mm)
                        .zip(bias.chunks_exact(mm))
                        .enumerate()
                    {
                        for (e, &b) in row.iter_mut().zip(brow) {
                            *e += b;
                        }
                        if let Some(ids) = ids {
                            let idi = ids[i];
                            for (e, &idj) in row.iter_mut().zip(ids) {
                                if idj != idi {
                                    *e += SWIN_SHIFT_MASK;
                                }
                            }
                        }
                        let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                        let mut sum = 0.0f32;
                        for e in row.iter_mut() {
                            *e = (*e - mx).exp();
                            sum += *e;
                        }
                        let inv = 1.0 / sum;
                        for e in row.iter_mut() {
                            *e *= inv;
                        }
                    }
                    // o = softmax(s) · v; v[j, d] is wq[j·3c + 2c + off + d].
                    let v = Mat {
                        data: &wq[2 * c + off..],
                        rs: 3 * c,
                        cs: 1,
                    };
                    if !gemm(mm, hd, mm, Mat::rows(&s, mm), v, &mut o, 1.0, false) {
                        return Err(Error::shape("window_attention", "gemm extents"));
                    }
                    for (dst, src) in obuf.chunks_exact_mut(c).zip(o.chunks_exact(hd)) {
                        dst[off..off + hd].copy_from_slice(src);
                    }
                }
                Ok(())
            })?;
        Tensor::from_f32(&[nw_all, mm, c], out)
    }
    fn patch_merge_gather(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = shape::nhwc("patch_merge_gather", x)?;
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        let v = values(x, "patch_merge_gather")?;
        let mut cat = vec![0.0f32; b * oh * ow * 4 * c];
        cat.par_chunks_mut(4 * c).enumerate().for_each(|(i, dst)| {
            let (img, p) = (i / (oh * ow), i % (oh * ow));
            let (oy, ox) = (p / ow, p % ow);
            for (q, (dy, dx)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
                let (y, xx) = (2 * oy + dy, 2 * ox + dx);
                // Odd sizes are zero-padded at the bottom/right.
                if y < h && xx < w {
                    let s = ((img * h + y) * w + xx) * c;
                    dst[q * c..(q + 1) * c].copy_from_slice(&v[s..s + c]);
                }
            }
        });
        Tensor::from_f32(&[b, oh, ow, 4 * c], cat)
    }
}
