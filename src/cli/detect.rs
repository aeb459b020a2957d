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
    /// Images (JPEG, PNG, WebP): files, folders (their image files, sorted by name) or
    /// patterns such as 'photos/*.jpg' (quoted: glip expands them); each image on its own.
    #[arg(long, required = true, num_args = 1..)]
    pub image: Vec<PathBuf>,
    /// Folders given to --image are searched in their subfolders too.
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// Write each image with its boxes and "phrase score" labels (one colour per phrase) to
    /// this folder, under its file name (the format from the extension).
    #[arg(long, value_name = "DIR")]
    pub annotate: Option<PathBuf>,
    /// Draw only detections scoring at least this (GLIP's demo: 0.5). The printed results
    /// follow --threshold.
    #[arg(long, default_value_t = glip_rt::annotate::DEFAULT_THRESHOLD)]
    pub annotate_threshold: f32,
    /// The prompt: class names separated by '.' ("person. bicycle."), or a caption with --phrases.
    #[arg(long)]
    pub prompt: String,
    /// Phrases of the caption to ground (each must occur in --prompt), or `auto`: its noun
    /// phrases, found as GLIP's demo does (word tokens, part-of-speech tags, the chunk rule
    /// `<DT>?<JJ.*>*<NN.*>+`; every occurrence of a phrase is a label of its own).
    #[arg(long, num_args = 1..)]
    pub phrases: Vec<String>,
    #[command(flatten)]
    pub phrase_thresholds: super::PhraseThresholdArgs,
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

/// How detections are written on stdout.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Format {
    /// Per image a line, then one line per detection (highest score first).
    Text,
    /// One JSON array of {image, width, height, detections}, written at the end.
    Json,
    /// One JSON object per image and line, as each image is done.
    Jsonl,
    /// COCO results: one JSON array of {image_id, category_id, bbox [x, y, w, h], score}
    /// (image_id: the file name's number where it is one, as COCO's, else the image's
    /// 1-based position; category_id: the phrase's label; w = x2 − x1 + 1 as GLIP's).
    Coco,
}

/// The file extensions read from folders and patterns.
/// `--phrases auto`: the caption's noun phrases are found, not given.
const AUTO_PHRASES: &str = "auto";

const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

fn is_image(p: &std::path::Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The image files of a folder, sorted by path (subfolders too when `recursive`).
fn folder_images(
    dir: &std::path::Path,
    recursive: bool,
    out: &mut Vec<PathBuf>,
) -> glip_rt::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                folder_images(&p, true, out)?;
            }
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// The images the --image arguments name, in order; each argument that names none is an
/// error (reported, the others still run).
fn expand_inputs(args: &[PathBuf], recursive: bool) -> (Vec<PathBuf>, Vec<String>) {
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    for a in args {
        let text = a.to_string_lossy();
        if a.is_dir() {
            let before = files.len();
            match folder_images(a, recursive, &mut files) {
                Ok(()) if files.len() == before => errors.push(format!(
                    "{}: no {} files in this folder{}",
                    a.display(),
                    IMAGE_EXTENSIONS.join("/"),
                    if recursive {
                        " or below"
                    } else {
                        " (--recursive searches subfolders)"
                    }
                )),
                Ok(()) => {}
                Err(e) => errors.push(e.to_string()),
            }
        } else if !a.exists() && text.contains(['*', '?', '[']) {
            match glob::glob(&text) {
                Ok(paths) => {
                    let mut found: Vec<PathBuf> = paths
                        .filter_map(|p| p.ok())
                        .filter(|p| p.is_file())
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        errors.push(format!("{text}: the pattern matches no file"));
                    }
                    files.extend(found);
                }
                Err(e) => errors.push(format!("{text}: not a valid pattern ({e})")),
            }
        } else {
            // A file (a missing one is reported when it is read).
            files.push(a.clone());
        }
    }
    (files, errors)
}

/// Where the annotated picture of `input` goes: `dir/<its file name>`, or `<stem>-N.<ext>`
/// when an earlier input of this run had that name.
fn annotated_path(
    dir: &std::path::Path,
    input: &std::path::Path,
    written: &mut std::collections::HashSet<PathBuf>,
) -> PathBuf {
    let name = input
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| "image.png".into());
    let mut p = dir.join(&name);
    let mut n = 2;
    while written.contains(&p) {
        let stem = name.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
        let ext = name.extension().and_then(|s| s.to_str()).unwrap_or("png");
        p = dir.join(format!("{stem}-{n}.{ext}"));
        n += 1;
    }
    written.insert(p.clone());
    p
}

