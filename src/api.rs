//! The library API, in the style of `ort`: build a [`Detector`] once, set a prompt (its
//! text features are computed once and cached), then call [`Detector::detect`] per frame.
//!
//! ```no_run
//! # fn main() -> glip_rt::Result<()> {
//! let mut det = glip_rt::Detector::builder()
//!     .config("glip_Swin_T_O365_GoldG.yaml")
//!     .weights("glip_t.safetensors")
//!     .build()?;
//! det.set_prompt("person. bicycle. traffic light.")?;
//! for d in det.detect_file("street.jpg")? {
//!     println!("{} {:.3} {:?}", d.phrase, d.score, d.bbox);
//! }
//! # Ok(()) }
//! ```

use crate::backend::executor::{Executor, PlanInfo};
use crate::backend::plan::MemoryPlan;
pub use crate::backend::DeviceChoice;
use crate::error::{Error, Result};
use crate::model::config::{BertConfig, GlipConfig};
use crate::model::glip::{Glip, Taps, TextFeatures};
use crate::model::head::HeadOutputs;
use crate::model::postprocess::{self, PostprocessConfig};
use crate::model::FeatureMap;
use crate::preprocess::{self, PreprocessConfig, Preprocessed, RgbImage8};
use crate::tensor::Tensor;
use crate::tokenizer::{EncodedPrompt, GlipTokenizer, Prompt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One detection: a box in the original image's pixels, its score, the 1-based label of the
/// phrase it grounds and that phrase's text.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Detection {
    /// [x1, y1, x2, y2] in original-image pixels (GLIP's +1 convention: x2 is inclusive).
    pub bbox: [f32; 4],
    pub score: f32,
    pub label: u32,
    pub phrase: String,
}

/// Per-phrase thresholds written as a JSON object `{"phrase": threshold, …}` (the form
/// `glip serve` and the GStreamer element take), each a number in [0, 1]; for
/// [`Detector::set_phrase_thresholds`] or a filter of one's own.
pub fn phrase_thresholds_from_json(text: &str) -> Result<Vec<(String, f32)>> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| {
            Error::Invalid(format!(
                "phrase thresholds must be a JSON object {{\"phrase\": threshold}}: {e}"
            ))
        })?;
    map.into_iter()
        .map(|(name, v)| match v.as_f64() {
            Some(t) if (0.0..=1.0).contains(&t) => Ok((name, t as f32)),
            _ => Err(Error::Invalid(format!(
                "the threshold {v} of {name:?} is not a number in [0, 1]"
            ))),
        })
        .collect()
}

/// Fails naming the first of `names` that is not among the prompt's `phrases` (and listing
/// those): per-phrase thresholds must name phrases the prompt has.
pub fn check_phrase_names<S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
    phrases: &[&str],
) -> Result<()> {
    match names.into_iter().find(|n| !phrases.contains(&n.as_ref())) {
        None => Ok(()),
        Some(name) => Err(Error::Prompt(format!(
            "{:?} is not a phrase of the prompt (its phrases: {})",
            name.as_ref(),
            phrases.join(" | ")
        ))),
    }
}

/// Where the model comes from and how it runs.
#[derive(Clone, Default)]
pub struct DetectorBuilder {
    /// A model folder ([`MODEL_DIR_FILES`]) for the files not named one by one.
    model_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    preset: Option<GlipConfig>,
    weights: Option<PathBuf>,
    bert_config: Option<PathBuf>,
    bert: Option<BertConfig>,
    tokenizer: Option<PathBuf>,
    threshold: f32,
    pad_prompt: bool,
    min_size: Option<u32>,
    max_size: Option<u32>,
    device: DeviceChoice,
    /// Refuse per-op CPU fallback (default: allowed).
    no_fallback: bool,
    random_seed: Option<u64>,
    /// Prompts whose text features stay cached (None: [`DEFAULT_PROMPT_CACHE`]).
    prompt_cache: Option<usize>,
}

/// The files of a model folder ([`DetectorBuilder::model_dir`]): GLIP's yaml and the
/// weights, then the optional BERT config and tokenizer.
pub const MODEL_DIR_FILES: [&str; 4] = [
    "config.yaml",
    "model.safetensors",
    "bert_config.json",
    "tokenizer.json",
];

/// Prompts (chunks) whose BERT output a detector keeps by default.
pub const DEFAULT_PROMPT_CACHE: usize = 8;

