//! The PyTorch checkpoint reader (src/pth.rs), load_weights and validate_keys, on the fixtures
//! made by scripts/make-pth-fixtures.py (values are formulas recomputed here).

use glip_rt::model::WeightMap;
use glip_rt::pth::{self, Checkpoint, RawTensor, StorageDType};
use glip_rt::weights::{glip_ignorable, load_weights, read_safetensors_all, validate_keys};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/pth")
        .join(name)
}
fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/golden")
        .join(name)
}
fn tmp(name: &str) -> PathBuf {
    glip_rt::testing::test_tmp("glip-pth-test", name)
}

fn err<T>(r: glip_rt::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn ramp(n: usize, start: f64) -> Vec<f32> {
    (0..n).map(|i| (i as f64 * 0.25 + start) as f32).collect()
}

fn get<'a>(sd: &'a [(String, RawTensor)], k: &str) -> &'a RawTensor {
    &sd.iter()
        .find(|(n, _)| n == k)
        .unwrap_or_else(|| panic!("no {k}"))
        .1
}

fn i64s(t: &RawTensor) -> Vec<i64> {
    t.data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn plain_state_dict_all_dtypes_and_views() {
    let mut ck = Checkpoint::open(&fixture("plain_state_dict.pth")).unwrap();
    let sd = ck.model_state_dict().unwrap();
    assert_eq!(sd.entry, "<top level>");
    assert!(sd.skipped.is_empty());
    let t = &sd.tensors;
    let names: Vec<&str> = t.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "f32",
            "f16",
            "bf16",
            "f64",
            "i64",
            "i32",
            "u8",
            "bool",
            "transposed",
            "sliced",
            "grid_row0",
            "scalar",
            "empty",
            "param"
        ]
    );
    let f32t = get(t, "f32");
    assert_eq!(
        (f32t.dtype, f32t.shape.as_slice()),
        (StorageDType::F32, &[3usize, 4][..])
    );
    assert_eq!(f32t.to_f32_vec().unwrap(), ramp(12, -2.0));
    let f16t = get(t, "f16");
    assert_eq!(
        (f16t.dtype, f16t.shape.as_slice()),
        (StorageDType::F16, &[5usize][..])
    );
    assert_eq!(f16t.to_f32_vec().unwrap(), ramp(5, -2.0));
    let bf = get(t, "bf16");
    assert_eq!(
        (bf.dtype, bf.shape.as_slice()),
        (StorageDType::BF16, &[2usize, 3][..])
    );
    assert_eq!(bf.to_f32_vec().unwrap(), ramp(6, -2.0));
    assert_eq!(get(t, "f64").dtype, StorageDType::F64);
    assert_eq!(get(t, "f64").to_f32_vec().unwrap(), ramp(4, -2.0));
    assert_eq!(i64s(get(t, "i64")), [-3, 0, 7, 1 << 40]);
    assert_eq!(
        get(t, "i32").data,
        [(-5i32).to_le_bytes(), 6i32.to_le_bytes()].concat()
    );
    assert_eq!(get(t, "u8").data, [0, 200, 255]);
    assert_eq!(
        (get(t, "bool").dtype, get(t, "bool").data.as_slice()),
        (StorageDType::Bool, &[1u8, 0, 1][..])
    );

    let tr = get(t, "transposed");
    assert_eq!(tr.shape, [5, 3]);
    let want: Vec<f32> = (0..5)
        .flat_map(|i| (0..3).map(move |j| (5 * j + i) as f32))
        .collect();
    assert_eq!(tr.to_f32_vec().unwrap(), want);
    let sl = get(t, "sliced");
    assert_eq!(sl.shape, [3, 3]);
    let want: Vec<f32> = (0..3)
        .flat_map(|i| (0..3).map(move |j| (6 * (i + 1) + j + 2) as f32))
        .collect();
    assert_eq!(sl.to_f32_vec().unwrap(), want);
    assert_eq!(
        get(t, "grid_row0").to_f32_vec().unwrap(),
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    let sc = get(t, "scalar");
    assert!(sc.shape.is_empty());
    assert_eq!(sc.to_f32_vec().unwrap(), [2.5]);
    assert_eq!(
        (get(t, "empty").shape.as_slice(), get(t, "empty").data.len()),
        (&[0usize, 3][..], 0)
    );
    assert_eq!(get(t, "param").to_f32_vec().unwrap(), ramp(4, 1.0));

    // i64 out of i32 range is refused by the WeightMap conversion, naming the key.
    let e = err(pth::load_pth_weights(&fixture("plain_state_dict.pth")));
    assert!(e.contains("i64") && e.contains("out of i32 range"), "{e}");
}

