//! CUDA graphs of replayed forwards (design.md §3.8): a replayed frame's kernel launches and
//! GEMMs, which the arena places at the same addresses every frame, run as a few graph
//! launches instead of one launch each.
//!
//! A replay is cut into *segments* at every point where the host needs the stream: a
//! download, a memset, a stage-clock event, a synchronisation and the end of the frame.
//! Uploads do not cut: an upload inside a replay is copied into its staging buffer of the
//! arena (page-locked on a GPU) and joins the segment as a host-to-device copy
//! ([`CudaBackend::graph_upload`]). The work between two cuts is one segment:
//!
//! 1. The first time a segment is seen it is *captured*: its launches go to a private
//!    capture stream (with its own cuBLAS handle and workspace) in stream capture, so they do
//!    not run; at the segment's end the capture becomes a graph, which is launched on the
//!    backend's stream, and the segment's launches are kept as values ([`Work`]).
//! 2. In later frames the same host code runs, but each launch is only compared with the
//!    captured one (kernel, grid, block, shared memory and every argument byte, buffer
//!    addresses included). If the whole segment matched, its graph is launched at the
//!    segment's end. At the first launch that differs (another prompt's text features, other
//!    image sizes in the post-processing parameters) the launches held back so far and the
//!    rest of the segment run one by one, and the segment is captured again next frame.
//!
//! Nothing is ever skipped: every launch of a frame either runs in a graph that was
//! captured from launches identical to it, or runs itself. A capture the driver refuses
//! turns graphs off for that arena (said in [`GraphStats::off`]) and the held-back launches
//! run one by one. Captures go to a stream of their own, so another thread's work on the
//! backend's stream is never captured; launches on another thread than the replaying one
//! run as usual.
//!
//! The emulated device does the same with a recorded launch list for a graph: held-back
//! launches do not run until the segment's end, and a graph launch runs the recorded
//! launches, so the emulated replays check the same order of events as a GPU's.

use super::arena::Arena;
use super::emu::EmuBufArg;
use super::launch::{launch_on_stream, ArgBlock, Kernel, KernelInner};
use super::{CudaBackend, Dev};
use crate::error::{Error, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{sys, CudaGraph, CudaSlice, CudaStream, LaunchConfig};
use half::f16;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

/// Grid, block and dynamic shared memory of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchShape {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub smem: u32,
}

impl LaunchShape {
    pub fn of(cfg: &LaunchConfig) -> Self {
        LaunchShape {
            grid: [cfg.grid_dim.0, cfg.grid_dim.1, cfg.grid_dim.2],
            block: [cfg.block_dim.0, cfg.block_dim.1, cfg.block_dim.2],
            smem: cfg.shared_mem_bytes,
        }
    }
}

/// A cuBLAS GEMM as a value: row-major c[m, n] = a[m, k] · op(b) at these device addresses
/// (gemm.rs's contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GemmCall {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub b_transposed: bool,
}

/// One unit of device work: a kernel launch or a GEMM, with every argument by value.
#[derive(Clone)]
pub(crate) enum Work {
    Kernel {
        kernel: Kernel,
        shape: LaunchShape,
        args: ArgBlock,
        /// The buffers it touches (emulated device checks).
        bufs: Vec<EmuBufArg>,
    },
    Gemm(GemmCall),
    /// A host-to-device copy of `bytes` from a staging buffer (pinned on a GPU) that lives
    /// as long as the arena's graphs (an upload inside a replay).
    Upload {
        dst: u64,
        src: u64,
        bytes: usize,
    },
}

/// Which stream a GPU runs work on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The backend's stream.
    Main,
    /// The capture stream (nothing runs: the work joins the graph being captured).
    Capture,
}

