//! The `glip` command line: one module per subcommand.

// First, so that its macros (`outln!`, `say!`) are in scope in every command.
#[macro_use]
pub mod out;
pub mod bench;
pub mod coco_eval;
pub mod convert;
pub mod detect;
pub mod doctor;
pub mod eval;
pub mod progress;
pub mod serve;
pub mod stream;
pub mod throughput;
pub mod tokenize;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "glip",
    version,
    about = "GLIP phrase-grounding detector: CUDA kernels + CPU reference",
    after_help = "Exit codes: 0 done; 1 an error (said on stderr), or some input could not be \
                  processed (glip detect: the other images are still done); 2 the command line \
                  is wrong. Results go to stdout, messages and logs to stderr (GLIP_LOG or \
                  RUST_LOG, e.g. RUST_LOG=debug)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build facts, CUDA driver and devices, and a GPU-vs-CPU check of every kernel family.
    Doctor(doctor::Args),
    /// Frames on stdin (raw RGB24 or length-prefixed images), one JSON line per frame out.
    Stream(stream::Args),
    /// End-to-end speed with GLIP-T-shaped random weights, per stage.
    Bench(bench::Args),
    /// Detect the phrases of a prompt in images (boxes in original-image pixels).
    Detect(detect::Args),
    /// Convert a PyTorch GLIP checkpoint (.pth) to safetensors, without Python.
    Convert(convert::Args),
    /// GLIP's zero-shot evaluation on a COCO-format dataset: detect every image with the
    /// category names as the prompt, write COCO results, print COCO's AP/AR (resumable).
    Eval(eval::Args),
    /// COCO's bbox evaluation (AP/AR as pycocotools) of a results file against ground truth.
    CocoEval(coco_eval::Args),
    /// An HTTP detection service: its own JSON API with a prompt per request, DeepStack's
    /// API, Prometheus metrics and a page to try the model (127.0.0.1:5000 by default).
    Serve(serve::Args),
    /// Tokenize a prompt as GLIP does: ids, tokens, and the tokens of each phrase (JSON).
    Tokenize(tokenize::Args),
}

pub fn run(cli: Cli) -> crate_result::Result {
    match cli.command {
        Command::Doctor(a) => doctor::run(a),
        Command::Stream(a) => stream::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::CocoEval(a) => coco_eval::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Serve(a) => serve::run(a),
    }
}

/// The model a detecting subcommand loads (shared by `detect`, `stream`, `eval`, `serve`).
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// A model folder: config.yaml (GLIP's yaml), model.safetensors (the weights) and, when
    /// present, bert_config.json and tokenizer.json; --config, --weights, --bert-config and
    /// --tokenizer name files in their place.
    #[arg(long, env = "GLIP_MODEL_DIR", value_name = "DIR")]
    pub model: Option<std::path::PathBuf>,
    /// GLIP's yaml config (e.g. glip_Swin_T_O365_GoldG.yaml).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Weights in safetensors with GLIP's key names (`glip convert` makes them from a .pth).
    #[arg(long)]
    pub weights: Option<std::path::PathBuf>,
    /// HF-style BERT config.json (default: bert-base-uncased).
    #[arg(long)]
    pub bert_config: Option<std::path::PathBuf>,
    /// tokenizer.json (default: the embedded bert-base-uncased tokenizer).
    #[arg(long)]
    pub tokenizer: Option<std::path::PathBuf>,
    /// Drop detections scoring below this (default 0: GLIP's full top-100).
    #[arg(long, default_value_t = 0.0)]
    pub threshold: f32,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Per-phrase score thresholds (`detect` and `stream`, whose prompt is fixed).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PhraseThresholdArgs {
    /// A score threshold for one phrase of the prompt, PHRASE=VALUE (repeatable): that
    /// phrase's detections are kept from VALUE on, whatever --threshold is (as the per-class
    /// thresholds of GLIP's demo). The phrase as the prompt names it.
    #[arg(
        long = "phrase-threshold",
        visible_alias = "class-threshold",
        value_name = "PHRASE=VALUE",
        value_parser = parse_phrase_threshold
    )]
    pub phrase_thresholds: Vec<(String, f32)>,
}

