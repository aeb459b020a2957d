//! elementwise family: CPU twin checks, and GPU-vs-CPU parity (skips without a GPU).

use glip_rt::backend::cpu::elementwise as cpu;
use glip_rt::backend::cuda::elementwise as gpu;
use glip_rt::backend::{cpu::CpuBackend, Backend};
use glip_rt::testing::{cuda_or_skip, Rng};
use glip_rt::{DType, Tensor};
use half::f16;

#[test]
fn cpu_cast_rounds_to_nearest_even() {
    // 1 + 2^-11 is halfway between two f16 values: ties go to the even mantissa (1.0).
    let halfway = 1.0 + f32::powi(2.0, -11);
    let y = cpu::cast_f32_f16(&[halfway, 65520.0, -3.25]);
    assert_eq!(y[0], f16::from_f32(1.0));
    assert!(y[1].is_infinite(), "65520 overflows f16");
    assert_eq!(y[2].to_f32(), -3.25);
}

#[test]
fn cpu_axpby_is_f32_arithmetic_rounded_once() {
    let mut rng = Rng::new(1);
    let a: Vec<f16> = rng
        .normal_vec(1000, 2.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let b: Vec<f16> = rng
        .normal_vec(1000, 2.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let y = cpu::axpby_f16(0.5, &a, 2.0, &b).unwrap();
    for i in 0..1000 {
        let want = f16::from_f32(0.5 * a[i].to_f32() + 2.0 * b[i].to_f32());
        assert_eq!(y[i], want, "element {i}");
    }
    assert!(
        cpu::axpby_f16(1.0, &a, 1.0, &b[..999]).is_err(),
        "length mismatch must be an error"
    );
}

#[test]
fn cpu_backend_matmul_matches_direct_sum() {
    let mut rng = Rng::new(2);
    let (m, k, n) = (7, 13, 5);
    let a = rng.normal_vec(m * k, 1.0);
    let b = rng.normal_vec(n * k, 1.0); // [n, k]: used transposed
    let be = CpuBackend;
    let c = be
        .matmul(
            &Tensor::from_f32(&[m, k], a.clone()).unwrap(),
            &Tensor::from_f32(&[n, k], b.clone()).unwrap(),
            true,
        )
        .unwrap();
    let c = c.f32s().unwrap();
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
            assert!(
                (c[i * n + j] - want).abs() < 1e-5,
                "({i},{j}) {} vs {want}",
                c[i * n + j]
            );
        }
    }
    let bad = be.matmul(
        &Tensor::from_f32(&[m, k], a).unwrap(),
        &Tensor::from_f32(&[n, k + 1], vec![0.5; n * (k + 1)]).unwrap(),
        true,
    );
    assert!(bad.is_err(), "inner-dimension mismatch must be an error");
}

#[test]
fn cpu_backend_cast_round_trip() {
    let mut rng = Rng::new(3);
    let v = rng.normal_vec(64, 4.0);
    let be = CpuBackend;
    let t = Tensor::from_f32(&[8, 8], v.clone()).unwrap();
    let h = be.cast(&t, DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    let back = be.cast(&h, DType::F32).unwrap();
    for (x, y) in v.iter().zip(back.f32s().unwrap()) {
        assert_eq!(f16::from_f32(*x).to_f32(), *y);
    }
}

fn poisoned_f16(
    be: &glip_rt::backend::cuda::CudaBackend,
    n: usize,
) -> glip_rt::backend::cuda::DeviceBuffer<f16> {
    be.filled_f16(n, f16::NAN).unwrap()
}

#[test]
fn gpu_elementwise_matches_cpu_bitwise() {
    let Some(be) = cuda_or_skip("gpu_elementwise_matches_cpu_bitwise") else {
        return;
    };
    let mut rng = Rng::new(11);
    // An odd size exercises the tail of the grid-stride loop.
    let n = 256 * 100 * 168 + 7;
    let x = rng.normal_vec(n, 50.0);
    let dx = be.upload_f32(&x).unwrap();
    let mut h = poisoned_f16(&be, n);
    gpu::cast_f32_f16(&be, &dx, &mut h, n).unwrap();
    let got = be.download(&h).unwrap();
    assert_eq!(got, cpu::cast_f32_f16(&x), "cast f32->f16");

    let a: Vec<f16> = rng
        .normal_vec(n, 3.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let b: Vec<f16> = rng
        .normal_vec(n, 3.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let (da, db) = (be.upload_f16(&a).unwrap(), be.upload_f16(&b).unwrap());
    let mut y = poisoned_f16(&be, n);
    gpu::axpby_f16(&be, 0.75, &da, -1.5, &db, &mut y, n).unwrap();
    assert_eq!(
        be.download(&y).unwrap(),
        cpu::axpby_f16(0.75, &a, -1.5, &b).unwrap(),
        "axpby"
    );

    let mut s = poisoned_f16(&be, n);
    gpu::scale_f16(&be, 1.25, &da, 0.5, &mut s, n).unwrap();
    assert_eq!(
        be.download(&s).unwrap(),
        cpu::scale_f16(1.25, &a, 0.5),
        "scale"
    );

    let mut f = be.filled_f32(n, f32::NAN).unwrap();
    gpu::cast_f16_f32(&be, &da, &mut f, n).unwrap();
    assert_eq!(
        be.download(&f).unwrap(),
        cpu::cast_f16_f32(&a),
        "cast f16->f32"
    );
}

#[test]
fn gpu_matmul_matches_cpu() {
    let Some(be) = cuda_or_skip("gpu_matmul_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(12);
    // A VLFuse-shaped projection: [22400, 256] x [2048, 256]^T.
    let (m, k, n) = (22400, 256, 2048);
    let a: Vec<f32> = rng
        .normal_vec(m * k, 1.0)
        .into_iter()
        .map(|v| f16::from_f32(v).to_f32())
        .collect();
    let b: Vec<f32> = rng
        .normal_vec(n * k, 0.05)
        .into_iter()
        .map(|v| f16::from_f32(v).to_f32())
        .collect();
    let ta = Tensor::from_f32(&[m, k], a).unwrap();
    let tb = Tensor::from_f32(&[n, k], b).unwrap();
    let want = CpuBackend.matmul(&ta, &tb, true).unwrap();
    let da = be
        .upload(&CpuBackend.cast(&ta, DType::F16).unwrap())
        .unwrap();
    let db = be
        .upload(&CpuBackend.cast(&tb, DType::F16).unwrap())
        .unwrap();
    let dc = be.matmul(&da, &db, true).unwrap();
    let got = be.to_host(&dc).unwrap().to_f32_vec().unwrap();
    let want = want.f32s().unwrap();
    let e = glip_rt::testing::nse(&got, want);
    let m_abs = glip_rt::testing::max_abs_diff(&got, want);
    println!("gpu matmul: nse {e:.2e}, max |diff| {m_abs:.2e}");
    assert!(got.iter().all(|v| v.is_finite()));
    assert!(e <= 1e-5, "nse {e}");
}
