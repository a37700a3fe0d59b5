//! Resource limits (`setrlimit`) applied in the child before `execve`.
//!
//! The list is built in the parent (a fixed-size array, clamped to the current hard limits so a
//! non-root host never asks to raise one) and applied in the child with raw `prlimit64`
//! system calls: no allocation.

use std::io;

use libc::c_int;

use crate::level::Limits;
use crate::namespaces::{ChildError, ChildStep};
use crate::report::{Mechanism, ReportEntry};

/// Setting a limit of another process failed ([`Rlimits::apply_to`]).
#[derive(Debug, thiserror::Error)]
#[error("prlimit {resource} of pid {pid}: {source}")]
pub struct PrlimitError {
    /// The limit, e.g. `nofile`.
    pub resource: &'static str,
    /// The process.
    pub pid: libc::pid_t,
    /// The OS error.
    pub source: io::Error,
}

/// Kernel `struct rlimit64`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rlimit64 {
    cur: u64,
    max: u64,
}

const INFINITY: u64 = u64::MAX;
const MAX_ENTRIES: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Entry {
    resource: c_int,
    limit: Rlimit64,
}

/// A requested limit above this process's hard limit: what a child of it can be given is at
/// most that hard limit (raising one needs `CAP_SYS_RESOURCE`, which a sandbox's child has
/// dropped by the time its rlimits are set, and a prepared runner never had).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AboveHardLimit {
    /// The limit, e.g. `nofile`.
    pub resource: &'static str,
    /// What was asked.
    pub asked: u64,
    /// This process's hard limit.
    pub hard: u64,
}

/// A preallocated list of resource limits for one sandbox.
#[derive(Debug, Clone)]
pub struct Rlimits {
    entries: [Entry; MAX_ENTRIES],
    len: usize,
    clamped: Vec<AboveHardLimit>,
}

#[allow(clippy::unnecessary_cast)] // the RLIMIT_* type differs between glibc and musl
fn res(r: impl Into<i64>) -> c_int {
    r.into() as c_int
}

fn name(resource: c_int) -> &'static str {
    match resource {
        r if r == res(libc::RLIMIT_AS) => "as",
        r if r == res(libc::RLIMIT_NOFILE) => "nofile",
        r if r == res(libc::RLIMIT_FSIZE) => "fsize",
        r if r == res(libc::RLIMIT_CPU) => "cpu",
        r if r == res(libc::RLIMIT_CORE) => "core",
        r if r == res(libc::RLIMIT_NPROC) => "nproc",
        _ => "?",
    }
}

/// Reads the calling process's limit for `resource`.
fn current(resource: c_int) -> Option<Rlimit64> {
    let mut old = Rlimit64 { cur: 0, max: 0 };
    // SAFETY: prlimit64(2) on ourselves with a null new-limit and a valid out-pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            resource,
            std::ptr::null::<Rlimit64>(),
            &raw mut old,
        )
    };
    (rc == 0).then_some(old)
}

impl Rlimits {
    /// Builds the list from `limits`: `RLIMIT_CORE` = 0 always; `AS`, `NOFILE`, `FSIZE`, `CPU`
    /// (soft = N, hard = N + 1 so `SIGXCPU` comes before `SIGKILL`) when set; `NPROC` from
    /// `max_processes` only when `!is_root` (root is exempt from it, and without a user
    /// namespace it counts every process of the uid, not just the sandbox's).
    pub fn from_limits(limits: &Limits, is_root: bool) -> Self {
        let mut wanted: Vec<(c_int, u64, u64)> = vec![(res(libc::RLIMIT_CORE), 0, 0)];
        if let Some(v) = limits.address_space {
            wanted.push((res(libc::RLIMIT_AS), v, v));
        }
        if let Some(v) = limits.max_open_files {
            wanted.push((res(libc::RLIMIT_NOFILE), v, v));
        }
        if let Some(v) = limits.max_file_size {
            wanted.push((res(libc::RLIMIT_FSIZE), v, v));
        }
        if let Some(v) = limits.cpu_seconds {
            wanted.push((res(libc::RLIMIT_CPU), v, v.saturating_add(1)));
        }
        if let (Some(v), false) = (limits.max_processes, is_root) {
            wanted.push((res(libc::RLIMIT_NPROC), v, v));
        }
        let mut out = Self {
            entries: [Entry {
                resource: 0,
                limit: Rlimit64 { cur: 0, max: 0 },
            }; MAX_ENTRIES],
            len: 0,
            clamped: Vec::new(),
        };
        for (resource, mut cur, mut max) in wanted {
            if let Some(now) = current(resource)
                && now.max != INFINITY
                && max > now.max
            {
                out.clamped.push(AboveHardLimit {
                    resource: name(resource),
                    asked: max,
                    hard: now.max,
                });
                max = now.max;
                cur = cur.min(max);
            }
            out.entries[out.len] = Entry {
                resource,
                limit: Rlimit64 { cur, max },
            };
            out.len += 1;
        }
        out
    }

