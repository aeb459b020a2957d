//! One table-driven test of the op interface (backend/ops.rs) on every backend: each op the
//! CUDA backend implements runs on the CUDA device (a GPU, or the emulated device in CI) and
//! on the CPU backend from the same f16-rounded random inputs, and must agree within f16
//! tolerance; each op it does not implement yet runs on the CPU (counted, same answer), or
//! fails with `not on CUDA yet: <op>` when fallbacks are refused.

use glip_rt::backend::cpu::CpuBackend;
use glip_rt::backend::cuda::CudaBackend;
use glip_rt::backend::Backend;
use glip_rt::testing::{cuda_or_skip, max_abs_diff, nse, Rng};
use glip_rt::{DType, Tensor};

/// Random host f32 values already rounded to f16 (what both backends then see).
fn rnd(rng: &mut Rng, shape: &[usize], std: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(shape, rng.normal_vec(n, std))
        .unwrap()
        .to_f16()
        .unwrap()
        .to_f32()
        .unwrap()
}

/// The CUDA copy of a host tensor: f16 for activations and matrices, f32 vectors as
/// parameters are stored (`Backend::weight`), or f32 as asked.
fn dev(be: &CudaBackend, t: &Tensor, dtype: DType) -> Tensor {
    let host = match dtype {
        DType::F16 => t.to_f16().unwrap(),
        _ => t.try_clone().unwrap(),
    };
    be.upload(&host).unwrap()
}

fn compare(op: &str, be: &CudaBackend, got: &Tensor, want: &Tensor, max_nse: f64) {
    let got = be.to_host(got).unwrap().to_f32().unwrap();
    assert_eq!(got.shape(), want.shape(), "{op}: shape");
    let (g, w) = (got.f32s().unwrap(), want.f32s().unwrap());
    assert!(g.iter().all(|v| v.is_finite()), "{op}: non-finite output");
    let (e, d) = (nse(g, w), max_abs_diff(g, w));
    println!("{op}: nse {e:.2e} max |diff| {d:.2e}");
    assert!(e <= max_nse, "{op}: nse {e:.2e} > {max_nse:e}");
}

