//! C++ `operator new` and `operator delete` (their Itanium-ABI names), so that C++
//! programs reach the allocator in one call instead of through libstdc++'s wrappers, and
//! so that sized `delete` hands us the size (checked in hardened mode).
//!
//! Throwing `new` must call the installed `std::new_handler` until it gives up and then
//! throw `std::bad_alloc`. Both live in libstdc++, which this library must not need (it is
//! preloaded into C programs too): they are referenced as weak symbols, which are null in
//! a process without libstdc++ (there, nothing can catch a C++ exception anyway, and a
//! failed `new` aborts with a message). An exception must not unwind through a Rust frame
//! (the library is built with `panic = "abort"`), so the throwing entry points are written
//! in assembly: the loop that calls the handler keeps its own unwind information, and the
//! throw is a tail jump, after which no frame of ours is on the stack.
//!
//! The `nothrow` forms return null on failure without calling the handler (libstdc++'s
//! call it; a program that relies on a handler with `nothrow` new is rare).

use core::ffi::c_void;

const DELETE: &str = "operator delete";
const DELETE_ARRAY: &str = "operator delete[]";

core::arch::global_asm!(
    ".weak _ZSt17__throw_bad_allocv",
    ".weak _ZSt15get_new_handlerv",
);

/// The address of the weak symbol `$sym` (declared above), or 0 when it is undefined.
macro_rules! weak_symbol_address {
    ($sym:literal) => {{
        let address: usize;
        // SAFETY: reads the GOT entry of a weak symbol (0 when undefined); no side effects.
        unsafe {
            core::arch::asm!(
                concat!("mov {a}, qword ptr [rip + ", $sym, "@GOTPCREL]"),
                a = out(reg) address,
                options(nostack, preserves_flags, readonly, pure)
            );
        }
        address
    }};
}

/// The address of libstdc++'s `std::__throw_bad_alloc()`, or 0 without libstdc++.
fn throw_bad_alloc_address() -> usize {
    weak_symbol_address!("_ZSt17__throw_bad_allocv")
}

/// The address of libstdc++'s `std::get_new_handler()`, or 0 without libstdc++.
fn get_new_handler_address() -> usize {
    weak_symbol_address!("_ZSt15get_new_handlerv")
}

/// One try of a throwing `new`: the block, or null.
extern "C" fn new_try(size: usize, align_bytes: usize) -> *mut c_void {
    if !align_bytes.is_power_of_two() {
        return core::ptr::null_mut();
    }
    crate::process::alloc_aligned(size, align_bytes).cast()
}

/// After a failed try: the `new_handler` to call before the next one, or 0 when `new`
/// must throw. Aborts when nothing can throw (no libstdc++ in the process).
extern "C" fn new_failed() -> usize {
    let get = get_new_handler_address();
    if get != 0 {
        // SAFETY: the address of `std::get_new_handler()`, which takes nothing, returns a
        // function pointer (or null) and does not throw.
        let get: extern "C" fn() -> usize = unsafe { core::mem::transmute(get) };
        let handler = get();
        if handler != 0 {
            return handler;
        }
    }
    if throw_bad_alloc_address() == 0 {
        crate::fatal::fatal("operator new: out of memory, and no C++ runtime to throw");
    }
    0
}

/// The throwing `new` (size in `rdi`, alignment in `rsi`): tries, calls the handler and
/// tries again, or tail-jumps to `std::__throw_bad_alloc()`.
#[unsafe(naked)]
extern "C" fn new_throwing(size: usize, align_bytes: usize) -> *mut c_void {
    core::arch::naked_asm!(
        ".cfi_startproc",
        "push rbx",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_offset rbx, -16",
        "push r12",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_offset r12, -24",
        "sub rsp, 8",
        ".cfi_adjust_cfa_offset 8",
        "mov rbx, rdi",
        "mov r12, rsi",
        "2:",
        "mov rdi, rbx",
        "mov rsi, r12",
        "call {try_}",
        "test rax, rax",
        "jz 3f",
        ".cfi_remember_state",
        "add rsp, 8",
        ".cfi_adjust_cfa_offset -8",
        "pop r12",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore r12",
        "pop rbx",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore rbx",
        "ret",
        ".cfi_restore_state",
        "3:",
        "call {failed}",
        "test rax, rax",
        "jz 4f",
        // The handler may throw: this frame has its unwind information.
        "call rax",
        "jmp 2b",
        "4:",
        "add rsp, 8",
        ".cfi_adjust_cfa_offset -8",
        "pop r12",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore r12",
        "pop rbx",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore rbx",
        "jmp qword ptr [rip + _ZSt17__throw_bad_allocv@GOTPCREL]",
        ".cfi_endproc",
        try_ = sym new_try,
        failed = sym new_failed,
    )
}