const GLIP_KEYS: [(&str, &[usize], bool); 9] = [
    (
        "backbone.body.patch_embed.proj.weight",
        &[4, 3, 2, 2],
        false,
    ),
    ("backbone.body.patch_embed.proj.bias", &[4], false),
    (
        "backbone.body.layers.0.blocks.0.attn.relative_position_bias_table",
        &[9, 2],
        false,
    ),
    (
        "backbone.body.layers.0.blocks.0.attn.relative_position_index",
        &[4, 4],
        true,
    ),
    (
        "language_backbone.body.model.embeddings.position_ids",
        &[1, 8],
        true,
    ),
    (
        "language_backbone.body.model.embeddings.word_embeddings.weight",
        &[10, 6],
        false,
    ),
    ("rpn.head.log_scale", &[1], false),
    ("rpn.head.scales.0.scale", &[1], false),
    ("rpn.anchor_generator.cell_anchors.0", &[1, 4], false),
];

#[test]
fn glip_shaped_checkpoint_reads_model_not_ema() {
    let (sd, entries) = pth::read_model_state_dict(&fixture("glip_shaped.pth")).unwrap();
    assert_eq!(sd.entry, "model");
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model",
            "model_ema",
            "optimizer",
            "scheduler",
            "iteration",
            "args",
            "meta"
        ]
    );
    assert_eq!(entries[1].summary, "9 tensors");
    assert_eq!(entries[4].summary, "123");
    assert_eq!(sd.tensors.len(), GLIP_KEYS.len());
    for (i, ((k, shape, int), (got_k, got))) in GLIP_KEYS.iter().zip(&sd.tensors).enumerate() {
        assert_eq!(k, got_k, "module. prefix stripped, order kept");
        assert_eq!(got.shape, *shape, "{k}");
        let n: usize = shape.iter().product();
        if *int {
            assert_eq!(got.dtype, StorageDType::I64);
            assert_eq!(
                i64s(got),
                (0..n as i64)
                    .map(|x| x + 100 * i as i64)
                    .collect::<Vec<_>>(),
                "{k}"
            );
        } else {
            assert_eq!(got.dtype, StorageDType::F32);
            assert_eq!(
                got.to_f32_vec().unwrap(),
                ramp(n, i as f64),
                "{k}: model, not model_ema"
            );
        }
    }
    // The f8 tensor in "meta" is not decoded, and does not matter.
    let ck = Checkpoint::open(&fixture("glip_shaped.pth")).unwrap();
    let meta = ck.entries().into_iter().find(|e| e.name == "meta").unwrap();
    assert_eq!(meta.summary, "dict, 5 entries");

    // As a WeightMap, then validated against its own key list.
    let w = pth::load_pth_weights(&fixture("glip_shaped.pth")).unwrap();
    let expected: Vec<(String, Vec<usize>)> = GLIP_KEYS
        .iter()
        .map(|(k, s, _)| (k.to_string(), s.to_vec()))
        .collect();
    validate_keys(&w, &expected, glip_ignorable).unwrap();
}