/// COCO's image id for a file: its name's number (COCO's 000000397133.jpg is 397133), else
/// its 1-based position among the images.
fn coco_image_id(path: &std::path::Path, position: usize) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(position as u64 + 1)
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
    crate::model_loaded();
    if let Some(n) = det.device_notice() {
        say!("{n}");
    }
    for w in det.warnings() {
        say!("warning: {w}");
    }
    if a.phrases.is_empty() {
        det.set_prompt(&a.prompt)?;
    } else if a.phrases == [AUTO_PHRASES] {
        det.set_prompt_auto_phrases(&a.prompt)?;
        if let Some(p) = det.prompt() {
            let names: Vec<&str> = p.prompt.phrases.iter().map(|p| p.name.as_str()).collect();
            say!("phrases: {}", names.join(" | "));
        }
    } else {
        det.set_prompt_with_phrases(&a.prompt, &a.phrases)?;
    }
    a.phrase_thresholds.apply(&mut det)?;
    let mut out = super::out::Out::new();
    let (images, errors) = expand_inputs(&a.image, a.recursive);
    let mut failed = errors.len();
    for e in errors {
        say!("error: {e}");
    }
    if let Some(dir) = &a.annotate {
        if !(0.0..=1.0).contains(&a.annotate_threshold) {
            return Err(Error::Invalid(format!(
                "--annotate-threshold {} must be in [0, 1]",
                a.annotate_threshold
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // Annotated file names already written (two inputs of one name do not overwrite).
    let mut written = std::collections::HashSet::new();
    // --format json and coco: one document, written once every image is done.
    let mut document: Vec<serde_json::Value> = Vec::new();
    // Many images with results going to a file or pipe: progress on a terminal's stderr
    // (nothing when stderr is not a terminal, or when the results are on the same screen).
    let to_screen = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut progress = (images.len() > 1 && !to_screen)
        .then(|| super::progress::Progress::new(images.len(), true));
    for (i, path) in images.iter().enumerate() {
        if let Some(p) = progress.as_mut() {
            p.tick(i, 0);
        }
        // A bad image is reported and skipped; the others are still processed.
        let result = (|| -> glip_rt::Result<(Vec<Detection>, (usize, usize), Taps)> {
            let mut img = preprocess::load_image(path, det.preprocess_config().exif_orientation)?;
            let pre = preprocess::preprocess_image(&img, det.preprocess_config())?;
            let mut taps = if i == 0 && a.dump.is_some() {
                Taps::enabled()
            } else {
                Taps::disabled()
            };
            let (mut dets, _) = det.run(std::slice::from_ref(&pre), &mut taps)?;
            let dets = dets.pop().unwrap_or_default();
            if let Some(dir) = &a.annotate {
                glip_rt::annotate::draw(&mut img, &dets, a.annotate_threshold);
                glip_rt::annotate::save(&img, &annotated_path(dir, path, &mut written))?;
            }
            Ok((dets, pre.original_hw, taps))
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
                    Format::Jsonl => {
                        let line = serde_json::to_string(&res)
                            .map_err(|e| Error::Invalid(format!("json: {e}")))?;
                        outln!(out, "{line}");
                    }
                    Format::Json => document.push(
                        serde_json::to_value(&res)
                            .map_err(|e| Error::Invalid(format!("json: {e}")))?,
                    ),
                    Format::Coco => {
                        let id = coco_image_id(path, i);
                        document.extend(dets.iter().map(|d| {
                            serde_json::json!({
                                "image_id": id,
                                "category_id": d.label,
                                "bbox": glip_rt::cocoeval::glip_box_to_coco(d.bbox),
                                "score": d.score,
                            })
                        }));
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
    if let Some(p) = progress.as_mut() {
        p.tick(images.len(), 0);
        p.finish();
    }
    if matches!(a.format, Format::Json | Format::Coco) {
        outln!(out, "{}", serde_json::Value::Array(document));
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
