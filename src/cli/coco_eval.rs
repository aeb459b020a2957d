//! `glip coco-eval`: COCO's bounding-box evaluation of any detector's results (pycocotools'
//! numbers; `glip_rt::cocoeval`).

use super::crate_result::Result;
use glip_rt::cocoeval::CocoGt;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Ground truth: a COCO instances file (images, categories, annotations).
    #[arg(long)]
    pub gt: PathBuf,
    /// Detections: a COCO results file (a list of image_id, category_id, bbox [x, y, w, h],
    /// score).
    #[arg(long)]
    pub dt: PathBuf,
    /// Print one JSON object (the 12 numbers by name and as `stats`) instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result {
    let gt = CocoGt::load(&a.gt)?;
    let res = gt.load_results(&a.dt)?;
    let stats = gt.evaluate(&res, &a.dt)?;
    let mut out = super::out::Out::new();
    if a.json {
        outln!(out, "{}", stats_json(&stats));
    } else {
        outln!(out, "{}", stats.table().trim_end_matches('\n'));
    }
    Ok(ExitCode::SUCCESS)
}

/// The 12 numbers by name and as `stats`, one JSON object.
pub fn stats_json(stats: &glip_rt::cocoeval::Stats) -> serde_json::Value {
    let mut j = serde_json::Map::new();
    for (n, v) in stats.names.iter().zip(&stats.values) {
        j.insert((*n).into(), (*v).into());
    }
    j.insert("stats".into(), stats.values.clone().into());
    j.insert(
        "rules".into(),
        match stats.rules {
            glip_rt::cocoeval::Rules::Coco => "coco",
            glip_rt::cocoeval::Rules::Lvis => "lvis",
        }
        .into(),
    );
    serde_json::Value::Object(j)
}