impl DetectorBuilder {
    /// A model folder: `config.yaml` (GLIP's yaml), `model.safetensors` and, when present,
    /// `bert_config.json` and `tokenizer.json`. Files named one by one ([`Self::config`],
    /// [`Self::weights`], …) take the place of the folder's.
    pub fn model_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.model_dir = Some(dir.into());
        self
    }
    /// The model folder's files where none was named (build time).
    fn with_model_dir_files(mut self) -> Result<Self> {
        let Some(dir) = self.model_dir.take() else {
            return Ok(self);
        };
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "model folder {}: not a folder",
                dir.display()
            )));
        }
        let [config, weights, bert, tok] = MODEL_DIR_FILES;
        let found = |name: &str, required: bool| -> Result<Option<PathBuf>> {
            let p = dir.join(name);
            match (p.is_file(), required) {
                (true, _) => Ok(Some(p)),
                (false, true) => Err(Error::Config(format!(
                    "model folder {}: no {name} in it (a model folder holds {})",
                    dir.display(),
                    MODEL_DIR_FILES.join(", ")
                ))),
                (false, false) => Ok(None),
            }
        };
        if self.config.is_none() && self.preset.is_none() {
            self.config = found(config, true)?;
        }
        if self.weights.is_none() && self.random_seed.is_none() {
            self.weights = found(weights, true)?;
        }
        if self.bert_config.is_none() && self.bert.is_none() {
            self.bert_config = found(bert, false)?;
        }
        if self.tokenizer.is_none() {
            self.tokenizer = found(tok, false)?;
        }
        Ok(self)
    }
    /// GLIP's yaml config (e.g. `glip_Swin_T_O365_GoldG.yaml`).
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }
    /// A built-in configuration instead of a yaml (`GlipConfig::glip_t()`).
    pub fn preset(mut self, cfg: GlipConfig) -> Self {
        self.preset = Some(cfg);
        self
    }
    /// safetensors weights with GLIP's key names (`glip convert` makes them from a `.pth`).
    pub fn weights(mut self, path: impl Into<PathBuf>) -> Self {
        self.weights = Some(path.into());
        self
    }
    /// An HF-style BERT `config.json` (default: bert-base-uncased, as GLIP).
    pub fn bert_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.bert_config = Some(path.into());
        self
    }
    /// The BERT configuration itself instead of a config.json (overrides `bert_config`).
    pub fn bert(mut self, cfg: BertConfig) -> Self {
        self.bert = Some(cfg);
        self
    }
    /// A `tokenizer.json` (default: the embedded bert-base-uncased one).
    pub fn tokenizer(mut self, path: impl Into<PathBuf>) -> Self {
        self.tokenizer = Some(path.into());
        self
    }
    /// Detections scoring below this are dropped (default 0: GLIP's full top-100).
    pub fn threshold(mut self, t: f32) -> Self {
        self.threshold = t;
        self
    }
    /// How many prompt chunks keep their text features (the 12-layer BERT output, on the
    /// model's device) for a later `set_prompt` of the same text (least recently used out;
    /// default [`DEFAULT_PROMPT_CACHE`], at least 1).
    pub fn prompt_cache(mut self, chunks: usize) -> Self {
        self.prompt_cache = Some(chunks.max(1));
        self
    }
    /// Run the text with GLIP's padding to 256 tokens instead of the real tokens only (the
    /// results are the same up to rounding; padding costs time).
    pub fn pad_prompt(mut self, pad: bool) -> Self {
        self.pad_prompt = pad;
        self
    }
    /// Where to run (default [`DeviceChoice::Auto`]: a GPU when one is present and this build
    /// has kernels, else the CPU, saying which and why in [`Detector::device_notice`]).
    pub fn device(mut self, d: DeviceChoice) -> Self {
        self.device = d;
        self
    }
    /// Whether ops the device has no kernel for may run on the CPU (default true, unless
    /// `GLIP_NO_FALLBACK=1`); when false such an op is an error naming it.
    pub fn allow_fallback(mut self, allow: bool) -> Self {
        self.no_fallback = !allow;
        self
    }
    /// GLIP-shaped random weights (seeded) instead of a weights file: benchmarks and smoke
    /// tests of a configuration without its checkpoint.
    pub fn random_weights(mut self, seed: u64) -> Self {
        self.random_seed = Some(seed);
        self
    }
    /// Override the resize rule (short side, long-side cap) of the config.
    pub fn input_size(mut self, min_size: u32, max_size: Option<u32>) -> Self {
        self.min_size = Some(min_size);
        self.max_size = max_size;
        self
    }

    pub fn build(self) -> Result<Detector> {
        self.with_model_dir_files()?.build_resolved()
    }

    /// [`Self::build`] once the model folder's files are in place.
    fn build_resolved(self) -> Result<Detector> {
        let config = match (self.preset, &self.config) {
            (Some(c), None) => c,
            (None, Some(p)) => GlipConfig::from_yaml_file(p)?,
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give either a config file or a preset, not both".into(),
                ))
            }
            (None, None) => {
                return Err(Error::Config(
                    "no model config given (a GLIP yaml or a preset)".into(),
                ))
            }
        };
        let bert = match (self.bert, &self.bert_config) {
            (Some(b), _) => b,
            (None, Some(p)) => BertConfig::from_file(p)?,
            (None, None) => BertConfig::default(),
        };
        let selected = crate::backend::select(self.device, !self.no_fallback)?;
        let device_notice = selected.notice;
        let mut warnings: Vec<String> = Vec::new();
        let model = match (self.random_seed, &self.weights) {
            (Some(seed), None) => Glip::random_on(selected.backend, config, bert, seed)?,
            (None, Some(wpath)) => {
                let weights = crate::weights::load_weights(wpath)?;
                warnings.extend(crate::weights::nonfinite_summary(&weights));
                Glip::load_on(selected.backend, config, bert, &weights)?
            }
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give either a weights file or random weights, not both".into(),
                ))
            }
            (None, None) => return Err(Error::Config("no weights file given".into())),
        };
        let tokenizer = GlipTokenizer::load(self.tokenizer.as_deref())?;
        let input = &model.config.input;
        let mut pre = PreprocessConfig::from_input(input);
        if let Some(m) = self.min_size {
            // The resize target sizes every feature map: bounded as the config's own.
            let lim = crate::limits::MAX_TEST_SIZE as u32;
            if m == 0 || m > lim || self.max_size.is_some_and(|x| x == 0 || x > lim) {
                return Err(Error::Config(format!(
                    "input_size({m}, {:?}): sizes must be in 1..={lim}",
                    self.max_size
                )));
            }
            pre.min_size = m;
            pre.max_size = self.max_size;
        }
        let pp = &model.config.postprocess;
        let mut post = PostprocessConfig::default();
        post.atss.pre_nms_thresh = pp.inference_th as f32;
        post.atss.pre_nms_top_n = pp.pre_nms_top_n;
        post.atss.nms_thresh = pp.nms_th as f32;
        post.atss.detections_per_img = pp.detections_per_img;
        post.anchor_strides = model.config.anchors.strides.clone();
        Ok(Detector {
            model,
            tokenizer,
            pre,
            post,
            threshold: self.threshold,
            pad_prompt: self.pad_prompt,
            prompt_cache: PromptCache::new(self.prompt_cache.unwrap_or(DEFAULT_PROMPT_CACHE)),
            prompt: None,
            warnings,
            device_notice,
            executor: Executor::default(),
        })
    }
}

