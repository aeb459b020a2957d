//! COCO's bounding-box evaluation (pycocotools' `COCOeval` with `iouType='bbox'`), so that
//! `glip coco-eval` and `glip eval` give the 12 numbers pycocotools gives: IoU thresholds
//! 0.50:0.05:0.95, 101 recall points, maxDets 1/10/100, area ranges all/small/medium/large,
//! crowd ground truth matched by intersection over the detection's area and never used up,
//! ignored ground truth (crowd or outside the area range) and the detections matched to it
//! left out, unmatched detections outside the area range left out, precision made monotone
//! and read at each recall point (0 past the last one reached), each mean over the entries
//! that exist (-1 when none does).
//!
//! An LVIS file (every image lists `neg_category_ids` and `not_exhaustive_category_ids`) is
//! scored by the LVIS API's rules instead (`LVISResults` + `LVISEval`): each image's 300 best
//! detections; only detections of categories the image has annotations of or lists as
//! absent; unmatched detections of not-exhaustively-annotated categories ignored; no crowd,
//! the annotations' own `ignore`; AP also per frequency group (rare, common, frequent); 13
//! numbers, printed as the LVIS API prints them (`area=     s` included). Image files come
//! from `coco_url` there.
//!
//! Reproduced as pycocotools computes it, quirks included: a ground-truth box's area is its
//! annotation's `area` field (not its box's), a detection's is w×h; ties in score keep file
//! order (stable sorts); thresholds are numpy's `linspace` values; a ground truth whose id
//! is 0 counts as unmatched. Checked against pycocotools on the fixtures under
//! `tests/testdata/cocoeval/` (made by `scripts/make_cocoeval_fixtures.py`), and against the
//! LVIS API on its LVIS fixtures.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// One ground-truth box.
#[derive(Clone, Debug)]
struct Gt {
    id: u64,
    image: u64,
    category: u64,
    /// [x, y, w, h]
    bbox: [f64; 4],
    area: f64,
    crowd: bool,
    /// LVIS: the annotation's own `ignore` flag (COCO ignores crowd boxes instead).
    ignore: bool,
}

/// One detection.
#[derive(Clone, Debug)]
struct Dt {
    id: u64,
    image: u64,
    category: u64,
    bbox: [f64; 4],
    area: f64,
    score: f64,
}

/// A ground-truth file (COCO instances format): images, categories, annotations.
pub struct CocoGt {
    /// LVIS's federated annotation, when the file is LVIS's (every image lists
    /// `neg_category_ids` and `not_exhaustive_category_ids`).
    lvis: Option<Lvis>,
    images: Vec<u64>,
    /// Each image's `file_name`, where given.
    files: Vec<Option<String>>,
    categories: Vec<(u64, String)>,
    anns: Vec<Gt>,
}

/// LVIS's per-image category lists and per-category frequency.
struct Lvis {
    /// Categories verified absent from each image: detections of them are false positives.
    neg: HashMap<u64, std::collections::HashSet<u64>>,
    /// Categories not exhaustively annotated in each image: unmatched detections are ignored.
    not_exhaustive: HashMap<u64, std::collections::HashSet<u64>>,
    /// Each category's frequency group: "r", "c" or "f".
    frequency: HashMap<u64, String>,
}

/// The most detections per image LVIS keeps (the highest scores).
pub const LVIS_MAX_DETS: usize = 300;

/// Which rules scored the results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    Coco,
    Lvis,
}

/// The evaluation's numbers, in the order its reference API prints them: pycocotools' 12
/// (AP, AP50, AP75, APs/m/l, AR1, AR10, AR100, ARs/m/l) or the LVIS API's 13 (AP, AP50,
/// AP75, APs/m/l, APr/c/f, AR@300, ARs/m/l@300).
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub rules: Rules,
    pub names: &'static [&'static str],
    pub values: Vec<f64>,
}

/// The names of [`Stats::values`] under COCO's rules.
pub const COCO_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];
/// … and under LVIS's (as the LVIS API names them).
pub const LVIS_NAMES: [&str; 13] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR@300", "ARs@300", "ARm@300",
    "ARl@300",
];

