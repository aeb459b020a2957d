//! The head's prediction layers against golden 07_head (GLIP's VLDyHead with an empty tower).

use glip_rt::backend::cpu::CpuBackend;
use glip_rt::model::head::Head;
use glip_rt::model::vars::Vars;
use glip_rt::model::WeightMap;
use glip_rt::testing::{activation_on, assert_close, check_on, load_golden, test_backends};
use glip_rt::Tensor;

/// The golden's parameters (keys outside input/, inter/, output/) under GLIP's `rpn.head.`.
fn head_weights(g: &std::collections::HashMap<String, Tensor>) -> WeightMap {
    WeightMap::new(
        "07_head",
        g.iter()
            .filter(|(k, _)| !k.contains('/'))
            .map(|(k, v)| (format!("rpn.head.{k}"), v.try_clone().unwrap()))
            .collect(),
    )
}

#[test]
fn head_matches_golden_07() {
    let g = load_golden("07_head").unwrap();
    let w = head_weights(&g);
    // Sizes from the golden's own tensors.
    let levels = (0..)
        .take_while(|l| g.contains_key(&format!("input/visual.{l}")))
        .count();
    let hidden = g["input/lang_hidden"].to_f32().unwrap();
    let channels = g["input/visual.0"].shape()[1];
    let lang_dim = hidden.shape()[2];
    let num_labels = g["cls_logits.weight"].shape()[0];
    let vars = Vars::from_weights(&w, &CpuBackend);
    let head = Head::new(&vars.pp("rpn.head"), channels, lang_dim, num_labels, levels).unwrap();
    vars.finish(glip_rt::weights::glip_ignorable).unwrap();
    let visual: Vec<Tensor> = (0..levels)
        .map(|l| g[&format!("input/visual.{l}")].to_f32().unwrap())
        .collect();
    let out = head.forward(&CpuBackend, &visual, &hidden).unwrap();
    let want = g["inter/dot_product_proj_tokens"].to_f32_vec().unwrap();
    assert_close(
        "proj_tokens",
        out.proj_tokens.f32s().unwrap(),
        &want,
        1e-4,
        1e-4,
    );
    let mut clamped = 0;
    for l in 0..levels {
        let want = g[&format!("output/bbox_reg.{l}")].to_f32_vec().unwrap();
        assert_close(
            &format!("bbox_reg.{l}"),
            out.bbox_reg[l].f32s().unwrap(),
            &want,
            1e-4,
            1e-4,
        );
        let want = g[&format!("output/centerness.{l}")].to_f32_vec().unwrap();
        assert_close(
            &format!("centerness.{l}"),
            out.centerness[l].f32s().unwrap(),
            &want,
            1e-4,
            1e-4,
        );
        let want = g[&format!("output/dot_product_logits.{l}")]
            .to_f32_vec()
            .unwrap();
        assert_close(
            &format!("dot_product_logits.{l}"),
            out.dot_product_logits[l].f32s().unwrap(),
            &want,
            1e-4,
            1e-4,
        );
        clamped += out.dot_product_logits[l]
            .f32s()
            .unwrap()
            .iter()
            .filter(|v| v.abs() == 50_000.0)
            .count();
    }
    // input/visual.4 is scaled by 1e6 so that its logits hit the ±50000 clamp.
    assert!(clamped > 0, "no logit reached the clamp");
    println!("clamped logits: {clamped}");
}

/// The head on a CUDA device (the emulated one in CI) over the levels whose inputs fit f16
/// (activations are f16 on the device); golden 07's last level, scaled by 1e6 to reach the
/// ±50000 clamp, is beyond f16's range and goes through the logits in f32 below.
#[test]
fn head_matches_golden_07_on_every_cuda_device() {
    let g = load_golden("07_head").unwrap();
    let w = head_weights(&g);
    let fits_f16 = |t: &Tensor| {
        t.to_f32_vec()
            .unwrap()
            .iter()
            .all(|v| v.abs() < f32::from(half::f16::MAX))
    };
    let visual: Vec<Tensor> = (0..)
        .map(|l| format!("input/visual.{l}"))
        .take_while(|k| g.contains_key(k))
        .map(|k| g[&k].to_f32().unwrap())
        .take_while(fits_f16)
        .collect();
    assert!(!visual.is_empty());
    let hidden = &g["input/lang_hidden"];
    let channels = visual[0].shape()[1];
    let num_labels = g["cls_logits.weight"].shape()[0];
    for (name, be) in test_backends().into_iter().filter(|(n, _)| n != "cpu") {
        let be = &*be;
        let vars = Vars::from_weights(&w, be);
        let head = Head::new(
            &vars.pp("rpn.head"),
            channels,
            hidden.shape()[2],
            num_labels,
            visual.len(),
        )
        .unwrap();
        let on: Vec<Tensor> = visual.iter().map(|x| activation_on(be, x)).collect();
        let out = head.forward(be, &on, &activation_on(be, hidden)).unwrap();
        let proj = &g["inter/dot_product_proj_tokens"];
        check_on(&name, "proj_tokens", be, &out.proj_tokens, proj);
        for l in 0..visual.len() {
            for (key, got) in [
                (format!("output/bbox_reg.{l}"), &out.bbox_reg[l]),
                (format!("output/centerness.{l}"), &out.centerness[l]),
                (
                    format!("output/dot_product_logits.{l}"),
                    &out.dot_product_logits[l],
                ),
            ] {
                check_on(&name, &key, be, got, &g[&key]);
            }
        }
        // fp16 range: the levels beyond f16 (×1e6 features) as f32 features through the
        // device's dot-product logits give GLIP's answer, ±50000 where it clamps, no NaN.
        let scale = g["log_scale"].to_f32_vec().unwrap()[0].exp();
        let mut clamped = 0;
        for l in visual.len().. {
            let key = format!("input/visual.{l}");
            let Some(x) = g.get(&key) else { break };
            let x = be.upload(&x.to_f32().unwrap()).unwrap();
            let got = be
                .dot_logits(&[&x], &out.proj_tokens, &out.token_bias, scale, 50_000.0)
                .unwrap()
                .remove(0);
            let want = &g[&format!("output/dot_product_logits.{l}")];
            check_on(
                &name,
                &format!("dot_product_logits.{l} (f32 features)"),
                be,
                &got,
                want,
            );
            let (gv, wv) = (
                be.to_host(&got).unwrap().to_f32_vec().unwrap(),
                want.to_f32_vec().unwrap(),
            );
            for (a, e) in gv.iter().zip(&wv) {
                if e.abs() == 50_000.0 {
                    assert_eq!(a, e, "level {l}: GLIP clamps to {e}, the device gave {a}");
                    clamped += 1;
                }
            }
        }
        assert!(clamped > 0, "golden 07 has no level beyond f16 any more");
        println!("{name}: {clamped} logits at ±50000 from f32 features, as GLIP's");
    }
}
