//! `glip eval`: GLIP's zero-shot evaluation on a COCO-format dataset. The categories' names
//! become the prompt as GLIP builds it (sorted by category id, `clean_name`, joined by ". ";
//! over 256 tokens: chunks of whole names, labels global, the image part once per image);
//! every image is detected; the results are written in COCO's format (boxes xywh with GLIP's
//! +1 width, labels mapped back to category ids) and scored as pycocotools scores them.
//!
//! Resumable: each image's results are appended to `<out>.partial.jsonl` as it is done; a
//! run that finds that file skips the images in it, so an interrupted run loses at most the
//! image in progress.

use super::crate_result::Result;
use glip_rt::cocoeval::CocoGt;
use glip_rt::tokenizer::Prompt;
use glip_rt::Error;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Ground truth: a COCO instances file (images with file_name, categories, annotations).
    #[arg(long)]
    pub gt: PathBuf,
    /// The folder the images' file_name values are relative to.
    #[arg(long)]
    pub images: PathBuf,
    /// Where to write the COCO results (default: results.json in the current folder).
    #[arg(long, default_value = "results.json")]
    pub out: PathBuf,
    /// Stop after this many images of this run (the partial file keeps them; a later run
    /// goes on from there).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print one JSON object (the 12 numbers by name and as `stats`) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One image's finished results, as a line of the partial file.
#[derive(serde::Serialize, serde::Deserialize)]
struct Done {
    image_id: u64,
    results: Vec<serde_json::Value>,
}

fn partial_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".partial.jsonl");
    PathBuf::from(p)
}

/// The images already done by an earlier run (a torn last line, from an interrupted write,
/// is dropped and redone).
fn read_partial(path: &Path) -> glip_rt::Result<Vec<Done>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut done = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        match serde_json::from_str::<Done>(&line) {
            Ok(d) => done.push(d),
            Err(_) => break,
        }
    }
    Ok(done)
}

pub fn run(a: Args) -> Result {
    let gt = CocoGt::load(&a.gt)?;
    // GLIP's label order: categories sorted by id, labels 1..=K.
    let mut cats: Vec<(u64, String)> = gt.categories().to_vec();
    cats.sort_by_key(|c| c.0);
    if cats.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: `categories` is empty",
            a.gt.display()
        )));
    }
    if let Some((id, _)) = cats.iter().find(|(_, n)| n.trim().is_empty()) {
        return Err(Error::Invalid(format!(
            "{}: category {id} has an empty name (it cannot be part of a prompt)",
            a.gt.display()
        )));
    }
    let names: Vec<&str> = cats.iter().map(|c| c.1.as_str()).collect();
    let prompt = Prompt::from_class_names(&names)?;
    // Every image's file, checked before any time is spent.
    let mut images: Vec<(u64, PathBuf)> = Vec::new();
    for (id, file) in gt.images() {
        let file = file.ok_or_else(|| {
            Error::Invalid(format!("{}: image {id} has no `file_name`", a.gt.display()))
        })?;
        images.push((id, a.images.join(file)));
    }
    images.sort_by_key(|i| i.0);
    images.dedup_by_key(|i| i.0);
    let missing: Vec<&PathBuf> = images
        .iter()
        .map(|i| &i.1)
        .filter(|p| !p.is_file())
        .collect();
    if let Some(first) = missing.first() {
        return Err(Error::Invalid(format!(
            "{} of {} images are missing under {}, e.g. {}",
            missing.len(),
            images.len(),
            a.images.display(),
            first.display()
        )));
    }

    let mut det = a.model.builder()?.build()?;
    crate::model_loaded();
    if let Some(n) = det.device_notice() {
        say!("{n}");
    }
    det.set_prompt_parsed(prompt)?;
    let chunks = det.prompt_chunks().len();
    say!(
        "{} categories, {} images; prompt in {chunks} chunk{} of at most 256 tokens",
        cats.len(),
        images.len(),
        if chunks == 1 { "" } else { "s" }
    );

    let partial = partial_path(&a.out);
    let mut done = read_partial(&partial)?;
    let known: std::collections::HashSet<u64> = images.iter().map(|i| i.0).collect();
    done.retain(|d| known.contains(&d.image_id));
    let finished: std::collections::HashSet<u64> = done.iter().map(|d| d.image_id).collect();
    if !done.is_empty() {
        say!(
            "{} of {} images already done ({}): going on from there",
            done.len(),
            images.len(),
            partial.display()
        );
    }
    // Rewritten with the good lines only, then appended to image by image.
    {
        let mut f = std::fs::File::create(&partial).map_err(|e| Error::io(&partial, e))?;
        for d in &done {
            let line = serde_json::to_string(d).map_err(|e| Error::Invalid(e.to_string()))?;
            writeln!(f, "{line}").map_err(|e| Error::io(&partial, e))?;
        }
    }
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&partial)
        .map_err(|e| Error::io(&partial, e))?;
    let todo: Vec<&(u64, PathBuf)> = images.iter().filter(|i| !finished.contains(&i.0)).collect();
    let mut progress = super::progress::Progress::new(images.len(), false);
    let offset = done.len();
    let mut ran = 0usize;
    for (id, path) in &todo {
        if a.limit.is_some_and(|l| ran >= l) {
            break;
        }
        let dets = det.detect_file(path)?;
        let results: Vec<serde_json::Value> = dets
            .iter()
            .filter_map(|d| {
                let cat = cats.get((d.label as usize).checked_sub(1)?)?.0;
                Some(serde_json::json!({
                    "image_id": id,
                    "category_id": cat,
                    "bbox": glip_rt::cocoeval::glip_box_to_coco(d.bbox),
                    "score": d.score,
                }))
            })
            .collect();
        let d = Done {
            image_id: *id,
            results,
        };
        let line = serde_json::to_string(&d).map_err(|e| Error::Invalid(e.to_string()))?;
        writeln!(log, "{line}").map_err(|e| Error::io(&partial, e))?;
        log.flush().map_err(|e| Error::io(&partial, e))?;
        done.push(d);
        ran += 1;
        progress.tick(done.len(), offset);
    }
    progress.finish();
    if done.len() < images.len() {
        say!(
            "stopped after {ran} images (--limit): {} of {} done; run again to go on",
            done.len(),
            images.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // All done: the COCO results file in image order, then the score.
    done.sort_by_key(|d| d.image_id);
    let all: Vec<serde_json::Value> = done.into_iter().flat_map(|d| d.results).collect();
    let text = serde_json::to_string(&all).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(&a.out, text).map_err(|e| Error::io(&a.out, e))?;
    std::fs::remove_file(&partial).map_err(|e| Error::io(&partial, e))?;
    say!("{} detections written to {}", all.len(), a.out.display());
    let stats = gt.evaluate(&all, &a.out)?;
    let mut out = super::out::Out::new();
    if a.json {
        outln!(out, "{}", super::coco_eval::stats_json(&stats));
    } else {
        outln!(out, "{}", stats.table().trim_end_matches('\n'));
    }
    Ok(ExitCode::SUCCESS)
}
