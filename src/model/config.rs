//! Model configuration. `BertConfig` follows Hugging Face's `config.json` (GLIP takes the
//! BERT size from bert-base-uncased's hub config, which no GLIP yaml carries).

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// The BERT hyper-parameters GLIP uses, read from an HF-style `config.json`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct BertConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

fn d_vocab() -> usize {
    30522
}
fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_inter() -> usize {
    3072
}
fn d_act() -> String {
    "gelu".into()
}
fn d_maxpos() -> usize {
    512
}
fn d_types() -> usize {
    2
}
fn d_eps() -> f64 {
    1e-12
}

impl Default for BertConfig {
    /// bert-base-uncased.
    fn default() -> Self {
        BertConfig {
            vocab_size: d_vocab(),
            hidden_size: d_hidden(),
            num_hidden_layers: d_layers(),
            num_attention_heads: d_heads(),
            intermediate_size: d_inter(),
            hidden_act: d_act(),
            max_position_embeddings: d_maxpos(),
            type_vocab_size: d_types(),
            layer_norm_eps: d_eps(),
        }
    }
}

impl BertConfig {
    pub fn from_json_str(s: &str, what: &str) -> Result<Self> {
        let c: BertConfig = serde_json::from_str(s)
            .map_err(|e| Error::Config(format!("{what}: not a BERT config.json: {e}")))?;
        c.validate(what)?;
        Ok(c)
    }
    pub fn from_file(path: &Path) -> Result<Self> {
        let s = crate::limits::read_text_file(path, "BERT config")?;
        Self::from_json_str(&s, &path.display().to_string())
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }
    fn validate(&self, what: &str) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::Config(format!(
                "{what}: hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        // These size the language weights: bounded before anything is allocated from them.
        for (key, v, lo, hi) in [
            ("vocab_size", self.vocab_size, 1, 1 << 21),
            ("hidden_size", self.hidden_size, 1, 1 << 14),
            ("num_hidden_layers", self.num_hidden_layers, 1, 64),
            ("intermediate_size", self.intermediate_size, 1, 1 << 16),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1,
                1 << 14,
            ),
            ("type_vocab_size", self.type_vocab_size, 1, 1024),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(Error::Config(format!(
                    "{what}: {key} = {v} is out of range [{lo}, {hi}]"
                )));
            }
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(Error::Config(format!(
                "{what}: layer_norm_eps = {} must be a positive number",
                self.layer_norm_eps
            )));
        }
        if self.hidden_act != "gelu" {
            return Err(Error::Config(format!(
                "{what}: hidden_act `{}` is not supported (GLIP uses gelu)",
                self.hidden_act
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// GLIP model configuration (GLIP's own yacs yaml).

pub use super::swin::SwinConfig;

/// FPN (SWINT-FPN-RETINANET with P6/P7): lateral inputs C3, C4, C5 and the output width.
#[derive(Clone, Debug, PartialEq)]
pub struct FpnConfig {
    /// SWINT.OUT_CHANNELS[-3..] (the stride-8, 16, 32 stage widths).
    pub in_channels: [usize; 3],
    /// MODEL.BACKBONE.OUT_CHANNELS.
    pub out_channels: usize,
}

/// The language backbone (MODEL.LANGUAGE_BACKBONE.*). Its BERT size comes from a separate
/// HF config.json ([`BertConfig`]), as in GLIP.
#[derive(Clone, Debug, PartialEq)]
pub struct LanguageConfig {
    pub model_type: String,
    pub tokenizer_type: String,
    /// Width of the text features the head sees (768 for bert-base).
    pub lang_dim: usize,
    /// Text length fed to the model (prompts are padded/truncated to it when `pad_max`).
    pub max_query_len: usize,
    pub pad_max: bool,
}

/// Cross-modal fusion settings (MODEL.DYHEAD.FUSE_CONFIG.*) that the runtime reads.
#[derive(Clone, Debug, PartialEq)]
pub struct FuseConfig {
    /// Always "MHA-B" (bi-directional multi-head attention).
    pub fuse_type: String,
    /// Visual width of the fusion block (v_dim); equals DYHEAD.CHANNELS.
    pub joint_emb_size: usize,
    /// Hard-coded in GLIP's VLFuse (`init_configs`): 2048-wide attention, 8 heads.
    pub embed_dim: usize,
    pub num_heads: usize,
    pub clamp_min_for_underflow: bool,
    pub clamp_max_for_overflow: bool,
    pub clamp_bertattn_min_for_underflow: bool,
    pub clamp_bertattn_max_for_overflow: bool,
    pub clamp_dot_product: bool,
}

/// The VL-DyHead tower and heads (MODEL.DYHEAD.*, MODEL.GROUP_NORM.*).
#[derive(Clone, Debug, PartialEq)]
pub struct DyHeadConfig {
    pub channels: usize,
    /// Tower depth: NUM_CONVS × [VLFuse, BertEncoderLayer, DyConv].
    pub num_convs: usize,
    pub use_gn: bool,
    pub gn_groups: usize,
    pub gn_eps: f64,
    pub use_dyrelu: bool,
    pub use_dfconv: bool,
    pub use_dyfuse: bool,
    /// Including background: cls_logits has NUM_CLASSES − 1 channels (80 for 81).
    pub num_classes: usize,
    pub prior_prob: f64,
    /// Always "MEAN".
    pub score_agg: String,
    pub log_scale: f64,
    pub fuse: FuseConfig,
}

impl DyHeadConfig {
    /// Channels of cls_logits = the width of the per-class score tensor (spec §3.6).
    pub fn num_score_classes(&self) -> usize {
        self.num_classes.saturating_sub(1)
    }
}

/// Anchor generator (MODEL.RPN.*): one anchor per location per level.
#[derive(Clone, Debug, PartialEq)]
pub struct AnchorConfig {
    pub sizes: Vec<f64>,
    pub strides: Vec<usize>,
    pub aspect_ratios: Vec<f64>,
    pub scales_per_octave: usize,
    pub octave: f64,
    pub straddle_thresh: f64,
}

/// Test-time pre-processing (INPUT.*, DATALOADER.SIZE_DIVISIBILITY).
#[derive(Clone, Debug, PartialEq)]
pub struct InputConfig {
    pub min_size_test: usize,
    pub max_size_test: usize,
    /// In the channel order of `format` (B, G, R for "bgr255").
    pub pixel_mean: [f32; 3],
    pub pixel_std: [f32; 3],
    pub to_bgr255: bool,
    /// The Normalize format GLIP resolves: INPUT.FORMAT if set, else "bgr255" if TO_BGR255,
    /// else "rgb". "bgr" in it swaps channels to B, G, R; "255" scales by 255 first.
    pub format: String,
    pub size_divisibility: usize,
}

impl InputConfig {
    pub fn bgr(&self) -> bool {
        self.format.contains("bgr")
    }
    pub fn times_255(&self) -> bool {
        self.format.contains("255")
    }
}

/// ATSS post-processing (MODEL.ATSS.* as read by `make_atss_postprocessor`, inference.py:825).
#[derive(Clone, Debug, PartialEq)]
pub struct PostprocessConfig {
    pub inference_th: f64,
    pub pre_nms_top_n: usize,
    pub nms_th: f64,
    pub detections_per_img: usize,
    /// Hard-coded 0 in GLIP.
    pub min_size: f64,
    pub num_classes: usize,
}

/// Everything about a GLIP model (VL-DyHead + Swin + FPN + BERT) that the runtime needs,
/// from GLIP's yaml merged over GLIP's defaults.py.
#[derive(Clone, Debug, PartialEq)]
pub struct GlipConfig {
    pub swin: SwinConfig,
    pub fpn: FpnConfig,
    pub language: LanguageConfig,
    pub dyhead: DyHeadConfig,
    pub anchors: AnchorConfig,
    pub input: InputConfig,
    pub postprocess: PostprocessConfig,
}

impl GlipConfig {
    /// GLIP-T (configs/pretrain/glip_Swin_T_O365_GoldG.yaml, spec §1).
    pub fn glip_t() -> Self {
        GlipConfig {
            swin: SwinConfig::swin_t(),
            fpn: FpnConfig {
                in_channels: [192, 384, 768],
                out_channels: 256,
            },
            language: LanguageConfig {
                model_type: "bert-base-uncased".into(),
                tokenizer_type: "bert-base-uncased".into(),
                lang_dim: 768,
                max_query_len: 256,
                pad_max: true,
            },
            dyhead: DyHeadConfig {
                channels: 256,
                num_convs: 6,
                use_gn: true,
                gn_groups: 16,
                gn_eps: 1e-5,
                use_dyrelu: true,
                use_dfconv: true,
                use_dyfuse: true,
                num_classes: 81,
                prior_prob: 0.01,
                score_agg: "MEAN".into(),
                log_scale: 0.0,
                fuse: FuseConfig {
                    fuse_type: "MHA-B".into(),
                    joint_emb_size: 256,
                    embed_dim: 2048,
                    num_heads: 8,
                    clamp_min_for_underflow: true,
                    clamp_max_for_overflow: true,
                    clamp_bertattn_min_for_underflow: true,
                    clamp_bertattn_max_for_overflow: true,
                    clamp_dot_product: true,
                },
            },
            anchors: AnchorConfig {
                sizes: vec![64.0, 128.0, 256.0, 512.0, 1024.0],
                strides: vec![8, 16, 32, 64, 128],
                aspect_ratios: vec![1.0],
                scales_per_octave: 1,
                octave: 2.0,
                straddle_thresh: 0.0,
            },
            input: InputConfig {
                min_size_test: 800,
                max_size_test: 1333,
                pixel_mean: [103.530, 116.280, 123.675],
                pixel_std: [57.375, 57.120, 58.395],
                to_bgr255: true,
                format: "bgr255".into(),
                size_divisibility: 32,
            },
            postprocess: PostprocessConfig {
                inference_th: 0.05,
                pre_nms_top_n: 1000,
                nms_th: 0.6,
                detections_per_img: 100,
                min_size: 0.0,
                num_classes: 81,
            },
        }
    }

    /// GLIP-L (configs/pretrain/glip_Swin_L.yaml, spec §9): Swin-L and an 8-deep tower.
    pub fn glip_l() -> Self {
        let mut c = Self::glip_t();
        c.swin = SwinConfig::swin_l();
        c.fpn.in_channels = [384, 768, 1536];
        c.dyhead.num_convs = 8;
        c
    }

    /// Reads a GLIP yaml file (see [`GlipConfig::from_yaml_str`]).
    pub fn from_yaml_file(path: &Path) -> Result<Self> {
        let bytes =
            crate::limits::read_file(path, crate::limits::MAX_TEXT_FILE_BYTES, "yaml config")?;
        let what = path.display().to_string();
        let s = String::from_utf8(bytes).map_err(|_| {
            Error::Config(format!(
                "{what}: not a GLIP yaml config (the file is not UTF-8 text)"
            ))
        })?;
        Self::from_yaml_str(&s, &what)
    }

    /// Parses GLIP's yaml (a partial override file or a full yacs dump), fills every key it
    /// omits with GLIP's defaults.py value, and rejects architectures and inference options the
    /// runtime does not implement with an error naming the key and its value. Training-only
    /// keys are ignored. `what` names the source in messages.
    pub fn from_yaml_str(s: &str, what: &str) -> Result<Self> {
        // Before the parser, which is quadratic in deep flow nesting.
        crate::yaml_guard::check_nesting(s, what)?;
        let root: serde_yaml::Value = serde_yaml::from_str(s)
            .map_err(|e| Error::Config(format!("{what}: not a GLIP yaml config: {e}")))?;
        if !root.is_mapping() {
            return Err(Error::Config(format!(
                "{what}: not a GLIP yaml config (the top level is not a mapping of keys)"
            )));
        }
        if root.get("MODEL").is_none() {
            return Err(Error::Config(format!(
                "{what}: not a GLIP yaml config (it has no MODEL section)"
            )));
        }
        let y = Yaml { root: &root, what };
        let c = read_glip(&y)?;
        c.validate(what)?;
        Ok(c)
    }

    /// Cross-field checks that hold for every model the runtime can run.
    pub fn validate(&self, what: &str) -> Result<()> {
        let err = |m: String| Err(Error::Config(format!("{what}: {m}")));
        self.check_ranges()
            .map_err(|m| Error::Config(format!("{what}: {m}")))?;
        self.swin
            .validate()
            .map_err(|e| Error::Config(format!("{what}: {e}")))?;
        if self.swin.depths.len() != 4 {
            return err(format!(
                "MODEL.SWINT.DEPTHS {:?}: the FPN needs exactly 4 Swin stages",
                self.swin.depths
            ));
        }
        let out = self.swin.out_channels();
        if self.fpn.in_channels[..] != out[1..] {
            return err(format!(
                "MODEL.SWINT.OUT_CHANNELS gives FPN inputs {:?}, but EMBED_DIM {} makes the stages {:?}",
                self.fpn.in_channels, self.swin.embed_dim, out
            ));
        }
        let (b, d, j) = (
            self.fpn.out_channels,
            self.dyhead.channels,
            self.dyhead.fuse.joint_emb_size,
        );
        if b != d || d != j {
            return err(format!(
                "MODEL.BACKBONE.OUT_CHANNELS {b}, MODEL.DYHEAD.CHANNELS {d} and MODEL.DYHEAD.FUSE_CONFIG.JOINT_EMB_SIZE {j} must be equal"
            ));
        }
        if self.dyhead.num_convs == 0 {
            return err("MODEL.DYHEAD.NUM_CONVS 0: the tower needs at least one layer".into());
        }
        if !self.dyhead.use_gn {
            return err(
                "MODEL.DYHEAD.USE_GN false: only GLIP's GroupNorm DyHead is supported".into(),
            );
        }
        if self.dyhead.gn_groups == 0 || !d.is_multiple_of(self.dyhead.gn_groups) {
            return err(format!(
                "MODEL.GROUP_NORM.NUM_GROUPS {}: does not divide {d} channels",
                self.dyhead.gn_groups
            ));
        }
        if self.dyhead.num_classes < 2 {
            return err(format!(
                "MODEL.DYHEAD.NUM_CLASSES {}: must be at least 2 (it counts the background)",
                self.dyhead.num_classes
            ));
        }
        let a = &self.anchors;
        if a.sizes.len() != 5 || a.strides.len() != 5 {
            return err(format!(
                "MODEL.RPN.ANCHOR_SIZES {:?} / ANCHOR_STRIDE {:?}: need one per pyramid level P3..P7 (5)",
                a.sizes, a.strides
            ));
        }
        if a.aspect_ratios.len() * a.scales_per_octave != 1 {
            return err(format!(
                "MODEL.RPN.ASPECT_RATIOS {:?} x SCALES_PER_OCTAVE {}: only one anchor per location is supported",
                a.aspect_ratios, a.scales_per_octave
            ));
        }
        if self.language.lang_dim == 0 || self.language.max_query_len == 0 {
            return err(
                "MODEL.LANGUAGE_BACKBONE.LANG_DIM and MAX_QUERY_LEN must be positive".into(),
            );
        }
        if self.input.min_size_test == 0 || self.input.max_size_test == 0 {
            return err("INPUT.MIN_SIZE_TEST and MAX_SIZE_TEST must be positive".into());
        }
        if self.input.pixel_std.contains(&0.0) {
            return err(format!(
                "INPUT.PIXEL_STD {:?}: must be non-zero",
                self.input.pixel_std
            ));
        }
        Ok(())
    }
}

impl GlipConfig {
    /// Every number in its range: finite where a float, and bounded where it sizes an
    /// allocation (weights, images), so a typo or a hostile file is an error naming the key
    /// instead of NaN boxes, zero boxes, or gigabytes allocated.
    fn check_ranges(&self) -> std::result::Result<(), String> {
        use crate::limits::MAX_TEST_SIZE;
        const DIM: usize = 1 << 14;
        let s = &self.swin;
        let dims = [
            ("MODEL.SWINT.EMBED_DIM", s.embed_dim, 1, DIM),
            ("MODEL.SWINT.WINDOW_SIZE", s.window_size, 1, 256),
            ("MODEL.BACKBONE.OUT_CHANNELS", self.fpn.out_channels, 1, DIM),
            (
                "MODEL.LANGUAGE_BACKBONE.LANG_DIM",
                self.language.lang_dim,
                1,
                DIM,
            ),
            (
                "MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN",
                self.language.max_query_len,
                1,
                4096,
            ),
            ("MODEL.DYHEAD.CHANNELS", self.dyhead.channels, 1, DIM),
            ("MODEL.DYHEAD.NUM_CONVS", self.dyhead.num_convs, 1, 64),
            (
                "MODEL.DYHEAD.NUM_CLASSES",
                self.dyhead.num_classes,
                2,
                100_000,
            ),
            (
                "MODEL.DYHEAD.FUSE_CONFIG.JOINT_EMB_SIZE",
                self.dyhead.fuse.joint_emb_size,
                1,
                DIM,
            ),
            (
                "INPUT.MIN_SIZE_TEST",
                self.input.min_size_test,
                1,
                MAX_TEST_SIZE,
            ),
            (
                "INPUT.MAX_SIZE_TEST",
                self.input.max_size_test,
                1,
                MAX_TEST_SIZE,
            ),
            (
                "DATALOADER.SIZE_DIVISIBILITY",
                self.input.size_divisibility,
                0,
                1024,
            ),
            (
                "MODEL.ATSS.PRE_NMS_TOP_N",
                self.postprocess.pre_nms_top_n,
                1,
                1 << 20,
            ),
            (
                "MODEL.ATSS.DETECTIONS_PER_IMG",
                self.postprocess.detections_per_img,
                1,
                1 << 16,
            ),
        ];
        for (key, v, lo, hi) in dims {
            if !(lo..=hi).contains(&v) {
                return Err(format!("{key} = {v} is out of range [{lo}, {hi}]"));
            }
        }
        for (key, list, hi) in [
            ("MODEL.SWINT.DEPTHS", &s.depths, 64),
            ("MODEL.SWINT.NUM_HEADS", &s.num_heads, 1024),
            ("MODEL.RPN.ANCHOR_STRIDE", &self.anchors.strides, 4096),
        ] {
            if let Some(v) = list.iter().find(|&&v| v == 0 || v > hi) {
                return Err(format!("{key} {list:?}: {v} is out of range [1, {hi}]"));
            }
        }
        let finite = |key: &str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("{key} = {v} is not a number in [{lo}, {hi}]"))
            }
        };
        finite(
            "MODEL.ATSS.INFERENCE_TH",
            self.postprocess.inference_th,
            0.0,
            1.0,
        )?;
        finite("MODEL.ATSS.NMS_TH", self.postprocess.nms_th, 0.0, 1.0)?;
        finite(
            "MODEL.DYHEAD.PRIOR_PROB",
            self.dyhead.prior_prob,
            f64::MIN_POSITIVE,
            1.0,
        )?;
        finite("MODEL.DYHEAD.LOG_SCALE", self.dyhead.log_scale, -1e6, 1e6)?;
        finite("MODEL.GROUP_NORM.EPSILON", self.dyhead.gn_eps, 0.0, 1.0)?;
        finite("MODEL.SWINT.MLP_RATIO", s.mlp_ratio, 1e-3, 64.0)?;
        finite("MODEL.RPN.OCTAVE", self.anchors.octave, 1e-3, 1e3)?;
        finite(
            "MODEL.RPN.STRADDLE_THRESH",
            self.anchors.straddle_thresh,
            -1e9,
            1e9,
        )?;
        for (key, list) in [
            ("MODEL.RPN.ANCHOR_SIZES", &self.anchors.sizes),
            ("MODEL.RPN.ASPECT_RATIOS", &self.anchors.aspect_ratios),
        ] {
            for &v in list.iter() {
                finite(key, v, 1e-6, 1e6)?;
            }
        }
        for (key, list) in [
            ("INPUT.PIXEL_MEAN", &self.input.pixel_mean),
            ("INPUT.PIXEL_STD", &self.input.pixel_std),
        ] {
            for &v in list.iter() {
                finite(key, v as f64, -1e6, 1e6)?;
            }
        }
        Ok(())
    }
}

/// Typed access to GLIP's yaml by dotted key, falling back to defaults.py.
struct Yaml<'a> {
    root: &'a serde_yaml::Value,
    what: &'a str,
}

impl Yaml<'_> {
    fn get(&self, key: &str) -> Option<&serde_yaml::Value> {
        let mut v = self.root;
        for part in key.split('.') {
            v = v.get(part)?;
        }
        // yacs writes `None` as null; treat it as absent.
        if v.is_null() {
            None
        } else {
            Some(v)
        }
    }
    fn bad(&self, key: &str, v: &serde_yaml::Value, want: &str) -> Error {
        Error::Config(format!("{}: {key} = {} is not {want}", self.what, show(v)))
    }
    fn usize(&self, key: &str, default: usize) -> Result<usize> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        as_usize(v).ok_or_else(|| self.bad(key, v, "a non-negative integer"))
    }
    fn i64(&self, key: &str, default: i64) -> Result<i64> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        as_i64(v).ok_or_else(|| self.bad(key, v, "an integer"))
    }
    fn f64(&self, key: &str, default: f64) -> Result<f64> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        as_f64(v).ok_or_else(|| self.bad(key, v, "a number"))
    }
    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        match v {
            serde_yaml::Value::Bool(b) => Ok(*b),
            serde_yaml::Value::String(s) if s == "True" || s == "true" => Ok(true),
            serde_yaml::Value::String(s) if s == "False" || s == "false" => Ok(false),
            _ => Err(self.bad(key, v, "a boolean")),
        }
    }
    fn string(&self, key: &str, default: &str) -> Result<String> {
        let Some(v) = self.get(key) else {
            return Ok(default.to_string());
        };
        match v {
            serde_yaml::Value::String(s) => Ok(s.clone()),
            _ => Err(self.bad(key, v, "a string")),
        }
    }
    /// A list: a yaml sequence, or a Python tuple/list literal string as yacs accepts
    /// (`(64, 128)`, `(1.0,)`, `[1, 2]`).
    fn list<T>(
        &self,
        key: &str,
        default: &[T],
        conv: fn(&serde_yaml::Value) -> Option<T>,
        want: &str,
    ) -> Result<Vec<T>>
    where
        T: Clone,
    {
        let Some(v) = self.get(key) else {
            return Ok(default.to_vec());
        };
        let items: Vec<serde_yaml::Value> = match v {
            serde_yaml::Value::Sequence(s) => s.clone(),
            serde_yaml::Value::String(s) => {
                parse_python_list(s).ok_or_else(|| self.bad(key, v, want))?
            }
            _ => return Err(self.bad(key, v, want)),
        };
        items
            .iter()
            .map(|i| conv(i).ok_or_else(|| self.bad(key, v, want)))
            .collect()
    }
    fn usizes(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        self.list(key, default, as_usize, "a list of non-negative integers")
    }
    fn f64s(&self, key: &str, default: &[f64]) -> Result<Vec<f64>> {
        self.list(key, default, as_f64, "a list of numbers")
    }
    fn strings(&self, key: &str, default: &[&str]) -> Result<Vec<String>> {
        let d: Vec<String> = default.iter().map(|s| s.to_string()).collect();
        self.list(
            key,
            &d,
            |v| v.as_str().map(|s| s.to_string()),
            "a list of strings",
        )
    }
    fn f32x3(&self, key: &str, default: [f32; 3]) -> Result<[f32; 3]> {
        let v = self.f64s(key, &default.map(|x| x as f64))?;
        match v[..] {
            [a, b, c] => Ok([a as f32, b as f32, c as f32]),
            _ => Err(Error::Config(format!(
                "{}: {key} = {v:?} must have 3 entries",
                self.what
            ))),
        }
    }
    /// The key must equal `want` (the only value the runtime implements).
    fn require_str(&self, key: &str, default: &str, want: &[&str]) -> Result<String> {
        let v = self.string(key, default)?;
        if want.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(self.unsupported(
                key,
                &format!("{v:?}"),
                &want
                    .iter()
                    .map(|w| format!("{w:?}"))
                    .collect::<Vec<_>>()
                    .join(" or "),
            ))
        }
    }
    fn require_bool(&self, key: &str, default: bool, want: bool) -> Result<bool> {
        let v = self.bool(key, default)?;
        if v == want {
            Ok(v)
        } else {
            Err(self.unsupported(key, &v.to_string(), &want.to_string()))
        }
    }
    fn unsupported(&self, key: &str, got: &str, want: &str) -> Error {
        Error::Config(format!(
            "{}: {key} = {got} is not supported by glip-rt (it implements {want})",
            self.what
        ))
    }
}

