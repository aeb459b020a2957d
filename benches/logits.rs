//! Dot-product logits and phrase MEAN: `cpu_logits` (moderate sizes, CI has 2 cores) and
//! `cuda_logits` (GLIP-T: 22 400 positions × 256 tokens × 256 channels), registered only with
//! a CUDA device.

use criterion::{criterion_group, criterion_main, Criterion};
use glip_rt::backend::cpu::logits::{self as cl, PositiveMapCsr, VisualLayout};
use glip_rt::backend::cuda::logits::{self as gl, DevicePositiveMap, DotShape};
use glip_rt::backend::cuda::CudaBackend;
use glip_rt::testing::Rng;
use half::f16;
use std::hint::black_box;

const DIM: usize = 256;

fn coco_like_map(t: usize) -> Vec<(u32, Vec<usize>)> {
    (1..=80u32)
        .map(|l| (l, vec![(2 * l as usize - 1) % t, (2 * l as usize) % t]))
        .collect()
}

fn cpu_logits(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_logits");
    g.sample_size(10);
    let (n, t) = (4_200, 256); // P4-sized level
    let mut rng = Rng::new(1);
    let vis = rng.normal_vec(DIM * n, 1.0);
    let proj = rng.normal_vec(t * DIM, 0.06);
    let tb = rng.normal_vec(t, 1.0);
    g.bench_function("dot_p4_t256", |b| {
        b.iter(|| {
            black_box(
                cl::dot_logits(
                    &vis,
                    VisualLayout::ChannelMajor,
                    &proj,
                    &tb,
                    1,
                    n,
                    t,
                    DIM,
                    1.0,
                    cl::LOGIT_CLAMP,
                )
                .unwrap(),
            )
        })
    });
    let logits = rng.normal_vec(n * t, 3.0);
    let map = PositiveMapCsr::new(&coco_like_map(t), 80, t).unwrap();
    g.bench_function("phrase_mean_p4_t256", |b| {
        b.iter(|| black_box(cl::phrase_mean(&logits, n, t, &map, 80).unwrap()))
    });
    g.finish();
}

fn cuda_logits(c: &mut Criterion) {
    let Ok(be) = CudaBackend::new(0) else { return };
    let mut g = c.benchmark_group("cuda_logits");
    g.sample_size(10);
    let n = 22_400;
    let mut rng = Rng::new(2);
    for t in [256usize, 8] {
        let vis: Vec<f16> = rng
            .normal_vec(DIM * n, 1.0)
            .into_iter()
            .map(f16::from_f32)
            .collect();
        let dv = be.upload_f16(&vis).unwrap();
        let dp = be.upload_f32(&rng.normal_vec(t * DIM, 0.06)).unwrap();
        let db = be.upload_f32(&rng.normal_vec(t, 1.0)).unwrap();
        let mut out = be.filled_f32(n * t, 0.0).unwrap();
        let s = DotShape {
            batch: 1,
            n_pos: n,
            n_txt: t,
            dim: DIM,
            channel_major: true,
            out_rows: n,
            out_row0: 0,
        };
        g.bench_function(format!("dot_22400_t{t}"), |b| {
            b.iter(|| {
                gl::dot(&be, &s, &dv, &dp, &db, 1.0, cl::LOGIT_CLAMP, &mut out).unwrap();
                be.synchronize().unwrap();
            })
        });
    }
    let t = 256;
    let logits = be.upload_f32(&rng.normal_vec(n * t, 3.0)).unwrap();
    let map = DevicePositiveMap::upload(
        &be,
        &PositiveMapCsr::new(&coco_like_map(t), 80, t).unwrap(),
        80,
        t,
    )
    .unwrap();
    let mut sc = be.filled_f32(n * 80, 0.0).unwrap();
    g.bench_function("phrase_mean_22400_t256", |b| {
        b.iter(|| {
            gl::phrase_mean_f32(&be, n, &logits, &map, &mut sc).unwrap();
            be.synchronize().unwrap();
        })
    });
    let (rows, lang) = (256, 768);
    let hidden = be
        .upload_f16(
            &rng.normal_vec(rows * lang, 1.0)
                .into_iter()
                .map(f16::from_f32)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let w = be
        .upload_f16(
            &rng.normal_vec(DIM * lang, 0.03)
                .into_iter()
                .map(f16::from_f32)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let bias = be.upload_f32(&vec![0.0; DIM]).unwrap();
    let bl = be.upload_f32(&rng.normal_vec(lang, 0.05)).unwrap();
    let mut proj = be.filled_f32(rows * DIM, 0.0).unwrap();
    let mut tb = be.filled_f32(rows, 0.0).unwrap();
    g.bench_function("text_proj_t256", |b| {
        b.iter(|| {
            gl::text_proj_f16(
                &be, rows, lang, DIM, &hidden, &w, &bias, &bl, -4.6, &mut proj, &mut tb,
            )
            .unwrap();
            be.synchronize().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, cpu_logits, cuda_logits);
criterion_main!(benches);
