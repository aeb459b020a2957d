//! Planned device memory (design.md §3.8): one arena per recorded forward, and the
//! allocator mode that serves a replayed forward's buffers from it.
//!
//! Every device allocation of the backend goes through [`CudaBackend::alloc_with`] (op
//! outputs, op workspaces, uploads). While a forward is *recorded* the allocator logs each
//! allocation (its sequence number, buffer id and size); the executor
//! (`backend::executor`) turns that log and the op trace into a [`DevicePlan`] — an arena
//! offset per allocation, buffers whose lifetimes do not overlap sharing bytes. While the
//! same forward is *replayed*, the k-th allocation is a view of the arena at the k-th
//! planned offset: no device allocation and no free per frame, and the same addresses every
//! frame (what a CUDA graph needs). Only the thread that started a recording or replay is
//! served by it; other threads allocate as usual.
//!
//! [`DevicePlan`]: crate::backend::plan::DevicePlan

use super::emu::EmuBuffer;
use super::memory::{BufInner, DeviceBuffer, DeviceElem, Held, MemGauge};
use super::{CudaBackend, Dev};
use crate::backend::plan::{AllocRecord, DeviceMemory, Slot};
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

/// One device allocation that a replayed forward's buffers are views of.
pub struct Arena {
    bytes: usize,
    mem: ArenaMem,
    _held: Held,
    /// The CUDA graphs of the replays from this arena (graph.rs): their launches point
    /// into it, so they live and die with it.
    pub(crate) graphs: Mutex<super::graph::Segments>,
}

enum ArenaMem {
    Cuda {
        _slice: CudaSlice<u8>,
        base: u64,
        stream: Arc<CudaStream>,
    },
    Emu(EmuBuffer<u8>),
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Arena({} bytes)", self.bytes)
    }
}

impl Arena {
    /// Its size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// What the replays' CUDA graphs did so far.
    pub fn graph_stats(&self) -> super::graph::GraphStats {
        self.graphs.lock().map(|s| s.stats()).unwrap_or_default()
    }

    /// `len` elements of `T` at byte `offset`.
    fn view<T: DeviceElem>(self: &Arc<Self>, offset: usize, len: usize) -> Result<DeviceBuffer<T>> {
        let size = std::mem::size_of::<T>();
        let end = len
            .checked_mul(size)
            .and_then(|b| b.checked_add(offset))
            .filter(|&e| e <= self.bytes);
        if end.is_none() || !offset.is_multiple_of(std::mem::align_of::<T>().max(16)) {
            return Err(Error::Cuda(format!(
                "arena view of {len} × {size} bytes at offset {offset} does not fit an arena of {} bytes",
                self.bytes
            )));
        }
        let inner = match &self.mem {
            ArenaMem::Cuda { base, stream, .. } => {
                // SAFETY: base + offset .. + len·size lies inside the arena's allocation
                // (checked above), which the view keeps alive through its Arc; the view is
                // only leaked on drop, never freed (DeviceBuffer's drop).
                let s = unsafe { stream.upgrade_device_ptr::<T>(base + offset as u64, len) };
                BufInner::Cuda(ManuallyDrop::new(s))
            }
            ArenaMem::Emu(b) => {
                let p = (b.device_ptr() as *mut u8).wrapping_add(offset) as *mut T;
                let p = NonNull::new(p).ok_or_else(|| Error::Cuda("null arena".into()))?;
                // SAFETY: inside the arena's one emulated allocation (checked above), 16-byte
                // aligned (offsets are multiples of 256); the view holds the arena.
                BufInner::Emu(unsafe { EmuBuffer::view(p, len) })
            }
        };
        Ok(DeviceBuffer::view(inner, Arc::clone(self)))
    }
}

/// What the allocator does with the current thread's allocations.
#[derive(Default)]
pub(crate) struct Allocator {
    state: Mutex<State>,
    /// Bytes of device memory held: own allocations and arenas.
    pub(crate) gauge: Arc<MemGauge>,
}

#[derive(Default)]
struct State {
    /// Allocations so far (every thread, every mode).
    count: u64,
    /// Of those, the ones that got device memory of their own (not an arena view).
    own: u64,
    /// Of all, the ones zeroed (a memset on a GPU).
    zeroed: u64,
    mode: Mode,
}

#[derive(Default)]
enum Mode {
    #[default]
    Plain,
    Record {
        thread: ThreadId,
        log: Vec<AllocRecord>,
    },
    Replay {
        thread: ThreadId,
        arena: Arc<Arena>,
        slots: Arc<[Slot]>,
        next: usize,
    },
}

