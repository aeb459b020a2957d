//! The C ABI from C: builds tests/c/detect.c against include/glip.h and the cdylib, runs it
//! on the golden photo and compares with the Rust API.

use glip_rt::api::Detector;
use glip_rt::pixfmt::PixFmt;
use glip_rt::preprocess::load_image;
use glip_rt::testing::{testdata, E2eGolden, TempDir};
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
    let tmp = TempDir::new("glip-capi");
    let dir = tmp.path().to_path_buf();
    let exe = build_c("detect", &dir);

    for g in E2eGolden::all().unwrap() {
        c_program_on_golden(&exe, &dir, &g);
    }
}

/// tests/c/<name>.c built against include/glip.h and the cdylib (C99, warnings as errors,
/// pthreads), into `dir`.
fn build_c(name: &str, dir: &Path) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lib = lib_dir();
    let exe = dir.join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args([
            "-std=c99",
            "-D_POSIX_C_SOURCE=200809L",
            "-Wall",
            "-Wextra",
            "-Werror",
        ])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join(format!("tests/c/{name}.c")))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lglip_rt")
        .arg("-lpthread")
        // DT_RPATH (not RUNPATH): found before LD_LIBRARY_PATH, where cargo test lists
        // target/<profile> too, whose libglip_rt.so may be an older build's.
        .arg(format!("-Wl,--disable-new-dtags,-rpath,{}", lib.display()))
        .status()
        .unwrap();
    assert!(st.success(), "{cc} failed to build tests/c/{name}.c");
    exe
}

/// Every pixel format through `glip_detector_detect_frame`, rows packed and padded (the
/// padding 0xEE): the same detections, bit for bit, as the Rust API on the frame's RGB; and
/// `glip_detector_detect_cuda` on a CPU detector is refused with GLIP_STATUS_DEVICE.
#[test]
fn c_frames_in_every_format_and_stride_detect_like_the_rust_api() {
    let tmp = TempDir::new("glip-capi-frames");
    let exe = build_c("frames", tmp.path());
    for g in E2eGolden::all().unwrap() {
        let img = load_image(&g.photo, true).unwrap();
        let (w, h) = (img.width, img.height);
        let mut det = g
            .detector_builder(glip_rt::DeviceChoice::Cpu)
            .build()
            .unwrap();
        det.set_prompt(&g.caption).unwrap();
        for f in PixFmt::ALL {
            let packed = f.from_rgb(&img);
            let file = tmp.join("frame.raw");
            std::fs::write(&file, &packed).unwrap();
            let want = det.detect(&f.to_rgb(w, h, &packed).unwrap()).unwrap();
            assert!(
                !want.is_empty(),
                "{} {}: no detections to compare",
                g.name,
                f.name()
            );
            for pad in ["0", "37"] {
                let out = Command::new(&exe)
                    .arg("detect")
                    .arg(&g.config)
                    .arg(&g.weights)
                    .arg(testdata().join("tiny_bert_config.json"))
                    .arg(&g.caption)
                    .arg(f.name())
                    .arg(w.to_string())
                    .arg(h.to_string())
                    .arg(&file)
                    .arg(pad)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                let what = format!("{} {} pad {pad}", g.name, f.name());
                assert!(
                    out.status.success(),
                    "{what}: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    text.contains(&format!("count {}\n", want.len())),
                    "{what}: {text}"
                );
                let rows: Vec<Vec<f32>> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("det "))
                    .map(|l| l.split(' ').map(|v| v.parse::<f32>().unwrap()).collect())
                    .collect();
                assert_eq!(rows.len(), want.len().min(128), "{what}");
                for (r, d) in rows.iter().zip(&want) {
                    let expect = [
                        d.label as f32,
                        d.score,
                        d.bbox[0],
                        d.bbox[1],
                        d.bbox[2],
                        d.bbox[3],
                    ];
                    assert_eq!(
                        r.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        expect.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{what}: {r:?} vs {expect:?}"
                    );
                }
                let cuda = text.lines().find(|l| l.starts_with("cuda ")).unwrap_or("");
                assert!(
                    cuda.starts_with("cuda 6 ") && cuda.contains("CUDA backend on a GPU"),
                    "{what}: {cuda}"
                );
            }
        }
    }
}

