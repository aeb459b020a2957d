//! [`DeviceFrames`] on the CUDA backend: a caller's device planes copied to the host on the
//! caller's stream (one `cuMemcpy2DAsync` per plane, then a wait on that stream).

use super::{CudaBackend, Dev};
use crate::backend::frames::{DeviceFrames, DevicePlane};
use crate::error::{Error, Result};
use cudarc::driver::sys;

impl DeviceFrames for CudaBackend {
    unsafe fn planes_to_host(
        &self,
        planes: &[DevicePlane],
        stream: *mut std::ffi::c_void,
    ) -> Result<Vec<u8>> {
        let g = match &self.dev {
            Dev::Gpu(g) => g,
            Dev::Emu(_) => {
                return Err(Error::Cuda(
                    "frames in device memory need a GPU: this detector runs on the emulated \
                     CUDA device, whose memory no caller can hold"
                        .into(),
                ))
            }
        };
        let mut total = 0usize;
        for p in planes {
            if p.stride < p.row_bytes {
                return Err(Error::Invalid(format!(
                    "device plane: stride {} is under its row of {} bytes",
                    p.stride, p.row_bytes
                )));
            }
            total = p
                .row_bytes
                .checked_mul(p.rows)
                .and_then(|b| total.checked_add(b))
                .ok_or_else(|| Error::Invalid("device frame: its size overflows".into()))?;
        }
        let mut host = vec![0u8; total];
        g.ctx.bind_to_thread()?;
        let stream = stream as sys::CUstream;
        let mut at = 0usize;
        for p in planes {
            let bytes = p.row_bytes * p.rows;
            let copy = sys::CUDA_MEMCPY2D {
                srcXInBytes: 0,
                srcY: 0,
                srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                srcHost: std::ptr::null(),
                srcDevice: p.ptr,
                srcArray: std::ptr::null_mut(),
                srcPitch: p.stride,
                dstXInBytes: 0,
                dstY: 0,
                dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_HOST,
                dstHost: host[at..at + bytes].as_mut_ptr().cast(),
                dstDevice: 0,
                dstArray: std::ptr::null_mut(),
                dstPitch: p.row_bytes,
                WidthInBytes: p.row_bytes,
                Height: p.rows,
            };
            // SAFETY: the source is the caller's device plane (the function's contract); the
            // destination is `bytes` bytes of `host`, which outlives the wait below.
            unsafe { sys::cuMemcpy2DAsync_v2(&copy, stream) }.result()?;
            at += bytes;
        }
        // SAFETY: `stream` is null or the caller's live stream (the function's contract).
        unsafe { sys::cuStreamSynchronize(stream) }.result()?;
        Ok(host)
    }
}
