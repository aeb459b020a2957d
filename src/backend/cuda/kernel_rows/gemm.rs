//! gemm: the tensor-core GEMM (mma.sync, ldmatrix, cp.async) with its bias epilogue against
//! the CPU GEMM, both B layouts: one partial tile, ragged m and n with a ragged last k-tile,
//! a single row, exact tiles. The same shapes at both scales (the emulated device runs the
//! PTX fragment layouts).

use super::{halves, kernel_row, to_f32, Compared, KernelRow, Scale, Tol};
use crate::backend::cpu::gemm::{gemm, Mat};
use crate::backend::cuda::gemm::gemm_bias_f16;
use crate::error::Error;
use crate::testing::Rng;
use half::f16;

pub(super) fn rows(_scale: Scale, t: &mut Vec<KernelRow>) {
    let shapes = [(70, 72, 40), (130, 200, 96), (1, 8, 8), (64, 64, 32)];
    for (si, (m, n, k)) in shapes.into_iter().enumerate() {
        for bt in [true, false] {
            let b_shape = if bt { [n, k] } else { [k, n] };
            t.push(kernel_row(
                "gemm_bias_f16",
                "gemm",
                format!("{m}x{k} · {b_shape:?} + bias, B transposed {bt}"),
                move |be| {
                    let mut rng = Rng::new(40 + si as u64);
                    let (a, af) = halves(rng.normal_vec(m * k, 1.0));
                    let (b, bf) = halves(rng.normal_vec(n * k, (1.0 / k as f32).sqrt()));
                    let bias = rng.normal_vec(n, 0.5);
                    let mut c = be.filled_f16(m * n, f16::NAN)?;
                    gemm_bias_f16(
                        be,
                        m,
                        n,
                        k,
                        &be.upload_f16(&a)?,
                        &be.upload_f16(&b)?,
                        bt,
                        &be.upload_f32(&bias)?,
                        &mut c,
                    )?;
                    // The twin: the same values in f32, bias added, rounded once to f16.
                    let bm = if bt {
                        Mat::transposed(&bf, k)
                    } else {
                        Mat::rows(&bf, n)
                    };
                    let mut want = vec![0f32; m * n];
                    if !gemm(m, n, k, Mat::rows(&af, k), bm, &mut want, 1.0, false) {
                        return Err(Error::Invalid("the CPU GEMM refused the shape".into()));
                    }
                    let want = want
                        .iter()
                        .enumerate()
                        .map(|(i, v)| f16::from_f32(v + bias[i % n]).to_f32())
                        .collect();
                    Ok(vec![Compared {
                        name: "c".into(),
                        device: to_f32(&be.download(&c)?),
                        twin: want,
                        // Summation order differs, so the one rounding to f16 may differ by an
                        // ulp (|c| ≲ 4: 4e-3).
                        tol: Tol::new(1e-6, 6e-3),
                    }])
                },
            ));
        }
    }
}
