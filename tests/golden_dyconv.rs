//! Golden 04_dyconv: one DyConv layer of the VL-DyHead tower (5 levels, B = 2) on the CPU.

use glip_rt::model::dyconv::DyConv;
use glip_rt::model::{FeatureMap, WeightMap};
use glip_rt::testing::{assert_close, load_golden};

#[test]
fn golden_04_dyconv() {
    let g = load_golden("04_dyconv").unwrap();
    let inputs: Vec<FeatureMap> = (0..5)
        .map(|l| FeatureMap::from_tensor(&g[&format!("input/visual.{l}")]).unwrap())
        .collect();
    let wm = WeightMap::new("04_dyconv", g);
    let m = DyConv::load(&wm, "", 256).unwrap();
    let tr = m.forward_traced(&inputs).unwrap();
    for l in 0..5 {
        let want = |k: &str| wm.tensors[&format!("{k}.{l}")].to_f32_vec().unwrap();
        assert_close(
            &format!("inter/offset_mask.{l}"),
            &tr.offset_mask[l].data,
            &want("inter/offset_mask"),
            1e-4,
            1e-4,
        );
        assert_close(
            &format!("inter/mean_fea_before_dyrelu.{l}"),
            &tr.pre_dyrelu[l].data,
            &want("inter/mean_fea_before_dyrelu"),
            1e-4,
            1e-4,
        );
        assert_close(
            &format!("output/visual.{l}"),
            &tr.output[l].data,
            &want("output/visual"),
            1e-4,
            1e-4,
        );
    }
}

#[test]
fn dyconv_rejects_wrong_level_count() {
    let g = load_golden("04_dyconv").unwrap();
    let x = FeatureMap::from_tensor(&g["input/visual.0"]).unwrap();
    let m = DyConv::load(&WeightMap::new("04_dyconv", g), "", 256).unwrap();
    assert!(m.forward(&[x]).is_err());
}

#[test]
fn dyconv_load_names_missing_key() {
    let g = load_golden("04_dyconv").unwrap();
    let e = DyConv::load(
        &WeightMap::new("04_dyconv", g),
        "rpn.head.dyhead_tower.2.",
        256,
    )
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("rpn.head.dyhead_tower.2.DyConv.0.conv.weight"),
        "{e}"
    );
}

#[test]
fn dyconv_tiny_model_32_channels() {
    // The tiny e2e model's tower layer (32 channels, GN 16 groups, DyReLU squeeze 8).
    let g = load_golden("12_e2e_tiny_weights").unwrap();
    let m = DyConv::load(
        &WeightMap::new("12_e2e_tiny_weights", g),
        "rpn.head.dyhead_tower.2.",
        32,
    )
    .unwrap();
    let mut rng = glip_rt::testing::Rng::new(5);
    let sizes = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)];
    let x: Vec<FeatureMap> = sizes
        .iter()
        .map(|&(h, w)| FeatureMap::new(2, 32, h, w, rng.normal_vec(2 * 32 * h * w, 1.0)).unwrap())
        .collect();
    let y = m.forward(&x).unwrap();
    for (l, (a, b)) in x.iter().zip(&y).enumerate() {
        assert_eq!((a.n, a.c, a.h, a.w), (b.n, b.c, b.h, b.w), "level {l}");
        assert!(b.data.iter().all(|v| v.is_finite()), "level {l}");
    }
}
