//! Dropping every capability in the child (bounding, ambient, then the three sets), with raw
//! system calls.

use std::fs;

use libc::c_int;
use nix::errno::Errno;

use super::child_error::{ChildError, ChildStep};

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops the bounding set and the ambient set (needs `CAP_SETPCAP`, so before any switch of
/// ids).
///
/// # Safety
/// Raw prctl only; safe to call in a fork-like child.
pub(super) unsafe fn drop_bounding_and_ambient(cap_last: u32) -> Result<(), ChildError> {
    // SAFETY: (whole block) prctl(2) with plain integer arguments.
    unsafe {
        for cap in 0..=cap_last {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                && Errno::last() != Errno::EINVAL
            {
                return Err(ChildError::last(ChildStep::DropCapabilities));
            }
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
            && Errno::last() != Errno::EINVAL
        {
            return Err(ChildError::last(ChildStep::DropCapabilities));
        }
    }
    Ok(())
}

/// Clears the permitted, effective and inheritable sets.
///
/// # Safety
/// Raw capset only; safe to call in a fork-like child.
pub(super) unsafe fn clear_capability_sets() -> Result<(), ChildError> {
    let hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) with stack-allocated header and data.
    if unsafe { libc::syscall(libc::SYS_capset, &raw const hdr, data.as_ptr()) } != 0 {
        return Err(ChildError::last(ChildStep::DropCapabilities));
    }
    Ok(())
}

/// The highest capability number of this kernel (`/proc/sys/kernel/cap_last_cap`).
pub(super) fn cap_last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}