/// How a new buffer starts.
pub(crate) enum Init<'a, T> {
    /// Whatever the memory holds (op outputs and kernel scratch: written before read).
    Uninit,
    Zeroed,
    Copy(&'a [T]),
}

impl Allocator {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Cuda("allocator state poisoned".into()))
    }

    /// From plain allocation to `mode`: one recording or replay at a time per backend.
    fn enter(&self, mode: Mode) -> Result<()> {
        let mut st = self.lock()?;
        if !matches!(st.mode, Mode::Plain) {
            return Err(Error::Cuda(
                "another forward is being recorded or replayed".into(),
            ));
        }
        st.mode = mode;
        Ok(())
    }
}

impl CudaBackend {
    /// Every device allocation: a view of the replay's arena when this thread replays a
    /// forward, else a buffer of its own (logged when this thread records).
    pub(crate) fn alloc_with<T: DeviceElem>(
        &self,
        n: usize,
        init: Init<'_, T>,
    ) -> Result<DeviceBuffer<T>> {
        let me = std::thread::current().id();
        let bytes = n
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::Cuda(format!("allocation of {n} elements overflows")))?;
        let (seq, slot) = {
            let mut st = self.alloc.lock()?;
            let seq = st.count;
            st.count += 1;
            st.zeroed += u64::from(matches!(init, Init::Zeroed));
            match &mut st.mode {
                Mode::Replay {
                    thread,
                    arena,
                    slots,
                    next,
                } if *thread == me => {
                    let k = *next;
                    let s = slots.get(k).copied().ok_or_else(|| {
                        Error::Cuda(format!(
                            "replay: allocation {k} of a plan that has {}",
                            slots.len()
                        ))
                    })?;
                    if s.bytes != bytes {
                        return Err(Error::Cuda(format!(
                            "replay: allocation {k} asks {bytes} bytes, the plan recorded {}",
                            s.bytes
                        )));
                    }
                    *next += 1;
                    (seq, Some((Arc::clone(arena), s.offset)))
                }
                _ => (seq, None),
            }
        };
        let buf = match slot {
            Some((arena, offset)) => {
                let mut b = arena.view::<T>(offset, n)?;
                match init {
                    Init::Uninit => {}
                    Init::Zeroed => self.fill_zero(&mut b)?,
                    Init::Copy(data) => self.copy_in(&mut b, data)?,
                }
                return Ok(b);
            }
            None => self.alloc_own(n, init)?,
        };
        let mut st = self.alloc.lock()?;
        st.own += 1;
        if let Mode::Record { thread, log } = &mut st.mode {
            if *thread == me {
                log.push(AllocRecord {
                    seq,
                    id: buf.id(),
                    bytes,
                });
            }
        }
        Ok(buf)
    }

    /// A buffer with memory of its own.
    fn alloc_own<T: DeviceElem>(&self, n: usize, init: Init<'_, T>) -> Result<DeviceBuffer<T>> {
        self.boundary()?;
        let held = self.alloc.gauge.hold(n * std::mem::size_of::<T>());
        Ok(match (&self.dev, init) {
            (Dev::Gpu(g), Init::Zeroed) => DeviceBuffer::cuda(g.stream.alloc_zeros::<T>(n)?),
            (Dev::Gpu(g), Init::Copy(d)) => DeviceBuffer::cuda(g.stream.clone_htod(d)?),
            // SAFETY: Uninit is asked for op outputs and kernel scratch, which kernels write
            // before anything reads them — what the op table checks on poisoned outputs for
            // every op (an unwritten element fails as non-finite; the `skip_last` mutant shows
            // the check works), and every emulated run on scratch that starts as 0xFF bytes.
            (Dev::Gpu(g), Init::Uninit) => DeviceBuffer::cuda(unsafe { g.stream.alloc::<T>(n) }?),
            (Dev::Emu(_), Init::Copy(d)) => {
                DeviceBuffer::new(BufInner::Emu(EmuBuffer::from_slice(d)?))
            }
            (Dev::Emu(_), Init::Zeroed) => DeviceBuffer::new(BufInner::Emu(EmuBuffer::zeroed(n)?)),
            // Uninitialised memory is 0xFF bytes here (NaN, −1): a read of what no kernel
            // wrote shows in the results instead of passing for a zero.
            (Dev::Emu(_), Init::Uninit) => DeviceBuffer::new(BufInner::Emu(EmuBuffer::garbage(n)?)),
        }
        .held_by(held))
    }

    fn fill_zero<T: DeviceElem>(&self, b: &mut DeviceBuffer<T>) -> Result<()> {
        self.boundary()?;
        match (&self.dev, &mut b.inner) {
            (Dev::Gpu(g), BufInner::Cuda(s)) => Ok(g.stream.memset_zeros(&mut **s)?),
            (Dev::Emu(_), BufInner::Emu(e)) => {
                e.as_mut_slice().fill(T::default());
                Ok(())
            }
            _ => Err(Error::Cuda("a buffer of another device".into())),
        }
    }

    fn copy_in<T: DeviceElem>(&self, b: &mut DeviceBuffer<T>, data: &[T]) -> Result<()> {
        // Inside a replay with graphs the copy is staged and joins the segment's graph.
        if self.graph_upload(b, data)? {
            return Ok(());
        }
        self.boundary()?;
        match (&self.dev, &mut b.inner) {
            (Dev::Gpu(g), BufInner::Cuda(s)) => Ok(g.stream.memcpy_htod(data, &mut **s)?),
            (Dev::Emu(_), BufInner::Emu(e)) => {
                e.as_mut_slice().copy_from_slice(data);
                Ok(())
            }
            _ => Err(Error::Cuda("a buffer of another device".into())),
        }
    }
}