fn bad(file: &Path, what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {what}", file.display()))
}

fn read_json(file: &Path) -> Result<serde_json::Value> {
    let bytes = crate::limits::read_file(
        file,
        crate::limits::MAX_ANNOTATION_FILE_BYTES,
        "annotation file",
    )?;
    serde_json::from_slice(&bytes).map_err(|e| bad(file, format!("not JSON: {e}")))
}

fn num(file: &Path, v: &serde_json::Value, at: &str, field: &str) -> Result<f64> {
    v.get(field)
        .and_then(serde_json::Value::as_f64)
        .filter(|x| x.is_finite())
        .ok_or_else(|| {
            bad(
                file,
                format!("{at}: `{field}` is missing or not a finite number"),
            )
        })
}

fn id(file: &Path, v: &serde_json::Value, at: &str, field: &str) -> Result<u64> {
    v.get(field)
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            bad(
                file,
                format!("{at}: `{field}` is missing or not a non-negative integer"),
            )
        })
}

fn bbox(file: &Path, v: &serde_json::Value, at: &str) -> Result<[f64; 4]> {
    let b = v
        .get("bbox")
        .and_then(serde_json::Value::as_array)
        .filter(|b| b.len() == 4)
        .ok_or_else(|| bad(file, format!("{at}: `bbox` is missing or not [x, y, w, h]")))?;
    let mut out = [0.0; 4];
    for (o, x) in out.iter_mut().zip(b) {
        *o = x.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
            bad(
                file,
                format!("{at}: `bbox` holds a value that is not a finite number"),
            )
        })?;
    }
    Ok(out)
}

