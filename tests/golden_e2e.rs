//! Golden 12: the tiny GLIP-T-shaped model end to end, from its weights file, GLIP's yaml and
//! the golden's own input image and token ids; every intermediate, the head outputs, the
//! pre-NMS candidates and the final detections. Then the same through the public API from
//! the photo file (preprocessing + tokenizer included).

use glip_rt::api::Detector;
use glip_rt::model::config::{BertConfig, GlipConfig};
use glip_rt::model::glip::{Glip, Taps};
use glip_rt::model::postprocess::{self, PostprocessConfig};
use glip_rt::model::FeatureMap;
use glip_rt::testing::{assert_close, load_golden, testdata};
use glip_rt::weights::load_weights;
use std::collections::HashMap;

fn golden_dir() -> std::path::PathBuf {
    testdata().join("golden")
}

fn model() -> Glip {
    let cfg = GlipConfig::from_yaml_file(&golden_dir().join("12_e2e_tiny_config.yaml")).unwrap();
    let bert = BertConfig::from_file(&testdata().join("tiny_bert_config.json")).unwrap();
    let w = load_weights(&golden_dir().join("12_e2e_tiny_weights.safetensors")).unwrap();
    Glip::load(cfg, bert, &w).unwrap()
}

fn ints(g: &HashMap<String, glip_rt::Tensor>, k: &str) -> Vec<i32> {
    g[k].i32s().unwrap().to_vec()
}

fn floats(g: &HashMap<String, glip_rt::Tensor>, k: &str) -> Vec<f32> {
    g[k].to_f32_vec().unwrap()
}

/// GLIP's post-processing of head outputs for the golden's 320×320 input.
fn final_detections(out: &glip_rt::model::head::HeadOutputs) -> Vec<postprocess::Detections> {
    postprocess::postprocess(
        out,
        &positive_map(),
        &[(320, 320)],
        &PostprocessConfig::default(),
    )
    .unwrap()
}

const POSITIVE_MAP: [(u32, usize); 3] = [(1, 1), (2, 3), (3, 5)];

fn positive_map() -> Vec<(u32, Vec<usize>)> {
    POSITIVE_MAP.iter().map(|&(l, t)| (l, vec![t])).collect()
}

/// ((level, anchor, label), score, box) of one detection.
type Keyed = ((usize, usize, u32), f32, [f32; 4]);

/// (level, anchor, label) keys and the detections sorted by them.
fn sorted(d: &[glip_rt::model::postprocess::Detection]) -> Vec<Keyed> {
    let mut v: Vec<_> = d
        .iter()
        .map(|c| ((c.level, c.anchor, c.label), c.score, c.bbox))
        .collect();
    v.sort_by_key(|a| a.0);
    v
}

fn check_set(
    what: &str,
    got: &[glip_rt::model::postprocess::Detection],
    g: &HashMap<String, glip_rt::Tensor>,
    prefix: &str,
    box_scale: f32,
) {
    let got = sorted(got);
    let lv = ints(g, &format!("{prefix}.level"));
    let an = ints(g, &format!("{prefix}.anchor_index"));
    let lb = ints(g, &format!("{prefix}.labels"));
    let sc = floats(g, &format!("{prefix}.scores"));
    let bx = floats(g, &format!("{prefix}.boxes"));
    assert_eq!(
        got.len(),
        lv.len(),
        "{what}: {} detections, golden has {}",
        got.len(),
        lv.len()
    );
    let (mut worst_box, mut worst_score) = (0.0f32, 0.0f32);
    for (i, (key, score, b)) in got.iter().enumerate() {
        let want = (lv[i] as usize, an[i] as usize, lb[i] as u32);
        assert_eq!(*key, want, "{what}: detection {i} key");
        worst_score = worst_score.max((score - sc[i]).abs());
        for j in 0..4 {
            worst_box = worst_box.max((b[j] - bx[i * 4 + j] * box_scale).abs());
        }
    }
    println!("{what}: {} detections, keys exact, max |box diff| {worst_box:.2e} px, max |score diff| {worst_score:.2e}", got.len());
    assert!(
        worst_box <= 1e-3 * box_scale,
        "{what}: boxes differ by {worst_box}"
    );
    assert!(
        worst_score <= 1e-5,
        "{what}: scores differ by {worst_score}"
    );
}

