//! The guard's reports: the `SIGSEGV` handler, and the double-free and overwrite reports of
//! `free` (which start with the one line every bad call gets, `oxmalloc: free(): double
//! free or corruption 0x…`, so that what reads those lines finds it).
//!
//! The handler is async-signal-safe: it reads the slot table (atomics), `/proc/self/maps`
//! with raw system calls into stack buffers, and writes each line with one `write(2)` to
//! fd 2; it never allocates or takes a lock. Stacks are printed as raw return addresses,
//! each with the module that holds it and the offset in that module's file, from
//! `/proc/self/maps` (`#3 0x55d0c3a0b1c9 (/usr/bin/prog+0x11c9)`), which `addr2line -e
//! MODULE OFFSET` or `oxprof symbolize` turn into function names.
//!
//! Chaining: the handler is installed at the first guarded block, saving the action it
//! replaces, and every later guarded block checks that it is still the one installed: a
//! handler the program installed since then is saved in turn and ours goes back on top. A
//! fault that is not in the pool, and a guarded one once reported, go to the saved action:
//! the program's handler (called directly, with its `SA_SIGINFO` form or not; its own
//! `sa_mask` and `SA_RESETHAND`/`SA_NODEFER` flags are not applied) or the default action,
//! restored, so that the faulting instruction faults again on return and the process dies
//! by `SIGSEGV` as it would have. A program that installs its handler after the last guarded
//! block it allocates replaces ours: guarded faults then reach its handler without a report
//! (the `free`-time reports are unaffected).

use super::{Fault, FaultKind, Slot};
use crate::fatal::{self, MessageBuffer};
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The action ours replaced: its handler (`sa_sigaction`) and flags.
static PREVIOUS_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREVIOUS_FLAGS: AtomicUsize = AtomicUsize::new(0);
/// A guarded fault was reported (once per process: a handler that returns without fixing
/// the access would see it again).
static REPORTED: AtomicBool = AtomicBool::new(false);

type InfoHandler = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);
type PlainHandler = extern "C" fn(c_int);

fn our_handler() -> usize {
    on_fault as InfoHandler as usize
}

/// Installs the fault handler unless it is the one installed, saving the action it
/// replaces. Called under the pool lock (which serialises the saved action's updates).
pub fn ensure_handler() {
    // SAFETY: a zeroed sigaction is a valid value to be filled in; querying the current
    // action changes nothing.
    let mut current: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: a null new action only queries; `current` is a valid sigaction to write.
    if unsafe { libc::sigaction(libc::SIGSEGV, core::ptr::null(), &mut current) } != 0 {
        return;
    }
    if current.sa_sigaction == our_handler() {
        return;
    }
    PREVIOUS_HANDLER.store(current.sa_sigaction, Ordering::Release);
    PREVIOUS_FLAGS.store(current.sa_flags as usize, Ordering::Release);
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags) before ours is
    // filled in; ours takes the siginfo form and runs on the alternate stack when the
    // thread has one (so a stack overflow still reaches the program's own handler through
    // ours, as it would without us). The handler and its flags are saved one after the
    // other: a fault in another thread between the two stores may see a torn pair.
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        action.sa_sigaction = our_handler();
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGSEGV, &action, core::ptr::null_mut());
    }
}

/// The `SIGSEGV` handler.
extern "C" fn on_fault(signo: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the calling thread's errno slot.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    // si_code > 0: sent by the kernel for a fault (not by kill or raise).
    if code > 0 {
        if let Some(fault) = super::classify(addr) {
            if !REPORTED.swap(true, Ordering::AcqRel) {
                write_fault(&fault, addr, context);
            }
        }
    }
    // SAFETY: forwarded from the kernel's call.
    unsafe { chain(signo, info, context) };
    // SAFETY: the calling thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() = errno };
}

