//! Swin pieces (through the op interface on the CPU) vs golden 10 (patch embed, W-MSA block,
//! SW-MSA block, patch merging, shift mask) and the whole tiny Swin vs golden 12's backbone
//! taps. Every size is read from the goldens' tensors or config.

use glip_rt::backend::cpu::CpuBackend;
use glip_rt::backend::Backend;
use glip_rt::model::config::GlipConfig;
use glip_rt::model::swin::{shift_attn_mask, PatchEmbed, Swin, SwinStage, WindowGrid};
use glip_rt::model::vars::Vars;
use glip_rt::model::WeightMap;
use glip_rt::testing::{activation_on, check_on, load_golden, test_backends, testdata};
use glip_rt::Tensor;
use std::collections::HashMap;

/// Golden 10 stores the modules' own state_dict keys; its glip_t_prefix maps them into a
/// full GLIP-T state_dict: 'patch_embed.*' -> backbone.body.patch_embed.*,
/// 'layers_0.*' -> backbone.body.layers.0.*.
fn golden10_weights() -> (WeightMap, HashMap<String, Tensor>) {
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

fn f32s(g: &HashMap<String, Tensor>, k: &str) -> Vec<f32> {
    g[k].to_f32_vec().unwrap()
}

/// The stage-0 hyper-parameters golden 10's tensors imply.
struct Stage0 {
    patch: usize,
    dim: usize,
    heads: usize,
    window: usize,
    depth: usize,
    mlp_hidden: usize,
}

fn stage0(g: &HashMap<String, Tensor>) -> Stage0 {
    let pw = g["patch_embed.proj.weight"].shape();
    let table = g["layers_0.blocks.0.attn.relative_position_bias_table"].shape();
    let side = (table[0] as f64).sqrt() as usize; // (2M − 1)²
    Stage0 {
        patch: pw[2],
        dim: pw[0],
        heads: table[1],
        window: side.div_ceil(2),
        depth: (0..)
            .take_while(|b| g.contains_key(&format!("layers_0.blocks.{b}.norm1.weight")))
            .count(),
        mlp_hidden: g["layers_0.blocks.0.mlp.fc1.weight"].shape()[0],
    }
}

/// `got` (on `be`) against a golden tensor of the same values in another shape.
fn check_values(backend: &str, what: &str, be: &dyn Backend, got: &Tensor, want: &Tensor) {
    assert_eq!(got.numel(), want.numel(), "{what}");
    let host = be
        .to_host(got)
        .and_then(|t| t.to_f32())
        .and_then(|t| t.reshape(want.shape()))
        .unwrap();
    check_on(backend, what, glip_rt::backend::host(), &host, want);
}

#[test]
fn swin_t_pieces_match_golden_on_every_backend() {
    let (w, g) = golden10_weights();
    let s = stage0(&g);
    for (name, be) in test_backends() {
        let be = &*be;
        let image = activation_on(be, &g["input/image"]);
        let vars = Vars::from_weights(&w, be);
        let pe = PatchEmbed::new(&vars.pp("backbone.body.patch_embed"), s.patch, s.dim).unwrap();
        let stage = SwinStage::new(
            &vars.pp("backbone.body.layers.0"),
            s.dim,
            s.depth,
            s.heads,
            s.window,
            s.mlp_hidden,
            true,
        )
        .unwrap();
        vars.finish(glip_rt::weights::glip_ignorable).unwrap();
        assert_eq!(stage.blocks[0].shift, 0);
        assert_eq!(stage.blocks[1].shift, s.window / 2);

        let emb = pe.forward(be, &image).unwrap();
        check_on(&name, "patch_embed", be, &emb, &g["output/patch_embed"]);

        let x = pe.forward_tokens(be, &image).unwrap();
        let [_, h, wd, _] = x.dims::<4>("tokens").unwrap();
        let ids = stage.region_ids(be, h, wd).unwrap();
        let b0 = stage.blocks[0]
            .forward(be, be.duplicate(&x).unwrap(), Some(&ids))
            .unwrap();
        let b1 = stage.blocks[1]
            .forward(be, be.duplicate(&b0).unwrap(), Some(&ids))
            .unwrap();
        let pm = stage.downsample.as_ref().unwrap().forward(be, &b1).unwrap();
        assert_eq!(pm.shape()[1..3], [h.div_ceil(2), wd.div_ceil(2)]);
        for (what, got, key) in [
            ("block0 (W-MSA, padded)", &b0, "output/block0"),
            ("block1 (SW-MSA, shifted)", &b1, "output/block1"),
            ("patch_merging", &pm, "output/patch_merging"),
        ] {
            check_values(&name, what, be, got, &g[key]);
        }

        // Also through SwinStage::forward_blocks (the path Swin::forward takes).
        let y = stage.forward_blocks(be, x).unwrap();
        check_values(&name, "stage blocks", be, &y, &g["output/block1"]);
    }
}

#[test]
fn shift_mask_matches_golden() {
    let g = load_golden("10_swin_t_pieces").unwrap();
    let s = stage0(&g);
    let want = &g["inter/shift_attn_mask"];
    let [_, _, ih, iw] = g["input/image"].dims::<4>("image").unwrap();
    let (h, w) = (ih.div_ceil(s.patch), iw.div_ceil(s.patch));
    let grid = WindowGrid::new(h, w, s.window);
    let mm = s.window * s.window;
    assert_eq!(want.shape(), &[grid.num_windows(), mm, mm]);
    let got = shift_attn_mask(h, w, s.window);
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
    let s = stage0(&g);
    let idx = f32s(&g, "layers_0.blocks.0.attn.relative_position_index");
    let table = f32s(&g, "layers_0.blocks.0.attn.relative_position_bias_table");
    let blk = SwinStage::new(
        &Vars::from_weights(&w, &CpuBackend).pp("backbone.body.layers.0"),
        s.dim,
        s.depth,
        s.heads,
        s.window,
        s.mlp_hidden,
        true,
    )
    .unwrap()
    .blocks
    .remove(0);
    let bias = blk.rel_bias.f32s().unwrap();
    let mm = s.window * s.window;
    for h in 0..s.heads {
        for i in 0..mm {
            for j in 0..mm {
                let want = table[idx[i * mm + j] as usize * s.heads + h];
                assert_eq!(bias[(h * mm + i) * mm + j], want);
            }
        }
    }
}

fn tiny_cfg() -> glip_rt::model::swin::SwinConfig {
    GlipConfig::from_yaml_file(&testdata().join("golden/12_e2e_tiny_config.yaml"))
        .unwrap()
        .swin
}

#[test]
fn tiny_swin_matches_e2e_backbone_taps_on_every_backend() {
    let w = WeightMap::new(
        "12_e2e_tiny_weights",
        load_golden("12_e2e_tiny_weights").unwrap(),
    );
    let g = load_golden("12_e2e_tiny").unwrap();
    let cfg = tiny_cfg();
    for (name, be) in test_backends() {
        let be = &*be;
        let swin = Swin::new(&Vars::from_weights(&w, be).pp("backbone.body"), &cfg).unwrap();
        assert!(swin.out_norms[0].is_none());
        let outs = swin
            .forward(be, &activation_on(be, &g["input/image"]))
            .unwrap();
        assert_eq!(outs.len(), cfg.depths.len());
        for (i, o) in outs.iter().enumerate() {
            let key = format!("inter/backbone.stage{}", i + 2);
            check_on(&name, &key, be, o, &g[&key]);
        }
    }
}

#[test]
fn missing_weight_is_named() {
    let w = WeightMap::new("empty", HashMap::new());
    let vars = Vars::from_weights(&w, &CpuBackend);
    Swin::new(&vars.pp("backbone.body"), &tiny_cfg()).unwrap();
    let e = vars
        .finish(glip_rt::weights::glip_ignorable)
        .err()
        .unwrap()
        .to_string();
    // Every requested key is reported missing, the first ones by name.
    let n = vars.requested().len();
    assert!(e.contains(&format!("{n} missing")), "{e}");
    assert!(
        e.contains("backbone.body.layers.0.blocks.0.attn.proj.bias"),
        "{e}"
    );
}
