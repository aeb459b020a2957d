//! The element's implementation: properties, caps, the detector's life (built in `start`,
//! dropped in `stop`), and per frame: detect, add one region-of-interest meta per detection,
//! post the detections.
//!
//! Prompt changes while playing: the new prompt is encoded once, before the next frame, and
//! used from that frame on. A prompt that cannot be used (empty, no phrase, too long) is
//! reported as a warning on the bus and the previous prompt stays.

use glip_rt::pixfmt::PixFmt;
use glip_rt::{Detector, DeviceChoice};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use std::sync::{LazyLock, Mutex, MutexGuard};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "glipdetect",
        gst::DebugColorFlags::empty(),
        Some("GLIP phrase-grounding detector"),
    )
});

/// The raw formats the element takes and how glip-rt reads each (BGRx: alpha ignored).
const FORMATS: [(gst_video::VideoFormat, PixFmt); 6] = [
    (gst_video::VideoFormat::Rgb, PixFmt::Rgb24),
    (gst_video::VideoFormat::Bgr, PixFmt::Bgr24),
    (gst_video::VideoFormat::Rgba, PixFmt::Rgba),
    (gst_video::VideoFormat::Bgrx, PixFmt::Bgra),
    (gst_video::VideoFormat::Nv12, PixFmt::Nv12),
    (gst_video::VideoFormat::I420, PixFmt::Yuv420p),
];

/// The structure name of the element messages and of each meta's parameter.
const MESSAGE: &str = "glipdetect";
const PARAM: &str = "detection";

#[derive(Clone, Debug)]
struct Settings {
    model: Option<String>,
    config: Option<String>,
    weights: Option<String>,
    bert_config: Option<String>,
    tokenizer: Option<String>,
    prompt: Option<String>,
    threshold: f32,
    /// `phrase-thresholds` as set (a JSON object) and as parsed.
    phrase_thresholds_text: Option<String>,
    phrase_thresholds: Vec<(String, f32)>,
    device: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: None,
            config: None,
            weights: None,
            bert_config: None,
            tokenizer: None,
            prompt: None,
            threshold: 0.0,
            phrase_thresholds_text: None,
            phrase_thresholds: Vec::new(),
            device: "auto".into(),
        }
    }
}

struct State {
    det: Detector,
    /// The prompt the detector holds.
    prompt: String,
    info: Option<gst_video::VideoInfo>,
    format: Option<PixFmt>,
    frames: u64,
    /// The prompt and phrase thresholds last checked against each other (phrases the prompt
    /// does not have are said once per change).
    checked: (String, Vec<(String, f32)>),
}

