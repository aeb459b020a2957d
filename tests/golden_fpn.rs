//! FPN (P3..P7, through the op interface on every backend present) vs golden 11 and the tiny end-to-end
//! model's FPN taps; channel counts come from the goldens' tensors.

use glip_rt::backend::cpu::CpuBackend;
use glip_rt::backend::Backend;
use glip_rt::model::fpn::Fpn;
use glip_rt::model::vars::Vars;
use glip_rt::model::WeightMap;
use glip_rt::testing::{activation_on, check_on, load_golden, test_backends};
use glip_rt::Tensor;
use std::collections::HashMap;

fn channels(t: &Tensor) -> usize {
    t.shape()[1]
}

fn check(
    backend: &str,
    be: &dyn Backend,
    what: &str,
    outs: &[Tensor; 5],
    want: impl Fn(usize) -> Tensor,
) {
    for (i, o) in outs.iter().enumerate() {
        check_on(backend, &format!("{what} p{}", i + 3), be, o, &want(i));
    }
}

#[test]
fn fpn_matches_golden_on_every_backend() {
    let g = load_golden("11_fpn").unwrap();
    // glip_t_prefix: backbone.fpn.
    let mut w = HashMap::new();
    for (k, t) in &g {
        if !k.contains('/') {
            w.insert(format!("backbone.fpn.{k}"), t.try_clone().unwrap());
        }
    }
    let w = WeightMap::new("11_fpn", w);
    let c = |k: &str| g[k].to_f32().unwrap();
    let (c3, c4, c5) = (c("input/c3"), c("input/c4"), c("input/c5"));
    for (name, be) in test_backends() {
        let be = &*be;
        let vars = Vars::from_weights(&w, be);
        let fpn = Fpn::new(
            &vars.pp("backbone.fpn"),
            [channels(&c3), channels(&c4), channels(&c5)],
            channels(&g["output/p3"]),
        )
        .unwrap();
        vars.finish(glip_rt::weights::glip_ignorable).unwrap();
        let on = |x: &Tensor| activation_on(be, x);
        let outs = fpn.forward(be, &on(&c3), &on(&c4), &on(&c5)).unwrap();
        check(&name, be, "golden 11", &outs, |i| {
            c(&format!("output/p{}", i + 3))
        });
    }
}

#[test]
fn tiny_fpn_matches_e2e_taps_on_every_backend() {
    let w = WeightMap::new(
        "12_e2e_tiny_weights",
        load_golden("12_e2e_tiny_weights").unwrap(),
    );
    let g = load_golden("12_e2e_tiny").unwrap();
    let c = |k: &str| g[k].to_f32().unwrap();
    let (c3, c4, c5) = (
        c("inter/backbone.stage3"),
        c("inter/backbone.stage4"),
        c("inter/backbone.stage5"),
    );
    for (name, be) in test_backends() {
        let be = &*be;
        let fpn = Fpn::new(
            &Vars::from_weights(&w, be).pp("backbone.fpn"),
            [channels(&c3), channels(&c4), channels(&c5)],
            channels(&g["inter/fpn.p3"]),
        )
        .unwrap();
        let on = |x: &Tensor| activation_on(be, x);
        let outs = fpn.forward(be, &on(&c3), &on(&c4), &on(&c5)).unwrap();
        check(&name, be, "tiny", &outs, |i| {
            c(&format!("inter/fpn.p{}", i + 3))
        });
    }
}

#[test]
fn nearest_general_sizes() {
    // 3 -> 7 along H, 2 -> 5 along W: src = floor(dst * in / out).
    let x = Tensor::from_f32(&[1, 1, 3, 2], vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0]).unwrap();
    let y = CpuBackend.upsample_nearest(&x, 7, 5).unwrap();
    let (x, y) = (x.f32s().unwrap(), y.f32s().unwrap());
    let rows = [0, 0, 0, 1, 1, 2, 2];
    let cols = [0, 0, 0, 1, 1];
    for (oy, &iy) in rows.iter().enumerate() {
        for (ox, &ix) in cols.iter().enumerate() {
            assert_eq!(y[oy * 5 + ox], x[iy * 2 + ix]);
        }
    }
}
