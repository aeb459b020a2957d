//! The op interface (backend/ops.rs) on a CUDA device (or the emulated one): f16
//! activations and matrices, f32 vectors and accumulation. Ops without a kernel yet return
//! `Error::NotOnDevice` naming the op.

use super::{elementwise, gemm, CudaBackend};
use crate::backend::ops::{not_on_device, shape, Backend, SelfAttention};
use crate::error::{Error, Result};
use crate::tensor::{DType, DeviceData, Tensor};
use half::f16;

impl Backend for CudaBackend {
    fn device(&self) -> crate::tensor::Device {
        crate::tensor::Device::Cuda(self.ordinal)
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
    fn layer_norm(&self, _x: &Tensor, _w: &Tensor, _b: &Tensor, _eps: f32) -> Result<Tensor> {
        Err(not_on_device("layer_norm", self.device()))
    }
    fn clamp(&self, _x: Tensor, _bound: f32) -> Result<Tensor> {
        Err(not_on_device("clamp", self.device()))
    }
    fn gelu(&self, _x: Tensor) -> Result<Tensor> {
        Err(not_on_device("gelu", self.device()))
    }
    fn duplicate(&self, x: &Tensor) -> Result<Tensor> {
        // Through the host for now (a device-to-device copy belongs to the executor work).
        CudaBackend::upload(self, &CudaBackend::to_host(self, x)?)
    }
    fn bert_embeddings(
        &self,
        _ids: &Tensor,
        _word: &Tensor,
        _position: &Tensor,
        _token_type0: &Tensor,
    ) -> Result<Tensor> {
        Err(not_on_device("bert_embeddings", self.device()))
    }
    fn self_attention(
        &self,
        _q: &Tensor,
        _k: &Tensor,
        _v: &Tensor,
        _mask: &Tensor,
        _spec: SelfAttention,
    ) -> Result<Tensor> {
        Err(not_on_device("self_attention", self.device()))
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
    fn add_channel_scaled(&self, _a: Tensor, _g: &Tensor, _b: &Tensor) -> Result<Tensor> {
        Err(not_on_device("add_channel_scaled", self.device()))
    }
    fn levels_to_tokens(&self, _levels: &[&Tensor]) -> Result<Tensor> {
        Err(not_on_device("levels_to_tokens", self.device()))
    }
    fn tokens_to_levels(&self, _x: &Tensor, _sizes: &[(usize, usize)]) -> Result<Vec<Tensor>> {
        Err(not_on_device("tokens_to_levels", self.device()))
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
        _x: &Tensor,
        _w: &Tensor,
        _b: Option<&Tensor>,
        _stride: usize,
        _pad: usize,
    ) -> Result<Tensor> {
        Err(not_on_device("conv2d", self.device()))
    }
    fn upsample_nearest(&self, _x: &Tensor, _oh: usize, _ow: usize) -> Result<Tensor> {
        Err(not_on_device("upsample_nearest", self.device()))
    }
    fn upsample_bilinear_ac(&self, _x: &Tensor, _oh: usize, _ow: usize) -> Result<Tensor> {
        Err(not_on_device("upsample_bilinear_ac", self.device()))
    }
    fn relu(&self, _x: Tensor) -> Result<Tensor> {
        Err(not_on_device("relu", self.device()))
    }
    fn h_sigmoid(&self, _x: Tensor) -> Result<Tensor> {
        Err(not_on_device("h_sigmoid", self.device()))
    }
    fn avg_pool(&self, _x: &Tensor) -> Result<Tensor> {
        Err(not_on_device("avg_pool", self.device()))
    }
    fn scale_images(&self, _x: Tensor, _a: &Tensor) -> Result<Tensor> {
        Err(not_on_device("scale_images", self.device()))
    }
    fn split_offset_mask(&self, _om: &Tensor) -> Result<(Tensor, Tensor)> {
        Err(not_on_device("split_offset_mask", self.device()))
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
    fn dyrelu_apply(&self, _x: Tensor, _z: &Tensor) -> Result<Tensor> {
        Err(not_on_device("dyrelu_apply", self.device()))
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
    fn pad_to_multiple(&self, _x: &Tensor, _m: usize) -> Result<Tensor> {
        Err(not_on_device("pad_to_multiple", self.device()))
    }
    fn nchw_to_nhwc(&self, _x: &Tensor) -> Result<Tensor> {
        Err(not_on_device("nchw_to_nhwc", self.device()))
    }
    fn nhwc_to_nchw(&self, _x: &Tensor) -> Result<Tensor> {
        Err(not_on_device("nhwc_to_nchw", self.device()))
    }
    fn window_partition(&self, _x: &Tensor, _window: usize, _shift: usize) -> Result<Tensor> {
        Err(not_on_device("window_partition", self.device()))
    }
    fn window_merge_add(
        &self,
        _x: Tensor,
        _windows: &Tensor,
        _window: usize,
        _shift: usize,
    ) -> Result<Tensor> {
        Err(not_on_device("window_merge_add", self.device()))
    }
    fn window_attention(
        &self,
        _qkv: &Tensor,
        _rel_bias: &Tensor,
        _region_ids: Option<&Tensor>,
        _heads: usize,
    ) -> Result<Tensor> {
        Err(not_on_device("window_attention", self.device()))
    }
    fn patch_merge_gather(&self, _x: &Tensor) -> Result<Tensor> {
        Err(not_on_device("patch_merge_gather", self.device()))
    }
}
