//! Plain GEMMs through cuBLAS: f16 inputs and output, f32 accumulation
//! (cublasGemmEx with CUBLAS_COMPUTE_32F). On the emulated device a host GEMM with the same
//! contract (f16 in, f32 accumulation, one rounding to f16) stands in.

use super::memory::BufInner;
use super::CudaBackend;
use super::DeviceBuffer;
use crate::error::{Error, Result};
use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig};
use half::f16;

/// Row-major c[m, n] = a[m, k] · op(b), op(b) = b[k, n] or, with `b_transposed`, b[n, k]ᵀ
/// (PyTorch Linear weights are [out, in], so y = x·Wᵀ is `b_transposed = true`).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f16(
    be: &CudaBackend,
    m: usize,
    n: usize,
    k: usize,
    a: &DeviceBuffer<f16>,
    b: &DeviceBuffer<f16>,
    b_transposed: bool,
    c: &mut DeviceBuffer<f16>,
) -> Result<()> {
    if a.len() < m * k || b.len() < k * n || c.len() < m * n {
        return Err(Error::shape(
            "gemm_f16",
            format!(
                "a {} b {} c {} for m {m} n {n} k {k}",
                a.len(),
                b.len(),
                c.len()
            ),
        ));
    }
    let (a, b, c) = match (&a.inner, &b.inner, &mut c.inner) {
        (BufInner::Cuda(a), BufInner::Cuda(b), BufInner::Cuda(c)) => (a, b, c),
        (BufInner::Emu(a), BufInner::Emu(b), BufInner::Emu(c)) => {
            return host_gemm_f16(
                m,
                n,
                k,
                a.as_slice(),
                b.as_slice(),
                b_transposed,
                c.as_mut_slice(),
            );
        }
        _ => return Err(Error::Cuda("gemm_f16: buffers of different devices".into())),
    };
    // cuBLAS is column-major: a row-major C[m,n] is a column-major Cᵀ[n,m] = op(B)ᵀ · Aᵀ,
    // so pass B first.
    let cfg = GemmConfig {
        transa: if b_transposed {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        },
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: f16::ONE,
        lda: if b_transposed { k as i32 } else { n as i32 },
        ldb: k as i32,
        beta: f16::ZERO,
        ldc: n as i32,
    };
    // SAFETY: the extents of a, b and c were checked against m, n, k above.
    unsafe { be.blas()?.gemm(cfg, b, a, c) }?;
    Ok(())
}

/// The emulated device's cuBLAS: row-major c = a · op(b) from f16 inputs, the CPU backend's
/// f32 GEMM, one rounding to f16.
fn host_gemm_f16(
    m: usize,
    n: usize,
    k: usize,
    a: &[f16],
    b: &[f16],
    bt: bool,
    c: &mut [f16],
) -> Result<()> {
    use crate::backend::cpu::gemm::{gemm, Mat};
    let (af, bf): (Vec<f32>, Vec<f32>) = (
        a.iter().map(|v| v.to_f32()).collect(),
        b.iter().map(|v| v.to_f32()).collect(),
    );
    let bm = if bt {
        Mat::transposed(&bf, k)
    } else {
        Mat::rows(&bf, n)
    };
    let mut cf = vec![0f32; m * n];
    if !gemm(m, n, k, Mat::rows(&af, k), bm, &mut cf, 1.0, false) {
        return Err(Error::shape("gemm_f16", format!("m {m} n {n} k {k}")));
    }
    for (o, v) in c.iter_mut().zip(&cf) {
        *o = f16::from_f32(*v);
    }
    Ok(())
}
