//! GLIP-T end to end on the CPU: Swin → FPN, BERT, the VL-DyHead tower, heads.
//!
//! The forward is a fixed sequence of stages (spec §2); each stage's output can be
//! recorded under the golden's tensor names ([`Taps`]) so `glip detect --dump` and the
//! end-to-end test can locate a mismatch.

use super::bert::{BertLayer, BertModel};
use super::config::{BertConfig, GlipConfig};
use super::dyconv::DyConv;
use super::fpn::Fpn;
use super::head::{Head, HeadOutputs};
use super::swin::Swin;
use super::vars::Vars;
use super::vlfuse::VLFuse;
use super::{FeatureMap, WeightMap};
use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Text features of one prompt: the language backbone's output, computed once per prompt
/// (it does not depend on the image) and reused for every frame.
#[derive(Clone, Debug)]
pub struct TextFeatures {
    /// Token ids and attention mask fed to BERT ([t]).
    pub ids: Vec<i32>,
    pub mask: Vec<i32>,
    pub t: usize,
    /// Last hidden state [t, hidden] (pad rows not zeroed, as GLIP).
    pub hidden: Vec<f32>,
}

/// Records intermediate tensors by name when enabled, under the golden's names
/// (`tower.{k}` is the k-th module of GLIP's dyhead_tower: VLFuse, BertEncoderLayer, DyConv, …).
#[derive(Default)]
pub struct Taps {
    enabled: bool,
    pub tensors: Vec<(String, Tensor)>,
    /// Wall time of each stage of the last forward (always recorded; cheap).
    pub timings: Vec<(String, std::time::Duration)>,
}

impl Taps {
    pub fn enabled() -> Self {
        Taps {
            enabled: true,
            ..Taps::default()
        }
    }
    pub fn disabled() -> Self {
        Taps::default()
    }
    fn map(&mut self, name: impl Into<String>, f: &FeatureMap) -> Result<()> {
        if self.enabled {
            self.tensors.push((name.into(), f.to_tensor()?));
        }
        Ok(())
    }
    fn seq(&mut self, name: impl Into<String>, shape: &[usize], data: &[f32]) -> Result<()> {
        if self.enabled {
            self.tensors
                .push((name.into(), Tensor::from_f32(shape, data.to_vec())?));
        }
        Ok(())
    }
    fn time(&mut self, stage: impl Into<String>, since: std::time::Instant) {
        self.timings.push((stage.into(), since.elapsed()));
    }
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

struct TowerLayer {
    fuse: VLFuse,
    bert: BertLayer,
    dyconv: DyConv,
}

/// The whole GLIP model (GeneralizedVLRCNN with a VLDYHEAD RPN), CPU backend.
pub struct Glip {
    pub config: GlipConfig,
    pub bert_config: BertConfig,
    swin: Swin,
    fpn: Fpn,
    language: BertModel,
    tower: Vec<TowerLayer>,
    head: Head,
}

impl Glip {
    /// Builds the model from a checkpoint after checking every key (one error lists all
    /// missing, mis-shaped and unexpected tensors).
    pub fn load(config: GlipConfig, bert_config: BertConfig, w: &WeightMap) -> Result<Glip> {
        let expected = expected_keys(&config, &bert_config);
        crate::weights::validate_keys(w, &expected, crate::weights::glip_ignorable)?;
        let swin = Swin::load(w, "backbone.body.", &config.swin)?;
        // Moved onto the op interface so far: FPN, BERT, VLFuse, DyConv, head (their tensors come from
        // the Vars walk).
        let vars = Vars::from_weights(w, &CpuBackend);
        let fpn = Fpn::new(
            &vars.pp("backbone.fpn"),
            config.fpn.in_channels,
            config.fpn.out_channels,
        )?;
        let language = BertModel::new(&vars.pp("language_backbone.body.model"), &bert_config)?;
        let mut tower = Vec::with_capacity(config.dyhead.num_convs);
        for i in 0..config.dyhead.num_convs {
            tower.push(TowerLayer {
                fuse: VLFuse::new(
                    &vars.pp(format!("rpn.head.dyhead_tower.{}", 3 * i)),
                    config.dyhead.channels,
                    config.language.lang_dim,
                    config.dyhead.fuse.embed_dim,
                    1.0 / config.dyhead.num_convs.max(1) as f32,
                )?,
                bert: BertLayer::new(
                    &vars.pp(format!("rpn.head.dyhead_tower.{}", 3 * i + 1)),
                    &bert_config,
                    true,
                )?,
                dyconv: DyConv::new(
                    &vars.pp(format!("rpn.head.dyhead_tower.{}", 3 * i + 2)),
                    config.dyhead.channels,
                )?,
            });
        }
        let head = Head::new(
            &vars.pp("rpn.head"),
            config.dyhead.channels,
            config.language.lang_dim,
            config.dyhead.num_score_classes(),
            super::dyconv::LEVELS,
        )?;
        Ok(Glip {
            config,
            bert_config,
            swin,
            fpn,
            language,
            tower,
            head,
        })
    }

