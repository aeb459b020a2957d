//! VLFuse (MHA-B): GLIP's BiAttentionBlockForCheckpoint around BiMultiHeadAttention
//! (`modeling/rpn/vldyhead.py:350-557`, `utils/fuse_helper.py:171-303, 344-426`), CPU f32.

use super::layers::HostLinear as Linear;
use super::{FeatureMap, WeightMap};
use crate::backend::cpu::bi_attn::{bi_attn, BiAttnShape};
use crate::backend::cpu::nn::layer_norm;
use crate::error::{Error, Result};

/// Hard-coded in GLIP (`vldyhead.py:436-440`), not in any config.
pub const NUM_HEADS: usize = 8;
/// nn.LayerNorm default in BiAttentionBlock (not BERT's 1e-12).
pub const LN_EPS: f32 = 1e-5;

/// Shape of a tensor that must exist, for inferring dimensions from the checkpoint.
fn shape_of<'a>(w: &'a WeightMap, key: &str) -> Result<&'a [usize]> {
    w.tensors
        .get(key)
        .map(|t| t.shape())
        .ok_or_else(|| Error::Weights {
            path: w.source.clone(),
            msg: format!("missing tensor `{key}` (VLFuse)"),
        })
}

/// One VLFuse layer of the VL-DyHead tower.
pub struct VLFuse {
    pub v_dim: usize,
    pub l_dim: usize,
    pub embed_dim: usize,
    pub heads: usize,
    ln_v: (Vec<f32>, Vec<f32>),
    ln_l: (Vec<f32>, Vec<f32>),
    v_proj: Linear,
    l_proj: Linear,
    values_v_proj: Linear,
    values_l_proj: Linear,
    out_v_proj: Linear,
    out_l_proj: Linear,
    gamma_v: Vec<f32>,
    gamma_l: Vec<f32>,
}

