//! The C ABI from C: builds tests/c/detect.c against include/glip.h and the cdylib, runs it
//! on the golden photo and compares with the Rust API.

use glip_rt::api::Detector;
use glip_rt::preprocess::load_image;
use glip_rt::testing::{testdata, E2eGolden};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where cargo put the cdylib: next to this test in target/<profile>/deps, or uplifted to
/// target/<profile> by a plain build.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    let profile = deps.parent().unwrap().to_path_buf();
    [deps, profile]
        .into_iter()
        .find(|d| d.join("libglip_rt.so").exists())
        .expect("libglip_rt.so (the cdylib) not built")
}

#[test]
fn c_program_detects_like_the_rust_api() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lib = lib_dir();
    let dir = std::env::temp_dir().join(format!("glip-capi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("detect");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .arg("-std=c99")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/detect.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lglip_rt")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .status()
        .unwrap();
    assert!(st.success(), "{cc} failed to build tests/c/detect.c");

    for g in E2eGolden::all().unwrap() {
        c_program_on_golden(&exe, &dir, &g);
    }
    // Tests leave nothing behind.
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The C program (tests/c/detect.c) on a golden's photo and caption vs the Rust API.
fn c_program_on_golden(exe: &Path, dir: &Path, g: &E2eGolden) {
    let img = load_image(&g.photo, true).unwrap();
    let raw = dir.join("photo.rgb");
    std::fs::write(&raw, &img.data).unwrap();
    let out = Command::new(exe)
        .arg(&g.config)
        .arg(&g.weights)
        .arg(testdata().join("tiny_bert_config.json"))
        .arg(&raw)
        .arg(img.width.to_string())
        .arg(img.height.to_string())
        .arg(&g.caption)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "C program failed ({:?}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("nonexistent.safetensors"),
        "error message names the file:\n{text}"
    );

    let mut det = Detector::builder()
        .config(&g.config)
        .weights(&g.weights)
        .bert_config(testdata().join("tiny_bert_config.json"))
        .build()
        .unwrap();
    det.set_prompt(&g.caption).unwrap();
    let want = det.detect(&img).unwrap();
    let count_line = text.lines().find(|l| l.starts_with("count ")).unwrap();
    assert_eq!(count_line, format!("count {}", want.len()));
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("count "))
        .skip(1)
        .collect();
    // The C program prints at most 16 rows (its buffer).
    assert_eq!(rows.len(), want.len().min(16), "{}", g.name);
    for (row, d) in rows.iter().zip(&want) {
        // "label phrase score x1 y1 x2 y2": the phrase may hold spaces ("a cat").
        let f: Vec<&str> = row.split(' ').collect();
        let n = f.len();
        assert!(n >= 7, "row `{row}`");
        assert_eq!(f[0].parse::<u32>().unwrap(), d.label);
        assert_eq!(f[1..n - 5].join(" "), d.phrase);
        assert!((f[n - 5].parse::<f32>().unwrap() - d.score).abs() < 1e-5);
        for k in 0..4 {
            assert!((f[n - 4 + k].parse::<f32>().unwrap() - d.bbox[k]).abs() < 1e-2);
        }
    }
}

/// `glip_detector_new_on` picks the device by name; an unknown one is an error naming it.
#[test]
fn c_abi_chooses_the_device() {
    use glip_rt::capi::{glip_detector_free, glip_detector_new_on, glip_last_error};
    use std::ffi::{CStr, CString};
    let g = testdata().join("golden");
    let path = |p: std::path::PathBuf| CString::new(p.display().to_string()).unwrap();
    let (cfg, w, bert) = (
        path(g.join("12_e2e_tiny_config.yaml")),
        path(g.join("12_e2e_tiny_weights.safetensors")),
        path(testdata().join("tiny_bert_config.json")),
    );
    for (device, ok) in [
        (Some(c"cpu"), true),
        (Some(c"emu"), true),
        (None, true),
        (Some(c"tpu"), false),
    ] {
        let dev = device.map_or(std::ptr::null(), |d| d.as_ptr());
        // SAFETY: NUL-terminated strings or NULL, as glip.h asks.
        let d = unsafe {
            glip_detector_new_on(
                cfg.as_ptr(),
                w.as_ptr(),
                bert.as_ptr(),
                std::ptr::null(),
                dev,
            )
        };
        assert_eq!(!d.is_null(), ok, "{device:?}");
        if ok {
            // SAFETY: a handle from glip_detector_new_on, freed once.
            unsafe { glip_detector_free(d) };
        } else {
            // SAFETY: glip_last_error returns a NUL-terminated string owned by the library.
            let msg = unsafe { CStr::from_ptr(glip_last_error()) }
                .to_string_lossy()
                .into_owned();
            assert!(msg.contains("tpu") && msg.contains("cuda:N"), "{msg}");
        }
    }
}
