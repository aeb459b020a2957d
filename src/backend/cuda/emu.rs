//! The emulated CUDA device: the same `kernels/*.cu` compiled as host C++ against
//! `kernels/emu/` (build.rs, always), launched through the same wrappers as on a GPU.
//!
//! Device memory is host memory that starts 16-byte aligned (what vector loads, cp.async and
//! ldmatrix need) and ends within 15 bytes of a guard page, so an access past the end of any
//! argument faults (or, within those bytes, overwrites a canary) and is reported naming the
//! argument. With [`EmuChecks::Full`] every launch runs once more per check below and
//! all argument buffers must come out bit-identical to the first (forward, zero-filled
//! shared memory) run:
//!
//! | run | what differs | a difference means |
//! |---|---|---|
//! | poison | shared memory starts 0xFF instead of 0x00 | a read of shared memory no thread wrote |
//! | reverse | blocks and threads scheduled last to first | a race between barrier phases or blocks |
//! | random | seeded random block and thread order | a race |
//! | warps-ahead | each warp runs to the next block barrier before the next warp starts | a race between warps inside a barrier phase |
//! | warps-ahead-reverse | the same, last warp first | a race |
//!
//! Inside each run the runtime itself reports out-of-bounds shared/local array indices
//! (`-fsanitize=bounds`), barrier divergence and deadlock, warp collectives with missing or
//! non-existent lanes, and misaligned wmma/ldmatrix/cp.async pointers. What only a GPU can
//! tell (timing, FMA contraction, the device's libm ulps) is listed in docs/kernels.md.

use super::graph::LaunchShape;
use super::launch::ArgBlock;
use crate::error::{Error, Result};
use std::ffi::{c_char, c_void, CString};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) type EmuTramp = unsafe extern "C" fn(*mut *mut c_void, i32) -> i32;

include!(concat!(env!("OUT_DIR"), "/emu_gen.rs"));

#[repr(C)]
struct GlipEmuBuf {
    ptr: *const c_void,
    bytes: usize,
    arg: i32,
    _pad: i32,
}

#[repr(C)]
struct GlipEmuLaunch {
    kernel: *const c_char,
    tramp: EmuTramp,
    args: *mut *mut c_void,
    nargs: i32,
    _pad0: i32,
    grid: [u32; 3],
    block: [u32; 3],
    dyn_smem: u64,
    policy: i32,
    smem_fill: i32,
    seed: u64,
    bufs: *const GlipEmuBuf,
    nbufs: i32,
    _pad: i32,
}

/// Whether this build has the emulated device (feature `emulator`, x86-64 hosts only).
pub const EMULATOR_BUILT: bool = cfg!(glip_emulator);

#[cfg(glip_emulator)]
extern "C" {
    fn glip_emu_launch(l: *const GlipEmuLaunch, err: *mut c_char, len: usize) -> i32;
    fn glip_emu_alloc(bytes: usize) -> *mut c_void;
    fn glip_emu_free(p: *mut c_void, bytes: usize);
    fn glip_emu_canary_ok(p: *const c_void, bytes: usize) -> i32;
}

// Without the emulator (another host architecture, or the feature off) its runtime is absent:
// allocation fails and a launch says why. `backend::select` refuses `emu` before either.
#[cfg(not(glip_emulator))]
unsafe fn glip_emu_launch(_l: *const GlipEmuLaunch, err: *mut c_char, len: usize) -> i32 {
    let msg = b"this build has no emulated CUDA device (feature `emulator`, x86-64 hosts only)\0";
    let n = msg.len().min(len);
    if n > 0 {
        // SAFETY: `err` holds `len` bytes (the caller's buffer); the last copied byte is set
        // to NUL below.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr() as *const c_char, err, n);
            *err.add(n - 1) = 0;
        }
    }
    1
}
#[cfg(not(glip_emulator))]
unsafe fn glip_emu_alloc(_bytes: usize) -> *mut c_void {
    std::ptr::null_mut()
}
#[cfg(not(glip_emulator))]
unsafe fn glip_emu_free(_p: *mut c_void, _bytes: usize) {}
#[cfg(not(glip_emulator))]
unsafe fn glip_emu_canary_ok(_p: *const c_void, _bytes: usize) -> i32 {
    1
}

/// Which check found a kernel bug on the emulated device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmuCheck {
    /// Invalid grid, block or shared-memory request.
    Launch,
    /// An index outside a shared/local array, or a global access outside its buffer.
    Bounds,
    /// A `__syncthreads` not reached by every live thread (divergence or deadlock).
    Barrier,
    /// A warp collective with missing or non-existent lanes, or lanes that disagree.
    Warp,
    /// A wmma / ldmatrix / cp.async pointer without the alignment the GPU requires.
    Alignment,
    /// A write just outside a buffer (the bytes before its start and the up to 15 bytes
    /// after its end are a canary).
    Canary,
    /// Outputs changed when shared memory started 0xFF instead of 0x00.
    Poison,
    /// Outputs changed with another block / thread / warp order.
    Race,
}

