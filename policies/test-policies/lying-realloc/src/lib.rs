//! A selector whose `cabi_realloc` lies, for the host's containment tests. Never shipped.
//!
//! It declares that it takes its arguments in one allocation (`vfpool:arena-arguments`), and its
//! allocator answers every request aligned to 4 bytes or more — every list, and the one
//! allocation of the inventory — with an address past the end of its memory (strings, aligned
//! to 1, are served, so the settings arrive). The host must refuse the call with a reason, never
//! write there, and keep serving.
#![allow(unsafe_code)] // wit-bindgen's generated export shims; a global allocator
#![allow(missing_docs)] // wit-bindgen's generated items in a test-only crate

#[cfg(target_arch = "wasm32")]
use core::alloc::{GlobalAlloc, Layout};

wit_bindgen::generate!({
    path: "../../../wit",
    world: "selector-policy",
});

use exports::vfpool::policy::selector::Guest;
use vfpool::policy::types::{Inventory, PolicyError, Pool, Settings};

/// The lie: 4 bytes short of 4 GiB, aligned, far past any memory a call may have.
#[cfg(target_arch = "wasm32")]
const BEYOND_MEMORY: usize = 0xFFFF_FFFC;

#[cfg(target_arch = "wasm32")]
struct Liar(bump_alloc::Bump);

// SAFETY: not safe, on purpose — the addresses it hands out for aligned requests are not memory
// this module owns. The module only exists to be handed to the host, which must never write to
// them; any Rust code of the module that used them would trap.
#[cfg(target_arch = "wasm32")]
unsafe impl GlobalAlloc for Liar {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() >= 4 {
            return BEYOND_MEMORY as *mut u8;
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: Liar = Liar(bump_alloc::Bump::new());

/// The declaration, as `bump_alloc::global_allocator!` makes it.
#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "vfpool:arena-arguments")]
static ARENA_ARGUMENTS: [u8; 1] = [1];

struct LyingRealloc;

impl Guest for LyingRealloc {
    fn validate_settings(_: Settings) -> Result<(), PolicyError> {
        Ok(())
    }

    fn select(_: Settings, _: Inventory) -> Result<Vec<Pool>, PolicyError> {
        Ok(Vec::new())
    }
}

export!(LyingRealloc);
