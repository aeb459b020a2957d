//! Golden 04_dyconv: one DyConv layer of the VL-DyHead tower (5 levels, B = 2) through the
//! op interface on every backend present; the channel count comes from the golden's tensors.

use glip_rt::backend::cpu::CpuBackend;
use glip_rt::model::dyconv::{DyConv, LEVELS};
use glip_rt::model::vars::Vars;
use glip_rt::model::WeightMap;
use glip_rt::testing::{activation_on, check_on, load_golden, test_backends};
use glip_rt::weights::glip_ignorable;
use glip_rt::Tensor;
use std::collections::HashMap;

/// The GroupNorm (groups, eps) golden 04 was made with: its `produced_by` names
/// `bn_type=['gn', G]`; nn.GroupNorm's default eps.
fn golden_gn() -> (usize, f32) {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(glip_rt::testing::testdata().join("golden/04_dyconv.json"))
            .unwrap(),
    )
    .unwrap();
    let by = meta["produced_by"].as_str().unwrap();
    let g = by
        .split("'gn', ")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no GroupNorm groups in produced_by: {by}"));
    (g, 1e-5)
}

/// The golden's parameters (keys outside input/, inter/, output/).
fn params(g: &HashMap<String, Tensor>) -> WeightMap {
    WeightMap::new(
        "04_dyconv",
        g.iter()
            .filter(|(k, _)| !k.contains('/'))
            .map(|(k, v)| (k.clone(), v.try_clone().unwrap()))
            .collect(),
    )
}

#[test]
fn golden_04_dyconv_on_every_backend() {
    let g = load_golden("04_dyconv").unwrap();
    let inputs: Vec<Tensor> = (0..LEVELS)
        .map(|l| g[&format!("input/visual.{l}")].to_f32().unwrap())
        .collect();
    let c = inputs[0].shape()[1];
    let wm = params(&g);
    for (name, be) in test_backends() {
        let be = &*be;
        let vars = Vars::from_weights(&wm, be);
        let m = DyConv::new(&vars, c, golden_gn()).unwrap();
        vars.finish(glip_ignorable).unwrap();
        let on: Vec<Tensor> = inputs.iter().map(|x| activation_on(be, x)).collect();
        let tr = m.forward_traced(be, &on).unwrap();
        for l in 0..LEVELS {
            for (key, got) in [
                ("inter/offset_mask", &tr.offset_mask[l]),
                ("inter/mean_fea_before_dyrelu", &tr.pre_dyrelu[l]),
                ("output/visual", &tr.output[l]),
            ] {
                let key = format!("{key}.{l}");
                check_on(&name, &key, be, got, &g[&key]);
            }
        }
    }
}

#[test]
fn dyconv_rejects_wrong_level_count() {
    let g = load_golden("04_dyconv").unwrap();
    let x = g["input/visual.0"].to_f32().unwrap();
    let wm = params(&g);
    let m = DyConv::new(
        &Vars::from_weights(&wm, &CpuBackend),
        x.shape()[1],
        golden_gn(),
    )
    .unwrap();
    assert!(m.forward(&CpuBackend, &[x]).is_err());
}

#[test]
fn dyconv_load_names_missing_key() {
    let g = load_golden("04_dyconv").unwrap();
    let c = g["input/visual.0"].shape()[1];
    let wm = params(&g);
    let vars = Vars::from_weights(&wm, &CpuBackend);
    DyConv::new(&vars.pp("rpn.head.dyhead_tower.2"), c, golden_gn()).unwrap();
    let e = vars.finish(glip_ignorable).err().unwrap();
    assert!(
        e.to_string()
            .contains("rpn.head.dyhead_tower.2.DyConv.0.conv.weight"),
        "{e}"
    );
}

#[test]
fn dyconv_tiny_model() {
    // The tiny e2e model's tower layer (its channel count from its offset conv).
    let g = load_golden("12_e2e_tiny_weights").unwrap();
    let c = g["rpn.head.dyhead_tower.2.offset.weight"].shape()[1];
    let wm = WeightMap::new("12_e2e_tiny_weights", g);
    let cfg = glip_rt::model::config::GlipConfig::from_yaml_file(
        &glip_rt::testing::testdata().join("golden/12_e2e_tiny_config.yaml"),
    )
    .unwrap();
    let m = DyConv::new(
        &Vars::from_weights(&wm, &CpuBackend).pp("rpn.head.dyhead_tower.2"),
        c,
        (cfg.dyhead.gn_groups, cfg.dyhead.gn_eps as f32),
    )
    .unwrap();
    let mut rng = glip_rt::testing::Rng::new(5);
    let sizes = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)];
    let x: Vec<Tensor> = sizes
        .iter()
        .map(|&(h, w)| Tensor::from_f32(&[2, c, h, w], rng.normal_vec(2 * c * h * w, 1.0)).unwrap())
        .collect();
    let y = m.forward(&CpuBackend, &x).unwrap();
    for (l, (a, b)) in x.iter().zip(&y).enumerate() {
        assert_eq!(a.shape(), b.shape(), "level {l}");
        assert!(b.f32s().unwrap().iter().all(|v| v.is_finite()), "level {l}");
    }
}
