//! The head's prediction layers against golden 07_head (GLIP's VLDyHead with an empty tower).

use glip_rt::model::head::Head;
use glip_rt::model::{FeatureMap, WeightMap};
use glip_rt::testing::{assert_close, load_golden};

#[test]
fn head_matches_golden_07() {
    let g = load_golden("07_head").unwrap();
    let weights: std::collections::HashMap<_, _> = g
        .iter()
        .filter(|(k, _)| !k.contains('/'))
        .map(|(k, v)| (format!("rpn.head.{k}"), v.try_clone().unwrap()))
        .collect();
    let w = WeightMap::new("07_head", weights);
    let head = Head::load(&w, "rpn.head.").unwrap();
    assert_eq!(head.num_labels, 80);
    assert_eq!(
        (head.channels, head.lang_dim, head.embed_dim),
        (256, 768, 256)
    );
    let visual: Vec<FeatureMap> = (0..5)
        .map(|l| FeatureMap::from_tensor(&g[&format!("input/visual.{l}")]).unwrap())
        .collect();
    let hidden = &g["input/lang_hidden"];
    assert_eq!(hidden.shape(), &[1, 256, 768]);
    let out = head
        .forward(&visual, &hidden.to_f32_vec().unwrap(), 1, 256)
        .unwrap();
    let want = g["inter/dot_product_proj_tokens"].to_f32_vec().unwrap();
    assert_close("proj_tokens", &out.proj_tokens, &want, 1e-4, 1e-4);
    let mut clamped = 0;
    for l in 0..5 {
        let want = g[&format!("output/bbox_reg.{l}")].to_f32_vec().unwrap();
        assert_close(
            &format!("bbox_reg.{l}"),
            &out.bbox_reg[l].data,
            &want,
            1e-4,
            1e-4,
        );
        let want = g[&format!("output/centerness.{l}")].to_f32_vec().unwrap();
        assert_close(
            &format!("centerness.{l}"),
            &out.centerness[l].data,
            &want,
            1e-4,
            1e-4,
        );
        let want = g[&format!("output/dot_product_logits.{l}")]
            .to_f32_vec()
            .unwrap();
        assert_close(
            &format!("dot_product_logits.{l}"),
            &out.dot_product_logits[l],
            &want,
            1e-4,
            1e-4,
        );
        clamped += out.dot_product_logits[l]
            .iter()
            .filter(|v| v.abs() == 50_000.0)
            .count();
    }
    // input/visual.4 is scaled by 1e6 so that its logits hit the ±50000 clamp.
    assert!(clamped > 0, "no logit reached the clamp");
    println!("clamped logits: {clamped}");
}