    /// Applies every limit to the calling process with raw `prlimit64`.
    ///
    /// # Safety
    ///
    /// Async-signal-safe and allocation-free: meant for the child between `clone()` and
    /// `execve()`. (Also fine in a normal process, where it limits the whole process.)
    pub unsafe fn apply_in_child(&self) -> Result<(), ChildError> {
        for e in &self.entries[..self.len] {
            // SAFETY: prlimit64(2) on ourselves with a pointer to a live, initialized struct.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    e.resource,
                    &raw const e.limit,
                    std::ptr::null_mut::<Rlimit64>(),
                )
            };
            if rc != 0 {
                return Err(ChildError::last(ChildStep::Rlimit));
            }
        }
        Ok(())
    }

    /// Applies every limit to process `pid` from outside, with `prlimit64(pid, …)` (a
    /// prepared runner gets its tenant's limits this way; raising a hard limit needs
    /// `CAP_SYS_RESOURCE`). An error has the OS error's kind and carries a [`PrlimitError`].
    pub fn apply_to(&self, pid: libc::pid_t) -> io::Result<()> {
        for e in &self.entries[..self.len] {
            // SAFETY: prlimit64(2) with a pointer to a live, initialized struct and no
            // old-value pointer.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    pid,
                    e.resource,
                    &raw const e.limit,
                    std::ptr::null_mut::<Rlimit64>(),
                )
            };
            if rc != 0 {
                let source = io::Error::last_os_error();
                let kind = source.kind();
                let resource = name(e.resource);
                return Err(io::Error::new(
                    kind,
                    PrlimitError {
                        resource,
                        pid,
                        source,
                    },
                ));
            }
        }
        Ok(())
    }

    /// The requested limits that had to be lowered to this process's hard limits. A caller
    /// that must not give less than was asked refuses when this is not empty.
    pub fn clamped(&self) -> &[AboveHardLimit] {
        &self.clamped
    }

    /// `name=value` for each limit, e.g. `core=0 nofile=256`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.entries[..self.len]
            .iter()
            .map(|e| format!("{}={}", name(e.resource), e.limit.cur))
            .collect();
        parts.extend(self.clamped.iter().map(|c| {
            format!(
                "{} clamped to the current hard limit {}",
                c.resource, c.hard
            )
        }));
        parts.join(" ")
    }

    /// The report line (always applied: setrlimit needs no privilege to lower limits).
    pub fn report_entry(&self) -> ReportEntry {
        ReportEntry::applied(Mechanism::Rlimits, self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_expected_list() {
        let l = Limits {
            max_open_files: Some(256),
            max_file_size: Some(1 << 20),
            cpu_seconds: Some(10),
            address_space: Some(1 << 30),
            max_processes: Some(32),
            ..Limits::default()
        };
        let r = Rlimits::from_limits(&l, true);
        let d = r.describe();
        assert!(
            d.starts_with("core=0 as=1073741824 nofile=256 fsize=1048576 cpu=10"),
            "{d}"
        );
        assert!(!d.contains("nproc"), "{d}");
        let r = Rlimits::from_limits(&l, false);
        assert!(r.describe().contains("nproc=32"));
        assert_eq!(r.entries[4].limit, Rlimit64 { cur: 10, max: 11 });
        assert!(r.report_entry().applied);
    }

    #[test]
    fn apply_to_names_the_limit_and_the_pid() {
        let r = Rlimits::from_limits(&Limits::default(), true);
        let e = r.apply_to(libc::pid_t::MAX).unwrap_err();
        assert_eq!(e.raw_os_error(), None);
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<PrlimitError>());
        assert!(
            inner.is_some_and(|p| p.resource == "core" && p.pid == libc::pid_t::MAX),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("prlimit core of pid {}: ", libc::pid_t::MAX)),
            "{e}"
        );
    }
}
