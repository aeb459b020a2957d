//! Golden 03_modulated_deform_conv on the CPU twin: stride 1, stride 2 and GLIP's
//! coarser-level branch that reads the current level's offset buffer (weights from 04_dyconv).

use glip_rt::backend::cpu::deform_conv::{modulated_deform_conv3x3, DeformConvShape};
use glip_rt::backend::cpu::nn::{conv2d, sigmoid};
use glip_rt::tensor::Tensor;
use glip_rt::testing::{assert_close, load_golden};
use std::collections::HashMap;

struct Case {
    g: HashMap<String, Tensor>,
    w: HashMap<String, Tensor>,
    off: Vec<f32>,
    mask: Vec<f32>,
    lo_hw: (usize, usize),
}

fn setup() -> Case {
    let g = load_golden("03_modulated_deform_conv").unwrap();
    let w = load_golden("04_dyconv").unwrap();
    let x = &g["input/x_lo"];
    let [n, c, h, wd] = x.dims::<4>("x_lo").unwrap();
    let (om, oh, ow) = conv2d(
        &x.to_f32_vec().unwrap(),
        n,
        c,
        h,
        wd,
        &w["offset.weight"].to_f32_vec().unwrap(),
        27,
        3,
        Some(&w["offset.bias"].to_f32_vec().unwrap()),
        1,
        1,
    )
    .unwrap();
    assert_eq!((oh, ow), (h, wd));
    assert_close(
        "03 inter/offset_mask",
        &om,
        &g["inter/offset_mask"].to_f32_vec().unwrap(),
        1e-4,
        1e-4,
    );
    let hw = h * wd;
    let mut off = Vec::new();
    let mut mask = Vec::new();
    for b in 0..n {
        let img = &om[b * 27 * hw..(b + 1) * 27 * hw];
        off.extend_from_slice(&img[..18 * hw]);
        mask.extend(img[18 * hw..].iter().map(|&v| sigmoid(v)));
    }
    Case {
        g,
        w,
        off,
        mask,
        lo_hw: (h, wd),
    }
}

fn run(cs: &Case, input: &str, conv: &str, stride: usize, output: &str) {
    let x = &cs.g[input];
    let [n, c, h, w] = x.dims::<4>("golden input").unwrap();
    let wt = &cs.w[&format!("DyConv.{conv}.conv.weight")];
    let cout = wt.shape()[0];
    let s =
        DeformConvShape::new(n, c, cout, h, w, stride).with_offset_source(cs.lo_hw.0, cs.lo_hw.1);
    let y = modulated_deform_conv3x3(
        &s,
        &x.to_f32_vec().unwrap(),
        &cs.off,
        &cs.mask,
        &wt.to_f32_vec().unwrap(),
        Some(
            &cs.w[&format!("DyConv.{conv}.conv.bias")]
                .to_f32_vec()
                .unwrap(),
        ),
    )
    .unwrap();
    let want = &cs.g[output];
    assert_eq!(want.shape(), &[n, cout, s.out_h(), s.out_w()]);
    assert_close(output, &y, &want.to_f32_vec().unwrap(), 1e-4, 1e-4);
}

#[test]
fn golden_03_stride1() {
    run(&setup(), "input/x_lo", "1", 1, "output/stride1");
}

#[test]
fn golden_03_stride2() {
    run(&setup(), "input/x_hi", "2", 2, "output/stride2");
}

#[test]
fn golden_03_stride1_next_level_quirk() {
    run(
        &setup(),
        "input/x_next",
        "0",
        1,
        "output/stride1_next_level",
    );
}