impl fmt::Display for EmuCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmuCheck::Launch => "launch configuration",
            EmuCheck::Bounds => "bounds",
            EmuCheck::Barrier => "barrier",
            EmuCheck::Warp => "warp collective",
            EmuCheck::Alignment => "alignment",
            EmuCheck::Canary => "write outside a buffer",
            EmuCheck::Poison => "uninitialised shared memory",
            EmuCheck::Race => "race (schedule order)",
        })
    }
}

impl EmuCheck {
    fn from_code(rc: i32) -> Self {
        match rc {
            2 => EmuCheck::Launch,
            3 => EmuCheck::Bounds,
            4 => EmuCheck::Barrier,
            6 => EmuCheck::Alignment,
            _ => EmuCheck::Warp,
        }
    }
}

/// How much checking every emulated launch does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmuChecks {
    /// One forward run with the runtime's own checks (bounds, barriers, warps, alignment).
    Fast,
    /// Also the poison and reordered runs of the module docs, compared bit for bit.
    Full,
}

impl EmuChecks {
    /// `GLIP_EMU_CHECKS=fast|full` (default full).
    pub fn from_env() -> Self {
        match std::env::var("GLIP_EMU_CHECKS").as_deref() {
            Ok("fast") => EmuChecks::Fast,
            _ => EmuChecks::Full,
        }
    }
}

/// Device memory of the emulated device: host memory, 16-byte aligned, ending within 15 bytes
/// of a guard page.
pub struct EmuBuffer<T> {
    ptr: NonNull<T>,
    len: usize,
    /// False for a view into an arena: not freed here, and without canary or guard page of
    /// its own (its neighbours in the arena are other buffers).
    owned: bool,
}

// SAFETY: the buffer owns its mapping exclusively, like a Vec<T>.
unsafe impl<T: Send> Send for EmuBuffer<T> {}
// SAFETY: shared references only read.
unsafe impl<T: Sync> Sync for EmuBuffer<T> {}

impl<T: Copy> EmuBuffer<T> {
    /// `len` zeroed elements.
    pub fn zeroed(len: usize) -> Result<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            Error::Cuda(format!("emulated allocation of {len} elements overflows"))
        })?;
        // SAFETY: plain allocation call; the result is checked for null.
        let p = unsafe { glip_emu_alloc(bytes) } as *mut T;
        let ptr = NonNull::new(p).ok_or_else(|| {
            Error::Cuda(format!(
                "emulated device: cannot allocate {bytes} bytes (out of memory)"
            ))
        })?;
        Ok(EmuBuffer {
            ptr,
            len,
            owned: true,
        })
    }
    /// `len` elements at `ptr` inside another emulated allocation, which must outlive the
    /// view (a [`DeviceBuffer`](super::DeviceBuffer) view holds its arena).
    ///
    /// # Safety
    /// `ptr .. ptr + len` lies inside one live emulated allocation, aligned for `T`.
    pub(crate) unsafe fn view(ptr: NonNull<T>, len: usize) -> Self {
        EmuBuffer {
            ptr,
            len,
            owned: false,
        }
    }
    /// Memory whose every byte is 0xFF (NaN as f16 and f32, −1 as an integer): what an
    /// uninitialised allocation holds here, so a kernel that reads what nothing wrote shows
    /// it instead of reading zeros.
    pub fn garbage(len: usize) -> Result<Self> {
        let b = Self::zeroed(len)?;
        if len > 0 {
            // SAFETY: the allocation holds len * size_of::<T>() bytes (checked in `zeroed`),
            // exclusively ours; every DeviceElem is plain data for which any bytes are valid.
            unsafe {
                std::ptr::write_bytes(
                    b.ptr.as_ptr() as *mut u8,
                    0xFF,
                    len * std::mem::size_of::<T>(),
                )
            };
        }
        Ok(b)
    }
    pub fn from_slice(data: &[T]) -> Result<Self> {
        let mut b = Self::zeroed(data.len())?;
        b.as_mut_slice().copy_from_slice(data);
        Ok(b)
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_slice(&self) -> &[T] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the mapping holds `len` initialised (zeroed or written) elements.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
    pub(crate) fn device_ptr(&self) -> *mut c_void {
        self.ptr.as_ptr() as *mut c_void
    }
}

impl<T> EmuBuffer<T> {
    fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
}

impl<T> Drop for EmuBuffer<T> {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: ptr/bytes are exactly what glip_emu_alloc returned/was given.
            unsafe { glip_emu_free(self.ptr.as_ptr() as *mut c_void, self.bytes()) }
        }
    }
}

