//! GLIP-T end to end over the op interface: Swin → FPN, BERT, the VL-DyHead tower, heads.
//! A [`Glip`] owns the backend its weights were loaded onto and runs every forward there;
//! the prompt's text features ([`TextFeatures`]) stay on that backend between frames.
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
use crate::backend::clock::StageMark;
use crate::backend::Backend;
pub use crate::backend::SharedBackend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Text features of one prompt: the language backbone's output, computed once per prompt
/// (it does not depend on the image) and reused for every frame. They live on the model's
/// backend (device memory on CUDA), so a cached prompt costs no transfer per frame.
#[derive(Debug)]
pub struct TextFeatures {
    /// Token ids and attention mask fed to BERT ([t]).
    pub ids: Vec<i32>,
    pub mask: Vec<i32>,
    pub t: usize,
    /// Last hidden state [1, t, hidden] on the model's backend (pad rows not zeroed, as GLIP).
    pub hidden: Tensor,
}

/// The pyramid P3..P7 handed to [`Glip::forward_grounded`]: owned (released once the first
/// tower layer has read it) or shared by the chunks of a long prompt.
pub enum Pyramid<'a> {
    Owned(Vec<Tensor>),
    Shared(&'a [Tensor]),
}

impl Pyramid<'_> {
    pub fn levels(&self) -> &[Tensor] {
        match self {
            Pyramid::Owned(v) => v,
            Pyramid::Shared(s) => s,
        }
    }
}

impl From<Vec<Tensor>> for Pyramid<'_> {
    fn from(v: Vec<Tensor>) -> Self {
        Pyramid::Owned(v)
    }
}

/// Records intermediate tensors by name when enabled, under the golden's names
/// (`tower.{k}` is the k-th module of GLIP's dyhead_tower: VLFuse, BertEncoderLayer, DyConv, …).
#[derive(Default)]
pub struct Taps {
    enabled: bool,
    /// Mark each stage on the device's clock too ([`Taps::timed`]). Off by default: a mark
    /// is a point where the host meets the stream, which cuts a replay's CUDA graph.
    device_clock: bool,
    pub tensors: Vec<(String, Tensor)>,
    /// Wall time of each stage of the last forward (always recorded; cheap).
    pub timings: Vec<(String, std::time::Duration)>,
    /// Each stage's start and end on the device's clock, where the backend has one.
    marks: Vec<(String, StageMark, StageMark)>,
}

/// When a stage started: on the host's clock and, on a device, in its queue of work.
pub struct StageStart {
    at: std::time::Instant,
    mark: Option<StageMark>,
}

