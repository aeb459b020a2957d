//! Plain GEMMs through cuBLAS: f16 inputs and output, f32 accumulation
//! (cublasGemmEx with CUBLAS_COMPUTE_32F).

use super::CudaBackend;
use crate::error::{Error, Result};
use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig};
use cudarc::driver::CudaSlice;
use half::f16;

/// Row-major c[m, n] = a[m, k] · op(b), op(b) = b[k, n] or, with `b_transposed`, b[n, k]ᵀ
/// (PyTorch Linear weights are [out, in], so y = x·Wᵀ is `b_transposed = true`).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f16(
    be: &CudaBackend,
    m: usize,
    n: usize,
    k: usize,
    a: &CudaSlice<f16>,
    b: &CudaSlice<f16>,
    b_transposed: bool,
    c: &mut CudaSlice<f16>,
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
    unsafe { be.blas().gemm(cfg, b, a, c) }?;
    Ok(())
}