impl<T> fmt::Debug for EmuBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmuBuffer({} elements)", self.len)
    }
}

/// A kernel of the emulated device.
#[derive(Clone, Copy)]
pub struct EmuKernel {
    pub(crate) name: &'static str,
    tramp: EmuTramp,
}

/// A buffer an emulated launch touches: its argument index (None: reached through the
/// parameters), where it is, and whether it has a canary of its own (not an arena view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EmuBufArg {
    arg: Option<usize>,
    ptr: usize,
    bytes: usize,
    canary: bool,
}

impl EmuBufArg {
    pub(crate) fn of<T: Copy>(b: &EmuBuffer<T>, arg: Option<usize>) -> Self {
        EmuBufArg {
            arg,
            ptr: b.device_ptr() as usize,
            bytes: b.bytes(),
            canary: b.owned,
        }
    }
    fn ptr(&self) -> *mut c_void {
        self.ptr as *mut c_void
    }
}

/// How a check names a buffer: its argument index, or a buffer reached through the
/// parameters ([`Launch::reaches`](super::Launch::reaches)).
fn arg_name(arg: Option<usize>) -> String {
    match arg {
        None => "a buffer the parameters point to".into(),
        Some(i) => format!("argument {i}"),
    }
}

/// The emulated device: how much to check, and an optional planted-bug variant to run
/// instead of the real kernels (for the tests that prove the checks catch bugs).
pub struct EmuDevice {
    checks: EmuChecks,
    mutant: Option<&'static str>,
    launches: AtomicU64,
}

#[derive(Clone, Copy)]
enum Policy {
    Forward = 0,
    Reverse = 1,
    Random = 2,
    WarpsAhead = 3,
    WarpsAheadReverse = 4,
}

/// The reruns of a full check: (name, policy, shared-memory fill, what a difference means).
const VARIANTS: [(&str, Policy, i32, EmuCheck); 5] = [
    (
        "poison (shared memory 0xFF)",
        Policy::Forward,
        0xFF,
        EmuCheck::Poison,
    ),
    ("reverse order", Policy::Reverse, 0, EmuCheck::Race),
    ("random order", Policy::Random, 0, EmuCheck::Race),
    ("warps ahead", Policy::WarpsAhead, 0, EmuCheck::Race),
    (
        "warps ahead, last first",
        Policy::WarpsAheadReverse,
        0,
        EmuCheck::Race,
    ),
];

impl EmuDevice {
    pub fn new(checks: EmuChecks) -> Self {
        EmuDevice {
            checks,
            mutant: None,
            launches: AtomicU64::new(0),
        }
    }
    pub fn checks(&self) -> EmuChecks {
        self.checks
    }
    pub fn set_checks(&mut self, checks: EmuChecks) {
        self.checks = checks;
    }
    /// Run `<kernel>__<mutant>` wherever it exists instead of `<kernel>`.
    pub fn set_mutant(&mut self, mutant: Option<&str>) -> Result<()> {
        self.mutant = match mutant {
            None => None,
            Some(m) => Some(
                MUTANTS
                    .iter()
                    .copied()
                    .find(|x| *x == m)
                    .ok_or_else(|| Error::Invalid(format!("no mutant `{m}` compiled in")))?,
            ),
        };
        Ok(())
    }

