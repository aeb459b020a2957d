//! The library API on the tiny golden model: batches, long prompts split into chunks, and
//! the prompt cache.

use glip_rt::api::Detector;
use glip_rt::preprocess::load_image;
use glip_rt::testing::{testdata, E2eGolden};

fn tiny() -> E2eGolden {
    E2eGolden::load("12_e2e_tiny").unwrap()
}

fn detector_for(g: &E2eGolden) -> Detector {
    g.detector(glip_rt::DeviceChoice::Cpu).unwrap()
}

/// The tiny golden's detector with no prompt set.
fn detector() -> Detector {
    let g = tiny();
    Detector::builder()
        .config(&g.config)
        .weights(&g.weights)
        .bert(g.bert.clone())
        .device(glip_rt::DeviceChoice::Cpu)
        .build()
        .unwrap()
}

fn photo() -> glip_rt::preprocess::RgbImage8 {
    load_image(&tiny().photo, true).unwrap()
}

#[test]
fn a_batch_of_equal_frames_gives_each_frame_the_single_result() {
    for g in E2eGolden::all().unwrap() {
        let det = detector_for(&g);
        let img = load_image(&g.photo, true).unwrap();
        let single = det.detect(&img).unwrap();
        assert_eq!(single.len(), g.num_final, "{}", g.name);
        let batch = det.detect_batch(&[img.clone(), img]).unwrap();
        assert_eq!(batch.len(), 2);
        for b in &batch {
            assert_eq!(b.len(), single.len());
            for (x, y) in b.iter().zip(&single) {
                assert_eq!((x.label, &x.phrase), (y.label, &y.phrase));
                assert!((x.score - y.score).abs() <= 1e-6);
                assert!((0..4).all(|k| (x.bbox[k] - y.bbox[k]).abs() <= 1e-3));
            }
        }
    }
}

#[test]
fn detect_without_a_prompt_is_an_error() {
    let det = detector();
    let e = det.detect(&photo()).unwrap_err().to_string();
    assert!(e.contains("prompt"), "{e}");
}

#[test]
fn a_prompt_over_256_tokens_runs_in_chunks_with_global_labels() {
    // Golden 01's "long" caption: 130 class names, 347 tokens.
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(testdata().join("golden/01_tokenizer.json")).unwrap(),
    )
    .unwrap();
    let caption = meta["prompts"]["long"]["caption"]
        .as_str()
        .unwrap()
        .to_string();
    let mut det = detector();
    det.set_prompt(&caption).unwrap();
    let chunks = det.prompt_chunks();
    assert!(chunks.len() >= 2, "347 tokens need at least 2 chunks");
    let mut labels: Vec<u32> = chunks.iter().flat_map(|c| c.labels()).collect();
    assert!(chunks.iter().all(|c| !c.truncated() && c.num_real <= 256));
    labels.sort_unstable();
    assert_eq!(
        labels,
        (1..=labels.len() as u32).collect::<Vec<_>>(),
        "every phrase in exactly one chunk"
    );
    let names: Vec<String> = caption
        .split('.')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(labels.len(), names.len());
    let dets = det.detect(&photo()).unwrap();
    assert!(!dets.is_empty());
    for d in &dets {
        assert_eq!(
            d.phrase,
            names[d.label as usize - 1],
            "label {} keeps its global phrase",
            d.label
        );
    }
    // Chunks after the first contribute labels beyond its range.
    let first_max = chunks[0].labels().into_iter().max().unwrap();
    println!(
        "{} chunks, {} detections, max label {}",
        chunks.len(),
        dets.len(),
        dets.iter().map(|d| d.label).max().unwrap()
    );
    assert!(
        dets.iter().any(|d| d.label > first_max),
        "later chunks must produce detections too"
    );
    // The image part (backbone + FPN) ran once for all chunks, each chunk's text-dependent
    // part on it; planned as a visual stage and one grounded stage per chunk length.
    let pre = glip_rt::preprocess::preprocess_image(&photo(), det.preprocess_config()).unwrap();
    let mut taps = glip_rt::model::glip::Taps::disabled();
    let (again, _) = det.run(&[pre], &mut taps).unwrap();
    assert_eq!(again[0], dets, "the same detections on the next frame");
    let backbone = taps
        .timings
        .iter()
        .filter(|(s, _)| s == "backbone (Swin)")
        .count();
    assert_eq!(backbone, 1, "{} chunks, one backbone", chunks.len());
    use glip_rt::api::Stage;
    let stages: Vec<Stage> = det.plans().iter().map(|(k, _)| k.stage).collect();
    assert_eq!(stages.iter().filter(|s| **s == Stage::Visual).count(), 1);
    assert!(stages.contains(&Stage::Grounded), "{stages:?}");
    assert!(!stages.contains(&Stage::Whole), "{stages:?}");
}

/// Switching back to a prompt takes its text features from the cache (no BERT run), with
/// the same detections; the cache keeps the most recent prompts up to its capacity.
#[test]
fn the_prompt_cache_serves_a_prompt_seen_before() {
    let g = tiny();
    let mut det = detector_for(&g);
    let img = photo();
    let first = det.detect(&img).unwrap();
    let s0 = det.prompt_cache_stats();
    assert_eq!((s0.hits, s0.misses, s0.entries), (0, 1, 1), "{s0:?}");
    det.set_prompt("a person. a bicycle.").unwrap();
    let other = det.detect(&img).unwrap();
    det.set_prompt_with_phrases(&g.caption, &g.phrases).unwrap();
    let s = det.prompt_cache_stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 2, 2), "{s:?}");
    assert_eq!(
        det.detect(&img).unwrap(),
        first,
        "cached text features, same detections"
    );
    assert_ne!(other, first);
    // A cache of one: the second prompt pushes the first out.
    let mut small = g
        .detector_builder(glip_rt::DeviceChoice::Cpu)
        .prompt_cache(1)
        .build()
        .unwrap();
    for p in ["a person.", "a bicycle.", "a person."] {
        small.set_prompt(p).unwrap();
    }
    let s = small.prompt_cache_stats();
    assert_eq!(
        (s.hits, s.misses, s.entries, s.capacity),
        (0, 3, 1, 1),
        "{s:?}"
    );
}
