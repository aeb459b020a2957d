//! GLIP's DyConv (one VL-DyHead tower layer: `modeling/rpn/vldyhead.py` DyConv with
//! deformable Conv3x3Norm, DyFuse attention and DYReLU), on the CPU backend. Spec §3.5.3.
//!
//! Per level l (P3..P7), with om = offset(x_l), off = om[:, :18], mask = sigmoid(om[:, 18:]):
//! terms = [GN1(DCN1(x_l)), GN2(DCN2_stride2(x_{l-1})) if l > 0,
//!          upsample_ac(GN0(DCN0(x_{l+1}))) if l < 4], all with level l's off/mask — the last
//! one reading the level-l buffer as if it had level l+1's size (GLIP's quirk, §8.1);
//! y_l = Σ a_k·term_k / n with a_k = h_sigmoid(ReLU(conv1x1(avgpool(term_k)))) per image;
//! out_l = DYReLU(y_l).

use super::{FeatureMap, WeightMap};
use crate::backend::cpu::deform_conv::{modulated_deform_conv3x3, DeformConvShape, TAPS};
use crate::backend::cpu::group_norm::{group_norm, GroupNormShape};
use crate::backend::cpu::nn::{
    conv2d, h_sigmoid, linear, sigmoid, upsample_bilinear_align_corners,
};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// GroupNorm groups of every DyHead conv (Conv3x3Norm bn_type ['gn', 16]).
pub const GN_GROUPS: usize = 16;
const GN_EPS: f32 = 1e-5;
/// Pyramid levels DyConv mixes (P3..P7).
pub const LEVELS: usize = 5;

/// ModulatedDeformConv(C→C, 3x3, pad 1, bias) followed by GroupNorm(16, C).
pub struct DeformConvNorm {
    pub stride: usize,
    /// [C, C, 3, 3]
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub gn_weight: Vec<f32>,
    pub gn_bias: Vec<f32>,
}

impl DeformConvNorm {
    fn load(w: &WeightMap, prefix: &str, c: usize, stride: usize) -> Result<Self> {
        Ok(DeformConvNorm {
            stride,
            weight: w.f32(&format!("{prefix}conv.weight"), &[c, c, 3, 3])?,
            bias: w.f32(&format!("{prefix}conv.bias"), &[c])?,
            gn_weight: w.f32(&format!("{prefix}bn.weight"), &[c])?,
            gn_bias: w.f32(&format!("{prefix}bn.bias"), &[c])?,
        })
    }

    /// GN(DCN(x)) with offsets/mask of a level of size `src` (h, w): [B, 18|9, src_h, src_w].
    fn forward(
        &self,
        x: &FeatureMap,
        off: &[f32],
        mask: &[f32],
        src: (usize, usize),
    ) -> Result<FeatureMap> {
        let s = DeformConvShape::new(x.n, x.c, x.c, x.h, x.w, self.stride)
            .with_offset_source(src.0, src.1);
        let y = modulated_deform_conv3x3(&s, &x.data, off, mask, &self.weight, Some(&self.bias))?;
        let (oh, ow) = (s.out_h(), s.out_w());
        let mut out = vec![0.0f32; y.len()];
        group_norm(
            &GroupNormShape {
                groups: GN_GROUPS,
                eps: GN_EPS,
                ..GroupNormShape::glip(x.n, x.c)
            },
            oh * ow,
            &y,
            &self.gn_weight,
            &self.gn_bias,
            &mut out,
        )?;
        FeatureMap::new(x.n, x.c, oh, ow, out)
    }
}

/// DYReLU(C, C) with GLIP's defaults: reduction 4, λ_a 2, K2, bias, init_a [1, 0], init_b [0, 0].
pub struct DyRelu {
    /// [C/4, C], [C/4]
    pub fc1_w: Vec<f32>,
    pub fc1_b: Vec<f32>,
    /// [4C, C/4], [4C]
    pub fc2_w: Vec<f32>,
    pub fc2_b: Vec<f32>,
}

