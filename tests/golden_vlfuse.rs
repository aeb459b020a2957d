//! VLFuse (CPU) against golden 06_vlfuse, and the exact-truncation property (spec §4).

use glip_rt::model::vlfuse::VLFuse;
use glip_rt::model::{FeatureMap, WeightMap};
use glip_rt::testing::{assert_close, load_golden, max_abs_diff};
use std::collections::HashMap;

/// (module, visual levels, lang hidden, mask, golden tensors)
type Setup = (
    VLFuse,
    Vec<FeatureMap>,
    Vec<f32>,
    Vec<i32>,
    HashMap<String, glip_rt::Tensor>,
);

fn setup() -> Setup {
    let g = load_golden("06_vlfuse").unwrap();
    let w = WeightMap::new(
        "06_vlfuse",
        g.iter()
            .map(|(k, v)| (k.clone(), v.try_clone().unwrap()))
            .collect(),
    );
    let m = VLFuse::load(&w, "").unwrap();
    assert_eq!(
        (m.v_dim, m.l_dim, m.embed_dim, m.heads),
        (256, 768, 2048, 8)
    );
    let visual: Vec<FeatureMap> = (0..5)
        .map(|l| FeatureMap::from_tensor(&g[&format!("input/visual.{l}")]).unwrap())
        .collect();
    let lang = g["input/lang_hidden"].to_f32_vec().unwrap();
    let mask = g["input/lang_masks"].i32s().unwrap().to_vec();
    (m, visual, lang, mask, g)
}

#[test]
fn vlfuse_matches_golden() {
    let (m, visual, lang, mask, g) = setup();
    let t = g["input/lang_masks"].shape()[1];
    let (out_v, out_l) = m.forward(&visual, &lang, &mask, t).unwrap();
    for (l, f) in out_v.iter().enumerate() {
        let want = &g[&format!("output/visual.{l}")];
        assert_eq!(&[f.n, f.c, f.h, f.w][..], want.shape());
        assert_close(
            &format!("visual.{l}"),
            &f.data,
            &want.to_f32_vec().unwrap(),
            1e-4,
            1e-4,
        );
    }
    assert_close(
        "lang_hidden",
        &out_l,
        &g["output/lang_hidden"].to_f32_vec().unwrap(),
        1e-4,
        1e-4,
    );
}

/// Running with only the real tokens of each prompt gives the padded run's visual output
/// and real language rows (no op mixes pad tokens into real positions).
#[test]
fn vlfuse_exact_truncation() {
    let (m, visual, lang, mask, g) = setup();
    let t = g["input/lang_masks"].shape()[1];
    let b = visual[0].n;
    let (full_v, full_l) = m.forward(&visual, &lang, &mask, t).unwrap();
    for bi in 0..b {
        let mrow = &mask[bi * t..(bi + 1) * t];
        let real: Vec<usize> = (0..t).filter(|&j| mrow[j] != 0).collect();
        assert!(
            real.len() < t,
            "prompt {bi} has no padding: the test would prove nothing"
        );
        let tr = real.len();
        let one: Vec<FeatureMap> = visual
            .iter()
            .map(|f| FeatureMap::new(1, f.c, f.h, f.w, f.image(bi).to_vec()).unwrap())
            .collect();
        let l_dim = m.l_dim;
        let lang_r: Vec<f32> = real
            .iter()
            .flat_map(|&j| lang[(bi * t + j) * l_dim..(bi * t + j + 1) * l_dim].to_vec())
            .collect();
        let (tv, tl) = m.forward(&one, &lang_r, &vec![1; tr], tr).unwrap();
        for (l, (a, f)) in tv.iter().zip(&full_v).enumerate() {
            let d = max_abs_diff(&a.data, f.image(bi));
            println!("prompt {bi} ({tr} real tokens) visual.{l}: max |diff| {d:.2e}");
            assert!(d <= 1e-5, "visual.{l} differs by {d}");
        }
        let want_l: Vec<f32> = real
            .iter()
            .flat_map(|&j| full_l[(bi * t + j) * l_dim..(bi * t + j + 1) * l_dim].to_vec())
            .collect();
        let d = max_abs_diff(&tl, &want_l);
        println!("prompt {bi}: lang real rows max |diff| {d:.2e}");
        assert!(d <= 1e-5, "lang rows differ by {d}");
    }
}
