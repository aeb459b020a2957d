//! One launch builder for both devices: the wrappers push arguments in kernel order and
//! launch. The arguments are copied into an [`ArgBlock`] as they are pushed, so a launch is a
//! value ([`Work`]) the backend can run now, hold back while a CUDA graph is captured, or
//! compare with the launch a graph recorded (graph.rs); on a GPU it runs as cuLaunchKernel on
//! the block, on the emulated device as the same kernel compiled as host C++ (with its
//! checks).

use super::emu::{EmuBufArg, EmuKernel};
use super::graph::{LaunchShape, Work};
use super::memory::{BufInner, DeviceBuffer, DeviceElem};
use super::CudaBackend;
use crate::error::{Error, Result};
use cudarc::driver::{CudaFunction, DevicePtr, DeviceRepr, LaunchConfig};
use std::ffi::c_void;
use std::marker::PhantomData;

/// A kernel of one device.
#[derive(Clone)]
pub struct Kernel {
    /// Shared, so that a launch (which keeps its kernel) clones it without allocating.
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) inner: KernelInner,
}

#[derive(Clone)]
pub(crate) enum KernelInner {
    Cuda(CudaFunction),
    Emu(EmuKernel),
}

/// By-value kernel arguments: the launch-parameter structs of params.h and plain scalars.
/// Every one is plain data without implicit padding (params.h spells its padding out as
/// `_pad` fields), so its bytes are all initialised and two launches compare byte for byte.
pub trait KernelParam: DeviceRepr + Copy {}
impl KernelParam for i32 {}
impl KernelParam for u32 {}
impl KernelParam for i64 {}
impl KernelParam for f32 {}
impl KernelParam for super::params::GlipElementwiseParams {}
impl KernelParam for super::params::GlipGroupNormParams {}
impl KernelParam for super::params::GlipDeformConvParams {}
impl KernelParam for super::params::GlipBiAttnParams {}
impl KernelParam for super::params::GlipLogitsParams {}
impl KernelParam for super::params::GlipNmsParams {}
impl KernelParam for super::params::GlipGemmParams {}
impl KernelParam for super::params::GlipLayoutParams {}
impl KernelParam for super::params::GlipReduceParams {}
impl KernelParam for super::params::GlipAttnParams {}

/// A launch's argument values, in kernel order, each starting on an 8-byte boundary: a
/// parameter struct's or scalar's bytes, or a buffer's device address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ArgBlock {
    words: Vec<u64>,
    /// Where each argument starts, in words.
    starts: Vec<usize>,
}

impl ArgBlock {
    fn push<V: Copy>(&mut self, v: &V) {
        // No argument needs more than 8-byte alignment (params.h has no wider member).
        const { assert!(std::mem::align_of::<V>() <= 8) };
        let bytes = std::mem::size_of::<V>();
        let start = self.words.len();
        self.words.resize(start + bytes.div_ceil(8).max(1), 0);
        // SAFETY: the words from `start` hold at least `bytes` bytes (resized above), and
        // `v` is `bytes` bytes of plain data with every byte initialised (KernelParam).
        unsafe {
            std::ptr::copy_nonoverlapping(
                v as *const V as *const u8,
                self.words.as_mut_ptr().add(start) as *mut u8,
                bytes,
            )
        };
        self.starts.push(start);
    }
    /// How many arguments.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }
    /// A pointer to each argument's value: what cuLaunchKernel and the emulated device's
    /// trampolines take. Valid while `self` is neither moved nor changed.
    pub(crate) fn pointers(&mut self) -> Vec<*mut c_void> {
        let base = self.words.as_mut_ptr();
        self.starts
            .iter()
            // SAFETY: every start lies inside `words` (push).
            .map(|&s| unsafe { base.add(s) } as *mut c_void)
            .collect()
    }
}

/// An elementwise kernel's input and output: two buffers, or one buffer the kernel updates
/// in place. In place is race-free only for kernels where each output element is computed
/// by the thread that reads the same input element, and nothing else reads it (the
/// elementwise kernels); the emulated device's reordered runs check that.
pub enum InOut<'a, T> {
    Apart(&'a DeviceBuffer<T>, &'a mut DeviceBuffer<T>),
    Same(&'a mut DeviceBuffer<T>),
}

impl<T: DeviceElem> InOut<'_, T> {
    /// Elements of the input and of the output.
    pub fn lens(&self) -> (usize, usize) {
        match self {
            InOut::Apart(x, y) => (x.len(), y.len()),
            InOut::Same(y) => (y.len(), y.len()),
        }
    }
}

/// Arguments of one launch, in kernel order.
pub struct Launch<'a> {
    be: &'a CudaBackend,
    kernel: &'a Kernel,
    args: ArgBlock,
    /// The buffers the launch touches, for the emulated device's checks.
    bufs: Vec<EmuBufArg>,
    /// A buffer of the other device was pushed: an error at launch, never a bad pointer.
    mismatch: Option<usize>,
    failed: Option<&'static str>,
    /// The pushed buffers must outlive the launch call (as with a borrowing builder).
    _borrows: PhantomData<&'a ()>,
}

impl<'a> Launch<'a> {
    pub(crate) fn new(
        be: &'a CudaBackend,
        kernel: &'a Kernel,
        failed: Option<&'static str>,
    ) -> Self {
        Launch {
            be,
            kernel,
            args: ArgBlock::default(),
            bufs: Vec::new(),
            mismatch: None,
            failed,
            _borrows: PhantomData,
        }
    }

