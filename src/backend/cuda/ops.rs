//! The op interface (backend/ops.rs) on a CUDA device (or the emulated one): f16
//! activations and matrices, f32 vectors and accumulation. Ops without a kernel yet run on
//! the CPU twin through `on_cpu` (backend/cuda/fallback.rs: counted, or refused with
//! `Error::NotOnDevice` naming the op when fallbacks are off).

use super::fallback::Inputs;
use super::{elementwise, gemm, logits, nms, CudaBackend};
use crate::backend::atss::{AtssConfig, Candidate, Level, PositiveMapCsr};
use crate::backend::ops::{shape, Backend, SelfAttention};
use crate::error::{Error, Result};
use crate::tensor::{DType, DeviceData, Tensor};
use half::f16;

/// The ops of the interface this backend runs on the CPU (through `on_cpu`) until their
/// kernels land; `tests/ops_parity.rs` checks each against a run with fallbacks refused, and
/// the unit test below checks the list against this file's own source.
pub const CPU_FALLBACK_OPS: &[&str] = &[
    "layer_norm",
    "duplicate",
    "repeat_batch",
    "bert_embeddings",
    "self_attention",
    "add_channel_scaled",
    "levels_to_tokens",
    "tokens_to_levels",
    "conv2d",
    "upsample_nearest",
    "upsample_bilinear_ac",
    "avg_pool",
    "scale_images",
    "split_offset_mask",
    "dyrelu_apply",
    "pad_to_multiple",
    "nchw_to_nhwc",
    "nhwc_to_nchw",
    "window_partition",
    "window_merge_add",
    "window_attention",
    "patch_merge_gather",
    "concat_positions",
];

impl CudaBackend {
    /// An activation of the elementwise family on f16 x → a new f16 tensor.
    fn unary(&self, x: &Tensor, op: &'static str, f: elementwise::Unary) -> Result<Tensor> {
        let n = x.numel();
        let dx = self.device_f16(x, op)?;
        let mut y = self.alloc_zeros::<f16>(n.max(1))?;
        elementwise::unary_f16(self, f, dx, &mut y, n)?;
        Ok(Tensor::from_device(
            x.shape(),
            self.ordinal,
            DeviceData::F16(y),
        ))
    }
}

