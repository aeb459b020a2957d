//! The op interface GLIP-T is written against (design.md §3.4): the model holds backend
//! tensors (device + dtype) and calls only these ops, so one model definition runs on every
//! backend. Each op's shape rule lives here, once, and both backends call it before they
//! compute; GLIP's numeric constants used by more than one op are defined here too.
//!
//! Ops a backend cannot run yet fail with [`Error::NotOnDevice`] naming the op, never with a
//! wrong answer.

use crate::backend::atss::{AtssConfig, Candidate, Level, PositiveMapCsr};
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

/// GLIP's clamp bound: BERT attention scores (CLAMP_BERTATTN_*), the BertEncoderLayer FFN,
/// VLFuse attention logits, the dot-product logits (glip-t-inference-spec.md §3.5, §3.6).
pub const GLIP_CLAMP: f32 = 50_000.0;
/// HF `get_extended_attention_mask` fill for a padded key: `torch.finfo(float32).min`
/// (transformers 4.46.3 produced the goldens; GLIP-era releases used −10000, which gives the
/// same fp32 probabilities since both underflow exp to 0).
pub const BERT_MASK_FILL: f32 = f32::MIN;

/// Kernel taps of DyConv's modulated deformable 3×3 convolution (its offset conv gives
/// 2 · 9 offsets and 9 masks per position).
pub const DEFORM_TAPS: usize = 9;

/// Multi-head self-attention over [B, T, H] sequences, HF BERT style:
/// `softmax(q·kᵀ / sqrt(H / heads) [clamped to ±clamp] + (1 − mask) · BERT_MASK_FILL) · v`.
#[derive(Clone, Copy, Debug)]
pub struct SelfAttention {
    pub heads: usize,
    /// GLIP's BertEncoderLayer clamps the scaled scores before the mask (spec §3.5.2).
    pub clamp: Option<f32>,
}

/// One op's runs on the CPU in place of the device so far (per-op fallback,
/// backend/cuda/fallback.rs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FallbackCount {
    pub op: &'static str,
    pub calls: u64,
    /// Bytes copied device → host (the inputs) and host → device (the outputs).
    pub bytes_down: u64,
    pub bytes_up: u64,
}