impl CocoGt {
    /// Reads a COCO instances file (`images`, `categories`, `annotations` with `id`,
    /// `image_id`, `category_id`, `bbox`, `area`, optional `iscrowd`).
    pub fn load(file: &Path) -> Result<CocoGt> {
        let j = read_json(file)?;
        let list = |key: &str| -> Result<&Vec<serde_json::Value>> {
            j.get(key)
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| {
                    bad(
                        file,
                        format!("`{key}` is missing or not a list (not a COCO instances file?)"),
                    )
                })
        };
        let images = list("images")?
            .iter()
            .enumerate()
            .map(|(i, v)| id(file, v, &format!("images[{i}]"), "id"))
            .collect::<Result<Vec<_>>>()?;
        let files = list("images")?
            .iter()
            .map(|v| {
                // LVIS lists coco_url instead: the file is its last path component.
                v.get("file_name")
                    .and_then(serde_json::Value::as_str)
                    .or_else(|| {
                        v.get("coco_url")
                            .and_then(serde_json::Value::as_str)
                            .and_then(|u| u.rsplit('/').next())
                    })
                    .map(String::from)
            })
            .collect();
        let ids_of = |v: &serde_json::Value,
                      at: &str,
                      key: &str|
         -> Result<std::collections::HashSet<u64>> {
            v.get(key)
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| bad(file, format!("{at}: `{key}` is not a list")))?
                .iter()
                .map(|x| {
                    x.as_u64().ok_or_else(|| {
                        bad(
                            file,
                            format!("{at}: `{key}` holds a value that is not an id"),
                        )
                    })
                })
                .collect()
        };
        let imgs = list("images")?;
        let is_lvis = !imgs.is_empty()
            && imgs.iter().all(|v| {
                v.get("neg_category_ids").is_some()
                    && v.get("not_exhaustive_category_ids").is_some()
            });
        let lvis = if is_lvis {
            let (mut neg, mut not_exhaustive) = (HashMap::new(), HashMap::new());
            for (i, (v, &img)) in imgs.iter().zip(&images).enumerate() {
                let at = format!("images[{i}]");
                neg.insert(img, ids_of(v, &at, "neg_category_ids")?);
                not_exhaustive.insert(img, ids_of(v, &at, "not_exhaustive_category_ids")?);
            }
            let mut frequency = HashMap::new();
            for (i, v) in list("categories")?.iter().enumerate() {
                let at = format!("categories[{i}]");
                let f = v
                    .get("frequency")
                    .and_then(serde_json::Value::as_str)
                    .filter(|f| matches!(*f, "r" | "c" | "f"))
                    .ok_or_else(|| bad(file, format!("{at}: LVIS `frequency` is not r, c or f")))?;
                frequency.insert(id(file, v, &at, "id")?, f.to_string());
            }
            Some(Lvis {
                neg,
                not_exhaustive,
                frequency,
            })
        } else {
            None
        };
        if images.is_empty() {
            return Err(bad(file, "`images` is empty: nothing to evaluate"));
        }
        let categories = list("categories")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let at = format!("categories[{i}]");
                let name = v
                    .get("name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("");
                Ok((id(file, v, &at, "id")?, name.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let anns = list("annotations")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let at = format!("annotations[{i}]");
                Ok(Gt {
                    id: id(file, v, &at, "id")?,
                    image: id(file, v, &at, "image_id")?,
                    category: id(file, v, &at, "category_id")?,
                    bbox: bbox(file, v, &at)?,
                    area: num(file, v, &at, "area")?,
                    crowd: v
                        .get("iscrowd")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0)
                        != 0,
                    ignore: v
                        .get("ignore")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0)
                        != 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CocoGt {
            lvis,
            images,
            files,
            categories,
            anns,
        })
    }

    /// The images (id, file_name where given) in file order.
    pub fn images(&self) -> Vec<(u64, Option<&str>)> {
        self.images
            .iter()
            .zip(&self.files)
            .map(|(&i, f)| (i, f.as_deref()))
            .collect()
    }

    /// The categories (id, name) in file order.
    pub fn categories(&self) -> &[(u64, String)] {
        &self.categories
    }

    /// Reads a results file: a list of detections (`image_id`, `category_id`, `bbox`,
    /// `score`), checked by [`CocoGt::evaluate`].
    pub fn load_results(&self, file: &Path) -> Result<Vec<serde_json::Value>> {
        match read_json(file)? {
            serde_json::Value::Array(list) => Ok(list),
            _ => Err(bad(file, "not a list of detections (COCO results format)")),
        }
    }

    /// Evaluates `results` (from [`CocoGt::load_results`]; `file` names them in errors) as
    /// pycocotools' `loadRes` + `COCOeval` do: detection ids 1.. in file order, area w×h;
    /// every image must be one of the ground truth's.
    pub fn evaluate(&self, results: &[serde_json::Value], file: &Path) -> Result<Stats> {
        let images: std::collections::HashSet<u64> = self.images.iter().copied().collect();
        let mut dts = Vec::with_capacity(results.len());
        for (i, v) in results.iter().enumerate() {
            let at = format!("[{i}]");
            let b = bbox(file, v, &at)?;
            let d = Dt {
                id: i as u64 + 1,
                image: id(file, v, &at, "image_id")?,
                category: id(file, v, &at, "category_id")?,
                bbox: b,
                area: b[2] * b[3],
                score: num(file, v, &at, "score")?,
            };
            if !images.contains(&d.image) {
                return Err(bad(
                    file,
                    format!(
                        "{at}: image_id {} is not an image of the ground truth",
                        d.image
                    ),
                ));
            }
            dts.push(d);
        }
        Ok(evaluate(self, &dts))
    }
}

/// A box as COCO's results list it, [x, y, w, h], from GLIP's [x1, y1, x2, y2] with its
/// inclusive x2/y2: w = x2 − x1 + 1 (BoxList.convert("xywh"), TO_REMOVE = 1).
pub fn glip_box_to_coco(b: [f32; 4]) -> [f32; 4] {
    [b[0], b[1], b[2] - b[0] + 1.0, b[3] - b[1] + 1.0]
}

/// numpy's `linspace(start, stop, num)`: `start + i * step`, the last value `stop` exactly.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