#[test]
fn tiny_glip_model_matches_golden_weights_bit_exactly() {
    let want = read_safetensors_all(&golden("12_e2e_tiny_weights.safetensors")).unwrap();
    assert_eq!(want.len(), 313);
    let (sd, entries) = pth::read_model_state_dict(&fixture("tiny_glip_model.pth")).unwrap();
    assert_eq!(sd.entry, "model");
    assert!(entries
        .iter()
        .any(|e| e.name == "model_ema" && e.summary == "313 tensors"));
    assert_eq!(sd.tensors.len(), 313);
    let got = pth::load_pth_weights(&fixture("tiny_glip_model.pth")).unwrap();
    assert_eq!(got.tensors.len(), 313);
    for (k, w) in &want {
        let g = got.tensors.get(k).unwrap_or_else(|| panic!("missing {k}"));
        assert_eq!(g.shape(), w.shape(), "{k}");
        assert_eq!(g.dtype(), w.dtype(), "{k}");
        match w.dtype() {
            glip_rt::DType::F32 => {
                let (a, b) = (g.f32s().unwrap(), w.f32s().unwrap());
                assert!(
                    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{k}"
                );
            }
            _ => assert_eq!(g.i32s().unwrap(), w.i32s().unwrap(), "{k}"),
        }
    }
}

/// The golden tiny model's key list and shapes, from its .json.
fn golden_expected() -> Vec<(String, Vec<usize>)> {
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("12_e2e_tiny_weights.json")).unwrap())
            .unwrap();
    let t = j["tensors"].as_object().unwrap();
    t.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn load_weights_and_validate_keys_on_golden_tiny_model() {
    let w = load_weights(&golden("12_e2e_tiny_weights.safetensors")).unwrap();
    assert_eq!(w.tensors.len(), 313);
    let expected = golden_expected();
    assert_eq!(expected.len(), 313);
    validate_keys(&w, &expected, glip_ignorable).unwrap();
    validate_keys(&w, &expected, |_| false).unwrap();

    // Remove two keys, reshape one, add two foreign ones (one ignorable).
    let mut tensors = w.tensors;
    let removed = ["backbone.body.patch_embed.proj.bias", "rpn.head.log_scale"];
    for k in removed {
        tensors.remove(k).unwrap();
    }
    let reshaped = "backbone.body.patch_embed.norm.weight";
    tensors.insert(
        reshaped.into(),
        glip_rt::Tensor::from_f32(&[17], vec![0.0; 17]).unwrap(),
    );
    tensors.insert(
        "rpn.head.mystery".into(),
        glip_rt::Tensor::from_f32(&[2, 2], vec![0.0; 4]).unwrap(),
    );
    tensors.insert(
        "language_backbone.body.model.pooler.dense.bias".into(),
        glip_rt::Tensor::from_f32(&[8], vec![0.0; 8]).unwrap(),
    );
    // Leaving out an ignorable buffer is fine too.
    let rpi = expected
        .iter()
        .find(|(k, _)| k.ends_with(".relative_position_index"))
        .unwrap()
        .0
        .clone();
    tensors.remove(&rpi).unwrap();
    let bad = WeightMap::new("tiny", tensors);
    let e = validate_keys(&bad, &expected, glip_ignorable)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2 missing, 1 with the wrong shape, 1 unexpected"),
        "{e}"
    );
    for k in removed {
        assert!(e.contains(k), "{e}");
    }
    assert!(
        e.contains("backbone.body.patch_embed.norm.weight: got [17], expected [16]"),
        "{e}"
    );
    assert!(e.contains("rpn.head.mystery [2, 2]"), "{e}");
    assert!(!e.contains("pooler") && !e.contains(&rpi), "{e}");
    // Without the predicate the ignorable ones count too.
    let e = validate_keys(&bad, &expected, |_| false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("3 missing, 1 with the wrong shape, 2 unexpected"),
        "{e}"
    );

    // A long list is cut, with the count.
    let e = validate_keys(
        &WeightMap::new("empty", Default::default()),
        &expected,
        |_| false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("313 missing") && e.contains("… and 301 more"),
        "{e}"
    );
    assert!(e.lines().count() < 20, "{e}");
}