/// Counts of the prompt cache ([`Detector::prompt_cache_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PromptCacheStats {
    /// Chunks served from the cache / encoded by BERT.
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub capacity: usize,
}

/// The text features of recently used prompt chunks, most recent first, at most `capacity`:
/// switching back to a prompt (an application cycling through queries) runs BERT once.
struct PromptCache {
    entries: std::collections::VecDeque<(Vec<i32>, Vec<i32>, Arc<TextFeatures>)>,
    stats: PromptCacheStats,
}

impl PromptCache {
    fn new(capacity: usize) -> Self {
        PromptCache {
            entries: std::collections::VecDeque::new(),
            stats: PromptCacheStats {
                capacity: capacity.max(1),
                ..Default::default()
            },
        }
    }

    fn get_or_encode(
        &mut self,
        ids: &[i32],
        mask: &[i32],
        encode: impl FnOnce() -> Result<TextFeatures>,
    ) -> Result<Arc<TextFeatures>> {
        if let Some(i) = self
            .entries
            .iter()
            .position(|(a, b, _)| a == ids && b == mask)
        {
            self.stats.hits += 1;
            let e = self
                .entries
                .remove(i)
                .ok_or_else(|| Error::Invalid("prompt cache".into()))?;
            let text = Arc::clone(&e.2);
            self.entries.push_front(e);
            return Ok(text);
        }
        let text = Arc::new(encode()?);
        self.stats.misses += 1;
        self.entries
            .push_front((ids.to_vec(), mask.to_vec(), Arc::clone(&text)));
        self.entries.truncate(self.stats.capacity);
        Ok(text)
    }

