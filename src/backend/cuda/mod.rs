//! The CUDA backend: on a GPU a cudarc context + one stream + a cuBLAS handle, and the
//! kernel modules loaded lazily from the fatbins build.rs embedded; or the emulated device
//! (`emu`), which runs the same kernels compiled as host C++ behind the same wrappers.
//!
//! Starting is safe on any machine: `CudaBackend::new` first checks that libcuda can be
//! loaded (cudarc panics on first use otherwise), so without a driver it returns
//! `Error::NoDevice` instead.

pub mod arena;
pub mod attention;
pub mod bi_attn;
pub mod deform_conv;
pub mod elementwise;
pub mod emu;
pub mod fallback;
pub mod frames;
pub mod gemm;
pub mod graph;
pub mod group_norm;
pub mod kernel_rows;
pub mod launch;
pub mod layout;
pub mod logits;
pub mod memory;
pub mod nms;
pub mod ops;
pub mod params;
pub mod reduce;

pub use emu::{EmuCheck, EmuChecks, EmuDevice};
pub use launch::{InOut, Kernel, KernelArg, KernelParam, Launch};
pub use memory::{DeviceBuffer, DeviceElem, FloatElem};

use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{DeviceData, Tensor};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaModule, CudaStream, LaunchConfig};
use half::f16;
use launch::KernelInner;
use memory::BufInner;
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

/// A CUDA device: a real GPU through cudarc, or the emulated device (the same kernels
/// compiled as host C++, see [`emu`]). The launch wrappers and everything above them do not
/// know which one runs.
pub struct CudaBackend {
    ordinal: usize,
    dev: Dev,
    fallbacks: fallback::Fallbacks,
    /// Fill every op's output with NaN before its kernel runs (tests: an element a kernel
    /// forgets to write shows as non-finite instead of a plausible 0).
    poison: bool,
    /// Plain, recording or replaying allocations (arena.rs).
    alloc: arena::Allocator,
    /// Replays run as CUDA graphs (graph.rs).
    graphs: bool,
    /// The replay in progress and its graph segment (graph.rs).
    frames: graph::Frames,
}

enum Dev {
    Gpu(Gpu),
    Emu(EmuDevice),
}

struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Every kernel looked up so far, by name: a launch asks for its kernel each time, and
    /// `cuModuleGetFunction` (plus a name allocation) per launch would cost host time on the
    /// path a replay takes per frame.
    functions: Mutex<HashMap<String, Kernel>>,
    /// Where graphs are captured (graph.rs), made by the first capture.
    capture: Mutex<Option<Arc<graph::CaptureStream>>>,
}

/// Whether replays run as CUDA graphs by default: `GLIP_CUDA_GRAPHS=0` (or `off`) turns
/// them off.
fn graphs_from_env() -> bool {
    !matches!(
        std::env::var("GLIP_CUDA_GRAPHS").as_deref(),
        Ok("0") | Ok("off")
    )
}

/// What the emulated device reports as its name.
pub const EMULATED_NAME: &str = "emulated CUDA device (kernels as host C++)";

