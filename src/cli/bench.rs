//! `glip bench`: end-to-end speed of GLIP-T-shaped random weights, per stage.

use super::crate_result::Result;
use glip_rt::api::PlanKey;
use glip_rt::model::config::GlipConfig;
use glip_rt::model::glip::Taps;
use glip_rt::preprocess::{preprocess_image, RgbImage8};
use glip_rt::testing::Rng;
use glip_rt::tokenizer::{GlipTokenizer, Prompt};
use glip_rt::{limits, Detector, DeviceChoice, Error};
use std::process::ExitCode;
use std::time::Instant;

/// COCO's 80 category names (instances_val2017.json order), as GLIP's evaluation prompt.
pub const COCO80: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// (description, token ids, attention mask, positive map) of one benchmarked prompt.
type Case = (String, Vec<i32>, Vec<i32>, Vec<(u32, Vec<usize>)>);

/// Stage times summed over the tower's layers ("tower.3 DyConv" → "DyConv xN"), in order.
fn group_stages(timings: &[(String, std::time::Duration)], layers: usize) -> Vec<(String, f64)> {
    let mut groups: Vec<(String, f64)> = Vec::new();
    for (name, d) in timings {
        let key = match name.split_once(' ') {
            Some((_, k)) if name.starts_with("tower.") => format!("{k} x{layers}"),
            _ => name.clone(),
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some(g) => g.1 += d.as_secs_f64(),
            None => groups.push((key, d.as_secs_f64())),
        }
    }
    groups
}

/// A stage's line: name and seconds.
fn stage(out: &mut super::out::Out, name: &str, secs: f64) -> std::result::Result<(), Error> {
    out.line(format_args!("  {name:<28} {secs:>9.3}"))
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Model: GLIP-T or GLIP-L shapes.
    #[arg(long, default_value = "glip-t")]
    pub model: String,
    /// A GLIP yaml config instead of --model (random weights of its shapes).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// HF BERT config.json for --config (default: bert-base-uncased).
    #[arg(long)]
    pub bert_config: Option<std::path::PathBuf>,
    /// Image size HxW before GLIP's resize (800x1333 gives the 800x1344 network input).
    #[arg(long, default_value = "800x1333")]
    pub size: String,
    /// Also run synthetic prompts of these lengths (tokens incl. [CLS]/[SEP]).
    #[arg(long, value_delimiter = ',', default_value = "8")]
    pub tokens: Vec<usize>,
    /// Run the COCO-80 class prompt (real tokens, and padded to 256 as GLIP does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub coco: bool,
    /// Timed runs per prompt length (after one warm-up run, which records the shape's plan).
    #[arg(long, alias = "iters", default_value_t = 1)]
    pub runs: usize,
    /// Images per forward (the same random image repeated).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Print the results as one JSON object on stdout (the human report goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// GLIP's test resize MIN,MAX (INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST) instead of the model's
    /// (800,1333 for GLIP-T): e.g. 128,128 runs GLIP-T's weights at a reduced size (the
    /// emulated device).
    #[arg(long, value_name = "MIN,MAX")]
    pub resize: Option<String>,
    /// Time every row of the op table (src/backend/optable.rs) on the device and on the CPU,
    /// after checking each against the CPU, instead of the model.
    #[arg(long)]
    pub ops: bool,
    /// After each prompt's timed runs, run one frame on the CPU too (the same random
    /// weights) and compare every intermediate and the detections; fail when a tap's relative
    /// error ‖got − want‖₂ / ‖want‖₂ exceeds 1e-2 or under 98 % of the CPU's detections are
    /// matched (same label, IoU ≥ 0.95, score within 2e-2).
    #[arg(long)]
    pub check_cpu: bool,
}

