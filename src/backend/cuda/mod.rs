//! The CUDA backend: a cudarc context + one stream + a cuBLAS handle, and the kernel
//! modules loaded lazily from the fatbins build.rs embedded.
//!
//! Starting is safe on any machine: `CudaBackend::new` first checks that libcuda can be
//! loaded (cudarc panics on first use otherwise), so without a driver it returns
//! `Error::NoDevice` instead.

pub mod bi_attn;
pub mod deform_conv;
pub mod elementwise;
pub mod gemm;
pub mod group_norm;
pub mod logits;
pub mod nms;
pub mod params;

use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{DeviceData, Tensor};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig};
use half::f16;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Whether the CUDA driver library (libcuda) can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda under its usual names; no CUDA call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices, or why there are none.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(Error::NoDevice(
            "the CUDA driver (libcuda.so) is not installed or not on the loader path".into(),
        ));
    }
    let n = CudaContext::device_count()?;
    if n <= 0 {
        return Err(Error::NoDevice("the driver reports 0 devices".into()));
    }
    Ok(n as usize)
}

/// The driver's CUDA version as (major, minor), e.g. (12, 4).
pub fn driver_version() -> Result<(i32, i32)> {
    if !driver_present() {
        return Err(Error::NoDevice("no CUDA driver".into()));
    }
    let mut v: i32 = 0;
    // SAFETY: the driver library is present (checked above); cuDriverGetVersion writes one int.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(Error::Cuda(format!("cuDriverGetVersion: {r:?}")));
    }
    Ok((v / 1000, (v % 1000) / 10))
}

pub struct CudaBackend {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl CudaBackend {
    pub fn new(ordinal: usize) -> Result<Self> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(Error::NoDevice(format!(
                "device {ordinal} requested, {n} present"
            )));
        }
        // cudarc panics when libcublas cannot be dlopened; with the cuda-12000 bindings it
        // looks for libcublas.so and .so.12/.11/.10/.9/.1 only, never a CUDA 13 .so.13.
        // SAFETY: only tries to dlopen libcublas under those names; no cuBLAS call is made.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Cuda(
                "cuBLAS cannot be loaded: none of libcublas.so, libcublas.so.12 (.11/.10/.9) is on \
                 the loader path (a CUDA 13 libcublas.so.13 needs a libcublas.so symlink in a \
                 directory on LD_LIBRARY_PATH; scripts/gpu-check.sh makes one)"
                    .into(),
            ));
        }
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone())?;
        Ok(CudaBackend {
            ordinal,
            ctx,
            stream,
            blas,
            modules: Mutex::new(HashMap::new()),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn blas(&self) -> &CudaBlas {
        &self.blas
    }
    pub fn name(&self) -> Result<String> {
        Ok(self.ctx.name()?)
    }
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        Ok(self.ctx.compute_capability()?)
    }
    pub fn total_mem(&self) -> Result<usize> {
        Ok(self.ctx.total_mem()?)
    }
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    /// The kernel `name` of `family`, loading the family's fatbin on first use.
    pub fn function(&self, family: &'static str, name: &str) -> Result<CudaFunction> {
        if !kernels::COMPILED {
            return Err(Error::KernelsNotCompiled);
        }
        let module = {
            let mut mods = self
                .modules
                .lock()
                .map_err(|_| Error::Cuda("module cache poisoned".into()))?;
            match mods.get(family) {
                Some(m) => m.clone(),
                None => {
                    let bytes = kernels::fatbin(family).ok_or_else(|| {
                        Error::Cuda(format!("no fatbin for kernel family `{family}`"))
                    })?;
                    let m = self
                        .ctx
                        .load_module(cudarc::nvrtc::Ptx::from_binary(bytes.to_vec()))
                        .map_err(|e| Error::Cuda(format!("loading fatbin `{family}`: {e:?}")))?;
                    mods.insert(family, m.clone());
                    m
                }
            }
        };
        module
            .load_function(name)
            .map_err(|e| Error::Cuda(format!("kernel `{name}` in `{family}`: {e:?}")))
    }

    pub fn upload_f16(&self, data: &[f16]) -> Result<CudaSlice<f16>> {
        Ok(self.stream.clone_htod(data)?)
    }
    pub fn upload_f32(&self, data: &[f32]) -> Result<CudaSlice<f32>> {
        Ok(self.stream.clone_htod(data)?)
    }
    pub fn upload_i32(&self, data: &[i32]) -> Result<CudaSlice<i32>> {
        Ok(self.stream.clone_htod(data)?)
    }
    pub fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        s: &CudaSlice<T>,
    ) -> Result<Vec<T>> {
        Ok(self.stream.clone_dtoh(s)?)
    }
    /// A device buffer of `n` elements filled with `value` (used to poison outputs in tests).
    pub fn filled_f16(&self, n: usize, value: f16) -> Result<CudaSlice<f16>> {
        self.upload_f16(&vec![value; n])
    }
    pub fn filled_f32(&self, n: usize, value: f32) -> Result<CudaSlice<f32>> {
        self.upload_f32(&vec![value; n])
    }

    /// Copy a host tensor to this device (dtype kept).
    pub fn upload(&self, t: &Tensor) -> Result<Tensor> {
        use crate::tensor::HostData;
        let data = match t.host()? {
            HostData::F32(v) => DeviceData::F32(self.stream.clone_htod(v)?),
            HostData::F16(v) => DeviceData::F16(self.stream.clone_htod(v)?),
            HostData::I32(v) => DeviceData::I32(self.stream.clone_htod(v)?),
            HostData::U8(v) => DeviceData::U8(self.stream.clone_htod(v)?),
        };
        Ok(Tensor::from_device(t.shape(), self.ordinal, data))
    }

    /// Copy a device tensor to the host (synchronises the stream).
    pub fn to_host(&self, t: &Tensor) -> Result<Tensor> {
        use crate::tensor::{HostData, Storage};
        match t.storage() {
            Storage::Host(h) => Tensor::from_host(t.shape(), h.clone()),
            Storage::Cuda { data, .. } => {
                let h = match data {
                    DeviceData::F32(s) => HostData::F32(self.stream.clone_dtoh(s)?),
                    DeviceData::F16(s) => HostData::F16(self.stream.clone_dtoh(s)?),
                    DeviceData::I32(s) => HostData::I32(self.stream.clone_dtoh(s)?),
                    DeviceData::U8(s) => HostData::U8(self.stream.clone_dtoh(s)?),
                };
                Tensor::from_host(t.shape(), h)
            }
        }
    }
}

