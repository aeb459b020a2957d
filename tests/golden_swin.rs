//! Swin-T pieces vs golden 10 (patch embed, W-MSA block, SW-MSA block, patch merging, shift
//! mask) and the whole tiny Swin vs golden 12's backbone taps.

use glip_rt::model::swin::{shift_attn_mask, PatchEmbed, Swin, SwinConfig, SwinStage};
use glip_rt::model::{FeatureMap, WeightMap};
use glip_rt::testing::{assert_close, load_golden};
use std::collections::HashMap;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

/// Golden 10 stores the modules' own state_dict keys; its glip_t_prefix maps them into a
/// full GLIP-T state_dict: 'patch_embed.*' -> backbone.body.patch_embed.*,
/// 'layers_0.*' -> backbone.body.layers.0.*.
fn golden10_weights() -> (WeightMap, HashMap<String, glip_rt::Tensor>) {
    let g = load_golden("10_swin_t_pieces").unwrap();
    let mut w = HashMap::new();
    for (k, t) in &g {
        let full = if let Some(rest) = k.strip_prefix("layers_0.") {
            format!("backbone.body.layers.0.{rest}")
        } else if k.starts_with("patch_embed.") {
            format!("backbone.body.{k}")
        } else {
            continue;
        };
        w.insert(full, t.try_clone().unwrap());
    }
    (WeightMap::new("10_swin_t_pieces", w), g)
}

fn f32s(g: &HashMap<String, glip_rt::Tensor>, k: &str) -> Vec<f32> {
    g[k].to_f32_vec().unwrap()
}

#[test]
fn swin_t_pieces_match_golden() {
    let (w, g) = golden10_weights();
    let cfg = SwinConfig::swin_t();
    let image = FeatureMap::from_tensor(&g["input/image"]).unwrap();
    assert_eq!((image.n, image.c, image.h, image.w), (2, 3, 58, 86));

    let pe = PatchEmbed::load(&w, "backbone.body.patch_embed.", 4, 96).unwrap();
    let emb = pe.forward(&image).unwrap();
    assert_eq!((emb.c, emb.h, emb.w), (96, 15, 22));
    assert_close(
        "patch_embed",
        &emb.data,
        &f32s(&g, "output/patch_embed"),
        ATOL,
        RTOL,
    );

    let stage = SwinStage::load(
        &w,
        "backbone.body.layers.0.",
        96,
        2,
        3,
        7,
        cfg.mlp_hidden(96),
        true,
    )
    .unwrap();
    assert_eq!(stage.blocks[0].shift, 0);
    assert_eq!(stage.blocks[1].shift, 3);
    let (h, wd) = (15, 22);
    let ids = glip_rt::model::swin::WindowGrid::new(h, wd, 7).region_ids(3);
    let (mut b0, mut b1, mut pm) = (Vec::new(), Vec::new(), Vec::new());
    for b in 0..2 {
        let (mut x, th, tw) = pe.forward_tokens(image.image(b), image.h, image.w).unwrap();
        assert_eq!((th, tw), (h, wd));
        stage.blocks[0].forward(&mut x, h, wd, Some(&ids)).unwrap();
        b0.extend_from_slice(&x);
        stage.blocks[1].forward(&mut x, h, wd, Some(&ids)).unwrap();
        b1.extend_from_slice(&x);
        let (m, mh, mw) = stage
            .downsample
            .as_ref()
            .unwrap()
            .forward(&x, h, wd)
            .unwrap();
        assert_eq!((mh, mw), (8, 11));
        pm.extend(m);
    }
    assert_close(
        "block0 (W-MSA, padded)",
        &b0,
        &f32s(&g, "output/block0"),
        ATOL,
        RTOL,
    );
    assert_close(
        "block1 (SW-MSA, shifted)",
        &b1,
        &f32s(&g, "output/block1"),
        ATOL,
        RTOL,
    );
    assert_close(
        "patch_merging",
        &pm,
        &f32s(&g, "output/patch_merging"),
        ATOL,
        RTOL,
    );

    // Also through SwinStage::forward_blocks (the path Swin::forward takes).
    let (mut x, _, _) = pe.forward_tokens(image.image(1), image.h, image.w).unwrap();
    stage.forward_blocks(&mut x, h, wd).unwrap();
    assert_close(
        "stage blocks, image 1",
        &x,
        &f32s(&g, "output/block1")[330 * 96..],
        ATOL,
        RTOL,
    );
}

#[test]
fn shift_mask_matches_golden() {
    let g = load_golden("10_swin_t_pieces").unwrap();
    let want = &g["inter/shift_attn_mask"];
    assert_eq!(want.shape(), &[12, 49, 49]);
    let got = shift_attn_mask(15, 22, 7);
    assert_eq!(
        got,
        want.to_f32_vec().unwrap(),
        "shift mask must match exactly"
    );
}

#[test]
fn relative_position_index_matches_buffer() {
    // The loader recomputes the index (spec §3.2); check it against GLIP's stored buffer.
    let (w, g) = golden10_weights();
    let idx = g["layers_0.blocks.0.attn.relative_position_index"]
        .to_f32_vec()
        .unwrap();
    let table = g["layers_0.blocks.0.attn.relative_position_bias_table"]
        .to_f32_vec()
        .unwrap();
    let blk = SwinStage::load(&w, "backbone.body.layers.0.", 96, 2, 3, 7, 384, true)
        .unwrap()
        .blocks
        .remove(0);
    for h in 0..3 {
        for i in 0..49 {
            for j in 0..49 {
                let want = table[idx[i * 49 + j] as usize * 3 + h];
                assert_eq!(blk.rel_bias[(h * 49 + i) * 49 + j], want);
            }
        }
    }
}

fn tiny_cfg() -> SwinConfig {
    SwinConfig {
        embed_dim: 16,
        depths: vec![2, 2, 2, 2],
        num_heads: vec![2, 4, 8, 16],
        ..SwinConfig::swin_t()
    }
}

#[test]
fn tiny_swin_matches_e2e_backbone_taps() {
    let w = WeightMap::new(
        "12_e2e_tiny_weights",
        load_golden("12_e2e_tiny_weights").unwrap(),
    );
    let g = load_golden("12_e2e_tiny").unwrap();
    let swin = Swin::load(&w, "backbone.body.", &tiny_cfg()).unwrap();
    assert!(swin.out_norms[0].is_none());
    let image = FeatureMap::from_tensor(&g["input/image"]).unwrap();
    let outs = swin.forward(&image).unwrap();
    assert_eq!(outs.len(), 4);
    for (i, o) in outs.iter().enumerate() {
        let want = FeatureMap::from_tensor(&g[&format!("inter/backbone.stage{}", i + 2)]).unwrap();
        assert_eq!(
            (o.n, o.c, o.h, o.w),
            (want.n, want.c, want.h, want.w),
            "stage{}",
            i + 2
        );
        assert_close(&format!("stage{}", i + 2), &o.data, &want.data, ATOL, RTOL);
    }
}

#[test]
fn missing_weight_is_named() {
    let w = WeightMap::new("empty", HashMap::new());
    let e = Swin::load(&w, "backbone.body.", &tiny_cfg())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("backbone.body.patch_embed.proj.weight"), "{e}");
}
