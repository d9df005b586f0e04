//! A global allocator type that counts the allocations of the current thread, for tests that
//! check a loop allocates nothing. The crate that uses it installs it itself:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: support::alloc::CountingAlloc = support::alloc::CountingAlloc;
//! ```
//!
//! Without that, [`allocations`] stays at 0.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts allocations and reallocations made by the current thread (tests run on their own
/// threads), then hands them to the system allocator.
pub(crate) struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`; the counter is a thread-local `Cell`
// that itself never allocates (`const` initialised), and `try_with` skips it during thread
// teardown.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations the current thread has made so far through [`CountingAlloc`].
pub(crate) fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}
