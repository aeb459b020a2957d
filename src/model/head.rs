//! GLIP's prediction layers of the VL-DyHead (spec §3.6, `vldyhead.py:645-691, 731-859`):
//! box regression × Scale_l, centerness, and the dot-product region-word logits. The
//! cls_logits convolution is not run: GLIP only uses its output channel count (spec §8 item 8),
//! kept here as `num_labels`.

use super::vars::{Init, Vars};
use super::FeatureMap;
use crate::backend::cpu::nms::Level;
use crate::backend::ops::GLIP_CLAMP;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The prediction layers of `rpn.head.`.
pub struct Head {
    /// Feature channels of the visual maps (256).
    pub channels: usize,
    /// Language hidden size (768 for BERT-base).
    pub lang_dim: usize,
    /// Joint embedding size of the dot product (256).
    pub embed_dim: usize,
    /// Label columns of the score tensor (cls_logits' output channels, 80).
    pub num_labels: usize,
    bbox_w: Tensor,
    bbox_b: Tensor,
    ctr_w: Tensor,
    ctr_b: Tensor,
    /// Scale_l of every level (P3 first).
    pub scales: Vec<f32>,
    proj_w: Tensor,
    proj_b: Tensor,
    bias_lang: Tensor,
    bias0: f32,
    log_scale: f32,
}

/// Everything the post-processing needs, per level (P3 first).
#[derive(Clone, Debug)]
pub struct HeadOutputs {
    pub batch: usize,
    /// Text tokens T of the logits.
    pub num_tokens: usize,
    /// Label columns of the score tensor (80 for GLIP-T).
    pub num_labels: usize,
    /// [B, 4, h, w] per level: Scale_l · bbox_pred(v_l).
    pub bbox_reg: Vec<FeatureMap>,
    /// [B, 1, h, w] per level: centerness logits.
    pub centerness: Vec<FeatureMap>,
    /// [B, h·w, T] per level (anchor index y·w + x), clamped to ±50000.
    pub dot_product_logits: Vec<Vec<f32>>,
    /// [B, T, embed_dim]: dot_product_projection_text(E / 2) (GLIP's dot_product_proj_tokens).
    pub proj_tokens: Vec<f32>,
    /// [B, T]: E · bias_lang + bias0.
    pub token_bias: Vec<f32>,
}

impl HeadOutputs {
    /// (h, w) of every level.
    pub fn level_sizes(&self) -> Vec<(usize, usize)> {
        self.bbox_reg.iter().map(|m| (m.h, m.w)).collect()
    }

    /// The levels with their anchor strides (GLIP-T: 8, 16, 32, 64, 128).
    pub fn levels(&self, strides: &[usize]) -> Result<Vec<Level>> {
        if strides.len() != self.bbox_reg.len() {
            return Err(Error::Config(format!(
                "{} anchor strides for {} levels",
                strides.len(),
                self.bbox_reg.len()
            )));
        }
        Ok(self
            .bbox_reg
            .iter()
            .zip(strides)
            .map(|(m, &stride)| Level {
                h: m.h,
                w: m.w,
                stride,
            })
            .collect())
    }

    /// The outputs packed over the pyramid as the nms kernels read them:
    /// (centerness [B, N], bbox_reg [B, N, 4], logits [B, N, T]), N = Σ h·w, levels in order.
    pub fn packed(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let n: usize = self.bbox_reg.iter().map(|m| m.hw()).sum();
        let (b_, t) = (self.batch, self.num_tokens);
        let mut ctr = Vec::with_capacity(b_ * n);
        let mut reg = Vec::with_capacity(b_ * n * 4);
        let mut lg = Vec::with_capacity(b_ * n * t);
        for b in 0..b_ {
            for (l, m) in self.bbox_reg.iter().enumerate() {
                let hw = m.hw();
                ctr.extend_from_slice(self.centerness[l].image(b));
                let r = m.image(b);
                for p in 0..hw {
                    reg.extend_from_slice(&[r[p], r[hw + p], r[2 * hw + p], r[3 * hw + p]]);
                }
                lg.extend_from_slice(&self.dot_product_logits[l][b * hw * t..(b + 1) * hw * t]);
            }
        }
        (ctr, reg, lg)
    }
}

