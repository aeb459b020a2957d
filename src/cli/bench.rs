//! `glip bench`: end-to-end speed of GLIP-T-shaped random weights, per stage.

use super::crate_result::Result;
use glip_rt::model::config::{BertConfig, GlipConfig};
use glip_rt::model::glip::{Glip, Taps};
use glip_rt::model::postprocess::{self, PostprocessConfig};
use glip_rt::preprocess::{preprocess_image, PreprocessConfig, RgbImage8};
use glip_rt::testing::Rng;
use glip_rt::tokenizer::{GlipTokenizer, Prompt};
use glip_rt::{limits, Error};
use std::process::ExitCode;
use std::time::Instant;

/// COCO's 80 category names (instances_val2017.json order), as GLIP's evaluation prompt.
const COCO80: [&str; 80] = [
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

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to run (the CUDA end-to-end path is not built yet; its kernels have benches).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
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
    /// Timed runs per prompt length (after one warm-up run).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
}

pub fn run(a: Args) -> Result {
    let mut stdout = super::out::Out::new();
    if a.device == DeviceArg::Cuda {
        return Err(Error::Invalid(
            "the end-to-end CUDA path is not implemented yet; per-kernel CUDA benches: cargo bench -- cuda_".into(),
        ));
    }
    let cfg = match (&a.config, a.model.as_str()) {
        (Some(path), _) => GlipConfig::from_yaml_file(path)?,
        (None, m) => match m {
            "glip-t" => GlipConfig::glip_t(),
            "glip-l" => GlipConfig::glip_l(),
            m => {
                return Err(Error::Invalid(format!(
                    "--model {m}: expected glip-t or glip-l"
                )))
            }
        },
    };
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
    let bert = match &a.bert_config {
        Some(p) => BertConfig::from_file(p)?,
        None => BertConfig::default(),
    };
    let pre_cfg = PreprocessConfig {
        min_size: cfg.input.min_size_test as u32,
        max_size: Some(cfg.input.max_size_test as u32),
        size_divisibility: cfg.input.size_divisibility,
        pixel_mean: cfg.input.pixel_mean,
        pixel_std: cfg.input.pixel_std,
        bgr: cfg.input.bgr(),
        times_255: cfg.input.times_255(),
        ..PreprocessConfig::default()
    };
    let strides = cfg.anchors.strides.clone();
    let t0 = Instant::now();
    let model = Glip::random(cfg, bert, 1)?;
    outln!(
        stdout,
        "model: {} with random weights, built in {:.1} s; {} rayon threads",
        a.model,
        t0.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    let mut rng = Rng::new(2);
    let pixels: Vec<u8> = (0..h * w * 3)
        .map(|_| (rng.next_u64() >> 56) as u8)
        .collect();
    let img = RgbImage8::new(w, h, pixels)?;
    let t0 = Instant::now();
    let pre = preprocess_image(&img, &pre_cfg)?;
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
        let pm: Vec<(u32, Vec<usize>)> = enc
            .labels()
            .into_iter()
            .zip(enc.model_label_to_tokens())
            .collect();
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
        if !(3..=512).contains(&t) {
            return Err(Error::Invalid(format!("--tokens {t}: must be in 3..=512")));
        }
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
    for (name, ids, mask, positive_map) in &cases {
        for run in 0..=a.runs {
            let mut taps = Taps::disabled();
            let s = Instant::now();
            let text = model.encode_text(ids, mask)?;
            let t_lang = s.elapsed();
            let f = Instant::now();
            // The warm-up run is the recorded one: it gives the memory plan of this shape.
            let (out, plan) = if run == 0 {
                let (o, p) = model.forward_planned(&pre.image, &text)?;
                (o, Some(p))
            } else {
                (model.forward(&pre.image, &text, &mut taps)?, None)
            };
            let t_fwd = f.elapsed();
            let p = Instant::now();
            let dets = postprocess::postprocess(
                &out,
                positive_map,
                &[pre.resized_hw],
                &PostprocessConfig {
                    anchor_strides: strides.clone(),
                    ..PostprocessConfig::default()
                },
            )?;
            let t_post = p.elapsed();
            if let Some(p) = plan {
                let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
                outln!(
                    stdout,
                    "\n{name}: memory plan of {} ops, {} activation buffers: arena peak {:.1} MiB (lower bound {:.1} MiB, {:.1} MiB unplanned)",
                    p.ops,
                    p.buffers.len(),
                    mib(p.peak_bytes),
                    mib(p.live_bytes_bound),
                    mib(p.buffers.iter().map(|b| b.bytes).sum())
                );
                continue; // warm-up
            }
            outln!(
                stdout,
                "\n{name}, run {run}: {} detections",
                dets[0].detections.len()
            );
            outln!(stdout, "  {:<28} {:>9}", "stage", "seconds");
            outln!(
                stdout,
                "  {:<28} {:>9.3}",
                "preprocess",
                t_pre.as_secs_f64()
            );
            outln!(
                stdout,
                "  {:<28} {:>9.3}",
                "language backbone (cached)",
                t_lang.as_secs_f64()
            );
            let mut groups: Vec<(String, f64)> = Vec::new();
            for (name, d) in &taps.timings {
                let key = name
                    .split_once(' ')
                    .map(|(_, k)| k.to_string())
                    .filter(|_| name.starts_with("tower."))
                    .unwrap_or(name.clone());
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some(g) => g.1 += d.as_secs_f64(),
                    None => groups.push((key, d.as_secs_f64())),
                }
            }
            for (k, s) in &groups {
                outln!(
                    stdout,
                    "  {:<28} {:>9.3}",
                    if taps
                        .timings
                        .iter()
                        .any(|(n, _)| n.ends_with(k.as_str()) && n.starts_with("tower."))
                    {
                        format!("{k} x{}", model.config.dyhead.num_convs)
                    } else {
                        k.clone()
                    },
                    s
                );
            }
            outln!(
                stdout,
                "  {:<28} {:>9.3}",
                "post-processing",
                t_post.as_secs_f64()
            );
            outln!(
                stdout,
                "  {:<28} {:>9.3}",
                "total per frame (no lang)",
                (t_pre + t_fwd + t_post).as_secs_f64()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
