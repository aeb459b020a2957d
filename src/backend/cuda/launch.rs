//! One launch builder for both devices: the wrappers push arguments in kernel order and
//! launch; on a GPU that is a cudarc launch, on the emulated device a run of the same kernel
//! compiled as host C++ (with its checks).

use super::emu::{EmuArgs, EmuDevice, EmuKernel};
use super::memory::{BufInner, DeviceBuffer, DeviceElem};
use crate::error::{Error, Result};
use cudarc::driver::{
    CudaFunction, CudaStream, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use std::sync::Arc;

/// A kernel of one device.
#[derive(Clone)]
pub struct Kernel {
    pub(crate) name: String,
    pub(crate) inner: KernelInner,
}

#[derive(Clone)]
pub(crate) enum KernelInner {
    Cuda(CudaFunction),
    Emu(EmuKernel),
}

/// By-value kernel arguments: the launch-parameter structs of params.h and plain scalars.
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

/// Arguments of one launch, in kernel order.
pub struct Launch<'a> {
    kernel: &'a str,
    inner: LaunchInner<'a>,
    /// A buffer of the other device was pushed: an error at launch, never a bad pointer.
    mismatch: Option<usize>,
    count: usize,
}

enum LaunchInner<'a> {
    Cuda(LaunchArgs<'a>),
    Emu {
        dev: &'a EmuDevice,
        kernel: EmuKernel,
        args: EmuArgs,
    },
    Failed(&'static str),
}

impl<'a> Launch<'a> {
    pub(crate) fn cuda(stream: &'a Arc<CudaStream>, f: &'a CudaFunction, name: &'a str) -> Self {
        Launch {
            kernel: name,
            inner: LaunchInner::Cuda(stream.launch_builder(f)),
            mismatch: None,
            count: 0,
        }
    }
    pub(crate) fn emu(dev: &'a EmuDevice, kernel: EmuKernel, name: &'a str) -> Self {
        Launch {
            kernel: name,
            inner: LaunchInner::Emu {
                dev,
                kernel,
                args: EmuArgs::new(),
            },
            mismatch: None,
            count: 0,
        }
    }

    pub(crate) fn failed(name: &'a str, why: &'static str) -> Self {
        Launch {
            kernel: name,
            inner: LaunchInner::Failed(why),
            mismatch: None,
            count: 0,
        }
    }

    /// The next argument: `&params`, `&scalar`, `&buffer` or `&mut buffer`.
    pub fn arg<A: KernelArg<'a>>(&mut self, a: A) -> &mut Self {
        a.push_to(self);
        self.count += 1;
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
        match (&mut self.inner, b) {
            (LaunchInner::Emu { args, .. }, BufInner::Emu(e)) => args.reached(e),
            (LaunchInner::Cuda(_), BufInner::Cuda(_)) | (LaunchInner::Failed(_), _) => {}
            _ => self.mismatch = Some(self.count),
        }
    }

    /// Launches the kernel.
    ///
    /// # Safety
    /// The caller guarantees that every index the kernel computes from its parameters stays
    /// inside the buffers passed (on a GPU nothing checks this; the emulated device does).
    pub unsafe fn launch(&mut self, cfg: LaunchConfig) -> Result<()> {
        if let Some(i) = self.mismatch {
            return Err(Error::Cuda(format!(
                "{}: argument {i} is a buffer of another device",
                self.kernel
            )));
        }
        match &mut self.inner {
            LaunchInner::Cuda(a) => {
                // SAFETY: forwarded from the caller's contract.
                unsafe { a.launch(cfg) }?;
                Ok(())
            }
            LaunchInner::Emu { dev, kernel, args } => dev.launch(kernel, args, &cfg),
            LaunchInner::Failed(why) => Err(Error::Cuda(format!("{}: {why}", self.kernel))),
        }
    }
}

/// Something a [`Launch`] can take as its next argument.
pub trait KernelArg<'a> {
    fn push_to(self, l: &mut Launch<'a>);
}

impl<'a, P: KernelParam> KernelArg<'a> for &'a P {
    fn push_to(self, l: &mut Launch<'a>) {
        match &mut l.inner {
            LaunchInner::Cuda(a) => {
                a.arg(self);
            }
            LaunchInner::Emu { args, .. } => args.value(self),
            LaunchInner::Failed(_) => {}
        }
    }
}

impl<'a, T: DeviceElem> KernelArg<'a> for &'a DeviceBuffer<T> {
    fn push_to(self, l: &mut Launch<'a>) {
        match (&mut l.inner, &self.inner) {
            (LaunchInner::Cuda(a), BufInner::Cuda(s)) => {
                a.arg(&**s);
            }
            (LaunchInner::Emu { args, .. }, BufInner::Emu(b)) => args.buffer(b),
            (LaunchInner::Failed(_), _) => {}
            _ => l.mismatch = Some(l.count),
        }
    }
}

impl<'a, T: DeviceElem> KernelArg<'a> for &'a mut DeviceBuffer<T> {
    fn push_to(self, l: &mut Launch<'a>) {
        match (&mut l.inner, &mut self.inner) {
            (LaunchInner::Cuda(a), BufInner::Cuda(s)) => {
                a.arg(&mut **s);
            }
            (LaunchInner::Emu { args, .. }, BufInner::Emu(b)) => args.buffer(b),
            (LaunchInner::Failed(_), _) => {}
            _ => l.mismatch = Some(l.count),
        }
    }
}
