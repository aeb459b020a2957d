//! VLFuse (MHA-B): GLIP's BiAttentionBlockForCheckpoint around BiMultiHeadAttention
//! (`modeling/rpn/vldyhead.py:350-557`, `utils/fuse_helper.py:171-303, 344-426`), over the
//! op interface.

use super::layers::{LayerNorm, Linear};
use super::vars::{Init, Vars};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Hard-coded in GLIP (`vldyhead.py:436-440`), not in any config.
pub const NUM_HEADS: usize = 8;
/// nn.LayerNorm default in BiAttentionBlock (not BERT's 1e-12).
pub const LN_EPS: f32 = 1e-5;

/// One VLFuse layer of the VL-DyHead tower.
pub struct VLFuse {
    pub v_dim: usize,
    pub l_dim: usize,
    pub embed_dim: usize,
    pub heads: usize,
    ln_v: LayerNorm,
    ln_l: LayerNorm,
    v_proj: Linear,
    l_proj: Linear,
    values_v_proj: Linear,
    values_l_proj: Linear,
    out_v_proj: Linear,
    out_l_proj: Linear,
    gamma_v: Tensor,
    gamma_l: Tensor,
}

impl VLFuse {
    /// `b_attn.…` under `vars` (e.g. `rpn.head.dyhead_tower.0.`): visual channels `v_dim`
    /// (MODEL.DYHEAD.CHANNELS), language width `l_dim` (MODEL.LANGUAGE_BACKBONE.LANG_DIM),
    /// `embed_dim` (MODEL.DYHEAD.FUSE_CONFIG.EMBED_DIM); the head count is GLIP's fixed 8.
    /// `gamma_init` is GLIP's initial gamma (random weights only).
    pub fn new(
        vars: &Vars,
        v_dim: usize,
        l_dim: usize,
        embed_dim: usize,
        gamma_init: f32,
    ) -> Result<VLFuse> {
        if !embed_dim.is_multiple_of(NUM_HEADS) {
            return Err(Error::Config(format!(
                "VLFuse embed_dim {embed_dim} is not a multiple of {NUM_HEADS} heads"
            )));
        }
        let p = vars.pp("b_attn");
        let a = p.pp("attn");
        Ok(VLFuse {
            v_dim,
            l_dim,
            embed_dim,
            heads: NUM_HEADS,
            gamma_v: p.get("gamma_v", &[v_dim], Init::Const(gamma_init))?,
            gamma_l: p.get("gamma_l", &[l_dim], Init::Const(gamma_init))?,
            ln_v: LayerNorm::new(&p.pp("layer_norm_v"), v_dim, LN_EPS)?,
            ln_l: LayerNorm::new(&p.pp("layer_norm_l"), l_dim, LN_EPS)?,
            v_proj: Linear::new(&a.pp("v_proj"), embed_dim, v_dim)?,
            l_proj: Linear::new(&a.pp("l_proj"), embed_dim, l_dim)?,
            values_v_proj: Linear::new(&a.pp("values_v_proj"), embed_dim, v_dim)?,
            values_l_proj: Linear::new(&a.pp("values_l_proj"), embed_dim, l_dim)?,
            out_v_proj: Linear::new(&a.pp("out_v_proj"), v_dim, embed_dim)?,
            out_l_proj: Linear::new(&a.pp("out_l_proj"), l_dim, embed_dim)?,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.heads
    }

    /// visual: pyramid levels [B, v_dim, H_l, W_l]; lang: [B, t, l_dim]; mask: [B, t] i32
    /// on the backend (non-zero = real token). Returns the fused levels (same shapes) and
    /// the new language hidden [B, t, l_dim]. Any t works: GLIP's 256-token padded run and
    /// the real-tokens-only run give the same real rows (spec §4, exact truncation).
    pub fn forward(
        &self,
        be: &dyn Backend,
        visual: &[Tensor],
        lang: &Tensor,
        mask: &Tensor,
    ) -> Result<(Vec<Tensor>, Tensor)> {
        let levels: Vec<&Tensor> = visual.iter().collect();
        let sizes: Vec<(usize, usize)> = visual
            .iter()
            .map(|t| t.dims::<4>("VLFuse").map(|[_, _, h, w]| (h, w)))
            .collect::<Result<_>>()?;
        let v = self.ln_v.forward(be, &be.levels_to_tokens(&levels)?)?;
        let l = self.ln_l.forward(be, lang)?;
        let scale = 1.0 / (self.head_dim() as f32).sqrt();
        let q = be.scale(self.v_proj.forward(be, &v)?, scale, 0.0)?;
        let k = self.l_proj.forward(be, &l)?;
        let vv = self.values_v_proj.forward(be, &v)?;
        let vl = self.values_l_proj.forward(be, &l)?;
        let (o_v, o_t) = be.bi_attn(&q, &k, &vl, &vv, mask, self.heads)?;
        drop((q, k, vv, vl));
        let dv = self.out_v_proj.forward(be, &o_v)?;
        let dl = self.out_l_proj.forward(be, &o_t)?;
        // Residual on the normalised inputs (fuse_helper.py:419-426).
        let v = be.add_channel_scaled(v, &self.gamma_v, &dv)?;
        let l = be.add_channel_scaled(l, &self.gamma_l, &dl)?;
        Ok((be.tokens_to_levels(&v, &sizes)?, l))
    }
}
