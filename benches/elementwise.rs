//! elementwise family and the plain GEMM: CPU twins always, CUDA when a device is present.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glip_rt::backend::cpu::{elementwise as cpu, CpuBackend};
use glip_rt::backend::cuda::{elementwise as gpu, CudaBackend, InOut};
use glip_rt::backend::Backend;
use glip_rt::testing::Rng;
use glip_rt::{DType, Tensor};
use half::f16;

/// P3..P7 of GLIP-T at 800x1344, 256 channels.
const N: usize = 256 * 22_400;

fn inputs(n: usize) -> (Vec<f16>, Vec<f16>) {
    let mut rng = Rng::new(5);
    let a = rng
        .normal_vec(n, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let b = rng
        .normal_vec(n, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    (a, b)
}

fn cpu_benches(c: &mut Criterion) {
    let (a, b) = inputs(N);
    let mut g = c.benchmark_group("cpu_elementwise");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((3 * N * 2) as u64));
    g.bench_function(BenchmarkId::new("axpby_f16", N), |bch| {
        bch.iter(|| cpu::axpby_f16(0.5, &a, 0.5, &b).unwrap())
    });
    // The exact GELU on N values, in place as the model calls it (a fresh copy each time).
    let x = Tensor::from_f32(&[N], Rng::new(7).normal_vec(N, 2.0)).unwrap();
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(BenchmarkId::new("gelu_f32", N), |bch| {
        bch.iter_batched(
            || x.try_clone().unwrap(),
            |t| CpuBackend.gelu(t).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("cpu_gemm");
    g.sample_size(10);
    let mut rng = Rng::new(6);
    let (m, k, n) = (4200, 256, 2048);
    let ta = Tensor::from_f32(&[m, k], rng.normal_vec(m * k, 1.0)).unwrap();
    let tb = Tensor::from_f32(&[n, k], rng.normal_vec(n * k, 1.0)).unwrap();
    g.throughput(Throughput::Elements((2 * m * n * k) as u64));
    g.bench_function(
        BenchmarkId::new("linear_f32", format!("{m}x{k}x{n}")),
        |bch| bch.iter(|| CpuBackend.matmul(&ta, &tb, true).unwrap()),
    );
    g.finish();
}

fn cuda_benches(c: &mut Criterion) {
    let Ok(be) = CudaBackend::new(0) else {
        eprintln!("cuda_elementwise: no CUDA device, GPU benches not registered");
        return;
    };
    let (a, b) = inputs(N);
    let (da, db) = (be.upload_f16(&a).unwrap(), be.upload_f16(&b).unwrap());
    let mut y = be.filled_f16(N, f16::ZERO).unwrap();
    let mut g = c.benchmark_group("cuda_elementwise");
    g.throughput(Throughput::Bytes((3 * N * 2) as u64));
    g.bench_function(BenchmarkId::new("axpby_f16", N), |bch| {
        bch.iter(|| {
            gpu::axpby_f16(&be, 0.5, InOut::Apart(&da, &mut y), 0.5, &db, N).unwrap();
            be.synchronize().unwrap();
        })
    });
    g.finish();

    let mut g = c.benchmark_group("cuda_gemm");
    let mut rng = Rng::new(6);
    let (m, k, n) = (22_400, 256, 2048);
    let ta = be
        .upload(
            &CpuBackend
                .cast(
                    &Tensor::from_f32(&[m, k], rng.normal_vec(m * k, 1.0)).unwrap(),
                    DType::F16,
                )
                .unwrap(),
        )
        .unwrap();
    let tb = be
        .upload(
            &CpuBackend
                .cast(
                    &Tensor::from_f32(&[n, k], rng.normal_vec(n * k, 1.0)).unwrap(),
                    DType::F16,
                )
                .unwrap(),
        )
        .unwrap();
    g.throughput(Throughput::Elements((2 * m * n * k) as u64));
    g.bench_function(
        BenchmarkId::new("linear_f16", format!("{m}x{k}x{n}")),
        |bch| {
            bch.iter(|| {
                let c = be.matmul(&ta, &tb, true).unwrap();
                be.synchronize().unwrap();
                c
            })
        },
    );
    // The tensor-core GEMM of kernels/gemm.cu on the same shapes, with its fused bias: the
    // ratio to cuBLAS above is what decides where it is used.
    let bias = be
        .upload(&Tensor::from_f32(&[n], rng.normal_vec(n, 0.1)).unwrap())
        .unwrap();
    g.bench_function(
        BenchmarkId::new("gemm_bias_tc_f16", format!("{m}x{k}x{n}")),
        |bch| {
            bch.iter(|| {
                let c = be.linear(&ta, &tb, Some(&bias)).unwrap();
                be.synchronize().unwrap();
                c
            })
        },
    );
    g.finish();
}

criterion_group!(benches, cpu_benches, cuda_benches);
criterion_main!(benches);
