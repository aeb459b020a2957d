//! `glip convert`: .pth → safetensors round trips and clear failures, through the binary.

use glip_rt::pth;
use glip_rt::weights::{load_weights, read_safetensors_all};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/pth")
        .join(name)
}
fn tmp(name: &str) -> PathBuf {
    glip_rt::testing::test_tmp("glip-convert-test", name)
}
fn glip(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_glip"))
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "glip {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn glip_shaped_round_trip_f32_exact_and_f16_rounded() {
    let input = fixture("glip_shaped.pth");
    let (sd, _) = pth::read_model_state_dict(&input).unwrap();

    let out32 = tmp("glip_shaped_f32.safetensors");
    let o = glip(&["convert", s(&input), "-o", s(&out32), "--dtype", "f32"]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("9 tensors from `model` (7 floats as f32, 2 other)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "also in file: model_ema (9 tensors, ignored), optimizer (dict, 2 entries), scheduler (dict, 8 entries), iteration (123), args (argparse.Namespace object), meta (dict, 5 entries)"
        ),
        "{stdout}"
    );
    let w = load_weights(&out32).unwrap();
    assert_eq!(w.tensors.len(), sd.tensors.len());
    for (k, raw) in &sd.tensors {
        let t = w
            .tensors
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing (module. must be stripped)"));
        assert_eq!(t.shape(), raw.shape.as_slice(), "{k}");
        match raw.to_f32_vec() {
            Some(want) => {
                let got = t.f32s().unwrap();
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{k}"
                );
            }
            None => {
                let want: Vec<i32> = raw
                    .data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as i32)
                    .collect();
                assert_eq!(t.i32s().unwrap(), want.as_slice(), "{k}");
            }
        }
    }
    // Integer buffers stay i64 in the file.
    let bytes = std::fs::read(&out32).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.tensor("backbone.body.layers.0.blocks.0.attn.relative_position_index")
            .unwrap()
            .dtype(),
        safetensors::Dtype::I64
    );
    assert_eq!(
        st.tensor("rpn.head.log_scale").unwrap().dtype(),
        safetensors::Dtype::F32
    );

    // Default dtype f16: floats rounded to f16 (these values are exact in f16).
    let out16 = tmp("glip_shaped_f16.safetensors");
    assert!(glip(&["convert", s(&input), "-o", s(&out16)])
        .status
        .success());
    let bytes = std::fs::read(&out16).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.tensor("rpn.head.log_scale").unwrap().dtype(),
        safetensors::Dtype::F16
    );
    assert_eq!(
        st.tensor("backbone.body.layers.0.blocks.0.attn.relative_position_index")
            .unwrap()
            .dtype(),
        safetensors::Dtype::I64
    );
    let w16 = load_weights(&out16).unwrap();
    for (k, raw) in &sd.tensors {
        if let Some(want) = raw.to_f32_vec() {
            let rounded: Vec<f32> = want
                .iter()
                .map(|&x| half::f16::from_f32(x).to_f32())
                .collect();
            assert_eq!(w16.tensors[k].f32s().unwrap(), rounded.as_slice(), "{k}");
        }
    }
}

#[test]
fn tiny_glip_model_round_trip_matches_golden() {
    let out = tmp("tiny_f32.safetensors");
    let o = glip(&[
        "convert",
        s(&fixture("tiny_glip_model.pth")),
        "-o",
        s(&out),
        "--dtype",
        "f32",
    ]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("313 tensors from `model`")
            && stdout.contains("model_ema (313 tensors, ignored)"),
        "{stdout}"
    );
    let want = read_safetensors_all(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/testdata/golden/12_e2e_tiny_weights.safetensors"),
    )
    .unwrap();
    let got = load_weights(&out).unwrap();
    assert_eq!(got.tensors.len(), want.len());
    for (k, w) in &want {
        let g = &got.tensors[k];
        assert_eq!(g.shape(), w.shape(), "{k}");
        match w.dtype() {
            glip_rt::DType::F32 => assert!(
                g.f32s()
                    .unwrap()
                    .iter()
                    .zip(w.f32s().unwrap())
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{k}"
            ),
            _ => assert_eq!(g.i32s().unwrap(), w.i32s().unwrap(), "{k}"),
        }
    }
    // f16: every float within f16 rounding (relative 2^-11) of the golden value.
    let out16 = tmp("tiny_f16.safetensors");
    assert!(glip(&[
        "convert",
        s(&fixture("tiny_glip_model.pth")),
        "-o",
        s(&out16)
    ])
    .status
    .success());
    assert!(
        std::fs::metadata(&out16).unwrap().len() < std::fs::metadata(&out).unwrap().len() * 6 / 10
    );
    let got = load_weights(&out16).unwrap();
    let mut worst = 0f32;
    for (k, w) in &want {
        if w.dtype() == glip_rt::DType::F32 {
            for (a, b) in got.tensors[k].f32s().unwrap().iter().zip(w.f32s().unwrap()) {
                assert_eq!(*a, half::f16::from_f32(*b).to_f32(), "{k}");
                if b.abs() > 1e-4 {
                    worst = worst.max((a - b).abs() / b.abs());
                }
            }
        }
    }
    eprintln!("tiny model f16 conversion: worst relative error {worst:e}");
    assert!(worst <= 1.0 / 2048.0);
}