/// Passes the signal on to the action ours replaced.
///
/// # Safety
/// The arguments must be those the kernel gave the handler.
unsafe fn chain(signo: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let previous = PREVIOUS_HANDLER.load(Ordering::Acquire);
    let flags = PREVIOUS_FLAGS.load(Ordering::Acquire);
    if previous == libc::SIG_DFL || previous == libc::SIG_IGN || previous == our_handler() {
        // The default action (a fault cannot be ignored): restore it. A fault happens again
        // when the handler returns; a signal sent with kill is raised again, delivered then.
        // SAFETY: a zeroed sigaction with SIG_DFL is the default action.
        unsafe {
            let mut action: libc::sigaction = core::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signo, &action, core::ptr::null_mut());
            if (*info).si_code <= 0 {
                libc::raise(signo);
            }
        }
        return;
    }
    if flags & libc::SA_SIGINFO as usize != 0 {
        // SAFETY: the program installed this address as an SA_SIGINFO handler.
        let handler = unsafe { core::mem::transmute::<usize, InfoHandler>(previous) };
        handler(signo, info, context);
    } else {
        // SAFETY: the program installed this address as a plain handler.
        let handler = unsafe { core::mem::transmute::<usize, PlainHandler>(previous) };
        handler(signo);
    }
}

/// The faulting instruction and whether the access was a write (`None`: not known here).
fn access_of(context: *mut c_void) -> (usize, Option<bool>) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        if context.is_null() {
            return (0, None);
        }
        // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
        let gregs = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
        let pc = gregs.get(libc::REG_RIP as usize).copied().unwrap_or(0) as usize;
        // Bit 1 of the page fault's error code: the access was a write.
        let err = gregs.get(libc::REG_ERR as usize).copied().unwrap_or(0);
        (pc, Some(err & 2 != 0))
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = context;
        (0, None)
    }
}

fn kind_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::UseAfterFree => "use after free",
        FaultKind::Overflow => "heap overflow",
        FaultKind::Underflow => "heap underflow",
    }
}

/// Appends "offset N of a S-byte block at 0xU (how far outside it)".
fn push_where(line: &mut MessageBuffer, at: usize, user: usize, size: usize) {
    line.push_str("offset ");
    if at < user {
        line.push_str("-").push_dec(user - at);
    } else {
        line.push_dec(at - user);
    }
    line.push_str(" of a ")
        .push_dec(size)
        .push_str("-byte block at ")
        .push_hex(user);
    if at < user {
        line.push_str(" (")
            .push_dec(user - at)
            .push_str(" bytes before it)");
    } else if at >= user + size {
        line.push_str(" (")
            .push_dec(at - (user + size))
            .push_str(" bytes past its end)");
    }
}

/// The report of a fault in the pool (from the handler).
fn write_fault(fault: &Fault, addr: usize, context: *mut c_void) {
    let (pc, write) = access_of(context);
    let mut line = MessageBuffer::new();
    line.push_str("oxmalloc: guard: ")
        .push_str(kind_name(fault.kind))
        .push_str(": ")
        .push_str(match write {
            Some(true) => "write at ",
            Some(false) => "read at ",
            None => "access at ",
        })
        .push_hex(addr)
        .push_str(", ");
    push_where(&mut line, addr, fault.user, fault.size);
    line.push_str("\n");
    line.write_stderr();
    if pc != 0 {
        let mut line = MessageBuffer::new();
        line.push_str("oxmalloc: guard: by the instruction at ");
        push_frame(&mut line, pc);
        line.push_str("\n");
        line.write_stderr();
    }
    write_block_stacks(fault.slot, "");
}

/// The allocation stack and, once freed, the free stack of `slot`'s block.
fn write_block_stacks(slot: &Slot, first: &str) {
    write_title(
        "the block was allocated by thread ",
        slot.alloc_thread.load(Ordering::Relaxed),
    );
    slot.for_each_frame(false, write_frame);
    if slot.free_depth.load(Ordering::Relaxed) != 0 {
        let mut line = MessageBuffer::new();
        line.push_str("oxmalloc: guard: and ")
            .push_str(first)
            .push_str("freed by thread ")
            .push_dec(slot.free_thread.load(Ordering::Relaxed))
            .push_str(" at:\n");
        line.write_stderr();
        slot.for_each_frame(true, write_frame);
    }
}