/// The operations the model needs from a device. Tensors passed in must live on the
/// backend's device; outputs are new tensors on it. Floating-point activations are f32 on
/// the CPU and f16 on CUDA (f32 accumulation).
pub trait Backend {
    fn device(&self) -> Device;
    /// The dtype of activations on this backend: f32 on the CPU, f16 on CUDA.
    fn activation_dtype(&self) -> DType;
    /// Copy a host tensor onto this backend's device (dtype kept).
    fn upload(&self, t: &Tensor) -> Result<Tensor>;
    /// Copy a tensor of this backend back to the host.
    fn to_host(&self, t: &Tensor) -> Result<Tensor>;
    /// A model parameter in this backend's storage format (converted once, at load): f32 on
    /// the CPU; on CUDA f16 for matrices and f32 for vectors (biases, norm affines).
    fn weight(&self, t: &Tensor) -> Result<Tensor>;
    /// Row-major `a[m, k] · b[k, n]`, or `a · b[n, k]ᵀ` with `b_transposed`.
    fn matmul(&self, a: &Tensor, b: &Tensor, b_transposed: bool) -> Result<Tensor>;
    /// Convert between f32 and f16 (round to nearest even).
    fn cast(&self, t: &Tensor, to: DType) -> Result<Tensor>;
    /// `alpha * a + beta * b` elementwise.
    fn axpby(&self, alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor>;
    /// PyTorch Linear: x[…, in] · w[out, in]ᵀ + b[out] → […, out].
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor>;
    /// LayerNorm over the last dimension (biased variance), affine w, b.
    fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor>;
    /// Every element clamped to [−bound, bound].
    ///
    /// Elementwise ops take their input by value: a backend may compute in place.
    fn clamp(&self, x: Tensor, bound: f32) -> Result<Tensor>;
    /// Exact (erf) GELU.
    fn gelu(&self, x: Tensor) -> Result<Tensor>;
    /// A copy of x (for the few places that keep an input an in-place op would consume).
    fn duplicate(&self, x: &Tensor) -> Result<Tensor>;
    /// x [1, …] repeated `times` times along the first axis → [times, …] (one prompt's text
    /// features for every image of a batch).
    fn repeat_batch(&self, x: &Tensor, times: usize) -> Result<Tensor>;
    /// BERT embeddings before their LayerNorm: `(word[id] + token_type0) + position[p]` for
    /// ids [B, T] (host i32, checked against the vocabulary), positions 0..T → [B, T, H].
    fn bert_embeddings(
        &self,
        ids: &Tensor,
        word: &Tensor,
        position: &Tensor,
        token_type0: &Tensor,
    ) -> Result<Tensor>;
    /// [`SelfAttention`] on q, k, v [B, T, H] with the key mask [B, T] (i32, non-zero =
    /// real token) → the context [B, T, H].
    fn self_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        spec: SelfAttention,
    ) -> Result<Tensor>;
    /// alpha · x + beta elementwise.
    fn scale(&self, x: Tensor, alpha: f32, beta: f32) -> Result<Tensor>;
    /// a + g ⊙ b with g [C] broadcast over the last dimension (VLFuse's gamma residuals).
    fn add_channel_scaled(&self, a: Tensor, g: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// NCHW levels [B, C, H_l, W_l] → one token sequence [B, Σ H_l·W_l, C], level-major then
    /// row-major (how VLFuse sees the pyramid).
    fn levels_to_tokens(&self, levels: &[&Tensor]) -> Result<Tensor>;
    /// The inverse of [`Backend::levels_to_tokens`] for levels of `sizes` (H_l, W_l).
    fn tokens_to_levels(&self, x: &Tensor, sizes: &[(usize, usize)]) -> Result<Vec<Tensor>>;
    /// VLFuse's bi-directional cross-attention (kernels/bi_attn.cu and its CPU twin): q, v_v
    /// [B, N_img, C], k, v_l [B, T, C], mask [B, T] i32, C = heads · head_dim; q carries the
    /// 1/sqrt(head_dim) scale. Returns (o_v [B, N_img, C], o_t [B, T, C]).
    fn bi_attn(
        &self,
        q: &Tensor,
        k: &Tensor,
        v_l: &Tensor,
        v_v: &Tensor,
        mask: &Tensor,
        heads: usize,
    ) -> Result<(Tensor, Tensor)>;
    /// 2-D convolution, groups 1, NCHW, square kernel from w [cout, cin, k, k], optional
    /// bias [cout].
    fn conv2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride: usize,
        pad: usize,
    ) -> Result<Tensor>;
    /// `F.interpolate(x, size=(oh, ow), mode="nearest")` on NCHW.
    fn upsample_nearest(&self, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor>;
    /// `F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=True)` on NCHW.
    fn upsample_bilinear_ac(&self, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor>;
    /// max(x, 0).
    fn relu(&self, x: Tensor) -> Result<Tensor>;
    /// ReLU6(x + 3) / 6.
    fn h_sigmoid(&self, x: Tensor) -> Result<Tensor>;
    /// Global average pool NCHW → [N, C] (sums in f64 on the CPU).
    fn avg_pool(&self, x: &Tensor) -> Result<Tensor>;
    /// x[n, …] · a[n] per image: x [N, …], a [N] or [N, 1].
    fn scale_images(&self, x: Tensor, a: &Tensor) -> Result<Tensor>;
    /// DyConv's offset conv output [B, 27, H, W] → (offsets [B, 18, H, W],
    /// sigmoid(mask) [B, 9, H, W]).
    fn split_offset_mask(&self, om: &Tensor) -> Result<(Tensor, Tensor)>;
    /// Modulated deformable 3×3 conv (DCNv2, pad 1) on x [B, C, H, W] with offsets/mask of a
    /// level of size `offset_src` (GLIP's coarser-level quirk, spec §8.1), bias [cout].
    #[allow(clippy::too_many_arguments)]
    fn deform_conv3x3(
        &self,
        x: &Tensor,
        offset: &Tensor,
        mask: &Tensor,
        w: &Tensor,
        b: &Tensor,
        stride: usize,
        offset_src: (usize, usize),
    ) -> Result<Tensor>;
    /// GroupNorm with `groups` and affine w, b [C] of each NCHW tensor of `xs` (the pyramid
    /// levels one GN module normalises: one batch and channel count, any sizes), each on its
    /// own statistics; on a device one grouped launch for all of them.
    fn group_norm(
        &self,
        xs: &[&Tensor],
        w: &Tensor,
        b: &Tensor,
        groups: usize,
        eps: f32,
    ) -> Result<Vec<Tensor>>;
    /// DYReLU's application (dyrelu.py:88-95): z [N, 4C] = (a1, b1, a2, b2) after
    /// h_sigmoid; y = max(x·a1' + b1', x·a2' + b2') with a1' = (a1 − 0.5)·2 + 1,
    /// b' = b − 0.5, a2' = (a2 − 0.5)·2.
    fn dyrelu_apply(&self, x: Tensor, z: &Tensor) -> Result<Tensor>;
    /// The head's text side (spec §3.6): proj [B, T, dim] = Linear(E / 2), token bias
    /// [B, T] = E · bias_lang + bias0.
    fn text_projection(
        &self,
        lang: &Tensor,
        w: &Tensor,
        b: &Tensor,
        bias_lang: &Tensor,
        bias0: f32,
    ) -> Result<(Tensor, Tensor)>;
    /// Dot-product region-word logits of each NCHW level [B, C, H_l, W_l] of `vs` against
    /// proj [B, T, C] and token bias [B, T]: [B, H_l·W_l, T] = clamp(v·proj / scale + bias,
    /// ±clamp); on a device one grouped launch for all levels of a dtype.
    fn dot_logits(
        &self,
        vs: &[&Tensor],
        proj: &Tensor,
        tok_bias: &Tensor,
        scale: f32,
        clamp: f32,
    ) -> Result<Vec<Tensor>>;
    /// [B, n_l, C] parts (one per pyramid level) concatenated along the position axis →
    /// [B, Σ n_l, C] (the dot-product logits packed over the pyramid, level-major).
    fn concat_positions(&self, parts: &[&Tensor]) -> Result<Tensor>;
    /// GLIP's phrase scores (spec §3.7, score_agg MEAN): for each label of `map`, the mean
    /// over its tokens of sigmoid(logits) — logits [B, N, T] f32 → [B, N, num_labels] f32;
    /// columns of no label are 0, a label with no token gets NaN (never above a threshold).
    fn phrase_scores(
        &self,
        logits: &Tensor,
        map: &PositiveMapCsr,
        num_labels: usize,
    ) -> Result<Tensor>;
    /// ATSS post-processing of a batch (spec §3.8–3.9): threshold, top-k per level, decode,
    /// clip, multi-label NMS, top-N with ties. scores [B, N, L], centerness [B, N, 1]
    /// (logits) and bbox_reg [B, N, 4] (deltas), all f32 and packed over `levels` in order;
    /// `image_hw` the (h, w) of each resized, un-padded image. Only each image's final
    /// detections come back to the host, in (level, anchor, label) order (the CPU may use
    /// GLIP's own top-k order, `AtssConfig::glip_topk_order`).
    fn atss_postprocess(
        &self,
        scores: &Tensor,
        centerness: &Tensor,
        bbox_reg: &Tensor,
        levels: &[Level],
        image_hw: &[(f32, f32)],
        cfg: &AtssConfig,
    ) -> Result<Vec<Vec<Candidate>>>;
    /// NCHW x zero-padded at the bottom and right to multiples of `m` (Swin's PatchEmbed).
    fn pad_to_multiple(&self, x: &Tensor, m: usize) -> Result<Tensor>;
    /// [B, C, H, W] → [B, H, W, C].
    fn nchw_to_nhwc(&self, x: &Tensor) -> Result<Tensor>;
    /// [B, H, W, C] → [B, C, H, W].
    fn nhwc_to_nchw(&self, x: &Tensor) -> Result<Tensor>;
    /// Swin's window gather: tokens [B, H, W, C] zero-padded to the [`WindowGrid`], rolled by
    /// −shift on both axes and cut into M×M windows → [B·nW, M², C].
    fn window_partition(&self, x: &Tensor, window: usize, shift: usize) -> Result<Tensor>;
    /// The inverse gather, added onto x: x [B, H, W, C] + the windows [B·nW, M², C] rolled
    /// back and cropped (the attention residual).
    fn window_merge_add(
        &self,
        x: Tensor,
        windows: &Tensor,
        window: usize,
        shift: usize,
    ) -> Result<Tensor>;
    /// Swin window attention: qkv [B·nW, M², 3C] (q, k, v, then heads) → [B·nW, M², C] with
    /// q scaled by head_dim^−½ before the product, the relative position bias [heads, M², M²]
    /// added, and for shifted blocks −100 between tokens of different regions (`region_ids`
    /// [nW, M²] i32 from [`WindowGrid::region_ids`]).
    fn window_attention(
        &self,
        qkv: &Tensor,
        rel_bias: &Tensor,
        region_ids: Option<&Tensor>,
        heads: usize,
    ) -> Result<Tensor>;
    /// Swin's PatchMerging gather: [B, H, W, C] → [B, ⌈H/2⌉, ⌈W/2⌉, 4C] as (x0 (even, even),
    /// x1 (odd row, even col), x2 (even row, odd col), x3 (odd, odd)), odd sizes zero-padded
    /// (spec §8.16).
    fn patch_merge_gather(&self, x: &Tensor) -> Result<Tensor>;
    /// What runs the ops, for people (e.g. "NVIDIA H100 80GB HBM3 (cuda:0)").
    fn describe(&self) -> String {
        self.device().name().to_string()
    }
    /// Planned device memory (record/replay of a forward in one arena), where the backend has
    /// it (CUDA).
    fn device_arena(&self) -> Option<&dyn crate::backend::plan::DeviceArena> {
        None
    }
    /// The device's clock for stage times (CUDA events on a GPU), where the backend has one.
    fn stage_clock(&self) -> Option<&dyn crate::backend::clock::StageClock> {
        None
    }
    /// Reading frames from device memory (CUDA on a GPU), where the backend can.
    fn device_frames(&self) -> Option<&dyn crate::backend::frames::DeviceFrames> {
        None
    }
    /// The ops this backend ran on the CPU in place of its device so far (none for the CPU
    /// backend itself).
    fn fallbacks(&self) -> Vec<FallbackCount> {
        Vec::new()
    }
    /// a + b elementwise (residuals).
    fn add(&self, a: Tensor, b: &Tensor) -> Result<Tensor> {
        self.axpby(1.0, &a, 1.0, b)
    }
}

/// The additive mask between different shift regions of a Swin window (`swint.py:373`):
/// −100, not −inf.
pub const SWIN_SHIFT_MASK: f32 = -100.0;

/// The window grid of one Swin stage: the token map H×W zero-padded to Hp×Wp, multiples of M.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGrid {
    pub h: usize,
    pub w: usize,
    pub hp: usize,
    pub wp: usize,
    pub m: usize,
}

impl WindowGrid {
    pub fn new(h: usize, w: usize, m: usize) -> Self {
        WindowGrid {
            h,
            w,
            hp: h.div_ceil(m) * m,
            wp: w.div_ceil(m) * m,
            m,
        }
    }
    pub fn num_windows(&self) -> usize {
        (self.hp / self.m) * (self.wp / self.m)
    }
    /// Token `t` of window `win` (in the shifted frame) → its (row, col) on the unshifted,
    /// padded grid: roll(−s) means shifted[r] = x[(r + s) mod Hp].
    pub fn source(&self, win: usize, t: usize, shift: usize) -> (usize, usize) {
        let nww = self.wp / self.m;
        let r = (win / nww) * self.m + t / self.m;
        let c = (win % nww) * self.m + t % self.m;
        ((r + shift) % self.hp, (c + shift) % self.wp)
    }
    /// Region id (0..9) of every token of every window in the shifted frame, [nW, M²]:
    /// row slices [0, Hp−M), [Hp−M, Hp−s), [Hp−s, Hp) and the same for columns
    /// (`swint.py:355-366`).
    pub fn region_ids(&self, shift: usize) -> Vec<i32> {
        let region = |v: usize, n: usize| -> i32 {
            if v < n - self.m {
                0
            } else if v < n - shift {
                1
            } else {
                2
            }
        };
        let nww = self.wp / self.m;
        let mm = self.m * self.m;
        let mut ids = vec![0i32; self.num_windows() * mm];
        for (win, row) in ids.chunks_mut(mm).enumerate() {
            for (t, id) in row.iter_mut().enumerate() {
                let r = (win / nww) * self.m + t / self.m;
                let c = (win % nww) * self.m + t % self.m;
                *id = region(r, self.hp) * 3 + region(c, self.wp);
            }
        }
        ids
    }
}

/// The shape rules, shared by every backend.
pub mod shape {
    use super::*;

