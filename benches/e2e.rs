//! End to end on the CPU: the golden tiny GLIP-T-shaped model on its 320×320 photo (the full
//! pipeline: preprocessing, cached text, forward, post-processing). GLIP-T at 800×1333 is
//! `glip bench` (tens of seconds a frame on 2 cores; too slow for criterion).

use criterion::{criterion_group, criterion_main, Criterion};
use glip_rt::api::Detector;
use glip_rt::preprocess::load_image;
use glip_rt::testing::testdata;
use std::hint::black_box;

fn cpu_e2e(c: &mut Criterion) {
    let g = testdata().join("golden");
    let mut det = Detector::builder()
        .config(g.join("12_e2e_tiny_config.yaml"))
        .weights(g.join("12_e2e_tiny_weights.safetensors"))
        .bert_config(testdata().join("tiny_bert_config.json"))
        .build()
        .expect("tiny model");
    det.set_prompt("person. cup. rocket.").expect("prompt");
    let img = load_image(&g.join("12_e2e_tiny_photo.png"), true).expect("photo");
    let mut grp = c.benchmark_group("cpu_e2e");
    grp.sample_size(10);
    grp.bench_function("tiny_glip_t_320", |b| {
        b.iter(|| black_box(det.detect(&img).expect("detect")))
    });
    grp.finish();
}

criterion_group!(benches, cpu_e2e);
criterion_main!(benches);
