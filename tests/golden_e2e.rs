//! Every end-to-end golden present (`NN_e2e_*`: the tiny GLIP-T-shaped model from its weights
//! file, GLIP's yaml, the golden's own input image and token ids) on every backend present:
//! every intermediate, the head outputs, the pre-NMS candidates and the final detections.
//! Then the same through the public API from the photo file (preprocessing + tokenizer).
//! Sizes, caption, positive map, counts and box scales come from each golden's JSON.
//!
//! Tolerances: the CPU backend 1e-4 (abs and rel) per element and exact (level, anchor,
//! label) sets; a CUDA device (f16 activations, CPU fallback for ops without a kernel) a
//! per-tap relative error ‖got − want‖∞ / ‖want‖∞ ≤ 1e-2, and ≥ 98 % of the final detections
//! matched at IoU ≥ 0.95 with the same label and a score within 2e-2.

use glip_rt::model::glip::{Glip, SharedBackend, Taps};
use glip_rt::model::postprocess::{self, Detection, PostprocessConfig};
use glip_rt::model::FeatureMap;
use glip_rt::parity;
use glip_rt::testing::{
    assert_close, pre_nms_candidates, test_backends, E2eGolden, DEVICE_TAP_REL,
};
use std::collections::HashMap;

type Golden = HashMap<String, glip_rt::Tensor>;

fn model_on(g: &E2eGolden, be: SharedBackend) -> Glip {
    g.model_on(be).unwrap()
}

fn ints(t: &Golden, k: &str) -> Vec<i32> {
    t[k].i32s().unwrap().to_vec()
}

fn floats(t: &Golden, k: &str) -> Vec<f32> {
    t[k].to_f32_vec().unwrap()
}

/// ((level, anchor, label), score, box) of one detection.
type Keyed = ((usize, usize, u32), f32, [f32; 4]);

/// (level, anchor, label) keys and the detections sorted by them.
fn sorted(d: &[Detection]) -> Vec<Keyed> {
    let mut v: Vec<_> = d
        .iter()
        .map(|c| ((c.level, c.anchor, c.label), c.score, c.bbox))
        .collect();
    v.sort_by_key(|a| a.0);
    v
}

/// The golden's detections under `prefix`, as keyed rows.
fn golden_set(t: &Golden, prefix: &str) -> Vec<Keyed> {
    let lv = ints(t, &format!("{prefix}.level"));
    let an = ints(t, &format!("{prefix}.anchor_index"));
    let lb = ints(t, &format!("{prefix}.labels"));
    let sc = floats(t, &format!("{prefix}.scores"));
    let bx = floats(t, &format!("{prefix}.boxes"));
    (0..lv.len())
        .map(|i| {
            (
                (lv[i] as usize, an[i] as usize, lb[i] as u32),
                sc[i],
                [bx[4 * i], bx[4 * i + 1], bx[4 * i + 2], bx[4 * i + 3]],
            )
        })
        .collect()
}

/// The CPU's contract: the same (level, anchor, label) set, boxes and scores within 1e-3 px /
/// 1e-5.
fn check_set_exact(what: &str, got: &[Detection], t: &Golden, prefix: &str) {
    let got = sorted(got);
    let want = golden_set(t, prefix);
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} detections, golden has {}",
        got.len(),
        want.len()
    );
    let (mut worst_box, mut worst_score) = (0.0f32, 0.0f32);
    for (i, ((key, score, b), (wkey, wscore, wb))) in got.iter().zip(&want).enumerate() {
        assert_eq!(key, wkey, "{what}: detection {i} key");
        worst_score = worst_score.max((score - wscore).abs());
        for j in 0..4 {
            worst_box = worst_box.max((b[j] - wb[j]).abs());
        }
    }
    println!("{what}: {} detections, keys exact, max |box diff| {worst_box:.2e} px, max |score diff| {worst_score:.2e}", got.len());
    assert!(worst_box <= 1e-3, "{what}: boxes differ by {worst_box}");
    assert!(
        worst_score <= 1e-5,
        "{what}: scores differ by {worst_score}"
    );
}

/// A device's contract: the golden's detections matched one to one (same label, IoU and
/// score within `parity`'s tolerances), at least `parity::DEVICE_MATCHED` of them. Returns
/// the share.
fn check_set_matched(what: &str, got: &[Detection], t: &Golden, prefix: &str) -> f32 {
    let want: Vec<parity::Scored> = golden_set(t, prefix)
        .into_iter()
        .map(|(key, score, b)| (key.2, score, b))
        .collect();
    let got: Vec<parity::Scored> = got.iter().map(|d| (d.label, d.score, d.bbox)).collect();
    let matched = parity::matched(&got, &want);
    let share = matched as f32 / want.len().max(1) as f32;
    println!(
        "{what}: {} detections ({} in the golden), {matched} matched ({:.1} %)",
        got.len(),
        want.len(),
        100.0 * share
    );
    assert!(
        parity::enough_matched(matched, want.len()),
        "{what}: only {matched} of {} golden detections matched",
        want.len()
    );
    share
}

