//! `glip detect`: run GLIP on images with a prompt and print the detections.

use super::crate_result::Result;
use glip_rt::api::Detection;
use glip_rt::model::glip::Taps;
use glip_rt::preprocess;
use glip_rt::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Image files (JPEG, PNG, WebP); each is processed on its own.
    #[arg(long, required = true, num_args = 1..)]
    pub image: Vec<PathBuf>,
    /// The prompt: class names separated by '.' ("person. bicycle."), or a caption with --phrases.
    #[arg(long)]
    pub prompt: String,
    /// Phrases of the caption to ground (each must occur in --prompt).
    #[arg(long, num_args = 1..)]
    pub phrases: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Run the text padded to 256 tokens as GLIP does (default: real tokens only, same result).
    #[arg(long)]
    pub pad_prompt: bool,
    /// Write intermediate tensors (backbone, FPN, language, every tower layer, heads) of the
    /// first image to this safetensors file, under the golden's names.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// Also print on stderr the ops that ran on the CPU in place of the device.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Format {
    Text,
    Json,
}

#[derive(serde::Serialize)]
struct ImageResult<'a> {
    image: String,
    width: usize,
    height: usize,
    detections: &'a [Detection],
}

pub fn run(a: Args) -> Result {
    let mut det = a.model.builder()?.pad_prompt(a.pad_prompt).build()?;
    if let Some(n) = det.device_notice() {
        say!("{n}");
    }
    for w in det.warnings() {
        say!("warning: {w}");
    }
    if a.phrases.is_empty() {
        det.set_prompt(&a.prompt)?;
    } else {
        det.set_prompt_with_phrases(&a.prompt, &a.phrases)?;
    }
    let mut out = super::out::Out::new();
    let mut failed = 0usize;
    for (i, path) in a.image.iter().enumerate() {
        // A bad image is reported and skipped; the others are still processed.
        let result = (|| -> glip_rt::Result<(Vec<Detection>, (usize, usize), Taps)> {
            let img = preprocess::load_image(path, det.preprocess_config().exif_orientation)?;
            let pre = preprocess::preprocess_image(&img, det.preprocess_config())?;
            let mut taps = if i == 0 && a.dump.is_some() {
                Taps::enabled()
            } else {
                Taps::disabled()
            };
            let (mut dets, _) = det.run(std::slice::from_ref(&pre), &mut taps)?;
            Ok((dets.pop().unwrap_or_default(), pre.original_hw, taps))
        })();
        match result {
            Ok((dets, (h, w), taps)) => {
                // The detections are printed even when the dump fails: they were computed
                // and are what the user asked for first.
                if let (Some(dump), true) = (&a.dump, i == 0) {
                    match glip_rt::model::glip::write_taps(dump, &taps) {
                        Ok(()) => {
                            say!("wrote {} tensors to {}", taps.tensors.len(), dump.display())
                        }
                        Err(e) => {
                            failed += 1;
                            say!("error: --dump {}: {e}", dump.display());
                        }
                    }
                }
                let res = ImageResult {
                    image: path.display().to_string(),
                    width: w,
                    height: h,
                    detections: &dets,
                };
                match a.format {
                    Format::Json => {
                        let line = serde_json::to_string(&res)
                            .map_err(|e| Error::Invalid(format!("json: {e}")))?;
                        outln!(out, "{line}");
                    }
                    Format::Text => {
                        outln!(out, "{} ({w}x{h}): {} detections", res.image, dets.len());
                        // Highest score first for reading; JSON keeps GLIP's order.
                        let mut shown: Vec<&Detection> = dets.iter().collect();
                        shown.sort_by(|x, y| y.score.total_cmp(&x.score));
                        for d in shown {
                            outln!(
                                out,
                                "  {:>6.4}  {:<24} [{:.1}, {:.1}, {:.1}, {:.1}]",
                                d.score,
                                format!("{} ({})", d.phrase, d.label),
                                d.bbox[0],
                                d.bbox[1],
                                d.bbox[2],
                                d.bbox[3]
                            );
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                say!("error: {}: {e}", path.display());
            }
        }
    }
    if a.verbose {
        say!("device: {}", det.model().backend().describe());
        if let Some(t) = super::fallback_table(&det.fallbacks()) {
            say!("{t}");
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