impl Work {
    /// The same launch: same kernel, shape and argument bytes (or the same GEMM).
    fn same(&self, o: &Work) -> bool {
        match (self, o) {
            (
                Work::Kernel {
                    kernel: k1,
                    shape: s1,
                    args: a1,
                    ..
                },
                Work::Kernel {
                    kernel: k2,
                    shape: s2,
                    args: a2,
                    ..
                },
            ) => k1.name == k2.name && s1 == s2 && a1 == a2,
            (Work::Gemm(g1), Work::Gemm(g2)) => g1 == g2,
            (
                Work::Upload {
                    dst: d1,
                    src: s1,
                    bytes: b1,
                },
                Work::Upload {
                    dst: d2,
                    src: s2,
                    bytes: b2,
                },
            ) => (d1, s1, b1) == (d2, s2, b2),
            _ => false,
        }
    }

    /// Runs the work now (on a GPU: enqueues it on `target`).
    ///
    /// # Safety
    /// Every address in the work points at a live buffer of at least the length the kernel
    /// (or GEMM) indexes: what the launch wrapper checked when the work was made, and what
    /// holds while the buffers it borrowed are alive.
    unsafe fn run(&mut self, be: &CudaBackend, target: Target) -> Result<()> {
        match (&be.dev, self) {
            (
                Dev::Gpu(g),
                Work::Kernel {
                    kernel:
                        Kernel {
                            inner: KernelInner::Cuda(f),
                            ..
                        },
                    shape,
                    args,
                    ..
                },
            ) => {
                let stream = match target {
                    Target::Main => &g.stream,
                    Target::Capture => &be.capture_stream()?.stream,
                };
                // SAFETY: the caller's contract.
                unsafe { launch_on_stream(f, stream, shape, args) }
            }
            (
                Dev::Emu(e),
                Work::Kernel {
                    kernel:
                        Kernel {
                            inner: KernelInner::Emu(k),
                            ..
                        },
                    shape,
                    args,
                    bufs,
                },
            ) => e.launch(k, args, bufs, shape),
            (Dev::Gpu(g), Work::Gemm(c)) => {
                let blas = match target {
                    Target::Main => &g.blas,
                    Target::Capture => &be.capture_stream()?.blas,
                };
                // SAFETY: the caller's contract.
                unsafe { gemm_on_gpu(blas, c) }
            }
            // SAFETY: the caller's contract.
            (Dev::Emu(_), Work::Gemm(c)) => unsafe { gemm_on_host(c) },
            (Dev::Gpu(g), Work::Upload { dst, src, bytes }) => {
                let stream = match target {
                    Target::Main => &g.stream,
                    Target::Capture => &be.capture_stream()?.stream,
                };
                g.ctx.bind_to_thread()?;
                // SAFETY: `src` is a pinned staging buffer of at least `bytes` bytes that
                // lives as long as the graphs that copy from it; `dst` is an arena view of
                // `bytes` bytes (the caller's contract).
                unsafe {
                    let host = std::slice::from_raw_parts(*src as *const u8, *bytes);
                    cudarc::driver::result::memcpy_htod_async(*dst, host, stream.cu_stream())
                }?;
                Ok(())
            }
            (Dev::Emu(_), Work::Upload { dst, src, bytes }) => {
                // SAFETY: as above, on the emulated device's host memory; the staging buffer
                // and the arena never overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(*src as *const u8, *dst as *mut u8, *bytes)
                };
                Ok(())
            }
            _ => Err(Error::Cuda(
                "a kernel loaded by another device was launched".into(),
            )),
        }
    }

    fn what(&self) -> String {
        match self {
            Work::Kernel { kernel, .. } => kernel.name.to_string(),
            Work::Gemm(g) => format!("cuBLAS GEMM {}x{}x{}", g.m, g.n, g.k),
            Work::Upload { bytes, .. } => format!("an upload of {bytes} bytes"),
        }
    }
}

