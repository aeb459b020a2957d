//! BERT on the CPU (f32): the language backbone (HF `BertModel`, no pooler;
//! `modeling/language_backbone/bert_model.py`) and the head's BertEncoderLayer with GLIP's
//! ±50000 clamps (`modeling/rpn/vldyhead.py:236-287`, `modeling/rpn/modeling_bert.py`).
//!
//! Sequences are row-major [B, T, hidden]. Weight keys are HF's (`attention.self.query`, …)
//! under a caller-given prefix.

use super::config::BertConfig;
use super::layers::{LayerNorm, Linear};
use super::WeightMap;
use crate::backend::cpu::gemm::{gemm, Mat};
use crate::backend::cpu::nn::{gelu, softmax_rows};
use crate::error::{Error, Result};

/// GLIP's clamp bound (CLAMP_BERTATTN_* and the unconditional FFN clamps).
pub const CLAMP: f32 = 50_000.0;
/// HF `get_extended_attention_mask` fill for a padded key: `torch.finfo(float32).min`
/// (transformers 4.46.3 produced the goldens; GLIP-era releases used −10000, which gives
/// the same fp32 probabilities since both underflow exp to 0).
pub const MASK_FILL: f32 = f32::MIN;

fn clamp_all(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = v.clamp(-CLAMP, CLAMP);
    }
}

fn check_seq(
    op: &'static str,
    hidden: usize,
    mask: usize,
    batch: usize,
    t: usize,
    h: usize,
) -> Result<()> {
    if hidden != batch * t * h || mask != batch * t {
        return Err(Error::shape(
            op,
            format!(
                "hidden {hidden} / mask {mask} elements for batch {batch}, t {t}, hidden size {h}"
            ),
        ));
    }
    Ok(())
}

/// One post-LN transformer layer: HF `BertLayer`, or with `clamp` GLIP's BertEncoderLayer.
pub struct BertLayer {
    hidden: usize,
    heads: usize,
    clamp: bool,
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_ln: LayerNorm,
    inter: Linear,
    out: Linear,
    out_ln: LayerNorm,
}

impl BertLayer {
    /// Keys `{prefix}attention.self.{query,key,value}`, `{prefix}attention.output.{dense,LayerNorm}`,
    /// `{prefix}intermediate.dense`, `{prefix}output.{dense,LayerNorm}`. With `clamp` this is
    /// the head's BertEncoderLayer (prefix `rpn.head.dyhead_tower.{3i+1}.`): scores, FFN
    /// intermediate and output clamped to ±50000 (spec §3.5.2).
    pub fn load(w: &WeightMap, prefix: &str, cfg: &BertConfig, clamp: bool) -> Result<BertLayer> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let eps = cfg.layer_norm_eps as f32;
        if cfg.num_attention_heads == 0 || !h.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::Config(format!(
                "BERT hidden_size {h} is not a multiple of num_attention_heads {}",
                cfg.num_attention_heads
            )));
        }
        Ok(BertLayer {
            hidden: h,
            heads: cfg.num_attention_heads,
            clamp,
            query: Linear::load(w, &format!("{prefix}attention.self.query"), h, h)?,
            key: Linear::load(w, &format!("{prefix}attention.self.key"), h, h)?,
            value: Linear::load(w, &format!("{prefix}attention.self.value"), h, h)?,
            attn_out: Linear::load(w, &format!("{prefix}attention.output.dense"), h, h)?,
            attn_ln: LayerNorm::load(w, &format!("{prefix}attention.output.LayerNorm"), h, eps)?,
            inter: Linear::load(w, &format!("{prefix}intermediate.dense"), i, h)?,
            out: Linear::load(w, &format!("{prefix}output.dense"), h, i)?,
            out_ln: LayerNorm::load(w, &format!("{prefix}output.LayerNorm"), h, eps)?,
        })
    }

    /// hidden: [batch, t, hidden]; mask: [batch, t] (non-zero = real token). Returns the
    /// layer output [batch, t, hidden] (padded rows computed too, as in HF/GLIP).
    pub fn forward(
        &self,
        hidden: &[f32],
        mask: &[i32],
        batch: usize,
        t: usize,
    ) -> Result<Vec<f32>> {
        let h = self.hidden;
        check_seq("BertLayer", hidden.len(), mask.len(), batch, t, h)?;
        let rows = batch * t;
        let q = self.query.apply(hidden, rows)?;
        let k = self.key.apply(hidden, rows)?;
        let v = self.value.apply(hidden, rows)?;
        let hd = h / self.heads;
        let sqrt_hd = (hd as f32).sqrt();
        let mut ctx = vec![0.0f32; rows * h];
        let mut s = vec![0.0f32; t * t];
        let mut tmp = vec![0.0f32; t * hd];
        let bad = || Error::shape("BertLayer", "gemm extents");
        for b in 0..batch {
            let base = b * t * h;
            let ext: Vec<f32> = mask[b * t..(b + 1) * t]
                .iter()
                .map(|&m| (1.0 - m as f32) * MASK_FILL)
                .collect();
            for head in 0..self.heads {
                let off = base + head * hd;
                if !gemm(
                    t,
                    t,
                    hd,
                    Mat {
                        data: &q[off..],
                        rs: h,
                        cs: 1,
                    },
                    Mat {
                        data: &k[off..],
                        rs: 1,
                        cs: h,
                    },
                    &mut s,
                    1.0,
                    false,
                ) {
                    return Err(bad());
                }
                for row in s.chunks_mut(t) {
                    for (x, &e) in row.iter_mut().zip(&ext) {
                        // HF divides after the product; GLIP then clamps before the mask.
                        let mut y = *x / sqrt_hd;
                        if self.clamp {
                            y = y.clamp(-CLAMP, CLAMP);
                        }
                        *x = y + e;
                    }
                }
                softmax_rows(&mut s, t);
                if !gemm(
                    t,
                    hd,
                    t,
                    Mat::rows(&s, t),
                    Mat {
                        data: &v[off..],
                        rs: h,
                        cs: 1,
                    },
                    &mut tmp,
                    1.0,
                    false,
                ) {
                    return Err(bad());
                }
                for (j, src) in tmp.chunks(hd).enumerate() {
                    ctx[base + j * h + head * hd..base + j * h + (head + 1) * hd]
                        .copy_from_slice(src);
                }
            }
        }
        let mut a = self.attn_out.apply(&ctx, rows)?;
        for (x, &r) in a.iter_mut().zip(hidden) {
            *x += r;
        }
        self.attn_ln.apply(&mut a)?;

        let mut i = self.inter.apply(&a, rows)?;
        if self.clamp {
            clamp_all(&mut i);
        }
        for x in i.iter_mut() {
            *x = gelu(*x);
        }
        if self.clamp {
            clamp_all(&mut i);
        }
        let mut o = self.out.apply(&i, rows)?;
        if self.clamp {
            clamp_all(&mut o);
        }
        for (x, &r) in o.iter_mut().zip(&a) {
            *x += r;
        }
        self.out_ln.apply(&mut o)?;
        if self.clamp {
            clamp_all(&mut o);
        }
        Ok(o)
    }
}

