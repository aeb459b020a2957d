//! VLFuse (through the op interface on every backend present) against golden 06_vlfuse, and the
//! exact-truncation property (spec §4). Sizes come from the golden's own tensors.

use glip_rt::backend::cpu::CpuBackend;
use glip_rt::backend::Backend;
use glip_rt::model::vars::Vars;
use glip_rt::model::vlfuse::VLFuse;
use glip_rt::model::WeightMap;
use glip_rt::testing::{activation_on, check_on, load_golden, max_abs_diff, test_backends};
use glip_rt::weights::glip_ignorable;
use glip_rt::Tensor;
use std::collections::HashMap;

/// (module, visual levels, lang hidden, mask, golden tensors)
type Setup = (VLFuse, Vec<Tensor>, Tensor, Tensor, HashMap<String, Tensor>);

fn setup() -> Setup {
    setup_on(&CpuBackend)
}

/// The golden's module on `be` (inputs stay on the host).
fn setup_on(be: &dyn Backend) -> Setup {
    let g = load_golden("06_vlfuse").unwrap();
    // The module's parameters are the golden's keys outside input/ and output/.
    let w = WeightMap::new(
        "06_vlfuse",
        g.iter()
            .filter(|(k, _)| !k.starts_with("input/") && !k.starts_with("output/"))
            .map(|(k, v)| (k.clone(), v.try_clone().unwrap()))
            .collect(),
    );
    let v_dim = g["input/visual.0"].shape()[1];
    let l_dim = g["input/lang_hidden"].shape()[2];
    let embed = g["b_attn.attn.v_proj.weight"].shape()[0];
    let vars = Vars::from_weights(&w, be);
    let m = VLFuse::new(&vars, v_dim, l_dim, embed, 0.0).unwrap();
    // The walk asked for exactly the golden's parameters.
    vars.finish(glip_ignorable).unwrap();
    let levels = (0..)
        .map(|l| format!("input/visual.{l}"))
        .take_while(|k| g.contains_key(k))
        .map(|k| g[&k].to_f32().unwrap())
        .collect();
    let lang = g["input/lang_hidden"].to_f32().unwrap();
    let mask = g["input/lang_masks"].try_clone().unwrap();
    (m, levels, lang, mask, g)
}

#[test]
fn vlfuse_matches_golden_on_every_backend() {
    for (name, be) in test_backends() {
        let be = &*be;
        let (m, visual, lang, mask, g) = setup_on(be);
        let visual: Vec<Tensor> = visual.iter().map(|x| activation_on(be, x)).collect();
        let (lang, mask) = (activation_on(be, &lang), be.upload(&mask).unwrap());
        let (out_v, out_l) = m.forward(be, &visual, &lang, &mask).unwrap();
        assert_eq!(out_v.len(), visual.len());
        for (l, f) in out_v.iter().enumerate() {
            let key = format!("output/visual.{l}");
            check_on(&name, &key, be, f, &g[&key]);
        }
        check_on(
            &name,
            "output/lang_hidden",
            be,
            &out_l,
            &g["output/lang_hidden"],
        );
    }
}

/// Running with only the real tokens of each prompt gives the padded run's visual output
/// and real language rows (no op mixes pad tokens into real positions).
#[test]
fn vlfuse_exact_truncation() {
    let (m, visual, lang, mask, _) = setup();
    let [b, t] = mask.dims::<2>("mask").unwrap();
    let l_dim = m.l_dim;
    let (full_v, full_l) = m.forward(&CpuBackend, &visual, &lang, &mask).unwrap();
    let (lang, mask, full_l) = (
        lang.f32s().unwrap(),
        mask.i32s().unwrap(),
        full_l.f32s().unwrap(),
    );
    for bi in 0..b {
        let mrow = &mask[bi * t..(bi + 1) * t];
        let real: Vec<usize> = (0..t).filter(|&j| mrow[j] != 0).collect();
        assert!(
            real.len() < t,
            "prompt {bi} has no padding: the test would prove nothing"
        );
        let tr = real.len();
        let image = |f: &Tensor| -> Vec<f32> {
            let s = f.numel() / b;
            f.f32s().unwrap()[bi * s..(bi + 1) * s].to_vec()
        };
        let one: Vec<Tensor> = visual
            .iter()
            .map(|f| {
                let [_, c, h, w] = f.dims::<4>("level").unwrap();
                Tensor::from_f32(&[1, c, h, w], image(f)).unwrap()
            })
            .collect();
        let lang_r: Vec<f32> = real
            .iter()
            .flat_map(|&j| lang[(bi * t + j) * l_dim..(bi * t + j + 1) * l_dim].to_vec())
            .collect();
        let (tv, tl) = m
            .forward(
                &CpuBackend,
                &one,
                &Tensor::from_f32(&[1, tr, l_dim], lang_r).unwrap(),
                &Tensor::from_i32(&[1, tr], vec![1; tr]).unwrap(),
            )
            .unwrap();
        for (l, (a, f)) in tv.iter().zip(&full_v).enumerate() {
            let d = max_abs_diff(a.f32s().unwrap(), &image(f));
            println!("prompt {bi} ({tr} real tokens) visual.{l}: max |diff| {d:.2e}");
            assert!(d <= 1e-5, "visual.{l} differs by {d}");
        }
        let want_l: Vec<f32> = real
            .iter()
            .flat_map(|&j| full_l[(bi * t + j) * l_dim..(bi * t + j + 1) * l_dim].to_vec())
            .collect();
        let d = max_abs_diff(tl.f32s().unwrap(), &want_l);
        println!("prompt {bi}: lang real rows max |diff| {d:.2e}");
        assert!(d <= 1e-5, "lang rows differ by {d}");
    }
}
