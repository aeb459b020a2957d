//! `glip detect` as a user runs it: the golden photo through the binary gives the golden
//! detections; bad inputs give a clear error and a non-zero exit, never a panic.

use glip_rt::testing::{load_golden, testdata};
use std::path::PathBuf;
use std::process::{Command, Output};

fn golden(name: &str) -> PathBuf {
    testdata().join("golden").join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("glip-cli-detect-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

struct Run {
    config: PathBuf,
    weights: PathBuf,
    images: Vec<PathBuf>,
    prompt: String,
    extra: Vec<String>,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            config: golden("12_e2e_tiny_config.yaml"),
            weights: golden("12_e2e_tiny_weights.safetensors"),
            images: vec![golden("12_e2e_tiny_photo.png")],
            prompt: "person. cup. rocket.".into(),
            extra: vec![],
        }
    }
}

impl Run {
    fn exec(&self) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_glip"));
        c.arg("detect")
            .arg("--config")
            .arg(&self.config)
            .arg("--weights")
            .arg(&self.weights);
        c.arg("--bert-config")
            .arg(testdata().join("tiny_bert_config.json"));
        c.arg("--image")
            .args(&self.images)
            .arg("--prompt")
            .arg(&self.prompt)
            .args(&self.extra);
        c.output().unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails unless the run exited non-zero with an `error:` line containing `needle`, no panic.
fn assert_clean_failure(what: &str, o: &Output, needle: &str) {
    let e = stderr(o);
    assert!(!o.status.success(), "{what}: must exit non-zero");
    assert!(!e.contains("panicked"), "{what}: panicked:\n{e}");
    assert!(e.contains("error:"), "{what}: no error line:\n{e}");
    assert!(
        e.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: error does not mention `{needle}`:\n{e}"
    );
    println!(
        "{what}: {}",
        e.lines().find(|l| l.contains("error:")).unwrap_or_default()
    );
}

#[test]
fn photo_gives_the_golden_detections() {
    let o = Run {
        extra: vec!["--format".into(), "json".into()],
        ..Run::default()
    }
    .exec();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["width"], 512);
    assert_eq!(v["height"], 512);
    let dets = v["detections"].as_array().unwrap();
    let g = load_golden("12_e2e_tiny").unwrap();
    let labels = g["output/final_sorted.labels"].i32s().unwrap().to_vec();
    let scores = g["output/final_sorted.scores"].to_f32_vec().unwrap();
    let boxes = g["output/final_sorted.boxes"].to_f32_vec().unwrap();
    assert_eq!(dets.len(), labels.len());
    // Match every golden detection (boxes scaled 320 -> 512 px) to a distinct output.
    let mut used = vec![false; dets.len()];
    for i in 0..labels.len() {
        let hit = dets.iter().enumerate().position(|(j, d)| {
            let b: Vec<f32> = d["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            !used[j]
                && d["label"].as_i64().unwrap() as i32 == labels[i]
                && (d["score"].as_f64().unwrap() as f32 - scores[i]).abs() <= 1e-5
                && (0..4).all(|k| (b[k] - boxes[i * 4 + k] * 1.6).abs() <= 1.6e-3)
        });
        let j = hit.unwrap_or_else(|| {
            panic!(
                "golden detection {i} (label {}) not in the output",
                labels[i]
            )
        });
        used[j] = true;
        let phrase = dets[j]["phrase"].as_str().unwrap();
        assert_eq!(phrase, ["person", "cup", "rocket"][labels[i] as usize - 1]);
    }
}

#[test]
fn dump_writes_the_intermediates() {
    let out = tmp("dump.safetensors");
    let o = Run {
        extra: vec!["--dump".into(), out.display().to_string()],
        ..Run::default()
    }
    .exec();
    assert!(o.status.success(), "{}", stderr(&o));
    let t = glip_rt::weights::read_safetensors_all(&out).unwrap();
    for k in [
        "backbone.stage5",
        "fpn.p7",
        "language.hidden",
        "tower.0.VLFuse.visual.0",
        "tower.5.DyConv.visual.4",
        "bbox_reg.0",
    ] {
        assert!(t.contains_key(k), "dump lacks {k}");
    }
    let g = load_golden("12_e2e_tiny").unwrap();
    let got = t["fpn.p3"].to_f32_vec().unwrap();
    let want = g["inter/fpn.p3"].to_f32_vec().unwrap();
    assert!(glip_rt::testing::max_abs_diff(&got, &want) < 1e-4);
}

#[test]
fn missing_and_corrupt_images() {
    let o = Run {
        images: vec![tmp("does-not-exist.jpg")],
        ..Run::default()
    }
    .exec();
    assert_clean_failure("missing image", &o, "does-not-exist.jpg");
    let bad = tmp("corrupt.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not a png at all").unwrap();
    let o = Run {
        images: vec![bad.clone()],
        ..Run::default()
    }
    .exec();
    assert_clean_failure("corrupt image", &o, "corrupt.png");
    let empty = tmp("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let o = Run {
        images: vec![empty],
        ..Run::default()
    }
    .exec();
    assert_clean_failure("empty file", &o, "empty.jpg");
    // A bad frame among good ones: the good ones are still reported.
    let o = Run {
        images: vec![bad, golden("12_e2e_tiny_photo.png")],
        ..Run::default()
    }
    .exec();
    assert_clean_failure("bad image among good", &o, "corrupt.png");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("100 detections"),
        "the good image must still be processed"
    );
}

#[test]
fn bad_prompts() {
    let o = Run {
        prompt: "".into(),
        ..Run::default()
    }
    .exec();
    assert_clean_failure("empty prompt", &o, "prompt");
    let o = Run {
        prompt: " . . ".into(),
        ..Run::default()
    }
    .exec();
    assert_clean_failure("prompt with no phrase", &o, "prompt");
    let o = Run {
        prompt: "a photo of a cat".into(),
        extra: vec!["--phrases".into(), "dog".into()],
        ..Run::default()
    }
    .exec();
    assert_clean_failure("phrase not in caption", &o, "dog");
}

#[test]
fn bad_weights_and_configs() {
    let o = Run {
        weights: golden("11_fpn.safetensors"),
        ..Run::default()
    }
    .exec();
    assert_clean_failure("weights of another model", &o, "missing");
    let bytes = std::fs::read(golden("12_e2e_tiny_weights.safetensors")).unwrap();
    let cut = tmp("truncated.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = Run {
        weights: cut.clone(),
        ..Run::default()
    }
    .exec();
    assert_clean_failure("truncated weights", &o, "truncated.safetensors");
    let o = Run {
        weights: tmp("no-such-weights.safetensors"),
        ..Run::default()
    }
    .exec();
    assert_clean_failure("missing weights", &o, "no-such-weights");
    let yaml = std::fs::read_to_string(golden("12_e2e_tiny_config.yaml")).unwrap();
    let bad = tmp("unsupported.yaml");
    std::fs::write(
        &bad,
        yaml.replace("RPN_ARCHITECTURE: VLDYHEAD", "RPN_ARCHITECTURE: ATSS"),
    )
    .unwrap();
    let o = Run {
        config: bad,
        ..Run::default()
    }
    .exec();
    assert_clean_failure("unsupported config", &o, "RPN_ARCHITECTURE");
    let o = Run {
        config: golden("12_e2e_tiny_photo.png"),
        ..Run::default()
    }
    .exec();
    assert_clean_failure("config that is not yaml", &o, "config");
    let o = Run {
        extra: vec!["--threshold".into(), "1.5".into()],
        ..Run::default()
    }
    .exec();
    assert_clean_failure("threshold out of range", &o, "threshold");
}