    /// (m, k, n) of a matmul, checking that the inner dimensions agree.
    pub fn matmul(a: &Tensor, b: &Tensor, b_transposed: bool) -> Result<(usize, usize, usize)> {
        let [m, k] = a.dims::<2>("matmul")?;
        let [b0, b1] = b.dims::<2>("matmul")?;
        let (kb, n) = if b_transposed { (b1, b0) } else { (b0, b1) };
        if k != kb {
            return Err(Error::shape(
                "matmul",
                format!(
                    "a {:?} b {:?} transposed={b_transposed}",
                    a.shape(),
                    b.shape()
                ),
            ));
        }
        Ok((m, k, n))
    }

    /// (rows, in, out, output shape) of a Linear.
    pub fn linear(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<(usize, usize, usize, Vec<usize>)> {
        let [out, inp] = w.dims::<2>("linear weight")?;
        let xs = x.shape();
        if xs.last() != Some(&inp) || inp == 0 {
            return Err(Error::shape(
                "linear",
                format!("input {xs:?} for a weight {:?}", w.shape()),
            ));
        }
        if let Some(b) = b {
            if b.shape() != [out] {
                return Err(Error::shape(
                    "linear",
                    format!("bias {:?} for {out} outputs", b.shape()),
                ));
            }
        }
        let mut y = xs.to_vec();
        if let Some(l) = y.last_mut() {
            *l = out;
        }
        Ok((x.numel() / inp, inp, out, y))
    }

    /// The normalised width c of a LayerNorm.
    pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<usize> {
        let c = x.shape().last().copied().unwrap_or(0);
        if c == 0 || w.shape() != [c] || b.shape() != [c] {
            return Err(Error::shape(
                "layer_norm",
                format!("x {:?} w {:?} b {:?}", x.shape(), w.shape(), b.shape()),
            ));
        }
        Ok(c)
    }

    /// Two tensors of the same shape.
    /// The shape of [`Backend::repeat_batch`]: x [1, …] → [times, …].
    pub fn repeat_batch(x: &Tensor, times: usize) -> Result<Vec<usize>> {
        match x.shape().split_first() {
            Some((1, rest)) if times > 0 => Ok([&[times][..], rest].concat()),
            _ => Err(Error::shape(
                "repeat_batch",
                format!("x {:?} × {times}: expected [1, …] and times ≥ 1", x.shape()),
            )),
        }
    }

    /// (batch, Σ n_l, C) of [`Backend::concat_positions`]: parts [B, n_l, C] of one batch and
    /// width.
    pub fn concat_positions(parts: &[&Tensor]) -> Result<(usize, usize, usize)> {
        let first = parts
            .first()
            .ok_or_else(|| Error::shape("concat_positions", "no parts"))?;
        let [b, _, c] = first.dims::<3>("concat_positions")?;
        let mut n = 0;
        for p in parts {
            let [pb, pn, pc] = p.dims::<3>("concat_positions")?;
            if (pb, pc) != (b, c) || p.dtype() != first.dtype() {
                return Err(Error::shape(
                    "concat_positions",
                    format!(
                        "part {:?} {} after {:?}",
                        p.shape(),
                        p.dtype().name(),
                        first.shape()
                    ),
                ));
            }
            n += pn;
        }
        Ok((b, n, c))
    }

    /// (batch, positions, tokens) of [`Backend::phrase_scores`]; the map's tokens must be
    /// < T and its labels ≤ `num_labels`.
    pub fn phrase_scores(
        logits: &Tensor,
        map: &PositiveMapCsr,
        num_labels: usize,
    ) -> Result<(usize, usize, usize)> {
        let [b, n, t] = logits.dims::<3>("phrase_scores logits")?;
        if logits.dtype() != DType::F32 {
            return Err(Error::DType {
                op: "phrase_scores",
                expected: "f32 logits",
                got: logits.dtype().name(),
            });
        }
        let ranges_ok = map.offsets.len() == map.labels.len() + 1
            && map.offsets.windows(2).all(|w| w[0] <= w[1])
            && map.offsets.last().is_some_and(|&o| o <= map.tokens.len());
        if !ranges_ok
            || map.tokens.iter().any(|&k| k >= t)
            || map
                .labels
                .iter()
                .any(|&l| l == 0 || l as usize > num_labels)
        {
            return Err(Error::shape(
                "phrase_scores",
                format!("a positive map with tokens beyond {t} or labels beyond {num_labels}"),
            ));
        }
        Ok((b, n, t))
    }

    /// (batch, positions, labels) of [`Backend::atss_postprocess`]: f32 scores [B, N, L],
    /// centerness [B, N, 1], bbox_reg [B, N, 4], N the levels' positions, B image sizes.
    pub fn atss(
        scores: &Tensor,
        centerness: &Tensor,
        bbox_reg: &Tensor,
        levels: &[Level],
        image_hw: &[(f32, f32)],
    ) -> Result<(usize, usize, usize)> {
        let [b, n, l] = scores.dims::<3>("atss scores")?;
        let n_levels: usize = levels.iter().map(|lv| lv.hw()).sum();
        let f32s = [scores, centerness, bbox_reg]
            .iter()
            .all(|t| t.dtype() == DType::F32);
        if centerness.shape() != [b, n, 1]
            || bbox_reg.shape() != [b, n, 4]
            || n != n_levels
            || image_hw.len() != b
            || !f32s
        {
            return Err(Error::shape(
                "atss_postprocess",
                format!(
                    "scores {:?} centerness {:?} bbox_reg {:?} (f32) for {n_levels} positions of {} levels and {} images",
                    scores.shape(),
                    centerness.shape(),
                    bbox_reg.shape(),
                    levels.len(),
                    image_hw.len()
                ),
            ));
        }
        Ok((b, n, l))
    }

    pub fn same(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
        if a.shape() != b.shape() {
            return Err(Error::shape(
                op,
                format!("{:?} vs {:?}", a.shape(), b.shape()),
            ));
        }
        Ok(())
    }

    /// (batch, t, hidden, vocab, max positions) of the BERT embeddings.
    pub fn bert_embeddings(
        ids: &Tensor,
        word: &Tensor,
        position: &Tensor,
        token_type0: &Tensor,
    ) -> Result<(usize, usize, usize, usize)> {
        let [batch, t] = ids.dims::<2>("bert_embeddings ids")?;
        let [vocab, h] = word.dims::<2>("bert_embeddings word")?;
        let [max_pos, hp] = position.dims::<2>("bert_embeddings position")?;
        if hp != h || token_type0.shape() != [h] {
            return Err(Error::shape(
                "bert_embeddings",
                format!(
                    "word {:?} position {:?} token_type {:?}",
                    word.shape(),
                    position.shape(),
                    token_type0.shape()
                ),
            ));
        }
        if t > max_pos {
            return Err(Error::shape(
                "bert_embeddings",
                format!("{t} tokens exceed max_position_embeddings {max_pos}"),
            ));
        }
        Ok((batch, t, h, vocab))
    }

    /// The broadcast of a [C] vector over the last dimension of `a` (and `b`, same shape).
    pub fn channel_scaled(a: &Tensor, g: &Tensor, b: &Tensor) -> Result<usize> {
        same("add_channel_scaled", a, b)?;
        let c = a.shape().last().copied().unwrap_or(0);
        if c == 0 || g.shape() != [c] {
            return Err(Error::shape(
                "add_channel_scaled",
                format!("gamma {:?} for {:?}", g.shape(), a.shape()),
            ));
        }
        Ok(c)
    }

    /// (batch, channels, Σ H·W) of levels sharing batch and channels.
    pub fn levels(levels: &[&Tensor]) -> Result<(usize, usize, usize)> {
        let first = levels
            .first()
            .ok_or_else(|| Error::shape("levels_to_tokens", "no levels"))?;
        let [b, c, _, _] = first.dims::<4>("levels_to_tokens")?;
        let mut n = 0;
        for (l, t) in levels.iter().enumerate() {
            let [tb, tc, h, w] = t.dims::<4>("levels_to_tokens")?;
            if tb != b || tc != c {
                return Err(Error::shape(
                    "levels_to_tokens",
                    format!("level {l} is {:?}, level 0 {:?}", t.shape(), first.shape()),
                ));
            }
            n += h * w;
        }
        Ok((b, c, n))
    }

    /// (batch, channels) of the levels one GroupNorm normalises: one or more NCHW tensors of
    /// one batch and channel count; affine w, b of C elements.
    pub fn group_norm(xs: &[&Tensor], w: &Tensor, b: &Tensor) -> Result<(usize, usize)> {
        const OP: &str = "group_norm";
        let first = xs.first().ok_or_else(|| Error::shape(OP, "no levels"))?;
        let [n, c, _, _] = first.dims::<4>(OP)?;
        for (l, t) in xs.iter().enumerate() {
            let [tn, tc, _, _] = t.dims::<4>(OP)?;
            if (tn, tc) != (n, c) {
                return Err(Error::shape(
                    OP,
                    format!("level {l} is {:?}, level 0 {:?}", t.shape(), first.shape()),
                ));
            }
        }
        if w.numel() != c || b.numel() != c {
            return Err(Error::shape(
                OP,
                format!("affine of {} and {} for {c} channels", w.numel(), b.numel()),
            ));
        }
        Ok((n, c))
    }

    /// (batch, channels) of a [B, Σ H·W, C] sequence split into levels of `sizes`.
    pub fn tokens(x: &Tensor, sizes: &[(usize, usize)]) -> Result<(usize, usize)> {
        let [b, n, c] = x.dims::<3>("tokens_to_levels")?;
        let want: usize = sizes.iter().map(|(h, w)| h * w).sum();
        if n != want || sizes.is_empty() {
            return Err(Error::shape(
                "tokens_to_levels",
                format!("{n} tokens for levels {sizes:?} ({want} positions)"),
            ));
        }
        Ok((b, c))
    }

    /// The [`BiAttnShape`](crate::backend::cpu::bi_attn::BiAttnShape) of a bi_attn call.
    pub fn bi_attn(
        q: &Tensor,
        k: &Tensor,
        v_l: &Tensor,
        v_v: &Tensor,
        mask: &Tensor,
        heads: usize,
    ) -> Result<crate::backend::cpu::bi_attn::BiAttnShape> {
        let [b, n_img, c] = q.dims::<3>("bi_attn q")?;
        let [bk, t, ck] = k.dims::<3>("bi_attn k")?;
        same("bi_attn v_v", q, v_v)?;
        same("bi_attn v_l", k, v_l)?;
        if bk != b || ck != c || mask.shape() != [b, t] || heads == 0 || !c.is_multiple_of(heads) {
            return Err(Error::shape(
                "bi_attn",
                format!(
                    "q {:?} k {:?} mask {:?} heads {heads}",
                    q.shape(),
                    k.shape(),
                    mask.shape()
                ),
            ));
        }
        Ok(crate::backend::cpu::bi_attn::BiAttnShape {
            batch: b,
            heads,
            head_dim: c / heads,
            n_img,
            n_txt: t,
        })
    }

    /// (n, c, h, w) of an NCHW tensor.
    pub fn nchw(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let [n, c, h, w] = x.dims::<4>(op)?;
        Ok((n, c, h, w))
    }

    /// (cout, k) of a conv weight [cout, cin, k, k] for input channels `cin`.
    pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<(usize, usize)> {
        let (_, c, _, _) = nchw("conv2d", x)?;
        let [cout, cin, k, k2] = w.dims::<4>("conv2d weight")?;
        if cin != c || k != k2 || k == 0 || b.is_some_and(|b| b.shape() != [cout]) {
            return Err(Error::shape(
                "conv2d",
                format!(
                    "input {:?} weight {:?} bias {:?}",
                    x.shape(),
                    w.shape(),
                    b.map(|b| b.shape().to_vec())
                ),
            ));
        }
        Ok((cout, k))
    }

    /// (batch, t, lang width, dim) of the head's text projection.
    pub fn text_projection(
        lang: &Tensor,
        w: &Tensor,
        b: &Tensor,
        bias_lang: &Tensor,
    ) -> Result<(usize, usize, usize, usize)> {
        let [bt, t, ld] = lang.dims::<3>("text_projection")?;
        let [dim, wl] = w.dims::<2>("text_projection weight")?;
        if wl != ld || b.shape() != [dim] || bias_lang.shape() != [ld] {
            return Err(Error::shape(
                "text_projection",
                format!(
                    "lang {:?} weight {:?} bias {:?} bias_lang {:?}",
                    lang.shape(),
                    w.shape(),
                    b.shape(),
                    bias_lang.shape()
                ),
            ));
        }
        Ok((bt, t, ld, dim))
    }

    /// (batch, t, dim) of the head's dot-product logits.
    /// (batch, tokens, dim) of the levels of a dot-product logits op (at least one).
    pub fn dot_logits_levels(
        vs: &[&Tensor],
        proj: &Tensor,
        tok_bias: &Tensor,
    ) -> Result<(usize, usize, usize)> {
        let first = vs
            .first()
            .ok_or_else(|| Error::shape("dot_logits", "no levels"))?;
        let r = dot_logits(first, proj, tok_bias)?;
        for v in &vs[1..] {
            dot_logits(v, proj, tok_bias)?;
        }
        Ok(r)
    }

    pub fn dot_logits(
        v: &Tensor,
        proj: &Tensor,
        tok_bias: &Tensor,
    ) -> Result<(usize, usize, usize)> {
        let (b, c, _, _) = nchw("dot_logits", v)?;
        let [pb, t, dim] = proj.dims::<3>("dot_logits proj")?;
        if pb != b || dim != c || tok_bias.shape() != [b, t] {
            return Err(Error::shape(
                "dot_logits",
                format!(
                    "visual {:?} proj {:?} token bias {:?}",
                    v.shape(),
                    proj.shape(),
                    tok_bias.shape()
                ),
            ));
        }
        Ok((b, t, dim))
    }

    /// The image count N of x [N, …] with one factor per image.
    pub fn per_image(op: &'static str, x: &Tensor, a: &Tensor) -> Result<usize> {
        let n = x.shape().first().copied().unwrap_or(0);
        if n == 0 || a.numel() != n {
            return Err(Error::shape(
                op,
                format!("x {:?} with per-image factors {:?}", x.shape(), a.shape()),
            ));
        }
        Ok(n)
    }

    /// (b, h, w, c) of a [B, H, W, C] token map.
    pub fn nhwc(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let [b, h, w, c] = x.dims::<4>(op)?;
        if h == 0 || w == 0 || c == 0 {
            return Err(Error::shape(op, format!("empty token map {:?}", x.shape())));
        }
        Ok((b, h, w, c))
    }

    /// (windows per image, M², C) of window attention, checking the bias and region ids.
    pub fn window_attention(
        qkv: &Tensor,
        rel_bias: &Tensor,
        region_ids: Option<&Tensor>,
        heads: usize,
    ) -> Result<(usize, usize, usize)> {
        let [nw_all, mm, c3] = qkv.dims::<3>("window_attention qkv")?;
        let c = c3 / 3;
        if c3 % 3 != 0
            || heads == 0
            || !c.is_multiple_of(heads)
            || rel_bias.shape() != [heads, mm, mm]
        {
            return Err(Error::shape(
                "window_attention",
                format!(
                    "qkv {:?} bias {:?} heads {heads}",
                    qkv.shape(),
                    rel_bias.shape()
                ),
            ));
        }
        let nw = match region_ids {
            Some(r) => {
                let [nw, rmm] = r.dims::<2>("window_attention region ids")?;
                if rmm != mm || nw == 0 || !nw_all.is_multiple_of(nw) {
                    return Err(Error::shape(
                        "window_attention",
                        format!("region ids {:?} for qkv {:?}", r.shape(), qkv.shape()),
                    ));
                }
                nw
            }
            None => nw_all,
        };
        Ok((nw, mm, c))
    }

    /// (batch, t, hidden, head width) of a self-attention.
    pub fn self_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        heads: usize,
    ) -> Result<(usize, usize, usize, usize)> {
        let [b, t, h] = q.dims::<3>("self_attention q")?;
        same("self_attention k", q, k)?;
        same("self_attention v", q, v)?;
        if mask.shape() != [b, t] {
            return Err(Error::shape(
                "self_attention",
                format!("mask {:?} for q {:?}", mask.shape(), q.shape()),
            ));
        }
        if heads == 0 || !h.is_multiple_of(heads) {
            return Err(Error::shape(
                "self_attention",
                format!("hidden {h} is not a multiple of {heads} heads"),
            ));
        }
        Ok((b, t, h, h / heads))
    }
}

/// The error of an op a backend does not implement yet.
pub fn not_on_device(op: &'static str, device: Device) -> Error {
    Error::NotOnDevice { op, device }
}
