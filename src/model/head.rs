//! GLIP's prediction layers of the VL-DyHead (spec §3.6, `vldyhead.py:645-691, 731-859`):
//! box regression × Scale_l, centerness, and the dot-product region-word logits. The
//! cls_logits convolution is not run: GLIP only uses its output channel count (spec §8 item 8),
//! kept here as `num_labels`.

use super::{FeatureMap, WeightMap};
use crate::backend::cpu::gemm::{gemm, Mat};
use crate::backend::cpu::logits::{self, VisualLayout};
use crate::backend::cpu::nms::Level;
use crate::error::{Error, Result};

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
    bbox_w: Vec<f32>,
    bbox_b: Vec<f32>,
    ctr_w: Vec<f32>,
    ctr_b: f32,
    /// Scale_l of every level (P3 first).
    pub scales: Vec<f32>,
    proj_w: Vec<f32>,
    proj_b: Vec<f32>,
    bias_lang: Vec<f32>,
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

fn shape_of(w: &WeightMap, key: &str) -> Result<Vec<usize>> {
    w.tensors
        .get(key)
        .map(|t| t.shape().to_vec())
        .ok_or_else(|| Error::Weights {
            path: w.source.clone(),
            msg: format!("missing tensor `{key}`"),
        })
}

/// y[b, o, p] = Σ_c w[o, c] · x[b, c, p] + bias[o], then × scale (a 1×1 convolution).
fn conv1x1(x: &FeatureMap, w: &[f32], bias: &[f32], scale: f32) -> Result<FeatureMap> {
    let out = bias.len();
    let hw = x.hw();
    let mut y = FeatureMap::zeros(x.n, out, x.h, x.w);
    for b in 0..x.n {
        let dst = &mut y.data[b * out * hw..(b + 1) * out * hw];
        for (o, row) in dst.chunks_mut(hw.max(1)).enumerate() {
            row.fill(bias[o]);
        }
        if !gemm(
            out,
            hw,
            x.c,
            Mat::rows(w, x.c),
            Mat::rows(x.image(b), hw),
            dst,
            1.0,
            true,
        ) {
            return Err(Error::shape(
                "head conv1x1",
                format!("weight {} for {out}x{}", w.len(), x.c),
            ));
        }
        // Scale multiplies the convolution's output, bias included (layers/misc.py Scale).
        if scale != 1.0 {
            dst.iter_mut().for_each(|v| *v *= scale);
        }
    }
    Ok(y)
}

impl Head {
    /// The head under `prefix` ("rpn.head."), taking channel, language and label sizes from
    /// the tensors' shapes and one Scale per `scales.{l}.scale` present.
    pub fn load(w: &WeightMap, prefix: &str) -> Result<Head> {
        let k = |s: &str| format!("{prefix}{s}");
        let bshape = shape_of(w, &k("bbox_pred.weight"))?;
        if bshape.len() != 4 || bshape[0] != 4 || bshape[2] != 1 || bshape[3] != 1 {
            return Err(Error::Weights {
                path: w.source.clone(),
                msg: format!(
                    "`{}` has shape {bshape:?}, expected [4, C, 1, 1]",
                    k("bbox_pred.weight")
                ),
            });
        }
        let channels = bshape[1];
        let pshape = shape_of(w, &k("dot_product_projection_text.weight"))?;
        let [embed_dim, lang_dim] = match pshape[..] {
            [e, l] => [e, l],
            _ => {
                return Err(Error::Weights {
                    path: w.source.clone(),
                    msg: format!(
                        "`{}` has shape {pshape:?}, expected [embed, lang]",
                        k("dot_product_projection_text.weight")
                    ),
                })
            }
        };
        if embed_dim != channels {
            return Err(Error::Weights {
                path: w.source.clone(),
                msg: format!("text projection to {embed_dim} but visual channels {channels}"),
            });
        }
        let cshape = shape_of(w, &k("cls_logits.weight"))?;
        let num_labels = *cshape.first().unwrap_or(&0);
        if cshape.len() != 4 || cshape[1] != channels || num_labels == 0 {
            return Err(Error::Weights {
                path: w.source.clone(),
                msg: format!(
                    "`{}` has shape {cshape:?}, expected [labels, {channels}, 1, 1]",
                    k("cls_logits.weight")
                ),
            });
        }
        let mut scales = Vec::new();
        while w.contains(&k(&format!("scales.{}.scale", scales.len()))) {
            scales.push(w.scalar(&k(&format!("scales.{}.scale", scales.len())))?);
        }
        if scales.is_empty() {
            return Err(Error::Weights {
                path: w.source.clone(),
                msg: format!("no `{}` found", k("scales.0.scale")),
            });
        }
        Ok(Head {
            channels,
            lang_dim,
            embed_dim,
            num_labels,
            bbox_w: w.f32(&k("bbox_pred.weight"), &[4, channels, 1, 1])?,
            bbox_b: w.f32(&k("bbox_pred.bias"), &[4])?,
            ctr_w: w.f32(&k("centerness.weight"), &[1, channels, 1, 1])?,
            ctr_b: w.f32(&k("centerness.bias"), &[1])?[0],
            scales,
            proj_w: w.f32(
                &k("dot_product_projection_text.weight"),
                &[embed_dim, lang_dim],
            )?,
            proj_b: w.f32(&k("dot_product_projection_text.bias"), &[embed_dim])?,
            bias_lang: w.f32(&k("bias_lang"), &[lang_dim])?,
            bias0: w.scalar(&k("bias0"))?,
            log_scale: w.scalar(&k("log_scale"))?,
        })
    }

    /// The head on the tower's final visual maps (P3 first, [B, C, h, w] each) and final
    /// language hidden `lang_hidden` [batch, t, lang_dim]. The language mask is not used
    /// (GLIP's head ignores it).
    pub fn forward(
        &self,
        visual: &[FeatureMap],
        lang_hidden: &[f32],
        batch: usize,
        t: usize,
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
        if let Some(m) = visual.iter().find(|m| m.n != batch || m.c != self.channels) {
            return Err(Error::shape(
                "head",
                format!(
                    "level [{}, {}, {}, {}] for batch {batch}, {} channels",
                    m.n, m.c, m.h, m.w, self.channels
                ),
            ));
        }
        if lang_hidden.len() != batch * t * self.lang_dim {
            return Err(Error::shape(
                "head",
                format!(
                    "lang_hidden {} for [{batch}, {t}, {}]",
                    lang_hidden.len(),
                    self.lang_dim
                ),
            ));
        }
        let (proj, tok_bias) = logits::text_projection(
            lang_hidden,
            batch * t,
            &self.proj_w,
            &self.proj_b,
            &self.bias_lang,
            self.bias0,
        )?;
        let scale = self.log_scale.exp();
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
            out.bbox_reg
                .push(conv1x1(v, &self.bbox_w, &self.bbox_b, s)?);
            out.centerness
                .push(conv1x1(v, &self.ctr_w, &[self.ctr_b], 1.0)?);
            out.dot_product_logits.push(logits::dot_logits(
                &v.data,
                VisualLayout::ChannelMajor,
                &proj,
                &tok_bias,
                batch,
                v.hw(),
                t,
                self.channels,
                scale,
                logits::LOGIT_CLAMP,
            )?);
        }
        out.proj_tokens = proj;
        out.token_bias = tok_bias;
        Ok(out)
    }
}