/// cublasGemmEx of [`GemmCall`] on `blas`'s stream.
///
/// # Safety
/// The three addresses hold m·k, k·n and m·n halves.
unsafe fn gemm_on_gpu(blas: &CudaBlas, c: &GemmCall) -> Result<()> {
    use cudarc::cublas::sys::{
        cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
    };
    let to = |v: usize| {
        i32::try_from(v).map_err(|_| Error::shape("gemm_f16", format!("{v} exceeds i32")))
    };
    let (m, n, k) = (to(c.m)?, to(c.n)?, to(c.k)?);
    let (alpha, beta) = (1f32, 0f32);
    // cuBLAS is column-major: a row-major C[m,n] is a column-major Cᵀ[n,m] = op(B)ᵀ · Aᵀ,
    // so B goes first.
    // SAFETY: the caller's contract; alpha and beta are host f32 (the handle's default
    // pointer mode) read during the call.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *blas.handle(),
            if c.b_transposed {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            },
            cublasOperation_t::CUBLAS_OP_N,
            n,
            m,
            k,
            &alpha as *const f32 as *const _,
            c.b as *const _,
            cudaDataType_t::CUDA_R_16F,
            if c.b_transposed { k } else { n },
            c.a as *const _,
            cudaDataType_t::CUDA_R_16F,
            k,
            &beta as *const f32 as *const _,
            c.c as *mut _,
            cudaDataType_t::CUDA_R_16F,
            n,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }?;
    Ok(())
}

/// The emulated device's cuBLAS on the addresses of a [`GemmCall`].
///
/// # Safety
/// The three addresses are emulated allocations holding m·k, k·n and m·n halves; c does
/// not overlap a or b.
unsafe fn gemm_on_host(c: &GemmCall) -> Result<()> {
    // SAFETY: the caller's contract.
    let (a, b, out) = unsafe {
        (
            std::slice::from_raw_parts(c.a as *const f16, c.m * c.k),
            std::slice::from_raw_parts(c.b as *const f16, c.k * c.n),
            std::slice::from_raw_parts_mut(c.c as *mut f16, c.m * c.n),
        )
    };
    super::gemm::host_gemm_f16(c.m, c.n, c.k, a, b, c.b_transposed, out)
}

/// Bytes of the capture stream's cuBLAS workspace: cuBLAS must not allocate while a graph
/// is captured, so it is given one (32 MiB, what cuBLAS documents for Hopper).
const CAPTURE_WORKSPACE: usize = 32 << 20;

/// The stream graphs are captured on, with a cuBLAS handle of its own.
pub(crate) struct CaptureStream {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    _workspace: CudaSlice<u8>,
    _held: super::memory::Held,
}

impl CaptureStream {
    pub(crate) fn new(
        ctx: &Arc<cudarc::driver::CudaContext>,
        gauge: &Arc<super::memory::MemGauge>,
    ) -> Result<Self> {
        let stream = ctx.new_stream()?;
        let blas = CudaBlas::new(stream.clone())?;
        let workspace = stream.alloc_zeros::<u8>(CAPTURE_WORKSPACE)?;
        {
            use cudarc::driver::DevicePtr;
            let (p, _sync) = workspace.device_ptr(&stream);
            // SAFETY: the workspace is a live allocation of CAPTURE_WORKSPACE bytes that
            // lives as long as the handle (both are fields of this struct, dropped together).
            let st = unsafe {
                cudarc::cublas::sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    p as *mut std::ffi::c_void,
                    CAPTURE_WORKSPACE,
                )
            };
            if st != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(Error::Cuda(format!("cublasSetWorkspace: {st:?}")));
            }
        }
        stream.synchronize()?;
        Ok(CaptureStream {
            stream,
            blas,
            _workspace: workspace,
            _held: gauge.hold(CAPTURE_WORKSPACE),
        })
    }
}

/// What a bucket's graphs did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Segments captured as a graph.
    pub captured: u64,
    /// Graph launches of verified segments (captures not counted).
    pub graph_launches: u64,
    /// Kernel launches and GEMMs those graph launches stood for.
    pub launches_in_graphs: u64,
    /// Kernel launches and GEMMs of replays that ran one by one (a segment that differed
    /// from its graph, or graphs off).
    pub launches: u64,
    /// Segments whose launches differed from their graph (captured again next frame).
    pub misses: u64,
    /// Why graphs stopped for this bucket, if they did.
    pub off: Option<String>,
}

