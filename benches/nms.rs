//! ATSS post-processing: `cpu_nms` (one image, small pyramid) and `cuda_nms` (GLIP-T sizes,
//! 1 and 8 images), the latter registered only with a CUDA device.

use criterion::{criterion_group, criterion_main, Criterion};
use glip_rt::backend::cpu::nms::{self as cn, AtssConfig, Level, PackedInputs};
use glip_rt::backend::cuda::nms::{self as gn, NmsOutputs, NmsWorkspace};
use glip_rt::backend::cuda::CudaBackend;
use glip_rt::testing::Rng;
use std::hint::black_box;

const LABELS: usize = 80;

fn levels(scale: usize) -> Vec<Level> {
    [
        (100, 168, 8),
        (50, 84, 16),
        (25, 42, 32),
        (13, 21, 64),
        (7, 11, 128),
    ]
    .iter()
    .map(|&(h, w, stride)| Level {
        h: (h / scale).max(1),
        w: (w / scale).max(1),
        stride,
    })
    .collect()
}

fn draw(batch: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(3);
    (
        rng.uniform_vec(batch * n * LABELS, 0.0, 0.08),
        rng.normal_vec(batch * n, 1.5),
        rng.normal_vec(batch * n * 4, 0.8),
    )
}

fn cpu_nms(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_nms");
    g.sample_size(10);
    let lv = levels(2); // 800×1344 / 2: 5 585 positions
    let n = cn::level_offsets(&lv)[lv.len()];
    let (s, ctr, reg) = draw(1, n);
    let cfg = AtssConfig::default();
    let inp = PackedInputs {
        scores: &s,
        centerness: &ctr,
        bbox_reg: &reg,
        num_labels: LABELS,
        levels: &lv,
    };
    g.bench_function("atss_half_res_1img", |b| {
        b.iter(|| black_box(cn::postprocess(&inp, &[(400.0, 666.0)], &cfg).unwrap()))
    });
    g.finish();
}

fn cuda_nms(c: &mut Criterion) {
    let Ok(be) = CudaBackend::new(0) else { return };
    let mut g = c.benchmark_group("cuda_nms");
    g.sample_size(10);
    let lv = levels(1);
    let n = cn::level_offsets(&lv)[lv.len()];
    let cfg = AtssConfig::default();
    for batch in [1usize, 8] {
        let (s, ctr, reg) = draw(batch, n);
        let hw = vec![(800.0f32, 1333.0f32); batch];
        let p = gn::params(&lv, LABELS, &hw, &cfg).unwrap();
        let mut ws = NmsWorkspace::new(&be, &p).unwrap();
        let mut out = NmsOutputs::new(&be, &p).unwrap();
        let (ds, dc, dr) = (
            be.upload_f32(&s).unwrap(),
            be.upload_f32(&ctr).unwrap(),
            be.upload_f32(&reg).unwrap(),
        );
        g.bench_function(format!("atss_glip_t_{batch}img"), |b| {
            b.iter(|| {
                gn::atss_postprocess(&be, &p, &ds, &dc, &dr, &mut ws, &mut out).unwrap();
                be.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, cpu_nms, cuda_nms);
criterion_main!(benches);