impl CudaBackend {
    /// GPU `ordinal` through the CUDA driver.
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
        // SAFETY: every launch, copy, cuBLAS call and free of this backend goes to the one
        // stream below, so stream order is the only synchronisation needed; without this
        // each buffer (and each arena view of a replay) would create two CUDA events
        // nothing waits on.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone())?;
        Ok(CudaBackend {
            ordinal,
            fallbacks: fallback::Fallbacks::new(),
            poison: false,
            alloc: arena::Allocator::default(),
            graphs: graphs_from_env(),
            frames: graph::Frames::default(),
            dev: Dev::Gpu(Gpu {
                ctx,
                stream,
                blas,
                modules: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
                capture: Mutex::new(None),
            }),
        })
    }

    /// The emulated device with the checks of `GLIP_EMU_CHECKS` (default: all).
    pub fn emulated() -> Self {
        Self::emulated_with(EmuChecks::from_env())
    }

    pub fn emulated_with(checks: EmuChecks) -> Self {
        CudaBackend {
            ordinal: 0,
            fallbacks: fallback::Fallbacks::new(),
            poison: false,
            alloc: arena::Allocator::default(),
            graphs: graphs_from_env(),
            frames: graph::Frames::default(),
            dev: Dev::Emu(EmuDevice::new(checks)),
        }
    }

    /// The GPU `ordinal` when `GLIP_DEVICE` is unset or `cuda`; the emulated device when it is
    /// `emu`.
    pub fn from_env(ordinal: usize) -> Result<Self> {
        match std::env::var("GLIP_DEVICE").as_deref() {
            Ok("emu") => Ok(Self::emulated()),
            _ => Self::new(ordinal),
        }
    }

    pub fn is_emulated(&self) -> bool {
        matches!(self.dev, Dev::Emu(_))
    }
    /// The emulated device's settings (None on a GPU).
    pub fn emulator_mut(&mut self) -> Option<&mut EmuDevice> {
        match &mut self.dev {
            Dev::Emu(e) => Some(e),
            Dev::Gpu(_) => None,
        }
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    fn gpu(&self, what: &str) -> Result<&Gpu> {
        match &self.dev {
            Dev::Gpu(g) => Ok(g),
            Dev::Emu(_) => Err(Error::Cuda(format!(
                "{what} needs a real GPU (this is the emulated device)"
            ))),
        }
    }
    /// The cudarc context (GPU only).
    pub fn context(&self) -> Result<&Arc<CudaContext>> {
        Ok(&self.gpu("the CUDA context")?.ctx)
    }
    /// The cudarc stream every launch goes to (GPU only).
    pub fn stream(&self) -> Result<&Arc<CudaStream>> {
        Ok(&self.gpu("the CUDA stream")?.stream)
    }
    pub fn name(&self) -> Result<String> {
        match &self.dev {
            Dev::Gpu(g) => Ok(g.ctx.name()?),
            Dev::Emu(_) => Ok(EMULATED_NAME.to_string()),
        }
    }
    /// "emulated" or "GPU": what the parity tests print.
    pub fn kind(&self) -> &'static str {
        if self.is_emulated() {
            "emulated"
        } else {
            "GPU"
        }
    }
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        Ok(self.gpu("compute capability")?.ctx.compute_capability()?)
    }
    pub fn total_mem(&self) -> Result<usize> {
        Ok(self.gpu("device memory size")?.ctx.total_mem()?)
    }
    /// Waits for the stream (the emulated device runs every launch synchronously).
    pub fn synchronize(&self) -> Result<()> {
        self.boundary()?;
        match &self.dev {
            Dev::Gpu(g) => Ok(g.stream.synchronize()?),
            Dev::Emu(_) => Ok(()),
        }
    }

    /// The kernel `name` of `family` (on a GPU, loading the family's fatbin on first use).
    pub fn function(&self, family: &'static str, name: &str) -> Result<Kernel> {
        let g = match &self.dev {
            Dev::Emu(e) => {
                return Ok(Kernel {
                    name: Arc::from(name),
                    inner: KernelInner::Emu(e.function(name)?),
                })
            }
            Dev::Gpu(g) => g,
        };
        if !kernels::COMPILED {
            return Err(Error::KernelsNotCompiled);
        }
        let mut functions = g
            .functions
            .lock()
            .map_err(|_| Error::Cuda("kernel cache poisoned".into()))?;
        if let Some(k) = functions.get(name) {
            return Ok(k.clone());
        }
        let module = {
            let mut mods = g
                .modules
                .lock()
                .map_err(|_| Error::Cuda("module cache poisoned".into()))?;
            match mods.get(family) {
                Some(m) => m.clone(),
                None => {
                    let bytes = kernels::fatbin(family).ok_or_else(|| {
                        Error::Cuda(format!("no fatbin for kernel family `{family}`"))
                    })?;
                    let m = g
                        .ctx
                        .load_module(cudarc::nvrtc::Ptx::from_binary(bytes.to_vec()))
                        .map_err(|e| Error::Cuda(format!("loading fatbin `{family}`: {e:?}")))?;
                    mods.insert(family, m.clone());
                    m
                }
            }
        };
        let f = module
            .load_function(name)
            .map_err(|e| Error::Cuda(format!("kernel `{name}` in `{family}`: {e:?}")))?;
        let k = Kernel {
            name: Arc::from(name),
            inner: KernelInner::Cuda(f),
        };
        functions.insert(name.to_string(), k.clone());
        Ok(k)
    }

    /// A launch of `k` on this device's stream; push the arguments in kernel order.
    pub fn launch_builder<'a>(&'a self, k: &'a Kernel) -> Launch<'a> {
        let ok = matches!(
            (&self.dev, &k.inner),
            (Dev::Gpu(_), KernelInner::Cuda(_)) | (Dev::Emu(_), KernelInner::Emu(_))
        );
        Launch::new(
            self,
            k,
            (!ok).then_some("the kernel was loaded by another device"),
        )
    }

    /// `n` zeroed elements on the device.
    /// Scratch memory a kernel writes before any kernel reads it (workspaces, partials):
    /// no memset, on a GPU or in a replay; 0xFF bytes on the emulated device, so a read of
    /// an element nothing wrote shows.
    pub fn alloc_scratch<T: DeviceElem>(&self, n: usize) -> Result<DeviceBuffer<T>> {
        self.alloc_with(n, arena::Init::Uninit)
    }
    pub fn alloc_zeros<T: DeviceElem>(&self, n: usize) -> Result<DeviceBuffer<T>> {
        self.alloc_with(n, arena::Init::Zeroed)
    }
    /// A device copy of `data`.
    pub fn upload_slice<T: DeviceElem>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        self.alloc_with(data.len(), arena::Init::Copy(data))
    }
    pub fn upload_f16(&self, data: &[f16]) -> Result<DeviceBuffer<f16>> {
        self.upload_slice(data)
    }
    pub fn upload_f32(&self, data: &[f32]) -> Result<DeviceBuffer<f32>> {
        self.upload_slice(data)
    }
    pub fn upload_i32(&self, data: &[i32]) -> Result<DeviceBuffer<i32>> {
        self.upload_slice(data)
    }
    /// A host copy of a device buffer (synchronises the stream).
    pub fn download<T: DeviceElem>(&self, b: &DeviceBuffer<T>) -> Result<Vec<T>> {
        self.boundary()?;
        match (&self.dev, &b.inner) {
            (Dev::Gpu(g), BufInner::Cuda(s)) => Ok(g.stream.clone_dtoh(&**s)?),
            (Dev::Emu(_), BufInner::Emu(e)) => Ok(e.as_slice().to_vec()),
            _ => Err(Error::Cuda(
                "download: the buffer belongs to another device".into(),
            )),
        }
    }
    /// A buffer's device address, for parameter blocks that reach several tensors (grouped
    /// launches).
    pub fn device_address<T: DeviceElem>(&self, b: &DeviceBuffer<T>) -> Result<u64> {
        match (&self.dev, &b.inner) {
            (Dev::Gpu(g), BufInner::Cuda(s)) => {
                use cudarc::driver::DevicePtr;
                let (p, _sync) = s.device_ptr(&g.stream);
                Ok(p)
            }
            (Dev::Emu(_), BufInner::Emu(e)) => Ok(e.device_ptr() as u64),
            _ => Err(Error::Cuda(
                "device_address: the buffer belongs to another device".into(),
            )),
        }
    }
    /// A device buffer of `n` elements filled with `value` (used to poison outputs in tests).
    /// Poison every op's output with NaN before its kernel writes it (off by default).
    pub fn set_poison_outputs(&mut self, on: bool) {
        self.poison = on;
    }
    /// An op's output buffer: NaN-filled under [`CudaBackend::set_poison_outputs`]; else
    /// uninitialised on a GPU (no memset per output), 0xFF bytes on the emulated device, and
    /// in a replay whatever the arena held.
    pub(crate) fn alloc_out<T: FloatElem>(&self, n: usize) -> Result<DeviceBuffer<T>> {
        if self.poison {
            return self.upload_slice(&vec![T::NAN; n]);
        }
        self.alloc_with(n, arena::Init::Uninit)
    }
    pub fn filled_f16(&self, n: usize, value: f16) -> Result<DeviceBuffer<f16>> {
        self.upload_f16(&vec![value; n])
    }
    pub fn filled_f32(&self, n: usize, value: f32) -> Result<DeviceBuffer<f32>> {
        self.upload_f32(&vec![value; n])
    }

    /// Copy a host tensor to this device (dtype kept).
    pub fn upload(&self, t: &Tensor) -> Result<Tensor> {
        use crate::tensor::HostData;
        let data = match t.host()? {
            HostData::F32(v) => DeviceData::F32(self.upload_slice(v)?),
            HostData::F16(v) => DeviceData::F16(self.upload_slice(v)?),
            HostData::I32(v) => DeviceData::I32(self.upload_slice(v)?),
            HostData::U8(v) => DeviceData::U8(self.upload_slice(v)?),
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
                    DeviceData::F32(s) => HostData::F32(self.download(s)?),
                    DeviceData::F16(s) => HostData::F16(self.download(s)?),
                    DeviceData::I32(s) => HostData::I32(self.download(s)?),
                    DeviceData::U8(s) => HostData::U8(self.download(s)?),
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

impl CudaBackend {
    /// The f16 device slice of a tensor of this backend.
    pub fn device_f16<'a>(&self, t: &'a Tensor, op: &'static str) -> Result<&'a DeviceBuffer<f16>> {
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
    /// The i32 device slice of a tensor of this backend.
    pub fn device_i32<'a>(&self, t: &'a Tensor, op: &'static str) -> Result<&'a DeviceBuffer<i32>> {
        match t.storage() {
            crate::tensor::Storage::Cuda {
                data: DeviceData::I32(s),
                ordinal,
            } if *ordinal == self.ordinal => Ok(s),
            _ => Err(Error::DType {
                op,
                expected: "i32 on this CUDA device",
                got: t.dtype().name(),
            }),
        }
    }
    /// The f32 device slice of a tensor of this backend.
    pub fn device_f32<'a>(&self, t: &'a Tensor, op: &'static str) -> Result<&'a DeviceBuffer<f32>> {
        match t.storage() {
            crate::tensor::Storage::Cuda {
                data: DeviceData::F32(s),
                ordinal,
            } if *ordinal == self.ordinal => Ok(s),
            _ => Err(Error::DType {
                op,
                expected: "f32 on this CUDA device",
                got: t.dtype().name(),
            }),
        }
    }
}

impl crate::backend::clock::StageClock for CudaBackend {
    fn mark(&self) -> Result<crate::backend::clock::StageMark> {
        use crate::backend::clock::StageMark;
        self.boundary()?;
        match &self.dev {
            // Timing enabled (the default flags): the event's time is read after the frame.
            Dev::Gpu(g) => Ok(StageMark::Event(g.stream.record_event(Some(
                cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT,
            ))?)),
            // Every emulated launch has finished when it returns.
            Dev::Emu(_) => Ok(StageMark::Host(std::time::Instant::now())),
        }
    }
}
