//! GLIP yaml reader: the tiny model's full yacs dump, GLIP's own partial yamls, presets,
//! unsupported architectures and non-yaml input.

use glip_rt::model::config::{GlipConfig, SwinConfig};
use glip_rt::testing::testdata;
use glip_rt::Error;

fn tiny() -> GlipConfig {
    GlipConfig::from_yaml_file(&testdata().join("golden/12_e2e_tiny_config.yaml")).unwrap()
}

/// configs/pretrain/glip_Swin_T_O365_GoldG.yaml as shipped by GLIP (partial: the rest comes
/// from defaults.py; tuples are Python literals that yacs evaluates).
const GLIP_T_YAML: &str = r#"
MODEL:
  META_ARCHITECTURE: "GeneralizedVLRCNN"
  WEIGHT: "swin_tiny_patch4_window7_224.pth"
  RPN_ONLY: True
  RPN_ARCHITECTURE: "VLDYHEAD"
  BACKBONE:
    CONV_BODY: "SWINT-FPN-RETINANET"
    OUT_CHANNELS: 256
    FREEZE_CONV_BODY_AT: -1
  LANGUAGE_BACKBONE:
    FREEZE: False
    MODEL_TYPE: "bert-base-uncased" # "roberta-base", "clip"
    MASK_SPECIAL: False
  RPN:
    USE_FPN: True
    ANCHOR_SIZES: (64, 128, 256, 512, 1024)
    ANCHOR_STRIDE: (8, 16, 32, 64, 128)
    ASPECT_RATIOS: (1.0,)
    SCALES_PER_OCTAVE: 1
  DYHEAD:
    CHANNELS: 256
    NUM_CONVS: 6
    USE_GN: True
    USE_DYRELU: True
    USE_DFCONV: True
    USE_DYFUSE: True
    TOPK: 9
    SCORE_AGG: "MEAN"
    LOG_SCALE: 0.0
    FUSE_CONFIG:
      EARLY_FUSE_ON: True
      TYPE: "MHA-B"
      USE_CLASSIFICATION_LOSS: False
      USE_TOKEN_LOSS: False
      USE_CONTRASTIVE_ALIGN_LOSS: False
      CONTRASTIVE_HIDDEN_DIM: 64
      USE_DOT_PRODUCT_TOKEN_LOSS: True
      USE_FUSED_FEATURES_DOT_PRODUCT: True
      USE_LAYER_SCALE: True
      CLAMP_MIN_FOR_UNDERFLOW: True
      CLAMP_MAX_FOR_OVERFLOW: True
      CLAMP_BERTATTN_MIN_FOR_UNDERFLOW: True
      CLAMP_BERTATTN_MAX_FOR_OVERFLOW: True
      CLAMP_DOT_PRODUCT: True
    USE_CHECKPOINT: True
TEST:
  DURING_TRAINING: False
  IMS_PER_BATCH: 64
DATASETS:
  TRAIN: ("object365_dt_train", "mixed_train_no_coco", "flickr30k_train", )
  TEST: ("coco_2017_val", )
  SEPARATION_TOKENS: ". "
INPUT:
  PIXEL_MEAN: [ 103.530, 116.280, 123.675 ]
  PIXEL_STD: [ 57.375, 57.120, 58.395 ]
  MIN_SIZE_TRAIN: 800
  MAX_SIZE_TRAIN: 1333
  MIN_SIZE_TEST: 800
  MAX_SIZE_TEST: 1333
AUGMENT:
  MULT_MIN_SIZE_TRAIN: (480,560,640,720,800)
DATALOADER:
  SIZE_DIVISIBILITY: 32
SOLVER:
  OPTIMIZER: ADAMW
  BASE_LR: 0.0001
  STEPS: (0.67, 0.89)
  USE_AMP: True
  MODEL_EMA: 0.999
"#;

/// The model-relevant part of configs/pretrain/glip_Swin_L.yaml.
const GLIP_L_OVERRIDES: &str = r#"
  SWINT:
    EMBED_DIM: 192
    DEPTHS: (2, 2, 18, 2)
    NUM_HEADS: (6, 12, 24, 48)
    WINDOW_SIZE: 12
    OUT_CHANNELS: (192, 384, 768, 1536)
    DROP_PATH_RATE: 0.4