const MAX_DETS: [usize; 3] = [1, 10, 100];
const AREAS: [(f64, f64); 4] = [
    (0.0, 1e10),
    (0.0, 32.0 * 32.0),
    (32.0 * 32.0, 96.0 * 96.0),
    (96.0 * 96.0, 1e10),
];

/// maskApi.c's bbIou: IoU of [x, y, w, h] boxes; for crowd ground truth the union is the
/// detection's area.
fn iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let da = d[2] * d[3];
    let u = if crowd { da } else { da + g[2] * g[3] - i };
    i / u
}

/// One image's ground truth and detections of one category, and their IoUs [d][g].
type ImgCat<'a> = (Vec<&'a Gt>, Vec<&'a Dt>, Vec<Vec<f64>>);

/// One image and category at one area range (pycocotools' `evaluateImg`).
struct ImgEval {
    /// [T][D]: the id of the ground truth matched at each threshold (0: none).
    dt_matches: Vec<Vec<u64>>,
    dt_ignore: Vec<Vec<bool>>,
    dt_scores: Vec<f64>,
    gt_ignore: Vec<bool>,
}

/// `not_exhaustive`: LVIS, a category not exhaustively annotated in this image (its unmatched
/// detections are ignored).
fn evaluate_img(
    rules: Rules,
    gts: &[&Gt],
    dts: &[&Dt],
    ious: &[Vec<f64>],
    area: (f64, f64),
    thresholds: &[f64],
    not_exhaustive: bool,
) -> Option<ImgEval> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    // COCO ignores crowd boxes (pycocotools overwrites `ignore` with `iscrowd`); LVIS has no
    // crowd and keeps the annotation's `ignore`.
    let ignored: Vec<bool> = gts
        .iter()
        .map(|g| {
            let flag = match rules {
                Rules::Coco => g.crowd,
                Rules::Lvis => g.ignore,
            };
            flag || g.area < area.0 || g.area > area.1
        })
        .collect();
    // Ground truth not ignored first (stable).
    let mut gorder: Vec<usize> = (0..gts.len()).collect();
    gorder.sort_by_key(|&i| ignored[i]);
    let gt_ignore: Vec<bool> = gorder.iter().map(|&i| ignored[i]).collect();
    let crowd: Vec<bool> = gorder.iter().map(|&i| gts[i].crowd).collect();
    let (t, g, d) = (thresholds.len(), gts.len(), dts.len());
    let mut gtm = vec![vec![0u64; g]; t];
    let mut dt_matches = vec![vec![0u64; d]; t];
    let mut dt_ignore = vec![vec![false; d]; t];
    if !ious.is_empty() && g > 0 {
        for (ti, &thr) in thresholds.iter().enumerate() {
            for (di, det) in dts.iter().enumerate() {
                let mut best = thr.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for (gi, &go) in gorder.iter().enumerate() {
                    if gtm[ti][gi] > 0 && !crowd[gi] {
                        continue;
                    }
                    if let Some(mi) = m {
                        if !gt_ignore[mi] && gt_ignore[gi] {
                            break;
                        }
                    }
                    let v = ious[di][go];
                    if v < best {
                        continue;
                    }
                    best = v;
                    m = Some(gi);
                }
                if let Some(mi) = m {
                    dt_ignore[ti][di] = gt_ignore[mi];
                    dt_matches[ti][di] = gts[gorder[mi]].id;
                    gtm[ti][mi] = det.id;
                }
            }
        }
    }
    for (ti, row) in dt_ignore.iter_mut().enumerate() {
        for (di, ig) in row.iter_mut().enumerate() {
            let out = dts[di].area < area.0 || dts[di].area > area.1 || not_exhaustive;
            *ig = *ig || (dt_matches[ti][di] == 0 && out);
        }
    }
    Some(ImgEval {
        dt_matches,
        dt_ignore,
        dt_scores: dts.iter().map(|d| d.score).collect(),
        gt_ignore,
    })
}

