//! The `writ` binary: the command line in `writ::cli` (feature `cli`).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc instead of the system allocator: decisions allocate many small
/// strings, and `writ serve` answers about a third more requests a second
/// with it (docs/performance.md).
#[global_allocator]
static GLOBAL: Allocator = Allocator;

/// mimalloc, asked through its plain `malloc` entry points when the
/// alignment is one every mimalloc block has (a word: blocks are whole
/// words, from word-aligned pages); `mimalloc::MiMalloc` takes the aligned
/// ones for every allocation, which cost more instructions each (about
/// 50 allocations a decision over HTTP; docs/performance.md "Server CPU,
/// round 31"). Any larger alignment goes to `MiMalloc` as before.
struct Allocator;

/// The alignment every block `mi_malloc` returns has.
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: each method hands the request to mimalloc, either to the
// function `MiMalloc` calls or, when the layout's alignment is at most a
// word, to the unaligned one, whose blocks are word-aligned; `mi_free`
// frees either kind.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        libmimalloc_sys::mi_free(ptr.cast::<c_void>());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mimalloc::MiMalloc.realloc(ptr, layout, new_size)
        }
    }
}

fn main() -> std::process::ExitCode {
    writ::cli::main()
}