/// `glip bench --ops`: the op table's rows, checked and timed on the device and the CPU.
fn run_ops(a: &Args) -> Result {
    use glip_rt::backend::cpu::CpuBackend;
    use glip_rt::backend::optable;
    let mut stdout = super::out::Out::new();
    let selected = glip_rt::backend::select(a.device.device, !a.device.no_fallback)?;
    if let Some(n) = &selected.notice {
        say!("{n}");
    }
    let be = &*selected.backend;
    outln!(
        stdout,
        "op table on {} vs the CPU ({} runs per row, mean; the device time includes reading the outputs back)",
        be.describe(),
        a.runs
    );
    outln!(
        stdout,
        "  {:<22} {:<60} {:>10} {:>10} {:>8}  check",
        "op",
        "case",
        "device ms",
        "cpu ms",
        "cpu/dev"
    );
    let mut failed = 0;
    for row in optable::rows(1)? {
        let v = optable::check(&row, be);
        let dev = optable::time(&row, be, a.runs)?.as_secs_f64() * 1e3;
        let cpu = optable::time(&row, &CpuBackend, a.runs)?.as_secs_f64() * 1e3;
        failed += usize::from(!v.passed);
        outln!(
            stdout,
            "  {:<22} {:<60} {:>7.3} ms {:>7.3} ms {:>7.1}x  {}",
            row.op,
            row.case,
            dev,
            cpu,
            cpu / dev.max(1e-9),
            if v.passed {
                format!("ok (nse {:.1e})", v.nse)
            } else {
                format!("FAIL: {}", v.problem.unwrap_or_default())
            }
        );
    }
    if failed > 0 {
        return Err(Error::Invalid(format!(
            "{failed} rows of the op table disagree with the CPU"
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// The `q`-quantile (nearest rank) of sorted seconds.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn run(a: Args) -> Result {
    if a.ops {
        return run_ops(&a);
    }
    // Post-processing (ATSS + NMS) takes up to MAX_BATCH images per call.
    let max_batch = glip_rt::backend::atss::MAX_BATCH;
    if a.batch == 0 || a.batch > max_batch {
        return Err(Error::Invalid(format!(
            "--batch {}: must be in 1..={max_batch}",
            a.batch
        )));
    }
    let mut stdout = if a.json {
        super::out::Out::stderr()
    } else {
        super::out::Out::new()
    };
    let mut report = serde_json::json!({ "cases": [] });
    let (h, w) = a
        .size
        .split_once('x')
        .and_then(|(h, w)| Some((h.parse::<usize>().ok()?, w.parse::<usize>().ok()?)))
        .ok_or_else(|| Error::Invalid(format!("--size {}: expected HxW, e.g. 800x1333", a.size)))?;
    // The random image is allocated from these: check them first.
    if h == 0 || w == 0 || h > limits::MAX_IMAGE_SIDE || w > limits::MAX_IMAGE_SIDE {
        return Err(Error::Limit {
            what: format!("--size {}", a.size),
            msg: format!("each side must be in 1..={} pixels", limits::MAX_IMAGE_SIDE),
        });
    }
    limits::checked_size(
        &format!("--size {}", a.size),
        &[h, w],
        limits::MAX_IMAGE_PIXELS,
        "pixels",
    )?;
    if let Some(&t) = a.tokens.iter().find(|&&t| !(3..=512).contains(&t)) {
        return Err(Error::Invalid(format!("--tokens {t}: must be in 3..=512")));
    }
    // The one pipeline (the Detector) with random weights of the chosen shapes.
    let mut builder = Detector::builder()
        .random_weights(1)
        .device(a.device.device)
        .allow_fallback(!a.device.no_fallback);
    let resize = a
        .resize
        .as_deref()
        .map(|r| {
            r.split_once(',')
                .and_then(|(lo, hi)| Some((lo.parse::<usize>().ok()?, hi.parse::<usize>().ok()?)))
                .filter(|&(lo, hi)| lo > 0 && hi >= lo && hi <= limits::MAX_IMAGE_SIDE)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "--resize {r}: expected MIN,MAX with 0 < MIN <= MAX <= {}",
                        limits::MAX_IMAGE_SIDE
                    ))
                })
        })
        .transpose()?;
    let preset = |mut c: GlipConfig| {
        if let Some((lo, hi)) = resize {
            c.input.min_size_test = lo;
            c.input.max_size_test = hi;
        }
        c
    };
    builder =
        match (&a.config, a.model.as_str()) {
            (Some(_), _) if resize.is_some() => return Err(Error::Invalid(
                "--resize applies to --model presets; set INPUT.*_SIZE_TEST in the --config yaml"
                    .into(),
            )),
            (Some(path), _) => builder.config(path),
            (None, "glip-t") => builder.preset(preset(GlipConfig::glip_t())),
            (None, "glip-l") => builder.preset(preset(GlipConfig::glip_l())),
            (None, m) => {
                return Err(Error::Invalid(format!(
                    "--model {m}: expected glip-t or glip-l"
                )))
            }
        };
    if let Some(p) = &a.bert_config {
        builder = builder.bert_config(p);
    }
    let cpu_builder = a
        .check_cpu
        .then(|| builder.clone().device(DeviceChoice::Cpu));
    let t0 = Instant::now();
    let mut det = builder.build()?;
    crate::model_loaded();
    if let Some(n) = det.device_notice() {
        say!("{n}");
    }
    outln!(
        stdout,
        "model: {} with random weights on {}, built in {:.1} s; {} rayon threads",
        a.config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or(a.model.clone()),
        det.model().backend().describe(),
        t0.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    // The device memory of the weights (what the backend holds once the model is built).
    let weights_bytes = det
        .model()
        .backend()
        .device_arena()
        .map(|d| d.memory().held);
    let mut rng = Rng::new(2);
    let pixels: Vec<u8> = (0..h * w * 3)
        .map(|_| (rng.next_u64() >> 56) as u8)
        .collect();
    let img = RgbImage8::new(w, h, pixels)?;
    let t0 = Instant::now();
    let pre = preprocess_image(&img, det.preprocess_config())?;
    let t_pre = t0.elapsed();
    outln!(
        stdout,
        "input {h}x{w} -> network input {}x{} (preprocess {:.3} s)",
        pre.image.h,
        pre.image.w,
        t_pre.as_secs_f64()
    );
    // The cases: GLIP's COCO-80 prompt as glip-rt runs it (real tokens only) and as GLIP runs
    // it (padded to 256; same results), then synthetic prompts of --tokens real tokens.
    let mut cases: Vec<Case> = Vec::new();
    if a.coco {
        let tok = GlipTokenizer::bert_base_uncased()?;
        let enc = tok.encode(&Prompt::from_class_names(&COCO80)?)?;
        let pm = enc.positive_map();
        let real = enc.num_real;
        let ids: Vec<i32> = enc.input_ids.iter().map(|&v| v as i32).collect();
        let mask: Vec<i32> = enc.attention_mask.iter().map(|&v| v as i32).collect();
        cases.push((
            format!("COCO-80 prompt, {real} real tokens (glip-rt)"),
            ids[..real].to_vec(),
            mask[..real].to_vec(),
            pm.clone(),
        ));
        cases.push((
            format!("COCO-80 prompt padded to {} (as GLIP)", ids.len()),
            ids,
            mask,
            pm,
        ));
    }
    for &t in &a.tokens {
        // [CLS] random word ids [SEP], all real.
        let ids: Vec<i32> = (0..t)
            .map(|i| {
                if i == 0 {
                    101
                } else if i + 1 == t {
                    102
                } else {
                    1000 + (i as i32 * 37) % 20000
                }
            })
            .collect();
        let mask = vec![1i32; t];
        let pm: Vec<(u32, Vec<usize>)> = (1..t.saturating_sub(1))
            .step_by(2)
            .take(80)
            .enumerate()
            .map(|(l, tok)| (l as u32 + 1, vec![tok]))
            .collect();
        cases.push((format!("synthetic prompt, {t} tokens"), ids, mask, pm));
    }
    // The CPU twin of `det` for --check-cpu (none when `det` runs on the CPU already).
    let mut cpu_det = match cpu_builder {
        Some(_) if det.device() == glip_rt::tensor::Device::Cpu => {
            say!("--check-cpu: the model runs on the CPU already; nothing to compare");
            None
        }
        Some(b) => {
            let t0 = Instant::now();
            let d = b.build()?;
            crate::model_loaded();
            outln!(
                stdout,
                "--check-cpu: the same weights on the CPU, built in {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            Some(d)
        }
        None => None,
    };
    let mut parity_ok = true;
    let num_convs = det.model().config.dyhead.num_convs;
    let batch = vec![pre.clone(); a.batch];
    report["device"] = det.model().backend().describe().into();
    report["network_input"] = serde_json::json!([pre.image.h, pre.image.w]);
    report["batch"] = a.batch.into();
    for (name, ids, mask, positive_map) in cases {
        let s = Instant::now();
        let names: Vec<(u32, String)> = positive_map
            .iter()
            .map(|(l, _)| (*l, format!("label {l}")))
            .collect();
        let t = ids.len();
        det.set_prompt_ids(&ids, &mask, positive_map.clone(), names.clone())?;
        let t_lang = s.elapsed();
        if let Some(c) = cpu_det.as_mut() {
            c.set_prompt_ids(&ids, &mask, positive_map, names)?;
        }
        let mut times: Vec<f64> = Vec::with_capacity(a.runs);
        let mut last: Option<usize> = None;
        // The first image's detections of the last timed (replayed) run, for --check-cpu.
        let mut replayed: Vec<glip_rt::api::Detection> = Vec::new();
        let key = PlanKey {
            batch: a.batch,
            height: pre.image.h,
            width: pre.image.w,
            tokens: t,
            stage: glip_rt::api::Stage::Whole,
        };
        for run in 0..=a.runs {
            let mut taps = Taps::disabled();
            let f = Instant::now();
            // The warm-up run records this shape's plan (on any device); later runs replay it.
            let (dets, _) = det.run(&batch, &mut taps)?;
            let t_run = f.elapsed().as_secs_f64();
            if run == 0 {
                if let Some((_, info)) = det.plans().into_iter().find(|(k, _)| *k == key) {
                    let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
                    let p = &info.memory;
                    outln!(
                        stdout,
                        "\n{name}: memory plan of {} ops, {} activation buffers: arena peak {:.1} MiB (lower bound {:.1} MiB, {:.1} MiB unplanned)",
                        p.ops,
                        p.buffers.len(),
                        mib(p.peak_bytes),
                        mib(p.live_bytes_bound),
                        mib(p.buffers.iter().map(|b| b.bytes).sum())
                    );
                    if let Some(d) = &info.device {
                        outln!(
                            stdout,
                            "  device plan: {} allocations ({} op workspaces or unread) in one arena of {:.1} MiB (lower bound {:.1} MiB, {:.1} MiB unplanned); later runs replay it",
                            d.slots.len(),
                            d.transient,
                            mib(d.peak_bytes),
                            mib(d.live_bytes_bound),
                            mib(d.buffers.iter().map(|b| b.bytes).sum())
                        );
                    }
                }
                continue; // warm-up
            }
            times.push(t_run);
            last = Some(dets.first().map(|d| d.len()).unwrap_or(0));
            replayed = dets.into_iter().next().unwrap_or_default();
        }
        let parity = match &cpu_det {
            Some(c) => {
                let r = last.is_some().then_some(replayed.as_slice());
                let p = check_against(&det, c, &batch[..1], r, &mut stdout, &name)?;
                parity_ok &= p["pass"].as_bool().unwrap_or(false);
                Some(p)
            }
            None => None,
        };
        let Some(n_dets) = last else {
            if let (Some(p), Some(cases)) = (parity, report["cases"].as_array_mut()) {
                cases.push(serde_json::json!({ "name": name, "tokens": t, "parity": p }));
            }
            continue; // --runs 0: the warm-up only
        };
        // The stage table from one more run that also marks each stage on the device's
        // clock (CUDA events): marks cut a replay's CUDA graph, so the timed runs above
        // have none.
        let mut taps = Taps::timed();
        let f = Instant::now();
        det.run(&batch, &mut taps)?;
        let t_run = f.elapsed().as_secs_f64();
        outln!(
            stdout,
            "\n{name}, run {}: {n_dets} detections; stages of one more run:",
            a.runs
        );
        // Each stage's time on the device's clock (CUDA events on a GPU) next to the host's.
        let device_groups = group_stages(&taps.device_timings()?, num_convs);
        if device_groups.is_empty() {
            outln!(stdout, "  {:<28} {:>9}", "stage", "seconds");
        } else {
            outln!(
                stdout,
                "  {:<28} {:>9} {:>9}",
                "stage",
                "seconds",
                "device s"
            );
        }
        stage(&mut stdout, "preprocess", t_pre.as_secs_f64())?;
        stage(
            &mut stdout,
            "language backbone (cached)",
            t_lang.as_secs_f64(),
        )?;
        let groups = group_stages(&taps.timings, num_convs);
        for (k, s) in &groups {
            match device_groups.iter().find(|(d, _)| d == k) {
                Some((_, d)) => outln!(stdout, "  {k:<28} {s:>9.3} {d:>9.4}"),
                None => stage(&mut stdout, k, *s)?,
            }
        }
        stage(
            &mut stdout,
            "total per frame (no lang)",
            t_pre.as_secs_f64() + t_run,
        )?;
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (quantile(&times, 0.5), quantile(&times, 0.99));
        let total: f64 = times.iter().sum();
        let fps = (a.batch * times.len()) as f64 / total.max(1e-12);
        outln!(
            stdout,
            "  latency over {} runs (forward + post-processing, batch {}): p50 {:.3} ms, p99 {:.3} ms, {:.2} frames/s",
            times.len(),
            a.batch,
            p50 * 1e3,
            p99 * 1e3,
            fps
        );
        let info = det
            .plans()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, i)| i);
        if let Some(cases) = report["cases"].as_array_mut() {
            cases.push(serde_json::json!({
                "name": name,
                "tokens": t,
                "runs": times.len(),
                "p50_ms": p50 * 1e3,
                "p99_ms": p99 * 1e3,
                "frames_per_s": fps,
                "detections": n_dets,
                "stages_s": groups.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                "stages_device_s": device_groups.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                "activations_arena_bytes": info.as_ref().map(|i| i.memory.peak_bytes),
                "device_arena_bytes": info.as_ref().and_then(|i| i.device.as_ref().map(|d| d.peak_bytes)),
                "replays": info.as_ref().map(|i| i.replays),
                "graphs": info.as_ref().and_then(|i| i.graphs.as_ref()).map(|g| serde_json::json!({
                    "captured": g.captured,
                    "graph_launches": g.graph_launches,
                    "launches_in_graphs": g.launches_in_graphs,
                    "launches": g.launches,
                    "misses": g.misses,
                    "off": g.off,
                })),
                "parity": parity,
            }));
        }
    }
    for (k, info) in det.plans() {
        if info.device.is_none() {
            continue;
        }
        outln!(
            stdout,
            "\nreplays of {}x{} at {} tokens (batch {}): {} from the arena, {} op by op{}",
            k.width,
            k.height,
            k.tokens,
            k.batch,
            info.replays,
            info.op_by_op,
            info.broken
                .as_deref()
                .map(|b| format!("; replay stopped: {b}"))
                .unwrap_or_default()
        );
        if let Some(g) = info
            .graphs
            .as_ref()
            .filter(|g| g.captured > 0 || g.off.is_some())
        {
            outln!(
                stdout,
                "  CUDA graphs: {} segments captured, {} graph launches standing for {} launches, \
                 {} launches one by one, {} segments that differed{}",
                g.captured,
                g.graph_launches,
                g.launches_in_graphs,
                g.launches,
                g.misses,
                g.off
                    .as_deref()
                    .map(|o| format!("; graphs off: {o}"))
                    .unwrap_or_default()
            );
        }
    }
    let mem = det.model().backend().device_arena().map(|d| d.memory());
    if let (Some(m), Some(w)) = (mem, weights_bytes) {
        let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
        outln!(
            stdout,
            "\ndevice memory of this instance: peak {:.1} MiB ({:.1} MiB of weights; arenas, cached prompts and op-by-op buffers the rest), {:.1} MiB held after the runs",
            mib(m.peak),
            mib(w),
            mib(m.held)
        );
        report["device_memory"] = serde_json::json!({
            "peak_bytes": m.peak,
            "weights_bytes": w,
            "held_bytes": m.held,
        });
    }
    let bc = crate::block_cache_stats();
    outln!(
        stdout,
        "host block cache: {} of {} large allocations took a kept block, {:.1} MiB held of {:.0} MiB (GLIP_BLOCK_CACHE_MIB)",
        bc.hits,
        bc.hits + bc.misses,
        bc.held as f64 / (1u64 << 20) as f64,
        bc.cap as f64 / (1u64 << 20) as f64
    );
    report["host_block_cache"] = serde_json::json!({
        "hits": bc.hits,
        "misses": bc.misses,
        "held_bytes": bc.held,
        "cap_bytes": bc.cap,
    });
    let fallbacks = det.fallbacks();
    if let Some(t) = super::fallback_table(&fallbacks) {
        outln!(stdout, "\n{t}");
    }
    if a.json {
        report["fallbacks"] = fallbacks
            .iter()
            .map(|f| serde_json::json!({ "op": f.op, "calls": f.calls }))
            .collect::<Vec<_>>()
            .into();
        let mut out = super::out::Out::new();
        outln!(out, "{report}");
    }
    if !parity_ok {
        say!("--check-cpu: the device's results differ from the CPU's (see the table above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// One frame on `det` and on its CPU twin `cpu` (same weights, same prompt), every tap and
/// the detections compared (`glip_rt::parity`); the table goes to `out`, the figures come
/// back as JSON with `"pass"`.
fn check_against(
    det: &Detector,
    cpu: &Detector,
    batch: &[glip_rt::preprocess::Preprocessed],
    replayed: Option<&[glip_rt::api::Detection]>,
    out: &mut super::out::Out,
    name: &str,
) -> std::result::Result<serde_json::Value, Error> {
    use glip_rt::parity;
    let t0 = Instant::now();
    let mut want = Taps::enabled();
    let (want_dets, _) = cpu.run(batch, &mut want)?;
    let t_cpu = t0.elapsed().as_secs_f64();
    let mut got = Taps::enabled();
    let (got_dets, _) = det.run(batch, &mut got)?;
    let diffs = parity::compare_taps(&got, &want)?;
    let worst = diffs.iter().max_by(|a, b| a.rel_l2.total_cmp(&b.rel_l2));
    let worst_max = diffs.iter().max_by(|a, b| a.rel.total_cmp(&b.rel));
    let scored = |d: &[glip_rt::api::Detection]| -> Vec<parity::Scored> {
        d.iter().map(|x| (x.label, x.score, x.bbox)).collect()
    };
    let (g, w) = (
        scored(got_dets.first().map(Vec::as_slice).unwrap_or(&[])),
        scored(want_dets.first().map(Vec::as_slice).unwrap_or(&[])),
    );
    let matched = parity::matched(&g, &w);
    // The timed runs replay the recorded plan (CUDA graphs on a GPU), while a run with taps
    // goes op by op: their detections are checked too.
    let r = replayed.map(scored);
    let matched_replayed = r.as_ref().map(|r| parity::matched(r, &w));
    let taps_ok = !diffs.is_empty() && diffs.iter().all(parity::TapDiff::within);
    let pass = taps_ok
        && parity::enough_matched(matched, w.len())
        && matched_replayed.is_none_or(|m| parity::enough_matched(m, w.len()));
    outln!(
        out,
        "\n{name}: the device against the CPU (one frame; the CPU took {t_cpu:.1} s)"
    );
    outln!(
        out,
        "  {:<44} {:>11} {:>11} {:>11}",
        "tap",
        "max |diff|",
        "rel (inf)",
        "rel (l2)"
    );
    for d in &diffs {
        outln!(
            out,
            "  {:<44} {:>11.3e} {:>11.3e} {:>11.3e}{}",
            d.name,
            d.max_abs,
            d.rel,
            d.rel_l2,
            if d.within() { "" } else { "  over the bound" }
        );
    }
    outln!(
        out,
        "  parity: {} taps, worst relative error (l2) {:.2e} ({}; bound {:.0e}), worst (inf) {:.2e} ({}); detections: {} on the CPU, {} on the device ({matched} matched){}: {}",
        diffs.len(),
        worst.map_or(0.0, |d| d.rel_l2),
        worst.map_or("none", |d| d.name.as_str()),
        parity::DEVICE_TAP_REL_L2,
        worst_max.map_or(0.0, |d| d.rel),
        worst_max.map_or("none", |d| d.name.as_str()),
        w.len(),
        g.len(),
        match (&r, matched_replayed) {
            (Some(r), Some(m)) => format!(", {} in the last timed run ({m} matched)", r.len()),
            _ => String::new(),
        },
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(serde_json::json!({
        "pass": pass,
        "taps": diffs.len(),
        "worst_rel_l2": worst.map(|d| d.rel_l2),
        "worst_tap": worst.map(|d| d.name.clone()),
        "bound_rel_l2": parity::DEVICE_TAP_REL_L2,
        "worst_rel_inf": worst_max.map(|d| d.rel),
        "worst_tap_inf": worst_max.map(|d| d.name.clone()),
        "taps_within_inf_1e-2": diffs.iter().filter(|d| d.within_max()).count(),
        "detections_device": g.len(),
        "detections_cpu": w.len(),
        "matched": matched,
        "detections_replayed": r.as_ref().map(Vec::len),
        "matched_replayed": matched_replayed,
    }))
}