    /// Runs the language backbone on one prompt's ids (any length t ≤ 512: GLIP pads to 256,
    /// glip-rt may pass only the real tokens — the outputs on real tokens are the same).
    pub fn encode_text(&self, ids: &[i32], mask: &[i32]) -> Result<TextFeatures> {
        if ids.is_empty() || ids.len() != mask.len() {
            return Err(Error::Prompt(format!(
                "{} token ids with {} mask values",
                ids.len(),
                mask.len()
            )));
        }
        if ids.len() > self.bert_config.max_position_embeddings {
            return Err(Error::Prompt(format!(
                "{} tokens exceed BERT's {} positions",
                ids.len(),
                self.bert_config.max_position_embeddings
            )));
        }
        let t = ids.len();
        let hidden = self
            .language
            .forward(
                &CpuBackend,
                &Tensor::from_i32(&[1, t], ids.to_vec())?,
                &Tensor::from_i32(&[1, t], mask.to_vec())?,
            )?
            .to_f32_vec()?;
        Ok(TextFeatures {
            ids: ids.to_vec(),
            mask: mask.to_vec(),
            t,
            hidden,
        })
    }

    /// The network from pixels to head outputs. `images`: [B, 3, H, W] normalised, padded to
    /// the size divisibility; every image is grounded on the same prompt.
    pub fn forward(
        &self,
        images: &FeatureMap,
        text: &TextFeatures,
        taps: &mut Taps,
    ) -> Result<HeadOutputs> {
        let b = images.n;
        let t = text.t;
        let hd = self.bert_config.hidden_size;
        let t0 = std::time::Instant::now();
        let stages = self.swin.forward(images)?;
        taps.time("backbone (Swin)", t0);
        for (i, s) in stages.iter().enumerate() {
            taps.map(format!("backbone.stage{}", i + 2), s)?;
        }
        let n = stages.len();
        if n < 3 {
            return Err(Error::shape(
                "Glip::forward",
                format!("backbone gave {n} stages, the FPN needs 3"),
            ));
        }
        let t0 = std::time::Instant::now();
        let pyramid = {
            let c = |i: usize| stages[i].to_tensor();
            let p = self
                .fpn
                .forward(&CpuBackend, &c(n - 3)?, &c(n - 2)?, &c(n - 1)?)?;
            p.iter()
                .map(FeatureMap::from_tensor)
                .collect::<Result<Vec<_>>>()?
        };
        taps.time("fpn", t0);
        for (i, p) in pyramid.iter().enumerate() {
            taps.map(format!("fpn.p{}", i + 3), p)?;
        }
        taps.seq("language.hidden", &[1, t, hd], &text.hidden)?;

        // The prompt is shared by the batch: repeat its features per image.
        let mut lang: Vec<f32> = Vec::with_capacity(b * t * hd);
        let mut mask: Vec<i32> = Vec::with_capacity(b * t);
        for _ in 0..b {
            lang.extend_from_slice(&text.hidden);
            mask.extend_from_slice(&text.mask);
        }
        let mut visual: Vec<FeatureMap> = pyramid.to_vec();
        for (i, layer) in self.tower.iter().enumerate() {
            let t0 = std::time::Instant::now();
            let (v, l) = {
                let levels = visual
                    .iter()
                    .map(FeatureMap::to_tensor)
                    .collect::<Result<Vec<_>>>()?;
                let (v, l) = layer.fuse.forward(
                    &CpuBackend,
                    &levels,
                    &Tensor::from_f32(&[b, t, hd], lang.clone())?,
                    &Tensor::from_i32(&[b, t], mask.clone())?,
                )?;
                let v = v
                    .iter()
                    .map(FeatureMap::from_tensor)
                    .collect::<Result<Vec<_>>>()?;
                (v, l.to_f32_vec()?)
            };
            taps.time(format!("tower.{i} VLFuse"), t0);
            for (k, m) in v.iter().enumerate() {
                taps.map(format!("tower.{}.VLFuse.visual.{k}", 3 * i), m)?;
            }
            taps.seq(
                format!("tower.{}.VLFuse.lang_hidden", 3 * i),
                &[b, t, hd],
                &l,
            )?;
            let t0 = std::time::Instant::now();
            lang = layer
                .bert
                .forward(
                    &CpuBackend,
                    &Tensor::from_f32(&[b, t, hd], l)?,
                    &Tensor::from_i32(&[b, t], mask.clone())?,
                )?
                .to_f32_vec()?;
            taps.time(format!("tower.{i} BertEncoderLayer"), t0);
            taps.seq(
                format!("tower.{}.BertEncoderLayer.lang_hidden", 3 * i + 1),
                &[b, t, hd],
                &lang,
            )?;
            let t0 = std::time::Instant::now();
            visual = layer
                .dyconv
                .forward(
                    &CpuBackend,
                    &v.iter()
                        .map(FeatureMap::to_tensor)
                        .collect::<Result<Vec<_>>>()?,
                )?
                .iter()
                .map(FeatureMap::from_tensor)
                .collect::<Result<Vec<_>>>()?;
            taps.time(format!("tower.{i} DyConv"), t0);
            for (k, m) in visual.iter().enumerate() {
                taps.map(format!("tower.{}.DyConv.visual.{k}", 3 * i + 2), m)?;
            }
        }
        let t0 = std::time::Instant::now();
        let out = self.head.forward(
            &CpuBackend,
            &visual
                .iter()
                .map(FeatureMap::to_tensor)
                .collect::<Result<Vec<_>>>()?,
            &Tensor::from_f32(&[b, t, hd], lang.clone())?,
        )?;
        taps.time("head", t0);
        for (l, (reg, ctr)) in out.bbox_reg.iter().zip(&out.centerness).enumerate() {
            taps.map(format!("bbox_reg.{l}"), reg)?;
            taps.map(format!("centerness.{l}"), ctr)?;
        }
        for (l, lg) in out.dot_product_logits.iter().enumerate() {
            let hw = lg.len() / (b * t).max(1);
            taps.seq(format!("dot_product_logits.{l}"), &[b, hw, t], lg)?;
        }
        Ok(out)
    }
}

/// Every tensor a GLIP checkpoint must hold for this configuration, with its shape (GLIP's
/// state_dict names; spec §5). Buffers that are recomputed (relative_position_index, anchors,
/// position_ids) are not listed: `glip_ignorable` accepts them when present.
pub fn expected_keys(cfg: &GlipConfig, bert: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let mut k: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: &[usize]| k.push((name, shape.to_vec()));
    // Swin.
    let s = &cfg.swin;
    let e = s.embed_dim;
    let p = "backbone.body.";
    add(
        format!("{p}patch_embed.proj.weight"),
        &[e, 3, s.patch_size, s.patch_size],
    );
    add(format!("{p}patch_embed.proj.bias"), &[e]);
    add(format!("{p}patch_embed.norm.weight"), &[e]);
    add(format!("{p}patch_embed.norm.bias"), &[e]);
    let win = (2 * s.window_size - 1) * (2 * s.window_size - 1);
    let stages = s.depths.len();
    for (i, (&depth, &heads)) in s.depths.iter().zip(&s.num_heads).enumerate() {
        let c = s.stage_channels(i);
        let hid = s.mlp_hidden(c);
        for blk in 0..depth {
            let b = format!("{p}layers.{i}.blocks.{blk}.");
            for n in ["norm1", "norm2"] {
                add(format!("{b}{n}.weight"), &[c]);
                add(format!("{b}{n}.bias"), &[c]);
            }
            add(
                format!("{b}attn.relative_position_bias_table"),
                &[win, heads],
            );
            add(format!("{b}attn.qkv.weight"), &[3 * c, c]);
            add(format!("{b}attn.qkv.bias"), &[3 * c]);
            add(format!("{b}attn.proj.weight"), &[c, c]);
            add(format!("{b}attn.proj.bias"), &[c]);
            add(format!("{b}mlp.fc1.weight"), &[hid, c]);
            add(format!("{b}mlp.fc1.bias"), &[hid]);
            add(format!("{b}mlp.fc2.weight"), &[c, hid]);
            add(format!("{b}mlp.fc2.bias"), &[c]);
        }
        if i + 1 < stages {
            add(format!("{p}layers.{i}.downsample.norm.weight"), &[4 * c]);
            add(format!("{p}layers.{i}.downsample.norm.bias"), &[4 * c]);
            add(
                format!("{p}layers.{i}.downsample.reduction.weight"),
                &[2 * c, 4 * c],
            );
        }
        if i > 0 || s.norm_first_stage {
            add(format!("{p}norm{i}.weight"), &[c]);
            add(format!("{p}norm{i}.bias"), &[c]);
        }
    }
    // FPN.
    let f = &cfg.fpn;
    let o = f.out_channels;
    for (j, &cin) in f.in_channels.iter().enumerate() {
        let lvl = j + 2;
        add(
            format!("backbone.fpn.fpn_inner{lvl}.weight"),
            &[o, cin, 1, 1],
        );
        add(format!("backbone.fpn.fpn_inner{lvl}.bias"), &[o]);
        add(format!("backbone.fpn.fpn_layer{lvl}.weight"), &[o, o, 3, 3]);
        add(format!("backbone.fpn.fpn_layer{lvl}.bias"), &[o]);
    }
    for n in ["p6", "p7"] {
        add(format!("backbone.fpn.top_blocks.{n}.weight"), &[o, o, 3, 3]);
        add(format!("backbone.fpn.top_blocks.{n}.bias"), &[o]);
    }
    // Language backbone (HF BertModel without pooler).
    let h = bert.hidden_size;
    let lp = "language_backbone.body.model.";
    add(
        format!("{lp}embeddings.word_embeddings.weight"),
        &[bert.vocab_size, h],
    );
    add(
        format!("{lp}embeddings.position_embeddings.weight"),
        &[bert.max_position_embeddings, h],
    );
    add(
        format!("{lp}embeddings.token_type_embeddings.weight"),
        &[bert.type_vocab_size, h],
    );
    add(format!("{lp}embeddings.LayerNorm.weight"), &[h]);
    add(format!("{lp}embeddings.LayerNorm.bias"), &[h]);
    let bert_layer = |add: &mut dyn FnMut(String, &[usize]), pre: &str| {
        for q in ["query", "key", "value"] {
            add(format!("{pre}attention.self.{q}.weight"), &[h, h]);
            add(format!("{pre}attention.self.{q}.bias"), &[h]);
        }
        add(format!("{pre}attention.output.dense.weight"), &[h, h]);
        add(format!("{pre}attention.output.dense.bias"), &[h]);
        add(format!("{pre}attention.output.LayerNorm.weight"), &[h]);
        add(format!("{pre}attention.output.LayerNorm.bias"), &[h]);
        add(
            format!("{pre}intermediate.dense.weight"),
            &[bert.intermediate_size, h],
        );
        add(
            format!("{pre}intermediate.dense.bias"),
            &[bert.intermediate_size],
        );
        add(
            format!("{pre}output.dense.weight"),
            &[h, bert.intermediate_size],
        );
        add(format!("{pre}output.dense.bias"), &[h]);
        add(format!("{pre}output.LayerNorm.weight"), &[h]);
        add(format!("{pre}output.LayerNorm.bias"), &[h]);
    };
    for i in 0..bert.num_hidden_layers {
        bert_layer(&mut add, &format!("{lp}encoder.layer.{i}."));
    }
    // VL-DyHead tower.
    let c = cfg.dyhead.channels;
    let emb = cfg.dyhead.fuse.embed_dim;
    let ld = cfg.language.lang_dim;
    for i in 0..cfg.dyhead.num_convs {
        let fp = format!("rpn.head.dyhead_tower.{}.b_attn.", 3 * i);
        add(format!("{fp}gamma_v"), &[c]);
        add(format!("{fp}gamma_l"), &[ld]);
        add(format!("{fp}layer_norm_v.weight"), &[c]);
        add(format!("{fp}layer_norm_v.bias"), &[c]);
        add(format!("{fp}layer_norm_l.weight"), &[ld]);
        add(format!("{fp}layer_norm_l.bias"), &[ld]);
        for (n, din) in [
            ("v_proj", c),
            ("l_proj", ld),
            ("values_v_proj", c),
            ("values_l_proj", ld),
        ] {
            add(format!("{fp}attn.{n}.weight"), &[emb, din]);
            add(format!("{fp}attn.{n}.bias"), &[emb]);
        }
        add(format!("{fp}attn.out_v_proj.weight"), &[c, emb]);
        add(format!("{fp}attn.out_v_proj.bias"), &[c]);
        add(format!("{fp}attn.out_l_proj.weight"), &[ld, emb]);
        add(format!("{fp}attn.out_l_proj.bias"), &[ld]);
        bert_layer(&mut add, &format!("rpn.head.dyhead_tower.{}.", 3 * i + 1));
        let dp = format!("rpn.head.dyhead_tower.{}.", 3 * i + 2);
        for j in 0..3 {
            add(format!("{dp}DyConv.{j}.conv.weight"), &[c, c, 3, 3]);
            add(format!("{dp}DyConv.{j}.conv.bias"), &[c]);
            add(format!("{dp}DyConv.{j}.bn.weight"), &[c]);
            add(format!("{dp}DyConv.{j}.bn.bias"), &[c]);
        }
        add(format!("{dp}AttnConv.1.weight"), &[1, c, 1, 1]);
        add(format!("{dp}AttnConv.1.bias"), &[1]);
        let sq = c / 4;
        add(format!("{dp}relu.fc.0.weight"), &[sq, c]);
        add(format!("{dp}relu.fc.0.bias"), &[sq]);
        add(format!("{dp}relu.fc.2.weight"), &[4 * c, sq]);
        add(format!("{dp}relu.fc.2.bias"), &[4 * c]);
        add(format!("{dp}offset.weight"), &[27, c, 3, 3]);
        add(format!("{dp}offset.bias"), &[27]);
    }
    // Heads.
    let nc = cfg.dyhead.num_score_classes();
    add("rpn.head.cls_logits.weight".into(), &[nc, c, 1, 1]);
    add("rpn.head.cls_logits.bias".into(), &[nc]);
    add("rpn.head.bbox_pred.weight".into(), &[4, c, 1, 1]);
    add("rpn.head.bbox_pred.bias".into(), &[4]);
    add("rpn.head.centerness.weight".into(), &[1, c, 1, 1]);
    add("rpn.head.centerness.bias".into(), &[1]);
    add(
        "rpn.head.dot_product_projection_text.weight".into(),
        &[c, ld],
    );
    add("rpn.head.dot_product_projection_text.bias".into(), &[c]);
    add("rpn.head.log_scale".into(), &[1]);
    add("rpn.head.bias0".into(), &[1]);
    add("rpn.head.bias_lang".into(), &[ld]);
    for l in 0..5 {
        add(format!("rpn.head.scales.{l}.scale"), &[1]);
    }
    k
}

/// Writes recorded taps to a safetensors file (f32), e.g. for `glip detect --dump`.
pub fn write_taps(path: &std::path::Path, taps: &Taps) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(taps.tensors.len());
    for (name, t) in &taps.tensors {
        let v = t.to_f32_vec()?;
        bufs.push((
            name.clone(),
            t.shape().to_vec(),
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    let mut views = Vec::with_capacity(bufs.len());
    for (name, shape, bytes) in &bufs {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| Error::Invalid(format!("dump tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))
}

/// A complete checkpoint of random weights for `cfg` (for benchmarks and smoke tests):
/// Linear/conv weights uniform with variance 1/fan_in, norms at 1, biases small, and GLIP's
/// initial values for the head scalars, so activations stay in a realistic range.
pub fn random_weights(cfg: &GlipConfig, bert: &BertConfig, seed: u64) -> Result<WeightMap> {
    use rayon::prelude::*;
    let keys = expected_keys(cfg, bert);
    let tensors: Result<Vec<(String, Tensor)>> = keys
        .par_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
            let mut rng = crate::testing::Rng::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
            let is_norm = name.ends_with("norm.weight")
                || name.contains("LayerNorm.weight")
                || name.contains("norm1.weight")
                || name.contains("norm2.weight")
                || name.contains("layer_norm_") && name.ends_with(".weight")
                || name.ends_with("bn.weight")
                || (name.contains(".norm") && name.ends_with(".weight") && shape.len() == 1);
            let data: Vec<f32> = if name.ends_with("scale") && shape == &[1] {
                vec![if name.ends_with("log_scale") {
                    0.0
                } else {
                    1.0
                }]
            } else if name.ends_with("bias0") {
                vec![-(0.99f32 / 0.01).ln()]
            } else if name.ends_with("gamma_v") || name.ends_with("gamma_l") {
                vec![1.0 / cfg.dyhead.num_convs.max(1) as f32; n]
            } else if is_norm {
                vec![1.0; n]
            } else if shape.len() == 1 {
                rng.uniform_vec(n, -0.01, 0.01)
            } else {
                let a = (3.0 / fan_in as f32).sqrt();
                rng.uniform_vec(n, -a, a)
            };
            Ok((name.clone(), Tensor::from_f32(shape, data)?))
        })
        .collect();
    Ok(WeightMap::new(
        format!("random weights (seed {seed})"),
        tensors?.into_iter().collect(),
    ))
}