impl Head {
    /// The head under `vars` ("rpn.head"): visual `channels` (MODEL.DYHEAD.CHANNELS, also the
    /// joint embedding size), `lang_dim`, `num_labels` (cls_logits' output channels) and one
    /// Scale per pyramid level.
    pub fn new(
        vars: &Vars,
        channels: usize,
        lang_dim: usize,
        num_labels: usize,
        levels: usize,
    ) -> Result<Head> {
        if num_labels == 0 || levels == 0 {
            return Err(Error::Config(format!(
                "head with {num_labels} labels and {levels} levels"
            )));
        }
        let c = channels;
        // cls_logits is in every GLIP checkpoint but never run (spec §8 item 8): only its
        // channel count matters, so its tensors are checked and dropped.
        vars.host("cls_logits.weight", &[num_labels, c, 1, 1], Init::FanIn)?;
        vars.host("cls_logits.bias", &[num_labels], Init::Small)?;
        let scales = (0..levels)
            .map(|l| vars.scalar(&format!("scales.{l}.scale"), Init::Const(1.0)))
            .collect::<Result<Vec<_>>>()?;
        let proj = vars.pp("dot_product_projection_text");
        Ok(Head {
            channels: c,
            lang_dim,
            embed_dim: c,
            num_labels,
            bbox_w: vars.get("bbox_pred.weight", &[4, c, 1, 1], Init::FanIn)?,
            bbox_b: vars.get("bbox_pred.bias", &[4], Init::Small)?,
            ctr_w: vars.get("centerness.weight", &[1, c, 1, 1], Init::FanIn)?,
            ctr_b: vars.get("centerness.bias", &[1], Init::Small)?,
            scales,
            proj_w: proj.get("weight", &[c, lang_dim], Init::FanIn)?,
            proj_b: proj.get("bias", &[c], Init::Small)?,
            bias_lang: vars.get("bias_lang", &[lang_dim], Init::Small)?,
            // GLIP's prior: bias0 = −log((1 − 0.01) / 0.01) (vldyhead.py).
            bias0: vars.scalar("bias0", Init::Const(-(0.99f32 / 0.01).ln()))?,
            log_scale: vars.scalar("log_scale", Init::Const(0.0))?,
        })
    }

    /// The head on the tower's final visual maps (P3 first, [B, C, h, w] each) and final
    /// language hidden [B, t, lang_dim], on the backend; the outputs are copied to the host
    /// for the post-processing. The language mask is not used (GLIP's head ignores it).
    pub fn forward(
        &self,
        be: &dyn Backend,
        visual: &[Tensor],
        lang_hidden: &Tensor,
    ) -> Result<HeadOutputs> {
        if visual.len() != self.scales.len() {
            return Err(Error::shape(
                "head",
                format!(
                    "{} visual levels for {} scales",
                    visual.len(),
                    self.scales.len()
                ),
            ));
        }
        let [batch, t, _] = lang_hidden.dims::<3>("head lang_hidden")?;
        let (proj, tok_bias) = be.text_projection(
            lang_hidden,
            &self.proj_w,
            &self.proj_b,
            &self.bias_lang,
            self.bias0,
        )?;
        let scale = self.log_scale.exp();
        let host_map = |x: &Tensor| FeatureMap::from_tensor(&be.to_host(x)?);
        let mut out = HeadOutputs {
            batch,
            num_tokens: t,
            num_labels: self.num_labels,
            bbox_reg: Vec::new(),
            centerness: Vec::new(),
            dot_product_logits: Vec::new(),
            proj_tokens: Vec::new(),
            token_bias: Vec::new(),
        };
        for (v, &s) in visual.iter().zip(&self.scales) {
            // Scale multiplies the convolution's output, bias included (layers/misc.py Scale).
            let reg = be.conv2d(v, &self.bbox_w, Some(&self.bbox_b), 1, 0)?;
            let reg = if s != 1.0 {
                be.scale(reg, s, 0.0)?
            } else {
                reg
            };
            out.bbox_reg.push(host_map(&reg)?);
            let ctr = be.conv2d(v, &self.ctr_w, Some(&self.ctr_b), 1, 0)?;
            out.centerness.push(host_map(&ctr)?);
            let lg = be.dot_logits(v, &proj, &tok_bias, scale, GLIP_CLAMP)?;
            out.dot_product_logits.push(be.to_host(&lg)?.to_f32_vec()?);
        }
        out.proj_tokens = be.to_host(&proj)?.to_f32_vec()?;
        out.token_bias = be.to_host(&tok_bias)?.to_f32_vec()?;
        Ok(out)
    }
}
