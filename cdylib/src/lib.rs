//! The shipped `liboxmalloc.so`: links the oxmalloc core with its C exports, and nothing
//! of Rust's standard library.
#![cfg_attr(not(test), no_std)]

extern crate oxmalloc;

/// No code path of the library panics (every index is proved in range or checked, and the
/// library check proves that no `core::panicking` code is linked in); if one ever did, it
/// ends here, with a fixed message and no unwinding.
#[cfg(not(any(test, feature = "portable-tls")))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    oxmalloc::fatal_error("internal panic")
}