#[test]
fn plain_state_dict_converts_without_also_in_file() {
    let out = tmp("plain.safetensors");
    let o = glip(&[
        "convert",
        s(&fixture("plain_state_dict.pth")),
        "-o",
        s(&out),
        "--dtype",
        "f32",
    ]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("14 tensors from `<top level>`") && !stdout.contains("also in file"),
        "{stdout}"
    );
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tr = st.tensor("transposed").unwrap();
    assert_eq!(tr.shape(), [5, 3]);
    let v: Vec<f32> = tr
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        v,
        (0..5)
            .flat_map(|i| (0..3).map(move |j| (5 * j + i) as f32))
            .collect::<Vec<_>>()
    );
    assert_eq!(st.tensor("scalar").unwrap().shape(), [] as [usize; 0]);
    assert_eq!(st.tensor("i64").unwrap().dtype(), safetensors::Dtype::I64);
    assert_eq!(st.tensor("bool").unwrap().dtype(), safetensors::Dtype::BOOL);
    assert_eq!(st.tensor("bf16").unwrap().dtype(), safetensors::Dtype::F32);
}

#[test]
fn bad_inputs_fail_cleanly() {
    let out = tmp("never.safetensors");
    let full = std::fs::read(fixture("glip_shaped.pth")).unwrap();
    let trunc = tmp("trunc.pth");
    std::fs::write(&trunc, &full[..full.len() * 2 / 3]).unwrap();
    let mut bad = full.clone();
    let at = bad.windows(3).position(|w| w == b"\x80\x02}").unwrap();
    bad[at + 3] = 0xff;
    let corrupt = tmp("corrupt.pth");
    std::fs::write(&corrupt, &bad).unwrap();
    let notpth = tmp("notes.txt");
    std::fs::write(&notpth, "just text").unwrap();
    let nomodel = tmp("nomodel.pth");
    {
        use std::io::Write;
        let mut z = zip::ZipWriter::new(std::fs::File::create(&nomodel).unwrap());
        z.start_file(
            "archive/data.pkl",
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        // {'optimizer': {}, 'iteration': 5}
        z.write_all(b"\x80\x02}(X\t\x00\x00\x00optimizer}X\t\x00\x00\x00iterationK\x05u.")
            .unwrap();
        z.finish().unwrap();
    }
    for (input, want) in [
        (PathBuf::from("/nonexistent/model.pth"), "No such file"),
        (trunc, "truncated or corrupt"),
        (corrupt, "data.pkl"),
        (notpth, "not a PyTorch checkpoint"),
        (nomodel, "no `model` entry and the top level is not a state_dict (top-level keys: optimizer, iteration)"),
    ] {
        let o = glip(&["convert", s(&input), "-o", s(&out)]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(want), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists());
    }
    // Bad arguments: clap's usage error.
    let o = glip(&[
        "convert",
        s(&fixture("glip_shaped.pth")),
        "-o",
        s(&out),
        "--dtype",
        "f8",
    ]);
    assert!(!o.status.success());
}

#[test]
fn output_directory_is_refused_without_stray_files() {
    // `-o dir`, `-o dir/` (once left `dir.tmpPID` next to dir, or a temp file in `/`).
    let base = tmp("stray");
    let dir = base.join("out");
    std::fs::create_dir_all(&dir).unwrap();
    let input = fixture("tiny_glip_model.pth");
    for o in [s(&dir).to_string(), format!("{}/", s(&dir))] {
        let out = glip(&["convert", s(&input), "-o", &o]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("is a directory"), "{err}");
    }
    let names = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&base), ["out"]);
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));
}
