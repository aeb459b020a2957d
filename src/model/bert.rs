//! BERT over the op interface: the language backbone (HF `BertModel`, no pooler;
//! `modeling/language_backbone/bert_model.py`) and the head's BertEncoderLayer with GLIP's
//! ±50000 clamps (`modeling/rpn/vldyhead.py:236-287`, `modeling/rpn/modeling_bert.py`).
//!
//! Sequences are [B, T, hidden] backend tensors. Weight keys are HF's (`attention.self.query`,
//! …) under the caller's [`Vars`] prefix.

use super::config::BertConfig;
use super::layers::{LayerNorm, Linear};
use super::vars::{Init, Vars};
use crate::backend::{Backend, SelfAttention};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub use crate::backend::ops::{BERT_MASK_FILL as MASK_FILL, GLIP_CLAMP as CLAMP};

/// One post-LN transformer layer: HF `BertLayer`, or with `clamp` GLIP's BertEncoderLayer.
pub struct BertLayer {
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
    /// Keys `attention.self.{query,key,value}`, `attention.output.{dense,LayerNorm}`,
    /// `intermediate.dense`, `output.{dense,LayerNorm}` under `vars`. With `clamp` this is
    /// the head's BertEncoderLayer (prefix `rpn.head.dyhead_tower.{3i+1}.`): scores, FFN
    /// intermediate and output clamped to ±50000 (glip-t-inference-spec.md §3.5.2).
    pub fn new(vars: &Vars, cfg: &BertConfig, clamp: bool) -> Result<BertLayer> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let eps = cfg.layer_norm_eps as f32;
        if cfg.num_attention_heads == 0 || !h.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::Config(format!(
                "BERT hidden_size {h} is not a multiple of num_attention_heads {}",
                cfg.num_attention_heads
            )));
        }
        let a = vars.pp("attention");
        Ok(BertLayer {
            heads: cfg.num_attention_heads,
            clamp,
            query: Linear::new(&a.pp("self").pp("query"), h, h)?,
            key: Linear::new(&a.pp("self").pp("key"), h, h)?,
            value: Linear::new(&a.pp("self").pp("value"), h, h)?,
            attn_out: Linear::new(&a.pp("output").pp("dense"), h, h)?,
            attn_ln: LayerNorm::new(&a.pp("output").pp("LayerNorm"), h, eps)?,
            inter: Linear::new(&vars.pp("intermediate").pp("dense"), i, h)?,
            out: Linear::new(&vars.pp("output").pp("dense"), h, i)?,
            out_ln: LayerNorm::new(&vars.pp("output").pp("LayerNorm"), h, eps)?,
        })
    }

    /// hidden: [batch, t, hidden]; mask: [batch, t] i32 (non-zero = real token). Returns the
    /// layer output [batch, t, hidden] (padded rows computed too, as in HF/GLIP).
    pub fn forward(&self, be: &dyn Backend, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let clamp = |x: Tensor| -> Result<Tensor> {
            if self.clamp {
                be.clamp(x, CLAMP)
            } else {
                Ok(x)
            }
        };
        let q = self.query.forward(be, hidden)?;
        let k = self.key.forward(be, hidden)?;
        let v = self.value.forward(be, hidden)?;
        let spec = SelfAttention {
            heads: self.heads,
            clamp: self.clamp.then_some(CLAMP),
        };
        let ctx = be.self_attention(&q, &k, &v, mask, spec)?;
        let a = be.add(self.attn_out.forward(be, &ctx)?, hidden)?;
        let a = self.attn_ln.forward(be, &a)?;
        let i = clamp(self.inter.forward(be, &a)?)?;
        let i = clamp(be.gelu(i)?)?;
        let o = clamp(self.out.forward(be, &i)?)?;
        let o = self.out_ln.forward(be, &be.add(o, &a)?)?;
        clamp(o)
    }
}

/// HF `BertModel(add_pooling_layer=False)`: GLIP's language backbone.
pub struct BertModel {
    pub config: BertConfig,
    word: Tensor,
    position: Tensor,
    token_type0: Tensor,
    emb_ln: LayerNorm,
    layers: Vec<BertLayer>,
}

impl BertModel {
    /// Keys `embeddings.{word,position,token_type}_embeddings.weight`,
    /// `embeddings.LayerNorm`, `encoder.layer.{i}.…` under `vars`; GLIP-T's prefix is
    /// `language_backbone.body.model.`. Pooler weights, if present, are ignored.
    pub fn new(vars: &Vars, cfg: &BertConfig) -> Result<BertModel> {
        let h = cfg.hidden_size;
        let e = vars.pp("embeddings");
        let types = e.host(
            "token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
            Init::Small,
        )?;
        // GLIP passes no token_type_ids: every token uses row 0.
        let row0 = types
            .f32s()?
            .get(..h)
            .ok_or_else(|| Error::Config("BERT type_vocab_size is 0".into()))?
            .to_vec();
        let backend_row0 = vars.weight_from_host(&Tensor::from_f32(&[h], row0)?)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(&vars.pp("encoder.layer").pp(i), cfg, false))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel {
            config: cfg.clone(),
            word: e.get("word_embeddings.weight", &[cfg.vocab_size, h], Init::Small)?,
            position: e.get(
                "position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
                Init::Small,
            )?,
            token_type0: backend_row0,
            emb_ln: LayerNorm::new(&e.pp("LayerNorm"), h, cfg.layer_norm_eps as f32)?,
            layers,
        })
    }

    /// ids, mask: [batch, t] i32 host tensors (token_type_ids all 0, positions 0..t).
    /// Returns the last hidden state [batch, t, hidden] on the backend, pad rows included
    /// and not zeroed (GLIP's `hidden`).
    pub fn forward(&self, be: &dyn Backend, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x = be.bert_embeddings(ids, &self.word, &self.position, &self.token_type0)?;
        let mut x = self.emb_ln.forward(be, &x)?;
        let mask = be.upload(mask)?;
        for layer in &self.layers {
            x = layer.forward(be, &x, &mask)?;
        }
        Ok(x)
    }
}
