//! Hostile inputs to the library, one test per class of issue 13: deep nesting (pickle, yaml),
//! sizes taken from the input (stride-0 views, zip bombs), bad values (dtype mismatches,
//! non-finite and out-of-range config values), callables outside the pickle allowlist, and
//! the C ABI's messages. Each must be a clear error (or a warning), fast, never a crash.

use glip_rt::model::config::GlipConfig;
use glip_rt::pth;
use glip_rt::testing::testdata;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn tmp(name: &str) -> PathBuf {
    glip_rt::testing::test_tmp("glip-hostile", name)
}

fn golden(name: &str) -> PathBuf {
    testdata().join("golden").join(name)
}

fn err_text<T>(r: glip_rt::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// A torch.save-like zip: `archive/data.pkl`, `archive/byteorder` and storages.
fn write_pth(p: &Path, pkl: &[u8], storages: &[(&str, Vec<u8>, bool)]) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::fs::File::create(p).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [("archive/data.pkl", pkl), ("archive/byteorder", b"little")] {
        z.start_file(name, stored).unwrap();
        z.write_all(data).unwrap();
    }
    for (key, data, deflate) in storages {
        let o = if *deflate {
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
        } else {
            stored
        };
        z.start_file(format!("archive/data/{key}"), o).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

fn bin_str(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

fn int_tuple(xs: &[u32]) -> Vec<u8> {
    let mut v = vec![b'('];
    for x in xs {
        v.push(b'J');
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.push(b't');
    v
}

/// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), 0, size, stride, …)`.
fn tensor_pickle(key: &str, numel: u32, size: &[u32], stride: &[u32]) -> Vec<u8> {
    let mut v = b"ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
    v.push(b'(');
    v.extend(bin_str("storage"));
    v.extend_from_slice(b"ctorch\nFloatStorage\n");
    v.extend(bin_str(key));
    v.extend(bin_str("cpu"));
    v.push(b'J');
    v.extend_from_slice(&numel.to_le_bytes());
    v.extend_from_slice(b"tQK\x00");
    v.extend(int_tuple(size));
    v.extend(int_tuple(stride));
    v.extend_from_slice(b"\x89}tR");
    v
}

/// `{'model': {name: value, …}}` with each value's pickle bytes given.
fn model_pickle(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut v = b"\x80\x02}(".to_vec();
    v.extend(bin_str("model"));
    v.extend_from_slice(b"}(");
    for (k, val) in entries {
        v.extend(bin_str(k));
        v.extend_from_slice(val);
    }
    v.extend_from_slice(b"uu.");
    v
}

#[test]
fn deeply_nested_pickle_is_refused_not_a_stack_overflow() {
    // 200 nested 1-tuples: past the limit of 100.
    let mut p = b"\x80\x02)".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 200));
    p.push(b'.');
    let e = pth::pickle::unpickle(&p)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("nested deeper than 100"), "{e}");
    // The same inside a checkpoint, a million deep (a few MB of pickle): refused quickly.
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(bin_str("model"));
    p.push(b')');
    p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    p.extend_from_slice(b"u.");
    let f = tmp("deep.pth");
    write_pth(&f, &p, &[]);
    let t = Instant::now();
    let e = err_text(pth::read_model_state_dict(&f));
    assert!(e.contains("nested deeper than 100"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 5.0, "{:?}", t.elapsed());
}

#[test]
fn nesting_built_by_mutation_is_dropped_without_recursion() {
    // 200k lists, each appended into the previous one through the memo: the VM's depth
    // tracking cannot see this nesting, so the drop must not recurse (a recursive drop
    // overflows the 2 MB test-thread stack long before 200k levels).
    let n: u32 = 200_000;
    let mut p = b"\x80\x02".to_vec();
    for i in 0..n {
        p.push(b']');
        p.push(b'r');
        p.extend_from_slice(&i.to_le_bytes());
        p.push(b'0');
    }
    for i in 0..n - 1 {
        p.push(b'j');
        p.extend_from_slice(&i.to_le_bytes());
        p.push(b'j');
        p.extend_from_slice(&(i + 1).to_le_bytes());
        p.extend_from_slice(b"a0");
    }
    p.extend_from_slice(b"j\x00\x00\x00\x00.");
    let v = pth::pickle::unpickle(&p).unwrap();
    drop(v);
}

#[test]
fn stride_zero_view_asking_for_gigabytes_is_refused() {
    // One float stored, viewed as 100000 x 100000 with stride 0: 40 GB if materialised.
    let pkl = model_pickle(&[("w", tensor_pickle("0", 1, &[100_000, 100_000], &[0, 0]))]);
    let f = tmp("stride0.pth");
    write_pth(&f, &pkl, &[("0", vec![0; 4], false)]);
    let e = err_text(pth::read_model_state_dict(&f));
    assert!(e.contains("stride-0") && e.contains("`w`"), "{e}");
    // A sane view of the same layout still reads.
    let pkl = model_pickle(&[("w", tensor_pickle("0", 1, &[1, 1], &[1, 1]))]);
    write_pth(&f, &pkl, &[("0", vec![0; 4], false)]);
    assert!(pth::read_model_state_dict(&f).is_ok());
}

#[test]
fn zip_bomb_storage_is_refused_before_inflating() {
    // 32 MB of zeros deflate to ~32 KB (1000x); the pickle claims all of them.
    let numel = 8u32 << 20;
    let pkl = model_pickle(&[("w", tensor_pickle("0", numel, &[numel], &[1]))]);
    let f = tmp("bomb.pth");
    write_pth(&f, &pkl, &[("0", vec![0; numel as usize * 4], true)]);
    let e = err_text(pth::read_model_state_dict(&f));
    assert!(e.contains("zip bomb"), "{e}");
    // Compressed but at a plausible ratio: read.
    let mut rng = glip_rt::testing::Rng::new(3);
    let data: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    let pkl = model_pickle(&[("w", tensor_pickle("0", 1024, &[1024], &[1]))]);
    write_pth(&f, &pkl, &[("0", data, true)]);
    assert!(pth::read_model_state_dict(&f).is_ok());
}

#[test]
fn callables_outside_the_allowlist_are_named_and_refused_in_the_model() {
    let evil = b"cos\nsystem\n(X\x04\x00\x00\x00echotR".to_vec();
    let pkl = model_pickle(&[("w", tensor_pickle("0", 1, &[1], &[1])), ("evil", evil)]);
    let f = tmp("evil.pth");
    write_pth(&f, &pkl, &[("0", vec![0; 4], false)]);
    let e = err_text(pth::read_model_state_dict(&f));
    assert!(
        e.contains("evil: os.system") && e.contains("--allow-unknown"),
        "{e}"
    );
    // Allowed: read, the call left out and reported.
    let (sd, _) = pth::read_model_state_dict_with(&f, true).unwrap();
    assert_eq!(sd.tensors.len(), 1);
    assert_eq!(sd.unknown, ["os.system"]);
    assert_eq!(sd.skipped, ["evil"]);
    // The loader used by the runtime refuses it too.
    assert!(err_text(pth::load_pth_weights(&f)).contains("os.system"));
}

fn tiny_yaml() -> String {
    std::fs::read_to_string(golden("12_e2e_tiny_config.yaml")).unwrap()
}

#[test]
fn deeply_nested_yaml_is_refused_in_milliseconds() {
    for (what, text) in [
        ("flow", format!("MODEL:\n  X: {}\n", "[".repeat(100_000))),
        ("flow maps", format!("MODEL: {}\n", "{a: ".repeat(50_000))),
        (
            "block",
            format!("MODEL:\n  X:\n  {}1\n", "- ".repeat(100_000)),
        ),
    ] {
        let t = Instant::now();
        let e = err_text(GlipConfig::from_yaml_str(&text, "deep.yaml"));
        assert!(e.contains("nested deeper than 100"), "{what}: {e}");
        assert!(t.elapsed().as_millis() < 200, "{what}: {:?}", t.elapsed());
    }
    // The real config (anchors, aliases, nested lists) passes.
    assert!(GlipConfig::from_yaml_str(&tiny_yaml(), "tiny").is_ok());
}

#[test]
fn yaml_alias_bomb_is_refused_quickly() {
    let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        y.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    y.push_str("MODEL:\n  X: *a11\n");
    let t = Instant::now();
    let r = GlipConfig::from_yaml_str(&y, "laughs.yaml");
    assert!(r.is_err());
    assert!(t.elapsed().as_secs_f64() < 2.0, "{:?}", t.elapsed());
}

#[test]
fn non_finite_and_out_of_range_config_values_are_refused() {
    let base = tiny_yaml();
    for (from, to, key) in [
        (
            "    NMS_TH: 0.6\n",
            "    NMS_TH: .nan\n",
            "MODEL.ATSS.NMS_TH",
        ),
        (
            "    NMS_TH: 0.6\n",
            "    NMS_TH: 7.0\n",
            "MODEL.ATSS.NMS_TH",
        ),
        (
            "    INFERENCE_TH: 0.05\n",
            "    INFERENCE_TH: .inf\n",
            "MODEL.ATSS.INFERENCE_TH",
        ),
        (
            "    ANCHOR_STRIDE:\n    - 8\n",
            "    ANCHOR_STRIDE:\n    - 0\n",
            "ANCHOR_STRIDE",
        ),
        (
            "  MIN_SIZE_TEST: 320\n",
            "  MIN_SIZE_TEST: 100000\n",
            "INPUT.MIN_SIZE_TEST",
        ),
        (
            "  MAX_SIZE_TEST: 533\n",
            "  MAX_SIZE_TEST: 100000\n",
            "INPUT.MAX_SIZE_TEST",
        ),
        (
            "    EMBED_DIM: 16\n",
            "    EMBED_DIM: 1000000000\n",
            "MODEL.SWINT.EMBED_DIM",
        ),
        ("  - 57.375\n", "  - .nan\n", "INPUT.PIXEL_STD"),
    ] {
        assert!(base.contains(from), "{from:?} not in the tiny config");
        let y = base.replacen(from, to, 1);
        let e = err_text(GlipConfig::from_yaml_str(&y, "bad.yaml"));
        assert!(e.contains(key), "{to:?}: {e}");
    }
}

/// The tiny weights with `f` applied to every (name, dtype, bytes), written to `name`.
fn rewrite_weights(
    name: &str,
    f: impl Fn(&str, safetensors::Dtype, &[u8]) -> (safetensors::Dtype, Vec<u8>),
) -> PathBuf {
    let bytes = std::fs::read(golden("12_e2e_tiny_weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let (dt, data) = f(&k, v.dtype(), v.data());
            (k, dt, v.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(k, dt, sh, d)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dt, sh.clone(), d).unwrap(),
            )
        })
        .collect();
    let out = tmp(name);
    safetensors::serialize_to_file(views, None, &out).unwrap();
    out
}

fn tiny_detector(weights: &Path) -> glip_rt::Result<glip_rt::Detector> {
    glip_rt::Detector::builder()
        .config(golden("12_e2e_tiny_config.yaml"))
        .weights(weights)
        .bert_config(testdata().join("tiny_bert_config.json"))
        .build()
}

#[test]
fn float_weights_stored_as_i32_are_refused() {
    let target = "backbone.body.patch_embed.proj.weight";
    let w = rewrite_weights("as_i32.safetensors", |k, dt, d| {
        if k == target && dt == safetensors::Dtype::F32 {
            (safetensors::Dtype::I32, d.to_vec())
        } else {
            (dt, d.to_vec())
        }
    });
    let e = err_text(tiny_detector(&w));
    assert!(e.contains(target) && e.contains("i32"), "{e}");
}

#[test]
fn non_finite_weights_are_warned_about() {
    let w = rewrite_weights("nan.safetensors", |k, dt, d| {
        if k.ends_with("cls_logits.bias") && dt == safetensors::Dtype::F32 {
            (dt, f32::NAN.to_le_bytes().repeat(d.len() / 4))
        } else {
            (dt, d.to_vec())
        }
    });
    let det = tiny_detector(&w).unwrap();
    assert_eq!(det.warnings().len(), 1, "{:?}", det.warnings());
    assert!(
        det.warnings()[0].contains("non-finite"),
        "{:?}",
        det.warnings()
    );
    let good = tiny_detector(&golden("12_e2e_tiny_weights.safetensors")).unwrap();
    assert!(good.warnings().is_empty());
}

#[test]
fn c_abi_names_the_empty_argument() {
    use glip_rt::capi::{glip_detector_new, glip_last_error};
    let empty = c"";
    let cfg =
        std::ffi::CString::new(golden("12_e2e_tiny_config.yaml").display().to_string()).unwrap();
    for (args, want) in [
        (
            [
                empty.as_ptr(),
                empty.as_ptr(),
                empty.as_ptr(),
                empty.as_ptr(),
            ],
            "config",
        ),
        (
            [
                cfg.as_ptr(),
                empty.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
            ],
            "weights",
        ),
    ] {
        // SAFETY: NUL-terminated strings or NULL, as glip.h asks.
        let d = unsafe { glip_detector_new(args[0], args[1], args[2], args[3]) };
        assert!(d.is_null());
        // SAFETY: glip_last_error returns a NUL-terminated string owned by the library.
        let msg = unsafe { std::ffi::CStr::from_ptr(glip_last_error()) }
            .to_string_lossy()
            .into_owned();
        assert!(msg.starts_with(want) && msg.contains("empty"), "{msg}");
    }
}

#[test]
fn api_input_size_override_is_bounded() {
    let r = glip_rt::Detector::builder()
        .config(golden("12_e2e_tiny_config.yaml"))
        .weights(golden("12_e2e_tiny_weights.safetensors"))
        .bert_config(testdata().join("tiny_bert_config.json"))
        .input_size(100_000, Some(100_000))
        .build();
    assert!(err_text(r).contains("input_size"));
}