#[test]
fn every_cuda_op_matches_the_cpu_op() {
    let be = cuda_or_skip("every_cuda_op_matches_the_cpu_op").expect("a device");
    let cpu = &CpuBackend;
    let mut rng = Rng::new(8);
    let (f16, f32) = (DType::F16, DType::F32);

    // linear, with and without bias (tensor-core GEMM / cuBLAS stand-in).
    let x = rnd(&mut rng, &[2, 5, 32], 1.0);
    let w = rnd(&mut rng, &[24, 32], 0.2);
    let b = rnd(&mut rng, &[24], 0.5);
    let got = be
        .linear(
            &dev(&be, &x, f16),
            &dev(&be, &w, f16),
            Some(&dev(&be, &b, f32)),
        )
        .unwrap();
    compare(
        "linear",
        &be,
        &got,
        &cpu.linear(&x, &w, Some(&b)).unwrap(),
        1e-5,
    );
    let got = be
        .linear(&dev(&be, &x, f16), &dev(&be, &w, f16), None)
        .unwrap();
    compare(
        "linear (no bias)",
        &be,
        &got,
        &cpu.linear(&x, &w, None).unwrap(),
        1e-5,
    );

    // scale and add (elementwise kernels).
    let y = rnd(&mut rng, &[2, 5, 32], 1.0);
    let got = be.scale(dev(&be, &x, f16), 0.75, -0.5).unwrap();
    compare(
        "scale",
        &be,
        &got,
        &cpu.scale(x.try_clone().unwrap(), 0.75, -0.5).unwrap(),
        1e-6,
    );
    let got = be.add(dev(&be, &x, f16), &dev(&be, &y, f16)).unwrap();
    compare(
        "add",
        &be,
        &got,
        &cpu.add(x.try_clone().unwrap(), &y).unwrap(),
        1e-6,
    );

    // The activations (elementwise kernels): spread wide enough that h_sigmoid's and the
    // clamp's bounds bind.
    let z = rnd(&mut rng, &[3, 7, 41], 3.0);
    type Activation = fn(&dyn Backend, Tensor) -> glip_rt::Result<Tensor>;
    let activations: [(&str, Activation); 4] = [
        ("relu", |b, t| b.relu(t)),
        ("clamp", |b, t| b.clamp(t, 1.5)),
        ("h_sigmoid", |b, t| b.h_sigmoid(t)),
        ("gelu", |b, t| b.gelu(t)),
    ];
    for (op, f) in activations {
        let got = f(&be, dev(&be, &z, f16)).unwrap();
        let want = f(cpu, z.try_clone().unwrap()).unwrap();
        compare(op, &be, &got, &want, 1e-6);
    }

    // bi_attn (2 heads of 256, ragged 37 positions, 9 tokens of which 6 real).
    let q = rnd(&mut rng, &[1, 37, 512], 0.06);
    let k = rnd(&mut rng, &[1, 9, 512], 1.0);
    let vl = rnd(&mut rng, &[1, 9, 512], 1.0);
    let vv = rnd(&mut rng, &[1, 37, 512], 1.0);
    let mask = Tensor::from_i32(&[1, 9], (0..9).map(|j| i32::from(j < 6)).collect()).unwrap();
    let (gv, gt) = be
        .bi_attn(
            &dev(&be, &q, f16),
            &dev(&be, &k, f16),
            &dev(&be, &vl, f16),
            &dev(&be, &vv, f16),
            &be.upload(&mask).unwrap(),
            2,
        )
        .unwrap();
    let (wv, wt) = cpu.bi_attn(&q, &k, &vl, &vv, &mask, 2).unwrap();
    compare("bi_attn o_v", &be, &gv, &wv, 1e-4);
    compare("bi_attn o_t", &be, &gt, &wt, 1e-4);

    // group_norm (16 groups of 2 channels, a 5x7 map, batch 2).
    let xg = Tensor::from_f32(
        &[2, 32, 5, 7],
        rnd(&mut rng, &[2, 32, 5, 7], 2.0)
            .f32s()
            .unwrap()
            .iter()
            .map(|v| v + 1.5)
            .collect(),
    )
    .unwrap()
    .to_f16()
    .unwrap()
    .to_f32()
    .unwrap();
    let (gw, gb) = (rnd(&mut rng, &[32], 1.0), rnd(&mut rng, &[32], 0.5));
    let got = be
        .group_norm(
            &dev(&be, &xg, f16),
            &dev(&be, &gw, f32),
            &dev(&be, &gb, f32),
            16,
            1e-5,
        )
        .unwrap();
    compare(
        "group_norm",
        &be,
        &got,
        &cpu.group_norm(&xg, &gw, &gb, 16, 1e-5).unwrap(),
        1e-4,
    );

    // deform_conv3x3, stride 1 and 2.
    let xd = rnd(&mut rng, &[1, 16, 9, 11], 1.0);
    let wd = rnd(&mut rng, &[16, 16, 3, 3], 0.08);
    let bd = rnd(&mut rng, &[16], 0.5);
    for stride in [1, 2] {
        let (oh, ow) = ((9 - 1) / stride + 1, (11 - 1) / stride + 1);
        let off = rnd(&mut rng, &[1, 18, oh, ow], 2.0);
        let m = Tensor::from_f32(&[1, 9, oh, ow], rng.uniform_vec(9 * oh * ow, 0.0, 1.0))
            .unwrap()
            .to_f16()
            .unwrap()
            .to_f32()
            .unwrap();
        let got = be
            .deform_conv3x3(
                &dev(&be, &xd, f16),
                &dev(&be, &off, f16),
                &dev(&be, &m, f16),
                &dev(&be, &wd, f16),
                &dev(&be, &bd, f32),
                stride,
                (oh, ow),
            )
            .unwrap();
        let want = cpu
            .deform_conv3x3(&xd, &off, &m, &wd, &bd, stride, (oh, ow))
            .unwrap();
        compare(
            &format!("deform_conv3x3 stride {stride}"),
            &be,
            &got,
            &want,
            1e-4,
        );
    }

    // text_projection and dot_logits (the head).
    let lang = rnd(&mut rng, &[1, 6, 64], 1.0);
    let pw = rnd(&mut rng, &[32, 64], 0.1);
    let (pb, bl) = (rnd(&mut rng, &[32], 0.1), rnd(&mut rng, &[64], 0.05));
    let (gp, gtb) = be
        .text_projection(
            &dev(&be, &lang, f16),
            &dev(&be, &pw, f16),
            &dev(&be, &pb, f32),
            &dev(&be, &bl, f32),
            -4.6,
        )
        .unwrap();
    let (wp, wtb) = cpu.text_projection(&lang, &pw, &pb, &bl, -4.6).unwrap();
    compare("text_projection proj", &be, &gp, &wp, 1e-6);
    compare("text_projection token bias", &be, &gtb, &wtb, 1e-6);
    let v = rnd(&mut rng, &[1, 32, 4, 5], 1.0);
    let got = be
        .dot_logits(&dev(&be, &v, f16), &gp, &gtb, 0.8, 50_000.0)
        .unwrap();
    let want = cpu.dot_logits(&v, &wp, &wtb, 0.8, 50_000.0).unwrap();
    compare("dot_logits", &be, &got, &want, 1e-5);
}

