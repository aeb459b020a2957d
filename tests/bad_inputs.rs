//! The bad-input corpus (issue 13): well over 80 bad or odd inputs to every command and to
//! the C ABI, generated here (this file is the script: `scripts/bad-inputs.sh` runs it and
//! keeps the generated files), each run as a user would run it, under a memory bound
//! (`prlimit --as`) and a time bound. Per case: the expected exit code, no panic (exit 101,
//! "panicked", a backtrace), no abort or crash (134, a signal), no hang, and, where a run
//! mixes good and bad inputs, the results of the good ones still on stdout.

use glip_rt::testing::testdata;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Address-space bound of every run: far below what any unchecked size in the corpus asks
/// for (gigabytes), far above what the tiny model needs (~100 MB).
const MEMORY_BOUND: u64 = 2 << 30;
/// Time bound of every run (the tiny model builds in well under a second).
const TIME_BOUND: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Sink {
    Pipe,
    Full,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Prog {
    Glip,
    CAbi,
}

#[derive(Clone, Debug)]
struct Case {
    name: String,
    prog: Prog,
    args: Vec<String>,
    stdin: Vec<u8>,
    sink: Sink,
    exit: i32,
    /// Must appear in stderr (for glip) or stdout (C driver), case-insensitively.
    says: Option<String>,
    /// Must appear in stdout: the results of the good inputs of the same run.
    keeps: Option<String>,
}

impl Case {
    fn new(prog: Prog, name: &str, args: &[&str]) -> Case {
        Case {
            name: name.into(),
            prog,
            args: args.iter().map(|s| s.to_string()).collect(),
            stdin: Vec::new(),
            sink: Sink::Pipe,
            exit: 1,
            says: None,
            keeps: None,
        }
    }
    fn exit(mut self, code: i32) -> Case {
        self.exit = code;
        self
    }
    fn says(mut self, s: &str) -> Case {
        self.says = Some(s.into());
        self
    }
    fn keeps(mut self, s: &str) -> Case {
        self.keeps = Some(s.into());
        self
    }
    fn stdin(mut self, b: Vec<u8>) -> Case {
        self.stdin = b;
        self
    }
    fn sink(mut self, s: Sink) -> Case {
        self.sink = s;
        self
    }
}

/// The binary under test: this build's, or `GLIP_BIN` (to run the corpus against another
/// build, e.g. the one before a fix, and see it fail).
fn glip_bin() -> PathBuf {
    std::env::var_os("GLIP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_glip")))
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    timed_out: bool,
}

fn run_case(c: &Case, cabi: &(PathBuf, PathBuf)) -> Outcome {
    let prog = match c.prog {
        Prog::Glip => glip_bin(),
        Prog::CAbi => cabi.0.clone(),
    };
    let mut cmd = Command::new("prlimit");
    // cargo's LD_LIBRARY_PATH may list target/<profile> first, where a plain `cargo build`
    // leaves an older cdylib than the one this test was built with.
    cmd.env("LD_LIBRARY_PATH", &cabi.1);
    cmd.arg(format!("--as={MEMORY_BOUND}"))
        .arg("--")
        .arg(prog)
        .args(&c.args);
    cmd.env_remove("RUST_BACKTRACE");
    let stdout: Stdio = match c.sink {
        Sink::Pipe => Stdio::piped(),
        Sink::Full => std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
            .into(),
        Sink::Closed => {
            let (r, w) = std::io::pipe().unwrap();
            drop(r);
            w.into()
        }
    };
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sin = child.stdin.take().unwrap();
    let input = c.stdin.clone();
    let feeder = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > TIME_BOUND {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let _ = feeder.join();
    Outcome {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed,
        timed_out,
    }
}

/// What is wrong with an outcome, if anything.
fn judge(c: &Case, o: &Outcome) -> Vec<String> {
    let mut bad = Vec::new();
    if o.timed_out {
        bad.push(format!("hang: killed after {:?}", TIME_BOUND));
    }
    for sign in [
        "panicked",
        "stack backtrace",
        "RUST_BACKTRACE",
        "memory allocation of",
    ] {
        if o.stderr.contains(sign) {
            bad.push(format!("stderr has `{sign}`"));
        }
    }
    match o.code {
        Some(101) => bad.push("panic (exit 101)".into()),
        Some(134) => bad.push("abort (exit 134)".into()),
        None if !o.timed_out => bad.push("killed by a signal (crash or abort)".into()),
        Some(code) if code != c.exit => bad.push(format!("exit {code}, expected {}", c.exit)),
        _ => {}
    }
    if let Some(s) = &c.says {
        let text = match c.prog {
            Prog::Glip => &o.stderr,
            Prog::CAbi => &o.stdout,
        };
        if !text.to_lowercase().contains(&s.to_lowercase()) {
            bad.push(format!("message lacks `{s}`"));
        }
    }
    if let Some(k) = &c.keeps {
        if !o.stdout.contains(k.as_str()) {
            bad.push(format!("stdout lacks the good input's result `{k}`"));
        }
    }
    bad
}

// ---------------------------------------------------------------------------------------
// The corpus files.

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG whose header claims `w` x `h` (and nothing else).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&ihdr);
    v.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(b"IEND");
    v.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    v
}