impl Taps {
    pub fn enabled() -> Self {
        Taps {
            enabled: true,
            ..Taps::default()
        }
    }
    /// No tensors, each stage's time on the host's clock and on the device's.
    pub fn timed() -> Self {
        Taps {
            device_clock: true,
            ..Taps::default()
        }
    }
    pub fn disabled() -> Self {
        Taps::default()
    }
    /// Whether tensors are being recorded.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
    /// A backend tensor, copied to the host when taps are enabled.
    fn tensor(&mut self, be: &dyn Backend, name: impl Into<String>, t: &Tensor) -> Result<()> {
        if self.enabled {
            self.tensors.push((name.into(), be.to_host(t)?.to_f32()?));
        }
        Ok(())
    }
    /// The start of a stage on `be`.
    pub fn start(&self, be: &dyn Backend) -> StageStart {
        // The device mark first: on a device that holds launches back for a CUDA graph,
        // marking runs what the last stage held back, which is not this stage's host time.
        let mark = self.mark(be);
        StageStart {
            at: std::time::Instant::now(),
            mark,
        }
    }
    /// The end of `stage`, started at `start`: its wall time now, its device time (where
    /// `be` has a clock) when [`Taps::device_timings`] reads it.
    pub fn time(&mut self, be: &dyn Backend, stage: impl Into<String>, start: StageStart) {
        let stage = stage.into();
        // The end mark runs what the stage held back (CUDA graphs) before the host time is
        // read, so the stage's host time includes its launches.
        let end = self.mark(be);
        self.timings.push((stage.clone(), start.at.elapsed()));
        if let (Some(a), Some(b)) = (start.mark, end) {
            self.marks.push((stage, a, b));
        }
    }
    fn mark(&self, be: &dyn Backend) -> Option<StageMark> {
        if !self.device_clock {
            return None;
        }
        be.stage_clock().and_then(|c| c.mark().ok())
    }
    /// Each stage's time on the device's clock (GPU time between CUDA events; waits for the
    /// work marked), in stage order; empty on a backend without a clock.
    pub fn device_timings(&self) -> Result<Vec<(String, std::time::Duration)>> {
        self.marks
            .iter()
            .map(|(s, a, b)| Ok((s.clone(), a.until(b)?)))
            .collect()
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

/// The whole GLIP model (GeneralizedVLRCNN with a VLDYHEAD RPN).
pub struct Glip {
    pub config: GlipConfig,
    pub bert_config: BertConfig,
    swin: Swin,
    fpn: Fpn,
    language: BertModel,
    tower: Vec<TowerLayer>,
    head: Head,
    /// Where the weights live and every forward runs.
    backend: SharedBackend,
}

impl Glip {
    /// Builds the model on the CPU from a checkpoint and checks every key (one error lists
    /// all missing, mis-shaped and unexpected tensors).
    pub fn load(config: GlipConfig, bert_config: BertConfig, w: &WeightMap) -> Result<Glip> {
        Glip::load_on(crate::backend::host_shared(), config, bert_config, w)
    }

    /// [`Glip::load`] onto `backend`: each tensor is converted once to the backend's storage
    /// (f16 matrices on CUDA) as the walk asks for it.
    pub fn load_on(
        backend: SharedBackend,
        config: GlipConfig,
        bert_config: BertConfig,
        w: &WeightMap,
    ) -> Result<Glip> {
        let vars = Vars::from_weights(w, &*backend);
        let glip = Glip::new(&vars, config, bert_config, backend.clone())?;
        vars.finish(crate::weights::glip_ignorable)?;
        Ok(glip)
    }

    /// The model on the CPU with GLIP-shaped random weights (benchmarks, smoke tests).
    pub fn random(config: GlipConfig, bert_config: BertConfig, seed: u64) -> Result<Glip> {
        Glip::random_on(crate::backend::host_shared(), config, bert_config, seed)
    }

    /// [`Glip::random`] on `backend` (the same draws as on the CPU, converted).
    pub fn random_on(
        backend: SharedBackend,
        config: GlipConfig,
        bert_config: BertConfig,
        seed: u64,
    ) -> Result<Glip> {
        Glip::new(
            &Vars::random(seed, &*backend),
            config,
            bert_config,
            backend.clone(),
        )
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> &SharedBackend {
        &self.backend
    }

    /// The one walk of the model's constructors: every parameter is asked of `vars` by its
    /// GLIP state_dict name (spec §5), shape and initialisation. The model's tensors live on
    /// `vars`' backend, which is `backend`, where every forward then runs.
    fn new(
        vars: &Vars,
        config: GlipConfig,
        bert_config: BertConfig,
        backend: SharedBackend,
    ) -> Result<Glip> {
        let swin = Swin::new(&vars.pp("backbone.body"), &config.swin)?;
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
                    (config.dyhead.gn_groups, config.dyhead.gn_eps as f32),
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
            backend,
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
        let hidden = self.language.forward(
            &*self.backend,
            &Tensor::from_i32(&[1, t], ids.to_vec())?,
            &Tensor::from_i32(&[1, t], mask.to_vec())?,
        )?;
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
        self.forward_on(&*self.backend, images, text, taps)
    }

    /// [`Glip::forward`] recorded op by op, with the memory plan of its activations for this
    /// (image size, batch, prompt length); the outputs are those of a plain forward.
    pub fn forward_planned(
        &self,
        images: &FeatureMap,
        text: &TextFeatures,
    ) -> Result<(HeadOutputs, crate::backend::plan::MemoryPlan)> {
        use crate::backend::plan::{MemoryPlan, Recorder};
        let rec = Recorder::new(&*self.backend);
        let out = self.forward_on(&rec, images, text, &mut Taps::disabled())?;
        Ok((out, MemoryPlan::from_trace(&rec.into_trace())))
    }

    /// The forward on `be` (which must hold this model's tensors, e.g. a recorder around
    /// the model's backend): [`Glip::forward_visual`], then [`Glip::forward_grounded`].
    pub fn forward_on(
        &self,
        be: &dyn Backend,
        images: &FeatureMap,
        text: &TextFeatures,
        taps: &mut Taps,
    ) -> Result<HeadOutputs> {
        let pyramid = self.forward_visual(be, images, taps)?;
        self.forward_grounded(be, pyramid.into(), text, taps)
    }

    /// The part of the forward that does not depend on the prompt: backbone and FPN, giving
    /// the pyramid P3..P7 (computed once per image for a prompt of several chunks).
    pub fn forward_visual(
        &self,
        be: &dyn Backend,
        images: &FeatureMap,
        taps: &mut Taps,
    ) -> Result<Vec<Tensor>> {
        let t0 = taps.start(be);
        // The image goes up in the backend's activation dtype (half the bytes on CUDA).
        let image = match be.activation_dtype() {
            crate::tensor::DType::F16 => images.to_tensor()?.to_f16()?,
            _ => images.to_tensor()?,
        };
        let stages = self.swin.forward(be, &be.upload(&image)?)?;
        taps.time(be, "backbone (Swin)", t0);
        for (i, s) in stages.iter().enumerate() {
            taps.tensor(be, format!("backbone.stage{}", i + 2), s)?;
        }
        let n = stages.len();
        if n < 3 {
            return Err(Error::shape(
                "Glip::forward",
                format!("backbone gave {n} stages, the FPN needs 3"),
            ));
        }
        let t0 = taps.start(be);
        let pyramid = self
            .fpn
            .forward(be, &stages[n - 3], &stages[n - 2], &stages[n - 1])?;
        drop(stages);
        taps.time(be, "fpn", t0);
        for (i, p) in pyramid.iter().enumerate() {
            taps.tensor(be, format!("fpn.p{}", i + 3), p)?;
        }
        Ok(pyramid.into())
    }

    /// The prompt-dependent part: the VL-DyHead tower and the head on the pyramid of
    /// [`Glip::forward_visual`] (borrowed, so several chunks of one prompt share it).
    pub fn forward_grounded(
        &self,
        be: &dyn Backend,
        pyramid: Pyramid<'_>,
        text: &TextFeatures,
        taps: &mut Taps,
    ) -> Result<HeadOutputs> {
        let p0 = pyramid
            .levels()
            .first()
            .ok_or_else(|| Error::shape("Glip::forward", "an empty pyramid"))?;
        let b = p0.shape().first().copied().unwrap_or(0);
        let t = text.t;
        let hd = self.bert_config.hidden_size;
        if text.hidden.shape() != [1, t, hd] || text.hidden.device() != be.device() {
            return Err(Error::shape(
                "Glip::forward",
                format!(
                    "text features [{:?}] on {}: expected [1, {t}, {hd}] on {} (encode the prompt with this model)",
                    text.hidden.shape(),
                    text.hidden.device().name(),
                    be.device().name()
                ),
            ));
        }
        taps.tensor(be, "language.hidden", &text.hidden)?;

        // The prompt is shared by the batch: repeat its features per image.
        let mut lang = be.repeat_batch(&text.hidden, b)?;
        let mask: Vec<i32> = (0..b).flat_map(|_| text.mask.iter().copied()).collect();
        let mask = be.upload(&Tensor::from_i32(&[b, t], mask)?)?;
        let mut pyramid = pyramid;
        let mut visual: Vec<Tensor> = Vec::new();
        for (i, layer) in self.tower.iter().enumerate() {
            let t0 = taps.start(be);
            let cur: &[Tensor] = if i == 0 { pyramid.levels() } else { &visual };
            let (v, l) = layer.fuse.forward(be, cur, &lang, &mask)?;
            if i == 0 {
                pyramid = Pyramid::Shared(&[]); // an owned pyramid is not read again
            }
            taps.time(be, format!("tower.{i} VLFuse"), t0);
            for (k, m) in v.iter().enumerate() {
                taps.tensor(be, format!("tower.{}.VLFuse.visual.{k}", 3 * i), m)?;
            }
            taps.tensor(be, format!("tower.{}.VLFuse.lang_hidden", 3 * i), &l)?;
            let t0 = taps.start(be);
            lang = layer.bert.forward(be, &l, &mask)?;
            taps.time(be, format!("tower.{i} BertEncoderLayer"), t0);
            taps.tensor(
                be,
                format!("tower.{}.BertEncoderLayer.lang_hidden", 3 * i + 1),
                &lang,
            )?;
            let t0 = taps.start(be);
            visual = layer.dyconv.forward(be, &v)?;
            taps.time(be, format!("tower.{i} DyConv"), t0);
            for (k, m) in visual.iter().enumerate() {
                taps.tensor(be, format!("tower.{}.DyConv.visual.{k}", 3 * i + 2), m)?;
            }
        }
        let t0 = taps.start(be);
        let last = if self.tower.is_empty() {
            pyramid.levels()
        } else {
            &visual
        };
        let out = self.head.forward(be, last, &lang)?;
        taps.time(be, "head", t0);
        for (l, (reg, ctr)) in out.bbox_reg.iter().zip(&out.centerness).enumerate() {
            taps.tensor(be, format!("bbox_reg.{l}"), reg)?;
            taps.tensor(be, format!("centerness.{l}"), ctr)?;
        }
        for (l, lg) in out.dot_product_logits.iter().enumerate() {
            taps.tensor(be, format!("dot_product_logits.{l}"), lg)?;
        }
        Ok(out)
    }
}

/// One walk of the constructors over `vars` with a host backend (the model built is dropped:
/// the walk is what `vars` records).
fn walk_on_host(vars: &Vars, cfg: &GlipConfig, bert: &BertConfig) -> Result<()> {
    Glip::new(
        vars,
        cfg.clone(),
        bert.clone(),
        crate::backend::host_shared(),
    )?;
    Ok(())
}

/// Every tensor a GLIP checkpoint must hold for this configuration, with its shape (GLIP's
/// state_dict names; spec §5), from the constructors' own walk. Buffers that are recomputed
/// (relative_position_index, anchors, position_ids) are not listed: `glip_ignorable` accepts
/// them when present.
pub fn expected_keys(cfg: &GlipConfig, bert: &BertConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let vars = Vars::keys_only();
    walk_on_host(&vars, cfg, bert)?;
    Ok(vars.requested())
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

/// A complete checkpoint of random weights for `cfg` (the initialisation each constructor
/// declares: Linear/conv weights uniform with variance 1/fan_in, norms at 1, biases small,
/// GLIP's initial values for the head scalars), e.g. for `glip convert` tests.
pub fn random_weights(cfg: &GlipConfig, bert: &BertConfig, seed: u64) -> Result<WeightMap> {
    let vars = Vars::random_checkpoint(seed, crate::backend::host());
    walk_on_host(&vars, cfg, bert)?;
    Ok(WeightMap::new(
        format!("random weights (seed {seed})"),
        vars.take_drawn().into_iter().collect(),
    ))
}