    fn stats(&self) -> PromptCacheStats {
        PromptCacheStats {
            entries: self.entries.len(),
            ..self.stats
        }
    }
}

struct PromptChunk {
    /// None for a prompt given as token ids ([`Detector::set_prompt_ids`]).
    encoded: Option<EncodedPrompt>,
    text: Arc<TextFeatures>,
    /// (label, token indices) for post-processing, tokens < t.
    positive_map: Vec<(u32, Vec<usize>)>,
}

struct ActivePrompt {
    chunks: Vec<PromptChunk>,
    /// (label, phrase text) of every phrase, over all chunks.
    names: Vec<(u32, String)>,
    /// (label, score threshold) of the labels given their own threshold
    /// ([`Detector::set_phrase_thresholds`]); the others use the detector's.
    thresholds: Vec<(u32, f32)>,
}

impl ActivePrompt {
    fn new(chunks: Vec<PromptChunk>, names: Vec<(u32, String)>) -> Self {
        ActivePrompt {
            chunks,
            names,
            thresholds: Vec::new(),
        }
    }
    /// The score a detection of `label` needs to be kept.
    fn threshold_of(&self, label: u32, default: f32) -> f32 {
        self.thresholds
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(default, |&(_, t)| t)
    }
}

/// The shape a memory plan is recorded for: the network input, the batch, the prompt's
/// tokens (one chunk) and which part of the pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlanKey {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    /// Tokens of the chunk (0 for [`Stage::Visual`]).
    pub tokens: usize,
    pub stage: Stage,
}

/// The parts of the pipeline recorded and replayed as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Forward and post-processing of a prompt of one chunk.
    Whole,
    /// Backbone and FPN, once per image for a prompt of several chunks.
    Visual,
    /// Tower, head and post-processing of one chunk on the shared pyramid.
    Grounded,
}

/// The one pipeline every front end uses (`glip detect`, `stream`, `bench`, the C ABI, the
/// tests): preprocess → cached text features → forward on the chosen backend →
/// post-processing → detections in original-image pixels.
pub struct Detector {
    model: Glip,
    tokenizer: GlipTokenizer,
    pre: PreprocessConfig,
    post: PostprocessConfig,
    threshold: f32,
    pad_prompt: bool,
    prompt_cache: PromptCache,
    prompt: Option<ActivePrompt>,
    warnings: Vec<String>,
    /// Which device `Auto` chose and why (None for an explicit choice).
    device_notice: Option<String>,
    /// The recorded forward (forward + post-processing) per shape: the first frame of a
    /// shape runs recorded (same outputs), later frames of that shape replay it from one
    /// device arena (backend/executor.rs).
    executor: Executor<PlanKey>,
}

impl Detector {
    /// What was suspicious but not fatal while building (e.g. NaN or infinite weights, which
    /// silently give no detections); each is said once, here, for the caller to show.
    /// Which device [`DeviceChoice::Auto`] chose and why, to be said once (None when the
    /// device was named).
    pub fn device_notice(&self) -> Option<&str> {
        self.device_notice.as_deref()
    }
    /// The ops that ran on the CPU in place of the device so far (per-op fallback).
    pub fn fallbacks(&self) -> Vec<crate::backend::ops::FallbackCount> {
        self.model.backend().fallbacks()
    }
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn builder() -> DetectorBuilder {
        DetectorBuilder::default()
    }

    pub fn model(&self) -> &Glip {
        &self.model
    }
    /// The device the model runs on.
    pub fn device(&self) -> crate::tensor::Device {
        self.model.backend().device()
    }
    /// The memory plans recorded so far, one per input shape seen.
    pub fn memory_plans(&self) -> Vec<(PlanKey, Arc<MemoryPlan>)> {
        self.executor
            .plans()
            .into_iter()
            .map(|(k, p)| (k, p.memory))
            .collect()
    }
    /// What the executor knows of every shape seen: plans, arena, replays.
    pub fn plans(&self) -> Vec<(PlanKey, PlanInfo)> {
        self.executor.plans()
    }
    pub fn tokenizer(&self) -> &GlipTokenizer {
        &self.tokenizer
    }
    pub fn preprocess_config(&self) -> &PreprocessConfig {
        &self.pre
    }

