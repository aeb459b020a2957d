//! bi_attn benches: `cpu_bi_attn` (moderate size, CI has 2 cores) and `cuda_bi_attn`
//! (GLIP-T size: 22 400 image positions, 256 tokens, 8 heads of 256; only with a GPU).

use criterion::{criterion_group, criterion_main, Criterion};
use glip_rt::backend::cpu::bi_attn::{bi_attn, BiAttnShape};
use glip_rt::testing::Rng;
use half::f16;

fn cpu_bench(c: &mut Criterion) {
    let s = BiAttnShape {
        batch: 1,
        heads: 8,
        head_dim: 256,
        n_img: 1_400,
        n_txt: 64,
    };
    let mut rng = Rng::new(1);
    let q = rng.normal_vec(s.img_len(), 0.125);
    let k = rng.normal_vec(s.txt_len(), 1.0);
    let vl = rng.normal_vec(s.txt_len(), 1.0);
    let vv = rng.normal_vec(s.img_len(), 1.0);
    let mask = vec![1; s.n_txt];
    let mut g = c.benchmark_group("cpu_bi_attn");
    g.sample_size(10);
    g.bench_function("n1400_t64_h8", |b| {
        b.iter(|| bi_attn(&s, &q, &k, &vl, &vv, &mask).unwrap())
    });
    g.finish();
}

fn cuda_bench(c: &mut Criterion) {
    use glip_rt::backend::cuda::bi_attn::{bi_attn_f16, default_img_splits, BiAttnWorkspace};
    use glip_rt::backend::cuda::CudaBackend;
    let Ok(be) = CudaBackend::new(0) else { return };
    let mut g = c.benchmark_group("cuda_bi_attn");
    g.sample_size(10);
    for t in [256usize, 32] {
        let s = BiAttnShape {
            batch: 1,
            heads: 8,
            head_dim: 256,
            n_img: 22_400,
            n_txt: t,
        };
        let mut rng = Rng::new(2);
        let h = |v: Vec<f32>| v.into_iter().map(f16::from_f32).collect::<Vec<_>>();
        let q = be
            .upload_f16(&h(rng.normal_vec(s.img_len(), 0.125)))
            .unwrap();
        let k = be.upload_f16(&h(rng.normal_vec(s.txt_len(), 1.0))).unwrap();
        let vl = be.upload_f16(&h(rng.normal_vec(s.txt_len(), 1.0))).unwrap();
        let vv = be.upload_f16(&h(rng.normal_vec(s.img_len(), 1.0))).unwrap();
        let mask = be.upload_i32(&vec![1; t]).unwrap();
        let mut ws = BiAttnWorkspace::new(&be, &s, default_img_splits(s.n_img)).unwrap();
        let mut ov = be.filled_f16(s.img_len(), f16::ZERO).unwrap();
        let mut ot = be.filled_f16(s.txt_len(), f16::ZERO).unwrap();
        g.bench_function(format!("n22400_t{t}_h8"), |b| {
            b.iter(|| {
                bi_attn_f16(&be, &s, &q, &k, &vl, &vv, &mask, &mut ws, &mut ov, &mut ot).unwrap();
                be.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(cpu, cpu_bench);
criterion_group!(cuda, cuda_bench);
criterion_main!(cpu, cuda);