#[test]
fn glip_ignorable_keys() {
    for k in [
        "backbone.body.layers.2.blocks.5.attn.relative_position_index",
        "rpn.anchor_generator.cell_anchors.3",
        "language_backbone.body.model.embeddings.position_ids",
        "language_backbone.body.model.pooler.dense.weight",
    ] {
        assert!(glip_ignorable(k), "{k}");
    }
    for k in [
        "backbone.body.layers.2.blocks.5.attn.relative_position_bias_table",
        "rpn.head.log_scale",
        "language_backbone.body.model.embeddings.position_embeddings.weight",
    ] {
        assert!(!glip_ignorable(k), "{k}");
    }
}

#[test]
fn load_weights_strips_module_prefix_only_when_all_keys_have_it() {
    let data = [0u8; 8];
    let v = |n: usize| {
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n], &data[..4 * n])
            .unwrap()
    };
    let p = tmp("prefixed.safetensors");
    safetensors::serialize_to_file(
        vec![("module.a.weight", v(1)), ("module.b", v(2))],
        None,
        &p,
    )
    .unwrap();
    let w = load_weights(&p).unwrap();
    let mut keys: Vec<_> = w.tensors.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["a.weight", "b"]);
    let p = tmp("mixed.safetensors");
    safetensors::serialize_to_file(vec![("module.a.weight", v(1)), ("b", v(2))], None, &p).unwrap();
    let w = load_weights(&p).unwrap();
    assert!(w.contains("module.a.weight") && w.contains("b"));
}

#[test]
fn load_weights_clear_errors() {
    let e = err(load_weights(Path::new("/nonexistent/w.safetensors")));
    assert!(
        e.contains("/nonexistent/w.safetensors") && e.contains("No such file"),
        "{e}"
    );

    let full = std::fs::read(golden("12_e2e_tiny_weights.safetensors")).unwrap();
    for (name, cut) in [
        ("trunc_body.safetensors", full.len() - 1000),
        ("trunc_header.safetensors", 100),
        ("trunc_len.safetensors", 5),
    ] {
        let p = tmp(name);
        std::fs::write(&p, &full[..cut]).unwrap();
        let e = err(load_weights(&p));
        assert!(
            e.contains(name) && (e.contains("truncated") || e.contains("only 5 bytes")),
            "{e}"
        );
    }
    // Corrupt header JSON.
    let mut bad = full.clone();
    let colon = find(&full, b":").unwrap();
    bad[colon] = b'#';
    let p = tmp("corrupt.safetensors");
    std::fs::write(&p, &bad).unwrap();
    let e = err(load_weights(&p));
    assert!(e.contains("corrupt safetensors"), "{e}");

    let p = tmp("text.safetensors");
    std::fs::write(&p, "hello, this is not a tensor file").unwrap();
    let e = err(load_weights(&p));
    assert!(e.contains("not a safetensors file"), "{e}");

    let e = err(load_weights(&fixture("glip_shaped.pth")));
    assert!(
        e.contains("PyTorch checkpoint") && e.contains("glip convert"),
        "{e}"
    );
}

#[test]
fn pth_clear_errors() {
    let open_err = |p: &Path| match Checkpoint::open(p) {
        Ok(_) => panic!("{} opened", p.display()),
        Err(e) => e.to_string(),
    };
    let e = open_err(Path::new("/nonexistent/x.pth"));
    assert!(e.contains("No such file"), "{e}");

    let full = std::fs::read(fixture("glip_shaped.pth")).unwrap();
    let p = tmp("trunc.pth");
    std::fs::write(&p, &full[..full.len() / 2]).unwrap();
    let e = open_err(&p);
    assert!(e.contains("truncated or corrupt"), "{e}");

    let p = tmp("legacy.pth");
    std::fs::write(
        &p,
        [
            0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
            b'.',
        ],
    )
    .unwrap();
    let e = open_err(&p);
    assert!(e.contains("legacy") && e.contains("re-save"), "{e}");

    let e = open_err(&golden("12_e2e_tiny_weights.safetensors"));
    assert!(e.contains("already a safetensors file"), "{e}");

    // Corrupt pickle: rewrite data.pkl's bytes in place (STORED entry, same length) so the zip
    // stays valid but its CRC no longer matches, or patch an opcode after recomputing nothing:
    // either way the read must fail with a message, not a panic.
    let pkl_at = find(&full, b"\x80\x02}").unwrap();
    let mut bad = full.clone();
    bad[pkl_at + 3] = 0xff;
    let p = tmp("badpickle.pth");
    std::fs::write(&p, &bad).unwrap();
    let e = open_err(&p);
    assert!(
        e.contains("data.pkl") || e.contains("checksum") || e.contains("CRC"),
        "{e}"
    );
}