    /// A class-list prompt such as `person. bicycle. traffic light.` (each '.'-separated
    /// part is a phrase). Encodes the text once; later frames reuse it.
    pub fn set_prompt(&mut self, text: &str) -> Result<()> {
        self.set_prompt_parsed(Prompt::parse(text)?)
    }

    /// A free caption grounding the given phrases (each must occur in the caption).
    pub fn set_prompt_with_phrases<S: AsRef<str>>(
        &mut self,
        caption: &str,
        phrases: &[S],
    ) -> Result<()> {
        self.set_prompt_parsed(Prompt::with_phrases(caption, phrases)?)
    }

    /// A free caption grounding its noun phrases, found as GLIP's demo finds them
    /// ([`crate::phrases::auto_prompt`]: one label per occurrence of each phrase).
    pub fn set_prompt_auto_phrases(&mut self, caption: &str) -> Result<()> {
        self.set_prompt_parsed(crate::phrases::auto_prompt(caption)?)
    }

    /// Sets an already-built prompt. A prompt over GLIP's 256 tokens is split into chunks of
    /// whole phrases that each fit (labels kept global); every frame then runs once per chunk
    /// and the chunks' detections are concatenated without NMS across them, as GLIP's chunked
    /// evaluation does.
    pub fn set_prompt_parsed(&mut self, prompt: Prompt) -> Result<()> {
        let encoded = self.tokenizer.encode(&prompt)?;
        let chunks = if encoded.truncated() {
            let names = prompt.names();
            crate::tokenizer::chunk_to_fit(
                &self.tokenizer,
                &names,
                crate::tokenizer::MAX_QUERY_LEN,
            )?
            .into_iter()
            .map(|c| self.tokenizer.encode(&c))
            .collect::<Result<Vec<_>>>()?
        } else {
            vec![encoded]
        };
        let mut states = Vec::with_capacity(chunks.len());
        for encoded in chunks {
            if encoded.truncated() {
                return Err(Error::Prompt(format!(
                    "a phrase of the prompt alone is longer than GLIP's 256 tokens ({} tokens)",
                    encoded.untruncated_ids.len()
                )));
            }
            let t = if self.pad_prompt {
                encoded.input_ids.len()
            } else {
                encoded.num_real
            };
            let ids: Vec<i32> = encoded.input_ids[..t].iter().map(|&v| v as i32).collect();
            let mask: Vec<i32> = encoded.attention_mask[..t]
                .iter()
                .map(|&v| v as i32)
                .collect();
            let positive_map = encoded.positive_map();
            let mut chunk = self.encode_chunk(&ids, &mask, positive_map)?;
            chunk.encoded = Some(encoded);
            states.push(chunk);
        }
        let names = prompt
            .phrases
            .iter()
            .map(|ph| (ph.label, ph.name.clone()))
            .collect();
        self.prompt = Some(ActivePrompt::new(states, names));
        Ok(())
    }

    /// A prompt given as BERT token ids and attention mask (benchmarks, tests), with its
    /// positive map (label → token indices) and the labels' names.
    pub fn set_prompt_ids(
        &mut self,
        ids: &[i32],
        mask: &[i32],
        positive_map: Vec<(u32, Vec<usize>)>,
        names: Vec<(u32, String)>,
    ) -> Result<()> {
        let chunk = self.encode_chunk(ids, mask, positive_map)?;
        self.prompt = Some(ActivePrompt::new(vec![chunk], names));
        Ok(())
    }

    /// Detections scoring below `t` are dropped from the next frame on (0 keeps GLIP's full
    /// top 100; phrases given their own threshold keep it). `t` must be in [0, 1]; on an
    /// error nothing changes.
    pub fn set_threshold(&mut self, t: f32) -> Result<()> {
        if !(t.is_finite() && (0.0..=1.0).contains(&t)) {
            return Err(Error::Invalid(format!(
                "the threshold {t} must be in [0, 1]"
            )));
        }
        self.threshold = t;
        Ok(())
    }