fn evaluate(gt: &CocoGt, dts: &[Dt]) -> Stats {
    let thresholds = linspace(0.5, 0.95, 10);
    let recall_points = linspace(0.0, 1.0, 101);
    let mut img_ids = gt.images.clone();
    img_ids.sort_unstable();
    img_ids.dedup();
    let mut cat_ids: Vec<u64> = gt.categories.iter().map(|c| c.0).collect();
    cat_ids.sort_unstable();
    cat_ids.dedup();
    let in_imgs: std::collections::HashSet<u64> = img_ids.iter().copied().collect();
    let in_cats: std::collections::HashSet<u64> = cat_ids.iter().copied().collect();
    // Per (image, category), in file order (pycocotools groups by image, keeping file order).
    let mut gmap: HashMap<(u64, u64), Vec<&Gt>> = HashMap::new();
    for a in &gt.anns {
        if in_imgs.contains(&a.image) && in_cats.contains(&a.category) {
            gmap.entry((a.image, a.category)).or_default().push(a);
        }
    }
    let rules = if gt.lvis.is_some() {
        Rules::Lvis
    } else {
        Rules::Coco
    };
    // LVIS (LVISResults, LVISEval._prepare): each image's 300 best detections (stable by
    // score), and only those of categories the image has annotations of or lists as absent.
    let kept: Vec<&Dt> = match &gt.lvis {
        None => dts.iter().collect(),
        Some(l) => {
            let mut per_img: HashMap<u64, Vec<&Dt>> = HashMap::new();
            for d in dts {
                per_img.entry(d.image).or_default().push(d);
            }
            let mut top: std::collections::HashSet<u64> = std::collections::HashSet::new();
            for list in per_img.values_mut() {
                list.sort_by(|a, b| b.score.total_cmp(&a.score));
                top.extend(list.iter().take(LVIS_MAX_DETS).map(|d| d.id));
            }
            let mut present: std::collections::HashSet<(u64, u64)> =
                std::collections::HashSet::new();
            for a in &gt.anns {
                present.insert((a.image, a.category));
            }
            dts.iter()
                .filter(|d| top.contains(&d.id))
                .filter(|d| {
                    present.contains(&(d.image, d.category))
                        || l.neg.get(&d.image).is_some_and(|n| n.contains(&d.category))
                })
                .collect()
        }
    };
    let mut dmap: HashMap<(u64, u64), Vec<&Dt>> = HashMap::new();
    for d in kept {
        if in_imgs.contains(&d.image) && in_cats.contains(&d.category) {
            dmap.entry((d.image, d.category)).or_default().push(d);
        }
    }
    // COCO: maxDets 1, 10, 100; LVIS: all kept (300 per image).
    let max_dets: &[usize] = match rules {
        Rules::Coco => &MAX_DETS,
        Rules::Lvis => &[usize::MAX],
    };
    let max_det = max_dets[max_dets.len() - 1];
    let (t_n, r_n, k_n, a_n, m_n) = (
        thresholds.len(),
        recall_points.len(),
        cat_ids.len(),
        AREAS.len(),
        max_dets.len(),
    );
    // precision[t][r][k][a][m], recall[t][k][a][m], -1 where nothing was evaluated.
    let pidx = |t: usize, r: usize, k: usize, a: usize, m: usize| {
        (((t * r_n + r) * k_n + k) * a_n + a) * m_n + m
    };
    let ridx = |t: usize, k: usize, a: usize, m: usize| ((t * k_n + k) * a_n + a) * m_n + m;
    let mut precision = vec![-1.0f64; t_n * r_n * k_n * a_n * m_n];
    let mut recall = vec![-1.0f64; t_n * k_n * a_n * m_n];
    let empty_g: Vec<&Gt> = Vec::new();
    let empty_d: Vec<&Dt> = Vec::new();
    for (k, &cat) in cat_ids.iter().enumerate() {
        // Each image's detections by score (stable), cut to maxDets[-1]; their IoUs.
        let per_img: Vec<ImgCat> = img_ids
            .iter()
            .map(|&img| {
                let g = gmap.get(&(img, cat)).unwrap_or(&empty_g).clone();
                let mut d = dmap.get(&(img, cat)).unwrap_or(&empty_d).clone();
                d.sort_by(|a, b| b.score.total_cmp(&a.score));
                d.truncate(max_det);
                let ious = if g.is_empty() || d.is_empty() {
                    Vec::new()
                } else {
                    d.iter()
                        .map(|dd| {
                            g.iter()
                                .map(|gg| iou(&dd.bbox, &gg.bbox, gg.crowd))
                                .collect()
                        })
                        .collect()
                };
                (g, d, ious)
            })
            .collect();
        for (a, &area) in AREAS.iter().enumerate() {
            let evals: Vec<ImgEval> = per_img
                .iter()
                .zip(&img_ids)
                .filter_map(|((g, d, ious), img)| {
                    let ne = gt.lvis.as_ref().is_some_and(|l| {
                        l.not_exhaustive.get(img).is_some_and(|n| n.contains(&cat))
                    });
                    evaluate_img(rules, g, d, ious, area, &thresholds, ne)
                })
                .collect();
            if evals.is_empty() {
                continue;
            }
            for (m, &md) in max_dets.iter().enumerate() {
                let mut scores: Vec<f64> = Vec::new();
                let mut matched: Vec<Vec<bool>> = vec![Vec::new(); t_n];
                let mut ign: Vec<Vec<bool>> = vec![Vec::new(); t_n];
                for e in &evals {
                    let n = e.dt_scores.len().min(md);
                    scores.extend(&e.dt_scores[..n]);
                    for t in 0..t_n {
                        matched[t].extend(e.dt_matches[t][..n].iter().map(|&x| x != 0));
                        ign[t].extend(&e.dt_ignore[t][..n]);
                    }
                }
                let npig = evals
                    .iter()
                    .flat_map(|e| e.gt_ignore.iter())
                    .filter(|&&ig| !ig)
                    .count();
                if npig == 0 {
                    continue;
                }
                let mut order: Vec<usize> = (0..scores.len()).collect();
                order.sort_by(|&x, &y| scores[y].total_cmp(&scores[x]));
                for t in 0..t_n {
                    let (mut tp, mut fp) = (0.0f64, 0.0f64);
                    let mut rc = Vec::with_capacity(order.len());
                    let mut pr = Vec::with_capacity(order.len());
                    for &i in &order {
                        if ign[t][i] {
                            // Neither a true nor a false positive: the sums stay.
                        } else if matched[t][i] {
                            tp += 1.0;
                        } else {
                            fp += 1.0;
                        }
                        rc.push(tp / npig as f64);
                        pr.push(tp / (fp + tp + f64::EPSILON));
                    }
                    recall[ridx(t, k, a, m)] = rc.last().copied().unwrap_or(0.0);
                    for i in (1..pr.len()).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (r, &thr) in recall_points.iter().enumerate() {
                        // searchsorted(rc, thr, 'left'): the first recall reaching thr.
                        let pi = rc.partition_point(|&x| x < thr);
                        precision[pidx(t, r, k, a, m)] = pr.get(pi).copied().unwrap_or(0.0);
                    }
                }
            }
        }
    }
    let mean = |v: Vec<f64>| -> f64 {
        let kept: Vec<f64> = v.into_iter().filter(|&x| x > -1.0).collect();
        if kept.is_empty() {
            -1.0
        } else {
            kept.iter().sum::<f64>() / kept.len() as f64
        }
    };
    // Mean precision over thresholds (all, or one), recall points and the categories `cats`.
    let ap = |thr: Option<usize>, cats: &[usize], a: usize, m: usize| {
        let mut v = Vec::new();
        for t in 0..t_n {
            if thr.is_some_and(|x| x != t) {
                continue;
            }
            for r in 0..r_n {
                for &k in cats {
                    v.push(precision[pidx(t, r, k, a, m)]);
                }
            }
        }
        mean(v)
    };
    let ar = |a: usize, m: usize| {
        let mut v = Vec::new();
        for t in 0..t_n {
            for k in 0..k_n {
                v.push(recall[ridx(t, k, a, m)]);
            }
        }
        mean(v)
    };
    let all: Vec<usize> = (0..k_n).collect();
    match &gt.lvis {
        None => Stats {
            rules,
            names: &COCO_NAMES,
            values: vec![
                ap(None, &all, 0, 2),
                ap(Some(0), &all, 0, 2),
                ap(Some(5), &all, 0, 2),
                ap(None, &all, 1, 2),
                ap(None, &all, 2, 2),
                ap(None, &all, 3, 2),
                ar(0, 0),
                ar(0, 1),
                ar(0, 2),
                ar(1, 2),
                ar(2, 2),
                ar(3, 2),
            ],
        },
        Some(l) => {
            // Categories (by index) of each frequency group.
            let group = |f: &str| -> Vec<usize> {
                cat_ids
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| l.frequency.get(c).is_some_and(|x| x == f))
                    .map(|(k, _)| k)
                    .collect()
            };
            Stats {
                rules,
                names: &LVIS_NAMES,
                values: vec![
                    ap(None, &all, 0, 0),
                    ap(Some(0), &all, 0, 0),
                    ap(Some(5), &all, 0, 0),
                    ap(None, &all, 1, 0),
                    ap(None, &all, 2, 0),
                    ap(None, &all, 3, 0),
                    ap(None, &group("r"), 0, 0),
                    ap(None, &group("c"), 0, 0),
                    ap(None, &group("f"), 0, 0),
                    ar(0, 0),
                    ar(1, 0),
                    ar(2, 0),
                    ar(3, 0),
                ],
            }
        }
    }
}

