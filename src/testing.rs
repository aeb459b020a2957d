//! Helpers shared by the test suites: GPU gating, golden files, random inputs, error
//! measures. Part of the library so integration tests and benches use one definition.

use crate::backend::cuda::CudaBackend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Whether GPU tests must run (`GLIP_REQUIRE_GPU=1`): then a missing device is a failure.
pub fn gpu_required() -> bool {
    std::env::var("GLIP_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The CUDA device for a kernel test: a real GPU when one is usable (and the kernels were
/// compiled), otherwise the emulated device, which runs the same kernels through the same
/// wrappers on the CPU. Prints which one (`device: GPU …` / `device: emulated …`).
/// `GLIP_DEVICE=emu` forces the emulated device; under `GLIP_REQUIRE_GPU=1` a missing GPU
/// panics, which fails the test: that is what the GPU check script relies on.
/// Always `Some` (the Option is kept so callers read as before).
pub fn cuda_or_skip(test: &str) -> Option<CudaBackend> {
    Some(cuda_device(test))
}

/// See [`cuda_or_skip`].
pub fn cuda_device(test: &str) -> CudaBackend {
    let forced_emu = std::env::var("GLIP_DEVICE").is_ok_and(|v| v == "emu");
    let why = if forced_emu {
        "GLIP_DEVICE=emu".to_string()
    } else if !crate::kernels::COMPILED {
        "kernels not compiled for a GPU in this build (no nvcc at build time)".to_string()
    } else {
        match CudaBackend::new(0) {
            Ok(be) => {
                println!(
                    "device: GPU {} ({test})",
                    be.name().unwrap_or_else(|_| "?".into())
                );
                return be;
            }
            Err(e) => e.to_string(),
        }
    };
    if gpu_required() {
        panic!("{test}: GLIP_REQUIRE_GPU=1 but no usable CUDA device: {why}");
    }
    println!("device: emulated ({test}: {why})");
    CudaBackend::emulated()
}

/// The repository's test data directory.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata")
}

/// A golden file's tensors by name, every float upcast to f32 (integers kept).
pub fn load_golden(name: &str) -> Result<HashMap<String, Tensor>> {
    crate::weights::read_safetensors_all(
        &testdata()
            .join("golden")
            .join(format!("{name}.safetensors")),
    )
}

/// A small deterministic PRNG (xorshift64*) so tests need no extra crate.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }
    /// Approximately standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
    pub fn normal_vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * std).collect()
    }
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
}

/// max |got - want|.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Normalised squared error ‖got − want‖² / ‖want‖² (design.md: f32 ≤ 1e-6, f16 ≤ 1e-4).
pub fn nse(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    num / den.max(f64::MIN_POSITIVE)
}

/// Assert |got − want| ≤ atol + rtol·|want| elementwise, with NaN failing; reports the worst.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0.0f32);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let d = (a - b).abs();
        if d.is_nan() || d > atol + rtol * b.abs() {
            panic!("{what}: element {i}: got {a}, want {b} (|diff| {d} > {atol} + {rtol}*|want|)");
        }
        if d > worst.1 {
            worst = (i, d);
        }
    }
    println!(
        "{what}: max |diff| {:.3e} at {} over {} elements",
        worst.1,
        worst.0,
        got.len()
    );
}

/// An end-to-end golden (`NN_e2e_<name>` in `tests/testdata/golden`): everything a test needs
/// read from the golden's own JSON, so goldens made with other seeds, photo sizes and captions
/// pass unchanged.
#[derive(Clone, Debug)]
pub struct E2eGolden {
    /// File stem, e.g. `12_e2e_tiny`.
    pub name: String,
    pub config: PathBuf,
    pub weights: PathBuf,
    pub photo: PathBuf,
    pub caption: String,
    /// The phrases' character spans in the caption (GLIP's tokens_positive), one per label.
    pub phrases: Vec<String>,
    /// label → token indices (positive_map_label_to_token), sorted by label.
    pub positive_map: Vec<(u32, Vec<usize>)>,
    /// The network input before padding, and padded (height, width).
    pub image_hw: (usize, usize),
    pub padded_hw: (usize, usize),
    /// The photo's (height, width).
    pub photo_hw: (usize, usize),
    pub num_final: usize,
    /// The BERT configuration GLIP was run with (the golden's `bert_config`).
    pub bert: crate::model::config::BertConfig,
}

