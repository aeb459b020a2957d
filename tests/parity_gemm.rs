//! The tensor-core GEMM family (kernels/gemm.cu: mma.sync, ldmatrix, cp.async) vs the CPU
//! GEMM: both B layouts, ragged edges in m, n and k-tiles, one k-tile and many, on a GPU or
//! the emulated device (which runs the PTX fragment layouts).

use glip_rt::backend::cpu::gemm::{gemm, Mat};
use glip_rt::backend::cuda::gemm::gemm_bias_f16;
use glip_rt::backend::cuda::CudaBackend;
use glip_rt::testing::{cuda_or_skip, max_abs_diff, nse, Rng};
use half::f16;

fn f16v(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

/// The CPU twin: the same f16 values in f32, bias added, rounded once to f16.
fn cpu(m: usize, n: usize, k: usize, a: &[f16], b: &[f16], bt: bool, bias: &[f32]) -> Vec<f32> {
    let af: Vec<f32> = a.iter().map(|x| x.to_f32()).collect();
    let bf: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
    let bm = if bt {
        Mat::transposed(&bf, k)
    } else {
        Mat::rows(&bf, n)
    };
    let mut c = vec![0f32; m * n];
    assert!(gemm(m, n, k, Mat::rows(&af, k), bm, &mut c, 1.0, false));
    c.iter()
        .enumerate()
        .map(|(i, v)| f16::from_f32(v + bias[i % n]).to_f32())
        .collect()
}

fn run(be: &CudaBackend, m: usize, n: usize, k: usize, bt: bool, seed: u64) -> (f64, f32) {
    let mut rng = Rng::new(seed);
    let a = f16v(&rng.normal_vec(m * k, 1.0));
    let b = f16v(&rng.normal_vec(n * k, (1.0 / k as f32).sqrt()));
    let bias = rng.normal_vec(n, 0.5);
    let want = cpu(m, n, k, &a, &b, bt, &bias);
    let mut c = be.filled_f16(m * n, f16::NAN).unwrap();
    gemm_bias_f16(
        be,
        m,
        n,
        k,
        &be.upload_f16(&a).unwrap(),
        &be.upload_f16(&b).unwrap(),
        bt,
        &be.upload_f32(&bias).unwrap(),
        &mut c,
    )
    .unwrap();
    let got: Vec<f32> = be
        .download(&c)
        .unwrap()
        .iter()
        .map(|x| x.to_f32())
        .collect();
    assert!(
        got.iter().all(|v| v.is_finite()),
        "m {m} n {n} k {k} bt {bt}: NaN left in C"
    );
    // Summation order differs from the CPU's, so the one rounding to f16 may differ by an
    // ulp (2^-10 relative; outputs have |c| ≲ 4).
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-3 * w.abs() + 2e-3,
            "m {m} n {n} k {k} bt {bt}: c[{}][{}] = {g}, CPU {w}",
            i / n,
            i % n
        );
    }
    (nse(&got, &want), max_abs_diff(&got, &want))
}

#[test]
fn tensor_core_gemm_matches_cpu() {
    let be = cuda_or_skip("tensor_core_gemm_matches_cpu").expect("a device");
    // (m, n, k): one partial tile; several tiles with ragged m and n and a ragged last
    // k-tile; a single row; exact tiles.
    let shapes = [(70, 72, 40), (130, 200, 96), (1, 8, 8), (64, 64, 32)];
    for (si, &(m, n, k)) in shapes.iter().enumerate() {
        for bt in [true, false] {
            let (e, d) = run(&be, m, n, k, bt, 40 + si as u64);
            println!("m {m} n {n} k {k} b_transposed {bt}: nse {e:.2e} max |diff| {d:.2e}");
            assert!(e <= 1e-6, "nse {e}");
        }
    }
}

#[test]
fn tensor_core_gemm_refuses_unaligned_rows() {
    let be = cuda_or_skip("tensor_core_gemm_refuses_unaligned_rows").expect("a device");
    let a = be.filled_f16(12, f16::ONE).unwrap();
    let b = be.filled_f16(12, f16::ONE).unwrap();
    let bias = be.filled_f32(4, 0.0).unwrap();
    let mut c = be.filled_f16(12, f16::ZERO).unwrap();
    let e = gemm_bias_f16(&be, 3, 4, 3, &a, &b, true, &bias, &mut c).unwrap_err();
    assert!(e.to_string().contains("multiple of 8"), "{e}");
}