#[derive(Default)]
pub struct GlipDetect {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[glib::object_subclass]
impl ObjectSubclass for GlipDetect {
    const NAME: &'static str = "GstGlipDetect";
    type Type = super::GlipDetect;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for GlipDetect {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model folder")
                    .blurb(
                        "a model folder: config.yaml, model.safetensors and, when present, \
                         bert_config.json and tokenizer.json (config, weights, bert-config and \
                         tokenizer name files in their place)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("config")
                    .nick("Config")
                    .blurb("GLIP's yaml config (e.g. glip_Swin_T_O365_GoldG.yaml)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("weights")
                    .nick("Weights")
                    .blurb("safetensors weights (glip convert)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("bert-config")
                    .nick("BERT config")
                    .blurb("HF BERT config.json (default: bert-base-uncased)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tokenizer")
                    .nick("Tokenizer")
                    .blurb("tokenizer.json (default: the embedded bert-base-uncased)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("prompt")
                    .nick("Prompt")
                    .blurb(
                        "what to ground, e.g. \"person. bicycle. traffic light.\"; may change \
                         while playing (used from the next frame; an unusable prompt keeps \
                         the previous one and posts a warning)",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecFloat::builder("threshold")
                    .nick("Threshold")
                    .blurb("drop detections scoring below this (0: GLIP's full top-100)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(0.0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("phrase-thresholds")
                    .nick("Phrase thresholds")
                    .blurb(
                        "per-phrase thresholds as a JSON object, e.g. {\"traffic light\": 0.3}: \
                         those phrases' detections are kept from their own threshold on, the \
                         others from threshold; may change while playing (an unreadable value \
                         keeps the previous and posts a warning, as does a phrase the prompt \
                         does not have, which is ignored)",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("device")
                    .nick("Device")
                    .blurb("auto, cpu, cuda, cuda:N or emu (the emulated CUDA device)")
                    .default_value(Some("auto"))
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        let text = || value.get::<Option<String>>().ok().flatten();
        match pspec.name() {
            "model" => s.model = text(),
            "config" => s.config = text(),
            "weights" => s.weights = text(),
            "bert-config" => s.bert_config = text(),
            "tokenizer" => s.tokenizer = text(),
            "prompt" => s.prompt = text(),
            "threshold" => s.threshold = value.get().unwrap_or(0.0),
            "phrase-thresholds" => {
                let given = text();
                match parse_phrase_thresholds(given.as_deref()) {
                    Ok(v) => {
                        s.phrase_thresholds = v;
                        s.phrase_thresholds_text = given;
                    }
                    Err(e) => gst::element_imp_warning!(
                        self,
                        gst::LibraryError::Settings,
                        (
                            "phrase-thresholds {given:?} not used: {e}; keeping {:?}",
                            s.phrase_thresholds_text
                        )
                    ),
                }
            }
            "device" => s.device = text().unwrap_or_else(|| "auto".into()),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "model" => s.model.to_value(),
            "config" => s.config.to_value(),
            "weights" => s.weights.to_value(),
            "bert-config" => s.bert_config.to_value(),
            "tokenizer" => s.tokenizer.to_value(),
            "prompt" => s.prompt.to_value(),
            "threshold" => s.threshold.to_value(),
            "phrase-thresholds" => s.phrase_thresholds_text.to_value(),
            "device" => s.device.to_value(),
            _ => None::<String>.to_value(),
        }
    }
}

impl GstObjectImpl for GlipDetect {}

impl ElementImpl for GlipDetect {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "GLIP detector",
                "Filter/Analyzer/Video",
                "Grounds the phrases of a text prompt in each frame (GLIP): one \
                 GstVideoRegionOfInterestMeta per detection (roi_type = the phrase, a \
                 \"detection\" parameter with label_id and confidence) and an element \
                 message with the frame's detections as JSON",
                "glip-rt",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS.iter().map(|(f, _)| *f))
                .build();
            [gst::PadDirection::Src, gst::PadDirection::Sink]
                .into_iter()
                .filter_map(|dir| {
                    let name = if dir == gst::PadDirection::Src {
                        "src"
                    } else {
                        "sink"
                    };
                    gst::PadTemplate::new(name, dir, gst::PadPresence::Always, &caps).ok()
                })
                .collect()
        });
        TEMPLATES.as_ref()
    }
}

impl GlipDetect {
    /// The detector the settings describe, with their prompt set.
    fn build(&self, s: &Settings) -> Result<State, String> {
        if s.model.is_none() && s.config.is_none() {
            return Err("the config property (or model, a model folder) is not set".into());
        }
        if s.model.is_none() && s.weights.is_none() {
            return Err("the weights property (or model, a model folder) is not set".into());
        }
        let prompt = s
            .prompt
            .clone()
            .filter(|p| !p.trim().is_empty())
            .ok_or("the prompt property is not set (e.g. prompt=\"person. bicycle.\")")?;
        let device = DeviceChoice::parse(&s.device).map_err(|e| format!("device: {e}"))?;
        let mut b = Detector::builder().device(device);
        if let Some(m) = &s.model {
            b = b.model_dir(m);
        }
        if let Some(p) = &s.config {
            b = b.config(p);
        }
        if let Some(p) = &s.weights {
            b = b.weights(p);
        }
        if let Some(p) = &s.bert_config {
            b = b.bert_config(p);
        }
        if let Some(p) = &s.tokenizer {
            b = b.tokenizer(p);
        }
        let mut det = b.build().map_err(|e| e.to_string())?;
        if let Some(n) = det.device_notice() {
            gst::info!(CAT, imp = self, "{n}");
        }
        det.set_prompt(&prompt)
            .map_err(|e| format!("prompt {prompt:?}: {e}"))?;
        Ok(State {
            det,
            prompt,
            info: None,
            format: None,
            frames: 0,
            checked: (String::new(), Vec::new()),
        })
    }

    /// A prompt set since the last frame, encoded now; an unusable one keeps the old.
    fn update_prompt(&self, state: &mut State, wanted: Option<String>) {
        let Some(p) = wanted else { return };
        if p == state.prompt {
            return;
        }
        match state.det.set_prompt(&p) {
            Ok(()) => {
                gst::info!(CAT, imp = self, "prompt is now {p:?}");
                state.prompt = p;
            }
            Err(e) => {
                gst::element_imp_warning!(
                    self,
                    gst::LibraryError::Settings,
                    ("prompt {p:?} not used: {e}; keeping {:?}", state.prompt)
                );
                // Not retried on every frame: the setting now names the prompt in use.
                lock(&self.settings).prompt = Some(state.prompt.clone());
            }
        }
    }
}

/// `phrase-thresholds`: a JSON object of thresholds in [0, 1] (none for an unset value).
fn parse_phrase_thresholds(text: Option<&str>) -> Result<Vec<(String, f32)>, String> {
    match text.filter(|t| !t.trim().is_empty()) {
        None => Ok(Vec::new()),
        Some(t) => glip_rt::api::phrase_thresholds_from_json(t).map_err(|e| e.to_string()),
    }
}

impl GlipDetect {
    /// Says once per change which phrase thresholds name no phrase of the prompt.
    fn check_phrase_thresholds(&self, state: &mut State, per_phrase: &[(String, f32)]) {
        if state.checked.0 == state.prompt && state.checked.1 == per_phrase {
            return;
        }
        let names: Vec<String> = state
            .det
            .prompt_chunks()
            .iter()
            .flat_map(|c| c.prompt.phrases.iter().map(|p| p.name.clone()))
            .collect();
        let unknown: Vec<&str> = per_phrase
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !names.iter().any(|p| p == n))
            .collect();
        if !unknown.is_empty() {
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                (
                    "phrase-thresholds: {unknown:?} not phrases of the prompt {:?} (its phrases: {}); ignored",
                    state.prompt,
                    names.join(" | ")
                )
            );
        }
        state.checked = (state.prompt.clone(), per_phrase.to_vec());
    }
}

impl BaseTransformImpl for GlipDetect {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let state = self
            .build(&settings)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("glipdetect: {e}")))?;
        *lock(&self.state) = Some(state);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "caps {incaps} are not raw video"))?;
        let format = FORMATS
            .iter()
            .find(|(f, _)| *f == info.format())
            .map(|(_, p)| *p)
            .ok_or_else(|| gst::loggable_error!(CAT, "format {:?} is not taken", info.format()))?;
        let mut st = lock(&self.state);
        let state = st
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "caps before start"))?;
        state.info = Some(info);
        state.format = Some(format);
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (wanted, threshold, per_phrase) = {
            let s = lock(&self.settings);
            (s.prompt.clone(), s.threshold, s.phrase_thresholds.clone())
        };
        let mut st = lock(&self.state);
        let Some(state) = st.as_mut() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ["no detector (not started)"]
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        self.update_prompt(state, wanted);
        self.check_phrase_thresholds(state, &per_phrase);
        let (Some(info), Some(format)) = (state.info.clone(), state.format) else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ["a buffer before caps"]);
            return Err(gst::FlowError::NotNegotiated);
        };
        let (w, h) = (info.width() as usize, info.height() as usize);
        // A frame that cannot be read (a buffer shorter than its caps say, a negative
        // stride) or detected in: a warning, and it passes on without detections; the stream
        // goes on.
        let dets = match Self::detect_in(&state.det, buf, &info, format) {
            Ok(d) => d,
            Err(e) => {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Decode,
                    ("frame {}: {e}", state.frames)
                );
                Vec::new()
            }
        };
        let frame_no = state.frames;
        state.frames += 1;
        drop(st);
        let min_score = |phrase: &str| {
            per_phrase
                .iter()
                .find(|(n, _)| n == phrase)
                .map_or(threshold, |&(_, t)| t)
        };
        let kept: Vec<_> = dets
            .into_iter()
            .filter(|d| d.score >= min_score(&d.phrase))
            .collect();
        for d in &kept {
            let rect = roi_rect(d.bbox, w, h);
            let mut meta = gst_video::VideoRegionOfInterestMeta::add(buf, &d.phrase, rect);
            meta.add_param(
                gst::Structure::builder(PARAM)
                    .field("label_id", d.label)
                    .field("confidence", f64::from(d.score))
                    .build(),
            );
        }
        let json = serde_json::json!(kept
            .iter()
            .map(|d| serde_json::json!({
                "phrase": d.phrase,
                "label": d.label,
                "score": d.score,
                "box": d.bbox,
            }))
            .collect::<Vec<_>>());
        let s = gst::Structure::builder(MESSAGE)
            .field("frame", frame_no)
            .field("pts", buf.pts().map_or(u64::MAX, |t| t.nseconds()))
            .field("count", kept.len() as u32)
            .field("detections", json.to_string())
            .build();
        let obj = self.obj();
        // Nobody listening is not an error.
        let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
        Ok(gst::FlowSuccess::Ok)
    }
}