impl E2eGolden {
    /// Reads `<name>.json`.
    pub fn load(name: &str) -> Result<E2eGolden> {
        let dir = testdata().join("golden");
        let path = dir.join(format!("{name}.json"));
        let bad = |what: &str| Error::Invalid(format!("{}: {what}", path.display()));
        let text = std::fs::read_to_string(&path).map_err(|e| bad(&e.to_string()))?;
        let j: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        let pair = |k: &str| -> Result<(usize, usize)> {
            let v = j[k].as_array().ok_or_else(|| bad(k))?;
            match (
                v.first().and_then(|x| x.as_u64()),
                v.get(1).and_then(|x| x.as_u64()),
            ) {
                (Some(a), Some(b)) => Ok((a as usize, b as usize)),
                _ => Err(bad(k)),
            }
        };
        let caption = j["caption"]
            .as_str()
            .ok_or_else(|| bad("caption"))?
            .to_string();
        let positive_map = golden_positive_map(&j).map_err(|e| bad(&e.to_string()))?;
        let phrases = j["tokens_positive"]
            .as_array()
            .ok_or_else(|| bad("tokens_positive"))?
            .iter()
            .map(|spans| {
                let s = &spans[0];
                match (s[0].as_u64(), s[1].as_u64()) {
                    (Some(a), Some(b)) => caption
                        .get(a as usize..b as usize)
                        .map(str::to_string)
                        .ok_or_else(|| bad("tokens_positive span")),
                    _ => Err(bad("tokens_positive")),
                }
            })
            .collect::<Result<_>>()?;
        let shape = j["photo"]["shape_hwc"]
            .as_array()
            .ok_or_else(|| bad("photo"))?;
        let photo_hw = match (
            shape.first().and_then(|x| x.as_u64()),
            shape.get(1).and_then(|x| x.as_u64()),
        ) {
            (Some(h), Some(w)) => (h as usize, w as usize),
            _ => return Err(bad("photo.shape_hwc")),
        };
        Ok(E2eGolden {
            name: name.to_string(),
            config: dir.join(format!("{name}_config.yaml")),
            weights: dir.join(format!("{name}_weights.safetensors")),
            photo: dir.join(format!("{name}_photo.png")),
            caption,
            phrases,
            positive_map,
            image_hw: pair("image_size_hw")?,
            padded_hw: pair("padded_size_hw")?,
            photo_hw,
            num_final: j["num_final_detections"]
                .as_u64()
                .ok_or_else(|| bad("num_final_detections"))? as usize,
            bert: crate::model::config::BertConfig::from_json_str(
                &j["bert_config"].to_string(),
                &format!("{}: bert_config", path.display()),
            )?,
        })
    }

