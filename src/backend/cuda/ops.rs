//! The op interface (backend/ops.rs) on a CUDA device (or the emulated one): f16
//! activations and matrices, f32 vectors and accumulation, every op a kernel (the families
//! of kernels/). An op without a kernel would run on the CPU twin through `on_cpu`
//! (backend/cuda/fallback.rs: counted, or refused with `Error::NotOnDevice` naming it).

use super::{attention, layout};
use super::{elementwise, gemm, logits, nms, reduce, CudaBackend, DeviceBuffer, FloatElem, InOut};
use crate::backend::atss::{AtssConfig, Candidate, Level, PositiveMapCsr};
use crate::backend::ops::{shape, Backend, SelfAttention, WindowGrid};
use crate::error::{Error, Result};
use crate::tensor::{DType, DeviceData, Tensor};
use half::f16;

/// The ops of the interface this backend runs on the CPU (through `on_cpu`) until their
/// kernels land — none today; the unit test below checks the list against this file's own
/// source, and tests/cli_detect.rs runs the golden with fallbacks refused.
pub const CPU_FALLBACK_OPS: &[&str] = &[];

/// Runs `$body` with `$T` the float storage type of `$dtype` (the families compiled for
/// both f16 and f32).
macro_rules! with_float {
    ($dtype:expr, $op:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F16 => {
                type $T = f16;
                $body
            }
            DType::F32 => {
                type $T = f32;
                $body
            }
            d => Err(Error::DType {
                op: $op,
                expected: "f16 or f32",
                got: d.name(),
            }),
        }
    };
}