impl Backend for CudaBackend {
    fn device(&self) -> crate::tensor::Device {
        crate::tensor::Device::Cuda(self.ordinal)
    }
    fn activation_dtype(&self) -> DType {
        DType::F16
    }
    fn fallbacks(&self) -> Vec<crate::backend::ops::FallbackCount> {
        self.fallback_counts()
    }
    fn describe(&self) -> String {
        match self.name() {
            Ok(n) if self.is_emulated() => n,
            Ok(n) => format!("{n} (cuda:{})", self.ordinal),
            Err(_) => format!("cuda:{}", self.ordinal),
        }
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        CudaBackend::upload(self, t)
    }
    fn to_host(&self, t: &Tensor) -> Result<Tensor> {
        CudaBackend::to_host(self, t)
    }
    fn matmul(&self, a: &Tensor, b: &Tensor, b_transposed: bool) -> Result<Tensor> {
        let (m, k, n) = shape::matmul(a, b, b_transposed)?;
        let (da, db) = (self.device_f16(a, "matmul")?, self.device_f16(b, "matmul")?);
        let mut c = self.alloc_zeros::<f16>(m * n)?;
        gemm::gemm_f16(self, m, n, k, da, db, b_transposed, &mut c)?;
        Ok(Tensor::from_device(
            &[m, n],
            self.ordinal,
            DeviceData::F16(c),
        ))
    }
    fn cast(&self, t: &Tensor, to: crate::tensor::DType) -> Result<Tensor> {
        use crate::tensor::{DType, Storage};
        let n = t.numel();
        match (t.storage(), to) {
            (
                Storage::Cuda {
                    data: DeviceData::F32(x),
                    ..
                },
                DType::F16,
            ) => {
                let mut y = self.alloc_zeros::<f16>(n)?;
                elementwise::cast_f32_f16(self, x, &mut y, n)?;
                Ok(Tensor::from_device(
                    t.shape(),
                    self.ordinal,
                    DeviceData::F16(y),
                ))
            }
            (
                Storage::Cuda {
                    data: DeviceData::F16(x),
                    ..
                },
                DType::F32,
            ) => {
                let mut y = self.alloc_zeros::<f32>(n)?;
                elementwise::cast_f16_f32(self, x, &mut y, n)?;
                Ok(Tensor::from_device(
                    t.shape(),
                    self.ordinal,
                    DeviceData::F32(y),
                ))
            }
            _ => Err(Error::Invalid(format!(
                "CUDA cast of a {} tensor to {} is not supported",
                t.dtype().name(),
                to.name()
            ))),
        }
    }
    fn axpby(&self, alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor> {
        shape::same("axpby", a, b)?;
        let n = a.numel();
        let (da, db) = (self.device_f16(a, "axpby")?, self.device_f16(b, "axpby")?);
        let mut y = self.alloc_zeros::<f16>(n)?;
        elementwise::axpby_f16(self, alpha, da, beta, db, &mut y, n)?;
        Ok(Tensor::from_device(
            a.shape(),
            self.ordinal,
            DeviceData::F16(y),
        ))
    }
    fn weight(&self, t: &Tensor) -> Result<Tensor> {
        let host = match t.dtype() {
            DType::F32 | DType::F16 if t.rank() >= 2 => t.to_f16()?,
            DType::F32 | DType::F16 => t.to_f32()?,
            _ => t.try_clone()?,
        };
        CudaBackend::upload(self, &host)
    }
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let (rows, inp, out, y_shape) = shape::linear(x, w, b)?;
        let (dx, dw) = (
            self.device_f16(x, "linear")?,
            self.device_f16(w, "linear weight")?,
        );
        let mut y = self.alloc_zeros::<f16>(rows * out)?;
        match b {
            Some(b) => {
                let db = self.device_f32(b, "linear bias")?;
                gemm::gemm_bias_f16(self, rows, out, inp, dx, dw, true, db, &mut y)?;
            }
            None => gemm::gemm_f16(self, rows, out, inp, dx, dw, true, &mut y)?,
        }
        Ok(Tensor::from_device(
            &y_shape,
            self.ordinal,
            DeviceData::F16(y),
        ))
    }
    fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
        self.on_cpu1("layer_norm", &[x, w, b], |cpu, v| {
            let mut a = Inputs::new(v);
            let op = "layer_norm";
            cpu.layer_norm(&a.next(op)?, &a.next(op)?, &a.next(op)?, eps)
        })
    }
    fn clamp(&self, x: Tensor, bound: f32) -> Result<Tensor> {
        self.unary(&x, "clamp", elementwise::Unary::Clamp(bound))
    }
    fn gelu(&self, x: Tensor) -> Result<Tensor> {
        self.unary(&x, "gelu", elementwise::Unary::Gelu)
    }
    fn duplicate(&self, x: &Tensor) -> Result<Tensor> {
        self.on_cpu1("duplicate", &[x], |cpu, v| {
            cpu.duplicate(&Inputs::new(v).next("duplicate")?)
        })
    }
    fn repeat_batch(&self, x: &Tensor, times: usize) -> Result<Tensor> {
        let op = "repeat_batch";
        self.on_cpu1(op, &[x], |cpu, v| {
            cpu.repeat_batch(&Inputs::new(v).next(op)?, times)
        })
    }
    fn bert_embeddings(
        &self,
        ids: &Tensor,
        word: &Tensor,
        position: &Tensor,
        token_type0: &Tensor,
    ) -> Result<Tensor> {
        let op = "bert_embeddings";
        self.on_cpu1(op, &[ids, word, position, token_type0], |cpu, v| {
            let mut a = Inputs::new(v);
            cpu.bert_embeddings(&a.next(op)?, &a.next(op)?, &a.next(op)?, &a.next(op)?)
        })
    }
    fn self_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        spec: SelfAttention,
    ) -> Result<Tensor> {
        let op = "self_attention";
        self.on_cpu1(op, &[q, k, v, mask], |cpu, v| {
            let mut a = Inputs::new(v);
            cpu.self_attention(&a.next(op)?, &a.next(op)?, &a.next(op)?, &a.next(op)?, spec)
        })
    }
    fn scale(&self, x: Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
        let n = x.numel();
        let dx = self.device_f16(&x, "scale")?;
        let mut y = self.alloc_zeros::<f16>(n)?;
        elementwise::scale_f16(self, alpha, dx, beta, &mut y, n)?;
        Ok(Tensor::from_device(
            x.shape(),
            self.ordinal,
            DeviceData::F16(y),
        ))
    }
    fn add_channel_scaled(&self, a: Tensor, g: &Tensor, b: &Tensor) -> Result<Tensor> {
        let op = "add_channel_scaled";
        self.on_cpu1(op, &[&a, g, b], |cpu, v| {
            let mut i = Inputs::new(v);
            cpu.add_channel_scaled(i.next(op)?, &i.next(op)?, &i.next(op)?)
        })
    }
    fn levels_to_tokens(&self, levels: &[&Tensor]) -> Result<Tensor> {
        self.on_cpu1("levels_to_tokens", levels, |cpu, v| {
            cpu.levels_to_tokens(&v.iter().collect::<Vec<_>>())
        })
    }
    fn tokens_to_levels(&self, x: &Tensor, sizes: &[(usize, usize)]) -> Result<Vec<Tensor>> {
        self.on_cpu("tokens_to_levels", &[x], |cpu, v| {
            cpu.tokens_to_levels(&Inputs::new(v).next("tokens_to_levels")?, sizes)
        })
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
        use super::bi_attn::{bi_attn_f16, default_img_splits, BiAttnWorkspace};
        let s = shape::bi_attn(q, k, v_l, v_v, mask, heads)?;
        let dm = match mask.storage() {
            crate::tensor::Storage::Cuda {
                data: DeviceData::I32(m),
                ..
            } => m,
            _ => {
                return Err(Error::DType {
                    op: "bi_attn mask",
                    expected: "i32 on this CUDA device",
                    got: mask.dtype().name(),
                })
            }
        };
        let mut ws = BiAttnWorkspace::new(self, &s, default_img_splits(s.n_img))?;
        let mut ov = self.alloc_zeros::<f16>(s.img_len())?;
        let mut ot = self.alloc_zeros::<f16>(s.txt_len())?;
        bi_attn_f16(
            self,
            &s,
            self.device_f16(q, "bi_attn q")?,
            self.device_f16(k, "bi_attn k")?,
            self.device_f16(v_l, "bi_attn v_l")?,
            self.device_f16(v_v, "bi_attn v_v")?,
            dm,
            &mut ws,
            &mut ov,
            &mut ot,
        )?;
        Ok((
            Tensor::from_device(q.shape(), self.ordinal, DeviceData::F16(ov)),
            Tensor::from_device(k.shape(), self.ordinal, DeviceData::F16(ot)),
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
        let op = "conv2d";
        let inputs: Vec<&Tensor> = [x, w].into_iter().chain(b).collect();
        self.on_cpu1(op, &inputs, |cpu, v| {
            let mut a = Inputs::new(v);
            let (x, w) = (a.next(op)?, a.next(op)?);
            let b = b.map(|_| a.next(op)).transpose()?;
            cpu.conv2d(&x, &w, b.as_ref(), stride, pad)
        })
    }
    fn upsample_nearest(&self, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
        let op = "upsample_nearest";
        self.on_cpu1(op, &[x], |cpu, v| {
            cpu.upsample_nearest(&Inputs::new(v).next(op)?, oh, ow)
        })
    }
    fn upsample_bilinear_ac(&self, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
        let op = "upsample_bilinear_ac";
        self.on_cpu1(op, &[x], |cpu, v| {
            cpu.upsample_bilinear_ac(&Inputs::new(v).next(op)?, oh, ow)
        })
    }
    fn relu(&self, x: Tensor) -> Result<Tensor> {
        self.unary(&x, "relu", elementwise::Unary::Relu)
    }
    fn h_sigmoid(&self, x: Tensor) -> Result<Tensor> {
        self.unary(&x, "h_sigmoid", elementwise::Unary::HSigmoid)
    }
    fn avg_pool(&self, x: &Tensor) -> Result<Tensor> {
        let op = "avg_pool";
        self.on_cpu1(op, &[x], |cpu, v| cpu.avg_pool(&Inputs::new(v).next(op)?))
    }
    fn scale_images(&self, x: Tensor, a: &Tensor) -> Result<Tensor> {
        let op = "scale_images";
        self.on_cpu1(op, &[&x, a], |cpu, v| {
            let mut i = Inputs::new(v);
            cpu.scale_images(i.next(op)?, &i.next(op)?)
        })
    }
    fn split_offset_mask(&self, om: &Tensor) -> Result<(Tensor, Tensor)> {
        let op = "split_offset_mask";
        let mut v = Inputs::new(self.on_cpu(op, &[om], |cpu, v| {
            let (o, m) = cpu.split_offset_mask(&Inputs::new(v).next(op)?)?;
            Ok(vec![o, m])
        })?);
        Ok((v.next(op)?, v.next(op)?))
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
        use crate::backend::cpu::deform_conv::DeformConvShape;
        let (n, c, h, wd) = shape::nchw("deform_conv3x3", x)?;
        let [cout, ..] = w.dims::<4>("deform_conv3x3 weight")?;
        let s = DeformConvShape::new(n, c, cout, h, wd, stride)
            .with_offset_source(offset_src.0, offset_src.1);
        let mut y = self.alloc_zeros::<f16>(n * cout * s.out_h() * s.out_w())?;
        super::deform_conv::deform_conv_fwd_f16(
            self,
            &s,
            self.device_f16(x, "deform_conv3x3")?,
            self.device_f16(offset, "deform_conv3x3 offset")?,
            self.device_f16(mask, "deform_conv3x3 mask")?,
            self.device_f16(w, "deform_conv3x3 weight")?,
            self.device_f32(b, "deform_conv3x3 bias")?,
            &mut y,
        )?;
        Ok(Tensor::from_device(
            &[n, cout, s.out_h(), s.out_w()],
            self.ordinal,
            DeviceData::F16(y),
        ))
    }
    fn group_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        groups: usize,
        eps: f32,
    ) -> Result<Tensor> {
        use crate::backend::cpu::group_norm::{GnLevel, GroupNormShape};
        let (n, c, h, wd) = shape::nchw("group_norm", x)?;
        let s = GroupNormShape {
            groups,
            eps,
            ..GroupNormShape::glip(n, c)
        };
        let levels = [GnLevel {
            offset: 0,
            hw: h * wd,
        }];
        let mut ws = self.alloc_zeros::<f32>(super::group_norm::workspace_len(&s, &levels))?;
        let mut y = self.alloc_zeros::<f16>(x.numel())?;
        super::group_norm::group_norm_levels_f16(
            self,
            &s,
            &levels,
            self.device_f16(x, "group_norm")?,
            self.device_f32(w, "group_norm weight")?,
            self.device_f32(b, "group_norm bias")?,
            &mut ws,
            &mut y,
        )?;
        Ok(Tensor::from_device(
            x.shape(),
            self.ordinal,
            DeviceData::F16(y),
        ))
    }
    fn dyrelu_apply(&self, x: Tensor, z: &Tensor) -> Result<Tensor> {
        let op = "dyrelu_apply";
        self.on_cpu1(op, &[&x, z], |cpu, v| {
            let mut i = Inputs::new(v);
            cpu.dyrelu_apply(i.next(op)?, &i.next(op)?)
        })
    }
    fn text_projection(
        &self,
        lang: &Tensor,
        w: &Tensor,
        b: &Tensor,
        bias_lang: &Tensor,
        bias0: f32,
    ) -> Result<(Tensor, Tensor)> {
        let (bt, t, ld, dim) = shape::text_projection(lang, w, b, bias_lang)?;
        let mut proj = self.alloc_zeros::<f32>(bt * t * dim)?;
        let mut tb = self.alloc_zeros::<f32>(bt * t)?;
        super::logits::text_proj_f16(
            self,
            bt * t,
            ld,
            dim,
            self.device_f16(lang, "text_projection")?,
            self.device_f16(w, "text_projection weight")?,
            self.device_f32(b, "text_projection bias")?,
            self.device_f32(bias_lang, "text_projection bias_lang")?,
            bias0,
            &mut proj,
            &mut tb,
        )?;
        Ok((
            Tensor::from_device(&[bt, t, dim], self.ordinal, DeviceData::F32(proj)),
            Tensor::from_device(&[bt, t], self.ordinal, DeviceData::F32(tb)),
        ))
    }
    fn dot_logits(
        &self,
        v: &Tensor,
        proj: &Tensor,
        tok_bias: &Tensor,
        scale: f32,
        clamp: f32,
    ) -> Result<Tensor> {
        let (b, t, dim) = shape::dot_logits(v, proj, tok_bias)?;
        let hw = v.numel() / (b * dim).max(1);
        let s = super::logits::DotShape {
            batch: b,
            n_pos: hw,
            n_txt: t,
            dim,
            channel_major: true,
            out_rows: hw,
            out_row0: 0,
        };
        let mut out = self.alloc_zeros::<f32>(b * hw * t)?;
        super::logits::dot_f16(
            self,
            &s,
            self.device_f16(v, "dot_logits")?,
            self.device_f32(proj, "dot_logits proj")?,
            self.device_f32(tok_bias, "dot_logits token bias")?,
            scale,
            clamp,
            &mut out,
        )?;
        Ok(Tensor::from_device(
            &[b, hw, t],
            self.ordinal,
            DeviceData::F32(out),
        ))
    }
    fn concat_positions(&self, parts: &[&Tensor]) -> Result<Tensor> {
        self.on_cpu1("concat_positions", parts, |cpu, v| {
            cpu.concat_positions(&v.iter().collect::<Vec<_>>())
        })
    }
    fn phrase_scores(
        &self,
        logits: &Tensor,
        map: &PositiveMapCsr,
        num_labels: usize,
    ) -> Result<Tensor> {
        let (b, n, t) = shape::phrase_scores(logits, map, num_labels)?;
        let dmap = logits::DevicePositiveMap::upload(self, map, num_labels, t)?;
        let mut y = self.alloc_zeros::<f32>((b * n * num_labels).max(1))?;
        let dl = self.device_f32(logits, "phrase_scores logits")?;
        logits::phrase_mean_f32(self, b * n, dl, &dmap, &mut y)?;
        Ok(Tensor::from_device(
            &[b, n, num_labels],
            self.ordinal,
            DeviceData::F32(y),
        ))
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
        // Five launches, no host synchronisation until the final rows are read back.
        let p = nms::params(levels, num_labels, image_hw, cfg)?;
        let mut ws = nms::NmsWorkspace::new(self, &p)?;
        let mut out = nms::NmsOutputs::new(self, &p)?;
        nms::atss_postprocess(
            self,
            &p,
            self.device_f32(scores, "atss scores")?,
            self.device_f32(centerness, "atss centerness")?,
            self.device_f32(bbox_reg, "atss bbox_reg")?,
            &mut ws,
            &mut out,
        )?;
        out.download(self, &p, levels)
    }
    fn pad_to_multiple(&self, x: &Tensor, m: usize) -> Result<Tensor> {
        let op = "pad_to_multiple";
        self.on_cpu1(op, &[x], |cpu, v| {
            cpu.pad_to_multiple(&Inputs::new(v).next(op)?, m)
        })
    }
    fn nchw_to_nhwc(&self, x: &Tensor) -> Result<Tensor> {
        let op = "nchw_to_nhwc";
        self.on_cpu1(op, &[x], |cpu, v| {
            cpu.nchw_to_nhwc(&Inputs::new(v).next(op)?)
        })
    }
    fn nhwc_to_nchw(&self, x: &Tensor) -> Result<Tensor> {
        let op = "nhwc_to_nchw";
        self.on_cpu1(op, &[x], |cpu, v| {
            cpu.nhwc_to_nchw(&Inputs::new(v).next(op)?)
        })
    }
    fn window_partition(&self, x: &Tensor, window: usize, shift: usize) -> Result<Tensor> {
        let op = "window_partition";
        self.on_cpu1(op, &[x], |cpu, v| {
            cpu.window_partition(&Inputs::new(v).next(op)?, window, shift)
        })
    }
    fn window_merge_add(
        &self,
        x: Tensor,
        windows: &Tensor,
        window: usize,
        shift: usize,
    ) -> Result<Tensor> {
        let op = "window_merge_add";
        self.on_cpu1(op, &[&x, windows], |cpu, v| {
            let mut i = Inputs::new(v);
            cpu.window_merge_add(i.next(op)?, &i.next(op)?, window, shift)
        })
    }
    fn window_attention(
        &self,
        qkv: &Tensor,
        rel_bias: &Tensor,
        region_ids: Option<&Tensor>,
        heads: usize,
    ) -> Result<Tensor> {
        let op = "window_attention";
        let inputs: Vec<&Tensor> = [qkv, rel_bias].into_iter().chain(region_ids).collect();
        self.on_cpu1(op, &inputs, |cpu, v| {
            let mut i = Inputs::new(v);
            let (qkv, rel) = (i.next(op)?, i.next(op)?);
            let ids = region_ids.map(|_| i.next(op)).transpose()?;
            cpu.window_attention(&qkv, &rel, ids.as_ref(), heads)
        })
    }
    fn patch_merge_gather(&self, x: &Tensor) -> Result<Tensor> {
        let op = "patch_merge_gather";
        self.on_cpu1(op, &[x], |cpu, v| {
            cpu.patch_merge_gather(&Inputs::new(v).next(op)?)
        })
    }
}

#[cfg(test)]
mod tests {
    /// [`super::CPU_FALLBACK_OPS`] names exactly the ops whose CUDA implementation calls
    /// `on_cpu` (read from this file's own source: an op falls back iff its body does).
    #[test]
    fn fallback_list_names_every_cpu_op() {
        let src = include_str!("ops.rs");
        let body_start = src.find("impl Backend for CudaBackend").unwrap_or(0);
        let body = &src[body_start..src.find("#[cfg(test)]").unwrap_or(src.len())];
        let mut falling: Vec<&str> = Vec::new();
        for f in body.split("\n    fn ").skip(1) {
            let name = f.split('(').next().unwrap_or("");
            if f.contains(concat!("on_", "cpu")) {
                falling.push(name);
            }
        }
        falling.sort_unstable();
        let mut listed = super::CPU_FALLBACK_OPS.to_vec();
        listed.sort_unstable();
        assert_eq!(falling, listed);
    }
}