fn write_title(title: &str, thread: usize) {
    let mut line = MessageBuffer::new();
    line.push_str("oxmalloc: guard: ")
        .push_str(title)
        .push_dec(thread)
        .push_str(" at:\n");
    line.write_stderr();
}

/// One line of a stack: `#i 0xPC (module+0xoffset)`.
fn write_frame(i: usize, pc: usize) {
    let mut line = MessageBuffer::new();
    line.push_str("oxmalloc:     #").push_dec(i).push_str(" ");
    push_frame(&mut line, pc);
    line.push_str("\n");
    line.write_stderr();
}

/// `0xPC (module+0xoffset)`, or `0xPC (?)` when no mapping holds it.
fn push_frame(line: &mut MessageBuffer, pc: usize) {
    line.push_hex(pc).push_str(" (");
    let mut module = Module::EMPTY;
    if find_module(pc, &mut module) {
        line.push_bytes(module.path()).push_str("+").push_hex(
            pc.wrapping_sub(module.start)
                .wrapping_add(module.file_offset),
        );
    } else {
        line.push_str("?");
    }
    line.push_str(")");
}

/// The one-line report every bad call gets (`oxmalloc: free(): WHAT 0xBLOCK`, as
/// `fatal::bad_pointer` writes it), before the guard's details.
fn headline(call: &str, what: &str, slot: &Slot) {
    let mut line = MessageBuffer::new();
    line.push_str("oxmalloc: ")
        .push_str(call)
        .push_str("(): ")
        .push_str(what)
        .push_str(" ")
        .push_hex(slot.user.load(Ordering::Relaxed))
        .push_str("\n");
    line.write_stderr();
}

/// A double free of a guarded block, found by `call` at the stack `frames`: the report,
/// then `abort()`.
pub fn double_free(slot: &Slot, call: &str, frames: &[usize], thread: usize) -> ! {
    headline(call, "double free or corruption", slot);
    let mut line = MessageBuffer::new();
    line.push_str("oxmalloc: guard: double free: ")
        .push_str(call)
        .push_str("() of a ")
        .push_dec(slot.size.load(Ordering::Relaxed))
        .push_str("-byte block at ")
        .push_hex(slot.user.load(Ordering::Relaxed))
        .push_str(" that was already freed\n");
    line.write_stderr();
    write_title("this free was called by thread ", thread);
    for (i, &pc) in frames.iter().enumerate() {
        write_frame(i, pc);
    }
    write_block_stacks(slot, "first ");
    fatal::abort()
}

/// Bytes around a live guarded block (at `at`) that lost their canary, found by `call` at
/// the stack `frames`: the report, then `abort()`.
pub fn overwritten(slot: &Slot, call: &str, at: usize, frames: &[usize], thread: usize) -> ! {
    let user = slot.user.load(Ordering::Relaxed);
    let size = slot.size.load(Ordering::Relaxed);
    headline(
        call,
        if at < user {
            "write before the start of the block"
        } else {
            "write past the end of the block"
        },
        slot,
    );
    let mut line = MessageBuffer::new();
    line.push_str("oxmalloc: guard: ")
        .push_str(if at < user {
            "heap underflow"
        } else {
            "heap overflow"
        })
        .push_str(": write at ")
        .push_hex(at)
        .push_str(", ");
    push_where(&mut line, at, user, size);
    line.push_str(", found by ").push_str(call).push_str("()\n");
    line.write_stderr();
    write_title("the block is being freed by thread ", thread);
    for (i, &pc) in frames.iter().enumerate() {
        write_frame(i, pc);
    }
    write_block_stacks(slot, "");
    fatal::abort()
}

/// A mapping of `/proc/self/maps`: its start, file offset and path (cut to fit).
struct Module {
    start: usize,
    file_offset: usize,
    path: [u8; 192],
    path_len: usize,
}

impl Module {
    const EMPTY: Module = Module {
        start: 0,
        file_offset: 0,
        path: [0; 192],
        path_len: 0,
    };

    fn path(&self) -> &[u8] {
        let path = self.path.get(..self.path_len).unwrap_or(&[]);
        if path.is_empty() {
            b"[anonymous]"
        } else {
            path
        }
    }
}

