//! A global allocator that records the most bytes held at once, so that a
//! test can bound what a call allocates in its own process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting. Install it in a test binary with
/// `#[global_allocator] static ALLOC: PeakAllocator = PeakAllocator::new();`
/// and keep that binary to one test, so no other thread's allocations count.
pub struct PeakAllocator {
    held: AtomicUsize,
    peak: AtomicUsize,
}

impl PeakAllocator {
    pub const fn new() -> Self {
        PeakAllocator {
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Runs `f` and returns its result with the most bytes held at once
    /// during it, beyond what was held when it started.
    pub fn peak_during<T>(&self, f: impl FnOnce() -> T) -> (T, usize) {
        let before = self.held.load(Ordering::SeqCst);
        self.peak.store(before, Ordering::SeqCst);
        let result = f();
        let peak = self.peak.load(Ordering::SeqCst);
        (result, peak.saturating_sub(before))
    }

    fn add(&self, bytes: usize) {
        let held = self.held.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(held, Ordering::SeqCst);
    }

    fn sub(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::SeqCst);
    }
}

impl Default for PeakAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is passed to `System` unchanged; the counters only
// observe sizes and never touch the memory.
unsafe impl GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            self.add(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            self.add(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        self.sub(layout.size());
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            self.add(new_size);
            self.sub(layout.size());
        }
        moved
    }
}