/// A captured graph: the driver's, or on the emulated device the recorded launches.
enum Exec {
    Gpu(GpuGraph),
    Emu,
}

/// A driver graph and its executable.
struct GpuGraph(CudaGraph);
// SAFETY: a CUDA graph may be used from any thread as long as calls on it are serialised
// (the CUDA graph thread-safety rules); it lives in a Mutex (the arena's Segments).
unsafe impl Send for GpuGraph {}

struct Segment {
    works: Vec<Work>,
    /// None: captured again the next time.
    exec: Option<Exec>,
}

/// Host memory an upload inside a replay is staged in: page-locked on a GPU (so the copy
/// is asynchronous and can be captured in a graph), plain host memory on the emulated device.
enum Staging {
    Pinned(cudarc::driver::PinnedHostSlice<u8>),
    Host(Vec<u64>),
}

impl Staging {
    fn bytes(&self) -> usize {
        match self {
            Staging::Pinned(p) => p.len(),
            Staging::Host(v) => v.len() * 8,
        }
    }
    /// The staging memory to write.
    fn as_mut_ptr(&mut self) -> Result<*mut u8> {
        match self {
            Staging::Pinned(p) => Ok(p.as_mut_ptr()?),
            Staging::Host(v) => Ok(v.as_mut_ptr() as *mut u8),
        }
    }
}

/// A GPU event recorded after a frame's last launch.
struct FrameDone(cudarc::driver::CudaEvent);

/// The graphs of one arena (one bucket), segment by segment.
#[derive(Default)]
pub(crate) struct Segments {
    list: Vec<Segment>,
    stats: GraphStats,
    /// One staging buffer per upload of the frame, in order.
    staging: Vec<Staging>,
    /// Recorded after the last frame's work on a GPU: staging is rewritten only once it has
    /// passed (a frame that ends without a download may still be running).
    last_frame: Option<FrameDone>,
}

impl Segments {
    pub(crate) fn stats(&self) -> GraphStats {
        self.stats.clone()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// No launch since the last boundary.
    Idle,
    Capturing,
    Verifying,
    /// The rest of the segment runs launch by launch.
    Eager,
}

/// A replay in progress on one thread.
struct Active {
    thread: ThreadId,
    arena: Arc<Arena>,
    seg: usize,
    pending: Vec<Work>,
    mode: Mode,
    /// Uploads staged so far this frame.
    uploads: usize,
}

/// The backend's replay-with-graphs state: at most one replay at a time (the allocator's
/// replay mode already enforces that).
#[derive(Default)]
pub(crate) struct Frames {
    active: Mutex<Option<Active>>,
}

impl Frames {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Active>>> {
        self.active
            .lock()
            .map_err(|_| Error::Cuda("graph state poisoned".into()))
    }
}

fn lock_segments(a: &Arena) -> Result<std::sync::MutexGuard<'_, Segments>> {
    a.graphs
        .lock()
        .map_err(|_| Error::Cuda("graph segments poisoned".into()))
}

impl CudaBackend {
    /// Whether replays run as CUDA graphs: on unless `GLIP_CUDA_GRAPHS=0` (or
    /// [`CudaBackend::set_graphs`]).
    pub fn graphs(&self) -> bool {
        self.graphs
    }
    pub fn set_graphs(&mut self, on: bool) {
        self.graphs = on;
    }