"#;

#[test]
fn tiny_e2e_config_parses_to_the_tiny_model() {
    let c = tiny();
    assert_eq!(
        c.swin,
        SwinConfig {
            embed_dim: 16,
            depths: vec![2, 2, 2, 2],
            num_heads: vec![2, 4, 8, 16],
            ..SwinConfig::swin_t()
        }
    );
    assert_eq!(c.swin.out_channels(), vec![16, 32, 64, 128]);
    assert_eq!(c.fpn.in_channels, [32, 64, 128]);
    assert_eq!(c.fpn.out_channels, 32);
    assert_eq!(c.dyhead.channels, 32);
    assert_eq!(c.dyhead.num_convs, 2);
    assert_eq!(c.dyhead.fuse.joint_emb_size, 32);
    assert_eq!(c.language.lang_dim, 16);
    assert_eq!(c.language.max_query_len, 256);
    assert_eq!((c.input.min_size_test, c.input.max_size_test), (320, 533));
    // Everything else is GLIP-T's.
    let t = GlipConfig::glip_t();
    assert_eq!(c.anchors, t.anchors);
    assert_eq!(c.postprocess, t.postprocess);
    assert_eq!(c.input.pixel_mean, t.input.pixel_mean);
    assert_eq!(c.input.pixel_std, t.input.pixel_std);
    assert_eq!(c.input.format, "bgr255");
    assert_eq!(c.input.size_divisibility, 32);
    assert_eq!(
        c.dyhead.fuse,
        glip_rt::model::config::FuseConfig {
            joint_emb_size: 32,
            ..t.dyhead.fuse.clone()
        }
    );
    assert_eq!(c.dyhead.num_score_classes(), 80);
}

#[test]
fn glip_t_partial_yaml_with_defaults_equals_preset() {
    let c = GlipConfig::from_yaml_str(GLIP_T_YAML, "glip_Swin_T_O365_GoldG.yaml").unwrap();
    assert_eq!(c, GlipConfig::glip_t());
}

#[test]
fn glip_l_yaml_equals_preset() {
    let y = GLIP_T_YAML
        .replace("  RPN:\n", &format!("{GLIP_L_OVERRIDES}  RPN:\n"))
        .replace("NUM_CONVS: 6", "NUM_CONVS: 8");
    let c = GlipConfig::from_yaml_str(&y, "glip_Swin_L.yaml").unwrap();
    assert_eq!(c, GlipConfig::glip_l());
}

#[test]
fn presets_match_the_spec() {
    let t = GlipConfig::glip_t();
    assert_eq!((t.swin.embed_dim, t.swin.window_size), (96, 7));
    assert_eq!(t.swin.depths, [2, 2, 6, 2]);
    assert_eq!(t.swin.num_heads, [3, 6, 12, 24]);
    assert_eq!(t.swin.mlp_hidden(96), 384);
    assert!(!t.swin.norm_first_stage);
    assert_eq!(t.fpn.in_channels, [192, 384, 768]);
    assert_eq!(t.fpn.out_channels, 256);
    assert_eq!(
        (t.dyhead.channels, t.dyhead.num_convs, t.dyhead.gn_groups),
        (256, 6, 16)
    );
    assert_eq!(
        (t.dyhead.fuse.embed_dim, t.dyhead.fuse.num_heads),
        (2048, 8)
    );
    assert_eq!(t.dyhead.num_classes, 81);
    assert_eq!(t.language.lang_dim, 768);
    assert_eq!(t.anchors.sizes, [64.0, 128.0, 256.0, 512.0, 1024.0]);
    assert_eq!(t.anchors.strides, [8, 16, 32, 64, 128]);
    assert_eq!(
        (
            t.postprocess.inference_th,
            t.postprocess.pre_nms_top_n,
            t.postprocess.nms_th,
            t.postprocess.detections_per_img
        ),
        (0.05, 1000, 0.6, 100)
    );
    assert_eq!(
        (
            t.input.min_size_test,
            t.input.max_size_test,
            t.input.size_divisibility
        ),
        (800, 1333, 32)
    );
    assert!(t.input.bgr() && t.input.times_255());
    let l = GlipConfig::glip_l();
    assert_eq!((l.swin.embed_dim, l.swin.window_size), (192, 12));
    assert_eq!(l.swin.depths, [2, 2, 18, 2]);
    assert_eq!(l.swin.num_heads, [6, 12, 24, 48]);
    assert_eq!(l.fpn.in_channels, [384, 768, 1536]);
    assert_eq!(l.dyhead.num_convs, 8);
    l.validate("glip_l").unwrap();
    t.validate("glip_t").unwrap();
}