    /// Score thresholds for phrases of the current prompt, as GLIP's demo takes a list of
    /// per-class confidence thresholds (`predictor_glip.py`, `_post_process_fixed_thresh`):
    /// a detection of phrase `name` is kept when its score is at least that phrase's
    /// threshold (below or above the detector's own, which the other phrases keep). A name
    /// applies to every label with that text (a phrase found twice by
    /// [`Detector::set_prompt_auto_phrases`] has two). Each name must be a phrase of the
    /// current prompt and each value in [0, 1]; on an error nothing changes. Replaces the
    /// thresholds set before; a new prompt clears them.
    pub fn set_phrase_thresholds<S: AsRef<str>>(&mut self, pairs: &[(S, f32)]) -> Result<()> {
        let p = self
            .prompt
            .as_mut()
            .ok_or_else(|| Error::Prompt("phrase thresholds need a prompt: set it first".into()))?;
        let known: Vec<&str> = p.names.iter().map(|(_, n)| n.as_str()).collect();
        check_phrase_names(pairs.iter().map(|(n, _)| n.as_ref()), &known)?;
        let mut thresholds = Vec::new();
        for (name, t) in pairs {
            let name = name.as_ref();
            if !(t.is_finite() && (0.0..=1.0).contains(t)) {
                return Err(Error::Invalid(format!(
                    "the threshold {t} of phrase {name:?} must be in [0, 1]"
                )));
            }
            // A name given twice: the last value counts.
            for (label, _) in p.names.iter().filter(|(_, n)| n == name) {
                thresholds.retain(|(l, _)| l != label);
                thresholds.push((*label, *t));
            }
        }
        p.thresholds = thresholds;
        Ok(())
    }

    /// The prompt cache's counts so far.
    pub fn prompt_cache_stats(&self) -> PromptCacheStats {
        self.prompt_cache.stats()
    }

    /// One chunk's text features on the model's backend (from the prompt cache when this
    /// text was encoded recently), with its positive map cut to the tokens the model sees.
    fn encode_chunk(
        &mut self,
        ids: &[i32],
        mask: &[i32],
        positive_map: Vec<(u32, Vec<usize>)>,
    ) -> Result<PromptChunk> {
        let t = ids.len();
        let positive_map = positive_map
            .into_iter()
            .map(|(label, toks)| (label, toks.into_iter().filter(|&k| k < t).collect()))
            .collect();
        let model = &self.model;
        let text = self
            .prompt_cache
            .get_or_encode(ids, mask, || model.encode_text(ids, mask))?;
        Ok(PromptChunk {
            encoded: None,
            text,
            positive_map,
        })
    }

    /// The prompt's chunks as encoded (one unless the prompt exceeds 256 tokens; none for a
    /// prompt given as token ids).
    pub fn prompt_chunks(&self) -> Vec<&EncodedPrompt> {
        self.prompt
            .iter()
            .flat_map(|p| p.chunks.iter().filter_map(|c| c.encoded.as_ref()))
            .collect()
    }

    /// The current prompt, as encoded (its first chunk if it was split).
    pub fn prompt(&self) -> Option<&EncodedPrompt> {
        self.prompt
            .as_ref()
            .and_then(|p| p.chunks.first())
            .and_then(|c| c.encoded.as_ref())
    }

    fn active(&self) -> Result<&ActivePrompt> {
        self.prompt
            .as_ref()
            .ok_or_else(|| Error::Prompt("no prompt set: call set_prompt first".into()))
    }

    /// Detect in an image file.
    pub fn detect_file(&self, path: impl AsRef<Path>) -> Result<Vec<Detection>> {
        let img = preprocess::load_image(path.as_ref(), self.pre.exif_orientation)?;
        self.detect(&img)
    }

    /// Detect in one RGB frame.
    pub fn detect(&self, image: &RgbImage8) -> Result<Vec<Detection>> {
        let mut v = self.detect_batch(std::slice::from_ref(image))?;
        v.pop()
            .ok_or_else(|| Error::Invalid("empty batch result".into()))
    }

    /// Detect in one raw video frame of `format`, given as its planes in memory order, each
    /// with its row stride in bytes (see [`PixFmt::planes`](crate::pixfmt::PixFmt::planes)).
    pub fn detect_frame(
        &self,
        format: crate::pixfmt::PixFmt,
        width: usize,
        height: usize,
        planes: &[(&[u8], usize)],
    ) -> Result<Vec<Detection>> {
        check_frame_size(width, height)?;
        let packed = format.pack(width, height, planes)?;
        self.detect(&format.to_rgb(width, height, &packed)?)
    }