impl CudaBackend {
    /// The `T` buffer of a tensor of this backend.
    fn float_buf<'a, T: FloatElem>(
        &self,
        t: &'a Tensor,
        op: &'static str,
    ) -> Result<&'a DeviceBuffer<T>> {
        T::buffer(t, self.ordinal).ok_or(Error::DType {
            op,
            expected: match T::DTYPE {
                DType::F16 => "f16 on this CUDA device",
                _ => "f32 on this CUDA device",
            },
            got: t.dtype().name(),
        })
    }

    fn new_tensor<T: FloatElem>(&self, shape: &[usize], b: DeviceBuffer<T>) -> Tensor {
        Tensor::from_device(shape, self.ordinal, T::data(b))
    }

    /// A new `T` tensor of `shape`, written by `f` from x's buffer.
    fn derive<T: FloatElem>(
        &self,
        op: &'static str,
        x: &Tensor,
        shape: &[usize],
        f: impl FnOnce(&DeviceBuffer<T>, &mut DeviceBuffer<T>) -> Result<()>,
    ) -> Result<Tensor> {
        let dx = self.float_buf::<T>(x, op)?;
        let mut y = self.alloc_out::<T>(shape.iter().product::<usize>().max(1))?;
        f(dx, &mut y)?;
        Ok(self.new_tensor(shape, y))
    }

    /// F.interpolate of NCHW x to (oh, ow).
    fn upsample(
        &self,
        x: &Tensor,
        op: &'static str,
        mode: layout::Resample,
        oh: usize,
        ow: usize,
    ) -> Result<Tensor> {
        let (n, c, h, w) = shape::nchw(op, x)?;
        with_float!(x.dtype(), op, T => self.derive::<T>(op, x, &[n, c, oh, ow], |dx, y| {
            layout::upsample(self, mode, dx, y, n * c, (h, w), (oh, ow))
        }))
    }

    /// An activation of the elementwise family on f16 x → a new f16 tensor.
    fn unary(&self, x: Tensor, op: &'static str, f: elementwise::Unary) -> Result<Tensor> {
        let n = x.numel();
        self.in_place(x, op, |y| {
            elementwise::unary_f16(self, f, InOut::Same(y), n)
        })
    }

    /// An op that takes its input by value computes in its buffer, as the CPU backend does:
    /// one memory plan describes both backends (plan.rs), and no output is allocated.
    fn in_place<T: FloatElem>(
        &self,
        mut x: Tensor,
        op: &'static str,
        f: impl FnOnce(&mut DeviceBuffer<T>) -> Result<()>,
    ) -> Result<Tensor> {
        // The same check (and message) as for an input by reference.
        self.float_buf::<T>(&x, op)?;
        let b = T::buffer_mut(&mut x, self.ordinal)
            .ok_or_else(|| Error::Cuda(format!("{op}: the input left this device")))?;
        f(b)?;
        Ok(x)
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
    fn device_arena(&self) -> Option<&dyn crate::backend::plan::DeviceArena> {
        Some(self)
    }
    fn stage_clock(&self) -> Option<&dyn crate::backend::clock::StageClock> {
        Some(self)
    }
    fn device_frames(&self) -> Option<&dyn crate::backend::frames::DeviceFrames> {
        Some(self)
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
        let mut c = self.alloc_out::<f16>(m * n)?;
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
                let mut y = self.alloc_out::<f16>(n)?;
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
                let mut y = self.alloc_out::<f32>(n)?;
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
        let mut y = self.alloc_out::<f16>(n)?;
        elementwise::axpby_f16(self, alpha, InOut::Apart(da, &mut y), beta, db, n)?;
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
        let mut y = self.alloc_out::<f16>(rows * out)?;
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
        let op = "layer_norm";
        let c = shape::layer_norm(x, w, b)?;
        let (dw, db) = (self.device_f32(w, op)?, self.device_f32(b, op)?);
        self.derive::<f16>(op, x, x.shape(), |dx, y| {
            reduce::layer_norm_f16(self, dx, dw, db, y, (x.numel() / c, c), eps)
        })
    }
    fn clamp(&self, x: Tensor, bound: f32) -> Result<Tensor> {
        self.unary(x, "clamp", elementwise::Unary::Clamp(bound))
    }
    fn gelu(&self, x: Tensor) -> Result<Tensor> {
        self.unary(x, "gelu", elementwise::Unary::Gelu)
    }
    fn duplicate(&self, x: &Tensor) -> Result<Tensor> {
        let op = "duplicate";
        let n = x.numel();
        with_float!(x.dtype(), op, T => self.derive::<T>(op, x, x.shape(), |dx, y| {
            layout::copy_rows(self, dx, y, (1, 1, n), 1, 1, 0)
        }))
    }
    fn repeat_batch(&self, x: &Tensor, times: usize) -> Result<Tensor> {
        let op = "repeat_batch";
        let shape = shape::repeat_batch(x, times)?;
        let per = x.numel();
        with_float!(x.dtype(), op, T => self.derive::<T>(op, x, &shape, |dx, y| {
            layout::copy_rows(self, dx, y, (times, 1, per), 0, 1, 0)
        }))
    }
    fn bert_embeddings(
        &self,
        ids: &Tensor,
        word: &Tensor,
        position: &Tensor,
        token_type0: &Tensor,
    ) -> Result<Tensor> {
        let op = "bert_embeddings";
        let (batch, t, h, vocab) = shape::bert_embeddings(ids, word, position, token_type0)?;
        // Ids come from the host (the tokenizer): checked there, then uploaded.
        let host_ids = CudaBackend::to_host(self, ids)?;
        let v = host_ids.i32s()?;
        if let Some(&bad) = v
            .iter()
            .find(|&&id| usize::try_from(id).map_or(true, |i| i >= vocab))
        {
            return Err(Error::shape(
                op,
                format!("token id {bad} outside the vocabulary of {vocab}"),
            ));
        }
        let dids = self.upload_i32(v)?;
        let mut y = self.alloc_out::<f16>((batch * t * h).max(1))?;
        layout::embed_f16(
            self,
            &dids,
            self.device_f16(word, "bert_embeddings word")?,
            self.device_f16(position, "bert_embeddings position")?,
            self.device_f32(token_type0, "bert_embeddings token type")?,
            &mut y,
            (batch * t, t, h, vocab),
        )?;
        Ok(self.new_tensor(&[batch, t, h], y))
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
        let (batch, t, h, hd) = shape::self_attention(q, k, v, mask, spec.heads)?;
        let s = attention::AttnShape {
            seqs: batch,
            tokens: t,
            heads: spec.heads,
            head_dim: hd,
        };
        let mut out = self.alloc_out::<f16>((batch * t * h).max(1))?;
        attention::self_attention_f16(
            self,
            &s,
            self.device_f16(q, op)?,
            self.device_f16(k, op)?,
            self.device_f16(v, op)?,
            self.device_i32(mask, "self_attention mask")?,
            spec.clamp,
            &mut out,
        )?;
        Ok(self.new_tensor(&[batch, t, h], out))
    }
    fn scale(&self, x: Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
        let n = x.numel();
        self.in_place(x, "scale", |y| {
            elementwise::scale_f16(self, alpha, InOut::Same(y), beta, n)
        })
    }
    fn add(&self, a: Tensor, b: &Tensor) -> Result<Tensor> {
        shape::same("add", &a, b)?;
        let n = a.numel();
        let db = self.device_f16(b, "add")?;
        self.in_place(a, "add", |y| {
            elementwise::axpby_f16(self, 1.0, InOut::Same(y), 1.0, db, n)
        })
    }
    fn add_channel_scaled(&self, a: Tensor, g: &Tensor, b: &Tensor) -> Result<Tensor> {
        let op = "add_channel_scaled";
        let c = shape::channel_scaled(&a, g, b)?;
        let (dg, db) = (self.device_f32(g, op)?, self.device_f16(b, op)?);
        let n = a.numel();
        self.in_place(a, op, |y| {
            elementwise::add_channel_scaled_f16(self, InOut::Same(y), dg, db, n, c)
        })
    }
    fn levels_to_tokens(&self, levels: &[&Tensor]) -> Result<Tensor> {
        let op = "levels_to_tokens";
        let (b, c, n) = shape::levels(levels)?;
        let dtype = levels.first().map_or(DType::F16, |t| t.dtype());
        with_float!(dtype, op, T => {
            let mut y = self.alloc_out::<T>((b * n * c).max(1))?;
            let mut row0 = 0;
            for l in levels {
                let [_, _, h, w] = l.dims::<4>(op)?;
                let dl = self.float_buf::<T>(l, op)?;
                layout::planes_to_rows(self, dl, &mut y, (b, c, h, w), n, row0)?;
                row0 += h * w;
            }
            Ok(self.new_tensor(&[b, n, c], y))
        })
    }
    fn tokens_to_levels(&self, x: &Tensor, sizes: &[(usize, usize)]) -> Result<Vec<Tensor>> {
        let op = "tokens_to_levels";
        let (b, c) = shape::tokens(x, sizes)?;
        let n = x.shape()[1];
        with_float!(x.dtype(), op, T => {
            let mut row0 = 0;
            let mut out = Vec::with_capacity(sizes.len());
            for &(h, w) in sizes {
                out.push(self.derive::<T>(op, x, &[b, c, h, w], |dx, y| {
                    layout::rows_to_planes(self, dx, y, (b, c, h, w), n, row0)
                })?);
                row0 += h * w;
            }
            Ok(out)
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
        let mut ov = self.alloc_out::<f16>(s.img_len())?;
        let mut ot = self.alloc_out::<f16>(s.txt_len())?;
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
        // im2col (layout family) + the tensor-core GEMM with its bias epilogue + the rows
        // back to NCHW planes. A 1×1 convolution's columns are its NHWC input.
        let op = "conv2d";
        let (cout, k) = shape::conv2d(x, w, b)?;
        let (batch, cin, h, wd) = shape::nchw(op, x)?;
        let g = layout::ConvGeometry {
            batch,
            cin,
            h,
            w: wd,
            k,
            stride,
            pad,
        };
        let (oh, ow) = g.out_hw()?;
        let rows = batch * oh * ow;
        let (dx, dw) = (
            self.device_f16(x, op)?,
            self.device_f16(w, "conv2d weight")?,
        );
        let mut cols = self.alloc_out::<f16>((rows * g.cols()).max(1))?;
        layout::im2col(self, dx, &mut cols, &g)?;
        // The weight [cout, cin·k²] with its rows zero-padded to the columns' width.
        let padded;
        let dw = if g.cols() == g.taps() {
            dw
        } else {
            let mut p = self.alloc_out::<f16>(cout * g.cols())?;
            layout::pad(self, dw, &mut p, 1, (cout, g.taps()), (cout, g.cols()))?;
            padded = p;
            &padded
        };
        let zeros;
        let bias = match b {
            Some(b) => self.device_f32(b, "conv2d bias")?,
            None => {
                zeros = self.alloc_zeros::<f32>(cout)?;
                &zeros
            }
        };
        let mut y = self.alloc_out::<f16>((rows * cout).max(1))?;
        gemm::gemm_bias_f16(self, rows, cout, g.cols(), &cols, dw, true, bias, &mut y)?;
        let mut out = self.alloc_out::<f16>((rows * cout).max(1))?;
        layout::rows_to_planes(self, &y, &mut out, (batch, cout, oh, ow), oh * ow, 0)?;
        Ok(self.new_tensor(&[batch, cout, oh, ow], out))
    }
    fn upsample_nearest(&self, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
        self.upsample(x, "upsample_nearest", layout::Resample::Nearest, oh, ow)
    }
    fn upsample_bilinear_ac(&self, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
        let mode = layout::Resample::BilinearAlignCorners;
        self.upsample(x, "upsample_bilinear_ac", mode, oh, ow)
    }
    fn relu(&self, x: Tensor) -> Result<Tensor> {
        self.unary(x, "relu", elementwise::Unary::Relu)
    }
    fn h_sigmoid(&self, x: Tensor) -> Result<Tensor> {
        self.unary(x, "h_sigmoid", elementwise::Unary::HSigmoid)
    }
    fn avg_pool(&self, x: &Tensor) -> Result<Tensor> {
        let op = "avg_pool";
        let (n, c, h, w) = shape::nchw(op, x)?;
        if h * w == 0 {
            return Err(Error::shape(op, "empty map"));
        }
        self.derive::<f16>(op, x, &[n, c], |dx, y| {
            reduce::avg_pool_f16(self, dx, y, (n * c, h * w))
        })
    }
    fn scale_images(&self, x: Tensor, a: &Tensor) -> Result<Tensor> {
        let op = "scale_images";
        let n = shape::per_image(op, &x, a)?;
        let da = self.device_f16(a, op)?;
        let per = x.numel() / n;
        self.in_place(x, op, |y| {
            elementwise::scale_images_f16(self, InOut::Same(y), da, n, per)
        })
    }
    fn split_offset_mask(&self, om: &Tensor) -> Result<(Tensor, Tensor)> {
        use crate::backend::ops::DEFORM_TAPS as TAPS;
        let op = "split_offset_mask";
        let (n, c, h, w) = shape::nchw(op, om)?;
        if c != 3 * TAPS {
            return Err(Error::shape(
                op,
                format!("{c} channels, expected {}", 3 * TAPS),
            ));
        }
        let hw = h * w;
        let dom = self.device_f16(om, op)?;
        let mut off = self.alloc_out::<f16>((n * 2 * TAPS * hw).max(1))?;
        let mut mask = self.alloc_out::<f16>((n * TAPS * hw).max(1))?;
        elementwise::split_offset_mask_f16(self, dom, &mut off, &mut mask, (n, TAPS, hw))?;
        Ok((
            self.new_tensor(&[n, 2 * TAPS, h, w], off),
            self.new_tensor(&[n, TAPS, h, w], mask),
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
        use crate::backend::cpu::deform_conv::DeformConvShape;
        let (n, c, h, wd) = shape::nchw("deform_conv3x3", x)?;
        let [cout, ..] = w.dims::<4>("deform_conv3x3 weight")?;
        let s = DeformConvShape::new(n, c, cout, h, wd, stride)
            .with_offset_source(offset_src.0, offset_src.1);
        let mut y = self.alloc_out::<f16>(n * cout * s.out_h() * s.out_w())?;
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
        xs: &[&Tensor],
        w: &Tensor,
        b: &Tensor,
        groups: usize,
        eps: f32,
    ) -> Result<Vec<Tensor>> {
        use super::group_norm::{group_norm_levels_f16, workspace_len, GnLevelBufs, MAX_LEVELS};
        use crate::backend::cpu::group_norm::GroupNormShape;
        const OP: &str = "group_norm";
        let (n, c) = shape::group_norm(xs, w, b)?;
        let s = GroupNormShape {
            groups,
            eps,
            ..GroupNormShape::glip(n, c)
        };
        let (dw, db) = (
            self.device_f32(w, "group_norm weight")?,
            self.device_f32(b, "group_norm bias")?,
        );
        let mut out = Vec::with_capacity(xs.len());
        // One grouped launch pair per MAX_LEVELS levels (GLIP-T's DyConv passes 4 or 5).
        for part in xs.chunks(MAX_LEVELS) {
            let hws = part
                .iter()
                .map(|x| shape::nchw(OP, x).map(|(_, _, h, wd)| h * wd))
                .collect::<Result<Vec<_>>>()?;
            let mut ws = self.alloc_scratch::<f32>(workspace_len(&s, &hws))?;
            let mut ys = part
                .iter()
                .map(|x| self.alloc_out::<f16>(x.numel()))
                .collect::<Result<Vec<_>>>()?;
            let mut levels = part
                .iter()
                .zip(ys.iter_mut())
                .zip(&hws)
                .map(|((x, y), &hw)| {
                    Ok(GnLevelBufs {
                        x: self.device_f16(x, OP)?,
                        y,
                        hw,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            group_norm_levels_f16(self, &s, &mut levels, dw, db, &mut ws)?;
            drop(levels);
            for (x, y) in part.iter().zip(ys) {
                out.push(Tensor::from_device(
                    x.shape(),
                    self.ordinal,
                    DeviceData::F16(y),
                ));
            }
        }
        Ok(out)
    }
    fn dyrelu_apply(&self, x: Tensor, z: &Tensor) -> Result<Tensor> {
        let op = "dyrelu_apply";
        let (n, c, h, w) = shape::nchw(op, &x)?;
        if z.shape() != [n, 4 * c] {
            return Err(Error::shape(
                op,
                format!("coefficients {:?} for {:?}", z.shape(), x.shape()),
            ));
        }
        let dz = self.device_f16(z, op)?;
        self.in_place(x, op, |y| {
            elementwise::dyrelu_apply_f16(self, InOut::Same(y), dz, (n, c, h * w))
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
        let mut proj = self.alloc_out::<f32>(bt * t * dim)?;
        let mut tb = self.alloc_out::<f32>(bt * t)?;
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
        vs: &[&Tensor],
        proj: &Tensor,
        tok_bias: &Tensor,
        scale: f32,
        clamp: f32,
    ) -> Result<Vec<Tensor>> {
        let (b, t, dim) = shape::dot_logits_levels(vs, proj, tok_bias)?;
        let s = super::logits::DotShape {
            batch: b,
            n_pos: 0,
            n_txt: t,
            dim,
            channel_major: true,
            out_rows: 0,
            out_row0: 0,
        };
        let (proj, tok_bias) = (
            self.device_f32(proj, "dot_logits proj")?,
            self.device_f32(tok_bias, "dot_logits token bias")?,
        );
        let mut out: Vec<Option<Tensor>> = vs.iter().map(|_| None).collect();
        // f16 activations; f32 features (beyond f16's range) keep their range to the clamp.
        // One grouped launch per dtype (per MAX_DOT_LEVELS levels).
        for dtype in [DType::F16, DType::F32] {
            let idx: Vec<usize> = (0..vs.len()).filter(|&i| vs[i].dtype() == dtype).collect();
            for part in idx.chunks(logits::MAX_DOT_LEVELS) {
                with_float!(dtype, "dot_logits", T => {
                    let hws: Vec<usize> = part.iter().map(|&i| vs[i].numel() / (b * dim).max(1)).collect();
                    let mut ys = hws
                        .iter()
                        .map(|hw| self.alloc_out::<f32>((b * hw * t).max(1)))
                        .collect::<Result<Vec<_>>>()?;
                    let mut levels = part
                        .iter()
                        .zip(ys.iter_mut())
                        .zip(&hws)
                        .map(|((&i, out), &n_pos)| {
                            Ok(logits::DotLevel {
                                visual: self.float_buf::<T>(vs[i], "dot_logits")?,
                                out,
                                n_pos,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    logits::dot_levels(self, &s, &mut levels, proj, tok_bias, scale, clamp)?;
                    drop(levels);
                    for ((&i, y), hw) in part.iter().zip(ys).zip(hws) {
                        out[i] = Some(Tensor::from_device(
                            &[b, hw, t],
                            self.ordinal,
                            DeviceData::F32(y),
                        ));
                    }
                    Ok(())
                })?;
            }
        }
        out.into_iter()
            .map(|o| {
                o.ok_or(Error::DType {
                    op: "dot_logits",
                    expected: "f16 or f32",
                    got: "another dtype",
                })
            })
            .collect()
    }
    fn concat_positions(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let op = "concat_positions";
        let (b, n, c) = shape::concat_positions(parts)?;
        let dtype = parts.first().map_or(DType::F32, |t| t.dtype());
        with_float!(dtype, op, T => {
            let mut y = self.alloc_out::<T>((b * n * c).max(1))?;
            let mut row0 = 0;
            for p in parts {
                let rows = p.shape()[1];
                let dp = self.float_buf::<T>(p, op)?;
                layout::copy_rows(self, dp, &mut y, (b, rows, c), rows, n, row0)?;
                row0 += rows;
            }
            Ok(self.new_tensor(&[b, n, c], y))
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
        let mut y = self.alloc_out::<f32>((b * n * num_labels).max(1))?;
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
        let (n, c, h, w) = shape::nchw(op, x)?;
        if m == 0 {
            return Err(Error::shape(op, "multiple 0"));
        }
        let (hp, wp) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        with_float!(x.dtype(), op, T => self.derive::<T>(op, x, &[n, c, hp, wp], |dx, y| {
            layout::pad(self, dx, y, n * c, (h, w), (hp, wp))
        }))
    }
    fn nchw_to_nhwc(&self, x: &Tensor) -> Result<Tensor> {
        let op = "nchw_to_nhwc";
        let (n, c, h, w) = shape::nchw(op, x)?;
        with_float!(x.dtype(), op, T => self.derive::<T>(op, x, &[n, h, w, c], |dx, y| {
            layout::planes_to_rows(self, dx, y, (n, c, h, w), h * w, 0)
        }))
    }
    fn nhwc_to_nchw(&self, x: &Tensor) -> Result<Tensor> {
        let op = "nhwc_to_nchw";
        let (n, h, w, c) = shape::nhwc(op, x)?;
        with_float!(x.dtype(), op, T => self.derive::<T>(op, x, &[n, c, h, w], |dx, y| {
            layout::rows_to_planes(self, dx, y, (n, c, h, w), h * w, 0)
        }))
    }
    fn window_partition(&self, x: &Tensor, window: usize, shift: usize) -> Result<Tensor> {
        let op = "window_partition";
        let (b, h, w, c) = shape::nhwc(op, x)?;
        let g = WindowGrid::new(h, w, window.max(1));
        let shape = [b * g.num_windows(), window * window, c];
        with_float!(x.dtype(), op, T => self.derive::<T>(op, x, &shape, |dx, y| {
            layout::window_partition(self, dx, y, (b, h, w, c), window, shift)
        }))
    }
    fn window_merge_add(
        &self,
        x: Tensor,
        windows: &Tensor,
        window: usize,
        shift: usize,
    ) -> Result<Tensor> {
        let op = "window_merge_add";
        let (b, h, w, c) = shape::nhwc(op, &x)?;
        let g = WindowGrid::new(h, w, window.max(1));
        if windows.shape() != [b * g.num_windows(), window * window, c] {
            return Err(Error::shape(
                op,
                format!("windows {:?} for tokens {:?}", windows.shape(), x.shape()),
            ));
        }
        with_float!(x.dtype(), op, T => {
            let dw = self.float_buf::<T>(windows, op)?;
            self.in_place::<T>(x, op, |y| {
                layout::window_merge_add(self, InOut::Same(y), dw, (b, h, w, c), window, shift)
            })
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
        let (nw, mm, c) = shape::window_attention(qkv, rel_bias, region_ids, heads)?;
        let seqs = qkv.shape()[0];
        let s = attention::AttnShape {
            seqs,
            tokens: mm,
            heads,
            head_dim: c / heads,
        };
        let ids = region_ids
            .map(|r| self.device_i32(r, "window_attention region ids"))
            .transpose()?;
        let mut out = self.alloc_out::<f16>((seqs * mm * c).max(1))?;
        attention::window_attention_f16(
            self,
            &s,
            self.device_f16(qkv, op)?,
            self.device_f16(rel_bias, "window_attention bias")?,
            ids.map(|i| (i, nw)),
            &mut out,
        )?;
        Ok(self.new_tensor(&[seqs, mm, c], out))
    }
    fn patch_merge_gather(&self, x: &Tensor) -> Result<Tensor> {
        let op = "patch_merge_gather";
        let (b, h, w, c) = shape::nhwc(op, x)?;
        let shape = [b, h.div_ceil(2), w.div_ceil(2), 4 * c];
        with_float!(x.dtype(), op, T => self.derive::<T>(op, x, &shape, |dx, y| {
            layout::patch_merge(self, dx, y, (b, h, w, c))
        }))
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