impl VLFuse {
    /// Loads `{prefix}b_attn.…` (e.g. prefix `rpn.head.dyhead_tower.0.`). v_dim, l_dim and
    /// embed_dim come from `b_attn.attn.v_proj.weight` [embed, v_dim] and
    /// `b_attn.attn.l_proj.weight` [embed, l_dim]; the head count is GLIP's fixed 8.
    pub fn load(w: &WeightMap, prefix: &str) -> Result<VLFuse> {
        let p = format!("{prefix}b_attn.");
        let vs = shape_of(w, &format!("{p}attn.v_proj.weight"))?;
        let ls = shape_of(w, &format!("{p}attn.l_proj.weight"))?;
        if vs.len() != 2 || ls.len() != 2 || vs[0] != ls[0] {
            return Err(Error::Weights {
                path: w.source.clone(),
                msg: format!("`{p}attn.v_proj.weight` {vs:?} and `{p}attn.l_proj.weight` {ls:?} are not [embed, v_dim] / [embed, l_dim]"),
            });
        }
        let (embed_dim, v_dim, l_dim) = (vs[0], vs[1], ls[1]);
        if !embed_dim.is_multiple_of(NUM_HEADS) {
            return Err(Error::Weights {
                path: w.source.clone(),
                msg: format!("VLFuse embed_dim {embed_dim} is not a multiple of {NUM_HEADS} heads"),
            });
        }
        let ln = |name: &str, c: usize| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((
                w.f32(&format!("{p}{name}.weight"), &[c])?,
                w.f32(&format!("{p}{name}.bias"), &[c])?,
            ))
        };
        let a = format!("{p}attn.");
        Ok(VLFuse {
            v_dim,
            l_dim,
            embed_dim,
            heads: NUM_HEADS,
            ln_v: ln("layer_norm_v", v_dim)?,
            ln_l: ln("layer_norm_l", l_dim)?,
            v_proj: Linear::load(w, &format!("{a}v_proj"), embed_dim, v_dim)?,
            l_proj: Linear::load(w, &format!("{a}l_proj"), embed_dim, l_dim)?,
            values_v_proj: Linear::load(w, &format!("{a}values_v_proj"), embed_dim, v_dim)?,
            values_l_proj: Linear::load(w, &format!("{a}values_l_proj"), embed_dim, l_dim)?,
            out_v_proj: Linear::load(w, &format!("{a}out_v_proj"), v_dim, embed_dim)?,
            out_l_proj: Linear::load(w, &format!("{a}out_l_proj"), l_dim, embed_dim)?,
            gamma_v: w.f32(&format!("{p}gamma_v"), &[v_dim])?,
            gamma_l: w.f32(&format!("{p}gamma_l"), &[l_dim])?,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.heads
    }

    /// visual: pyramid levels [B, v_dim, H_l, W_l]; lang: [B, t, l_dim]; mask: [B, t]
    /// (non-zero = real token). Returns the fused levels (same shapes) and the new
    /// language hidden [B, t, l_dim]. Any t works: GLIP's 256-token padded run and the
    /// real-tokens-only run give the same real rows (spec §4, exact truncation).
    pub fn forward(
        &self,
        visual: &[FeatureMap],
        lang: &[f32],
        mask: &[i32],
        t: usize,
    ) -> Result<(Vec<FeatureMap>, Vec<f32>)> {
        let first = visual
            .first()
            .ok_or_else(|| Error::shape("VLFuse", "no visual levels"))?;
        let b = first.n;
        for (l, f) in visual.iter().enumerate() {
            if f.n != b || f.c != self.v_dim {
                return Err(Error::shape(
                    "VLFuse",
                    format!(
                        "level {l} is [{}, {}, {}, {}], expected batch {b} and {} channels",
                        f.n, f.c, f.h, f.w, self.v_dim
                    ),
                ));
            }
        }
        if lang.len() != b * t * self.l_dim || mask.len() != b * t {
            return Err(Error::shape(
                "VLFuse",
                format!(
                    "lang {} / mask {} elements for batch {b}, t {t}, l_dim {}",
                    lang.len(),
                    mask.len(),
                    self.l_dim
                ),
            ));
        }
        let n_img: usize = visual.iter().map(|f| f.hw()).sum();
        let c = self.v_dim;

        // Flatten NCHW levels to [B, N_img, C], level-major then row-major.
        let mut v = vec![0.0f32; b * n_img * c];
        for bi in 0..b {
            let mut pos = 0;
            for f in visual {
                let img = f.image(bi);
                let hw = f.hw();
                for ch in 0..c {
                    for (p, &x) in img[ch * hw..(ch + 1) * hw].iter().enumerate() {
                        v[(bi * n_img + pos + p) * c + ch] = x;
                    }
                }
                pos += hw;
            }
        }
        layer_norm(&mut v, c, &self.ln_v.0, &self.ln_v.1, LN_EPS)?;
        let mut l = lang.to_vec();
        layer_norm(&mut l, self.l_dim, &self.ln_l.0, &self.ln_l.1, LN_EPS)?;

        let (rv, rl) = (b * n_img, b * t);
        let scale = 1.0 / (self.head_dim() as f32).sqrt();
        let mut q = self.v_proj.apply(&v, rv)?;
        for x in q.iter_mut() {
            *x *= scale;
        }
        let k = self.l_proj.apply(&l, rl)?;
        let vv = self.values_v_proj.apply(&v, rv)?;
        let vl = self.values_l_proj.apply(&l, rl)?;
        let shape = BiAttnShape {
            batch: b,
            heads: self.heads,
            head_dim: self.head_dim(),
            n_img,
            n_txt: t,
        };
        let (o_v, o_t) = bi_attn(&shape, &q, &k, &vl, &vv, mask)?;
        drop((q, k, vv, vl));
        let dv = self.out_v_proj.apply(&o_v, rv)?;
        let dl = self.out_l_proj.apply(&o_t, rl)?;

        // Residual on the normalised inputs (fuse_helper.py:419-426).
        for (row, drow) in v.chunks_mut(c).zip(dv.chunks(c)) {
            for ((x, &d), &g) in row.iter_mut().zip(drow).zip(&self.gamma_v) {
                *x += g * d;
            }
        }
        for (row, drow) in l.chunks_mut(self.l_dim).zip(dl.chunks(self.l_dim)) {
            for ((x, &d), &g) in row.iter_mut().zip(drow).zip(&self.gamma_l) {
                *x += g * d;
            }
        }

        let mut out = Vec::with_capacity(visual.len());
        let mut pos = 0;
        for f in visual {
            let hw = f.hw();
            let mut m = FeatureMap::zeros(b, c, f.h, f.w);
            for bi in 0..b {
                for p in 0..hw {
                    let src = &v[(bi * n_img + pos + p) * c..(bi * n_img + pos + p + 1) * c];
                    for (ch, &x) in src.iter().enumerate() {
                        m.data[(bi * c + ch) * hw + p] = x;
                    }
                }
            }
            pos += hw;
            out.push(m);
        }
        Ok((out, l))
    }
}