    /// The next argument: `&params`, `&scalar`, `&buffer` or `&mut buffer`.
    pub fn arg<A: KernelArg<'a>>(&mut self, a: A) -> &mut Self {
        a.push_to(self);
        self
    }

    /// The input of `io` as the next argument (its output follows with [`Launch::output`]).
    pub fn input<T: DeviceElem>(&mut self, io: &InOut<'a, T>) -> &mut Self {
        match io {
            InOut::Apart(x, _) => self.buffer(&x.inner),
            InOut::Same(y) => self.buffer(&y.inner),
        }
        self
    }
    /// The output of `io` as the next argument.
    pub fn output<T: DeviceElem>(&mut self, io: InOut<'a, T>) -> &mut Self {
        match io {
            InOut::Apart(_, y) | InOut::Same(y) => self.buffer(&y.inner),
        }
        self
    }

    /// A buffer the kernel reaches through an address in its parameter block (a grouped
    /// launch over several tensors), read only: on the emulated device it is checked like a
    /// buffer argument (canary, snapshots of the rerun checks); on a GPU nothing is pushed.
    pub fn reaches<T: DeviceElem>(&mut self, b: &'a DeviceBuffer<T>) -> &mut Self {
        self.reached(&b.inner);
        self
    }
    /// [`Launch::reaches`] for a buffer the kernel writes.
    pub fn reaches_mut<T: DeviceElem>(&mut self, b: &'a mut DeviceBuffer<T>) -> &mut Self {
        self.reached(&b.inner);
        self
    }
    fn reached<T: DeviceElem>(&mut self, b: &BufInner<T>) {
        match b {
            BufInner::Emu(e) => self.bufs.push(EmuBufArg::of(e, None)),
            BufInner::Cuda(_) => {}
        }
    }

    fn buffer<T: DeviceElem>(&mut self, b: &BufInner<T>) {
        let at = self.args.len();
        let addr = match b {
            BufInner::Cuda(s) => {
                let Ok(g) = self.be.stream() else {
                    self.mismatch = Some(at);
                    return self.args.push(&0u64);
                };
                // The backend disables cudarc's event tracking (one stream orders every
                // use), so asking for the address records nothing, read or written.
                let (p, _sync) = s.device_ptr(g);
                p
            }
            BufInner::Emu(e) => {
                self.bufs.push(EmuBufArg::of(e, Some(at)));
                e.device_ptr() as u64
            }
        };
        if matches!(
            (b, self.be.is_emulated()),
            (BufInner::Cuda(_), true) | (BufInner::Emu(_), false)
        ) {
            self.mismatch = Some(at);
        }
        self.args.push(&addr);
    }

    /// Launches the kernel (or hands it to the CUDA graph being captured or replayed).
    ///
    /// # Safety
    /// The caller guarantees that every index the kernel computes from its parameters stays
    /// inside the buffers passed (on a GPU nothing checks this; the emulated device does).
    pub unsafe fn launch(&mut self, cfg: LaunchConfig) -> Result<()> {
        if let Some(why) = self.failed {
            return Err(Error::Cuda(format!("{}: {why}", self.kernel.name)));
        }
        if let Some(i) = self.mismatch {
            return Err(Error::Cuda(format!(
                "{}: argument {i} is a buffer of another device",
                self.kernel.name
            )));
        }
        let work = Work::Kernel {
            kernel: self.kernel.clone(),
            shape: LaunchShape::of(&cfg),
            args: std::mem::take(&mut self.args),
            bufs: std::mem::take(&mut self.bufs),
        };
        // SAFETY: forwarded from the caller's contract; the buffers the addresses in `work`
        // point at are borrowed for 'a, and a graph runs held-back work before any of them
        // can be freed (graph.rs).
        unsafe { self.be.submit(work) }
    }
}

/// Something a [`Launch`] can take as its next argument.
pub trait KernelArg<'a> {
    fn push_to(self, l: &mut Launch<'a>);
}

impl<'a, P: KernelParam> KernelArg<'a> for &'a P {
    fn push_to(self, l: &mut Launch<'a>) {
        l.args.push(self);
    }
}

impl<'a, T: DeviceElem> KernelArg<'a> for &'a DeviceBuffer<T> {
    fn push_to(self, l: &mut Launch<'a>) {
        l.buffer(&self.inner);
    }
}

impl<'a, T: DeviceElem> KernelArg<'a> for &'a mut DeviceBuffer<T> {
    fn push_to(self, l: &mut Launch<'a>) {
        l.buffer(&self.inner);
    }
}

/// Runs a kernel launch on a GPU stream from its argument block.
///
/// # Safety
/// As [`Launch::launch`]: the block's addresses point at live buffers the kernel indexes
/// only within their lengths.
pub(crate) unsafe fn launch_on_stream(
    f: &CudaFunction,
    stream: &cudarc::driver::CudaStream,
    shape: &LaunchShape,
    args: &mut ArgBlock,
) -> Result<()> {
    stream.context().bind_to_thread()?;
    let mut ptrs = args.pointers();
    // SAFETY: `ptrs` point at the argument values in `args`, which outlives the call; the
    // driver copies them before returning. The rest is the caller's contract.
    unsafe {
        cudarc::driver::result::launch_kernel(
            f.cu_function(),
            (shape.grid[0], shape.grid[1], shape.grid[2]),
            (shape.block[0], shape.block[1], shape.block[2]),
            shape.smem,
            stream.cu_stream(),
            &mut ptrs,
        )
    }?;
    Ok(())
}