impl PhraseThresholdArgs {
    /// Sets the thresholds on a detector whose prompt is set.
    pub fn apply(&self, det: &mut glip_rt::Detector) -> std::result::Result<(), glip_rt::Error> {
        if self.phrase_thresholds.is_empty() {
            return Ok(());
        }
        det.set_phrase_thresholds(&self.phrase_thresholds)
            .map_err(|e| match e {
                glip_rt::Error::Prompt(m) | glip_rt::Error::Invalid(m) => {
                    glip_rt::Error::Invalid(format!("--phrase-threshold: {m}"))
                }
                e => e,
            })
    }
}

/// `PHRASE=VALUE`, split at the last '=' (a phrase may hold one; a number never does).
fn parse_phrase_threshold(s: &str) -> std::result::Result<(String, f32), String> {
    let (name, value) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?} is not PHRASE=VALUE"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{s:?} names no phrase"));
    }
    match value.trim().parse::<f32>() {
        Ok(t) if t.is_finite() && (0.0..=1.0).contains(&t) => Ok((name.to_string(), t)),
        _ => Err(format!(
            "{value:?} (for {name:?}) is not a number in [0, 1]"
        )),
    }
}

/// Where a command runs (shared by `detect`, `stream`, `bench`).
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// auto (a GPU when one is present and this build has kernels, else the CPU), cpu,
    /// cuda, cuda:N, or emu (the emulated CUDA device: the same kernels as host C++; slow).
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: glip_rt::DeviceChoice,
    /// Fail instead of running an op the device has no kernel for on the CPU (also
    /// GLIP_NO_FALLBACK=1).
    #[arg(long)]
    pub no_fallback: bool,
}

fn parse_device(s: &str) -> std::result::Result<glip_rt::DeviceChoice, String> {
    glip_rt::DeviceChoice::parse(s).map_err(|e| e.to_string())
}

/// The per-op CPU fallbacks of a run, one line each (op, calls, bytes moved), or None when
/// there were none.
pub fn fallback_table(list: &[glip_rt::backend::ops::FallbackCount]) -> Option<String> {
    if list.is_empty() {
        return None;
    }
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut s = format!(
        "ops run on the CPU in place of the device ({}):\n  {:<22} {:>7} {:>12} {:>12}",
        list.len(),
        "op",
        "calls",
        "MiB down",
        "MiB up"
    );
    for f in list {
        s.push_str(&format!(
            "\n  {:<22} {:>7} {:>12.3} {:>12.3}",
            f.op,
            f.calls,
            mib(f.bytes_down),
            mib(f.bytes_up)
        ));
    }
    Some(s)
}

impl ModelArgs {
    /// A detector builder for these arguments (the threshold checked).
    pub fn builder(&self) -> std::result::Result<glip_rt::api::DetectorBuilder, glip_rt::Error> {
        if !(self.threshold.is_finite() && (0.0..=1.0).contains(&self.threshold)) {
            return Err(glip_rt::Error::Invalid(format!(
                "--threshold {} must be in [0, 1]",
                self.threshold
            )));
        }
        if self.model.is_none() && (self.config.is_none() || self.weights.is_none()) {
            return Err(glip_rt::Error::Invalid(
                "name the model: --config and --weights, or --model DIR".into(),
            ));
        }
        let mut b = glip_rt::Detector::builder()
            .threshold(self.threshold)
            .device(self.device.device)
            .allow_fallback(!self.device.no_fallback);
        if let Some(d) = &self.model {
            b = b.model_dir(d);
        }
        if let Some(p) = &self.config {
            b = b.config(p);
        }
        if let Some(p) = &self.weights {
            b = b.weights(p);
        }
        if let Some(p) = &self.bert_config {
            b = b.bert_config(p);
        }
        if let Some(p) = &self.tokenizer {
            b = b.tokenizer(p);
        }
        Ok(b)
    }
}

/// What a subcommand returns: the process exit code, or an error printed by main.
pub mod crate_result {
    pub type Result = std::result::Result<std::process::ExitCode, glip_rt::Error>;
}
