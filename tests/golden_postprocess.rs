//! ATSS post-processing against golden 09_atss_postprocess: anchors, decode, pre-NMS
//! candidates and final detections keyed by (level, anchor_index, label).

use glip_rt::backend::cpu::nms::{anchors, decode, Level};
use glip_rt::backend::cpu::CpuBackend;
use glip_rt::model::head::HeadOutputs;
use glip_rt::model::postprocess::{to_original_image, Detection, Detections, PostprocessConfig};
use glip_rt::tensor::Tensor;
use glip_rt::testing::{
    assert_close, golden_head_outputs, golden_positive_map, load_golden, pre_nms_candidates,
    testdata,
};
use std::collections::HashMap;

fn json() -> serde_json::Value {
    let p = testdata().join("golden/09_atss_postprocess.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn positive_map(j: &serde_json::Value) -> Vec<(u32, Vec<usize>)> {
    golden_positive_map(j).unwrap()
}

/// GLIP-T's 80 score columns.
const NUM_LABELS: usize = 80;

fn inputs(g: &HashMap<String, Tensor>) -> HeadOutputs {
    golden_head_outputs(g, &CpuBackend, NUM_LABELS).unwrap()
}

/// The post-processing op on the CPU backend.
fn postprocess(
    out: &HeadOutputs,
    map: &[(u32, Vec<usize>)],
    sizes: &[(usize, usize)],
    cfg: &PostprocessConfig,
) -> glip_rt::Result<Vec<Detections>> {
    glip_rt::model::postprocess::postprocess(&CpuBackend, out, map, sizes, cfg)
}

fn ints(g: &HashMap<String, Tensor>, k: &str) -> Vec<i64> {
    g[k].i32s().unwrap().iter().map(|&v| v as i64).collect()
}

/// Compare detections with the golden's (level, anchor_index, label)-sorted tensors.
fn compare(what: &str, got: &[Detection], g: &HashMap<String, Tensor>, prefix: &str) {
    let mut got = got.to_vec();
    got.sort_by_key(|d| (d.level, d.anchor, d.label));
    let keys: Vec<(i64, i64, i64)> = got
        .iter()
        .map(|d| (d.level as i64, d.anchor as i64, d.label as i64))
        .collect();
    let lv = ints(g, &format!("{prefix}.level"));
    let an = ints(g, &format!("{prefix}.anchor_index"));
    let lb = ints(g, &format!("{prefix}.labels"));
    let want: Vec<(i64, i64, i64)> = (0..lv.len()).map(|i| (lv[i], an[i], lb[i])).collect();
    assert_eq!(keys.len(), want.len(), "{what}: count");
    assert_eq!(keys, want, "{what}: (level, anchor, label) keys");
    let scores: Vec<f32> = got.iter().map(|d| d.score).collect();
    assert_close(
        &format!("{what} scores"),
        &scores,
        &g[&format!("{prefix}.scores")].to_f32_vec().unwrap(),
        1e-5,
        0.0,
    );
    let boxes: Vec<f32> = got.iter().flat_map(|d| d.bbox).collect();
    assert_close(
        &format!("{what} boxes"),
        &boxes,
        &g[&format!("{prefix}.boxes")].to_f32_vec().unwrap(),
        1e-3,
        0.0,
    );
    println!("{what}: {} keys equal", keys.len());
}

#[test]
fn anchors_and_decode_match_golden_09() {
    let g = load_golden("09_atss_postprocess").unwrap();
    let j = json();
    let sizes = j["config"]["feature_sizes_hw"].as_array().unwrap();
    for (l, s) in sizes.iter().enumerate() {
        let level = Level {
            h: s[0].as_u64().unwrap() as usize,
            w: s[1].as_u64().unwrap() as usize,
            stride: 8 << l,
        };
        let a = anchors(&level);
        let flat: Vec<f32> = a.iter().flatten().copied().collect();
        assert_eq!(
            flat,
            g[&format!("output/anchors.{l}")].to_f32_vec().unwrap(),
            "anchors level {l}"
        );
        let reg =
            glip_rt::model::FeatureMap::from_tensor(&g[&format!("input/bbox_reg.{l}")]).unwrap();
        let hw = level.hw();
        let dec: Vec<f32> = (0..hw)
            .flat_map(|p| {
                decode(
                    [
                        reg.data[p],
                        reg.data[hw + p],
                        reg.data[2 * hw + p],
                        reg.data[3 * hw + p],
                    ],
                    a[p],
                )
            })
            .collect();
        assert_close(
            &format!("decoded level {l}"),
            &dec,
            &g[&format!("output/decoded_boxes.{l}")]
                .to_f32_vec()
                .unwrap(),
            1e-3,
            0.0,
        );
    }
}

#[test]
fn postprocess_matches_golden_09() {
    let g = load_golden("09_atss_postprocess").unwrap();
    let j = json();
    let map = positive_map(&j);
    let out = inputs(&g);
    let cfg = PostprocessConfig::default();
    let hw = (120usize, 150usize);
    assert_eq!(j["config"]["image_size_hw"], serde_json::json!([120, 150]));

    let pre = pre_nms_candidates(&CpuBackend, &out, &map, &[hw], &cfg).unwrap();
    let mut per_level = [0usize; 5];
    pre[0].iter().for_each(|d| per_level[d.level] += 1);
    // candidates_per_level in the margins counts before the 1000 cut.
    assert_eq!(per_level, [1000, 367, 141, 48, 17]);
    compare("pre_nms", &pre[0], &g, "output/pre_nms");

    let fin = postprocess(&out, &map, &[hw], &cfg).unwrap();
    assert_eq!(fin[0].image_hw, hw);
    compare("final", &fin[0].detections, &g, "output/final_sorted");

    // GLIP's own order: ascending concatenation index, so levels never decrease; within a
    // level the order comes from topk(sorted=False). Match each GLIP row to ours.
    let gb = g["output/final_glip_order.boxes"].to_f32_vec().unwrap();
    let gs = g["output/final_glip_order.scores"].to_f32_vec().unwrap();
    let gl = ints(&g, "output/final_glip_order.labels");
    assert_eq!(gs.len(), fin[0].detections.len());
    let mut used = vec![false; gs.len()];
    let mut last_level = 0;
    let mut same_position = 0;
    for i in 0..gs.len() {
        let k = fin[0]
            .detections
            .iter()
            .enumerate()
            .position(|(k, d)| {
                !used[k]
                    && d.label as i64 == gl[i]
                    && (d.score - gs[i]).abs() <= 1e-5
                    && (0..4).all(|c| (d.bbox[c] - gb[4 * i + c]).abs() <= 1e-3)
            })
            .unwrap_or_else(|| panic!("GLIP-order row {i} has no match"));
        used[k] = true;
        same_position += (k == i) as usize;
        let level = fin[0].detections[k].level;
        assert!(
            level >= last_level,
            "GLIP-order row {i}: level {level} after {last_level}"
        );
        last_level = level;
    }
    println!("GLIP order: all {} rows matched, levels non-decreasing, {same_position} at the same position", gs.len());

    let orig = to_original_image(&fin[0], (240, 300));
    assert_eq!(
        orig.detections[0].bbox[0],
        fin[0].detections[0].bbox[0] * 2.0
    );
}

#[test]
fn labels_beyond_the_score_columns_are_an_error() {
    let g = load_golden("09_atss_postprocess").unwrap();
    let out = inputs(&g);
    let err = postprocess(
        &out,
        &[(81, vec![1])],
        &[(120, 150)],
        &PostprocessConfig::default(),
    );
    assert!(err.is_err());
}

#[test]
fn glip_topk_order_reproduces_final_glip_order() {
    let g = load_golden("09_atss_postprocess").unwrap();
    let map = positive_map(&json());
    let out = inputs(&g);
    let mut cfg = PostprocessConfig::default();
    cfg.atss.glip_topk_order = true;
    let fin = postprocess(&out, &map, &[(120, 150)], &cfg).unwrap();
    let d = &fin[0].detections;
    let gb = g["output/final_glip_order.boxes"].to_f32_vec().unwrap();
    let gs = g["output/final_glip_order.scores"].to_f32_vec().unwrap();
    let gl = ints(&g, "output/final_glip_order.labels");
    assert_eq!(d.len(), gs.len());
    let labels: Vec<i64> = d.iter().map(|x| x.label as i64).collect();
    assert_eq!(labels, gl, "labels in GLIP's order");
    let scores: Vec<f32> = d.iter().map(|x| x.score).collect();
    assert_close("GLIP-order scores", &scores, &gs, 1e-5, 0.0);
    let boxes: Vec<f32> = d.iter().flat_map(|x| x.bbox).collect();
    assert_close("GLIP-order boxes", &boxes, &gb, 1e-3, 0.0);
    // The same set as the row-major order.
    let plain = postprocess(&out, &map, &[(120, 150)], &PostprocessConfig::default()).unwrap();
    let key = |v: &[Detection]| {
        let mut k: Vec<_> = v.iter().map(|x| (x.level, x.anchor, x.label)).collect();
        k.sort();
        k
    };
    assert_eq!(key(d), key(&plain[0].detections));
}

/// Golden 09's head outputs through the op interface on every backend (on a device: the
/// phrase_scores and atss_postprocess kernels, only the final rows read back): the kept sets
/// equal the CPU backend's exactly, scores and boxes within f32 rounding.
#[test]
fn golden_09_through_the_op_interface_on_every_backend() {
    use glip_rt::backend::Backend;
    use glip_rt::model::postprocess::postprocess;
    let g = load_golden("09_atss_postprocess").unwrap();
    let map = golden_positive_map(&json()).unwrap();
    let on = |be: &dyn Backend| golden_head_outputs(&g, be, 80).unwrap();
    let cfg = PostprocessConfig::default();
    let sizes = [(120, 150)];
    let run = |be: &dyn Backend| -> Vec<Vec<Detection>> {
        postprocess(be, &on(be), &map, &sizes, &cfg)
            .unwrap()
            .into_iter()
            .map(|d| d.detections)
            .collect()
    };
    let want = run(&CpuBackend);
    assert_eq!(want[0].len(), 100);
    for (name, be) in glip_rt::testing::test_backends() {
        let got = run(&*be);
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, w) in got.iter().zip(&want) {
            let key = |d: &Detection| (d.level, d.anchor, d.label);
            assert_eq!(
                g.iter().map(key).collect::<Vec<_>>(),
                w.iter().map(key).collect::<Vec<_>>(),
                "{name}: kept (level, anchor, label) in order"
            );
            for (x, y) in g.iter().zip(w) {
                assert!((x.score - y.score).abs() <= 1e-5, "{name}: score");
                for k in 0..4 {
                    assert!((x.bbox[k] - y.bbox[k]).abs() <= 1e-3, "{name}: box");
                }
            }
        }
    }
}
