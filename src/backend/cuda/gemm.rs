//! GEMMs, f16 inputs and output, f32 accumulation. Plain ones through cuBLAS (cublasGemmEx
//! with CUBLAS_COMPUTE_32F; on the emulated device a host GEMM with the same contract stands
//! in); ones with a fused bias epilogue through kernels/gemm.cu on tensor cores.

use super::params::GlipGemmParams;
use super::DeviceBuffer;
use super::{check_len, to_i32, CudaBackend};
use crate::error::{Error, Result};
use crate::kernels::names;
use cudarc::driver::LaunchConfig;
use half::f16;

const FAMILY: &str = "gemm";
/// The kernels' tile of C (rows and columns per block) and threads per block.
const TILE: usize = 64;
const THREADS: u32 = 128;
/// cp.async moves 16-byte chunks: rows of A and B must be whole chunks of 8 halves.
const CHUNK: usize = 8;

/// Row-major c[m, n] = a[m, k] · op(b) + bias[n] on tensor cores (kernels/gemm.cu), with
/// op(b) as in [`gemm_f16`]. Needs k % 8 == 0 (and n % 8 == 0 when `b_transposed` is false)
/// and an sm_80+ GPU (or the emulated device).
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias_f16(
    be: &CudaBackend,
    m: usize,
    n: usize,
    k: usize,
    a: &DeviceBuffer<f16>,
    b: &DeviceBuffer<f16>,
    b_transposed: bool,
    bias: &DeviceBuffer<f32>,
    c: &mut DeviceBuffer<f16>,
) -> Result<()> {
    const OP: &str = "gemm_bias_f16";
    if m == 0 || n == 0 || k == 0 {
        return Err(Error::shape(OP, format!("empty GEMM m {m} n {n} k {k}")));
    }
    if !k.is_multiple_of(CHUNK) || (!b_transposed && !n.is_multiple_of(CHUNK)) {
        return Err(Error::shape(
            OP,
            format!(
                "k {k}{} must be a multiple of {CHUNK} (16-byte rows for cp.async)",
                if b_transposed { "" } else { " and n" }
            ),
        ));
    }
    let mk = m.checked_mul(k);
    let nk = n.checked_mul(k);
    let mn = m.checked_mul(n);
    let (Some(mk), Some(nk), Some(mn)) = (mk, nk, mn) else {
        return Err(Error::shape(OP, format!("m {m} n {n} k {k} overflow")));
    };
    check_len(OP, "a", a.len(), mk)?;
    check_len(OP, "b", b.len(), nk)?;
    check_len(OP, "bias", bias.len(), n)?;
    check_len(OP, "c", c.len(), mn)?;
    if !be.is_emulated() {
        let (major, minor) = be.compute_capability()?;
        if major < 8 {
            return Err(Error::Cuda(format!(
                "{OP}: mma.sync m16n8k16 needs sm_80 or newer (this GPU is sm_{major}{minor})"
            )));
        }
    }
    let p = GlipGemmParams {
        m: to_i32(OP, "m", m)?,
        n: to_i32(OP, "n", n)?,
        k: to_i32(OP, "k", k)?,
        _pad: 0,
    };
    let name = if b_transposed {
        names::GLIP_GEMM_BIAS_NT_F16
    } else {
        names::GLIP_GEMM_BIAS_NN_F16
    };
    let f = be.function(FAMILY, name)?;
    let grid = |v: usize| -> Result<u32> {
        u32::try_from(v.div_ceil(TILE))
            .ok()
            .filter(|&g| g <= 65_535)
            .ok_or_else(|| Error::shape(OP, format!("{v} rows/columns: grid too large")))
    };
    let cfg = LaunchConfig {
        grid_dim: (grid(n)?, grid(m)?, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = be.launch_builder(&f);
    l.arg(&p).arg(a).arg(b).arg(bias).arg(c);
    // SAFETY: the kernel reads a[0..m*k), b[0..n*k), bias[0..n) and writes c[0..m*n), every
    // index guarded by m, n, k; the four lengths and the 16-byte row rule were checked above.
    unsafe { l.launch(cfg) }?;
    Ok(())
}

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
    let call = super::graph::GemmCall {
        m,
        n,
        k,
        a: be.device_address(a)?,
        b: be.device_address(b)?,
        c: be.device_address(c)?,
        b_transposed,
    };
    // SAFETY: the extents of a, b and c were checked against m, n, k above; the buffers are
    // borrowed for the call, and a graph runs held-back work before the frame's buffers go.
    unsafe { be.submit(super::graph::Work::Gemm(call)) }
}

/// The emulated device's cuBLAS: row-major c = a · op(b) from f16 inputs, the CPU backend's
/// f32 GEMM, one rounding to f16.
pub(crate) fn host_gemm_f16(
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