/// HF `BertModel(add_pooling_layer=False)`: GLIP's language backbone.
pub struct BertModel {
    pub config: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    emb_ln: LayerNorm,
    layers: Vec<BertLayer>,
}

impl BertModel {
    /// Keys `{prefix}embeddings.{word,position,token_type}_embeddings.weight`,
    /// `{prefix}embeddings.LayerNorm`, `{prefix}encoder.layer.{i}.…`; GLIP-T's prefix is
    /// `language_backbone.body.model.`. Pooler weights, if present, are ignored.
    pub fn load(w: &WeightMap, prefix: &str, cfg: &BertConfig) -> Result<BertModel> {
        let h = cfg.hidden_size;
        let e = format!("{prefix}embeddings.");
        let types = w.f32(
            &format!("{e}token_type_embeddings.weight"),
            &[cfg.type_vocab_size, h],
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::load(w, &format!("{prefix}encoder.layer.{i}."), cfg, false))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel {
            config: cfg.clone(),
            word: w.f32(&format!("{e}word_embeddings.weight"), &[cfg.vocab_size, h])?,
            position: w.f32(
                &format!("{e}position_embeddings.weight"),
                &[cfg.max_position_embeddings, h],
            )?,
            token_type0: types
                .get(..h)
                .ok_or_else(|| Error::Config("BERT type_vocab_size is 0".into()))?
                .to_vec(),
            emb_ln: LayerNorm::load(w, &format!("{e}LayerNorm"), h, cfg.layer_norm_eps as f32)?,
            layers,
        })
    }

    /// ids, mask: [batch, t] (token_type_ids all 0, positions 0..t). Returns the last
    /// hidden state [batch, t, hidden], pad rows included and not zeroed (GLIP's `hidden`).
    pub fn forward(&self, ids: &[i32], mask: &[i32], batch: usize, t: usize) -> Result<Vec<f32>> {
        let h = self.config.hidden_size;
        if ids.len() != batch * t || mask.len() != batch * t {
            return Err(Error::shape(
                "BertModel",
                format!(
                    "ids {} / mask {} for batch {batch}, t {t}",
                    ids.len(),
                    mask.len()
                ),
            ));
        }
        if t > self.config.max_position_embeddings {
            return Err(Error::shape(
                "BertModel",
                format!(
                    "{t} tokens exceed max_position_embeddings {}",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let mut x = vec![0.0f32; batch * t * h];
        for (r, (row, &id)) in x.chunks_mut(h).zip(ids).enumerate() {
            let id = usize::try_from(id)
                .ok()
                .filter(|&i| i < self.config.vocab_size)
                .ok_or_else(|| {
                    Error::shape(
                        "BertModel",
                        format!(
                            "token id {id} outside the vocabulary of {}",
                            self.config.vocab_size
                        ),
                    )
                })?;
            let p = r % t;
            let word = &self.word[id * h..(id + 1) * h];
            let pos = &self.position[p * h..(p + 1) * h];
            // HF order: (word + token_type) + position.
            for (((o, &wv), &tv), &pv) in row.iter_mut().zip(word).zip(&self.token_type0).zip(pos) {
                *o = (wv + tv) + pv;
            }
        }
        self.emb_ln.apply(&mut x)?;
        for layer in &self.layers {
            x = layer.forward(&x, mask, batch, t)?;
        }
        Ok(x)
    }
}