/// A device buffer must hold at least `want` elements before a kernel may index it.
pub(crate) fn check_len(op: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got < want {
        return Err(Error::shape(
            op,
            format!("{what}: buffer of {got} elements, {want} needed"),
        ));
    }
    Ok(())
}

/// A size passed to a kernel's 32-bit index arithmetic.
pub(crate) fn to_i32(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::shape(
            op,
            format!("{what} = {v} exceeds the kernel's 32-bit range"),
        )
    })
}

/// A 1-D launch over `n` elements with `block` threads, grid capped for grid-stride loops.
pub fn launch_1d(n: usize, block: u32) -> LaunchConfig {
    let blocks = n.div_ceil(block as usize).clamp(1, 65_535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl crate::backend::Backend for CudaBackend {
    fn device(&self) -> crate::tensor::Device {
        crate::tensor::Device::Cuda(self.ordinal)
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        CudaBackend::upload(self, t)
    }
    fn to_host(&self, t: &Tensor) -> Result<Tensor> {
        CudaBackend::to_host(self, t)
    }
    fn matmul(&self, a: &Tensor, b: &Tensor, b_transposed: bool) -> Result<Tensor> {
        let (m, k, n) = crate::backend::matmul_dims(a, b, b_transposed)?;
        let (da, db) = (self.device_f16(a, "matmul")?, self.device_f16(b, "matmul")?);
        let mut c = self.stream.alloc_zeros::<f16>(m * n)?;
        gemm::gemm_f16(self, m, n, k, da, db, b_transposed, &mut c)?;
        Ok(Tensor::from_device(
            &[m, n],
            self.ordinal,
            DeviceData::F16(c),
        ))
    }
    fn cast(&self, t: &Tensor, to: crate::tensor::DType) -> Result<Tensor> {
        use crate::tensor::{DType, Storage};
        let n = t.numel();
        match (t.storage(), to) {
            (
                Storage::Cuda {
                    data: DeviceData::F32(x),
                    ..
                },
                DType::F16,
            ) => {
                let mut y = self.stream.alloc_zeros::<f16>(n)?;
                elementwise::cast_f32_f16(self, x, &mut y, n)?;
                Ok(Tensor::from_device(
                    t.shape(),
                    self.ordinal,
                    DeviceData::F16(y),
                ))
            }
            (
                Storage::Cuda {
                    data: DeviceData::F16(x),
                    ..
                },
                DType::F32,
            ) => {
                let mut y = self.stream.alloc_zeros::<f32>(n)?;
                elementwise::cast_f16_f32(self, x, &mut y, n)?;
                Ok(Tensor::from_device(
                    t.shape(),
                    self.ordinal,
                    DeviceData::F32(y),
                ))
            }
            _ => Err(Error::Invalid(format!(
                "CUDA cast of a {} tensor to {} is not supported",
                t.dtype().name(),
                to.name()
            ))),
        }
    }
    fn axpby(&self, alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor> {
        if a.shape() != b.shape() {
            return Err(Error::shape(
                "axpby",
                format!("{:?} vs {:?}", a.shape(), b.shape()),
            ));
        }
        let n = a.numel();
        let (da, db) = (self.device_f16(a, "axpby")?, self.device_f16(b, "axpby")?);
        let mut y = self.stream.alloc_zeros::<f16>(n)?;
        elementwise::axpby_f16(self, alpha, da, beta, db, &mut y, n)?;
        Ok(Tensor::from_device(
            a.shape(),
            self.ordinal,
            DeviceData::F16(y),
        ))
    }
}

impl CudaBackend {
    /// The f16 device slice of a tensor of this backend.
    pub fn device_f16<'a>(&self, t: &'a Tensor, op: &'static str) -> Result<&'a CudaSlice<f16>> {
        match t.storage() {
            crate::tensor::Storage::Cuda {
                data: DeviceData::F16(s),
                ordinal,
            } if *ordinal == self.ordinal => Ok(s),
            _ => Err(Error::DType {
                op,
                expected: "f16 on this CUDA device",
                got: t.dtype().name(),
            }),
        }
    }
}