fn bin_str(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

fn tensor_pickle(numel: u32, size: &[u32], stride: &[u32]) -> Vec<u8> {
    let mut v = b"ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
    v.extend(bin_str("storage"));
    v.extend_from_slice(b"ctorch\nFloatStorage\n");
    v.extend(bin_str("0"));
    v.extend(bin_str("cpu"));
    v.push(b'J');
    v.extend_from_slice(&numel.to_le_bytes());
    v.extend_from_slice(b"tQK\x00");
    for t in [size, stride] {
        v.push(b'(');
        for x in t {
            v.push(b'J');
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.push(b't');
    }
    v.extend_from_slice(b"\x89}tR");
    v
}

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

fn write_zip(p: &Path, entries: &[(&str, &[u8], bool)]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(p).unwrap());
    for (name, data, deflate) in entries {
        let m = if *deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        z.start_file(
            *name,
            zip::write::SimpleFileOptions::default().compression_method(m),
        )
        .unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

fn write_pth(p: &Path, pkl: &[u8], storage: &[u8], deflate: bool) {
    write_zip(
        p,
        &[
            ("archive/data.pkl", pkl, false),
            ("archive/byteorder", b"little", false),
            ("archive/data/0", storage, deflate),
        ],
    );
}

/// The tiny weights with one tensor's dtype or values changed.
fn rewrite_weights(
    out: &Path,
    f: impl Fn(&str, safetensors::Dtype, &[u8]) -> Option<(safetensors::Dtype, Vec<u8>)>,
) {
    let bytes = std::fs::read(testdata().join("golden/12_e2e_tiny_weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(k, v)| {
            let (dt, d) = f(&k, v.dtype(), v.data())?;
            Some((k, dt, v.shape().to_vec(), d))
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
    safetensors::serialize_to_file(views, None, out).unwrap();
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn p(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
    fn put(&self, name: &str, data: &[u8]) -> String {
        std::fs::write(self.dir.join(name), data).unwrap();
        self.p(name)
    }
}

fn golden(name: &str) -> String {
    testdata().join("golden").join(name).display().to_string()
}

/// Builds the C ABI driver against include/glip.h and the cdylib next to this test; returns
/// it and the cdylib's directory.
fn build_c_driver(dir: &Path) -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    // GLIP_CDYLIB_DIR: run the C cases against another build's cdylib.
    let lib = std::env::var_os("GLIP_CDYLIB_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([deps.clone(), deps.parent().unwrap().to_path_buf()])
        .find(|d| d.join("libglip_rt.so").exists())
        .expect("libglip_rt.so (the cdylib) not built");
    let out = dir.join("bad_inputs_c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Werror", "-I"])
        .arg(root.join("include"))
        .arg(root.join("tests/c/bad_inputs.c"))
        .arg("-o")
        .arg(&out)
        .arg(format!("-L{}", lib.display()))
        .arg("-lglip_rt")
        // DT_RPATH (not RUNPATH): found before LD_LIBRARY_PATH, where cargo test lists
        // target/<profile> too, whose libglip_rt.so may be an older build's.
        .arg(format!("-Wl,--disable-new-dtags,-rpath,{}", lib.display()))
        .status()
        .unwrap();
    assert!(st.success(), "{cc} failed to build tests/c/bad_inputs.c");
    (out, lib)
}

#[allow(clippy::vec_init_then_push)]
fn corpus(f: &Files) -> Vec<Case> {
    use Prog::{CAbi, Glip};
    let cfg = golden("12_e2e_tiny_config.yaml");
    let w = golden("12_e2e_tiny_weights.safetensors");
    // The tiny golden: its photo's size, caption and detection count come from its JSON.
    let tiny = glip_rt::testing::E2eGolden::load("12_e2e_tiny").unwrap();
    let photo = tiny.photo.display().to_string();
    let (ph, pw) = (tiny.photo_hw.0.to_string(), tiny.photo_hw.1.to_string());
    let caption = tiny.caption.clone();
    let bert = testdata()
        .join("tiny_bert_config.json")
        .display()
        .to_string();
    let pth = |n: &str| testdata().join("pth").join(n).display().to_string();
    let good_line = format!("{photo} ({pw}x{ph}): {} detections", tiny.num_final);
    let yaml = std::fs::read_to_string(&cfg).unwrap();

    // Images.
    let png = std::fs::read(&photo).unwrap();
    let empty_png = f.put("empty.png", b"");
    let garbage_png = f.put("garbage.png", &[0x5a; 3000]);
    let trunc_png = f.put("truncated.png", &png[..png.len() / 3]);
    let text_jpg = f.put("text.jpg", b"hello, I am not a JPEG\n");
    let huge_png = f.put("huge_header.png", &png_header(100_000, 100_000));
    let zero_png = f.put("zero_header.png", &png_header(0, 0));
    let fifo = f.p("fifo");
    let _ = std::fs::remove_file(&fifo);
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success(), "mkfifo");
    let a_dir = f.p("a_dir");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(f.dir.join("out_dir")).unwrap();
    let out_dir = f.p("out_dir");

    // Configs.
    let y = |name: &str, from: &str, to: &str| {
        assert!(yaml.contains(from), "{from:?} not in the tiny config");
        f.put(name, yaml.replacen(from, to, 1).as_bytes())
    };
    let nms_nan = y("nms_nan.yaml", "    NMS_TH: 0.6\n", "    NMS_TH: .nan\n");
    let nms_big = y("nms_big.yaml", "    NMS_TH: 0.6\n", "    NMS_TH: 4.0\n");
    let th_inf = y(
        "th_inf.yaml",
        "    INFERENCE_TH: 0.05\n",
        "    INFERENCE_TH: -.inf\n",
    );
    let stride0 = y(
        "stride0.yaml",
        "    ANCHOR_STRIDE:\n    - 8\n",
        "    ANCHOR_STRIDE:\n    - 0\n",
    );
    let min_big = y(
        "min_big.yaml",
        "  MIN_SIZE_TEST: 320\n",
        "  MIN_SIZE_TEST: 100000\n",
    );
    let max_big = y(
        "max_big.yaml",
        "  MAX_SIZE_TEST: 533\n",
        "  MAX_SIZE_TEST: 100000\n",
    );
    let embed_big = y(
        "embed_big.yaml",
        "    EMBED_DIM: 16\n",
        "    EMBED_DIM: 4000000000\n",
    );
    let std_zero = y("std_nan.yaml", "  - 57.375\n", "  - .nan\n");
    let nms_text = y("nms_text.yaml", "    NMS_TH: 0.6\n", "    NMS_TH: lots\n");
    let arch = y(
        "arch.yaml",
        "    CONV_BODY: SWINT-FPN-RETINANET\n",
        "    CONV_BODY: R-50-FPN\n",
    );
    let deep_flow = f.put(
        "deep_flow.yaml",
        format!("MODEL:\n  X: {}\n", "[".repeat(100_000)).as_bytes(),
    );
    let deep_block = f.put(
        "deep_block.yaml",
        format!("MODEL:\n  X:\n  {}1\n", "- ".repeat(100_000)).as_bytes(),
    );
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        laughs.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    laughs.push_str("MODEL:\n  X: *a11\n");
    let laughs = f.put("laughs.yaml", laughs.as_bytes());
    let empty_yaml = f.put("empty.yaml", b"");
    let list_yaml = f.put("list.yaml", b"- 1\n- 2\n");
    let no_model = f.put("no_model.yaml", b"INPUT:\n  MIN_SIZE_TEST: 800\n");
    let binary_yaml = f.put("binary.yaml", &[0xff, 0xfe, 0x00, 0x41, 0x80]);
    let tabs_yaml = f.put("tabs.yaml", b"MODEL:\n\tX: 1\n");

    // Weights.
    let tiny_w = std::fs::read(&w).unwrap();
    let empty_w = f.put("empty.safetensors", b"");
    let garbage_w = f.put("garbage.safetensors", &[7u8; 5000]);
    let trunc_w = f.put("truncated.safetensors", &tiny_w[..tiny_w.len() / 2]);
    let mut huge_hdr = (1u64 << 60).to_le_bytes().to_vec();
    huge_hdr.extend_from_slice(b"{\"a\":1}");
    let huge_hdr = f.put("huge_header.safetensors", &huge_hdr);
    let mut bad_json = 16u64.to_le_bytes().to_vec();
    bad_json.extend_from_slice(b"{not json at all");
    let bad_json = f.put("bad_json.safetensors", &bad_json);
    let i32_w = f.p("as_i32.safetensors");
    rewrite_weights(Path::new(&i32_w), |k, dt, d| {
        Some(if k == "backbone.body.patch_embed.proj.weight" {
            (safetensors::Dtype::I32, d.to_vec())
        } else {
            (dt, d.to_vec())
        })
    });
    let nan_w = f.p("nan.safetensors");
    rewrite_weights(Path::new(&nan_w), |k, dt, d| {
        Some(if k.ends_with("cls_logits.bias") {
            (dt, f32::NAN.to_le_bytes().repeat(d.len() / 4))
        } else {
            (dt, d.to_vec())
        })
    });
    let missing_w = f.p("missing_key.safetensors");
    rewrite_weights(Path::new(&missing_w), |k, dt, d| {
        (k != "rpn.head.cls_logits.bias").then(|| (dt, d.to_vec()))
    });

    // BERT configs and tokenizers.
    let bert_empty = f.put("bert_empty.json", b"");
    let bert_garbage = f.put("bert_garbage.json", b"{\"hidden_size\": ");
    let bert_text = std::fs::read_to_string(&bert).unwrap();
    let bert_huge = f.put(
        "bert_huge.json",
        bert_text
            .replacen(
                "\"vocab_size\"",
                "\"vocab_size\": 4000000000, \"x_vocab\"",
                1,
            )
            .as_bytes(),
    );
    let bert_layers = f.put(
        "bert_layers.json",
        bert_text
            .replacen(
                "\"num_hidden_layers\"",
                "\"num_hidden_layers\": 100000, \"x_layers\"",
                1,
            )
            .as_bytes(),
    );
    let tok_garbage = f.put("tokenizer_garbage.json", b"{\"model\": 3}");

    // Checkpoints for convert.
    let deep_pkl = {
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(bin_str("model"));
        p.push(b')');
        p.extend(std::iter::repeat_n(0x85u8, 500_000));
        p.extend_from_slice(b"u.");
        p
    };
    let deep_pth = f.p("deep.pth");
    write_pth(Path::new(&deep_pth), &deep_pkl, &[0; 4], false);
    let stride0_pth = f.p("stride0.pth");
    write_pth(
        Path::new(&stride0_pth),
        &model_pickle(&[("w", tensor_pickle(1, &[100_000, 100_000], &[0, 0]))]),
        &[0; 4],
        false,
    );
    let bomb_pth = f.p("bomb.pth");
    let n = 8u32 << 20;
    write_pth(
        Path::new(&bomb_pth),
        &model_pickle(&[("w", tensor_pickle(n, &[n], &[1]))]),
        &vec![0; n as usize * 4],
        true,
    );
    let evil_pth = f.p("evil.pth");
    write_pth(
        Path::new(&evil_pth),
        &model_pickle(&[
            ("w", tensor_pickle(1, &[1], &[1])),
            ("evil", b"cos\nsystem\n(X\x04\x00\x00\x00echotR".to_vec()),
        ]),
        &[0; 4],
        false,
    );
    let huge_numel_pth = f.p("huge_numel.pth");
    write_pth(
        Path::new(&huge_numel_pth),
        &model_pickle(&[("w", tensor_pickle(u32::MAX, &[u32::MAX], &[1]))]),
        &[0; 4],
        false,
    );
    let nopkl_pth = f.p("nopkl.pth");
    write_zip(Path::new(&nopkl_pth), &[("archive/other", b"x", false)]);
    let tiny_pth = std::fs::read(pth("tiny_glip_model.pth")).unwrap();
    let trunc_pth = f.put("truncated.pth", &tiny_pth[..tiny_pth.len() / 2]);
    let legacy_pth = f.put("legacy.pth", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.");
    let garbage_pth = f.put("garbage.pth", &[1u8; 100]);
    let out_st = f.p("converted.safetensors");

    // Streams.
    let frame = glip_rt::preprocess::load_image(Path::new(&photo), true)
        .unwrap()
        .data;
    let mut encoded_mixed = Vec::new();
    for fr in [png.as_slice(), b"not an image".as_slice(), png.as_slice()] {
        encoded_mixed.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        encoded_mixed.extend_from_slice(fr);
    }
    let mut big_prefix = u32::MAX.to_le_bytes().to_vec();
    big_prefix.extend_from_slice(&png);

    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let model = s(&["--config", &cfg, "--weights", &w, "--bert-config", &bert]);
    let detect = |name: &str, extra: &[&str]| {
        let mut a = s(&["detect"]);
        a.extend(model.clone());
        a.extend(s(&["--prompt", &caption]));
        a.extend(s(extra));
        let mut c = Case::new(Glip, name, &[]);
        c.args = a;
        c
    };
    let detect_with = |name: &str, config: &str, weights: &str, bertc: &str| {
        Case::new(
            Glip,
            name,
            &[
                "detect",
                "--config",
                config,
                "--weights",
                weights,
                "--bert-config",
                bertc,
                "--prompt",
                "person.",
                "--image",
                &photo,
            ],
        )
    };
    let stream = |name: &str, extra: &[&str], stdin: Vec<u8>| {
        let mut a = s(&["stream"]);
        a.extend(model.clone());
        a.extend(s(&["--prompt", "person. cup."]));
        a.extend(s(extra));
        let mut c = Case::new(Glip, name, &[]).stdin(stdin);
        c.args = a;
        c
    };
    let bench = |name: &str, extra: &[&str]| {
        let mut a = s(&[
            "bench",
            "--config",
            &cfg,
            "--bert-config",
            &bert,
            "--coco",
            "false",
        ]);
        a.extend(s(extra));
        let mut c = Case::new(Glip, name, &[]);
        c.args = a;
        c
    };
    let conv = |name: &str, input: &str, extra: &[&str]| {
        let mut a = s(&["convert", input]);
        a.extend(s(extra));
        let mut c = Case::new(Glip, name, &[]);
        c.args = a;
        c
    };
    let tok = |name: &str, extra: &[&str]| {
        let mut a = s(&["tokenize"]);
        a.extend(s(extra));
        let mut c = Case::new(Glip, name, &[]);
        c.args = a;
        c
    };
    let cabi = |name: &str, args: &[&str]| Case::new(CAbi, name, args);
    let long_prompt = "person. ".repeat(300);
    let raw = ["--input", "raw", "--width", &pw, "--height", &ph];

    let mut v = Vec::new();
    // --- detect: images.
    v.push(
        detect("detect: good image", &["--image", &photo])
            .exit(0)
            .keeps(&good_line),
    );
    v.push(
        detect(
            "detect: json good image",
            &["--image", &photo, "--format", "json"],
        )
        .exit(0)
        .keeps("\"detections\""),
    );
    v.push(
        detect(
            "detect: missing image",
            &["--image", "/nonexistent.png", &photo],
        )
        .says("nonexistent")
        .keeps(&good_line),
    );
    v.push(
        detect("detect: empty image", &["--image", &empty_png, &photo])
            .says("empty")
            .keeps(&good_line),
    );
    v.push(
        detect("detect: garbage image", &["--image", &garbage_png, &photo])
            .says("not an image")
            .keeps(&good_line),
    );
    v.push(detect("detect: truncated png", &["--image", &trunc_png, &photo]).keeps(&good_line));
    v.push(detect("detect: text as jpg", &["--image", &text_jpg, &photo]).keeps(&good_line));
    v.push(
        detect(
            "detect: png header 100000x100000",
            &["--image", &huge_png, &photo],
        )
        .says("too large")
        .keeps(&good_line),
    );
    v.push(detect("detect: png header 0x0", &["--image", &zero_png, &photo]).keeps(&good_line));
    v.push(
        detect("detect: FIFO among images", &["--image", &fifo, &photo])
            .says("FIFO")
            .keeps(&good_line),
    );
    v.push(
        // A folder is read for its images; one without any is an error naming it.
        detect(
            "detect: folder without images",
            &["--image", &a_dir, &photo],
        )
        .says("no jpg/jpeg/png/webp files in this folder")
        .keeps(&good_line),
    );
    v.push(
        detect(
            "detect: /dev/zero as image",
            &["--image", "/dev/zero", &photo],
        )
        .says("character device")
        .keeps(&good_line),
    );
    v.push(
        detect(
            "detect: /dev/null as image",
            &["--image", "/dev/null", &photo],
        )
        .says("not a regular file")
        .keeps(&good_line),
    );
    v.push(
        detect("detect: stdout /dev/full", &["--image", &photo])
            .sink(Sink::Full)
            .says("No space left"),
    );
    v.push(
        detect("detect: stdout closed", &["--image", &photo, &photo])
            .sink(Sink::Closed)
            .exit(0),
    );
    v.push(
        detect(
            "detect: failing --dump keeps detections",
            &[
                "--image",
                &photo,
                "--dump",
                "/nonexistent/dir/d.safetensors",
            ],
        )
        .says("--dump")
        .keeps(&good_line),
    );
    // --- detect: arguments and prompts.
    v.push(
        detect(
            "detect: threshold NaN",
            &["--image", &photo, "--threshold", "NaN"],
        )
        .says("--threshold"),
    );
    v.push(
        detect(
            "detect: threshold 2",
            &["--image", &photo, "--threshold", "2"],
        )
        .says("--threshold"),
    );
    v.push(
        Case::new(
            Glip,
            "detect: empty prompt",
            &[
                "detect",
                "--config",
                &cfg,
                "--weights",
                &w,
                "--bert-config",
                &bert,
                "--prompt",
                "",
                "--image",
                &photo,
            ],
        )
        .says("prompt"),
    );
    v.push(
        Case::new(
            Glip,
            "detect: dots only prompt",
            &[
                "detect",
                "--config",
                &cfg,
                "--weights",
                &w,
                "--bert-config",
                &bert,
                "--prompt",
                ". . .",
                "--image",
                &photo,
            ],
        )
        .says("prompt"),
    );
    v.push(
        detect(
            "detect: phrase not in caption",
            &["--image", &photo, "--phrases", "giraffe"],
        )
        .says("giraffe"),
    );
    v.push(
        Case::new(
            Glip,
            "detect: 300-phrase prompt",
            &[
                "detect",
                "--config",
                &cfg,
                "--weights",
                &w,
                "--bert-config",
                &bert,
                "--prompt",
                &long_prompt,
                "--image",
                &photo,
            ],
        )
        .exit(0)
        .keeps("detections"),
    );
    v.push(
        Case::new(
            Glip,
            "detect: control characters in prompt",
            &[
                "detect",
                "--config",
                &cfg,
                "--weights",
                &w,
                "--bert-config",
                &bert,
                "--prompt",
                "per\u{1}son.\u{7f} cup\t.",
                "--image",
                &photo,
            ],
        )
        .exit(0)
        .keeps("detections"),
    );
    // --- detect: configs.
    for (name, c, needle) in [
        ("NMS_TH NaN", &nms_nan, "NMS_TH"),
        ("NMS_TH 4", &nms_big, "NMS_TH"),
        ("INFERENCE_TH -inf", &th_inf, "INFERENCE_TH"),
        ("ANCHOR_STRIDE 0", &stride0, "ANCHOR_STRIDE"),
        ("MIN_SIZE_TEST 100000", &min_big, "MIN_SIZE_TEST"),
        ("MAX_SIZE_TEST 100000", &max_big, "MAX_SIZE_TEST"),
        ("EMBED_DIM 4e9", &embed_big, "EMBED_DIM"),
        ("PIXEL_STD NaN", &std_zero, "PIXEL_STD"),
        ("NMS_TH text", &nms_text, "NMS_TH"),
        ("unsupported backbone", &arch, "CONV_BODY"),
        ("100k-deep flow yaml", &deep_flow, "nested deeper"),
        ("100k-deep block yaml", &deep_block, "nested deeper"),
        ("alias bomb yaml", &laughs, "config"),
        ("empty yaml", &empty_yaml, "config"),
        ("list yaml", &list_yaml, "mapping"),
        ("yaml without MODEL", &no_model, "MODEL"),
        ("binary yaml", &binary_yaml, "UTF-8"),
        ("tabs in yaml", &tabs_yaml, "config"),
        ("FIFO as config", &fifo, "FIFO"),
        (
            "/dev/zero as config",
            &"/dev/zero".to_string(),
            "character device",
        ),
        ("directory as config", &a_dir, "directory"),
        (
            "missing config",
            &"/nonexistent.yaml".to_string(),
            "nonexistent",
        ),
    ] {
        v.push(detect_with(&format!("detect: config {name}"), c, &w, &bert).says(needle));
    }
    // --- detect: weights.
    for (name, wt, needle) in [
        ("empty", &empty_w, "weights"),
        ("garbage", &garbage_w, "weights"),
        ("truncated", &trunc_w, "truncated"),
        ("header length 2^60", &huge_hdr, "weights"),
        ("header not JSON", &bad_json, "weights"),
        ("float stored as i32", &i32_w, "i32"),
        ("missing tensor", &missing_w, "cls_logits.bias"),
        (
            ".pth given as weights",
            &pth("tiny_glip_model.pth"),
            "glip convert",
        ),
        ("FIFO as weights", &fifo, "FIFO"),
        (
            "/dev/zero as weights",
            &"/dev/zero".to_string(),
            "character device",
        ),
        ("directory as weights", &a_dir, "directory"),
    ] {
        v.push(detect_with(&format!("detect: weights {name}"), &cfg, wt, &bert).says(needle));
    }
    v.push(
        detect_with("detect: NaN weights warn", &cfg, &nan_w, &bert)
            .exit(0)
            .says("non-finite"),
    );
    // --- detect: BERT configs and tokenizers.
    v.push(detect_with("detect: empty bert config", &cfg, &w, &bert_empty).says("BERT"));
    v.push(detect_with("detect: truncated bert config", &cfg, &w, &bert_garbage).says("BERT"));
    v.push(detect_with("detect: bert vocab 4e9", &cfg, &w, &bert_huge).says("vocab_size"));
    v.push(
        detect_with("detect: bert 100000 layers", &cfg, &w, &bert_layers).says("num_hidden_layers"),
    );
    v.push(
        detect_with("detect: /dev/zero bert config", &cfg, &w, "/dev/zero")
            .says("character device"),
    );
    v.push(
        detect(
            "detect: garbage tokenizer",
            &["--image", &photo, "--tokenizer", &tok_garbage],
        )
        .says("tokenizer"),
    );
    v.push(
        detect(
            "detect: FIFO tokenizer",
            &["--image", &photo, "--tokenizer", &fifo],
        )
        .says("FIFO"),
    );

    // --- stream.
    let mut two = frame.clone();
    two.extend_from_slice(&frame);
    v.push(
        stream("stream: two raw frames", &raw, two.clone())
            .exit(0)
            .keeps("\"frame\":1"),
    );
    v.push(stream("stream: empty stdin", &raw, vec![]).exit(0));
    let mut cut = two.clone();
    cut.extend_from_slice(&frame[..999]);
    v.push(stream("stream: cut third frame", &raw, cut).keeps("\"frame\":1,\"detections\""));
    v.push(
        stream(
            "stream: width 2^62 height 4",
            &[
                "--input",
                "raw",
                "--width",
                "4611686018427387904",
                "--height",
                "4",
            ],
            vec![1, 2, 3],
        )
        .says("--width"),
    );
    v.push(
        stream(
            "stream: 100000x100000 empty stdin",
            &["--input", "raw", "--width", "100000", "--height", "100000"],
            vec![],
        )
        .says("limit"),
    );
    v.push(
        stream(
            "stream: 20000x20000 empty stdin",
            &["--input", "raw", "--width", "20000", "--height", "20000"],
            vec![],
        )
        .says("limit"),
    );
    v.push(
        stream(
            "stream: width 0",
            &["--input", "raw", "--width", "0", "--height", "4"],
            vec![],
        )
        .says("--width"),
    );
    v.push(
        stream(
            "stream: width -1",
            &["--input", "raw", "--width", "-1", "--height", "4"],
            vec![],
        )
        .exit(2),
    );
    v.push(
        stream(
            "stream: no height",
            &["--input", "raw", "--width", "4"],
            vec![],
        )
        .says("--height"),
    );
    v.push(
        stream(
            "stream: encoded good, bad, good",
            &["--input", "encoded"],
            encoded_mixed.clone(),
        )
        .keeps("\"frame\":2,\"detections\""),
    );
    v.push(
        stream(
            "stream: encoded length prefix 4 GB",
            &["--input", "encoded"],
            big_prefix,
        )
        .keeps("exceeds"),
    );
    v.push(
        stream(
            "stream: encoded cut length prefix",
            &["--input", "encoded"],
            vec![1, 2],
        )
        .keeps("error"),
    );
    v.push(
        stream(
            "stream: encoded zero-length frame",
            &["--input", "encoded"],
            vec![0, 0, 0, 0],
        )
        .keeps("empty frame"),
    );
    v.push(
        stream("stream: raw stdout /dev/full", &raw, two.clone())
            .sink(Sink::Full)
            .says("No space left"),
    );
    v.push(
        stream("stream: raw stdout closed", &raw, two)
            .sink(Sink::Closed)
            .exit(0),
    );
    v.push(stream("stream: raw without a size", &[], vec![]).says("--width"));

    // --- bench.
    v.push(bench("bench: --size 100000x100000", &["--size", "100000x100000"]).says("--size"));
    v.push(bench("bench: --size 2^62x4", &["--size", "4611686018427387904x4"]).says("--size"));
    v.push(bench("bench: --size 0x10", &["--size", "0x10"]).says("--size"));
    v.push(bench("bench: --size 19999x19999", &["--size", "19999x19999"]).says("limit"));
    v.push(bench("bench: --size words", &["--size", "big"]).says("--size"));
    v.push(bench("bench: --tokens 1", &["--tokens", "1"]).says("--tokens"));
    v.push(bench("bench: --tokens 100000", &["--tokens", "100000"]).says("--tokens"));
    v.push(bench("bench: --device cuda", &["--device", "cuda"]).says("CUDA"));
    v.push(
        Case::new(
            Glip,
            "bench: unknown model",
            &["bench", "--model", "glip-xxl"],
        )
        .says("glip-xxl"),
    );
    v.push(
        Case::new(Glip, "bench: deep yaml", &["bench", "--config", &deep_flow])
            .says("nested deeper"),
    );
    v.push(
        Case::new(
            Glip,
            "bench: MIN_SIZE_TEST 100000",
            &["bench", "--config", &min_big],
        )
        .says("MIN_SIZE_TEST"),
    );
    v.push(
        Case::new(
            Glip,
            "bench: EMBED_DIM 4e9",
            &["bench", "--config", &embed_big],
        )
        .says("EMBED_DIM"),
    );
    v.push(
        bench("bench: stdout /dev/full", &["--size", "64x64"])
            .sink(Sink::Full)
            .says("No space left"),
    );
    v.push(
        bench("bench: stdout closed", &["--size", "64x64"])
            .sink(Sink::Closed)
            .exit(0),
    );
    v.push(
        bench("bench: small run", &["--size", "64x64"])
            .exit(0)
            .keeps("total per frame"),
    );

    // --- convert.
    v.push(
        conv(
            "convert: good",
            &pth("tiny_glip_model.pth"),
            &["-o", &out_st],
        )
        .exit(0)
        .keeps("wrote"),
    );
    v.push(conv("convert: 500k-deep pickle", &deep_pth, &["-o", &out_st]).says("nested deeper"));
    v.push(
        conv(
            "convert: stride-0 view of 40 GB",
            &stride0_pth,
            &["-o", &out_st],
        )
        .says("stride-0"),
    );
    v.push(conv("convert: zip bomb", &bomb_pth, &["-o", &out_st]).says("zip bomb"));
    v.push(
        conv(
            "convert: storage numel 2^32",
            &huge_numel_pth,
            &["-o", &out_st],
        )
        .says("storage"),
    );
    v.push(conv("convert: os.system in model", &evil_pth, &["-o", &out_st]).says("os.system"));
    v.push(
        conv(
            "convert: os.system allowed",
            &evil_pth,
            &["-o", &out_st, "--allow-unknown"],
        )
        .exit(0)
        .says("os.system")
        .keeps("wrote"),
    );
    v.push(
        conv(
            "convert: zip without data.pkl",
            &nopkl_pth,
            &["-o", &out_st],
        )
        .says("data.pkl"),
    );
    v.push(conv("convert: truncated zip", &trunc_pth, &["-o", &out_st]).says("weights"));
    v.push(conv("convert: legacy torch.save", &legacy_pth, &["-o", &out_st]).says("legacy"));
    v.push(
        conv("convert: garbage", &garbage_pth, &["-o", &out_st]).says("not a PyTorch checkpoint"),
    );
    v.push(conv("convert: safetensors as input", &w, &["-o", &out_st]).says("safetensors"));
    v.push(conv("convert: empty file", &empty_w, &["-o", &out_st]).says("empty"));
    v.push(conv("convert: FIFO input", &fifo, &["-o", &out_st]).says("FIFO"));
    v.push(
        conv("convert: /dev/zero input", "/dev/zero", &["-o", &out_st]).says("character device"),
    );
    v.push(
        conv(
            "convert: -o existing directory",
            &pth("tiny_glip_model.pth"),
            &["-o", &out_dir],
        )
        .says("directory"),
    );
    v.push(
        conv(
            "convert: -o dir/",
            &pth("tiny_glip_model.pth"),
            &["-o", &format!("{out_dir}/")],
        )
        .says("directory"),
    );
    v.push(
        conv(
            "convert: -o missing dir",
            &pth("tiny_glip_model.pth"),
            &["-o", "/nonexistent/x.safetensors"],
        )
        .says("directory"),
    );
    v.push(
        conv(
            "convert: stdout /dev/full",
            &pth("tiny_glip_model.pth"),
            &["-o", &out_st],
        )
        .sink(Sink::Full)
        .says("No space left"),
    );
    v.push(
        conv(
            "convert: stdout closed",
            &pth("tiny_glip_model.pth"),
            &["-o", &out_st],
        )
        .sink(Sink::Closed)
        .exit(0),
    );

    // --- tokenize.
    v.push(
        tok("tokenize: good", &["--prompt", "person. cup."])
            .exit(0)
            .keeps("\"ids\""),
    );
    v.push(tok("tokenize: empty prompt", &["--prompt", ""]).says("prompt"));
    v.push(tok("tokenize: dots only", &["--prompt", ". . ."]).says("prompt"));
    v.push(
        tok("tokenize: 300 phrases", &["--prompt", &long_prompt])
            .exit(0)
            .says("256"),
    );
    v.push(
        tok(
            "tokenize: phrase not in caption",
            &["--prompt", "a cat", "--phrases", "dog"],
        )
        .says("dog"),
    );
    v.push(
        tok(
            "tokenize: empty phrase",
            &["--prompt", "a cat", "--phrases", ""],
        )
        .says("phrase"),
    );
    v.push(
        tok(
            "tokenize: emoji and RTL",
            &["--prompt", "🐱 cat. \u{202e}dog. 中文."],
        )
        .exit(0)
        .keeps("\"tokens\""),
    );
    v.push(
        tok(
            "tokenize: garbage tokenizer",
            &["--prompt", "a.", "--tokenizer", &tok_garbage],
        )
        .says("tokenizer"),
    );
    v.push(
        tok(
            "tokenize: /dev/zero tokenizer",
            &["--prompt", "a.", "--tokenizer", "/dev/zero"],
        )
        .says("character device"),
    );
    v.push(
        tok(
            "tokenize: FIFO tokenizer",
            &["--prompt", "a.", "--tokenizer", &fifo],
        )
        .says("FIFO"),
    );
    v.push(
        tok("tokenize: stdout /dev/full", &["--prompt", "a."])
            .sink(Sink::Full)
            .says("No space left"),
    );
    v.push(
        tok("tokenize: stdout closed", &["--prompt", "a."])
            .sink(Sink::Closed)
            .exit(0),
    );

    // --- doctor and the command line itself.
    v.push(
        Case::new(Glip, "doctor", &["doctor"])
            .exit(0)
            .keeps("glip-rt"),
    );
    v.push(
        Case::new(Glip, "doctor: stdout /dev/full", &["doctor"])
            .sink(Sink::Full)
            .says("No space left"),
    );
    v.push(
        Case::new(Glip, "doctor: stdout closed", &["doctor"])
            .sink(Sink::Closed)
            .exit(0),
    );
    v.push(Case::new(Glip, "cli: no arguments", &[]).exit(2));
    v.push(Case::new(Glip, "cli: unknown command", &["explode"]).exit(2));
    v.push(Case::new(Glip, "cli: --help", &["--help"]).exit(0));
    v.push(
        Case::new(Glip, "cli: --help to /dev/full", &["--help"])
            .sink(Sink::Full)
            .says("No space left"),
    );
    v.push(
        Case::new(Glip, "cli: --help to a closed pipe", &["--help"])
            .sink(Sink::Closed)
            .exit(0),
    );

    // --- the C ABI.
    v.push(
        cabi("capi: all paths empty", &["", "", "", "", "a."]).says("config: the path is empty"),
    );
    v.push(cabi("capi: NULL config", &["NULL", &w, "NULL", "NULL", "a."]).says("config"));
    v.push(cabi("capi: NULL weights", &[&cfg, "NULL", "NULL", "NULL", "a."]).says("weights"));
    v.push(
        cabi("capi: empty weights path", &[&cfg, "", &bert, "NULL", "a."])
            .says("weights: the path is empty"),
    );
    v.push(
        cabi(
            "capi: missing weights",
            &[&cfg, "/nonexistent.safetensors", &bert, "NULL", "a."],
        )
        .says("nonexistent"),
    );
    v.push(
        cabi(
            "capi: /dev/zero weights",
            &[&cfg, "/dev/zero", &bert, "NULL", "a."],
        )
        .says("character device"),
    );
    v.push(cabi("capi: FIFO config", &[&fifo, &w, &bert, "NULL", "a."]).says("FIFO"));
    v.push(cabi("capi: deep yaml", &[&deep_flow, &w, &bert, "NULL", "a."]).says("nested deeper"));
    v.push(cabi("capi: NaN NMS_TH", &[&nms_nan, &w, &bert, "NULL", "a."]).says("NMS_TH"));
    v.push(cabi("capi: NULL prompt", &[&cfg, &w, &bert, "NULL", "NULL"]).says("prompt"));
    v.push(cabi("capi: empty prompt", &[&cfg, &w, &bert, "NULL", ""]).says("prompt"));
    v.push(
        cabi(
            "capi: frame 0x0",
            &[&cfg, &w, &bert, "NULL", "a.", "0", "0"],
        )
        .says("zero-size"),
    );
    v.push(
        cabi(
            "capi: frame 4294967295 squared",
            &[&cfg, &w, &bert, "NULL", "a.", "4294967295", "4294967295"],
        )
        .says("limit"),
    );
    v.push(
        cabi(
            "capi: frame 100000x100000",
            &[&cfg, &w, &bert, "NULL", "a.", "100000", "100000"],
        )
        .says("limit"),
    );
    let raw_file = f.put("photo.rgb", &frame);
    v.push(
        cabi(
            "capi: good frame",
            &[&cfg, &w, &bert, "NULL", &caption, &pw, &ph, &raw_file],
        )
        .exit(0)
        .keeps(&format!("count {}", tiny.num_final)),
    );
    v
}

#[test]
fn bad_input_corpus() {
    let dir = match std::env::var_os("GLIP_CORPUS_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("glip-bad-inputs-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let files = Files { dir: dir.clone() };
    let cabi = build_c_driver(&dir);
    let cases = corpus(&files);
    assert!(cases.len() >= 80, "only {} cases", cases.len());
    let start = Instant::now();
    // Two runners (CI has 2 cores); each case is its own process.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(c) = cases.get(i) else { break };
                let o = run_case(c, &cabi);
                let bad = judge(c, &o);
                results.lock().unwrap().push((i, o, bad));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let mut failures = Vec::new();
    for (i, o, bad) in &results {
        let c = &cases[*i];
        println!(
            "{:<4} {:<6} exit {:<4} {:>6.2}s  {}",
            if bad.is_empty() { "ok" } else { "FAIL" },
            format!("{:?}", c.prog),
            o.code
                .map(|x| x.to_string())
                .unwrap_or_else(|| "sig".into()),
            o.elapsed.as_secs_f64(),
            c.name
        );
        if !bad.is_empty() {
            failures.push(format!(
                "{}: {}\n  args: {:?}\n  stderr: {}\n  stdout: {}",
                c.name,
                bad.join("; "),
                c.args,
                o.stderr.chars().take(600).collect::<String>(),
                o.stdout.chars().take(300).collect::<String>()
            ));
        }
    }
    println!(
        "{} cases, {} failed, {:.1} s",
        cases.len(),
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    if std::env::var_os("GLIP_CORPUS_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
