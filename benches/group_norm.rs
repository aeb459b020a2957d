//! GroupNorm(16, 256) over the five GLIP-T pyramid levels: CPU twin and the CUDA kernels
//! (both launches, all levels in one grouped launch), batch 1.

use criterion::{criterion_group, criterion_main, Criterion};
use glip_rt::backend::cpu::group_norm::{group_norm_levels, GnLevel, GroupNormShape};
use glip_rt::backend::cuda::{group_norm as gn, CudaBackend};
use glip_rt::testing::Rng;
use half::f16;
use std::hint::black_box;

const SIZES: [(usize, usize); 5] = [(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)];

fn setup(
    batch: usize,
    sizes: &[(usize, usize)],
) -> (GroupNormShape, Vec<GnLevel>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let s = GroupNormShape::glip(batch, 256);
    let mut levels = Vec::new();
    let mut off = 0;
    for &(h, w) in sizes {
        levels.push(GnLevel {
            offset: off,
            hw: h * w,
        });
        off += batch * 256 * h * w;
    }
    let mut rng = Rng::new(4);
    (
        s,
        levels,
        rng.normal_vec(off, 1.0),
        rng.normal_vec(256, 1.0),
        rng.normal_vec(256, 1.0),
    )
}

fn cpu(c: &mut Criterion) {
    let (s, levels, x, w, b) = setup(1, &SIZES);
    let mut y = vec![0.0f32; x.len()];
    let mut g = c.benchmark_group("cpu_group_norm");
    g.sample_size(10);
    g.bench_function("five_levels_b1", |bch| {
        bch.iter(|| black_box(group_norm_levels(&s, &levels, &x, &w, &b, &mut y).ok()))
    });
    g.finish();
}

fn cuda(c: &mut Criterion) {
    let Ok(be) = CudaBackend::new(0) else { return };
    let mut g = c.benchmark_group("cuda_group_norm");
    g.sample_size(10);
    // All five levels, P3 alone (bandwidth: 2 bytes read + 2 written per element) and P5-P7.
    for (name, sizes) in [
        ("five_levels_b1", &SIZES[..]),
        ("p3_b1", &SIZES[..1]),
        ("p5_p7_b1", &SIZES[2..]),
    ] {
        let (s, levels, x, w, b) = setup(1, sizes);
        let xh: Vec<f16> = x.iter().map(|v| f16::from_f32(*v)).collect();
        let hws: Vec<usize> = levels.iter().map(|l| l.hw).collect();
        let up = || -> glip_rt::Result<_> {
            let mut xs = Vec::new();
            let mut ys = Vec::new();
            for l in &levels {
                let n = 256 * l.hw;
                xs.push(be.upload_f16(&xh[l.offset..l.offset + n])?);
                ys.push(be.filled_f16(n, f16::ZERO)?);
            }
            Ok((
                xs,
                ys,
                be.upload_f32(&w)?,
                be.upload_f32(&b)?,
                be.filled_f32(gn::workspace_len(&s, &hws), 0.0)?,
            ))
        };
        let Ok((xs, mut ys, dw, db, mut ws)) = up() else {
            return;
        };
        g.bench_function(name, |bch| {
            bch.iter(|| {
                let mut bufs: Vec<gn::GnLevelBufs<'_>> = xs
                    .iter()
                    .zip(ys.iter_mut())
                    .zip(&hws)
                    .map(|((x, y), &hw)| gn::GnLevelBufs { x, y, hw })
                    .collect();
                let r = gn::group_norm_levels_f16(&be, &s, &mut bufs, &dw, &db, &mut ws);
                black_box(r.and_then(|_| be.synchronize()).ok())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, cpu, cuda);
criterion_main!(benches);
