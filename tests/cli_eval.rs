//! `glip eval` end to end with the tiny golden model on the CPU: a COCO-format dataset made
//! from the end-to-end goldens' photos (categories out of id order, one name that GLIP's
//! clean_name changes, a crowd box), the results checked against the library's detections
//! with the prompt GLIP builds (labels mapped back to category ids, xywh with GLIP's +1), the
//! table against `glip coco-eval` on the written results, an interrupted run resumed, and
//! bad datasets refused with the file and field named.

use glip_rt::testing::{testdata, E2eGolden, TempDir};
use glip_rt::tokenizer::Prompt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Dataset {
    _dir: TempDir,
    root: PathBuf,
    gt: PathBuf,
    images: PathBuf,
    photos: Vec<(u64, PathBuf)>,
}

/// Categories as the file lists them (not in id order): GLIP sorts them by id.
const CATS: [(u64, &str); 3] = [(3, "cup"), (1, "person"), (7, "rocket_(toy)")];

fn dataset() -> Dataset {
    let dir = TempDir::new("glip-eval");
    let root = dir.path().to_path_buf();
    let images = root.join("images");
    let mut photos = Vec::new();
    let mut imgs = Vec::new();
    let mut anns = Vec::new();
    for (k, g) in E2eGolden::all().unwrap().iter().enumerate() {
        let id = 10 + k as u64;
        let rel = format!("sub{k}/photo{k}.png");
        let dst = images.join(&rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&g.photo, &dst).unwrap();
        photos.push((id, dst));
        imgs.push(serde_json::json!({"id": id, "file_name": rel, "width": 1, "height": 1}));
        for (j, (cat, _)) in CATS.iter().enumerate() {
            let b = [20.0 + 40.0 * j as f64, 30.0, 120.0, 90.0];
            anns.push(serde_json::json!({
                "id": anns.len() + 1, "image_id": id, "category_id": cat, "bbox": b,
                "area": b[2] * b[3], "iscrowd": (j == 2) as u8,
            }));
        }
    }
    let gt = root.join("instances.json");
    let cats: Vec<_> = CATS
        .iter()
        .map(|(id, n)| serde_json::json!({"id": id, "name": n}))
        .collect();
    std::fs::write(
        &gt,
        serde_json::json!({"images": imgs, "categories": cats, "annotations": anns}).to_string(),
    )
    .unwrap();
    Dataset {
        _dir: dir,
        root,
        gt,
        images,
        photos,
    }
}

fn glip<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glip"))
        .args(args)
        .output()
        .unwrap()
}

fn eval(d: &Dataset, gt: &Path, out: &Path, extra: &[&str]) -> Output {
    glip(&eval_args(d, gt, out, extra))
}