/// Finds the mapping that holds `pc` in `/proc/self/maps` (raw system calls, stack buffers:
/// async-signal-safe).
fn find_module(pc: usize, out: &mut Module) -> bool {
    let Some(mut file) = crate::os::raw::ProcFile::open(c"/proc/self/maps") else {
        return false;
    };
    let mut chunk = [0u8; 1024];
    let mut line = [0u8; 512];
    let mut len = 0;
    loop {
        let n = match file.read(&mut chunk) {
            Some(0) | None => return false,
            Some(n) => n,
        };
        for &b in chunk.get(..n).unwrap_or(&[]) {
            if b == b'\n' {
                if parse_maps_line(line.get(..len).unwrap_or(&[]), pc, out) {
                    return true;
                }
                len = 0;
            } else if let Some(slot) = line.get_mut(len) {
                *slot = b;
                len += 1;
            }
        }
    }
}

/// Parses a hexadecimal number.
fn hex(text: &[u8]) -> Option<usize> {
    if text.is_empty() {
        return None;
    }
    let mut v = 0usize;
    for &b in text {
        let d = (b as char).to_digit(16)?;
        v = v.checked_mul(16)?.checked_add(d as usize)?;
    }
    Some(v)
}

/// Fills `out` from a maps line (`start-end perms offset dev inode path`) when its range
/// holds `pc`.
fn parse_maps_line(line: &[u8], pc: usize, out: &mut Module) -> bool {
    let mut rest = line;
    let mut field = || -> &[u8] {
        while let [b' ', tail @ ..] = rest {
            rest = tail;
        }
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let (head, tail) = rest.split_at(end);
        rest = tail;
        head
    };
    let range = field();
    let Some(dash) = range.iter().position(|&b| b == b'-') else {
        return false;
    };
    let (start, end) = range.split_at(dash);
    let (Some(start), Some(end)) = (hex(start), hex(end.get(1..).unwrap_or(&[]))) else {
        return false;
    };
    if !(start..end).contains(&pc) {
        return false;
    }
    let _perms = field();
    let offset = hex(field()).unwrap_or(0);
    let _dev = field();
    let _inode = field();
    while let [b' ', tail @ ..] = rest {
        rest = tail;
    }
    out.start = start;
    out.file_offset = offset;
    out.path_len = 0;
    for (slot, &b) in out.path.iter_mut().zip(rest) {
        *slot = b;
        out.path_len += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_module_and_offset() {
        let mut m = Module::EMPTY;
        let line = b"55d0c3a0a000-55d0c3a0c000 r-xp 00001000 08:01 1234                       /usr/bin/my prog";
        assert!(!parse_maps_line(line, 0x55d0c3a0c000, &mut m));
        assert!(parse_maps_line(line, 0x55d0c3a0b1c9, &mut m));
        assert_eq!(m.start, 0x55d0c3a0a000);
        assert_eq!(m.file_offset, 0x1000);
        assert_eq!(m.path(), b"/usr/bin/my prog");
        assert!(parse_maps_line(
            b"7f00-7f10 rw-p 00000000 00:00 0 ",
            0x7f08,
            &mut m
        ));
        assert_eq!(m.path(), b"[anonymous]");
        assert!(!parse_maps_line(b"garbage", 0, &mut m));
    }

    #[test]
    fn our_own_code_is_found_in_the_maps() {
        let pc = our_handler();
        let mut m = Module::EMPTY;
        assert!(find_module(pc, &mut m));
        assert!(m.start <= pc);
    }

    #[test]
    fn offsets_are_written_with_their_side() {
        let mut line = MessageBuffer::new();
        push_where(&mut line, 0x1070, 0x1000, 100);
        assert_eq!(
            line.as_bytes(),
            b"offset 112 of a 100-byte block at 0x1000 (12 bytes past its end)"
        );
        let mut line = MessageBuffer::new();
        push_where(&mut line, 0xff0, 0x1000, 100);
        assert_eq!(
            line.as_bytes(),
            b"offset -16 of a 100-byte block at 0x1000 (16 bytes before it)"
        );
    }
}
