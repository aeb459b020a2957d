//! The checkpoint layout glip-rt expects (the key list of the model constructors' own walk),
//! against the spec's counts (§5, §7.1) for GLIP-T and against the golden tiny model's own
//! state_dict; and random weights drawn by the same walk load back.

use glip_rt::model::config::{BertConfig, GlipConfig};
use glip_rt::model::glip::expected_keys;
use glip_rt::testing::testdata;
use glip_rt::weights::{glip_ignorable, load_weights, validate_keys};

#[test]
fn glip_t_has_the_spec_parameter_count() {
    let keys = expected_keys(&GlipConfig::glip_t(), &BertConfig::default()).unwrap();
    // Spec §5: 728 parameter tensors (buffers are recomputed, not expected).
    assert_eq!(keys.len(), 728);
    let params: usize = keys.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    // Spec §7.1: 231 780 222 parameters in total.
    assert_eq!(params, 231_780_222);
}

#[test]
fn tiny_golden_checkpoint_matches_the_expected_keys_exactly() {
    let cfg =
        GlipConfig::from_yaml_file(&testdata().join("golden/12_e2e_tiny_config.yaml")).unwrap();
    let bert = BertConfig::from_file(&testdata().join("tiny_bert_config.json")).unwrap();
    let w = load_weights(&testdata().join("golden/12_e2e_tiny_weights.safetensors")).unwrap();
    let keys = expected_keys(&cfg, &bert).unwrap();
    // Nothing may be missing, mis-shaped, or unexpected apart from recomputed buffers.
    validate_keys(&w, &keys, glip_ignorable).unwrap();
    let extra: Vec<&String> = w
        .tensors
        .keys()
        .filter(|k| !keys.iter().any(|(e, _)| e == *k))
        .collect();
    assert!(extra.iter().all(|k| glip_ignorable(k)), "{extra:?}");
}

#[test]
fn glip_l_parameter_count_is_the_spec_figure() {
    let keys = expected_keys(&GlipConfig::glip_l(), &BertConfig::default()).unwrap();
    let params: usize = keys.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    println!("GLIP-L: {} tensors, {params} parameters", keys.len());
    // Spec §9: 430.4 M (derived there to 0.1 M).
    assert!((430_350_000..430_450_000).contains(&params), "{params}");
}

#[test]
fn random_weights_from_the_walk_load_back() {
    use glip_rt::model::glip::{random_weights, Glip};
    let cfg =
        GlipConfig::from_yaml_file(&testdata().join("golden/12_e2e_tiny_config.yaml")).unwrap();
    let bert = BertConfig::from_file(&testdata().join("tiny_bert_config.json")).unwrap();
    let w = random_weights(&cfg, &bert, 3).unwrap();
    assert_eq!(w.tensors.len(), expected_keys(&cfg, &bert).unwrap().len());
    Glip::load(cfg, bert, &w).unwrap();
}