fn eval_args(d: &Dataset, gt: &Path, out: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    let bert = testdata().join("tiny_bert_config.json");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "eval".as_ref(),
        "--config".as_ref(),
        g.config.as_os_str(),
        "--weights".as_ref(),
        g.weights.as_os_str(),
        "--bert-config".as_ref(),
        bert.as_os_str(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--gt".as_ref(),
        gt.as_os_str(),
        "--images".as_ref(),
        d.images.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.into_iter().map(|a| a.to_os_string()).collect()
}

/// On a terminal (a pseudo-terminal from util-linux's `script`), the progress is a bar with
/// the count, images/s and the ETA, and the table still follows it.
#[test]
fn a_terminal_gets_a_progress_bar() {
    let d = dataset();
    let out = d.root.join("results.json");
    let mut line = shell_quote(std::ffi::OsStr::new(env!("CARGO_BIN_EXE_glip")));
    for a in eval_args(&d, &d.gt, &out, &[]) {
        line.push(' ');
        line.push_str(&shell_quote(&a));
    }
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    let (screen, err) = text(&o);
    assert!(o.status.success(), "{screen}{err}");
    // The bar's last state: its cells, then the count and rate of the template.
    let bar = screen
        .split(['\r', '\n'])
        .find(|l| l.contains("2/2 images, ") && l.contains(" images/s, ETA "))
        .unwrap_or_else(|| panic!("no bar in {screen:?}"));
    assert!(bar.contains('█'), "{bar:?}");
    assert!(screen.contains("Average Precision"), "{screen}");
}

fn shell_quote(s: &std::ffi::OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"))
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn eval_writes_glips_results_and_scores_them() {
    let d = dataset();
    let out = d.root.join("results.json");
    let o = eval(&d, &d.gt, &out, &[]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 12, "{stdout}");
    // Progress (stderr is not a terminal here: a line at the end).
    assert!(
        stderr.contains("2/2 images, ") && stderr.contains("images/s, ETA 0 s"),
        "{stderr}"
    );
    assert!(stdout
        .starts_with(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = "));
    // The table is what `glip coco-eval` says of the results written.
    let o2 = glip(&[
        "coco-eval".as_ref(),
        "--gt".as_ref(),
        d.gt.as_os_str(),
        "--dt".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(text(&o2).0, stdout);
    // The results: the library's detections with GLIP's prompt (categories by id, cleaned
    // names), labels 1, 2, 3 -> category ids 1, 3, 7, boxes xyxy -> xywh with +1.
    let results: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    let mut det = g
        .detector_builder(glip_rt::DeviceChoice::Cpu)
        .build()
        .unwrap();
    det.set_prompt_parsed(Prompt::from_class_names(&["person", "cup", "rocket_(toy)"]).unwrap())
        .unwrap();
    // GLIP's clean_name keeps the space left where "(toy)" was (spec §8).
    assert_eq!(det.prompt().unwrap().prompt.caption, "person. cup. rocket ");
    let cat_of = [1u64, 3, 7];
    let mut want = Vec::new();
    for (id, photo) in &d.photos {
        for x in det.detect_file(photo).unwrap() {
            let [x1, y1, x2, y2] = x.bbox;
            want.push(serde_json::json!({
                "image_id": id, "category_id": cat_of[x.label as usize - 1],
                "bbox": [x1, y1, x2 - x1 + 1.0, y2 - y1 + 1.0], "score": x.score,
            }));
        }
    }
    assert!(!want.is_empty());
    assert_eq!(results, want);
    assert!(
        !d.root.join("results.json.partial.jsonl").exists(),
        "the partial file is removed"
    );
}

#[test]
fn an_interrupted_eval_goes_on_where_it_stopped() {
    let d = dataset();
    let full = d.root.join("full.json");
    assert!(eval(&d, &d.gt, &full, &[]).status.success());
    let out = d.root.join("resumed.json");
    let o = eval(&d, &d.gt, &out, &["--limit", "1"]);
    let (_, stderr) = text(&o);
    assert!(
        o.status.success() && stderr.contains("stopped after 1 images"),
        "{stderr}"
    );
    assert!(!out.exists());
    let partial = d.root.join("resumed.json.partial.jsonl");
    // A torn line from an interrupted write is dropped and its image redone.
    let mut p = std::fs::read_to_string(&partial).unwrap();
    assert_eq!(p.lines().count(), 1);
    p.push_str("{\"image_id\": 11, \"resul");
    std::fs::write(&partial, p).unwrap();
    let o = eval(&d, &d.gt, &out, &[]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("1 of 2 images already done"), "{stderr}");
    assert_eq!(stdout.lines().count(), 12);
    let (a, b) = (
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&full).unwrap(),
    );
    // (Reading the partial file back must give the same floats: serde_json's
    // float_roundtrip parser; the default one is off by one ulp now and then.)
    assert!(a == b, "a resumed run writes what one run writes");
}

#[test]
fn bad_datasets_are_errors_naming_what_is_wrong() {
    let d = dataset();
    let gt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&d.gt).unwrap()).unwrap();
    let variant = |name: &str, f: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
        let mut v = gt.clone();
        f(&mut v);
        let p = d.root.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            variant("missing_image.json", &|v| {
                v["images"][0]["file_name"] = "nowhere.png".into()
            }),
            "nowhere.png",
        ),
        (
            variant("empty_name.json", &|v| {
                v["categories"][1]["name"] = " ".into()
            }),
            "category 1 has an empty name",
        ),
        (
            variant("no_images.json", &|v| v["images"] = serde_json::json!([])),
            "`images` is empty",
        ),
        (
            variant("no_file_name.json", &|v| {
                v["images"][0].as_object_mut().unwrap().remove("file_name");
            }),
            "has no `file_name`",
        ),
        (
            variant("not_coco.json", &|v| *v = serde_json::json!({"a": 1})),
            "`images` is missing",
        ),
    ];
    for (gt, want) in cases {
        let o = eval(&d, &gt, &d.root.join("r.json"), &[]);
        let (_, stderr) = text(&o);
        assert!(!o.status.success(), "{want}: succeeded");
        assert!(stderr.contains(want), "{want}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