    /// The kernel `name` (or its mutant).
    pub fn function(&self, name: &str) -> Result<EmuKernel> {
        let want = self.mutant.map(|m| format!("{name}__{m}"));
        let find = |n: &str| EMU_KERNELS.iter().find(|(k, _)| *k == n).copied();
        let hit = want.as_deref().and_then(find).or_else(|| find(name));
        let (name, tramp) = hit
            .ok_or_else(|| Error::Cuda(format!("kernel `{name}` is not in the emulated device")))?;
        Ok(EmuKernel { name, tramp })
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        k: &EmuKernel,
        args: &mut [*mut c_void],
        touched: &[EmuBufArg],
        shape: &LaunchShape,
        policy: Policy,
        fill: i32,
    ) -> Result<()> {
        let name = CString::new(k.name).map_err(|_| Error::Cuda("kernel name".into()))?;
        let bufs: Vec<GlipEmuBuf> = touched
            .iter()
            .map(|b| GlipEmuBuf {
                ptr: b.ptr(),
                bytes: b.bytes,
                arg: b.arg.map_or(-1, |i| i as i32),
                _pad: 0,
            })
            .collect();
        let seed = self.launches.fetch_add(1, Ordering::Relaxed) + 0x9E37_79B9;
        let l = GlipEmuLaunch {
            kernel: name.as_ptr(),
            tramp: k.tramp,
            args: args.as_mut_ptr(),
            nargs: args.len() as i32,
            _pad0: 0,
            grid: shape.grid,
            block: shape.block,
            dyn_smem: u64::from(shape.smem),
            policy: policy as i32,
            smem_fill: fill,
            seed,
            bufs: bufs.as_ptr(),
            nbufs: bufs.len() as i32,
            _pad: 0,
        };
        let mut err = vec![0 as c_char; 4096];
        // SAFETY: every argument pointer points at a live value of the kernel's parameter
        // type (the launch's argument block, borrowed for the call); the trampoline's arity was
        // checked against the argument count; buffers are emulated device allocations whose
        // lengths the wrapper checked against what the kernel indexes.
        let rc = unsafe { glip_emu_launch(&l, err.as_mut_ptr(), err.len()) };
        if rc != 0 {
            // SAFETY: the runtime writes a NUL-terminated message into `err`.
            let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            return Err(Error::KernelCheck {
                kernel: k.name.to_string(),
                check: EmuCheck::from_code(rc),
                detail: msg,
            });
        }
        for b in touched.iter().filter(|b| b.canary) {
            // SAFETY: ptr/bytes describe a live emulated allocation.
            if unsafe { glip_emu_canary_ok(b.ptr(), b.bytes) } == 0 {
                return Err(Error::KernelCheck {
                    kernel: k.name.to_string(),
                    check: EmuCheck::Canary,
                    detail: format!("the kernel wrote just outside {}", arg_name(b.arg)),
                });
            }
        }
        Ok(())
    }

    /// Launch `k` on `args` with every check of `self.checks`; `touched` are the buffers
    /// the launch passes or reaches.
    pub(crate) fn launch(
        &self,
        k: &EmuKernel,
        block: &mut ArgBlock,
        touched: &[EmuBufArg],
        shape: &LaunchShape,
    ) -> Result<()> {
        let mut ptrs = block.pointers();
        let args = &mut ptrs[..];
        // SAFETY: a null argument array asks the trampoline for its arity only.
        let arity = unsafe { (k.tramp)(std::ptr::null_mut(), 0) };
        if arity as usize != args.len() {
            return Err(Error::KernelCheck {
                kernel: k.name.to_string(),
                check: EmuCheck::Launch,
                detail: format!(
                    "the kernel takes {arity} arguments, the launch passed {}",
                    args.len()
                ),
            });
        }
        if self.checks == EmuChecks::Fast {
            return self.run(k, args, touched, shape, Policy::Forward, 0);
        }
        // Distinct buffers (an argument may be passed twice, e.g. in place).
        let mut uniq: Vec<(Option<usize>, *mut c_void, usize)> = Vec::new();
        for b in touched {
            if !uniq.iter().any(|u| u.1 == b.ptr()) {
                uniq.push((b.arg, b.ptr(), b.bytes));
            }
        }
        let snap = |u: &[(Option<usize>, *mut c_void, usize)]| -> Vec<Vec<u8>> {
            u.iter()
                .map(|&(_, p, n)| {
                    // SAFETY: p..p+n is a live emulated allocation.
                    unsafe { std::slice::from_raw_parts(p as *const u8, n) }.to_vec()
                })
                .collect()
        };
        let restore = |u: &[(Option<usize>, *mut c_void, usize)], s: &[Vec<u8>]| {
            for (&(_, p, n), data) in u.iter().zip(s) {
                // SAFETY: as above; no launch is running.
                unsafe { std::slice::from_raw_parts_mut(p as *mut u8, n) }.copy_from_slice(data);
            }
        };
        let before = snap(&uniq);
        self.run(k, args, touched, shape, Policy::Forward, 0)?;
        let base = snap(&uniq);
        for (what, policy, fill, check) in VARIANTS {
            restore(&uniq, &before);
            self.run(k, args, touched, shape, policy, fill)
                .map_err(|e| match e {
                    Error::KernelCheck {
                        kernel,
                        check,
                        detail,
                    } => Error::KernelCheck {
                        kernel,
                        check,
                        detail: format!("{detail} (in the {what} run)"),
                    },
                    e => e,
                })?;
            let got = snap(&uniq);
            for ((&(arg, _, _), a), b) in uniq.iter().zip(&base).zip(&got) {
                if let Some(byte) = a.iter().zip(b).position(|(x, y)| x != y) {
                    restore(&uniq, &base);
                    return Err(Error::KernelCheck {
                        kernel: k.name.to_string(),
                        check,
                        detail: format!(
                            "{} differs at byte {byte} between the forward run and the {what} run \
                             (0x{:02x} vs 0x{:02x})",
                            arg_name(arg),
                            a[byte],
                            b[byte]
                        ),
                    });
                }
            }
        }
        restore(&uniq, &base);
        Ok(())
    }
}