/// `operator new(size_t)`.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _Znwm(size: usize) -> *mut c_void {
    core::arch::naked_asm!("mov esi, 16", "jmp {f}", f = sym new_throwing)
}

/// `operator new[](size_t)`.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _Znam(size: usize) -> *mut c_void {
    core::arch::naked_asm!("mov esi, 16", "jmp {f}", f = sym new_throwing)
}

/// `operator new(size_t, std::align_val_t)`.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _ZnwmSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    core::arch::naked_asm!("jmp {f}", f = sym new_throwing)
}

/// `operator new[](size_t, std::align_val_t)`.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _ZnamSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    core::arch::naked_asm!("jmp {f}", f = sym new_throwing)
}

/// `operator new(size_t, const std::nothrow_t&)`.
#[unsafe(no_mangle)]
pub extern "C" fn _ZnwmRKSt9nothrow_t(size: usize, _nothrow: *const c_void) -> *mut c_void {
    new_try(size, 16)
}

/// `operator new[](size_t, const std::nothrow_t&)`.
#[unsafe(no_mangle)]
pub extern "C" fn _ZnamRKSt9nothrow_t(size: usize, _nothrow: *const c_void) -> *mut c_void {
    new_try(size, 16)
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t&)`.
#[unsafe(no_mangle)]
pub extern "C" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    _nothrow: *const c_void,
) -> *mut c_void {
    new_try(size, align)
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t&)`.
#[unsafe(no_mangle)]
pub extern "C" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    _nothrow: *const c_void,
) -> *mut c_void {
    new_try(size, align)
}

/// Defines `operator delete` forms without a size.
macro_rules! delete_unsized {
    ($($name:ident($($arg:ident: $ty:ty),*) => $call:expr;)*) => {$(
        /// An unsized `operator delete` form.
        ///
        /// # Safety
        /// `ptr` must be null or a live block from this allocator.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(ptr: *mut c_void, $($arg: $ty),*) {
            // SAFETY: forwarded contract.
            unsafe { crate::process::free(ptr.cast(), $call) }
        }
    )*};
}

/// Defines sized `operator delete` forms (the size is checked in hardened mode).
macro_rules! delete_sized {
    ($($name:ident($($arg:ident: $ty:ty),*) => $call:expr;)*) => {$(
        /// A sized `operator delete` form.
        ///
        /// # Safety
        /// `ptr` must be null or a live block from this allocator of `size` bytes.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(ptr: *mut c_void, size: usize, $($arg: $ty),*) {
            // SAFETY: forwarded contract.
            unsafe { crate::process::free_sized(ptr.cast(), size, $call) }
        }
    )*};
}

delete_unsized! {
    _ZdlPv() => DELETE;
    _ZdaPv() => DELETE_ARRAY;
    _ZdlPvSt11align_val_t(_align: usize) => DELETE;
    _ZdaPvSt11align_val_t(_align: usize) => DELETE_ARRAY;
    _ZdlPvRKSt9nothrow_t(_nothrow: *const c_void) => DELETE;
    _ZdaPvRKSt9nothrow_t(_nothrow: *const c_void) => DELETE_ARRAY;
    _ZdlPvSt11align_val_tRKSt9nothrow_t(_align: usize, _nothrow: *const c_void) => DELETE;
    _ZdaPvSt11align_val_tRKSt9nothrow_t(_align: usize, _nothrow: *const c_void) => DELETE_ARRAY;
}

delete_sized! {
    _ZdlPvm() => DELETE;
    _ZdaPvm() => DELETE_ARRAY;
    _ZdlPvmSt11align_val_t(_align: usize) => DELETE;
    _ZdaPvmSt11align_val_t(_align: usize) => DELETE_ARRAY;
}
