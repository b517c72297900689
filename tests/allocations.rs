//! How many allocations a decision makes: the pack deciding
//! `examples/ci-deploy.json`, counted by a global allocator of this test
//! binary's own. The authorizer's working vectors are kept per thread
//! between decisions (`authorize::Scratch`), so a thread's second decision
//! allocates only what the decision keeps: this test fails if they are
//! allocated anew each time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use writ::{Engine, Request};

/// The system allocator, counting this thread's allocations while
/// `COUNTING` is set.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the thread's locals may be gone while it exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The allocations `f` makes on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f();
    COUNTING.with(|on| on.set(false));
    (out, COUNT.with(Cell::get))
}

#[test]
fn a_second_decision_allocates_only_what_it_keeps() {
    let engine = Engine::default_pack(None).expect("the default pack compiles");
    let request = Request::from_json(include_str!("../examples/ci-deploy.json"))
        .expect("the example is a valid request");
    let (first, in_first) = allocations(|| engine.decide(&request));
    let (second, in_second) = allocations(|| engine.decide(&request));
    assert!(second.is_allow(), "{}", second.to_json());
    assert_eq!(first.to_json(), second.to_json());
    // The first decision on a thread makes the working vectors' room.
    assert!(in_first > in_second, "{in_first} then {in_second}");
    // 24 when the working vectors were allocated each time (section
    // "Pack decision time, round 31" of docs/performance.md).
    assert!(in_second <= 16, "{in_second} allocations");
}