impl DyRelu {
    fn load(w: &WeightMap, prefix: &str, c: usize) -> Result<Self> {
        let sq = c / 4;
        Ok(DyRelu {
            fc1_w: w.f32(&format!("{prefix}fc.0.weight"), &[sq, c])?,
            fc1_b: w.f32(&format!("{prefix}fc.0.bias"), &[sq])?,
            fc2_w: w.f32(&format!("{prefix}fc.2.weight"), &[4 * c, sq])?,
            fc2_b: w.f32(&format!("{prefix}fc.2.bias"), &[4 * c])?,
        })
    }

    fn forward(&self, y: &FeatureMap) -> Result<FeatureMap> {
        let (n, c) = (y.n, y.c);
        let pooled = avgpool(y);
        let mut z = linear(&pooled, n, &self.fc1_w, self.fc1_b.len(), Some(&self.fc1_b))?;
        z.iter_mut().for_each(|v| *v = v.max(0.0));
        let mut z = linear(&z, n, &self.fc2_w, 4 * c, Some(&self.fc2_b))?;
        z.iter_mut().for_each(|v| *v = h_sigmoid(*v));
        let hw = y.hw();
        let mut out = y.data.clone();
        out.par_chunks_mut(hw).enumerate().for_each(|(i, plane)| {
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
        FeatureMap::new(n, c, y.h, y.w, out)
    }
}

/// Intermediates of one forward, for tests against the golden taps.
pub struct DyConvTrace {
    /// Raw 27-channel offset conv output per level, [B, 27, H_l, W_l].
    pub offset_mask: Vec<FeatureMap>,
    /// Σ a_k·term_k / n per level (the DYReLU input).
    pub pre_dyrelu: Vec<FeatureMap>,
    pub output: Vec<FeatureMap>,
}

/// One DyConv layer of the VL-DyHead tower.
pub struct DyConv {
    pub channels: usize,
    /// DyConv[0] (coarser level, stride 1), [1] (same level), [2] (finer level, stride 2).
    pub convs: [DeformConvNorm; 3],
    /// offset conv [27, C, 3, 3], [27]
    pub offset_w: Vec<f32>,
    pub offset_b: Vec<f32>,
    /// AttnConv 1x1 C→1: [C], scalar bias
    pub attn_w: Vec<f32>,
    pub attn_b: f32,
    pub relu: DyRelu,
}

impl DyConv {
    /// Loads `{prefix}DyConv.{0,1,2}.{conv,bn}.*`, `{prefix}offset.*`, `{prefix}AttnConv.1.*`,
    /// `{prefix}relu.fc.{0,2}.*` (prefix e.g. `rpn.head.dyhead_tower.2.`).
    pub fn load(w: &WeightMap, prefix: &str, channels: usize) -> Result<DyConv> {
        let c = channels;
        if c == 0 || !c.is_multiple_of(GN_GROUPS) {
            return Err(Error::Config(format!(
                "DyConv channels {c} must be a positive multiple of {GN_GROUPS}"
            )));
        }
        Ok(DyConv {
            channels: c,
            convs: [
                DeformConvNorm::load(w, &format!("{prefix}DyConv.0."), c, 1)?,
                DeformConvNorm::load(w, &format!("{prefix}DyConv.1."), c, 1)?,
                DeformConvNorm::load(w, &format!("{prefix}DyConv.2."), c, 2)?,
            ],
            offset_w: w.f32(&format!("{prefix}offset.weight"), &[3 * TAPS, c, 3, 3])?,
            offset_b: w.f32(&format!("{prefix}offset.bias"), &[3 * TAPS])?,
            attn_w: w.f32(&format!("{prefix}AttnConv.1.weight"), &[1, c, 1, 1])?,
            attn_b: w.f32(&format!("{prefix}AttnConv.1.bias"), &[1])?[0],
            relu: DyRelu::load(w, &format!("{prefix}relu."), c)?,
        })
    }

    /// The five output levels for five input levels (P3..P7, same batch and channels).
    pub fn forward(&self, x: &[FeatureMap]) -> Result<Vec<FeatureMap>> {
        Ok(self.forward_traced(x)?.output)
    }

    /// [`forward`](Self::forward) keeping the intermediates.
    pub fn forward_traced(&self, x: &[FeatureMap]) -> Result<DyConvTrace> {
        const OP: &str = "DyConv";
        if x.len() != LEVELS {
            return Err(Error::shape(
                OP,
                format!("{} levels, expected {LEVELS}", x.len()),
            ));
        }
        let (n, c) = (x[0].n, self.channels);
        for (l, f) in x.iter().enumerate() {
            if f.n != n || f.c != c || f.h == 0 || f.w == 0 {
                return Err(Error::shape(
                    OP,
                    format!(
                        "level {l} is [{}, {}, {}, {}], expected batch {n}, {c} channels",
                        f.n, f.c, f.h, f.w
                    ),
                ));
            }
        }
        let mut trace = DyConvTrace {
            offset_mask: Vec::new(),
            pre_dyrelu: Vec::new(),
            output: Vec::new(),
        };
        for l in 0..LEVELS {
            let xl = &x[l];
            let (h, w) = (xl.h, xl.w);
            let hw = h * w;
            let (om, _, _) = conv2d(
                &xl.data,
                n,
                c,
                h,
                w,
                &self.offset_w,
                3 * TAPS,
                3,
                Some(&self.offset_b),
                1,
                1,
            )?;
            let mut off = Vec::with_capacity(n * 2 * TAPS * hw);
            let mut mask = Vec::with_capacity(n * TAPS * hw);
            for img in om.chunks(3 * TAPS * hw) {
                off.extend_from_slice(&img[..2 * TAPS * hw]);
                mask.extend(img[2 * TAPS * hw..].iter().map(|&v| sigmoid(v)));
            }
            let mut terms = vec![self.convs[1].forward(xl, &off, &mask, (h, w))?];
            if l > 0 {
                let t = self.convs[2].forward(&x[l - 1], &off, &mask, (h, w))?;
                if (t.h, t.w) != (h, w) {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "stride-2 conv of level {} gives {}x{}, level {l} is {h}x{w}",
                            l - 1,
                            t.h,
                            t.w
                        ),
                    ));
                }
                terms.push(t);
            }
            if l + 1 < LEVELS {
                let nx = &x[l + 1];
                if nx.hw() > hw {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "level {} ({}x{}) is larger than level {l} ({h}x{w})",
                            l + 1,
                            nx.h,
                            nx.w
                        ),
                    ));
                }
                let t = self.convs[0].forward(nx, &off, &mask, (h, w))?;
                let mut up = Vec::with_capacity(n * c * hw);
                for plane in t.data.chunks(t.hw()) {
                    up.extend(upsample_bilinear_align_corners(plane, t.h, t.w, h, w));
                }
                terms.push(FeatureMap::new(n, c, h, w, up)?);
            }
            let inv = 1.0 / terms.len() as f32;
            let mut y = vec![0.0f32; n * c * hw];
            for t in &terms {
                let pooled = avgpool(t);
                for b in 0..n {
                    let s: f32 = pooled[b * c..(b + 1) * c]
                        .iter()
                        .zip(&self.attn_w)
                        .map(|(p, q)| p * q)
                        .sum::<f32>()
                        + self.attn_b;
                    let a = h_sigmoid(s.max(0.0));
                    for (d, v) in y[b * c * hw..(b + 1) * c * hw].iter_mut().zip(t.image(b)) {
                        *d += v * a;
                    }
                }
            }
            y.iter_mut().for_each(|v| *v *= inv);
            let y = FeatureMap::new(n, c, h, w, y)?;
            trace.output.push(self.relu.forward(&y)?);
            trace.pre_dyrelu.push(y);
            trace
                .offset_mask
                .push(FeatureMap::new(n, 3 * TAPS, h, w, om)?);
        }
        Ok(trace)
    }
}

/// Global average pool: [N, C, H, W] → [N, C] (f64 sums).
fn avgpool(x: &FeatureMap) -> Vec<f32> {
    let hw = x.hw();
    x.data
        .chunks(hw)
        .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32)
        .collect()
}