/// One tap's comparison: returns (max |diff|, relative error) and asserts the backend's
/// tolerance.
fn check_tap(key: &str, got: &[f32], want: &[f32], exact: bool) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "{key}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{key}: non-finite values"
    );
    let (d, rel) = parity::rel_error(got, want);
    if exact {
        assert_close(key, got, want, 1e-4, 1e-4);
    } else {
        assert!(
            rel <= DEVICE_TAP_REL,
            "{key}: relative error {rel:.2e} > {DEVICE_TAP_REL:e}"
        );
    }
    (d, rel)
}

/// The head's logits of every level cut to the golden's first 16 token columns.
fn first_columns(lg: &[f32], t: usize, keep: usize) -> Vec<f32> {
    let rows = lg.len() / t;
    (0..rows)
        .flat_map(|r| lg[r * t..r * t + keep.min(t)].to_vec())
        .collect()
}

fn golden_on_backend(g: &E2eGolden, t: &Golden, backend: &str, be: SharedBackend) {
    let exact = backend == "cpu";
    let m = model_on(g, be);
    let ids = ints(t, "input/input_ids");
    let mask = ints(t, "input/attention_mask");
    let text = m.encode_text(&ids, &mask).unwrap();
    let image = FeatureMap::from_tensor(&t["input/image"]).unwrap();
    assert_eq!((image.h, image.w), g.padded_hw, "padded input size");
    let mut taps = Taps::enabled();
    let out = m.forward(&image, &text, &mut taps).unwrap();

    println!("\n{} on {backend}: per-tap error", g.name);
    println!("  {:<44} {:>11} {:>11}", "tap", "max |diff|", "rel");
    let mut compared = 0;
    for (name, tap) in &taps.tensors {
        let key = format!("inter/{name}");
        let Some(want) = t.get(&key) else { continue };
        assert_eq!(tap.shape(), want.shape(), "{key}: shape");
        let (d, rel) = check_tap(
            &key,
            &tap.to_f32_vec().unwrap(),
            &want.to_f32_vec().unwrap(),
            exact,
        );
        println!("  {name:<44} {d:>11.3e} {rel:>11.3e}");
        compared += 1;
    }
    // backbone.stage2..5, fpn.p3..p7, language.hidden, and per tower layer: VLFuse (5 levels
    // + language), BertEncoderLayer (language), DyConv (5 levels).
    let be = &**m.backend();
    let host = out.to_host(be).unwrap();
    let levels = out.bbox_reg.len();
    let want_taps = 4 + levels + 1 + m.config.dyhead.num_convs * (levels + 1 + 1 + levels);
    assert_eq!(compared, want_taps, "intermediates compared");
    let golden_cols = t["output/dot_product_logits.0"].shape()[2];
    for l in 0..levels {
        for (name, got) in [
            (
                format!("bbox_reg.{l}"),
                host.bbox_reg[l].to_f32_vec().unwrap(),
            ),
            (
                format!("centerness.{l}"),
                host.centerness[l].to_f32_vec().unwrap(),
            ),
            (
                format!("dot_product_logits.{l}"),
                first_columns(
                    host.dot_product_logits[l].f32s().unwrap(),
                    out.num_tokens,
                    golden_cols,
                ),
            ),
        ] {
            let (d, rel) = check_tap(&name, &got, &floats(t, &format!("output/{name}")), exact);
            println!("  {name:<44} {d:>11.3e} {rel:>11.3e}");
        }
    }

    let sizes = [g.image_hw];
    let cfg = PostprocessConfig::default();
    let fin = postprocess::postprocess(be, &out, &g.positive_map, &sizes, &cfg).unwrap();
    assert_eq!(fin[0].detections.len(), g.num_final, "final detections");
    if !exact {
        let what = format!("{} on {backend}: final", g.name);
        check_set_matched(&what, &fin[0].detections, t, "output/final_sorted");
        return;
    }
    let pre = pre_nms_candidates(be, &out, &g.positive_map, &sizes, &cfg).unwrap();
    check_set_exact("pre_nms", &pre[0], t, "output/pre_nms");
    check_set_exact("final", &fin[0].detections, t, "output/final_sorted");
    // GLIP's own output order (ascending concatenation index; within a level the order of
    // CPU topk(sorted=False), which glip_topk_order emulates): row by row.
    let mut glip_cfg = PostprocessConfig::default();
    glip_cfg.atss.glip_topk_order = true;
    let ordered = postprocess::postprocess(be, &out, &g.positive_map, &sizes, &glip_cfg).unwrap();
    let labels = ints(t, "output/final_glip_order.labels");
    let scores = floats(t, "output/final_glip_order.scores");
    let boxes = floats(t, "output/final_glip_order.boxes");
    assert_eq!(ordered[0].detections.len(), labels.len());
    for (i, d) in ordered[0].detections.iter().enumerate() {
        assert_eq!(d.label as i32, labels[i], "GLIP order: row {i} label");
        assert!(
            (d.score - scores[i]).abs() <= 1e-5,
            "GLIP order: row {i} score"
        );
        for j in 0..4 {
            assert!(
                (d.bbox[j] - boxes[i * 4 + j]).abs() <= 1e-3,
                "GLIP order: row {i} box"
            );
        }
    }
}