/// An op with no CUDA kernel yet, on either backend: x [1, 2, 3, 4] activations, v [4].
type FallbackCase = (
    &'static str,
    fn(&dyn Backend, &Tensor, &Tensor) -> glip_rt::Result<Tensor>,
);

#[test]
fn ops_without_a_cuda_kernel_fall_back_to_the_cpu_or_name_themselves() {
    let mut be = cuda_or_skip("ops_without_a_cuda_kernel_fall_back").expect("a device");
    let mut rng = Rng::new(9);
    let x = rnd(&mut rng, &[1, 2, 3, 4], 1.0);
    let v = rnd(&mut rng, &[4], 0.5);
    let cases: Vec<FallbackCase> = vec![
        ("layer_norm", |b, x, v| b.layer_norm(x, v, v, 1e-5)),
        ("scale_images", |b, x, _| {
            let a = b.upload(&Tensor::from_f32(&[1], vec![0.5])?)?;
            b.scale_images(b.upload(&b.to_host(x)?)?, &a)
        }),
        ("upsample_nearest", |b, x, _| b.upsample_nearest(x, 6, 8)),
        ("nchw_to_nhwc", |b, x, _| b.nchw_to_nhwc(x)),
        ("window_partition", |b, x, _| b.window_partition(x, 7, 0)),
        ("avg_pool", |b, x, _| b.avg_pool(x)),
        ("duplicate", |b, x, _| b.duplicate(x)),
    ];
    let (dx, dv) = (dev(&be, &x, DType::F16), dev(&be, &v, DType::F32));
    for (op, f) in &cases {
        let got = f(&be, &dx, &dv).unwrap_or_else(|e| panic!("{op} on CUDA with fallback: {e}"));
        assert_eq!(
            got.dtype(),
            DType::F16,
            "{op}: the fallback keeps f16 activations"
        );
        let want = f(&CpuBackend, &x, &v).unwrap();
        compare(&format!("{op} (CPU fallback)"), &be, &got, &want, 1e-6);
        let counts = be.fallback_counts();
        let c = counts
            .iter()
            .find(|c| c.op == *op)
            .unwrap_or_else(|| panic!("{op}: fallback not counted: {counts:?}"));
        assert!(c.calls >= 1 && c.bytes_down > 0 && c.bytes_up > 0, "{c:?}");
    }
    be.reset_fallback_counts();
    be.set_fallback(false);
    for (op, f) in &cases {
        let e = f(&be, &dx, &dv).err().unwrap_or_else(|| {
            panic!("{op} ran on CUDA with fallbacks refused: add it to the parity table")
        });
        assert_eq!(e.to_string(), format!("not on CUDA yet: {op}"), "{op}");
    }
    assert!(be.fallback_counts().is_empty(), "a refused op was counted");
}