impl Stats {
    /// The lines the reference API prints: pycocotools' `summarize()` (12) or the LVIS
    /// API's `print_results()` (13, its quirks kept: "area=     s" for small).
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (name, v) in self.names.iter().zip(&self.values) {
            let ap = name.starts_with("AP");
            let (title, ty) = if ap {
                ("Average Precision", "(AP)")
            } else {
                ("Average Recall", "(AR)")
            };
            let third = name.chars().nth(2);
            let iou = match &name[2.min(name.len())..] {
                "50" => "0.50".to_string(),
                "75" => "0.75".to_string(),
                _ => "0.50:0.95".to_string(),
            };
            match self.rules {
                Rules::Coco => {
                    let area = match third {
                        Some('s') => "small",
                        Some('m') => "medium",
                        Some('l') => "large",
                        _ => "all",
                    };
                    let md = match *name {
                        "AR1" => 1,
                        "AR10" => 10,
                        _ => 100,
                    };
                    out.push_str(&format!(
                        " {title:<18} {ty} @[ IoU={iou:<9} | area={area:>6} | maxDets={md:>3} ] = {v:0.3}\n"
                    ));
                }
                Rules::Lvis => {
                    let group = match third {
                        Some(c @ ('r' | 'c' | 'f')) => c.to_string(),
                        _ => "all".to_string(),
                    };
                    let area = match third {
                        Some(c @ ('s' | 'm' | 'l')) => c.to_string(),
                        _ => "all".to_string(),
                    };
                    out.push_str(&format!(
                        " {title:<18} {ty} @[ IoU={iou:<9} | area={area:>6} | maxDets={LVIS_MAX_DETS:>3} catIds={group:>3}] = {v:0.3}\n"
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_is_numpys() {
        let t = linspace(0.5, 0.95, 10);
        assert_eq!(t[0], 0.5);
        assert_eq!(t[9], 0.95);
        // numpy: np.linspace(.5, .95, 10)[5] == 0.75 and [1] == 0.55.
        assert_eq!(t[5], 0.75);
        assert_eq!(t[1], 0.55);
        let r = linspace(0.0, 1.0, 101);
        assert_eq!(r[100], 1.0);
        assert_eq!(r[7], 0.07);
    }

    #[test]
    fn crowd_iou_divides_by_the_detection() {
        let d = [0.0, 0.0, 10.0, 10.0];
        let g = [5.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&d, &g, false), 50.0 / 150.0);
        assert_eq!(iou(&d, &g, true), 0.5);
        assert_eq!(iou(&d, &[20.0, 0.0, 5.0, 5.0], false), 0.0);
    }
}
