//! Heap bytes a piece of state holds: a global allocator that counts what is allocated while
//! [`allocated_by`] runs, so a clone of a component measures that component's heap (with the exact
//! capacities a clone allocates, so without the spare capacity that growing it left).
//!
//! A binary opts in with `#[global_allocator] static ALLOCATOR: CountingAllocator =
//! CountingAllocator;`. Outside [`allocated_by`] it costs one relaxed load per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

static COUNTING: AtomicBool = AtomicBool::new(false);
static COUNTED: AtomicI64 = AtomicI64::new(0);

/// The system allocator, counting the bytes allocated and freed while [`allocated_by`] runs.
pub struct CountingAllocator;

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            COUNTED.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            COUNTED.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: `ptr` was allocated by `System` with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            COUNTED.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `make` on this thread and returns what it made with the heap bytes allocated (less those
/// freed) meanwhile, by any thread. Needs [`CountingAllocator`] as the global allocator; without
/// it the count is 0.
pub fn allocated_by<T>(make: impl FnOnce() -> T) -> (T, u64) {
    COUNTED.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let made = make();
    COUNTING.store(false, Ordering::SeqCst);
    (made, COUNTED.load(Ordering::SeqCst).max(0) as u64)
}
