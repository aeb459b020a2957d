//! `glip_rt::cocoeval` against pycocotools and the LVIS API: the numbers within 1e-6 and the
//! printed table identical, on every fixture `scripts/make_cocoeval_fixtures.py` made (COCO:
//! random ground truth and detections with crowd boxes, empty images, equal scores, floods
//! past 100 detections, many categories; LVIS: verified-absent and not-exhaustive category
//! lists, frequency groups, detections of unlisted categories, a flood past 300); and
//! `glip coco-eval` on them. Bad files are errors naming file and field.

use glip_rt::cocoeval::CocoGt;
use glip_rt::testing::{testdata, TempDir};
use std::path::PathBuf;
use std::process::Command;

fn cases() -> Vec<(String, PathBuf, PathBuf, serde_json::Value)> {
    let dir = testdata().join("cocoeval");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix("_expected.json").map(String::from)
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixtures in {}", dir.display());
    names
        .into_iter()
        .map(|n| {
            let exp: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join(format!("{n}_expected.json"))).unwrap(),
            )
            .unwrap();
            let gt = dir.join(format!("{n}_gt.json"));
            let dt = dir.join(format!("{n}_dt.json"));
            (n, gt, dt, exp)
        })
        .collect()
}

#[test]
fn every_number_equals_the_reference_api() {
    for (name, gt, dt, exp) in cases() {
        let coco = CocoGt::load(&gt).unwrap();
        let res = coco.load_results(&dt).unwrap();
        let stats = coco.evaluate(&res, &dt).unwrap();
        let want: Vec<f64> = exp["stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let mut worst = 0.0f64;
        for (i, (g, w)) in stats.values.iter().zip(&want).enumerate() {
            worst = worst.max((g - w).abs());
            assert!(
                (g - w).abs() <= 1e-6,
                "{name}: stat {i}: {g} vs the reference API {w}"
            );
        }
        assert_eq!(stats.table(), exp["table"].as_str().unwrap(), "{name}");
        println!(
            "{name}: {} numbers, largest difference from the reference API {worst:.1e}",
            want.len()
        );
    }
}

#[test]
fn coco_eval_command_prints_the_table_and_json() {
    for (name, gt, dt, exp) in cases() {
        let out = Command::new(env!("CARGO_BIN_EXE_glip"))
            .args(["coco-eval", "--gt"])
            .arg(&gt)
            .arg("--dt")
            .arg(&dt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            exp["table"].as_str().unwrap()
        );
        let out = Command::new(env!("CARGO_BIN_EXE_glip"))
            .args(["coco-eval", "--json", "--gt"])
            .arg(&gt)
            .arg("--dt")
            .arg(&dt)
            .output()
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ap = j["AP"].as_f64().unwrap();
        assert!(
            (ap - exp["stats"][0].as_f64().unwrap()).abs() <= 1e-6,
            "{name}: {j}"
        );
        assert_eq!(
            j["stats"].as_array().unwrap().len(),
            exp["stats"].as_array().unwrap().len(),
            "{name}: 12 numbers (COCO) or 13 (LVIS)"
        );
        let lvis = name.starts_with("lvis");
        assert_eq!(j["rules"], if lvis { "lvis" } else { "coco" }, "{name}");
    }
}

#[test]
fn bad_files_are_errors_naming_file_and_field() {
    let tmp = TempDir::new("glip-cocoeval-bad");
    let (_, gt, _, _) = cases().remove(0);
    let write = |name: &str, text: &str| {
        let p = tmp.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases: Vec<(PathBuf, PathBuf, &str)> = vec![
        (write("a.json", "[1, 2]"), gt.clone(), "`images` is missing"),
        (write("b.json", "{ not json"), gt.clone(), "not JSON"),
        (
            write(
                "c.json",
                r#"{"images": [], "categories": [], "annotations": []}"#,
            ),
            gt.clone(),
            "`images` is empty",
        ),
        (
            write(
                "d.json",
                r#"{"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5]}]}"#,
            ),
            gt.clone(),
            "annotations[0]: `bbox`",
        ),
        (tmp.join("missing.json"), gt.clone(), "missing.json"),
        (
            gt.clone(),
            write("e.json", r#"{"a": 1}"#),
            "not a list of detections",
        ),
        (
            gt.clone(),
            write(
                "f.json",
                r#"[{"image_id": 999999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]"#,
            ),
            "image_id 999999 is not an image",
        ),
        (
            gt.clone(),
            write(
                "g.json",
                r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]"#,
            ),
            "[0]: `score`",
        ),
    ];
    for (g, d, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_glip"))
            .args(["coco-eval", "--gt"])
            .arg(&g)
            .arg("--dt")
            .arg(&d)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && out.status.code().is_some(),
            "{want}: {err}"
        );
        assert!(err.contains(want), "{want}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// LVIS lists images by coco_url: the file is its last component (what `glip eval` opens).
#[test]
fn lvis_images_are_named_by_their_coco_url() {
    let gt = CocoGt::load(&testdata().join("cocoeval/lvis_small_gt.json")).unwrap();
    let imgs = gt.images();
    assert_eq!(imgs[0], (1, Some("000000000001.jpg")));
}