#[test]
fn unsupported_dtype_in_model_names_the_key() {
    let e = err(pth::read_model_state_dict(&fixture(
        "unsupported_model.pth",
    )));
    assert!(
        e.contains("tensor `module.w` in `model` cannot be read: tensor dtype torch.float8_e4m3fn"),
        "{e}"
    );
}

#[test]
fn pickle_errors_inside_valid_zip() {
    // A zip whose data.pkl is a valid pickle of the wrong thing, and one with a bad opcode.
    for (pkl, want) in [
        (&b"\x80\x02K\x05."[..], "top level is 5"),
        (
            &b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s."[..],
            "no `model` entry and the top level is not a state_dict (top-level keys: a)",
        ),
        (&b"\x80\x02\xfe."[..], "unsupported pickle opcode 0xfe"),
        (
            &b"\x80\x02}(X\x05\x00\x00\x00modelK\x01u."[..],
            "entry `model` is 1, not a state_dict",
        ),
    ] {
        let p = tmp("synthetic.pth");
        write_zip(
            &p,
            &[("archive/data.pkl", pkl), ("archive/byteorder", b"little")],
        );
        let e = match Checkpoint::open(&p).and_then(|mut c| c.model_state_dict()) {
            Ok(_) => panic!("read"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "{e}");
    }
    let p = tmp("nopkl.pth");
    write_zip(&p, &[("archive/other", b"x")]);
    let e = Checkpoint::open(&p).err().unwrap().to_string();
    assert!(e.contains("no `<archive>/data.pkl`"), "{e}");
}

/// Corrupted and truncated pickles inside a valid zip (correct CRCs) must give errors or
/// (for harmless changes) results, never a panic.
#[test]
fn corrupted_pickles_never_panic() {
    use std::io::Read;
    let mut z =
        zip::ZipArchive::new(std::fs::File::open(fixture("glip_shaped.pth")).unwrap()).unwrap();
    let names: Vec<String> = z.file_names().map(str::to_string).collect();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for n in &names {
        let mut b = Vec::new();
        z.by_name(n).unwrap().read_to_end(&mut b).unwrap();
        entries.push((n.clone(), b));
    }
    let pkl = entries
        .iter()
        .position(|(n, _)| n.ends_with("data.pkl"))
        .unwrap();
    let orig = entries[pkl].1.clone();
    let mut rng = glip_rt::testing::Rng::new(7);
    let p = tmp("fuzz.pth");
    let (mut ok, mut failed) = (0, 0);
    for round in 0..300usize {
        let mut b = orig.clone();
        if round.is_multiple_of(3) {
            b.truncate((rng.next_u64() as usize) % b.len());
        } else {
            for _ in 0..1 + round % 4 {
                let i = (rng.next_u64() as usize) % b.len();
                b[i] = rng.next_u64() as u8;
            }
        }
        entries[pkl].1 = b;
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        write_zip(&p, &refs);
        match Checkpoint::open(&p).and_then(|mut c| {
            let _ = c.entries();
            c.model_state_dict()
        }) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                failed += 1
            }
        }
    }
    eprintln!("fuzz: {ok} read, {failed} refused");
    assert!(failed > 100);
}

fn write_zip(p: &Path, entries: &[(&str, &[u8])]) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::fs::File::create(p).unwrap());
    for (name, data) in entries {
        z.start_file(
            *name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