    /// The stream graphs are captured on (made on first use).
    fn capture_stream(&self) -> Result<Arc<CaptureStream>> {
        let Dev::Gpu(g) = &self.dev else {
            return Err(Error::Cuda(
                "the emulated device has no capture stream".into(),
            ));
        };
        let mut c = g
            .capture
            .lock()
            .map_err(|_| Error::Cuda("capture stream poisoned".into()))?;
        if let Some(s) = c.as_ref() {
            return Ok(Arc::clone(s));
        }
        let s = Arc::new(CaptureStream::new(&g.ctx, &self.alloc.gauge)?);
        *c = Some(Arc::clone(&s));
        Ok(s)
    }

    /// A replay from `arena` starts on this thread (without graphs if their state is
    /// unusable: the replay itself goes on either way).
    pub(crate) fn graph_begin(&self, arena: &Arc<Arena>) {
        if !self.graphs {
            return;
        }
        if let Ok(mut st) = self.frames.lock() {
            *st = Some(Active {
                thread: std::thread::current().id(),
                arena: Arc::clone(arena),
                seg: 0,
                pending: Vec::new(),
                mode: Mode::Idle,
                uploads: 0,
            });
        }
    }

    /// The replay on this thread ends: its last segment runs.
    pub(crate) fn graph_end(&self) -> Result<()> {
        let r = self.boundary();
        let me = std::thread::current().id();
        let mut st = self.frames.lock()?;
        let Some(a) = st.take_if(|a| a.thread == me) else {
            return r;
        };
        if let (Dev::Gpu(g), true) = (&self.dev, a.uploads > 0) {
            let done = g.stream.record_event(None)?;
            lock_segments(&a.arena)?.last_frame = Some(FrameDone(done));
        }
        r
    }

    /// An upload into `dst` (an arena view) inside this thread's replay: staged in the
    /// arena's staging buffer for this upload and copied by the segment's work (in its graph),
    /// so it does not cut the segment. False when no replay with graphs runs here (the caller
    /// copies as usual).
    pub(crate) fn graph_upload<T: super::DeviceElem>(
        &self,
        dst: &super::DeviceBuffer<T>,
        data: &[T],
    ) -> Result<bool> {
        let me = std::thread::current().id();
        let work = {
            let mut st = self.frames.lock()?;
            let Some(a) = st.as_mut().filter(|a| a.thread == me) else {
                return Ok(false);
            };
            let arena = Arc::clone(&a.arena);
            let mut segs = lock_segments(&arena)?;
            if segs.stats.off.is_some() {
                return Ok(false);
            }
            let bytes = std::mem::size_of_val(data);
            // The last frame's copies out of the staging buffers have run.
            if let Some(done) = segs.last_frame.take() {
                done.0.synchronize()?;
            }
            let k = a.uploads;
            a.uploads += 1;
            if segs.staging.len() <= k || segs.staging[k].bytes() < bytes {
                let fresh = match &self.dev {
                    // SAFETY: the staging memory is written (below) before any copy reads it.
                    Dev::Gpu(g) => Staging::Pinned(unsafe {
                        g.ctx.alloc_pinned_with_flags::<u8>(bytes.max(1), 0)
                    }?),
                    Dev::Emu(_) => Staging::Host(vec![0u64; bytes.div_ceil(8).max(1)]),
                };
                if segs.staging.len() <= k {
                    segs.staging.push(fresh);
                } else {
                    segs.staging[k] = fresh;
                }
            }
            let src = segs.staging[k].as_mut_ptr()?;
            // SAFETY: the staging buffer holds at least `bytes` bytes (above), no copy reads
            // it now (the last frame's passed), and `data` is plain device-element data.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr() as *const u8, src, bytes) };
            Work::Upload {
                dst: self.device_address(dst)?,
                src: src as u64,
                bytes,
            }
        };
        // SAFETY: the staging buffer lives as long as the arena's graphs and `dst` is a view
        // of the arena this replay holds.
        unsafe { self.submit(work) }?;
        Ok(true)
    }

