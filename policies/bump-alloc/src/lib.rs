//! A bump allocator for policy components.
//!
//! The host gives every policy call a fresh instance and throws it away afterwards, so freeing
//! memory inside a call is wasted work. With the default allocator, passing the 1,032 device
//! records of a large node in (one allocation per string, then one free per string at the end)
//! cost more than the policy's own logic; with this allocator an allocation is an addition and a
//! free is nothing. The host's memory cap still bounds the total.
//!
//! Use it in a policy crate with `bump_alloc::global_allocator!();` (it does nothing off wasm32),
//! which also tells vfpool's host that the module never frees, so the host hands a call's
//! arguments over in one allocation instead of one per string and list (see
//! [`global_allocator!`]). Not for long-lived programs: memory is only reclaimed when the instance
//! dies.
#![no_std]
#![allow(unsafe_code)] // a global allocator is unsafe by definition; the invariants are below

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// Makes [`Bump`] the module's global allocator and declares so to vfpool's host with the custom
/// section `vfpool:arena-arguments` (one byte: the declaration's version, 1): "this module's
/// `cabi_realloc` never frees a block, and copies a block it grows unless the block is the last
/// one". The host then passes a call's arguments — every string and list of them — carved out of
/// one allocation instead of one `realloc` each: 1,032 device records cost one call into the
/// guest instead of ~24,000. The two come together so that the declaration cannot outlive the
/// allocator it speaks for. Use it once, in the policy's `cdylib`; off wasm32 it expands to
/// nothing.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static BUMP_ALLOCATOR: $crate::Bump = $crate::Bump::new();

        #[cfg(target_arch = "wasm32")]
        #[used]
        #[unsafe(link_section = "vfpool:arena-arguments")]
        static VFPOOL_ARENA_ARGUMENTS: [u8; 1] = [1];
    };
}

const PAGE: usize = 65536;
/// Grow at least this many pages at a time (1 MiB), so growth is rare.
const MIN_GROW_PAGES: usize = 16;

/// The allocator: a cursor into pages obtained from `memory.grow`.
pub struct Bump {
    /// (next free byte, end of the current region).
    state: UnsafeCell<(usize, usize)>,
}

// SAFETY: WebAssembly components run single-threaded; no two calls into the allocator overlap.
unsafe impl Sync for Bump {}

impl Bump {
    /// An allocator with no memory yet.
    pub const fn new() -> Self {
        Bump {
            state: UnsafeCell::new((0, 0)),
        }
    }
}

impl Default for Bump {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(target_arch = "wasm32")]
fn grow(pages: usize) -> Option<usize> {
    let previous = core::arch::wasm32::memory_grow(0, pages);
    (previous != usize::MAX).then_some(previous * PAGE)
}

#[cfg(not(target_arch = "wasm32"))]
fn grow(_pages: usize) -> Option<usize> {
    None
}

// SAFETY: every returned block lies in pages this allocator alone obtained from memory.grow
// (memory.grow hands out fresh pages past the old end, so other allocators in the module — such as
// wasi-libc's — never see them), is aligned as asked, and is never handed out twice.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded (see `Sync` above), so this is the only reference.
        let (next, end) = unsafe { &mut *self.state.get() };
        let align = layout.align();
        let mut start = (*next + align - 1) & !(align - 1);
        if start + layout.size() > *end || *end == 0 {
            let need = layout.size() + align;
            let pages = need.div_ceil(PAGE).max(MIN_GROW_PAGES);
            let Some(base) = grow(pages) else {
                return core::ptr::null_mut();
            };
            if base != *end {
                // Someone else grew memory since: start over in the new region.
                *next = base;
            }
            *end = base + pages * PAGE;
            start = (*next + align - 1) & !(align - 1);
        }
        *next = start + layout.size();
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: single-threaded; see above.
        let (next, end) = unsafe { &mut *self.state.get() };
        let addr = ptr as usize;
        // The last block can grow in place.
        if addr + layout.size() == *next && addr + new_size <= *end {
            *next = addr + new_size;
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: `new_size` and `layout.align()` form a valid layout (the caller's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: allocation as above; the old block stays valid (never freed) while copied.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size());
            }
            new
        }
    }
}