    /// Every end-to-end golden present (a `NN_e2e_*.json` with its weights), by name.
    pub fn all() -> Result<Vec<E2eGolden>> {
        let dir = testdata().join("golden");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(".json").map(str::to_string))
            .filter(|n| n.contains("_e2e_") && !n.ends_with("_weights"))
            .filter(|n| dir.join(format!("{n}_weights.safetensors")).exists())
            .collect();
        names.sort();
        names.iter().map(|n| E2eGolden::load(n)).collect()
    }

    /// The golden's GLIP configuration (its yaml).
    pub fn glip_config(&self) -> Result<crate::model::config::GlipConfig> {
        crate::model::config::GlipConfig::from_yaml_file(&self.config)
    }

    /// The golden's model from its weights file, on `be`.
    pub fn model_on(
        &self,
        be: crate::model::glip::SharedBackend,
    ) -> Result<crate::model::glip::Glip> {
        let w = crate::weights::load_weights(&self.weights)?;
        crate::model::glip::Glip::load_on(be, self.glip_config()?, self.bert.clone(), &w)
    }

    /// The one pipeline ([`crate::Detector`]) on the golden's model, on `device` (no CPU
    /// fallback), with the golden's caption and phrases as the prompt.
    pub fn detector(&self, device: crate::DeviceChoice) -> Result<crate::Detector> {
        let mut det = self.detector_builder(device).build()?;
        det.set_prompt_with_phrases(&self.caption, &self.phrases)?;
        Ok(det)
    }

    /// The builder of [`E2eGolden::detector`] (the golden's model on `device`, no CPU
    /// fallback), for a test to change before building; no prompt set.
    pub fn detector_builder(&self, device: crate::DeviceChoice) -> crate::api::DetectorBuilder {
        crate::Detector::builder()
            .config(&self.config)
            .weights(&self.weights)
            .bert(self.bert.clone())
            .device(device)
            .allow_fallback(false)
    }

    /// The command-line arguments that load this golden's model: `--config`, `--weights` and
    /// `--bert-config` (the tiny BERT config the goldens were made with).
    pub fn model_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--config".into(),
            self.config.clone().into(),
            "--weights".into(),
            self.weights.clone().into(),
            "--bert-config".into(),
            testdata().join("tiny_bert_config.json").into(),
        ]
    }

    /// A model folder of this golden in a new temporary folder (`prefix`): its yaml,
    /// weights and the tiny BERT config under the names of [`crate::api::MODEL_DIR_FILES`].
    pub fn model_dir(&self, prefix: &str) -> TempDir {
        let dir = TempDir::new(prefix);
        let [config, weights, bert, _] = crate::api::MODEL_DIR_FILES;
        let bert_file = testdata().join("tiny_bert_config.json");
        for (from, to) in [
            (&self.config, config),
            (&self.weights, weights),
            (&bert_file, bert),
        ] {
            if let Err(e) = std::fs::copy(from, dir.join(to)) {
                panic!(
                    "cannot copy {} into {}: {e}",
                    from.display(),
                    dir.path().display()
                );
            }
        }
        dir
    }

    /// This golden's yaml with GLIP's test resize set to `side` pixels (MIN and MAX), written
    /// to `dir`: the soak tests run thousands of frames at a 64-pixel input this way.
    pub fn config_at_input_side(&self, side: usize, dir: &Path) -> Result<PathBuf> {
        let text = std::fs::read_to_string(&self.config).map_err(|e| Error::io(&self.config, e))?;
        let mut out = String::with_capacity(text.len());
        let mut changed = 0;
        for line in text.lines() {
            let key = line.trim_start();
            if key.starts_with("MIN_SIZE_TEST:") || key.starts_with("MAX_SIZE_TEST:") {
                let indent = &line[..line.len() - key.len()];
                let name = key.split(':').next().unwrap_or_default();
                out.push_str(&format!("{indent}{name}: {side}\n"));
                changed += 1;
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        if changed != 2 {
            return Err(Error::Config(format!(
                "{}: MIN_SIZE_TEST and MAX_SIZE_TEST not both found",
                self.config.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(format!("{}_{side}.yaml", self.name));
        std::fs::write(&path, out).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// The golden's tensors.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        load_golden(&self.name)
    }

    /// The photo's boxes over the network input's: the factor GLIP's BoxList.resize applies
    /// (x by width, y by height).
    pub fn box_scale(&self) -> (f32, f32) {
        (
            self.photo_hw.1 as f32 / self.image_hw.1 as f32,
            self.photo_hw.0 as f32 / self.image_hw.0 as f32,
        )
    }
}

/// The backends the golden tests run on: the CPU; the emulated CUDA device (its checks set
/// to `fast` unless `GLIP_EMU_CHECKS` says otherwise: every kernel family runs under the full
/// checks in its parity tests); and a GPU when one is present (required under
/// `GLIP_REQUIRE_GPU=1`). The device backends refuse per-op CPU fallback and poison op
/// outputs.
pub fn test_backends() -> Vec<(String, crate::model::glip::SharedBackend)> {
    use crate::backend::cuda::{CudaBackend, EmuChecks};
    use std::sync::Arc;
    let mut v: Vec<(String, crate::model::glip::SharedBackend)> =
        vec![("cpu".into(), Arc::new(crate::backend::cpu::CpuBackend))];
    let checks = match std::env::var("GLIP_EMU_CHECKS").as_deref() {
        Ok("full") => EmuChecks::Full,
        _ => EmuChecks::Fast,
    };
    // Device backends refuse CPU fallback (every op the tests reach must run a kernel) and
    // poison op outputs with NaN (an element a kernel never writes cannot pass as 0).
    if crate::backend::cuda::emu::EMULATOR_BUILT {
        let mut be = CudaBackend::emulated_with(checks);
        be.set_fallback(false);
        be.set_poison_outputs(true);
        v.push(("emu".into(), Arc::new(be)));
    }
    if crate::kernels::COMPILED || gpu_required() {
        match CudaBackend::new(0) {
            Ok(mut be) => {
                be.set_fallback(false);
                be.set_poison_outputs(true);
                v.push(("cuda".into(), Arc::new(be)))
            }
            Err(e) if gpu_required() => panic!("GLIP_REQUIRE_GPU=1 but no GPU: {e}"),
            Err(_) => {}
        }
    }
    v
}

/// Resident memory of process `pid` in kB (Linux /proc; None elsewhere): the soak tests'
/// measure.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Thresholds that test per-phrase filtering on any detections (phrase, score): a global
/// one (the median score) and, for the first phrase in `dets` with a score under it, its
/// own (the median of its scores under the global one): the global one cuts detections of
/// the other phrases, and the phrase keeps detections the global one would drop. None when no phrase scores under the
/// median.
pub fn phrase_threshold_case(dets: &[(String, f32)]) -> Option<(String, f32, f32)> {
    if dets.is_empty() {
        return None;
    }
    let global = median(dets.iter().map(|d| f64::from(d.1)).collect()) as f32;
    let target = dets.iter().find(|d| d.1 < global)?.0.clone();
    let under: Vec<f64> = dets
        .iter()
        .filter(|d| d.0 == target && d.1 < global)
        .map(|d| f64::from(d.1))
        .collect();
    let own = median(under) as f32;
    Some((target, global, own))
}

/// A fresh directory under the system temp dir, removed with its contents when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/<prefix>-<pid>-<n>`, created empty.
    pub fn new(prefix: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        if let Err(e) = std::fs::create_dir_all(&d) {
            panic!("cannot create {}: {e}", d.display());
        }
        TempDir(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A path `name` in the calling test's own temp directory: made on first use and removed,
/// with everything in it, when the test's thread ends (the test harness runs each test on a
/// thread of its own), so tests leave nothing behind in /tmp.
pub fn test_tmp(prefix: &str, name: &str) -> PathBuf {
    thread_local! {
        static DIR: std::cell::RefCell<Option<TempDir>> = const { std::cell::RefCell::new(None) };
    }
    DIR.with(|d| {
        d.borrow_mut()
            .get_or_insert_with(|| TempDir::new(prefix))
            .join(name)
    })
}

/// The pre-NMS candidates of every image (all levels' top-k, decoded and clipped) by the CPU
/// twins, for tests and diagnostics; `outputs` may live on any backend `be`.
pub fn pre_nms_candidates(
    be: &dyn crate::backend::Backend,
    outputs: &crate::model::head::HeadOutputs,
    positive_map: &[(u32, Vec<usize>)],
    image_sizes: &[(usize, usize)],
    config: &crate::model::postprocess::PostprocessConfig,
) -> Result<Vec<Vec<crate::model::postprocess::Detection>>> {
    use crate::backend::atss::PositiveMapCsr;
    use crate::backend::cpu::{nms, CpuBackend};
    use crate::backend::Backend;
    let cpu = CpuBackend;
    let host = outputs.to_host(be)?;
    let (ctr, reg, logits) = host.packed(&cpu)?;
    let map = PositiveMapCsr::new(positive_map, host.num_labels, host.num_tokens)?;
    let scores = cpu.phrase_scores(&logits, &map, host.num_labels)?;
    let levels = host.levels(&config.anchor_strides)?;
    let inp = nms::PackedInputs {
        scores: scores.f32s()?,
        centerness: ctr.f32s()?,
        bbox_reg: reg.f32s()?,
        num_labels: host.num_labels,
        levels: &levels,
    };
    image_sizes
        .iter()
        .enumerate()
        .map(|(b, &(h, w))| nms::candidates(&inp, b, (h as f32, w as f32), &config.atss))
        .collect()
}

/// Per-tensor relative error ‖got − want‖∞ / ‖want‖∞ a CUDA device (f16 activations, f32
/// accumulation) may show against a golden; the CPU backend is held to 1e-4 per element.
pub const DEVICE_TAP_REL: f32 = 1e-2;

/// `x` (a host tensor) on `be`, in the backend's activation dtype.
pub fn activation_on(be: &dyn crate::backend::Backend, x: &Tensor) -> Tensor {
    let host = match be.activation_dtype() {
        crate::tensor::DType::F16 => x.to_f16(),
        _ => x.to_f32(),
    };
    match host.and_then(|h| be.upload(&h)) {
        Ok(t) => t,
        Err(e) => panic!("upload to {}: {e}", be.describe()),
    }
}

/// Compares `got` (a tensor of `be`, named `backend` as in [`test_backends`]) with a golden
/// tensor: within 1e-4 (abs and rel) per element on the CPU, within [`DEVICE_TAP_REL`] on a
/// CUDA device; prints the error. Returns the relative error.
pub fn check_on(
    backend: &str,
    what: &str,
    be: &dyn crate::backend::Backend,
    got: &Tensor,
    want: &Tensor,
) -> f32 {
    let got_host = match be.to_host(got).and_then(|t| t.to_f32_vec()) {
        Ok(v) => v,
        Err(e) => panic!("{what}: download from {backend}: {e}"),
    };
    let want_v = match want.to_f32_vec() {
        Ok(v) => v,
        Err(e) => panic!("{what}: golden: {e}"),
    };
    assert_eq!(got.shape(), want.shape(), "{what} on {backend}: shape");
    assert!(
        got_host.iter().all(|v| v.is_finite()),
        "{what} on {backend}: non-finite values"
    );
    let d = max_abs_diff(&got_host, &want_v);
    let scale = want_v.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let rel = d / scale.max(f32::MIN_POSITIVE);
    println!("{what} on {backend}: max |diff| {d:.3e}, relative {rel:.3e}");
    if backend == "cpu" {
        assert_close(what, &got_host, &want_v, 1e-4, 1e-4);
    } else {
        assert!(
            rel <= DEVICE_TAP_REL,
            "{what} on {backend}: relative error {rel:.2e} > {DEVICE_TAP_REL:e}"
        );
    }
    rel
}

/// A golden JSON's `positive_map_label_to_token` as (label, tokens) pairs sorted by label.
pub fn golden_positive_map(j: &serde_json::Value) -> Result<Vec<(u32, Vec<usize>)>> {
    let bad = |what: &str| Error::Invalid(format!("golden positive map: {what}"));
    let mut map: Vec<(u32, Vec<usize>)> = j["positive_map_label_to_token"]
        .as_object()
        .ok_or_else(|| bad("no positive_map_label_to_token"))?
        .iter()
        .map(|(l, toks)| {
            let label = l
                .parse::<u32>()
                .map_err(|_| bad("a label is not a number"))?;
            let toks = toks
                .as_array()
                .ok_or_else(|| bad("tokens are not a list"))?
                .iter()
                .map(|t| {
                    t.as_u64()
                        .map(|t| t as usize)
                        .ok_or_else(|| bad("a token is not a number"))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((label, toks))
        })
        .collect::<Result<_>>()?;
    map.sort();
    Ok(map)
}

/// A post-processing golden's head outputs (`input/bbox_reg.{l}`, `input/centerness.{l}`,
/// `input/dot_product_logits.{l}` for every level present) as f32 tensors on `be`, with
/// `num_labels` score columns.
pub fn golden_head_outputs(
    g: &HashMap<String, Tensor>,
    be: &dyn crate::backend::Backend,
    num_labels: usize,
) -> Result<crate::model::head::HeadOutputs> {
    let levels = (0..)
        .take_while(|l| g.contains_key(&format!("input/bbox_reg.{l}")))
        .count();
    let get = |k: String| -> Result<Tensor> {
        let t = g
            .get(&k)
            .ok_or_else(|| Error::Invalid(format!("golden lacks {k}")))?;
        be.upload(&t.to_f32()?)
    };
    let per = |name: &str| -> Result<Vec<Tensor>> {
        (0..levels)
            .map(|l| get(format!("input/{name}.{l}")))
            .collect()
    };
    let logits = per("dot_product_logits")?;
    let [batch, _, num_tokens] = logits
        .first()
        .ok_or_else(|| Error::Invalid("golden has no head outputs".into()))?
        .dims::<3>("golden logits")?;
    Ok(crate::model::head::HeadOutputs {
        batch,
        num_tokens,
        num_labels,
        bbox_reg: per("bbox_reg")?,
        centerness: per("centerness")?,
        dot_product_logits: logits,
        proj_tokens: Tensor::zeros(&[0]),
        token_bias: Tensor::zeros(&[0]),
    })
}

/// The grouped GroupNorm kernels on levels given packed as for the CPU twin
/// ([`crate::backend::cpu::group_norm::group_norm_levels`]): each level uploaded to a buffer
/// of its own, outputs poisoned with NaN beforehand, the result packed back the same way.
pub fn group_norm_levels_packed_on(
    be: &crate::backend::cuda::CudaBackend,
    s: &crate::backend::cpu::group_norm::GroupNormShape,
    levels: &[crate::backend::cpu::group_norm::GnLevel],
    x: &[half::f16],
    weight: &[f32],
    bias: &[f32],
) -> Result<Vec<half::f16>> {
    use crate::backend::cuda::group_norm::{group_norm_levels_f16, workspace_len, GnLevelBufs};
    let len = |hw: usize| s.batch * s.channels * hw;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for l in levels {
        let part = x.get(l.offset..l.offset + len(l.hw)).ok_or_else(|| {
            Error::Invalid(format!("level at {} outside the packed input", l.offset))
        })?;
        xs.push(be.upload_f16(part)?);
        ys.push(be.filled_f16(len(l.hw), half::f16::NAN)?);
    }
    let hws: Vec<usize> = levels.iter().map(|l| l.hw).collect();
    let (dw, db) = (be.upload_f32(weight)?, be.upload_f32(bias)?);
    let mut ws = be.filled_f32(workspace_len(s, &hws), f32::NAN)?;
    let mut bufs: Vec<GnLevelBufs<'_>> = xs
        .iter()
        .zip(ys.iter_mut())
        .zip(&hws)
        .map(|((x, y), &hw)| GnLevelBufs { x, y, hw })
        .collect();
    group_norm_levels_f16(be, s, &mut bufs, &dw, &db, &mut ws)?;
    drop(bufs);
    let mut out = vec![half::f16::NAN; x.len()];
    for (l, y) in levels.iter().zip(&ys) {
        out[l.offset..l.offset + len(l.hw)].copy_from_slice(&be.download(y)?);
    }
    Ok(out)
}