/// Every golden on the backends named `which` (or all but them), one thread per golden.
fn goldens_on(pick: impl Fn(&str) -> bool) {
    let goldens = E2eGolden::all().unwrap();
    assert!(goldens.len() >= 2, "end-to-end goldens: {goldens:?}");
    let backends: Vec<(String, SharedBackend)> = test_backends()
        .into_iter()
        .filter(|(n, _)| pick(n))
        .collect();
    std::thread::scope(|s| {
        for g in &goldens {
            let backends = &backends;
            s.spawn(move || {
                let t = g.tensors().unwrap();
                for (name, be) in backends {
                    golden_on_backend(g, &t, name, be.clone());
                    let fb = be.fallbacks();
                    if !fb.is_empty() {
                        println!(
                            "{} on {name}: {} ops ran on the CPU: {}",
                            g.name,
                            fb.len(),
                            fb.iter().map(|f| f.op).collect::<Vec<_>>().join(", ")
                        );
                    }
                }
            });
        }
    });
}

#[test]
fn every_e2e_golden_on_the_cpu() {
    goldens_on(|b| b == "cpu");
}

/// The emulated CUDA device in CI, and a GPU where one is present.
#[test]
fn every_e2e_golden_on_every_cuda_device() {
    goldens_on(|b| b != "cpu");
}

#[test]
fn real_tokens_only_gives_the_same_detections() {
    for g in E2eGolden::all().unwrap() {
        let t = g.tensors().unwrap();
        let m = model_on(&g, std::sync::Arc::new(glip_rt::backend::cpu::CpuBackend));
        let ids = ints(&t, "input/input_ids");
        let mask = ints(&t, "input/attention_mask");
        let real = mask.iter().filter(|&&v| v != 0).count();
        let text = m.encode_text(&ids[..real], &mask[..real]).unwrap();
        let image = FeatureMap::from_tensor(&t["input/image"]).unwrap();
        let out = m.forward(&image, &text, &mut Taps::disabled()).unwrap();
        assert_eq!(out.num_tokens, real);
        let fin = postprocess::postprocess(
            &**m.backend(),
            &out,
            &g.positive_map,
            &[g.image_hw],
            &PostprocessConfig::default(),
        )
        .unwrap();
        let what = format!("{}: final (real tokens only)", g.name);
        check_set_exact(&what, &fin[0].detections, &t, "output/final_sorted");
    }
}

#[test]
fn detector_on_the_photo_reproduces_the_golden_detections() {
    for g in E2eGolden::all().unwrap() {
        let det = g.detector(glip_rt::DeviceChoice::Cpu).unwrap();
        let p = det.prompt().unwrap();
        assert_eq!(
            p.positive_map(),
            g.positive_map,
            "{}: positive map of the caption",
            g.name
        );
        let t = g.tensors().unwrap();
        let img = glip_rt::preprocess::load_image(&g.photo, true).unwrap();
        assert_eq!((img.height, img.width), g.photo_hw, "{}: photo", g.name);
        let pre = glip_rt::preprocess::preprocess_image(&img, det.preprocess_config()).unwrap();
        assert_eq!(pre.resized_hw, g.image_hw, "{}: resized", g.name);
        assert_close(
            "preprocessed photo",
            &pre.image.data,
            &floats(&t, "input/image"),
            0.0,
            0.0,
        );
        let (dets, out) = det
            .run(std::slice::from_ref(&pre), &mut Taps::disabled())
            .unwrap();
        let fin = postprocess::postprocess(
            &**det.model().backend(),
            &out,
            &g.positive_map,
            &[g.image_hw],
            &PostprocessConfig::default(),
        )
        .unwrap();
        let what = format!("{}: final (photo)", g.name);
        check_set_exact(&what, &fin[0].detections, &t, "output/final_sorted");
        // Boxes come back in the photo's pixels (GLIP's BoxList.resize: x by the width
        // ratio, y by the height ratio).
        let (sx, sy) = g.box_scale();
        assert_eq!(dets[0].len(), fin[0].detections.len());
        for (d, c) in dets[0].iter().zip(&fin[0].detections) {
            assert_eq!(d.label, c.label);
            assert_eq!(d.phrase, g.phrases[d.label as usize - 1]);
            let want = [
                c.bbox[0] * sx,
                c.bbox[1] * sy,
                c.bbox[2] * sx,
                c.bbox[3] * sy,
            ];
            for j in 0..4 {
                assert!(
                    (d.bbox[j] - want[j]).abs() <= 1e-3 * sx.max(sy).max(1.0),
                    "{}: box scaled to the photo: {:?} vs {want:?}",
                    g.name,
                    d.bbox
                );
            }
        }
    }
}
