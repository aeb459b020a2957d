//! Modulated deformable 3x3 conv: CPU twin (moderate size, CI has 2 cores) and the CUDA
//! kernel at GLIP-T's P3 (1x256x100x168, stride 1), f16.

use criterion::{criterion_group, criterion_main, Criterion};
use glip_rt::backend::cpu::deform_conv::{modulated_deform_conv3x3, DeformConvShape};
use glip_rt::backend::cuda::{deform_conv::deform_conv_fwd_f16, CudaBackend};
use glip_rt::testing::Rng;
use half::f16;
use std::hint::black_box;

struct Inputs {
    x: Vec<f32>,
    off: Vec<f32>,
    mask: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

fn inputs(s: &DeformConvShape) -> Inputs {
    let mut rng = Rng::new(9);
    let (lx, lo, lm, lw, _) = s.required_lens();
    Inputs {
        x: rng.normal_vec(lx, 1.0),
        off: rng.normal_vec(lo, 2.0),
        mask: rng.uniform_vec(lm, 0.0, 1.0),
        w: rng.normal_vec(lw, 0.02),
        b: rng.normal_vec(s.out_channels, 0.1),
    }
}

fn cpu(c: &mut Criterion) {
    // P5 of GLIP-T (25x42), 256 channels.
    let s = DeformConvShape::new(1, 256, 256, 25, 42, 1);
    let i = inputs(&s);
    let mut g = c.benchmark_group("cpu_deform_conv");
    g.sample_size(10);
    g.bench_function("p5_256ch_stride1", |bch| {
        bch.iter(|| {
            black_box(modulated_deform_conv3x3(&s, &i.x, &i.off, &i.mask, &i.w, Some(&i.b)).ok())
        })
    });
    g.finish();
}

fn cuda(c: &mut Criterion) {
    let Ok(be) = CudaBackend::new(0) else { return };
    let h = |v: &[f32]| v.iter().map(|x| f16::from_f32(*x)).collect::<Vec<_>>();
    let mut g = c.benchmark_group("cuda_deform_conv");
    g.sample_size(10);
    for (name, s) in [
        (
            "p3_256ch_stride1",
            DeformConvShape::new(1, 256, 256, 100, 168, 1),
        ),
        (
            "p3_to_p4_stride2",
            DeformConvShape::new(1, 256, 256, 100, 168, 2),
        ),
    ] {
        let i = inputs(&s);
        let up = || -> glip_rt::Result<_> {
            Ok((
                be.upload_f16(&h(&i.x))?,
                be.upload_f16(&h(&i.off))?,
                be.upload_f16(&h(&i.mask))?,
                be.upload_f16(&h(&i.w))?,
                be.upload_f32(&i.b)?,
                be.filled_f16(s.required_lens().4, f16::ZERO)?,
            ))
        };
        let Ok((x, off, mask, w, b, mut y)) = up() else {
            return;
        };
        g.bench_function(name, |bch| {
            bch.iter(|| {
                let r = deform_conv_fwd_f16(&be, &s, &x, &off, &mask, &w, &b, &mut y);
                black_box(r.and_then(|_| be.synchronize()).ok())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, cpu, cuda);
criterion_main!(benches);