    /// [`Detector::detect_frame`] on a frame in device memory: `planes` are (device address,
    /// row stride) in memory order. Copied to the host on `stream` after the work queued
    /// there (backend/frames.rs). An error on a backend without device memory (the CPU).
    ///
    /// # Safety
    /// Each address is device memory of this detector's CUDA context holding its plane at
    /// its stride; `stream` is null or a live stream of that context.
    pub unsafe fn detect_device_frame(
        &self,
        format: crate::pixfmt::PixFmt,
        width: usize,
        height: usize,
        planes: &[(u64, usize)],
        stream: *mut std::ffi::c_void,
    ) -> Result<Vec<Detection>> {
        check_frame_size(width, height)?;
        let be = self.model.backend();
        let frames = be.device_frames().ok_or_else(|| {
            Error::NoDevice(format!(
                "frames in device memory need the CUDA backend on a GPU; this detector runs on {}",
                be.describe()
            ))
        })?;
        let layout = format
            .planes(width, height)
            .ok_or_else(|| Error::Invalid("frame size overflows".into()))?;
        if planes.len() != layout.len() {
            return Err(Error::Invalid(format!(
                "a {} frame has {} planes, {} given",
                format.name(),
                layout.len(),
                planes.len()
            )));
        }
        let device: Vec<crate::backend::frames::DevicePlane> = layout
            .iter()
            .zip(planes)
            .map(
                |(&(row_bytes, rows), &(ptr, stride))| crate::backend::frames::DevicePlane {
                    ptr,
                    stride,
                    row_bytes,
                    rows,
                },
            )
            .collect();
        // SAFETY: forwarded caller contract.
        let packed = unsafe { frames.planes_to_host(&device, stream) }?;
        self.detect(&format.to_rgb(width, height, &packed)?)
    }

    /// Detect in several frames with one forward pass. As in GLIP, the images are zero-padded
    /// to the batch's largest size, which changes results slightly compared with one at a time.
    pub fn detect_batch(&self, images: &[RgbImage8]) -> Result<Vec<Vec<Detection>>> {
        let pre: Vec<Preprocessed> = images
            .iter()
            .map(|im| preprocess::preprocess_image(im, &self.pre))
            .collect::<Result<_>>()?;
        let (dets, _) = self.run(&pre, &mut Taps::disabled())?;
        Ok(dets)
    }

    /// The whole pipeline on preprocessed images, recording intermediates into `taps`
    /// (of the first chunk). Returns the detections per image and the first chunk's head
    /// outputs.
    pub fn run(
        &self,
        pre: &[Preprocessed],
        taps: &mut Taps,
    ) -> Result<(Vec<Vec<Detection>>, HeadOutputs)> {
        let p = self.active()?;
        let batch = stack_padded(pre)?;
        let sizes: Vec<(usize, usize)> = pre.iter().map(|x| x.resized_hw).collect();
        let mut all: Vec<Vec<Detection>> = vec![Vec::new(); pre.len()];
        let mut first: Option<HeadOutputs> = None;
        // A prompt of several chunks (over 256 tokens): the image part once, each chunk's
        // text-dependent part on it.
        let pyramid = match p.chunks.len() {
            1 => None,
            _ => Some(self.visual(&batch, taps)?),
        };
        for chunk in &p.chunks {
            let mut none = Taps::disabled();
            let t = if first.is_none() {
                &mut *taps
            } else {
                &mut none
            };
            let (out, per) = self.forward(&batch, chunk, &sizes, pyramid.as_deref(), t)?;
            for ((dets, x), acc) in per.iter().zip(pre).zip(all.iter_mut()) {
                let orig = postprocess::to_original_image(dets, x.original_hw);
                acc.extend(
                    orig.detections
                        .iter()
                        .filter(|d| d.score >= p.threshold_of(d.label, self.threshold))
                        .map(|d| Detection {
                            bbox: d.bbox,
                            score: d.score,
                            label: d.label,
                            phrase: p
                                .names
                                .iter()
                                .find(|(l, _)| *l == d.label)
                                .map(|(_, n)| n.clone())
                                .unwrap_or_default(),
                        }),
                );
            }
            if first.is_none() {
                first = Some(out);
            }
        }
        let out = first.ok_or_else(|| Error::Prompt("the prompt has no chunk".into()))?;
        Ok((all, out))
    }
}

