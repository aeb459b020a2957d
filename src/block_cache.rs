//! A global allocator that keeps large freed blocks for the next allocation of the same size.
//!
//! The CPU backend allocates every op's output afresh, and a frame of GLIP-T allocates about
//! 6 GB that way (`glip bench` prints it as "unplanned"), mostly in blocks above glibc's
//! 32 MiB mmap ceiling: each is mapped, faulted in and zeroed by the kernel page by page,
//! then unmapped when freed. A frame repeats the previous frame's allocations, so a freed
//! block kept by size is taken again by the next frame's op of the same shape, without a
//! page fault. The `glip` binary installs it (`#[global_allocator]` in main.rs); the
//! library does not impose an allocator on its users.
//!
//! Bounded: at most [`SLOTS`] blocks and `cap` bytes are kept (a block that does not fit is
//! returned to the system at once), so resident memory grows by at most `cap` over what the
//! program holds itself. Blocks under [`MIN_BLOCK`] go straight to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Blocks smaller than this are not kept (glibc's heap reuses them well).
pub const MIN_BLOCK: usize = 1 << 20;
/// How many blocks may be kept at once.
pub const SLOTS: usize = 256;

#[derive(Clone, Copy)]
struct Slot {
    ptr: usize,
    size: usize,
    align: usize,
    /// When it was kept (a count of blocks kept): the oldest goes first when room is needed.
    seq: u64,
}

const EMPTY: Slot = Slot {
    ptr: 0,
    size: 0,
    align: 0,
    seq: 0,
};

/// The allocator: [`System`] with a cache of large freed blocks.
pub struct BlockCache {
    slots: Mutex<([Slot; SLOTS], u64)>,
    /// Bytes the cache may hold (0: nothing is kept).
    cap: AtomicUsize,
    /// Smallest block kept ([`MIN_BLOCK`] unless set).
    min: AtomicUsize,
    held: AtomicUsize,
    enabled: AtomicBool,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

/// What the cache did so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCacheStats {
    /// Large allocations served from a kept block.
    pub hits: usize,
    /// Large allocations the system served.
    pub misses: usize,
    /// Bytes held now.
    pub held: usize,
    /// Bytes it may hold.
    pub cap: usize,
}

impl BlockCache {
    /// A cache that may hold `cap` bytes of freed blocks.
    pub const fn new(cap: usize) -> Self {
        BlockCache {
            slots: Mutex::new(([EMPTY; SLOTS], 0)),
            cap: AtomicUsize::new(cap),
            min: AtomicUsize::new(MIN_BLOCK),
            held: AtomicUsize::new(0),
            enabled: AtomicBool::new(true),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        }
    }

    /// Sets how many bytes the cache may hold from now on (main reads
    /// `GLIP_BLOCK_CACHE_MIB` before any model work); 0 turns it off.
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::SeqCst);
        if cap == 0 {
            self.disable();
        }
    }

    /// Sets the smallest block kept (tests lower it so that small models' outputs go
    /// through the cache too: GLIP_BLOCK_CACHE_MIN_KIB).
    pub fn set_min(&self, bytes: usize) {
        self.min.store(bytes.max(1), Ordering::SeqCst);
    }

    /// Turns the cache off and returns what it holds to the system.
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::SeqCst);
        self.flush();
    }

    /// Returns what it holds to the system and goes on keeping blocks: for a program to
    /// call once its one-off allocations are freed (a model's loading buffers, whose sizes
    /// never come again), so that they do not sit in the cache.
    pub fn flush(&self) {
        let mut g = self.lock();
        for s in g.0.iter_mut() {
            self.release(s);
        }
    }

    /// Returns a kept block to the system and empties its slot (no-op on an empty one).
    fn release(&self, s: &mut Slot) {
        if s.ptr == 0 {
            return;
        }
        // SAFETY: a kept block was allocated by System with this size and alignment (a
        // valid layout then) and is owned by the cache alone.
        unsafe {
            System.dealloc(
                s.ptr as *mut u8,
                Layout::from_size_align_unchecked(s.size, s.align),
            )
        };
        self.held.fetch_sub(s.size, Ordering::Relaxed);
        *s = EMPTY;
    }

    /// Its counts so far.
    pub fn stats(&self) -> BlockCacheStats {
        BlockCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
            cap: self.cap.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ([Slot; SLOTS], u64)> {
        // Plain data: a panic elsewhere while holding it leaves it consistent.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, layout: Layout) -> bool {
        layout.size() >= self.min.load(Ordering::Relaxed) && self.enabled.load(Ordering::Relaxed)
    }

    /// A kept block of exactly this size and alignment, taken out of the cache.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        let mut g = self.lock();
        let s =
            g.0.iter_mut()
                .find(|s| s.ptr != 0 && s.size == layout.size() && s.align == layout.align())?;
        let ptr = s.ptr as *mut u8;
        *s = EMPTY;
        self.held.fetch_sub(layout.size(), Ordering::Relaxed);
        Some(ptr)
    }

    /// Keeps a freed block, returning the oldest kept blocks to the system to make room (a
    /// block kept once and never asked for again, such as a file read at start-up, leaves
    /// as the frames' blocks come and go); false when it must go back to the system itself
    /// (larger than the whole cache).
    fn keep(&self, ptr: *mut u8, layout: Layout) -> bool {
        let cap = self.cap.load(Ordering::Relaxed);
        if layout.size() > cap {
            return false;
        }
        let mut g = self.lock();
        let (slots, seq) = &mut *g;
        loop {
            let full = self.held.load(Ordering::Relaxed) + layout.size() > cap;
            let free = slots.iter().position(|s| s.ptr == 0);
            match (full, free) {
                (false, Some(i)) => {
                    *seq += 1;
                    slots[i] = Slot {
                        ptr: ptr as usize,
                        size: layout.size(),
                        align: layout.align(),
                        seq: *seq,
                    };
                    self.held.fetch_add(layout.size(), Ordering::Relaxed);
                    return true;
                }
                _ => match slots
                    .iter_mut()
                    .filter(|s| s.ptr != 0)
                    .min_by_key(|s| s.seq)
                {
                    Some(oldest) => self.release(oldest),
                    None => return false,
                },
            }
        }
    }
}