    /// Runs `work` now, or holds it back for the graph this thread's replay captures or
    /// replays.
    ///
    /// # Safety
    /// As [`Work::run`].
    pub(crate) unsafe fn submit(&self, mut work: Work) -> Result<()> {
        let me = std::thread::current().id();
        let mut st = self.frames.lock()?;
        let Some(a) = st.as_mut().filter(|a| a.thread == me) else {
            drop(st);
            // SAFETY: the caller's contract.
            return unsafe { work.run(self, Target::Main) };
        };
        let arena = Arc::clone(&a.arena);
        let mut guard = lock_segments(&arena)?;
        let segs: &mut Segments = &mut guard;
        if a.mode == Mode::Idle {
            a.mode = if segs.stats.off.is_some() {
                Mode::Eager
            } else if segs.list.get(a.seg).is_some_and(|s| s.exec.is_some()) {
                Mode::Verifying
            } else {
                match self.begin_capture() {
                    Ok(()) => Mode::Capturing,
                    Err(e) => {
                        segs.stats.off = Some(format!("starting a capture: {e}"));
                        Mode::Eager
                    }
                }
            };
        }
        match a.mode {
            Mode::Idle | Mode::Eager => {
                segs.stats.launches += 1;
                // SAFETY: the caller's contract.
                unsafe { work.run(self, Target::Main) }
            }
            Mode::Capturing => {
                if matches!(self.dev, Dev::Gpu(_)) {
                    // SAFETY: the caller's contract; in capture nothing runs yet.
                    if let Err(e) = unsafe { work.run(self, Target::Capture) } {
                        let why = format!("capturing {}: {e}", work.what());
                        a.pending.push(work);
                        // SAFETY: the held-back work's buffers are alive (the caller's
                        // contract covers this launch; earlier ones are the same frame's).
                        return unsafe { self.abandon_capture(a, segs, why) };
                    }
                }
                a.pending.push(work);
                Ok(())
            }
            Mode::Verifying => {
                let seg = &mut segs.list[a.seg];
                let same = seg
                    .works
                    .get(a.pending.len())
                    .is_some_and(|w| w.same(&work));
                if same {
                    a.pending.push(work);
                    return Ok(());
                }
                seg.exec = None;
                segs.stats.misses += 1;
                a.mode = Mode::Eager;
                a.pending.push(work);
                segs.stats.launches += a.pending.len() as u64;
                for mut w in a.pending.drain(..) {
                    // SAFETY: held back from this frame, whose buffers are alive.
                    unsafe { w.run(self, Target::Main) }?;
                }
                Ok(())
            }
        }
    }

    /// The host needs the stream (download, memset, event, synchronisation, an upload with
    /// graphs off, the end of the replay): the segment so far runs, as its graph where it
    /// has one.
    pub(crate) fn boundary(&self) -> Result<()> {
        let me = std::thread::current().id();
        let mut st = self.frames.lock()?;
        let Some(a) = st.as_mut().filter(|a| a.thread == me) else {
            return Ok(());
        };
        if a.mode == Mode::Idle {
            return Ok(());
        }
        let arena = Arc::clone(&a.arena);
        let mut guard = lock_segments(&arena)?;
        let segs: &mut Segments = &mut guard;
        let r = match a.mode {
            Mode::Idle | Mode::Eager => Ok(()),
            // SAFETY: the held-back works are this frame's, whose buffers are alive.
            Mode::Capturing => unsafe { self.finish_capture(a, segs) },
            Mode::Verifying => {
                let seg = &mut segs.list[a.seg];
                if a.pending.len() == seg.works.len() {
                    let n = seg.works.len() as u64;
                    let r = self.launch_exec(seg);
                    segs.stats.graph_launches += 1;
                    segs.stats.launches_in_graphs += n;
                    a.pending.clear();
                    r
                } else {
                    // The frame's segment ended early: run what it held back.
                    seg.exec = None;
                    segs.stats.misses += 1;
                    segs.stats.launches += a.pending.len() as u64;
                    a.pending.drain(..).try_for_each(|mut w| {
                        // SAFETY: held back from this frame, whose buffers are alive.
                        unsafe { w.run(self, Target::Main) }
                    })
                }
            }
        };
        a.pending.clear();
        a.mode = Mode::Idle;
        a.seg += 1;
        r
    }

