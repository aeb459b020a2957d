//! FPN (P3..P7) vs golden 11 and the tiny end-to-end model's FPN taps.

use glip_rt::model::fpn::{upsample_nearest, Fpn};
use glip_rt::model::{FeatureMap, WeightMap};
use glip_rt::testing::{assert_close, load_golden};
use std::collections::HashMap;

#[test]
fn fpn_matches_golden() {
    let g = load_golden("11_fpn").unwrap();
    // glip_t_prefix: backbone.fpn.
    let mut w = HashMap::new();
    for (k, t) in &g {
        if !k.contains('/') {
            w.insert(format!("backbone.fpn.{k}"), t.try_clone().unwrap());
        }
    }
    let w = WeightMap::new("11_fpn", w);
    let fpn = Fpn::load(&w, "backbone.fpn.", [192, 384, 768], 128).unwrap();
    let c = |k: &str| FeatureMap::from_tensor(&g[k]).unwrap();
    let outs = fpn
        .forward(&c("input/c3"), &c("input/c4"), &c("input/c5"))
        .unwrap();
    for (i, o) in outs.iter().enumerate() {
        let want = c(&format!("output/p{}", i + 3));
        assert_eq!(
            (o.n, o.c, o.h, o.w),
            (want.n, want.c, want.h, want.w),
            "p{}",
            i + 3
        );
        assert_close(&format!("p{}", i + 3), &o.data, &want.data, 1e-4, 1e-4);
    }
}

#[test]
fn tiny_fpn_matches_e2e_taps() {
    let w = WeightMap::new(
        "12_e2e_tiny_weights",
        load_golden("12_e2e_tiny_weights").unwrap(),
    );
    let g = load_golden("12_e2e_tiny").unwrap();
    let c = |k: &str| FeatureMap::from_tensor(&g[k]).unwrap();
    let fpn = Fpn::load(&w, "backbone.fpn.", [32, 64, 128], 32).unwrap();
    let outs = fpn
        .forward(
            &c("inter/backbone.stage3"),
            &c("inter/backbone.stage4"),
            &c("inter/backbone.stage5"),
        )
        .unwrap();
    for (i, o) in outs.iter().enumerate() {
        let want = c(&format!("inter/fpn.p{}", i + 3));
        assert_close(&format!("tiny p{}", i + 3), &o.data, &want.data, 1e-4, 1e-4);
    }
}

#[test]
fn nearest_general_sizes() {
    // 3 -> 7 along H, 2 -> 5 along W: src = floor(dst * in / out).
    let x = FeatureMap::new(1, 1, 3, 2, vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0]).unwrap();
    let y = upsample_nearest(&x, 7, 5);
    let rows = [0, 0, 0, 1, 1, 2, 2];
    let cols = [0, 0, 0, 1, 1];
    for (oy, &iy) in rows.iter().enumerate() {
        for (ox, &ix) in cols.iter().enumerate() {
            assert_eq!(y.data[oy * 5 + ox], x.data[iy * 2 + ix]);
        }
    }
}
