//! `glip detect` as a user runs it: the golden photo through the binary gives the golden
//! detections; bad inputs give a clear error and a non-zero exit, never a panic.

use glip_rt::testing::{load_golden, testdata, E2eGolden};
use std::path::PathBuf;
use std::process::{Command, Output};

fn golden(name: &str) -> PathBuf {
    testdata().join("golden").join(name)
}

fn tmp(name: &str) -> PathBuf {
    glip_rt::testing::test_tmp("glip-cli-detect", name)
}

struct Run {
    config: PathBuf,
    weights: PathBuf,
    images: Vec<PathBuf>,
    prompt: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

/// The tiny golden's final detection count (from its JSON).
fn tiny_golden_count() -> usize {
    E2eGolden::load("12_e2e_tiny").unwrap().num_final
}

impl Default for Run {
    /// The tiny golden's photo with its caption.
    fn default() -> Self {
        let g = E2eGolden::load("12_e2e_tiny").unwrap();
        Run {
            config: g.config,
            weights: g.weights,
            images: vec![g.photo],
            prompt: g.caption,
            extra: vec![],
            env: vec![],
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
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c.output().unwrap()
    }
    fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
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

impl Run {
    /// The golden's photo with its caption and phrases.
    fn golden(g: &E2eGolden, extra: &[&str]) -> Run {
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.push("--phrases".into());
        extra.extend(g.phrases.iter().cloned());
        Run {
            config: g.config.clone(),
            weights: g.weights.clone(),
            images: vec![g.photo.clone()],
            prompt: g.caption.clone(),
            extra,
            env: vec![],
        }
    }
}

/// Matches every golden detection (boxes scaled to the photo) to a distinct output with the
/// same label and phrase, a score within `score_tol` and a box within `box_tol` px (CPU) or
/// at IoU ≥ 0.95 (`box_tol` None: a device); returns how many matched.
fn match_golden(g: &E2eGolden, o: &Output, score_tol: f32, box_tol: Option<f32>) -> usize {
    assert!(o.status.success(), "{}: {}", g.name, stderr(o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["width"], g.photo_hw.1);
    assert_eq!(v["height"], g.photo_hw.0);
    let dets = v["detections"].as_array().unwrap();
    let t = g.tensors().unwrap();
    let labels = t["output/final_sorted.labels"].i32s().unwrap().to_vec();
    let scores = t["output/final_sorted.scores"].to_f32_vec().unwrap();
    let boxes = t["output/final_sorted.boxes"].to_f32_vec().unwrap();
    assert_eq!(dets.len(), g.num_final);
    let (sx, sy) = g.box_scale();
    let mut used = vec![false; dets.len()];
    let mut matched = 0;
    for i in 0..labels.len() {
        let want = [
            boxes[i * 4] * sx,
            boxes[i * 4 + 1] * sy,
            boxes[i * 4 + 2] * sx,
            boxes[i * 4 + 3] * sy,
        ];
        let hit = dets.iter().enumerate().position(|(j, d)| {
            let b: Vec<f32> = d["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let close = match box_tol {
                Some(tol) => (0..4).all(|k| (b[k] - want[k]).abs() <= tol),
                None => iou(&[b[0], b[1], b[2], b[3]], &want) >= 0.95,
            };
            !used[j]
                && d["label"].as_i64().unwrap() as i32 == labels[i]
                && (d["score"].as_f64().unwrap() as f32 - scores[i]).abs() <= score_tol
                && close
        });
        if let Some(j) = hit {
            used[j] = true;
            matched += 1;
            let phrase = dets[j]["phrase"].as_str().unwrap();
            assert_eq!(phrase, g.phrases[labels[i] as usize - 1]);
        }
    }
    println!(
        "{}: {matched} of {} golden detections matched",
        g.name,
        labels.len()
    );
    matched
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0] + 1.0).max(0.0) * (r[3] - r[1] + 1.0).max(0.0);
    let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    w * h / (area(a) + area(b) - w * h).max(f32::MIN_POSITIVE)
}

#[test]
fn photo_gives_the_golden_detections() {
    for g in E2eGolden::all().unwrap() {
        let o = Run::golden(&g, &["--format", "jsonl", "--device", "cpu"]).exec();
        let tol = 1e-3 * g.box_scale().0.max(g.box_scale().1).max(1.0);
        assert_eq!(
            match_golden(&g, &o, 1e-5, Some(tol)),
            g.num_final,
            "{}",
            g.name
        );
    }
}

/// The Done check of the device issues: `--device emu -v` gives the golden's detections
/// within the device tolerance (≥ 98 % matched at IoU ≥ 0.95, scores within 2e-2) and lists
/// the ops that ran on the CPU; with every op on the device, `--no-fallback` gives them too.
#[test]
fn emulated_device_gives_the_golden_detections_and_lists_its_fallbacks() {
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    let o = Run::golden(&g, &["--format", "jsonl", "--device", "emu", "-v"])
        .env("GLIP_EMU_CHECKS", "fast")
        .exec();
    let matched = match_golden(&g, &o, 2e-2, None);
    assert!(
        matched as f32 >= 0.98 * g.num_final as f32,
        "{matched} of {} matched",
        g.num_final
    );
    let e = stderr(&o);
    assert!(e.contains("device: emulated CUDA device"), "{e}");
    let falling = glip_rt::backend::cuda::ops::CPU_FALLBACK_OPS;
    let o = Run::golden(
        &g,
        &["--format", "jsonl", "--device", "emu", "--no-fallback"],
    )
    .env("GLIP_EMU_CHECKS", "fast")
    .exec();
    if falling.is_empty() {
        // Every op on the device: no fallback table, and refusing fallbacks changes nothing.
        assert!(!e.contains("in place of the device"), "{e}");
        assert_eq!(match_golden(&g, &o, 2e-2, None), matched);
    } else {
        // The table lists the ops without a kernel; refusing fallbacks fails on the first
        // one the model reaches, naming it.
        assert!(
            e.contains("ops run on the CPU in place of the device"),
            "{e}"
        );
        assert!(falling.iter().all(|op| e.contains(op)), "{e}");
        assert_clean_failure("--no-fallback", &o, "not on CUDA yet");
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
        String::from_utf8_lossy(&o.stdout).contains(&format!("{} detections", tiny_golden_count())),
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

/// `--phrases auto` finds the caption's noun phrases and grounds them: the same output as
/// naming them by hand (each occurs once), the phrases listed on stderr; a caption without
/// a noun phrase is a clear error.
#[test]
fn phrases_auto_grounds_the_noun_phrases() {
    let caption = "A woman with a red umbrella walks past a man.";
    let run = |phrases: &[&str]| {
        let mut extra: Vec<String> = vec!["--format".into(), "json".into(), "--phrases".into()];
        extra.extend(phrases.iter().map(|p| p.to_string()));
        Run {
            prompt: caption.into(),
            extra,
            ..Run::default()
        }
        .exec()
    };
    let auto = run(&["auto"]);
    assert!(auto.status.success(), "{}", stderr(&auto));
    assert!(
        stderr(&auto).contains("phrases: a woman | a red umbrella | a man"),
        "{}",
        stderr(&auto)
    );
    let by_hand = run(&["a woman", "a red umbrella", "a man"]);
    assert!(by_hand.status.success(), "{}", stderr(&by_hand));
    assert!(!auto.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&auto.stdout),
        String::from_utf8_lossy(&by_hand.stdout)
    );
    let o = Run {
        prompt: "run quickly!".into(),
        extra: vec!["--phrases".into(), "auto".into()],
        ..Run::default()
    }
    .exec();
    assert_clean_failure("caption without a noun phrase", &o, "no noun phrase");
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

/// A device that is not there is a clear error, never a panic: CUDA on a machine without a
/// GPU (or a build without kernels), and a name that is no device at all.
#[test]
fn an_absent_or_unknown_device_is_a_clear_error() {
    if glip_rt::backend::cuda::device_count().is_ok() && glip_rt::kernels::COMPILED {
        println!("a GPU is present: the absent-device case cannot be shown here");
    } else {
        let o = Run {
            extra: vec!["--device".into(), "cuda".into()],
            ..Run::default()
        }
        .exec();
        assert_clean_failure("--device cuda without a GPU", &o, "cuda");
    }
    let o = Run {
        extra: vec!["--device".into(), "cuda:9999".into()],
        ..Run::default()
    }
    .exec();
    assert!(
        !o.status.success() && !stderr(&o).contains("panicked"),
        "{}",
        stderr(&o)
    );
    let o = Run {
        extra: vec!["--device".into(), "tpu".into()],
        ..Run::default()
    }
    .exec();
    let e = stderr(&o);
    assert!(!o.status.success() && !e.contains("panicked"), "{e}");
    assert!(e.contains("tpu") && e.contains("cuda:N"), "{e}");
}

/// `--device auto` (the default) says once on stderr where it runs and why.
#[test]
fn auto_says_which_device_once() {
    let o = Run::default().exec();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.matches("running on").count(), 1, "{e}");
    let o = Run {
        extra: vec!["--device".into(), "cpu".into()],
        ..Run::default()
    }
    .exec();
    assert!(
        !stderr(&o).contains("running on"),
        "an explicit device needs no notice"
    );
}

/// `glip detect` on folders (with and without --recursive) and patterns, in every format: the
/// images found in name order, a bad file reported and skipped with a non-zero exit, COCO
/// results with the file name's number as image id and xywh with GLIP's +1, the same
/// detections as one-line-per-image JSON.
#[test]
fn folders_patterns_and_every_format() {
    let goldens = E2eGolden::all().unwrap();
    let (a, b) = (&goldens[0], goldens.last().unwrap());
    let tmp = glip_rt::testing::TempDir::new("glip-detect-folders");
    let dir = tmp.join("photos");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::copy(&a.photo, dir.join("7.png")).unwrap();
    std::fs::copy(&b.photo, dir.join("sub/000000000042.png")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    std::fs::write(dir.join("zz_broken.png"), "not a png either").unwrap();
    let run = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_glip"))
            .arg("detect")
            .args(a.model_args())
            .args(["--device", "cpu", "--prompt", "person. cup. rocket."])
            .args(args)
            .output()
            .unwrap()
    };
    let d = dir.to_str().unwrap();
    let out = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    // The folder alone: 7.png and the broken file (reported, exit 1), not notes.txt or sub/.
    let o = run(&["--image", d, "--format", "jsonl"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("zz_broken.png"), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["image"].as_str().unwrap().ends_with("7.png"));
    // Recursive, as one JSON document: both photos in name order.
    let o = run(&["--image", d, "-r", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let names: Vec<&str> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["image"].as_str().unwrap())
        .collect();
    assert!(
        names.len() == 2
            && names[0].ends_with("7.png")
            && names[1].ends_with("sub/000000000042.png"),
        "{names:?}"
    );
    // COCO results of the same run: ids from the file names, xywh with +1, same detections.
    let o = run(&["--image", d, "-r", "--format", "coco"]);
    let coco: Vec<serde_json::Value> = serde_json::from_str(&out(&o)).unwrap();
    for (img, id) in doc.as_array().unwrap().iter().zip([7u64, 42]) {
        let dets = img["detections"].as_array().unwrap();
        let mine: Vec<&serde_json::Value> = coco.iter().filter(|c| c["image_id"] == id).collect();
        assert_eq!(mine.len(), dets.len(), "image {id}");
        assert!(!dets.is_empty());
        for (c, d) in mine.iter().zip(dets) {
            let b: Vec<f64> = d["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let w: Vec<f64> = c["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(c["category_id"], d["label"]);
            assert_eq!(c["score"], d["score"]);
            assert!(
                (w[0] - b[0]).abs() < 1e-9 && (w[2] - (b[2] - b[0] + 1.0)).abs() < 1e-3,
                "{w:?} {b:?}"
            );
            assert!((w[3] - (b[3] - b[1] + 1.0)).abs() < 1e-3, "{w:?} {b:?}");
        }
    }
    // Patterns: one that matches, one that matches nothing (an error naming it).
    let pat = format!("{d}/*.png");
    let o = run(&["--image", &pat, "--format", "jsonl"]);
    assert_eq!(out(&o).lines().count(), 1, "7.png (zz_broken.png fails)");
    let none = format!("{d}/*.jpg");
    let o = run(&["--image", &none]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("matches no file"), "{}", stderr(&o));
}

/// `--annotate DIR`: each image written under its name with its boxes drawn (an input name
/// seen twice gets `-2`); with a threshold no detection reaches, the picture is unchanged.
#[test]
fn annotate_writes_each_picture_with_its_boxes() {
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    let tmp = glip_rt::testing::TempDir::new("glip-detect-annotate");
    let bert = testdata().join("tiny_bert_config.json");
    let run = |dir: &std::path::Path, thr: &str| -> Output {
        Command::new(env!("CARGO_BIN_EXE_glip"))
            .arg("detect")
            .arg("--config")
            .arg(&g.config)
            .arg("--weights")
            .arg(&g.weights)
            .arg("--bert-config")
            .arg(&bert)
            .args(["--device", "cpu", "--prompt", "person. cup. rocket."])
            .arg("--image")
            .arg(&g.photo)
            .arg(&g.photo)
            .arg("--annotate")
            .arg(dir)
            .args(["--annotate-threshold", thr])
            .output()
            .unwrap()
    };
    let original = image::open(&g.photo).unwrap().to_rgb8();
    let name = g.photo.file_name().unwrap().to_str().unwrap().to_string();
    let stem = name.trim_end_matches(".png");
    let drawn = tmp.join("drawn");
    let o = run(&drawn, "0.4");
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [name.clone(), format!("{stem}-2.png")] {
        let pic = image::open(drawn.join(&f)).unwrap().to_rgb8();
        assert_eq!(pic.dimensions(), original.dimensions(), "{f}");
        let changed = pic
            .pixels()
            .zip(original.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed > 1000, "{f}: only {changed} pixels drawn");
    }
    let none = tmp.join("none");
    let o = run(&none, "1");
    assert!(o.status.success(), "{}", stderr(&o));
    let pic = image::open(none.join(&name)).unwrap().to_rgb8();
    assert!(
        pic == original,
        "nothing scores 1: the picture is unchanged"
    );
}

/// `--phrase-threshold PHRASE=VALUE` (alias `--class-threshold`) keeps that phrase's
/// detections from VALUE on and the others from `--threshold`: the output equals the
/// unfiltered output filtered so, in the same order. Unknown phrases and bad values are
/// clear errors.
#[test]
fn phrase_thresholds_filter_their_phrase_only() {
    let dets = |o: &Output| -> Vec<serde_json::Value> {
        assert!(o.status.success(), "{}", stderr(o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["detections"].as_array().unwrap().clone()
    };
    let run = |extra: &[&str]| {
        let mut e: Vec<String> = vec!["--format".into(), "jsonl".into()];
        e.extend(extra.iter().map(|s| s.to_string()));
        Run {
            extra: e,
            ..Run::default()
        }
        .exec()
    };
    let all = dets(&run(&[]));
    let score = |d: &serde_json::Value| d["score"].as_f64().unwrap() as f32;
    let phrase = |d: &serde_json::Value| d["phrase"].as_str().unwrap().to_string();
    let pairs: Vec<_> = all.iter().map(|d| (phrase(d), score(d))).collect();
    let (target, global, own) = glip_rt::testing::phrase_threshold_case(&pairs).unwrap();
    let want: Vec<_> = all
        .iter()
        .filter(|d| score(d) >= if phrase(d) == target { own } else { global })
        .cloned()
        .collect();
    let kept_by_global = all.iter().filter(|d| score(d) >= global).count();
    assert!(want.len() < all.len() && want.len() > kept_by_global);
    for flag in ["--phrase-threshold", "--class-threshold"] {
        let (g, t) = (global.to_string(), format!("{target}={own}"));
        let got = dets(&run(&["--threshold", &g, flag, &t]));
        assert_eq!(got, want, "{flag}");
    }
    let o = run(&["--phrase-threshold", "no such phrase=0.5"]);
    assert_clean_failure(
        "unknown phrase",
        &o,
        "\"no such phrase\" is not a phrase of the prompt",
    );
    for bad in [
        format!("{target}=1.5"),
        format!("{target}=nan"),
        target.clone(),
        format!("={global}"),
    ] {
        let o = run(&["--phrase-threshold", &bad]);
        assert_clean_failure(
            &format!("--phrase-threshold {bad}"),
            &o,
            "--phrase-threshold",
        );
    }
}

/// Reused blocks change nothing: with the host block cache taking every op output over
/// 4 KiB, three runs of the golden photo print exactly what they print with the cache off
/// (and the first equals the golden, as `photo_gives_the_golden_detections` checks).
#[test]
fn reused_host_blocks_change_no_detection() {
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    let out = |cache_mib: &str| {
        let mut r = Run::golden(&g, &["--format", "json", "--device", "cpu"])
            .env("GLIP_BLOCK_CACHE_MIN_KIB", "4")
            .env("GLIP_BLOCK_CACHE_MIB", cache_mib);
        r.images = vec![g.photo.clone(); 3];
        let o = r.exec();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let (on, off) = (out("2048"), out("0"));
    assert_eq!(on.matches("\"score\"").count(), 3 * g.num_final);
    assert_eq!(on, off);
}

/// `--model DIR` (or GLIP_MODEL_DIR) reads config.yaml, model.safetensors and
/// bert_config.json from a model folder: the same output as naming the files; a flag names a
/// file in the folder's place; a folder without its weights, a path that is no folder, and
/// no model at all are clear errors.
#[test]
fn a_model_folder_stands_for_the_file_flags() {
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    let dir = g.model_dir("glip-model-dir");
    let detect = |args: &[std::ffi::OsString], env: Option<&std::path::Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_glip"));
        c.arg("detect")
            .args([
                "--format", "json", "--device", "cpu", "--prompt", &g.caption,
            ])
            .arg("--image")
            .arg(&g.photo)
            .args(args)
            .env_remove("GLIP_MODEL_DIR");
        if let Some(d) = env {
            c.env("GLIP_MODEL_DIR", d);
        }
        c.output().unwrap()
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let files = g.model_args();
    let want = detect(&files, None);
    assert!(want.status.success(), "{}", stderr(&want));
    assert!(!want.stdout.is_empty());
    let by_dir = detect(&[os("--model"), dir.path().into()], None);
    assert!(by_dir.status.success(), "{}", stderr(&by_dir));
    assert_eq!(by_dir.stdout, want.stdout);
    let by_env = detect(&[], Some(dir.path()));
    assert!(by_env.status.success(), "{}", stderr(&by_env));
    assert_eq!(by_env.stdout, want.stdout);
    // The folder's weights replaced by a broken file, the good one named by the flag.
    std::fs::write(dir.join("model.safetensors"), b"not weights").unwrap();
    let broken = detect(&[os("--model"), dir.path().into()], None);
    assert_clean_failure("broken weights in the folder", &broken, "model.safetensors");
    let flag = detect(
        &[
            os("--model"),
            dir.path().into(),
            os("--weights"),
            g.weights.clone().into(),
        ],
        None,
    );
    assert!(flag.status.success(), "{}", stderr(&flag));
    assert_eq!(flag.stdout, want.stdout);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let o = detect(&[os("--model"), dir.path().into()], None);
    assert_clean_failure("no weights in the folder", &o, "no model.safetensors in it");
    let o = detect(&[os("--model"), g.photo.clone().into()], None);
    assert_clean_failure("a file as the folder", &o, "not a folder");
    let o = detect(&[], None);
    assert_clean_failure("no model", &o, "--model DIR");
}