/// Two detectors on two threads at once (the two end-to-end goldens, or one twice): every
/// result equals that detector's result alone, and each thread's glip_last_error is its own.
#[test]
fn c_two_detectors_on_two_threads() {
    let tmp = TempDir::new("glip-capi-threads");
    let exe = build_c("frames", tmp.path());
    let goldens = E2eGolden::all().unwrap();
    let pick = [&goldens[0], goldens.last().unwrap()];
    let mut cmd = Command::new(&exe);
    cmd.args(["threads", "3"])
        .arg(testdata().join("tiny_bert_config.json"));
    for (k, g) in pick.iter().enumerate() {
        let img = load_image(&g.photo, true).unwrap();
        let raw = tmp.join(&format!("photo{k}.rgb"));
        std::fs::write(&raw, &img.data).unwrap();
        cmd.arg(&g.config)
            .arg(&g.weights)
            .arg(&g.caption)
            .arg(&raw)
            .arg(img.width.to_string())
            .arg(img.height.to_string());
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("threads ok "),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each failure's status: a bad argument, a missing file, a bad prompt.
#[test]
fn c_abi_failures_have_their_status() {
    use glip_rt::capi::*;
    let g = testdata().join("golden");
    let path = |p: std::path::PathBuf| std::ffi::CString::new(p.display().to_string()).unwrap();
    let (cfg, w, bert) = (
        path(g.join("12_e2e_tiny_config.yaml")),
        path(g.join("12_e2e_tiny_weights.safetensors")),
        path(testdata().join("tiny_bert_config.json")),
    );
    let missing = path(g.join("no-such-weights.safetensors"));
    // SAFETY: NUL-terminated strings or NULL, as glip.h asks; handles freed once.
    unsafe {
        let none = glip_detector_new(
            cfg.as_ptr(),
            missing.as_ptr(),
            bert.as_ptr(),
            std::ptr::null(),
        );
        assert!(none.is_null());
        assert_eq!(glip_last_error_code(), GlipStatus::Io);
        let none = glip_detector_new_on(
            cfg.as_ptr(),
            w.as_ptr(),
            bert.as_ptr(),
            std::ptr::null(),
            c"tpu".as_ptr(),
        );
        assert!(none.is_null());
        assert_eq!(glip_last_error_code(), GlipStatus::InvalidArgument);
        let d = glip_detector_new_on(
            cfg.as_ptr(),
            w.as_ptr(),
            bert.as_ptr(),
            std::ptr::null(),
            c"cpu".as_ptr(),
        );
        assert!(!d.is_null());
        assert_eq!(
            glip_detector_set_prompt(d, c"".as_ptr()),
            GlipStatus::Prompt
        );
        assert_eq!(
            glip_detector_set_prompt(d, c"a cat.".as_ptr()),
            GlipStatus::Ok
        );
        let mut out = [GlipDetection::default(); 4];
        let mut count = 0u32;
        let px = [0u8; 12];
        // A format that is not one, a stride under the row, a plane missing: bad arguments.
        for (format, stride, planes) in [(7, 0, 1), (0, 5, 1), (5, 0, 1)] {
            let mut f = GlipFrame {
                format,
                width: 2,
                height: 2,
                planes: [std::ptr::null(); 3],
                strides: [stride, 0, 0],
            };
            for p in f.planes.iter_mut().take(planes) {
                *p = px.as_ptr();
            }
            let st = glip_detector_detect_frame(d, &f, out.as_mut_ptr(), 4, &mut count);
            assert_eq!(
                st,
                GlipStatus::InvalidArgument,
                "format {format} stride {stride}"
            );
        }
        let f = GlipFrame {
            format: 0,
            width: 2,
            height: 2,
            planes: [px.as_ptr(), std::ptr::null(), std::ptr::null()],
            strides: [0; 3],
        };
        assert_eq!(
            glip_detector_detect_frame(d, &f, out.as_mut_ptr(), 4, &mut count),
            GlipStatus::Ok
        );
        assert_eq!(
            glip_detector_detect_cuda(d, &f, std::ptr::null_mut(), out.as_mut_ptr(), 4, &mut count),
            GlipStatus::Device
        );
        glip_detector_free(d);
    }
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

/// `glip_detector_new_dir` loads a model folder: the same detections as naming its files;
/// a folder without its weights and a NULL folder are errors naming what is wrong.
#[test]
fn c_abi_loads_a_model_folder() {
    use glip_rt::capi::{
        glip_detector_free, glip_detector_new_dir, glip_detector_new_on, glip_detector_set_prompt,
        glip_last_error, GlipDetector, GlipStatus,
    };
    use std::ffi::{CStr, CString};
    let g = glip_rt::testing::E2eGolden::load("12_e2e_tiny").unwrap();
    let dir = g.model_dir("glip-capi-model");
    let cs = |p: &std::path::Path| CString::new(p.display().to_string()).unwrap();
    let img = glip_rt::preprocess::load_image(&g.photo, true).unwrap();
    let prompt = CString::new(g.caption.clone()).unwrap();
    let detect = |d: *mut GlipDetector| -> Vec<(u32, f32, [f32; 4])> {
        assert!(!d.is_null());
        // SAFETY: a live handle from glip_detector_new_*, freed once here.
        unsafe {
            assert_eq!(glip_detector_set_prompt(d, prompt.as_ptr()), GlipStatus::Ok);
        }
        let out = detect_rgb(d, &img);
        // SAFETY: as above.
        unsafe { glip_detector_free(d) };
        out.iter()
            .map(|x| (x.label, x.score, [x.x1, x.y1, x.x2, x.y2]))
            .collect()
    };
    let bert = testdata().join("tiny_bert_config.json");
    let (c, w, b, cpu) = (cs(&g.config), cs(&g.weights), cs(&bert), c"cpu");
    // SAFETY: NUL-terminated strings or NULL, as glip.h asks.
    let by_files = detect(unsafe {
        glip_detector_new_on(
            c.as_ptr(),
            w.as_ptr(),
            b.as_ptr(),
            std::ptr::null(),
            cpu.as_ptr(),
        )
    });
    // SAFETY: as above.
    let by_dir = detect(unsafe { glip_detector_new_dir(cs(dir.path()).as_ptr(), cpu.as_ptr()) });
    assert!(!by_files.is_empty());
    assert_eq!(by_dir, by_files);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    for (arg, needle) in [
        (Some(cs(dir.path())), "no model.safetensors in it"),
        (None, "model_dir path is NULL"),
    ] {
        let p = arg.as_ref().map_or(std::ptr::null(), |a| a.as_ptr());
        // SAFETY: as above.
        let d = unsafe { glip_detector_new_dir(p, cpu.as_ptr()) };
        assert!(d.is_null());
        // SAFETY: glip_last_error returns a NUL-terminated string owned by the library.
        let msg = unsafe { CStr::from_ptr(glip_last_error()) }
            .to_string_lossy()
            .into_owned();
        assert!(msg.contains(needle), "{msg}");
    }
}

/// `glip_detector_set_threshold` and `glip_detector_set_phrase_thresholds` keep what the
/// same rule keeps of the unfiltered detections (thresholds taken from those detections:
/// `testing::phrase_threshold_case`); bad values, unknown phrases and a missing prompt are
/// errors that change nothing; NULL clears the phrase thresholds.
#[test]
fn c_abi_thresholds_filter_like_the_rule() {
    use glip_rt::capi::{
        glip_detector_free, glip_detector_new_dir, glip_detector_phrase,
        glip_detector_set_phrase_thresholds, glip_detector_set_prompt, glip_detector_set_threshold,
        GlipDetector, GlipStatus,
    };
    use std::ffi::{CStr, CString};
    let g = glip_rt::testing::E2eGolden::load("12_e2e_tiny").unwrap();
    let dir = g.model_dir("glip-capi-thresholds");
    let img = glip_rt::preprocess::load_image(&g.photo, true).unwrap();
    let path = CString::new(dir.path().display().to_string()).unwrap();
    // SAFETY: NUL-terminated strings, as glip.h asks; the handle is freed once at the end.
    let d = unsafe { glip_detector_new_dir(path.as_ptr(), c"cpu".as_ptr()) };
    assert!(!d.is_null());
    let detect = |d: *mut GlipDetector| -> Vec<(String, f32, u32)> {
        detect_rgb(d, &img)
            .iter()
            .map(|x| {
                // SAFETY: a live handle; the phrase is NUL-terminated and owned by it.
                let p = unsafe { CStr::from_ptr(glip_detector_phrase(d, x.label)) };
                (p.to_string_lossy().into_owned(), x.score, x.label)
            })
            .collect()
    };
    let json = |pairs: &[(&str, f32)]| {
        let m: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        CString::new(serde_json::Value::Object(m).to_string()).unwrap()
    };
    // SAFETY (every unsafe block below): `d` is live and used by this thread only; the
    // strings are NUL-terminated or NULL.
    let no_prompt = unsafe { glip_detector_set_phrase_thresholds(d, json(&[]).as_ptr()) };
    assert_eq!(no_prompt, GlipStatus::Prompt);
    let prompt = CString::new(g.caption.clone()).unwrap();
    assert_eq!(
        unsafe { glip_detector_set_prompt(d, prompt.as_ptr()) },
        GlipStatus::Ok
    );
    let all = detect(d);
    let pairs: Vec<(String, f32)> = all.iter().map(|(p, s, _)| (p.clone(), *s)).collect();
    let (phrase, global, own) =
        glip_rt::testing::phrase_threshold_case(&pairs).expect("detections to threshold");
    assert_eq!(
        unsafe { glip_detector_set_threshold(d, global) },
        GlipStatus::Ok
    );
    let only_global: Vec<_> = all.iter().filter(|x| x.1 >= global).cloned().collect();
    assert!(only_global.len() < all.len());
    assert_eq!(detect(d), only_global);
    let spec = json(&[(&phrase, own)]);
    assert_eq!(
        unsafe { glip_detector_set_phrase_thresholds(d, spec.as_ptr()) },
        GlipStatus::Ok
    );
    let want: Vec<_> = all
        .iter()
        .filter(|x| x.1 >= if x.0 == phrase { own } else { global })
        .cloned()
        .collect();
    assert!(want.len() > only_global.len(), "{phrase} {own} {global}");
    assert_eq!(detect(d), want);
    // Errors change nothing.
    for (st, code) in [
        (
            unsafe { glip_detector_set_threshold(d, 1.5) },
            GlipStatus::InvalidArgument,
        ),
        (
            unsafe { glip_detector_set_threshold(d, f32::NAN) },
            GlipStatus::InvalidArgument,
        ),
        (
            unsafe { glip_detector_set_phrase_thresholds(d, c"{\"a zebra\": 0.1}".as_ptr()) },
            GlipStatus::Prompt,
        ),
        (
            unsafe { glip_detector_set_phrase_thresholds(d, c"[0.1]".as_ptr()) },
            GlipStatus::InvalidArgument,
        ),
        (
            unsafe { glip_detector_set_phrase_thresholds(d, json(&[(&phrase, -1.0)]).as_ptr()) },
            GlipStatus::InvalidArgument,
        ),
        (
            unsafe { glip_detector_set_threshold(std::ptr::null_mut(), 0.5) },
            GlipStatus::InvalidArgument,
        ),
    ] {
        assert_eq!(st, code);
    }
    assert_eq!(detect(d), want);
    // NULL clears the phrase thresholds; 0 restores the full output.
    assert_eq!(
        unsafe { glip_detector_set_phrase_thresholds(d, std::ptr::null()) },
        GlipStatus::Ok
    );
    assert_eq!(detect(d), only_global);
    assert_eq!(
        unsafe { glip_detector_set_threshold(d, 0.0) },
        GlipStatus::Ok
    );
    assert_eq!(detect(d), all);
    unsafe { glip_detector_free(d) };
}

/// `glip_detector_detect_rgb` of `img` on a live handle: up to 128 detections.
fn detect_rgb(
    d: *mut glip_rt::capi::GlipDetector,
    img: &glip_rt::preprocess::RgbImage8,
) -> Vec<glip_rt::capi::GlipDetection> {
    use glip_rt::capi::{glip_detector_detect_rgb, GlipDetection, GlipStatus};
    let mut out = vec![GlipDetection::default(); 128];
    let mut n = 0u32;
    // SAFETY: the caller's handle is live and used by this thread only; the image holds
    // width*height*3 bytes; `out` holds 128 detections.
    let st = unsafe {
        glip_detector_detect_rgb(
            d,
            img.data.as_ptr(),
            img.width as u32,
            img.height as u32,
            out.as_mut_ptr(),
            out.len() as u32,
            &mut n,
        )
    };
    assert_eq!(st, GlipStatus::Ok);
    out.truncate(n as usize);
    out
}
