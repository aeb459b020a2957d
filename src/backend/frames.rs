//! Frames that are already in a caller's device memory (a decoder's output, a DeepStream
//! buffer): the C ABI's `glip_detector_detect_cuda`. Each plane is copied, on the caller's
//! stream and after the work the caller queued there, into packed host rows; the frame then
//! takes the host path (format conversion, GLIP's resize). The copy is one 2-D memcpy per
//! plane; a device-side conversion and resize would save it and is left for later.

use crate::error::Result;

/// One plane of a frame in device memory.
#[derive(Clone, Copy, Debug)]
pub struct DevicePlane {
    /// A device address (CUdeviceptr) in the backend's CUDA context.
    pub ptr: u64,
    /// Bytes from one row's start to the next's.
    pub stride: usize,
    /// Bytes of pixels in a row.
    pub row_bytes: usize,
    pub rows: usize,
}

/// A backend that can read frames from device memory.
pub trait DeviceFrames {
    /// The planes' rows, packed one after another in host memory. The copies are queued on
    /// `stream` (a `CUstream` of this backend's context; null for the legacy default stream)
    /// and done when this returns.
    ///
    /// # Safety
    /// Each plane's `ptr` must be device memory of this backend's context holding `rows`
    /// rows of `row_bytes` at `stride`, and `stream` null or a live stream of that context.
    unsafe fn planes_to_host(
        &self,
        planes: &[DevicePlane],
        stream: *mut std::ffi::c_void,
    ) -> Result<Vec<u8>>;
}