// SAFETY: every block handed out is either fresh from System for this layout or a block
// System allocated earlier with exactly this size and alignment, owned by no one else (it
// was freed to the cache and taken out under the lock); blocks are returned to System with
// the layout they were allocated with.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.cached(layout) {
            if let Some(p) = self.take(layout) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return p;
            }
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded caller contract (non-zero size).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if self.cached(layout) {
            if let Some(p) = self.take(layout) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // SAFETY: p points to layout.size() bytes owned by the caller from now on.
                unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
                return p;
            }
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded caller contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.cached(layout) && self.keep(ptr, layout) {
            return;
        }
        // SAFETY: forwarded caller contract: ptr came from this allocator with this layout,
        // and every block of this allocator is System's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let min = self.min.load(Ordering::Relaxed);
        if layout.size() < min && new_size < min {
            // SAFETY: forwarded caller contract.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees new_size with layout's alignment is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded caller contract.
        let p = unsafe { self.alloc(new) };
        if !p.is_null() {
            // SAFETY: both blocks hold at least min(old, new) bytes and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 64).unwrap()
    }

    #[test]
    fn a_freed_block_is_taken_again_by_its_size_only() {
        let c = BlockCache::new(64 << 20);
        unsafe {
            let a = c.alloc(layout(3 << 20));
            std::ptr::write_bytes(a, 7, 3 << 20);
            c.dealloc(a, layout(3 << 20));
            assert_eq!(c.stats().held, 3 << 20);
            // Another size is not served from it.
            let b = c.alloc(layout(2 << 20));
            assert_ne!(a, b);
            c.dealloc(b, layout(2 << 20));
            // The same size is, and zeroed when asked.
            let z = c.alloc_zeroed(layout(3 << 20));
            assert_eq!(z, a);
            assert!(std::slice::from_raw_parts(z, 3 << 20)
                .iter()
                .all(|&x| x == 0));
            c.dealloc(z, layout(3 << 20));
            assert_eq!(c.stats().hits, 1);
            assert_eq!(c.stats().held, 5 << 20);
            // A flush gives everything back and the cache goes on keeping blocks.
            c.flush();
            assert_eq!(c.stats().held, 0);
            let f = c.alloc(layout(3 << 20));
            c.dealloc(f, layout(3 << 20));
            assert_eq!(c.stats().held, 3 << 20);
            assert_eq!(c.stats().hits, 1, "flushed blocks are not served");
            c.disable();
            assert_eq!(c.stats().held, 0);
        }
    }

    #[test]
    fn the_cap_and_small_blocks_go_to_the_system() {
        let c = BlockCache::new(4 << 20);
        unsafe {
            let blocks: Vec<_> = (0..3).map(|_| c.alloc(layout(2 << 20))).collect();
            for &b in &blocks {
                c.dealloc(b, layout(2 << 20));
            }
            // Two fit under the 4 MiB cap: the third took the oldest one's place.
            assert_eq!(c.stats().held, 4 << 20);
            let again = c.alloc(layout(2 << 20));
            assert_ne!(again, blocks[0], "the oldest was returned to the system");
            assert!(again == blocks[1] || again == blocks[2]);
            c.dealloc(again, layout(2 << 20));
            // A block larger than the whole cache goes back at once.
            let big = c.alloc(layout(5 << 20));
            c.dealloc(big, layout(5 << 20));
            assert_eq!(c.stats().held, 4 << 20);
            let small = c.alloc(layout(4096));
            c.dealloc(small, layout(4096));
            assert_eq!(c.stats().held, 4 << 20);
            // Growing a block moves it (the old one is kept if it fits).
            let g = c.alloc(layout(1 << 20));
            std::ptr::write_bytes(g, 9, 1 << 20);
            let g2 = c.realloc(g, layout(1 << 20), 3 << 20);
            assert_eq!(*g2.add((1 << 20) - 1), 9);
            c.dealloc(g2, layout(3 << 20));
            c.disable();
            assert_eq!(c.stats().held, 0);
        }
    }
}
