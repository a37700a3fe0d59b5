//! Raw `clone(2)` and the probe of which namespace flags this machine allows.

use std::sync::OnceLock;

use libc::c_int;
use nix::errno::Errno;

/// Fork-like raw `clone(2)` (no new stack; the child continues on a copy of the caller's
/// stack, like `fork`), with `flags | SIGCHLD`. Returns the child's pid in the parent and 0 in
/// the child.
///
/// # Safety
///
/// Same rules as `fork` in a multi-threaded process, but stricter since glibc's atfork
/// handlers do not run: in the child only async-signal-safe, non-allocating code may run
/// (e.g. [`crate::cgroups::CgroupEntry::enter_from_child`], [`super::ChildSetup::run_in_child`],
/// [`crate::rlimits::Rlimits::apply_in_child`]) before `execve` or `_exit`.
pub unsafe fn raw_clone(flags: c_int) -> Result<libc::pid_t, Errno> {
    let flags = (flags | libc::SIGCHLD) as u32 as libc::c_ulong;
    // SAFETY: with a null stack pointer clone(2) behaves like fork(2); the caller upholds the
    // child-side rules. Argument order differs between architectures only in the last two
    // pointers, which are both null here.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc as libc::pid_t)
    }
}

/// The namespace flags whose combinations [`probe`] remembers.
const MEMO_FLAGS: [c_int; 6] = [
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNET,
];

/// Where [`probe`] remembers the answer for `flags`: one slot per combination of
/// [`MEMO_FLAGS`]; `None` for flags beyond them.
fn memo_slot(flags: c_int) -> Option<usize> {
    let mut slot = 0;
    let mut rest = flags;
    for (bit, f) in MEMO_FLAGS.iter().enumerate() {
        if flags & f != 0 {
            slot |= 1 << bit;
            rest &= !f;
        }
    }
    (rest == 0).then_some(slot)
}

/// Checks (once per flag set, remembered) that `clone(flags)` works here by cloning a child
/// that exits immediately.
pub fn probe(flags: c_int) -> Result<(), Errno> {
    // The kernel's answer for each combination of namespace flags, written once. Process-wide
    // because it is a fact about the running kernel and its sysctls, and [`super::plan`] (once
    // per sandbox, with no caller-held value to keep it in) needs it for every spawn: probing
    // clones a process each time.
    static ANSWERS: [OnceLock<Result<(), Errno>>; 1 << MEMO_FLAGS.len()] =
        [const { OnceLock::new() }; 1 << MEMO_FLAGS.len()];
    match memo_slot(flags) {
        Some(slot) => *ANSWERS[slot].get_or_init(|| probe_now(flags)),
        None => probe_now(flags),
    }
}

/// Clones a child with `flags` that exits at once, and reaps it.
fn probe_now(flags: c_int) -> Result<(), Errno> {
    // SAFETY: the child only calls _exit(2).
    match unsafe { raw_clone(flags) } {
        Ok(0) => {
            // SAFETY: _exit is async-signal-safe; nothing else runs in the child.
            unsafe { libc::_exit(0) }
        }
        Ok(pid) => {
            let mut status = 0;
            // SAFETY: reaping our own child.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && Errno::last() == Errno::EINTR
            {
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