impl crate::backend::plan::DeviceArena for CudaBackend {
    fn allocations(&self) -> u64 {
        self.alloc.lock().map(|s| s.count).unwrap_or(0)
    }

    fn own_allocations(&self) -> u64 {
        self.alloc.lock().map(|s| s.own).unwrap_or(0)
    }

    fn zeroed_allocations(&self) -> u64 {
        self.alloc.lock().map(|s| s.zeroed).unwrap_or(0)
    }

    fn memory(&self) -> DeviceMemory {
        DeviceMemory {
            held: self.alloc.gauge.live(),
            peak: self.alloc.gauge.peak(),
        }
    }

    fn start_recording(&self) -> Result<()> {
        self.alloc.enter(Mode::Record {
            thread: std::thread::current().id(),
            log: Vec::new(),
        })
    }

    fn finish_recording(&self) -> Vec<AllocRecord> {
        let me = std::thread::current().id();
        let Ok(mut st) = self.alloc.lock() else {
            return Vec::new();
        };
        match std::mem::take(&mut st.mode) {
            Mode::Record { thread, log } if thread == me => log,
            other => {
                st.mode = other;
                Vec::new()
            }
        }
    }

    fn new_arena(&self, bytes: usize) -> Result<Arc<Arena>> {
        let mem = match &self.dev {
            Dev::Gpu(g) => {
                let slice = g.stream.alloc_zeros::<u8>(bytes.max(1))?;
                let base = {
                    let (p, _sync) = slice.device_ptr(&g.stream);
                    p
                };
                ArenaMem::Cuda {
                    _slice: slice,
                    base,
                    stream: Arc::clone(&g.stream),
                }
            }
            Dev::Emu(_) => ArenaMem::Emu(EmuBuffer::zeroed(bytes.max(1))?),
        };
        if let Ok(mut st) = self.alloc.lock() {
            st.own += 1;
        }
        Ok(Arc::new(Arena {
            bytes,
            mem,
            _held: self.alloc.gauge.hold(bytes),
            graphs: Mutex::new(Default::default()),
        }))
    }

    fn start_replay(&self, arena: Arc<Arena>, slots: Arc<[Slot]>) -> Result<()> {
        self.alloc.enter(Mode::Replay {
            thread: std::thread::current().id(),
            arena: Arc::clone(&arena),
            slots,
            next: 0,
        })?;
        self.graph_begin(&arena);
        Ok(())
    }

    fn finish_replay(&self) -> Result<()> {
        // The frame's last segment runs first (its work is the frame's).
        let graphs = self.graph_end();
        let me = std::thread::current().id();
        let mut st = self.alloc.lock()?;
        match std::mem::take(&mut st.mode) {
            Mode::Replay {
                thread,
                slots,
                next,
                ..
            } if thread == me => {
                if next != slots.len() {
                    return Err(Error::Cuda(format!(
                        "replay: the forward made {next} allocations, the plan recorded {}",
                        slots.len()
                    )));
                }
                graphs
            }
            other => {
                st.mode = other;
                Err(Error::Cuda(
                    "finish_replay without a replay on this thread".into(),
                ))
            }
        }
    }
}