impl GlipDetect {
    /// The detector's detections in `buf`, a frame of `info` read as `format`.
    fn detect_in(
        det: &Detector,
        buf: &gst::BufferRef,
        info: &gst_video::VideoInfo,
        format: PixFmt,
    ) -> Result<Vec<glip_rt::api::Detection>, String> {
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(buf, info).map_err(|_| {
                format!(
                    "a buffer of {} bytes is not a {}x{} {:?} frame",
                    buf.size(),
                    info.width(),
                    info.height(),
                    info.format()
                )
            })?;
        let mut planes: Vec<(&[u8], usize)> = Vec::with_capacity(3);
        for i in 0..frame.n_planes() {
            let data = frame.plane_data(i).map_err(|e| format!("plane {i}: {e}"))?;
            let stride = usize::try_from(frame.plane_stride()[i as usize])
                .map_err(|_| format!("plane {i}: a negative stride"))?;
            planes.push((data, stride));
        }
        det.detect_frame(
            format,
            info.width() as usize,
            info.height() as usize,
            &planes,
        )
        .map_err(|e| e.to_string())
    }
}

/// A detection's box (original-image pixels, GLIP's inclusive x2/y2) as a region of interest
/// inside the frame: (x, y, width, height), at least one pixel.
fn roi_rect(b: [f32; 4], w: usize, h: usize) -> (u32, u32, u32, u32) {
    let clamp = |v: f32, hi: usize| v.max(0.0).min(hi.saturating_sub(1) as f32);
    let (x1, y1) = (clamp(b[0], w).floor(), clamp(b[1], h).floor());
    let (x2, y2) = (clamp(b[2], w).ceil(), clamp(b[3], h).ceil());
    (
        x1 as u32,
        y1 as u32,
        (x2 - x1 + 1.0).max(1.0) as u32,
        (y2 - y1 + 1.0).max(1.0) as u32,
    )
}