impl Detector {
    /// Backbone and FPN of a batch (recorded / replayed as its own stage).
    fn visual(&self, batch: &FeatureMap, taps: &mut Taps) -> Result<Vec<Tensor>> {
        let be = &**self.model.backend();
        if taps.is_enabled() {
            return self.model.forward_visual(be, batch, taps);
        }
        let key = PlanKey {
            batch: batch.n,
            height: batch.h,
            width: batch.w,
            tokens: 0,
            stage: Stage::Visual,
        };
        self.executor.run(be, key, |be| {
            let p = self.model.forward_visual(be, batch, taps)?;
            let keep = p.iter().map(|t| t.storage_id()).collect();
            Ok((p, keep))
        })
    }

    /// The forward and post-processing of one chunk (on `pyramid` when the image part ran
    /// already): recorded the first time a shape is seen, replayed from the shape's arena
    /// afterwards (on a device); op by op with taps enabled. Recording and replaying change
    /// no output.
    fn forward(
        &self,
        batch: &FeatureMap,
        chunk: &PromptChunk,
        sizes: &[(usize, usize)],
        pyramid: Option<&[Tensor]>,
        taps: &mut Taps,
    ) -> Result<(HeadOutputs, Vec<postprocess::Detections>)> {
        let go = |be: &dyn crate::backend::ops::Backend,
                  taps: &mut Taps|
         -> Result<(HeadOutputs, Vec<postprocess::Detections>)> {
            let mut out = match pyramid {
                Some(p) => self.model.forward_grounded(
                    be,
                    crate::model::glip::Pyramid::Shared(p),
                    &chunk.text,
                    taps,
                )?,
                None => self.model.forward_on(be, batch, &chunk.text, taps)?,
            };
            // GLIP sizes the score tensor by cls_logits (80 columns) and fails beyond; the
            // scores do not depend on it, so widen it to fit the prompt's labels.
            let max_label = chunk
                .positive_map
                .iter()
                .map(|(l, _)| *l as usize)
                .max()
                .unwrap_or(0);
            out.num_labels = out.num_labels.max(max_label);
            let t_post = taps.start(be);
            let per = postprocess::postprocess(be, &out, &chunk.positive_map, sizes, &self.post)?;
            taps.time(be, "post-processing", t_post);
            Ok((out, per))
        };
        let be = &**self.model.backend();
        if taps.is_enabled() {
            return go(be, taps);
        }
        let key = PlanKey {
            batch: batch.n,
            height: batch.h,
            width: batch.w,
            tokens: chunk.text.t,
            stage: match pyramid {
                Some(_) => Stage::Grounded,
                None => Stage::Whole,
            },
        };
        self.executor.run(be, key, |be| {
            let (out, per) = go(be, taps)?;
            let keep = out.storage_ids();
            Ok(((out, per), keep))
        })
    }
}

/// A frame's size, checked before any of it is read or allocated.
pub(crate) fn check_frame_size(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::Invalid(format!(
            "zero-size frame of {width}x{height} pixels: both sides must be at least 1"
        )));
    }
    crate::limits::checked_size(
        "frame width x height",
        &[width, height],
        crate::limits::MAX_IMAGE_PIXELS,
        "pixels",
    )?;
    Ok(())
}

/// Zero-pad preprocessed images to the batch's largest padded size and stack them (GLIP's
/// to_image_list).
pub fn stack_padded(pre: &[Preprocessed]) -> Result<FeatureMap> {
    let first = pre
        .first()
        .ok_or_else(|| Error::Invalid("no images given".into()))?;
    let c = first.image.c;
    let h = pre.iter().map(|p| p.image.h).max().unwrap_or(0);
    let w = pre.iter().map(|p| p.image.w).max().unwrap_or(0);
    let mut out = FeatureMap::zeros(pre.len(), c, h, w);
    for (b, p) in pre.iter().enumerate() {
        let im = &p.image;
        for ch in 0..c {
            for y in 0..im.h {
                let src = &im.data[(ch * im.h + y) * im.w..(ch * im.h + y + 1) * im.w];
                let dst = ((b * c + ch) * h + y) * w;
                out.data[dst..dst + im.w].copy_from_slice(src);
            }
        }
    }
    Ok(out)
}