fn as_i64(v: &serde_yaml::Value) -> Option<i64> {
    match v {
        serde_yaml::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        serde_yaml::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
fn as_usize(v: &serde_yaml::Value) -> Option<usize> {
    as_i64(v).and_then(|i| usize::try_from(i).ok())
}
fn as_f64(v: &serde_yaml::Value) -> Option<f64> {
    match v {
        serde_yaml::Value::Number(n) => n.as_f64(),
        serde_yaml::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn show(v: &serde_yaml::Value) -> String {
    match serde_yaml::to_string(v) {
        Ok(s) => s.trim().replace('\n', " "),
        Err(_) => format!("{v:?}"),
    }
}

/// `(64, 128, 256)`, `(1.0,)`, `[1, 2]`, `()` → the items as yaml scalars; quotes around
/// strings are removed. None if it is not such a literal.
fn parse_python_list(s: &str) -> Option<Vec<serde_yaml::Value>> {
    let t = s.trim();
    let inner = t
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .or_else(|| t.strip_prefix('[').and_then(|r| r.strip_suffix(']')))?;
    let mut out = Vec::new();
    for item in inner.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let unq = item.trim_matches(|c| c == '"' || c == '\'');
        out.push(if unq.len() != item.len() {
            serde_yaml::Value::String(unq.to_string())
        } else {
            serde_yaml::from_str(item).ok()?
        });
    }
    Some(out)
}

/// Reads every key the runtime uses; defaults are GLIP's `config/defaults.py` values.
fn read_glip(y: &Yaml) -> Result<GlipConfig> {
    // Architecture: only GLIP's VL detector with the Swin v1 + FPN backbone and VL-DyHead.
    y.require_str(
        "MODEL.META_ARCHITECTURE",
        "GeneralizedRCNN",
        &["GeneralizedVLRCNN"],
    )?;
    y.require_str("MODEL.RPN_ARCHITECTURE", "RPN", &["VLDYHEAD"])?;
    y.require_bool("MODEL.RPN_ONLY", false, true)?;
    y.require_bool("MODEL.MASK_ON", false, false)?;
    y.require_bool("MODEL.KEYPOINT_ON", false, false)?;
    y.require_str(
        "MODEL.BACKBONE.CONV_BODY",
        "R-50-C4",
        &["SWINT-FPN-RETINANET"],
    )?;
    y.require_str("MODEL.SWINT.VERSION", "v1", &["v1"])?;
    y.require_bool("MODEL.SWINT.APE", false, false)?;
    let feats = y.strings(
        "MODEL.BACKBONE.OUT_FEATURES",
        &["stage2", "stage3", "stage4", "stage5"],
    )?;
    if feats != ["stage2", "stage3", "stage4", "stage5"] {
        return Err(y.unsupported(
            "MODEL.BACKBONE.OUT_FEATURES",
            &format!("{feats:?}"),
            "[\"stage2\", \"stage3\", \"stage4\", \"stage5\"]",
        ));
    }
    for k in [
        "USE_GN",
        "USE_RELU",
        "USE_DYRELU",
        "USE_SPP",
        "USE_PAN",
        "USE_DYHEAD",
        "RETURN_SWINT_FEATURE_BEFORE_FUSION",
    ] {
        y.require_bool(&format!("MODEL.FPN.{k}"), false, false)?;
    }

    let swin = SwinConfig {
        patch_size: 4,
        embed_dim: y.usize("MODEL.SWINT.EMBED_DIM", 96)?,
        depths: y.usizes("MODEL.SWINT.DEPTHS", &[2, 2, 6, 2])?,
        num_heads: y.usizes("MODEL.SWINT.NUM_HEADS", &[3, 6, 12, 24])?,
        window_size: y.usize("MODEL.SWINT.WINDOW_SIZE", 7)?,
        mlp_ratio: y.f64("MODEL.SWINT.MLP_RATIO", 4.0)?,
        // CONV_BODY is *-RETINANET, so norm0 is Identity (swint.py:547-548).
        norm_first_stage: false,
    };
    let swin_out = y.usizes("MODEL.SWINT.OUT_CHANNELS", &[96, 192, 384, 768])?;
    if swin_out.len() < 3 {
        return Err(Error::Config(format!(
            "{}: MODEL.SWINT.OUT_CHANNELS = {swin_out:?} needs at least 3 entries",
            y.what
        )));
    }
    let n = swin_out.len();
    let fpn = FpnConfig {
        in_channels: [swin_out[n - 3], swin_out[n - 2], swin_out[n - 1]],
        out_channels: y.usize("MODEL.BACKBONE.OUT_CHANNELS", 1024)?,
    };

    let language = LanguageConfig {
        model_type: y.require_str(
            "MODEL.LANGUAGE_BACKBONE.MODEL_TYPE",
            "bert-base-uncased",
            &["bert-base-uncased"],
        )?,
        tokenizer_type: y.require_str(
            "MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE",
            "bert-base-uncased",
            &["bert-base-uncased"],
        )?,
        lang_dim: y.usize("MODEL.LANGUAGE_BACKBONE.LANG_DIM", 768)?,
        max_query_len: y.usize("MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN", 256)?,
        pad_max: y.bool("MODEL.LANGUAGE_BACKBONE.PAD_MAX", true)?,
    };
    // Averaging several last BERT layers and masking special tokens change the text features.
    let n_layers = y.usize("MODEL.LANGUAGE_BACKBONE.N_LAYERS", 1)?;
    if n_layers != 1 {
        return Err(y.unsupported(
            "MODEL.LANGUAGE_BACKBONE.N_LAYERS",
            &n_layers.to_string(),
            "1",
        ));
    }
    y.require_bool("MODEL.LANGUAGE_BACKBONE.MASK_SPECIAL", false, false)?;

    let dh = "MODEL.DYHEAD";
    let fc = "MODEL.DYHEAD.FUSE_CONFIG";
    y.require_bool(&format!("{fc}.EARLY_FUSE_ON"), false, true)?;
    y.require_bool(&format!("{fc}.USE_FUSED_FEATURES_DOT_PRODUCT"), false, true)?;
    y.require_bool(&format!("{fc}.USE_DOT_PRODUCT_TOKEN_LOSS"), false, true)?;
    y.require_bool(&format!("{fc}.USE_LAYER_SCALE"), true, true)?;
    for k in [
        "USE_CONTRASTIVE_ALIGN_LOSS",
        "USE_TOKEN_LOSS",
        "USE_CLASSIFICATION_LOSS",
        "USE_SHALLOW_CONTRASTIVE_LOSS",
        "USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS",
        "SEPARATE_BIDIRECTIONAL",
        "STABLE_SOFTMAX_2D",
        "ADD_LINEAR_LAYER",
    ] {
        y.require_bool(&format!("{fc}.{k}"), false, false)?;
    }
    let conv_func = y.string(&format!("{dh}.CONV_FUNC"), "")?;
    if !conv_func.is_empty() {
        return Err(y.unsupported(
            &format!("{dh}.CONV_FUNC"),
            &format!("{conv_func:?}"),
            "\"\" (Conv3x3Norm)",
        ));
    }
    let dim_per_gp = y.i64("MODEL.GROUP_NORM.DIM_PER_GP", -1)?;
    if dim_per_gp != -1 {
        return Err(y.unsupported(
            "MODEL.GROUP_NORM.DIM_PER_GP",
            &dim_per_gp.to_string(),
            "-1 (NUM_GROUPS groups)",
        ));
    }
    let dyhead = DyHeadConfig {
        channels: y.usize(&format!("{dh}.CHANNELS"), 128)?,
        num_convs: y.usize(&format!("{dh}.NUM_CONVS"), 4)?,
        use_gn: y.require_bool(&format!("{dh}.USE_GN"), false, true)?,
        gn_groups: y.usize("MODEL.GROUP_NORM.NUM_GROUPS", 16)?,
        gn_eps: y.f64("MODEL.GROUP_NORM.EPSILON", 1e-5)?,
        use_dyrelu: y.require_bool(&format!("{dh}.USE_DYRELU"), false, true)?,
        use_dfconv: y.require_bool(&format!("{dh}.USE_DFCONV"), false, true)?,
        use_dyfuse: y.require_bool(&format!("{dh}.USE_DYFUSE"), false, true)?,
        num_classes: y.usize(&format!("{dh}.NUM_CLASSES"), 81)?,
        prior_prob: y.f64(&format!("{dh}.PRIOR_PROB"), 0.01)?,
        score_agg: y.require_str(&format!("{dh}.SCORE_AGG"), "MEAN", &["MEAN"])?,
        log_scale: y.f64(&format!("{dh}.LOG_SCALE"), 0.0)?,
        fuse: FuseConfig {
            fuse_type: y.require_str(&format!("{fc}.TYPE"), "", &["MHA-B"])?,
            joint_emb_size: y.usize(&format!("{fc}.JOINT_EMB_SIZE"), 256)?,
            embed_dim: 2048,
            num_heads: 8,
            // The runtime always applies GLIP-T's clamps (±50000); they never bind in f32 but
            // matter in f16, so a model trained without them is rejected.
            clamp_min_for_underflow: y.require_bool(
                &format!("{fc}.CLAMP_MIN_FOR_UNDERFLOW"),
                false,
                true,
            )?,
            clamp_max_for_overflow: y.require_bool(
                &format!("{fc}.CLAMP_MAX_FOR_OVERFLOW"),
                false,
                true,
            )?,
            clamp_bertattn_min_for_underflow: y.require_bool(
                &format!("{fc}.CLAMP_BERTATTN_MIN_FOR_UNDERFLOW"),
                false,
                true,
            )?,
            clamp_bertattn_max_for_overflow: y.require_bool(
                &format!("{fc}.CLAMP_BERTATTN_MAX_FOR_OVERFLOW"),
                false,
                true,
            )?,
            clamp_dot_product: y.require_bool(&format!("{fc}.CLAMP_DOT_PRODUCT"), false, true)?,
        },
    };

    y.require_bool("MODEL.RPN.USE_FPN", false, true)?;
    let shift = y.f64s("MODEL.RPN.ANCHOR_SHIFT", &[0.0; 4])?;
    if shift.iter().any(|&s| s != 0.0) {
        return Err(y.unsupported(
            "MODEL.RPN.ANCHOR_SHIFT",
            &format!("{shift:?}"),
            "(0.0, 0.0, 0.0, 0.0)",
        ));
    }
    let anchors = AnchorConfig {
        sizes: y.f64s("MODEL.RPN.ANCHOR_SIZES", &[32.0, 64.0, 128.0, 256.0, 512.0])?,
        strides: y.usizes("MODEL.RPN.ANCHOR_STRIDE", &[16])?,
        aspect_ratios: y.f64s("MODEL.RPN.ASPECT_RATIOS", &[0.5, 1.0, 2.0])?,
        scales_per_octave: y.usize("MODEL.RPN.SCALES_PER_OCTAVE", 3)?,
        octave: y.f64("MODEL.RPN.OCTAVE", 2.0)?,
        straddle_thresh: y.f64("MODEL.RPN.STRADDLE_THRESH", 0.0)?,
    };

    let to_bgr255 = y.bool("INPUT.TO_BGR255", true)?;
    let fmt = y.string("INPUT.FORMAT", "")?.to_lowercase();
    let format = if !fmt.is_empty() {
        fmt
    } else if to_bgr255 {
        "bgr255".to_string()
    } else {
        "rgb".to_string()
    };
    if !["rgb", "bgr", "rgb255", "bgr255"].contains(&format.as_str()) {
        return Err(y.unsupported(
            "INPUT.FORMAT",
            &format!("{format:?}"),
            "one of \"rgb\", \"bgr\", \"rgb255\", \"bgr255\"",
        ));
    }
    let input = InputConfig {
        min_size_test: y.usize("INPUT.MIN_SIZE_TEST", 800)?,
        max_size_test: y.usize("INPUT.MAX_SIZE_TEST", 1333)?,
        pixel_mean: y.f32x3("INPUT.PIXEL_MEAN", [102.9801, 115.9465, 122.7717])?,
        pixel_std: y.f32x3("INPUT.PIXEL_STD", [1.0, 1.0, 1.0])?,
        to_bgr255,
        format,
        size_divisibility: y.usize("DATALOADER.SIZE_DIVISIBILITY", 0)?,
    };

    // Test-time options that change the detections.
    y.require_bool("TEST.USE_MULTISCALE", false, false)?;
    let agg = y.i64("TEST.MDETR_STYLE_AGGREGATE_CLASS_NUM", -1)?;
    if agg != -1 {
        return Err(y.unsupported(
            "TEST.MDETR_STYLE_AGGREGATE_CLASS_NUM",
            &agg.to_string(),
            "-1",
        ));
    }
    let postprocess = PostprocessConfig {
        inference_th: y.f64("MODEL.ATSS.INFERENCE_TH", 0.05)?,
        pre_nms_top_n: y.usize("MODEL.ATSS.PRE_NMS_TOP_N", 1000)?,
        nms_th: y.f64("MODEL.ATSS.NMS_TH", 0.6)?,
        detections_per_img: y.usize("MODEL.ATSS.DETECTIONS_PER_IMG", 100)?,
        min_size: 0.0,
        num_classes: y.usize("MODEL.ATSS.NUM_CLASSES", 81)?,
    };

    Ok(GlipConfig {
        swin,
        fpn,
        language,
        dyhead,
        anchors,
        input,
        postprocess,
    })
}
