//! GLIP's prediction layers of the VL-DyHead (spec §3.6, `vldyhead.py:645-691, 731-859`):
//! box regression × Scale_l, centerness, and the dot-product region-word logits. The
//! cls_logits convolution is not run: GLIP only uses its output channel count (spec §8 item 8),
//! kept here as `num_labels`.

use super::vars::{Init, Vars};
use crate::backend::atss::Level;
use crate::backend::ops::GLIP_CLAMP;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

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

/// Everything the post-processing needs, per level (P3 first), as tensors of the backend
/// that computed them (device memory on CUDA: only the final detections cross to the host).
#[derive(Debug)]
pub struct HeadOutputs {
    pub batch: usize,
    /// Text tokens T of the logits.
    pub num_tokens: usize,
    /// Label columns of the score tensor (80 for GLIP-T).
    pub num_labels: usize,
    /// [B, 4, h, w] per level: Scale_l · bbox_pred(v_l).
    pub bbox_reg: Vec<Tensor>,
    /// [B, 1, h, w] per level: centerness logits.
    pub centerness: Vec<Tensor>,
    /// [B, h·w, T] f32 per level (anchor index y·w + x), clamped to ±50000.
    pub dot_product_logits: Vec<Tensor>,
    /// [B, T, embed_dim]: dot_product_projection_text(E / 2) (GLIP's dot_product_proj_tokens).
    pub proj_tokens: Tensor,
    /// [B, T]: E · bias_lang + bias0.
    pub token_bias: Tensor,
}

impl HeadOutputs {
    /// The storage of every tensor (what a recorded forward must keep to its end).
    pub fn storage_ids(&self) -> Vec<usize> {
        self.bbox_reg
            .iter()
            .chain(&self.centerness)
            .chain(&self.dot_product_logits)
            .chain([&self.proj_tokens, &self.token_bias])
            .map(|t| t.storage_id())
            .collect()
    }
    /// (h, w) of every level.
    pub fn level_sizes(&self) -> Vec<(usize, usize)> {
        self.bbox_reg
            .iter()
            .map(|m| {
                let s = m.shape();
                (
                    s.get(2).copied().unwrap_or(0),
                    s.get(3).copied().unwrap_or(0),
                )
            })
            .collect()
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
            .level_sizes()
            .into_iter()
            .zip(strides)
            .map(|((h, w), &stride)| Level { h, w, stride })
            .collect())
    }

    /// A copy with every tensor on the host as f32 (tests, dumps, diagnostics).
    pub fn to_host(&self, be: &dyn Backend) -> Result<HeadOutputs> {
        let host = |t: &Tensor| be.to_host(t)?.to_f32();
        let all = |v: &[Tensor]| v.iter().map(host).collect::<Result<Vec<_>>>();
        Ok(HeadOutputs {
            batch: self.batch,
            num_tokens: self.num_tokens,
            num_labels: self.num_labels,
            bbox_reg: all(&self.bbox_reg)?,
            centerness: all(&self.centerness)?,
            dot_product_logits: all(&self.dot_product_logits)?,
            proj_tokens: host(&self.proj_tokens)?,
            token_bias: host(&self.token_bias)?,
        })
    }

    /// The outputs packed over the pyramid as the ATSS op reads them, on `be`:
    /// (centerness [B, N, 1], bbox_reg [B, N, 4], logits [B, N, T]), all f32, N = Σ h·w,
    /// levels in order.
    pub fn packed(&self, be: &dyn Backend) -> Result<(Tensor, Tensor, Tensor)> {
        let f32_on = |t: Tensor| match t.dtype() {
            DType::F32 => Ok(t),
            _ => be.cast(&t, DType::F32),
        };
        fn refs(v: &[Tensor]) -> Vec<&Tensor> {
            v.iter().collect()
        }
        let ctr = f32_on(be.levels_to_tokens(&refs(&self.centerness))?)?;
        let reg = f32_on(be.levels_to_tokens(&refs(&self.bbox_reg))?)?;
        let lg = f32_on(be.concat_positions(&refs(&self.dot_product_logits))?)?;
        Ok((ctr, reg, lg))
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
    /// language hidden [B, t, lang_dim], on the backend; the outputs stay there for the
    /// post-processing. The language mask is not used (GLIP's head ignores it).
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
        let (mut bbox_reg, mut centerness) = (Vec::new(), Vec::new());
        for (v, &s) in visual.iter().zip(&self.scales) {
            // Scale multiplies the convolution's output, bias included (layers/misc.py Scale).
            let reg = be.conv2d(v, &self.bbox_w, Some(&self.bbox_b), 1, 0)?;
            let reg = if s != 1.0 {
                be.scale(reg, s, 0.0)?
            } else {
                reg
            };
            bbox_reg.push(reg);
            centerness.push(be.conv2d(v, &self.ctr_w, Some(&self.ctr_b), 1, 0)?);
        }
        // Every level's region-word logits in one op (one grouped launch on a device).
        let levels: Vec<&Tensor> = visual.iter().collect();
        let logits = be.dot_logits(&levels, &proj, &tok_bias, scale, GLIP_CLAMP)?;
        Ok(HeadOutputs {
            batch,
            num_tokens: t,
            num_labels: self.num_labels,
            bbox_reg,
            centerness,
            dot_product_logits: logits,
            proj_tokens: proj,
            token_bias: tok_bias,
        })
    }
}
