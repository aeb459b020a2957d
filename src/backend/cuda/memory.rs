//! Device buffers that live either on a real GPU (cudarc) or on the emulated device; the
//! launch wrappers and everything above them see one type.

use super::arena::Arena;
use super::emu::EmuBuffer;
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use half::f16;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Element types a device buffer can hold.
pub trait DeviceElem:
    DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + Unpin + 'static
{
}
impl DeviceElem for f32 {}
impl DeviceElem for f16 {}
impl DeviceElem for i32 {}
impl DeviceElem for u32 {}
impl DeviceElem for u8 {}
impl DeviceElem for u64 {}

/// `len` elements of device memory: an allocation of its own, or a view at a planned offset
/// of a forward's arena (backend/cuda/arena.rs), which it keeps alive.
#[derive(Debug)]
pub struct DeviceBuffer<T> {
    pub(crate) inner: BufInner<T>,
    /// Unique per buffer in this process: what identifies the buffer in a recorded
    /// forward (device addresses are recycled, and reading one needs the stream).
    id: u64,
    /// The arena this buffer is a view of (None: it owns its memory). Declared after
    /// `inner`, so the view goes before the arena it points into.
    arena: Option<Arc<Arena>>,
    /// Its bytes on the backend's gauge, while it owns memory.
    held: Option<Held>,
}

/// The device memory one backend holds: its own allocations (weights, cached prompts,
/// op-by-op buffers) and its arenas; arena views add nothing.
#[derive(Debug, Default)]
pub struct MemGauge {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl MemGauge {
    /// Counts `bytes` as held until the returned guard drops.
    pub(crate) fn hold(self: &Arc<Self>, bytes: usize) -> Held {
        let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Held {
            gauge: Arc::clone(self),
            bytes,
        }
    }
    /// Bytes held now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
    /// The most bytes held at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Bytes counted on a [`MemGauge`] until dropped.
#[derive(Debug)]
pub(crate) struct Held {
    gauge: Arc<MemGauge>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub(crate) enum BufInner<T> {
    /// Freed by [`DeviceBuffer`]'s drop when owned; only released (never freed) when a view.
    Cuda(ManuallyDrop<CudaSlice<T>>),
    Emu(EmuBuffer<T>),
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl<T: DeviceElem> DeviceBuffer<T> {
    /// A GPU allocation of its own.
    pub(crate) fn cuda(s: CudaSlice<T>) -> Self {
        Self::new(BufInner::Cuda(ManuallyDrop::new(s)))
    }
    pub(crate) fn new(inner: BufInner<T>) -> Self {
        DeviceBuffer {
            inner,
            id: next_id(),
            arena: None,
            held: None,
        }
    }
    /// This buffer's bytes counted on a gauge while it lives.
    pub(crate) fn held_by(mut self, h: Held) -> Self {
        self.held = Some(h);
        self
    }
    /// A view into `arena` (an `inner` made over the arena's memory, not owning it).
    pub(crate) fn view(inner: BufInner<T>, arena: Arc<Arena>) -> Self {
        DeviceBuffer {
            inner,
            id: next_id(),
            arena: Some(arena),
            held: None,
        }
    }
    /// Whether this buffer is a view into a forward's arena.
    pub fn is_arena_view(&self) -> bool {
        self.arena.is_some()
    }
    /// This allocation's identity (never reused in the process).
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn len(&self) -> usize {
        match &self.inner {
            BufInner::Cuda(s) => s.len(),
            BufInner::Emu(b) => b.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether this buffer is emulated device memory.
    pub fn is_emulated(&self) -> bool {
        matches!(self.inner, BufInner::Emu(_))
    }
}

impl<T> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        if let BufInner::Cuda(s) = &mut self.inner {
            // SAFETY: taken exactly once, here, and `inner` is not used afterwards.
            let s = unsafe { ManuallyDrop::take(s) };
            if self.arena.is_some() {
                // A view: release its events and stream handle; the arena frees the memory.
                let _ = s.leak();
            } else {
                drop(s);
            }
        }
    }
}

/// The float storage types of device tensors (f16 activations, f32 logits and vectors): a
/// kernel family compiled for both is written once over this.
pub trait FloatElem: DeviceElem {
    const DTYPE: crate::tensor::DType;
    /// What poisoned outputs are filled with.
    const NAN: Self;
    /// The buffer of a tensor on device `ordinal` holding this type, if it does.
    fn buffer(t: &crate::tensor::Tensor, ordinal: usize) -> Option<&DeviceBuffer<Self>>;
    /// The same, to write (an op computing in place).
    fn buffer_mut(t: &mut crate::tensor::Tensor, ordinal: usize)
        -> Option<&mut DeviceBuffer<Self>>;
    /// The tensor storage of a buffer of this type.
    fn data(b: DeviceBuffer<Self>) -> crate::tensor::DeviceData;
}

/// `FloatElem` for a storage type and its `DeviceData` variant.
macro_rules! float_elem {
    ($t:ty, $variant:ident) => {
        impl FloatElem for $t {
            const DTYPE: crate::tensor::DType = crate::tensor::DType::$variant;
            const NAN: Self = <$t>::NAN;
            fn buffer(t: &crate::tensor::Tensor, ordinal: usize) -> Option<&DeviceBuffer<Self>> {
                match t.storage() {
                    crate::tensor::Storage::Cuda {
                        data: crate::tensor::DeviceData::$variant(b),
                        ordinal: o,
                    } if *o == ordinal => Some(b),
                    _ => None,
                }
            }
            fn buffer_mut(
                t: &mut crate::tensor::Tensor,
                ordinal: usize,
            ) -> Option<&mut DeviceBuffer<Self>> {
                match t.storage_mut() {
                    crate::tensor::Storage::Cuda {
                        data: crate::tensor::DeviceData::$variant(b),
                        ordinal: o,
                    } if *o == ordinal => Some(b),
                    _ => None,
                }
            }
            fn data(b: DeviceBuffer<Self>) -> crate::tensor::DeviceData {
                crate::tensor::DeviceData::$variant(b)
            }
        }
    };
}
float_elem!(f16, F16);
float_elem!(f32, F32);