#[test]
fn tiny_model_matches_golden_end_to_end() {
    let g = load_golden("12_e2e_tiny").unwrap();
    let m = model();
    let ids = ints(&g, "input/input_ids");
    let mask = ints(&g, "input/attention_mask");
    let text = m.encode_text(&ids, &mask).unwrap();
    assert_close(
        "language.hidden",
        &text.hidden.to_f32_vec().unwrap(),
        &floats(&g, "inter/language.hidden"),
        1e-4,
        1e-4,
    );
    let image = FeatureMap::from_tensor(&g["input/image"]).unwrap();
    let mut taps = Taps::enabled();
    let out = m.forward(&image, &text, &mut taps).unwrap();

    // Every intermediate the golden has.
    let mut compared = 0;
    for (name, t) in &taps.tensors {
        let key = format!("inter/{name}");
        let Some(want) = g.get(&key) else { continue };
        assert_eq!(t.shape(), want.shape(), "{key}: shape");
        assert_close(
            &key,
            &t.to_f32_vec().unwrap(),
            &want.to_f32_vec().unwrap(),
            1e-4,
            1e-4,
        );
        compared += 1;
    }
    // backbone.stage2..5, fpn.p3..p7, language.hidden, and per tower layer 5 + 1 (VLFuse),
    // 1 (BertEncoderLayer), 5 (DyConv).
    assert_eq!(
        compared,
        4 + 5 + 1 + 2 * (6 + 1 + 5),
        "intermediates compared"
    );
    for l in 0..5 {
        assert_close(
            &format!("bbox_reg.{l}"),
            &out.bbox_reg[l].data,
            &floats(&g, &format!("output/bbox_reg.{l}")),
            1e-4,
            1e-4,
        );
        assert_close(
            &format!("centerness.{l}"),
            &out.centerness[l].data,
            &floats(&g, &format!("output/centerness.{l}")),
            1e-4,
            1e-4,
        );
        // The golden keeps the first 16 token columns.
        let t = out.num_tokens;
        let lg = &out.dot_product_logits[l];
        let rows = lg.len() / t;
        let first16: Vec<f32> = (0..rows)
            .flat_map(|r| lg[r * t..r * t + 16].to_vec())
            .collect();
        assert_close(
            &format!("dot_product_logits.{l}"),
            &first16,
            &floats(&g, &format!("output/dot_product_logits.{l}")),
            1e-4,
            1e-4,
        );
    }

    let cfg = PostprocessConfig::default();
    let pre = postprocess::pre_nms_candidates(&out, &positive_map(), &[(320, 320)], &cfg).unwrap();
    check_set("pre_nms", &pre[0], &g, "output/pre_nms", 1.0);
    let fin = postprocess::postprocess(&out, &positive_map(), &[(320, 320)], &cfg).unwrap();
    check_set("final", &fin[0].detections, &g, "output/final_sorted", 1.0);
    // GLIP's own output order (ascending concatenation index; within a level the order of
    // CPU topk(sorted=False), which glip_topk_order emulates): row by row.
    let mut glip_cfg = PostprocessConfig::default();
    glip_cfg.atss.glip_topk_order = true;
    let ordered =
        postprocess::postprocess(&out, &positive_map(), &[(320, 320)], &glip_cfg).unwrap();
    let labels = ints(&g, "output/final_glip_order.labels");
    let scores = floats(&g, "output/final_glip_order.scores");
    let boxes = floats(&g, "output/final_glip_order.boxes");
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

#[test]
fn real_tokens_only_gives_the_same_detections() {
    let g = load_golden("12_e2e_tiny").unwrap();
    let m = model();
    let ids = ints(&g, "input/input_ids");
    let mask = ints(&g, "input/attention_mask");
    let real = mask.iter().filter(|&&v| v != 0).count();
    let text = m.encode_text(&ids[..real], &mask[..real]).unwrap();
    let image = FeatureMap::from_tensor(&g["input/image"]).unwrap();
    let out = m.forward(&image, &text, &mut Taps::disabled()).unwrap();
    assert_eq!(out.num_tokens, real);
    let fin = final_detections(&out);
    check_set(
        "final (real tokens only)",
        &fin[0].detections,
        &g,
        "output/final_sorted",
        1.0,
    );
}

#[test]
fn detector_on_the_photo_reproduces_the_golden_detections() {
    let mut det = Detector::builder()
        .config(golden_dir().join("12_e2e_tiny_config.yaml"))
        .weights(golden_dir().join("12_e2e_tiny_weights.safetensors"))
        .bert_config(testdata().join("tiny_bert_config.json"))
        .build()
        .unwrap();
    det.set_prompt("person. cup. rocket.").unwrap();
    let p = det.prompt().unwrap();
    assert_eq!(
        p.model_label_to_tokens(),
        vec![vec![1], vec![3], vec![5]],
        "positive map of the golden caption"
    );
    let g = load_golden("12_e2e_tiny").unwrap();
    // Boxes come back in the photo's pixels: 512 / 320 = 1.6.
    let img =
        glip_rt::preprocess::load_image(&golden_dir().join("12_e2e_tiny_photo.png"), true).unwrap();
    let pre = glip_rt::preprocess::preprocess_image(&img, det.preprocess_config()).unwrap();
    assert_close(
        "preprocessed photo",
        &pre.image.data,
        &floats(&g, "input/image"),
        0.0,
        0.0,
    );
    let (dets, out) = det
        .run(std::slice::from_ref(&pre), &mut Taps::disabled())
        .unwrap();
    let fin = final_detections(&out);
    check_set(
        "final (photo)",
        &fin[0].detections,
        &g,
        "output/final_sorted",
        1.0,
    );
    assert_eq!(dets[0].len(), fin[0].detections.len());
    for (d, c) in dets[0].iter().zip(&fin[0].detections) {
        assert_eq!(d.label, c.label);
        assert_eq!(d.phrase, ["person", "cup", "rocket"][d.label as usize - 1]);
        for j in 0..4 {
            assert!(
                (d.bbox[j] - c.bbox[j] * 1.6).abs() <= 1e-3,
                "box scaled to the photo"
            );
        }
    }
}