fn config_err(yaml: &str) -> String {
    match GlipConfig::from_yaml_str(yaml, "test.yaml") {
        Err(Error::Config(m)) => m,
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

#[test]
fn unsupported_architectures_are_named() {
    let cases = [
        (
            "META_ARCHITECTURE: \"GeneralizedVLRCNN\"",
            "META_ARCHITECTURE: \"GeneralizedRCNN\"",
            "MODEL.META_ARCHITECTURE",
        ),
        (
            "RPN_ARCHITECTURE: \"VLDYHEAD\"",
            "RPN_ARCHITECTURE: \"ATSS\"",
            "MODEL.RPN_ARCHITECTURE",
        ),
        (
            "CONV_BODY: \"SWINT-FPN-RETINANET\"",
            "CONV_BODY: \"R-50-FPN-RETINANET\"",
            "MODEL.BACKBONE.CONV_BODY",
        ),
        (
            "USE_DYFUSE: True",
            "USE_DYFUSE: False",
            "MODEL.DYHEAD.USE_DYFUSE",
        ),
        (
            "SCORE_AGG: \"MEAN\"",
            "SCORE_AGG: \"MAX\"",
            "MODEL.DYHEAD.SCORE_AGG",
        ),
        (
            "TYPE: \"MHA-B\"",
            "TYPE: \"MHA-S\"",
            "MODEL.DYHEAD.FUSE_CONFIG.TYPE",
        ),
        (
            "ASPECT_RATIOS: (1.0,)",
            "ASPECT_RATIOS: (0.5, 1.0, 2.0)",
            "ASPECT_RATIOS",
        ),
        (
            "MODEL_TYPE: \"bert-base-uncased\"",
            "MODEL_TYPE: \"clip\"",
            "MODEL.LANGUAGE_BACKBONE.MODEL_TYPE",
        ),
    ];
    for (from, to, key) in cases {
        assert!(GLIP_T_YAML.contains(from), "{from}");
        let m = config_err(&GLIP_T_YAML.replace(from, to));
        assert!(m.contains(key), "{key}: {m}");
        println!("{m}");
    }
    let v2 = GLIP_T_YAML.replace("  RPN:\n", "  SWINT:\n    VERSION: \"v2\"\n  RPN:\n");
    let m = config_err(&v2);
    assert!(m.contains("MODEL.SWINT.VERSION") && m.contains("v2"), "{m}");
    // Test-time options that change detections.
    let ms = format!("{GLIP_T_YAML}\nTEST:\n  USE_MULTISCALE: True\n")
        .replace("TEST:\n  DURING_TRAINING: False\n  IMS_PER_BATCH: 64\n", "");
    assert!(config_err(&ms).contains("TEST.USE_MULTISCALE"));
}

#[test]
fn inconsistent_widths_are_rejected() {
    let m = config_err(&GLIP_T_YAML.replace(
        "CHANNELS: 256\n    NUM_CONVS",
        "CHANNELS: 128\n    NUM_CONVS",
    ));
    assert!(m.contains("MODEL.DYHEAD.CHANNELS"), "{m}");
    let m = config_err(&GLIP_T_YAML.replace(
        "  RPN:\n",
        "  SWINT:\n    OUT_CHANNELS: (96, 192, 384, 512)\n  RPN:\n",
    ));
    assert!(m.contains("OUT_CHANNELS"), "{m}");
}

#[test]
fn wrong_types_name_the_key() {
    let m = config_err(&GLIP_T_YAML.replace("NUM_CONVS: 6", "NUM_CONVS: six"));
    assert!(
        m.contains("MODEL.DYHEAD.NUM_CONVS") && m.contains("six"),
        "{m}"
    );
    let m = config_err(&GLIP_T_YAML.replace(
        "ANCHOR_STRIDE: (8, 16, 32, 64, 128)",
        "ANCHOR_STRIDE: (8, 16, x)",
    ));
    assert!(m.contains("MODEL.RPN.ANCHOR_STRIDE"), "{m}");
}

#[test]
fn non_yaml_inputs_give_clear_errors() {
    for (text, needle) in [
        ("just some words", "not a GLIP yaml config"),
        ("{ unbalanced: [", "not a GLIP yaml config"),
        ("- a\n- b\n", "not a GLIP yaml config"),
        ("INPUT:\n  MIN_SIZE_TEST: 800\n", "no MODEL section"),
        ("", "not a GLIP yaml config"),
    ] {
        let m = config_err(text);
        assert!(m.contains(needle), "{text:?}: {m}");
    }
    // A binary file (the test photo).
    match GlipConfig::from_yaml_file(&testdata().join("golden/12_e2e_tiny_photo.png")) {
        Err(Error::Config(m)) => assert!(m.contains("not a GLIP yaml config"), "{m}"),
        other => panic!("expected Error::Config, got {other:?}"),
    }
    // A missing file is an I/O error naming the path.
    let e = GlipConfig::from_yaml_file(std::path::Path::new("/nonexistent/glip.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/glip.yaml"), "{e}");
}

/// Keys that are read are used: INPUT.FORMAT changes the pre-processing, GROUP_NORM's
/// groups and eps reach DyConv's GroupNorm (a different group count changes the output),
/// and DYHEAD.USE_GN False is refused by name rather than ignored.
#[test]
fn input_format_and_group_norm_keys_are_used() {
    use glip_rt::model::glip::{Glip, Taps};
    use glip_rt::preprocess::{normalize_pad, PreprocessConfig, RgbImage8};
    let yaml = std::fs::read_to_string(testdata().join("golden/12_e2e_tiny_config.yaml")).unwrap();
    // INPUT.FORMAT "rgb": no channel swap, no ×255.
    let rgb =
        GlipConfig::from_yaml_str(&yaml.replacen("FORMAT: ''", "FORMAT: rgb", 1), "t").unwrap();
    assert!(!rgb.input.bgr() && !rgb.input.times_255());
    let img = RgbImage8::new(2, 1, vec![10, 20, 30, 40, 50, 60]).unwrap();
    let pre = |bgr: bool, times_255: bool| {
        let cfg = PreprocessConfig {
            bgr,
            times_255,
            pixel_mean: [0.0; 3],
            pixel_std: [1.0; 3],
            size_divisibility: 1,
            ..PreprocessConfig::default()
        };
        normalize_pad(&img, &cfg).unwrap().data
    };
    assert_eq!(pre(true, true), vec![30.0, 60.0, 20.0, 50.0, 10.0, 40.0]);
    let (r, g) = (10.0f32 / 255.0, 40.0f32 / 255.0);
    assert_eq!(pre(false, false)[..2], [r, g]);

    // GROUP_NORM.NUM_GROUPS reaches the model.
    let bert =
        glip_rt::model::config::BertConfig::from_file(&testdata().join("tiny_bert_config.json"))
            .unwrap();
    let w =
        glip_rt::weights::load_weights(&testdata().join("golden/12_e2e_tiny_weights.safetensors"))
            .unwrap();
    let run = |cfg: GlipConfig| {
        let m = Glip::load(cfg, bert.clone(), &w).unwrap();
        let text = m.encode_text(&[101, 2000, 102], &[1, 1, 1]).unwrap();
        let mut rng = glip_rt::testing::Rng::new(1);
        let img = glip_rt::model::FeatureMap::new(1, 3, 64, 64, rng.normal_vec(3 * 64 * 64, 1.0))
            .unwrap();
        m.forward(&img, &text, &mut Taps::disabled())
            .unwrap()
            .bbox_reg[0]
            .to_f32_vec()
            .unwrap()
    };
    let base = tiny();
    let groups = base.dyhead.gn_groups;
    let mut other = tiny();
    other.dyhead.gn_groups = groups / 2;
    assert_ne!(
        run(base),
        run(other),
        "NUM_GROUPS {groups} vs {} gave the same output",
        groups / 2
    );

    let mut no_gn = tiny();
    no_gn.dyhead.use_gn = false;
    let e = no_gn.validate("test.yaml").unwrap_err().to_string();
    assert!(e.contains("USE_GN"), "{e}");
}