    fn begin_capture(&self) -> Result<()> {
        match &self.dev {
            Dev::Gpu(_) => {
                let c = self.capture_stream()?;
                // Relaxed: the capturing thread may still make calls the driver deems unsafe
                // in capture (the first replay page-locks its staging buffers mid-segment);
                // nothing of ours touches the capture stream but the segment's work.
                c.stream
                    .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)?;
                Ok(())
            }
            Dev::Emu(_) => Ok(()),
        }
    }

    /// The segment's capture ends: its graph is kept and launched (nothing of it ran yet).
    ///
    /// # Safety
    /// The held-back works' buffers are alive.
    unsafe fn finish_capture(&self, a: &mut Active, segs: &mut Segments) -> Result<()> {
        let exec = match &self.dev {
            Dev::Gpu(_) => {
                let c = self.capture_stream()?;
                match c
                    .stream
                    .end_capture(sys::CUgraphInstantiate_flags(0))
                    .map_err(Error::from)
                    .and_then(|x| x.ok_or_else(|| Error::Cuda("the capture is empty".into())))
                {
                    Ok(graph) => Exec::Gpu(GpuGraph(graph)),
                    Err(e) => {
                        // SAFETY: the caller's contract.
                        return unsafe { self.abandon_capture(a, segs, format!("{e}")) };
                    }
                }
            }
            Dev::Emu(_) => Exec::Emu,
        };
        let mut seg = Segment {
            works: std::mem::take(&mut a.pending),
            exec: Some(exec),
        };
        segs.stats.captured += 1;
        let r = self.launch_exec(&mut seg);
        while segs.list.len() < a.seg {
            segs.list.push(Segment {
                works: Vec::new(),
                exec: None,
            });
        }
        if segs.list.len() == a.seg {
            segs.list.push(seg);
        } else {
            segs.list[a.seg] = seg;
        }
        r
    }

    /// A capture failed: graphs go off for this arena and what was held back runs now.
    ///
    /// # Safety
    /// The held-back works' buffers are alive.
    unsafe fn abandon_capture(
        &self,
        a: &mut Active,
        segs: &mut Segments,
        why: String,
    ) -> Result<()> {
        if let Dev::Gpu(_) = &self.dev {
            if let Ok(c) = self.capture_stream() {
                // Ends the (possibly invalidated) capture; its graph, if any, is dropped.
                let _ = c.stream.end_capture(sys::CUgraphInstantiate_flags(0));
            }
        }
        segs.stats.off = Some(why);
        a.mode = Mode::Eager;
        segs.stats.launches += a.pending.len() as u64;
        for mut w in a.pending.drain(..) {
            // SAFETY: the caller's contract.
            unsafe { w.run(self, Target::Main) }?;
        }
        Ok(())
    }

    /// Launches a segment's graph on the backend's stream.
    fn launch_exec(&self, seg: &mut Segment) -> Result<()> {
        match (&self.dev, &seg.exec) {
            (Dev::Gpu(g), Some(Exec::Gpu(graph))) => {
                g.ctx.bind_to_thread()?;
                // SAFETY: the executable graph is alive (owned by the segment) and its
                // launches are identical to the frame's own (verified or just captured),
                // whose buffers are alive.
                unsafe {
                    cudarc::driver::result::graph::launch(
                        graph.0.cu_graph_exec(),
                        g.stream.cu_stream(),
                    )
                }?;
                Ok(())
            }
            (Dev::Emu(_), Some(Exec::Emu)) => seg.works.iter_mut().try_for_each(|w| {
                // SAFETY: as above: the recorded launches are the frame's own.
                unsafe { w.run(self, Target::Main) }
            }),
            _ => Err(Error::Cuda(
                "a segment without its graph was launched".into(),
            )),
        }
    }
}
