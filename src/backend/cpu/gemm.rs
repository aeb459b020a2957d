//! CPU GEMM (the `gemm` crate: runtime SIMD dispatch, rayon threads), f32.

use rayon::current_num_threads;

/// Row-major strided matrix view for [`gemm`].
#[derive(Copy, Clone)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    /// Stride between rows and between columns, in elements.
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A contiguous row-major [rows, cols] matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a contiguous row-major [rows, cols] matrix, viewed as [cols, rows].
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    // Threads only pay off above a few MFLOP.
    if m * n * k < 64 * 64 * 64 || current_num_threads() < 2 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(current_num_threads())
    }
}

fn extent(m: &Mat, rows: usize, cols: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * m.rs + (cols - 1) * m.cs + 1
    }
}

/// dst[m, n] (row-major, contiguous) = alpha * a[m, k] · b[k, n] (+ dst if `accumulate`).
///
/// Panics are impossible by construction: the extents of every view are checked first and
/// a mismatch returns `false`, which callers turn into a shape error.
#[must_use]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    dst: &mut [f32],
    alpha: f32,
    accumulate: bool,
) -> bool {
    if extent(&a, m, k) > a.data.len() || extent(&b, k, n) > b.data.len() || dst.len() < m * n {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return true;
    }
    // SAFETY: the extents of a, b and dst were checked above against their slices; the
    // strides are those the extents were computed with; dst does not alias a or b (it is
    // a distinct &mut borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            alpha,
            false,
            false,
            false,
            parallelism(m, n, k),
        );
    }
    true
}
